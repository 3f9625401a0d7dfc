"""Weights: a state_dict loaded strictly (weights_only), and the hash of a module's state."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.errors import CHECK_PATH, ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


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


def strict_state_dict(module: nn.Module, state: dict[str, Any], *, where: str) -> list[str]:
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


def load_weights(module: nn.Module, path: Path, key: str | None, *, spec: str) -> list[str]:
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
    return strict_state_dict(module, state, where=str(path))
