"""A run folder as the tool owns it: ownership marker, journal of what it wrote, one writer.

Run folders travel between people, and ``--out`` may point at a folder that holds a
user's own files. Three rules keep both safe (docs/SECURITY.md):

* **Ownership.** A run folder carries the marker file :data:`MARKER`, written when the
  tool creates the folder (or finds it empty). The tool writes into a non-empty folder
  only when the marker is there.
* **Only what it created is deleted.** Every file the tool writes goes through
  :func:`audit.io.atomic_path`, which appends the file's path to the marker (a journal, one
  JSON string per line). :func:`remove_created` deletes journal-listed files only and
  refuses, before deleting anything, when an output holds a file the tool did not write.
* **One writer.** :func:`claim` holds an OS-level lock (``fcntl.flock`` on :data:`LOCK`,
  released by the kernel when the process dies) for as long as a command writes; a second
  command on the same folder stops at once, naming the process that holds it.

Reading goes through :func:`read_artifact`, which refuses links and paths that leave the
folder, so nothing outside a run folder is read through it.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit.errors import RunFolderError

__all__ = ["MARKER", "LOCK", "LABELS_LOCK", "TEMP_PREFIX", "TOOL_FILES", "claim", "is_owned",
           "journal_written",
           "created_files", "remove_created", "sweep_temporaries", "read_artifact", "read_run_file",
           "refuse_links",
           "artifact_files", "hash_artifacts", "utc_now", "ensure_dir"]

#: Ownership marker and journal of every file the tool wrote (paths relative to the folder).
MARKER = ".gan-audit-run"
#: The lock file of :func:`claim` (holds the pid, host and command of the writer).
LOCK = ".gan-audit.lock"
#: How :func:`audit.io.atomic_path` starts its temporaries' names (``<prefix><name>.<random>``):
#: the one name pattern the tool deletes without a journal entry (a killed write's leftover).
TEMP_PREFIX = ".gan-audit-tmp."
#: The lock file of the labels writer (audit.labels; filelock, kept between writes).
LABELS_LOCK = ".labels.csv.lock"
#: Files of the folder's own bookkeeping: never artifacts, never embedded, never deleted.
TOOL_FILES = frozenset({MARKER, LOCK, LABELS_LOCK})

_held: dict[str, tuple[int, int]] = {}  # resolved folder -> (lock fd, depth): claim is reentrant
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def is_owned(run_dir: Path) -> bool:
    """True when ``run_dir`` holds the tool's marker as a regular file (not a link)."""
    return _has_marker(Path(run_dir))


def _has_marker(folder: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(folder / MARKER).st_mode)
    except OSError:
        return False


def _root_of(path: Path) -> Path | None:
    """The run folder ``path`` lies in, as ``path`` spells it: the folder above it that this
    process claimed, else the nearest folder above it whose marker is a regular file. A
    linked folder holding a marker inside another run folder is refused (a link to another
    run folder), and so is a link in any component between the run folder and ``path``:
    nothing is read or written through a link."""
    path = Path(path).absolute()
    parents = list(path.parents)
    root = next((f for f in parents if str(f.resolve()) in _held), None)
    if root is None:
        root = next((f for f in parents if _has_marker(f)), None)
        if root is not None and root.is_symlink() and any(_has_marker(f) for f in root.parents):
            raise RunFolderError(
                f"{root}: is a link to another run folder inside a run folder; gan-audit "
                f"neither reads nor writes through it. Remove the link.")
    if root is not None:
        _no_link_below(root, path)
    return root


def _no_link_below(root: Path, path: Path) -> None:
    """Refuse a link among the components of ``path`` below ``root`` (``path`` included)."""
    part = root
    for name in path.relative_to(root).parts:
        part = part / name
        if name == ".." or part.is_symlink():
            raise RunFolderError(
                f"{part}: is a link or leaves the run folder; gan-audit reads and writes only "
                f"inside {root}, never through a link. Remove the link (a run folder from "
                f"someone else may hold one to reach your files).")


def journal_written(path: Path) -> None:
    """Record that the tool writes ``path`` (called by :func:`audit.io.atomic_path` just
    before the rename, so that a crash in between leaves an entry for a file that never
    appeared rather than a file of the tool's that no entry names; it also refuses to write
    through a link). Nothing happens outside a run folder. One short line per write,
    appended with O_APPEND (the ranks of torchrun write their shards at once) to the
    marker, never through a link."""
    path = Path(path).absolute()
    root = _root_of(path)
    if root is None:
        return
    line = json.dumps(path.relative_to(root).as_posix()) + "\n"
    fd = os.open(root / MARKER, os.O_WRONLY | os.O_APPEND | _NOFOLLOW)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def created_files(run_dir: Path) -> set[str]:
    """Relative paths (posix) of every file the tool wrote into ``run_dir`` (the journal)."""
    try:
        lines = (Path(run_dir) / MARKER).read_bytes().split(b"\n")
    except FileNotFoundError:
        return set()
    out = set()
    for raw in lines[1:]:  # line 1 is the marker's header
        try:
            value = json.loads(raw)
        except ValueError:
            continue  # a line cut short by a crash names nothing
        if isinstance(value, str):
            out.add(value)
    return out


def _write_marker(run_dir: Path, kind: str) -> None:

    header = json.dumps({"tool": "gan-audit", "kind": kind, "created": utc_now()})
    fd = os.open(run_dir / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, (header + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def _take_ownership(run_dir: Path, kind: str) -> bool:
    """Make sure the tool may write into ``run_dir``; True when it created or adopted an empty
    folder just now. Raises :class:`RunFolderError` (nothing touched) otherwise."""

    if is_owned(run_dir):
        found = _kind(run_dir)
        if found != kind:
            raise RunFolderError(
                f"{run_dir}: is a gan-audit {found} folder, not a {kind} folder; nothing was "
                f"written there. Choose another output folder with --out.")
        return False
    if (run_dir / MARKER).is_symlink():
        raise RunFolderError(f"{run_dir / MARKER}: is a link; a run folder's marker must be a "
                             f"file the tool wrote. Choose a new output folder with --out.")
    if run_dir.exists() and run_dir.is_dir():
        entries = sorted(p.name for p in run_dir.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (f" (+{len(entries) - 5} more)"
                                              if len(entries) > 5 else "")
            old = (" It looks like a run folder of an earlier gan-audit, which kept no record "
                   "of the files it wrote: re-run into a new folder."
                   if "manifest.json" in entries else "")
            raise RunFolderError(
                f"{run_dir}: not empty and not a run folder made by gan-audit (it holds "
                f"{shown}; no {MARKER} marker), so nothing was written there: a run could "
                f"replace or delete files in it.{old} Choose a new or empty output folder with "
                f"--out (or 'out:' in the config).")
    ensure_dir(run_dir)
    try:
        _write_marker(run_dir, kind)
    except FileExistsError:  # another process made it first: its folder now
        return False
    return True


def _kind(run_dir: Path) -> str:
    """The kind the marker's header names (``run``, ``compare``)."""
    with open(run_dir / MARKER, "rb") as fh:
        first = fh.readline(4096)
    try:
        return str(json.loads(first).get("kind", "run"))
    except (ValueError, AttributeError):
        return "unknown"


def _holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text(encoding="utf-8"))
        return (f"process {info['pid']} on {info['host']}, started {info['started']}: "
                f"{info['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    key = str(run_dir.resolve())
    if key in _held:  # this process holds it already (run -> report): reentrant
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        yield
        return
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
    except OSError as exc:
        raise RunFolderError(
            f"{path}: cannot open the run folder's lock file ({exc.strerror}); it must be a "
            f"regular file gan-audit may write (not a link or a folder), in a writable folder. "
            f"Remove it, or choose another output folder with --out.") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        raise RunFolderError(f"{path}: the lock file is not a regular file of its own (a hard "
                             f"link or a device); remove it and run the command again.")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise RunFolderError(
            f"{run_dir}: in use by {_holder(path)}. One command writes into a run folder at a "
            f"time: wait for it to finish, or choose another output folder with --out.") \
            from exc

    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": utc_now(),
            "command": " ".join(["gan-audit", *sys.argv[1:]])[:500]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
    _held[key] = (fd, 1)
    try:
        yield
    finally:
        del _held[key]
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def claim(run_dir: Path, *, kind: str = "run", create: bool = True,
          fix: str = "Give the folder that gan-audit run wrote (its --out).") -> Iterator[bool]:
    """Own and lock ``run_dir`` while a command writes into it.

    Creates the folder (with its marker) when it is absent or empty, if ``create``; refuses
    a non-empty folder without the marker, and a folder another process is writing into.
    Yields True when this call created the folder's marker (a first run). Commands that
    add to a finished run (report, review, insight) pass ``create=False``; ``fix`` ends
    their message when the folder is not a run folder.

    Raises
    ------
    RunFolderError
        Nothing was touched.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: exists and is a file, not a folder. Choose another "
                             f"output folder (--out) or remove the file.")
    if not create and not is_owned(run_dir):
        what = (f"not a gan-audit run folder (no {MARKER} marker)" if run_dir.is_dir()
                else "not a folder")
        if (run_dir / "manifest.json").is_file():
            what += ("; it looks like a run folder of an earlier gan-audit, which kept no "
                     "record of the files it wrote: re-run the audit into a new folder")
        raise RunFolderError(f"{run_dir}: {what}. {fix}")
    created = _take_ownership(run_dir, kind)
    with _locked(run_dir):
        yield created


def _files_below(run_dir: Path, name: str) -> list[Path]:
    """Every entry (files and links; not folders) at or below ``run_dir / name``."""
    top = run_dir / name
    if top.is_symlink() or (top.exists() and not top.is_dir()):  # files, links, pipes
        return [top]
    if not top.is_dir():
        return []
    out = []
    for folder, dirs, files in os.walk(top, followlinks=False):
        out += [Path(folder) / f for f in files]
        out += [Path(folder) / d for d in dirs if (Path(folder) / d).is_symlink()]
    return out


def remove_created(run_dir: Path, names: Iterable[str]) -> None:
    """Delete the outputs ``names`` (files or folders directly in ``run_dir``), file by file,
    and only files the journal says the tool wrote (and its own temporaries).

    Raises
    ------
    RunFolderError
        An output holds a file (or link) the tool did not write; nothing was deleted.
    """
    run_dir = Path(run_dir)
    ours = created_files(run_dir)
    names = list(names)
    doomed = [p for name in names for p in _files_below(run_dir, name)]
    foreign = [p for p in doomed if p.relative_to(run_dir).as_posix() not in ours
               and not _is_temporary(p)]
    if foreign:
        shown = ", ".join(str(p) for p in foreign[:5]) + (
            f" (+{len(foreign) - 5} more)" if len(foreign) > 5 else "")
        raise RunFolderError(
            f"{run_dir}: must replace its {', '.join(names)}, which hold files gan-audit did "
            f"not write: {shown}. Nothing was deleted. Move them out of the run folder, then "
            f"run the same command again.")
    for p in doomed:
        p.unlink()
    for name in names:  # the folders, now empty, deepest first
        top = run_dir / name
        if top.is_dir() and not top.is_symlink():
            for folder in sorted((d for d in top.rglob("*") if d.is_dir()),
                                 key=lambda d: len(d.parts), reverse=True):
                folder.rmdir()
            top.rmdir()


def _is_temporary(path: Path) -> bool:
    """A leftover of :func:`audit.io.atomic_path` (named with :data:`TEMP_PREFIX`), which a
    crash can leave before the rename."""
    return path.name.startswith(TEMP_PREFIX) and path.is_file() and not path.is_symlink()


def sweep_temporaries(run_dir: Path) -> list[Path]:
    """Remove the leftovers of writes that a killed process never finished (a 0-byte
    ``.report.pdf.k2j3abcd.pdf``, say); call it only while holding the folder's lock and no
    other process writes (under torchrun: after every rank finished). Returns what it
    removed."""
    removed = []
    for folder, _dirs, files in os.walk(run_dir, followlinks=False):
        for name in files:
            path = Path(folder) / name
            if _is_temporary(path):
                path.unlink()
                removed.append(path)
    return removed


# ---------------------------------------------------------------- reading and hashing


def _open_regular(path: Path) -> int:
    """An fd of ``path`` read-only, never through a final link, never blocking on a FIFO;
    :class:`RunFolderError` unless it is a regular file with one name."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot be read ({exc.strerror}); gan-audit reads a run "
                             f"folder's files only as regular files, never through a link."
                             ) from exc
    st = os.fstat(fd)
    problem = ("is not a regular file (a pipe, device or folder)" if not stat.S_ISREG(st.st_mode)
               else f"is a hard link (it has {st.st_nlink} names), so it may be a file from "
                    f"outside the run folder" if st.st_nlink > 1 else None)
    if problem:
        os.close(fd)
        raise RunFolderError(f"{path}: {problem}; gan-audit does not read it. Remove it and run "
                             f"the stage that writes it again.")
    return fd


def refuse_links(path: Path) -> Path:
    """``path`` when no component of it below its run folder (see :func:`_root_of`) is a
    link, and, if it is a file, a regular one with one name; else :class:`RunFolderError`.
    For readers that open run-folder files by path (stores, decoders, predictions)."""
    path = Path(path)
    if _root_of(path) is None and path.is_symlink():
        raise RunFolderError(f"{path}: is a link; gan-audit reads a run folder's files only "
                             f"inside it, never through a link. Remove the link.")
    if path.exists() and not path.is_dir():
        os.close(_open_regular(path))
    return path


def read_run_file(path: Path) -> bytes:
    """The bytes of a file of a run folder named by its path: no link below the run folder
    (:func:`_root_of`), a regular file with one name, never blocking on a FIFO. Raises
    ``FileNotFoundError`` when absent, :class:`RunFolderError` when refused."""
    fd = _open_regular(refuse_links(Path(path)))
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def read_artifact(run_dir: Path, rel: str) -> bytes:
    """The bytes of ``RUN_DIR/rel``: no link in any component, a regular file with one
    name, never blocking on a FIFO.

    Raises ``FileNotFoundError`` when absent, :class:`RunFolderError` when refused.
    """
    run_dir = Path(run_dir)
    path = run_dir / rel
    _no_link_below(run_dir, path)
    fd = _open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def artifact_files(run_dir: Path, names: Iterable[str]) -> list[str]:
    """Relative posix paths of the files at or below each of ``names`` (sorted), including
    links (which :func:`hash_artifacts` then refuses); bookkeeping files left out."""
    run_dir = Path(run_dir)
    found = {p.relative_to(run_dir).as_posix() for name in names
             for p in _files_below(run_dir, name)}
    return sorted(f for f in found if Path(f).name not in TOOL_FILES
                  and not _is_temporary(run_dir / f))


def hash_artifacts(run_dir: Path, names: Iterable[str], problems: list[str] | None = None,
                   *, known: dict[str, dict[str, Any]] | None = None
                   ) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256": hex, "size": bytes, "mtime_ns": int}}`` of every file of
    ``names``.

    A file that is a link, not a regular file or a hard link is left out and named in
    ``problems`` (when given; else :class:`RunFolderError`). ``known``: earlier records; a
    file whose size and modification time both match its record keeps the recorded sha256
    unread (a rerun's quick check; ``gan-audit verify`` reads everything).
    """
    import hashlib

    run_dir = Path(run_dir)
    out = {}
    for rel in artifact_files(run_dir, names):
        try:
            _no_link_below(run_dir, run_dir / rel)
            fd = _open_regular(run_dir / rel)
        except (RunFolderError, FileNotFoundError) as exc:
            if problems is None:
                raise
            problems.append(str(exc))
            continue
        st = os.fstat(fd)
        before = (known or {}).get(rel) or {}
        if before.get("size") == st.st_size and before.get("mtime_ns") == st.st_mtime_ns:
            os.close(fd)
            out[rel] = dict(before)
            continue
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
                size += len(block)
        out[rel] = {"sha256": h.hexdigest(), "size": size, "mtime_ns": st.st_mtime_ns}
    return out


def utc_now() -> str:
    """The current time, UTC, ISO 8601 with seconds."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents); a clear error if it is a file or not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path}: exists and is a file, not a folder. Choose another "
                             f"output folder (--out) or remove the file.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot create the folder ({exc.strerror}). Choose a "
                             f"writable output folder with --out.") from exc
    if not os.access(path, os.W_OK):
        raise RunFolderError(f"{path}: the folder is not writable. Choose a writable output "
                             f"folder with --out, or fix its permissions.")
    return path
