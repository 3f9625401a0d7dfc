"""gan-audit track end to end on two tiny checkpoints (network pickles holding D and G_ema, as
a StyleGAN training run writes them) and on a truncation sweep of the demo generator."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from audit.cli import cli

pytestmark = pytest.mark.slow

TINY = {
    "name": "tiny",
    "concept_set": "digits_tone",
    "discriminator": {"spec": "pickle:ckpt/network-000000.pkl#D", "trust_pickle": True,
                      "batch_size": 120},
    "generator": {"spec": "pickle:ckpt/network-000000.pkl#G_ema", "trust_pickle": True,
                  "n": 120, "seed": 0, "batch_size": 120},
    "paired": {"source": "builtin:digits-paired", "n": 240},
    "real": {"source": "builtin:digits-audit", "n": 120},
    "decoders": {"max_epochs": 6, "random_baseline": False},
    "measure": {"n_boot": 50},
    "report": {"pdf": False, "samples_per_group": 2, "labelling_sample": 24},
    "track": {"n_boot": 99},
}


def make_checkpoints(folder: Path, n: int = 2) -> list[Path]:
    """``n`` network pickles: the demo's trained D and G, the k-th with both perturbed by
    seeded noise of size 0.05 k (so the checkpoints' generators and scores differ)."""
    import torch

    from audit.demo.models import builtin_discriminator, builtin_generator

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        torch.manual_seed(k)
        d, g = builtin_discriminator(), builtin_generator()
        with torch.no_grad():
            for p in [*d.parameters(), *g.parameters()]:
                p.add_(0.05 * k * torch.randn_like(p))
        paths.append(folder / f"network-{k:06d}.pkl")
        with open(paths[-1], "wb") as fh:
            pickle.dump({"D": d, "G_ema": g}, fh)
    return paths


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("track")
    make_checkpoints(root / "ckpt")
    (root / "audit.yaml").write_text(yaml.safe_dump({**TINY, "out": "out"}))
    return root


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def tracked(project) -> Path:
    result = invoke("track", project / "audit.yaml", "--checkpoints",
                    str(project / "ckpt" / "network-*.pkl"), "--out", project / "out",
                    "--no-pdf")
    assert result.exit_code == 0, result.output
    return project / "out"


def stages_done(run: Path) -> set[str]:
    """The stages a point's run folder records as done (its manifest), not its timings."""
    manifest = json.loads((run / "manifest.json").read_text())
    return {name for name, stage in manifest["stages"].items() if stage.get("done")}


def test_every_checkpoint_is_audited_into_one_tracking_folder(tracked):
    doc = json.loads((tracked / "track.json").read_text())
    assert [p["name"] for p in doc["points"]] == ["network-000000", "network-000001"]
    assert doc["decoders"]["kind"] == "per-checkpoint" and doc["mode"] == "checkpoints"
    for p in doc["points"]:
        run = tracked / p["run"]
        assert (run / "results.json").is_file() and (run / "report.html").is_file()
        assert stages_done(run) >= {"extract", "decoders", "decode", "measure"}
    series = pd.read_csv(tracked / "series.csv")
    dark = series[(series["curve"] == "generated_share") & (series["group"] == "tone=dark")]
    results = [json.loads((tracked / p["run"] / "results.json").read_text())
               for p in doc["points"]]
    expected = [next(r["generated_corrected"]["value"] for s in res["representation"]
                     if s["concept"] == "tone" for r in s["rows"] if r["group"] == "dark")
                for res in results]
    assert dark["estimate"].tolist() == pytest.approx(expected)
    assert (tracked / "series.parquet").is_file() and (tracked / "track.html").is_file()
    html = (tracked / "track.html").read_text()
    assert "per checkpoint" in html and html.count("<svg") > 3


def test_a_rerun_reuses_every_stage_of_every_checkpoint(tracked, project):
    before = json.loads((tracked / "track.json").read_text())
    result = invoke("track", project / "audit.yaml", "--checkpoints",
                    str(project / "ckpt" / "network-*.pkl"), "--out", tracked, "--no-pdf")
    assert result.exit_code == 0, result.output
    doc = json.loads((tracked / "track.json").read_text())
    for p in doc["points"]:  # every stage of every point came from the cache
        assert set(p["reused"]) == stages_done(tracked / p["run"]) >= \
            {"extract", "decoders", "measure"}, p
        assert all(why.startswith("cached") for why in p["reused"].values()), p
    assert doc["series"] == before["series"]


def test_reference_decoders_hold_the_instrument_and_keep_each_d_s_scores(tracked, project):
    from audit.images import load_images
    from audit.load import load_discriminator

    ref = tracked / "track" / "network-000000"
    out = project / "out-ref"
    result = invoke("track", project / "audit.yaml", "--checkpoints",
                    str(project / "ckpt" / "network-*.pkl"), "--reference-decoders", ref,
                    "--out", out, "--no-pdf", "--trust-run-config", "--fail-on", "high")
    doc = json.loads((out / "track.json").read_text())
    assert doc["decoders"] == {"kind": "reference", "reference": str(ref)}
    point = out / "track" / "network-000001"
    # the instrument is the reference's: same decoders, no decoder training here
    assert (point / "decoders" / "validity.json").read_bytes() == (
        ref / "decoders" / "validity.json").read_bytes()
    manifest = json.loads((point / "manifest.json").read_text())
    assert "decoders" not in manifest["stages"]
    generated = json.loads((point / "activations" / "generated" / "manifest.json").read_text())
    ref_store = json.loads((ref / "activations" / "paired" / "manifest.json").read_text())
    assert generated["settings"]["model_sha256"] == ref_store["settings"]["model_sha256"]
    # ... but the scores are the checkpoint's own D's: recomputed independently here
    from audit.config import DiscriminatorConfig

    cfg = TINY["discriminator"] | {"spec": f"pickle:{project / 'ckpt' / 'network-000001.pkl'}#D"}
    model = load_discriminator(DiscriminatorConfig(**cfg))
    scores = _scores(model, load_images(_real_section(), concept_set=None, input=model.input))
    predictions = pd.read_parquet(point / "predictions.parquet")
    real = predictions[(predictions["split"] == "audit") & (predictions["source"] == "real")]
    got = dict(zip(real["image_id"], real["score"], strict=True))
    assert [got[i] for i in scores] == pytest.approx(list(scores.values()), rel=1e-4, abs=1e-5)
    ref_real = pd.read_parquet(ref / "predictions.parquet")
    ref_real = ref_real[(ref_real["split"] == "audit") & (ref_real["source"] == "real")]
    assert not np.allclose(ref_real["score"].to_numpy(), real["score"].to_numpy())
    # --fail-on high: exit 1 exactly when a high finding is present
    high = [f for f in doc["findings"] if f["severity"] == "high"]
    assert result.exit_code == (1 if high else 0), result.output
    assert result.output.count("blocked: ") == len(high)


def _real_section():
    from audit.config import ImageSourceConfig

    return ImageSourceConfig(**TINY["real"])


def _scores(model, source) -> dict[str, float]:
    """The discriminator's score of every image of ``source``, one image at a time."""
    from audit.extract import activations_in_memory

    got = activations_in_memory(model, source, layers=["blocks.0"], batch_size=1)
    return dict(zip(got.image_ids, got.scores.tolist(), strict=True))


def test_a_truncation_sweep_fixes_d_and_decoders(project):
    cfg = {**TINY, "discriminator": {"spec": "builtin:digits-dcgan", "batch_size": 120},
           "generator": {"spec": "builtin:digits-dcgan", "n": 120, "batch_size": 120},
           "track": {"truncation": [1.0, 0.5], "n_boot": 99}, "out": "sweep"}
    (project / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    result = invoke("track", project / "sweep.yaml", "--no-pdf")
    assert result.exit_code == 0, result.output
    doc = json.loads((project / "sweep" / "track.json").read_text())
    assert [p["setting"] for p in doc["points"]] == [1.0, 0.5]
    assert doc["mode"] == "truncation" and doc["decoders"]["kind"] == "reference"
    second = doc["points"][1]
    assert "decoders" not in stages_done(project / "sweep" / second["run"])  # the reference's
    assert second["reused"]
    manifest = json.loads((project / "sweep" / second["run"] / "manifest.json").read_text())
    assert manifest["reference_decoders"]["scores"] == "reference"  # same D: its scores
    assert not (project / "sweep" / second["run"] / "scores.parquet").exists()
