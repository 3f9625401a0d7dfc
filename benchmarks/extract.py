"""Extraction speed and memory: the bare forward pass vs our extraction, side by side.

(a) the bare forward pass of the discriminator over all images in batches (the floor);
(b) ``audit.extract.extract`` of 4 layers with avg pooling, writing the float16 store.
Both read the same synthetic images (made per batch from per-image seeds, so the images
themselves take no memory). Peak RSS of (b) is measured in a fresh process at two image
counts: it must not grow with the number of images.

Models: a DCGAN-like discriminator at 32 x 32 (the shape of the demo's, random weights, so
the benchmark does not need the demo weights) and, without --quick, a StyleGAN2-like one at
64 x 64 (blocks returning tuples, a minibatch-stddev head).

    python benchmarks/extract.py --quick        # under 60 s
    python benchmarks/extract.py                # 10k images, batch 256; RSS at 10k and 50k

The last line is ``overhead_ratio=<b/a>`` (the worst model); goal: at most 1.10.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from audit.config import DiscriminatorConfig
from audit.extract import extract
from audit.images import Batch, ImageSource
from audit.load import LoadedModel, load_discriminator

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


def bare_forward(model: LoadedModel, images: SyntheticImages, batch_size: int) -> float:
    """Seconds for (a): batches from the same source, forward pass only."""
    start = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, len(images), batch_size):
            batch = images.get_batch(range(b, min(len(images), b + batch_size)))
            model.scores(model.forward(batch.images))
    return time.perf_counter() - start


def our_extraction(model: LoadedModel, layers: list[str], images: SyntheticImages,
                   batch_size: int, out: Path) -> float:
    """Seconds for (b): extract 4 layers with avg pooling into a fresh store."""
    start = time.perf_counter()
    extract(model, layers, images, out=out, batch_size=batch_size, progress=False)
    return time.perf_counter() - start


def peak_rss_child(name: str, n: int, batch_size: int) -> float:
    """Peak RSS (MiB) of a fresh process that extracts ``n`` images."""
    code = (f"import sys; sys.argv = ['x']; sys.path.insert(0, {str(Path(__file__).parent)!r});"
            f"import extract as b, tempfile, resource, torch; torch.set_num_threads(1);"
            f"m = b.load({name!r});"
            f"b.our_extraction(m, b.MODELS[{name!r}][1], b._images_for(m, {n}), {batch_size},"
            f" b.Path(tempfile.mkdtemp()) / 's');"
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under 60 s")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=None,
                        help="only these models (default: all; --quick: dcgan32)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = 2000 if args.quick else 10_000
    rss_counts = (1000, 5000) if args.quick else (10_000, 50_000)
    names = args.models or (["dcgan32"] if args.quick else list(MODELS))
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            model = load(name)
            layers = MODELS[name][1]
            images = _images_for(model, n)
            bare_forward(model, _images_for(model, args.batch_size), args.batch_size)  # warm up
            a, b = [], []
            for rep in range(2):  # interleaved; the best of each
                a.append(bare_forward(model, images, args.batch_size))
                b.append(our_extraction(model, layers, images, args.batch_size,
                                        Path(tmp) / f"{name}-{rep}"))
            ratios[name] = min(b) / min(a)
            print(f"{name}: {n} images, batch {args.batch_size}, layers {layers}")
            print(f"  (a) bare forward   {min(a):7.2f} s  {n / min(a):8.0f} img/s")
            print(f"  (b) our extraction {min(b):7.2f} s  {n / min(b):8.0f} img/s")
            print(f"  overhead {ratios[name]:.3f}")
        for name in names:
            rss = {c: peak_rss_child(name, c, args.batch_size) for c in rss_counts}
            print(f"{name}: peak RSS " + ", ".join(f"{c} images {v:.0f} MiB"
                                                    for c, v in rss.items())
                  + f" (growth {rss[rss_counts[1]] - rss[rss_counts[0]]:+.0f} MiB)")
    print(json.dumps({"overhead": ratios}))
    print(f"overhead_ratio={max(ratios.values()):.3f}")


if __name__ == "__main__":
    main()
