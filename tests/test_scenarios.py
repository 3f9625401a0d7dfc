"""The audit checks itself: planted shares on held-out digits (audit.validation.scenarios).

A seeded random-weight demo discriminator keeps these independent of the committed
weights; decoders still read tone and stroke from its features.
"""

from __future__ import annotations

import numpy as np
import pytest

from audit.config import MeasureSettings
from audit.errors import ConfigError
from audit.validation.scenarios import (
    Replicate,
    Scenario,
    ScenarioResult,
    replicate_predictions,
    results_to_replicate,
    run_scenario,
    scenario_bank,
    summarize,
    summary_line,
)

RANDOM_D = "python:audit.demo.models:DigitsDiscriminator"
FAST = MeasureSettings(n_boot=200)


@pytest.fixture(scope="module")
def bank():
    return scenario_bank(discriminator=RANDOM_D, seed=0)


def test_bank_holds_every_held_out_digit_in_every_variant(bank):
    from audit.demo.data import digits_split

    split = digits_split()
    m = len(split["audit"])
    t = bank.table
    assert bank.n_digits == m and len(t) == 4 * m
    assert t["image_id"].is_unique
    index = t["image_id"].str.split("-").str[2].astype(int).to_numpy()
    assert set(index) == set(split["audit"].tolist())
    assert not set(index) & set(split["paired"].tolist())
    for v in range(4):
        block = t.iloc[v * m:(v + 1) * m]
        assert set(block["tone"]) == {("light", "dark")[v // 2]}
        assert set(block["stroke"]) == {("thin", "thick")[v % 2]}
        assert (index[v * m:(v + 1) * m] == split["audit"]).all()
    assert np.isfinite(t["score"]).all()


def test_heldout_rows_reproduce_the_validity_confusion(bank):
    from audit.decode.metrics import confusion_counts

    for c in bank.concept_set.concepts:
        groups = list(c.groups)
        y = bank.heldout[f"true__{c.name}"].map(groups.index).to_numpy()
        p = bank.heldout[f"pred__{c.name}"].map(groups.index).to_numpy()
        assert confusion_counts(y, p, len(groups)).tolist() == \
            bank.validity["concepts"][c.name]["confusion"]


def test_exact_draw_plants_exact_shares(bank):
    s = Scenario("x", concept="stroke", group="thick", reference_share=0.5, audited_share=0.3,
                 n_reference=300, n_audited=200, other_share=0.25, draw="exact")
    pred, validity, share = replicate_predictions(bank, s, np.random.default_rng(1))
    real, gen = pred[pred["source"] == "real"], pred[pred["source"] == "generated"]
    assert len(real) == 300 and len(gen) == 200 and (pred["split"] == "audit").all()
    assert (real["true__stroke"] == "thick").sum() == 150
    assert (real["true__tone"] == "dark").sum() == 75
    assert gen["true__stroke"].isna().all() and gen["true__tone"].isna().all()
    assert share == pytest.approx(0.3)
    assert pred["image_id"].is_unique
    assert validity is bank.validity


def test_planted_decoder_errors_flip_at_their_rates(bank):
    before = [list(r) for r in bank.validity["concepts"]["tone"]["confusion"]]
    s = Scenario("x", reference_share=0.5, audited_share=0.5, n_reference=6000, n_audited=10,
                 decoder_errors={"dark": 0.3, "light": 0.1})
    pred, validity, _ = replicate_predictions(bank, s, np.random.default_rng(2))
    real = pred[pred["source"] == "real"]
    for group, rate in (("dark", 0.3), ("light", 0.1)):
        rows = real[real["true__tone"] == group]
        wrong = float(np.mean(rows["pred__tone"] != group))
        assert abs(wrong - rate) < 4 * np.sqrt(rate * (1 - rate) / len(rows)) + 0.01
    # Probabilities follow the flipped decisions.
    assert ((real["prob__tone__dark"] >= 0.5) == (real["pred__tone"] == "dark")).all()
    conf = np.asarray(validity["concepts"]["tone"]["confusion"], dtype=float)
    rates = 1 - np.diag(conf) / conf.sum(axis=1)
    assert rates[0] == pytest.approx(0.1, abs=0.08) and rates[1] == pytest.approx(0.3, abs=0.1)
    assert bank.validity["concepts"]["tone"]["confusion"] == before  # the bank is untouched


def test_corrected_share_is_the_closed_form_of_the_confusion(bank):
    from audit.measure import predictions_to_results

    s = Scenario("x", reference_share=0.5, audited_share=0.4, n_reference=800, n_audited=800,
                 decoder_errors={"dark": 0.2, "light": 0.05})
    pred, validity, share = replicate_predictions(bank, s, np.random.default_rng(3))
    results = predictions_to_results(pred, bank.concept_set, validity, settings=FAST)
    rep = results_to_replicate(results, s, sample_share=share)
    gen = pred[pred["source"] == "generated"]
    raw = float(np.mean(gen["pred__tone"] == "dark"))
    conf = np.asarray(validity["concepts"]["tone"]["confusion"], dtype=float)
    a0, a1 = conf[0, 0] / conf[0].sum(), conf[1, 1] / conf[1].sum()
    assert rep.raw == pytest.approx(raw)
    assert rep.corrected == pytest.approx((raw - (1 - a0)) / (a0 + a1 - 1))
    assert rep.ci[0] <= rep.corrected <= rep.ci[1]


def test_large_planted_gap_is_found_in_every_replicate(bank):
    s = Scenario("gap", reference_share=0.5, audited_share=0.25, n_reference=1000,
                 n_audited=1000)
    res = run_scenario(bank, s, replicates=4, settings=FAST)
    assert all(r.fires and r.severity == "high" and r.significant for r in res.replicates)
    assert all(r.corrected < r.reference - 0.15 for r in res.replicates)


def test_no_gap_gives_no_high_or_medium_finding_in_most_replicates(bank):
    s = Scenario("null", concept="stroke", group="thick", reference_share=0.5,
                 audited_share=0.5, n_reference=1000, n_audited=1000)
    res = run_scenario(bank, s, replicates=4, settings=FAST)
    quiet = [r.severity not in ("high", "medium") and not r.significant for r in res.replicates]
    assert sum(quiet) >= 3


def test_correction_beats_raw_shares_when_the_decoder_errs(bank):
    s = Scenario("weak", reference_share=0.5, audited_share=0.4, n_reference=1000,
                 n_audited=1000, decoder_errors={"dark": 0.25, "light": 0.05})
    f = run_scenario(bank, s, replicates=4, settings=FAST).figures()
    assert f["corrected_mae"][0] < f["raw_mae"][0]
    assert f["raw_mae"][0] > 0.05          # decoded shares are biased by about 8 points


def _rep(truth: float, corrected: float, severity: str | None) -> Replicate:
    return Replicate(truth=truth, sample_share=truth, reference=0.5, raw=corrected + 0.02,
                     corrected=corrected, ci=(corrected - 0.02, corrected + 0.02),
                     gap_ci=(-0.2, -0.1), severity=severity, p_value=None, p_holm=None,
                     significant=False, other_fires=False)


def test_summary_pools_planted_and_null_scenarios_apart():
    gap = ScenarioResult(Scenario("g", audited_share=0.4),
                         (_rep(0.4, 0.41, "high"), _rep(0.4, 0.43, None),
                          _rep(0.4, 0.40, "low"), _rep(0.4, 0.39, "info")))
    null = ScenarioResult(Scenario("n", audited_share=0.5), (_rep(0.5, 0.5, "medium"),
                                                            _rep(0.5, 0.53, None)))
    s = summarize([gap, null])
    assert s["detection"] == pytest.approx((0.5, np.sqrt(0.25 / 4), 4))
    assert s["false_alarm"][:2] == pytest.approx((0.5, 0.5 / np.sqrt(2)))
    errors = np.array([0.01, 0.03, 0.0, 0.01, 0.0, 0.03])
    assert s["corrected_mae"][0] == pytest.approx(errors.mean())
    assert s["corrected_mae"][1] == pytest.approx(errors.std(ddof=1) / np.sqrt(6))
    assert s["raw_mae"][0] == pytest.approx(np.mean([0.03, 0.05, 0.02, 0.01, 0.02, 0.05]))
    assert s["coverage"][0] == pytest.approx(4 / 6)
    assert summary_line(s) == ("detection=0.50 false_alarm=0.50 corrected_mae=0.013 "
                               "raw_mae=0.030 coverage=0.67")


@pytest.mark.parametrize("kwargs, words", [
    ({"concept": "digit"}, "cannot be planted"),
    ({"group": "thick"}, "tone has groups"),
    ({"audited_share": 1.5}, "audited_share=1.5 must be a share"),
    ({"decoder_errors": {"grey": 0.1}}, "decoder_errors names group(s) ['grey']"),
    ({"n_audited": 0}, "at least 1"),
])
def test_bad_scenarios_say_what_is_wrong(kwargs, words):
    with pytest.raises(ConfigError) as err:
        Scenario("bad", **kwargs)
    assert words in str(err.value) and "'bad'" in str(err.value)
