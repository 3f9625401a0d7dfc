"""Layer redundancy: how much two recorded layers share, and which layers add no concept.

Two views of the same question, per pair of layers:

- **linear CKA** (centred kernel alignment, Kornblith et al. 2019) between the pooled
  activations of the same images at the two layers: 1 when one is an orthogonal
  transform and isotropic scaling of the other, near 0 when they share nothing;
- **decoder reach**: whether the decoder trained on the earlier layer already reaches the
  later layer's held-out accuracy on every concept (from the layer sweep,
  ``decoders/layers.json``). A layer that an earlier one reaches on every concept adds
  no concept information: a hint for pruning the layers an audit records.

Pure arithmetic: arrays and the sweep in, a :class:`Redundancy` out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.errors import DataError
from audit.formatting import number, significant

__all__ = ["linear_cka", "cka_matrix", "Redundancy", "layers_to_redundancy"]


def _centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"activations must be N x D, got shape {x.shape}.")
    return x - x.mean(axis=0, keepdims=True)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two representations of the same N images.

    Parameters
    ----------
    x : N x D1 array
    y : N x D2 array
        Rows are the same images, in the same order.

    Returns
    -------
    float in [0, 1]
        ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred Xc, Yc;
        NaN when either representation is constant. Computed in the feature space or, when
        the images are fewer than the features, through the N x N Gram matrices (same value).
    """
    xc, yc = _centred(x), _centred(y)
    if xc.shape[0] != yc.shape[0]:
        raise DataError(f"linear CKA needs the same images at both layers: {xc.shape[0]} and "
                        f"{yc.shape[0]} rows.")
    n, d1, d2 = xc.shape[0], xc.shape[1], yc.shape[1]
    if n * n * (d1 + d2) < n * (d1 * d2 + d1 * d1 + d2 * d2):
        k, m = xc @ xc.T, yc @ yc.T
        cross, nx, ny = float(np.sum(k * m)), float(np.sum(k * k)), float(np.sum(m * m))
    else:
        cross = float(np.sum((yc.T @ xc) ** 2))
        nx, ny = float(np.sum((xc.T @ xc) ** 2)), float(np.sum((yc.T @ yc) ** 2))
    den = np.sqrt(nx) * np.sqrt(ny)
    return float(cross / den) if den > 0 else float("nan")


def cka_matrix(features: Mapping[str, np.ndarray], *, max_rows: int | None = 2000,
               seed: int = 0) -> np.ndarray:
    """Linear CKA of every pair of layers: L x L symmetric, ones on the diagonal.

    ``features`` maps layer -> N x D activations of the same images (mapping order is the
    layer order). With ``max_rows``, a seeded random subset of that many images is used.
    """
    arrays = list(features.values())
    n = {a.shape[0] for a in arrays}
    if len(n) > 1:
        raise DataError(f"the layers have different numbers of images ({sorted(n)}); give "
                        f"every layer for the same images.")
    rows = n.pop() if n else 0
    if max_rows is not None and rows > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))
        arrays = [a[keep] for a in arrays]
    out = np.eye(len(arrays))
    for i in range(len(arrays)):
        for j in range(i + 1, len(arrays)):
            out[i, j] = out[j, i] = linear_cka(arrays[i], arrays[j])
    return out


@dataclass(frozen=True)
class Redundancy:
    """What every pair of layers shares, and the layers that add no concept information.

    Attributes
    ----------
    layers : list of str
        Layer names, input side first.
    cka : L x L list of float
        Linear CKA of each pair of layers (NaN where a layer is constant).
    metric : str
        The sweep's held-out metric compared (``accuracy`` when the sweep has it).
    scores : {concept: {layer: float}}
        That metric per concept and layer.
    reached_by : {layer: str or None}
        The first earlier layer whose decoder reaches this layer's score on every concept
        (within ``tolerance``); None when none does.
    redundant : list of dict
        ``{"layer", "reached_by", "cka", "reason"}`` for each layer reached by an earlier one.
    tolerance : float
        How far below a later layer's score an earlier layer may be and still reach it.
    n_images : int
        Images the CKA rests on.
    """

    layers: list[str]
    cka: list[list[float]]
    metric: str
    scores: dict[str, dict[str, float]]
    reached_by: dict[str, str | None]
    redundant: list[dict[str, Any]] = field(default_factory=list)
    tolerance: float = 0.01
    n_images: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"layers": self.layers, "cka": self.cka, "metric": self.metric,
                "scores": self.scores, "reached_by": self.reached_by,
                "redundant": self.redundant, "tolerance": self.tolerance,
                "n_images": self.n_images}


def _sweep_scores(sweep: Mapping[str, Any], layers: Sequence[str]
                  ) -> tuple[str, dict[str, dict[str, float]]]:
    """The held-out score per concept and layer from ``layers.json`` (accuracy preferred)."""
    for key, name in (("accuracy", "accuracy"), ("scores", str(sweep.get("metric", "score")))):
        table = sweep.get(key)
        if isinstance(table, Mapping) and table:
            return name, {str(c): {lay: float(v[lay]) for lay in layers
                                   if isinstance(v, Mapping) and v.get(lay) is not None}
                          for c, v in table.items()}
    return "accuracy", {}


def layers_to_redundancy(features: Mapping[str, np.ndarray], sweep: Mapping[str, Any] | None,
                         *, tolerance: float = 0.01, max_rows: int | None = 2000,
                         seed: int = 0) -> Redundancy:
    """CKA between every pair of layers and the layers an earlier one already reaches.

    Parameters
    ----------
    features : {layer: N x D array}
        Pooled activations of the same N images at each layer, input side first.
    sweep : dict or None
        ``decoders/layers.json`` (its ``accuracy`` or ``scores`` per concept and layer).
        Without it, only the CKA is computed and no layer is called redundant.
    tolerance : float
        An earlier layer reaches a later one when its score is at least the later one's
        minus ``tolerance``, on every concept.
    max_rows, seed
        Images used for the CKA (a seeded subset when there are more).
    """
    layers = [str(lay) for lay in features]
    cka = cka_matrix(features, max_rows=max_rows, seed=seed)
    n_rows = next(iter(features.values())).shape[0] if features else 0
    metric, scores = _sweep_scores(sweep or {}, layers)
    concepts = [c for c, per in scores.items() if per]
    reached: dict[str, str | None] = {}
    redundant = []
    for j, later in enumerate(layers):
        reached[later] = None
        if not concepts or any(later not in scores[c] for c in concepts):
            continue
        for i in range(j):
            earlier = layers[i]
            if all(earlier in scores[c] and scores[c][earlier] >= scores[c][later] - tolerance
                   for c in concepts):
                reached[later] = earlier
                gaps = ", ".join(f"{c} {number(float(scores[c][earlier]))} vs "
                                 f"{number(float(scores[c][later]))}"
                                 for c in concepts)
                redundant.append({
                    "layer": later, "reached_by": earlier, "cka": float(cka[i, j]),
                    "reason": f"the decoder on the earlier layer {earlier} already reaches its "
                              f"held-out {metric} on every concept ({gaps}; tolerance "
                              f"{significant(tolerance, 6)}); linear CKA between them "
                              f"{number(float(cka[i, j]), 2)}"})
                break
    return Redundancy(layers=layers, cka=[[float(v) for v in row] for row in cka],
                      metric=metric, scores=scores, reached_by=reached, redundant=redundant,
                      tolerance=tolerance,
                      n_images=min(n_rows, max_rows) if max_rows is not None else n_rows)
