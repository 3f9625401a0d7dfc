"""gan-audit track's pure parts on synthetic run results: the series read from results.json,
trend tests and change points (against statsmodels), findings and their severity, the plan
of points, the exports and the monitoring report's HTML."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pandas as pd
import pytest

from audit.errors import ConfigError, DependencyError
from audit.track.series import Point, SeriesRow, results_to_rows, series_to_rows
from audit.track.trends import TrendSettings, rows_to_trends, trends_to_findings

Z = 1.959963984540054


def _est(value, se=0.01, n=1000):
    return {"value": value, "ci": [value - Z * se, value + Z * se], "n": n}


def make_results(dark: float, *, ratio: float = 1.0, se: float = 0.01, auc: float = 0.8,
                 bal: float = 0.95) -> dict:
    """A results.json document with the fields the series reads: tone (protected: light,
    dark), digit (not protected), one intersection, impact ratios, validity and sanity."""
    tone = {"concept": "tone", "protected": True, "rows": [
        {"group": "light", "generated_corrected": _est(1 - dark, se)},
        {"group": "dark", "generated_corrected": _est(dark, se)}]}
    digit = {"concept": "digit", "protected": False,
             "rows": [{"group": "0", "generated_corrected": _est(0.1, se)}]}
    cross = {"concept": "tone+stroke", "protected": True,
             "rows": [{"group": "dark+thick", "generated_corrected": _est(dark / 2, se)}]}
    impact = [{"metric": "scoring_rate", "source": "generated", "group": "light",
               "ratio": {"value": 1.0, "ci": [1.0, 1.0], "n": 800}},
              {"metric": "scoring_rate", "source": "generated", "group": "dark",
               "ratio": _est(ratio, 0.02, 200)}]
    return {
        "representation": [digit, tone],
        "treatment": [{"concept": "tone", "protected": True, "impact": impact},
                      {"concept": "digit", "protected": False, "impact": impact}],
        "intersections": [{"name": "tone+stroke", "representation": cross,
                           "treatment": {"concept": "tone+stroke", "protected": True,
                                         "impact": []}}],
        "validity": {"tone": {"balanced_accuracy": bal, "n_test": 432}},
        "discriminator": {"separation": {"auc": auc, "ci": [auc - 0.02, auc + 0.02],
                                         "n_real": 1000, "n_generated": 1000},
                          "acceptance": {"real": _est(0.9), "generated": _est(0.5)}},
    }


def _series(values, **kw):
    return series_to_rows([(Point(f"ckpt-{i}", i), make_results(v, **kw))
                           for i, v in enumerate(values)])


# ---------------------------------------------------------------- series


def test_rows_read_every_curve_of_protected_concepts_only():
    rows = results_to_rows(make_results(0.2, ratio=0.7), Point("e1", 3))
    got = {(r.curve, r.group): r for r in rows}
    assert got[("generated_share", "tone=dark")].estimate == pytest.approx(0.2)
    assert got[("generated_share", "tone=dark")].n == 1000
    low, high = got[("generated_share", "tone=dark")].low, got[("generated_share",
                                                                   "tone=dark")].high
    assert (low, high) == pytest.approx((0.2 - Z * 0.01, 0.2 + Z * 0.01))
    assert ("generated_share", "tone+stroke=dark+thick") in got        # intersections too
    assert not [k for k in got if k[1].startswith("digit=")]           # not protected
    assert got[("impact_ratio:scoring_rate:generated", "tone=dark")].estimate == 0.7
    assert got[("decoder_balanced_accuracy", "tone")].n == 432
    assert got[("d_separation_auc", "all")].n == 2000
    assert got[("d_acceptance:generated", "all")].estimate == 0.5
    assert {r.point for r in rows} == {"e1"} and {r.index for r in rows} == {3}


def test_missing_parts_are_gaps_not_errors():
    rows = results_to_rows({"representation": [], "discriminator": {}}, Point("x", 0))
    sep = next(r for r in rows if r.curve == "d_separation_auc")
    assert sep.estimate is None and sep.low is None and sep.n is None


# ---------------------------------------------------------------- trends


def test_slope_and_p_are_the_weighted_regression_with_known_errors():
    import statsmodels.api as sm

    values = [0.30, 0.27, 0.22, 0.20, 0.15]
    trends, _ = rows_to_trends(_series(values, se=0.02), baseline="ckpt-0",
                               settings=TrendSettings(n_boot=0))
    dark = next(t for t in trends if (t.curve, t.group) == ("generated_share", "tone=dark"))
    x = sm.add_constant(np.arange(5.0))
    fit = sm.WLS(np.array(values), x, weights=np.full(5, 1 / 0.02 ** 2)).fit(cov_type="fixed scale")
    assert dark.slope == pytest.approx(fit.params[1])
    assert dark.p_value == pytest.approx(fit.pvalues[1], rel=1e-6)
    assert dark.change == pytest.approx(4 * fit.params[1])
    assert dark.n_points == 5 and dark.bias


def test_holm_runs_across_bias_curves_and_context_keeps_raw_p():
    from statsmodels.stats.multitest import multipletests

    trends, _ = rows_to_trends(_series([0.30, 0.25, 0.22, 0.21]), baseline="ckpt-0",
                               settings=TrendSettings(n_boot=0))
    bias = [t for t in trends if t.bias and t.p_value is not None]
    holm = multipletests([t.p_value for t in bias], method="holm")[1]
    assert [t.p_holm for t in bias] == pytest.approx(list(holm))
    assert all(t.p_holm is None for t in trends if not t.bias)
    assert {t.family for t in trends if not t.bias} == {
        "decoder_balanced_accuracy", "d_separation_auc", "d_acceptance"}


def test_change_points_compare_with_the_named_baseline():
    _, changes = rows_to_trends(_series([0.30, 0.30, 0.10]), baseline="ckpt-1",
                                settings=TrendSettings(n_boot=0))
    dark = [c for c in changes if (c.curve, c.group) == ("generated_share", "tone=dark")]
    assert {c.point for c in dark} == {"ckpt-0", "ckpt-2"}
    jump = next(c for c in dark if c.point == "ckpt-2")
    assert jump.baseline == "ckpt-1" and jump.difference == pytest.approx(-0.2)
    sd = math.sqrt(2) * 0.01
    assert jump.ci == pytest.approx((-0.2 - Z * sd, -0.2 + Z * sd))


def test_one_point_with_an_estimate_gives_a_reason_not_a_test():
    rows = _series([0.3, 0.2])
    rows = [r if not (r.group == "tone=dark" and r.index == 1) else
            SeriesRow(r.point, r.index, r.setting, r.curve, r.group, None, None, None, None)
            for r in rows]
    trends, _ = rows_to_trends(rows, baseline="ckpt-0", settings=TrendSettings(n_boot=0))
    dark = next(t for t in trends if (t.curve, t.group) == ("generated_share", "tone=dark"))
    assert dark.p_value is None and "1 point(s)" in dark.reason


def test_a_sweep_regresses_on_the_setting():
    docs = [(Point(f"truncation-{psi:g}", i, psi), make_results(0.2 * psi))
            for i, psi in enumerate([1.0, 0.7, 0.5])]
    trends, _ = rows_to_trends(series_to_rows(docs), baseline="truncation-1",
                               settings=TrendSettings(n_boot=0))
    dark = next(t for t in trends if (t.curve, t.group) == ("generated_share", "tone=dark"))
    assert dark.slope == pytest.approx(0.2)            # per unit of psi, not per point
    assert dark.change == pytest.approx(0.2 * (0.5 - 1.0))


# ---------------------------------------------------------------- findings


def _findings(values, **kw):
    rows = _series(values, **kw)
    settings = TrendSettings(n_boot=0)
    trends, changes = rows_to_trends(rows, baseline="ckpt-0", settings=settings)
    return {f["id"]: f for f in trends_to_findings(trends, changes, rows, baseline="ckpt-0",
                                                   settings=settings)}


def test_a_planted_falling_share_is_a_high_trend_with_its_evidence():
    found = _findings([0.30, 0.26, 0.22, 0.18])
    f = found["F-TRD-generated_share-tone=dark"]
    assert f["kind"] == "trend" and f["severity"] == "high"
    assert f["concept"] == "tone" and f["groups"] == ["dark"] and f["source"] == "generated"
    assert f["value"] == pytest.approx(-0.04) and f["n"] == 1000
    assert [p["estimate"] for p in f["evidence"]["points"]] == pytest.approx(
        [0.30, 0.26, 0.22, 0.18])
    assert [p["n"] for p in f["evidence"]["points"]] == [1000] * 4
    assert "falls" in f["summary"] and "Holm-corrected p" in f["summary"]
    assert f["p_holm"] < 0.05
    # trends come before change points of the same severity
    ids = list(found)
    assert ids.index("F-TRD-generated_share-tone=dark") < min(
        i for i, k in enumerate(ids) if k.startswith("F-CHG"))


def test_a_flat_series_makes_no_finding():
    assert _findings([0.2, 0.2, 0.2, 0.2]) == {}


def test_a_small_significant_trend_is_medium_not_high():
    found = _findings([0.200, 0.185, 0.170, 0.155], se=0.003)   # change 0.045 < 0.10
    assert found["F-TRD-generated_share-tone=dark"]["severity"] == "medium"


def test_impact_ratios_are_high_only_when_they_fall_under_four_fifths():
    def ratio_finding(ratios):
        rows = series_to_rows([(Point(f"c{i}", i), make_results(0.2, ratio=r))
                               for i, r in enumerate(ratios)])
        s = TrendSettings(n_boot=0)
        t, c = rows_to_trends(rows, baseline="c0", settings=s)
        return {f["id"]: f for f in trends_to_findings(t, c, rows, baseline="c0", settings=s)}

    key = "F-TRD-impact_ratio_scoring_rate_generated-tone=dark"
    assert ratio_finding([1.0, 0.9, 0.8, 0.7])[key]["severity"] == "high"
    assert ratio_finding([1.15, 1.1, 1.0, 0.95])[key]["severity"] == "medium"


def test_context_curves_never_make_findings():
    found = _findings([0.2] * 4)
    rows = series_to_rows([(Point(f"c{i}", i), make_results(0.2, auc=a, bal=b))
                           for i, (a, b) in enumerate([(0.9, 0.99), (0.8, 0.9), (0.7, 0.8),
                                                       (0.6, 0.7)])])
    s = TrendSettings(n_boot=0)
    t, c = rows_to_trends(rows, baseline="c0", settings=s)
    assert found == {} and trends_to_findings(t, c, rows, baseline="c0", settings=s) == []
    auc = next(x for x in t if x.curve == "d_separation_auc")
    assert auc.p_value < 0.05   # tested and reported, not judged


def test_findings_are_at_or_above_like_the_gate():
    from audit.gate import at_or_above

    assert at_or_above("high", "medium") and at_or_above("medium", "medium")
    assert not at_or_above("low", "medium") and not at_or_above("info", "low")


# ---------------------------------------------------------------- the plan of points


@pytest.fixture
def cfg(tmp_path):
    from audit.config import config_from_dict

    return config_from_dict({
        "concept_set": "digits_tone",
        "discriminator": {"spec": "pickle:net.pkl#D", "trust_pickle": True},
        "generator": {"spec": "pickle:net.pkl#G_ema", "trust_pickle": True},
        "paired": {"source": "builtin:digits-paired"}, "real": {"source": "builtin:digits-audit"},
        "out": "out"}, base_dir=tmp_path)


def test_a_glob_is_expanded_sorted_and_each_file_replaces_both_specs(cfg, tmp_path):
    from audit.track.plan import point_config, track_plan

    for k in (2, 0, 1):
        (tmp_path / f"network-{k:06d}.pkl").write_bytes(b"x")
    plan = track_plan(cfg, checkpoints=[str(tmp_path / "network-*.pkl")])
    assert [p.name for p in plan.points] == ["network-000000", "network-000001",
                                             "network-000002"]
    assert plan.decoders == "per-checkpoint" and plan.baseline == "network-000000"
    one = point_config(cfg, plan, plan.points[1])
    assert one.discriminator.spec == f"pickle:{tmp_path / 'network-000001.pkl'}#D"
    assert one.generator.spec == f"pickle:{tmp_path / 'network-000001.pkl'}#G_ema"
    assert one.track is None and one.name == "audit-network-000001"


def test_a_sweep_sets_the_truncation_and_the_first_setting_is_the_reference(cfg):
    from audit.track.plan import point_config, track_plan

    plan = track_plan(cfg, truncation=[1.0, 0.7], baseline="truncation-0.7")
    assert plan.decoders == "reference" and plan.baseline == "truncation-0.7"
    assert point_config(cfg, plan, plan.points[1]).generator.truncation == 0.7
    assert point_config(cfg, plan, plan.points[1]).discriminator.spec == cfg.discriminator.spec


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"checkpoints": ["nowhere/*.pkl"]}, "matches no file"),
    ({"checkpoints": ["missing.pkl", "b.pkl"]}, "file not found"),
    ({"checkpoints": ["builtin:a"], "truncation": [1.0]}, "not both"),
    ({}, "got neither"),
    ({"checkpoints": ["builtin:a"]}, "at least two"),
    ({"checkpoints": ["builtin:a", "builtin:a"]}, "two points named 'a'"),
    ({"truncation": [1.0, 0.5], "baseline": "e9"}, "'e9' is not one of the points"),
])
def test_plans_that_cannot_work_are_refused_before_any_work(cfg, kwargs, fragment):
    from audit.track.plan import track_plan

    with pytest.raises(ConfigError, match=fragment):
        track_plan(cfg, **kwargs)


def test_a_checkpoint_file_cannot_replace_a_python_spec(tmp_path):
    from audit.config import config_from_dict
    from audit.track.plan import point_config, track_plan

    c = config_from_dict({"discriminator": {"spec": "python:audit.demo.models:DigitsDiscriminator"},
                          "generator": {"spec": "builtin:digits-dcgan"},
                          "paired": {"source": "builtin:digits-paired"},
                          "real": {"source": "builtin:digits-audit"}}, base_dir=tmp_path)
    for k in range(2):
        (tmp_path / f"n{k}.pkl").write_bytes(b"x")
    plan = track_plan(c, checkpoints=[str(tmp_path / "n0.pkl"), str(tmp_path / "n1.pkl")])
    with pytest.raises(ConfigError, match="replaces the file of pickle: specs"):
        point_config(c, plan, plan.points[0])


def test_the_config_track_section_resolves_paths_against_its_folder(tmp_path):
    from audit.config import load_config

    (tmp_path / "audit.yaml").write_text(
        "discriminator: {spec: builtin:digits-dcgan}\ngenerator: {spec: builtin:digits-dcgan}\n"
        "paired: {source: builtin:digits-paired}\nreal: {source: builtin:digits-audit}\n"
        "track: {checkpoints: [ckpt/*.pkl, builtin:digits-dcgan], reference_decoders: ref}\n")
    track = load_config(tmp_path / "audit.yaml").track
    assert track.checkpoints == [str(tmp_path / "ckpt" / "*.pkl"), "builtin:digits-dcgan"]
    assert track.reference_decoders == tmp_path / "ref"


# ---------------------------------------------------------------- exports and report


def test_the_tidy_series_round_trips_through_csv_and_parquet(tmp_path):
    from audit.track.export import COLUMNS, write_series

    rows = _series([0.3, 0.2])
    paths = write_series(rows, tmp_path)
    csv, parquet = pd.read_csv(paths["csv"]), pd.read_parquet(paths["parquet"])
    assert list(csv.columns) == list(COLUMNS) == list(parquet.columns)
    assert len(csv) == len(rows) == len(parquet)
    dark = parquet[(parquet["curve"] == "generated_share") & (parquet["group"] == "tone=dark")]
    assert dark["estimate"].tolist() == pytest.approx([0.3, 0.2])
    assert dark["n"].tolist() == [1000, 1000]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None,
                    reason="tensorboard is installed: the missing-extra message cannot show")
def test_tensorboard_without_the_extra_says_what_to_install(tmp_path):
    from audit.track.tensorboard import series_to_tensorboard

    with pytest.raises(DependencyError, match=r"pip install 'gan-audit\[tensorboard\]'"):
        series_to_tensorboard(_series([0.3, 0.2]), tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard is not installed (optional extra gan-audit[tensorboard])")
def test_tensorboard_scalars_are_the_series(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from audit.track.tensorboard import series_to_tensorboard

    files = series_to_tensorboard(_series([0.3, 0.2]), tmp_path / "tb")
    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    dark = acc.Scalars("generated_share/tone=dark")
    assert [e.step for e in dark] == [0, 1]
    assert [e.value for e in dark] == pytest.approx([0.3, 0.2])


def _doc(values, decoders="per-checkpoint"):
    rows = _series(values)
    s = TrendSettings(n_boot=0)
    trends, changes = rows_to_trends(rows, baseline="ckpt-0", settings=s)
    return {"version": 1, "name": "t", "mode": "checkpoints",
            "concept_set": {"name": "digits_tone", "sha256": "x"},
            "decoders": {"kind": decoders, "reference": "runs/ref" if decoders != "per-checkpoint"
                         else None},
            "baseline": "ckpt-0",
            "settings": {"alpha": 0.05, "n_boot": 0},
            "points": [{"name": f"ckpt-{i}", "index": i, "setting": None,
                        "run": f"track/ckpt-{i}", "seconds": {"extract": 1.0},
                        "reused": {}, "wall_seconds": 1.5} for i in range(len(values))],
            "series": [r.to_json() for r in rows], "trends": [t.to_json() for t in trends],
            "changes": [c.to_json() for c in changes],
            "findings": trends_to_findings(trends, changes, rows, baseline="ckpt-0", settings=s)}


def test_the_report_has_a_titled_chart_with_alt_text_per_curve_and_says_which_decoders():
    from audit.track.document import render_track

    html = render_track(_doc([0.3, 0.25, 0.2]))
    assert html.count("<svg") == html.count('aria-label="Line chart') > 0
    assert "Share of generated images (corrected for decoder error): tone" in html
    assert "Impact ratio of the scoring rate on generated images: tone" in html
    assert "<strong>per checkpoint</strong>" in html
    assert "F-TRD-generated_share-tone=dark" in html
    fixed = render_track(_doc([0.3, 0.25, 0.2], decoders="reference"))
    assert "<strong>fixed</strong>" in fixed and "runs/ref" in fixed


def test_a_sweep_of_a_conditional_generator_samples_every_class(tmp_path):
    from audit.config import config_from_dict
    from audit.track.plan import point_config, track_plan

    def sweep(generator):
        c = config_from_dict({"discriminator": {"spec": "builtin:digits-dcgan"},
                              "generator": {"spec": "builtin:digits-dcgan", **generator},
                              "paired": {"source": "builtin:digits-paired"},
                              "real": {"source": "builtin:digits-audit"}}, base_dir=tmp_path)
        plan = track_plan(c, truncation=[1.0, 0.5])
        return point_config(c, plan, plan.points[1]).generator

    assert sweep({"num_classes": 10}).class_sampling == "uniform"
    assert sweep({"num_classes": 10, "class_label": 3}).class_sampling == "fixed"
    assert sweep({"num_classes": 10, "class_sampling": "fixed"}).class_sampling == "fixed"
    assert sweep({}).class_sampling == "fixed"     # unconditional: nothing to sample


def test_the_demo_configs_track_the_training_run_and_a_sweep():
    from audit.config import load_config
    from audit.pipeline import demo_config
    from audit.track.plan import track_plan

    demo = demo_config().parent
    checkpoints = load_config(demo / "track.yaml")
    models = pytest.importorskip("audit.demo.models")
    if not hasattr(models, "TRACK_CHECKPOINTS"):
        pytest.skip("the demo's training checkpoints are not built yet")
    assert tuple(checkpoints.track.checkpoints) == models.TRACK_CHECKPOINTS
    assert track_plan(checkpoints).decoders == "per-checkpoint"
    sweep = track_plan(load_config(demo / "track_truncation.yaml"))
    assert sweep.mode == "truncation" and [p.setting for p in sweep.points] == [1.0, 0.8, 0.6,
                                                                               0.4]


def test_checkpoint_names_are_safe_folder_and_audit_names():
    from audit.track.plan import checkpoint_name

    assert checkpoint_name("builtin:digits-dcgan-e63") == "digits-dcgan-e63"
    assert checkpoint_name("/runs/network-snapshot-000400.pkl") == "network-snapshot-000400"
    assert checkpoint_name("pickle:/r/my net (final).pkl#D") == "my_net_final_"


def test_a_curve_that_is_the_same_at_every_point_is_not_tested():
    trends, _ = rows_to_trends(_series([0.2, 0.3, 0.4]), baseline="ckpt-0",
                               settings=TrendSettings(n_boot=0))
    light = next(t for t in trends if t.curve == "impact_ratio:scoring_rate:generated"
                 and t.group == "tone=light")          # 1.0 [1.0, 1.0] at every point
    assert light.p_value is None and "same estimate" in light.reason
    assert light.p_holm is None


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None,
                    reason="tensorboard is installed")
def test_cli_track_tensorboard_without_the_extra_stops_before_any_work(tmp_path):
    from click.testing import CliRunner

    from audit.cli import cli

    config = tmp_path / "audit.yaml"
    config.write_text("discriminator: {spec: builtin:digits-dcgan}\n"
                      "generator: {spec: builtin:digits-dcgan}\n"
                      "paired: {source: builtin:digits-paired}\n"
                      "real: {source: builtin:digits-audit}\n"
                      f"out: {tmp_path / 'out'}\n")
    result = CliRunner().invoke(cli, ["track", str(config), "--truncation", "1.0", "0.5",
                                      "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 2
    assert "pip install 'gan-audit[tensorboard]'" in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "tb").exists()


@pytest.mark.parametrize(("args", "fragment"), [
    (["--checkpoints", "--truncation", "1"], "not both"),
    (["1.0", "0.5"], "Put --checkpoints or --truncation before them"),
    (["--truncation"], "needs values after it"),
    (["--truncation", "1.0", "x"], "give numbers"),
    (["--truncation", "1.0", "0"], "not a positive psi"),
    (["--truncation", "1.0", "nan"], "not a positive psi"),
])
def test_cli_track_points_that_make_no_sense(tmp_path, args, fragment):
    from click.testing import CliRunner

    from audit.cli import cli

    result = CliRunner().invoke(cli, ["track", str(tmp_path / "audit.yaml"), *args])
    assert result.exit_code == 2 and fragment in result.output, result.output
