"""Portable run folders (issue 20, part 5): a run folder names its inputs as the config gave
them (plus a content hash) and its own files relative to itself, so that it can be copied,
moved or sent to a colleague: it verifies, re-renders and compares the same there, and names
no directory of the writer's disk.

One project folder is audited once (config, images, labels, model code and concept set side
by side, all given by relative paths, the run folder inside), then copied elsewhere while the
original is renamed away.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from test_bad_inputs import digit_pngs, invoke, write_labels

from audit.manifest import RUN_FOLDER_FORMAT

pytestmark = pytest.mark.slow

# A seeded factory: every load gives the same weights, so that ``decode`` on the moved
# folder reads the model its decoders were trained on.
NETS = '''
import torch

from audit.demo.models import DigitsDiscriminator, DigitsGenerator


def make_d():
    torch.manual_seed(0)
    return DigitsDiscriminator()


def make_g():
    torch.manual_seed(1)
    return DigitsGenerator()
'''
CONFIG = {
    "name": "portable", "concept_set": "sets/tone.yaml",
    "discriminator": {"spec": "python:nets.py:make_d", "layers": "auto", "batch_size": 100},
    "generator": {"spec": "python:nets.py:make_g", "n": 100, "seed": 0, "batch_size": 50},
    "paired": {"source": "folder:data/paired", "labels": "data/paired.csv"},
    "real": {"source": "folder:data/real"},
    "decoders": {"max_epochs": 4}, "measure": {"n_boot": 50},
    "report": {"pdf": False, "samples_per_group": 4},
    "out": "runs/first",
}
# what the report shows of the moment it was rendered (none today; kept for when it does)
_TIMESTAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """The project audited once at ``origin``, then moved whole to ``moved`` (the original
    renamed away, so nothing can still read it): ``run`` is the moved run folder."""
    base = tmp_path_factory.mktemp("writer-home-7c1f")
    origin = base / "alice-secret-project"
    labels = digit_pngs(origin / "data" / "paired", n=200, source="digits-paired")
    write_labels(origin / "data" / "paired.csv", labels)
    digit_pngs(origin / "data" / "real", n=100)
    # skipped (on_bad_image: skip): its record must not name the folder it lay in
    (origin / "data" / "real" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (origin / "nets.py").write_text(NETS, encoding="utf-8")
    (origin / "sets").mkdir()
    shutil.copy(Path(__file__).parents[1] / "concept_sets" / "digits_tone.yaml",
                origin / "sets" / "tone.yaml")
    config = origin / "audit.yaml"
    config.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    result = invoke("run", config)
    assert result.exit_code == 0, result.output
    elsewhere = tmp_path_factory.mktemp("receiver") / "bob"
    moved = shutil.copytree(origin, elsewhere)
    origin.rename(origin.with_name("gone"))
    return {"origin": origin, "base": base, "moved": moved, "run": moved / "runs" / "first"}


def _names_of_the_writer(written: dict[str, Path]) -> list[str]:
    """The writer's project path, its folder names and home (when the tests run outside it;
    the receiver's folders share the rest of the temporary path)."""
    home = Path.home()
    mine = len(home.parts) > 1 and not written["base"].is_relative_to(home)
    return [str(written["origin"]), written["origin"].name, written["base"].name,
            *([str(home)] if mine else [])]


def _leaks(folder: Path, names: list[str]) -> list[str]:
    """``file: name`` for every file below ``folder`` (text or not) that holds one of
    ``names``."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.relative_to(folder)}: {n}" for n in names if n.encode() in data]
    return found


def test_no_file_of_the_run_folder_names_a_directory_of_the_writer(written):
    assert _leaks(written["run"], _names_of_the_writer(written)) == []


def test_inputs_are_recorded_as_given_with_a_content_hash(written):
    from audit.io import sha256_file

    manifest = json.loads((written["run"] / "manifest.json").read_text())
    assert [s["image_id"] for s in manifest["skipped_images"]["real"]] == ["broken.png"]
    assert manifest["format"] == RUN_FOLDER_FORMAT
    files = manifest["hashes"]["files"]
    assert files["nets.py"] == sha256_file(written["moved"] / "nets.py")
    assert files["data/paired.csv"] == sha256_file(written["moved"] / "data" / "paired.csv")
    assert {"data/paired", "data/real"} <= set(files)  # folders: a stamp of their files
    assert manifest["model"]["discriminator"] == "python:nets.py:make_d"
    sources = {k: v["source"] for k, v in manifest["data_sources"].items()}
    assert sources == {"paired": "folder:data/paired", "real": "folder:data/real",
                       "generated": "python:nets.py:make_g"}
    meta = json.loads((written["run"] / "results.json").read_text())["meta"]
    assert meta["hashes"]["files"] == files and meta["data_sources"]["real"]["source"] == (
        "folder:data/real")
    config = yaml.safe_load((written["run"] / "config.yaml").read_text())
    assert config["discriminator"]["spec"] == "python:../../nets.py:make_d"
    assert config["paired"] == {**config["paired"], "source": "folder:../../data/paired",
                                "labels": "../../data/paired.csv"}
    assert config["concept_set"] == "../../sets/tone.yaml" and config["out"] == "."


def test_as_given_writes_back_paths_in_specs_records_and_free_text(tmp_path):
    from audit.config import as_given, load_config

    (tmp_path / "cfg").mkdir()
    config = tmp_path / "cfg" / "audit.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "real": {"source": "folder:../images"}}))
    cfg = load_config(config)
    images = str(tmp_path / "images")
    assert cfg.real.source == f"folder:{images}"  # resolved for reading
    note = f"folder:{images}: the run folder {images}/run lies inside this image folder"
    record = {"source": {"spec": cfg.real.source, "notes": [note]},
              "skipped": [{"path": f"{images}/x.png"}], "n": 3}
    assert as_given(cfg, record) == {
        "source": {"spec": "folder:../images",
                   "notes": ["folder:../images: the run folder ../images/run lies inside "
                             "this image folder"]},
        "skipped": [{"path": "../images/x.png"}], "n": 3}
    assert as_given(cfg, cfg.discriminator.spec) == "python:nets.py:make_d"
    config.write_text(yaml.safe_dump({**CONFIG, "real": {"source": f"folder:{images}"}}))
    absolute = load_config(config)
    assert as_given(absolute, absolute.real.source) == f"folder:{images}"  # as given


def test_the_moved_project_reuses_every_stage_and_verifies(written, tmp_path):
    run = shutil.copytree(written["moved"], tmp_path / "again")
    result = invoke("run", run / "audit.yaml")
    assert result.exit_code == 0, result.output
    from audit.pipeline import STAGES

    for stage in STAGES:
        assert f"[{stage}] up to date" in result.output, (stage, result.output)
    verified = invoke("verify", run / "runs" / "first")
    assert verified.exit_code == 0, verified.output
    assert "intact" in verified.output


def test_copies_verify_re_render_and_compare_the_same(written, tmp_path):
    """Two copies in other places stay intact, re-render byte for byte the same report (but
    for the times it shows) naming nothing of the writer, and compare with the folder they
    were copied from as with each other."""
    copies, pages = [], []
    for name in ("sent", "kept"):
        copy = shutil.copytree(written["run"], tmp_path / name / "deeper")
        verified = invoke("verify", copy)
        assert verified.exit_code == 0, verified.output
        rendered = invoke("report", copy, "--no-pdf")
        assert rendered.exit_code == 0, rendered.output
        pages.append(_TIMESTAMP.sub(b"T", (copy / "report.html").read_bytes()))
        assert _leaks(copy, _names_of_the_writer(written)) == []
        assert invoke("verify", copy).exit_code == 0
        copies.append(copy)
    assert pages[0] == pages[1]
    comparisons = []
    for name, pair in {"x": (written["run"], copies[0]), "y": copies}.items():
        result = invoke("compare", *pair, "--out", tmp_path / f"cmp-{name}", "--no-pdf")
        assert result.exit_code == 0, result.output
        comparison = json.loads((tmp_path / f"cmp-{name}" / "compare.json").read_text())
        for audit in comparison["audits"]:
            audit.pop("name")  # each run as the command line named it
        comparisons.append(comparison)
    assert comparisons[0] == comparisons[1]


def test_the_moved_run_folder_finds_its_model_for_decode(written):
    """config.yaml names the model relative to the run folder: after the move, ``decode``
    loads it from the new place (the old absolute path is gone)."""
    image = written["moved"] / "data" / "real" / "img-000.png"
    result = invoke("decode", written["run"], image, "--trust-run-config")
    assert result.exit_code == 0, result.output
    assert "img-000.png" in result.output


def test_a_run_folder_of_the_previous_format_is_refused_with_a_clear_message(written,
                                                                             tmp_path):
    old = shutil.copytree(written["run"], tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format"] = 2
    (old / "manifest.json").write_text(json.dumps(manifest))
    result = invoke("report", old, "--no-pdf")
    assert result.exit_code == 2, result.output
    assert "format 2" in result.output and "--out" in result.output
    assert "Traceback" not in result.output
