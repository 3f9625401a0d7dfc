"""predictions_to_results end to end on synthetic tables with planted truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.config import MeasureSettings
from audit.errors import DataError, RunFolderError
from audit.measure import (
    SCHEMA_VERSION,
    measure_run,
    predictions_to_results,
    results_to_tables,
    validate_results,
)
from audit.runfolder import claim
from audit.validation.predictions import DIGITS_PLANTED, Planted, synthetic_predictions

FIXTURE = Path(__file__).parent / "fixtures" / "results_digits.json"


@pytest.fixture(scope="module")
def planted(cs):
    return synthetic_predictions(1500, 1500, cs, seed=1, planted=DIGITS_PLANTED)


@pytest.fixture(scope="module")
def results(cs, planted):
    frame, validity = planted
    return predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=200),
                                  meta={"audit_id": "t"})


def _section(results: dict, kind: str, name: str) -> dict:
    for sec in results[kind]:
        if sec["concept"] == name:
            return sec
    for inter in results["intersections"]:
        if inter["name"] == name:
            return inter[kind]
    raise KeyError(name)


def _row(section: dict, group: str, source: str | None = None) -> dict:
    return next(r for r in section["rows"]
                if r["group"] == group and (source is None or r["source"] == source))


# ------------------------------------------------------------------ schema and fields


def test_results_validate_against_the_schema(results) -> None:
    validate_results(results)
    assert results["schema_version"] == SCHEMA_VERSION == 2
    assert results["meta"]["audit_id"] == "t"
    assert results["bootstrap"] == {**results["bootstrap"], "n_boot": 200, "seed": 0,
                                    "method": "percentile", "stratified": False}
    json.dumps(results, allow_nan=False)               # plain JSON, no NaN


def test_fixture_for_the_report_is_valid_and_up_to_date() -> None:
    from audit.validation.predictions import synthetic_results

    on_disk = json.loads(FIXTURE.read_text())
    validate_results(on_disk)
    fresh = synthetic_results()
    assert on_disk == json.loads(json.dumps(fresh)), (
        "tests/fixtures/results_digits.json is stale: regenerate it as the docstring of "
        "audit.validation.predictions.synthetic_results shows")


def test_validator_reports_where_results_break_the_schema(results) -> None:
    broken = json.loads(json.dumps(results))
    broken["findings"][0].pop("summary")
    with pytest.raises(DataError, match="findings/0"):
        validate_results(broken)


def test_every_finding_has_every_field(results) -> None:
    fields = {"id", "kind", "severity", "concept", "groups", "intersection", "source", "metric",
              "value", "ci", "n", "p_value", "p_holm", "p_bh", "threshold", "evidence",
              "validity", "confidence", "summary"}
    assert results["findings"]
    for f in results["findings"]:
        assert fields <= set(f), f["id"]
        assert {"decodable", "balanced_accuracy", "group_accuracy"} <= set(f["validity"])
        assert f["summary"].endswith(".") and len(f["summary"]) > 40


def test_the_finding_record_names_the_schema_fields_in_order(results) -> None:
    from audit.measure.findings import FindingRecord
    from audit.measure.results import results_schema

    schema = results_schema()["$defs"]["finding"]
    assert list(FindingRecord.__annotations__) == list(schema["properties"]) \
        == schema["required"]
    for f in results["findings"]:                   # each finding in that order, no more
        assert list(f) == list(schema["properties"]), f["id"]


def test_every_shown_number_carries_n_and_interval(results) -> None:
    def walk(node):
        if isinstance(node, dict):
            if {"value", "ci", "n"} <= set(node):
                yield node
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)

    estimates = list(walk(results["representation"] + results["treatment"]
                          + results["intersections"]))
    assert len(estimates) > 100
    for est in estimates:
        assert isinstance(est["n"], int)
        if est["value"] is not None and est["n"] >= 30:
            assert est["ci"] is not None and est["ci"][0] <= est["ci"][1] + 1e-12


# ------------------------------------------------------------------ planted truth


def test_planted_gaps_are_found(results) -> None:
    ids = {f["id"]: f for f in results["findings"]}
    assert ids["F-REP-tone-dark"]["severity"] == "high"
    assert ids["F-TRT-stroke-thick-generated"]["severity"] == "high"
    verdict = {v["concept"]: v["verdict"] for v in results["verdicts"]}
    assert verdict["stroke"] == "adverse_impact"
    assert verdict["tone"] in ("adverse_impact", "under_represented")
    assert not any(f["concept"] == "stroke" and f["kind"] == "representation"
                   for f in results["findings"])


def test_no_gap_reported_where_there_is_none(cs) -> None:
    frame, validity = synthetic_predictions(1500, 1500, cs, seed=5, planted=Planted())
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=50))
    serious = [f["id"] for f in res["findings"]
               if f["kind"] != "decoder_validity" and f["severity"] in ("high", "medium")]
    assert serious == []
    assert all(t["p_holm"] >= 0.05 for t in res["tests"])


def test_corrected_share_recovers_the_planted_share(cs) -> None:
    # A weak tone decoder (accuracy 0.8) inflates the decoded share of the rare group:
    # 0.2 * 0.8 + 0.8 * 0.2 = 0.32; the correction must bring it back to 0.2.
    plant = Planted(generated_shares={"tone": {"dark": 0.2}}, accuracy={"tone": 0.8},
                    n_test=4000)
    frame, validity = synthetic_predictions(500, 8000, cs, seed=2, planted=plant)
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=300))
    row = _row(_section(res, "representation", "tone"), "dark")
    assert row["generated_raw"]["value"] == pytest.approx(0.32, abs=0.02)
    assert row["generated_corrected"]["value"] == pytest.approx(0.2, abs=0.02)
    lo, hi = row["generated_corrected"]["ci"]
    assert lo <= 0.2 <= hi
    # The interval includes the uncertainty of A: wider than the raw share's.
    raw_lo, raw_hi = row["generated_raw"]["ci"]
    assert hi - lo > (raw_hi - raw_lo) * 1.2
    # Intersections use their joint confusion, counted on the held-out images.
    inter = _section(res, "representation", "tone+stroke")
    assert inter["correction"]["method"] == "joint_simplex_lstsq"
    assert inter["correction"]["confusion_n"] == 4000
    dark = sum(r["generated_corrected"]["value"] for r in inter["rows"]
               if r["group"].startswith("dark+"))
    assert dark == pytest.approx(0.2, abs=0.03)


@pytest.fixture(scope="module")
def correlated(cs):
    """Tone decoded perfectly on thin strokes and wrongly 30% of the time on thick ones
    (a correlated error), stroke perfectly; generated images 20% dark, 50% thick,
    independently, so each of dark+thin and dark+thick is 10% of them."""
    from audit.decode.train import joint_confusions

    plant = Planted(generated_shares={"tone": {"dark": 0.2}}, n_test=4000,
                    accuracy={"tone": 1.0, "stroke": 1.0, "digit": 1.0})
    frame, validity = synthetic_predictions(500, 8000, cs, seed=3, planted=plant)
    rng = np.random.default_rng(0)
    flip = (frame["pred__stroke"] == "thick").to_numpy() & (rng.random(len(frame)) < 0.3)
    frame["pred__tone"] = np.where(flip, frame["pred__tone"].map({"light": "dark",
                                                                  "dark": "light"}),
                                   frame["pred__tone"])
    light, dark = frame["prob__tone__light"].copy(), frame["prob__tone__dark"].copy()
    frame.loc[flip, "prob__tone__light"], frame.loc[flip, "prob__tone__dark"] = \
        dark[flip], light[flip]
    test = frame[frame["split"] == "test"]
    true, pred = ({c.name: pd.Categorical(test[f"{col}__{c.name}"], categories=c.groups).codes
                   for c in cs.concepts} for col in ("true", "pred"))
    validity["concepts"]["tone"]["confusion"] = np.bincount(
        true["tone"] * 2 + pred["tone"], minlength=4).reshape(2, 2).tolist()
    validity["intersections"] = joint_confusions(
        np.stack([true[c.name] for c in cs.concepts], axis=1), pred, cs)
    return frame, validity


def _dark_shares(frame, validity, cs) -> dict:
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=100))
    validate_results(res)
    sec = _section(res, "representation", "tone+stroke")
    return sec["correction"], {r["group"]: r["generated_corrected"] for r in sec["rows"]
                               if r["group"].startswith("dark+")}


def test_joint_confusion_corrects_a_correlated_decoder_error(cs, correlated) -> None:
    frame, validity = correlated
    correction, joint = _dark_shares(frame, validity, cs)
    assert correction["method"] == "joint_simplex_lstsq"
    assert "joint confusion measured on 4000 held-out images" in correction["note"]
    for group in ("dark+thin", "dark+thick"):
        assert joint[group]["value"] == pytest.approx(0.1, abs=0.02), group
        lo, hi = joint[group]["ci"]
        assert lo <= 0.1 <= hi, group
    # The Kronecker product spreads tone's errors over both strokes (accuracy 0.85 on
    # each): about 0.036 dark+thin and 0.164 dark+thick.
    kron_validity = {k: v for k, v in validity.items() if k != "intersections"}
    correction, kron = _dark_shares(frame, kron_validity, cs)
    assert correction["method"] == "kronecker_simplex_lstsq"
    assert kron["dark+thin"]["value"] < 0.06 and kron["dark+thick"]["value"] > 0.14
    assert not kron["dark+thick"]["ci"][0] <= 0.1 <= kron["dark+thick"]["ci"][1]


def test_fallback_to_the_kronecker_product_is_recorded(cs, correlated) -> None:
    frame, validity = correlated
    missing = {k: v for k, v in validity.items() if k != "intersections"}
    correction, _ = _dark_shares(frame, missing, cs)
    assert correction["method"] == "kronecker_simplex_lstsq"
    assert "Kronecker product of per-concept confusions (assumes independent errors)" in \
        correction["note"]
    assert "no joint confusion for tone+stroke" in correction["note"]
    # A joint row without held-out images: the whole intersection falls back, and says why.
    entry = json.loads(json.dumps(validity["intersections"]["tone+stroke"]))
    entry["confusion"][entry["groups"].index("dark+thick")] = [0, 0, 0, 0]
    empty = {**validity, "intersections": {"tone+stroke": entry}}
    correction, _ = _dark_shares(frame, empty, cs)
    assert correction["method"] == "kronecker_simplex_lstsq"
    assert "no held-out image in group(s) ['dark+thick']" in correction["note"]


def test_uniform_reference(cs, planted) -> None:
    frame, validity = planted
    res = predictions_to_results(frame, cs, validity,
                                 settings=MeasureSettings(n_boot=50, reference="uniform"))
    validate_results(res)
    sec = _section(res, "representation", "tone")
    assert sec["reference"] == "uniform"
    assert all(r["reference_share"] == 0.5 for r in sec["rows"])
    tone_tests = [t for t in res["tests"] if t["concept"] == "tone" and t["kind"] ==
                  "representation"]
    assert {t["method"] for t in tone_tests} == {"binomial_exact"}
    assert "F-REP-tone-dark" in {f["id"] for f in res["findings"]}


# ------------------------------------------------------------------ Fairlearn is the source


def _rows_for_fairlearn(frame: pd.DataFrame, concept: str) -> pd.DataFrame:
    audit = frame[(frame["split"] == "audit") & np.isfinite(frame["score"])]
    group = audit[f"true__{concept}"].where(audit[f"true__{concept}"].notna(),
                                            audit[f"pred__{concept}"])
    return pd.DataFrame({"group": group.astype(str).to_numpy(),
                         "y_true": (audit["source"] == "real").astype(int).to_numpy(),
                         "y_pred": (audit["score"] > 0).astype(int).to_numpy()})


@pytest.mark.parametrize("concept", ["tone", "stroke", "digit"])
def test_per_group_values_equal_metricframe_on_rows(results, planted, concept) -> None:
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    frame, _ = planted
    rows = _rows_for_fairlearn(frame, concept)
    mf = MetricFrame(metrics={"selection_rate": selection_rate,
                              "true_positive_rate": true_positive_rate,
                              "false_positive_rate": false_positive_rate},
                     y_true=rows["y_true"], y_pred=rows["y_pred"],
                     sensitive_features=rows["group"])
    fair = _section(results, "treatment", concept)["fairlearn"]
    assert sorted(fair["groups_used"]) == sorted(mf.by_group.index)
    for entry in fair["per_group"]:
        for metric in ("selection_rate", "true_positive_rate", "false_positive_rate"):
            assert entry[metric]["value"] == pytest.approx(mf.by_group.loc[entry["group"], metric],
                                                           abs=1e-12)
    args = dict(y_true=rows["y_true"], y_pred=rows["y_pred"], sensitive_features=rows["group"])
    assert fair["demographic_parity_difference"]["value"] == pytest.approx(
        demographic_parity_difference(**args), abs=1e-12)
    assert fair["demographic_parity_ratio"]["value"] == pytest.approx(
        demographic_parity_ratio(**args), abs=1e-12)
    assert fair["equalized_odds_difference"]["value"] == pytest.approx(
        equalized_odds_difference(**args), abs=1e-12)
    # Per source: acceptance is the TPR on real and the FPR on generated images.
    trt = _section(results, "treatment", concept)
    for g in mf.by_group.index:
        assert _row(trt, g, "real")["acceptance_rate"]["value"] == pytest.approx(
            mf.by_group.loc[g, "true_positive_rate"], abs=1e-12)
        assert _row(trt, g, "generated")["acceptance_rate"]["value"] == pytest.approx(
            mf.by_group.loc[g, "false_positive_rate"], abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_metricframe_on_cells_equals_metricframe_on_rows(seed: int) -> None:
    from fairlearn.metrics import (
        MetricFrame,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    from audit.measure.treatment import fairlearn_by_cells

    rng = np.random.default_rng(seed)
    n = 3000
    rows = pd.DataFrame({"group": rng.choice(list("abcdef"), n, p=[.3, .25, .2, .1, .1, .05]),
                         "y_true": rng.integers(0, 2, n), "y_pred": rng.integers(0, 2, n)})
    cells = rows.value_counts().reset_index(name="count")
    by_cells = fairlearn_by_cells(cells["group"].to_numpy(), cells["y_true"].to_numpy(),
                                  cells["y_pred"].to_numpy(), cells["count"].to_numpy())
    by_rows = MetricFrame(metrics={"selection_rate": selection_rate,
                                   "true_positive_rate": true_positive_rate,
                                   "false_positive_rate": false_positive_rate},
                          y_true=rows["y_true"], y_pred=rows["y_pred"],
                          sensitive_features=rows["group"])
    for metric in ("selection_rate", "true_positive_rate", "false_positive_rate"):
        assert by_cells.by_group[metric].to_numpy() == pytest.approx(
            by_rows.by_group[metric].to_numpy(), abs=1e-12)
    assert by_cells.by_group["count"].to_numpy() == pytest.approx(
        rows["group"].value_counts().sort_index().to_numpy())
    # The bootstrap's own arithmetic on the cells gives the same numbers.
    from audit.measure.treatment import confusion_rates

    table = np.zeros((6, 2, 2))
    for r in cells.itertuples():
        table["abcdef".index(r.group), r.y_true, r.y_pred] = r.count
    ours = confusion_rates(table)
    for metric in ("selection_rate", "true_positive_rate", "false_positive_rate"):
        assert ours[metric] == pytest.approx(by_rows.by_group[metric].to_numpy(), abs=1e-12)


def test_scoring_rate_uses_the_median_of_all_real_scores(results, planted) -> None:
    frame, _ = planted
    audit = frame[frame["split"] == "audit"]
    real = audit[audit["source"] == "real"]
    median = float(np.median(real["score"].dropna()))
    trt = _section(results, "treatment", "tone")
    assert trt["median_real_score"] == pytest.approx(median)
    dark = real[real["true__tone"] == "dark"]
    assert _row(trt, "dark", "real")["scoring_rate"]["value"] == pytest.approx(
        float(np.mean(dark["score"] > median)))
    gen = audit[(audit["source"] == "generated") & (audit["pred__tone"] == "light")]
    finite = gen["score"][np.isfinite(gen["score"])]
    assert _row(trt, "light", "generated")["mean_score"]["value"] == pytest.approx(
        float(finite.mean()))


def test_impact_ratio_is_rate_over_highest_rate(results) -> None:
    trt = _section(results, "treatment", "stroke")
    rows = [r for r in trt["impact"] if r["metric"] == "acceptance_rate"
            and r["source"] == "generated"]
    top = max(rows, key=lambda r: r["rate"]["value"])
    for r in rows:
        assert r["highest_group"] == top["group"]
        assert r["ratio"]["value"] == pytest.approx(r["rate"]["value"] / top["rate"]["value"])
        assert r["four_fifths"] == ("adverse_impact" if r["ratio"]["value"] < 0.8 else "pass")
    thick = next(r for r in rows if r["group"] == "thick")
    test = next(t for t in results["tests"] if t["id"] == thick["test_id"])
    assert test["counts"]["n1"] == thick["rate"]["n"] and test["p_holm"] >= test["p_value"]
    assert test["p_bh"] <= test["p_holm"]


# ------------------------------------------------------------------ small groups, unknowns


def _tiny_group_frame(cs):
    plant = Planted(real_shares={"tone": {"dark": 0.012}},
                    generated_shares={"tone": {"dark": 0.03}}, accuracy={"tone": 0.995})
    return synthetic_predictions(1500, 400, cs, seed=3, planted=plant)


def test_small_and_excluded_groups(cs) -> None:
    frame, validity = _tiny_group_frame(cs)
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=50))
    validate_results(res)
    trt = _section(res, "treatment", "tone")
    real_dark = _row(trt, "dark", "real")
    assert real_dark["n"] < 30 and real_dark["small"] and real_dark["excluded"]
    assert real_dark["scoring_rate"]["value"] is not None      # numbers, but no verdict
    excl = [e for e in res["exclusions"] if e["concept"] == "tone" and e["group"] == "dark"
            and e["source"] == "real"]
    assert len(excl) == 1 and excl[0]["n"] == real_dark["n"] and "2%" in excl[0]["reason"]
    assert excl[0]["acceptance_rate"] == real_dark["acceptance_rate"]["value"]
    impact = [r for r in trt["impact"] if r["group"] == "dark" and r["source"] == "real"]
    assert all(r["four_fifths"] == "no_verdict" and r["ratio"]["value"] is None
               for r in impact)
    gen_dark = _row(trt, "dark", "generated")     # 3% of generated: kept but small
    assert gen_dark["small"] and not gen_dark["excluded"]
    gen_impact = [r for r in trt["impact"] if r["group"] == "dark" and r["source"] ==
                  "generated"]
    assert all(r["four_fifths"] == "no_verdict" and "min_group_n" in r["reason"]
               for r in gen_impact)
    assert "dark" not in trt["fairlearn"]["groups_used"]
    assert not any(t["group"] == "dark" and t["kind"] == "treatment" and t["concept"] == "tone"
                   for t in res["tests"])


def test_unknown_group_is_counted_not_dropped(cs, planted) -> None:
    frame, validity = planted
    res = predictions_to_results(frame, cs, validity,
                                 settings=MeasureSettings(n_boot=50, unknown_below=0.7))
    validate_results(res)
    unk = {(u["concept"], u["source"]): u for u in res["unknowns"]}
    gen = unk[("stroke", "generated")]
    audit = frame[frame["split"] == "audit"]
    probs = audit[audit["source"] == "generated"][["prob__stroke__thin", "prob__stroke__thick"]]
    assert gen["n"] == int((probs.max(axis=1) < 0.7).sum()) > 0
    assert unk[("stroke", "real")]["n"] == 0            # real images have true labels
    trt = _section(res, "treatment", "stroke")
    row = _row(trt, "unknown", "generated")
    assert row["n"] == gen["n"] and row["excluded"]
    rep = _section(res, "representation", "stroke")
    assert rep["n_unknown_generated"] == gen["n"]
    assert rep["n_generated"] + gen["n"] == res["counts"]["generated"]


# ------------------------------------------------------------------ degenerate cases


def test_degenerate_cases_are_stated_not_divided_by_zero(cs) -> None:
    frame, validity = synthetic_predictions(300, 300, cs, seed=4, planted=Planted(
        invalid_scores=4))
    gen = frame["source"] == "generated"
    frame.loc[gen, "pred__stroke"] = "thin"                 # all decoded to one group
    frame.loc[gen, "prob__stroke__thin"] = 0.9
    frame.loc[gen, "prob__stroke__thick"] = 0.1
    frame.loc[frame.index[0], "score"] = np.inf
    res = predictions_to_results(frame, cs, validity,
                                 settings=MeasureSettings(n_boot=30, accept_threshold=1e9))
    validate_results(res)
    kinds = {(d["kind"], d.get("concept"), d.get("source")) for d in res["degenerate"]}
    assert ("single_group_present", "stroke", "generated") in kinds
    assert ("empty_group", "stroke", "generated") in kinds
    assert ("zero_highest_rate", "tone", "real") in kinds
    bad = next(d for d in res["degenerate"] if d["kind"] == "invalid_scores")
    assert bad["count"] == 5 and frame["image_id"].iloc[0] in bad["image_ids"]
    assert res["counts"]["invalid_scores"] == 5
    assert all(r["ratio"]["value"] is None for r in _section(res, "treatment", "tone")["impact"]
               if r["metric"] == "acceptance_rate")
    # Means leave the NaN/inf scores out.
    trt = _section(res, "treatment", "tone")
    assert all(r["mean_score"]["value"] is None or np.isfinite(r["mean_score"]["value"])
               for r in trt["rows"])
    assert sum(r["n_invalid_score"] for r in trt["rows"]) == 5


def test_single_group_concept_gets_no_verdict(cs) -> None:
    frame, validity = synthetic_predictions(200, 200, cs, seed=6, planted=Planted(
        real_shares={"stroke": {"thin": 1.0}}, generated_shares={"stroke": {"thin": 1.0}},
        accuracy={"stroke": 1.0}))
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=20))
    validate_results(res)
    trt = _section(res, "treatment", "stroke")
    assert all(r["four_fifths"] == "no_verdict" for r in trt["impact"])
    assert {d["kind"] for d in res["degenerate"]} >= {"single_group_present", "empty_group"}


def test_missing_columns_and_bad_sources_raise_data_error(cs, planted) -> None:
    frame, validity = planted
    with pytest.raises(DataError, match="pred__tone"):
        predictions_to_results(frame.drop(columns=["pred__tone"]), cs, validity,
                               settings=MeasureSettings(n_boot=0))
    bad = frame.copy()
    bad.loc[0, "source"] = "fake"
    with pytest.raises(DataError, match="'real' or 'generated'"):
        predictions_to_results(bad, cs, validity, settings=MeasureSettings(n_boot=0))
    bad = frame.copy()
    bad.loc[0, "pred__tone"] = "purple"
    with pytest.raises(DataError, match="purple"):
        predictions_to_results(bad, cs, validity, settings=MeasureSettings(n_boot=0))


# ------------------------------------------------------------------ re-runs and settings


def test_reruns_are_identical_and_ids_stable(cs, planted, results) -> None:
    frame, validity = planted
    again = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=200),
                                   meta={"audit_id": "t"})
    assert again == results
    other_seed = predictions_to_results(frame.sample(frac=1.0, random_state=0), cs, validity,
                                        settings=MeasureSettings(n_boot=100, seed=9))
    assert [f["id"] for f in other_seed["findings"]] == [f["id"] for f in results["findings"]]
    assert len({f["id"] for f in results["findings"]}) == len(results["findings"])


@pytest.mark.parametrize("extra", [{"interval": "bca"}, {"stratified": True},
                                   {"n_boot": 0}])
def test_bootstrap_options_are_recorded(cs, planted, extra) -> None:
    frame, validity = planted
    settings = MeasureSettings(**{"n_boot": 60, **extra})
    res = predictions_to_results(frame, cs, validity, settings=settings)
    validate_results(res)
    assert res["bootstrap"]["method"] == settings.interval
    assert res["bootstrap"]["stratified"] == settings.stratified
    row = _row(_section(res, "representation", "tone"), "dark")
    assert (row["generated_corrected"]["ci"] is None) == (settings.n_boot == 0)


def test_weak_decoder_marks_findings_low_confidence(cs) -> None:
    plant = Planted(generated_shares={"tone": {"dark": 0.2}}, accuracy={"tone": {"light": 0.95,
                                                                                 "dark": 0.7}})
    frame, validity = synthetic_predictions(1000, 1000, cs, seed=8, planted=plant)
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=50))
    ids = {f["id"]: f for f in res["findings"]}
    assert ids["F-REP-tone-dark"]["confidence"] == "low"
    assert ids["F-VAL-tone-dark"]["kind"] == "decoder_validity"
    assert ids["F-REP-tone-dark"]["validity"]["group_accuracy"]["tone | tone=dark"] < 0.8


def test_not_decodable_concept_gets_that_verdict(cs, planted) -> None:
    frame, validity = planted
    validity = json.loads(json.dumps(validity))
    validity["concepts"]["stroke"]["decodable"] = False
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=20))
    verdict = {v["concept"]: v for v in res["verdicts"]}
    assert verdict["stroke"]["verdict"] == "not_decodable"
    assert verdict["stroke"]["findings"] == ["F-VAL-stroke"]
    assert verdict["tone+stroke"]["verdict"] == "not_decodable"


# ------------------------------------------------------------------ files and CLI


def test_tables(results, tmp_path) -> None:
    from audit.measure import write_tables

    tables = results_to_tables(results)
    assert {"representation", "treatment", "impact", "fairlearn", "tests", "findings",
            "exclusions"} <= set(tables)
    assert len(tables["findings"]) == len(results["findings"])
    assert {"real_ci_low", "real_ci_high", "real_n"} <= set(tables["representation"].columns)
    paths = write_tables(results, tmp_path)
    assert pd.read_parquet(tmp_path / "tests.parquet").shape[0] == len(results["tests"])
    assert all(p.exists() for p in paths)


def _run_folder(tmp_path: Path, cs) -> Path:
    frame, validity = synthetic_predictions(300, 300, cs, seed=0, planted=DIGITS_PLANTED)
    run = tmp_path / "run"
    with claim(run):  # the folder the earlier stages made
        pass
    (run / "decoders").mkdir(parents=True)
    frame.to_parquet(run / "predictions.parquet", index=False)
    (run / "decoders" / "validity.json").write_text(json.dumps(validity))
    return run


def test_measure_run_reads_and_writes_the_run_folder(tmp_path, cs) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunFolderError, match="train-decoders"):
        measure_run(empty, cs, MeasureSettings(n_boot=10))
    run = _run_folder(tmp_path, cs)
    res = measure_run(run, cs, MeasureSettings(n_boot=20), meta={"audit_id": "x"})
    on_disk = json.loads((run / "results.json").read_text())
    assert on_disk == res
    validate_results(on_disk)
    assert (run / "tables" / "findings.csv").exists()


def test_cli_measure(tmp_path, cs) -> None:
    from click.testing import CliRunner

    from audit.cli import cli

    run = _run_folder(tmp_path, cs)
    config = tmp_path / "audit.yaml"
    config.write_text("concept_set: digits_tone\n"
                      "discriminator: {spec: 'builtin:digits-dcgan'}\n"
                      "generator: {spec: 'builtin:digits-dcgan'}\n"
                      "paired: {source: 'builtin:digits'}\n"
                      "real: {source: 'builtin:digits'}\n"
                      "measure: {n_boot: 20}\n"
                      "report: {title: Digits audit}\n"
                      "out: run\n")
    result = CliRunner().invoke(cli, ["measure", str(config)])
    assert result.exit_code == 0, result.output
    assert "results.json" in result.output and "stroke: adverse impact" in result.output
    res = json.loads((run / "results.json").read_text())
    assert res["settings"]["n_boot"] == 20 and res["meta"]["audit_id"]
    assert res["meta"]["title"] == "Digits audit"        # as `gan-audit run` records it
    missing = CliRunner().invoke(cli, ["measure", str(config), "--out", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "train-decoders" in missing.output


def test_missing_coverage_and_distances(cs) -> None:
    plant = Planted(generated_shares={"stroke": {"thick": 0.0}}, accuracy={"stroke": 0.97})
    frame, validity = synthetic_predictions(800, 1500, cs, seed=10, planted=plant)
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=100))
    ids = {f["id"]: f for f in res["findings"]}
    # One fact, one finding: the group is under-represented and under the coverage floor.
    assert "F-COV-stroke-thick" not in ids
    rep = ids["F-REP-stroke-thick"]
    assert rep["kind"] == "representation" and rep["severity"] == "high"
    cov = rep["evidence"]["coverage"]
    assert cov["generated_share"] < 0.01 and cov["floor"] == 0.01 and cov["severity"] == "high"
    assert "coverage floor" in rep["summary"] and "under-represent" in rep["summary"]
    sec = _section(res, "representation", "stroke")
    corr = np.array([r["generated_corrected"]["value"] for r in sec["rows"]])
    ref = np.array([r["reference_share"] for r in sec["rows"]])
    assert sec["distances"]["corrected"]["l1"]["value"] == pytest.approx(np.abs(corr - ref).sum())
    assert sec["distances"]["corrected"]["l2"]["value"] == pytest.approx(
        np.sqrt(((corr - ref) ** 2).sum()))
    assert {v["concept"]: v["verdict"] for v in res["verdicts"]}["stroke"] in (
        "under_represented", "adverse_impact")


@pytest.mark.parametrize("keep", ["real", "generated", "none"])
def test_a_missing_source_is_stated(cs, planted, keep) -> None:
    frame, validity = planted
    sub = frame[(frame["split"] != "audit") | (frame["source"] == keep)]
    res = predictions_to_results(sub, cs, validity, settings=MeasureSettings(n_boot=20))
    validate_results(res)
    missing = {d["source"] for d in res["degenerate"] if d["kind"] == "no_rows"}
    assert missing >= ({"real", "generated"} - {keep})
    if keep != "generated":
        assert all(v["verdict"] == "no_verdict_small_groups" for v in res["verdicts"])


def test_one_schema_version_for_writer_schema_and_renderer() -> None:
    from audit.measure.results import SCHEMA_VERSION, results_schema
    from audit.report.render import SCHEMA_VERSION as READ

    assert results_schema()["properties"]["schema_version"]["const"] == SCHEMA_VERSION == READ


def test_coverage_alone_keeps_its_own_finding(cs) -> None:
    # 3% of real images are dark and none of the generated: under the coverage floor, but
    # not under-represented by under_margin (5 points): an F-COV finding alone.
    plant = Planted(real_shares={"tone": {"dark": 0.03}}, generated_shares={"tone": {"dark": 0.0}},
                    accuracy={"tone": 0.999})
    frame, validity = synthetic_predictions(3000, 3000, cs, seed=11, planted=plant)
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=100))
    ids = {f["id"]: f for f in res["findings"]}
    assert "F-REP-tone-dark" not in ids
    cov = ids["F-COV-tone-dark"]
    assert cov["kind"] == "coverage" and cov["value"] < 0.01
    assert "coverage" not in cov["evidence"]


# ------------------------------------------------------------------ score histograms (#18 item 6)


def test_score_histograms_are_numpy_histograms_of_the_predictions(results, planted) -> None:
    frame, _ = planted
    audit = frame[frame["split"] == "audit"]
    scores = audit["score"].to_numpy(dtype=float)
    edges = np.histogram_bin_edges(scores[np.isfinite(scores)], bins=30)
    for trt in results["treatment"]:
        hist = trt["score_histogram"]
        np.testing.assert_allclose(hist["edges"], edges)
        concept = trt["concept"]
        # the group an image counts in: its true label where known, else the decoded one
        group = audit[f"true__{concept}"].where(audit[f"true__{concept}"].notna(),
                                                audit[f"pred__{concept}"]).astype(str)
        seen = 0
        for source in ("real", "generated"):
            for g in trt["groups"]:
                rows = (audit["source"] == source).to_numpy() & (group == g).to_numpy()
                want = np.histogram(scores[rows], bins=edges)[0]
                got = hist["counts"][source].get(g)
                if rows.any():
                    assert got == want.tolist(), (concept, source, g)
                    seen += int(want.sum())
                else:
                    assert got is None
        assert seen == int(np.isfinite(scores).sum()) > 0  # every finite score, once
    for inter in results["intersections"]:
        assert "score_histogram" not in inter["treatment"]


def test_score_histograms_leave_out_invalid_scores_and_need_a_finite_one(cs, planted) -> None:
    frame, validity = planted
    frame = frame.copy()
    audited = (frame["split"] == "audit").to_numpy()
    finite_before = int(np.isfinite(frame["score"].to_numpy()[audited]).sum())
    first = frame.index[audited & np.isfinite(frame["score"].to_numpy())][:5]
    frame.loc[first, "score"] = np.nan
    out = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=20))
    tone = _section(out, "treatment", "tone")
    total = sum(sum(c) for per in tone["score_histogram"]["counts"].values()
                for c in per.values())
    assert total == finite_before - 5
    frame["score"] = np.nan
    out = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=20))
    validate_results(out)
    assert all("score_histogram" not in t for t in out["treatment"])
