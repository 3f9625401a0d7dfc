"""Extract stage: hooks, pooling, the store written by extract, resume, config runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_load import NETS, no_hooks, spec

from audit.config import DiscriminatorConfig
from audit.errors import LayerError, RunFolderError
from audit.extract import extract, pool_activation
from audit.hooks import capture, check_layers
from audit.load import load_discriminator
from audit.store import ActivationStore


@pytest.fixture
def nets(tmp_path: Path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


@pytest.fixture
def tiny(tiny_discriminator, tmp_path: Path):
    """The conftest discriminator, loaded through a TorchScript-free python spec."""
    from audit.load import InputSpec, LoadedModel, probe_layers, state_sha256

    model = LoadedModel(module=tiny_discriminator, spec="test:tiny",
                        sha256=state_sha256(tiny_discriminator), input=InputSpec(16, 1))
    model.layer_info = probe_layers(model)
    return model


# ---------------------------------------------------------------- pooling


def test_pooling_matches_direct_computation() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.randn(3, 5, 4, 6, generator=g)
    torch.testing.assert_close(pool_activation(t, "avg"), t.mean(dim=(2, 3)))
    avgmax = pool_activation(t, "avgmax")
    torch.testing.assert_close(avgmax[:, 5:], t.amax(dim=(2, 3)))
    grid = pool_activation(t, "grid2").view(3, 5, 2, 2)
    torch.testing.assert_close(grid[:, :, 1, 0], t[:, :, 2:, :3].mean(dim=(2, 3)))
    torch.testing.assert_close(pool_activation(t, "flatten"), t.reshape(3, -1))
    torch.testing.assert_close(pool_activation(t[:, :, 0, 0], "avg"), t[:, :, 0, 0])


def test_flatten_projection_is_fixed_and_keeps_geometry() -> None:
    g = torch.Generator().manual_seed(1)
    t = torch.randn(40, 64, 8, 8, generator=g)  # 4096 values -> 512
    a = pool_activation(t, "flatten", max_dim=512, seed=7)
    assert a.shape == (40, 512)
    torch.testing.assert_close(a, pool_activation(t, "flatten", max_dim=512, seed=7))
    assert not torch.allclose(a, pool_activation(t, "flatten", max_dim=512, seed=8))
    # a count sketch preserves inner products in expectation: squared norms within ~25%
    ratio = a.pow(2).sum(1) / t.reshape(40, -1).pow(2).sum(1)
    assert 0.75 < float(ratio.mean()) < 1.25


# ---------------------------------------------------------------- hooks


def test_misspelled_layer_lists_the_closest_names(nets: Path) -> None:
    model = load_discriminator(spec(nets, "PlainD"), probe=False)
    with pytest.raises(LayerError, match=r"'conv3' is not a layer.*closest: conv2, conv1"):
        check_layers(model.module, ["conv1", "conv3"])
    with pytest.raises(LayerError, match=r"'act_2'.*closest: act2"):
        extract(model, ["act_2"], torch.zeros(2, 1, 16, 16), out=nets.parent / "s")
    assert not (nets.parent / "s").exists()  # checked before anything was written


def test_hooks_are_removed_after_success_and_after_error(tiny) -> None:
    module = tiny.module
    x = torch.rand(4, 1, 16, 16)
    with capture(module, ["1", "3"]) as cap:
        module(x)
        got = cap.take()
    assert set(got) == {"1", "3"} and no_hooks(module)
    with pytest.raises(RuntimeError, match="boom"), capture(module, ["1", "3"]):
        assert not no_hooks(module)
        raise RuntimeError("boom")
    assert no_hooks(module)
    with pytest.raises(RuntimeError), capture(module, ["1"]):
        module(torch.rand(2, 3, 16, 16))  # wrong channels: the forward pass fails
    assert no_hooks(module)


def test_a_layer_that_captured_nothing_is_an_error(nets: Path, tmp_path: Path) -> None:
    model = load_discriminator(spec(nets, "PlainD"))
    with pytest.raises(LayerError, match=r"\['unused'\] captured nothing"):
        extract(model, ["act1", "unused"], torch.zeros(4, 1, 16, 16), out=tmp_path / "s",
                progress=False)
    assert no_hooks(model.module)


# ---------------------------------------------------------------- extraction


def test_extract_records_layers_and_scores(tiny, tmp_path: Path, tiny_images) -> None:
    store = extract(tiny, ["1", "3"], tiny_images, out=tmp_path / "s", batch_size=8,
                    progress=False)
    m = tiny.module
    with torch.no_grad():
        h1 = m[1](m[0](tiny_images))
        h3 = m[3](m[2](h1))
        ref_scores = m(tiny_images)[:, 0]
    np.testing.assert_allclose(store.read("1"), h1.mean(dim=(2, 3)).numpy(), atol=2e-3)
    np.testing.assert_allclose(store.read("3"), h3.mean(dim=(2, 3)).numpy(), atol=2e-3)
    assert store.read("1").dtype == np.float16 and store.scores().dtype == np.float32
    np.testing.assert_allclose(store.scores(), ref_scores.numpy(), rtol=1e-5, atol=1e-6)
    assert store.image_ids == [str(i) for i in range(32)]
    reopened = ActivationStore.open(tmp_path / "s")
    assert reopened.dims == {"1": 4, "3": 8} and reopened.info["complete"] is True
    assert reopened.info["settings"]["model_sha256"] == tiny.sha256
    assert no_hooks(m)


@pytest.mark.parametrize("pooling", ["avg", "grid2"])
def test_activations_do_not_depend_on_batch_size(tiny, tmp_path: Path, tiny_images,
                                                 pooling: str) -> None:
    a = extract(tiny, ["0", "3", "4"], tiny_images, out=tmp_path / "a", batch_size=5,
                pooling=pooling, progress=False)
    b = extract(tiny, ["0", "3", "4"], tiny_images, out=tmp_path / "b", batch_size=32,
                pooling=pooling, progress=False)
    for layer in a.layers:
        np.testing.assert_allclose(a.read(layer), b.read(layer), atol=1e-3)
    np.testing.assert_allclose(a.scores(), b.scores(), atol=1e-5)


def test_resume_after_interruption_equals_one_run(tiny, tmp_path: Path, tiny_images,
                                                  monkeypatch) -> None:
    whole = extract(tiny, ["1", "3"], tiny_images, out=tmp_path / "whole", batch_size=4,
                    shard_size=8, progress=False)
    real_write = ActivationStore.write_shard
    calls: list[int] = []

    def failing_write(self, index, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt("interrupted")
        calls.append(index)
        return real_write(self, index, **kw)

    monkeypatch.setattr(ActivationStore, "write_shard", failing_write)
    with pytest.raises(KeyboardInterrupt):
        extract(tiny, ["1", "3"], tiny_images, out=tmp_path / "part", batch_size=4,
                shard_size=8, progress=False)
    with pytest.raises(RunFolderError, match=r"incomplete.*resume"):
        ActivationStore.open(tmp_path / "part")
    assert no_hooks(tiny.module)
    calls.clear()
    monkeypatch.setattr(ActivationStore, "write_shard",
                        lambda self, index, **kw: (calls.append(index),
                                                   real_write(self, index, **kw)))
    resumed = extract(tiny, ["1", "3"], tiny_images, out=tmp_path / "part", batch_size=4,
                      shard_size=8, progress=False)
    assert calls == [2, 3]  # only the missing shards
    assert resumed.image_ids == whole.image_ids
    for layer in ("1", "3"):
        np.testing.assert_array_equal(resumed.read(layer), whole.read(layer))
    np.testing.assert_array_equal(resumed.scores(), whole.scores())


def test_store_with_other_settings_is_refused(tiny, tmp_path: Path, tiny_images) -> None:
    extract(tiny, ["1"], tiny_images, out=tmp_path / "s", batch_size=8, progress=False)
    with pytest.raises(RunFolderError, match=r"pooling \(store: avg, now: avgmax\)"):
        extract(tiny, ["1"], tiny_images, out=tmp_path / "s", batch_size=8, pooling="avgmax",
                progress=False)
    with pytest.raises(RunFolderError, match=r"batch size \(store: 8, now: 4\)"):
        extract(tiny, ["1"], tiny_images, out=tmp_path / "s", batch_size=4, progress=False)
    with pytest.raises(RunFolderError, match=r"images \(source fingerprint\)"):
        extract(tiny, ["1"], tiny_images.flip(0), out=tmp_path / "s", batch_size=8,
                progress=False)


def test_tuple_blocks_are_recorded(nets: Path, tmp_path: Path) -> None:
    model = load_discriminator(spec(nets, "TupleD"))
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    store = extract(model, ["b16", "b8"], x, out=tmp_path / "s", batch_size=4, progress=False)
    with torch.no_grad():
        h, _ = model.module.b16(x, x)
    np.testing.assert_allclose(store.read("b16"), h.mean(dim=(2, 3)).numpy(), atol=2e-3)
    assert store.scores().shape == (6,)


def test_conditional_model_uses_labels(nets: Path, tmp_path: Path) -> None:
    model = load_discriminator(DiscriminatorConfig(spec=spec(nets, "CondD"), class_label=0))
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    labels = [0, 1, 2, 0, 1, 2]
    store = extract(model, ["act"], x, out=tmp_path / "s", batch_size=4, progress=False,
                    class_labels=labels)
    with torch.no_grad():
        ref = model.module(x, F.one_hot(torch.tensor(labels), 3).float())[:, 0]
    np.testing.assert_allclose(store.scores(), ref.numpy(), rtol=1e-5, atol=1e-6)


def test_batch_dependent_layers_are_skipped_by_auto(nets: Path, tmp_path: Path) -> None:
    model = load_discriminator(spec(nets, "MbstdD"))
    from audit.load import auto_layers

    assert "act2" not in auto_layers(model) and "act1" in auto_layers(model)
    assert "act2" in auto_layers(model, include_batch_dependent=True)
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    with pytest.warns(UserWarning, match=r"\['act2'\] depend on the other images.*batch size 4"):
        store = extract(model, ["act1", "act2"], x, out=tmp_path / "s", batch_size=4,
                        progress=False)
    assert store.info["settings"]["batch_dependent"] == ["act2"]


# ---------------------------------------------------------------- from a config


def _write_config(tmp_path: Path, nets: Path) -> Path:
    import yaml

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "paired.npz", images=images, tone=np.array(["light", "dark"] * 6))
    np.savez(tmp_path / "real.npz", images=images[:5])
    cs = {"name": "tones", "concepts": [{"name": "tone", "kind": "binary",
                                          "groups": ["light", "dark"], "protected": True,
                                          "source": {"type": "column", "column": "tone"}}]}
    (tmp_path / "tones.yaml").write_text(yaml.safe_dump(cs))
    cfg = {"concept_set": "tones.yaml",
           "discriminator": {"spec": f"python:{nets}:MbstdD", "layers": "auto",
                             "batch_size": 4},
           "generator": {"spec": f"python:{nets}:TinyG", "n": 6, "seed": 1, "batch_size": 4,
                         "save_png": True},
           "paired": {"source": "npz:paired.npz"}, "real": {"source": "npz:real.npz"},
           "out": "run"}
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_extract_from_config_and_cli(nets: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from audit.cli import cli

    path = _write_config(tmp_path, nets)
    res = CliRunner().invoke(cli, ["extract", str(path), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "run" / "activations"
    stores = {n: ActivationStore.open(run / n) for n in ("paired", "real", "generated")}
    assert [s.n_images for s in stores.values()] == [12, 5, 6]
    assert stores["paired"].layers == stores["generated"].layers
    assert "act2" not in stores["paired"].layers  # batch-dependent, skipped by auto
    labels = stores["paired"].labels()
    assert list(labels["tone"]) == ["light", "dark"] * 6
    assert stores["generated"].image_ids[:2] == ["gen-1-0", "gen-1-1"]
    assert labels["image_id"].tolist() == stores["paired"].image_ids
    assert len(list((tmp_path / "run" / "generated").glob("gen-1-*.png"))) == 6
    assert "paired: 12 images" in res.stdout


def test_the_configs_precision_reaches_extraction(monkeypatch, tmp_path) -> None:
    """Audits run in fp32 unless the config asks for bf16 (which rounds the D scores)."""
    import audit.extract
    from audit.config import config_from_dict

    seen = []

    class Stop(Exception):
        pass

    def fake_extract(*args, **kwargs):
        seen.append(kwargs["precision"])
        raise Stop

    monkeypatch.setattr(audit.extract, "extract", fake_extract)
    base = {"discriminator": {"spec": "python:audit.demo.models:DigitsDiscriminator"},
            "generator": {"spec": "python:audit.demo.models:DigitsGenerator", "n": 4},
            "paired": {"source": "builtin:digits-paired", "n": 8},
            "real": {"source": "builtin:digits-audit", "n": 4}}
    for precision in (None, "bf16"):
        cfg = dict(base)
        if precision:
            cfg["discriminator"] = {**base["discriminator"], "precision": precision}
        with pytest.raises(Stop):
            audit.extract.extract_from_config(config_from_dict(cfg), out=tmp_path / "run",
                                              device="cpu", progress=False)
    assert seen == ["fp32", "bf16"]


def test_values_beyond_float16_are_stored_in_float32(tmp_path: Path) -> None:
    """A layer whose pooled values exceed float16's range (65504) keeps every image: its
    shards that need it are float32 (float16 would turn the values into infinity and the
    images would be skipped); the other shards and layers stay float16."""
    from audit.load import InputSpec, LoadedModel, probe_layers, state_sha256

    class Gain(torch.nn.Module):
        def forward(self, h: torch.Tensor) -> torch.Tensor:   # x 1e6 for bright images
            return h * (1 + 1e6 * (h.mean(dim=(1, 2, 3), keepdim=True) > 0).float())

    module = torch.nn.Sequential(torch.nn.Identity(), Gain(), torch.nn.Flatten(),
                                 torch.nn.LazyLinear(1)).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(32, 1, 16, 16, generator=g) * 0.5
    images[:16] -= 0.6                                          # shard 0: dark, shard 1: bright
    module(images)
    model = LoadedModel(module=module, spec="test:loud", sha256=state_sha256(module),
                        input=InputSpec(16, 1))
    model.layer_info = probe_layers(model)
    store = extract(model, ["0", "1"], images, out=tmp_path / "s", batch_size=8,
                    shard_size=16, progress=False)
    assert store.skipped == [] and len(store.image_ids) == 32
    shards = sorted((tmp_path / "s" / "1").glob("shard-*.npy"))
    assert [np.load(f).dtype for f in shards] == [np.float16, np.float32]
    loud = store.read("1")
    assert loud.dtype == np.float32 and float(np.abs(loud).max()) > 65504
    with torch.no_grad():
        expected = Gain()(images).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(loud[16:], expected[16:], rtol=1e-6)
    np.testing.assert_allclose(loud[:16], expected[:16], atol=2e-3)
    assert store.read("0").dtype == np.float16
