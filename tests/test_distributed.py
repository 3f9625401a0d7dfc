"""Extraction under torchrun: rank helpers, the split of shards, and real 2-process jobs
(gloo over loopback, one thread each) whose stores must equal a single-process run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_load import NETS

from audit import distributed
from audit.distributed import (
    DistributedError,
    RankInfo,
    backend_for,
    device_for_rank,
    rank_from_env,
    split_evenly,
)
from audit.store import ActivationStore

STORES = ("paired", "real", "generated")

# ---------------------------------------------------------------- environment and devices


def test_rank_from_torchrun_variables() -> None:
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
           "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    info = rank_from_env(env)
    assert info == RankInfo(rank=5, world_size=8, local_rank=1, local_world_size=4)
    assert info.distributed and not info.is_main
    single = rank_from_env({})
    assert single == RankInfo() and single.is_main and not single.distributed


@pytest.mark.parametrize(("env", "message"), [
    ({"RANK": "2", "WORLD_SIZE": "2"}, r"RANK=2 and WORLD_SIZE=2 do not describe a job"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, r"RANK='x' is not an integer.*torchrun"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "2"},
     r"LOCAL_RANK=3 and LOCAL_WORLD_SIZE=2"),
])
def test_bad_rank_variables_are_explained(env: dict[str, str], message: str) -> None:
    with pytest.raises(DistributedError, match=message):
        rank_from_env(env)


def test_backend_and_device_per_rank() -> None:
    assert backend_for("cpu") == "gloo" and backend_for("mps") == "gloo"
    assert backend_for("cuda") == "nccl" and backend_for("cuda:1") == "nccl"
    rank3 = RankInfo(rank=7, world_size=8, local_rank=3, local_world_size=4)
    assert device_for_rank("cuda", rank3) == "cuda:3"
    assert device_for_rank("cpu", rank3) == "cpu"
    assert device_for_rank("cuda:0", rank3) == "cuda:0"  # explicit: kept
    assert device_for_rank("cuda", RankInfo()) == "cuda"  # one process: unchanged
    assert device_for_rank("cuda") == "cuda"  # no process group here


def test_outside_torchrun_nothing_is_joined() -> None:
    with distributed.process_group("cpu", environ={}) as info:
        assert info == RankInfo() and distributed.current() is None
        assert distributed.all_gather(3) == [3]
        assert distributed.on_main(lambda: 4, what="x") == 4
        with pytest.raises(KeyError):  # one process: the error itself, unchanged
            distributed.all_succeed(lambda: {}["k"], what="x")
    assert not torch.distributed.is_initialized()


def test_a_job_without_a_master_address_says_how_to_start_it() -> None:
    group = distributed.process_group("cpu", environ={"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(DistributedError, match=r"MASTER_ADDR and MASTER_PORT are not set.*"
                                               r"torchrun --nproc-per-node"), group:
        pass


@given(n=st.integers(0, 60), world=st.integers(1, 9))
def test_split_is_disjoint_ordered_and_even(n: int, world: int) -> None:
    items = list(range(100, 100 + n))
    parts = [split_evenly(items, r, world) for r in range(world)]
    assert [i for p in parts for i in p] == items  # every item once, in order: no padding
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert parts == [split_evenly(items, r, world) for r in range(world)]  # deterministic


def test_split_rejects_a_rank_outside_the_world() -> None:
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        split_evenly([1, 2, 3], 2, 2)


def test_default_shard_size_gives_every_rank_work_and_resumes_any_store(tmp_path: Path) -> None:
    from audit.extract import DEFAULT_SHARD_IMAGES, _shard_images
    from audit.store import StoreSettings

    assert _shard_images(tmp_path, None, 64, n_images=10**6, world=1) == 8192
    assert _shard_images(tmp_path, None, 4, n_images=10, world=2) == 8  # ceil(5 / 4) batches
    assert _shard_images(tmp_path, None, 4, n_images=10**6, world=2) == DEFAULT_SHARD_IMAGES
    assert _shard_images(tmp_path, 10, 4, n_images=100, world=2) == 12  # given: rounded up
    settings = StoreSettings(model_sha256="m", layers=("a",), pooling="avg", max_dim=8,
                             batch_size=4, shard_size=8, n_images=10, source_fingerprint="f")
    ActivationStore.create_or_resume(tmp_path / "s", settings)
    # a store begun by 2 processes is resumed by 1 (or 3) with its own shard size
    assert _shard_images(tmp_path / "s", None, 4, n_images=10, world=1) == 8
    assert _shard_images(tmp_path / "s", None, 4, n_images=10, world=3) == 8


# ---------------------------------------------------------------- real 2-process jobs


def _png(path: Path, value: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, size=(16, 16), dtype=np.uint8)).save(path)


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """A config: 12 paired (npz), 10 real (PNG files, on_bad_image: stop), 6 generated
    (sampled, saved as PNGs); batch size 2, so each store has one shard per rank."""
    import yaml

    (tmp_path / "nets.py").write_text(NETS)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "paired.npz", images=rng.integers(0, 256, (12, 16, 16), dtype=np.uint8),
             tone=np.array(["light", "dark"] * 6))
    (tmp_path / "real").mkdir()
    for i in range(10):
        _png(tmp_path / "real" / f"img{i:02d}.png", i)
    cs = {"name": "tones", "concepts": [{"name": "tone", "kind": "binary",
                                          "groups": ["light", "dark"], "protected": True,
                                          "source": {"type": "column", "column": "tone"}}]}
    (tmp_path / "tones.yaml").write_text(yaml.safe_dump(cs))
    cfg = {"concept_set": "tones.yaml", "device": "cpu",
           "discriminator": {"spec": f"python:{tmp_path / 'nets.py'}:PlainD",
                             "layers": ["act1", "act2"], "batch_size": 2},
           "generator": {"spec": f"python:{tmp_path / 'nets.py'}:TinyG", "n": 6, "seed": 3,
                         "batch_size": 2, "save_png": True},
           "paired": {"source": "npz:paired.npz"},
           "real": {"source": f"folder:{tmp_path / 'real'}", "on_bad_image": "stop"},
           "out": "run"}
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _torchrun(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    cmd, env = distributed.local_command(["audit", "extract", str(config), "--out", str(out)],
                                         nproc=2)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                          cwd=config.parent)


def _single(config: Path, out: Path) -> dict[str, ActivationStore]:
    from audit.config import load_config
    from audit.extract import extract_from_config

    return extract_from_config(load_config(config), out=out, device="cpu", progress=False)


def _assert_same_stores(run: Path, reference: dict[str, ActivationStore]) -> None:
    for name, ref in reference.items():
        got = ActivationStore.open(run / "activations" / name)
        assert got.image_ids == ref.image_ids
        assert got.skipped == ref.skipped
        for layer in ref.layers:  # float32 on CPU, stored float16: bit for bit
            a, b = got.read(layer), ref.read(layer)
            assert a.dtype == b.dtype == np.float16 and a.tobytes() == b.tobytes()
        assert got.scores().tobytes() == ref.scores().tobytes()
        assert got.labels().equals(ref.labels())
    pngs = sorted(p.name for p in (run / "generated").glob("*.png"))
    assert pngs == [f"gen-3-{i}.png" for i in range(6)]
    ref_dir = reference["generated"].path.parent.parent / "generated"
    for name in pngs:  # the same generated images, whichever rank sampled them
        assert (run / "generated" / name).read_bytes() == (ref_dir / name).read_bytes()


def test_two_ranks_write_the_same_stores_as_one_process(job: Path) -> None:
    reference = _single(job, job.parent / "single")
    res = _torchrun(job, job.parent / "run")
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same_stores(job.parent / "run", reference)
    for name in STORES:  # both ranks wrote a shard of every store
        manifest = ActivationStore.open(job.parent / "run" / "activations" / name).info
        assert manifest["complete"] is True and len(manifest["shards"]) == 2
        assert all(s["rows"] > 0 for s in manifest["shards"])
    assert res.stdout.count("paired: 12 images") == 1  # only rank 0 prints


def test_a_failing_rank_fails_the_job_and_a_rerun_completes_it(job: Path) -> None:
    bad = job.parent / "real" / "img08.png"  # real: shards [0, 6) rank 0, [6, 10) rank 1
    good = bad.read_bytes()
    bad.write_bytes(b"\0" * len(good))  # same size: the source fingerprint does not change
    run = job.parent / "run"
    res = _torchrun(job, run)
    assert res.returncode != 0
    assert res.stderr.count("error: rank 1 of 2 failed while extracting the shards of") == 1
    assert "img08.png: cannot read the image" in res.stderr
    real = ActivationStore.open(run / "activations" / "real", allow_incomplete=True)
    assert real.info["complete"] is False
    with pytest.raises(Exception, match="incomplete"):
        ActivationStore.open(run / "activations" / "real")
    assert real.has_shard(0) and not real.has_shard(1)  # rank 0 finished its shard
    assert not (run / "activations" / "generated" / "manifest.json").exists()
    kept = [(run / "activations" / "real" / f / "shard-00000.npy").stat().st_ino
            for f in ("act1", "act2", "_scores")]

    bad.write_bytes(good)  # rerun, here with one process: it resumes the 2-rank stores
    _single(job, run)
    assert kept == [(run / "activations" / "real" / f / "shard-00000.npy").stat().st_ino
                    for f in ("act1", "act2", "_scores")]  # the finished shard was not redone
    assert len(ActivationStore.open(run / "activations" / "real").info["shards"]) == 2
    _assert_same_stores(run, _single(job, job.parent / "single"))


def _rank_with_other_images(rank: int, port: int, out: str) -> None:
    """One rank of a job where rank 1 was given other images than rank 0."""
    from audit.extract import extract
    from audit.load import InputSpec, LoadedModel, state_sha256

    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()).eval()
    model = LoadedModel(module=module, spec="test:conv", sha256=state_sha256(module),
                        input=InputSpec(8, 1))
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(rank))
    env = {"RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    with distributed.process_group("cpu", environ=env):
        try:
            extract(model, ["1"], images, out=Path(out) / "s", batch_size=2, progress=False)
        except DistributedError as exc:
            (Path(out) / f"rank{rank}.txt").write_text(str(exc))


def test_ranks_that_see_other_images_are_refused_before_anything_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, env = distributed.local_command([], nproc=2)
    for key in ("OMP_NUM_THREADS", "GLOO_SOCKET_IFNAME"):
        if key in env:
            monkeypatch.setenv(key, env[key])
    torch.multiprocessing.spawn(_rank_with_other_images, nprocs=2, join=True,
                                args=(distributed.free_port(), str(tmp_path)))
    messages = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert messages[0] == messages[1]  # every rank stops, with the same message
    assert "rank 1 would extract something else than rank 0" in messages[0]
    assert "images (source fingerprint) (rank 0:" in messages[0]
    assert "filesystem shared by all machines" in messages[0]
    assert not (tmp_path / "s").exists()


def test_run_under_torchrun_extracts_on_every_rank_then_finishes_on_rank_0(tmp_path: Path
                                                                          ) -> None:
    import json

    import yaml

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "name": "ddp", "concept_set": "digits_tone",
        "discriminator": {"spec": "builtin:digits-dcgan", "batch_size": 50},
        "generator": {"spec": "builtin:digits-dcgan", "n": 100, "seed": 0, "batch_size": 50},
        "paired": {"source": "builtin:digits-paired", "n": 200},
        "real": {"source": "builtin:digits-audit", "n": 100},
        "decoders": {"max_epochs": 8},  # rank 0's light stages: what is tested is who runs what
        "measure": {"n_boot": 50}, "report": {"pdf": False, "samples_per_group": 2},
        "out": str(tmp_path / "run")}))
    cmd, env = distributed.local_command(["audit", "run", str(config)], nproc=2)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("verdicts:") == 1  # only rank 0 runs the light stages
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert all(s["done"] for s in manifest["stages"].values())
    for name in STORES:  # both ranks wrote shards
        shards = ActivationStore.open(tmp_path / "run" / "activations" / name).info["shards"]
        assert len(shards) == 2
    assert (tmp_path / "run" / "report.html").is_file()
