"""Shares on one basis, verdicts that weigh significance, one test per binary concept,
small groups in representation, and no correction under ``unknown_below``."""

from __future__ import annotations

import numpy as np
import pytest

from audit.config import MeasureSettings
from audit.measure import predictions_to_results, validate_results
from audit.measure.findings import verdicts
from audit.validation.predictions import Planted, synthetic_predictions


def _rep(results: dict, name: str) -> dict:
    return next(s for s in results["representation"] if s["concept"] == name)


def _row(section: dict, group: str) -> dict:
    return next(r for r in section["rows"] if r["group"] == group)


# ------------------------------------------------------------------ one basis


def _same_truth(cs, *, true_known: float, n: int = 5000):
    # The same truth among real and generated images (20% dark), a weak tone decoder.
    plant = Planted(real_shares={"tone": {"dark": 0.2}}, generated_shares={"tone": {"dark": 0.2}},
                    accuracy={"tone": 0.85, "stroke": 0.99, "digit": 0.9},
                    true_known=true_known, n_test=2000)
    return synthetic_predictions(n, n, cs, seed=1, planted=plant)


def test_no_gap_without_real_labels_and_a_weak_decoder(cs) -> None:
    # Regression: real shares were decoded but generated ones corrected, which gave a
    # gap of -0.058 [-0.091, -0.027] and F-REP-tone-dark where there is no gap.
    frame, validity = _same_truth(cs, true_known=0.0)
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=200))
    validate_results(res)
    sec = _rep(res, "tone")
    assert sec["correction"]["applied"] and sec["correction"]["basis"] == "true_and_corrected"
    assert "5000 real" in sec["correction"]["note"]
    for row in sec["rows"]:
        lo, hi = row["gap"]["ci"]
        assert lo <= 0.0 <= hi
        assert not row["under_represented"]
    assert not any(f["kind"] == "representation" and f["concept"] == "tone"
                   for f in res["findings"])
    # No representation gap, and the share tests could have seen one; the generated
    # scoring rates (about 7%) are too low for 5,000 images to detect an impact ratio of
    # 0.8 at the Holm level, so the verdict says so rather than "pass".
    assert not any(r["insufficient_evidence"] for r in sec["rows"])
    verdict = {v["concept"]: v for v in res["verdicts"]}["tone"]
    assert verdict["verdict"] == "insufficient_evidence"
    assert "(generated)" in verdict["reason"] and "(real)" not in verdict["reason"]


def test_unlabelled_real_part_is_corrected_in_closed_form(cs) -> None:
    # Half the real images labelled: the real share is the labelled truth plus the
    # unlabelled part corrected with A (closed form for two groups), weighted by counts.
    frame, validity = _same_truth(cs, true_known=0.5, n=3000)
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=0))
    real = frame[(frame["split"] == "audit") & (frame["source"] == "real")]
    lab = real[real["true__tone"].notna()]
    unl = real[real["true__tone"].isna()]
    conf = np.asarray(validity["concepts"]["tone"]["confusion"], dtype=float)
    order = validity["concepts"]["tone"]["groups"]
    a = conf / conf.sum(axis=1, keepdims=True)
    d, li = order.index("dark"), order.index("light")
    p_hat = float(np.mean(unl["pred__tone"] == "dark"))
    q = np.clip((p_hat - a[li, d]) / (a[d, d] - a[li, d]), 0.0, 1.0)
    want = (float((lab["true__tone"] == "dark").sum()) + len(unl) * q) / len(real)
    row = _row(_rep(res, "tone"), "dark")
    assert row["real"]["value"] == pytest.approx(want, abs=1e-9)
    assert row["real"]["n"] == len(real)
    assert _rep(res, "tone")["correction"]["note"].count(f"{len(unl)} real") == 1


# ------------------------------------------------------------------ unknown_below


def test_unknown_below_turns_the_correction_off(cs) -> None:
    frame, validity = _same_truth(cs, true_known=1.0, n=2000)
    res = predictions_to_results(frame, cs, validity,
                                 settings=MeasureSettings(n_boot=50, unknown_below=0.7))
    validate_results(res)
    sec = _rep(res, "tone")
    corr = sec["correction"]
    assert not corr["applied"] and corr["method"] == "none" and corr["basis"] == "decoded"
    assert "unknown_below" in corr["note"] and corr["confusion_n"] > 0
    # Both sides count decoded groups, the unsure images left out of both.
    audit = frame[frame["split"] == "audit"]
    sure = audit[audit[["prob__tone__light", "prob__tone__dark"]].max(axis=1) >= 0.7]
    for source, col in (("real", "real"), ("generated", "generated_corrected")):
        part = sure[sure["source"] == source]
        want = float(np.mean(part["pred__tone"] == "dark"))
        assert _row(sec, "dark")[col]["value"] == pytest.approx(want, abs=1e-12)
    row = _row(sec, "dark")
    assert row["generated_corrected"]["value"] == row["generated_raw"]["value"]
    assert sec["n_unknown_real"] == int((audit["source"] == "real").sum()
                                        - (sure["source"] == "real").sum())
    on = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=0))
    assert _rep(on, "tone")["correction"]["applied"]


# ------------------------------------------------------------------ one test per binary concept


def test_binary_concepts_enter_the_family_once(cs) -> None:
    from statsmodels.stats.multitest import multipletests

    frame, validity = synthetic_predictions(800, 800, cs, seed=3, planted=Planted(
        generated_shares={"tone": {"dark": 0.4}}))
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=0))
    tests = {t["id"]: t for t in res["tests"]}
    for name, (g0, g1) in (("tone", ("light", "dark")), ("stroke", ("thin", "thick"))):
        first, second = tests[f"T-REP-{name}-{g0}"], tests[f"T-REP-{name}-{g1}"]
        assert "duplicate_of" not in first and second["duplicate_of"] == first["id"]
        assert second["p_value"] == first["p_value"]
        assert (second["p_holm"], second["p_bh"]) == (first["p_holm"], first["p_bh"])
        assert second["counts"]["k1"] + first["counts"]["k1"] == first["counts"]["n1"]
    # The intersection's four cells are four distinct tests.
    assert not any(t.get("duplicate_of") for t in res["tests"] if t["concept"] == "tone+stroke")
    family = [t for t in res["tests"] if not t.get("duplicate_of")]
    holm = multipletests([t["p_value"] for t in family], method="holm")[1]
    bh = multipletests([t["p_value"] for t in family], method="fdr_bh")[1]
    for t, h, b in zip(family, holm, bh, strict=True):
        assert t["p_holm"] == pytest.approx(h) and t["p_bh"] == pytest.approx(b)
    assert len(family) == len(res["tests"]) - 2
    f = next(f for f in res["findings"] if f["id"] == "F-REP-tone-dark")
    assert f["p_holm"] == tests["T-REP-tone-dark"]["p_holm"]


# ------------------------------------------------------------------ small groups


def test_small_groups_get_numbers_but_no_representation_finding(cs) -> None:
    # 8% of 300 real images are dark (24 < min_group_n = 30); the generator makes none.
    plant = Planted(real_shares={"tone": {"dark": 0.08}}, generated_shares={"tone": {"dark": 0.0}},
                    accuracy={"tone": 0.995})
    frame, validity = synthetic_predictions(300, 1500, cs, seed=7, planted=plant)
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=50))
    validate_results(res)
    row = _row(_rep(res, "tone"), "dark")
    assert row["real"]["k"] < 30 and row["small"]
    assert row["gap"]["value"] < -0.05 and row["gap"]["ci"] is not None
    assert not row["under_represented"]
    ids = {f["id"] for f in res["findings"]}
    assert "F-REP-tone-dark" not in ids
    # With a smaller min_group_n the same numbers make a finding.
    res2 = predictions_to_results(frame, cs, validity,
                                  settings=MeasureSettings(n_boot=50, min_group_n=10))
    assert "F-REP-tone-dark" in {f["id"] for f in res2["findings"]}


def test_expected_not_observed_generated_count_makes_a_group_small(cs) -> None:
    # 40 generated images: 20% expected dark is 8 < 30, whatever the generator made.
    plant = Planted(real_shares={"tone": {"dark": 0.2}}, generated_shares={"tone": {"dark": 0.0}},
                    accuracy={"tone": 0.995})
    frame, validity = synthetic_predictions(1000, 40, cs, seed=8, planted=plant)
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=20))
    assert _row(_rep(res, "tone"), "dark")["small"]
    assert "F-REP-tone-dark" not in {f["id"] for f in res["findings"]}


# ------------------------------------------------------------------ verdicts weigh significance


def _sections(kind: str, finding: dict) -> tuple[list, list, list]:
    rep = [{"concept": "tone", "concepts": ["tone"], "protected": True,
            "rows": [{"group": "dark", "small": False}, {"group": "light", "small": False}]}]
    trt = [{"concept": "tone", "rows": [{"group": "dark", "small": False, "excluded": False}]}]
    base = {"concept": "tone", "kind": kind, "severity": "low", "id": f"F-{kind}"}
    return rep, trt, [base | finding]


@pytest.mark.parametrize(("kind", "finding", "verdict"), [
    ("treatment", {"p_holm": 1.0, "ci": [0.58, 0.97], "threshold": 0.8},
     "possible_adverse_impact"),
    ("treatment", {"p_holm": 1.0, "ci": [0.5, 0.79], "threshold": 0.8}, "adverse_impact"),
    ("treatment", {"p_holm": 0.01, "ci": [0.5, 0.9], "threshold": 0.8}, "adverse_impact"),
    ("treatment", {"p_holm": None, "ci": None, "threshold": 0.8},
     "possible_adverse_impact"),
    ("representation", {"p_holm": 1.0, "ci": [-0.09, 0.01], "threshold": -0.05},
     "possibly_under_represented"),
    ("representation", {"p_holm": 1.0, "ci": [-0.2, -0.06], "threshold": -0.05},
     "under_represented"),
    ("representation", {"p_holm": 0.001, "ci": [-0.2, 0.01], "threshold": -0.05},
     "under_represented"),
    ("coverage", {"p_holm": 0.3, "ci": [0.0, 0.02], "threshold": 0.01},
     "possibly_under_represented"),
])
def test_verdicts_need_significance(kind, finding, verdict) -> None:
    (v,) = verdicts(*_sections(kind, finding), {}, alpha=0.05)
    assert v["verdict"] == verdict
    assert v["findings"] == [f"F-{kind}"]
    assert "significant" in v["reason"]


def test_a_significant_finding_outranks_a_weaker_kind(cs) -> None:
    rep, trt, own = _sections("treatment", {"p_holm": 1.0, "ci": [0.6, 0.95],
                                            "threshold": 0.8})
    own.append({"concept": "tone", "kind": "representation", "severity": "high",
                "id": "F-REP", "p_holm": 0.0, "ci": [-0.3, -0.2], "threshold": -0.05})
    (v,) = verdicts(rep, trt, own, {}, alpha=0.05)
    assert v["verdict"] == "under_represented"


def test_every_significant_verdict_rests_on_a_significant_finding(cs) -> None:
    frame, validity = _same_truth(cs, true_known=0.0, n=3000)
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=200))
    found = {f["id"]: f for f in res["findings"]}
    # tone+stroke: one ratio under 0.8 whose Holm p is 1 and whose interval reaches over it.
    assert {v["concept"]: v["verdict"] for v in res["verdicts"]}["tone+stroke"] == \
        "possible_adverse_impact"
    for v in res["verdicts"]:
        if v["verdict"] in ("adverse_impact", "under_represented"):
            assert any((found[i]["p_holm"] or 1.0) < 0.05
                       or (found[i]["ci"] and found[i]["ci"][1] < found[i]["threshold"])
                       for i in v["findings"])
        if "not significant" in v["verdict"]:
            assert v["findings"] and all((found[i]["p_holm"] or 1.0) >= 0.05
                                         for i in v["findings"])
