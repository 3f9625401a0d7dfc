"""Probing a discriminator: every module's output shape, batch dependence and determinism
from dummy batches; the modules that can take hooks; the layers picked by ``layers: auto``."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from audit.errors import LayerError, ModelLoadError
from audit.models.specs import LayerInfo, LoadedModel, first_tensor

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

# Sizes tried, in order, when a model does not say its input size.
GUESS_SIZES = (32, 64, 128, 256, 16, 28, 224, 512, 1024)
_ACTIVATIONS = ("ReLU", "LeakyReLU", "GELU", "SiLU", "ELU", "SELU", "Mish", "PReLU", "Tanh",
                "Sigmoid", "Softplus", "Hardswish")


def hookable_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``named_modules()`` without the root and without TorchScript modules (no hooks)."""
    import torch

    return [(n, m) for n, m in module.named_modules()
            if n and not isinstance(m, torch.jit.ScriptModule)]


def _dummy_batch(n: int, channels: int, size: int, value_range: tuple[float, float], *,
                 seed: int, device: str) -> torch.Tensor:
    import torch

    g = torch.Generator().manual_seed(seed)
    lo, hi = value_range
    return (torch.rand(n, channels, size, size, generator=g) * (hi - lo) + lo).to(device)


def probe_layers(model: LoadedModel, *, image_size: int | None = None,
                 channels: int | None = None, batch: int = 4, seed: int = 0) -> list[LayerInfo]:
    """Every module of ``model`` with its output shape, parameter count and batch dependence.

    Runs dummy batches (uniform noise in the input range): batch A twice (outputs that differ
    mean augmentation or dropout inside forward: a warning and ``nondeterministic``), and
    batch B that shares A's first image but not the others (an output that changes for that
    image means the module depends on the batch: ``batch_dependent``).

    Parameters
    ----------
    image_size, channels : int, optional
        Dummy input size; default the model's input spec, else the first of the common sizes
        32, 64, 128, ... that runs (recorded in ``model.notes``).
    batch : int
        Images per dummy batch (4 covers StyleGAN's minibatch-stddev group of 4).

    Returns
    -------
    list of LayerInfo
        In ``named_modules()`` order (the root, named ``""``, is left out); ``order`` is the
        position of the module's first call during forward (-1 if never called).
    """
    import torch

    size = image_size or model.input.image_size
    ch = channels or model.input.channels or 3
    sizes = [size] if size else list(GUESS_SIZES)
    names = {m: n for n, m in hookable_modules(model.module)}
    last_error: Exception | None = None
    for s in sizes:
        xa = _dummy_batch(2 * batch - 1, ch, s, model.input.value_range, seed=seed,
                          device=model.device)
        xb = torch.cat([xa[:1], xa[batch:]])
        xa = xa[:batch]
        try:
            runs = [_record_all(model, x, names) for x in (xa, xa, xb)]
        except (LayerError, ModelLoadError):    # (no class label: not about the input size)
            raise
        except Exception as exc:
            last_error = exc
            continue
        if not size:
            model.notes.append(f"input size not given: probed with {s} x {s}, the first of "
                               f"{list(GUESS_SIZES)} that ran")
        return _layer_table(model, names, runs)
    raise ModelLoadError(
        f"{model.spec}: the model failed on a dummy batch of {ch} x {sizes[0]} x {sizes[0]} "
        f"images{'' if size else ' (and other common sizes)'} in {model.input.value_range} "
        f"({type(last_error).__name__}: {last_error}). Give the model's input with "
        f"image_size and channels (CLI: --image-size, --channels).") from last_error


def _record_all(model: LoadedModel, x: torch.Tensor,
                names: dict[Any, str]) -> tuple[dict[str, Any], torch.Tensor]:
    """Forward ``x``; every module's output (first call; first tensor of tuples) and the output."""
    import torch

    seen: dict[str, Any] = {}

    def hook(module: Any, _inp: Any, out: Any) -> None:
        name = names[module]
        if name in seen:
            return
        tensor = out if isinstance(out, torch.Tensor) else None
        is_tuple = isinstance(out, (tuple, list, dict))
        if is_tuple:
            try:
                tensor = first_tensor(out)
            except LayerError:
                tensor = None
        seen[name] = (tensor.detach().float().clone() if tensor is not None else None, is_tuple,
                      len(seen))

    handles = [m.register_forward_hook(hook) for m in names]
    cond = model.conditioning
    # A discriminator whose classes come with the images (class_source) gets class 0 for
    # the dummy batches; without class_label or class_source the probe fails clearly.
    labels = [0] * len(x) if cond is not None and cond.class_label is None \
        and model.classes_from_data else None
    try:
        with torch.inference_mode():
            out = model.forward(x, labels)
    finally:
        for h in handles:
            h.remove()
    return seen, out.detach().float().clone()


def _gap(a: Any, b: Any) -> tuple[float, float]:
    """Largest difference between the first image's outputs of two runs, and their scale."""
    if a is None or b is None or a.shape[1:] != b.shape[1:]:
        return 0.0, 0.0
    return float((a[0] - b[0]).abs().max()), float(a[0].abs().max())


def _flags(a1: Any, a2: Any, b: Any) -> tuple[bool, bool]:
    """(nondeterministic, batch_dependent) of one module from three runs.

    Two calls on the same batch differing by more than 1e-3 of the output's scale mean
    sampling inside forward. Otherwise the output for the shared image is batch dependent
    when it moved by more than 1e-5 of its scale and ten times the run-to-run noise
    (relative thresholds: activations can be tiny at random initialisation).
    """
    noise, scale = _gap(a1, a2)
    if noise > 1e-3 * scale:
        return True, False
    moved, _ = _gap(a1, b)
    return False, moved > max(1e-5 * scale, 10 * noise)


def _layer_table(model: LoadedModel, names: dict[Any, str],
                 runs: list[tuple[dict[str, Any], Any]]) -> list[LayerInfo]:
    (a1, out1), (a2, out2), (b, _) = runs
    table = []
    for module, name in names.items():
        rec = a1.get(name)
        tensor, is_tuple, order = rec if rec else (None, False, -1)
        nondet, dependent = (False, False) if rec is None else _flags(
            tensor, a2[name][0], b[name][0] if name in b else None)
        table.append(LayerInfo(
            name=name, type=type(module).__name__,
            shape=tuple(tensor.shape[1:]) if tensor is not None else None,
            params=sum(p.numel() for p in module.parameters()), batch_dependent=dependent,
            nondeterministic=nondet, tuple_output=is_tuple, order=order))
    tuples = [i.name for i in table if i.tuple_output]
    if tuples:
        model.notes.append(f"modules return tuples, the first tensor is taken: "
                           f"{', '.join(tuples[:8])}{' ...' if len(tuples) > 8 else ''}")
    if _flags(out1, out2, None)[0]:
        msg = (f"{model.spec}: two calls on the same images gave different outputs: the model "
               f"augments or samples inside forward (e.g. DiffAugment). Activations will not be "
               f"reproducible; switch the augmentation off in the model before auditing.")
        model.notes.append("output differs between two calls on the same input")
        warnings.warn(msg, stacklevel=3)
    return table


def auto_layers(model: LoadedModel, *, include_batch_dependent: bool = False,
                k: int = 5) -> list[str]:
    """A spread of intermediate layers, mid to late, for ``layers: auto``.

    Candidates: modules called during forward whose output has more than one value per
    image, in call order (batch-dependent and nondeterministic ones dropped unless
    ``include_batch_dependent``). Activation modules are preferred when there are at least
    four; otherwise the shallowest nesting level with at least four candidates. The first
    third is skipped and up to ``k`` layers are spread evenly over the rest, the last included.
    """
    import numpy as np

    info = model.layer_info or probe_layers(model)
    cands = [i for i in info if i.shape is not None and int(np.prod(i.shape)) > 1
             and i.order >= 0 and not i.nondeterministic
             and (include_batch_dependent or not i.batch_dependent)]
    if not cands:
        raise LayerError(f"{model.spec}: no module has a usable output for layers: auto; list "
                         f"layers by name (see `gan-audit layers {model.spec}`).")
    cands.sort(key=lambda i: i.order)
    acts = [i for i in cands if i.type in _ACTIVATIONS]
    if len(acts) >= 4:
        cands = acts
    else:
        by_depth: dict[int, list[LayerInfo]] = {}
        for i in cands:
            by_depth.setdefault(i.name.count("."), []).append(i)
        rich = [d for d in sorted(by_depth) if len(by_depth[d]) >= 4]
        cands = by_depth[rich[0]] if rich else max(by_depth.values(), key=len)
    rest = cands[len(cands) // 3:]
    if len(rest) < 4:
        rest = cands[-4:]
    idx = sorted({round(float(v)) for v in np.linspace(0, len(rest) - 1, min(k, len(rest)))})
    return [rest[j].name for j in idx]
