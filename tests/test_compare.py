"""Comparing two audits: metrics, new/resolved/changed findings, warnings."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit.cli import cli
from audit.report import results_to_comparison

FIXTURE = Path(__file__).parent / "fixtures" / "results_digits.json"


@pytest.fixture(scope="module")
def before() -> dict:
    return json.loads(FIXTURE.read_text())


def _after(before: dict) -> dict:
    """B: the first finding resolved, a new one, one severity changed, one share moved."""
    b = copy.deepcopy(before)
    gone = b["findings"].pop(0)
    new = copy.deepcopy(b["findings"][0])
    new["id"], new["severity"] = "F-COV-digit-7", "low"
    b["findings"].append(new)
    b["findings"][1]["severity"] = "info" if b["findings"][1]["severity"] != "info" else "high"
    row = b["representation"][1]["rows"][1]
    row["generated_corrected"] = {"value": 0.45, "ci": [0.43, 0.47], "n": 2000}
    b["_gone"] = gone["id"]
    return b


def test_findings_new_resolved_and_changed(before):
    after = _after(before)
    c = results_to_comparison(before, after)
    assert [f["id"] for f in c["findings"]["new"]] == ["F-COV-digit-7"]
    assert [f["id"] for f in c["findings"]["resolved"]] == [after["_gone"]]
    changed = c["findings"]["changed_severity"]
    assert [x["id"] for x in changed] == [after["findings"][1]["id"]]
    assert changed[0]["severity_a"] != changed[0]["severity_b"]
    assert c["warnings"] == []  # same concept set, decoders and settings


def test_metric_change_and_interval_overlap(before):
    after = _after(before)
    c = results_to_comparison(before, after)
    metrics = {m["key"]: m for m in c["metrics"]}
    concept = before["representation"][1]["concept"]
    group = before["representation"][1]["rows"][1]["group"]
    moved = metrics[f"representation/{concept}/{group}/generated_corrected"]
    a = before["representation"][1]["rows"][1]["generated_corrected"]
    assert moved["a"]["value"] == a["value"] and moved["b"]["value"] == 0.45
    assert moved["change"] == pytest.approx(0.45 - a["value"])
    assert a["ci"][1] < 0.43                     # the fixture's interval lies below [0.43, 0.47]
    assert moved["intervals_overlap"] is False
    same = metrics[f"representation/{concept}/{group}/real"]
    assert same["change"] == 0 and same["intervals_overlap"] is True
    impact = before["treatment"][1]["impact"][0]
    key = (f"impact/{before['treatment'][1]['concept']}/{impact['metric']}/{impact['source']}/"
           f"{impact['group']}")
    assert metrics[key]["a"]["n"] == impact["ratio"]["n"]
    assert len(metrics) > 100 and not c["only_in_a"] and not c["only_in_b"]


def test_warnings_for_concept_set_decoders_and_thresholds(before):
    after = copy.deepcopy(before)
    after["concept_set"]["sha256"] = "0" * 64
    after["validity"]["tone"]["layer"] = "main.8"
    after["settings"]["impact_threshold"] = 0.9
    warnings = results_to_comparison(before, after)["warnings"]
    assert len(warnings) == 3
    assert warnings[0].startswith("The audits used different concept sets")
    assert "tone (layer" in warnings[1] and "→ main.8" in warnings[1]
    assert "impact_threshold 0.8 → 0.9" in warnings[2]


def test_cli_writes_json_html_and_pdf(tmp_path, before):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "results.json").write_text(json.dumps(before))
    after = _after(before)
    after["concept_set"]["sha256"] = "1" * 64
    (b / "results.json").write_text(json.dumps(after))
    out = tmp_path / "cmp"
    result = CliRunner().invoke(cli, ["compare", str(a), str(b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "compare.json").read_text())
    assert data["findings"]["new"][0]["id"] == "F-COV-digit-7"
    html = (out / "compare.html").read_text()
    assert "F-COV-digit-7" in html and after["_gone"] in html
    assert "different concept sets" in html and "<script" not in html
    from pypdf import PdfReader

    text = " ".join(p.extract_text() for p in PdfReader(out / "compare.pdf").pages)
    assert "New in B" in text and "Resolved since A" in text
    missing = CliRunner().invoke(cli, ["compare", str(a), str(tmp_path / "x"), "--out",
                                       str(out), "--no-pdf"])
    assert missing.exit_code == 2 and "not a folder" in missing.output


def test_compare_command_prints_a_summary_of_changes(tmp_path):
    """stdout says how many metrics moved and names new and resolved findings."""
    import json

    from click.testing import CliRunner

    from audit.cli import cli

    fixture = Path(__file__).parent / "fixtures" / "results_digits.json"
    results = json.loads(fixture.read_text())
    runs = []
    for name, findings in (("a", results["findings"]), ("b", results["findings"][1:])):
        run = tmp_path / name
        run.mkdir()
        (run / "results.json").write_text(json.dumps({**results, "findings": findings}))
        runs.append(run)
    result = CliRunner().invoke(cli, ["compare", str(runs[0]), str(runs[1]), "--out",
                                      str(tmp_path / "cmp"), "--no-pdf"])
    assert result.exit_code == 0, result.output
    assert "findings: 0 new, 1 resolved" in result.stdout
    assert f"resolved: [{results['findings'][0]['severity']}] {results['findings'][0]['id']}" \
        in result.stdout
