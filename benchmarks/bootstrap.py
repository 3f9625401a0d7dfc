"""Bootstrap intervals of per-group rates: Fairlearn's MetricFrame(n_boot=B) against ours.

Same synthetic table for both: three protected concepts (2 x 3 x 6 groups) crossed into
36 intersectional groups, a binary outcome (real = 1) and a binary decision (accepted).
Metrics: selection rate, true positive rate, false positive rate and count, with
2.5% and 97.5% quantiles. Fairlearn resamples the rows in a Python loop; ours draws
the (group, outcome, decision) cell counts with one multinomial per replicate
(audit.measure.bootstrap), the same law as resampling rows.

Prints both sets of interval bounds, how many agree within Monte Carlo error, our time
at B=1000 on 1,000,000 rows, and on the last line ``speedup=<fairlearn/ours>``.

    .venv/bin/python benchmarks/bootstrap.py            # B=20, as in issue 5
    .venv/bin/python benchmarks/bootstrap.py --quick    # B=5 for Fairlearn, < 60 s
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd

from audit.measure.bootstrap import BootstrapSpec, draw_cells, intervals
from audit.measure.treatment import confusion_rates

METRICS = ("selection_rate", "true_positive_rate", "false_positive_rate", "count")
QUANTILES = (0.025, 0.975)


def synthetic_rows(n: int, *, seed: int = 0) -> pd.DataFrame:
    """n rows: concepts a (2), b (3), c (6) -> 36 groups, y_true, y_pred with group effects."""
    rng = np.random.default_rng(seed)
    a = rng.choice(2, n, p=[0.6, 0.4])
    b = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    c = rng.choice(6, n)
    y_true = rng.random(n) < 0.5
    logit = -0.2 + 0.8 * y_true - 0.4 * a + 0.2 * (b - 1) - 0.1 * c
    y_pred = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({"a": a.astype(str), "b": b.astype(str), "c": c.astype(str),
                         "y_true": y_true.astype(int), "y_pred": y_pred.astype(int)})


def fairlearn_intervals(rows: pd.DataFrame, n_boot: int) -> tuple[pd.DataFrame, float]:
    """MetricFrame with n_boot over the rows: (bounds indexed (group, metric), seconds)."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf = MetricFrame(metrics={"selection_rate": selection_rate,
                                  "true_positive_rate": true_positive_rate,
                                  "false_positive_rate": false_positive_rate, "count": count},
                         y_true=rows["y_true"], y_pred=rows["y_pred"],
                         sensitive_features=rows[["a", "b", "c"]], n_boot=n_boot,
                         ci_quantiles=list(QUANTILES), random_state=0)
        lo, hi = mf.by_group_ci
    seconds = time.perf_counter() - start
    out = pd.DataFrame({"low": lo.stack(), "high": hi.stack()})
    out.index = pd.MultiIndex.from_tuples([("/".join(k[:3]), k[3]) for k in out.index],
                                          names=["group", "metric"])
    return out, seconds


def our_intervals(rows: pd.DataFrame, n_boot: int, *, seed: int = 0
                  ) -> tuple[pd.DataFrame, np.ndarray, float]:
    """Cell-count bootstrap of the same metrics: (bounds, replicate sd per bound, seconds)."""
    start = time.perf_counter()
    grouped = rows.groupby(["a", "b", "c"], sort=True)
    codes = grouped.ngroup().to_numpy()
    labels = ["/".join(k) for k in grouped.groups]
    g = len(labels)
    cell = (codes * 2 + rows["y_true"].to_numpy()) * 2 + rows["y_pred"].to_numpy()
    counts = np.bincount(cell, minlength=g * 4)
    spec = BootstrapSpec(n_boot=n_boot, seed=seed, confidence=QUANTILES[1] - QUANTILES[0])
    draws = draw_cells(counts, n_boot=n_boot, rng=np.random.default_rng(seed))
    reps = confusion_rates(draws.reshape(n_boot, g, 2, 2))
    point = confusion_rates(counts.reshape(1, g, 2, 2))
    rep = np.stack([reps[m] for m in METRICS], axis=-1)             # (B, G, 4)
    ci = intervals(np.stack([point[m][0] for m in METRICS], axis=-1), rep, spec)
    seconds = time.perf_counter() - start
    index = pd.MultiIndex.from_product([labels, METRICS], names=["group", "metric"])
    out = pd.DataFrame({"low": ci[..., 0].ravel(), "high": ci[..., 1].ravel()}, index=index)
    return out, np.nanstd(rep, axis=0).ravel(), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fairlearn at B=5 (< 60 s)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--n-boot", type=int, default=None, help="B for both (default 20)")
    args = parser.parse_args()
    n_boot = args.n_boot or (5 if args.quick else 20)

    rows = synthetic_rows(args.rows)
    print(f"table: {len(rows)} rows, 36 intersectional groups, metrics {', '.join(METRICS)}, "
          f"quantiles {QUANTILES}, B={n_boot}")
    fl, fl_s = fairlearn_intervals(rows, n_boot)
    ours, sd, ours_s = our_intervals(rows, n_boot)
    both = fl.join(ours, lsuffix="_fairlearn", rsuffix="_ours")
    with pd.option_context("display.max_rows", None, "display.width", 120,
                           "display.float_format", "{:.4f}".format):
        print(both)
    # Monte Carlo error of a 2.5% quantile from B draws: sd * sqrt(q (1 - q) / B) / phi(z_q);
    # two independent estimates differ by sqrt(2) times that.
    from scipy.stats import norm

    q = QUANTILES[0]
    mc = sd * np.sqrt(q * (1 - q) / n_boot) / norm.pdf(norm.ppf(q)) * np.sqrt(2)
    diff = np.abs(np.stack([both["low_fairlearn"] - both["low_ours"],
                            both["high_fairlearn"] - both["high_ours"]], axis=1))
    ok = diff <= 3 * mc[:, None] + 1e-9
    rate = both.index.get_level_values("metric") != "count"
    print(f"bounds within 3 Monte Carlo standard errors: {int(ok.sum())}/{ok.size}; "
          f"max |difference| of rate bounds {np.nanmax(diff[rate]):.4f}, of count bounds "
          f"{np.nanmax(diff[~rate]):.1f}")
    print(f"fairlearn MetricFrame n_boot={n_boot}: {fl_s:.2f} s")
    print(f"ours (cell-count multinomial) n_boot={n_boot}: {ours_s:.4f} s")
    big = synthetic_rows(1_000_000, seed=1)
    _, _, big_s = our_intervals(big, 1000)
    print(f"ours n_boot=1000 on {len(big):,} rows: {big_s:.2f} s")
    print(f"speedup={fl_s / ours_s:.0f}")


if __name__ == "__main__":
    main()
