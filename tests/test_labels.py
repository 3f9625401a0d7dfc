"""Labels of generated images (audit.labels): the sample's design, the locked atomic writer,
reading, and what verify says of the labels folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from itertools import pairwise
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


def _with_pngs(run: Path) -> Path:
    from PIL import Image

    for item in labelling_sample(run):
        Image.new("RGB", (8, 8), (20, 20, 20)).save(run / item.file)
    return run


def test_export_a_csv_fill_it_in_and_import_it(tmp_path: Path) -> None:
    import csv

    from click.testing import CliRunner

    from audit.cli import cli

    run = _with_pngs(_run_folder(tmp_path))
    out = tmp_path / "to_label.csv"
    result = CliRunner().invoke(cli, ["label", str(run), "--export", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 20 * len(CHOICES)  # a row per image and protected concept
    assert "decoded" not in out.read_text()  # blind: the decoders' groups are not shown
    assert all(Path(r["file"]).is_file() and r["group"] == "" for r in rows)
    for r in rows[:10]:
        r["group"] = CHOICES[r["concept"]][0]
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = CliRunner().invoke(cli, ["label", str(run), "--import", str(out),
                                      "--labeller", "Ann"])
    assert result.exit_code == 0, result.output
    assert "10 labels" in result.output
    labels = read_labels(run)
    assert len(labels) == 10 and set(labels.labeller) == {"Ann"}
    assert set(labels.source) == {"import"}
    summary = CliRunner().invoke(cli, ["label", str(run)])
    assert "labelling sample: 20 images; 10 labels" in summary.output


def test_label_studio_tasks_embed_the_images_and_its_export_imports(tmp_path: Path) -> None:
    import base64

    from audit.labelfiles import export_labelling, import_labels, label_studio_config

    run = _with_pngs(_run_folder(tmp_path))
    out = tmp_path / "tasks.json"
    assert export_labelling(run, out) == 20
    tasks = json.loads(out.read_text())
    first = labelling_sample(run)[0]
    assert tasks[0]["data"]["image_id"] == first.image_id
    head, data = tasks[0]["data"]["image"].split(",", 1)
    assert head == "data:image/png;base64"
    assert base64.b64decode(data) == (run / first.file).read_bytes()
    xml = label_studio_config(CHOICES)
    assert '<Choices name="tone" toName="image"' in xml and 'value="cant_tell"' in xml
    # what Label Studio exports: annotations with results per Choices block
    export = [{**tasks[k], "annotations": [
        {"completed_by": {"email": who}, "was_cancelled": False,
         "result": [{"from_name": "tone", "to_name": "image", "type": "choices",
                     "value": {"choices": ["dark"]}}]} for who in ("a@x", "b@x")]
        + [{"completed_by": 3, "was_cancelled": True, "result": [
            {"from_name": "tone", "value": {"choices": ["light"]}}]}]}
        for k in range(3)]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    assert import_labels(run, path, labeller="Studio") == 6
    labels = read_labels(run)
    assert sorted(set(labels.labeller)) == ["Studio (a@x)", "Studio (b@x)"]
    assert set(labels.group) == {"dark"}


def test_the_samples_stage_writes_a_stratified_labelling_sample(tmp_path_factory) -> None:
    import pandas as pd
    from PIL import Image
    from test_bad_inputs import shared_run
    from test_pipeline import TINY

    from audit.samples import LABEL_VIEW_PX

    run = shared_run(tmp_path_factory, "tiny")
    index = json.loads((run / SAMPLE_INDEX).read_text())
    predictions = pd.read_parquet(run / "predictions.parquet")
    gen = predictions[(predictions.split == "audit") & (predictions.source == "generated")]
    assert index["concepts"] == {"tone": ["light", "dark"], "stroke": ["thin", "thick"]}
    n = TINY["report"]["labelling_sample"]
    assert index["n"] == n < len(gen)  # 24 of the tiny run's 120 generated images
    decoded = gen.set_index("image_id")
    for item in labelling_sample(run):
        for concept, group in item.decoded.items():
            assert decoded.loc[item.image_id, f"pred__{concept}"] == group
        with Image.open(run / item.file) as picture:
            assert min(picture.size) >= LABEL_VIEW_PX
    population = (gen.pred__tone.radd("tone=") + " & stroke=" + gen.pred__stroke).value_counts()
    assert index["design"]["population"] == population.to_dict()
    # the same draw as the library's, from the same seed
    again, _ = sample_index(image_ids=gen.image_id.tolist(), n=n, seed=0,
                            choices=index["concepts"],
                            decoded={c: gen[f"pred__{c}"].tolist() for c in index["concepts"]})
    assert [i["image_id"] for i in again["items"]] == [i["image_id"] for i in index["items"]]


def test_the_sample_comes_in_random_order_not_by_stratum() -> None:
    strata = ["a"] * 50 + ["b"] * 50
    pos = stratified_pick(strata, n=40, seed=0)
    order = [strata[i] for i in pos]
    runs = 1 + sum(x != y for x, y in pairwise(order))
    assert runs > 10  # two blocks (a...a b...b) would be 2 runs


def test_an_empty_labeller_of_one_row_is_named(tmp_path: Path) -> None:
    from audit.labels import append_label_records

    run = _run_folder(tmp_path)
    ok = labelling_sample(run)[0].image_id
    rows = [{"image_id": ok, "concept": "tone", "group": "dark"}] * 2
    with pytest.raises(LabelError, match="label row 2: the labeller's name is empty"):
        append_label_records(run, rows, labellers=["Ann", " "])
    assert not (run / LABELS_FILE).exists()


@pytest.mark.parametrize(("side", "expected"), [(8, 256), (32, 256), (1024, 512)])
def test_labelling_pngs_are_enlarged_or_shrunk_to_a_viewable_size(tmp_path: Path, cs, side: int,
                                                                  expected: int) -> None:
    from types import SimpleNamespace

    import pandas as pd
    import torch
    from PIL import Image

    from audit.samples import write_labelling_sample

    ids = [f"gen-{i}" for i in range(6)]

    class Source:
        image_ids = ids

        def get_batch(self, positions):
            g = torch.Generator().manual_seed(sum(positions))
            return SimpleNamespace(images=torch.rand(len(positions), 3, side, side, generator=g))

    generated = pd.DataFrame({"image_id": ids, "pred__tone": ["dark", "light"] * 3,
                              "pred__stroke": ["thin"] * 3 + ["thick"] * 3})
    run = tmp_path / "run"
    with claim(run):
        index = write_labelling_sample(generated, Source(), run, cs, n=4, seed=0,
                                       value_range=(0.0, 1.0))
    assert index["n"] == 4
    for item in labelling_sample(run):
        with Image.open(run / item.file) as picture:
            assert max(picture.size) == expected
