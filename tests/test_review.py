"""The review log: hash chain, tamper detection, errors, CLI, and what the report shows."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit.cli import cli
from audit.errors import ReviewError
from audit.report import append_review, read_review_log, render_report
from audit.report.review import latest_status

FIXTURE = Path(__file__).parent / "fixtures" / "results_digits.json"
IDS = [f["id"] for f in json.loads(FIXTURE.read_text())["findings"]]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    from audit.runfolder import claim

    with claim(tmp_path):  # a run folder: the tool's marker
        pass
    shutil.copy(FIXTURE, tmp_path / "results.json")
    return tmp_path


def _review_three(run: Path) -> list[dict]:
    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return [append_review(run, IDS[0], status="accepted", reviewer="A. Auditor",
                          note="confirmed by sampling", now=t),
            append_review(run, IDS[1], status="disputed", reviewer="B. Reviewer",
                          note="decoder weak on this group", now=t),
            append_review(run, IDS[0], status="mitigated", reviewer="A. Auditor",
                          note="retrained with balanced data", now=t)]


def test_chain_links_and_hashes_match_an_independent_computation(run):
    entries = _review_three(run)
    lines = (run / "review.jsonl").read_text().splitlines()
    assert len(lines) == 3
    prev = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()  # genesis: results.json bytes
    for line, written in zip(lines, entries, strict=True):
        entry = json.loads(line)
        assert entry == written
        assert entry["prev_hash"] == prev
        body = {k: v for k, v in entry.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert entry["hash"] == hashlib.sha256(canonical.encode()).hexdigest()
        assert set(entry) == {"time", "reviewer", "finding_id", "status", "note",
                              "results_sha256", "prev_hash", "hash"}
        assert entry["results_sha256"] == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
        assert entry["time"].startswith("2026-01-02T03:04:05") and entry["time"].endswith("Z")
        prev = entry["hash"]
    log = read_review_log(run)
    assert log.verification.ok and not log.verification.problems
    assert log.verification.last_hash == prev
    latest = latest_status(log)
    assert latest[IDS[0]]["status"] == "mitigated" and latest[IDS[1]]["status"] == "disputed"


def _edit(run: Path, fn) -> None:
    path = run / "review.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")


def _set_note(lines: list[str]) -> list[str]:
    entry = json.loads(lines[1])
    entry["note"] = "nothing to see"
    return [lines[0], json.dumps(entry), lines[2]]


@pytest.mark.parametrize("tamper, where", [
    (_set_note, "line 2: its content does not match its hash"),
    (lambda ls: [ls[0], ls[2]], "line 2: does not point to the hash of the entry before it"),
    (lambda ls: [ls[1], ls[0], ls[2]], "line 1: the first entry does not chain"),
    (lambda ls: [ls[0], ls[1][:-5], ls[2]], "line 2: not valid JSON"),
])
def test_tampering_is_detected(run, tamper, where):
    _review_three(run)
    _edit(run, tamper)
    check = read_review_log(run).verification
    assert not check.ok
    assert any(where in p for p in check.problems), check.problems
    if "first entry" not in where:
        assert not check.intact
        with pytest.raises(ReviewError, match="hash chain is broken, so no entry is added"):
            append_review(run, IDS[0], status="accepted", reviewer="C")


def test_changed_results_make_the_log_unrooted_but_intact(run):
    _review_three(run)
    data = json.loads((run / "results.json").read_text())
    data["notes"].append("re-measured")
    (run / "results.json").write_text(json.dumps(data))
    check = read_review_log(run).verification
    assert check.intact and not check.rooted
    append_review(run, IDS[2], status="accepted", reviewer="C")  # still extends the chain
    assert read_review_log(run).verification.intact


def test_report_shows_history_and_broken_chain_warning(run):
    _review_three(run)
    html = render_report(run, pdf=False)["html"].read_text()
    assert "confirmed by sampling" in html and "retrained with balanced data" in html
    assert "chain\nverified" in html or "chain verified" in html.replace("\n", " ")
    assert "hash chain is broken" not in html
    _edit(run, _set_note)
    html = render_report(run, pdf=False)["html"].read_text()
    assert "The review log's hash chain is broken.</strong>" in html
    assert "line 2: its content does not match its hash" in html


@pytest.mark.parametrize("kwargs, message", [
    ({"finding_id": IDS[0][:-1] + "x"}, f"no finding '{IDS[0][:-1]}x'. Did you mean {IDS[0]}"),
    ({"status": "approved"}, "unknown review status 'approved'; use one of accepted, disputed"),
    ({"reviewer": "   "}, "the reviewer's name is empty; give it with --reviewer NAME"),
])
def test_review_errors_are_clear(run, kwargs, message):
    args = {"finding_id": IDS[0], "status": "accepted", "reviewer": "A", **kwargs}
    with pytest.raises(ReviewError, match=message.replace("(", r"\(").replace("+", r"\+")):
        append_review(run, args.pop("finding_id"), note="n", **args)
    assert not (run / "review.jsonl").exists()


def test_cli_lists_records_and_rerenders(run):
    runner = CliRunner()
    listed = runner.invoke(cli, ["review", str(run)])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split() == ["finding", "severity", "confidence", "status"]
    assert len(lines) == 1 + len(IDS)
    assert all(line.split()[-1] == "unreviewed" for line in lines[1:])
    done = runner.invoke(cli, ["review", str(run), IDS[3], "--status", "false-positive",
                               "--note", "planted test gap", "--reviewer", "A. Auditor"])
    assert done.exit_code == 0, done.output
    assert "planted test gap" in (run / "report.html").read_text()
    listed = runner.invoke(cli, ["review", str(run)])
    row = next(line for line in listed.output.splitlines() if line.startswith(IDS[3]))
    assert row.split()[-1] == "false-positive"
    bad = runner.invoke(cli, ["review", str(run), "F-REP-nope", "--status", "accepted",
                              "--reviewer", "A"])
    assert bad.exit_code == 2 and "no finding 'F-REP-nope'" in bad.output
    no_name = runner.invoke(cli, ["review", str(run), IDS[0], "--status", "accepted"])
    assert no_name.exit_code == 2 and "reviewer's name is empty" in no_name.output
    no_status = runner.invoke(cli, ["review", str(run), IDS[0], "--reviewer", "A"])
    assert no_status.exit_code == 2 and "--status" in no_status.output


def test_reviews_of_earlier_results_give_no_status_after_a_re_measure(run):
    """A reviewer accepted other numbers: after results.json changes, the finding is
    unreviewed again, while the old entries stay in the history."""
    append_review(run, IDS[0], status="accepted", reviewer="A")
    results = json.loads((run / "results.json").read_text())
    results["settings"]["alpha"] = 0.01  # re-measured with another setting
    (run / "results.json").write_text(json.dumps(results))
    log = read_review_log(run)
    assert latest_status(log) == {}
    assert len(log.entries) == 1 and not log.reviews_current_results(log.entries[0])
    append_review(run, IDS[0], status="disputed", reviewer="B")
    assert latest_status(read_review_log(run))[IDS[0]]["status"] == "disputed"
