"""Counterfactual treatment test: detection and false alarm on the demo GAN (issue 22 item 6).

Two discriminators are built around the demo D (audit/validation/counterfactual.py): ``uses``
scores dark-tone images lower (its score minus beta x the image's mean brightness), ``blind``
scores every image in the light polarity (tone-invariant by construction). Both are read
with the demo run's own decoders. Each seed draws new edited latents; the test is run on
each variant (and on the demo D itself) and its conclusion counted: detection = share of
seeds where the ``uses`` effect's interval excludes 0, false alarm = the same for ``blind``.
The unadjusted slope (no drift held fixed) is counted too, to show why the drift is held.

Also times the counterfactual stage against the rest of a demo run.

Prints one line per seed and variant and, last:
``detection=... false_alarm=... demo_detected=... unadjusted_false_alarm=... stage_s=...``

    .venv/bin/python benchmarks/counterfactual.py --quick          # 4 seeds
    .venv/bin/python benchmarks/counterfactual.py --seeds 20       # the figures of VALIDATION.md
    .venv/bin/python benchmarks/counterfactual.py --run reports/demo-cf   # reuse a demo run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def demo_run(out: Path, *, n_boot: int) -> dict[str, float]:
    """Run the demo with the counterfactual stage into ``out``; the stages' seconds."""
    import yaml

    from audit.config import config_from_dict
    from audit.pipeline import demo_config, run_audit

    data = yaml.safe_load(demo_config().read_text())
    data["counterfactual"] = {"enabled": True}
    data["measure"] = {**data.get("measure", {}), "n_boot": n_boot}
    data["report"] = {"pdf": False}
    cfg = config_from_dict(data, base_dir=demo_config().parent)
    return run_audit(cfg, out=out, device="cpu", log=lambda line: None).seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 seeds")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--n", type=int, default=96, help="latents edited per seed")
    parser.add_argument("--beta", type=float, default=0.5,
                        help="the 'uses' D: score minus beta x mean brightness")
    parser.add_argument("--run", type=Path, default=None,
                        help="a finished demo run folder with counterfactual enabled")
    args = parser.parse_args()
    seeds = 4 if args.quick else args.seeds

    from audit.validation.counterfactual import counterfactual_trials, summarise

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        stage_s = total_s = float("nan")
        if run is None:
            run = Path(tmp) / "demo"
            t0 = time.perf_counter()
            seconds = demo_run(run, n_boot=200)
            print(f"demo run with the counterfactual stage: {time.perf_counter() - t0:.0f} s; "
                  f"stages {seconds}", file=sys.stderr)
            stage_s, total_s = seconds.get("counterfactual", float("nan")), sum(seconds.values())
        t0 = time.perf_counter()
        trials = counterfactual_trials(run, seeds=range(seeds), n=args.n, beta=args.beta,
                                       log=lambda line: print(line, flush=True))
        print(f"{len(trials)} trials in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    s = summarise(trials)
    for variant, row in s.items():
        print(f"{variant}: detected {row['detected']:.2f} (se {row['se']:.2f}), mean effect "
              f"{row['mean_effect']:+.3f}; unadjusted detected {row['unadjusted_detected']:.2f},"
              f" mean {row['mean_unadjusted']:+.3f}; {row['replicates']} seeds")
    row = next(iter(s.values()))
    print(f"the edits changed the edited concept by {row['concept_change']:.2f} (mean TV) and "
          + ", ".join(f"{c} by {v:.2f}" for c, v in row["leakage"].items()))
    print(f"detection={s['uses']['detected']:.2f} false_alarm={s['blind']['detected']:.2f} "
          f"demo_detected={s['demo']['detected']:.2f} "
          f"unadjusted_false_alarm={s['blind']['unadjusted_detected']:.2f} "
          f"stage_s={stage_s:.1f} demo_total_s={total_s:.1f} seeds={seeds} n={args.n} "
          f"beta={args.beta}")


if __name__ == "__main__":
    main()
