"""The counterfactual treatment statistics (audit.measure.counterfactual) against closed forms,
statsmodels and scikit-learn, on synthetic paired data with planted effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.errors import DataError
from audit.measure.counterfactual import (
    concept_logit,
    counterfactual_findings,
    counterfactual_section,
    edit_leakage,
    latents_to_direction,
    paired_effect,
    within_slope,
)


def _paired(n_latents: int, steps: int, slope: float, *, seed: int, noise: float = 0.5):
    """L x S probabilities (a sigmoid of the edit offset, shifted per latent) and scores
    score = a_i + slope * p + noise, each latent its own intercept a_i."""
    rng = np.random.default_rng(seed)
    offset = np.linspace(-3, 3, steps)
    shift = rng.normal(0, 1, size=(n_latents, 1))
    p = 1 / (1 + np.exp(-(2 * offset[None, :] + shift)))
    a = rng.normal(0, 3, size=(n_latents, 1))  # large latent-to-latent differences
    return p, a + slope * p + rng.normal(0, noise, size=(n_latents, steps))


def test_the_direction_is_the_least_squares_fit_of_the_log_odds() -> None:
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 8))
    truth = np.array([3.0, -1.0, 0, 0, 0, 0, 0, 0])
    y = z @ truth + rng.normal(0, 0.5, 400)
    d = latents_to_direction(z, y)
    ref = LinearRegression().fit(z, y)
    np.testing.assert_allclose(d.vector, ref.coef_ / np.linalg.norm(ref.coef_), atol=1e-10)
    assert d.logit_per_unit == pytest.approx(np.linalg.norm(ref.coef_))
    assert d.r2 == pytest.approx(ref.score(z, y))
    assert float(d.vector @ truth / np.linalg.norm(truth)) > 0.99  # the planted direction


def test_a_direction_needs_enough_latents_and_a_varying_concept() -> None:
    z = np.random.default_rng(0).normal(size=(5, 8))
    with pytest.raises(DataError, match="at least 10 latents"):
        latents_to_direction(z, np.arange(5.0))
    with pytest.raises(DataError, match="does not vary"):
        latents_to_direction(np.random.default_rng(1).normal(size=(40, 3)), np.ones(40))


def test_concept_logit_is_the_clipped_log_odds() -> None:
    np.testing.assert_allclose(concept_logit(np.array([0.5, 0.8])), [0.0, np.log(4)])
    assert concept_logit(np.array([0.0]))[0] == pytest.approx(np.log(1e-4 / (1 - 1e-4)))


def test_the_within_slope_is_the_fixed_effects_regression() -> None:
    import statsmodels.formula.api as smf

    p, s = _paired(30, 7, 1.7, seed=1)
    long = pd.DataFrame({"p": p.ravel(), "s": s.ravel(),
                         "latent": np.repeat(np.arange(30), 7)})
    ref = smf.ols("s ~ p + C(latent)", data=long).fit()
    assert within_slope(p, s) == pytest.approx(ref.params["p"], rel=1e-10)
    assert within_slope(np.ones((3, 4)), s[:3, :4]) is None  # x never varies


def test_the_cluster_robust_error_matches_statsmodels() -> None:
    import statsmodels.api as sm

    p, s = _paired(40, 5, 0.8, seed=2, noise=1.0)
    pc = (p - p.mean(axis=1, keepdims=True)).ravel()
    sc = (s - s.mean(axis=1, keepdims=True)).ravel()
    ref = sm.OLS(sc, pc).fit(cov_type="cluster", use_t=True,
                            cov_kwds={"groups": np.repeat(np.arange(40), 5)})
    got = paired_effect(p, s, n_boot=0, seed=0, confidence=0.95)
    assert got["value"] == pytest.approx(ref.params[0], rel=1e-10)
    assert got["se_cluster"] == pytest.approx(ref.bse[0], rel=1e-8)
    assert got["p_cluster"] == pytest.approx(ref.pvalues[0], rel=1e-6)
    assert got["ci"] is None and got["p_value"] is None  # no bootstrap asked


def test_the_bootstrap_over_latents_agrees_with_resampling_latents() -> None:
    p, s = _paired(25, 5, 1.0, seed=3)
    got = paired_effect(p, s, n_boot=4000, seed=7, confidence=0.9)
    rng = np.random.default_rng(11)
    slow = [within_slope(p[idx], s[idx]) for idx in
            (rng.integers(0, 25, 25) for _ in range(4000))]
    lo, hi = np.quantile(slow, [0.05, 0.95])
    width = hi - lo
    assert got["ci"][0] == pytest.approx(lo, abs=0.1 * width)
    assert got["ci"][1] == pytest.approx(hi, abs=0.1 * width)
    # and the bootstrap's spread is the cluster-robust one
    assert (got["ci"][1] - got["ci"][0]) / (2 * 1.645) == pytest.approx(got["se_cluster"],
                                                                         rel=0.2)


def test_a_planted_effect_is_found_and_no_effect_rarely_is() -> None:
    hits = [paired_effect(*_paired(30, 5, 1.0, seed=s), n_boot=400, seed=s,
                          confidence=0.95)["p_value"] < 0.05 for s in range(40)]
    alarms = [paired_effect(*_paired(30, 5, 0.0, seed=100 + s), n_boot=400, seed=s,
                            confidence=0.95)["p_value"] < 0.05 for s in range(200)]
    assert np.mean(hits) >= 0.9
    assert np.mean(alarms) <= 0.09  # nominal 0.05; binomial sd over 200 runs is 0.015


def test_the_p_value_inverts_the_interval() -> None:
    for seed in range(20):
        got = paired_effect(*_paired(20, 5, 0.3, seed=seed), n_boot=1000, seed=seed,
                            confidence=0.95)
        excludes = got["ci"][0] > 0 or got["ci"][1] < 0
        assert excludes == (got["p_value"] < 0.05) or abs(got["p_value"] - 0.05) < 0.003


def test_latents_with_a_non_finite_value_are_left_out() -> None:
    p, s = _paired(10, 5, 1.0, seed=4)
    s[2, 3] = np.nan
    got = paired_effect(p, s, n_boot=10, seed=0, confidence=0.95)
    assert got["n"] == 9 and got["n_dropped"] == 1
    assert got["value"] == pytest.approx(within_slope(np.delete(p, 2, 0), np.delete(s, 2, 0)))


def test_leakage_is_the_mean_total_variation_between_the_ends() -> None:
    first = np.array([[1.0, 0.0], [0.5, 0.5]])
    last = np.array([[0.0, 1.0], [0.5, 0.5]])
    three_first = np.array([[0.2, 0.3, 0.5]])
    three_last = np.array([[0.5, 0.3, 0.2]])
    got = edit_leakage({"a": (first, last), "b": (three_first, three_last)})
    assert got == {"a": pytest.approx(0.5), "b": pytest.approx(0.3)}


def _edits(effects: dict[str, float], *, leak: float = 0.0, n: int = 30, steps: int = 5
           ) -> tuple[pd.DataFrame, dict]:
    """An edits table for directions tone=dark and stroke=thick with planted slopes; each
    edit moves its own concept from 0.1 to 0.9 and the other concept by ``leak``."""
    rows = []
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, steps)
    offsets = np.linspace(-2, 2, steps)
    for concept, group, other in (("tone", "dark", "stroke"), ("stroke", "thick", "tone")):
        for latent in range(n):
            base, shift = rng.normal(0, 2), rng.normal(0, 1)
            for step in range(steps):
                own = 1 / (1 + np.exp(-(3 * offsets[step] + shift)))
                oth = 0.3 + leak * t[step]
                row = {"concept": concept, "group": group, "latent": latent, "step": step,
                       "offset": float(offsets[step]), "score": base + effects[concept] * own
                       + rng.normal(0, 0.3)}
                pos = {"tone": ("light", "dark"), "stroke": ("thin", "thick")}
                for c, value in ((concept, own), (other, oth)):
                    row[f"prob__{c}__{pos[c][0]}"] = 1 - value
                    row[f"prob__{c}__{pos[c][1]}"] = value
                rows.append(row)
    document = {"steps": steps, "directions": [
        {"concept": "tone", "group": "dark", "r2": 0.9, "logit_per_unit": 2.0, "n_fit": 500,
         "strip": "samples/counterfactual/tone-dark.png"},
        {"concept": "stroke", "group": "thick", "r2": 0.8, "logit_per_unit": 1.5,
         "n_fit": 500, "strip": None}]}
    return pd.DataFrame(rows), document


GROUPS = {"tone": ["light", "dark"], "stroke": ["thin", "thick"]}


def test_the_section_adjusts_across_directions_and_measures_leakage() -> None:
    from statsmodels.stats.multitest import multipletests

    edits, doc = _edits({"tone": 2.0, "stroke": 0.0}, leak=0.2)
    rows = counterfactual_section(edits, doc, GROUPS, n_boot=500, seed=0, alpha=0.05,
                                  max_leakage=0.5)
    assert [(r["concept"], r["group"]) for r in rows] == [("tone", "dark"), ("stroke", "thick")]
    holm = multipletests([r["p_value"] for r in rows], method="holm")[1]
    assert [r["p_holm"] for r in rows] == pytest.approx(list(holm))
    tone, stroke = rows
    assert tone["significant"] and tone["effect"]["ci"][0] > 0
    assert tone["effect"]["ci"][0] < 2.0 < tone["effect"]["ci"][1]  # the planted slope
    # (whether a planted 0 is found at the nominal rate: the false-alarm tests above)
    assert stroke["significant"] == (stroke["p_holm"] < 0.05)
    # own change: the mean |p(last) - p(first)|; the other concept moved by 0.2
    sel = edits[edits["concept"] == "tone"].pivot(index="latent", columns="step",
                                                  values="prob__tone__dark").to_numpy()
    own = float(np.mean(np.abs(sel[:, -1] - sel[:, 0])))
    assert tone["concept_change"] == pytest.approx(own)
    assert tone["leakage"] == {"stroke": pytest.approx(0.2)}
    assert tone["leakage_ratio"] == pytest.approx(0.2 / own) and not tone["large_leakage"]
    assert tone["unadjusted"]["value"] == pytest.approx(2.0, abs=0.2)


def test_findings_follow_the_severity_rule() -> None:
    summary = {c: {"decodable": True, "balanced_accuracy": 0.95, "group_accuracy": {},
                   "class_accuracy": {g: 0.95 for g in gs}} for c, gs in GROUPS.items()}
    edits, doc = _edits({"tone": 2.0, "stroke": 0.5})
    rows = counterfactual_section(edits, doc, GROUPS, n_boot=500, seed=0, alpha=0.05,
                                  max_leakage=0.5)
    # the rule on given numbers (the estimates themselves are tested above)
    rows[0].update(effect={**rows[0]["effect"], "value": 2.0}, significant=True, p_holm=0.01)
    rows[1].update(effect={**rows[1]["effect"], "value": 0.5}, significant=True, p_holm=0.01)
    found = {f["id"]: f for f in counterfactual_findings(rows, summary, high_effect=1.0,
                                                         weak_below=0.8)}
    assert found["F-CFT-tone-dark"]["severity"] == "high"      # |2.0| >= 1.0
    assert found["F-CFT-stroke-thick"]["severity"] == "medium"  # significant, |0.5| < 1.0
    assert "not the concept itself" in found["F-CFT-tone-dark"]["summary"]
    leaky, doc = _edits({"tone": 2.0, "stroke": 0.0}, leak=0.6)
    rows = counterfactual_section(leaky, doc, GROUPS, n_boot=500, seed=0, alpha=0.05,
                                  max_leakage=0.5)
    rows[1].update(significant=False)
    (finding,) = counterfactual_findings(rows, summary, high_effect=1.0, weak_below=0.8)
    assert finding["severity"] == "low" and finding["evidence"]["large_leakage"]
    assert "large leakage" in finding["summary"]


def test_the_drift_adjusted_slope_and_its_error_match_statsmodels() -> None:
    import statsmodels.api as sm

    from audit.measure.counterfactual import drift_covariates

    p, s = _paired(40, 7, 0.8, seed=5, noise=1.0)
    offsets = np.linspace(-3, 3, 7)
    s = s + 0.4 * offsets[None, :] - 0.1 * offsets[None, :] ** 2  # a smooth drift
    cov = drift_covariates(offsets, 40)
    design = np.concatenate([p[:, :, None], cov], axis=2)
    x = (design - design.mean(axis=1, keepdims=True)).reshape(-1, 3)
    y = (s - s.mean(axis=1, keepdims=True)).ravel()
    ref = sm.OLS(y, x).fit(cov_type="cluster", use_t=True,
                           cov_kwds={"groups": np.repeat(np.arange(40), 7)})
    got = paired_effect(p, s, n_boot=0, seed=0, confidence=0.95, covariates=cov)
    assert got["value"] == pytest.approx(ref.params[0], rel=1e-8)
    assert got["se_cluster"] == pytest.approx(ref.bse[0], rel=1e-8)
    assert got["p_cluster"] == pytest.approx(ref.pvalues[0], rel=1e-6)
    assert abs(got["value"] - 0.8) < 3 * got["se_cluster"]  # the drift held, the slope found


def test_a_drift_alone_is_no_effect_once_held_fixed() -> None:
    """A score that drifts with the edit (the leakage) but not with the decoded concept:
    the unadjusted slope finds an 'effect', the drift-adjusted one does not."""
    from audit.measure.counterfactual import drift_covariates

    offsets = np.linspace(-3, 3, 7)
    alarms, raw_alarms = [], []
    for seed in range(60):
        p, _ = _paired(40, 7, 0.0, seed=seed)
        rng = np.random.default_rng(1000 + seed)
        s = rng.normal(0, 3, (40, 1)) - 0.3 * offsets[None, :] + rng.normal(0, 0.3, (40, 7))
        adj = paired_effect(p, s, n_boot=300, seed=seed, confidence=0.95,
                            covariates=drift_covariates(offsets, 40))
        raw = paired_effect(p, s, n_boot=300, seed=seed, confidence=0.95)
        alarms.append(adj["p_value"] < 0.05)
        raw_alarms.append(raw["p_value"] < 0.05)
    assert np.mean(raw_alarms) > 0.9
    assert np.mean(alarms) <= 0.12


def test_an_effect_collinear_with_the_drift_is_not_identified() -> None:
    from audit.measure.counterfactual import drift_covariates

    offsets = np.linspace(-1, 1, 5)
    p = np.broadcast_to(0.5 + 0.4 * offsets, (10, 5)).copy()  # linear in the offset
    s = np.random.default_rng(0).normal(size=(10, 5))
    got = paired_effect(p, s, n_boot=50, seed=0, confidence=0.95,
                        covariates=drift_covariates(offsets, 10))
    assert got["value"] is None and got["ci"] is None
