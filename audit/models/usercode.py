"""The user's model code: code_path, importing a module or file, calling a factory, and
messages that say what is missing and where (a package to install, the repository's own code)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audit.errors import CHECK_PATH, ModelLoadError

# Packages of model repositories that their pickles and code import (StyleGAN2-ADA,
# StyleGAN3): never on PyPI, always the repository, so the fix is code_path.
_REPO_MODULES = ("dnnlib", "torch_utils")
# Import names whose pip package is named otherwise.
_PIP_NAMES = {"PIL": "pillow", "cv2": "opencv-python", "sklearn": "scikit-learn",
              "skimage": "scikit-image", "yaml": "pyyaml", "attr": "attrs",
              # pkg_resources came with setuptools, which dropped it in version 81 (StyleGAN3
              # imports it): the quotes keep the shell from reading '<' as a redirect
              "pkg_resources": "'setuptools<81'"}


def add_code_path(code_path: Path | None, *, spec: str) -> None:
    """Put ``code_path`` first on ``sys.path`` (kept: model classes may import lazily)."""
    if code_path is None:
        return
    if not Path(code_path).is_dir():
        raise ModelLoadError(f"{spec}: code_path {code_path} is not a folder.{CHECK_PATH}")
    if str(code_path) not in sys.path:
        sys.path.insert(0, str(code_path))


def user_frame(exc: BaseException) -> tuple[str, int] | None:
    """The innermost frame of ``exc``'s traceback in the user's code (not in gan-audit,
    torch or the standard library): its file and line; None if the error arose in those."""
    import os
    import sysconfig
    import traceback

    stdlib = str(Path(sysconfig.get_paths()["stdlib"]).resolve())
    ours = [str(Path(__file__).resolve().parent.parent)]  # the audit package
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


def in_folder(module: str, folder: Path | None) -> bool:
    """Whether ``folder`` holds the top-level package or module ``module``."""
    return folder is not None and ((Path(folder) / module).is_dir()
                                   or (Path(folder) / f"{module}.py").is_file())


def missing_module(exc: ModuleNotFoundError, *, code_path: Path | None) -> str:
    """What to do about a module that the model's code or pickle imports and cannot find.

    The model repository's own modules (``dnnlib``, ``torch_utils``; a module that a pickle
    names itself while no code_path is set may be either) are found through code_path; a
    module that code imports and code_path does not hold is a package to install (its pip
    command); a module missing from a package that is installed means another version.
    (A ``python:`` spec's own module: :func:`missing_spec_module`.)
    """
    name = exc.name or str(exc).rpartition(" ")[2].strip("'\"")
    top = name.partition(".")[0]
    pip = _PIP_NAMES.get(top, top)
    importer = user_frame(exc)
    by = f" (imported by {importer[0]}, line {importer[1]})" if importer else ""
    try:
        top_found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        top_found = False
    if top != name and top_found:  # the package is there, the submodule not: another version
        if in_folder(top, code_path):
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


def missing_spec_module(name: str, *, code_path: Path | None) -> str:
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


def import_callable(target: str, *, spec: str,
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
    add_code_path(code_path, spec=spec)
    own = None if module_name.endswith(".py") else module_name.partition(".")[0]
    try:
        module = import_module(module_name, spec=spec)
    except ModelLoadError:
        raise
    except ModuleNotFoundError as exc:
        what = f"the file {module_name}" if own is None else f"module {module_name!r}"
        name = exc.name or ""
        if own is not None and name and (module_name == name
                                         or module_name.startswith(name + ".")):
            raise ModelLoadError(f"{spec}: cannot import {what} ({exc}). "
                                 f"{missing_spec_module(name, code_path=code_path)}") from exc
        raise ModelLoadError(f"{spec}: cannot import {what}: "
                             f"{missing_module(exc, code_path=code_path)}") from exc
    except (Exception, SystemExit) as exc:  # the module's own code failed at import
        where = user_frame(exc)
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


def import_module(module_name: str, *, spec: str) -> Any:
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


def call_factory(factory: Callable[..., Any], kwargs: dict[str, Any], *, spec: str,
                  target: str) -> Any:
    """``factory(**kwargs)``; any exception it raises is a :class:`ModelLoadError` naming the
    spec, the kwargs and the exception (a user error raised inside stays as it is)."""
    try:
        return factory(**kwargs)
    except ModelLoadError:
        raise
    except (Exception, SystemExit) as exc:
        where = user_frame(exc)
        at = f" at {where[0]}, line {where[1]}" if where else ""
        fix = ("Fix the kwargs in the config." if isinstance(exc, TypeError) else
               "Check the kwargs in the config and the model's code.")
        raise ModelLoadError(
            f"{spec}: calling {target} with kwargs {kwargs} raised {type(exc).__name__}{at}: "
            f"{exc} (full traceback with --debug). {fix}") from exc


def model_code_error(exc: BaseException, *, spec: str, doing: str,
                     code_path: Path | None = None, fix: str = "") -> ModelLoadError:
    """The message for an exception raised by the model's own code while ``doing``
    (e.g. "the generator's forward"): a missing module gets :func:`missing_module`'s
    advice (a lazy import inside forward, as NVlabs' custom ops do); anything else names
    the exception, where in the user's code it arose, and ``fix``."""
    if isinstance(exc, ModuleNotFoundError):
        return ModelLoadError(f"{spec}: {doing} needs the module {exc.name or str(exc)!r}: "
                              f"{missing_module(exc, code_path=code_path)}")
    where = user_frame(exc)
    at = f" at {where[0]}, line {where[1]}" if where else ""
    return ModelLoadError(f"{spec}: {doing} raised {type(exc).__name__}{at}: {exc} (full "
                          f"traceback with --debug).{' ' + fix if fix else ''}")
