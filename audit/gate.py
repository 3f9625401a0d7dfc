"""``gan-audit gate``: may this model be released, by the audit's findings and their review?

A release pipeline calls the gate on a run folder; it blocks (exit 1) on:

* every finding of ``fail_on`` severity or above whose latest review (of the current
  results) is not ``accepted`` or ``mitigated``: unreviewed, ``disputed`` or
  ``false-positive`` findings block until a reviewer accepts or mitigates them;
* with ``require_review``, every finding above ``info`` that has no review entry at all;
* with ``require_signatures`` N, fewer than N distinct keys whose signatures are valid and
  still describe the folder (:func:`audit.signing.check_signatures`);
* a review log whose hash chain is broken (its statuses cannot be trusted, so none count).

:func:`gate_to_junit` writes the outcome as JUnit XML, one test case per finding (a
failure for each blocking one), so CI systems show the findings as test results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from audit.errors import RunFolderError
from audit.vocabulary import Severity, severity_rank

__all__ = ["RESOLVED", "GateCase", "GateResult", "gate_run", "gate_to_junit", "at_or_above"]

#: Review statuses that release a finding from the gate.
RESOLVED: tuple[str, ...] = ("accepted", "mitigated")
_SUMMARY_CHARS = 120  # a finding's summary as the one-line reason quotes it


@dataclass(frozen=True)
class GateCase:
    """One thing the gate checked: a finding (``kind`` = its severity) or a check of the
    folder (``kind`` = ``"check"``); ``reason`` is the one line that blocks, else None."""

    name: str
    kind: str
    status: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class GateResult:
    """What :func:`gate_run` decided.

    Attributes
    ----------
    cases
        Every finding, then the folder checks (review log, signatures), in that order.
    fail_on
        The severity from which unresolved findings block.
    """

    run_dir: Path
    fail_on: Severity
    cases: tuple[GateCase, ...] = ()

    @property
    def blocking(self) -> list[str]:
        """One line per blocking reason (empty: the gate passes)."""
        return [c.reason for c in self.cases if c.reason is not None]

    @property
    def summary(self) -> str:
        """One line: passed or blocked, and how many findings were checked."""
        findings = sum(c.kind != "check" for c in self.cases)
        verdict = f"blocked by {len(self.blocking)} reason(s)" if self.blocking else "passed"
        fix = ("; a finding is released by `gan-audit review RUN_DIR FINDING_ID --status "
               "accepted|mitigated --reviewer NAME`" if self.blocking else "")
        return (f"gate {verdict}: {findings} finding(s) checked, failing on "
                f"{self.fail_on.value} and above{fix}")


def at_or_above(severity: Severity | str, fail_on: Severity | str) -> bool:
    """Whether a finding of ``severity`` is at ``fail_on`` or more severe (what blocks)."""
    return severity_rank(severity) <= Severity(fail_on).rank


def _finding_case(finding: dict, status: str | None, *, fail_on: Severity,
                  require_review: bool) -> GateCase:
    severity = finding["severity"]
    rank = severity_rank(severity)
    head = f"{finding['id']} ({severity})"
    summary = " ".join(str(finding.get("summary") or "").split())
    if len(summary) > _SUMMARY_CHARS:
        summary = summary[:_SUMMARY_CHARS - 3] + "..."
    reason = None
    if at_or_above(severity, fail_on) and status not in RESOLVED:
        reason = (f"{head}: {status or 'unreviewed'}, not accepted or mitigated in the review "
                  f"log" + (f": {summary}" if summary else ""))
    elif require_review and rank < Severity.INFO.rank and status is None:
        reason = f"{head}: no review entry (--require-review)"
    return GateCase(finding["id"], severity, status, reason)


def _signature_case(run_dir: Path, required: int, trusted_keys: Path | None) -> GateCase:
    from audit.signing import check_signatures

    checks = check_signatures(run_dir, trusted_keys=trusted_keys)
    valid = {c.key_fingerprint for c in checks if c.ok}
    reason = None
    if len(valid) < required:
        invalid = [c for c in checks if not c.ok]
        why = f"; first invalid: {invalid[0].problems[0]}" if invalid else ""
        reason = (f"signatures: {len(valid)} valid signer(s) of the folder as it is, "
                  f"{required} required ({len(invalid)} invalid{why}); sign it last with "
                  f"gan-audit sign RUN_DIR --key KEY --name NAME --role ROLE")
    return GateCase("signatures", "check", f"{len(valid)} valid", reason)


def gate_run(run_dir: Path, *, fail_on: Severity | str, require_review: bool = False,
             require_signatures: int = 0, trusted_keys: Path | None = None) -> GateResult:
    """Decide whether ``run_dir`` passes the release gate (see the module docstring).

    Parameters
    ----------
    fail_on
        ``high``, ``medium`` or ``low``: unresolved findings of this severity or above block.
    require_review
        Every finding above ``info`` needs a review entry (any status).
    require_signatures
        At least this many distinct keys must have valid signatures of the folder as it is.
    trusted_keys
        A folder of public keys (``*.pub``): only their signatures count.

    Raises
    ------
    RunFolderError
        Not a run folder, or no readable results.json.
    """
    from audit.report.review import LOG_NAME, latest_status, list_findings, read_review_log
    from audit.runfolder import is_owned

    run_dir, fail_on = Path(run_dir), Severity(fail_on)
    if not run_dir.is_dir() or not is_owned(run_dir):
        raise RunFolderError(f"{run_dir}: not a gan-audit run folder (no .gan-audit-run "
                             f"marker). Give the folder that gan-audit run wrote.")
    findings = list_findings(run_dir)
    log = read_review_log(run_dir)
    intact = log.verification.intact
    latest = latest_status(log) if intact else {}
    cases = [_finding_case(f, latest.get(f["id"], {}).get("status"), fail_on=fail_on,
                           require_review=require_review) for f in findings]
    cases.append(GateCase("review log", "check", "intact" if intact else "broken", None
                          if intact else f"{LOG_NAME}: the hash chain is broken ("
                          + "; ".join(log.verification.problems[:3])
                          + "), so no review status counts"))
    if require_signatures:
        cases.append(_signature_case(run_dir, require_signatures, trusted_keys))
    return GateResult(run_dir, fail_on, tuple(cases))


def gate_to_junit(result: GateResult) -> bytes:
    """The gate's outcome as JUnit XML (UTF-8 bytes): ``testsuites`` > one ``testsuite`` >
    one ``testcase`` per finding and check, a ``failure`` in each blocking one."""
    import xml.etree.ElementTree as ET

    from audit.runfolder import utc_now

    tests, failures = str(len(result.cases)), str(len(result.blocking))
    root = ET.Element("testsuites", name="gan-audit gate", tests=tests, failures=failures,
                      errors="0")
    suite = ET.SubElement(root, "testsuite", name=f"gan-audit gate {result.run_dir.name}",
                          tests=tests, failures=failures, errors="0", skipped="0",
                          timestamp=utc_now().removesuffix("Z"))
    for case in result.cases:
        classname = ("gan-audit.checks" if case.kind == "check"
                     else f"gan-audit.findings.{case.kind}")
        element = ET.SubElement(suite, "testcase", name=case.name, classname=classname)
        if case.reason is not None:
            failure = ET.SubElement(element, "failure", message=case.reason,
                                    type="blocking finding" if case.kind != "check"
                                    else "blocking check")
            failure.text = case.reason
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
