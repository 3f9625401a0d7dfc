"""``python:MODULE:CALLABLE`` specs: a factory (or class) called with the config's kwargs;
MODULE dotted or a .py path, found through code_path."""

from __future__ import annotations

from typing import Any

from audit.models.usercode import call_factory, import_callable


def build(cfg: Any, rest: str, *, role: str) -> Any:
    """``factory(**cfg.kwargs)`` for the factory named by ``rest`` (``MODULE:CALLABLE``)."""
    factory = import_callable(rest, spec=cfg.spec, code_path=cfg.code_path)
    return call_factory(factory, cfg.kwargs, spec=cfg.spec, target=rest)
