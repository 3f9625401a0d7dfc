"""Power (audit/measure/power.py) against statsmodels' NormalIndPower, "insufficient
evidence" instead of "pass" at small n, and `gan-audit plan`."""

from __future__ import annotations

import math

import pytest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from audit.config import MeasureSettings
from audit.measure import predictions_to_results, validate_results
from audit.measure.power import (
    detectable_h,
    family_size,
    images_needed,
    labels_to_shares,
    lower_rate,
    plan_rows,
    power_of_test,
    power_z,
)
from audit.validation.predictions import Planted, synthetic_predictions

NIP = NormalIndPower()


@pytest.mark.parametrize(("n1", "n2"), [(40, 40), (120, 800), (1423, 3577), (60.5, 33.2),
                                        (200, None)])
@pytest.mark.parametrize("alpha", [0.05, 0.05 / 26])
def test_detectable_effect_matches_statsmodels(n1, n2, alpha) -> None:
    ratio = 0 if n2 is None else n2 / n1
    ref = NIP.solve_power(effect_size=None, nobs1=n1, alpha=alpha, power=0.8, ratio=ratio)
    assert detectable_h(n1, n2, alpha=alpha) == pytest.approx(ref, rel=1e-4)
    assert power_z(0.3, n1, n2, alpha=alpha) == pytest.approx(
        NIP.power(0.3, n1, alpha, ratio=ratio), rel=1e-9)


@pytest.mark.parametrize(("p", "q", "ratio"), [(0.5, 0.4, 1.0), (0.2, 0.15, 2.0),
                                               (0.07, 0.056, 0.5), (0.3, 0.25, None)])
def test_images_needed_matches_statsmodels(p, q, ratio) -> None:
    h = proportion_effectsize(p, q)
    ref = NIP.solve_power(effect_size=h, nobs1=None, alpha=0.01, power=0.8,
                          ratio=0 if ratio is None else ratio)
    assert images_needed(p, q, alpha=0.01, ratio=ratio) == pytest.approx(ref, abs=0.5)


def test_lower_rate_inverts_cohens_h() -> None:
    for p, q in [(0.5, 0.4), (0.07, 0.02), (0.9, 0.5)]:
        assert lower_rate(p, proportion_effectsize(p, q)) == pytest.approx(q, abs=1e-12)
    assert lower_rate(0.05, 2.0) == 0.0


def _treatment_test(n1: int, n2: int, k2: int) -> dict:
    return {"kind": "treatment", "counts": {"k1": n1 // 2, "n1": n1, "k2": k2, "n2": n2,
                                            "expected": None}}


def test_mde_of_a_treatment_test_is_the_ratio_detected_with_80_percent_power() -> None:
    settings = MeasureSettings()
    small = power_of_test(_treatment_test(40, 40, 20), alpha=0.05, settings=settings)
    assert small["metric"] == "impact_ratio" and not small["sufficient"]
    # At the MDE, statsmodels gives exactly 80% power.
    q = 0.5 * small["mde"]
    assert NIP.power(proportion_effectsize(0.5, q), 40, 0.05, ratio=1.0) == pytest.approx(0.8)
    big = power_of_test(_treatment_test(3000, 3000, 1500), alpha=0.05, settings=settings)
    assert big["sufficient"] and big["mde"] > settings.impact_threshold


def test_mde_of_a_share_test_against_a_constant() -> None:
    t = {"kind": "representation", "counts": {"k1": 10, "n1": 100, "k2": None, "n2": None,
                                              "expected": 0.5}}
    rec = power_of_test(t, alpha=0.05, settings=MeasureSettings())
    h = NIP.solve_power(effect_size=None, nobs1=100, alpha=0.05, power=0.8, ratio=0)
    assert rec["mde"] == pytest.approx(0.5 - lower_rate(0.5, h), rel=1e-4)
    assert rec["mde"] > 0.05 and not rec["sufficient"]


def test_small_audits_say_insufficient_evidence_never_pass(cs) -> None:
    frame, validity = synthetic_predictions(70, 70, cs, seed=2,
                                            planted=Planted(generated_score_mean=1.0))
    res = predictions_to_results(frame, cs, validity,
                                 settings=MeasureSettings(n_boot=50, min_group_n=10))
    validate_results(res)
    verdicts = {v["concept"]: v["verdict"] for v in res["verdicts"]}
    assert "pass" not in verdicts.values()
    assert verdicts["tone"] == "insufficient_evidence"
    weak = [r for s in res["treatment"] for r in s["impact"]
            if r["four_fifths"] == "insufficient_evidence"]
    assert weak and all("80% power" in r["reason"] for r in weak)
    assert not any(r["four_fifths"] == "pass" and r["test_id"] for s in res["treatment"]
                   for r in s["impact"])
    for t in res["tests"]:
        assert t["power"] is None or t["power"]["alpha"] == pytest.approx(
            0.05 / len([x for x in res["tests"] if not x.get("duplicate_of")
                         and x["p_value"] is not None]))


def test_large_audits_can_pass(cs) -> None:
    planted = Planted(generated_score_mean=1.0)   # scoring rates near 50% on both sources
    frame, validity = synthetic_predictions(6000, 6000, cs, seed=2, planted=planted)
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=20))
    verdicts = {v["concept"]: v["verdict"] for v in res["verdicts"]}
    assert verdicts["tone"] == "pass", res["verdicts"]


def test_family_size_counts_the_tests_an_audit_runs(cs) -> None:
    frame, validity = synthetic_predictions(600, 600, cs, seed=2, planted=Planted())
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=0))
    family = [t for t in res["tests"] if not t.get("duplicate_of")]
    assert family_size(cs) == len(family)


def test_plan_rows_give_80_percent_power(cs) -> None:
    import pandas as pd

    labels = pd.DataFrame({"tone": ["light"] * 80 + ["dark"] * 20,
                           "stroke": (["thin"] * 7 + ["thick"] * 3) * 10})
    shares = labels_to_shares(labels, cs)
    assert shares["tone"] == {"light": 0.8, "dark": 0.2}
    assert shares["tone+stroke"]["dark+thick"] == pytest.approx(0.06)
    settings = MeasureSettings()
    rows = plan_rows(shares, settings=settings, n_tests=26, ratio=1.0)
    alpha = 0.05 / 26
    dark = next(r for r in rows if r["concept"] == "tone" and r["group"] == "dark")
    n_gen = dark["share_test"]["generated"]
    h = proportion_effectsize(0.2, 0.2 - settings.under_margin)
    assert NIP.power(h, n_gen, alpha, ratio=1.0) == pytest.approx(0.8, abs=1e-3)
    n = dark["impact_test"]                   # dark 20% vs light 80% of n images
    h = proportion_effectsize(0.5, 0.5 * settings.impact_threshold)
    assert NIP.power(h, 0.2 * n, alpha, ratio=0.8 / 0.2) == pytest.approx(0.8, abs=1e-3)
    assert dark["generated"] == max(n_gen, n)
    small = next(r for r in rows if r["group"] == "dark+thick")
    assert small["generated"] > dark["generated"]
    assert all(math.isfinite(r["generated"]) for r in rows)


def test_cli_plan_on_the_demo_config() -> None:
    from click.testing import CliRunner

    from audit.cli import cli
    from audit.pipeline import demo_config

    result = CliRunner().invoke(cli, ["plan", str(demo_config())])
    assert result.exit_code == 0, result.output
    assert "26 tests" in result.output
    lines = [ln.split() for ln in result.output.splitlines()]
    dark = next(ln for ln in lines if ln[:2] == ["tone", "dark"])
    assert dark[2] == "20.0%"


def test_cli_plan_without_labels_is_a_clear_error(tmp_path) -> None:
    from click.testing import CliRunner

    from audit.cli import cli

    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("L", (8, 8), color=i * 40).save(folder / f"{i}.png")
    cfg = tmp_path / "a.yaml"
    cfg.write_text(f"concept_set: digits_tone\ndiscriminator: {{spec: builtin:digits-dcgan}}\n"
                   f"paired: {{source: 'folder:{folder}'}}\nreal: {{source: 'folder:{folder}'}}\n")
    result = CliRunner().invoke(cli, ["plan", str(cfg)])
    assert result.exit_code == 2
    assert "labels" in result.output and "Traceback" not in result.output


def test_power_goes_into_the_tests_table(cs) -> None:
    from audit.measure import results_to_tables

    frame, validity = synthetic_predictions(200, 200, cs, seed=2, planted=Planted())
    res = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=0))
    table = results_to_tables(res)["tests"]
    assert {"power_mde", "power_alpha", "power_sufficient"} <= set(table.columns)
    assert table["power_mde"].notna().all()
