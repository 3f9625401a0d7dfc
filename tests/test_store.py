"""The activation store: shards, manifest, validity, resume rules, memory-mapped reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.errors import LayerError, RunFolderError
from audit.store import ActivationStore, StoreSettings, shard_ranges


def settings(**kw) -> StoreSettings:
    base = {"model_sha256": "abc", "layers": ("a.0", "b"), "pooling": "avg", "max_dim": 4096,
            "batch_size": 2, "shard_size": 4, "n_images": 10, "source_fingerprint": "f"}
    return StoreSettings(**{**base, **kw})


def fill(store: ActivationStore, shards: list[int], rng: np.random.Generator) -> dict:
    written = {}
    for k, (start, stop) in enumerate(store.shard_ranges()):
        if k not in shards:
            continue
        acts = {"a.0": rng.normal(size=(stop - start, 3)), "b": rng.normal(size=(stop - start, 2))}
        scores = rng.normal(size=stop - start)
        store.write_shard(k, image_ids=[f"i{j}" for j in range(start, stop)], activations=acts,
                          scores=scores)
        written[k] = (acts, scores)
    return written


def test_shard_ranges_cover_every_image_once() -> None:
    assert shard_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_ranges(8, 4) == [(0, 4), (4, 8)]
    assert shard_ranges(0, 4) == []


def test_write_finalize_open_read(tmp_path: Path) -> None:
    store = ActivationStore.create_or_resume(tmp_path / "s", settings())
    written = fill(store, [0, 1, 2], np.random.default_rng(0))
    store.finalize()
    opened = ActivationStore.open(tmp_path / "s")
    assert opened.image_ids == [f"i{j}" for j in range(10)]
    a = opened.read("a.0")
    assert a.dtype == np.float16 and a.shape == (10, 3)
    want = np.concatenate([written[k][0]["a.0"] for k in range(3)]).astype(np.float16)
    np.testing.assert_array_equal(a, want)
    np.testing.assert_allclose(opened.scores(), np.concatenate([written[k][1] for k in range(3)]),
                               rtol=1e-6)
    assert opened.dims == {"a.0": 3, "b": 2}
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["complete"] is True and len(manifest["shards"]) == 3
    assert (tmp_path / "s" / "a.0" / "shard-00002.npy").is_file()
    with pytest.raises(LayerError, match="closest: b"):
        opened.read("bb")


def test_one_shard_is_memory_mapped(tmp_path: Path) -> None:
    store = ActivationStore.create_or_resume(tmp_path / "s", settings(shard_size=10))
    fill(store, [0], np.random.default_rng(0))
    store.finalize()
    assert isinstance(ActivationStore.open(tmp_path / "s").read("b"), np.memmap)


def test_incomplete_store_is_refused_and_lists_missing_shards(tmp_path: Path) -> None:
    store = ActivationStore.create_or_resume(tmp_path / "s", settings())
    fill(store, [0, 2], np.random.default_rng(0))
    with pytest.raises(RunFolderError, match="incomplete"):
        ActivationStore.open(tmp_path / "s")
    with pytest.raises(RunFolderError, match=r"shards \[1\] are missing"):
        store.finalize()
    partial = ActivationStore.open(tmp_path / "s", allow_incomplete=True)
    assert partial.image_ids == ["i0", "i1", "i2", "i3", "i8", "i9"]


def test_broken_shard_is_not_counted(tmp_path: Path) -> None:
    store = ActivationStore.create_or_resume(tmp_path / "s", settings())
    fill(store, [0, 1], np.random.default_rng(0))
    assert store.has_shard(0) and store.has_shard(1) and not store.has_shard(2)
    (tmp_path / "s" / "b" / "shard-00001.npy").write_bytes(b"\x93NUMPY garbage")
    assert not store.has_shard(1)
    np.save(tmp_path / "s" / "b" / "shard-00000.npy", np.zeros((3, 2), np.float16))  # wrong rows
    assert not store.has_shard(0)


def test_other_settings_are_refused_naming_each_difference(tmp_path: Path) -> None:
    ActivationStore.create_or_resume(tmp_path / "s", settings())
    again = ActivationStore.create_or_resume(tmp_path / "s", settings())  # same: resume
    assert again.settings == settings()
    with pytest.raises(RunFolderError) as err:
        ActivationStore.create_or_resume(tmp_path / "s", settings(model_sha256="xyz",
                                                                  pooling="grid2"))
    assert "model (weights sha256) (store: abc, now: xyz)" in str(err.value)
    assert "pooling (store: avg, now: grid2)" in str(err.value)
    assert "layers" not in str(err.value)


def test_labels_are_saved_with_the_store(tmp_path: Path) -> None:
    store = ActivationStore.create_or_resume(tmp_path / "s", settings())
    assert store.labels() is None
    table = pd.DataFrame({"image_id": ["i0", "i1"], "tone": ["light", None]})
    store.write_labels(table)
    pd.testing.assert_frame_equal(store.labels(), table)


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="no activation store"):
        ActivationStore.open(tmp_path)
    (tmp_path / "manifest.json").write_text('{"tool": "gan-audit"}')
    with pytest.raises(RunFolderError, match="not an activation store manifest"):
        ActivationStore.open(tmp_path)
