"""``builtin:NAME`` specs: models shipped with the tool (:data:`BUILTIN_MODELS`)."""

from __future__ import annotations

from typing import Any

from audit.errors import ModelLoadError
from audit.models.specs import BUILTIN_MODELS, BuiltinModel
from audit.models.usercode import call_factory, import_callable


def entry(spec: str) -> BuiltinModel:
    """The registry entry of ``builtin:NAME``; an unknown name lists the known ones."""
    name = spec.partition(":")[2]
    if name not in BUILTIN_MODELS:
        raise ModelLoadError(f"{spec}: unknown builtin model {name!r}; builtin models are "
                             f"{', '.join(sorted(BUILTIN_MODELS))}.")
    return BUILTIN_MODELS[name]


def build(cfg: Any, rest: str, *, role: str) -> Any:
    """The ``role`` (discriminator or generator) of the builtin model ``rest``; the entry's
    fixed ``factory_kwargs`` (a checkpoint's epoch) go with the config's kwargs."""
    model = entry(cfg.spec)
    target = getattr(model, role)
    return call_factory(import_callable(target, spec=cfg.spec),
                        {**cfg.kwargs, **dict(model.factory_kwargs)}, spec=cfg.spec,
                        target=target)
