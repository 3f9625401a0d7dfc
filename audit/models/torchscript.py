"""``torchscript:PATH`` specs, and making scripted modules hookable where possible."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.errors import CHECK_PATH, ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


def build(cfg: Any, rest: str, *, role: str) -> Any:
    """The module saved at ``rest`` by ``torch.jit.save``."""
    import torch

    spec = cfg.spec
    path = Path(rest)
    if not path.is_file():
        raise ModelLoadError(f"{spec}: the file {path} does not exist.{CHECK_PATH}")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(f"{spec}: not a TorchScript file ({exc}). Save the model with "
                             f"torch.jit.script(model).save(path) or use a python: spec.") \
            from exc


def scripted_child(child: nn.Module) -> nn.Module:
    """An eager wrapper around a TorchScript submodule, so that forward hooks can see it."""
    from torch import nn

    class ScriptedChild(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.script = child

        def forward(self, *args: Any) -> Any:
            return self.script(*args)

    return ScriptedChild()


def adapt_torchscript(module: nn.Module, notes: list[str]) -> nn.Module:
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
            (name, scripted_child(child)) for name, child in module.named_children())).eval()
    notes.append("TorchScript module: forward hooks are not supported on scripted modules, so "
                 "only the output score can be recorded; use a python: spec to record layers")
    return module
