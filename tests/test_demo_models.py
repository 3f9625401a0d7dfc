"""The demo DCGAN: committed weights load safely, verify their sha256, and retrain."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from audit.demo import models
from audit.demo.models import (
    LATENT_DIM,
    DigitsDiscriminator,
    DigitsGenerator,
    builtin_discriminator,
    builtin_generator,
    read_sha256sums,
)
from audit.errors import ModelLoadError
from audit.io import sha256_file


def test_committed_weights_match_their_sums():
    sums = read_sha256sums(models.WEIGHTS_DIR / "SHA256SUMS")
    assert set(sums) == {"generator.safetensors", "discriminator.safetensors"}
    for name, digest in sums.items():
        assert sha256_file(models.WEIGHTS_DIR / name) == digest
    total = sum((models.WEIGHTS_DIR / name).stat().st_size for name in sums)
    assert total < 3_000_000


def test_builtin_models_load_in_eval_mode_with_documented_shapes():
    generator, discriminator = builtin_generator(), builtin_discriminator()
    assert not generator.training and not discriminator.training
    z = torch.randn(5, LATENT_DIM, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = generator(z)
        logits = discriminator(images)
    assert images.shape == (5, 1, 32, 32)
    assert images.min() >= -1 and images.max() <= 1
    assert logits.shape == (5, 1) and torch.isfinite(logits).all()


def test_discriminator_layers_read_well_and_do_not_depend_on_the_batch():
    discriminator = builtin_discriminator()
    names = {name for name, _ in discriminator.named_modules()}
    assert {"blocks.0", "blocks.1", "blocks.2", "blocks.3", "head"} <= names
    images = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        together = discriminator(images)
        alone = torch.cat([discriminator(images[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone)


@pytest.mark.parametrize("loader,name", [(builtin_generator, "generator.safetensors"),
                                         (builtin_discriminator, "discriminator.safetensors")])
def test_tampered_weights_raise_model_load_error(tmp_path, monkeypatch, loader, name):
    shutil.copytree(models.WEIGHTS_DIR, tmp_path / "weights")
    path = tmp_path / "weights" / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(ModelLoadError, match="does not match its sha256") as info:
        loader()
    assert "python -m audit.demo.train" in str(info.value)
    assert name in str(info.value)


def test_missing_weights_raise_model_load_error(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelLoadError, match=r"is missing.*python -m audit\.demo\.train"):
        builtin_discriminator()


def test_weights_that_do_not_fit_raise_model_load_error(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    save_file({"head.1.weight": torch.zeros(1, 3)}, str(tmp_path / "discriminator.safetensors"))
    digest = sha256_file(tmp_path / "discriminator.safetensors")
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  discriminator.safetensors\n")
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelLoadError, match="does not fit the demo model"):
        builtin_discriminator()


def test_models_are_small():
    n_g = sum(p.numel() for p in DigitsGenerator().parameters())
    n_d = sum(p.numel() for p in DigitsDiscriminator().parameters())
    assert n_g + n_d < 750_000


def test_train_writes_loadable_reproducible_weights(tmp_path, monkeypatch, quick_batch_norm):
    from audit.demo.train import train

    kwargs = {"epochs": 1, "seed": 0, "n_images": 16, "batch_size": 8, "check_n": 0,
              "log": lambda message: None}
    summary = train(out=tmp_path / "a", **kwargs)
    train(out=tmp_path / "b", **kwargs)
    written = json.loads((tmp_path / "a" / "training.json").read_text())
    assert written["epochs"] == 1 and written["seed"] == 0 and len(written["history"]) == 1
    assert written["mix"] == {"tone_dark": 0.2, "stroke_thick": 0.3}
    assert written["sha256"] == summary["sha256"]
    # same seed, same weights
    assert (tmp_path / "a" / "SHA256SUMS").read_text() == \
        (tmp_path / "b" / "SHA256SUMS").read_text()
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path / "a")
    generator, discriminator = builtin_generator(), builtin_discriminator()
    with torch.no_grad():
        logits = discriminator(generator(torch.randn(3, LATENT_DIM)))
    assert logits.shape == (3, 1) and torch.isfinite(logits).all()


def test_pixel_rules_of_the_check_recover_planted_tone_and_stroke():
    from audit.demo.data import make_set
    from audit.demo.train import ink_pixels, tone_is_dark

    images, labels = make_set("audit", n=200, tone_share_dark=0.5, stroke_share_thick=0.5,
                              seed=0)
    dark = torch.tensor((labels["tone"] == "dark").to_numpy())
    assert torch.equal(tone_is_dark(images), dark)
    thick = torch.tensor((labels["stroke"] == "thick").to_numpy())
    ink = ink_pixels(images)
    assert ink[thick].mean() > ink[~thick].mean() + 50
