"""The measure stage at scale: seconds and peak memory from 100,000 to a million images.

Builds run folders without a model: ``predictions.parquet`` and
``decoders/validity.json`` as the decode stage writes them, from
audit.validation.predictions's planted tables, on an 8-concept set of 2 to 7 groups
with 3 intersections (tests/fixtures/scale_8.yaml), with real images 20% as many as
generated ones. Then each size is measured (``measure_run`` with the default settings:
1,000 percentile replicates, intersections, tests, findings, results.json and tables) in
a fresh process, which reports its wall and CPU seconds and its peak RSS (VmHWM); the
CPU figure is steadier on a shared machine.

The growth exponent k is the slope of log(seconds) against log(images) (time ~ n^k).
Goals: a million generated images (and 200,000 real) in at most 30 s with at most 2 GB
of peak RSS, and k <= 1.05. Without --quick, the smallest size is also measured with
the mean scores' bootstrap resampling rows at every size (``--rows``: the path before
#24, which was most of its time), side by side.

    python benchmarks/scale.py            # 100k, 300k and 1M generated images (~5 min)
    python benchmarks/scale.py --quick    # 5k, 15k and 50k (CI; under a minute)

The last line is ``ratio=<seconds at the largest size / 30 s goal>`` (at most 1 meets the
goal; with --quick the sizes are too small for the goals, whose lines are a smoke test).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _memory import own_peak_rss_mib  # benchmarks/_memory.py (this script's folder)

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
CONCEPTS = REPO / "tests" / "fixtures" / "scale_8.yaml"
GOAL_S, GOAL_RSS_MB, GOAL_K, GOAL_N = 30.0, 2048.0, 1.05, 1_000_000
SIZES, QUICK_SIZES = (100_000, 300_000, 1_000_000), (5_000, 15_000, 50_000)


def build_run(run: Path, n_generated: int, *, seed: int = 0) -> Path:
    """A run folder with ``n_generated`` generated and ``n_generated // 5`` real audited
    images (plus 600 held-out labelled ones): predictions.parquet and validity.json."""
    from audit.concepts import load_concept_set
    from audit.validation.predictions import Planted, synthetic_predictions

    planted = Planted(generated_shares={"gender": {"male": 0.35}, "race": {"white": 0.4}},
                      score_shift={("age", "old", "generated"): -0.8,
                                   ("skin", "pale", "real"): -0.4},
                      accuracy={"race": 0.8, "age": 0.85}, true_known=0.5, invalid_scores=5)
    frame, validity = synthetic_predictions(n_generated // 5, n_generated,
                                            load_concept_set(CONCEPTS), seed=seed,
                                            planted=planted)
    (run / "decoders").mkdir(parents=True)
    frame.to_parquet(run / "predictions.parquet", index=False)
    (run / "decoders" / "validity.json").write_text(json.dumps(validity), encoding="utf-8")
    return run


def child(run: Path, rows: bool) -> None:
    """Measure ``run`` in this process; print seconds and peak RSS as JSON."""
    from audit.concepts import load_concept_set
    from audit.config import MeasureSettings
    from audit.measure import bootstrap, measure_run, results

    if rows:  # the row bootstrap of mean scores at every size, as before
        bootstrap.ROW_DRAWS = results.ROW_DRAWS = math.inf
    concept_set = load_concept_set(CONCEPTS)
    start, cpu = time.perf_counter(), time.process_time()
    measure_run(run, concept_set, MeasureSettings(), meta={"audit_id": "scale"})
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "cpu": time.process_time() - cpu,
                      "rss_mb": own_peak_rss_mib()}))


def measured(run: Path, *, rows: bool = False) -> dict[str, float]:
    """Seconds and peak RSS of measuring ``run`` in a fresh process."""
    cmd = [sys.executable, __file__, "--child", str(run), *(["--rows"] if rows else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def growth_exponent(sizes: list[int], seconds: list[float]) -> float:
    """k of the least-squares line log(seconds) = k log(n) + c."""
    x, y = [math.log(n) for n in sizes], [math.log(s) for s in seconds]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / \
        sum((a - mx) ** 2 for a in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5k, 15k and 50k images")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.rows)
        return
    sizes = QUICK_SIZES if args.quick else SIZES
    figures: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            start = time.perf_counter()
            run = build_run(Path(tmp) / f"n{n}", n)
            built = time.perf_counter() - start
            figures[n] = measured(run)
            print(f"{n:>9,} generated + {n // 5:>7,} real: {figures[n]['seconds']:6.2f} s "
                  f"({figures[n]['cpu']:.2f} s CPU), peak RSS {figures[n]['rss_mb']:6.0f} MB  "
                  f"(table built in {built:.1f} s, "
                  f"{(run / 'predictions.parquet').stat().st_size / 1e6:.0f} MB of Parquet)",
                  flush=True)
            if n == sizes[0] and not args.quick:
                rows = measured(run, rows=True)
                print(f"{'':>9}   mean scores resampling rows (before): {rows['seconds']:6.2f} s "
                      f"({rows['cpu']:.2f} s CPU), peak RSS {rows['rss_mb']:6.0f} MB; speedup "
                      f"{rows['seconds'] / figures[n]['seconds']:.1f}x", flush=True)
            (run / "predictions.parquet").unlink()
    k = growth_exponent(list(sizes), [figures[n]["seconds"] for n in sizes])
    k_cpu = growth_exponent(list(sizes), [figures[n]["cpu"] for n in sizes])
    top = figures[sizes[-1]]
    goal_s = GOAL_S
    met = {"time": top["seconds"] <= goal_s, "rss": top["rss_mb"] <= GOAL_RSS_MB,
           "k": k <= GOAL_K}
    print(f"growth exponent k = {k:.2f} (wall; {k_cpu:.2f} of CPU seconds), time ~ n^k over "
          f"{sizes[0]:,} to {sizes[-1]:,} generated images")
    if args.quick:
        print(f"(--quick: the goals are for {GOAL_N:,} images; these lines are a smoke test)")
    print(f"goals at {sizes[-1]:,} generated images: <= {goal_s:.1f} s: {top['seconds']:.2f} s "
          f"({'met' if met['time'] else 'missed'}); peak RSS <= {GOAL_RSS_MB:.0f} MB: "
          f"{top['rss_mb']:.0f} MB ({'met' if met['rss'] else 'missed'}); k <= {GOAL_K}: "
          f"{k:.2f} ({'met' if met['k'] else 'missed'})")
    print(f"ratio={top['seconds'] / goal_s:.2f}")


if __name__ == "__main__":
    main()
