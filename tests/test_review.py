"""The review log: hash chain, tamper detection, errors, CLI, and what the report shows."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.cli import cli
from audit.errors import ReviewError
from audit.report import append_review, read_review_log, render_report
from audit.report.review import STATUSES, entry_hash, latest_status, verify_review_log

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


def _status_forged(lines: list[str]) -> list[str]:
    """The last entry's status changed to one the tool never writes, its hash recomputed."""
    entry = json.loads(lines[2])
    entry["status"] = "\x1b[32maccepted"
    entry["hash"] = entry_hash(entry)
    return [lines[0], lines[1], json.dumps(entry)]


@pytest.mark.parametrize("tamper, where", [
    (_set_note, "line 2: its content does not match its hash"),
    (lambda ls: [ls[0], ls[2]], "line 2: does not point to the hash of the entry before it"),
    (lambda ls: [ls[1], ls[0], ls[2]], "line 1: the first entry does not start the chain"),
    (lambda ls: [ls[1], ls[2]], "line 1: the first entry does not start the chain"),
    (lambda ls: [ls[0], ls[1], ls[1], ls[2]], "line 3: does not point to the hash"),
    (lambda ls: [ls[0], ls[1][:-5], ls[2]], "line 2: not valid JSON"),
    (lambda ls: [ls[0], ls[1].replace('"status"', '"status": "accepted", "status"'), ls[2]],
     "line 2: not valid JSON (key 'status' appears twice)"),
    (lambda ls: [ls[0], "[1, 2]", ls[1], ls[2]], "line 2: not a JSON object"),
    (lambda ls: [ls[0], ls[1].replace('"note": "', '"note": NaN, "x": "'), ls[2]],
     "line 2: not valid JSON (NaN is not a JSON value)"),
    (lambda ls: [ls[0], ls[1].replace('"note": "', '"note": "\\ud800'), ls[2]],
     "line 2: holds a lone surrogate"),
    (_status_forged, "line 3: unknown status '\\x1b[32maccepted'"),
])
def test_tampering_is_detected(run, tamper, where):
    _review_three(run)
    _edit(run, tamper)
    check = read_review_log(run).verification
    assert not check.ok and not check.intact
    assert any(where in p for p in check.problems), check.problems
    assert not verify_review_log(run / "review.jsonl").ok
    before = (run / "review.jsonl").read_bytes()
    with pytest.raises(ReviewError, match="hash chain is broken, so no entry is added"):
        append_review(run, IDS[0], status="accepted", reviewer="C")
    assert (run / "review.jsonl").read_bytes() == before


def test_a_line_that_is_not_utf8_is_named(run):
    _review_three(run)
    path = run / "review.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"note": "', b'"note": "\xff')
    path.write_bytes(b"\n".join(lines))
    check = verify_review_log(path)
    column = lines[1].index(bytes([255])) + 1
    assert check.problems == [f"line 2: not valid UTF-8 (byte 0xff at byte {column}); the file "
                              f"was edited or damaged"]
    assert check.entries == 2 and not check.ok


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
    assert len(lines) == 2 + len(IDS) and lines[-1] == "review log: no entries"
    assert all(line.split()[-1] == "unreviewed" for line in lines[1:-1])
    done = runner.invoke(cli, ["review", str(run), IDS[3], "--status", "false-positive",
                               "--note", "planted test gap", "--reviewer", "A. Auditor"])
    assert done.exit_code == 0, done.output
    head = json.loads((run / "review.jsonl").read_text())["hash"]
    assert f"review log: 1 entry, head sha256:{head}" in done.output.splitlines()
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


# ---------------------------------------------------------------- line separators, issue 16

# Every character str.splitlines() breaks a line at, and more that JSON or terminals treat
# specially: each used to split an entry over two lines of review.jsonl.
AWKWARD = ("a\u2028b\u2029c\x85d\re\nf\r\ng\x00h\x0bi\x0cj\x1ck\x1dl\x1em\x7fn\ufeff"
           "\u00e9\U0001f600  ")


def _canonical_sha256(entry: dict) -> str:
    """The entry hash, computed here independently of audit.report.review."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_a_note_with_line_separators_round_trips_on_one_line(run):
    written = [append_review(run, IDS[0], status="accepted", reviewer=" R\u2028S ",
                             note=AWKWARD),
               append_review(run, IDS[1], status="disputed", reviewer="T", note="\r")]
    data = (run / "review.jsonl").read_bytes()
    assert data.isascii() and data.count(b"\n") == 2 and data.endswith(b"\n")
    assert [json.loads(line) for line in data.splitlines()] == written
    log = read_review_log(run)
    assert list(log.entries) == written and log.verification.ok
    assert log.entries[0]["note"] == AWKWARD  # exactly as given, spaces kept
    assert log.entries[0]["reviewer"] == "R\u2028S"  # the name without surrounding space
    check = verify_review_log(run / "review.jsonl")
    assert check.ok and check.entries == 2 and check.head == written[1]["hash"]
    assert check.root == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()


def test_a_log_written_with_raw_line_separators_still_reads(run):
    """Lines written before lines were escaped (raw U+2028 inside a note) parse and verify:
    only b'\\n' ends a line."""
    genesis = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    entry = {"time": "2026-01-01T00:00:00Z", "reviewer": "Zoë", "finding_id": IDS[0],
             "status": "accepted", "note": "one\u2028two\x85three", "prev_hash": genesis}
    entry["hash"] = _canonical_sha256(entry)
    (run / "review.jsonl").write_bytes(json.dumps(entry, ensure_ascii=False).encode() + b"\n")
    log = read_review_log(run)
    assert log.verification.ok and list(log.entries) == [entry]
    appended = append_review(run, IDS[1], status="disputed", reviewer="R")
    assert appended["prev_hash"] == entry["hash"] and read_review_log(run).verification.ok


@pytest.mark.parametrize("field", ["note", "reviewer"])
def test_text_that_is_not_unicode_is_refused(run, field):
    """A byte that is not UTF-8 on the command line arrives as a lone surrogate."""
    args = {"note": "ok", "reviewer": "R", field: "bad \udcff byte"}
    with pytest.raises(ReviewError, match=r"holds '\\udcff' at character 5, which is not a "
                                          r"character .* as UTF-8 text"):
        append_review(run, IDS[0], status="accepted", **args)
    assert not (run / "review.jsonl").exists()


# ---------------------------------------------------------------- the recorded head, issue 16


def _forge(path: Path, index: int, **changes) -> None:
    """What a forger without keys can do: change entry ``index`` and recompute every hash
    from there on (with nothing but hashlib and json)."""
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    entries[index].update(changes)
    for i in range(index, len(entries)):
        if i:
            entries[i]["prev_hash"] = entries[i - 1]["hash"]
        entries[i]["hash"] = _canonical_sha256(entries[i])
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def test_a_forged_log_passes_the_chain_alone_but_not_the_recorded_head(run):
    _review_three(run)
    path = run / "review.jsonl"
    recorded = verify_review_log(path).head  # what the reviewer wrote down elsewhere
    _forge(path, 1, status="accepted", note="no problem here")
    # The limit, stated honestly: without a key or a recorded head, a chain whose hashes
    # were recomputed cannot be told from the real one.
    plain = verify_review_log(path)
    assert plain.ok and plain.entries == 3 and plain.head != recorded
    assert read_review_log(run).verification.ok
    check = verify_review_log(path, expected_head=f"sha256:{recorded}")
    assert not check.ok
    assert check.problems == [f"the recorded head sha256:{recorded} is not an entry of the log: "
                              "the log was rewritten (entries up to that head changed, removed "
                              "or reordered, even if their hashes were recomputed) or cut "
                              "before it"]
    assert not read_review_log(run, expected_head=recorded).verification.intact
    runner = CliRunner()
    listed = runner.invoke(cli, ["review", str(run), "--expect-head", f"sha256:{recorded}"])
    assert listed.exit_code == 2 and "Traceback" not in listed.output
    assert "does not verify against the recorded head" in listed.output
    assert "unreviewed" not in listed.output  # no statuses shown from a forged log
    before = path.read_bytes()
    added = runner.invoke(cli, ["review", str(run), IDS[2], "--status", "accepted",
                                "--reviewer", "C", "--expect-head", recorded])
    assert added.exit_code == 2 and "so no entry is added" in added.output
    assert path.read_bytes() == before


@pytest.mark.parametrize("index", [0, 1, 2])
def test_forging_any_entry_up_to_the_head_fails_against_it(run, index):
    _review_three(run)
    path = run / "review.jsonl"
    recorded = verify_review_log(path).head
    _forge(path, index, note="rewritten")
    assert verify_review_log(path).ok
    assert not verify_review_log(path, expected_head=recorded).ok


def test_cutting_the_end_is_only_found_against_the_recorded_head(run):
    _review_three(run)
    path = run / "review.jsonl"
    recorded = verify_review_log(path).head
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:2]))
    assert verify_review_log(path).ok  # a shorter log is a valid log
    assert not verify_review_log(path, expected_head=recorded).ok
    path.unlink()
    gone = verify_review_log(path, expected_head=recorded)
    assert gone.entries == 0 and gone.head is None
    assert gone.problems[0].startswith(f"the recorded head sha256:{recorded} is not an entry "
                                       f"of the log (the log has no entries)")


def test_the_log_may_grow_after_the_recorded_head(run):
    """What the head does not cover: entries after it, forged or not."""
    first = append_review(run, IDS[0], status="accepted", reviewer="A")
    second = append_review(run, IDS[1], status="disputed", reviewer="B")
    path = run / "review.jsonl"
    for form in (first["hash"], f"sha256:{first['hash']}", f" SHA256:{first['hash'].upper()}"):
        assert verify_review_log(path, expected_head=form).ok
    assert verify_review_log(path, expected_head=second["hash"]).ok
    _forge(path, 1, status="accepted")  # after the recorded head: not found
    assert verify_review_log(path, expected_head=first["hash"]).ok
    assert not verify_review_log(path, expected_head=second["hash"]).ok


@pytest.mark.parametrize("head", ["", "sha256:", "abc", "g" * 64, "sha1:" + "a" * 64])
def test_a_head_that_is_not_a_sha256_is_refused(run, head):
    with pytest.raises(ReviewError, match="is not a review log head: give the sha256"):
        verify_review_log(run / "review.jsonl", expected_head=head)
    result = CliRunner().invoke(cli, ["review", str(run), "--expect-head", head])
    assert result.exit_code == 2 and "is not a review log head" in result.output


def test_the_cli_prints_the_head_and_accepts_the_right_one(run):
    _review_three(run)
    head = verify_review_log(run / "review.jsonl").head
    result = CliRunner().invoke(cli, ["review", str(run), "--expect-head", f"sha256:{head}"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"review log: 3 entries, head sha256:{head}"


def test_many_problems_are_counted_not_all_listed(run):
    _review_three(run)
    (run / "review.jsonl").write_text("x\n" * 30)
    check = verify_review_log(run / "review.jsonl")
    assert len(check.problems) == 21 and check.problems[-1] == "and 10 more problem(s)"
    assert check.problems[0].startswith("line 1: not valid JSON")


def test_a_review_log_that_is_a_link_is_not_followed(run, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "log.jsonl"
    outside.write_text("")
    (run / "review.jsonl").symlink_to(outside)
    with pytest.raises(ReviewError, match=r"review\.jsonl: cannot read the review log "
                                          r"\(it is a link"):
        read_review_log(run)
    with pytest.raises(ReviewError, match="it is a link"):
        append_review(run, IDS[0], status="accepted", reviewer="A")
    assert outside.read_text() == ""


@pytest.mark.parametrize("make", [os.mkfifo, os.mkdir], ids=["pipe", "folder"])
def test_a_review_log_that_is_not_a_plain_file_is_refused(run, make):
    """A pipe named review.jsonl would block a reader forever."""
    make(run / "review.jsonl")
    with pytest.raises(ReviewError, match=r"review\.jsonl: cannot read the review log \(it "
                                          r"is not a plain file\)"):
        verify_review_log(run / "review.jsonl")


def test_concurrent_reviewers_lose_no_entry_and_leave_no_lock(run):
    from concurrent.futures import ThreadPoolExecutor

    def review(i: int) -> str:
        return append_review(run, IDS[i % len(IDS)], status="accepted", reviewer=f"R{i}")["hash"]

    with ThreadPoolExecutor(4) as pool:
        hashes = list(pool.map(review, range(24)))
    check = verify_review_log(run / "review.jsonl")
    assert check.ok and check.entries == 24
    assert sorted(e["hash"] for e in read_review_log(run).entries) == sorted(hashes)
    from audit.runfolder import TOOL_FILES  # the run folder's marker and its writer lock

    assert [p.name for p in run.iterdir() if p.name.startswith(".")
            and p.name not in TOOL_FILES] == []


# ---------------------------------------------------------------- properties, issue 16

# Any text a reviewer can type: every Unicode character but lone surrogates (which have no
# UTF-8), with the line separators and control characters drawn often.
TEXT = st.text(st.one_of(st.characters(exclude_categories=("Cs",)),
                         st.sampled_from(list("\u2028\u2029\x85\r\n\x00\x0b\x0c\x1c\x1d\x1e"))),
               max_size=40)
REVIEWS = st.lists(st.tuples(st.integers(0, len(IDS) - 1), st.sampled_from(STATUSES),
                             TEXT.filter(str.strip), TEXT), min_size=1, max_size=4)
PROPERTY = settings(max_examples=100, deadline=None)


def _fresh_run(root: str) -> Path:
    shutil.copy(FIXTURE, Path(root) / "results.json")
    return Path(root)


@PROPERTY
@given(reviews=REVIEWS)
def test_any_reviews_round_trip_exactly_and_verify(reviews):
    with tempfile.TemporaryDirectory() as root:
        run = _fresh_run(root)
        written = [append_review(run, IDS[i], status=status, reviewer=reviewer, note=note)
                   for i, status, reviewer, note in reviews]
        data = (run / "review.jsonl").read_bytes()
        assert data.isascii() and data.count(b"\n") == len(reviews)
        log = read_review_log(run)
        assert list(log.entries) == written and log.verification.ok
        for entry, (_, status, reviewer, note) in zip(log.entries, reviews, strict=True):
            assert (entry["note"], entry["reviewer"], entry["status"]) == (
                note, reviewer.strip(), status)
        check = verify_review_log(run / "review.jsonl")
        assert check.ok and check.entries == len(reviews) and check.head == written[-1]["hash"]
        for entry in written:  # every earlier head still verifies: the log only grew
            assert verify_review_log(run / "review.jsonl", expected_head=entry["hash"]).ok


@PROPERTY
@given(reviews=REVIEWS, where=st.integers(0, 10**6), byte=st.integers(0, 255))
def test_changing_any_byte_is_found_or_changes_no_entry(reviews, where, byte):
    """A one-byte change of the file either fails verification or leaves every entry as it
    was (white space between JSON tokens, the case of a \\u escape, the last newline)."""
    with tempfile.TemporaryDirectory() as root:
        run = _fresh_run(root)
        written = [append_review(run, IDS[i], status=status, reviewer=reviewer, note=note)
                   for i, status, reviewer, note in reviews]
        path = run / "review.jsonl"
        data = bytearray(path.read_bytes())
        data[where % len(data)] = byte
        path.write_bytes(bytes(data))
        for head in (None, written[-1]["hash"]):
            if verify_review_log(path, expected_head=head).ok:
                assert list(read_review_log(run).entries) == written


@PROPERTY
@given(before=TEXT, surrogate=st.characters(categories=("Cs",)), after=TEXT)
def test_text_with_a_lone_surrogate_is_refused_cleanly(before, surrogate, after):
    with tempfile.TemporaryDirectory() as root:
        run = _fresh_run(root)
        with pytest.raises(ReviewError, match="which is not a character"):
            append_review(run, IDS[0], status="accepted", reviewer="R",
                          note=before + surrogate + after)
        assert not (run / "review.jsonl").exists()
