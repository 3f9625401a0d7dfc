"""From a config section to a module in eval mode: the format's builder, weights, and the
adapters shared by all formats (augmentation switched off, conditioning found); devices and
the per-run cache of loaded models."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from audit.errors import ModelLoadError
from audit.models.specs import BuiltinModel, Conditioning, parse_spec

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

# Flags of augmentation applied inside forward (Projected GAN, StyleGAN-XL: ``diffaug``).
_AUG_FLAGS = ("diffaug", "diff_aug", "use_diffaug", "augment", "use_augment")


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


def build_module(cfg: Any, role: Literal["discriminator", "generator"]
                 ) -> tuple[Any, list[str], BuiltinModel | None]:
    """Resolve a spec into a module in eval mode with gradients off; notes; the builtin
    entry if any. Each spec kind is built by ``audit.models.<kind>.build(cfg, rest, role=role)``."""
    from torch import nn

    spec: str = cfg.spec
    kind, rest = parse_spec(spec)
    fmt = importlib.import_module(f"audit.models.{kind}")
    notes: list[str] = []
    builtin = fmt.entry(spec) if kind == "builtin" else None
    obj = fmt.build(cfg, rest, role=role)
    if not isinstance(obj, nn.Module):
        hint = (" It looks like a state_dict: use a python:MODULE:CALLABLE spec that builds the "
                "model, with weights: and weights_key:." if isinstance(obj, dict) else "")
        raise ModelLoadError(f"{spec}: expected a torch.nn.Module, got {type(obj).__name__}.{hint}")
    if cfg.weights is not None:
        from audit.models.weights import load_weights

        notes += load_weights(obj, Path(cfg.weights), cfg.weights_key, spec=spec)
    obj.eval()
    for param in obj.parameters():
        param.requires_grad_(False)
    return obj, notes, builtin


@dataclass
class Built:
    """A model built for use: the module (eval mode, the precision it runs in), notes, its
    builtin entry if any, and what it is (:mod:`audit.models.identity`)."""

    module: Any
    notes: list[str]
    builtin: BuiltinModel | None
    dtype: str
    weights_sha256: str
    identity: dict[str, Any]


def build_for_use(cfg: Any, role: Literal["discriminator", "generator"], *,
                  device: str) -> Built:
    """:func:`build_module`, then the weights' hash, the precision it runs in on ``device``
    (:func:`audit.models.precision.set_precision`) and its identity: what loading a
    discriminator and a generator share."""
    from audit.models.identity import model_identity
    from audit.models.precision import set_precision
    from audit.models.weights import state_sha256

    module, notes, builtin = build_module(cfg, role)
    weights = state_sha256(module)
    dtype, built_fp16, changed = set_precision(module, device=device, keep_fp16=cfg.keep_fp16)
    identity = model_identity(module, cfg, dtype=dtype, built_fp16=built_fp16,
                              weights_sha256=weights)
    return Built(module, notes + changed, builtin, dtype, weights, identity)


def switch_off_augmentation(module: nn.Module) -> list[str]:
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


def find_conditioning(module: nn.Module, cfg: Any) -> Conditioning | None:
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


def first_conv_channels(module: nn.Module) -> int | None:
    from torch import nn

    for sub in module.modules():
        if isinstance(sub, nn.Conv2d) or getattr(sub, "original_name", None) == "Conv2d":
            channels = getattr(sub, "in_channels", None)
            return channels if isinstance(channels, int) else None
    return None


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


def shared(key: tuple[Any, ...], load: Callable[[], Any]) -> Any:
    cache = _MODELS.get()
    if cache is None:
        return load()
    if key not in cache:
        cache[key] = load()
    return cache[key]
