"""The release gate (#21 item 3): exit codes for each option, reasons, and JUnit XML.

The run folder is the fixture's (10 findings: 6 high, 3 medium, 1 low); which findings
block is computed here from the fixture and the reviews the test records, independently of
the gate's code.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_signing import FIXTURE, invoke, keygen, make_run, review, sign

FINDINGS = {f["id"]: f["severity"] for f in json.loads(FIXTURE.read_text())["findings"]}
RANK = {"high": 0, "medium": 1, "low": 2, "info": 3}


def at_or_above(level: str) -> set[str]:
    return {i for i, s in FINDINGS.items() if RANK[s] <= RANK[level]}


def blocked_ids(output: str) -> set[str]:
    return {line.split()[1] for line in output.splitlines() if line.startswith("blocked: F-")}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


def test_the_fixture_has_findings_of_each_blocking_level():
    assert {s for s in FINDINGS.values()} == {"high", "medium", "low"}


@pytest.mark.parametrize("level", ["high", "medium", "low"])
def test_unreviewed_findings_at_or_above_the_level_block(run, level):
    result = invoke("gate", run, "--fail-on", level)
    assert result.exit_code == 1, result.output
    assert blocked_ids(result.output) == at_or_above(level)
    assert "unreviewed, not accepted or mitigated in the review log" in result.output
    assert f"gate blocked by {len(at_or_above(level))} reason(s)" in result.output


def test_accepted_or_mitigated_findings_pass_disputed_ones_block(run):
    highs = sorted(at_or_above("high"))
    for i, finding in enumerate(highs):
        review(run, finding, "accepted" if i % 2 else "mitigated")
    result = invoke("gate", run, "--fail-on", "high")
    assert result.exit_code == 0, result.output
    assert "gate passed: 10 finding(s) checked" in result.output
    # the latest review counts: disputed and false-positive keep a finding open
    review(run, highs[0], "disputed")
    review(run, highs[1], "false-positive")
    result = invoke("gate", run, "--fail-on", "high")
    assert result.exit_code == 1
    assert blocked_ids(result.output) == {highs[0], highs[1]}
    assert f"blocked: {highs[0]} (high): disputed, not accepted" in result.output
    # medium findings are still unreviewed
    result = invoke("gate", run, "--fail-on", "medium")
    assert blocked_ids(result.output) == (at_or_above("medium") - at_or_above("high")) | {
        highs[0], highs[1]}


def test_require_review_blocks_every_unreviewed_finding_above_info(run):
    for finding in at_or_above("high"):
        review(run, finding, "accepted")
    assert invoke("gate", run, "--fail-on", "high").exit_code == 0
    result = invoke("gate", run, "--fail-on", "high", "--require-review")
    assert result.exit_code == 1
    rest = set(FINDINGS) - at_or_above("high")
    assert blocked_ids(result.output) == rest
    assert "no review entry (--require-review)" in result.output
    for finding in rest:  # any status is a review
        review(run, finding, "disputed")
    assert invoke("gate", run, "--fail-on", "high", "--require-review").exit_code == 0


def _review_all(run: Path) -> None:
    for finding in FINDINGS:
        review(run, finding, "accepted")


def test_require_signatures_counts_valid_signatures_of_distinct_keys(run, tmp_path):
    _review_all(run)
    result = invoke("gate", run, "--fail-on", "low", "--require-signatures", "1")
    assert result.exit_code == 1
    assert "blocked: signatures: 0 valid signer(s) of the folder as it is, 1 required" \
        in result.output
    a = keygen(tmp_path / "keys", "a")
    assert sign(run, a).exit_code == 0
    assert invoke("gate", run, "--fail-on", "low", "--require-signatures", "1").exit_code == 0
    assert sign(run, a).exit_code == 0  # the same key twice is one signer
    assert invoke("gate", run, "--fail-on", "low", "--require-signatures", "2").exit_code == 1
    b = keygen(tmp_path / "keys", "b")
    assert sign(run, b, name="B", role="officer").exit_code == 0
    assert invoke("gate", run, "--fail-on", "low", "--require-signatures", "2").exit_code == 0
    # only trusted keys count
    (tmp_path / "trust").mkdir()
    (tmp_path / "trust" / "b.pub").write_bytes((tmp_path / "keys" / "b.pub").read_bytes())
    result = invoke("gate", run, "--fail-on", "low", "--require-signatures", "2",
                    "--trusted-keys", tmp_path / "trust")
    assert result.exit_code == 1 and "1 valid signer(s)" in result.output
    # a change after signing invalidates every signature
    (run / "tables" / "groups.csv").write_text("group,n\nlight,99\ndark,1\n")
    result = invoke("gate", run, "--fail-on", "low", "--require-signatures", "1")
    assert result.exit_code == 1
    assert "0 valid signer(s)" in result.output and "tables/groups.csv: changed" in result.output


def test_a_broken_review_log_counts_no_status(run):
    _review_all(run)
    assert invoke("gate", run, "--fail-on", "low").exit_code == 0
    path = run / "review.jsonl"
    lines = path.read_text().splitlines()
    entry = json.loads(lines[0])
    lines[0] = json.dumps({**entry, "note": "edited"})
    path.write_text("\n".join(lines) + "\n")
    result = invoke("gate", run, "--fail-on", "high")
    assert result.exit_code == 1
    assert "blocked: review.jsonl: the hash chain is broken" in result.output
    assert blocked_ids(result.output) == at_or_above("high")


# ---------------------------------------------------------------- JUnit XML


JUNIT_XSD = Path(__file__).parent / "fixtures" / "junit.xsd"


def validate_junit_schema(data: bytes) -> None:
    """Validate against the JUnit report schema (tests/fixtures/junit.xsd) with lxml (which
    pyHanko, the 'sign' extra, brings); AssertionError naming the first violation."""
    etree = pytest.importorskip("lxml.etree", reason="lxml validates XML against a schema")
    schema = etree.XMLSchema(etree.parse(str(JUNIT_XSD)))
    assert schema.validate(etree.fromstring(data)), schema.error_log.last_error


def check_junit_structure(data: bytes) -> ET.Element:
    """Valid against the JUnit schema (:func:`validate_junit_schema`), and what CI systems
    read: testsuites > testsuite(name, tests, failures, errors) > testcase(name,
    classname) > failure(message); counts consistent with the children."""
    validate_junit_schema(data)
    root = ET.fromstring(data)
    assert root.tag == "testsuites"
    for key in ("tests", "failures", "errors"):
        int(root.attrib[key])
    suites = list(root)
    assert suites and all(s.tag == "testsuite" for s in suites)
    total = failed = 0
    for suite in suites:
        assert suite.attrib["name"]
        cases = list(suite)
        assert all(c.tag == "testcase" for c in cases)
        assert int(suite.attrib["tests"]) == len(cases)
        assert int(suite.attrib["errors"]) == 0
        failures = [c for c in cases if c.find("failure") is not None]
        assert int(suite.attrib["failures"]) == len(failures)
        for case in cases:
            assert case.attrib["name"] and case.attrib["classname"]
            assert {child.tag for child in case} <= {"failure", "error", "skipped",
                                                       "system-out", "system-err"}
            for failure in case.findall("failure"):
                assert failure.attrib["message"]
        total, failed = total + len(cases), failed + len(failures)
    assert int(root.attrib["tests"]) == total and int(root.attrib["failures"]) == failed
    return root


def test_junit_has_one_testcase_per_finding_and_a_failure_per_blocking_one(run, tmp_path):
    review(run, sorted(at_or_above("high"))[0], "accepted")
    out = tmp_path / "ci" / "gate.xml"
    result = invoke("gate", run, "--fail-on", "medium", "--require-signatures", "1",
                    "--junit", out)
    assert result.exit_code == 1
    root = check_junit_structure(out.read_bytes())
    cases = {c.attrib["name"]: c for c in root.iter("testcase")}
    assert set(cases) == set(FINDINGS) | {"review log", "signatures"}
    failing = {n for n, c in cases.items() if c.find("failure") is not None}
    assert failing == (at_or_above("medium") - {sorted(at_or_above("high"))[0]}) | {
        "signatures"}
    printed = [line.removeprefix("blocked: ") for line in result.output.splitlines()
               if line.startswith("blocked: ")]
    assert sorted(c.find("failure").attrib["message"] for n, c in cases.items()
                  if n in failing) == sorted(printed)
    assert cases[sorted(at_or_above("low") - at_or_above("medium"))[0]].attrib["classname"] \
        == "gan-audit.findings.low"


def test_junit_of_a_passing_gate_has_no_failure(run, tmp_path):
    _review_all(run)
    out = tmp_path / "gate.xml"
    assert invoke("gate", run, "--fail-on", "low", "--junit", out).exit_code == 0
    root = check_junit_structure(out.read_bytes())
    assert root.attrib["failures"] == "0" and root.attrib["tests"] == str(len(FINDINGS) + 1)


def test_the_structure_check_can_fail():
    bad = (b'<testsuites tests="1" failures="0" errors="0"><testsuite name="s" tests="1" '
           b'failures="0" errors="0"><testcase name="x"/></testsuite></testsuites>')
    with pytest.raises(KeyError):  # a testcase without classname
        check_junit_structure(bad)


@pytest.mark.parametrize("bad", [
    b'<testsuites><testsuite name="s" tests="1"><testcase classname="c"/></testsuite>'
    b'</testsuites>',                                             # a testcase without name
    b'<testsuites><testsuite tests="1"><testcase name="x"/></testsuite></testsuites>',
    b'<testsuites><testsuite name="s" tests="-1"/></testsuites>',  # a negative count
    b'<testsuites><testsuite name="s" tests="1" timestamp="yesterday"/></testsuites>',
    b'<testsuites><testcase name="x"/></testsuites>',             # a case outside a suite
])
def test_the_schema_check_can_fail(bad):
    with pytest.raises(AssertionError):
        validate_junit_schema(bad)
