"""``gan-audit verify``: is a run folder what its manifest says it is?

Checks, without loading any model or importing any code the folder names:

* the ownership marker is there (the folder was made by gan-audit);
* ``manifest.json`` is readable and of this run-folder format;
* ``config.yaml`` hashes to the manifest's ``config_sha256``;
* every artifact the manifest records exists as a regular file inside the folder (no link),
  with its recorded size and sha256, and no other file sits among them;
* every stage the manifest marks done has its recorded outputs;
* the review log's hash chain is intact (and, given ``expected_review_head``, still holds
  the entry a reviewer recorded elsewhere);
* every signature of ``signatures.jsonl`` is valid and its statement still describes the
  folder (and, given ``trusted_keys``, was made by one of those keys): :mod:`audit.signing`.

What it proves, and what not (docs/SECURITY.md): that the files are the ones the manifest
lists; not who wrote the manifest. Someone who rewrites files *and* the manifest passes;
signatures by trusted keys (``gan-audit sign``; ``--trusted-keys``) or a chain head recorded
elsewhere close that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from audit.errors import RunFolderError
from audit.labels import labels_problems
from audit.signing import SIGNATURES, SignatureCheck

__all__ = ["RunCheck", "verify_run"]

# Files of a run folder that are not artifacts: bookkeeping the checks above cover otherwise,
# and the reviewers' own records (the review log; the labels of generated images, which
# audit.labels appends to and the run folder's journal records, like the review log).
_NOT_ARTIFACTS = frozenset({"manifest.json", "config.yaml", "review.jsonl", SIGNATURES,
                            "labels"})


@dataclass(frozen=True)
class RunCheck:
    """What :func:`verify_run` found.

    Attributes
    ----------
    problems
        One sentence per difference (what, which file); empty when the folder is intact.
    notes
        Facts that are not tampering (e.g. results re-measured since the first review).
    artifacts
        Number of artifact files checked against the manifest.
    review_entries, review_head
        Entries of the review log and the hash of its last entry (record it elsewhere to
        detect a log cut short or forged later).
    signatures
        Every line of ``signatures.jsonl`` checked: who signed, when, and its problems (also
        in :attr:`problems`).
    """

    run_dir: Path
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    artifacts: int = 0
    review_entries: int = 0
    review_head: str | None = None
    stages: tuple[str, ...] = field(default_factory=tuple)
    signatures: tuple[SignatureCheck, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_run(run_dir: Path, *, expected_review_head: str | None = None,
               trusted_keys: Path | None = None) -> RunCheck:
    """Check a run folder against its manifest (see the module docstring).

    Parameters
    ----------
    expected_review_head
        A review log head recorded elsewhere: the log must still hold that entry unchanged.
    trusted_keys
        A folder of trusted public keys (``*.pub``): a signature by any other key fails.

    Raises
    ------
    RunFolderError
        ``run_dir`` is not a folder.
    SigningError
        ``trusted_keys`` is not a folder of Ed25519 public keys.
    """
    import hashlib

    from audit.manifest import differing_artifacts, read_manifest, valid_artifacts
    from audit.runfolder import TOOL_FILES, is_owned, read_artifact

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: not a folder. Give the run folder of an audit (the "
                             f"--out of gan-audit run).")
    problems: list[str] = []
    notes: list[str] = []
    if not is_owned(run_dir):
        problems.append("no ownership marker (.gan-audit-run): not a folder made by gan-audit")
    try:
        manifest = read_manifest(run_dir)
    except RunFolderError as exc:
        return RunCheck(run_dir, problems=(*problems, str(exc)))
    if manifest is None:
        return RunCheck(run_dir, problems=(*problems, "manifest.json: missing"))

    try:
        config = read_artifact(run_dir, "config.yaml")
        if hashlib.sha256(config).hexdigest() != manifest.get("config_sha256"):
            problems.append("config.yaml: its sha256 differs from the manifest's config_sha256 "
                            "(the configuration was edited)")
    except FileNotFoundError:
        problems.append("config.yaml: missing")
    except RunFolderError as exc:
        problems.append(str(exc))

    recorded = valid_artifacts(manifest, problems)
    names = {rel.split("/")[0] for rel in recorded}
    names |= {p.name for p in run_dir.iterdir()
              if p.name not in _NOT_ARTIFACTS | TOOL_FILES and not p.name.startswith(".")}
    problems += differing_artifacts(run_dir, sorted(names), manifest)

    done = []
    stages = manifest.get("stages") if isinstance(manifest.get("stages"), dict) else {}
    for stage, record in stages.items():
        if not isinstance(record, dict):
            problems.append(f"manifest.json: stage {str(stage)[:40]!r} is not a record")
            continue
        if not record.get("done"):
            notes.append(f"stage {stage} did not finish (an interrupted run)")
            continue
        done.append(stage)
        outputs = record.get("outputs") if isinstance(record.get("outputs"), list) else []
        for output in outputs:
            if not any(rel == output or rel.startswith(output + "/") for rel in recorded):
                problems.append(f"stage {stage}: the manifest records none of its output "
                                f"{output}")

    from audit.signing import check_signatures

    head, entries = _check_review_log(run_dir, recorded, expected_review_head, problems, notes)
    # known=recorded: every file was read against these records above (a changed byte fails
    # there); a manifest rewritten to match it fails here (its sha256 is not the signed one)
    signatures = check_signatures(run_dir, trusted_keys=trusted_keys, known=recorded)
    problems += [p for s in signatures for p in s.problems] + labels_problems(run_dir)
    return RunCheck(run_dir, problems=tuple(problems), notes=tuple(notes),
                    artifacts=len(recorded), review_entries=entries, review_head=head,
                    stages=tuple(done), signatures=tuple(signatures))


def _check_review_log(run_dir: Path, recorded: dict, expected_head: str | None,
                      problems: list[str], notes: list[str]) -> tuple[str | None, int]:
    """The review log's chain (problems and notes appended); returns its head and length."""
    from audit.errors import ReviewError
    from audit.report.review import LOG_NAME, verify_review_log

    try:
        log = verify_review_log(run_dir / LOG_NAME, expected_head=expected_head)
    except ReviewError as exc:
        problems.append(str(exc))
        return None, 0
    problems += [f"{LOG_NAME}: {p}" for p in log.problems]
    recorded_results = recorded.get("results.json", {}).get("sha256")
    if log.root is not None and recorded_results not in (None, log.root):
        notes.append(f"{LOG_NAME}: its first review is of other results (re-measured "
                     f"since); those reviews give no status to today's findings")
    return log.head, log.entries
