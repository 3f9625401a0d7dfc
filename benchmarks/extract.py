"""Extraction speed and memory: the bare forward pass vs our extraction, side by side.

(a) the bare forward pass of the discriminator over all images in batches (the floor);
(b) ``audit.extract.extract`` of 4 layers with avg pooling, writing the float16 store.
Both read the same synthetic images (each batch drawn from a generator seeded by its first
image index, so the images themselves take no memory). The sides take turns, three times
(a, b, a, b, a, b), and each keeps its best: a repetition that another process slowed down
is dropped, and both sides see the machine in the same state. Every model's ratio b/a is
printed; the last line is ``overhead_ratio=<the worst model's>``; goal: at most 1.05.

Same result: the store written by (b) is compared with a reference computed independently
with plain torch: forward hooks on the same layers, the batches the store's manifest
declares (consecutive, or for a batch-dependent model a permutation seeded by (order seed,
shard start) within each shard), each output averaged over its spatial positions, float16
as the store keeps values (float32 past 65504); the image ids, every layer's values and the
scores must be equal, bit for bit, or the benchmark fails (exit 1). Speed is never bought
with a different result.

Memory: the peak RSS of (b) in a fresh process at two image counts must stay flat (growth
over 64 MiB fails the benchmark): shards are written as they fill, at most two in memory.

Models and image counts (the full run takes about 8 minutes on a quiet 2-core machine):

- ``dcgan32``: the demo discriminator's architecture at 32 x 32 (random weights, so the
  benchmark does not need the demo weights), 10,000 images: 40 batches of 256 in two shards
  (8,192 + 1,808), so writing the first overlaps the second's forward passes. Its forward
  pass takes about 0.1 ms per image: every host-side cost of extraction shows here. RSS at
  10,000 and 50,000 images.
- ``stylegan2-64``: a StyleGAN2-like D at 64 x 64 (blocks returning tuples, a
  minibatch-stddev head: batch-dependent, so batches in the seeded order), 2,048 images: 8
  full batches (a multiple of the batch size needs no padding rows). Its forward pass takes
  about 24 ms per image (237 s per side at 10,000 images), so host-side costs vanish at any
  count (0.999 at 10,000 on the issue's machine); 2,048 keeps a side under a minute and
  the run near 8 minutes, three repetitions a side plus the reference. RSS at 512 and 2,048.

``--quick`` (``make bench``): dcgan32 at 2,000 images, RSS at 1,000 and 5,000; under a minute.

    python benchmarks/extract.py --quick
    python benchmarks/extract.py                      # both models, about 8 minutes
    python benchmarks/extract.py --models dcgan32     # one model at its full count
    python benchmarks/extract.py --device cuda        # both sides on the GPU

GPU: extraction pools on the device (in the forward hooks) and copies only the pooled rows,
into pinned host buffers with non-blocking copies, waiting for the device once per shard
(:mod:`audit.shardbuffer`). That path has NOT run on a GPU yet: no GPU machine was
available when it was written; ``--device cuda`` measures it (and checks the store against
the reference there) when one is.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audit.batches import is_batch_dependent
from audit.config import DiscriminatorConfig
from audit.extract import extract
from audit.images import Batch, ImageSource
from audit.load import LoadedModel, load_discriminator
from audit.store import ActivationStore

# ---------------------------------------------------------------- models


def dcgan_d() -> nn.Module:
    """The demo discriminator's architecture (1 x 32 x 32 -> 1), random weights."""
    torch.manual_seed(0)
    shapes = [(1, 32, 4, 2, 1), (32, 64, 4, 2, 1), (64, 128, 4, 2, 1), (128, 128, 3, 1, 1)]
    blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(i, o, k, s, p), nn.LeakyReLU(0.2))
                             for i, o, k, s, p in shapes])
    return nn.Sequential(blocks, nn.Flatten(), nn.Linear(128 * 16, 1))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.conv1 = nn.Conv2d(cin, cout, 3, 2, 1)
        self.skip = nn.Conv2d(cin, cout, 1, 2, 0, bias=False)

    def forward(self, x: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv1(F.leaky_relu(self.conv0(x), 0.2))
        return (F.leaky_relu(y, 0.2) + self.skip(x)) * 0.7071, F.avg_pool2d(img, 2)


class _MinibatchStd(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        g = min(4, n)
        y = x.reshape(g, -1, *x.shape[1:])
        std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))
        std = std.repeat(g).reshape(n, 1, 1, 1).expand(n, 1, *x.shape[2:])
        return torch.cat([x, std], 1)


class StyleGAN2LikeD(nn.Module):
    """3 x 64 x 64 -> 1; blocks b64 .. b8 return (x, img); b4 has minibatch stddev."""

    img_resolution = 64
    img_channels = 3

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        torch.manual_seed(0)
        w = [width, 2 * width, 4 * width, 4 * width, 4 * width]
        self.fromrgb = nn.Conv2d(3, w[0], 1)
        self.b64, self.b32 = _Block(w[0], w[1]), _Block(w[1], w[2])
        self.b16, self.b8 = _Block(w[2], w[3]), _Block(w[3], w[4])
        self.mbstd = _MinibatchStd()
        self.conv = nn.Conv2d(w[4] + 1, w[4], 3, 1, 1)
        self.fc = nn.Linear(w[4] * 16, w[4])
        self.out = nn.Linear(w[4], 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.fromrgb(img), 0.2)
        for block in (self.b64, self.b32, self.b16, self.b8):
            x, img = block(x, img)
        x = F.leaky_relu(self.conv(self.mbstd(x)), 0.2)
        return self.out(F.leaky_relu(self.fc(x.flatten(1)), 0.2))


MODELS = {"dcgan32": (dcgan_d, ["0.0.1", "0.1.1", "0.2.1", "0.3.1"]),
          "stylegan2-64": (StyleGAN2LikeD, ["b64", "b32", "b16", "b8"])}


def load(name: str) -> LoadedModel:
    return load_discriminator(DiscriminatorConfig(spec=f"python:{Path(__file__).resolve()}:"
                                                       f"{MODELS[name][0].__name__}"))


# ---------------------------------------------------------------- images


class SyntheticImages(ImageSource):
    """``n`` images made per batch from per-image seeds: nothing is held in memory."""

    def __init__(self, n: int, channels: int, size: int) -> None:
        super().__init__(f"synthetic:{n}x{channels}x{size}", [str(i) for i in range(n)],
                         target=None)
        self.shape = (channels, size, size)
        self._content = "synthetic-v1"

    def get_batch(self, indices) -> Batch:
        idx = list(indices)
        g = torch.Generator().manual_seed(idx[0])
        x = torch.rand(len(idx), *self.shape, generator=g) * 2 - 1
        return Batch(x, [self.image_ids[i] for i in idx], indices=idx)


def _images_for(model: LoadedModel, n: int) -> SyntheticImages:
    return SyntheticImages(n, model.input.channels or 1, model.input.image_size or 32)


# ---------------------------------------------------------------- measurements

#: images per model: (timed, RSS at two counts) in a full run; --quick runs dcgan32 alone
COUNTS = {"dcgan32": (10_000, (10_000, 50_000)), "stylegan2-64": (2_048, (512, 2_048))}
QUICK = (2_000, (1_000, 5_000))
RSS_GROWTH_LIMIT_MIB = 64


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def bare_forward(model: LoadedModel, images: SyntheticImages, batch_size: int, *,
                 device: str = "cpu") -> float:
    """Seconds for (a): batches from the same source, forward pass only."""
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, len(images), batch_size):
            batch = images.get_batch(range(b, min(len(images), b + batch_size)))
            model.scores(model.forward(batch.images.to(device)))
    _sync(device)
    return time.perf_counter() - start


def our_extraction(model: LoadedModel, layers: list[str], images: SyntheticImages,
                   batch_size: int, out: Path, *, device: str = "cpu") -> float:
    """Seconds for (b): extract 4 layers with avg pooling into a fresh store."""
    start = time.perf_counter()
    extract(model, layers, images, out=out, batch_size=batch_size, progress=False,
            device=device)
    return time.perf_counter() - start


def reference(model: LoadedModel, layers: list[str], images: SyntheticImages, *,
              batch_size: int, shard_size: int, order_seed: int | None, device: str = "cpu"
              ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The store's content computed independently: plain forward hooks keep each layer's
    output (the first tensor of a tuple), averaged over spatial positions in float32, for
    the batches the manifest declares; values as stored (float16, float32 past its range)
    and the N x 1 output as the score (float32)."""
    n = len(images)
    module = model.module
    seen: dict[str, torch.Tensor] = {}
    modules = dict(module.named_modules())

    def keep(name: str):
        def hook(_module: nn.Module, _inputs: object, out: object) -> None:
            seen.setdefault(name, out[0] if isinstance(out, tuple) else out)
        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in layers]
    acts: dict[str, np.ndarray] = {}
    scores = np.zeros(n, np.float32)
    try:
        with torch.inference_mode():
            for start in range(0, n, shard_size):
                order = np.arange(start, min(n, start + shard_size))
                if order_seed is not None:
                    order = np.random.default_rng([order_seed, start]).permutation(order)
                for b in range(0, len(order), batch_size):
                    rows = order[b:b + batch_size].tolist()
                    seen.clear()
                    out = module(images.get_batch(rows).images.to(device))
                    scores[rows] = out.reshape(len(rows)).float().cpu().numpy()
                    for name in layers:
                        pooled = seen[name].float().mean(dim=(2, 3)).cpu().numpy()
                        acts.setdefault(name, np.zeros((n, pooled.shape[1]), np.float32))
                        acts[name][rows] = pooled
    finally:
        for h in handles:
            h.remove()
    as_stored = {name: a.astype(np.float16 if np.abs(a).max() <= 65504 else np.float32)
                 for name, a in acts.items()}
    return as_stored, scores


def check_store(model: LoadedModel, layers: list[str], images: SyntheticImages,
                batch_size: int, path: Path, *, device: str = "cpu") -> None:
    """Exit 1 unless the store at ``path`` equals :func:`reference`, bit for bit."""
    store = ActivationStore.open(path)
    s = store.settings
    acts, scores = reference(model, layers, images, batch_size=s.batch_size,
                             shard_size=s.shard_size, order_seed=s.order_seed, device=device)
    problems = [] if store.image_ids == images.image_ids else ["image ids differ"]
    for name in layers:
        got = store.read(name)
        if got.dtype != acts[name].dtype or not np.array_equal(got, acts[name]):
            diff = np.abs(np.asarray(got, np.float64) - acts[name]).max() \
                if got.shape == acts[name].shape else f"shape {got.shape} != {acts[name].shape}"
            problems.append(f"layer {name}: {got.dtype} vs {acts[name].dtype}, max |diff| {diff}")
    if not np.array_equal(store.scores(), scores):
        problems.append(f"scores: max |diff| {np.abs(store.scores() - scores).max()}")
    if problems:
        sys.exit(f"{path}: the store differs from the reference computation: "
                 + "; ".join(problems))
    print(f"  store equals the reference (ids, {len(layers)} layers, scores: bit for bit)")


def peak_rss_child(name: str, n: int, batch_size: int) -> float:
    """Peak RSS (MiB) of a fresh process that extracts ``n`` images."""
    code = (f"import sys; sys.argv = ['x']; sys.path.insert(0, {str(Path(__file__).parent)!r});"
            f"import extract as b, tempfile, torch; torch.set_num_threads(1);"
            f"m = b.load({name!r});"
            f"b.our_extraction(m, b.MODELS[{name!r}][1], b._images_for(m, {n}), {batch_size},"
            f" b.Path(tempfile.mkdtemp()) / 's');"
            f"import _memory; print(_memory.own_peak_rss_mib())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(res.stdout.strip().splitlines()[-1])


def measure(name: str, n: int, *, batch_size: int, repeats: int, tmp: Path,
            device: str) -> float:
    """The interleaved repetitions of one model, then the store check; returns b / a."""
    model = load(name)
    if is_batch_dependent(model) and n % batch_size:
        sys.exit(f"{name}: its output depends on the batch, so the reference needs whole "
                 f"batches: give a multiple of the batch size ({batch_size}), not {n} images.")
    model.module.to(device)
    model.device = device
    layers = MODELS[name][1]
    images = _images_for(model, n)
    warm = _images_for(model, batch_size)                     # first calls, both sides
    bare_forward(model, warm, batch_size, device=device)
    our_extraction(model, layers, warm, batch_size, tmp / f"{name}-warm", device=device)
    a, b = [], []
    for rep in range(repeats):
        a.append(bare_forward(model, images, batch_size, device=device))
        b.append(our_extraction(model, layers, images, batch_size, tmp / f"{name}-{rep}",
                                device=device))
    print(f"{name}: {n} images, batch {batch_size}, layers {layers}, device {device}")
    print(f"  (a) bare forward   {min(a):7.2f} s  {n / min(a):8.0f} img/s  "
          f"(runs: {', '.join(f'{t:.2f}' for t in a)})")
    print(f"  (b) our extraction {min(b):7.2f} s  {n / min(b):8.0f} img/s  "
          f"(runs: {', '.join(f'{t:.2f}' for t in b)})")
    print(f"  overhead {min(b) / min(a):.3f}")
    check_store(model, layers, images, batch_size, tmp / f"{name}-{repeats - 1}",
                device=device)
    return min(b) / min(a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="dcgan32 at 2,000 images, < 60 s")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each side")
    parser.add_argument("--images", type=int, default=None, help="images per model (timed)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=None,
                        help="only these models (default: all; --quick: dcgan32)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.models or (["dcgan32"] if args.quick else list(MODELS))
    counts = {name: QUICK if args.quick else COUNTS[name] for name in names}
    ratios, growth = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            ratios[name] = measure(name, args.images or counts[name][0],
                                   batch_size=args.batch_size, repeats=args.repeats,
                                   tmp=Path(tmp), device=args.device)
        for name in names:
            lo, hi = counts[name][1]
            rss = {c: peak_rss_child(name, c, args.batch_size) for c in (lo, hi)}
            growth[name] = rss[hi] - rss[lo]
            print(f"{name}: peak RSS {lo} images {rss[lo]:.0f} MiB, {hi} images {rss[hi]:.0f} "
                  f"MiB (growth {growth[name]:+.0f} MiB)")
    print(json.dumps({"overhead": ratios, "rss_growth_mib": growth,
                      "images": {n: args.images or counts[n][0] for n in names}}))
    for name in names:
        print(f"{name}: overhead {ratios[name]:.3f}")
    if max(growth.values()) > RSS_GROWTH_LIMIT_MIB:
        sys.exit(f"peak RSS grows with the number of images (more than "
                 f"{RSS_GROWTH_LIMIT_MIB} MiB): {growth}")
    print(f"overhead_ratio={max(ratios.values()):.3f}")


if __name__ == "__main__":
    main()
