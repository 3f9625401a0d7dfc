"""The main job end to end on a tiny config: every file of the run folder, caching, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from audit.cli import cli
from audit.config import config_from_dict

TINY = {
    "name": "tiny",
    "concept_set": "digits_tone",
    # Random-weight demo architectures: the pipeline, not the GAN, is under test here.
    "discriminator": {"spec": "python:audit.demo.models:DigitsDiscriminator",
                      "layers": "auto", "batch_size": 100},
    "generator": {"spec": "python:audit.demo.models:DigitsGenerator", "n": 120, "seed": 0,
                  "batch_size": 60},
    "paired": {"source": "builtin:digits-paired", "n": 240},
    "real": {"source": "builtin:digits-audit", "n": 120},
    "decoders": {"max_epochs": 8},
    "measure": {"n_boot": 50},
    "report": {"pdf": False, "samples_per_group": 4, "title": "Tiny audit of <b>digits</b>",
               # a stratified draw of 24 of the 120 generated images (the default 200 would
               # take them all, a PNG each: 0.2 s of every tiny run)
               "labelling_sample": 24},
}

RUN_FILES = ["config.yaml", "manifest.json", "activations/paired/manifest.json",
             "activations/real/manifest.json", "activations/generated/manifest.json",
             "decoders/validity.json", "decoders/layers.json", "decoders/splits.json",
             "decoders/transfer.json", "baseline/random.json",
             "predictions.parquet", "results.json", "samples/index.json", "report.html"]


def _run(cfg: dict, out: Path, *extra: str):
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump({**cfg, "out": str(out)}))
    return CliRunner().invoke(cli, ["run", str(path), *extra])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "run"
    result = _run(TINY, out)
    assert result.exit_code == 0, result.output + str(result.exception)
    return out


def test_run_writes_every_file_of_the_run_folder(tiny_run):
    for name in RUN_FILES:
        assert (tiny_run / name).is_file(), f"{name} missing"
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert all(manifest["stages"][s]["done"] for s in
               ("extract", "decoders", "decode", "samples", "measure", "report"))
    for key in ("versions", "machine", "seeds", "hashes", "data_sources"):
        assert manifest[key], key
    assert manifest["versions"]["torch"]
    assert manifest["data_sources"]["paired"]["n"] == 240
    html = (tiny_run / "report.html").read_text()
    assert "Tiny audit of &lt;b&gt;digits&lt;/b&gt;" in html  # the config's title, escaped


def test_predictions_follow_the_contract(tiny_run):
    table = pd.read_parquet(tiny_run / "predictions.parquet")
    audited = table[table["split"] == "audit"]
    assert len(audited) == 240  # 120 real + 120 generated
    assert set(audited["source"]) == {"real", "generated"}
    assert set(table.loc[table["split"] != "audit", "split"]) == {"train", "val", "test"}
    for c, groups in (("tone", ["light", "dark"]), ("stroke", ["thin", "thick"])):
        probs = table[[f"prob__{c}__{g}" for g in groups]].to_numpy()
        assert abs(probs.sum(axis=1) - 1).max() < 1e-5
        assert set(table[f"pred__{c}"]) <= set(groups)
        # real images carry the planted truth; generated ones have none
        assert table.loc[table["source"] == "real", f"true__{c}"].isin(groups).all()
        assert table.loc[table["source"] == "generated", f"true__{c}"].isna().all()


def test_results_validate_against_the_schema(tiny_run):
    from audit.measure import validate_results

    validate_results(json.loads((tiny_run / "results.json").read_text()))


def test_resolved_config_round_trips(tiny_run):
    data = yaml.safe_load((tiny_run / "config.yaml").read_text())
    cfg = config_from_dict(data)
    assert cfg.name == "tiny" and cfg.generator.n == 120


def test_rerun_with_a_new_threshold_reuses_the_heavy_stages(tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    cfg = {**TINY, "measure": {"n_boot": 50, "impact_threshold": 0.9}}
    result = _run(cfg, out)
    assert result.exit_code == 0, result.output
    for stage in ("extract", "decoders", "decode", "samples"):
        assert f"[{stage}] up to date" in result.stderr
    assert "[measure] done" in result.stderr and "[report] done" in result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["impact_threshold"] == 0.9


def test_switching_the_random_baseline_off_keeps_the_decoders(tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    assert json.loads((out / "results.json").read_text())["baseline"]  # on by default
    result = _run({**TINY, "decoders": {**TINY["decoders"], "random_baseline": False}}, out)
    assert result.exit_code == 0, result.output
    assert "[decoders] up to date" in result.stderr and "[baseline] done" in result.stderr
    assert json.loads((out / "baseline" / "random.json").read_text())["skipped"]
    assert json.loads((out / "results.json").read_text())["baseline"] == []
    assert not (out / "baseline" / "activations").exists()


def test_a_crash_mid_stage_leaves_a_resumable_folder(tiny_run, tmp_path, monkeypatch):
    import audit.pipeline

    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    (out / "results.json").unlink()
    before = json.loads((out / "manifest.json").read_text())["stages"]["measure"]["key"]
    cfg = {**TINY, "measure": {"n_boot": 50, "alpha": 0.01}}  # forces measure to run

    def crash(*args, **kwargs):
        raise RuntimeError("injected crash in measure")

    monkeypatch.setattr(audit.pipeline, "_measure", crash)
    result = _run(cfg, out)
    assert isinstance(result.exception, RuntimeError)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["measure"]["done"] is False
    assert manifest["stages"]["measure"]["key"] != before
    assert not (out / "results.json").exists()
    assert not list(out.glob(".*.tmp"))  # nothing half-written

    monkeypatch.undo()
    result = _run(cfg, out)
    assert result.exit_code == 0, result.output
    assert "[decoders] up to date" in result.stderr
    assert (out / "results.json").is_file()
    assert json.loads((out / "results.json").read_text())["settings"]["alpha"] == 0.01


def test_output_folder_that_is_a_file_is_a_clear_error(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    result = _run(TINY, target)
    assert result.exit_code == 2
    assert "exists and is a file" in result.stderr


def test_the_extract_key_sees_new_images_edited_code_and_new_weights(tmp_path, monkeypatch):
    """A changed image folder, model module or weights file must not reuse old outputs."""
    from audit.config import DiscriminatorConfig, ImageSourceConfig
    from audit.pipeline import _spec_files

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    source = ImageSourceConfig(source=f"folder:{folder}")
    before = _spec_files(source)
    (folder / "b.png").write_bytes(b"y")
    assert _spec_files(source) != before

    module = tmp_path / "my_d.py"
    module.write_text("def make():\n    return None\n")
    model = DiscriminatorConfig(spec=f"python:{module}:make")
    first = _spec_files(model)
    module.write_text("def make():\n    return 1\n")
    assert _spec_files(model) != first

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_pkg_d.py").write_text("X = 1\n")
    by_name = DiscriminatorConfig(spec="python:my_pkg_d:make")
    from audit.io import sha256_file

    # named by the module (as the config gave it), stamped by its file's bytes
    assert _spec_files(by_name) == {"python:my_pkg_d": sha256_file(tmp_path / "my_pkg_d.py")}

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"1")
    with_weights = DiscriminatorConfig(spec="builtin:digits-dcgan", weights=weights)
    one = _spec_files(with_weights)
    weights.write_bytes(b"2")
    assert _spec_files(with_weights) != one
    assert any(k.endswith("SHA256SUMS") for k in one)  # builtin: the shipped weights' sums


def test_each_network_is_loaded_once_per_run(tmp_path, monkeypatch):
    """Extract, samples and insight share one loaded discriminator and generator."""
    import audit.load as load
    import audit.models.discriminator as discriminator
    import audit.models.generate as generate

    calls = {"discriminator": 0, "generator": 0}
    real_d, real_g = discriminator._load_discriminator, generate._load_generator

    def count(role, real):
        def wrapped(*args, **kwargs):
            calls[role] += 1
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(discriminator, "_load_discriminator", count("discriminator", real_d))
    monkeypatch.setattr(generate, "_load_generator", count("generator", real_g))
    result = _run(TINY, tmp_path / "run")
    assert result.exit_code == 0, result.output + str(result.exception)
    assert calls == {"discriminator": 1, "generator": 1}
    # Outside a run nothing is kept: a second load builds the network again.
    load.load_discriminator(TINY["discriminator"]["spec"])
    assert calls["discriminator"] == 2
