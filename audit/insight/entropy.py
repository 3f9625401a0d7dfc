"""Mode collapse per concept: entropy of the generated group distribution against the real one.

For each concept, the normalised Shannon entropy ``H = -sum p log p / log K`` of the
decoded groups among generated images is compared with the same among real images
(both decoded by the same decoder, so decoder error affects both alike). A generator
that collapses onto fewer groups than the real data has a lower entropy; the ratio
``H_generated / H_real`` gets a bootstrap interval (real and generated images resampled
apart, each with its own size) and the concept is flagged when the ratio falls below
``1 - margin`` and its interval lies below 1. Groups present among real images but absent
from the generated ones are listed.

Pure arithmetic: a predictions table in, a list of :class:`ConceptEntropy` out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.formatting import interval as interval_text
from audit.formatting import number
from audit.measure.bootstrap import BootstrapSpec, cell_interval, draw_cells
from audit.measure.stats import finite_or_none

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from audit.concepts import Concept, ConceptSet

__all__ = ["normalised_entropy", "ConceptEntropy", "counts_to_entropy",
           "predictions_to_entropy"]


def normalised_entropy(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy of counts along the last axis, divided by log K: (..., K) -> (...).

    In [0, 1]: 0 when every image is in one group, 1 when the K groups are equally
    frequent. NaN where the counts sum to 0.
    """
    counts = np.asarray(counts, dtype=float)
    k = counts.shape[-1]
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / total
        h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
    h = h / np.log(k) if k > 1 else np.zeros_like(h)
    return np.where(total[..., 0] > 0, h, np.nan)


@dataclass(frozen=True)
class ConceptEntropy:
    """Entropy of one concept's groups among real and generated images.

    ``ratio`` is H_generated / H_real with its interval ``ratio_ci``; ``flagged`` when the
    ratio is below ``1 - margin`` and the interval's upper end below 1. ``missing_groups``:
    groups decoded among real images but never among generated ones.
    """

    concept: str
    groups: list[str]
    real_counts: list[int]
    generated_counts: list[int]
    entropy_real: float | None
    entropy_generated: float | None
    ratio: float | None
    ratio_ci: list[float] | None
    flagged: bool
    missing_groups: list[str]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def counts_to_entropy(concept: Concept, real: np.ndarray, generated: np.ndarray, *,
                      margin: float = 0.1, spec: BootstrapSpec | None = None,
                      clusters: list[np.ndarray] | None = None) -> ConceptEntropy:
    """Entropy comparison of one concept from group counts.

    Parameters
    ----------
    concept : Concept
        Its K groups name the counts.
    real, generated : (K,) int
        Images decoded as each group among real and generated images.
    margin : float
        Flag when H_generated / H_real < 1 - margin (and the interval is below 1).
    spec : BootstrapSpec
        Replicates, seed and confidence of the interval (real and generated resampled
        apart, each keeping its size).
    clusters : list of (K_s, 2K) arrays, optional
        Per source, its clusters' counts (real groups, then generated groups): whole
        clusters are resampled within each source instead of images.
    """
    spec = spec or BootstrapSpec()
    real, generated = np.asarray(real, dtype=np.int64), np.asarray(generated, dtype=np.int64)
    k = len(concept.groups)
    counts = np.concatenate([real, generated])

    def ratio(cells: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            hr = normalised_entropy(cells[:, :k])
            return np.where(hr > 0, normalised_entropy(cells[:, k:]) / np.where(hr > 0, hr, 1),
                            np.nan)

    rng = np.random.default_rng(spec.seed)
    if clusters:
        draws = sum(draw_cells(counts, n_boot=spec.n_boot, rng=rng, clusters=m)
                    for m in clusters)
        point, ci = cell_interval(ratio, counts, draws, spec, np.vstack(clusters))
    else:
        draws = draw_cells(counts, n_boot=spec.n_boot, rng=rng, strata=np.repeat([0, 1], k))
        point, ci = cell_interval(ratio, counts, draws, spec)
    h_real = finite_or_none(normalised_entropy(real))
    h_gen = finite_or_none(normalised_entropy(generated))
    value = finite_or_none(point)
    interval = [float(ci[0]), float(ci[1])] if value is not None and np.all(np.isfinite(ci)) \
        else None
    missing = [g for g, r, q in zip(concept.groups, real, generated, strict=True)
               if r > 0 and q == 0]
    flagged = bool(value is not None and value < 1 - margin and interval is not None
                   and interval[1] < 1)
    if real.sum() == 0 or generated.sum() == 0:
        reason = "no real or no generated images to compare"
    elif value is None:
        reason = ("every real image is decoded as one group, so the real entropy is 0 and "
                  "the ratio is undefined")
    else:
        reason = (f"generated entropy {number(h_gen, 2)} against real {number(h_real, 2)} "
                  f"(ratio {number(value, 2)}"
                  + (f", interval {interval_text(interval, kind='num2')}" if interval else "")
                  + ")")
        reason += (f": below {number(1 - margin, 2)}, the generator covers this concept's groups "
                   f"less evenly than the real data" if flagged else "")
    if missing:
        reason += f"; never generated: {', '.join(missing)}"
    return ConceptEntropy(concept=concept.name, groups=list(concept.groups),
                          real_counts=[int(x) for x in real],
                          generated_counts=[int(x) for x in generated],
                          entropy_real=h_real, entropy_generated=h_gen,
                          ratio=value, ratio_ci=interval, flagged=flagged,
                          missing_groups=missing, reason=reason)


def predictions_to_entropy(predictions: pd.DataFrame, concept_set: ConceptSet, *,
                           margin: float = 0.1, spec: BootstrapSpec | None = None,
                           cluster_by: str | None = None) -> list[ConceptEntropy]:
    """Entropy comparison of every concept from ``predictions.parquet``'s audited rows.

    Uses rows with ``split == "audit"`` and their decoded groups (``pred__<concept>``),
    real against generated; with ``cluster_by`` (the measure stage's) the intervals
    resample clusters of images within each source.
    """
    from audit.ids import id_groups
    from audit.measure.bootstrap import cluster_cells

    audit = predictions[predictions["split"] == "audit"] if "split" in predictions else predictions
    out = []
    for concept in concept_set.concepts:
        col = f"pred__{concept.name}"
        k = len(concept.groups)
        per_source, matrices = [], []
        for s, source in enumerate(("real", "generated")):
            part = audit[audit["source"] == source]
            values = part[col].astype(str).to_numpy()
            codes = np.array([concept.groups.index(v) if v in concept.groups else -1
                              for v in values], dtype=np.int64)
            per_source.append(np.bincount(codes[codes >= 0], minlength=k))
            keys = id_groups(part["image_id"].astype(str).tolist(), cluster_by)
            if keys is not None and (codes >= 0).any():
                matrices.append(cluster_cells(keys[codes >= 0], codes[codes >= 0] + s * k,
                                              2 * k))
        out.append(counts_to_entropy(concept, *per_source, margin=margin, spec=spec,
                                     clusters=matrices if cluster_by is not None else None))
    return out
