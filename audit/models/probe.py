"""Probing a discriminator: every module's output shape, batch dependence and determinism
from dummy batches; the modules that can take hooks; the layers picked by ``layers: auto``."""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any

from audit.errors import LayerError, ModelLoadError
from audit.models.specs import LayerInfo, LoadedModel, first_tensor
from audit.models.usercode import model_code_error

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
    image means the module depends on the batch: ``batch_dependent``). Calls are counted per
    module: one module called several times in a forward pass (torch-mimicry reuses one
    ``nn.ReLU``) has ``calls`` > 1 and cannot be a hook point (:func:`check_hook_points`).

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
        except ImportError as exc:    # a lazy import inside forward: not about the input size
            raise model_code_error(exc, spec=model.spec,
                                   doing="the model's forward (on a dummy batch)") from exc
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


def _record_all(model: LoadedModel, x: torch.Tensor, names: dict[Any, str]
                ) -> tuple[dict[str, Any], torch.Tensor, dict[str, int]]:
    """Forward ``x``; every module's output (first call; first tensor of tuples), the output,
    and how many times each module was called."""
    import torch

    seen: dict[str, Any] = {}
    calls: dict[str, int] = {}

    def hook(module: Any, _inp: Any, out: Any) -> None:
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
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
    return seen, out.detach().float().clone(), calls


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
                 runs: list[tuple[dict[str, Any], Any, dict[str, int]]]) -> list[LayerInfo]:
    (a1, out1, calls), (a2, out2, _), (b, _, _) = runs
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
            nondeterministic=nondet, tuple_output=is_tuple, order=order,
            calls=calls.get(name, 0)))
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


#: Names of the skip (shortcut) branch of a residual block: its output is not the block's.
_SKIP_NAMES = re.compile(r"^(skip|shortcut)(_\w+)?$|^(sc|res|residual)$"
                         r"|_(skip|shortcut|sc|res)$")
#: StyleGAN's discriminator blocks, one per resolution: b64, b32, ..., b4.
_STYLEGAN_BLOCK = re.compile(r"^b\d+$")


def is_skip_branch(name: str) -> bool:
    """Whether module ``name`` is (inside) a skip/shortcut branch: ``b8.skip``,
    ``block2.c_sc``, ``blocks.0.conv_res``, ``layer1.0.shortcut.0``."""
    return any(_SKIP_NAMES.search(part) for part in name.split("."))


def _block_outputs(model: LoadedModel, cands: list[LayerInfo]) -> list[LayerInfo]:
    """The candidates that are block outputs, in call order; empty when none are found.

    StyleGAN's top-level ``b<res>`` blocks; else the named children of the root, or of one
    top-level container (``blocks``, ``main``, ``features``...), that are blocks themselves
    (modules with modules inside), when there are at least three.
    """
    stylegan = [i for i in cands if _STYLEGAN_BLOCK.match(i.name)]
    if len(stylegan) >= 2:
        return stylegan
    parents = {n for n, m in model.module.named_modules() if next(m.children(), None)}
    by_parent: dict[str, list[LayerInfo]] = {}
    for i in cands:
        parent = i.name.rpartition(".")[0]
        if i.name in parents and (parent == "" or "." not in parent):
            by_parent.setdefault(parent, []).append(i)
    for parent in ["", *sorted({p for p in by_parent if p})]:
        if len(by_parent.get(parent, [])) >= 3:
            return by_parent[parent]
    return []


def auto_layers(model: LoadedModel, *, include_batch_dependent: bool = False,
                k: int = 5) -> list[str]:
    """A spread of block outputs, early to late, for ``layers: auto``.

    Candidates: modules called once during forward whose output has more than one value per
    image, in call order; batch-dependent and nondeterministic ones dropped (batch-dependent
    kept with ``include_batch_dependent``), and skip/shortcut branches never taken
    (:func:`is_skip_branch`). Block outputs are preferred (:func:`_block_outputs`: StyleGAN's
    ``b32, b16, b8``, torch-mimicry's ``block1`` .. ``block4``, ``blocks.0`` ..): up to ``k``
    spread evenly from the first to the last. Without blocks: activation modules when there
    are at least four, else the shallowest nesting level with at least four candidates; the
    first third skipped and up to ``k`` spread over the rest, the last included.
    """
    import numpy as np

    info = model.layer_info or probe_layers(model)
    cands = [i for i in info if i.shape is not None and int(np.prod(i.shape)) > 1
             and i.order >= 0 and not i.nondeterministic and i.calls <= 1
             and not is_skip_branch(i.name)
             and (include_batch_dependent or not i.batch_dependent)]
    if not cands:
        raise LayerError(f"{model.spec}: no module has a usable output for layers: auto; list "
                         f"layers by name (see `gan-audit layers {model.spec}`).")
    cands.sort(key=lambda i: i.order)

    def spread(items: list[LayerInfo]) -> list[str]:
        idx = np.linspace(0, len(items) - 1, min(k, len(items)))
        return [items[j].name for j in sorted({round(float(v)) for v in idx})]

    blocks = _block_outputs(model, cands)
    if blocks:
        return spread(blocks)
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
    return spread(rest)


def check_hook_points(model: LoadedModel, layers: list[str]) -> None:
    """Refuse layers that are one module called several times per forward pass.

    A forward hook on such a module fires at every call, so "its output" is ambiguous
    (torch-mimicry reuses one ``nn.ReLU`` in each block). The message suggests the
    enclosing block, the nearest enclosing module called once.
    """
    info = {i.name: i for i in model.layer_info}
    problems = []
    for name in layers:
        i = info.get(name)
        if i is None or i.calls <= 1:
            continue
        parent = name.rpartition(".")[0]
        while parent and info.get(parent) is not None and info[parent].calls != 1:
            parent = parent.rpartition(".")[0]
        hint = (f"record the enclosing block {parent!r} instead" if parent
                else "record a module called once, e.g. the block that uses it")
        problems.append(f"{name!r} is one module called {i.calls} times in a forward pass (a "
                        f"reused {i.type}): a hook on it sees every call, so its output is "
                        f"ambiguous; {hint}")
    if problems:
        raise LayerError("; ".join(problems) + ". `gan-audit layers` marks such modules "
                         "'reused'.")
