"""Human labels of generated images: the labelling sample, and the labels file of a run folder.

Decoders are trained and validated on labelled *real* images; a few hundred labels of
*generated* images say whether they read those correctly (decoder transfer, measured by
:mod:`audit.measure.labelled`). Two files of a run folder hold them:

* ``samples/labelling/`` (:data:`SAMPLE_DIR`), written by the samples stage: one PNG per
  image of a stratified random sample of the generated images (stratified by the cell of
  decoded groups of the protected concepts, seeded) and ``index.json`` saying which image
  each PNG is, what the decoders called it, the groups a labeller may choose from and the
  sampling design (how many generated images each stratum holds, how many were drawn).
* ``labels/labels.csv`` (:data:`LABELS_FILE`): one row per label, columns
  ``image_id, concept, group, labeller, time, source``; appended by :func:`append_labels`
  (the web app, ``gan-audit label --import``) under a lock, by replacing the whole file
  atomically (temporary file, fsync, rename), so a reader never sees a torn line and two
  writers at once both land. The run folder's journal records the writes; ``gan-audit
  verify`` treats the file, like ``review.jsonl``, as the reviewers' own record rather
  than an artifact of a stage.

No torch here (the web app imports this module): numpy and, to read, pandas.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.errors import LabelError, RunFolderError
from audit.runfolder import LABELS_LOCK

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LABELS_FILE", "SAMPLE_DIR", "SAMPLE_INDEX", "CANT_TELL", "COLUMNS", "LabelItem",
           "labelling_sample", "label_choices", "append_labels", "append_label_records",
           "read_labels",
           "stratified_pick", "sample_index", "LOCK_NAME", "labels_problems"]

LABELS_FILE = "labels/labels.csv"            # relative to the run folder
SAMPLE_DIR = "samples/labelling"             # PNGs + index.json written by the samples stage
SAMPLE_INDEX = f"{SAMPLE_DIR}/index.json"
CANT_TELL = "cant_tell"
#: The labels file's columns, in order.
COLUMNS = ("image_id", "concept", "group", "labeller", "time", "source")
#: The lock file of :func:`append_labels` (in the run folder; bookkeeping, never an artifact).
LOCK_NAME = LABELS_LOCK
_LOCK_TIMEOUT_S = 60.0
_INDEX_VERSION = 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
_MAX_TEXT = 200  # characters of a labeller's name or a source


@dataclass(frozen=True)
class LabelItem:
    """One image of the labelling sample.

    Attributes
    ----------
    image_id
        The generated image's id as in ``predictions.parquet``.
    file
        Its PNG, relative to the run folder (under :data:`SAMPLE_DIR`).
    decoded
        Protected concept -> the group the decoders gave it.
    """

    image_id: str
    file: str
    decoded: dict[str, str]


# ---------------------------------------------------------------- the sample


def stratified_pick(strata: Sequence[str], *, n: int, seed: int) -> np.ndarray:
    """Positions of a stratified random sample of ``n`` items (equal allocation).

    Each stratum gets ``n / (number of strata)`` items; a stratum smaller than its share
    gives all it has and the rest goes, in equal parts again, to the strata that have more
    (so rare decoded groups, whose confusion rows matter most, are labelled as often as
    common ones). Within a stratum the items are a uniform random draw.

    Parameters
    ----------
    strata
        (N,) stratum key of each item.
    n
        Sample size; all N items when N <= n.
    seed
        Seed of the draw (numpy's default generator).

    Returns
    -------
    int array of positions into ``strata``, in random order (strata mixed, so that the order
    in which a labeller sees them tells nothing of the decoded groups).
    """
    keys = np.asarray([str(s) for s in strata], dtype=object)
    names = sorted(set(keys.tolist()))
    members = {s: np.flatnonzero(keys == s) for s in names}
    quota = dict.fromkeys(names, 0)
    left, open_ = min(int(n), len(keys)), list(names)
    while left > 0 and open_:
        share = max(1, left // len(open_))
        for s in list(open_):
            take = min(share, len(members[s]) - quota[s], left)
            quota[s] += take
            left -= take
            if quota[s] == len(members[s]):
                open_.remove(s)
            if left == 0:
                break
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(members[s])[:quota[s]] for s in names]
    if not picked:
        return np.zeros(0, np.int64)
    # shown in random order: in stratum order a labeller would see the decoded groups
    return rng.permutation(np.concatenate(picked).astype(np.int64))


def sample_index(*, image_ids: Sequence[str], decoded: Mapping[str, Sequence[str]],
                 choices: Mapping[str, Sequence[str]], n: int, seed: int
                 ) -> tuple[dict[str, Any], np.ndarray]:
    """The labelling sample's ``index.json`` (without the PNGs) and the positions it picked.

    Parameters
    ----------
    image_ids
        (N,) ids of the run's audited generated images.
    decoded
        Protected concept -> (N,) decoded group of each image.
    choices
        Protected concept -> its groups (what a labeller chooses from, besides
        :data:`CANT_TELL`).
    n, seed
        Sample size and seed (:func:`stratified_pick`).

    Returns
    -------
    (index, positions): ``index["items"][k]`` is the image at ``positions[k]``, its PNG
    ``SAMPLE_DIR/<k>.png`` (numbered, so no image id becomes a file name).
    """
    concepts = list(choices)
    cells = [" & ".join(f"{c}={decoded[c][i]}" for c in concepts) for i in range(len(image_ids))]
    positions = stratified_pick(cells, n=n, seed=seed)
    population: dict[str, int] = {}
    for cell in cells:
        population[cell] = population.get(cell, 0) + 1
    drawn: dict[str, int] = {}
    items = []
    for k, i in enumerate(positions.tolist()):
        drawn[cells[i]] = drawn.get(cells[i], 0) + 1
        items.append({"image_id": str(image_ids[i]), "file": f"{SAMPLE_DIR}/{k:04d}.png",
                      "decoded": {c: str(decoded[c][i]) for c in concepts},
                      "stratum": cells[i]})
    index = {"version": _INDEX_VERSION, "seed": int(seed), "n_requested": int(n),
             "n": len(items), "concepts": {c: [str(g) for g in gs] for c, gs in choices.items()},
             "cant_tell": CANT_TELL,
             "design": {"stratified_by": "decoded groups of the protected concepts, crossed",
                        "allocation": "equal per stratum, capped at its size",
                        "population": population, "drawn": drawn},
             "items": items}
    return index, positions


def _read_index(run_dir: Path) -> dict[str, Any]:
    from audit.runfolder import read_artifact

    path = Path(run_dir) / SAMPLE_INDEX
    try:
        data = json.loads(read_artifact(Path(run_dir), SAMPLE_INDEX).decode("utf-8"))
    except FileNotFoundError as exc:
        raise RunFolderError(
            f"{path}: not found, so there is no labelling sample. The samples stage writes it: "
            f"run `gan-audit run CONFIG` again with this run folder as its out (only the stages "
            f"that changed run again; report.labelling_sample sets its size, 0 writes "
            f"none).") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: unreadable JSON ({exc}); run `gan-audit run CONFIG` "
                             f"again to rewrite the labelling sample.") from exc
    try:
        ok = (data["version"] == _INDEX_VERSION and isinstance(data["items"], list)
              and all(isinstance(gs, list) for gs in data["concepts"].values()))
    except (KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise RunFolderError(f"{path}: not a labelling index of this gan-audit (version "
                             f"{_INDEX_VERSION}); run `gan-audit run CONFIG` again to rewrite "
                             f"it.")
    return data


def labelling_sample(run_dir: Path) -> list[LabelItem]:
    """The images of the run's labelling sample, in the order the samples stage drew them.

    Raises
    ------
    RunFolderError
        No ``samples/labelling/index.json`` (the message says how to make it), or it is not
        one this gan-audit wrote.
    """
    index = _read_index(Path(run_dir))
    try:
        return [LabelItem(image_id=str(it["image_id"]), file=str(it["file"]),
                          decoded={str(k): str(v) for k, v in it["decoded"].items()})
                for it in index["items"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise RunFolderError(f"{Path(run_dir) / SAMPLE_INDEX}: an item lacks image_id, file or "
                             f"decoded ({exc!r}); run `gan-audit run CONFIG` again to rewrite "
                             f"it.") from exc


def label_choices(run_dir: Path) -> dict[str, list[str]]:
    """Protected concept -> its groups, as a labeller may choose them (:data:`CANT_TELL` is
    always allowed besides)."""
    index = _read_index(Path(run_dir))
    return {str(c): [str(g) for g in gs] for c, gs in index["concepts"].items()}


# ---------------------------------------------------------------- the labels file


def _text(value: Any, what: str, where: str) -> str:
    """``value`` as one line of text (stripped), or a :class:`LabelError` naming ``where``."""
    if not isinstance(value, str):
        raise LabelError(f"{where}: the {what} must be text, got {type(value).__name__} "
                         f"{_shown(value)}.")
    value = value.strip()
    if _CONTROL.search(value):
        raise LabelError(f"{where}: the {what} {_shown(value)} holds a line break or control "
                         f"character; give it as one line of text.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LabelError(f"{where}: the {what} {_shown(value)} is not UTF-8 text.") from exc
    return value


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _unknown(what: str, value: str, known: Sequence[str], where: str, fix: str) -> LabelError:
    close = difflib.get_close_matches(value, list(known), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return LabelError(f"{where}: unknown {what} {_shown(value)}.{hint} {fix}")


def _validated(rows: Sequence[Mapping[str, str]], *, choices: dict[str, list[str]],
               image_ids: set[str], labellers: Sequence[str], source: str, time: str
               ) -> list[tuple[str, ...]]:
    """The rows as labels-file records; a :class:`LabelError` naming the first bad row."""
    out = []
    for k, (row, labeller) in enumerate(zip(rows, labellers, strict=True), start=1):
        where = f"label row {k}"
        if not isinstance(row, Mapping):
            raise LabelError(f"{where}: expected a record with image_id, concept and group, "
                             f"got {type(row).__name__}.")
        missing = [c for c in ("image_id", "concept", "group") if c not in row]
        if missing:
            raise LabelError(f"{where}: lacks {', '.join(missing)}; each label needs image_id, "
                             f"concept and group.")
        image_id = _text(row["image_id"], "image id", where)
        concept = _text(row["concept"], "concept", where)
        group = _text(row["group"], "group", where)
        if image_id not in image_ids:
            raise _unknown("image id", image_id, sorted(image_ids), where,
                           "Label only images of the labelling sample (samples/labelling/"
                           "index.json; export them with gan-audit label RUN --export FILE).")
        if concept not in choices:
            raise _unknown("concept", concept, list(choices), where,
                           f"The protected concepts are {', '.join(choices)}.")
        if group not in choices[concept] and group != CANT_TELL:
            raise _unknown(f"group of {concept}", group, [*choices[concept], CANT_TELL], where,
                           f"Use one of {', '.join([*choices[concept], CANT_TELL])}.")
        out.append((image_id, concept, group, _labeller(labeller, where), time, source))
    return out


def _labeller(name: Any, where: str) -> str:
    name = _text(name if name is not None else "", "labeller's name", where)
    if not name:
        row = f"{where}: " if where.startswith("label row") else ""
        raise LabelError(f"{row}the labeller's name is empty; give it (gan-audit label RUN "
                         f"--import FILE --labeller NAME): it is recorded with each label.")
    return name[:_MAX_TEXT]


def _lines(records: Sequence[Sequence[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(records)
    return buf.getvalue().encode("utf-8")


def _read_records(run_dir: Path) -> list[tuple[str, ...]]:
    """The labels file's records (header checked), [] when there is none."""
    from audit.runfolder import read_artifact

    path = Path(run_dir) / LABELS_FILE
    try:
        data = read_artifact(Path(run_dir), LABELS_FILE)
    except FileNotFoundError:
        return []
    fix = ("Restore it from a copy, or move it aside to start a new labels file (labels "
           "already given are then not counted).")
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LabelError(f"{path}: not a UTF-8 CSV file ({exc}). {fix}") from exc
    if not rows or tuple(rows[0]) != COLUMNS:
        raise LabelError(f"{path}: its header is not {','.join(COLUMNS)}. {fix}")
    bad = next((k for k, r in enumerate(rows[1:], start=2) if len(r) != len(COLUMNS)), None)
    if bad is not None:
        raise LabelError(f"{path}: line {bad} has {len(rows[bad - 1])} fields, not "
                         f"{len(COLUMNS)}. {fix}")
    return [tuple(r) for r in rows[1:]]


def append_labels(run_dir: Path, rows: Sequence[Mapping[str, str]], *, labeller: str,
                  source: str = "web", now: datetime | None = None) -> int:
    """Append labels by one labeller to ``RUN_DIR/labels/labels.csv``; returns the number of
    rows written.

    Every row is checked before anything is written (all or nothing): a known image of the
    labelling sample, a protected concept, one of its groups or :data:`CANT_TELL`. The
    file is replaced atomically under an exclusive lock (``filelock`` on
    ``RUN_DIR/.labels.csv.lock``), so two writers at once both land and a reader sees the
    file before or after a write, never a torn line.

    Parameters
    ----------
    rows
        Records with ``image_id``, ``concept`` and ``group`` (text).
    labeller
        Who gave the labels (recorded with each; not empty).
    source
        Where they came from: ``web``, ``import``, ``demo-truth``...
    now
        The time recorded (default: now), UTC.

    Raises
    ------
    LabelError
        A bad row (named by its number), an empty labeller, a labels file that does not
        parse (never extended then), or a lock not obtained within a minute.
    RunFolderError
        Not a run folder, or no labelling sample (see :func:`labelling_sample`).
    """
    rows = list(rows)
    _labeller(labeller, "labeller")
    return append_label_records(run_dir, rows, labellers=[labeller] * len(rows),
                                source=source, now=now)


def append_label_records(run_dir: Path, rows: Sequence[Mapping[str, str]], *,
                         labellers: Sequence[str], source: str = "web",
                         now: datetime | None = None) -> int:
    """:func:`append_labels` with a labeller per row (``labellers``, as long as ``rows``):
    the labels of several annotators of one import, written at once."""
    from filelock import FileLock, Timeout

    from audit.io import atomic_write_bytes
    from audit.runfolder import is_owned

    run_dir = Path(run_dir)
    if not is_owned(run_dir):
        raise RunFolderError(f"{run_dir}: not a gan-audit run folder; give the folder that "
                             f"gan-audit run wrote (its --out).")
    source = _text(source, "source", "source")[:_MAX_TEXT] or "unknown"
    if len(labellers) != len(rows):
        raise LabelError(f"{len(rows)} label rows but {len(labellers)} labellers.")
    choices = label_choices(run_dir)
    ids = {item.image_id for item in labelling_sample(run_dir)}
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    records = _validated(list(rows), choices=choices, image_ids=ids, labellers=labellers,
                         source=source, time=stamp)
    if not records:
        return 0
    lock = run_dir / LOCK_NAME
    if lock.is_symlink():
        raise LabelError(f"{lock}: is a link; remove it (gan-audit locks the labels file with "
                         f"a file of its own).")
    try:
        with FileLock(str(lock), timeout=_LOCK_TIMEOUT_S):
            old = _read_records(run_dir)
            atomic_write_bytes(run_dir / LABELS_FILE, _lines([COLUMNS, *old, *records]))
    except Timeout as exc:
        raise LabelError(f"{lock}: another process has held the labels lock for over a minute; "
                         f"try again, or remove the file if no labelling is under way.") from exc
    return len(records)


def read_labels(run_dir: Path) -> pd.DataFrame:
    """The labels of a run folder: the latest label per (image_id, concept, labeller).

    Returns
    -------
    DataFrame with columns ``image_id, concept, group, labeller, time, source`` (text;
    ``time`` UTC ISO 8601), one row per (image_id, concept, labeller) in the order written;
    empty (with those columns) when there is no labels file.

    Raises
    ------
    LabelError
        The file does not parse.
    """
    import pandas as pd

    frame = pd.DataFrame(_read_records(Path(run_dir)), columns=list(COLUMNS), dtype=object)
    if frame.empty:
        return frame
    latest = frame.drop_duplicates(["image_id", "concept", "labeller"], keep="last")
    return latest.reset_index(drop=True)


def labels_problems(run_dir: Path) -> list[str]:
    """What ``gan-audit verify`` says of the labels folder: it holds the labels file alone,
    which the tool wrote (its journal lists it) and which parses; [] when it is sound or
    absent."""
    from audit.runfolder import artifact_files, created_files

    run_dir = Path(run_dir)
    found = artifact_files(run_dir, [LABELS_FILE.split("/")[0]])
    problems = [f"{rel}: not a file gan-audit writes (the labels folder holds {LABELS_FILE} "
                f"alone)" for rel in found if rel != LABELS_FILE]
    if LABELS_FILE in found:
        if LABELS_FILE not in created_files(run_dir):
            problems.append(f"{LABELS_FILE}: not written by gan-audit (its journal does not "
                            f"list it)")
        try:
            _read_records(run_dir)
        except (LabelError, RunFolderError) as exc:
            problems.append(str(exc))
    return problems
