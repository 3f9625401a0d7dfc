"""Load stage: turn a model spec into a module in eval mode, with its quirks handled.

Specs (see ``DiscriminatorConfig`` / ``GeneratorConfig``)::

    builtin:NAME                      models shipped with the tool (``digits-dcgan``)
    torchscript:PATH
    python:MODULE:CALLABLE            MODULE dotted or a .py path; kwargs, weights, weights_key,
                                      code_path (a folder holding MODULE, e.g. a repository)
    pickle:PATH#KEY                   with code_path and trust_pickle (StyleGAN2-ADA / StyleGAN3)

Adapters for real discriminators: blocks or models that return tuples (the first
tensor is taken, and :attr:`LoadedModel.notes` says so), conditional models that
need class labels (``c``/``y``), augmentation switched on inside forward (known
flags such as ``diffaug`` are switched off, and a warning is raised when two calls
on the same input differ), and layers whose output depends on the other images in
the batch (minibatch standard deviation), found by running one image inside two
different batches.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import pickle
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from audit.errors import CHECK_PATH, LayerError, ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from torch import nn

    from audit.config import DiscriminatorConfig, GeneratorConfig

__all__ = [
    "BUILTIN_MODELS", "BuiltinModel", "InputSpec", "LayerInfo", "LoadedModel", "LoadedGenerator",
    "Conditioning", "load_discriminator", "load_generator", "sample_generated", "probe_layers",
    "state_sha256", "resolve_device", "save_png", "hookable_modules", "auto_layers",
]


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped with the tool: factories as ``module:callable`` strings (imported lazily)
    and the input it expects."""

    discriminator: str
    generator: str
    image_size: int
    channels: int
    latent_dim: int


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "digits-dcgan": BuiltinModel(discriminator="audit.demo.models:builtin_discriminator",
                                 generator="audit.demo.models:builtin_generator",
                                 image_size=32, channels=1, latent_dim=64),
}

# Flags of augmentation applied inside forward (Projected GAN, StyleGAN-XL: ``diffaug``).
_AUG_FLAGS = ("diffaug", "diff_aug", "use_diffaug", "augment", "use_augment")
# Sizes tried, in order, when a model does not say its input size.
_GUESS_SIZES = (32, 64, 128, 256, 16, 28, 224, 512, 1024)
_ACTIVATIONS = ("ReLU", "LeakyReLU", "GELU", "SiLU", "ELU", "SELU", "Mish", "PReLU", "Tanh",
                "Sigmoid", "Softplus", "Hardswish")


@dataclass(frozen=True)
class InputSpec:
    """What a model expects as input: N x channels x image_size x image_size in value_range.

    ``None`` where the model does not say (then the images decide, unchanged).
    """

    image_size: int | None
    channels: int | None
    value_range: tuple[float, float] = (-1.0, 1.0)


@dataclass(frozen=True)
class Conditioning:
    """How to pass class labels to a conditional model.

    ``param`` is the forward argument (``c``, ``y``...), passed positionally second.
    ``num_classes`` set: a one-hot float vector of that size (StyleGAN's ``c``; 0 for an
    unconditional StyleGAN, which still takes an empty ``c``); None: integer labels
    (BigGAN's ``y``).
    ``class_label`` is the default label when the data gives none.
    """

    param: str
    num_classes: int | None
    class_label: int | None

    def tensor(self, n: int, labels: Any = None, *, device: Any = "cpu") -> torch.Tensor:
        """Labels for a batch of ``n`` images: N x num_classes one-hot, or N integers."""
        import torch

        if self.num_classes == 0:
            return torch.zeros(n, 0, device=device)
        if labels is None:
            if self.class_label is None:
                raise ModelLoadError(
                    f"the model is conditional (its forward takes {self.param!r}) but no class "
                    f"label was given. Set class_label (and num_classes for a one-hot vector) in "
                    f"the model's config section, or for a discriminator class_source (each "
                    f"image's class from its labels).")
            labels = torch.full((n,), int(self.class_label), dtype=torch.long)
        labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(n)
        if self.num_classes is None:
            return labels
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise ModelLoadError(f"class labels must lie in [0, {self.num_classes - 1}] for this "
                                 f"model (num_classes={self.num_classes}); got "
                                 f"{int(labels.min())}..{int(labels.max())}.")
        return torch.nn.functional.one_hot(labels, self.num_classes).float()


@dataclass(frozen=True)
class LayerInfo:
    """One module of a model as seen by one dummy forward pass.

    ``shape`` is the output shape per image (without the batch dimension), None when the
    module was not called or returned no tensor. ``batch_dependent``: the output for one
    image changed when the other images of the batch changed. ``nondeterministic``: two calls
    on the same batch differed (augmentation or dropout inside forward).
    """

    name: str
    type: str
    shape: tuple[int, ...] | None
    params: int
    batch_dependent: bool = False
    nondeterministic: bool = False
    tuple_output: bool = False
    order: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type,
                "shape": list(self.shape) if self.shape is not None else None,
                "params": self.params, "batch_dependent": self.batch_dependent,
                "nondeterministic": self.nondeterministic, "tuple_output": self.tuple_output}


@dataclass
class LoadedModel:
    """A discriminator ready for auditing: eval mode, no gradients, quirks adapted.

    Attributes
    ----------
    module : nn.Module
        The model in eval mode with ``requires_grad`` off.
    spec : str
        The spec it was loaded from.
    sha256 : str
        Hash of its state (tensors of ``state_dict`` in sorted key order): the same weights
        give the same hash whatever file they came from.
    input : InputSpec
        Expected input size, channels and value range.
    notes : list of str
        Adapters applied (e.g. "blocks return tuples: took element 0").
    batch_dependent_layers : list of str
        Modules whose output depends on the other images in the batch.
    layer_info : list of LayerInfo
        Every module with its output shape for one dummy batch (see :func:`probe_layers`).
    conditioning : Conditioning or None
        How class labels are passed, for conditional models.
    classes_from_data : bool
        Each image's class comes with the images (``class_source``), not from the config.
    """

    module: nn.Module
    spec: str
    sha256: str
    input: InputSpec
    notes: list[str] = field(default_factory=list)
    batch_dependent_layers: list[str] = field(default_factory=list)
    layer_info: list[LayerInfo] = field(default_factory=list)
    conditioning: Conditioning | None = None
    device: str = "cpu"
    classes_from_data: bool = False

    def forward(self, x: torch.Tensor, class_labels: Any = None) -> torch.Tensor:
        """Raw model output for images ``x`` (N x C x H x W); the first tensor of a tuple.

        Raises :class:`ModelLoadError` unless the output has one row per image (N, N x 1, or
        N x ... multi-scale logits): a 0-dim tensor or another batch size has no score per
        image.
        """
        if self.conditioning is not None:
            out = self.module(x, self.conditioning.tensor(x.shape[0], class_labels,
                                                          device=x.device))
        else:
            out = self.module(x)
        out = first_tensor(out)
        n = x.shape[0]
        if out.ndim == 0 or out.shape[0] != n:
            got = "a 0-dim tensor (one number)" if out.ndim == 0 else \
                f"a tensor of shape {tuple(out.shape)}"
            raise ModelLoadError(
                f"{self.spec}: the discriminator returned {got} for a batch of {n} images; "
                f"expected N or N x 1 logits, one score per image (shape ({n},) or ({n}, 1)). "
                f"Make forward return a score per image (no mean or sum over the batch), or "
                f"wrap the model so that it does.")
        return out

    def scores(self, output: torch.Tensor) -> torch.Tensor:
        """The realness score per image (N,) from the raw output: N or N x 1 as is, a wider
        output (multi-scale logits, as in Projected GAN) averaged per image."""
        return output.reshape(output.shape[0], -1).float().mean(dim=1)


@dataclass
class LoadedGenerator:
    """A generator ready for sampling: eval mode, no gradients.

    ``latent_shape`` is the shape of one latent (``(latent_dim,)`` or ``(latent_dim, 1, 1)``);
    ``truncation_param`` the forward keyword taking the truncation, if any.
    """

    module: nn.Module
    spec: str
    sha256: str
    latent_shape: tuple[int, ...]
    notes: list[str] = field(default_factory=list)
    conditioning: Conditioning | None = None
    truncation_param: str | None = None
    device: str = "cpu"

    @property
    def latent_dim(self) -> int:
        return self.latent_shape[0]


# ---------------------------------------------------------------- small helpers


def first_tensor(out: Any) -> torch.Tensor:
    """The tensor in a module output: itself, or the first tensor of a tuple/list/dict."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out
    if isinstance(values, (tuple, list)) or isinstance(out, dict):
        for item in values:
            if isinstance(item, torch.Tensor):
                return item
    raise LayerError(f"a module returned {type(out).__name__}, which holds no tensor; pick a "
                     f"module whose output is a tensor (see `gan-audit layers`).")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if available, else ``mps``, else ``cpu``; others checked."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for but CUDA is not available here. "
                             f"Use --device cpu (or auto).")
    if device == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                and torch.backends.mps.is_available()):
        raise ModelLoadError("device 'mps' was asked for but MPS is not available here. Use "
                             "--device cpu (or auto).")
    return device


def state_sha256(module: nn.Module) -> str:
    """sha256 of a module's state: each ``state_dict`` entry (name, dtype, shape, bytes) in
    sorted key order. Independent of the file format the weights came from."""
    import torch

    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# Packages of model repositories that their pickles and code import (StyleGAN2-ADA,
# StyleGAN3): never on PyPI, always the repository, so the fix is code_path.
_REPO_MODULES = ("dnnlib", "torch_utils")
# Import names whose pip package is named otherwise.
_PIP_NAMES = {"PIL": "pillow", "cv2": "opencv-python", "sklearn": "scikit-learn",
              "skimage": "scikit-image", "yaml": "pyyaml", "attr": "attrs"}


def _add_code_path(code_path: Path | None, *, spec: str) -> None:
    """Put ``code_path`` first on ``sys.path`` (kept: model classes may import lazily)."""
    if code_path is None:
        return
    if not Path(code_path).is_dir():
        raise ModelLoadError(f"{spec}: code_path {code_path} is not a folder.{CHECK_PATH}")
    if str(code_path) not in sys.path:
        sys.path.insert(0, str(code_path))


def _user_frame(exc: BaseException) -> tuple[str, int] | None:
    """The innermost frame of ``exc``'s traceback in the user's code (not in gan-audit,
    torch or the standard library): its file and line; None if the error arose in those."""
    import os
    import sysconfig
    import traceback

    stdlib = str(Path(sysconfig.get_paths()["stdlib"]).resolve())
    ours = [str(Path(__file__).resolve().parent)]
    torch_module = sys.modules.get("torch")
    if torch_module is not None and getattr(torch_module, "__file__", None):
        ours.append(str(Path(torch_module.__file__).resolve().parent))

    def under(path: str, folder: str) -> bool:
        return path == folder or path.startswith(folder + os.sep)

    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith("<"):
            continue
        path = str(Path(frame.filename).resolve())
        if any(under(path, d) for d in ours) or (under(path, stdlib)
                                                 and "-packages" not in path):
            continue
        return frame.filename, frame.lineno or 0
    return None


def _in_folder(module: str, folder: Path | None) -> bool:
    """Whether ``folder`` holds the top-level package or module ``module``."""
    return folder is not None and ((Path(folder) / module).is_dir()
                                   or (Path(folder) / f"{module}.py").is_file())


def _missing_module(exc: ModuleNotFoundError, *, code_path: Path | None) -> str:
    """What to do about a module that the model's code or pickle imports and cannot find.

    The model repository's own modules (``dnnlib``, ``torch_utils``; a module that a pickle
    names itself while no code_path is set may be either) are found through code_path; a
    module that code imports and code_path does not hold is a package to install (its pip
    command); a module missing from a package that is installed means another version.
    (A ``python:`` spec's own module: :func:`_missing_spec_module`.)
    """
    name = exc.name or str(exc).rpartition(" ")[2].strip("'\"")
    top = name.partition(".")[0]
    pip = _PIP_NAMES.get(top, top)
    importer = _user_frame(exc)
    by = f" (imported by {importer[0]}, line {importer[1]})" if importer else ""
    try:
        top_found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        top_found = False
    if top != name and top_found:  # the package is there, the submodule not: another version
        if _in_folder(top, code_path):
            return (f"the module {name!r}{by} is not in {code_path / top}: is code_path the "
                    f"repository (and version) the model was made with?")
        return (f"the installed {top!r} has no module {name!r}{by}: the model was probably "
                f"saved with another version of {pip}. Install that version "
                f"(pip install --upgrade {pip}, or pip install '{pip}==VERSION').")
    if top in _REPO_MODULES:
        if code_path is not None:
            return (f"the module {name!r}{by} is the model repository's own code, and "
                    f"code_path {code_path} holds no {top}/ or {top}.py. Set code_path to the "
                    f"repository that has it.")
        return (f"the module {name!r}{by} is the model repository's own code: set code_path "
                f"to the folder that holds {top}/ (for StyleGAN2-ADA / StyleGAN3: the "
                f"repository, which has dnnlib/ and torch_utils/).")
    if importer is None and code_path is None:  # a pickle names it itself: code or package
        return (f"the module {name!r} is not importable. If it is the model's own code, set "
                f"code_path to the folder that holds {top}/ or {top}.py (for StyleGAN2-ADA / "
                f"StyleGAN3 pickles: the repository, which has dnnlib/ and torch_utils/); if "
                f"it is a package, install it: pip install {pip}.")
    where = (f" and code_path {code_path} does not hold it"
             if code_path is not None and importer is None else "")
    return (f"the package {top!r}{by} is not installed{where}. Install it: pip install {pip}.")


def _missing_spec_module(name: str, *, code_path: Path | None) -> str:
    """What to do when the module named by a ``python:`` spec (or a package of it) is missing:
    a misspelled submodule of a package that is there, or a package to install or find."""
    import pkgutil

    parent, _, _ = name.rpartition(".")
    try:
        found = importlib.util.find_spec(parent) if parent else None
    except (ImportError, ValueError):
        found = None
    if found is not None and found.submodule_search_locations is not None:
        names = sorted(m.name for m in pkgutil.iter_modules(found.submodule_search_locations))
        return (f"The package {parent!r} has no module {name!r}; it has "
                f"{', '.join(names[:20]) or 'no modules'}. Check the module path in the spec.")
    top = name.partition(".")[0]
    fix = (f"Install its package (pip install {_PIP_NAMES.get(top, top)}), give the path to its "
           f".py file (python:path/to/file.py:NAME), or set code_path to the folder that holds "
           f"{top}/.")
    if code_path is not None:
        fix += f" (code_path {code_path} holds no {top}/ or {top}.py.)"
    return fix


def _import_callable(target: str, *, spec: str,
                     code_path: Path | None = None) -> Callable[..., Any]:
    """``pkg.mod:name`` or ``/path/file.py:name`` -> the object.

    ``code_path`` is put on ``sys.path`` first (a module inside a model repository). Any
    exception while importing the module (a missing package, a syntax error, an error in
    its top-level code, even ``sys.exit``) is a :class:`ModelLoadError` naming the spec,
    the exception and what to do.
    """
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise ModelLoadError(f"{spec}: expected python:MODULE:CALLABLE (e.g. "
                             f"python:mypkg.models:make_discriminator or "
                             f"python:models.py:Discriminator).")
    _add_code_path(code_path, spec=spec)
    own = None if module_name.endswith(".py") else module_name.partition(".")[0]
    try:
        module = _import_module(module_name, spec=spec)
    except ModelLoadError:
        raise
    except ModuleNotFoundError as exc:
        what = f"the file {module_name}" if own is None else f"module {module_name!r}"
        name = exc.name or ""
        if own is not None and name and (module_name == name
                                         or module_name.startswith(name + ".")):
            raise ModelLoadError(f"{spec}: cannot import {what} ({exc}). "
                                 f"{_missing_spec_module(name, code_path=code_path)}") from exc
        raise ModelLoadError(f"{spec}: cannot import {what}: "
                             f"{_missing_module(exc, code_path=code_path)}") from exc
    except (Exception, SystemExit) as exc:  # the module's own code failed at import
        where = _user_frame(exc)
        at = f" at {where[0]}, line {where[1]}" if where and not isinstance(
            exc, SyntaxError) else ""
        raise ModelLoadError(
            f"{spec}: importing {module_name!r} raised {type(exc).__name__}{at}: {exc} (full "
            f"traceback with --debug). Fix that module, or what it needs at import.") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        names = [n for n in dir(module) if not n.startswith("_")]
        raise ModelLoadError(f"{spec}: module {module_name!r} has no {attr!r}; it has "
                             f"{', '.join(names[:20])}.") from exc


def _import_module(module_name: str, *, spec: str) -> Any:
    """Import a dotted module, or a ``.py`` file under a name of its own (its folder on
    ``sys.path`` while it runs); a file whose import fails leaves no half-made module."""
    if not module_name.endswith(".py"):
        return importlib.import_module(module_name)
    path = Path(module_name)
    if not path.is_file():
        raise ModelLoadError(f"{spec}: the file {path} does not exist.{CHECK_PATH}")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    unique = f"gan_audit_user_{digest}"
    mod_spec = importlib.util.spec_from_file_location(unique, path)
    if mod_spec is None or mod_spec.loader is None:
        raise ModelLoadError(f"{spec}: cannot import {path} as a Python module.")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[unique] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        mod_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(unique, None)
        raise
    finally:
        sys.path.remove(folder)
    return module


def _call_factory(factory: Callable[..., Any], kwargs: dict[str, Any], *, spec: str,
                  target: str) -> Any:
    """``factory(**kwargs)``; any exception it raises is a :class:`ModelLoadError` naming the
    spec, the kwargs and the exception (a user error raised inside stays as it is)."""
    try:
        return factory(**kwargs)
    except ModelLoadError:
        raise
    except (Exception, SystemExit) as exc:
        where = _user_frame(exc)
        at = f" at {where[0]}, line {where[1]}" if where else ""
        fix = ("Fix the kwargs in the config." if isinstance(exc, TypeError) else
               "Check the kwargs in the config and the model's code.")
        raise ModelLoadError(
            f"{spec}: calling {target} with kwargs {kwargs} raised {type(exc).__name__}{at}: "
            f"{exc} (full traceback with --debug). {fix}") from exc


def _strict_state_dict(module: nn.Module, state: dict[str, Any], *, where: str) -> list[str]:
    """Load ``state`` strictly; a message listing missing/unexpected/misshapen keys."""
    notes: list[str] = []
    own = module.state_dict()
    if state and all(k.startswith("module.") for k in state) and not any(
            k.startswith("module.") for k in own):
        state = {k[len("module."):]: v for k, v in state.items()}
        notes.append("weights saved from DataParallel: stripped the 'module.' prefix")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = sorted(k for k in set(own) & set(state) if hasattr(state[k], "shape")
                       and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or misshapen:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:10]) + (f" (+{len(keys) - 10} more)" if len(keys) > 10 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if misshapen:
            parts.append("shape mismatch: " + show(
                [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in misshapen]))
        raise ModelLoadError(f"{where}: the weights do not fit the model; " + "; ".join(parts)
                             + ". Check the kwargs (model size) and weights_key.")
    module.load_state_dict(state, strict=True)
    return notes


def _load_weights(module: nn.Module, path: Path, key: str | None, *, spec: str) -> list[str]:
    import torch

    if not Path(path).is_file():
        raise ModelLoadError(f"{spec}: weights file {path} does not exist.{CHECK_PATH}")
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({exc}). Only plain "
            f"state_dicts of tensors are accepted here; a checkpoint holding Python objects is a "
            f"pickle: use a pickle: spec with trust_pickle: true if you trust it.") from exc
    if key is not None:
        if not isinstance(state, dict) or key not in state:
            keys = list(state) if isinstance(state, dict) else []
            raise ModelLoadError(f"{path}: has no key {key!r} (weights_key); its keys are "
                                 f"{keys[:20]}.")
        state = state[key]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: expected a state_dict (a dict of tensors), found "
                             f"{type(state).__name__}. Set weights_key to the entry holding it.")
    return _strict_state_dict(module, state, where=str(path))


def _unpickle(path: Path, key: str, *, code_path: Path | None, trust: bool,
              spec: str) -> Any:
    import torch

    if not trust:
        raise ModelLoadError(
            f"{spec}: refusing to load the pickle {path}: unpickling can run arbitrary code on "
            f"this machine. Only if you trust where the file comes from, set "
            f"trust_pickle: true in the model's config section.")
    if not Path(path).is_file():
        raise ModelLoadError(f"{spec}: the file {path} does not exist.{CHECK_PATH}")
    _add_code_path(code_path, spec=spec)
    try:
        if zipfile.is_zipfile(path):  # torch.save checkpoint
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with open(path, "rb") as fh:
                obj = pickle.load(fh)
    except ModuleNotFoundError as exc:
        raise ModelLoadError(f"{spec}: unpickling needs the module {exc.name or exc!r}: "
                             f"{_missing_module(exc, code_path=code_path)}") from exc
    except (Exception, SystemExit) as exc:
        where = _user_frame(exc)
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


def _build(cfg: Any, role: Literal["discriminator", "generator"]) -> tuple[Any, list[str],
                                                                           BuiltinModel | None]:
    """Resolve a spec into a module (not yet in eval mode); notes; the builtin entry if any."""
    from torch import nn

    spec: str = cfg.spec
    kind, _, rest = spec.partition(":")
    notes: list[str] = []
    builtin = None
    if kind == "builtin":
        if rest not in BUILTIN_MODELS:
            raise ModelLoadError(f"{spec}: unknown builtin model {rest!r}; builtin models are "
                                 f"{', '.join(sorted(BUILTIN_MODELS))}.")
        builtin = BUILTIN_MODELS[rest]
        target = getattr(builtin, role)
        obj = _call_factory(_import_callable(target, spec=spec), cfg.kwargs, spec=spec,
                            target=target)
    elif kind == "torchscript":
        import torch

        path = Path(rest)
        if not path.is_file():
            raise ModelLoadError(f"{spec}: the file {path} does not exist.{CHECK_PATH}")
        try:
            obj = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ModelLoadError(f"{spec}: not a TorchScript file ({exc}). Save the model with "
                                 f"torch.jit.script(model).save(path) or use a python: spec.") \
                from exc
    elif kind == "python":
        factory = _import_callable(rest, spec=spec, code_path=cfg.code_path)
        obj = _call_factory(factory, cfg.kwargs, spec=spec, target=rest)
    elif kind == "pickle":
        path, _, key = rest.partition("#")
        obj = _unpickle(Path(path), key, code_path=cfg.code_path, trust=cfg.trust_pickle,
                        spec=spec)
    else:
        raise ModelLoadError(f"{spec}: unknown spec type {kind!r}; use builtin:, torchscript:, "
                             f"python: or pickle:.")
    if not isinstance(obj, nn.Module):
        hint = (" It looks like a state_dict: use a python:MODULE:CALLABLE spec that builds the "
                "model, with weights: and weights_key:." if isinstance(obj, dict) else "")
        raise ModelLoadError(f"{spec}: expected a torch.nn.Module, got {type(obj).__name__}.{hint}")
    if cfg.weights is not None:
        notes += _load_weights(obj, Path(cfg.weights), cfg.weights_key, spec=spec)
    obj.eval()
    for param in obj.parameters():
        param.requires_grad_(False)
    return obj, notes, builtin


def _switch_off_augmentation(module: nn.Module) -> list[str]:
    notes = []
    for name, sub in module.named_modules():
        for flag in _AUG_FLAGS:
            value = getattr(sub, flag, None)
            if isinstance(value, bool) and value:
                try:
                    setattr(sub, flag, False)
                except Exception:  # TorchScript attributes may be frozen
                    notes.append(f"{name or 'model'}.{flag} is on and could not be switched off")
                    continue
                notes.append(f"{name or 'model'}.{flag} switched off (augmentation inside "
                             f"forward)")
    return notes


def _conditioning(module: nn.Module, cfg: Any) -> Conditioning | None:
    """Whether forward takes a second, required argument (class labels), and how."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):  # TorchScript and builtins may have no signature
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 or positional[1].default is not inspect.Parameter.empty:
        return None
    num_classes = cfg.num_classes
    c_dim = getattr(module, "c_dim", None)
    if num_classes is None and isinstance(c_dim, int):
        num_classes = c_dim
    return Conditioning(param=positional[1].name, num_classes=num_classes,
                        class_label=cfg.class_label)


def _first_conv_channels(module: nn.Module) -> int | None:
    from torch import nn

    for sub in module.modules():
        if isinstance(sub, nn.Conv2d) or getattr(sub, "original_name", None) == "Conv2d":
            channels = getattr(sub, "in_channels", None)
            return channels if isinstance(channels, int) else None
    return None


def _scripted_child(child: nn.Module) -> nn.Module:
    """An eager wrapper around a TorchScript submodule, so that forward hooks can see it."""
    from torch import nn

    class ScriptedChild(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.script = child

        def forward(self, *args: Any) -> Any:
            return self.script(*args)

    return ScriptedChild()


def _adapt_torchscript(module: nn.Module, notes: list[str]) -> nn.Module:
    """TorchScript modules take no forward hooks. A scripted Sequential is rebuilt as an eager
    Sequential of wrapped children (whose outputs can then be recorded); any other scripted
    model keeps only its output score."""
    from collections import OrderedDict

    import torch
    from torch import nn

    if not isinstance(module, torch.jit.ScriptModule):
        return module
    if getattr(module, "original_name", None) == "Sequential":
        notes.append("TorchScript Sequential: its top-level children are run one by one so "
                     "that their outputs can be recorded")
        return nn.Sequential(OrderedDict(
            (name, _scripted_child(child)) for name, child in module.named_children())).eval()
    notes.append("TorchScript module: forward hooks are not supported on scripted modules, so "
                 "only the output score can be recorded; use a python: spec to record layers")
    return module


def hookable_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``named_modules()`` without the root and without TorchScript modules (no hooks)."""
    import torch

    return [(n, m) for n, m in module.named_modules()
            if n and not isinstance(m, torch.jit.ScriptModule)]


def _as_config(cfg: Any, cls_name: str) -> Any:
    from audit import config as config_module

    cls = getattr(config_module, cls_name)
    if isinstance(cfg, str):
        return cls(spec=cfg)
    return cfg


# ---------------------------------------------------------------- discriminator


_MODELS: ContextVar[dict[tuple[Any, ...], Any] | None] = ContextVar("gan_audit_models",
                                                                  default=None)


@contextmanager
def shared_models() -> Iterator[None]:
    """Within this block, each discriminator and generator (same config section and device)
    is loaded once and shared: the stages of one run (extract, samples, insight) then do not
    each unpickle and probe the same network again."""
    token = _MODELS.set({})
    try:
        yield
    finally:
        _MODELS.reset(token)


def _shared(key: tuple[Any, ...], load: Callable[[], Any]) -> Any:
    cache = _MODELS.get()
    if cache is None:
        return load()
    if key not in cache:
        cache[key] = load()
    return cache[key]


def load_discriminator(cfg: DiscriminatorConfig | str, *, device: str = "cpu",
                       probe: bool = True) -> LoadedModel:
    """Load a discriminator from a spec or its config section.

    Parameters
    ----------
    cfg : DiscriminatorConfig or str
        The config section, or a bare spec string (defaults for everything else).
    device : str
        ``cpu``, ``cuda``, ``mps`` or ``auto``.
    probe : bool
        Run :func:`probe_layers` on dummy batches to fill ``layer_info`` and
        ``batch_dependent_layers``, and to check for augmentation inside forward.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelLoadError
        The spec does not resolve, the pickle is not trusted, the weights do not fit.
    """
    cfg = _as_config(cfg, "DiscriminatorConfig")
    device = resolve_device(device)
    return _shared(("discriminator", cfg.model_dump_json(), device, probe),
                   lambda: _load_discriminator(cfg, device, probe))


def _load_discriminator(cfg: Any, device: str, probe: bool) -> LoadedModel:
    module, notes, builtin = _build(cfg, "discriminator")
    sha256 = state_sha256(module)
    notes += _switch_off_augmentation(module)
    image_size = cfg.image_size or _int_attr(module, "img_resolution", "image_size", "resolution")
    channels = cfg.channels or _int_attr(module, "img_channels", "channels", "in_channels")
    if builtin is not None:
        image_size = image_size or builtin.image_size
        channels = channels or builtin.channels
    if channels is None:
        channels = _first_conv_channels(module)
        if channels is not None:
            notes.append(f"input channels {channels} taken from the first convolution")
    model = LoadedModel(
        module=_adapt_torchscript(module, notes).to(device), spec=cfg.spec, sha256=sha256,
        input=InputSpec(image_size, channels, tuple(cfg.value_range)), notes=notes,
        conditioning=_conditioning(module, cfg), device=device,
        classes_from_data=cfg.class_source is not None)
    if probe:
        model.layer_info = probe_layers(model)
        model.batch_dependent_layers = [i.name for i in model.layer_info if i.batch_dependent]
    return model


def _int_attr(module: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _dummy_batch(n: int, channels: int, size: int, value_range: tuple[float, float], *,
                 seed: int, device: str) -> torch.Tensor:
    import torch

    g = torch.Generator().manual_seed(seed)
    lo, hi = value_range
    return (torch.rand(n, channels, size, size, generator=g) * (hi - lo) + lo).to(device)


def probe_layers(model: LoadedModel, *, image_size: int | None = None,
                 channels: int | None = None, batch: int = 4, seed: int = 0) -> list[LayerInfo]:
    """Every module of ``model`` with its output shape, parameter count and batch dependence.

    Runs dummy batches (uniform noise in the input range): batch A twice (outputs that differ
    mean augmentation or dropout inside forward: a warning and ``nondeterministic``), and
    batch B that shares A's first image but not the others (an output that changes for that
    image means the module depends on the batch: ``batch_dependent``).

    Parameters
    ----------
    image_size, channels : int, optional
        Dummy input size; default the model's input spec, else the first of the common sizes
        32, 64, 128, ... that runs (recorded in ``model.notes``).
    batch : int
        Images per dummy batch (4 covers StyleGAN's minibatch-stddev group of 4).

    Returns
    -------
    list of LayerInfo
        In ``named_modules()`` order (the root, named ``""``, is left out); ``order`` is the
        position of the module's first call during forward (-1 if never called).
    """
    import torch

    size = image_size or model.input.image_size
    ch = channels or model.input.channels or 3
    sizes = [size] if size else list(_GUESS_SIZES)
    names = {m: n for n, m in hookable_modules(model.module)}
    last_error: Exception | None = None
    for s in sizes:
        xa = _dummy_batch(2 * batch - 1, ch, s, model.input.value_range, seed=seed,
                          device=model.device)
        xb = torch.cat([xa[:1], xa[batch:]])
        xa = xa[:batch]
        try:
            runs = [_record_all(model, x, names) for x in (xa, xa, xb)]
        except (LayerError, ModelLoadError):    # (no class label: not about the input size)
            raise
        except Exception as exc:
            last_error = exc
            continue
        if not size:
            model.notes.append(f"input size not given: probed with {s} x {s}, the first of "
                               f"{list(_GUESS_SIZES)} that ran")
        return _layer_table(model, names, runs)
    raise ModelLoadError(
        f"{model.spec}: the model failed on a dummy batch of {ch} x {sizes[0]} x {sizes[0]} "
        f"images{'' if size else ' (and other common sizes)'} in {model.input.value_range} "
        f"({type(last_error).__name__}: {last_error}). Give the model's input with "
        f"image_size and channels (CLI: --image-size, --channels).") from last_error


def _record_all(model: LoadedModel, x: torch.Tensor,
                names: dict[Any, str]) -> tuple[dict[str, Any], torch.Tensor]:
    """Forward ``x``; every module's output (first call; first tensor of tuples) and the output."""
    import torch

    seen: dict[str, Any] = {}

    def hook(module: Any, _inp: Any, out: Any) -> None:
        name = names[module]
        if name in seen:
            return
        tensor = out if isinstance(out, torch.Tensor) else None
        is_tuple = isinstance(out, (tuple, list, dict))
        if is_tuple:
            try:
                tensor = first_tensor(out)
            except LayerError:
                tensor = None
        seen[name] = (tensor.detach().float().clone() if tensor is not None else None, is_tuple,
                      len(seen))

    handles = [m.register_forward_hook(hook) for m in names]
    cond = model.conditioning
    # A discriminator whose classes come with the images (class_source) gets class 0 for
    # the dummy batches; without class_label or class_source the probe fails clearly.
    labels = [0] * len(x) if cond is not None and cond.class_label is None \
        and model.classes_from_data else None
    try:
        with torch.inference_mode():
            out = model.forward(x, labels)
    finally:
        for h in handles:
            h.remove()
    return seen, out.detach().float().clone()


def _gap(a: Any, b: Any) -> tuple[float, float]:
    """Largest difference between the first image's outputs of two runs, and their scale."""
    if a is None or b is None or a.shape[1:] != b.shape[1:]:
        return 0.0, 0.0
    return float((a[0] - b[0]).abs().max()), float(a[0].abs().max())


def _flags(a1: Any, a2: Any, b: Any) -> tuple[bool, bool]:
    """(nondeterministic, batch_dependent) of one module from three runs.

    Two calls on the same batch differing by more than 1e-3 of the output's scale mean
    sampling inside forward. Otherwise the output for the shared image is batch dependent
    when it moved by more than 1e-5 of its scale and ten times the run-to-run noise
    (relative thresholds: activations can be tiny at random initialisation).
    """
    noise, scale = _gap(a1, a2)
    if noise > 1e-3 * scale:
        return True, False
    moved, _ = _gap(a1, b)
    return False, moved > max(1e-5 * scale, 10 * noise)


def _layer_table(model: LoadedModel, names: dict[Any, str],
                 runs: list[tuple[dict[str, Any], Any]]) -> list[LayerInfo]:
    (a1, out1), (a2, out2), (b, _) = runs
    table = []
    for module, name in names.items():
        rec = a1.get(name)
        tensor, is_tuple, order = rec if rec else (None, False, -1)
        nondet, dependent = (False, False) if rec is None else _flags(
            tensor, a2[name][0], b[name][0] if name in b else None)
        table.append(LayerInfo(
            name=name, type=type(module).__name__,
            shape=tuple(tensor.shape[1:]) if tensor is not None else None,
            params=sum(p.numel() for p in module.parameters()), batch_dependent=dependent,
            nondeterministic=nondet, tuple_output=is_tuple, order=order))
    tuples = [i.name for i in table if i.tuple_output]
    if tuples:
        model.notes.append(f"modules return tuples, the first tensor is taken: "
                           f"{', '.join(tuples[:8])}{' ...' if len(tuples) > 8 else ''}")
    if _flags(out1, out2, None)[0]:
        msg = (f"{model.spec}: two calls on the same images gave different outputs: the model "
               f"augments or samples inside forward (e.g. DiffAugment). Activations will not be "
               f"reproducible; switch the augmentation off in the model before auditing.")
        model.notes.append("output differs between two calls on the same input")
        warnings.warn(msg, stacklevel=3)
    return table


def auto_layers(model: LoadedModel, *, include_batch_dependent: bool = False,
                k: int = 5) -> list[str]:
    """A spread of intermediate layers, mid to late, for ``layers: auto``.

    Candidates: modules called during forward whose output has more than one value per
    image, in call order (batch-dependent and nondeterministic ones dropped unless
    ``include_batch_dependent``). Activation modules are preferred when there are at least
    four; otherwise the shallowest nesting level with at least four candidates. The first
    third is skipped and up to ``k`` layers are spread evenly over the rest, the last included.
    """
    import numpy as np

    info = model.layer_info or probe_layers(model)
    cands = [i for i in info if i.shape is not None and int(np.prod(i.shape)) > 1
             and i.order >= 0 and not i.nondeterministic
             and (include_batch_dependent or not i.batch_dependent)]
    if not cands:
        raise LayerError(f"{model.spec}: no module has a usable output for layers: auto; list "
                         f"layers by name (see `gan-audit layers {model.spec}`).")
    cands.sort(key=lambda i: i.order)
    acts = [i for i in cands if i.type in _ACTIVATIONS]
    if len(acts) >= 4:
        cands = acts
    else:
        by_depth: dict[int, list[LayerInfo]] = {}
        for i in cands:
            by_depth.setdefault(i.name.count("."), []).append(i)
        rich = [d for d in sorted(by_depth) if len(by_depth[d]) >= 4]
        cands = by_depth[rich[0]] if rich else max(by_depth.values(), key=len)
    rest = cands[len(cands) // 3:]
    if len(rest) < 4:
        rest = cands[-4:]
    idx = sorted({round(float(v)) for v in np.linspace(0, len(rest) - 1, min(k, len(rest)))})
    return [rest[j].name for j in idx]


# ---------------------------------------------------------------- generator


def load_generator(cfg: GeneratorConfig | str, *, device: str = "cpu") -> LoadedGenerator:
    """Load a generator from a spec or its config section.

    The latent size comes from ``latent_dim`` in the config, else the model's ``z_dim`` /
    ``latent_dim`` / ``nz`` attribute, else the builtin registry. Truncation goes to a
    ``truncation_psi`` or ``truncation`` forward keyword (StyleGAN: ``truncation_psi``).
    """
    cfg = _as_config(cfg, "GeneratorConfig")
    device = resolve_device(device)
    return _shared(("generator", cfg.model_dump_json(), device),
                   lambda: _load_generator(cfg, device))


def _load_generator(cfg: Any, device: str) -> LoadedGenerator:
    module, notes, builtin = _build(cfg, "generator")
    latent_dim = cfg.latent_dim or _int_attr(module, "z_dim", "latent_dim", "nz", "latent_size")
    if latent_dim is None and builtin is not None:
        latent_dim = builtin.latent_dim
    if latent_dim is None:
        raise ModelLoadError(f"{cfg.spec}: the generator does not say its latent size; set "
                             f"latent_dim in the generator config.")
    shape = getattr(module, "latent_shape", None)
    latent_shape = tuple(shape) if shape else (latent_dim,)
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        params = {}
    trunc = next((p for p in ("truncation_psi", "truncation") if p in params), None)
    if cfg.truncation is not None and trunc is None:
        raise ModelLoadError(f"{cfg.spec}: truncation {cfg.truncation} was asked for but the "
                             f"generator's forward takes no truncation_psi/truncation argument. "
                             f"Remove truncation from the config.")
    return LoadedGenerator(module=module.to(device), spec=cfg.spec, sha256=state_sha256(module),
                           latent_shape=latent_shape, notes=notes,
                           conditioning=_conditioning(module, cfg), truncation_param=trunc,
                           device=device)


def image_seed(seed: int, index: int) -> int:
    """The seed of generated image ``index``: a hash of (seed, index), so an image does not
    depend on the batch size, the order of generation or the rank that made it."""
    digest = hashlib.sha256(f"gan-audit/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def latents(generator: LoadedGenerator, indices: Any, *, seed: int) -> torch.Tensor:
    """Standard normal latents, one per image index: len(indices) x latent_shape."""
    import torch

    out = torch.empty(len(indices), *generator.latent_shape)
    for row, i in enumerate(indices):
        g = torch.Generator().manual_seed(image_seed(seed, int(i)))
        out[row] = torch.randn(generator.latent_shape, generator=g)
    return out


def class_count(model: LoadedModel | LoadedGenerator) -> int | None:
    """Classes of a conditional model: its one-hot size, or its ``n_classes`` /
    ``num_classes`` attribute (integer labels); None when unknown or unconditional."""
    if model.conditioning is None:
        return None
    return model.conditioning.num_classes or _int_attr(model.module, "n_classes",
                                                       "num_classes")


def generated_classes(generator: LoadedGenerator, indices: Sequence[int], *, seed: int,
                      class_label: int | None, sampling: str = "fixed") -> np.ndarray | None:
    """The class of each generated image of ``indices`` (None for an unconditional
    generator, or a conditional one left to its default).

    ``fixed``: ``class_label`` for all (None if unset); ``uniform``: image ``i`` gets a class
    drawn uniformly from the generator's ``num_classes`` by its own seed
    (:func:`image_seed`), so it does not depend on batches or processes.
    """
    import numpy as np

    if generator.conditioning is None:
        return None
    if sampling == "fixed":
        return None if class_label is None else np.full(len(indices), int(class_label),
                                                        dtype=np.int64)
    k = class_count(generator)
    if not k:
        raise ModelLoadError(f"{generator.spec}: class_sampling: uniform needs the number of "
                             f"classes, which the generator does not say (no n_classes "
                             f"attribute); set num_classes in the generator config (which also "
                             f"passes classes as one-hot vectors).")
    return np.array([image_seed(seed, i) % k for i in indices], dtype=np.int64)


def generate_batch(generator: LoadedGenerator, indices: Any, *, seed: int,
                   truncation: float | None = None,
                   class_label: int | Sequence[int] | None = None) -> torch.Tensor:
    """Images for the given indices: N x C x H x W float32 on CPU, clamped to [-1, 1]
    (``class_label``: one class for all, or one per index)."""
    z = latents(generator, indices, seed=seed)
    return latents_to_images(generator, z, truncation=truncation, class_label=class_label)


def latents_to_images(generator: LoadedGenerator, z: torch.Tensor, *,
                      truncation: float | None = None,
                      class_label: int | Sequence[int] | None = None) -> torch.Tensor:
    """Images of latents ``z`` (N x latent shape): N x C x H x W float32 on CPU in [-1, 1]
    (``class_label``: one class for all, or one per latent)."""
    import torch

    z = z.to(generator.device)
    kwargs = {}
    if truncation is not None and generator.truncation_param is not None:
        kwargs[generator.truncation_param] = truncation
    with torch.inference_mode():
        if generator.conditioning is not None:
            labels = (None if class_label is None else [int(class_label)] * len(z)
                      if isinstance(class_label, int) else list(class_label))
            c = generator.conditioning.tensor(len(z), labels, device=generator.device)
            out = generator.module(z, c, **kwargs)
        else:
            out = generator.module(z, **kwargs)
    images = first_tensor(out).float()
    if images.ndim != 4:
        raise ModelLoadError(f"{generator.spec}: the generator returned shape "
                             f"{tuple(images.shape)}, expected N x C x H x W images.")
    return images.clamp(-1.0, 1.0).cpu()


def sample_generated(generator: LoadedGenerator, *, n: int, seed: int, batch_size: int = 64,
                     latent_dim: int | None = None, truncation: float | None = None,
                     class_label: int | None = None, png_dir: Path | None = None
                     ) -> torch.Tensor:
    """Sample ``n`` images: N x C x H x W float32 in [-1, 1] (clamped).

    Image ``i`` uses latents drawn from a ``torch.Generator`` seeded from ``(seed, i)``
    (:func:`image_seed`), so images do not depend on ``batch_size`` or on the process that
    made them. ``latent_dim`` overrides the generator's latent size. With ``png_dir``, each
    image is also written as ``gen-<seed>-<i>.png``.
    """
    import torch

    if latent_dim is not None and latent_dim != generator.latent_dim:
        generator = LoadedGenerator(**{**generator.__dict__,
                                       "latent_shape": (latent_dim, *generator.latent_shape[1:])})
    parts = []
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        images = generate_batch(generator, idx, seed=seed, truncation=truncation,
                                class_label=class_label)
        if png_dir is not None:
            for i, image in zip(idx, images, strict=True):
                save_png(image, Path(png_dir) / f"gen-{seed}-{i}.png")
        parts.append(images)
    return torch.cat(parts) if parts else torch.empty(0)


def save_png(image: torch.Tensor, path: Path, *, value_range: tuple[float, float] = (-1, 1)
             ) -> None:
    """Write one image (C x H x W in ``value_range``) as an 8-bit PNG, atomically."""
    import numpy as np
    from PIL import Image

    from audit.io import atomic_path

    lo, hi = value_range
    arr = ((image.float().clamp(lo, hi) - lo) / (hi - lo) * 255).round().byte().cpu().numpy()
    arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr[:3], (1, 2, 0))
    with atomic_path(Path(path), suffix=".png") as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
