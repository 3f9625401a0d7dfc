"""gan-audit card (#21 item 5): the bias sections of a model card from results.json."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from click.testing import CliRunner

from audit.card import CARD_NAME, results_to_card, write_card
from audit.cli import cli
from audit.formatting import fmt, interval
from audit.verify import verify_run
from tests.test_report import FIXTURE, make_run

RESULTS = json.loads(FIXTURE.read_text())
SEVERITY = {"high": 0, "medium": 1, "low": 2, "info": 3}


def _split(text: str) -> tuple[dict, str]:
    """The card's YAML front matter (parsed) and its Markdown body."""
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def _table_rows(body: str, header_start: str) -> list[list[str]]:
    """Cells of the Markdown table whose header row starts with ``header_start``."""
    lines = body.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header_start} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


@pytest.fixture(scope="module")
def card() -> tuple[dict, str]:
    return _split(results_to_card(RESULTS, report_links={"report.html": "report.html"}))


def test_front_matter_parses_and_holds_results_numbers(card):
    front, _ = card
    assert "gan-audit" in front["tags"]
    metrics = front["model-index"][0]["results"][0]["metrics"]
    sep = RESULTS["discriminator"]["separation"]
    assert metrics[0] == {"type": "roc_auc", "name": "discriminator ROC AUC, real vs generated",
                          "value": sep["auc"]}
    top = sorted(RESULTS["findings"], key=lambda f: (SEVERITY[f["severity"]], f["id"]))[:8]
    assert [(m["name"], m["type"], m["value"]) for m in metrics[1:]] == [
        (f["id"], f["metric"], f["value"]) for f in top]


def test_verdicts_and_top_findings_equal_results_json(card):
    _, body = card
    verdicts = _table_rows(body, "Protected concept")
    assert [(r[0], r[1]) for r in verdicts] == [
        (v["concept"], v["verdict"].replace("_", " ")) for v in RESULTS["verdicts"]]
    rows = {r[0]: r for r in _table_rows(body, "Finding")}
    assert f"Top 8 of {len(RESULTS['findings'])} finding(s)" in body
    for f in RESULTS["findings"]:
        if f["id"] not in rows:
            continue
        kind = "pp" if "gap" in f["metric"] else "ratio"
        assert rows[f["id"]][3] == f"{fmt(f['value'], kind)} [{interval(f['ci'], kind)}]"
        assert rows[f["id"]][4] == str(f["n"]) and rows[f["id"]][1] == f["severity"]
    assert len(rows) == 8


def test_decoder_validity_and_discriminator_sanity(card):
    _, body = card
    validity = _table_rows(body, "Concept")
    assert validity == [[name, fmt(v["balanced_accuracy"]), "yes" if v["decodable"] else "no",
                         str(v["n_test"])] for name, v in RESULTS["validity"].items()]
    sep, acc = RESULTS["discriminator"]["separation"], RESULTS["discriminator"]["acceptance"]
    assert (f"ROC AUC real vs generated {fmt(sep['auc'])} [{interval(sep['ci'], 'num')}] "
            f"({sep['n_real']} real, {sep['n_generated']} generated images)") in body
    assert f"accepts {fmt(acc['real']['value'], 'pct')}" in body
    assert "not legal advice" in body and "[report.html](report.html)" in body


def test_a_failing_discriminator_is_a_limitation():
    results = json.loads(FIXTURE.read_text())
    results["discriminator"]["problems"] = [{"message": "it accepts every image"}]
    _, body = _split(results_to_card(results))
    limitations = body[body.index("Limitations:"):body.index("## Evaluation")]
    assert "fails 1 check(s): it accepts every image" in limitations


def test_cli_writes_the_card_in_the_run_and_the_manifest_records_it(tmp_path):
    run = make_run(tmp_path / "run")
    before = set(verify_run(run).problems)
    result = CliRunner().invoke(cli, ["card", str(run)])
    assert result.exit_code == 0, result.output
    path = run / CARD_NAME
    assert result.output.strip() == str(path) and path.read_text().startswith("---\n")
    assert set(verify_run(run).problems) == before  # recorded: the card adds no difference
    manifest = json.loads((run / "manifest.json").read_text())
    assert CARD_NAME in manifest["artifacts"]
    path.write_text(path.read_text() + "edited\n")
    assert any(CARD_NAME in p for p in verify_run(run).problems)
    assert not list(run.glob(f".{CARD_NAME}*"))  # no temporary left


def test_out_writes_outside_the_run_with_relative_links(tmp_path):
    run = make_run(tmp_path / "run", side_files=False)
    out = write_card(run, out=tmp_path / "docs" / "card.md")
    text = out.read_text()
    assert "[report.html](../run/report.html)" in text
    assert "[report.pdf](../run/report.pdf)" in text
    assert not (run / CARD_NAME).exists()


def test_a_folder_without_results_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["card", str(tmp_path), "--out", str(tmp_path / "c.md")])
    assert result.exit_code == 2 and "results.json" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "c.md").exists()
