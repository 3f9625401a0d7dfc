"""Failure diagnosis: which images the discriminator scores lowest, and which groups they are.

Per source (real, generated), the audited images whose discriminator score is among
the lowest ``reject_share`` are the *rejected* ones. For every group of every concept,
the **lift** is the group's share among rejected images over its share among all images
of that source: 1 when the discriminator rejects the group as often as any other, 2 when
the group is twice as frequent among the rejected images. Each lift gets a bootstrap
interval (the cell-count bootstrap of :mod:`audit.measure.bootstrap`, rows resampled,
the rejection of each image kept) and a two-proportion test of the group's share among
rejected against accepted images, Holm- and Benjamini-Hochberg-corrected over all groups
of all concepts and both sources. A group is *named* when its lift interval lies above 1
and its Holm-corrected p is under ``alpha``: "the discriminator scores thick strokes lowest".

Groups are the decoded ones (``pred__<concept>``): what the discriminator's own
activations say the image is. Pure arithmetic: a predictions table in, a
:class:`Diagnosis` out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.errors import DataError
from audit.formatting import number, percent, significant
from audit.ids import id_groups
from audit.measure.bootstrap import BootstrapSpec, cell_interval, cluster_cells, draw_cells
from audit.measure.stats import adjust_pvalues, two_proportion_test

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from audit.concepts import Concept, ConceptSet

__all__ = ["GroupLift", "SourceDiagnosis", "Diagnosis", "lift_statistic",
           "predictions_to_diagnosis"]

SOURCES = ("real", "generated")


@dataclass
class GroupLift:
    """One group of one concept among one source's rejected images.

    ``share_all`` / ``share_rejected``: its share among all / rejected images (fractions);
    ``lift`` = share_rejected / share_all with interval ``lift_ci``; ``p_value`` of the
    two-proportion test (rejected against accepted), ``p_holm`` / ``p_bh`` corrected;
    ``named``: lift interval above 1 and ``p_holm < alpha``.
    """

    source: str
    concept: str
    group: str
    n: int
    n_rejected: int
    k_all: int
    k_rejected: int
    share_all: float | None
    share_rejected: float | None
    lift: float | None
    lift_ci: list[float] | None
    p_value: float | None = None
    p_holm: float | None = None
    p_bh: float | None = None
    named: bool = False


@dataclass
class SourceDiagnosis:
    """The rejected images of one source: threshold, counts and the most rejected images.

    ``most_rejected`` lists up to ``top_k`` images, lowest score first, each with its
    ``image_id``, ``score`` and decoded ``groups`` ({concept: group}) and ``confidence``
    ({concept: decoded group's probability}).
    """

    source: str
    n: int
    n_rejected: int
    n_missing_score: int
    threshold: float | None
    most_rejected: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Diagnosis:
    """Which groups the discriminator scores lowest, per source, with intervals and tests."""

    reject_share: float
    alpha: float
    confidence: float
    n_boot: int
    sources: list[SourceDiagnosis]
    lifts: list[GroupLift]

    @property
    def named(self) -> list[GroupLift]:
        """The named groups, largest lift first."""
        return sorted((g for g in self.lifts if g.named), key=lambda g: -(g.lift or 0.0))

    def summary(self) -> list[str]:
        """One plain sentence per named group."""
        out = []
        for g in self.named:
            ci = f" [{number(g.lift_ci[0], 2)}, {number(g.lift_ci[1], 2)}]" if g.lift_ci else ""
            out.append(
                f"the discriminator scores {g.concept} = {g.group} lowest among {g.source} "
                f"images: {percent(g.share_rejected or 0, digits=0)} of the {g.n_rejected} "
                f"lowest-scored (lowest {percent(self.reject_share, digits=0)} of scores) "
                f"against {percent(g.share_all or 0, digits=0)} of all {g.n}, a lift of "
                f"{number(g.lift, 2)}{ci}, Holm p = {significant(g.p_holm, 2)}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"reject_share": self.reject_share, "alpha": self.alpha,
                "confidence": self.confidence, "n_boot": self.n_boot,
                "sources": [asdict(s) for s in self.sources],
                "lifts": [asdict(g) for g in self.lifts],
                "named": [asdict(g) for g in self.named], "summary": self.summary()}


def lift_statistic(k: int) -> Any:
    """Lift of each of ``k`` groups from cells (B, 2K): [accepted per group, rejected per group].

    Returns a function (B, 2K) -> (B, K): share among rejected / share among all; NaN where
    a replicate has no rejected image or the group vanished.
    """

    def stat(cells: np.ndarray) -> np.ndarray:
        cells = np.asarray(cells, dtype=float)
        acc, rej = cells[:, :k], cells[:, k:]
        with np.errstate(invalid="ignore", divide="ignore"):
            share_rej = rej / rej.sum(axis=1, keepdims=True)
            share_all = (acc + rej) / cells.sum(axis=1, keepdims=True)
            return share_rej / share_all

    return stat


def _top(rows: pd.DataFrame, concept_set: ConceptSet, top_k: int) -> list[dict[str, Any]]:
    out = []
    for _, r in rows.head(top_k).iterrows():
        groups = {c.name: str(r[f"pred__{c.name}"]) for c in concept_set.concepts}
        conf = {c.name: float(r.get(f"prob__{c.name}__{groups[c.name]}", np.nan))
                for c in concept_set.concepts}
        out.append({"image_id": str(r["image_id"]), "score": float(r["score"]),
                    "groups": groups, "confidence": conf})
    return out


def _audited_rows(predictions: pd.DataFrame, concept_set: ConceptSet) -> pd.DataFrame:
    """The audit split's rows (all rows without a ``split`` column), checked for the columns
    the diagnosis reads."""
    rows = predictions[predictions["split"] == "audit"] if "split" in predictions \
        else predictions
    needed = ["image_id", "source", "score", *(f"pred__{c.name}" for c in concept_set.concepts)]
    missing = [col for col in needed if col not in rows.columns]
    if missing:
        raise DataError(f"the predictions table lacks columns {missing}; it must come from "
                        f"this concept set's decoders (predictions.parquet of gan-audit run).")
    return rows


def _reject_lowest(part: pd.DataFrame, source: str, reject_share: float,
                   concept_set: ConceptSet, top_k: int
                   ) -> tuple[pd.DataFrame, np.ndarray, SourceDiagnosis]:
    """One source's images with a finite score, lowest first (ties by image id); which of
    them are rejected (the lowest ``reject_share``, at least one), shape (n,) bool; and the
    source's :class:`SourceDiagnosis`."""
    scored = part[np.isfinite(part["score"].to_numpy(dtype=float))]
    scored = scored.sort_values(["score", "image_id"], kind="stable")
    n = len(scored)
    n_rej = int(np.floor(reject_share * n)) if n else 0
    if n and n_rej == 0:
        n_rej = 1
    rejected = np.zeros(n, dtype=bool)
    rejected[:n_rej] = True
    threshold = float(scored["score"].iloc[n_rej - 1]) if n_rej else None
    return scored, rejected, SourceDiagnosis(
        source=source, n=n, n_rejected=n_rej, n_missing_score=len(part) - n,
        threshold=threshold, most_rejected=_top(scored, concept_set, top_k))


def _concept_lifts(decoded: np.ndarray, rejected: np.ndarray, *, source: str,
                   concept: Concept, keys: np.ndarray | None, spec: BootstrapSpec,
                   rng: np.random.Generator) -> list[GroupLift]:
    """The lift of each group of ``concept`` among one source's rejected images.

    ``decoded``: each image's decoded group, shape (n,) str (a group outside the concept's
    is left out); ``rejected``: shape (n,) bool; ``keys``: each image's cluster, or None.
    The tests' p-values are not yet corrected (see :func:`_name_groups`).
    """
    k = len(concept.groups)
    codes = np.array([concept.groups.index(g) if g in concept.groups else -1 for g in decoded])
    ok = codes >= 0
    row_cells = codes[ok] + k * rejected[ok]
    cells = np.bincount(row_cells, minlength=2 * k)
    matrix = None if keys is None else cluster_cells(keys[ok], row_cells, 2 * k)
    draws = draw_cells(cells, n_boot=spec.n_boot, rng=rng, clusters=matrix)
    point, ci = cell_interval(lift_statistic(k), cells, draws, spec, matrix)
    n_ok, n_rej_ok = int(ok.sum()), int(cells[k:].sum())
    lifts = []
    for j, group in enumerate(concept.groups):
        k_all, k_rej = int(cells[j] + cells[k + j]), int(cells[k + j])
        value = float(point[j]) if np.isfinite(point[j]) else None
        interval = [float(ci[j, 0]), float(ci[j, 1])] \
            if value is not None and np.all(np.isfinite(ci[j])) else None
        test = two_proportion_test(k_rej, n_rej_ok, k_all - k_rej, n_ok - n_rej_ok)
        lifts.append(GroupLift(
            source=source, concept=concept.name, group=group, n=n_ok,
            n_rejected=n_rej_ok, k_all=k_all, k_rejected=k_rej,
            share_all=k_all / n_ok if n_ok else None,
            share_rejected=k_rej / n_rej_ok if n_rej_ok else None,
            lift=value, lift_ci=interval, p_value=test.p_value))
    return lifts


def _name_groups(lifts: list[GroupLift], alpha: float) -> None:
    """Holm- and BH-correct the p-values over all ``lifts`` (in place) and name the groups
    whose lift interval lies above 1 with ``p_holm < alpha``."""
    holm, bh = adjust_pvalues([g.p_value for g in lifts])
    for g, ph, pb in zip(lifts, holm, bh, strict=True):
        g.p_holm, g.p_bh = ph, pb
        g.named = bool(g.lift_ci is not None and g.lift_ci[0] > 1 and ph is not None
                       and ph < alpha)


def predictions_to_diagnosis(predictions: pd.DataFrame, concept_set: ConceptSet, *,
                             reject_share: float = 0.25, top_k: int = 16, alpha: float = 0.05,
                             spec: BootstrapSpec | None = None,
                             cluster_by: str | None = None) -> Diagnosis:
    """Which decoded groups are over-represented among the images D scores lowest.

    Parameters
    ----------
    predictions : DataFrame
        ``predictions.parquet`` (docs/ARCHITECTURE.md); rows with ``split == "audit"`` are used
        (all rows when there is no ``split`` column).
    concept_set : ConceptSet
        Concepts whose ``pred__`` columns are read.
    reject_share : float in (0, 1)
        Share of each source's images, lowest scores first, counted as rejected.
    top_k : int
        Most rejected images listed per source.
    alpha : float
        Level of the Holm-corrected tests for naming a group.
    spec : BootstrapSpec
        Replicates, seed, confidence (and percentile or BCa) of the lift intervals.
    cluster_by : str, optional
        The measure stage's ``cluster_by``: the intervals resample clusters of images.
    """
    if not 0 < reject_share < 1:
        raise DataError(f"reject_share must lie strictly between 0 and 1, got {reject_share}; "
                        f"e.g. 0.1 for the lowest-scored 10% of images.")
    spec = spec or BootstrapSpec()
    rows = _audited_rows(predictions, concept_set)
    rng = np.random.default_rng(spec.seed)
    sources, lifts = [], []
    for source in SOURCES:  # the replicates are drawn in this order: source, then concept
        part = rows[rows["source"] == source]
        scored, rejected, diagnosis = _reject_lowest(part, source, reject_share, concept_set,
                                                     top_k)
        sources.append(diagnosis)
        if diagnosis.n == 0:
            continue
        keys = id_groups(scored["image_id"].astype(str).tolist(), cluster_by)
        for concept in concept_set.concepts:
            lifts += _concept_lifts(scored[f"pred__{concept.name}"].astype(str).to_numpy(),
                                    rejected, source=source, concept=concept, keys=keys,
                                    spec=spec, rng=rng)
    _name_groups(lifts, alpha)
    return Diagnosis(reject_share=reject_share, alpha=alpha, confidence=spec.confidence,
                     n_boot=spec.n_boot, sources=sources, lifts=lifts)
