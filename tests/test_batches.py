"""Batch-dependent discriminators (issue 17, item 1): full batches, seeded mixed order,
padding dropped and counted, rows in source order.

The model is the NVlabs-style StyleGAN2 discriminator of :mod:`families.stylegan2`
(minibatch standard deviation with group size 4 in ``b4.mbstd``), loaded from its network
pickle the way users load theirs. On main, a batch that is not a multiple of 4 crashed
inside ``mbstd`` (RuntimeError from its reshape, after all earlier work).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from families import stylegan2

from audit.batches import batch_order, full_batch_size, group_size, padding_rows
from audit.config import DiscriminatorConfig
from audit.extract import extract, pool_activation
from audit.load import load_discriminator
from audit.store import ActivationStore


@pytest.fixture(scope="module")
def network_pickle(tmp_path_factory) -> tuple[Path, Path]:
    return stylegan2.build_pickle(tmp_path_factory.mktemp("nvlabs"), seed=3)


@pytest.fixture
def stylegan_d(network_pickle):
    path, code = network_pickle
    model = load_discriminator(DiscriminatorConfig(spec=f"pickle:{path}#D", code_path=code,
                                                   trust_pickle=True, image_size=32,
                                                   channels=3))
    yield model
    stylegan2.forget_code()


def images(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` distinct images in [-1, 1]; image i's first pixel is i / 1000 (its tag)."""
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    x[:, 0, 0, 0] = torch.arange(n) / 1000
    return x


def tag(x: torch.Tensor) -> list[int]:
    return [round(float(v) * 1000) for v in x[:, 0, 0, 0]]


class Recorder:
    """Records every batch the discriminator's forward receives."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.batches: list[torch.Tensor] = []
        self.handle = module.register_forward_pre_hook(
            lambda _m, args: self.batches.append(args[0].detach().clone()))

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def test_the_probe_marks_the_stylegan_epilogue_and_the_group_size_is_read(stylegan_d):
    assert "b4.mbstd" in stylegan_d.batch_dependent_layers
    assert not {"b32", "b16", "b8"} & set(stylegan_d.batch_dependent_layers)
    assert group_size(stylegan_d) == 4
    stylegan_d.module.b4.mbstd.group_size = 8        # read from the module, not assumed
    assert group_size(stylegan_d) == 8


def test_the_unpadded_short_batch_is_what_crashed(stylegan_d):
    # The failure that extraction met on main: D called on the last 5 of 13 images.
    with pytest.raises(RuntimeError, match="invalid for input"):
        stylegan_d.forward(images(5))


def test_a_short_last_batch_no_longer_crashes_and_padding_is_recorded(stylegan_d, tmp_path):
    store = extract(stylegan_d, ["b16", "b8"], images(13), out=tmp_path / "s", batch_size=8,
                    progress=False)
    assert store.n_images == 13 and store.image_ids == [str(i) for i in range(13)]
    assert np.isfinite(store.scores()).all()
    manifest = store.manifest
    assert manifest["padded_rows"] == 3                         # 13 = 8 + 5 (+3 repeats)
    assert [s["padded_rows"] for s in manifest["shards"]] == [3]
    assert manifest["batches"]["batch_dependent"] is True
    assert manifest["batches"]["group_size"] == 4
    assert manifest["batches"]["order_seed"] == 0
    assert ActivationStore.open(tmp_path / "s").settings.order_seed == 0


def test_padded_outputs_are_dropped(stylegan_d, tmp_path):
    # A batch of 5 gives 5 scores: those of the same 5 images in the padded batch of 8
    # that D actually ran, the 3 repeats' outputs dropped.
    x = images(5)
    with Recorder(stylegan_d.module) as rec:
        store = extract(stylegan_d, ["b8"], x, out=tmp_path / "s", batch_size=8,
                        progress=False)
    assert len(rec.batches) == 1
    ran = rec.batches[0]
    assert len(ran) == 8 and sorted(tag(ran[:5])) == [0, 1, 2, 3, 4]
    assert tag(ran[5:]) == tag(ran[:3])                 # repeats of the batch's own images
    with torch.no_grad():
        direct = stylegan_d.module(ran, torch.zeros(8, 0)).reshape(-1).numpy()
    row_of = {t: r for r, t in enumerate(tag(ran[:5]))}
    expected = [direct[row_of[i]] for i in range(5)]            # in source order
    np.testing.assert_allclose(store.scores(), expected, rtol=1e-5, atol=1e-6)
    assert store.manifest["padded_rows"] == 3


def test_batches_mix_groups_in_a_seeded_order_and_rows_stay_in_source_order(stylegan_d,
                                                                          tmp_path):
    # Images 0..15 are group A, 16..31 group B, as a folder sorted by group would give.
    x = images(32)
    with Recorder(stylegan_d.module) as rec:
        store = extract(stylegan_d, ["b32"], x, out=tmp_path / "a", batch_size=8,
                        progress=False)
    batches = [tag(b) for b in rec.batches]
    assert len(batches) == 4 and sorted(i for b in batches for i in b) == list(range(32))
    for b in batches:
        assert {i < 16 for i in b} == {True, False}, f"a batch of one group: {b}"
    assert batches[0] != list(range(8))
    # rows in source order: b32 does not depend on the batch, so each stored row is that
    # image's own pooled output
    with torch.no_grad():
        own = stylegan_d.module.b32(None, x)[0]
    np.testing.assert_allclose(store.read("b32"), pool_activation(own, "avg").numpy(),
                               rtol=2e-3, atol=2e-3)
    assert store.image_ids == [str(i) for i in range(32)]
    # seeded: the same order again; another seed, another order
    with Recorder(stylegan_d.module) as again:
        extract(stylegan_d, ["b32"], x, out=tmp_path / "b", batch_size=8, progress=False)
    assert [tag(b) for b in again.batches] == batches
    with Recorder(stylegan_d.module) as other:
        extract(stylegan_d, ["b32"], x, out=tmp_path / "c", batch_size=8, progress=False,
                batch_seed=1)
    assert [tag(b) for b in other.batches] != batches


def test_a_batch_size_off_the_group_is_rounded_up_and_said_once(stylegan_d, tmp_path):
    with pytest.warns(UserWarning, match=r"batch_size 6 is not a multiple.*\(4;.*using "
                                         r"batch_size 8") as caught:
        store = extract(stylegan_d, ["b8"], images(10), out=tmp_path / "s", batch_size=6,
                        progress=False)
    assert len([w for w in caught if "not a multiple" in str(w.message)]) == 1
    assert store.settings.batch_size == 8 and store.manifest["batches"]["batch_size"] == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert full_batch_size(stylegan_d, 12) == 12


def test_nine_interpolation_steps_run_in_one_padded_batch(stylegan_d, tmp_path):
    # `interpolate` reads its 9 default steps with the run's batch size (64 by default).
    store = extract(stylegan_d, ["b8"], images(9), out=tmp_path / "s", batch_size=64,
                    progress=False)
    assert store.n_images == 9 and store.manifest["padded_rows"] == 55


def test_a_batch_independent_model_keeps_source_order_unpadded(tiny_discriminator, tmp_path):
    from audit.load import InputSpec, LoadedModel, probe_layers, state_sha256

    model = LoadedModel(module=tiny_discriminator, spec="test:tiny",
                        sha256=state_sha256(tiny_discriminator), input=InputSpec(16, 1))
    model.layer_info = probe_layers(model)
    assert group_size(model) is None and full_batch_size(model, 6) == 6
    x = torch.rand(10, 1, 16, 16)
    with Recorder(model.module) as rec:
        store = extract(model, "auto", x, out=tmp_path / "s", batch_size=4, progress=False)
    assert [len(b) for b in rec.batches] == [4, 4, 2]
    torch.testing.assert_close(torch.cat(rec.batches), x)
    assert store.manifest["padded_rows"] == 0
    assert store.manifest["batches"]["batch_dependent"] is False
    assert store.settings.order_seed is None


def test_batch_order_and_padding_rows():
    assert batch_order(0, 5, batch_size=2, seed=None) == [[0, 1], [2, 3], [4]]
    order = batch_order(10, 20, batch_size=4, seed=0)
    assert sorted(i for b in order for i in b) == list(range(10, 20))
    assert [len(b) for b in order] == [4, 4, 2]
    assert order == batch_order(10, 20, batch_size=4, seed=0) != batch_order(10, 20,
                                                                            batch_size=4,
                                                                            seed=1)
    assert padding_rows(5, 8).tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert padding_rows(2, 7).tolist() == [0, 1, 0, 1, 0, 1, 0]
    assert padding_rows(8, 8).tolist() == list(range(8))


def test_a_batch_short_of_an_unreadable_image_is_padded_too(stylegan_d, tmp_path):
    from PIL import Image

    from audit.config import ImageSourceConfig
    from audit.images import load_images

    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    source = load_images(ImageSourceConfig(source=f"folder:{folder}"), input=stylegan_d.input)
    with Recorder(stylegan_d.module) as rec:
        store = extract(stylegan_d, ["b8"], source, out=tmp_path / "s", batch_size=8,
                        progress=False)
    assert [len(b) for b in rec.batches] == [8, 8]       # 9 files: 8 readable in 2 batches
    assert store.n_images == 8 and len(store.skipped) == 1
    assert store.manifest["padded_rows"] == 8
    assert store.image_ids == sorted(store.image_ids, key=lambda i: source.image_ids.index(i))


@pytest.mark.parametrize(("n", "size", "group"), [(5, 8, 4), (13, 32, 4), (4, 8, 4),
                                                  (7, 12, 4), (9, 16, 8)])
def test_padding_never_puts_an_image_twice_in_a_minibatch_stddev_group(n, size, group):
    """NVlabs' MinibatchStdLayer groups rows strided (row r with r + size/G, ...): a copy in
    its original's group would shrink that group's standard deviation (found in review)."""
    from audit.batches import padding_rows

    rows = padding_rows(n, size, group=group)
    assert len(rows) == size and list(rows[:n]) == list(range(n))
    stride = size // group
    for first in range(stride):
        members = [int(rows[i]) for i in range(first, size, stride)]
        assert len(set(members)) == len(members), (first, members)


def test_padding_with_fewer_images_than_a_group_repeats_them_evenly():
    from audit.batches import padding_rows

    rows = padding_rows(2, 8, group=4)
    assert sorted(np.bincount(rows).tolist()) == [4, 4]
