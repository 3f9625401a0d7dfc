"""Closed-form intervals (audit/intervals.py) against statsmodels, and no
zero-width interval for 0 of n or n of n in results.json."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from audit.config import MeasureSettings
from audit.intervals import mover_difference, mover_ratio, wilson_interval, zero_width
from audit.measure import predictions_to_results, validate_results
from audit.validation.predictions import Planted, synthetic_predictions

CASES = [(0, 82), (82, 82), (1, 10), (5, 40), (37.5, 80.2), (250, 1000), (0, 1), (3, 3)]


@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
@pytest.mark.parametrize(("k", "n"), CASES)
def test_wilson_matches_statsmodels(k: float, n: float, confidence: float) -> None:
    lo, hi = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    ours = wilson_interval(k, n, confidence=confidence)
    assert ours == pytest.approx([lo, hi], abs=1e-12)
    assert ours[1] - ours[0] > 0                     # never of zero width, even at 0/n, n/n


def test_wilson_is_vectorised_and_nan_for_empty_groups() -> None:
    k, n = np.array([[0, 5], [3, 0]]), np.array([[82, 40], [3, 0]])
    out = wilson_interval(k, n)
    assert out.shape == (2, 2, 2)
    assert np.isnan(out[1, 1]).all()
    assert out[0, 1] == pytest.approx(proportion_confint(5, 40, method="wilson"))


@pytest.mark.parametrize(("k1", "n1", "k2", "n2"),
                         [(0, 82, 40, 90), (5, 40, 30, 60), (30, 50, 40, 50), (82, 82, 10, 80)])
def test_mover_difference_is_newcombes_interval(k1, n1, k2, n2) -> None:
    ours = mover_difference(k1 / n1, wilson_interval(k1, n1), k2 / n2, wilson_interval(k2, n2))
    ref = confint_proportions_2indep(k1, n1, k2, n2, compare="diff", method="newcomb")
    assert ours == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize(("k1", "n1", "k2", "n2"),
                         [(5, 40, 30, 60), (30, 50, 40, 50), (120, 400, 200, 400), (0, 82, 40, 90)])
def test_mover_ratio_agrees_with_the_score_interval(k1, n1, k2, n2) -> None:
    ours = mover_ratio(k1 / n1, wilson_interval(k1, n1), k2 / n2, wilson_interval(k2, n2))
    lo, hi = confint_proportions_2indep(k1, n1, k2, n2, compare="ratio", method="score")
    # Two different good intervals (Donner & Zou 2012: MOVER-R and the score interval
    # agree closely); both must bracket the estimate.
    assert ours[0] <= k1 / n1 / (k2 / n2) <= ours[1]
    assert ours[0] == pytest.approx(lo, abs=0.01)
    assert ours[1] == pytest.approx(hi, rel=0.05)


def test_mover_ratio_of_zero_numerator_and_zero_denominator() -> None:
    zero = mover_ratio(0.0, wilson_interval(0, 82), 0.5, wilson_interval(45, 90))
    assert zero[0] == 0 and 0.05 < zero[1] < 0.2        # 0 of 82 is not exactly 0 times
    unbounded = mover_ratio(0.1, wilson_interval(4, 40), 0.0, wilson_interval(0, 40))
    assert np.isposinf(unbounded[1])


def test_zero_width() -> None:
    assert zero_width(np.array([[0.0, 0.0], [0.1, 0.2], [np.nan, np.nan]])).tolist() == \
        [True, False, False]


# ------------------------------------------------------------------ in results.json


def _impact(results: dict, concept: str, group: str, source: str, metric: str) -> dict:
    sec = next(s for s in results["treatment"] if s["concept"] == concept)
    return next(r for r in sec["impact"] if r["group"] == group and r["source"] == source
                and r["metric"] == metric)


@pytest.fixture(scope="module")
def rejected(cs):
    """Real dark images all rejected (scores far below the threshold and the median)."""
    planted = Planted(score_shift={("tone", "dark", "real"): -40.0}, real_score_mean=3.0)
    frame, validity = synthetic_predictions(400, 400, cs, seed=3, planted=planted)
    return predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=200))


def test_a_rate_of_zero_gets_the_wilson_interval(rejected) -> None:
    validate_results(rejected)
    row = _impact(rejected, "tone", "dark", "real", "acceptance_rate")
    rate = row["rate"]
    assert rate["k"] == 0 and rate["n"] > 100
    lo, hi = proportion_confint(0, rate["n"], method="wilson")
    assert rate["ci"] == pytest.approx([lo, hi], abs=1e-12)
    assert rate["ci"][1] > 0
    ratio = row["ratio"]
    assert ratio["value"] == 0 and ratio["ci"][0] == 0 and ratio["ci"][1] > 0


def test_every_rate_interval_is_wilson(rejected) -> None:
    level = rejected["bootstrap"]["confidence"]
    for sec in rejected["treatment"]:
        for row in sec["rows"]:
            for metric in ("scoring_rate", "acceptance_rate"):
                est = row[metric]
                if est["n"] == 0:
                    continue
                ref = proportion_confint(est["k"], est["n"], alpha=1 - level, method="wilson")
                assert est["ci"] == pytest.approx(ref, abs=1e-12), (sec["concept"], row)


def test_a_zero_denominator_makes_the_ratio_unbounded_with_its_reason(cs) -> None:
    planted = Planted(real_score_mean=-40.0)            # no real image accepted
    frame, validity = synthetic_predictions(300, 300, cs, seed=4, planted=planted)
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=100))
    validate_results(res)
    row = _impact(res, "tone", "dark", "real", "acceptance_rate")
    assert row["ratio"]["value"] is None
    assert row["ratio"]["ci"] == [0.0, None]
    assert "denominator is 0" in row["ratio"]["unbounded"]
    assert "denominator is 0" in row["reason"]
    assert row["four_fifths"] == "no_verdict"
