"""The run manifest: versions, seeds, hashes, timings and machine (EU AI Act Art. 12 / Annex IV).

It is also the pipeline's cache: each stage records the hash of its inputs
(``stages.<name>.key``) and is skipped on the next run when the key matches and
its outputs are still there.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from audit._version import __version__
from audit.errors import RunFolderError
from audit.io import atomic_write_json
from audit.runfolder import read_run_file, utc_now

MANIFEST = "manifest.json"
# Run folders written by another major layout are refused, not silently mixed.
# 2: an ownership marker and journal (audit/runfolder.py), and ``artifacts``: sha256 and size
# of every stage output. 3: portable: config.yaml gives its inputs relative to the run folder,
# manifest.json (and results.json) names them as the config file gave them (hashes.files keyed
# so); no absolute path of the writer's disk. A format-2 folder read by this version would
# resolve its inputs wrongly, a format-3 folder read by an older one too: both are refused.
RUN_FOLDER_FORMAT = 3

__all__ = ["MANIFEST", "RUN_FOLDER_FORMAT", "read_manifest", "write_manifest", "new_manifest",
           "record_artifacts", "record_stage_command", "valid_artifacts",
           "differing_artifacts", "environment", "utc_now"]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: str | None = None) -> dict[str, Any]:
    """Tool, library versions and machine facts for the manifest."""
    return {
        "versions": {
            "gan-audit": __version__,
            "git_commit": _git_commit(),
            "python": platform.python_version(),
            **{name: _version(name) for name in ("torch", "fairlearn", "numpy", "pandas",
                                                 "scikit-learn", "scipy", "weasyprint")},
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "device": device,
        },
    }


def new_manifest(*, audit_id: str, config_sha256: str, device: str | None) -> dict[str, Any]:
    return {
        "tool": "gan-audit",
        "format": RUN_FOLDER_FORMAT,
        "audit_id": audit_id,
        "created": utc_now(),
        "updated": utc_now(),
        "config_sha256": config_sha256,
        "seeds": {},
        "hashes": {},
        "stages": {},
        "artifacts": {},
        **environment(device),
    }


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The manifest of ``run_dir``, or None if there is none yet.

    Raises :class:`RunFolderError` for an unreadable manifest or one written by an
    incompatible version of the run-folder layout.
    """
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(read_run_file(path).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: not a readable manifest ({exc}). Remove the run folder "
                             f"or choose another --out.") from exc
    if not isinstance(data, dict) or data.get("tool") != "gan-audit":
        raise RunFolderError(f"{path}: not a gan-audit manifest. Choose another --out.")
    if data.get("format") != RUN_FOLDER_FORMAT:
        raise RunFolderError(
            f"{path}: run folder format {data.get('format')!r} was written by another version of "
            f"gan-audit (this one reads format {RUN_FOLDER_FORMAT}). Re-run the audit into a new "
            f"folder with --out.")
    return data


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = utc_now()
    atomic_write_json(Path(run_dir) / MANIFEST, manifest)


def _under(rel: str, names: list[str]) -> bool:
    return any(rel == n or rel.startswith(n + "/") for n in names)


def record_artifacts(run_dir: Path, names: list[str],
                     manifest: dict[str, Any] | None = None) -> None:
    """Record the sha256 and size of every file of the outputs ``names`` in the manifest's
    ``artifacts`` (replacing what it said of them before).

    ``manifest``: the caller's copy, updated in place and not written (the pipeline writes
    it); without it the folder's manifest is read, updated and written, if it has one.
    """
    from audit.runfolder import hash_artifacts

    write = manifest is None
    if manifest is None:
        manifest = read_manifest(run_dir)
        if manifest is None:
            return  # stage commands before any `gan-audit run`: no manifest to keep
    names = list(names)
    valid = valid_artifacts(manifest)
    kept = {k: v for k, v in valid.items() if not _under(k, names)}
    manifest["artifacts"] = {**kept, **hash_artifacts(Path(run_dir), names, known=valid)}
    if write:
        write_manifest(run_dir, manifest)


def valid_artifacts(manifest: dict[str, Any], problems: list[str] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """The manifest's ``artifacts`` entries that name a relative path inside the run folder
    (no ``..``, no absolute path) with a hex sha256 and a size; the others are left out and
    named in ``problems`` (a manifest from someone else is data too)."""
    import re

    entries = manifest.get("artifacts")
    if not isinstance(entries, dict):
        if entries is not None and problems is not None:
            problems.append("manifest.json: 'artifacts' is not a mapping of paths")
        return {}
    out = {}
    for rel, record in entries.items():
        parts = str(rel).split("/")
        ok = (isinstance(record, dict) and not str(rel).startswith("/")
              and all(p not in ("", ".", "..") for p in parts)
              and isinstance(record.get("size"), int)
              and re.fullmatch(r"[0-9a-f]{64}", str(record.get("sha256"))) is not None)
        if ok:
            out[str(rel)] = record
        elif problems is not None:
            problems.append(f"manifest.json: the artifact entry {str(rel)[:80]!r} is not a path "
                            f"inside the run folder with a sha256 and a size")
    return out


def differing_artifacts(run_dir: Path, names: list[str], manifest: dict[str, Any], *,
                        thorough: bool = True) -> list[str]:
    """How the files of the outputs ``names`` differ from the manifest's record: one line per
    file missing, added, of another size or sha256, or a link; [] when they match.

    ``thorough=False`` (a rerun's check) reads only files whose size or modification time
    differ from their record; ``gan-audit verify`` reads every file.
    """
    from audit.runfolder import hash_artifacts

    names = list(names)
    recorded = {k: v for k, v in valid_artifacts(manifest).items() if _under(k, names)}
    problems: list[str] = []
    now = hash_artifacts(Path(run_dir), names, problems,
                         known=None if thorough else recorded)
    problems += [f"{k}: missing" for k in sorted(set(recorded) - set(now))]
    problems += [f"{k}: not written by this run (not in the manifest)"
                 for k in sorted(set(now) - set(recorded))]
    for k in sorted(set(now) & set(recorded)):
        if now[k]["size"] != recorded[k].get("size"):
            problems.append(f"{k}: {now[k]['size']} bytes, the manifest says "
                            f"{recorded[k].get('size')} (truncated or rewritten)")
        elif now[k]["sha256"] != recorded[k].get("sha256"):
            problems.append(f"{k}: its sha256 differs from the manifest's (edited or damaged)")
    return problems


def record_stage_command(run_dir: Path, stages: dict[str, list[str]]) -> None:
    """After a stage command (``gan-audit extract``, ``train-decoders``, ``measure``) wrote
    into a run folder that has a manifest: record its outputs' hashes (so ``verify`` holds)
    and mark each stage as made outside ``gan-audit run`` (key ``stage command``), so that
    the next run recomputes it under its own keys instead of reusing it."""
    manifest = read_manifest(run_dir)
    if manifest is None:
        return
    for name, outputs in stages.items():
        record_artifacts(run_dir, outputs, manifest)
        manifest["stages"][name] = {
            "key": "stage command", "done": True, "finished": utc_now(),
            "outputs": [o for o in outputs if (Path(run_dir) / o).exists()]}
    write_manifest(run_dir, manifest)
