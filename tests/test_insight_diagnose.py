"""Failure diagnosis names the planted group the discriminator scores low, with intervals."""

from __future__ import annotations

import numpy as np
import pytest

from audit.concepts import load_concept_set
from audit.errors import DataError
from audit.insight.diagnose import predictions_to_diagnosis
from audit.measure.bootstrap import BootstrapSpec
from audit.validation.predictions import Planted, synthetic_predictions

SPEC = BootstrapSpec(n_boot=300, seed=0)


@pytest.fixture(scope="module")
def planted():
    cs = load_concept_set("digits_tone")
    # a discriminator made to score thick strokes low on real images, and nothing else
    planted = Planted(real_shares={"stroke": {"thick": 0.4}}, accuracy={"stroke": 0.97},
                      score_shift={("stroke", "thick", "real"): -2.0})
    table, _ = synthetic_predictions(1200, 800, cs, seed=5, planted=planted)
    return table, cs


def test_names_the_planted_group_with_intervals(planted):
    table, cs = planted
    d = predictions_to_diagnosis(table, cs, reject_share=0.2, spec=SPEC)
    named = [(g.source, g.concept, g.group) for g in d.named]
    assert named == [("real", "stroke", "thick")]
    g = d.named[0]
    assert g.lift_ci[0] > 1.5 and g.lift_ci[0] <= g.lift <= g.lift_ci[1]
    assert g.p_holm < 1e-10
    assert "scores stroke = thick lowest among real images" in d.summary()[0]
    doc = d.to_json()
    assert doc["named"][0]["group"] == "thick" and len(doc["sources"]) == 2


def test_lift_and_counts_match_a_direct_computation(planted):
    table, cs = planted
    d = predictions_to_diagnosis(table, cs, reject_share=0.2, spec=SPEC)
    real = table[(table["split"] == "audit") & (table["source"] == "real")]
    real = real.sort_values(["score", "image_id"], kind="stable")
    n_rej = int(np.floor(0.2 * len(real)))
    rejected = real.head(n_rej)
    for g in (x for x in d.lifts if x.source == "real" and x.concept == "tone"):
        share_rej = (rejected["pred__tone"] == g.group).mean()
        share_all = (real["pred__tone"] == g.group).mean()
        assert g.lift == pytest.approx(share_rej / share_all)
        assert g.n_rejected == n_rej and g.k_rejected == (rejected["pred__tone"] == g.group).sum()
    src = next(s for s in d.sources if s.source == "real")
    assert [r["image_id"] for r in src.most_rejected] == list(rejected["image_id"].head(16))
    assert src.threshold == pytest.approx(rejected["score"].iloc[-1])
    gen = next(s for s in d.sources if s.source == "generated")
    assert gen.n_missing_score == 0


def test_no_group_named_without_a_planted_gap():
    cs = load_concept_set("digits_tone")
    table, _ = synthetic_predictions(800, 800, cs, seed=2, planted=Planted())
    assert predictions_to_diagnosis(table, cs, spec=SPEC).named == []


def test_bad_inputs_say_what_to_fix(planted):
    table, cs = planted
    with pytest.raises(DataError, match="strictly between 0 and 1"):
        predictions_to_diagnosis(table, cs, reject_share=1.0)
    with pytest.raises(DataError, match="lacks columns"):
        predictions_to_diagnosis(table.drop(columns=["pred__tone"]), cs)
