"""Decoder transfer measured with labels (audit.measure.labelled), on planted truth.

A simulated generator: 20,000 generated images whose true tone is dark for 30% and whose
tone decoder errs more on them (dark read as light 30% of the time) than on held-out real
images (2%); the stroke decoder errs on generated images as on real ones. A stratified
sample (equal numbers per decoded cell) is labelled with the truth. The generated-image
confusion, the transfer gap and the corrected shares must recover what was planted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.config import MeasureSettings
from audit.labels import COLUMNS, stratified_pick
from audit.measure.findings import label_transfer_findings
from audit.measure.labelled import consensus_labels, labelled_transfer
from audit.measure.stats import closed_form_two_groups

N = 20_000
TONE_GEN = np.array([[0.95, 0.05], [0.30, 0.70]])   # rows true (light, dark), cols decoded
STROKE_GEN = np.array([[0.97, 0.03], [0.03, 0.97]])
VALIDITY = {"concepts": {
    "tone": {"groups": ["light", "dark"], "confusion": [[490, 10], [10, 490]]},
    "stroke": {"groups": ["thin", "thick"], "confusion": [[485, 15], [15, 485]]}}}


def _simulate(seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    truth = {"tone": (rng.random(N) < 0.3).astype(int), "stroke": (rng.random(N) < 0.5)
             .astype(int)}
    frame = {"image_id": [f"gen-{i}" for i in range(N)]}
    for name, conf, groups in (("tone", TONE_GEN, ["light", "dark"]),
                               ("stroke", STROKE_GEN, ["thin", "thick"])):
        decoded = (rng.random(N) < conf[truth[name], 1]).astype(int)
        frame[f"pred__{name}"] = np.array(groups)[decoded]
        truth[f"decoded_{name}"] = decoded
    return pd.DataFrame(frame), truth


def _labels(frame: pd.DataFrame, truth: dict[str, np.ndarray], n: int, seed: int = 0
            ) -> pd.DataFrame:
    cells = (frame["pred__tone"] + " & " + frame["pred__stroke"]).tolist()
    picked = stratified_pick(cells, n=n, seed=seed)
    rows = []
    for i in picked:
        rows.append((frame["image_id"][i], "tone", ["light", "dark"][truth["tone"][i]]))
        rows.append((frame["image_id"][i], "stroke", ["thin", "thick"][truth["stroke"][i]]))
    return pd.DataFrame([(*r, "sim", "2026-01-01T00:00:00Z", "test") for r in rows],
                        columns=list(COLUMNS))


@pytest.fixture(scope="module")
def planted(cs):
    frame, truth = _simulate()
    labels = _labels(frame, truth, n=600)
    section = labelled_transfer(frame, labels, VALIDITY, cs,
                                settings=MeasureSettings(n_boot=400))
    return frame, truth, labels, {r["concept"]: r for r in section}


def test_the_generated_confusion_recovers_the_planted_one(planted) -> None:
    _, truth, _, by = planted
    tone = by["tone"]["confusion_generated"]
    for t in range(2):
        for d in range(2):  # the population's own confusion, from the full simulated truth
            exact = np.mean(truth["decoded_tone"][truth["tone"] == t] == d)
            # within 3 standard errors (the 95% interval's half width is 1.96 of them):
            # each cell alone misses its 95% interval one time in twenty
            half = (tone["ci_high"][t][d] - tone["ci_low"][t][d]) / 2
            assert abs(tone["rates"][t][d] - exact) <= 1.5 * half
            assert tone["rates"][t][d] == pytest.approx(exact, abs=0.06)
    assert sum(map(sum, tone["counts"])) == by["tone"]["n_images"] == 600


def test_the_corrected_shares_move_to_the_truth(planted) -> None:
    _, truth, _, by = planted
    dark = np.mean(truth["tone"] == 1)  # 0.30
    share = next(s for s in by["tone"]["shares"] if s["group"] == "dark")
    real, gen = share["corrected_real"], share["corrected_generated"]
    assert abs(gen["value"] - dark) < 0.03 < abs(real["value"] - dark)
    assert gen["ci"][0] <= dark <= gen["ci"][1]
    assert not real["ci"][0] <= dark <= real["ci"][1]  # the real confusion misleads here
    # binary closed form (CLEAM) with the estimated generated accuracies
    rates = by["tone"]["confusion_generated"]["rates"]
    closed = closed_form_two_groups(share["decoded"], rates[1][1], rates[0][0])
    assert gen["value"] == pytest.approx(closed, abs=1e-6)
    # with design weights the correction is the labels' stratified estimate
    assert share["labelled"]["value"] == pytest.approx(gen["value"], abs=1e-6)


def test_design_weights_undo_the_over_sampling(planted) -> None:
    _, truth, labels, by = planted
    naive = np.mean(labels.loc[labels.concept == "tone", "group"] == "dark")
    dark = np.mean(truth["tone"] == 1)
    labelled = next(s for s in by["tone"]["shares"] if s["group"] == "dark")["labelled"]
    assert abs(naive - dark) > 0.1  # equal numbers per decoded cell over-sample dark ones
    assert abs(labelled["value"] - dark) < 0.03


def test_the_transfer_gap_and_its_finding(planted) -> None:
    _, _, _, by = planted
    expected = 0.98 - (0.95 + 0.70) / 2  # balanced accuracy real minus generated
    gap = by["tone"]["gap"]
    assert gap["ci"][0] <= expected <= gap["ci"][1]
    assert by["tone"]["large_gap"] is True
    stroke = by["stroke"]["gap"]
    assert stroke["ci"][0] <= 0 <= stroke["ci"][1]
    findings = label_transfer_findings(list(by.values()), settings=MeasureSettings())
    assert [(f["id"], f["severity"]) for f in findings] == [("F-VAL-tone-transfer-gap", "high")]
    assert "tone decoder reads labelled generated images worse" in findings[0]["summary"]


def test_too_few_labels_show_the_confusion_but_correct_nothing(cs) -> None:
    frame, truth = _simulate(seed=1)
    section = labelled_transfer(frame, _labels(frame, truth, n=60), VALIDITY, cs,
                                settings=MeasureSettings(n_boot=100))
    tone = next(r for r in section if r["concept"] == "tone")
    assert tone["sufficient"] is False and "fewer than 30 labelled images" in tone["reason"]
    assert all(s["corrected_generated"] is None for s in tone["shares"])
    assert tone["confusion_generated"]["rates"] is not None
    assert label_transfer_findings(section, settings=MeasureSettings()) == []


def test_consensus_leaves_out_ties_and_cant_tell() -> None:
    rows = [("a", "tone", "dark", "x"), ("a", "tone", "dark", "y"), ("a", "tone", "light", "z"),
            ("b", "tone", "dark", "x"), ("b", "tone", "light", "y"),
            ("c", "tone", "cant_tell", "x"), ("d", "tone", "cant_tell", "x"),
            ("d", "tone", "light", "y")]
    labels = pd.DataFrame([(*r[:3], r[3], "t", "s") for r in rows], columns=list(COLUMNS))
    consensus, left_out = consensus_labels(labels, "tone", ["light", "dark"])
    assert consensus == {"a": "dark", "d": "light"}
    assert left_out == {"cant_tell": 1, "disagree": 1}


def test_no_labels_no_section(cs) -> None:
    frame, _ = _simulate()
    assert labelled_transfer(frame, pd.DataFrame(columns=list(COLUMNS)), VALIDITY, cs,
                             settings=MeasureSettings()) == []


def test_measure_run_reads_the_labels_file_and_the_results_validate(cs, tmp_path) -> None:
    import csv
    import json

    from audit.io import atomic_write_json
    from audit.labels import LABELS_FILE
    from audit.measure import measure_run, validate_results
    from audit.runfolder import claim
    from audit.validation.predictions import DIGITS_PLANTED, synthetic_predictions

    frame, validity = synthetic_predictions(400, 400, cs, seed=2, planted=DIGITS_PLANTED)
    run = tmp_path / "run"
    with claim(run):
        frame.to_parquet(run / "predictions.parquet", index=False)
        atomic_write_json(run / "decoders" / "validity.json", validity)
    settings = MeasureSettings(n_boot=50)
    before = measure_run(run, cs, settings)
    assert "label_transfer" not in before  # no labels: the section is absent, as before
    generated = frame[(frame.split == "audit") & (frame.source == "generated")]
    (run / "labels").mkdir()
    with (run / LABELS_FILE).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for image_id, tone in zip(generated.image_id[:100], generated.pred__tone[:100],
                                  strict=True):
            writer.writerow([image_id, "tone", tone, "A", "2026-01-01T00:00:00Z", "web"])
    results = measure_run(run, cs, settings)
    validate_results(results)
    (tone,) = results["label_transfer"]
    assert tone["concept"] == "tone" and tone["n_images"] == 100
    assert tone["balanced_accuracy"]["generated"]["value"] == pytest.approx(1.0)
    assert json.loads((run / "results.json").read_text())["label_transfer"][0]["n_images"] == 100


def test_the_report_shows_both_corrections_and_the_gap(planted) -> None:
    import json
    import re
    from pathlib import Path

    from audit.report.render import results_to_html

    _, _, _, by = planted
    fixture = Path(__file__).parent / "fixtures" / "results_digits.json"
    results = {**json.loads(fixture.read_text()), "label_transfer": list(by.values())}
    html = results_to_html(results)
    assert "measured with labels" in html
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    tone = by["tone"]
    gap = tone["gap"]
    assert f"Transfer gap {100 * gap['value']:.1f} pp" in text
    dark = next(s for s in tone["shares"] if s["group"] == "dark")
    row = (f"dark {100 * dark['decoded']:.1f}% {100 * dark['corrected_real']['value']:.1f}%")
    assert row in text
    assert f"{100 * dark['corrected_generated']['value']:.1f}%" in text
    assert "fixtures" not in html and "label_transfer" not in text  # no raw keys shown
    assert "measured with labels" not in results_to_html(json.loads(fixture.read_text()))
