"""The review log: an append-only, hash-chained ``review.jsonl`` in the run folder.

Each line is one review of one finding::

    {"time": "2026-11-28T21:30:00Z", "reviewer": "A. Auditor", "finding_id": "F-REP-tone-dark",
     "status": "accepted", "note": "confirmed by sampling",
     "prev_hash": "<hash of the previous line>", "hash": "<sha256 of this entry>"}

``hash`` is the sha256 (hex) of the entry's canonical JSON without the ``hash`` key
(keys sorted, no spaces, UTF-8; ``prev_hash`` included). The first entry's
``prev_hash`` is the sha256 of the bytes of ``results.json`` at the time of the first
review, which ties the log to the results it reviews.

What the chain shows: an edited, reordered, inserted or deleted line breaks it at
that line; a log whose first entry does not chain to the current results.json was
started on other results (re-measured since) or lost its first lines. What it cannot
show: lines cut from the end of the file (keep a copy of the last hash elsewhere,
e.g. in the signed report, to detect that).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit.errors import ReviewError, RunFolderError
from audit.io import atomic_write_bytes, sha256_bytes

__all__ = [
    "STATUSES",
    "ChainCheck",
    "ReviewLog",
    "append_review",
    "canonical_json",
    "entry_hash",
    "read_review_log",
    "verify_chain",
    "latest_status",
    "list_findings",
]

STATUSES: tuple[str, ...] = ("accepted", "disputed", "mitigated", "false-positive")
LOG_NAME = "review.jsonl"
_FIELDS = ("time", "reviewer", "finding_id", "status", "note", "prev_hash", "hash")


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8 (what hashes are taken over)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """sha256 (hex) of an entry's canonical JSON, leaving out its own ``hash``."""
    return sha256_bytes(canonical_json({k: v for k, v in entry.items() if k != "hash"}))


@dataclass(frozen=True)
class ChainCheck:
    """The outcome of checking a review log's hash chain.

    Attributes
    ----------
    intact
        True when every line parses, carries its own correct hash and points to the
        previous line's hash.
    rooted
        True when the first entry's ``prev_hash`` is the sha256 of the current
        results.json (always True for an empty log).
    problems
        One plain sentence per problem, with the line number.
    last_hash
        Hash of the last entry (the genesis hash for an empty log).
    """

    intact: bool
    rooted: bool
    problems: tuple[str, ...] = ()
    last_hash: str = ""

    @property
    def ok(self) -> bool:
        return self.intact and self.rooted


@dataclass(frozen=True)
class ReviewLog:
    """The parsed entries of a review log (those that parse) and its chain check."""

    entries: tuple[dict[str, Any], ...] = ()
    verification: ChainCheck = field(default_factory=lambda: ChainCheck(True, True))
    results_sha256: str = ""  # of the results.json the log was read against

    def reviews_current_results(self, entry: Mapping[str, Any]) -> bool:
        """Whether ``entry`` reviewed these results (not results since re-measured).

        Entries record the sha256 of the results.json they reviewed; an entry written
        before that field existed counts when the chain is rooted in these results.
        """
        if "results_sha256" in entry:
            return entry["results_sha256"] == self.results_sha256
        return self.verification.rooted


def verify_chain(lines: Sequence[str], *, genesis: str) -> tuple[list[dict[str, Any]], ChainCheck]:
    """Parse the lines of a review log and check its chain.

    Parameters
    ----------
    lines
        The file's lines (blank lines are ignored).
    genesis
        The expected ``prev_hash`` of the first entry: sha256 of results.json's bytes.

    Returns
    -------
    entries, check
        The entries that parse as JSON objects (in file order) and the :class:`ChainCheck`.
    """
    entries: list[dict[str, Any]] = []
    problems: list[str] = []
    intact, rooted = True, True
    prev: str | None = None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {lineno}: not valid JSON ({exc.msg}); the line was edited "
                            f"or the file damaged")
            intact, prev = False, None
            continue
        if not isinstance(entry, dict):
            problems.append(f"line {lineno}: not a JSON object")
            intact, prev = False, None
            continue
        entries.append(entry)
        missing = [k for k in _FIELDS if k not in entry]
        if missing:
            problems.append(f"line {lineno}: missing field(s) {', '.join(missing)}")
            intact = False
        if entry.get("hash") != entry_hash(entry):
            problems.append(f"line {lineno}: its content does not match its hash "
                            f"(finding {entry.get('finding_id')!r}); the line was edited "
                            f"after it was written")
            intact = False
        if prev is None and not entries[:-1]:
            if entry.get("prev_hash") != genesis:
                rooted = False
                problems.append(f"line {lineno}: the first entry does not chain to the current "
                                f"results.json: results.json changed since the first review "
                                f"(re-measured), or lines were removed from the start of the log")
        elif prev is not None and entry.get("prev_hash") != prev:
            problems.append(f"line {lineno}: does not point to the hash of the entry before it; "
                            f"a line was inserted, removed or reordered before it")
            intact = False
        prev = entry.get("hash") if isinstance(entry.get("hash"), str) else None
    last = str(entries[-1].get("hash")) if entries else genesis
    return entries, ChainCheck(intact=intact, rooted=rooted, problems=tuple(problems),
                               last_hash=last)


def _results_bytes(run_dir: Path) -> bytes:
    path = Path(run_dir) / "results.json"
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise RunFolderError(f"{path}: not found. Run the measure stage first "
                             f"(gan-audit measure CONFIG.yaml) or point to a run folder.") from exc


def read_review_log(run_dir: Path) -> ReviewLog:
    """Read and check ``RUN_DIR/review.jsonl`` (an empty log if the file is absent)."""
    run_dir = Path(run_dir)
    genesis = sha256_bytes(_results_bytes(run_dir))
    path = run_dir / LOG_NAME
    if not path.exists():
        return ReviewLog((), ChainCheck(True, True, (), genesis), genesis)
    text = path.read_text(encoding="utf-8", errors="replace")
    entries, check = verify_chain(text.splitlines(), genesis=genesis)
    return ReviewLog(tuple(entries), check, genesis)


def latest_status(log: ReviewLog) -> dict[str, dict[str, Any]]:
    """Finding id -> its latest review entry of the current results (file order decides).

    Reviews of earlier results (before a re-measure changed results.json) stay in the
    history but give no status: a reviewer accepted other numbers.
    """
    out: dict[str, dict[str, Any]] = {}
    for e in log.entries:
        if log.reviews_current_results(e):
            out[str(e.get("finding_id"))] = e
    return out


def _finding_ids(run_dir: Path) -> list[str]:
    return [f["id"] for f in list_findings(run_dir)]


@contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """An exclusive lock around read-append-write, so two reviewers never lose an entry."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        yield
        return
    with open(Path(run_dir) / ".review.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def append_review(run_dir: Path, finding_id: str, *, status: str, reviewer: str,
                  note: str = "", now: datetime | None = None) -> dict[str, Any]:
    """Append one review to ``RUN_DIR/review.jsonl`` and return the entry written.

    Raises
    ------
    ReviewError
        Unknown finding id (with the closest ids), unknown status, empty reviewer
        name, or a log whose chain is broken (it is never extended then).
    """
    run_dir = Path(run_dir)
    ids = _finding_ids(run_dir)
    if finding_id not in ids:
        close = difflib.get_close_matches(finding_id, ids, n=3, cutoff=0.4)
        hint = (f" Did you mean {', '.join(close)}?" if close else
                (" This audit has no findings." if not ids else ""))
        raise ReviewError(f"{run_dir / 'results.json'}: no finding {finding_id!r}.{hint} "
                          f"List the findings with: gan-audit review {run_dir}")
    if status not in STATUSES:
        raise ReviewError(f"unknown review status {status!r}; use one of "
                          f"{', '.join(STATUSES)}.")
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise ReviewError("the reviewer's name is empty; give it with --reviewer NAME "
                          "(it is recorded with the review).")
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    with _locked(run_dir):
        log = read_review_log(run_dir)
        if not log.verification.intact:
            raise ReviewError(
                f"{run_dir / LOG_NAME}: the hash chain is broken, so no entry is added: "
                + "; ".join(log.verification.problems)
                + ". Restore the file from a copy, or move it aside to start a new log.")
        entry: dict[str, Any] = {
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reviewer": reviewer, "finding_id": finding_id, "status": status,
            "note": str(note or "").strip(), "results_sha256": log.results_sha256,
            "prev_hash": log.verification.last_hash,
        }
        entry["hash"] = entry_hash(entry)
        path = run_dir / LOG_NAME
        old = path.read_bytes() if path.exists() else b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        atomic_write_bytes(path, old + json.dumps(entry, ensure_ascii=False).encode("utf-8")
                           + b"\n")
    return entry


def list_findings(run_dir: Path) -> list[dict[str, Any]]:
    """The findings of ``RUN_DIR/results.json``: id, severity, confidence, summary."""
    path = Path(run_dir) / "results.json"
    try:
        results = json.loads(_results_bytes(Path(run_dir)))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc}); re-run the measure stage.") from exc
    if not isinstance(results, dict):
        raise RunFolderError(f"{path}: expected a JSON object; re-run the measure stage.")
    return [{"id": str(f.get("id")), "severity": str(f.get("severity", "n/a")),
             "confidence": str(f.get("confidence", "n/a")), "summary": f.get("summary", "")}
            for f in (results.get("findings") or []) if isinstance(f, dict)]
