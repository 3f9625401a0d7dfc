"""Closed-form intervals of proportions, and of differences and ratios built on them.

A scoring rate of 0 of 82 images has a bootstrap interval of [0, 0]: every replicate
draws 0 of about 82 again. Such an interval claims a certainty the data cannot give. A
rate or share that is a plain count (k of n images) therefore gets the Wilson score
interval (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it for every n), which is
never of zero width for n > 0; a difference or ratio of two such quantities whose
bootstrap interval has zero width gets the MOVER interval built from the two
components' intervals (Newcombe 1998 for differences, Donner & Zou 2012 for ratios).
A ratio whose denominator is 0 has no upper bound (``inf``).

Hand-written, not statsmodels: statsmodels is a test dependency only, and these are
closed forms of a few lines, vectorised over groups; tests/test_measure_intervals.py
checks them against ``statsmodels.stats.proportion``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["wilson_interval", "mover_difference", "mover_ratio", "zero_width", "normal_quantile"]


def normal_quantile(confidence: float) -> float:
    """z of a two-sided ``confidence`` interval (1.96 for 0.95)."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2.0))


def wilson_interval(k: np.ndarray | float, n: np.ndarray | float, *,
                    confidence: float = 0.95) -> np.ndarray:
    """Wilson score interval of the proportion k / n.

    Parameters
    ----------
    k, n
        Successes and trials, broadcastable arrays; may be effective (fractional) counts
        (k / deff, n / deff under clustered images).
    confidence
        Two-sided level, e.g. 0.95.

    Returns
    -------
    (..., 2) array [low, high] in [0, 1]; NaN where n <= 0. Equals
    ``statsmodels.stats.proportion.proportion_confint(k, n, 1 - confidence, "wilson")``.
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    z = normal_quantile(confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        den = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / den
        half = z * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / den
    out = np.stack([np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)],
                   axis=-1)
    out[n <= 0] = np.nan
    return out


def mover_difference(p1: np.ndarray | float, ci1: np.ndarray, p2: np.ndarray | float,
                     ci2: np.ndarray) -> np.ndarray:
    """MOVER interval of ``p1 - p2`` from each side's own interval (Zou & Donner 2008).

    ``ci1``, ``ci2``: (..., 2) intervals of ``p1`` and ``p2`` (independent). With Wilson
    intervals of two proportions this is Newcombe's hybrid score interval (his method 10),
    ``confint_proportions_2indep(..., compare="diff", method="newcomb")`` in statsmodels.
    Returns (..., 2).
    """
    p1, p2 = np.asarray(p1, dtype=float), np.asarray(p2, dtype=float)
    l1, u1 = np.moveaxis(np.asarray(ci1, dtype=float), -1, 0)
    l2, u2 = np.moveaxis(np.asarray(ci2, dtype=float), -1, 0)
    d = p1 - p2
    lo = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return np.stack([lo, hi], axis=-1)


def mover_ratio(p1: np.ndarray | float, ci1: np.ndarray, p2: np.ndarray | float,
                ci2: np.ndarray) -> np.ndarray:
    """MOVER-R interval of ``p1 / p2`` from each side's interval (Donner & Zou 2012).

    ``ci1``, ``ci2``: (..., 2) intervals of the positive quantities ``p1`` and ``p2``
    (independent). A numerator of 0 gives a lower bound of 0 and a finite upper bound as
    long as the denominator's lower bound is above 0; where it is 0 (a denominator that
    may be 0) the upper bound is ``inf``. Returns (..., 2).
    """
    p1, p2 = np.asarray(p1, dtype=float), np.asarray(p2, dtype=float)
    l1, u1 = np.moveaxis(np.asarray(ci1, dtype=float), -1, 0)
    l2, u2 = np.moveaxis(np.asarray(ci2, dtype=float), -1, 0)
    pp = p1 * p2
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = (pp - np.sqrt(np.maximum(pp ** 2 - l1 * u2 * (2 * p1 - l1) * (2 * p2 - u2), 0.0))
              ) / (u2 * (2 * p2 - u2))
        hi = (pp + np.sqrt(np.maximum(pp ** 2 - u1 * l2 * (2 * p1 - u1) * (2 * p2 - l2), 0.0))
              ) / (l2 * (2 * p2 - l2))
    lo = np.where(np.isfinite(lo), np.maximum(lo, 0.0), 0.0)
    hi = np.where((l2 > 0) & np.isfinite(hi), hi, np.inf)
    return np.stack([lo, hi], axis=-1)


def zero_width(ci: np.ndarray, *, tol: float = 1e-12) -> np.ndarray:
    """(...,) True where an interval (..., 2) is finite and of zero width."""
    ci = np.asarray(ci, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(ci).all(axis=-1) & (np.abs(ci[..., 1] - ci[..., 0]) <= tol)
