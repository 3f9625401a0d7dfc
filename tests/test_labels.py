"""Labels of generated images (audit.labels): the sample's design, the locked atomic writer,
reading, and what verify says of the labels folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from audit.errors import LabelError, RunFolderError
from audit.io import atomic_write_json
from audit.labels import (
    CANT_TELL,
    COLUMNS,
    LABELS_FILE,
    SAMPLE_INDEX,
    append_labels,
    label_choices,
    labelling_sample,
    labels_problems,
    read_labels,
    sample_index,
    stratified_pick,
)
from audit.runfolder import claim, created_files

ROOT = Path(__file__).resolve().parents[1]
CHOICES = {"tone": ["dark", "light"], "stroke": ["thin", "thick"]}


def _run_folder(tmp_path: Path, n_images: int = 40, n: int = 20) -> Path:
    run = tmp_path / "run"
    rng = np.random.default_rng(1)
    ids = [f"gen-{i:03d}" for i in range(n_images)]
    decoded = {c: [gs[int(rng.integers(len(gs)))] for _ in ids] for c, gs in CHOICES.items()}
    index, _ = sample_index(image_ids=ids, decoded=decoded, choices=CHOICES, n=n, seed=3)
    with claim(run):
        atomic_write_json(run / SAMPLE_INDEX, index)
    return run


def test_stratified_pick_gives_equal_shares_capped_at_each_stratum() -> None:
    strata = ["a"] * 100 + ["b"] * 50 + ["c"] * 4
    pos = stratified_pick(strata, n=30, seed=0)
    got = Counter(strata[i] for i in pos)
    assert got == {"c": 4, "a": 13, "b": 13}  # c gives all 4; the 26 left split equally
    assert len(set(pos.tolist())) == 30
    assert np.array_equal(pos, stratified_pick(strata, n=30, seed=0))
    assert not np.array_equal(pos, stratified_pick(strata, n=30, seed=1))
    assert sorted(stratified_pick(strata, n=500, seed=0).tolist()) == list(range(154))


def test_sample_index_records_the_design(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    index = json.loads((run / SAMPLE_INDEX).read_text())
    design = index["design"]
    assert sum(design["population"].values()) == 40
    assert sum(design["drawn"].values()) == index["n"] == 20
    assert all(design["drawn"][s] <= design["population"][s] for s in design["drawn"])
    items = labelling_sample(run)
    assert len({i.image_id for i in items}) == 20
    assert all(i.file.startswith("samples/labelling/") for i in items)
    assert set(items[0].decoded) == set(CHOICES)
    assert label_choices(run) == CHOICES


def test_no_sample_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match=r"labelling/index.json: not found.*gan-audit run"):
        labelling_sample(tmp_path)


def test_labels_round_trip_and_the_latest_label_per_labeller_counts(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    first, second = (i.image_id for i in labelling_sample(run)[:2])
    assert append_labels(run, [{"image_id": first, "concept": "tone", "group": "dark"},
                               {"image_id": second, "concept": "stroke", "group": CANT_TELL}],
                         labeller="Ann") == 2
    append_labels(run, [{"image_id": first, "concept": "tone", "group": "light"}],
                  labeller="Ann", source="import")
    append_labels(run, [{"image_id": first, "concept": "tone", "group": "dark"}],
                  labeller="Bob")
    labels = read_labels(run)
    assert list(labels.columns) == list(COLUMNS)
    assert len(labels) == 3
    ann = labels[(labels.labeller == "Ann") & (labels.image_id == first)]
    assert ann.group.tolist() == ["light"] and ann.source.tolist() == ["import"]
    assert all(t.endswith("Z") and "T" in t for t in labels.time)
    assert LABELS_FILE in created_files(run)  # journaled, as every write of the tool
    assert labels_problems(run) == []


@pytest.mark.parametrize(("row", "labeller", "fragment"), [
    ({"image_id": "nope", "concept": "tone", "group": "dark"}, "Ann", "row 2: unknown image id"),
    ({"image_id": "ID", "concept": "tones", "group": "dark"}, "Ann",
     "row 2: unknown concept 'tones'. Did you mean 'tone'"),
    ({"image_id": "ID", "concept": "tone", "group": "drak"}, "Ann",
     "row 2: unknown group of tone 'drak'. Did you mean 'dark'"),
    ({"image_id": "ID", "concept": "tone"}, "Ann", "row 2: lacks group"),
    ({"image_id": "ID", "concept": "tone", "group": "da\nrk"}, "Ann", "line break"),
    ({"image_id": "ID", "concept": "tone", "group": "dark"}, "  ", "labeller's name is empty"),
])
def test_a_bad_row_writes_nothing(tmp_path: Path, row: dict, labeller: str,
                                  fragment: str) -> None:
    run = _run_folder(tmp_path)
    ok = labelling_sample(run)[0].image_id
    row = {k: (ok if v == "ID" else v) for k, v in row.items()}
    good = {"image_id": ok, "concept": "tone", "group": "dark"}
    with pytest.raises(LabelError, match=fragment):
        append_labels(run, [good, row], labeller=labeller)
    assert not (run / LABELS_FILE).exists()


def test_a_damaged_labels_file_is_never_extended(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    ok = labelling_sample(run)[0].image_id
    append_labels(run, [{"image_id": ok, "concept": "tone", "group": "dark"}], labeller="A")
    path = run / LABELS_FILE
    path.write_bytes(path.read_bytes() + b"torn,line\n")
    before = path.read_bytes()
    with pytest.raises(LabelError, match="line 3 has 2 fields"):
        append_labels(run, [{"image_id": ok, "concept": "tone", "group": "dark"}], labeller="A")
    assert path.read_bytes() == before
    assert any("line 3" in p for p in labels_problems(run))


_WRITER = """
import sys
from pathlib import Path
from audit.labels import append_labels, labelling_sample
run, name, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ids = [i.image_id for i in labelling_sample(run)]
for k in range(n):
    append_labels(run, [{"image_id": ids[k % len(ids)], "concept": "tone", "group": "dark"}],
                  labeller=f"{name}-{k}")
"""

_READER = """
import sys, time
from pathlib import Path
from audit.labels import read_labels
run, seen = Path(sys.argv[1]), 0
end = time.time() + 60
while seen < int(sys.argv[2]) and time.time() < end:
    seen = len(read_labels(run))  # raises on a torn line
print(seen)
"""


def test_two_processes_appending_at_once_both_land_and_no_line_is_torn(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    n = 25
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(run), str(2 * n)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(run), name, str(n)],
                                env=env, stderr=subprocess.PIPE, text=True)
               for name in ("a", "b")]
    for w in writers:
        _, err = w.communicate(timeout=240)
        assert w.returncode == 0, err
    out, err = reader.communicate(timeout=240)
    assert reader.returncode == 0, err  # it read the file all along: never a torn line
    assert int(out) == 2 * n
    labels = read_labels(run)
    assert sorted(labels.labeller) == sorted(f"{w}-{k}" for w in "ab" for k in range(n))
    assert (run / LABELS_FILE).read_text().count("\n") == 2 * n + 1


def test_labels_module_reaches_no_torch() -> None:
    code = ("import sys, audit.labels; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_verify_takes_the_labels_file_as_the_labellers_record(tmp_path: Path) -> None:
    from audit.manifest import new_manifest, record_artifacts, write_manifest
    from audit.verify import verify_run

    run = _run_folder(tmp_path)
    with claim(run):
        (run / "config.yaml").write_text("name: x\n")
        import hashlib

        manifest = new_manifest(audit_id="x", device=None, config_sha256=hashlib.sha256(
            b"name: x\n").hexdigest())
        write_manifest(run, manifest)
        record_artifacts(run, ["samples"], manifest)
        write_manifest(run, manifest)
    ok = labelling_sample(run)[0].image_id
    append_labels(run, [{"image_id": ok, "concept": "tone", "group": "dark"}], labeller="A")
    assert verify_run(run).problems == ()
    (run / "labels" / "extra.csv").write_text("x")
    assert any("labels/extra.csv" in p for p in verify_run(run).problems)
