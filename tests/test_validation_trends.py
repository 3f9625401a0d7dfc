"""The planted series of the trend benchmark (audit/validation/trends.py): each point is
simulated as an audit measures it, its bootstrap standard error is honest, and the trend
test keeps its level on nulls and finds planted trends at the closed-form power."""

from __future__ import annotations

import numpy as np
import pytest

from audit.validation.trends import (
    PlantedSeries,
    expected_power,
    run_family,
    run_series,
    simulate_series,
)


def test_points_are_unbiased_and_their_bootstrap_se_matches_their_spread() -> None:
    s = PlantedSeries("check", n_points=3, start=0.25, slope=-0.05, n=(500, 2000, 1000),
                      accuracy=(0.9, 0.97, 0.95))
    rng = np.random.default_rng(0)
    draws = [simulate_series(s, rng) for _ in range(400)]
    y = np.array([d[0] for d in draws])
    se = np.array([d[1] for d in draws])
    assert np.abs(y.mean(axis=0) - s.truth()).max() < 0.005
    ratio = se.mean(axis=0) / y.std(axis=0, ddof=1)
    # 400 replicates: the sd of the spread is known to about 3.5%
    assert np.all(np.abs(ratio - 1) < 0.15), ratio
    # fewer images or a weaker decoder give a larger standard error
    assert se.mean(axis=0)[0] > se.mean(axis=0)[2] > se.mean(axis=0)[1]


def test_a_shared_decoder_ties_the_points_together() -> None:
    rng = np.random.default_rng(1)
    own = np.array([simulate_series(PlantedSeries("own", start=0.2), rng)[0]
                    for _ in range(300)])
    fixed = np.array([simulate_series(PlantedSeries("fixed", start=0.2, fixed_decoders=True),
                                      rng)[0] for _ in range(300)])
    assert np.corrcoef(own[:, 0], own[:, 4])[0, 1] < 0.15
    assert np.corrcoef(fixed[:, 0], fixed[:, 4])[0, 1] > 0.3


def test_the_null_keeps_its_level_and_a_planted_trend_is_found() -> None:
    null = run_series(PlantedSeries("null", start=0.2), replicates=400, seed=2)
    assert null.detected <= 32          # binomial(400, 0.05): P(X > 32) < 0.01
    trend = run_series(PlantedSeries("trend", n_points=4, slope=-0.015), replicates=200, seed=2)
    closed = expected_power([trend.mean_se] * 4, -0.015)
    assert 0.5 < closed < 0.9          # a middling power, so the comparison can fail
    assert abs(trend.rate - closed) < 0.1
    assert trend.mean_slope == pytest.approx(-0.015, abs=0.002)


def test_holm_holds_the_family_of_null_curves() -> None:
    hits, rate, (lo, hi) = run_family(PlantedSeries("null", n_points=4, start=0.2),
                                      curves=4, replicates=120, seed=3)
    assert hits <= 13                   # binomial(120, 0.05): P(X > 13) < 0.005
    assert lo <= rate <= hi
