"""The measure stage at scale: the fast paths give the numbers the old ones gave.

``tests/fixtures/measure_scale_reference.json.gz`` holds results.json of four small
synthetic tables on an 8-concept set (tests/fixtures/scale_8.yaml), written by the
measure stage as it was before it was made fast for a million images (commit
470b3a8: pandas' string columns, every Parquet column read, rows resampled for every
mean score). The same tables measured now, through ``measure_run`` (so the Parquet
reading is covered), must give the same document, number for number (up to the last
bits of a float). Regenerate only when a change of results is intended::

    PYTHONPATH=. python tests/test_measure_scale.py
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "measure_scale_reference.json.gz"
CONCEPTS = FIXTURES / "scale_8.yaml"

#: name -> MeasureSettings fields: the default, and each other path of the mean scores'
#: bootstrap and of the group codes (probabilities under unknown_below, strata, BCa,
#: clusters of ids).
CASES: dict[str, dict[str, Any]] = {
    "default": {"n_boot": 100},
    "unknown_stratified_bca": {"n_boot": 100, "unknown_below": 0.6, "stratified": True,
                               "interval": "bca"},
    "clusters": {"n_boot": 100, "cluster_by": r"^(\w+-\d{5})"},
    "uniform_reference": {"n_boot": 100, "reference": "uniform", "seed": 3},
}


def scale_table(n_real: int = 300, n_generated: int = 900, seed: int = 7):
    """The small synthetic table (and its validity) of every case."""
    from audit.concepts import load_concept_set
    from audit.validation.predictions import Planted, synthetic_predictions

    planted = Planted(generated_shares={"gender": {"male": 0.35}, "race": {"white": 0.4}},
                      score_shift={("age", "old", "generated"): -0.8,
                                   ("skin", "pale", "real"): -0.4},
                      accuracy={"race": 0.8, "age": 0.85}, true_known=0.5, invalid_scores=3)
    return synthetic_predictions(n_real, n_generated, load_concept_set(CONCEPTS), seed=seed,
                                 planted=planted)


def measured(tmp: Path, name: str) -> dict[str, Any]:
    """results.json of case ``name``, measured from a run folder in ``tmp`` (without the
    tool version, which is not a result)."""
    from audit.concepts import load_concept_set
    from audit.config import MeasureSettings
    from audit.measure import measure_run

    frame, validity = scale_table()
    run = tmp / name
    (run / "decoders").mkdir(parents=True)
    frame.to_parquet(run / "predictions.parquet", index=False)
    (run / "decoders" / "validity.json").write_text(json.dumps(validity), encoding="utf-8")
    results = measure_run(run, load_concept_set(CONCEPTS), MeasureSettings(**CASES[name]),
                          meta={"audit_id": f"scale-{name}", "date": "2026-01-01"})
    results = json.loads(json.dumps(results))
    results["meta"].pop("tool_version")
    return results


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Where two JSON documents differ (paths): numbers equal up to rounding (a relative
    1e-9), everything else exactly."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = [f"{where}/{k}: only in one" for k in sorted(set(old) ^ set(new))]
        for k in old.keys() & new.keys():
            out += _differences(old[k], new[k], f"{where}/{k}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True))
                for d in _differences(a, b, f"{where}/{i}")]
    if isinstance(old, float) and isinstance(new, float):
        # the last bits of a float depend on the BLAS's threads (the order of its sums)
        same = math.isclose(old, new, rel_tol=1e-9, abs_tol=1e-12)
    else:
        same = old == new and type(old) is type(new)
    return [] if same else [f"{where}: {old!r} != {new!r}"]


@pytest.mark.parametrize("name", list(CASES))
def test_results_are_those_of_the_old_measure_stage(tmp_path, name) -> None:
    reference = json.loads(gzip.decompress(REFERENCE.read_bytes()))[name]
    diffs = _differences(reference, measured(tmp_path, name))
    assert not diffs, "\n".join(diffs[:20])


def _regenerate() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        doc = {name: measured(Path(tmp), name) for name in CASES}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    REFERENCE.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    _regenerate()
