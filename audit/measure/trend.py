"""Trends over a series of audits: a slope over checkpoints or settings, and change points.

A series is a handful of estimates (a group's corrected share, a discriminator's impact
ratio), one per checkpoint of a training run or per sampling setting, each with the
standard error its own audit's bootstrap gives. Pure numpy and scipy; no files, no torch.

Why a weighted least-squares slope with the points' own standard errors
-------------------------------------------------------------------------
Monitoring series are short (3 to 6 checkpoints). A permutation test of the index cannot
get below p = 1 / n! (1/24 with 4 points, 1/6 with 3), so it could never pass a Holm
correction; and a regression that estimates its noise from the residuals has n - 2
degrees of freedom (two, with four points) and almost no power. Each point already comes
with a standard error from its audit's bootstrap, so the slope's variance is known rather
than estimated: the weighted least-squares slope ``b = sum(w c y) / sum(w c^2)`` (weights
``w = 1 / se^2``, ``c`` the index centred on its weighted mean) has variance
``1 / sum(w c^2)``, and ``z = b / se(b)`` is standard normal under the null. This is the
fixed-effect meta-regression of the points on the index (statsmodels' WLS with the scale
fixed at 1), and it works with as few as 2 points with standard errors.

The null hypothesis is that the least-squares line through the *true* values of these
checkpoints is flat: the checkpoints are the population (the ones a team ships), not a
sample of possible training runs. True values that wiggle around a flat line do not make
the test reject; to generalise to "training runs like this one drift", a random-effects
model would be needed, which four points cannot estimate. The heterogeneity p-value
(Cochran's Q of the residuals around the line, n - 2 degrees of freedom) says when a line
describes the points poorly (a jump, a turn): read the change points then.

Assumptions, and when they fail
-------------------------------
- Each estimate is roughly normal with its standard error (bootstrap over a few thousand
  images: yes, except for a share pinned at 0 or 1, or a ratio pinned at 1; a zero
  standard error is raised to the series' largest positive one, see :func:`trend_test`).
- The points are independent. Series from one tracking run are not: every checkpoint is
  compared with the same real images, decoded with decoders trained on the same paired
  images, and often sampled from the same latent seeds. An error *shared equally by all
  points* (the real reference, a fixed decoder's confusion matrix) shifts every point by
  the same amount and cancels from a slope and from a difference, so treating the points
  as independent overstates the slope's variance: the test is then conservative (with a
  shared correlation rho and equal standard errors, by the factor 1 - rho on the variance).
  It becomes anti-conservative when the errors correlate more between neighbouring points
  than between distant ones (the same latents through two nearly equal generators of
  adjacent checkpoints), because the slope weighs neighbours with the same sign; the
  validation benchmark (benchmarks/trend.py) measures both cases.
- The trend is summarised as linear in the index. A monotone but curved trend still has a
  non-zero linear component; a trend that rises then falls may not.

Many curves (one per group and measure) are corrected together with Holm's method:
:func:`adjust_trends` (which reuses :func:`audit.measure.stats.adjust_pvalues`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from audit.measure.stats import adjust_pvalues

__all__ = ["TrendTest", "ChangePoint", "trend_test", "change_points", "adjust_trends",
           "se_from_interval"]

_Z975 = 1.959963984540054


@dataclass(frozen=True)
class TrendTest:
    """The trend of one series: the slope per unit of index, its 95% interval, the two-sided
    p-value of no trend, the points used and the method.

    ``method``: ``wls_z`` (weighted least squares with the points' standard errors known,
    normal reference, closed form), ``wls_parametric_bootstrap`` (the same slope, p-value
    from a parametric bootstrap of the null), ``ols_t`` (no standard errors given: ordinary
    least squares, noise estimated from the residuals, t with n - 2 degrees of freedom) or
    ``not_enough_points`` (slope, interval and p NaN). ``slope_se`` is the slope's standard
    error; ``heterogeneity_p`` the p-value of Cochran's Q of the residuals around the line
    (small: the points scatter more than their standard errors allow, or bend), NaN without
    standard errors or with fewer than 3 points.
    """

    slope: float
    slope_ci: tuple[float, float]
    p_value: float
    n_points: int
    method: str
    slope_se: float = math.nan
    heterogeneity_p: float = math.nan


@dataclass(frozen=True)
class ChangePoint:
    """One point against the baseline point: ``difference`` (point minus baseline), its 95%
    interval and two-sided p-value (normal, the two standard errors combined as independent),
    ``index`` the point's position in the series."""

    index: int
    difference: float
    ci: tuple[float, float]
    p_value: float


def _as_series(values: Sequence[float], se: Sequence[float] | None,
               index: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray | None,
                                                         np.ndarray]:
    """The finite points of a series: (y, se or None, x), each (n,)."""
    y = np.asarray(values, dtype=float).reshape(-1)
    x = np.arange(len(y), dtype=float) if index is None else np.asarray(index, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"trend: {len(y)} values but {x.size} index positions")
    keep = np.isfinite(y) & np.isfinite(x)
    if se is None:
        return y[keep], None, x[keep]
    s = np.asarray(se, dtype=float).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"trend: {len(y)} values but {s.size} standard errors")
    if np.any(s[np.isfinite(s)] < 0):
        raise ValueError("trend: a standard error is negative")
    keep &= np.isfinite(s)
    return y[keep], _floor_zero_se(s[keep]), x[keep]


def _floor_zero_se(s: np.ndarray) -> np.ndarray:
    """A zero standard error raised to the largest positive one of the series; all zero
    stays all zero (caller decides). A bootstrap that never varied (a share of 0, an impact
    ratio pinned at 1 where the group became the highest) says nothing about precision:
    such a point should count no more than the least precise point, not dominate the fit."""
    positive = s[s > 0]
    return np.where(s > 0, s, positive.max()) if positive.size else s


def _not_enough(n: int) -> TrendTest:
    return TrendTest(math.nan, (math.nan, math.nan), math.nan, n, "not_enough_points")


def _wls(y: np.ndarray, s: np.ndarray, x: np.ndarray) -> tuple[float, float, float, float]:
    """Weighted least squares of y on x with weights 1 / s^2:
    (slope, its standard error with s known, weighted mean of y, Cochran's Q)."""
    w = 1.0 / s ** 2
    c = x - np.sum(w * x) / np.sum(w)
    sxx = float(np.sum(w * c ** 2))
    y_bar = float(np.sum(w * y) / np.sum(w))
    slope = float(np.sum(w * c * y) / sxx)
    q = float(np.sum(w * (y - y_bar - slope * c) ** 2))
    return slope, 1.0 / math.sqrt(sxx), y_bar, q


def _bootstrap_p(z: float, s: np.ndarray, x: np.ndarray, *, n_boot: int, seed: int) -> float:
    """Parametric bootstrap p of |z| under no trend: series drawn as N(mean, s^2) with
    independent points; ``(1 + #{|z*| >= |z|}) / (1 + n_boot)``."""
    rng = np.random.default_rng(seed)
    w = 1.0 / s ** 2
    c = x - np.sum(w * x) / np.sum(w)
    draws = rng.standard_normal((n_boot, len(s))) * s
    z_star = (draws * (w * c)).sum(axis=1) * math.sqrt(1.0 / np.sum(w * c ** 2))
    return float((1 + np.count_nonzero(np.abs(z_star) >= abs(z) - 1e-12)) / (1 + n_boot))


def trend_test(values: Sequence[float], *, se: Sequence[float] | None = None,
               index: Sequence[float] | None = None, n_boot: int = 9999,
               seed: int = 0) -> TrendTest:
    """Is there a linear trend in a series of estimates over checkpoints or a setting?

    Parameters
    ----------
    values
        (n,) the estimates, one per checkpoint or setting (e.g. a group's corrected share
        as a fraction, or an impact ratio). Non-finite points are left out.
    se
        (n,) each estimate's standard error (from its audit's bootstrap), same units. A
        point with a NaN standard error is left out; a zero one (a bootstrap that never
        varied) is raised to the series' largest positive one. None, or all zero: the noise
        is estimated from the residuals (``ols_t``).
    index
        (n,) where each point lies: checkpoint number, epoch or truncation psi (default
        0, 1, ..., n - 1). The slope is per unit of index.
    n_boot
        Parametric-bootstrap replicates of the p-value (``wls_parametric_bootstrap``);
        0 gives the closed form (``wls_z``). The statistic is linear in the values, so
        both estimate the same p (the bootstrap's resolution is 1 / (n_boot + 1)).
    seed
        Seed of the bootstrap.

    Returns
    -------
    TrendTest
        Slope, its 95% interval (closed form), p of no trend (two-sided), points used, method.
        See the module docstring for the method's assumptions.
    """
    y, s, x = _as_series(values, se, index)
    n = len(y)
    if s is None or not np.any(s > 0):
        return _ols_t(y, x)
    if n < 2 or np.ptp(x) == 0:
        return _not_enough(n)
    slope, slope_se, _, q = _wls(y, s, x)
    z = slope / slope_se
    if n_boot > 0:
        p, method = _bootstrap_p(z, s, x, n_boot=int(n_boot), seed=seed), \
            "wls_parametric_bootstrap"
    else:
        p, method = math.erfc(abs(z) / math.sqrt(2.0)), "wls_z"
    from scipy.stats import chi2

    het = float(chi2.sf(q, n - 2)) if n > 2 else math.nan
    return TrendTest(slope, (slope - _Z975 * slope_se, slope + _Z975 * slope_se), float(p), n,
                     method, slope_se=slope_se, heterogeneity_p=het)


def _ols_t(y: np.ndarray, x: np.ndarray) -> TrendTest:
    """Ordinary least squares with the noise estimated from the residuals (t, n - 2 df)."""
    n = len(y)
    if n < 3 or np.ptp(x) == 0:
        return _not_enough(n)
    from scipy.stats import t as t_dist

    c = x - x.mean()
    sxx = float(np.sum(c ** 2))
    slope = float(np.sum(c * y) / sxx)
    resid = y - y.mean() - slope * c
    sigma2 = float(np.sum(resid ** 2)) / (n - 2)
    slope_se = math.sqrt(sigma2 / sxx)
    if slope_se == 0.0:
        p = 0.0 if slope != 0.0 else 1.0
    else:
        p = float(2.0 * t_dist.sf(abs(slope / slope_se), n - 2))
    half = float(t_dist.ppf(0.975, n - 2)) * slope_se
    return TrendTest(slope, (slope - half, slope + half), p, n, "ols_t", slope_se=slope_se)


def change_points(values: Sequence[float], se: Sequence[float], *,
                  baseline: int = 0) -> list[ChangePoint]:
    """Every point against the baseline point: difference, 95% interval and p-value.

    Parameters
    ----------
    values, se
        (n,) the estimates and their standard errors, as for :func:`trend_test`.
    baseline
        Position of the baseline point (default the first; negative counts from the end).

    Returns
    -------
    list of ChangePoint
        One per other point with a finite value and standard error, in series order.
        ``difference = values[i] - values[baseline]``, its standard error
        ``sqrt(se_i^2 + se_b^2)`` (independent points: conservative for errors the two
        share, such as the same real images), normal interval and two-sided p. A
        difference whose combined standard error is 0 gets p = 0 if it is non-zero, else 1.
        Correct across points (and curves) with :func:`audit.measure.stats.adjust_pvalues`.
    """
    y = np.asarray(values, dtype=float).reshape(-1)
    s = np.asarray(se, dtype=float).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"change_points: {len(y)} values but {s.size} standard errors")
    if not -len(y) <= baseline < len(y):
        raise ValueError(f"change_points: baseline {baseline} is outside the {len(y)} points")
    b = baseline % len(y)
    if not (math.isfinite(y[b]) and math.isfinite(s[b])):
        return []
    out = []
    for i in range(len(y)):
        if i == b or not (math.isfinite(y[i]) and math.isfinite(s[i])):
            continue
        diff = float(y[i] - y[b])
        sd = math.sqrt(float(s[i]) ** 2 + float(s[b]) ** 2)
        if sd > 0:
            p = math.erfc(abs(diff / sd) / math.sqrt(2.0))
        else:
            p = 0.0 if diff != 0 else 1.0
        out.append(ChangePoint(i, diff, (diff - _Z975 * sd, diff + _Z975 * sd), float(p)))
    return out


def adjust_trends(tests: Sequence[TrendTest]) -> list[float | None]:
    """Holm-adjusted p-values of several curves' trend tests, in order (None where a test
    could not be run): :func:`audit.measure.stats.adjust_pvalues`'s Holm column."""
    holm, _ = adjust_pvalues([t.p_value if math.isfinite(t.p_value) else None for t in tests])
    return holm


def se_from_interval(ci: Sequence[float | None] | None, *, confidence: float = 0.95) -> float:
    """The standard error a two-sided ``confidence`` interval ``[low, high]`` implies under
    normality, ``(high - low) / (2 z)`` (3.92 for 95%): how a point of results.json, which
    keeps bootstrap intervals rather than standard errors, enters :func:`trend_test`. NaN
    for a missing or non-finite interval. A percentile interval of a skewed estimate gives
    the average of its two half-widths."""
    from audit.intervals import normal_quantile

    if ci is None or len(ci) != 2 or any(c is None or not math.isfinite(c) for c in ci):
        return math.nan
    low, high = float(ci[0]), float(ci[1])  # type: ignore[arg-type]
    return abs(high - low) / (2.0 * normal_quantile(confidence))
