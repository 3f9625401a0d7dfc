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
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from audit._version import __version__
from audit.errors import RunFolderError
from audit.io import atomic_write_json

MANIFEST = "manifest.json"
# Run folders written by another major layout are refused, not silently mixed.
RUN_FOLDER_FORMAT = 1

# What a run folder holds besides manifest.json (stage outputs; stage commands may write
# them before `gan-audit run` writes a manifest).
RUN_FOLDER_ENTRIES = frozenset({"activations", "decoders", "predictions.parquet", "samples",
                                "results.json", "tables", "insight", "report.html",
                                "report.pdf", "review.jsonl", "generated"})

__all__ = ["MANIFEST", "RUN_FOLDER_FORMAT", "RUN_FOLDER_ENTRIES", "read_manifest",
           "write_manifest", "new_manifest", "check_output_folder", "environment", "utc_now"]


def utc_now() -> str:
    """The current time, UTC, ISO 8601 with seconds."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


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
        data = json.loads(path.read_text(encoding="utf-8"))
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


def check_output_folder(run_dir: Path) -> None:
    """Refuse to write a run into a folder that holds files of something else.

    ``run_dir`` may be absent, empty, a gan-audit run folder (it has a gan-audit
    ``manifest.json``; :func:`read_manifest` checks it), or hold only what the stage
    commands write (:data:`RUN_FOLDER_ENTRIES`). Anything else (``out: .`` next to the
    config, a home folder, a data folder) is a :class:`RunFolderError`: a run overwrites
    ``config.yaml``, ``results.json`` and ``report.html`` and replaces stale stage outputs.
    """
    path = Path(run_dir)
    if not path.is_dir() or (path / MANIFEST).exists():
        return
    temp = RUN_FOLDER_ENTRIES | {MANIFEST, "config.yaml"}  # an interrupted write's leftover
    foreign = sorted(p.name for p in path.iterdir() if p.name not in RUN_FOLDER_ENTRIES
                     and not any(p.name.startswith(f".{name}.") for name in temp))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" (+{len(foreign) - 5} more)" if len(foreign) > 5
                                          else "")
        raise RunFolderError(
            f"{path}: not a gan-audit run folder, and not empty (it holds {shown}); a run "
            f"would overwrite files there. Choose a new or empty output folder with --out "
            f"(or 'out:' in the config).")


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = utc_now()
    atomic_write_json(Path(run_dir) / MANIFEST, manifest)
