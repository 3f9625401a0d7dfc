"""Statistics of the measure stage: decoder-error correction, tests, multiple comparisons.

Pure functions on numbers and arrays; no files, no pandas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["row_normalise", "closed_form_two_groups", "simplex_lstsq", "simplex_lstsq_batch",
           "TestResult", "two_proportion_test", "clustered_proportion_test", "binomial_test",
           "adjust_pvalues", "distances"]


def row_normalise(counts: np.ndarray) -> np.ndarray:
    """Confusion counts (..., K, K) -> row-stochastic A; an empty row becomes the identity row."""
    counts = np.asarray(counts, dtype=float)
    sums = counts.sum(axis=-1, keepdims=True)
    k = counts.shape[-1]
    eye = np.broadcast_to(np.eye(k), counts.shape)
    return np.where(sums > 0, counts / np.where(sums > 0, sums, 1.0), eye)


def closed_form_two_groups(p_hat0: float, a0: float, a1: float) -> float:
    """Corrected share of group 0 for two groups (CLEAM): (p_hat0 - (1 - a1)) / (a0 + a1 - 1),
    clipped to [0, 1].

    ``a0``, ``a1`` are the per-group accuracies (diagonal of A). Undefined (NaN) when
    ``a0 + a1 == 1`` (a decoder no better than chance carries no information).
    """
    den = a0 + a1 - 1.0
    if abs(den) < 1e-12:
        return math.nan
    return float(min(max((p_hat0 - (1.0 - a1)) / den, 0.0), 1.0))


def _slsqp(m: np.ndarray, b: np.ndarray, start: np.ndarray) -> np.ndarray:
    from scipy.optimize import minimize

    k = m.shape[1]
    res = minimize(lambda p: float(np.sum((m @ p - b) ** 2)), start,
                   jac=lambda p: 2.0 * m.T @ (m @ p - b), method="SLSQP",
                   bounds=[(0.0, 1.0)] * k,
                   constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0,
                                 "jac": lambda p: np.ones(k)}],
                   options={"ftol": 1e-15, "maxiter": 500})
    p = np.clip(res.x, 0.0, None)
    return p / p.sum()


def simplex_lstsq(a: np.ndarray, p_hat: np.ndarray) -> np.ndarray:
    """Solve ``A^T p = p_hat`` for ``p`` on the probability simplex (least squares).

    Parameters
    ----------
    a
        K x K row-stochastic confusion matrix, rows true group, columns decoded group:
        ``a[i, j] = P(decoded j | true i)``.
    p_hat
        K decoded shares (sum 1).

    Returns
    -------
    The K corrected shares: argmin ``||A^T p - p_hat||^2`` subject to ``p >= 0``,
    ``sum(p) == 1``. When the unconstrained solution is already on the simplex it is
    returned (exact); for two groups the clipped closed form (exact); otherwise SLSQP.
    """
    a = np.asarray(a, dtype=float)
    p_hat = np.asarray(p_hat, dtype=float)
    k = len(p_hat)
    if k == 2:
        p0 = closed_form_two_groups(p_hat[0], a[0, 0], a[1, 1])
        if not math.isnan(p0):
            return np.array([p0, 1.0 - p0])
    m = a.T
    try:
        p = np.linalg.solve(m, p_hat)
    except np.linalg.LinAlgError:
        p = np.linalg.lstsq(m, p_hat, rcond=None)[0]
    if np.all(p >= -1e-12) and abs(p.sum() - 1.0) < 1e-9:
        p = np.clip(p, 0.0, None)
        return p / p.sum()
    start = np.clip(np.nan_to_num(p, nan=1.0 / k), 1e-6, None)
    return _slsqp(m, p_hat, start / start.sum())


def simplex_lstsq_batch(a: np.ndarray, p_hat: np.ndarray) -> np.ndarray:
    """:func:`simplex_lstsq` over a batch: ``a`` (B, K, K), ``p_hat`` (B, K) -> (B, K).

    Vectorised: one batched solve, and the exact solver only for the replicates whose
    unconstrained solution leaves the simplex. Rows with a NaN ``p_hat`` give NaN.
    """
    a = np.asarray(a, dtype=float)
    p_hat = np.asarray(p_hat, dtype=float)
    b, k = p_hat.shape
    out = np.full((b, k), np.nan)
    ok = np.all(np.isfinite(p_hat), axis=1)
    if not ok.any():
        return out
    if k == 2:
        a0, a1 = a[ok, 0, 0], a[ok, 1, 1]
        den = a0 + a1 - 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            p0 = np.clip((p_hat[ok, 0] - (1.0 - a1)) / den, 0.0, 1.0)
        p0[np.abs(den) < 1e-12] = np.nan
        out[ok, 0], out[ok, 1] = p0, 1.0 - p0
        return out
    mt = np.swapaxes(a[ok], 1, 2)
    try:
        p = np.linalg.solve(mt, p_hat[ok][..., None])[..., 0]
    except np.linalg.LinAlgError:
        p = np.stack([np.linalg.lstsq(m, v, rcond=None)[0] for m, v in zip(mt, p_hat[ok],
                                                                           strict=True)])
    inside = np.all(p >= -1e-12, axis=1) & (np.abs(p.sum(axis=1) - 1.0) < 1e-9)
    p[inside] = np.clip(p[inside], 0.0, None)
    p[inside] /= p[inside].sum(axis=1, keepdims=True)
    for i in np.flatnonzero(~inside):
        p[i] = simplex_lstsq(mt[i].T, p_hat[ok][i])
    out[ok] = p
    return out


@dataclass(frozen=True)
class TestResult:
    """One hypothesis test: the method used, its statistic (None for exact tests) and p."""

    method: Literal["two_proportion_z", "fisher_exact", "binomial_exact",
                    "two_proportion_z_clustered"]
    statistic: float | None
    p_value: float | None


def two_proportion_test(k1: int, n1: int, k2: int, n2: int, *, min_expected: float = 5.0
                        ) -> TestResult:
    """Two-sided test of equal proportions k1/n1 and k2/n2.

    The pooled two-proportion z test, or Fisher's exact test when an expected cell
    count of the 2 x 2 table is under ``min_expected``. p is None when a side is empty.
    """
    if n1 <= 0 or n2 <= 0:
        return TestResult("two_proportion_z", None, None)
    pooled = (k1 + k2) / (n1 + n2)
    expected = [n1 * pooled, n1 * (1 - pooled), n2 * pooled, n2 * (1 - pooled)]
    if min(expected) < min_expected:
        from scipy.stats import fisher_exact

        res = fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided")
        return TestResult("fisher_exact", None, float(min(res.pvalue, 1.0)))
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (k1 / n1 - k2 / n2) / se
    p = math.erfc(abs(z) / math.sqrt(2.0))
    return TestResult("two_proportion_z", float(z), float(p))


def clustered_proportion_test(y1: np.ndarray, m1: np.ndarray, y2: np.ndarray | None = None,
                              m2: np.ndarray | None = None, *, p0: float | None = None
                              ) -> TestResult:
    """Two-sided z test of proportions of clustered images, with a cluster-robust variance.

    ``y1``, ``m1`` (K,): per cluster, its successes and its images on side 1 (likewise
    ``y2``, ``m2`` for side 2, aligned on the same K clusters, zero where a cluster has no
    image on that side); or one side against ``p0``. The proportions are ratio estimates
    p = sum(y) / sum(m); the variance of their difference is the cluster-robust
    (linearisation) one, K / (K - 1) * sum_c d_c ** 2 with
    d_c = (y1_c - p1 m1_c) / M1 - (y2_c - p2 m2_c) / M2, so images of one cluster count
    once and clusters on both sides are allowed for. With one image per cluster this is
    close to the unpooled two-proportion z test. p is None when a side is empty or K < 2.
    """
    y1, m1 = np.asarray(y1, dtype=float), np.asarray(m1, dtype=float)
    n1 = m1.sum()
    two = y2 is not None and m2 is not None
    y2a = np.asarray(y2, dtype=float) if two else np.zeros_like(y1)
    m2a = np.asarray(m2, dtype=float) if two else np.zeros_like(m1)
    n2 = m2a.sum()
    if n1 <= 0 or (two and n2 <= 0) or (not two and p0 is None):
        return TestResult("two_proportion_z_clustered", None, None)
    p1 = y1.sum() / n1
    d = (y1 - p1 * m1) / n1
    if two:
        p2 = y2a.sum() / n2
        d = d - (y2a - p2 * m2a) / n2
    else:
        p2 = float(p0)
    k = int(np.sum((m1 > 0) | (m2a > 0)))
    if k < 2:
        return TestResult("two_proportion_z_clustered", None, None)
    var = k / (k - 1) * float(np.sum(d ** 2))
    diff = p1 - p2
    if var <= 0:
        return TestResult("two_proportion_z_clustered", None, 1.0 if diff == 0 else 0.0)
    z = diff / math.sqrt(var)
    return TestResult("two_proportion_z_clustered", float(z),
                      float(math.erfc(abs(z) / math.sqrt(2.0))))


def binomial_test(k: int, n: int, p0: float) -> TestResult:
    """Exact two-sided binomial test of k successes in n against probability p0."""
    if n <= 0:
        return TestResult("binomial_exact", None, None)
    from scipy.stats import binomtest

    return TestResult("binomial_exact", None, float(binomtest(k, n, p0).pvalue))


def adjust_pvalues(p_values: list[float | None]) -> tuple[list[float | None],
                                                          list[float | None]]:
    """Holm (family-wise) and Benjamini-Hochberg (false discovery rate) adjusted p-values.

    ``None`` entries (tests that could not be run) stay None and do not count in the
    family. Matches ``statsmodels.stats.multitest.multipletests`` with methods
    ``"holm"`` and ``"fdr_bh"``.
    """
    idx = [i for i, p in enumerate(p_values) if p is not None and math.isfinite(p)]
    holm: list[float | None] = [None] * len(p_values)
    bh: list[float | None] = [None] * len(p_values)
    m = len(idx)
    if m == 0:
        return holm, bh
    p = np.array([p_values[i] for i in idx], dtype=float)
    order = np.argsort(p, kind="mergesort")
    ranked = p[order]
    h = np.minimum(np.maximum.accumulate(ranked * (m - np.arange(m))), 1.0)
    f = np.minimum(np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1], 1.0)
    holm_sorted, bh_sorted = np.empty(m), np.empty(m)
    holm_sorted[order], bh_sorted[order] = h, f
    for j, i in enumerate(idx):
        holm[i], bh[i] = float(holm_sorted[j]), float(bh_sorted[j])
    return holm, bh


def distances(p: np.ndarray, q: np.ndarray, *, eps: float = 1e-6) -> dict[str, np.ndarray]:
    """L1, L2 and KL(p || q) between share vectors along the last axis.

    ``p`` (..., K) generated shares, ``q`` (K,) or (..., K) reference shares. KL clips
    both to ``eps`` so that a missing group gives a large finite value.
    """
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    diff = p - q
    pc, qc = np.clip(p, eps, None), np.clip(q, eps, None)
    return {"l1": np.abs(diff).sum(axis=-1),
            "l2": np.sqrt((diff ** 2).sum(axis=-1)),
            "kl": (pc * np.log(pc / qc)).sum(axis=-1)}
