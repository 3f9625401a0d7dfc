"""The precision a model runs in.

NVlabs networks (StyleGAN2-ADA, StyleGAN3) build their highest-resolution blocks with
``use_fp16 = True`` (``num_fp16_res > 0``) and cast to float16 inside forward. On a CPU
float16 is several times slower and less exact, for nothing: every such flag is switched
off there, as ``force_fp32=True`` would. On CUDA the user may keep them
(``keep_fp16: true``). Weights stored in float16 or bfloat16 are run in float32 likewise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

FLOAT32 = "float32"
MIXED = "float16+float32"


def fp16_layers(module: nn.Module) -> list[str]:
    """Names of the modules whose ``use_fp16`` flag is on (``model`` for the root)."""
    return [name or "model" for name, sub in module.named_modules()
            if getattr(sub, "use_fp16", None) is True]


def set_precision(module: nn.Module, *, device: str, keep_fp16: bool
                  ) -> tuple[str, list[str], list[str]]:
    """Make ``module`` run in float32 unless float16 is kept on CUDA.

    Returns
    -------
    dtype : str
        ``float32``, or ``float16+float32`` when float16 layers or weights were kept.
    built : list of str
        The modules built with ``use_fp16`` on (before any was switched off).
    notes : list of str
        What was changed, for :attr:`LoadedModel.notes`.
    """
    import torch

    built = fp16_layers(module)
    half = sorted({str(t.dtype).removeprefix("torch.")
                   for t in [*module.parameters(), *module.buffers()]
                   if t.is_floating_point() and t.dtype != torch.float32})
    cuda = device.startswith("cuda")
    notes: list[str] = []
    if keep_fp16 and not cuda and (built or half):
        notes.append(f"keep_fp16 applies on CUDA only: on {device} float16 is slow and "
                     f"inexact, so the model runs in float32")
    if (keep_fp16 and cuda) or not (built or half):
        return (MIXED if built or half else FLOAT32), built, notes
    stuck = []
    for name, sub in module.named_modules():
        if getattr(sub, "use_fp16", None) is True:
            try:
                sub.use_fp16 = False
            except Exception:  # TorchScript attributes may be frozen
                stuck.append(name or "model")
    if built:
        shown = ", ".join(built[:6]) + (" ..." if len(built) > 6 else "")
        notes.append(f"float16 layers run in float32 ({shown}; use_fp16 switched off"
                     f"{'' if cuda else ' on CPU'})")
    if stuck:
        notes.append(f"use_fp16 could not be switched off in {', '.join(stuck[:6])}: those "
                     f"layers still run in float16")
    if half:
        module.float()
        notes.append(f"weights stored in {', '.join(half)} run in float32")
    return (MIXED if stuck else FLOAT32), built, notes
