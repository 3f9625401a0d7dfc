"""Trend detection over checkpoints: power on planted trends, false alarms on planted nulls.

Each replicate simulates a series of audits (4 or 5 checkpoints) as the audit measures
them: generated images with a true minority share per checkpoint, a decoder with
estimated confusion, the corrected share and its bootstrap standard error
(audit/validation/trends.py), then runs audit.measure.trend.trend_test on the series.
A trend is detected when p < 0.05. Rates come with Wilson 95% intervals.

Prints one line per planted series, the power curve of the 5-point series against the
closed-form power (full run only), the family-wise false alarm of 6 null curves under
Holm, and, last: ``power=... false_alarm=... family_false_alarm=...`` (the least power
over the trend series, the false-alarm rate pooled over the four independent nulls).

    .venv/bin/python benchmarks/trend.py --quick            # 200 replicates, < 60 s
    .venv/bin/python benchmarks/trend.py                    # 2000, the figures of VALIDATION.md
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _line(name: str, r: object, *, truth: str) -> str:
    lo, hi = r.interval  # type: ignore[attr-defined]
    return (f"{name:26s} {truth:18s} rate={r.rate:.3f} [{lo:.3f}, {hi:.3f}]"  # type: ignore
            f"  mean se={r.mean_se:.4f}  mean slope={r.mean_slope:+.4f}")  # type: ignore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 replicates, no power curve")
    parser.add_argument("--replicates", type=int, default=None,
                        help="replicates per series (default 2000; --quick: 200)")
    parser.add_argument("--drift", type=float, default=-0.08,
                        help="planted change of the minority share from the first to the "
                             "last checkpoint (default -0.08: 8 points)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from audit.validation.trends import (
        correlated_series,
        expected_power,
        run_family,
        run_series,
        standard_series,
    )

    reps = args.replicates or (200 if args.quick else 2000)
    started = time.perf_counter()
    power, alarms, null_reps = [], 0, 0
    print(f"{reps} replicates per series, drift {args.drift:+.2f} first to last, seed "
          f"{args.seed}, p < 0.05")
    for s in standard_series(drift=args.drift) + correlated_series():
        r = run_series(s, replicates=reps, seed=args.seed)
        truth = "null" if s.slope == 0 else f"slope {s.slope:+.4f}"
        print(_line(s.name, r, truth=truth) + (f"  ({s.note})" if s.note else ""), flush=True)
        if s.slope != 0:
            power.append(r.rate)
        elif not (s.fixed_decoders or s.neighbour_rho):
            alarms, null_reps = alarms + r.detected, null_reps + r.replicates
    if not args.quick:
        base = standard_series(drift=args.drift)[4]
        for drift in (-0.02, -0.04, -0.06, -0.08, -0.10):
            s = dataclasses.replace(base, name=f"trend-5-equal{drift:+.2f}",
                                    slope=drift / (base.n_points - 1))
            r = run_series(s, replicates=reps, seed=args.seed)
            closed = expected_power([r.mean_se] * s.n_points, s.slope)
            print(_line(s.name, r, truth=f"slope {s.slope:+.4f}")
                  + f"  closed form {closed:.3f}", flush=True)
    null = standard_series()[0]
    fam_reps = max(reps // 4, 50)
    hits, fam, (lo, hi) = run_family(null, curves=6, replicates=fam_reps, seed=args.seed)
    print(f"{'family of 6 nulls, Holm':26s} {'null':18s} rate={fam:.3f} [{lo:.3f}, {hi:.3f}]"
          f"  ({hits} of {fam_reps} families)")
    from audit.intervals import wilson_interval

    lo, hi = wilson_interval(alarms, null_reps)
    print(f"{'independent nulls pooled':26s} {'null':18s} rate={alarms / null_reps:.3f} "
          f"[{lo:.3f}, {hi:.3f}]  ({alarms} of {null_reps})")
    print(f"seconds={time.perf_counter() - started:.1f}")
    print(f"power={min(power):.3f} false_alarm={alarms / null_reps:.3f} "
          f"family_false_alarm={fam:.3f}")


if __name__ == "__main__":
    main()
