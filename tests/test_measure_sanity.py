"""Discriminator sanity (audit/measure/sanity.py): the AUC against scikit-learn, its DeLong
interval against the U-statistic variance by brute force, and the caveats on synthetic
prediction tables with a planted good, random, 1%-accepting and constant discriminator."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from audit.config import MeasureSettings
from audit.measure import predictions_to_results, validate_results
from audit.measure.sanity import WEAK_AUC, auc_delong, discriminator_sanity, sanity_words
from audit.validation.predictions import DIGITS_PLANTED, Planted, synthetic_predictions


def _brute_delong(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """AUC and DeLong's variance from pairwise comparisons (O(M N), no ranks)."""
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return float(psi.mean()), float(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))


@pytest.mark.parametrize("seed", range(4))
def test_auc_and_delong_interval_against_references(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pos = np.round(rng.normal(0.8, 1, 60 + seed), 1)       # rounded: ties on purpose
    neg = np.round(rng.normal(0.0, 1, 90), 1)
    auc, ci, method = auc_delong(pos, neg)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    assert auc == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)
    ref_auc, var = _brute_delong(pos, neg)
    half = 1.959963984540054 * np.sqrt(var)
    assert method == "delong"
    assert ci == pytest.approx([ref_auc - half, ref_auc + half], abs=1e-10)


def test_clustered_interval_of_copied_images_equals_the_originals() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.5, 1, 80), rng.normal(0, 1, 70)
    auc, ci, _ = auc_delong(pos, neg)
    copies = 3
    auc3, ci3, method = auc_delong(np.repeat(pos, copies), np.repeat(neg, copies),
                                   pos_clusters=np.repeat(np.arange(80), copies),
                                   neg_clusters=np.repeat(np.arange(70), copies) + 1000)
    assert method == "obuchowski"
    assert auc3 == pytest.approx(auc) and ci3 == pytest.approx(ci)
    _, naive, _ = auc_delong(np.repeat(pos, copies), np.repeat(neg, copies))
    assert naive[1] - naive[0] < ci[1] - ci[0]           # copies as images: too narrow


def test_complete_separation_has_a_positive_width_interval() -> None:
    auc, ci, method = auc_delong(np.arange(40) + 100.0, np.arange(30, dtype=float))
    assert auc == 1.0 and method == "wilson_min_n"
    assert ci[1] == pytest.approx(1.0) and ci[0] == pytest.approx(proportion_confint(30, 30,
                                                                       method="wilson")[0])


def _run(cs, planted: Planted, *, seed: int = 5, n: int = 600, scores=None):
    frame, validity = synthetic_predictions(n, n, cs, seed=seed, planted=planted)
    if scores is not None:
        frame.loc[frame["split"] == "audit", "score"] = scores
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=100))
    validate_results(res)
    return frame, res


#: Dark images scored far lower, by real and generated alike: adverse impact, whatever the D.
SHIFT = {("tone", "dark", "real"): -1.5, ("tone", "dark", "generated"): -1.5}


def test_a_working_discriminator_passes_and_its_figures_are_right(cs) -> None:
    frame, res = _run(cs, DIGITS_PLANTED)
    d = res["discriminator"]
    assert d["problems"] == [] and not d["constant"]
    audit = frame[frame["split"] == "audit"].dropna(subset=["score"])
    y = (audit["source"] == "real").to_numpy()
    assert d["separation"]["auc"] == pytest.approx(roc_auc_score(y, audit["score"]))
    assert d["separation"]["n_real"] == int(y.sum())
    assert d["separation"]["n_generated"] == int((~y).sum())
    lo, hi = d["separation"]["ci"]
    assert 0.5 < lo < d["separation"]["auc"] < hi
    acc = d["acceptance"]["real"]
    assert acc["k"] == int((audit["score"][y] > 0).sum())
    assert acc["ci"] == pytest.approx(proportion_confint(acc["k"], acc["n"], method="wilson"))
    q = d["scores"]["real"]["quantiles"]
    assert q["q50"] == pytest.approx(float(np.median(audit["score"][y])))
    assert list(res)[:3] == ["schema_version", "meta", "discriminator"]
    assert sanity_words(d).startswith("discriminator sanity: ROC AUC")


def test_random_discriminator_caps_treatment_findings_with_the_caveat(cs) -> None:
    sane = Planted(score_shift=SHIFT)                       # real 1.0 vs generated -0.5
    _, good = _run(cs, sane)
    good_trt = [f for f in good["findings"] if f["kind"] == "treatment"]
    assert any(f["severity"] == "high" for f in good_trt)    # found when the D works
    random = Planted(score_shift=SHIFT, real_score_mean=0.0, generated_score_mean=0.0)
    _, res = _run(cs, random)
    d = res["discriminator"]
    assert [p["kind"] for p in d["problems"]] == ["chance_separation"]
    assert d["separation"]["ci"][0] <= 0.5 <= d["separation"]["ci"][1]
    trt = [f for f in res["findings"] if f["kind"] == "treatment"]
    assert trt, "the planted gap still shows, but only as weak evidence"
    for f in trt:
        assert f["severity"] in ("low", "info")
        assert "Caveat: the discriminator does not separate real from generated" in f["summary"]
        assert f["evidence"]["discriminator_caveat"]
    assert "F-DSC-chance_separation" in {f["id"] for f in res["findings"]}
    for v in res["verdicts"]:
        assert v["reason"].startswith("caveat on treatment: the discriminator does not")
    assert sanity_words(d).startswith("discriminator FAILS sanity")


def test_a_barely_separating_discriminator_is_flagged_like_a_random_one(cs) -> None:
    # real 0.0 vs generated -0.2 (sd 1): AUC about 0.55, its interval above 0.5 at n = 1,500
    weak = Planted(score_shift=SHIFT, real_score_mean=0.0, generated_score_mean=-0.2)
    _, res = _run(cs, weak, n=1500)
    d = res["discriminator"]
    lo, hi = d["separation"]["ci"]
    assert lo > 0.5 and hi < WEAK_AUC
    assert [p["kind"] for p in d["problems"]] == ["weak_separation"]
    trt = [f for f in res["findings"] if f["kind"] == "treatment"]
    assert trt and all(f["severity"] in ("low", "info") and "barely separates" in f["summary"]
                       for f in trt)
    _, good = _run(cs, Planted(score_shift=SHIFT))          # AUC about 0.86: no problem
    assert good["discriminator"]["problems"] == []


def test_discriminator_accepting_one_percent_of_reals_is_flagged(cs) -> None:
    planted = Planted(score_shift=SHIFT, real_score_mean=-2.33, generated_score_mean=-4.5)
    _, res = _run(cs, planted)
    d = res["discriminator"]
    assert d["acceptance"]["real"]["value"] < 0.05
    assert [p["kind"] for p in d["problems"]] == ["acceptance_extreme"]
    trt = [f for f in res["findings"] if f["kind"] == "treatment"]
    assert trt and all(f["severity"] in ("low", "info") and "Caveat" in f["summary"]
                       for f in trt)


def test_constant_discriminator_gets_no_treatment_verdict_and_one_finding(cs) -> None:
    _, res = _run(cs, Planted(score_shift=SHIFT), scores=0.25)
    d = res["discriminator"]
    assert d["constant"] and [p["kind"] for p in d["problems"]] == ["constant_score"]
    assert not [f for f in res["findings"] if f["kind"] == "treatment"]
    dsc = [f for f in res["findings"] if f["kind"] == "discriminator"]
    assert [f["id"] for f in dsc] == ["F-DSC-constant_score"]
    assert "one score to every image" in dsc[0]["summary"]
    for sec in res["treatment"]:
        assert all(r["four_fifths"] == "no_verdict" for r in sec["impact"])
    for v in res["verdicts"]:
        assert v["reason"].startswith("treatment not judged")


def test_sanity_leaves_out_invalid_scores_and_handles_one_source() -> None:
    scores = np.array([1.0, 2.0, np.nan, 0.0, -1.0])
    source = np.array([0, 0, 0, 1, 1])
    d = discriminator_sanity(scores, source, accept_threshold=0.5)
    assert d["separation"]["n_real"] == 2 and d["separation"]["auc"] == 1.0
    only_real = discriminator_sanity(scores[:2], source[:2], accept_threshold=0.5)
    assert only_real["separation"]["auc"] is None and only_real["separation"]["ci"] is None


def test_report_opens_with_the_discriminator_figures(cs) -> None:
    from audit.report import results_to_html

    _, res = _run(cs, Planted(score_shift=SHIFT, real_score_mean=0.0, generated_score_mean=0.0))
    html = results_to_html(res)
    summary = html[html.index('id="h-summary"'):]
    assert summary.index("discriminator-sanity") < summary.index("Verdict per protected")
    assert "The discriminator fails a sanity check" in summary
    assert "ROC AUC, real vs generated" in summary
