"""A seeded synthetic activation store with planted concepts (tests and benchmarks).

Each image has latent factors z ~ N(0, 1). Concepts are planted on them:

- ``tone`` (binary, protected, 70/30): ``z0 > 0.52`` -- linear in the features;
- ``stroke`` (binary, protected): ``sign(z1) != sign(z2)`` (XOR) -- not linearly decodable;
- ``digit`` (multiclass, 4 groups): argmax of a linear map of ``z3 .. z5`` -- linear;
- ``ring`` (binary): ``z6^2 + z7^2 > 1.39`` (radial, about half) -- not linear.

Every layer's features are a random linear mix of the latents plus Gaussian noise whose
scale varies by layer, so some layers carry a concept better than others.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.concepts import ConceptSet

__all__ = ["planted_concept_set", "planted_activations"]

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
    features = {}
    for layer, sigma in enumerate(np.linspace(noise[0], noise[1], n_layers)):
        mix = rng.standard_normal((_N_LATENT, dim)) / np.sqrt(_N_LATENT)
        x = z @ mix * 3.0 + sigma * rng.standard_normal((n, dim))
        features[f"layer{layer}"] = x.astype(np.float32)
    return features, labels, planted_concept_set()
