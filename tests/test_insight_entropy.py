"""Per-concept entropy, generated against real: collapse is flagged, equal spread is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy as scipy_entropy

from audit.concepts import load_concept_set
from audit.insight.entropy import counts_to_entropy, normalised_entropy, predictions_to_entropy
from audit.measure.bootstrap import BootstrapSpec

SPEC = BootstrapSpec(n_boot=300, seed=0)


def test_normalised_entropy_matches_scipy():
    counts = np.array([[5, 0, 3, 2], [1, 1, 1, 1], [0, 9, 0, 0]])
    expected = [scipy_entropy(c) / np.log(4) for c in counts]
    np.testing.assert_allclose(normalised_entropy(counts), expected)
    assert np.isnan(normalised_entropy(np.zeros(3)))


def test_collapsed_generated_distribution_is_flagged():
    digit = load_concept_set("digits_tone").concept("digit")
    real = np.full(10, 50)
    collapsed = np.array([0, 0, 0, 480, 20, 0, 0, 0, 0, 0])
    e = counts_to_entropy(digit, real, collapsed, spec=SPEC)
    assert e.flagged and e.ratio < 0.2 and e.ratio_ci[1] < 1
    assert e.missing_groups == ["0", "1", "2", "5", "6", "7", "8", "9"]
    same = counts_to_entropy(digit, real, np.array([48, 52, 50, 49, 51, 50, 47, 53, 50, 50]),
                             spec=SPEC)
    assert not same.flagged and same.ratio_ci[0] <= 1.0 + 1e-9 and same.missing_groups == []


def test_from_predictions_uses_audited_rows():
    cs = load_concept_set("digits_tone")
    rows = []
    for source, tone in (("real", ["light", "dark"] * 100), ("generated", ["light"] * 200)):
        for i, t in enumerate(tone):
            rows.append({"image_id": f"{source}-{i}", "split": "audit", "source": source,
                         "pred__tone": t, "pred__stroke": "thin" if i % 2 else "thick",
                         "pred__digit": str(i % 10)})
    rows.append({"image_id": "x", "split": "train", "source": "generated", "pred__tone": "dark",
                 "pred__stroke": "thin", "pred__digit": "0"})
    out = {e.concept: e for e in predictions_to_entropy(pd.DataFrame(rows), cs, spec=SPEC)}
    assert out["tone"].generated_counts == [200, 0]          # the train row is left out
    assert out["tone"].flagged and out["tone"].entropy_generated == pytest.approx(0.0)
    assert not out["stroke"].flagged and not out["digit"].flagged
