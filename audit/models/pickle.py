"""``pickle:PATH#KEY`` specs (StyleGAN2-ADA / StyleGAN3 network pickles, torch.save
checkpoints holding modules): refused unless trust_pickle; code_path for the repository."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from audit.errors import CHECK_PATH, ModelLoadError
from audit.models.usercode import add_code_path, missing_module, user_frame


def build(cfg: Any, rest: str, *, role: str) -> Any:
    """The object named by ``pickle:PATH#KEY`` (KEY: a dict key or attribute; none: all)."""
    path, _, key = rest.partition("#")
    return unpickle(Path(path), key, code_path=cfg.code_path, trust=cfg.trust_pickle,
                    spec=cfg.spec)


def unpickle(path: Path, key: str, *, code_path: Path | None, trust: bool,
              spec: str) -> Any:
    import torch

    if not trust:
        raise ModelLoadError(
            f"{spec}: refusing to load the pickle {path}: unpickling can run arbitrary code on "
            f"this machine. Only if you trust where the file comes from, set "
            f"trust_pickle: true in the model's config section (gan-audit layers: "
            f"--trust-pickle).")
    if not Path(path).is_file():
        raise ModelLoadError(f"{spec}: the file {path} does not exist.{CHECK_PATH}")
    add_code_path(code_path, spec=spec)
    try:
        if zipfile.is_zipfile(path):  # torch.save checkpoint
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with open(path, "rb") as fh:
                obj = pickle.load(fh)
    except ModuleNotFoundError as exc:
        raise ModelLoadError(f"{spec}: unpickling needs the module {exc.name or exc!r}: "
                             f"{missing_module(exc, code_path=code_path)}") from exc
    except (Exception, SystemExit) as exc:
        where = user_frame(exc)
        at = f" at {where[0]}, line {where[1]}" if where else ""
        raise ModelLoadError(f"{spec}: cannot unpickle {path} ({type(exc).__name__}{at}: "
                             f"{exc}; full traceback with --debug).") from exc
    if not key:
        return obj
    if isinstance(obj, dict):
        if key not in obj:
            raise ModelLoadError(f"{spec}: the pickle has no key {key!r}; it has "
                                 f"{sorted(map(str, obj))}.")
        return obj[key]
    if hasattr(obj, key):
        return getattr(obj, key)
    raise ModelLoadError(f"{spec}: the pickled {type(obj).__name__} has no {key!r}.")
