"""Reading a run folder's report inputs: JSON documents and the images the run recorded.

Every file is read through :func:`audit.runfolder.read_artifact` (never through a link).
Shared by the report, its insight section and the comparison of two audits.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audit.errors import RunFolderError
from audit.runfolder import read_artifact

__all__ = ["read_json", "recorded_file", "recorded_images"]


def read_json(run_dir: Path, rel: str, *, required: bool) -> Any:
    """``RUN_DIR/rel`` parsed as JSON, read through :func:`audit.runfolder.read_artifact`
    (never through a link); None when absent and not ``required``."""
    path = Path(run_dir) / rel
    try:
        data = read_artifact(run_dir, rel)
    except FileNotFoundError as exc:
        if required:
            raise RunFolderError(f"{path}: not found. Run the measure stage first (gan-audit "
                                 f"measure CONFIG.yaml), or point to a run folder that has "
                                 f"it.") from exc
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc}); it may be truncated. Re-run the "
                             f"stage that writes it, or restore the file.") from exc


def recorded_images(run_dir: Path, folder: str, manifest: Mapping[str, Any] | None,
                    *, pattern: re.Pattern[str] | None = None) -> tuple[dict[str, bytes],
                                                                        list[str]]:
    """The PNG files of ``RUN_DIR/folder`` that the run itself wrote: ``({name: bytes},
    warnings)``.

    An image is embedded in the report only when the manifest records it (its sha256) and
    the file is still those bytes, read without following a link: a file placed in a run
    folder afterwards, or a link to a file elsewhere, is left out, with a warning.
    """
    recorded = (manifest or {}).get("artifacts") or {}
    top = Path(run_dir) / folder
    images: dict[str, bytes] = {}
    warnings: list[str] = []
    if not top.is_dir() or top.is_symlink():
        return images, warnings
    for p in sorted(top.glob("*.png")):
        if pattern is not None and not pattern.match(p.name):
            continue
        rel = f"{folder}/{p.name}"
        try:
            images[p.name] = recorded_file(run_dir, rel, recorded)
        except (RunFolderError, OSError) as exc:
            warnings.append(f"{rel} is not shown: {exc}")
    return images, warnings


def recorded_file(run_dir: Path, rel: str, recorded: Mapping[str, Any]) -> bytes:
    """The bytes of ``RUN_DIR/rel`` when they are what the run recorded.

    ``recorded`` is the manifest's ``artifacts`` (path -> ``{"sha256": ...}``). Read without
    following a link (:func:`audit.runfolder.read_artifact`).

    Raises
    ------
    FileNotFoundError
        No such file.
    RunFolderError
        A link, a file that is not a regular one, or bytes the manifest does not record.
    """
    data = read_artifact(run_dir, rel)
    if hashlib.sha256(data).hexdigest() != (recorded.get(rel) or {}).get("sha256"):
        raise RunFolderError("the run's manifest does not record these bytes (a file added "
                             "or changed after the run wrote its images)")
    return data
