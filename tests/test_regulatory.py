"""The report's regulatory section (#21 item 4): LL144 summary, EU AI Act index, NIST map,
the mitigation plan from the review log, and review entries that carry a mitigation."""

from __future__ import annotations

import hashlib
import html as htmllib
import json
import re
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from audit.cli import cli
from audit.formatting import fmt
from audit.report import append_review, read_review_log, render_report
from audit.report.regulatory_view import DISCLAIMER, SOURCES
from audit.report.review import verify_review_log
from tests.test_report import FIXTURE, make_run

RESULTS = json.loads(FIXTURE.read_text())
T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _text(fragment: str) -> str:
    """Visible text of an HTML fragment, white space squashed."""
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", " ", fragment))).strip()


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}"')
    return page[start:page.index("</section>", start)]


def _ll144_rows(page: str) -> dict[tuple[str, str, str], list[str]]:
    """(concept, group, source) -> the cells' text of the LL144 tables."""
    rows = {}
    for concept, body in re.findall(r'<table class="ll144" data-concept="([^"]+)">(.*?)</table>',
                                    page, flags=re.S):
        for group, source, cells in re.findall(
                r'<tr data-group="([^"]+)" data-source="([^"]+)">(.*?)</tr>', body, flags=re.S):
            rows[(htmllib.unescape(concept), htmllib.unescape(group), source)] = [
                _text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", cells, flags=re.S)]
    return rows


def _expected_ll144() -> dict[tuple[str, str, str], dict]:
    """The same rows read straight from results.json (independent of the view code)."""
    out = {}
    entries = [t for t in RESULTS["treatment"] if t["protected"]]
    entries += [x["treatment"] for x in RESULTS["intersections"]]
    for t in entries:
        ratio = {(i["group"], i["source"]): i for i in t["impact"]
                 if i["metric"] == "scoring_rate"}
        for r in t["rows"]:
            out[(t["concept"], r["group"], r["source"])] = {**r, "impact": ratio[(r["group"],
                                                                                 r["source"])]}
    return out


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    run = make_run(tmp_path_factory.mktemp("run"))
    return render_report(run, pdf=False)["html"].read_text(encoding="utf-8")


def test_ll144_tables_hold_results_json_numbers(page):
    shown, expected = _ll144_rows(_section(page, "regulatory")), _expected_ll144()
    assert set(shown) == set(expected)
    assert len(expected) == 16  # tone and stroke: 2 groups x 2 sources; tone+stroke: 4 x 2
    for key, r in expected.items():
        cells = shown[key]
        rate, ratio = r["scoring_rate"], r["impact"]["ratio"]
        assert cells[2] == str(r["n"])
        assert cells[3] == fmt(r["share_of_source"], "pct")
        assert cells[4].startswith(fmt(rate["value"], "pct"))
        assert f"{rate['k']}/{rate['n']}" in cells[4]  # the rate with its group size
        assert cells[5].startswith(fmt(ratio["value"], "ratio"))
        assert f"[{fmt(ratio['ci'][0], 'ratio')}, {fmt(ratio['ci'][1], 'ratio')}]" in cells[5]
        assert f"n={ratio['n']}" in cells[5]
        assert cells[6] == r["impact"]["four_fifths"].replace("_", " ")


def test_ll144_caption_counts_unknowns_and_the_date_and_sources_are_shown(page):
    section = _text(_section(page, "regulatory"))
    scored = {t["concept"]: sum(r["n"] for r in t["rows"]) for t in RESULTS["treatment"]}
    for rep in RESULTS["representation"]:
        if rep["protected"]:
            assert (f"Category {rep['concept']}: scoring rates and impact ratios per source "
                    f"({scored[rep['concept']]} "
                    f"scored images; unknown category: {rep['n_unknown_real']} real, "
                    f"{rep['n_unknown_generated']} generated)") in section
    assert f"Audit date: {RESULTS['meta']['date']}" in section
    for role, source in RESULTS["meta"]["data_sources"].items():
        assert f"{role} {source} test data" in section
    assert "derived from the EEOC Uniform Guidelines (29 CFR 1607.4(D))" in section
    assert "not a legal determination" in section
    assert "under 2% of a source's images is excluded" in section


def test_excluded_groups_are_shown_with_their_count_rate_and_reason(tmp_path):
    results = json.loads(FIXTURE.read_text())
    row = results["treatment"][1]["rows"][1]  # tone: dark, real
    row.update(excluded=True, exclusion_reason="1.5% of real images, under the 2% floor")
    run = make_run(tmp_path, results=results, side_files=False)
    shown = _ll144_rows(render_report(run, pdf=False)["html"].read_text(encoding="utf-8"))
    cells = shown[("tone", row["group"], "real")]
    assert cells[2] == str(row["n"])
    assert cells[4].startswith(fmt(row["scoring_rate"]["value"], "pct"))
    assert cells[7] == "excluded 1.5% of real images, under the 2% floor"
    assert shown[("tone", "light", "real")][7] == "no"


def test_disclaimer_and_sources_are_in_the_section_and_the_method(page):
    assert DISCLAIMER in _text(_section(page, "regulatory"))
    method = _text(_section(page, "method"))
    assert DISCLAIMER in method
    for s in SOURCES:
        assert f"{s.ref} {s.title} {s.used_for}" in method
    for ref in ("Art. 10(2)(f)", "Art. 10(2)(g)", "Art. 12", "Annex IV 2(g)", "MEASURE 1.1",
                "MEASURE 1.3", "MEASURE 2.1", "MEASURE 2.11"):
        assert ref in _text(_section(page, "regulatory"))


def test_eu_and_nist_rows_carry_the_audits_numbers(page):
    section = _text(_section(page, "regulatory"))
    n_high = sum(f["severity"] == "high" for f in RESULTS["findings"])
    assert f"{len(RESULTS['tests'])} statistical tests with raw and adjusted p-values" in section
    assert (f"{len(RESULTS['findings'])} findings, {n_high} of high severity") in section
    assert (f"{RESULTS['counts']['real']} real and {RESULTS['counts']['generated']} generated "
            f"images") in section
    assert f"{len(RESULTS['verdicts'])} verdicts: 3 adverse impact" in section
    assert "review log: 0 entries" in section and "has no entries yet" in section


def test_mitigation_and_owner_round_trip_into_the_plan(tmp_path):
    run = make_run(tmp_path)
    fid = RESULTS["findings"][0]["id"]
    entry = append_review(run, fid, status="accepted", reviewer="A. Auditor", now=T,
                          note="seen", mitigation="rebalance <training> data", owner="ML team")
    assert entry["mitigation"] == "rebalance <training> data" and entry["owner"] == "ML team"
    body = {k: v for k, v in entry.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert entry["hash"] == hashlib.sha256(canonical.encode()).hexdigest()  # hashed with them
    log = read_review_log(run)
    assert log.verification.ok and log.entries[0]["mitigation"] == entry["mitigation"]
    page = render_report(run, pdf=False)["html"].read_text(encoding="utf-8")
    plan = re.search(rf'<tr data-finding="{re.escape(fid)}">(.*?)</tr>', page, flags=re.S)
    cells = [_text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", plan.group(1), re.S)]
    assert cells[3:6] == ["accepted", "rebalance <training> data", "ML team"]
    assert cells[6] == "A. Auditor, 2026-01-02"
    section = _text(_section(page, "regulatory"))
    assert f"1 of {len(RESULTS['findings'])} findings with a recorded mitigation" in section
    assert f"head sha256:{entry['hash']}" in section and "1 reviewer recorded" in section


def test_a_later_status_change_keeps_the_recorded_mitigation(tmp_path):
    run = make_run(tmp_path, side_files=False)
    fid = RESULTS["findings"][0]["id"]
    append_review(run, fid, status="accepted", reviewer="A", mitigation="retrain",
                  owner="ML team", now=T)
    append_review(run, fid, status="mitigated", reviewer="B", note="done", now=T)
    page = render_report(run, pdf=False)["html"].read_text(encoding="utf-8")
    plan = re.search(rf'<tr data-finding="{re.escape(fid)}">(.*?)</tr>', page, flags=re.S)
    cells = [_text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", plan.group(1), re.S)]
    assert cells[3:7] == ["mitigated", "retrain", "ML team", "B, 2026-01-02"]


def test_a_log_written_before_mitigations_existed_still_verifies_and_grows(tmp_path):
    run = make_run(tmp_path, side_files=False)
    genesis = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    old = {"time": "2026-01-01T00:00:00.000000Z", "reviewer": "A", "status": "accepted",
           "finding_id": RESULTS["findings"][0]["id"], "note": "", "prev_hash": genesis}
    old["hash"] = hashlib.sha256(json.dumps(old, sort_keys=True, separators=(",", ":"))
                                 .encode()).hexdigest()
    (run / "review.jsonl").write_text(json.dumps(old) + "\n")
    assert verify_review_log(run / "review.jsonl").ok
    new = append_review(run, RESULTS["findings"][1]["id"], status="mitigated", reviewer="B",
                        mitigation="retrain", owner="C", now=T)
    check = verify_review_log(run / "review.jsonl", expected_head=old["hash"])
    assert check.ok and check.entries == 2 and check.head == new["hash"]


def test_an_edited_or_non_text_mitigation_is_found(tmp_path):
    run = make_run(tmp_path, side_files=False)
    append_review(run, RESULTS["findings"][0]["id"], status="accepted", reviewer="A",
                  mitigation="retrain", owner="C", now=T)
    path = run / "review.jsonl"
    entry = json.loads(path.read_text())
    path.write_text(json.dumps({**entry, "owner": "someone else"}) + "\n")
    assert "does not match its hash" in " ".join(verify_review_log(path).problems)
    forged = {**entry, "mitigation": ["not", "text"]}
    forged["hash"] = hashlib.sha256(json.dumps(
        {k: v for k, v in forged.items() if k != "hash"}, sort_keys=True,
        separators=(",", ":")).encode()).hexdigest()
    path.write_text(json.dumps(forged) + "\n")
    assert "field(s) mitigation are not text" in " ".join(verify_review_log(path).problems)


def test_cli_records_mitigation_and_owner(tmp_path):
    run = make_run(tmp_path, side_files=False)
    fid = RESULTS["findings"][0]["id"]
    result = CliRunner().invoke(cli, ["review", str(run), fid, "--status", "accepted",
                                      "--reviewer", "A. Auditor", "--mitigation", "retrain",
                                      "--owner", "ML team"])
    assert result.exit_code == 0, result.output
    entry = json.loads((run / "review.jsonl").read_text())
    assert (entry["mitigation"], entry["owner"]) == ("retrain", "ML team")
    result = CliRunner().invoke(cli, ["review", str(run), "--owner", "X"])
    assert result.exit_code == 2 and "--owner need a FINDING_ID" in result.output
