"""Planted-bias validation: does the audit find planted gaps, and only those?

Held-out real digits (the demo's audit part) are rendered in every tone x stroke
variant, passed through the discriminator and decoded once (decoders trained on the
paired part). Each scenario plants a share of one group among reference (real) and
audited (as if generated) images; every seeded replicate draws rows and runs the full
measure stage (``predictions_to_results``), and its conclusions are compared with the
truth (see ``audit/validation/scenarios.py`` and docs/VALIDATION.md).

Prints one line per scenario (rates with their Monte Carlo standard errors) and, last:
``detection=... false_alarm=... corrected_mae=... raw_mae=... coverage=...`` pooled over
the standard scenarios (shares as fractions).

    .venv/bin/python benchmarks/validation.py --quick            # < 60 s
    .venv/bin/python benchmarks/validation.py --replicates 100   # the figures of VALIDATION.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

RANDOM_D = "python:audit.demo.models:DigitsDiscriminator"


def default_discriminator() -> str:
    """The trained demo discriminator when its weights are in place, else random weights."""
    from audit.demo.models import DISCRIMINATOR_FILE, SUMS_FILE, WEIGHTS_DIR
    from audit.validation.scenarios import DEFAULT_DISCRIMINATOR

    if (WEIGHTS_DIR / DISCRIMINATOR_FILE).is_file() and (WEIGHTS_DIR / SUMS_FILE).is_file():
        return DEFAULT_DISCRIMINATOR
    print(f"note: {WEIGHTS_DIR / DISCRIMINATOR_FILE} not found; using {RANDOM_D} with random "
          f"(seeded) weights", file=sys.stderr)
    return RANDOM_D


def _fmt(value: float, se: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}±{se:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 replicates per standard scenario, 300 bootstrap draws, no "
                             "extra scenarios (< 60 s)")
    parser.add_argument("--replicates", type=int, default=None,
                        help="replicates per scenario (default 50; --quick: 3)")
    parser.add_argument("--n", type=int, default=2000, help="images per set (default 2000)")
    parser.add_argument("--discriminator", default=None,
                        help="model spec (default builtin:digits-dcgan if its weights exist)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from audit.config import MeasureSettings
    from audit.validation.scenarios import (
        extra_scenarios,
        run_scenario,
        scenario_bank,
        standard_scenarios,
        summarize,
        summary_line,
    )

    replicates = args.replicates or (3 if args.quick else 50)
    settings = MeasureSettings(n_boot=300) if args.quick else MeasureSettings()
    spec = args.discriminator or default_discriminator()
    start = time.perf_counter()
    bank = scenario_bank(discriminator=spec, seed=args.seed)
    print(f"discriminator {spec} (sha256 {bank.model_sha256[:12]}); {bank.n_digits} held-out "
          f"digits x 4 variants decoded in {time.perf_counter() - start:.1f} s")
    for name in ("tone", "stroke"):
        v = bank.validity["concepts"][name]
        print(f"  {name} decoder: layer {v['layer']}, held-out accuracy {v['accuracy']:.3f}, "
              f"confusion {v['confusion']} (n_test {v['n_test']})")
    print(f"measure: n_boot={settings.n_boot}, alpha={settings.alpha}, "
          f"under_margin={settings.under_margin}, interval={settings.interval}; "
          f"{replicates} replicates per scenario, n={args.n} images per set")
    header = (f"{'scenario':<28} {'R':>4} {'truth':>6} {'fires':>12} {'holm_sig':>12} "
              f"{'gap_ci<0':>12} {'coverage':>12} {'corr_mae':>12} {'raw_mae':>12} "
              f"{'mean_corr':>12} {'s':>6}")
    standard = standard_scenarios(n=args.n)
    extra = [] if args.quick else extra_scenarios(n=args.n)
    results = []
    for group, scenarios in (("standard (headline)", standard), ("extra", extra)):
        if not scenarios:
            continue
        print(f"\n{group}\n{header}")
        for scenario in scenarios:
            t0 = time.perf_counter()
            res = run_scenario(bank, scenario, replicates=replicates, seed=args.seed,
                               settings=settings)
            f = res.figures()
            print(f"{scenario.name:<28} {replicates:>4} {scenario.audited_share:>6.2f} "
                  f"{_fmt(*f['fires'], 2):>12} {_fmt(*f['significant'], 2):>12} "
                  f"{_fmt(*f['gap_below_zero'], 2):>12} {_fmt(*f['coverage'], 2):>12} "
                  f"{_fmt(*f['corrected_mae']):>12} {_fmt(*f['raw_mae']):>12} "
                  f"{_fmt(*f['mean_corrected']):>12} {time.perf_counter() - t0:>6.1f}",
                  flush=True)
            if scenario in standard:
                results.append(res)
    summary = summarize(results)
    print("\npooled over the standard scenarios (value ± Monte Carlo standard error, replicates):")
    for name, (value, se, r) in summary.items():
        print(f"  {name:<14} {value:.4f} ± {se:.4f}  (R = {r})")
    print(f"total {time.perf_counter() - start:.1f} s")
    print(summary_line(summary))


if __name__ == "__main__":
    main()
