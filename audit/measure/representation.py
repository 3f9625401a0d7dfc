"""Representation: who appears among real and generated images.

Shares of each group among real and generated images, both on the same basis: images
with a true label count by it, and the decoded groups of the others are corrected for
decoder error with the held-out confusion matrix (``A^T p = p_hat`` on the simplex);
without a correction both sources count decoded groups. Distances to a reference
distribution, under-represented groups and missing coverage.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from audit.intervals import mover_difference, wilson_interval, zero_width
from audit.measure.bootstrap import (
    BootstrapSpec,
    Columns,
    Statistic,
    cell_interval,
    cluster_cells,
    draw_cells,
    estimate,
    padded_cells,
)
from audit.measure.groups import SHARE_PARTS, SOURCES, CellLayout, Grouping
from audit.measure.stats import (
    binomial_test,
    clustered_proportion_test,
    distances,
    effective_counts,
    finite_or_none,
    row_normalise,
    simplex_lstsq_batch,
    two_proportion_test,
)

if TYPE_CHECKING:
    from audit.config import MeasureSettings

__all__ = ["representation_statistic", "representation_columns", "measure_representation",
           "corrected_shares", "kron_batch", "share_basis", "share_cells", "ShareEstimates"]

_DIST = ("l1", "l2", "kl")


def kron_batch(mats: list[np.ndarray]) -> np.ndarray:
    """Kronecker product of batched matrices: list of (B, K_i, K_i) -> (B, prod K, prod K)."""
    out = mats[0]
    for m in mats[1:]:
        b, k1, k2 = out.shape[0], out.shape[1], m.shape[1]
        out = np.einsum("bij,bkl->bikjl", out, m).reshape(b, k1 * k2, k1 * k2)
    return out


def corrected_shares(raw: np.ndarray, confusions: list[np.ndarray]) -> np.ndarray:
    """Generated shares corrected for decoder error.

    Parameters
    ----------
    raw
        (B, K) decoded shares.
    confusions
        (B, K_i, K_i) held-out confusion counts of each crossed concept (one for a
        plain concept, or an intersection's measured joint confusion); A is the
        Kronecker product of their row-normalised forms, which with several matrices
        assumes the decoders err independently.

    Returns
    -------
    (B, K) shares ``p`` on the simplex minimising ``||A^T p - raw||``.
    """
    a = kron_batch([row_normalise(c) for c in confusions])
    return simplex_lstsq_batch(a, raw)


def _shares(counts: np.ndarray) -> np.ndarray:
    """(B, G) counts -> (B, G) shares; NaN where the total is 0."""
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / np.where(total > 0, total, 1), np.nan)


def share_basis(grouping: Grouping, *, unknown_below: float) -> tuple[str, bool]:
    """How the shares of a grouping are counted: (basis, correct).

    ``true_and_corrected``: images with a true label count by it and the decoded groups
    of the others are corrected with the held-out confusion A, in both sources alike.
    Without a correction (no confusion matrix, or ``unknown_below > 0``, under which A,
    counted on all held-out images, does not describe the images left), both sources
    are counted by decoded group (``decoded``: equal true shares then give equal
    expected shares), unless every audited image has a true label (``true``).
    """
    if grouping.confusions is not None and unknown_below == 0:
        return "true_and_corrected", True
    return ("true" if grouping.labelled.all() else "decoded"), False


def share_row_cells(grouping: Grouping, source: np.ndarray, *, basis: str) -> np.ndarray:
    """(N,) each audited image's share cell: its :data:`SHARE_PARTS` part and group
    (unknown last), counted as ``basis`` says."""
    g1 = grouping.n_groups + 1
    if basis == "decoded":
        labelled = np.zeros(len(source), dtype=bool)
    else:
        labelled = grouping.labelled
    code = np.where(labelled, grouping.best, grouping.decoded)
    part = 2 * np.asarray(source, dtype=np.int64) + (~labelled).astype(np.int64)
    return part * g1 + code


def share_cells(grouping: Grouping, source: np.ndarray, *, basis: str) -> np.ndarray:
    """The share cells (C,) of a grouping: audited images by :data:`SHARE_PARTS` and
    group (unknown last), counted as ``basis`` says, then the confusion counts."""
    counts = np.bincount(share_row_cells(grouping, source, basis=basis),
                         minlength=len(SHARE_PARTS) * (grouping.n_groups + 1))
    return np.concatenate([counts, *[c.ravel() for c in grouping.confusions or ()]])


def representation_columns(n_groups: int) -> Columns:
    """The columns of :func:`representation_statistic`: per group (G,) the real shares,
    the raw and the corrected generated shares and the gap (corrected generated share -
    reference share); then the distances (L1, L2, KL; see :data:`_DIST`) of the raw and of
    the corrected generated shares to the reference."""
    per_group, per_distance = (n_groups,), (len(_DIST),)
    return Columns((("real", per_group), ("generated_raw", per_group),
                    ("generated_corrected", per_group), ("gap", per_group),
                    ("distance_raw", per_distance), ("distance_corrected", per_distance)))


def representation_statistic(layout: CellLayout, *, reference: str, correct: bool) -> Statistic:
    """The statistic ``cells (B, C) -> (B, 4G + 6)`` of one grouping's share cells, in the
    columns of :func:`representation_columns`.

    ``layout`` has the :data:`SHARE_PARTS` as parts and one state. The share of each
    source is ``(labelled + n_unlabelled * q) / n`` where ``q`` is the unlabelled
    images' decoded shares, corrected with A when ``correct`` (so that intervals carry
    A's uncertainty too).
    """
    g = layout.n_groups
    columns = representation_columns(g)

    def stat(cells: np.ndarray) -> np.ndarray:
        parts = layout.audit(cells)[..., :g, 0].astype(float)     # (B, 4, G)
        lab, unl = parts[:, 0::2], parts[:, 1::2]                 # (B, 2 sources, G)
        b = len(cells)
        raw = _shares((lab + unl).reshape(2 * b, g)).reshape(b, 2, g)
        corr = _corrected(layout, cells, lab, unl) if correct else raw
        real, raw_gen, corr_gen = corr[:, 0], raw[:, 1], corr[:, 1]
        ref = real if reference == "real" else np.full_like(real, 1.0 / g)
        d_raw, d_corr = distances(raw_gen, ref), distances(corr_gen, ref)
        return columns.pack({"real": real, "generated_raw": raw_gen,
                             "generated_corrected": corr_gen, "gap": corr_gen - ref,
                             "distance_raw": np.stack([d_raw[k] for k in _DIST], axis=1),
                             "distance_corrected": np.stack([d_corr[k] for k in _DIST],
                                                            axis=1)})

    return stat


def _corrected(layout: CellLayout, cells: np.ndarray, lab: np.ndarray, unl: np.ndarray
               ) -> np.ndarray:
    """Shares (B, 2 sources, G) with the unlabelled images' decoded groups corrected for
    decoder error with the confusions in ``cells`` (B, C): ``(labelled + n_unlabelled * q)
    / n`` from the labelled and unlabelled counts ``lab``, ``unl`` (B, 2, G)."""
    b, g = len(cells), layout.n_groups
    conf = [np.concatenate([c, c]) for c in layout.confusions(cells)]
    q = corrected_shares(_shares(unl.transpose(1, 0, 2).reshape(2 * b, g)), conf)
    q = q.reshape(2, b, g).transpose(1, 0, 2)
    n_unl = unl.sum(axis=2, keepdims=True)
    total = n_unl + lab.sum(axis=2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (lab + n_unl * np.where(n_unl > 0, q, 0.0))
                        / np.where(total > 0, total, 1), np.nan)


@dataclass(frozen=True)
class ShareEstimates:
    """One grouping's shares with their intervals, on its share basis.

    Attributes
    ----------
    point
        The columns of :func:`representation_columns` by name: (G,) per group, (3,) per
        distance.
    ci
        Their intervals, (G, 2) and (3, 2): bootstrap, or Wilson where a share is a count
        k of n (:func:`_share_intervals`).
    parts
        (4, G + 1) images by :data:`SHARE_PARTS` and group (unknown last).
    """

    point: dict[str, np.ndarray]
    ci: dict[str, np.ndarray]
    parts: np.ndarray

    @property
    def by_source(self) -> np.ndarray:
        """(2 sources, G + 1) images per group on the share basis."""
        return self.parts[0::2] + self.parts[1::2]


def _share_estimates(grouping: Grouping, layout: CellLayout, source: np.ndarray, *,
                     basis: str, correct: bool, spec: BootstrapSpec,
                     settings: MeasureSettings, rng: np.random.Generator,
                     clusters: np.ndarray | None) -> ShareEstimates:
    """The shares of a grouping counted as ``basis`` says (corrected when ``correct``),
    with intervals from bootstrap draws of its share cells (resampling ``clusters`` when
    given); ``layout`` is the grouping's treatment layout (for its confusion sizes)."""
    g = grouping.n_groups
    share_layout = CellLayout(g, layout.confusion_sizes, n_parts=len(SHARE_PARTS), n_states=1)
    counts = share_cells(grouping, source, basis=basis)
    matrix = None if clusters is None else padded_cells(
        cluster_cells(clusters, share_row_cells(grouping, source, basis=basis),
                      share_layout.n_audit), len(counts))
    draws = draw_cells(counts, n_boot=spec.n_boot, rng=rng,
                       strata=share_layout.strata(stratified=spec.stratified), clusters=matrix)
    stat = representation_statistic(share_layout, reference=settings.reference, correct=correct)
    point, ci = cell_interval(stat, counts, draws, spec, matrix)
    columns = representation_columns(g)
    parts = share_layout.audit(counts[None, :])[0, :, :, 0]       # (4, G + 1)
    shares = ShareEstimates(point=columns.unpack(point), ci=columns.unpack(ci), parts=parts)
    return replace(shares, ci=_share_intervals(
        shares.point, shares.ci, shares.by_source[:, :g],
        plain_real=not correct or int(parts[1, :g].sum()) == 0,
        versus_real=settings.reference == "real",
        per_cluster=None if matrix is None else share_layout.audit(matrix)[..., 0],
        confidence=spec.confidence))


def measure_representation(grouping: Grouping, layout: CellLayout, cells: np.ndarray, *,
                           source: np.ndarray, spec: BootstrapSpec, settings: MeasureSettings,
                           rng: np.random.Generator, clusters: np.ndarray | None = None
                           ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Representation section of one grouping.

    Parameters
    ----------
    layout, cells
        The grouping's treatment cells (C,) (images by source, best group and score
        state), for the degenerate cases.
    source
        (N,) source codes (0 real, 1 generated) of the audited images, in the order of
        ``grouping.best``; the share cells and the share tests' decoded counts are
        counted from them.
    rng
        Draws the bootstrap replicates of the share cells.
    clusters
        (N,) cluster keys of the audited images (``cluster_by``): whole clusters are
        resampled; None resamples images.

    Returns
    -------
    (section, tests, degenerate): the section as in results.schema.json
    (``$defs/representation``), test records without corrected p-values, and
    degenerate cases found.
    """
    g = grouping.n_groups
    basis, correct = share_basis(grouping, unknown_below=settings.unknown_below)
    shares = _share_estimates(grouping, layout, source, basis=basis, correct=correct,
                              spec=spec, settings=settings, rng=rng, clusters=clusters)
    by_source = shares.by_source
    n_real, n_gen = int(by_source[0, :g].sum()), int(by_source[1, :g].sum())
    degenerate = _presence_degenerate(grouping, layout.audit(cells[None, :])[0].sum(axis=2))
    correction = _correction_record(grouping, degenerate, basis=basis, correct=correct,
                                    unlabelled=shares.parts[1::2, :g].sum(axis=1),
                                    unknown_below=settings.unknown_below)
    tests = (_share_tests(grouping, _decoded_counts(grouping, source, clusters), settings)
             if grouping.protected and n_gen > 0 else [])
    test_ids = {t["group"]: t["id"] for t in tests}
    ref_share = shares.point["real"] if settings.reference == "real" else np.full(g, 1.0 / g)
    rows = [_share_row(grouping, shares, i, float(ref_share[i]), settings, n_real=n_real,
                       n_gen=n_gen, test_id=test_ids.get(label))
            for i, label in enumerate(grouping.groups)]
    dist = {kind: {d: estimate(shares.point[f"distance_{kind}"][j],
                               shares.ci[f"distance_{kind}"][j], n_gen)
                   for j, d in enumerate(_DIST)} for kind in ("raw", "corrected")}
    section = {
        "concept": grouping.name, "concepts": list(grouping.concepts),
        "protected": grouping.protected, "groups": list(grouping.groups),
        "reference": settings.reference, "correction": correction, "n_real": n_real,
        "n_generated": n_gen, "n_unknown_real": int(by_source[0, g]),
        "n_unknown_generated": int(by_source[1, g]), "rows": rows, "distances": dist,
    }
    return section, tests, degenerate


def _presence_degenerate(grouping: Grouping, audit: np.ndarray) -> list[dict[str, Any]]:
    """Degenerate cases of group presence from images (2 sources, G + 1) by best group:
    a source whose images all fall in one group, and groups a source has no image of."""
    g, labels = grouping.n_groups, grouping.groups
    degenerate: list[dict[str, Any]] = []
    for s, src in enumerate(SOURCES):
        present = [labels[i] for i in range(g) if audit[s, i] > 0]
        total = int(audit[s, :g].sum())
        if total and len(present) == 1:
            degenerate.append({"kind": "single_group_present", "concept": grouping.name,
                               "group": present[0], "source": src, "count": total,
                               "message": f"all {total} {src} images with a known "
                                          f"{grouping.name} are in group {present[0]!r}; "
                                          f"shares of the other groups are 0 and disparities "
                                          f"between groups cannot be measured"})
        for i in range(g):
            if audit[s, i] == 0 and total:
                degenerate.append({"kind": "empty_group", "concept": grouping.name,
                                   "group": labels[i], "source": src, "count": 0,
                                   "message": f"no {src} image is in {grouping.name} group "
                                              f"{labels[i]!r}"})
    return degenerate


def _share_row(grouping: Grouping, shares: ShareEstimates, i: int, ref: float,
               settings: MeasureSettings, *, n_real: int, n_gen: int, test_id: str | None
               ) -> dict[str, Any]:
    """Group ``i``'s row of the section: its shares with intervals, the reference share
    ``ref``, the gap and the flags (under-represented, below the coverage floor, small)."""
    point, ci, by_source = shares.point, shares.ci, shares.by_source
    corr, gap = point["generated_corrected"][i], point["gap"][i]
    small = _small(int(by_source[0, i]), n_gen, ref, settings)
    return {
        "group": grouping.groups[i],
        "real": estimate(point["real"][i], ci["real"][i], n_real, int(by_source[0, i])),
        "generated_raw": estimate(point["generated_raw"][i], ci["generated_raw"][i], n_gen,
                                  int(by_source[1, i])),
        "generated_corrected": estimate(corr, ci["generated_corrected"][i], n_gen),
        "reference_share": finite_or_none(ref),
        "gap": estimate(gap, ci["gap"][i], n_gen),
        "under_represented": bool(np.isfinite(gap) and gap < -settings.under_margin
                                  and not small),
        "below_coverage_floor": bool(np.isfinite(corr) and corr < settings.coverage_floor
                                     and np.isfinite(ref) and ref >= settings.coverage_floor),
        "small": small,
        "test_id": test_id,
    }


class _Decoded(NamedTuple):
    """Decoded groups of the audited images, for the share tests: per source (G,), and
    with ``cluster_by`` per cluster (K, 2 sources, G)."""

    by_source: dict[str, np.ndarray]
    per_cluster: np.ndarray | None


def _decoded_counts(grouping: Grouping, source: np.ndarray, clusters: np.ndarray | None
                    ) -> _Decoded:
    """The :class:`_Decoded` counts of a grouping (images decoded as unknown left out)."""
    g = grouping.n_groups
    decoded = np.zeros((2, g), dtype=np.int64)
    for s in range(2):
        d = grouping.decoded[(source == s) & (grouping.decoded < g)]
        decoded[s] = np.bincount(d, minlength=g)
    per_cluster = None if clusters is None else cluster_cells(
        clusters, np.asarray(source, dtype=np.int64) * (g + 1) + grouping.decoded,
        2 * (g + 1)).reshape(-1, 2, g + 1)[:, :, :g]
    return _Decoded(by_source={"real": decoded[0], "generated": decoded[1]},
                    per_cluster=per_cluster)


def _share_tests(grouping: Grouping, decoded: _Decoded, settings: MeasureSettings
                 ) -> list[dict[str, Any]]:
    """One test record per group (:func:`_share_test`). The two groups of a binary concept
    share one test: the second record points at the first and stays out of the
    multiple-testing family."""
    tests = []
    for i, label in enumerate(grouping.groups):
        tests.append(_share_test(f"T-REP-{grouping.name}-{label}", grouping, i,
                                 decoded.by_source, settings, decoded.per_cluster))
        if grouping.n_groups == 2 and i == 1:
            tests[-1].update(duplicate_of=tests[-2]["id"], p_value=tests[-2]["p_value"])
    return tests


def _share_intervals(point: dict[str, np.ndarray], ci: dict[str, np.ndarray],
                     counts: np.ndarray, *, plain_real: bool, versus_real: bool,
                     per_cluster: np.ndarray | None,
                     confidence: float) -> dict[str, np.ndarray]:
    """The share intervals of a section: Wilson for shares that are counts k of n (the raw
    generated shares, and the real ones when no real image is corrected), on effective
    counts under cluster_by; the bootstrap's elsewhere, except that a corrected share or
    gap whose bootstrap interval has zero width (0 or every image of a group in every
    replicate) takes the Wilson interval of its decoded count (the correction adds no
    certainty), and a gap then the MOVER difference of its two shares' intervals.

    ``point``, ``ci``: the columns of :func:`representation_columns` and their bootstrap
    intervals (not changed: the result is a new dict); ``counts`` (2 sources, G): images
    per group on the share basis; ``per_cluster`` (K, 4 parts, G + 1) the same per cluster
    (parts: labelled and unlabelled per source); ``versus_real``: gaps are taken against
    the real share (else against a constant).
    """
    ci = {name: np.array(block, dtype=float) for name, block in ci.items()}
    wilson = wilson_interval(*_basis_counts(counts, per_cluster), confidence=confidence)
    if plain_real:
        ci["real"] = wilson[0]                                  # (G, 2)
    ci["generated_raw"] = wilson[1]
    corr = ci["generated_corrected"]
    flat = zero_width(corr)
    corr[flat] = np.stack([np.minimum(corr[flat, 0], wilson[1][flat, 0]),
                           np.maximum(corr[flat, 1], wilson[1][flat, 1])], axis=-1)
    gap = ci["gap"]
    flat = zero_width(gap) & np.isfinite(point["gap"])
    if flat.any():
        ref = point["generated_corrected"] - point["gap"]
        ref_ci = ci["real"] if versus_real else np.repeat(ref[:, None], 2, axis=1)
        gap[flat] = mover_difference(point["generated_corrected"], corr, ref, ref_ci)[flat]
    return ci


def _basis_counts(counts: np.ndarray, per_cluster: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Successes k and images n (2 sources, G) of each share on the share basis, from
    ``counts`` (2, G); under cluster_by (``per_cluster`` (K, 4 parts, G + 1)) Kish's
    effective counts."""
    g = counts.shape[1]
    k, n = counts.astype(float), np.repeat(counts.sum(axis=1, keepdims=True), g,
                                           axis=1).astype(float)
    if per_cluster is not None:
        basis = per_cluster[:, 0::2] + per_cluster[:, 1::2]      # (K, 2, G + 1)
        for s, i in np.ndindex(counts.shape):
            if n[s, i] > 0:
                eff = effective_counts(basis[:, s, i], basis[:, s, :g].sum(axis=1))
                k[s, i], n[s, i] = eff.successes, eff.images
    return k, n


def _small(real_k: int, n_gen: int, ref: float, settings: MeasureSettings) -> bool:
    """Too few images to judge a group's share (numbers, but no finding): under
    ``min_group_n`` real images of it (reference real), or under ``min_group_n``
    generated images expected at the reference share. The expected count, not the
    observed one: a generator that all but drops a group must still be reported."""
    if settings.reference == "real" and real_k < settings.min_group_n:
        return True
    return not (np.isfinite(ref) and n_gen * ref >= settings.min_group_n)


def _share_test(test_id: str, grouping: Grouping, i: int, decoded: dict[str, np.ndarray],
                settings: MeasureSettings, per_cluster: np.ndarray | None = None
                ) -> dict[str, Any]:
    """Test of group i's generated share against the reference, on decoded labels.

    Reference real: two-proportion test of decoded shares, generated vs real (if the
    decoder errs alike on both, equal true shares give equal expected decoded
    shares). Reference uniform: exact binomial test against the decoded share that a
    uniform truth would give, ``(A^T u)_i``. With ``per_cluster`` ((K, 2 sources, G)
    decoded counts, ``cluster_by``): the cluster-robust z test instead.
    """
    real, gen = decoded["real"], decoded["generated"]
    k1, n1 = int(gen[i]), int(gen.sum())
    if per_cluster is not None:
        y = per_cluster[:, :, i]
        m = per_cluster.sum(axis=2)
    if settings.reference == "real":
        k2, n2 = int(real[i]), int(real.sum())
        res = (two_proportion_test(k1, n1, k2, n2) if per_cluster is None else
               clustered_proportion_test(y[:, 1], m[:, 1], y[:, 0], m[:, 0]))
        counts = {"k1": k1, "n1": n1, "k2": k2, "n2": n2, "expected": None}
        if per_cluster is not None:
            counts["n1_effective"] = effective_counts(y[:, 1], m[:, 1]).images
            counts["n2_effective"] = effective_counts(y[:, 0], m[:, 0]).images
        versus = "real"
    else:
        g = grouping.n_groups
        if grouping.confusions is not None:
            a = kron_batch([row_normalise(c)[None] for c in grouping.confusions])[0]
            expected = float((a.T @ np.full(g, 1.0 / g))[i])
        else:
            expected = 1.0 / g
        res = (binomial_test(k1, n1, expected) if per_cluster is None else
               clustered_proportion_test(y[:, 1], m[:, 1], p0=expected))
        counts = {"k1": k1, "n1": n1, "k2": None, "n2": None, "expected": expected}
        if per_cluster is not None:
            counts["n1_effective"] = effective_counts(y[:, 1], m[:, 1]).images
        versus = "uniform"
    return {"id": test_id, "kind": "representation", "method": res.method,
            "concept": grouping.name, "group": grouping.groups[i], "versus": versus,
            "source": "generated", "metric": "share", "counts": counts,
            "statistic": res.statistic, "p_value": res.p_value, "p_holm": None, "p_bh": None}


def _correction_record(grouping: Grouping, degenerate: list[dict[str, Any]], *, basis: str,
                       correct: bool, unlabelled: np.ndarray, unknown_below: float
                       ) -> dict[str, Any]:
    """The section's ``correction``: whether A was applied, how, and on what basis the
    real and generated shares were counted (``unlabelled`` = (2,) images without a
    true label per source, with a known decoded group)."""
    n = None if grouping.confusions is None else int(sum(c.sum() for c in grouping.confusions))
    same = {"decoded": "both real and generated shares count decoded groups (true labels are "
                       "set aside so that both carry the same decoder error; equal true shares "
                       "then give equal expected shares, but gaps shrink towards 0)",
            "true": "every audited image has a true label, and shares count them"}
    if grouping.confusions is None:
        degenerate.append({"kind": "no_confusion", "concept": grouping.name, "group": None,
                           "source": None, "count": None,
                           "message": f"validity.json has no confusion matrix for "
                                      f"{grouping.name}; shares are not corrected"})
        return {"applied": False, "method": "none", "basis": basis, "confusion_n": None,
                "note": f"no held-out confusion matrix: {same[basis]}"}
    if not correct:
        return {"applied": False, "method": "none", "basis": basis, "confusion_n": n,
                "note": f"no correction: unknown_below = {unknown_below:g} leaves the images "
                        f"the decoder is unsure of out of the shares, while the held-out "
                        f"confusion matrix counts every held-out image, so it does not "
                        f"describe the images left; {same[basis]}, the unsure images left out "
                        f"of both"}
    names = (grouping.name,) if grouping.joint else grouping.concepts
    for name, conf in zip(names, grouping.confusions, strict=True):
        empty = np.flatnonzero(conf.sum(axis=1) == 0)
        a = row_normalise(conf)
        if len(empty) or abs(np.linalg.det(a)) < 1e-9:
            problem = "missing rows for some groups" if len(empty) else "singular"
            degenerate.append({"kind": "confusion_degenerate", "concept": name, "group": None,
                               "source": None, "count": int(conf.sum()),
                               "message": f"the held-out confusion matrix of {name} is "
                                          f"{problem}; the correction is a least-squares guess"})
    basis_words = (f"images with a true label count by it; the decoded groups of the others "
                   f"({int(unlabelled[0])} real, {int(unlabelled[1])} generated) are corrected "
                   f"in every bootstrap replicate, so real and generated shares are on the "
                   f"same basis")
    if grouping.joint:
        return {"applied": True, "method": "joint_simplex_lstsq", "basis": basis,
                "confusion_n": n,
                "note": f"{basis_words}. A is the joint confusion measured on {n} held-out "
                        f"images (every crossed concept labelled), so errors of one decoder "
                        f"that depend on another concept's group are corrected too"}
    if grouping.is_intersection:
        return {"applied": True, "method": "kronecker_simplex_lstsq", "basis": basis,
                "confusion_n": n,
                "note": f"{basis_words}. A is the Kronecker product of per-concept "
                        f"confusions (assumes independent errors): {grouping.fallback}"}
    method = "closed_form" if grouping.n_groups == 2 else "simplex_lstsq"
    return {"applied": True, "method": method, "basis": basis, "confusion_n": n,
            "note": f"{basis_words}. The correction assumes the decoder errs on audited "
                    f"images as on held-out real ones"}
