"""Extraction in one process vs ``torchrun --nproc-per-node 2``, one CPU thread per process.

Both run the real command (``python -m audit extract CONFIG``) on the same config: the demo
discriminator's architecture (``python:audit.demo.models:DigitsDiscriminator``, seeded
random weights saved to a file, 4 layers, avg pooling, batch 64), paired and real images
from NPZ files, and generated images sampled from the demo generator's architecture (also
seeded random weights). The wall time of each whole command is measured (start-up, model
loading and probing included; torchrun adds its own agent process, which imports torch
too), and once more on 192 images to estimate the start-up alone, which gives the speedup
of the extraction itself. The two run folders are compared: the same image ids, and every
stored float16 activation and float32 score bit for bit.

    python benchmarks/distributed.py --quick    # under 60 s
    python benchmarks/distributed.py            # 4x the images (80k)

The last line is ``equal=<true|false> speedup=<single / torchrun, end to end>
extraction_speedup=<the same, start-up subtracted>``; on 2 free cores expect up to about 2
for the extraction (the end-to-end figure approaches it as the image count grows).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from audit import distributed
from audit.store import ActivationStore

STORES = ("paired", "real", "generated")


def write_job(folder: Path, *, n_paired: int, n_real: int, n_generated: int) -> Path:
    """Weights, images, a concept set and the config, in ``folder``; returns the config."""
    from audit.demo.models import DigitsDiscriminator, DigitsGenerator

    torch.manual_seed(0)
    torch.save(DigitsDiscriminator().state_dict(), folder / "d.pt")
    torch.save(DigitsGenerator().state_dict(), folder / "g.pt")
    rng = np.random.default_rng(0)
    np.savez(folder / "paired.npz", images=rng.integers(0, 256, (n_paired, 32, 32), np.uint8),
             tone=np.array(["light", "dark"])[rng.integers(0, 2, n_paired)])
    np.savez(folder / "real.npz", images=rng.integers(0, 256, (n_real, 32, 32), np.uint8))
    concepts = {"name": "tones", "concepts": [{
        "name": "tone", "kind": "binary", "groups": ["light", "dark"], "protected": True,
        "source": {"type": "column", "column": "tone"}}]}
    (folder / "tones.yaml").write_text(yaml.safe_dump(concepts))
    config = {
        "concept_set": "tones.yaml", "device": "cpu",
        "discriminator": {"spec": "python:audit.demo.models:DigitsDiscriminator",
                          "weights": "d.pt", "batch_size": 64,
                          "layers": ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]},
        "generator": {"spec": "python:audit.demo.models:DigitsGenerator", "weights": "g.pt",
                      "n": n_generated, "seed": 0, "batch_size": 64},
        "paired": {"source": "npz:paired.npz"}, "real": {"source": "npz:real.npz"},
        "out": "run"}
    path = folder / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    """Run a command; its wall time in seconds (its stderr shown if it fails)."""
    start = time.perf_counter()
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-4000:]}")
    return seconds


def same_stores(a: Path, b: Path) -> bool:
    """The same image ids, activations and scores (bit for bit) in every store."""
    for name in STORES:
        x = ActivationStore.open(a / "activations" / name)
        y = ActivationStore.open(b / "activations" / name)
        if x.image_ids != y.image_ids or x.scores().tobytes() != y.scores().tobytes():
            return False
        if any(x.read(n).tobytes() != y.read(n).tobytes() for n in x.layers):
            return False
    return True


def run_both(folder: Path, counts: dict[str, int]) -> tuple[float, float, bool]:
    """Wall seconds of one process and of torchrun with 2, and whether the stores agree."""
    config = write_job(folder, **counts)
    single_cmd = [sys.executable, "-m", "audit", "extract", str(config), "--out",
                  str(folder / "single")]
    multi_cmd, env = distributed.local_command(
        ["audit", "extract", str(config), "--out", str(folder / "torchrun")], nproc=2)
    single = timed(single_cmd, env, folder)
    multi = timed(multi_cmd, env, folder)
    return single, multi, same_stores(folder / "single", folder / "torchrun")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images (under 60 s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scale = 2 if args.quick else 8
    counts = {"n_paired": 1000 * scale, "n_real": 6000 * scale, "n_generated": 3000 * scale}
    total = sum(counts.values())
    print(f"images: {counts['n_paired']} paired + {counts['n_real']} real + "
          f"{counts['n_generated']} generated = {total}; DigitsDiscriminator (random weights), "
          f"4 layers, batch 64; one thread per process", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        # start-up alone (imports, torchrun's agent, model loading, probing): 3 x 64 images
        base_1, base_2, _ = run_both(Path(tmp), {"n_paired": 64, "n_real": 64,
                                                 "n_generated": 64})
    print(f"start-up, 192 images : 1 process {base_1:5.1f} s, torchrun x2 {base_2:5.1f} s",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        single, multi, equal = run_both(Path(tmp), counts)
    print(f"1 process            : {single:6.1f} s  ({total / single:7.0f} img/s end to end)")
    print(f"torchrun, 2 processes: {multi:6.1f} s  ({total / multi:7.0f} img/s end to end)")
    extraction = (single - base_1) / max(multi - base_2, 1e-3)
    print(f"speedup end to end {single / multi:.2f}; of the extraction itself (start-up "
          f"subtracted) {extraction:.2f}")
    print(f"equal={'true' if equal else 'false'} speedup={single / multi:.2f} "
          f"extraction_speedup={extraction:.2f}")


if __name__ == "__main__":
    main()
