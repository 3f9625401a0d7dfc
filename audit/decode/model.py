"""The decoder network in numpy: head layout, forward pass, calibration.

A layer's decoder is an MLP ``x -> standardise -> [Linear -> ReLU] * len(hidden) ->
Linear``, plus (``linear_skip``) a linear path ``skip.weight @ x`` added to the output,
so that the hidden layers only learn what a linear probe cannot. The output holds one
logit per binary concept (the positive group, ``groups[1]``) and K logits per
multiclass concept, in concept-set order. Weights follow torch's ``nn.Linear``
convention (out x in) and are named ``trunk.<i>.weight``, ``trunk.<i>.bias``,
``head.weight``, ``head.bias`` and ``skip.weight``. Inference needs no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from audit.concepts import ConceptSet

__all__ = ["HeadLayout", "forward_logits", "concept_probabilities", "logits_to_probabilities",
           "decide", "fit_temperature", "temperature_and_nll"]


@dataclass(frozen=True)
class HeadLayout:
    """Where each concept's logits sit in the decoder's output."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]

    @classmethod
    def from_concepts(cls, concept_set: ConceptSet) -> HeadLayout:
        cs = concept_set.concepts
        return cls(tuple(c.name for c in cs), tuple(c.kind for c in cs),
                   tuple(tuple(c.groups) for c in cs))

    @cached_property
    def widths(self) -> tuple[int, ...]:
        """Logits per concept: 1 for binary, K for multiclass."""
        return tuple(1 if k == "binary" else len(g) for k, g in zip(self.kinds, self.groups,
                                                                   strict=True))

    @cached_property
    def starts(self) -> tuple[int, ...]:
        return tuple(int(s) for s in np.cumsum((0, *self.widths))[:-1])

    @cached_property
    def width(self) -> int:
        return int(sum(self.widths))

    @cached_property
    def binary(self) -> list[int]:
        """Indices of the binary concepts."""
        return [j for j, k in enumerate(self.kinds) if k == "binary"]

    @cached_property
    def multiclass(self) -> list[int]:
        return [j for j, k in enumerate(self.kinds) if k == "multiclass"]

    def slice(self, j: int) -> slice:
        return slice(self.starts[j], self.starts[j] + self.widths[j])

    def rows(self, concepts: Sequence[int]) -> list[int]:
        """The output rows of the concepts ``concepts`` (indices), in that order."""
        return [r for j in concepts for r in range(self.starts[j], self.slice(j).stop)]

    def pick(self, concepts: Sequence[int]) -> HeadLayout:
        """The layout of the concepts ``concepts`` (indices), in that order."""
        return HeadLayout(tuple(self.names[j] for j in concepts),
                          tuple(self.kinds[j] for j in concepts),
                          tuple(self.groups[j] for j in concepts))


def forward_logits(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits (n x width) of standardised features ``x`` (n x D, float32)."""
    h = np.asarray(x, dtype=np.float32)
    i = 0
    while f"trunk.{i}.weight" in params:
        h = np.maximum(h @ params[f"trunk.{i}.weight"].T + params[f"trunk.{i}.bias"], 0)
        i += 1
    out = h @ params["head.weight"].T + params["head.bias"]
    if "skip.weight" in params:
        out = out + np.asarray(x, dtype=np.float32) @ params["skip.weight"].T
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def concept_probabilities(z: np.ndarray, kind: str, temperature: float = 1.0) -> np.ndarray:
    """One concept's logits (n x width) to group probabilities (n x K)."""
    z = np.asarray(z, dtype=np.float64) / temperature
    if kind == "binary":
        p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    return _softmax(z)


def logits_to_probabilities(logits: np.ndarray, layout: HeadLayout,
                            temperatures: dict[str, float]) -> dict[str, np.ndarray]:
    """Every concept's group probabilities (n x K, float64), temperature-scaled."""
    return {name: concept_probabilities(logits[:, layout.slice(j)], layout.kinds[j],
                                        temperatures.get(name, 1.0))
            for j, name in enumerate(layout.names)}


def decide(prob: np.ndarray, kind: str, threshold: float = 0.5) -> np.ndarray:
    """Decoded group codes: argmax, or positive where p >= ``threshold`` for binary."""
    if kind == "binary":
        return (prob[:, 1] >= threshold).astype(np.int64)
    return prob.argmax(axis=1)


def _nll(z: np.ndarray, y: np.ndarray, kind: str, temps: np.ndarray) -> np.ndarray:
    """Mean negative log-likelihood of logits ``z`` at each temperature of ``temps``."""
    if kind == "binary":
        s = z[None, :, 0] / temps[:, None]                     # T x n
        sign = np.where(y == 1, 1.0, -1.0)
        return np.logaddexp(0.0, -sign * s).mean(axis=1)       # -log sigmoid(sign * s)
    s = z[None] / temps[:, None, None]                          # T x n x K
    m = s.max(axis=2, keepdims=True)
    logz = (m[..., 0] + np.log(np.exp(s - m).sum(axis=2)))
    return (logz - s[:, np.arange(len(y)), y]).mean(axis=1)


def _nll_derivatives(z: np.ndarray, y: np.ndarray, kind: str, beta: float
                     ) -> tuple[float, float, float]:
    """NLL of logits ``beta * z`` and its first and second derivative in ``beta``."""
    if kind == "binary":
        z1 = z[:, 0]
        s = beta * z1
        p = 1.0 / (1.0 + np.exp(-s))
        nll = float(np.mean(np.logaddexp(0.0, s) - y * s))
        return nll, float(np.mean((p - y) * z1)), float(np.mean(p * (1.0 - p) * z1 ** 2))
    s = beta * z
    m = s.max(axis=1, keepdims=True)
    e = np.exp(s - m)
    total = e.sum(axis=1, keepdims=True)
    p = e / total
    zy = z[np.arange(len(y)), y]
    mean_z = (p * z).sum(axis=1)
    nll = float(np.mean(m[:, 0] + np.log(total[:, 0]) - beta * zy))
    return (nll, float(np.mean(mean_z - zy)),
            float(np.mean((p * z ** 2).sum(axis=1) - mean_z ** 2)))


def fit_temperature(z: np.ndarray, y: np.ndarray, kind: str) -> float:
    """Temperature T in [0.05, 20] minimising the NLL of ``z / T`` on labelled rows.

    ``z`` is n x width (one concept's logits), ``y`` the true codes (n,). The NLL is
    convex in ``beta = 1 / T``: damped Newton steps on ``beta`` from 1, kept within the
    bounds, until beta or the NLL stops changing (on separable rows the NLL keeps falling
    ever more slowly towards T = 0.05). Returns 1 when there are no labelled rows or the
    logits are all zero.
    """
    return temperature_and_nll(z, y, kind)[0]


def temperature_and_nll(z: np.ndarray, y: np.ndarray, kind: str) -> tuple[float, float]:
    """:func:`fit_temperature` and the mean NLL at it on the labelled rows (NaN without)."""
    keep = y >= 0
    z, y = np.asarray(z, dtype=np.float64)[keep], y[keep]
    if not len(y):
        return 1.0, float("nan")
    lo, hi = 1.0 / 20.0, 1.0 / 0.05
    beta = 1.0
    nll, grad, curv = _nll_derivatives(z, y, kind, beta)
    for _ in range(50):
        if curv <= 1e-12:
            if abs(grad) <= 1e-12:
                break
            step = -np.sign(grad) * beta           # flat: move towards the descent side
        else:
            step = -grad / curv
        new = float(np.clip(beta + step, lo, hi))
        for _ in range(30):                         # backtrack until the NLL does not rise
            new_nll, new_grad, new_curv = _nll_derivatives(z, y, kind, new)
            if new_nll <= nll + 1e-12:
                break
            new = 0.5 * (beta + new)
        else:
            break
        done = abs(new - beta) <= 1e-7 * beta
        beta, nll, grad, curv = new, new_nll, new_grad, new_curv
        if done:
            break
    return 1.0 / beta, nll
