"""Latent paths, and decoding along them with tiny models (no run folder, no download)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from audit.errors import DataError
from audit.insight.interpolate import interpolate_concepts, latent_path, path_summary

LATENT = 8


def test_paths_start_and_end_at_the_latents():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=LATENT), rng.normal(size=LATENT)
    for method in ("linear", "slerp"):
        z = latent_path(a, b, steps=7, method=method)
        assert z.shape == (7, LATENT)
        np.testing.assert_allclose(z[0], a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(z[-1], b, rtol=1e-5, atol=1e-6)
    lin = latent_path(a, b, steps=5, method="linear")
    np.testing.assert_allclose(lin[2], (a + b) / 2, rtol=1e-6)
    # slerp: norms move linearly, directions along the great circle (equal angles)
    s = latent_path(a, b, steps=5, method="slerp").astype(float)
    np.testing.assert_allclose(np.linalg.norm(s, axis=1),
                               np.linspace(np.linalg.norm(a), np.linalg.norm(b), 5), rtol=1e-5)
    u = s / np.linalg.norm(s, axis=1, keepdims=True)
    angles = np.arccos(np.clip(np.sum(u[1:] * u[:-1], axis=1), -1, 1))
    np.testing.assert_allclose(angles, angles[0], rtol=1e-4)
    with pytest.raises(DataError, match="at least 2 steps"):
        latent_path(a, b, steps=1)
    with pytest.raises(DataError, match="differ in shape"):
        latent_path(a, b[:3], steps=3)


def test_summary_of_a_monotone_change():
    p = np.array([[1.0, 0.0], [0.8, 0.2], [0.3, 0.7], [0.0, 1.0]])
    s = path_summary({"tone": p}, {"tone": ["light", "dark"]})["tone"]
    assert (s["start"], s["end"]) == ("light", "dark")
    assert s["change"] == pytest.approx(1.0) and s["detour"] == pytest.approx(1.0)
    assert s["max_step"] == pytest.approx(0.5)
    back = path_summary({"tone": p[[0, 2, 0, 3]]}, {"tone": ["light", "dark"]})["tone"]
    assert back["detour"] == pytest.approx(2.4)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An InsightRun-like object on tiny models: generator 8 -> 1 x 16 x 16, the conftest-sized
    discriminator, and decoders trained on its activations of random images."""
    import torch
    from torch import nn

    from audit.config import DecoderSettings
    from audit.decode import activations_to_decoders
    from audit.decode.run import store_features
    from audit.extract import extract
    from audit.insight.run import InsightRun
    from audit.load import InputSpec, LoadedGenerator, LoadedModel
    from audit.validation.decoders import planted_concept_set

    torch.manual_seed(0)
    disc = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                         nn.Flatten(), nn.Linear(128, 1)).eval()
    gen = nn.Sequential(nn.Linear(LATENT, 256), nn.Tanh(), nn.Unflatten(1, (1, 16, 16))).eval()
    model = LoadedModel(module=disc, spec="tiny", sha256="t" * 64,
                        input=InputSpec(image_size=16, channels=1))
    generator = LoadedGenerator(module=gen, spec="tiny-g", sha256="g" * 64,
                                latent_shape=(LATENT,))
    images = torch.rand(120, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    store = extract(model, ["1", "3"], images, out=tmp_path_factory.mktemp("store"),
                    batch_size=32, progress=False)
    cs = planted_concept_set()
    rng = np.random.default_rng(0)
    labels = {"image_id": list(store.image_ids)}
    for c in cs.concepts:
        labels[c.name] = rng.choice(c.groups, size=store.n_images)
    import pandas as pd

    bundle = activations_to_decoders(store_features(store), pd.DataFrame(labels), cs,
                                     settings=DecoderSettings(hidden=[8], max_epochs=3),
                                     model_sha256=store.settings.model_sha256, pooling="avg")
    run = InsightRun.__new__(InsightRun)
    run.__dict__.update(model=model, generator=generator, bundle=bundle, concept_set=cs,
                        paired=store, device="cpu",
                        cfg=SimpleNamespace(generator=SimpleNamespace(
                            truncation=None, class_label=None, class_sampling="fixed")))
    return run


def test_identical_latents_give_constant_probabilities(tiny_run):
    z = np.random.default_rng(3).normal(size=LATENT)
    groups = {c.name: c.groups for c in tiny_run.concept_set.concepts}
    path = interpolate_concepts(z, z.copy(), steps=6, read=tiny_run.read_latents, groups=groups)
    for c, p in path.probabilities.items():
        assert p.shape == (6, len(groups[c]))
        np.testing.assert_allclose(p, np.repeat(p[:1], 6, axis=0), atol=1e-6)
        assert path.summary[c]["path_length"] == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_allclose(path.scores, path.scores[0], atol=1e-5)
    assert path.images.shape == (6, 1, 16, 16)


def test_different_latents_move_along_the_path(tiny_run):
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=LATENT), rng.normal(size=LATENT)
    groups = {c.name: c.groups for c in tiny_run.concept_set.concepts}
    path = interpolate_concepts(a, b, steps=5, read=tiny_run.read_latents, groups=groups,
                                method="linear")
    assert not np.allclose(path.scores, path.scores[0])
    # the last step is what decoding the end image alone gives (no batch effect)
    probs, scores = tiny_run.read_images(tiny_run.generate(b[None, :]))
    for c in groups:
        np.testing.assert_allclose(path.probabilities[c][-1], probs[c][0], atol=1e-5)
    assert scores[0] == pytest.approx(path.scores[-1], abs=1e-5)
    doc = path.to_json()
    assert doc["steps"] == 5 and set(doc["probabilities"]) == set(groups)
