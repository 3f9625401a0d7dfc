"""Evidence scenarios (#18 item 8): does the audit say when it cannot tell?

Three scenarios on the demo models, each repeated with its own seed:

- ``random-d``: the whole pipeline (``run_audit`` on the demo config) with the demo
  discriminator's architecture and random weights (``torch.manual_seed(r)`` before
  loading), real images and the demo generator's images as in the demo. Goal: no
  high-severity finding in >= 95% of the repetitions.
- ``accepts-1pct``: the trained demo D whose acceptance threshold accepts 1% of real
  images (``accept_threshold`` = the 99th percentile of the real scores); each repetition
  resamples the demo's audited images (real and generated, with replacement) and runs the
  measure stage. Goal: the sanity caveat in 100% of repetitions, on every treatment finding.
- ``small-n``: a synthetic audit with no planted gap (``audit.validation.predictions``: tone
  and stroke half and half in both sources, no score shift) of 80 real and 80 generated
  images per repetition (``--small-n``), measure stage. Goal: where a protected
  concept's test could not detect the policy's gap (MDE above the threshold) and no rule
  fired, the verdict is "insufficient evidence", never "pass", in >= 90% of those.

Prints one line per scenario and, last, ``random_d_no_high=... accepts_1pct_caveat=...
small_n_insufficient=...``.

    .venv/bin/python benchmarks/sanity.py --repetitions 20 2>/dev/null   # about 6 minutes
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

RANDOM_D = "python:audit.demo.models:DigitsDiscriminator"


def _demo_cfg(**updates):
    from audit.config import load_config
    from audit.pipeline import demo_config

    cfg = load_config(demo_config())
    return cfg.model_copy(update=updates) if updates else cfg


def random_d(repetitions: int, root: Path) -> list[dict]:
    """One full audit per repetition with a random-weights discriminator."""
    import json
    import shutil

    import torch

    from audit.pipeline import run_audit

    base = _demo_cfg()
    cfg = base.model_copy(update={
        "discriminator": base.discriminator.model_copy(update={"spec": RANDOM_D}),
        "measure": base.measure.model_copy(update={"n_boot": 300}),
        "decoders": base.decoders.model_copy(update={"random_baseline": False})})
    out = []
    for r in range(repetitions):
        torch.manual_seed(r)
        run = root / f"random-{r}"
        run_audit(cfg, out=run, pdf=False, log=lambda line: None)
        results = json.loads((run / "results.json").read_text())
        sep = results["discriminator"]["separation"]
        out.append({"high": [f["id"] for f in results["findings"] if f["severity"] == "high"],
                    "auc": sep["auc"], "ci": sep["ci"],
                    "problems": [p["kind"] for p in results["discriminator"]["problems"]]})
        shutil.rmtree(run)
    return out


def _demo_tables(root: Path):
    import json

    import pandas as pd

    from audit.pipeline import run_audit

    cfg = _demo_cfg()
    cfg = cfg.model_copy(update={"decoders": cfg.decoders.model_copy(
        update={"random_baseline": False})})
    run = root / "demo"
    run_audit(cfg, out=run, pdf=False, log=lambda line: None)
    predictions = pd.read_parquet(run / "predictions.parquet")
    validity = json.loads((run / "decoders" / "validity.json").read_text())
    return cfg, predictions, validity


def _resample(predictions, rng, n_real: int | None, n_generated: int | None):
    import pandas as pd

    audit = predictions[predictions["split"] == "audit"]
    parts = []
    for source, n in (("real", n_real), ("generated", n_generated)):
        rows = audit[audit["source"] == source]
        pick = rng.integers(len(rows), size=n or len(rows))
        part = rows.iloc[pick].reset_index(drop=True)
        part["image_id"] = [f"{x}-r{i}" for i, x in enumerate(part["image_id"])]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def accepts_1pct(repetitions: int, cfg, predictions, validity) -> list[dict]:
    import numpy as np

    from audit.concepts import load_concept_set
    from audit.measure import predictions_to_results

    cs = load_concept_set(cfg.concept_set)
    out = []
    for r in range(repetitions):
        rng = np.random.default_rng([1, r])
        table = _resample(predictions, rng, None, None)
        real = table.loc[table["source"] == "real", "score"].to_numpy()
        settings = cfg.measure.model_copy(update={
            "accept_threshold": float(np.quantile(real, 0.99)), "n_boot": 200,
            "cluster_by": None, "seed": r})
        res = predictions_to_results(table, cs, validity, settings=settings)
        trt = [f for f in res["findings"] if f["kind"] == "treatment"]
        kinds = [p["kind"] for p in res["discriminator"]["problems"]]
        out.append({"flagged": "acceptance_extreme" in kinds,
                    "all_caveated": all(f["evidence"].get("discriminator_caveat")
                                        and f["severity"] in ("low", "info") for f in trt),
                    "n_treatment": len(trt),
                    "accepted": res["discriminator"]["acceptance"]["real"]["value"]})
    return out


def small_n(repetitions: int, n: int) -> list[dict]:
    """Per repetition, a synthetic audit with no planted gap (every group of tone and stroke
    half of both sources, no score shift, decoders 97% accurate) of ``n`` real and ``n``
    generated images: each protected concept's verdict and whether a test of it was
    underpowered."""
    from audit.concepts import load_concept_set
    from audit.config import MeasureSettings
    from audit.measure import predictions_to_results
    from audit.validation.predictions import Planted, synthetic_predictions

    cs = load_concept_set("digits_tone")
    truth = Planted(real_shares={"tone": {"dark": 0.5}, "stroke": {"thick": 0.5}},
                    generated_shares={"tone": {"dark": 0.5}, "stroke": {"thick": 0.5}},
                    accuracy={"digit": 0.9, "tone": 0.97, "stroke": 0.97})
    out = []
    for r in range(repetitions):
        table, validity = synthetic_predictions(n, n, cs, seed=1000 + r, planted=truth)
        res = predictions_to_results(table, cs, validity,
                                     settings=MeasureSettings(n_boot=200, seed=r))
        for v in res["verdicts"]:
            tests = [t for t in res["tests"] if t.get("concept") == v["concept"]]
            underpowered = any(t.get("power") and not t["power"]["sufficient"] for t in tests)
            out.append({"rep": r, "concept": v["concept"], "verdict": v["verdict"],
                        "underpowered": underpowered})
    return out


def _report_random_d(rd: list[dict]) -> dict[str, float]:
    n = len(rd)
    no_high = sum(not x["high"] for x in rd)
    no_high_trt = sum(not [i for i in x["high"] if i.startswith("F-TRT")] for x in rd)
    flagged = sum(bool(x["problems"]) for x in rd)
    aucs = [x["auc"] for x in rd if x["auc"] is not None]
    print(f"random-d       R={n:>3}  no high-severity finding {no_high}/{n} = {no_high / n:.3f}; "
          f"no high-severity treatment finding {no_high_trt}/{n} = {no_high_trt / n:.3f}; "
          f"sanity check failed in {flagged}/{n}; AUC real vs generated {min(aucs):.3f} to "
          f"{max(aucs):.3f}", flush=True)
    for x in rd:
        if x["high"]:
            print(f"    high: {', '.join(x['high'])} (AUC {x['auc']:.3f} [{x['ci'][0]:.3f}, "
                  f"{x['ci'][1]:.3f}], problems {', '.join(x['problems']) or 'none'})")
    return {"random_d_no_high": no_high / n, "random_d_no_high_treatment": no_high_trt / n}


def _report_accepts(acc: list[dict]) -> dict[str, float]:
    n = len(acc)
    caveat = sum(x["flagged"] and x["all_caveated"] for x in acc)
    print(f"accepts-1pct   R={n:>3}  flagged and every treatment finding caveated (severity <= "
          f"low) {caveat}/{n} = {caveat / n:.3f}; accepted {min(x['accepted'] for x in acc):.2%}"
          f" to {max(x['accepted'] for x in acc):.2%} of real images; "
          f"{sum(x['n_treatment'] for x in acc)} treatment findings", flush=True)
    return {"accepts_1pct_caveat": caveat / n}


def _report_small_n(sn: list[dict], n_images: int) -> dict[str, float]:
    from audit.vocabulary import Verdict

    fired = {Verdict.ADVERSE_IMPACT, Verdict.UNDER_REPRESENTED, Verdict.POSSIBLE_ADVERSE_IMPACT,
             Verdict.POSSIBLY_UNDER_REPRESENTED, Verdict.NOT_DECODABLE}  # a rule fired
    weak = [x for x in sn if x["underpowered"] and "+" not in x["concept"]
            and x["verdict"] not in fired]
    good = sum(x["verdict"] == Verdict.INSUFFICIENT_EVIDENCE for x in weak)
    passed = sum(x["verdict"] == Verdict.PASS for x in sn)
    verdicts: dict[str, dict[str, int]] = {}
    for x in sn:
        kind = verdicts.setdefault("intersections" if "+" in x["concept"] else "concepts", {})
        kind[str(x["verdict"])] = kind.get(str(x["verdict"]), 0) + 1
    reps = len({x["rep"] for x in sn})
    print(f"small-n        R={reps:>3}  (n = {n_images} + {n_images}) protected concepts with "
          f"an underpowered test and no rule fired: 'insufficient evidence' {good}/{len(weak)} "
          f"= {good / max(len(weak), 1):.3f}; 'pass' in {passed} of all {len(sn)} verdicts; "
          f"verdicts {verdicts}", flush=True)
    return {"small_n_insufficient": good / max(len(weak), 1), "small_n_pass": passed / len(sn)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=20,
                        help="random-D runs (the other scenarios run twice as many)")
    parser.add_argument("--only", choices=["random-d", "accepts-1pct", "small-n"],
                        default=None, help="run one scenario")
    parser.add_argument("--small-n", type=int, default=80,
                        help="real and generated images per small-n repetition")
    parser.add_argument("--quick", action="store_true",
                        help="1 random-D run, 2 of the others (a smoke test for CI and "
                             "`make bench`; figures need the default 20)")
    args = parser.parse_args()
    if args.quick:
        args.repetitions = 1
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    figures: dict[str, float] = {}
    want = {args.only} if args.only else {"random-d", "accepts-1pct", "small-n"}
    with tempfile.TemporaryDirectory(prefix="gan-audit-sanity-") as tmp:
        root = Path(tmp)
        if "random-d" in want:
            figures |= _report_random_d(random_d(args.repetitions, root))
        if "accepts-1pct" in want:
            cfg, predictions, validity = _demo_tables(root)
            figures |= _report_accepts(accepts_1pct(args.repetitions * 2, cfg, predictions,
                                                    validity))
        if "small-n" in want:
            figures |= _report_small_n(small_n(args.repetitions * 2, n=args.small_n),
                                       args.small_n)
    print(f"total {time.perf_counter() - start:.1f} s")
    print(" ".join(f"{k}={v:.3f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
