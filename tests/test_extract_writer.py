"""Extraction's host side (issue 25): the store equals a plain-torch reference, shards are
gathered on the host after pooling on the device, and written on a background thread whose
errors surface as they were, with nothing half-written and at most two shards in memory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_load import no_hooks

from audit.errors import DataError, RunFolderError
from audit.extract import activations_in_memory, extract, pool_activation
from audit.hooks import capture
from audit.runfolder import TEMP_PREFIX
from audit.shardbuffer import ShardBuffer
from audit.store import ActivationStore
from audit.writer import BackgroundWriter


@pytest.fixture
def tiny(tiny_discriminator):
    from audit.load import InputSpec, LoadedModel, probe_layers, state_sha256

    model = LoadedModel(module=tiny_discriminator, spec="test:tiny",
                        sha256=state_sha256(tiny_discriminator), input=InputSpec(16, 1))
    model.layer_info = probe_layers(model)
    return model


def _reference(module: torch.nn.Module, layers: list[str], images: torch.Tensor,
               batch_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Plain torch: forward hooks keep each layer's output, averaged over its spatial
    positions, batch by batch in source order; float16 as stored; the logit as score."""
    seen: dict[str, torch.Tensor] = {}
    modules = dict(module.named_modules())
    handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out))
               for n in layers]
    acts: dict[str, list[np.ndarray]] = {n: [] for n in layers}
    scores = []
    try:
        with torch.no_grad():
            for b in range(0, len(images), batch_size):
                scores.append(module(images[b:b + batch_size])[:, 0].numpy())
                for n in layers:
                    acts[n].append(seen[n].mean(dim=(2, 3)).numpy())
    finally:
        for h in handles:
            h.remove()
    return ({n: np.concatenate(a).astype(np.float16) for n, a in acts.items()},
            np.concatenate(scores))


def _stray_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(TEMP_PREFIX)]


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("gan-audit-store")]


# ---------------------------------------------------------------- same values


@pytest.mark.parametrize("shard_size", [8, 32])
def test_store_equals_a_plain_torch_reference_bit_for_bit(tiny, tmp_path: Path, tiny_images,
                                                          shard_size: int) -> None:
    store = extract(tiny, ["1", "3"], tiny_images, out=tmp_path / "s", batch_size=4,
                    shard_size=shard_size, progress=False)
    acts, scores = _reference(tiny.module, ["1", "3"], tiny_images, 4)
    assert store.image_ids == [str(i) for i in range(32)]
    for layer in ("1", "3"):
        got = store.read(layer)
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, acts[layer])
    np.testing.assert_array_equal(store.scores(), scores)
    memory = activations_in_memory(tiny, tiny_images, layers=["1", "3"], batch_size=4)
    for layer in ("1", "3"):
        np.testing.assert_array_equal(memory.features[layer], acts[layer])
    np.testing.assert_array_equal(memory.scores, scores)
    assert not _writer_threads() and no_hooks(tiny.module)


# ---------------------------------------------------------------- pooling before the copy


@pytest.mark.parametrize("pooling", ["avg", "avgmax", "grid2", "flatten"])
def test_pooling_runs_where_the_tensor_is(pooling: str) -> None:
    """Pooling is torch on the activation's own device (here "meta": it holds no data, so
    any copy to the host or to numpy would fail): only N x D rows leave the device."""
    t = torch.empty(6, 40, 8, 8, device="meta")
    pooled = pool_activation(t, pooling, max_dim=512, seed=3)   # type: ignore[arg-type]
    assert pooled.device.type == "meta" and pooled.dtype == torch.float32
    assert pooled.shape == (6, {"avg": 40, "avgmax": 80, "grid2": 160, "flatten": 512}[pooling])


def test_hooks_hand_over_pooled_rows_only(tiny, tiny_images) -> None:
    """What a hook keeps is N x D (pooled inside the hook), never the N x C x H x W map."""
    with capture(tiny.module, ["1", "3"],
                 transform=lambda _n, t: pool_activation(t, "avg")) as cap:
        tiny.module(tiny_images[:5])
        kept = cap.take()
    assert {n: tuple(t.shape) for n, t in kept.items()} == {"1": (5, 4), "3": (5, 8)}


def test_shard_buffer_copies_each_batch_once_and_leaves_padding_out() -> None:
    g = torch.Generator().manual_seed(0)
    buf = ShardBuffer(("a", "b"), capacity=7, device="cpu")
    batches = [torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)]  # 2nd: 1 pad row
    buf.begin_batch([])
    buf.add({"a": batches[0], "b": 2 * batches[0]}, torch.arange(4.0), list("pqrs"), [0, 1, 2, 3])
    buf.begin_batch([])
    buf.add({"a": batches[1], "b": 2 * batches[1]}, torch.arange(4.0, 8), list("tuv"), [4, 5, 6])
    assert not buf.pinned and not buf.acts["a"].is_pinned()   # CPU: ordinary memory
    rows = buf.finish(stop=False)
    want = torch.cat([batches[0], batches[1][:3]]).numpy()
    np.testing.assert_array_equal(rows.acts["a"], want)
    np.testing.assert_array_equal(rows.acts["b"], 2 * want)
    np.testing.assert_array_equal(rows.scores, np.arange(7.0, dtype=np.float32))
    assert rows.ids == list("pqrstuv") and rows.rows == list(range(7)) and rows.skipped == []
    with pytest.raises(ValueError, match="8 rows for a shard of 7"):
        buf.add({"a": batches[0][:1], "b": batches[0][:1]}, torch.zeros(1), ["w"], [7])


def _planted_buffer() -> ShardBuffer:
    """Two batches: each with one unreadable image; batch 0 has two rows with NaN (rows 1, 2:
    layers a and b), batch 1 one row with inf (row 4)."""
    a = torch.zeros(6, 2)
    b = torch.zeros(6, 3)
    a[1, 0] = float("nan")
    b[2, 1] = float("nan")
    a[4, 1] = float("inf")
    buf = ShardBuffer(("a", "b"), capacity=8)
    for k, (lo, hi) in enumerate([(0, 3), (3, 6)]):
        buf.begin_batch([{"image_id": f"unreadable-{k}", "reason": "not an image"}])
        buf.add({"a": a[lo:hi], "b": b[lo:hi]}, torch.zeros(3), [f"i{j}" for j in range(lo, hi)],
                list(range(lo, hi)))
    return buf


def test_non_finite_rows_are_skipped_in_the_order_the_images_came() -> None:
    rows = _planted_buffer().finish(stop=False)
    assert rows.ids == ["i0", "i3", "i5"] and rows.rows == [0, 3, 5]
    assert rows.acts["a"].shape == (3, 2) and np.isfinite(rows.acts["b"]).all()
    assert [(s["image_id"], s["reason"][-3:]) for s in rows.skipped] == [
        ("unreadable-0", "age"), ("i1", "'a'"), ("i2", "'b'"),
        ("unreadable-1", "age"), ("i4", "'a'")]


def test_non_finite_rows_stop_the_run_naming_the_image_and_its_batch() -> None:
    with pytest.raises(DataError, match=r"^i1: non-finite activations .* at layer 'a' \(and 1 "
                                        r"more image\(s\) in this batch\)\..*on_bad_image: skip"):
        _planted_buffer().finish(stop=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_buffers_are_pinned_and_hold_the_device_values() -> None:  # pragma: no cover
    x = torch.randn(5, 3, device="cuda")
    buf = ShardBuffer(("a",), capacity=5, device="cuda")
    buf.begin_batch([])
    buf.add({"a": x}, x[:, 0], list("abcde"), list(range(5)))
    assert buf.acts["a"].is_pinned()
    np.testing.assert_array_equal(buf.finish(stop=False).acts["a"], x.cpu().numpy())


# ---------------------------------------------------------------- the writer thread


def test_the_writer_holds_one_job_and_a_hand_over_waits_for_it() -> None:
    release = threading.Event()
    done: list[int] = []

    def job(k: int) -> None:
        release.wait(5)
        done.append(k)

    with BackgroundWriter(job) as write:
        write(0)                                    # returns at once: the job runs behind
        second = threading.Thread(target=write, args=(1,))
        second.start()
        second.join(0.2)
        assert second.is_alive() and done == []    # waits while job 0 holds the writer
        release.set()
        second.join(5)
        assert not second.is_alive()
    assert done == [0, 1]


def test_at_most_two_shards_are_in_memory_with_a_slow_disk(tiny, tmp_path: Path, tiny_images,
                                                            monkeypatch) -> None:
    """Finished shards not yet written (the one being written, the one waiting to be handed
    over) never exceed two, however slow the writes: the queue is bounded."""
    finished, written, most = [0], [0], [0]
    real_finish, real_write = ShardBuffer.finish, ActivationStore.write_shard

    def finish(self, **kw):
        rows = real_finish(self, **kw)
        finished[0] += 1
        most[0] = max(most[0], finished[0] - written[0])
        return rows

    def slow_write(self, index, **kw):
        time.sleep(0.05)
        real_write(self, index, **kw)
        written[0] += 1

    monkeypatch.setattr(ShardBuffer, "finish", finish)
    monkeypatch.setattr(ActivationStore, "write_shard", slow_write)
    store = extract(tiny, ["1"], tiny_images, out=tmp_path / "s", batch_size=2, shard_size=2,
                    progress=False)
    assert finished[0] == written[0] == 16 and len(store.image_ids) == 32
    assert 1 <= most[0] <= 2


def test_a_full_disk_in_the_writer_is_the_same_clear_error_and_nothing_half_written(
        tiny, tmp_path: Path, tiny_images, monkeypatch) -> None:
    """np.save fails (no space) in the middle of shard 1, after one of its layer files: the
    extraction stops with the disk-full message, shard 1 has no meta (so it does not count),
    no temporary file is left, no writer thread survives; a rerun completes the store."""
    whole = extract(tiny, ["1", "3"], tiny_images, out=tmp_path / "whole", batch_size=4,
                    shard_size=8, progress=False)
    real_save = np.save
    calls = [0]

    def save(file, arr, *args, **kw):
        calls[0] += 1
        if calls[0] == 5:          # shard 0: 3 files; shard 1: layer "1", then layer "3"
            raise OSError(28, "No space left on device")
        return real_save(file, arr, *args, **kw)

    monkeypatch.setattr(np, "save", save)
    with pytest.raises(RunFolderError, match=r"the disk is full .* nothing was half-written"):
        extract(tiny, ["1", "3"], tiny_images, out=tmp_path / "part", batch_size=4,
                shard_size=8, progress=False)
    part = ActivationStore.open(tmp_path / "part", allow_incomplete=True)
    assert [part.has_shard(k) for k in range(4)] == [True, False, False, False]
    assert _stray_files(tmp_path / "part") == [] and not _writer_threads()
    assert no_hooks(tiny.module)
    monkeypatch.setattr(np, "save", real_save)
    resumed = extract(tiny, ["1", "3"], tiny_images, out=tmp_path / "part", batch_size=4,
                      shard_size=8, progress=False)
    for layer in ("1", "3"):
        np.testing.assert_array_equal(resumed.read(layer), whole.read(layer))
    np.testing.assert_array_equal(resumed.scores(), whole.scores())


def test_a_failing_forward_pass_lets_the_write_in_hand_finish(tiny, tmp_path: Path, tiny_images,
                                                              monkeypatch) -> None:
    """The model fails during shard 2 while shard 1 is still being written: the model's
    error is raised, after shard 1's write finished (complete, with its meta); nothing is
    written afterwards and no writer thread is left."""
    import audit.extract

    real_forward, real_write = audit.extract._forward, ActivationStore.write_shard
    calls = [0]

    def forward(model, x, c, **kw):
        calls[0] += 1
        if calls[0] == 5:                    # the first batch of shard 2 (2 batches a shard)
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_forward(model, x, c, **kw)

    def slow_write(self, index, **kw):
        time.sleep(0.2)
        real_write(self, index, **kw)

    monkeypatch.setattr(audit.extract, "_forward", forward)
    monkeypatch.setattr(ActivationStore, "write_shard", slow_write)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        extract(tiny, ["1"], tiny_images, out=tmp_path / "s", batch_size=4, shard_size=8,
                progress=False)
    assert not _writer_threads()
    part = ActivationStore.open(tmp_path / "s", allow_incomplete=True)
    assert [part.has_shard(k) for k in range(4)] == [True, True, False, False]
    assert _stray_files(tmp_path / "s") == []
