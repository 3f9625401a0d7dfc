"""Representation: who appears among real and generated images.

Shares of each group among real images (true labels where known, else decoded) and
generated images (decoded), the generated shares corrected for decoder error with the
held-out confusion matrix (``A^T p = p_hat`` on the simplex), distances to a reference
distribution, under-represented groups and missing coverage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from audit.measure.bootstrap import BootstrapSpec, Statistic, cell_interval, estimate
from audit.measure.groups import SOURCES, CellLayout, Grouping
from audit.measure.stats import (
    binomial_test,
    distances,
    row_normalise,
    simplex_lstsq_batch,
    two_proportion_test,
)

if TYPE_CHECKING:
    from audit.config import MeasureSettings

__all__ = ["representation_statistic", "measure_representation", "corrected_shares",
           "kron_batch"]

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
        plain concept); A is the Kronecker product of their row-normalised forms,
        which assumes the decoders err independently.

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


def representation_statistic(layout: CellLayout, *, reference: str, correct: bool) -> Statistic:
    """The statistic ``cells (B, C) -> (B, 4G + 6)`` of one grouping.

    Columns: real shares (G), raw generated shares (G), corrected generated shares (G),
    gap = corrected - reference (G), distances raw (L1, L2, KL), distances corrected.
    """
    g = layout.n_groups

    def stat(cells: np.ndarray) -> np.ndarray:
        audit = layout.audit(cells).sum(axis=3)          # (B, 2, G + 1)
        real = _shares(audit[:, 0, :g].astype(float))
        raw = _shares(audit[:, 1, :g].astype(float))
        corr = corrected_shares(raw, layout.confusions(cells)) if correct else raw
        ref = real if reference == "real" else np.full_like(real, 1.0 / g)
        d_raw, d_corr = distances(raw, ref), distances(corr, ref)
        return np.concatenate([real, raw, corr, corr - ref,
                               np.stack([d_raw[k] for k in _DIST], axis=1),
                               np.stack([d_corr[k] for k in _DIST], axis=1)], axis=1)

    return stat


def measure_representation(grouping: Grouping, layout: CellLayout, cells: np.ndarray,
                           draws: np.ndarray, decoded_counts: np.ndarray, *, spec: BootstrapSpec,
                           settings: MeasureSettings
                           ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Representation section of one grouping.

    Parameters
    ----------
    cells, draws
        The grouping's cell counts (C,) and their bootstrap replicates (B, C).
    decoded_counts
        (2, G) decoded (not true) labels counted per source (real, generated), for the
        share tests.

    Returns
    -------
    (section, tests, degenerate): the section as in results.schema.json
    (``$defs/representation``), test records without corrected p-values, and
    degenerate cases found.
    """
    g = grouping.n_groups
    labels = list(grouping.groups)
    correct = grouping.confusions is not None
    stat = representation_statistic(layout, reference=settings.reference, correct=correct)
    point, ci = cell_interval(stat, cells, draws, spec)
    audit = layout.audit(cells[None, :])[0].sum(axis=2)   # (2, G + 1)
    n_real, n_gen = int(audit[0, :g].sum()), int(audit[1, :g].sum())
    degenerate: list[dict[str, Any]] = []
    for s, source in enumerate(SOURCES):
        present = [labels[i] for i in range(g) if audit[s, i] > 0]
        total = int(audit[s, :g].sum())
        if total and len(present) == 1:
            degenerate.append({"kind": "single_group_present", "concept": grouping.name,
                               "group": present[0], "source": source, "count": total,
                               "message": f"all {total} {source} images with a known "
                                          f"{grouping.name} are in group {present[0]!r}; "
                                          f"shares of the other groups are 0 and disparities "
                                          f"between groups cannot be measured"})
        for i in range(g):
            if audit[s, i] == 0 and total:
                degenerate.append({"kind": "empty_group", "concept": grouping.name,
                                   "group": labels[i], "source": source, "count": 0,
                                   "message": f"no {source} image is in {grouping.name} group "
                                              f"{labels[i]!r}"})
    correction = _correction_record(grouping, degenerate)
    sl = {name: slice(i * g, (i + 1) * g) for i, name in enumerate(("real", "raw", "corr", "gap"))}
    ref_share = point[sl["real"]] if settings.reference == "real" else np.full(g, 1.0 / g)
    rows, tests = [], []
    decoded = {"real": decoded_counts[0], "generated": decoded_counts[1]}
    for i, label in enumerate(labels):
        corr = point[sl["corr"]][i]
        ref = float(ref_share[i])
        gap = point[sl["gap"]][i]
        under = bool(np.isfinite(gap) and gap < -settings.under_margin)
        below = bool(np.isfinite(corr) and corr < settings.coverage_floor
                     and np.isfinite(ref) and ref >= settings.coverage_floor)
        test_id = None
        if grouping.protected and n_gen > 0:
            test_id = f"T-REP-{grouping.name}-{label}"
            tests.append(_share_test(test_id, grouping, i, decoded, settings))
        rows.append({
            "group": label,
            "real": estimate(point[sl["real"]][i], ci[sl["real"]][i], n_real, int(audit[0, i])),
            "generated_raw": estimate(point[sl["raw"]][i], ci[sl["raw"]][i], n_gen,
                                  int(audit[1, i])),
            "generated_corrected": estimate(corr, ci[sl["corr"]][i], n_gen),
            "reference_share": ref if np.isfinite(ref) else None,
            "gap": estimate(gap, ci[sl["gap"]][i], n_gen),
            "under_represented": under,
            "below_coverage_floor": below,
            "small": bool(audit[0, i] < settings.min_group_n),
            "test_id": test_id,
        })
    off = 4 * g
    dist = {kind: {d: estimate(point[off + j], ci[off + j], n_gen) for j, d in enumerate(_DIST)}
            for kind, off in (("raw", off), ("corrected", off + 3))}
    section = {
        "concept": grouping.name, "concepts": list(grouping.concepts),
        "protected": grouping.protected, "groups": labels, "reference": settings.reference,
        "correction": correction, "n_real": n_real, "n_generated": n_gen,
        "n_unknown_real": int(audit[0, g]), "n_unknown_generated": int(audit[1, g]),
        "rows": rows, "distances": dist,
    }
    return section, tests, degenerate


def _share_test(test_id: str, grouping: Grouping, i: int, decoded: dict[str, np.ndarray],
                settings: MeasureSettings) -> dict[str, Any]:
    """Test of group i's generated share against the reference, on decoded labels.

    Reference real: two-proportion test of decoded shares, generated vs real (if the
    decoder errs alike on both, equal true shares give equal expected decoded
    shares). Reference uniform: exact binomial test against the decoded share that a
    uniform truth would give, ``(A^T u)_i``.
    """
    real, gen = decoded["real"], decoded["generated"]
    k1, n1 = int(gen[i]), int(gen.sum())
    if settings.reference == "real":
        k2, n2 = int(real[i]), int(real.sum())
        res = two_proportion_test(k1, n1, k2, n2)
        counts = {"k1": k1, "n1": n1, "k2": k2, "n2": n2, "expected": None}
        versus = "real"
    else:
        g = grouping.n_groups
        if grouping.confusions is not None:
            a = kron_batch([row_normalise(c)[None] for c in grouping.confusions])[0]
            expected = float((a.T @ np.full(g, 1.0 / g))[i])
        else:
            expected = 1.0 / g
        res = binomial_test(k1, n1, expected)
        counts = {"k1": k1, "n1": n1, "k2": None, "n2": None, "expected": expected}
        versus = "uniform"
    return {"id": test_id, "kind": "representation", "method": res.method,
            "concept": grouping.name, "group": grouping.groups[i], "versus": versus,
            "source": "generated", "metric": "share", "counts": counts,
            "statistic": res.statistic, "p_value": res.p_value, "p_holm": None, "p_bh": None}


def _correction_record(grouping: Grouping, degenerate: list[dict[str, Any]]) -> dict[str, Any]:
    if grouping.confusions is None:
        degenerate.append({"kind": "no_confusion", "concept": grouping.name, "group": None,
                           "source": None, "count": None,
                           "message": f"validity.json has no confusion matrix for "
                                      f"{grouping.name}; generated shares are not corrected"})
        return {"applied": False, "method": "none", "confusion_n": None,
                "note": "no held-out confusion matrix: shares are as decoded"}
    for name, conf in zip(grouping.concepts, grouping.confusions, strict=True):
        empty = np.flatnonzero(conf.sum(axis=1) == 0)
        a = row_normalise(conf)
        if len(empty) or abs(np.linalg.det(a)) < 1e-9:
            problem = "missing rows for some groups" if len(empty) else "singular"
            degenerate.append({"kind": "confusion_degenerate", "concept": name, "group": None,
                               "source": None, "count": int(conf.sum()),
                               "message": f"the held-out confusion matrix of {name} is "
                                          f"{problem}; the correction is a least-squares guess"})
    n = int(sum(c.sum() for c in grouping.confusions))
    if grouping.is_intersection:
        return {"applied": True, "method": "kronecker_simplex_lstsq", "confusion_n": n,
                "note": "A is the Kronecker product of the concepts' held-out confusion "
                        "matrices: it assumes the decoders err independently across "
                        "concepts"}
    method = "closed_form" if grouping.n_groups == 2 else "simplex_lstsq"
    return {"applied": True, "method": method, "confusion_n": n,
            "note": "corrected with the held-out confusion matrix, assuming the decoder errs on "
                    "generated images as on real ones"}
