"""The identity of a loaded model: what makes its outputs what they are.

Its class, its construction arguments where known (the config's kwargs; an NVlabs
pickle's ``init_kwargs``), the precision it runs in, the float16 layers it was built with,
and its weights: an fp16 and an fp32 build of the same weights are different models.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


def _plain(value: Any, depth: int = 0) -> Any:
    """JSON-safe data of construction arguments: containers and scalars kept, anything else
    by its type name (never a repr holding a memory address)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth > 8:
        return "..."
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def class_name(module: nn.Module) -> str:
    """The model's qualified class name (a scripted model: its original class name; a class
    from a .py file given by path: its name alone, so that moving the file keeps it)."""
    cls = type(module)
    persisted = getattr(module, "_orig_class_name", None)  # NVlabs persistence's Decorator
    if isinstance(persisted, str):
        return f"{getattr(module, '_orig_module_name', '')}.{persisted}".lstrip(".")
    original = getattr(module, "original_name", None)
    if isinstance(original, str) and cls.__module__.startswith("torch.jit"):
        return f"torchscript:{original}"
    if cls.__module__.startswith("gan_audit_user_"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def model_identity(module: nn.Module, cfg: Any, *, dtype: str, built_fp16: list[str],
                   weights_sha256: str) -> dict[str, Any]:
    """What makes the model's outputs what they are, as plain data (see the module doc)."""
    identity = {"class": class_name(module), "kwargs": _plain(dict(cfg.kwargs)),
                "dtype": dtype, "fp16_layers": list(built_fp16),
                "weights_sha256": weights_sha256}
    init_kwargs = getattr(module, "init_kwargs", None)   # NVlabs persistence keeps them
    if isinstance(init_kwargs, dict):
        identity["init_kwargs"] = _plain(init_kwargs)
    source = getattr(module, "_orig_module_src", None)   # and the network's source code
    if isinstance(source, str):
        identity["source_sha256"] = hashlib.sha256(source.encode()).hexdigest()
    return identity


def identity_sha256(identity: dict[str, Any]) -> str:
    """sha256 of an identity (:func:`model_identity`), keys sorted."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
