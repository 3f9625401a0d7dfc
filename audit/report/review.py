"""The review log: an append-only, hash-chained ``review.jsonl`` in the run folder.

Each line is one review of one finding, one JSON object::

    {"time": "2026-11-28T21:30:00.000000Z", "reviewer": "A. Auditor",
     "finding_id": "F-REP-tone-dark", "status": "accepted", "note": "confirmed by sampling",
     "results_sha256": "<sha256 of the results.json reviewed>",
     "prev_hash": "<hash of the previous entry>", "hash": "<sha256 of this entry>"}

An entry may also carry ``"mitigation"`` (what is done about the finding) and ``"owner"``
(who does it): optional text fields, written only when given, so entries without them (and
logs written before they existed) hash and verify exactly as before.

``hash`` is the sha256 (hex) of the entry's canonical JSON without the ``hash`` key
(keys sorted, no spaces, UTF-8; ``prev_hash`` included), so it does not depend on how
a line escapes its characters. The first entry's ``prev_hash`` is its ``results_sha256``,
the sha256 of the bytes of ``results.json`` at the time of the first review, which ties
the log to the results it reviews.

Lines are written with every character outside ASCII escaped (``\\u2028``, ``\\u0085``;
JSON escapes ``\\r`` and ``\\n`` anyway), so one line holds exactly one entry whatever a
note says, and read as bytes split on ``\\n`` alone, decoded as strict UTF-8 (never
``str.splitlines``, which also splits on U+2028, U+0085, ``\\r`` and others).

What the chain shows, and what it cannot, is in :func:`verify_review_log`. In short: an
edit, insertion, removal or reordering is found at its line unless whoever made it also
recomputed the hashes of every entry after it, which anyone can (there is no key; signed
logs are another issue). Against that, and against lines cut from the end, record the
head hash that ``gan-audit review`` prints and check the log against it later
(``expected_head``; ``gan-audit review RUN_DIR --expect-head HASH``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit.errors import ReviewError, RunFolderError
from audit.io import atomic_write_bytes, sha256_bytes
from audit.runfolder import read_run_file

__all__ = [
    "STATUSES",
    "ChainCheck",
    "ReviewLog",
    "ReviewLogCheck",
    "append_review",
    "canonical_json",
    "entry_hash",
    "entry_to_line",
    "head_summary",
    "parse_head",
    "read_review_log",
    "verify_review_log",
    "latest_status",
    "list_findings",
]

STATUSES: tuple[str, ...] = ("accepted", "disputed", "mitigated", "false-positive")
LOG_NAME = "review.jsonl"
HEAD_PREFIX = "sha256:"
_FIELDS = ("time", "reviewer", "finding_id", "status", "note", "prev_hash", "hash")
_HASHES = ("prev_hash", "hash", "results_sha256")
_OPTIONAL_TEXT = ("results_sha256", "mitigation", "owner")  # text when present
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_PROBLEMS = 20  # a damaged file of many lines: list the first problems, count the rest


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8 (what hashes are taken over).

    Raises ``UnicodeEncodeError`` for a string holding a lone surrogate (no UTF-8 exists).
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """sha256 (hex) of an entry's canonical JSON, leaving out its own ``hash``."""
    return sha256_bytes(canonical_json({k: v for k, v in entry.items() if k != "hash"}))


def entry_to_line(entry: Mapping[str, Any]) -> bytes:
    """One log line: the entry's JSON, ASCII only (so no line separator inside), and ``\\n``."""
    return json.dumps(dict(entry), ensure_ascii=True, allow_nan=False).encode("ascii") + b"\n"


def parse_head(text: str) -> str:
    """A head hash as given by a user (``sha256:<64 hex>`` or the 64 hex digits alone).

    Returns
    -------
    str
        The 64 lower-case hex digits.

    Raises
    ------
    ReviewError
        When ``text`` is not a sha256 hash.
    """
    value = str(text).strip().lower().removeprefix(HEAD_PREFIX)
    if not _SHA256.fullmatch(value):
        raise ReviewError(f"{_shown(text)} is not a review log head: give the sha256 that "
                          f"'gan-audit review RUN_DIR' printed after 'head' (64 hex digits, "
                          f"with or without the 'sha256:' prefix).")
    return value


@dataclass(frozen=True)
class ReviewLogCheck:
    """The outcome of :func:`verify_review_log`.

    Attributes
    ----------
    entries
        Number of lines that are JSON objects (whether or not they check out).
    head
        ``hash`` of the last entry (64 hex digits): the value to record elsewhere and pass
        as ``expected_head`` later. None for an absent or empty log. Only vouched for when
        :attr:`ok`.
    root
        ``prev_hash`` of the first entry when it starts a chain: the sha256 of the
        results.json that the first review reviewed. None for an empty log or when the
        first line does not start a chain.
    problems
        One sentence per problem, naming the line ("line 3: ...") or the recorded head.
        At most 20 are listed; a last sentence counts the rest.
    """

    entries: int = 0
    head: str | None = None
    root: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every line checks out (and the recorded head, if given, is in the log)."""
        return not self.problems


@dataclass(frozen=True)
class ChainCheck:
    """The review log checked against the current results.json (what the report shows).

    Attributes
    ----------
    intact
        True when every line parses, carries its own correct hash and points to the
        previous line's hash (:attr:`ReviewLogCheck.ok`).
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
    check: ReviewLogCheck = field(default_factory=ReviewLogCheck)  # head, count, problems

    def reviews_current_results(self, entry: Mapping[str, Any]) -> bool:
        """Whether ``entry`` reviewed these results (not results since re-measured).

        Entries record the sha256 of the results.json they reviewed; an entry written
        before that field existed counts when the chain is rooted in these results.
        """
        if "results_sha256" in entry:
            return entry["results_sha256"] == self.results_sha256
        return self.verification.rooted


def _shown(value: Any, limit: int = 60) -> str:
    """``repr`` of a value from a file, cut to ``limit`` characters (control characters escaped)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {_shown(key)} appears twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _parse_line(raw: bytes) -> dict[str, Any] | str:
    """One line's bytes -> its entry (a dict), or a sentence saying what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}); "
                f"the file was edited or damaged")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys,
                         parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        return (f"not valid JSON ({exc.msg} at column {exc.colno}); the line was edited "
                f"or the file damaged")
    except (ValueError, RecursionError) as exc:  # a duplicate key, NaN, a huge number
        return f"not valid JSON ({exc or type(exc).__name__}); the line was edited"
    if not isinstance(obj, dict):
        return "not a JSON object; the line was edited or the file damaged"
    return obj


def _entry_problems(entry: Mapping[str, Any]) -> list[str]:
    """What is wrong with one parsed entry on its own: fields, their types, its hash."""
    missing = [k for k in _FIELDS if k not in entry]
    if missing:
        return [f"missing field(s) {', '.join(missing)}"]
    not_text = [k for k in (*_FIELDS, *_OPTIONAL_TEXT)
                if k in entry and not isinstance(entry[k], str)]
    if not_text:
        return [f"field(s) {', '.join(not_text)} are not text"]
    out = []
    if entry["status"] not in STATUSES:
        out.append(f"unknown status {_shown(entry['status'])}")
    not_hash = [k for k in _HASHES if k in entry and not _SHA256.fullmatch(entry[k])]
    if not_hash:
        out.append(f"field(s) {', '.join(not_hash)} are not sha256 hashes (64 hex digits)")
    try:
        matches = entry["hash"] == entry_hash(entry)
    except UnicodeEncodeError:
        out.append("holds a lone surrogate (\\ud800-\\udfff escape), which no review "
                   "writes; the line was edited")
    else:
        if not matches:
            out.append(f"its content does not match its hash (finding "
                       f"{_shown(entry['finding_id'])}); the line was edited after it was "
                       f"written")
    return out


def _check_log_bytes(data: bytes, *, expected_head: str | None = None
                     ) -> tuple[list[dict[str, Any]], ReviewLogCheck]:
    """Parse the bytes of a review log and check its chain (see :func:`verify_review_log`).

    Returns
    -------
    entries, check
        The lines that are JSON objects, in file order, and the :class:`ReviewLogCheck`.
    """
    want = None if expected_head is None else parse_head(expected_head)
    entries: list[dict[str, Any]] = []
    problems: list[str] = []
    verified: set[str] = set()  # hashes of the entries that check out on their own
    prev: str | None = None  # stated hash of the entry on the line before (None: unknown)
    first, root = True, None
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        entry = _parse_line(raw)
        if isinstance(entry, str):
            problems.append(f"line {lineno}: {entry}")
            first, prev = False, None
            continue
        entries.append(entry)
        own = _entry_problems(entry)
        problems += [f"line {lineno}: {p}" for p in own]
        link = entry.get("prev_hash")
        if first and "results_sha256" in entry and link != entry["results_sha256"]:
            problems.append(f"line {lineno}: the first entry does not start the chain (its "
                            f"prev_hash is not the sha256 of the results.json it reviewed); "
                            f"lines were removed from the start of the log or reordered")
        elif first:
            root = link if isinstance(link, str) else None
        elif prev is not None and link != prev:
            problems.append(f"line {lineno}: does not point to the hash of the entry before "
                            f"it; a line was inserted, removed or reordered before it")
        stated = entry.get("hash")
        prev = stated if isinstance(stated, str) else None
        if prev is not None and not own:
            verified.add(prev)
        first = False
    head = entries[-1].get("hash") if entries else None
    head = head if isinstance(head, str) else None
    if want is not None and want not in verified:
        problems.insert(0, (
            f"the recorded head {HEAD_PREFIX}{want} is not an entry of the log"
            + (" (the log has no entries)" if not entries else "")
            + ": the log was rewritten (entries up to that head changed, removed or reordered, "
              "even if their hashes were recomputed) or cut before it"))
    if len(problems) > _MAX_PROBLEMS:
        problems = [*problems[:_MAX_PROBLEMS],
                    f"and {len(problems) - _MAX_PROBLEMS} more problem(s)"]
    return entries, ReviewLogCheck(entries=len(entries), head=head, root=root,
                                   problems=problems)


def _read_log(path: Path) -> bytes | None:
    """The bytes of a review log (None when absent); never through a link, never a pipe."""
    import stat

    def refuse(why: str) -> ReviewError:
        return ReviewError(f"{path}: cannot read the review log ({why}). Replace it with the "
                           f"log itself, or move it aside to start a new log.")

    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise refuse("it is a link, and the review log must be a plain file in the run folder"
                     if Path(path).is_symlink() else str(exc.strerror)) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise refuse("it is not a plain file")
    with os.fdopen(fd, "rb") as fh:
        try:
            return fh.read()
        except OSError as exc:
            raise refuse(str(exc.strerror)) from exc


def verify_review_log(path: Path, *, expected_head: str | None = None) -> ReviewLogCheck:
    """Check a review log's lines and hash chain, optionally against a recorded head.

    Parameters
    ----------
    path
        The log file (``RUN_DIR/review.jsonl``); an absent file is an empty log.
    expected_head
        A head recorded earlier (as printed by ``gan-audit review``: ``sha256:<hex>`` or the
        64 hex digits). The check fails unless an entry of the log has this hash and every
        line checks out; the log may have grown after it.

    Returns
    -------
    ReviewLogCheck
        Entries counted, the head (hash of the last entry), the root and the problems;
        ``ok`` when there are none.

    Raises
    ------
    ReviewError
        ``expected_head`` is not a sha256 hash, or the file cannot be read (a link, not
        a plain file, no permission).

    Notes
    -----
    Always found, at its line: a line that is not UTF-8, not JSON or not a review entry;
    an entry whose content does not match its hash (edited); an entry that does not point
    to the hash of the entry before it (an entry inserted, removed or reordered before it,
    or edited with its hash recomputed); a first entry that does not start a chain (lines
    removed from the start: its ``prev_hash`` is not its ``results_sha256``; for an entry
    written before entries named their results, only :func:`read_review_log`'s ``rooted``
    can tell, against the current results.json).

    Not found without a recorded head: lines cut from the end, and a log rewritten with
    recomputed hashes from some entry on (or wholly, on the same results.json): anyone
    can compute sha256, so the chain alone shows integrity against accidents and careless
    edits, not against a forger.

    Found with ``expected_head``: any change, removal, insertion or reordering of the
    entries up to that head, recomputed hashes or not (each hash covers the previous one,
    so the head pins every entry before it), and the log cut before it. Still not found:
    changes after that head (entries added, removed, or rewritten with recomputed hashes
    after it), so record the new head after each review. That the first entry reviewed the
    current results.json is :func:`read_review_log`'s ``rooted``, not checked here.
    """
    data = _read_log(Path(path))
    return _check_log_bytes(data or b"", expected_head=expected_head)[1]


def _results_bytes(run_dir: Path) -> bytes:
    path = Path(run_dir) / "results.json"
    try:
        return read_run_file(path)
    except FileNotFoundError as exc:
        raise RunFolderError(f"{path}: not found. Run the measure stage first "
                             f"(gan-audit measure CONFIG.yaml) or point to a run folder.") from exc


def _log_against_results(entries: list[dict[str, Any]], check: ReviewLogCheck,
                         genesis: str) -> ReviewLog:
    """The report's view of a checked log: intact, and rooted in the results ``genesis``."""
    problems = list(check.problems)
    rooted = not entries or check.root == genesis
    if entries and check.root is not None and not rooted:
        old = "results_sha256" not in entries[0]  # written before entries named their results
        problems.append("the first entry does not chain to the current results.json: "
                        "results.json changed since the first review (re-measured)"
                        + (", or lines were removed from the start of the log" if old else ""))
    verification = ChainCheck(intact=check.ok, rooted=rooted, problems=tuple(problems),
                              last_hash=check.head or genesis)
    return ReviewLog(tuple(entries), verification, genesis, check)


def read_review_log(run_dir: Path, *, expected_head: str | None = None) -> ReviewLog:
    """Read and check ``RUN_DIR/review.jsonl`` (an empty log if the file is absent).

    The file is read once: the entries returned are the ones checked. With
    ``expected_head`` (see :func:`verify_review_log`) a log that does not hold that head
    is not intact.
    """
    run_dir = Path(run_dir)
    genesis = sha256_bytes(_results_bytes(run_dir))
    entries, check = _check_log_bytes(_read_log(run_dir / LOG_NAME) or b"",
                                      expected_head=expected_head)
    return _log_against_results(entries, check, genesis)


def head_summary(check: ReviewLogCheck) -> str:
    """One line for people: ``review log: 3 entries, head sha256:<hex>`` (or no entries)."""
    if check.head is None:
        return "review log: no entries"
    return (f"review log: {check.entries} entr{'y' if check.entries == 1 else 'ies'}, "
            f"head {HEAD_PREFIX}{check.head}")


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
    """An exclusive lock around read-check-write, so two reviewers never lose an entry.

    The lock file (``.review.jsonl.lock``) is removed on the way out; a waiter that got
    the lock of a file removed meanwhile tries again, so one writer holds it at a time.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        yield
        return
    path = Path(run_dir) / f".{LOG_NAME}.lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise ReviewError(f"{path}: cannot lock the review log ({exc.strerror}); remove "
                              f"that file if no review is being written.") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
                break
        except FileNotFoundError:
            pass  # the holder before us removed it: lock the next one
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _text_field(name: str, value: str) -> str:
    """``value`` if it can be written as UTF-8, else a :class:`ReviewError` naming ``name``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ReviewError(
            f"the {name} holds {value[exc.start]!r} at character {exc.start + 1}, which is "
            f"not a character (a byte that is not UTF-8 in the command line?); give the "
            f"{name} as UTF-8 text.") from exc
    return value


def append_review(run_dir: Path, finding_id: str, *, status: str, reviewer: str,
                  note: str = "", now: datetime | None = None,
                  expected_head: str | None = None, mitigation: str = "",
                  owner: str = "") -> dict[str, Any]:
    """Append one review to ``RUN_DIR/review.jsonl`` and return the entry written.

    The note is recorded exactly as given (any characters, line breaks included; the
    line escapes them); the reviewer's name without surrounding white space. The file is
    replaced atomically (temporary file, fsync, rename) under a lock.

    Parameters
    ----------
    expected_head
        A head recorded earlier (see :func:`verify_review_log`): the log is only extended
        when it verifies against it.
    mitigation, owner
        What will be done about the finding and who answers for it (the report's
        mitigation plan); recorded only when not empty.

    Raises
    ------
    ReviewError
        Unknown finding id (with the closest ids), unknown status, empty reviewer
        name, text that is not Unicode (a lone surrogate), or a log that does not verify
        (it is never extended then).
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
    reviewer = _text_field("reviewer's name", (reviewer or "").strip())
    if not reviewer:
        raise ReviewError("the reviewer's name is empty; give it with --reviewer NAME "
                          "(it is recorded with the review).")
    note = _text_field("note", str(note or ""))
    extra = {name: _text_field(name, value) for name, value in
             (("mitigation", str(mitigation or "").strip()), ("owner", str(owner or "").strip()))
             if value}
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    path = run_dir / LOG_NAME
    with _locked(run_dir):
        old = _read_log(path) or b""
        _, check = _check_log_bytes(old, expected_head=expected_head)
        if not check.ok:
            raise ReviewError(f"{path}: the hash chain is broken, so no entry is added: "
                              + "; ".join(check.problems)
                              + ". Restore the file from a copy, or move it aside to start "
                                "a new log.")
        genesis = sha256_bytes(_results_bytes(run_dir))
        entry: dict[str, Any] = {
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reviewer": reviewer, "finding_id": finding_id, "status": status,
            "note": note, **extra, "results_sha256": genesis,
            "prev_hash": check.head or genesis,
        }
        entry["hash"] = entry_hash(entry)
        if old and not old.endswith(b"\n"):
            old += b"\n"
        atomic_write_bytes(path, old + entry_to_line(entry))
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
