"""Statistics of the measure stage: decoder-error correction, tests, multiple comparisons.

Pure functions on numbers and arrays; no files, no pandas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

__all__ = ["row_normalise", "closed_form_two_groups", "simplex_lstsq", "simplex_lstsq_batch",
           "TestResult", "two_proportion_test", "clustered_proportion_test", "design_effect",
           "binomial_test", "effective_counts", "EffectiveCounts",
           "adjust_pvalues", "distances", "finite_or_none"]


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float, or None where it is missing, NaN or infinite (JSON has no NaN)."""
    return None if x is None or not np.isfinite(x) else float(x)


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
                    "two_proportion_z_clustered", "fisher_exact_clustered",
                    "binomial_exact_clustered"]
    statistic: float | None
    p_value: float | None


def two_proportion_test(k1: float, n1: float, k2: float, n2: float, *,
                        min_expected: float = 5.0) -> TestResult:
    """Two-sided test of equal proportions k1/n1 and k2/n2.

    The pooled two-proportion z test, or Fisher's exact test when an expected cell
    count of the 2 x 2 table is under ``min_expected``. p is None when a side is empty.
    Counts may be effective (fractional) ones; Fisher's test rounds them.
    """
    if n1 <= 0 or n2 <= 0:
        return TestResult("two_proportion_z", None, None)
    pooled = (k1 + k2) / (n1 + n2)
    expected = [n1 * pooled, n1 * (1 - pooled), n2 * pooled, n2 * (1 - pooled)]
    if min(expected) < min_expected:
        from scipy.stats import fisher_exact

        a, b = round(k1), round(k2)
        res = fisher_exact([[a, max(round(n1) - a, 0)], [b, max(round(n2) - b, 0)]],
                           alternative="two-sided")
        return TestResult("fisher_exact", None, float(min(res.pvalue, 1.0)))
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (k1 / n1 - k2 / n2) / se
    p = math.erfc(abs(z) / math.sqrt(2.0))
    return TestResult("two_proportion_z", float(z), float(p))


def design_effect(y: np.ndarray, m: np.ndarray) -> float:
    """Kish design effect (>= 1) of a proportion of clustered images.

    ``y``, ``m`` (K,): per cluster, its successes and its images. The variance of the
    ratio estimate p = sum(y) / sum(m) is the cluster-robust one,
    K / (K - 1) * sum_c (y_c - p m_c) ** 2 / n ** 2 (statsmodels' cluster-robust variance
    of an intercept-only regression), and the design effect is its ratio to the variance
    of n independent images, p (1 - p) / (n - 1): exactly 1 for one image per cluster.
    Never under 1 (clustering never strengthens the evidence); where the images do not
    vary (p is 0 or 1) or there is one cluster, the correlation within clusters cannot be
    measured and each cluster counts as one image (n / K).
    """
    y, m = np.asarray(y, dtype=float), np.asarray(m, dtype=float)
    keep = m > 0
    y, m = y[keep], m[keep]
    k, n = len(m), float(m.sum())
    if k == 0:
        return 1.0
    p = float(y.sum()) / n
    if k < 2 or n < 2 or p <= 0.0 or p >= 1.0:
        return n / k
    var = k / (k - 1) * float(np.sum((y - p * m) ** 2)) / n ** 2
    return max(1.0, var / (p * (1.0 - p) / (n - 1)))


class EffectiveCounts(NamedTuple):
    """Kish's effective counts of a clustered proportion (fractional)."""

    successes: float
    images: float


def effective_counts(y: np.ndarray, m: np.ndarray) -> EffectiveCounts:
    """Kish's effective successes and images of a clustered proportion: ``sum(y) / deff``
    and ``sum(m) / deff`` with deff = :func:`design_effect` (``y``, ``m`` (K,) per cluster)."""
    y, m = np.asarray(y, dtype=float), np.asarray(m, dtype=float)
    d = design_effect(y, m)
    return EffectiveCounts(successes=float(y.sum()) / d, images=float(m.sum()) / d)


def clustered_proportion_test(y1: np.ndarray, m1: np.ndarray, y2: np.ndarray | None = None,
                              m2: np.ndarray | None = None, *, p0: float | None = None
                              ) -> TestResult:
    """The test of :func:`two_proportion_test` (or, against ``p0``, :func:`binomial_test`)
    for clustered images, on counts deflated by each side's :func:`design_effect`.

    ``y1``, ``m1`` (K,): per cluster, its successes and its images on side 1 (likewise
    ``y2``, ``m2`` for side 2). Each side's successes and images are divided by its design
    effect (Kish's effective sample size), then tested as independent images: the same
    test and p-value as without clusters when every image is its own cluster, and for
    images copied c times about the p-value of the originals. Clusters on both sides are
    treated as independent, which is conservative when their images resemble each other.
    The method gets the suffix ``_clustered``.
    """
    one = effective_counts(y1, m1)
    if y2 is not None and m2 is not None:
        two = effective_counts(y2, m2)
        res = two_proportion_test(one.successes, one.images, two.successes, two.images)
    elif p0 is not None:
        res = binomial_test(one.successes, one.images, p0)
    else:
        raise ValueError("clustered_proportion_test needs a second side or p0")
    return TestResult(f"{res.method}_clustered", res.statistic, res.p_value)  # type: ignore


def binomial_test(k: float, n: float, p0: float) -> TestResult:
    """Exact two-sided binomial test of k successes in n against probability p0 (effective,
    fractional counts are rounded)."""
    k, n = round(k), round(n)
    if n <= 0:
        return TestResult("binomial_exact", None, None)
    from scipy.stats import binomtest

    return TestResult("binomial_exact", None, float(binomtest(min(k, n), n, p0).pvalue))


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
