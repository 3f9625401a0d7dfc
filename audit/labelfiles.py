"""Label files in and out (``gan-audit label``): a CSV, or Label Studio tasks and exports.

Export (:func:`export_labelling`) writes the labelling sample for people who label
elsewhere:

* ``.csv``: one row per image and protected concept, ``image_id, file, concept, group,
  choices`` with ``group`` empty to fill in (``file`` is the PNG's absolute path);
* ``.json``: Label Studio tasks (``[{"data": {"image": ..., "image_id": ...}}]``) with each
  image embedded as a ``data:image/png;base64`` URI, so the file travels alone: Label
  Studio serves local files only when an administrator has enabled local-file serving and
  a document root, while a data URI shows in any browser; the PNGs are small (a few KB
  each), so 200 images make a file well under a megabyte. :func:`label_studio_config`
  gives the labelling interface to paste into the project (one Choices block per
  protected concept, "can't tell" included).

Neither shows the decoded groups: a labeller who sees what the decoders said tends to
agree with it, and the labels measure the decoders.

Import (:func:`import_labels`) reads a CSV with ``image_id, concept, group`` (other
columns ignored; rows whose group is empty are left out, the unfilled rows of an export) or
a Label Studio JSON export (tasks with ``annotations``; cancelled annotations are left out),
checks everything, and appends through :func:`audit.labels.append_labels`: a bad file
writes nothing.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from audit.errors import LabelError
from audit.labels import CANT_TELL, append_label_records, label_choices, labelling_sample

__all__ = ["export_labelling", "import_labels", "label_studio_config", "read_label_file"]

_MAX_FILE_BYTES = 64 << 20  # an import file larger than this is not a labels file


def label_studio_config(choices: dict[str, list[str]]) -> str:
    """The Label Studio labelling interface (XML) for ``choices`` (concept -> groups)."""
    blocks = []
    for concept, groups in choices.items():
        options = "".join(f"\n    <Choice value={quoteattr(g)}/>" for g in [*groups, CANT_TELL])
        blocks.append(f'  <Header value={quoteattr(concept)}/>\n  <Choices name='
                      f'{quoteattr(concept)} toName="image" choice="single" required="true">'
                      f"{options}\n  </Choices>")
    return "<View>\n  <Image name=\"image\" value=\"$image\"/>\n" + "\n".join(blocks) + \
        "\n</View>\n"


def export_labelling(run_dir: Path, path: Path) -> int:
    """Write the labelling sample to ``path`` (``.json``: Label Studio tasks with embedded
    images; else CSV, see the module docstring); returns the number of images.

    Raises
    ------
    RunFolderError
        No labelling sample.
    """
    from audit.io import atomic_write_text
    from audit.runfolder import read_artifact

    run_dir, path = Path(run_dir), Path(path)
    items = labelling_sample(run_dir)
    choices = label_choices(run_dir)
    if path.suffix.lower() == ".json":
        tasks = []
        for item in items:
            png = base64.b64encode(read_artifact(run_dir, item.file)).decode("ascii")
            tasks.append({"data": {"image": f"data:image/png;base64,{png}",
                                   "image_id": item.image_id}})
        atomic_write_text(path, json.dumps(tasks, indent=1) + "\n")
        return len(items)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image_id", "file", "concept", "group", "choices"])
    for item in items:
        for concept, groups in choices.items():
            writer.writerow([item.image_id, str((run_dir / item.file).resolve()), concept, "",
                             "|".join([*groups, CANT_TELL])])
    atomic_write_text(path, buf.getvalue())
    return len(items)


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError as exc:
        raise LabelError(f"{path}: not found. Give the CSV or Label Studio export to import."
                         ) from exc
    except OSError as exc:
        raise LabelError(f"{path}: cannot be read ({exc.strerror}).") from exc
    if len(data) > _MAX_FILE_BYTES:
        raise LabelError(f"{path}: larger than {_MAX_FILE_BYTES >> 20} MB; a labels file is "
                         f"far smaller. Give the CSV or Label Studio export of the labels.")
    return data


def _csv_rows(path: Path, text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ("image_id", "concept", "group") if c not in header]
    if missing:
        raise LabelError(f"{path}: lacks the column(s) {', '.join(missing)} (its header is "
                         f"{','.join(header)[:120] or 'empty'}); a labels CSV has image_id, "
                         f"concept and group, as gan-audit label RUN --export FILE.csv writes.")
    reader.fieldnames = header
    rows = []
    try:
        for k, raw in enumerate(reader, start=2):
            if None in raw or any(v is None for v in raw.values()):
                raise LabelError(f"{path}: line {k} has {len(header)} columns expected, "
                                 f"another number found; fix or remove that line.")
            if raw["group"].strip():
                rows.append({c: raw[c] for c in ("image_id", "concept", "group")})
    except csv.Error as exc:
        raise LabelError(f"{path}: not a CSV file ({exc}).") from exc
    return rows


def _annotator(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return "" if who is None else str(who)


def _studio_rows(path: Path, tasks: Any) -> list[dict[str, str]]:
    """Rows (with ``annotator``) from a Label Studio JSON export."""
    if not isinstance(tasks, list):
        raise LabelError(f"{path}: a Label Studio export is a JSON list of tasks, not a "
                         f"{type(tasks).__name__}; export the project as JSON.")
    rows = []
    for k, task in enumerate(tasks, start=1):
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("image_id"), str):
            raise LabelError(f"{path}: task {k} has no data.image_id; import the export of "
                             f"the tasks that gan-audit label RUN --export FILE.json wrote.")
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            raise LabelError(f"{path}: task {k}: annotations is not a list.")
        for annotation in annotations:
            if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
                continue
            for result in annotation.get("result") or []:
                value = result.get("value") if isinstance(result, dict) else None
                picked = value.get("choices") if isinstance(value, dict) else None
                if not isinstance(picked, list) or len(picked) != 1:
                    raise LabelError(f"{path}: task {k}: a result is not one choice of a "
                                     f"Choices block (value.choices with one entry); label "
                                     f"with the interface of label_studio_config.")
                rows.append({"image_id": data["image_id"], "concept": result.get("from_name"),
                             "group": picked[0], "annotator": _annotator(annotation)})
    return rows


def read_label_file(path: Path) -> list[dict[str, str]]:
    """The labels of a CSV or Label Studio JSON export (by content: a file starting with
    ``[`` is JSON), as rows ``image_id, concept, group`` (and ``annotator`` for Label
    Studio). Raises :class:`LabelError` naming the file and what is wrong."""
    path = Path(path)
    try:
        text = _read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV or "
                         f"JSON.") from exc
    if text.lstrip().startswith(("[", "{")):
        try:
            return _studio_rows(path, json.loads(text))
        except json.JSONDecodeError as exc:
            raise LabelError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}).") \
                from exc
    return _csv_rows(path, text)


def import_labels(run_dir: Path, path: Path, *, labeller: str) -> int:
    """Append the labels of ``path`` (:func:`read_label_file`) by ``labeller``; returns the
    number written. Label Studio annotations by several annotators keep them apart
    (``labeller (annotator)``). All or nothing: a bad row writes nothing."""
    rows = read_label_file(Path(path))
    if not rows:
        raise LabelError(f"{path}: holds no labels (every group is empty, or no task has an "
                         f"annotation); fill in the group column, or annotate the tasks.")
    who = [row.pop("annotator", "") for row in rows]
    names = [f"{labeller} ({w})" if w and len(set(who)) > 1 else labeller for w in who]
    return append_label_records(run_dir, rows, labellers=names, source="import")
