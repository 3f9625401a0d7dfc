"""Latent interpolation: what the discriminator sees along a path between two latents.

Images are generated at ``steps`` points on a line (``linear``) or a great-circle arc
(``slerp``, which keeps the norm of Gaussian latents) between two latents; each image is
decoded (the discriminator's activations through the run's concept decoders) and scored.
Every concept's group probabilities along the path show how smoothly the
discriminator's notion of the concept changes.

:func:`latent_path` and :func:`path_summary` are pure; :func:`interpolate_concepts`
takes the generation-and-decoding step as a function, so that it runs the same with the
run's models (:mod:`audit.insight.run`) or with tiny ones in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from audit.errors import DataError

__all__ = ["Method", "latent_path", "path_summary", "Interpolation", "interpolate_concepts"]

Method = Literal["linear", "slerp"]

#: (latents S x latent_shape) -> (images S x C x H x W in [-1, 1], {concept: S x K}, scores S)
ReadFn = Callable[[np.ndarray], tuple[np.ndarray, Mapping[str, np.ndarray], np.ndarray]]


def latent_path(z_from: np.ndarray, z_to: np.ndarray, *, steps: int,
                method: Method = "slerp") -> np.ndarray:
    """``steps`` latents from ``z_from`` to ``z_to`` (both ends included).

    Parameters
    ----------
    z_from, z_to : arrays of one latent's shape (e.g. ``(latent_dim,)``)
    steps : int >= 2
    method : "linear" or "slerp"
        ``slerp`` follows the great circle between the two directions (with the norm
        interpolated linearly); it falls back to ``linear`` for (anti)parallel latents.

    Returns
    -------
    steps x latent_shape float32
    """
    if steps < 2:
        raise DataError(f"an interpolation needs at least 2 steps (both ends), got {steps}.")
    a = np.asarray(z_from, dtype=np.float64)
    b = np.asarray(z_to, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"the two latents differ in shape: {a.shape} and {b.shape}.")
    t = np.linspace(0.0, 1.0, steps).reshape((steps,) + (1,) * a.ndim)
    linear = (1 - t) * a + t * b
    if method == "linear":
        return linear.astype(np.float32)
    if method != "slerp":
        raise DataError(f"unknown interpolation method {method!r}; use 'linear' or 'slerp'.")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return linear.astype(np.float32)
    cos = float(np.clip(np.sum(a * b) / (na * nb), -1.0, 1.0))
    omega = np.arccos(cos)
    if np.sin(omega) < 1e-6:
        return linear.astype(np.float32)
    ua, ub = a / na, b / nb
    direction = (np.sin((1 - t) * omega) * ua + np.sin(t * omega) * ub) / np.sin(omega)
    return (direction * ((1 - t) * na + t * nb)).astype(np.float32)


def path_summary(probabilities: Mapping[str, np.ndarray],
                 groups: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Any]]:
    """How each concept's decoded probabilities change along a path.

    Parameters
    ----------
    probabilities : {concept: S x K}
        Group probabilities at each of S steps.
    groups : {concept: K group names}

    Returns
    -------
    {concept: {...}}
        ``start`` / ``end``: the decoded (most probable) group at each end;
        ``change``: total variation distance between the two ends' distributions (0..1);
        ``path_length``: summed total variation between consecutive steps (>= change);
        ``detour``: path_length / change (1 for a monotone change; None when change is ~0);
        ``max_step``: the largest total variation between consecutive steps.
    """
    out = {}
    for concept, p in probabilities.items():
        p = np.asarray(p, dtype=float)
        steps = 0.5 * np.abs(np.diff(p, axis=0)).sum(axis=1)
        change = float(0.5 * np.abs(p[-1] - p[0]).sum())
        length = float(steps.sum())
        names = list(groups[concept])
        out[concept] = {"start": names[int(np.argmax(p[0]))], "end": names[int(np.argmax(p[-1]))],
                        "change": change, "path_length": length,
                        "detour": length / change if change > 1e-3 else None,
                        "max_step": float(steps.max()) if len(steps) else 0.0}
    return out


@dataclass
class Interpolation:
    """Images, group probabilities and scores along one latent path.

    Attributes
    ----------
    start, end : str
        What the ends are (a seed, or a generated image id).
    method : "linear" or "slerp"
    t : (S,) float
        Position of each step, 0 at ``start`` and 1 at ``end``.
    groups : {concept: list of group names}
    probabilities : {concept: S x K float}
    scores : (S,) float
        The discriminator's score of each image.
    images : S x C x H x W float in [-1, 1]
    """

    start: str
    end: str
    method: str
    t: np.ndarray
    groups: dict[str, list[str]]
    probabilities: dict[str, np.ndarray]
    scores: np.ndarray
    images: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, dict[str, Any]]:
        return path_summary(self.probabilities, self.groups)

    def to_json(self) -> dict[str, Any]:
        """Everything but the images, as plain JSON values."""
        return {"start": self.start, "end": self.end, "method": self.method,
                "steps": len(self.t), "t": [float(x) for x in self.t],
                "scores": [float(s) for s in self.scores],
                "probabilities": {c: {g: [float(v) for v in p[:, j]]
                                      for j, g in enumerate(self.groups[c])}
                                  for c, p in self.probabilities.items()},
                "summary": self.summary, **self.extra}


def interpolate_concepts(z_from: np.ndarray, z_to: np.ndarray, *, steps: int, read: ReadFn,
                         groups: Mapping[str, Sequence[str]], method: Method = "slerp",
                         start: str = "from", end: str = "to") -> Interpolation:
    """Generate, decode and score images along a latent path.

    Parameters
    ----------
    z_from, z_to : one latent each (the generator's latent shape)
    steps : int >= 2
    read : function
        latents (S x latent shape) -> (images S x C x H x W in [-1, 1],
        {concept: S x K probabilities}, scores (S,)).
    groups : {concept: group names}
        Names of the columns of each concept's probabilities.
    method : "linear" or "slerp"
    start, end : str
        Labels of the two ends (kept in the result).
    """
    z = latent_path(z_from, z_to, steps=steps, method=method)
    images, probs, scores = read(z)
    probs = {c: np.asarray(p, dtype=float) for c, p in probs.items()}
    for c, p in probs.items():
        if p.shape != (steps, len(groups[c])):
            raise DataError(f"concept {c!r}: the decoder gave probabilities of shape {p.shape}, "
                            f"expected {steps} x {len(groups[c])}.")
    return Interpolation(start=start, end=end, method=method, t=np.linspace(0, 1, steps),
                         groups={c: list(groups[c]) for c in probs}, probabilities=probs,
                         scores=np.asarray(scores, dtype=float), images=np.asarray(images))
