"""The demo's short training run (audit/demo/checkpoints.py, ``train --track``): shipped
float16 checkpoints that verify their sha256, load as builtin specs, and carry a planted
trend (fewer dark digits in later checkpoints) that the pixel rule confirms."""

from __future__ import annotations

import itertools
import json
import shutil

import pytest
import torch

from audit.demo import checkpoints, models
from audit.demo.models import (
    TRACK_CHECKPOINTS,
    TRACK_DARK_SHARE,
    read_sha256sums,
    track_discriminator,
    track_generator,
)
from audit.errors import ModelLoadError
from audit.io import sha256_file

TRACK = models.WEIGHTS_DIR / checkpoints.TRACK_SUBDIR


def test_checkpoints_are_listed_in_training_order_and_registered() -> None:
    from audit.models.specs import BUILTIN_MODELS

    assert TRACK_CHECKPOINTS[0] == "builtin:digits-dcgan"
    epochs = [int(s.rpartition("-e")[2]) for s in TRACK_CHECKPOINTS[1:]]
    assert epochs == sorted(epochs) and epochs[0] > checkpoints.BASE_EPOCHS
    assert epochs[-1] == checkpoints.BASE_EPOCHS + checkpoints.TRACK_EPOCHS
    assert len(checkpoints.TRACK_SCHEDULE) == checkpoints.TRACK_EPOCHS
    for spec in TRACK_CHECKPOINTS:
        assert spec.removeprefix("builtin:") in BUILTIN_MODELS
    from audit.demo.train import EPOCHS

    assert checkpoints.BASE_EPOCHS == EPOCHS


def test_shipped_checkpoints_match_their_sums_and_stay_small() -> None:
    sums = read_sha256sums(TRACK / "SHA256SUMS")
    expected = {f for e in checkpoints.TRACK_SAVE_EPOCHS for f in checkpoints.checkpoint_files(e)}
    assert set(sums) == expected
    for name, digest in sums.items():
        assert sha256_file(TRACK / name) == digest
    assert sum((TRACK / name).stat().st_size for name in sums) < 6_000_000


def test_the_planted_truth_is_what_training_json_records_and_the_pixel_rule_measures() -> None:
    from audit.demo.train import generated_dark_share

    recorded = json.loads((TRACK / "training.json").read_text())["truth"]
    assert recorded == pytest.approx(TRACK_DARK_SHARE, abs=1e-12)
    assert list(TRACK_DARK_SHARE) == list(TRACK_CHECKPOINTS)
    shares = list(TRACK_DARK_SHARE.values())
    # the planted bias grows: fewer dark digits in every later checkpoint
    assert all(a > b for a, b in itertools.pairwise(shares))
    last = track_generator(checkpoints.TRACK_SAVE_EPOCHS[-1])
    assert generated_dark_share(last, n=checkpoints.TRUTH_N, seed=0) == \
        pytest.approx(shares[-1], abs=0.002)
    # an independent draw of latents agrees within binomial error (sd < 0.01 at n = 4000)
    assert generated_dark_share(last, n=4000, seed=11) == pytest.approx(shares[-1], abs=0.03)


def test_checkpoints_load_through_the_model_loader_as_both_roles() -> None:
    from audit.load import load_discriminator
    from audit.models.generate import generate_batch, load_generator

    spec = TRACK_CHECKPOINTS[-1]
    d = load_discriminator(spec)
    g = load_generator(spec)
    base = load_generator("builtin:digits-dcgan")
    assert g.sha256 != base.sha256 and d.sha256 != load_discriminator(TRACK_CHECKPOINTS[1]).sha256
    images = generate_batch(g, list(range(8)), seed=0)
    assert images.shape == (8, 1, 32, 32)
    with torch.no_grad():
        assert torch.isfinite(d.module(images)).all()
    # truncation works on the checkpoints too
    assert not torch.allclose(generate_batch(g, list(range(8)), seed=0, truncation=0.5), images)


def test_an_unknown_checkpoint_names_the_known_ones() -> None:
    with pytest.raises(ModelLoadError, match=r"no checkpoint after epoch 64.*digits-dcgan-e"):
        track_generator(64)


def test_tampered_checkpoint_names_the_command_that_rebuilds_it(tmp_path, monkeypatch) -> None:
    shutil.copytree(models.WEIGHTS_DIR, tmp_path / "weights")
    epoch = checkpoints.TRACK_SAVE_EPOCHS[0]
    name = checkpoints.checkpoint_files(epoch)[1]
    path = tmp_path / "weights" / checkpoints.TRACK_SUBDIR / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(ModelLoadError, match="does not match its sha256") as info:
        track_discriminator(epoch)
    assert "python -m audit.demo.train --track" in str(info.value)
    assert f"digits-dcgan-e{epoch}" in str(info.value)


def test_train_track_follows_its_schedule_and_is_reproducible(tmp_path,
                                                               quick_batch_norm) -> None:
    from audit.demo.train import train, train_track

    quiet = {"n_images": 16, "batch_size": 8, "check_n": 0, "log": lambda message: None}
    train(out=tmp_path / "base", epochs=1, seed=0, **quiet)
    kwargs = {"base": tmp_path / "base", "schedule": (0.5, 0.0), "save_epochs": (61, 62),
              "truth_n": 64, **quiet}
    summary = train_track(out=tmp_path / "a", **kwargs)
    train_track(out=tmp_path / "b", **kwargs)
    assert (tmp_path / "a" / "SHA256SUMS").read_text() == \
        (tmp_path / "b" / "SHA256SUMS").read_text()
    assert [row["epoch"] for row in summary["history"]] == [61, 62]
    assert [row["mix_tone_dark"] for row in summary["history"]] == [0.5, 0.0]
    assert list(summary["truth"]) == ["builtin:digits-dcgan", "builtin:digits-dcgan-e61",
                                      "builtin:digits-dcgan-e62"]
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "a" / "generator-e062.safetensors"))
    assert state["project.0.weight"].dtype == torch.float16
    assert state["project.2.num_batches_tracked"].dtype == torch.int64


def test_the_extract_key_stamps_the_checkpoints_sums_and_only_for_checkpoints() -> None:
    from audit.config import DiscriminatorConfig
    from audit.pipeline import _spec_files

    key = "builtin:demo/weights/track/SHA256SUMS"
    assert key in _spec_files(DiscriminatorConfig(spec=TRACK_CHECKPOINTS[2]))
    # the shipped demo's stamps (and so its cached runs) are as before
    assert key not in _spec_files(DiscriminatorConfig(spec="builtin:digits-dcgan"))
