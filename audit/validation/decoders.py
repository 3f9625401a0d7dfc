"""A seeded synthetic activation store with planted concepts (tests and benchmarks).

Each image has latent factors z ~ N(0, 1). Concepts are planted on them:

- ``tone`` (binary, protected, 70/30): ``z0 > 0.52`` -- linear in the features;
- ``stroke`` (binary, protected): ``sign(z1) != sign(z2)`` (XOR) -- not linearly decodable;
- ``digit`` (multiclass, 4 groups): argmax of a linear map of ``z3 .. z5`` -- linear;
- ``ring`` (binary): ``z6^2 + z7^2 > 1.39`` (radial, about half) -- not linear.

:func:`planted_activations`: every layer's features are a random linear mix of the latents
plus Gaussian noise whose scale varies by layer, so some layers carry a concept better
than others (already on a common scale; for tests).

:func:`discriminator_like_activations`: shaped like a DCGAN discriminator's pooled
activations (default 6 layers of 64 .. 512 channels): per-channel LeakyReLU outputs of
noisy random mixes of the latents with per-channel offsets, un-standardised, with a
magnitude that grows from layer to layer and varies across channels (for benchmarks).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.concepts import ConceptSet

__all__ = ["planted_concept_set", "planted_activations", "discriminator_like_activations"]

_N_LATENT = 10


def planted_concept_set() -> ConceptSet:
    """The concept set of :func:`planted_activations`."""
    column = {"type": "column", "column": "x"}
    return ConceptSet.model_validate({
        "name": "planted",
        "concepts": [
            {"name": "tone", "kind": "binary", "groups": ["light", "dark"], "protected": True,
             "source": column},
            {"name": "stroke", "kind": "binary", "groups": ["thin", "thick"], "protected": True,
             "source": column},
            {"name": "digit", "kind": "multiclass", "groups": ["0", "1", "2", "3"],
             "source": column},
            {"name": "ring", "kind": "binary", "groups": ["inside", "outside"],
             "source": column},
        ],
        "intersections": [["tone", "stroke"]],
    })


def planted_activations(n: int = 1000, *, n_layers: int = 3, dim: int = 32, seed: int = 0,
                        noise: tuple[float, float] = (1.0, 0.3), missing: float = 0.0,
                        ) -> tuple[dict[str, np.ndarray], pd.DataFrame, ConceptSet]:
    """Features of ``n`` images at ``n_layers`` layers, their labels and concept set.

    Parameters
    ----------
    n, n_layers, dim : int
        Images, layers (``layer0`` .. ``layer{L-1}``) and features per layer.
    seed : int
        Seed of everything.
    noise : (first, last)
        Noise scale of the first and last layer (linear in between).
    missing : float
        Share of each concept's labels set to missing (independently).

    Returns
    -------
    features : {layer: n x dim float32}
    labels : DataFrame with ``image_id`` and one column of group names per concept
    concept_set : ConceptSet
    """
    rng = np.random.default_rng(seed)
    z, labels = _planted_labels(rng, n, missing)
    features = {}
    for layer, sigma in enumerate(np.linspace(noise[0], noise[1], n_layers)):
        mix = rng.standard_normal((_N_LATENT, dim)) / np.sqrt(_N_LATENT)
        x = z @ mix * 3.0 + sigma * rng.standard_normal((n, dim))
        features[f"layer{layer}"] = x.astype(np.float32)
    return features, labels, planted_concept_set()


def _planted_labels(rng: np.random.Generator, n: int, missing: float
                    ) -> tuple[np.ndarray, pd.DataFrame]:
    """Latents z (n x 10) and the labels table of the planted concepts."""
    z = rng.standard_normal((n, _N_LATENT))
    digit_map = rng.standard_normal((3, 4))
    truth = {
        "tone": np.where(z[:, 0] > 0.52, "dark", "light"),
        "stroke": np.where((z[:, 1] > 0) != (z[:, 2] > 0), "thick", "thin"),
        "digit": np.argmax(z[:, 3:6] @ digit_map, axis=1).astype(str),
        "ring": np.where(z[:, 6] ** 2 + z[:, 7] ** 2 > 1.39, "outside", "inside"),
    }
    labels = pd.DataFrame({"image_id": [f"img-{i:05d}" for i in range(n)]})
    for name, values in truth.items():
        col = values.astype(object)
        col[rng.random(n) < missing] = None
        labels[name] = col
    return z, labels


def discriminator_like_activations(
        n: int = 5000, *, widths: tuple[int, ...] = (64, 128, 256, 256, 512, 512),
        seed: int = 0, noise: tuple[float, float] = (1.5, 0.6),
        scale: tuple[float, float] = (0.05, 20.0), missing: float = 0.0,
        ) -> tuple[dict[str, np.ndarray], pd.DataFrame, ConceptSet]:
    """Pooled activations shaped like a DCGAN discriminator's, with planted concepts.

    Layer ``blocks.<i>`` has ``widths[i]`` channels. Each channel is the mean of a
    LeakyReLU(0.2) over a few "spatial positions", each a noisy random mix of the latents
    plus a per-channel offset (the rectification makes the non-linear concepts partly
    readable by a linear probe, as in real networks); the layer is then multiplied by a magnitude
    (log-spaced from ``scale[0]`` to ``scale[1]``) and per-channel log-normal gains, so
    the features are un-standardised and differ in scale by orders of magnitude, as real
    activations do.

    Parameters
    ----------
    n : int
        Images.
    widths : tuple of int
        Channels per layer.
    seed : int
        Seed of everything.
    noise : (first, last)
        Noise scale (relative to the signal) of the first and last layer.
    scale : (first, last)
        Typical magnitude of the first and last layer's activations.
    missing : float
        Share of each concept's labels set to missing.

    Returns
    -------
    features : {"blocks.<i>": n x widths[i] float32}
    labels : DataFrame with ``image_id`` and one column of group names per concept
    concept_set : ConceptSet
    """
    rng = np.random.default_rng(seed)
    z, labels = _planted_labels(rng, n, missing)
    latent = z.astype(np.float32)
    n_layers = len(widths)
    magnitudes = np.geomspace(scale[0], scale[1], n_layers)
    features = {}
    for i, (width, sigma) in enumerate(zip(widths, np.linspace(*noise, n_layers),
                                           strict=True)):
        mix = rng.standard_normal((latent.shape[1], width)).astype(np.float32)
        mix /= np.sqrt(latent.shape[1])
        offset = rng.normal(0.0, 0.7, width).astype(np.float32)
        pooled = np.zeros((n, width), dtype=np.float32)
        positions = 4
        for _ in range(positions):
            pre = latent @ mix + offset + sigma * rng.standard_normal((n, width),
                                                                        dtype=np.float32)
            pooled += np.where(pre > 0, pre, 0.2 * pre)
        gain = rng.lognormal(0.0, 0.5, width).astype(np.float32)
        features[f"blocks.{i}"] = (pooled / positions * gain * magnitudes[i]).astype(np.float32)
    return features, labels, planted_concept_set()
