"""Files at the edges: atomic writes and content hashes.

Every file of a run folder is written to a temporary file in the same folder
and renamed into place, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from audit.errors import RunFolderError
from audit.runfolder import TEMP_PREFIX, ensure_dir, journal_written  # (ensure_dir: ours too)

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "sha256_bytes", "sha256_file", "ensure_dir", "to_jsonable"]


@contextmanager
def atomic_path(path: Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    Use it for writers that want a file name (``np.save``, ``df.to_parquet``,
    ``safetensors.save_file``).
    """
    path = Path(path)
    ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=suffix or ".tmp",
                                   dir=path.parent)
    except OSError as exc:
        _raise_disk_error(path, exc)
        raise
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; files should read like any other
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        journal_written(path)  # a run folder's record of what the tool wrote (before rename)
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        _raise_disk_error(path, exc)
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def free_bytes(folder: Path) -> int:
    """Bytes free for this user on the file system of ``folder``."""
    import shutil

    return shutil.disk_usage(folder).free


def _raise_disk_error(path: Path, exc: OSError) -> None:
    """A full disk or quota as one :class:`RunFolderError` naming the folder and what is
    free; any other error is left to the caller to re-raise."""
    if exc.errno not in (28, 122):  # ENOSPC, EDQUOT
        return
    try:
        free = f"{free_bytes(path.parent) / 2**20:,.1f} MiB free there"
    except OSError:
        free = "free space unknown"
    raise RunFolderError(f"{path}: the disk is full ({free}) while writing into "
                         f"{path.parent}; nothing was half-written. Free some space (or "
                         f"choose an output folder on a larger disk with --out) and run the "
                         f"same command again: finished work is kept.") from exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths and tuples to plain JSON values; NaN becomes None."""
    import math

    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if all(type(v) is str for v in value):  # image ids: nothing to convert, 30x faster
            return list(value)
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_json(path: Path, data: Any, *, indent: int = 2) -> None:
    """Write ``data`` as JSON atomically (numpy values converted; NaN written as null)."""
    text = json.dumps(to_jsonable(data), indent=indent, ensure_ascii=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


