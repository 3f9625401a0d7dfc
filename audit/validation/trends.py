"""Planted series of audits: does the trend test find a planted trend, and only that?

A series is what ``gan-audit track`` measures: one audit per checkpoint (or setting), each
giving a group's corrected generated share and its bootstrap standard error. Each point of
a planted series is simulated as an audit estimates it:

1. ``n`` generated images, each in the minority group with the point's true share (or, in
   the ``neighbour_rho`` scenarios, the same latents through slowly changing generators:
   an image's group follows a Gaussian AR(1) over the checkpoints, so the points' sampling
   errors correlate, more between neighbours than between distant points);
2. a decoder reads each image's group with accuracies ``accuracy`` (per group), and its
   confusion matrix is estimated on ``paired_per_group`` held-out labelled images per
   group (per checkpoint, or once for all points: ``fixed_decoders``);
3. the decoded share is corrected with the estimated confusion matrix
   (:func:`audit.measure.stats.simplex_lstsq_batch`, the measure stage's correction), and
   its standard error is that of a bootstrap resampling the images and the held-out
   labelled images (``n_boot`` draws), as the audit's bootstrap does.

The series then goes to :func:`audit.measure.trend.trend_test`; a replicate detects a
trend when p < ``alpha``. Rates come with Wilson 95% intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from audit.intervals import wilson_interval
from audit.measure.stats import simplex_lstsq_batch
from audit.measure.trend import TrendTest, trend_test

__all__ = ["PlantedSeries", "SeriesResult", "simulate_series", "run_series", "run_family",
           "standard_series", "correlated_series", "expected_power"]


@dataclass(frozen=True)
class PlantedSeries:
    """A planted series: the true minority share per point (``start + slope * i``), images
    per point, decoder accuracy per point (both groups), labelled images per group that
    estimate each confusion matrix, and how the points' errors are tied together."""

    name: str
    n_points: int = 5
    start: float = 0.25
    slope: float = 0.0
    n: Sequence[int] | int = 2000
    accuracy: Sequence[float] | float = 0.97
    paired_per_group: int = 216
    fixed_decoders: bool = False
    neighbour_rho: float = 0.0
    n_boot: int = 200
    note: str = field(default="", compare=False)

    def truth(self) -> np.ndarray:
        """(n_points,) true minority shares."""
        return self.start + self.slope * np.arange(self.n_points)

    def per_point(self, value: Sequence[float] | float) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, dtype=float), (self.n_points,)).copy()


def _true_counts(s: PlantedSeries, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(minority images, images) per point; AR(1) latents when ``neighbour_rho`` > 0."""
    from scipy.stats import norm

    n = s.per_point(s.n).astype(int)
    truth = s.truth()
    if s.neighbour_rho <= 0:
        return rng.binomial(n, truth), n
    m = int(n.max())
    g = np.empty((s.n_points, m))
    g[0] = rng.standard_normal(m)
    for i in range(1, s.n_points):
        g[i] = s.neighbour_rho * g[i - 1] + math.sqrt(1 - s.neighbour_rho ** 2) * \
            rng.standard_normal(m)
    minority = g < norm.ppf(truth)[:, None]
    return np.array([minority[i, :n[i]].sum() for i in range(s.n_points)]), n


def _corrected(decoded: np.ndarray, n: np.ndarray, acc_min: np.ndarray,
               acc_maj: np.ndarray) -> np.ndarray:
    """Corrected minority share of decoded counts (..., P) with estimated accuracies."""
    a = np.empty((*decoded.shape, 2, 2))
    a[..., 0, 0], a[..., 0, 1] = acc_min, 1 - acc_min
    a[..., 1, 0], a[..., 1, 1] = 1 - acc_maj, acc_maj
    p_hat = decoded / n
    flat = simplex_lstsq_batch(a.reshape(-1, 2, 2),
                               np.stack([p_hat, 1 - p_hat], axis=-1).reshape(-1, 2))
    return flat[:, 0].reshape(decoded.shape)


def simulate_series(s: PlantedSeries, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One replicate: (corrected shares, their bootstrap standard errors), each (n_points,)."""
    k, n = _true_counts(s, rng)
    acc = s.per_point(s.accuracy)
    decoded = rng.binomial(k, acc) + rng.binomial(n - k, 1 - acc)
    m = s.paired_per_group
    shape = (1,) if s.fixed_decoders else (s.n_points,)
    acc_min = np.broadcast_to(rng.binomial(m, acc[:shape[0]], size=shape) / m, acc.shape)
    acc_maj = np.broadcast_to(rng.binomial(m, acc[:shape[0]], size=shape) / m, acc.shape)
    estimate = _corrected(decoded, n, acc_min, acc_maj)
    b = s.n_boot
    boot_dec = rng.binomial(n, decoded / n, size=(b, s.n_points))
    boot_shape = (b, 1) if s.fixed_decoders else (b, s.n_points)
    boot_min = np.broadcast_to(rng.binomial(m, acc_min[:boot_shape[1]], size=boot_shape) / m,
                               (b, s.n_points))
    boot_maj = np.broadcast_to(rng.binomial(m, acc_maj[:boot_shape[1]], size=boot_shape) / m,
                               (b, s.n_points))
    boot = _corrected(boot_dec, n, boot_min, boot_maj)
    return estimate, np.nanstd(boot, axis=0, ddof=1)


@dataclass(frozen=True)
class SeriesResult:
    """The trend test's detection rate over replicates of one planted series, its Wilson
    95% interval, the mean per-point standard error the bootstrap gave, the mean estimated
    slope and the true slope."""

    series: PlantedSeries
    replicates: int
    detected: int
    rate: float
    interval: tuple[float, float]
    mean_se: float
    mean_slope: float


def run_series(s: PlantedSeries, *, replicates: int, seed: int = 0,
               alpha: float = 0.05) -> SeriesResult:
    """``replicates`` replicates of a planted series, each tested with
    :func:`audit.measure.trend.trend_test` (closed form); detected when p < ``alpha``."""
    import zlib

    rng = np.random.default_rng([seed, zlib.crc32(s.name.encode())])
    hits, ses, slopes = 0, [], []
    for _ in range(replicates):
        y, se = simulate_series(s, rng)
        res = _test((y, se))
        hits += bool(res.p_value < alpha)
        ses.append(float(np.mean(se)))
        slopes.append(res.slope)
    lo, hi = wilson_interval(hits, replicates)
    return SeriesResult(s, replicates, hits, hits / replicates, (float(lo), float(hi)),
                        float(np.mean(ses)), float(np.mean(slopes)))


def expected_power(se: Sequence[float], slope: float, *, alpha: float = 0.05) -> float:
    """Power of the two-sided WLS z test of a true ``slope`` per point with these known
    per-point standard errors (index 0, 1, ...): the closed form the simulation checks."""
    from scipy.stats import norm

    s = np.asarray(se, dtype=float)
    w = 1 / s ** 2
    x = np.arange(len(s), dtype=float)
    c = x - np.sum(w * x) / w.sum()
    shift = abs(slope) * math.sqrt(float(np.sum(w * c ** 2)))
    z = float(norm.ppf(1 - alpha / 2))
    return float(norm.sf(z - shift) + norm.cdf(-z - shift))


#: Unequal points: images per point and decoder accuracy per point (a checkpoint audited
#: with fewer images, and checkpoints whose decoders read the concept less well).
UNEQUAL_N = (500, 4000, 1000, 2000, 800)
UNEQUAL_ACCURACY = (0.97, 0.99, 0.90, 0.97, 0.93)


def standard_series(*, drift: float = -0.08) -> list[PlantedSeries]:
    """The benchmark's planted series: nulls, and trends in which the minority's share moves
    by ``drift`` from the first to the last point (a straight line), with 4 and 5 points,
    equal and unequal standard errors, and the two ways the points' errors correlate."""
    def trend(points: int) -> float:
        return drift / (points - 1)

    return [
        PlantedSeries("null-5-equal", start=0.20),
        PlantedSeries("null-5-unequal", start=0.20, n=UNEQUAL_N, accuracy=UNEQUAL_ACCURACY),
        PlantedSeries("null-4-equal", n_points=4, start=0.20),
        PlantedSeries("null-4-unequal", n_points=4, start=0.20, n=UNEQUAL_N[:4],
                      accuracy=UNEQUAL_ACCURACY[:4]),
        PlantedSeries("trend-5-equal", slope=trend(5)),
        PlantedSeries("trend-5-unequal", slope=trend(5), n=UNEQUAL_N,
                      accuracy=UNEQUAL_ACCURACY),
        PlantedSeries("trend-4-equal", n_points=4, slope=trend(4)),
        PlantedSeries("trend-4-unequal", n_points=4, slope=trend(4), n=UNEQUAL_N[:4],
                      accuracy=UNEQUAL_ACCURACY[:4]),
    ]


def correlated_series() -> list[PlantedSeries]:
    """Nulls whose points are not independent (the test assumes they are)."""
    return [
        PlantedSeries("null-5-fixed-decoders", start=0.20, fixed_decoders=True,
                      note="one decoder for every checkpoint: its error is shared"),
        PlantedSeries("null-5-same-latents-0.9", start=0.20, neighbour_rho=0.9,
                      note="same latents, slowly changing generators: neighbours correlate"),
        PlantedSeries("null-5-same-latents-0.5", start=0.20, neighbour_rho=0.5,
                      note="same latents, faster changing generators"),
    ]


def run_family(s: PlantedSeries, *, curves: int, replicates: int, seed: int = 0,
               alpha: float = 0.05) -> tuple[int, float, tuple[float, float]]:
    """Family-wise false alarms: ``replicates`` families of ``curves`` independent replicates
    of ``s`` (a null), Holm-corrected together (:func:`audit.measure.trend.adjust_trends`);
    returns (families with any adjusted p < alpha, their rate, its Wilson interval)."""
    import zlib

    from audit.measure.trend import adjust_trends

    rng = np.random.default_rng([seed, zlib.crc32(f"family-{s.name}".encode())])
    hits = 0
    for _ in range(replicates):
        tests = [_test(simulate_series(s, rng)) for _ in range(curves)]
        hits += any(p is not None and p < alpha for p in adjust_trends(tests))
    lo, hi = wilson_interval(hits, replicates)
    return hits, hits / replicates, (float(lo), float(hi))


def _test(series: tuple[np.ndarray, np.ndarray]) -> TrendTest:
    """The closed-form trend test of one simulated series (values, standard errors)."""
    return trend_test(series[0], se=series[1], n_boot=0)
