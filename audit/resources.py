"""Where the templates and concept sets live: inside the installed package, or the repo root."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The ``templates`` or ``concept_sets`` folder.

    A wheel ships them inside the package (``audit/templates``); a source checkout
    (editable install) keeps them at the repository's top level.
    """
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(  # a broken install, not a user error
        f"gan-audit's {name}/ folder is missing (looked in {_PACKAGE / name} and "
        f"{_PACKAGE.parent / name}); reinstall the package.")
