"""The trend statistics of a series of audits (audit/measure/trend.py), against statsmodels
and closed forms, and their calibration on simulated series."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from audit.measure.trend import (
    ChangePoint,
    TrendTest,
    adjust_trends,
    change_points,
    se_from_interval,
    trend_test,
)

sm = pytest.importorskip("statsmodels.api")

Y = np.array([0.31, 0.27, 0.22, 0.24, 0.15])
SE = np.array([0.020, 0.030, 0.015, 0.040, 0.025])
X = np.array([10.0, 20.0, 30.0, 40.0, 60.0])


def test_slope_interval_and_p_match_statsmodels_wls_with_known_scale() -> None:
    fit = sm.WLS(Y, sm.add_constant(X), weights=1 / SE ** 2).fit(
        cov_type="fixed scale", cov_kwds={"scale": 1.0})
    res = trend_test(Y, se=SE, index=X, n_boot=0)
    assert res.method == "wls_z" and res.n_points == 5
    assert res.slope == pytest.approx(fit.params[1], rel=1e-10)
    assert res.slope_se == pytest.approx(fit.bse[1], rel=1e-10)
    assert res.p_value == pytest.approx(fit.pvalues[1], rel=1e-8)
    lo, hi = fit.conf_int()[1]
    assert res.slope_ci == pytest.approx((lo, hi), rel=1e-8)
    # Cochran's Q is the weighted residual sum of squares, chi-square with n - 2 df
    from scipy.stats import chi2
    assert res.heterogeneity_p == pytest.approx(chi2.sf(fit.ssr, 3), rel=1e-8)


def test_without_standard_errors_it_is_ordinary_least_squares_with_t() -> None:
    fit = sm.OLS(Y, sm.add_constant(X)).fit()
    res = trend_test(Y, index=X)
    assert res.method == "ols_t"
    assert res.slope == pytest.approx(fit.params[1], rel=1e-10)
    assert res.p_value == pytest.approx(fit.pvalues[1], rel=1e-8)
    assert res.slope_ci == pytest.approx(tuple(fit.conf_int()[1]), rel=1e-8)


def test_the_parametric_bootstrap_agrees_with_the_closed_form() -> None:
    y = np.array([0.30, 0.27, 0.26, 0.24])
    se = np.array([0.02, 0.02, 0.03, 0.02])
    exact = trend_test(y, se=se, n_boot=0).p_value
    boot = trend_test(y, se=se, n_boot=20000, seed=3)
    assert boot.method == "wls_parametric_bootstrap"
    mc = math.sqrt(exact * (1 - exact) / 20000)
    assert abs(boot.p_value - exact) < 4 * mc + 1e-4
    assert boot.slope == trend_test(y, se=se, n_boot=0).slope


def test_three_points_can_reach_a_small_p_value() -> None:
    # a permutation of 3 points cannot go below 1/6; known standard errors can
    res = trend_test([0.35, 0.25, 0.15], se=[0.02, 0.02, 0.02], n_boot=0)
    z = 0.10 / (0.02 / math.sqrt(2))
    assert res.slope == pytest.approx(-0.10)
    assert res.p_value == pytest.approx(2 * norm.sf(z), rel=1e-9) and res.p_value < 1e-3


def test_the_index_sets_the_units_of_the_slope_not_the_p_value() -> None:
    a = trend_test(Y, se=SE, n_boot=0)
    b = trend_test(Y, se=SE, index=np.arange(5) * 10.0 + 7, n_boot=0)
    assert b.slope == pytest.approx(a.slope / 10)
    assert b.p_value == pytest.approx(a.p_value)


def test_the_null_is_rejected_at_its_level_and_a_planted_slope_is_found() -> None:
    rng = np.random.default_rng(0)
    se = np.array([0.01, 0.02, 0.015, 0.03, 0.02])
    reps = 4000
    null = sum(trend_test(0.2 + rng.standard_normal(5) * se, se=se, n_boot=0).p_value < 0.05
               for _ in range(reps)) / reps
    # binomial sd at 0.05 over 4000 series is 0.0034
    assert abs(null - 0.05) < 0.015
    slope = -0.02
    hits = sum(trend_test(0.3 + slope * np.arange(5) + rng.standard_normal(5) * se,
                          se=se, n_boot=0).p_value < 0.05 for _ in range(500)) / 500
    # the power of the z test at this slope, by its closed form
    w = 1 / se ** 2
    c = np.arange(5) - np.sum(w * np.arange(5)) / w.sum()
    power = norm.sf(1.96 - abs(slope) * math.sqrt(np.sum(w * c ** 2)))
    assert abs(hits - power) < 0.06


def test_points_without_a_value_or_standard_error_are_left_out() -> None:
    full = trend_test([0.3, 0.2, 0.1], se=[0.01, 0.01, 0.01], index=[0, 2, 3], n_boot=0)
    gappy = trend_test([0.3, math.nan, 0.2, 0.1], se=[0.01, 0.01, 0.01, 0.01], n_boot=0)
    assert gappy.n_points == 3 and gappy.slope == pytest.approx(full.slope)
    no_se = trend_test([0.3, 0.25, 0.2, 0.1], se=[0.01, math.nan, 0.01, 0.01], n_boot=0)
    assert no_se.n_points == 3 and no_se.slope == pytest.approx(full.slope)


def test_a_zero_standard_error_takes_the_largest_positive_one() -> None:
    # a bootstrap that never moved (a ratio pinned at 1) must not dominate the fit
    a = trend_test([0.0, 0.05, 0.1, 1.0], se=[0.01, 0.04, 0.01, 0.0], n_boot=0)
    b = trend_test([0.0, 0.05, 0.1, 1.0], se=[0.01, 0.04, 0.01, 0.04], n_boot=0)
    assert a == b
    assert trend_test([0.3, 0.2, 0.1], se=[0.0, 0.0, 0.0]).method == "ols_t"


def test_too_few_points_give_nan_not_an_error() -> None:
    res = trend_test([0.3], se=[0.01])
    assert isinstance(res, TrendTest) and res.method == "not_enough_points"
    assert math.isnan(res.p_value) and res.n_points == 1
    assert trend_test([0.3, 0.2]).method == "not_enough_points"       # OLS needs 3
    assert trend_test([0.3, 0.2, 0.1], se=[0.1] * 3, index=[1, 1, 1]).method == \
        "not_enough_points"
    assert trend_test([0.3, 0.2], se=[0.01, 0.01], n_boot=0).method == "wls_z"


def test_mismatched_lengths_are_an_error() -> None:
    with pytest.raises(ValueError, match="3 values but 2 standard errors"):
        trend_test([1, 2, 3], se=[1, 1])
    with pytest.raises(ValueError, match="negative"):
        trend_test([1, 2, 3], se=[1, -1, 1])


def test_change_points_against_the_baseline_match_the_closed_form() -> None:
    cps = change_points(Y, SE, baseline=0)
    assert [c.index for c in cps] == [1, 2, 3, 4]
    for c in cps:
        sd = math.hypot(SE[c.index], SE[0])
        d = Y[c.index] - Y[0]
        assert c.difference == pytest.approx(d)
        assert c.ci == pytest.approx((d - norm.ppf(0.975) * sd, d + norm.ppf(0.975) * sd))
        assert c.p_value == pytest.approx(2 * norm.sf(abs(d) / sd))
    last = change_points(Y, SE, baseline=-1)
    assert [c.index for c in last] == [0, 1, 2, 3]
    assert last[0] == ChangePoint(0, pytest.approx(Y[0] - Y[4]), last[0].ci, last[0].p_value)
    with pytest.raises(ValueError, match="outside"):
        change_points(Y, SE, baseline=5)


def test_holm_across_curves_matches_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(1)
    tests = [trend_test(0.2 + rng.standard_normal(4) * 0.02 - k * 0.01 * np.arange(4),
                        se=[0.02] * 4, n_boot=0) for k in range(5)]
    tests.append(trend_test([0.1], se=[0.01]))   # could not be run: None, not in the family
    holm = adjust_trends(tests)
    assert holm[-1] is None
    expected = multipletests([t.p_value for t in tests[:-1]], method="holm")[1]
    assert holm[:-1] == pytest.approx(list(expected))


def test_a_standard_error_from_a_normal_interval_is_recovered() -> None:
    assert se_from_interval((0.2 - norm.ppf(0.975) * 0.013, 0.2 + norm.ppf(0.975) * 0.013)) == \
        pytest.approx(0.013)
    assert se_from_interval((0.1, 0.3), confidence=0.9) == pytest.approx(0.1 / norm.ppf(0.95))
    assert math.isnan(se_from_interval(None)) and math.isnan(se_from_interval((0.1, None)))
    assert math.isnan(se_from_interval((0.1, math.nan)))
