"""Forward hooks as a context manager, and layer names checked before the first pass.

::

    check_layers(model, ["blocks.2", "blocks.3"])       # LayerError with closest names
    with capture(model, ["blocks.2", "blocks.3"], transform=pool) as cap:
        out = model(x)
        acts = cap.take()                                # {name: tensor}; error if one is empty

Hooks are registered inside ``try`` and removed in ``finally``: nothing stays
registered after the block, even after an error.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from audit.errors import LayerError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = ["check_layers", "closest_names", "capture", "Capture"]


def closest_names(name: str, names: Sequence[str], *, n: int = 5) -> list[str]:
    """The real names most like ``name`` (difflib), best first; prefix matches as a fallback."""
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if not close:
        head = name.split(".")[0]
        close = [x for x in names if x.startswith(head)][:n]
    return close


def check_layers(module: nn.Module, layers: Sequence[str]) -> None:
    """Raise :class:`LayerError` for every name not in ``module.named_modules()``.

    The message lists, for each unknown name, the closest real names.
    """
    from audit.load import hookable_modules

    names = [n for n, _ in hookable_modules(module)]
    known = set(names)
    if not layers:
        raise LayerError("no layers were given; name at least one (or use layers: auto). "
                         "`gan-audit layers MODEL_SPEC` lists them.")
    dup = sorted({x for x in layers if list(layers).count(x) > 1})
    if dup:
        raise LayerError(f"layer(s) {dup} are listed more than once; list each layer once.")
    problems = []
    for layer in layers:
        if layer not in known:
            close = closest_names(layer, names)
            hint = f"closest: {', '.join(close)}" if close else "no similar name"
            problems.append(f"{layer!r} is not a layer of the model ({hint})")
    if problems:
        raise LayerError("; ".join(problems) + ". `gan-audit layers MODEL_SPEC` lists every "
                         "layer with its output shape.")


class Capture:
    """What the hooks of :func:`capture` recorded during the current forward pass."""

    def __init__(self, layers: Sequence[str]) -> None:
        self.layers = list(layers)
        self.outputs: dict[str, torch.Tensor] = {}
        self.tuple_layers: set[str] = set()

    def take(self) -> dict[str, torch.Tensor]:
        """The captured outputs of this pass, in layer order; cleared for the next pass.

        Raises :class:`LayerError` naming every requested layer that captured nothing (a
        module that exists but is not called by forward).
        """
        missing = [name for name in self.layers if name not in self.outputs]
        if missing:
            self.outputs.clear()
            raise LayerError(f"layer(s) {missing} captured nothing during the forward pass: the "
                             f"module exists but forward never calls it (or it returned no "
                             f"tensor). Pick layers that forward uses (`gan-audit layers` shows "
                             f"them with an output shape).")
        out = {name: self.outputs[name] for name in self.layers}
        self.outputs.clear()
        return out


@contextmanager
def capture(module: nn.Module, layers: Sequence[str], *,
            transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None
            ) -> Iterator[Capture]:
    """Register forward hooks on ``layers`` of ``module`` for the duration of the block.

    Each hook takes the module's output (the first tensor of a tuple, as StyleGAN2-ADA
    blocks return ``(x, img)``), applies ``transform(name, tensor)`` (e.g. pooling to
    N x D; default: detach) and stores it; a module called twice keeps its first call.

    Raises
    ------
    LayerError
        A name is not a module of ``module`` (checked before anything is registered).
    """
    from audit.load import first_tensor

    check_layers(module, layers)
    modules = dict(module.named_modules())
    cap = Capture(layers)
    fn = transform or (lambda _name, t: t.detach())

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            if name in cap.outputs:
                return
            if not hasattr(output, "shape"):
                cap.tuple_layers.add(name)
                output = first_tensor(output)
            cap.outputs[name] = fn(name, output)

        return hook

    handles = []
    try:
        for name in layers:
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        yield cap
    finally:
        for handle in handles:
            handle.remove()
        cap.outputs.clear()
