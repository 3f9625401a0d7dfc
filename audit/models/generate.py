"""Generators: loading, latents per image seed, classes, images per batch, PNGs."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.errors import AuditError, ModelLoadError
from audit.models.build import build_for_use, find_conditioning, resolve_device, shared
from audit.models.identity import identity_sha256
from audit.models.output_range import OutputRange, images_to_tool_range
from audit.models.specs import (
    LoadedGenerator,
    LoadedModel,
    as_config,
    first_tensor,
    int_attr,
)
from audit.models.usercode import model_code_error

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from audit.config import GeneratorConfig


def load_generator(cfg: GeneratorConfig | str, *, device: str = "cpu") -> LoadedGenerator:
    """Load a generator from a spec or its config section.

    The latent size comes from ``latent_dim`` in the config, else the model's ``z_dim`` /
    ``latent_dim`` / ``nz`` attribute, else the builtin registry. Truncation goes to a
    ``truncation_psi`` or ``truncation`` forward keyword (StyleGAN: ``truncation_psi``).
    """
    cfg = as_config(cfg, "GeneratorConfig")
    device = resolve_device(device)
    return shared(("generator", cfg.model_dump_json(), device),
                   lambda: _load_generator(cfg, device))


def _load_generator(cfg: Any, device: str) -> LoadedGenerator:
    built = build_for_use(cfg, "generator", device=device)
    module, notes, builtin = built.module, built.notes, built.builtin
    weights, identity, dtype = built.weights_sha256, built.identity, built.dtype
    latent_dim = cfg.latent_dim or int_attr(module, "z_dim", "latent_dim", "nz", "latent_size")
    if latent_dim is None and builtin is not None:
        latent_dim = builtin.latent_dim
    if latent_dim is None:
        raise ModelLoadError(f"{cfg.spec}: the generator does not say its latent size; set "
                             f"latent_dim in the generator config.")
    shape = getattr(module, "latent_shape", None)
    latent_shape = tuple(shape) if shape else (latent_dim,)
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        params = {}
    trunc = next((p for p in ("truncation_psi", "truncation") if p in params), None)
    if cfg.truncation is not None and trunc is None:
        raise ModelLoadError(f"{cfg.spec}: truncation {cfg.truncation} was asked for but the "
                             f"generator's forward takes no truncation_psi/truncation argument. "
                             f"Remove truncation from the config.")
    call_kwargs = _call_kwargs(module, cfg, params, notes)
    output = OutputRange(tuple(cfg.value_range),
                         explicit="value_range" in cfg.model_fields_set)
    return LoadedGenerator(module=module.to(device), spec=cfg.spec,
                           sha256=identity_sha256(identity), weights_sha256=weights,
                           identity=identity,
                           latent_shape=latent_shape, notes=notes,
                           conditioning=find_conditioning(module, cfg), truncation_param=trunc,
                           device=device, output=output,
                           call_kwargs=call_kwargs, dtype=dtype)


def _takes(params: Any, name: str) -> bool:
    """Whether a forward with these parameters takes keyword ``name`` (by name or **kwargs)."""
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _uses_noise_mode(module: Any, params: Any) -> bool:
    """StyleGAN-family generators: forward, or a module it passes keywords on to (NVlabs'
    ``**synthesis_kwargs`` -> ``SynthesisLayer.forward(..., noise_mode='random')``), takes
    ``noise_mode``."""
    if "noise_mode" in params:
        return True
    if not _takes(params, "noise_mode"):
        return False
    for sub in module.modules():
        try:
            if "noise_mode" in inspect.signature(sub.forward).parameters:
                return True
        except (TypeError, ValueError):
            continue
    return False


def _call_kwargs(module: Any, cfg: Any, params: Any, notes: list[str]) -> dict[str, Any]:
    """Keywords of every forward call: ``noise_mode='const'`` for StyleGAN-family generators
    (their per-pixel noise is otherwise drawn anew at each call), then the config's
    ``call_kwargs`` on top; a keyword that forward cannot take is a :class:`ModelLoadError`."""
    kwargs: dict[str, Any] = {}
    if _uses_noise_mode(module, params):
        kwargs["noise_mode"] = "const"
    kwargs.update(cfg.call_kwargs)
    if params:
        refused = sorted(k for k in cfg.call_kwargs if not _takes(params, k))
        if refused:
            raise ModelLoadError(
                f"{cfg.spec}: call_kwargs {refused} are not parameters of the generator's "
                f"forward ({', '.join(params) or 'none'}); remove them from "
                f"generator.call_kwargs.")
    if kwargs.get("noise_mode") == "const" and "noise_mode" not in cfg.call_kwargs:
        notes.append("noise_mode='const' passed to forward: the per-pixel noise is fixed "
                     "(set generator.call_kwargs: {noise_mode: random} for random noise, "
                     "seeded per image)")
    return kwargs


def forward_seed(*tensors: torch.Tensor | None) -> int:
    """The seed of the random draws inside one generator call: a hash of its inputs (the
    latents, and the classes), so the same latents give the same images in every run and
    stage, and other latents other draws."""
    h = hashlib.sha256(b"gan-audit/forward")
    for t in tensors:
        if t is not None:
            h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)


def image_seed(seed: int, index: int) -> int:
    """The seed of generated image ``index``: a hash of (seed, index), so an image does not
    depend on the batch size, the order of generation or the rank that made it."""
    digest = hashlib.sha256(f"gan-audit/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def latents(generator: LoadedGenerator, indices: Any, *, seed: int) -> torch.Tensor:
    """Standard normal latents, one per image index: len(indices) x latent_shape."""
    import torch

    out = torch.empty(len(indices), *generator.latent_shape)
    for row, i in enumerate(indices):
        g = torch.Generator().manual_seed(image_seed(seed, int(i)))
        out[row] = torch.randn(generator.latent_shape, generator=g)
    return out


def class_count(model: LoadedModel | LoadedGenerator) -> int | None:
    """Classes of a conditional model: its one-hot size, or its ``n_classes`` /
    ``num_classes`` attribute (integer labels); None when unknown or unconditional."""
    if model.conditioning is None:
        return None
    return model.conditioning.num_classes or int_attr(model.module, "n_classes",
                                                       "num_classes")


def generated_classes(generator: LoadedGenerator, indices: Sequence[int], *, seed: int,
                      class_label: int | None, sampling: str = "fixed") -> np.ndarray | None:
    """The class of each generated image of ``indices`` (None for an unconditional
    generator, or a conditional one left to its default).

    ``fixed``: ``class_label`` for all (None if unset); ``uniform``: image ``i`` gets a class
    drawn uniformly from the generator's ``num_classes`` by its own seed
    (:func:`image_seed`), so it does not depend on batches or processes.
    """
    import numpy as np

    if generator.conditioning is None:
        return None
    if sampling == "fixed":
        return None if class_label is None else np.full(len(indices), int(class_label),
                                                        dtype=np.int64)
    k = class_count(generator)
    if not k:
        raise ModelLoadError(f"{generator.spec}: class_sampling: uniform needs the number of "
                             f"classes, which the generator does not say (no n_classes "
                             f"attribute); set num_classes in the generator config (which also "
                             f"passes classes as one-hot vectors).")
    return np.array([image_seed(seed, i) % k for i in indices], dtype=np.int64)


def generate_batch(generator: LoadedGenerator, indices: Any, *, seed: int,
                   truncation: float | None = None,
                   class_label: int | Sequence[int] | None = None) -> torch.Tensor:
    """Images for the given indices: N x C x H x W float32 on CPU in [-1, 1] (see
    :func:`latents_to_images`; ``class_label``: one class for all, or one per index)."""
    z = latents(generator, indices, seed=seed)
    return latents_to_images(generator, z, truncation=truncation, class_label=class_label)


def latents_to_images(generator: LoadedGenerator, z: torch.Tensor, *,
                      truncation: float | None = None,
                      class_label: int | Sequence[int] | None = None) -> torch.Tensor:
    """Images of latents ``z`` (N x latent shape): N x C x H x W float32 on CPU in [-1, 1]
    (``class_label``: one class for all, or one per latent).

    Random draws inside forward (StyleGAN's noise with ``noise_mode='random'``) are seeded
    by :func:`forward_seed` of the latents and classes: the same call gives bit-identical
    images in every run on the same machine. The generator's ``call_kwargs`` (e.g.
    ``noise_mode='const'``) go to every call.

    The generator's output is scaled from its declared ``value_range`` to [-1, 1]; the first
    images are checked against that range and values outside it are clamped and counted
    (:func:`audit.models.output_range.images_to_tool_range`, ``generator.output``).
    """
    import torch

    z = z.to(generator.device)
    kwargs = dict(generator.call_kwargs)
    if truncation is not None and generator.truncation_param is not None:
        kwargs[generator.truncation_param] = truncation
    c = None
    if generator.conditioning is not None:
        labels = (None if class_label is None else [int(class_label)] * len(z)
                  if isinstance(class_label, int) else list(class_label))
        c = generator.conditioning.tensor(len(z), labels, device=generator.device)
    images = None if generator.stochastic else _forward(generator, z, c, kwargs)
    if generator.stochastic is None:  # once per generator, after a call that worked
        generator.stochastic = _draws_random_numbers(generator, z[:1],
                                                     None if c is None else c[:1], kwargs)
    if generator.stochastic and (len(z) > 1 or images is None):
        # each image alone: its noise then depends on its own latent only, never on the
        # images it shares a call with (the batch order, the batch size, a report's grid)
        images = torch.cat([_forward(generator, z[i:i + 1], None if c is None else c[i:i + 1],
                                     kwargs) for i in range(len(z))])
    return images_to_tool_range(images, generator.output, spec=generator.spec).cpu()


def _forward(generator: LoadedGenerator, z: torch.Tensor, c: torch.Tensor | None,
             kwargs: dict[str, Any], *, salt: int = 0) -> torch.Tensor:
    """One call of the generator: N x C x H x W float32 on its device (its own range).

    Random draws inside forward (noise, dropout) are seeded by the call's inputs (and
    ``salt``, to tell whether there are any), and the global random state is left as it
    was."""
    import torch

    device = torch.device(generator.device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.inference_mode(), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(forward_seed(z, c) + salt)
            out = (generator.module(z, c, **kwargs) if c is not None
                   else generator.module(z, **kwargs))
    except AuditError:
        raise
    except (Exception, SystemExit) as exc:
        raise model_code_error(
            exc, spec=generator.spec, doing="the generator's forward",
            fix=f"Check latent_dim (latents here are {' x '.join(map(str, z.shape))}), "
                f"num_classes / class_label and call_kwargs ({kwargs}) in the generator "
                f"config.") from exc
    images = first_tensor(out).float()
    if images.ndim != 4:
        raise ModelLoadError(f"{generator.spec}: the generator returned shape "
                             f"{tuple(images.shape)}, expected N x C x H x W images.")
    return images


def _draws_random_numbers(generator: LoadedGenerator, z: torch.Tensor,
                         c: torch.Tensor | None, kwargs: dict[str, Any]) -> bool:
    """Whether two calls on the same latent under different random seeds give different
    images (noise drawn inside forward, e.g. lucidrains' or StyleGAN's noise_mode='random')."""
    import torch

    a = _forward(generator, z, c, kwargs)
    b = _forward(generator, z, c, kwargs, salt=1)
    return not torch.equal(a, b)


def sample_generated(generator: LoadedGenerator, *, n: int, seed: int, batch_size: int = 64,
                     latent_dim: int | None = None, truncation: float | None = None,
                     class_label: int | None = None, png_dir: Path | None = None
                     ) -> torch.Tensor:
    """Sample ``n`` images: N x C x H x W float32 in [-1, 1] (see :func:`latents_to_images`).

    Image ``i`` uses latents drawn from a ``torch.Generator`` seeded from ``(seed, i)``
    (:func:`image_seed`), so images do not depend on ``batch_size`` or on the process that
    made them. ``latent_dim`` overrides the generator's latent size. With ``png_dir``, each
    image is also written as ``gen-<seed>-<i>.png``.
    """
    import torch

    if latent_dim is not None and latent_dim != generator.latent_dim:
        generator = LoadedGenerator(**{**generator.__dict__,
                                       "latent_shape": (latent_dim, *generator.latent_shape[1:])})
    parts = []
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        images = generate_batch(generator, idx, seed=seed, truncation=truncation,
                                class_label=class_label)
        if png_dir is not None:
            for i, image in zip(idx, images, strict=True):
                save_png(image, Path(png_dir) / f"gen-{seed}-{i}.png")
        parts.append(images)
    return torch.cat(parts) if parts else torch.empty(0)


def save_png(image: torch.Tensor, path: Path, *, value_range: tuple[float, float] = (-1, 1)
             ) -> None:
    """Write one image (C x H x W in ``value_range``) as an 8-bit PNG, atomically."""
    import numpy as np
    from PIL import Image

    from audit.io import atomic_path

    lo, hi = value_range
    arr = ((image.float().clamp(lo, hi) - lo) / (hi - lo) * 255).round().byte().cpu().numpy()
    arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr[:3], (1, 2, 0))
    with atomic_path(Path(path), suffix=".png") as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
