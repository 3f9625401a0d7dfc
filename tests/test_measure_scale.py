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
import sys
from pathlib import Path
from typing import Any

import numpy as np
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


ADDED_SETTINGS = ("min_labels_per_group", "transfer_gap")


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
    new = measured(tmp_path, name)
    # settings added after the reference was recorded (issue 23's label transfer): echoed
    # in results.json's settings, and nothing else differs
    assert not set(ADDED_SETTINGS) & set(reference["settings"])
    assert set(ADDED_SETTINGS) <= set(new["settings"])
    diffs = _differences(reference, {**new, "settings": {
        k: v for k, v in new["settings"].items() if k not in ADDED_SETTINGS}})
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


# ------------------------------------------------------------------ the mean scores' bootstrap


def _spec(n_boot: int, *, stratified: bool = False):
    from audit.measure.bootstrap import BootstrapSpec

    return BootstrapSpec(n_boot=n_boot, seed=0, stratified=stratified)


def _skewed(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Skewed values (exponential) of codes with the given sizes, shuffled."""
    rng = np.random.default_rng(seed)
    codes = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    return rng.exponential(1.0 + codes, size=len(codes)), codes


@pytest.mark.parametrize("stratified", [False, True])
def test_grouped_means_have_the_bootstrap_mean_and_spread(stratified) -> None:
    """Each code's replicate means centre on its mean with the spread of a mean of n_c draws
    (plug-in sd / sqrt(n_c)), for small codes (rows drawn) and large ones (normal sums)."""
    from audit.measure.bootstrap import NORMAL_FROM, grouped_mean_replicates

    sizes = [40, 300, NORMAL_FROM, 4 * NORMAL_FROM]
    values, codes = _skewed(sizes)
    reps = grouped_mean_replicates(values, codes, len(sizes), spec=_spec(4000,
                                   stratified=stratified), rng=np.random.default_rng(1))
    for c, n_c in enumerate(sizes):
        v = values[codes == c]
        se = v.std() / np.sqrt(n_c)
        assert abs(reps[:, c].mean() - v.mean()) < 0.1 * se
        assert reps[:, c].std() == pytest.approx(se, rel=0.06)


def test_grouped_means_draw_what_resampling_rows_draws() -> None:
    """Against the row bootstrap itself: the percentile interval ends of every code agree
    within the Monte-Carlo error of the replicates, and codes too small to be drawn in
    some replicates get NaN there on both paths."""
    from audit.measure.bootstrap import grouped_mean_replicates, mean_replicates

    sizes = [2, 60, 900, 3000]
    values, codes = _skewed(sizes, seed=2)
    spec = _spec(3000)
    rows = mean_replicates(values, codes, 4, spec=spec, rng=np.random.default_rng(3))
    grouped = grouped_mean_replicates(values, codes, 4, spec=spec, rng=np.random.default_rng(4))
    assert np.isnan(rows[:, 0]).mean() == pytest.approx(np.isnan(grouped[:, 0]).mean(), abs=0.02)
    for c in range(1, 4):
        se = values[codes == c].std() / np.sqrt(sizes[c])
        for q in (0.025, 0.5, 0.975):
            assert abs(np.quantile(rows[:, c], q) - np.quantile(grouped[:, c], q)) < 0.12 * se


def test_mean_replicates_draws_group_by_group_beyond_the_row_budget(monkeypatch) -> None:
    from audit.measure import bootstrap

    values, codes = _skewed([50, 150])
    spec = _spec(20)
    below = bootstrap.mean_replicates(values, codes, 2, spec=spec, rng=np.random.default_rng(5))
    monkeypatch.setattr(bootstrap, "ROW_DRAWS", 20 * 200 - 1)
    above = bootstrap.mean_replicates(values, codes, 2, spec=spec, rng=np.random.default_rng(5))
    grouped = bootstrap.grouped_mean_replicates(values, codes, 2, spec=spec,
                                                rng=np.random.default_rng(5))
    np.testing.assert_array_equal(above, grouped)
    assert not np.array_equal(below, above)


# ------------------------------------------------------------------ histograms, columns, progress


def test_score_histograms_are_numpy_histograms_per_group() -> None:
    """One pass over all groups gives numpy.histogram's counts, with uneven edges, scores
    on the edges and outside them, and NaN."""
    from audit.measure.distributions import score_histogram

    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(0, 2, 3000), 1)
    scores[:20] = np.nan
    source, codes = rng.integers(0, 2, 3000), rng.integers(0, 4, 3000)
    codes[source == 1] = np.minimum(codes[source == 1], 2)        # a group one source lacks
    edges = np.array([-3.0, -1.0, -0.5, 0.0, 0.3, 1.0, 2.5])
    hist = score_histogram(scores, source, codes, ["a", "b", "c", "unknown"], edges)
    for s, name in enumerate(("real", "generated")):
        for code, label in enumerate(["a", "b", "c", "unknown"]):
            rows = np.isfinite(scores) & (source == s) & (codes == code)
            if not rows.any():
                assert label not in hist["counts"][name]
                continue
            assert hist["counts"][name][label] == np.histogram(scores[rows], edges)[0].tolist()
    assert "unknown" not in hist["counts"]["generated"]


def test_only_the_measured_columns_are_read_and_text_comes_as_categories(tmp_path) -> None:
    import pandas as pd

    from audit.concepts import load_concept_set
    from audit.measure.results import read_predictions

    frame, _ = scale_table(30, 30)
    frame.to_parquet(tmp_path / "p.parquet", index=False)
    cs = load_concept_set(CONCEPTS)
    read = read_predictions(tmp_path / "p.parquet", cs)
    assert not any(c.startswith("prob__") for c in read.columns)
    assert {"image_id", "split", "source", "score", "pred__race", "true__race"} <= set(read)
    assert isinstance(read["pred__race"].dtype, pd.CategoricalDtype)
    with_probs = read_predictions(tmp_path / "p.parquet", cs, unknown_below=0.5)
    assert "prob__race__white" in with_probs


def test_unknown_names_only_in_rows_not_audited_do_not_stop_the_measure(tmp_path) -> None:
    """Categories come from the whole file; a name that only held-out rows carry is not
    one of the audited images' (as before, when every value was read as text)."""
    from audit.concepts import load_concept_set
    from audit.config import MeasureSettings
    from audit.errors import DataError
    from audit.measure import measure_run

    frame, validity = scale_table(60, 60)
    test_row = frame.index[frame["split"] == "test"][0]
    frame.loc[test_row, "pred__hair"] = "purple"
    (tmp_path / "decoders").mkdir()
    (tmp_path / "decoders" / "validity.json").write_text(json.dumps(validity))
    frame.to_parquet(tmp_path / "predictions.parquet", index=False)
    cs = load_concept_set(CONCEPTS)
    measure_run(tmp_path, cs, MeasureSettings(n_boot=10))
    frame.loc[frame.index[0], "pred__hair"] = "purple"
    frame.to_parquet(tmp_path / "predictions.parquet", index=False)
    with pytest.raises(DataError, match=r"pred__hair.*\['purple'\]"):
        measure_run(tmp_path, cs, MeasureSettings(n_boot=10))


def test_progress_names_every_step_and_the_bar_is_shown_on_a_terminal_only(
        tmp_path, capsys, monkeypatch) -> None:
    from audit.concepts import load_concept_set
    from audit.config import MeasureSettings
    from audit.measure import measure_run
    from audit.measure.results import measure_steps, predictions_to_results

    frame, validity = scale_table(60, 60)
    cs = load_concept_set(CONCEPTS)
    steps: list[str] = []
    predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=10),
                           progress=steps.append)
    assert len(steps) == measure_steps(cs) == 2 + 8 + 3
    assert steps[1:-1] == [*cs.names, "race+gender", "age+gender", "skin+gender"]
    (tmp_path / "decoders").mkdir()
    (tmp_path / "decoders" / "validity.json").write_text(json.dumps(validity))
    frame.to_parquet(tmp_path / "predictions.parquet", index=False)
    capsys.readouterr()
    measure_run(tmp_path, cs, MeasureSettings(n_boot=10))
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    measure_run(tmp_path, cs, MeasureSettings(n_boot=10))
    shown = capsys.readouterr().err
    assert "measure" in shown and "write results" in shown and "race+gender" in shown


def test_results_say_when_mean_scores_were_drawn_group_by_group(monkeypatch) -> None:
    from audit.concepts import load_concept_set
    from audit.config import MeasureSettings
    from audit.measure import bootstrap, results
    from audit.measure.results import predictions_to_results

    frame, validity = scale_table(40, 40)
    cs, settings = load_concept_set(CONCEPTS), MeasureSettings(n_boot=10)

    def notes() -> list[str]:
        doc = predictions_to_results(frame, cs, validity, settings=settings)
        return [n for n in doc["notes"] if n.startswith("Mean scores:")]

    assert notes() == []
    for module in (bootstrap, results):
        monkeypatch.setattr(module, "ROW_DRAWS", 100)
    (note,) = notes()
    assert "with 77 finite scores and 10 replicates" in note   # 80 audited, 3 NaN
