"""Validity metrics against scikit-learn, and the stratified split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from audit.decode.metrics import (
    accuracy,
    balanced_accuracy,
    concept_metrics,
    confusion_counts,
    expected_calibration_error,
    macro_auroc,
)
from audit.decode.split import encode_labels, stratified_split
from audit.errors import DataError
from audit.validation.decoders import planted_concept_set


def _random_case(k: int, n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    prob = np.round(prob, 2)                      # create ties for the AUROC
    prob /= prob.sum(1, keepdims=True)
    return y, prob, prob.argmax(1)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_metrics_match_sklearn(k):
    y, prob, pred = _random_case(k, seed=k)
    assert accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    assert balanced_accuracy(y, pred) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    expected = (skm.roc_auc_score(y, prob[:, 1]) if k == 2
                else skm.roc_auc_score(y, prob, multi_class="ovr", average="macro"))
    assert macro_auroc(y, prob) == pytest.approx(expected)
    np.testing.assert_array_equal(confusion_counts(y, pred, k),
                                  skm.confusion_matrix(y, pred, labels=range(k)))


def test_ece_closed_form():
    # Four rows: confidences 0.9, 0.9 (one right) in bin 14; 0.6, 0.6 (both right) in bin 9.
    prob = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 0, 0, 1])
    # bin of 0.9: acc 0.5, conf 0.9 -> |0.4| * 2/4; bin of 0.6: acc 1, conf 0.6 -> 0.4 * 2/4
    assert expected_calibration_error(y, prob) == pytest.approx(0.4)
    perfect = np.eye(3)[[0, 1, 2]]
    assert expected_calibration_error(np.array([0, 1, 2]), perfect) == 0.0
    assert np.isnan(expected_calibration_error(np.array([], int), np.zeros((0, 2))))


def test_undefined_metrics_are_nan():
    y = np.array([1, 1, 1])
    prob = np.array([[0.2, 0.8]] * 3)
    assert np.isnan(macro_auroc(y, prob))
    assert balanced_accuracy(y, np.array([1, 1, 0])) == pytest.approx(2 / 3)


def test_concept_metrics_ignore_missing_and_split_by_protected_group():
    y = np.array([0, 1, 1, -1, 0, 1])
    prob = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.5, 0.5], [0.9, 0.1], [0.1, 0.9]])
    pred = prob.argmax(1)
    tone = np.array([0, 0, 1, 1, 1, -1])
    m = concept_metrics(y, prob, pred, {"tone": (("light", "dark"), tone)})
    assert m["n_test"] == 5 and m["confusion"] == [[2, 0], [1, 2]]
    assert m["accuracy"] == pytest.approx(4 / 5)
    assert m["group_accuracy"] == {"tone": {"light": 1.0, "dark": 0.5}}


def test_encode_labels():
    cs = planted_concept_set()
    labels = pd.DataFrame({"image_id": ["a", "b", "c"], "tone": ["dark", None, np.nan],
                           "stroke": ["thin", "thick", ""], "digit": [3.0, np.nan, 0.0],
                           "ring": ["inside", "outside", "inside"]})
    codes = encode_labels(labels, cs)
    np.testing.assert_array_equal(codes, [[1, 0, 3, 0], [-1, 1, -1, 1], [-1, -1, 0, 0]])
    with pytest.raises(DataError, match="no column 'ring' for concept 'ring'"):
        encode_labels(labels.drop(columns="ring"), cs)
    # pandas' own missing value, string and categorical columns read the same.
    typed = labels.assign(tone=pd.array(["dark", pd.NA, "light"], dtype="string"),
                          ring=pd.Categorical(["inside", "outside", "inside"]))
    np.testing.assert_array_equal(encode_labels(typed, cs)[:, [0, 3]], [[1, 0], [-1, 1], [0, 0]])
    with pytest.raises(DataError, match=r"include \['grey', 'purple'\], which are not among"):
        encode_labels(labels.assign(tone=["purple", "grey", "dark"]), cs)


def test_stratified_split_keeps_strata_shares_and_is_seeded():
    rng = np.random.default_rng(0)
    codes = np.stack([rng.random(2000) < 0.2, rng.integers(0, 3, 2000)], axis=1).astype(int)
    split, info = stratified_split(codes, [0, 1], (0.6, 0.2, 0.2), seed=0)
    assert info == {"stratify_by": [0, 1], "pooled_rows": 0}
    assert np.bincount(split).tolist() == pytest.approx([1200, 400, 400], abs=6)
    for part in range(3):
        share = codes[split == part, 0].mean()
        assert share == pytest.approx(codes[:, 0].mean(), abs=0.01)
    again, _ = stratified_split(codes, [0, 1], (0.6, 0.2, 0.2), seed=0)
    other, _ = stratified_split(codes, [0, 1], (0.6, 0.2, 0.2), seed=1)
    assert (again == split).all() and not (other == split).all()


def test_stratified_split_falls_back_for_rare_strata():
    # Crossing two near-unique columns leaves only rare strata: fall back to the first.
    rng = np.random.default_rng(1)
    codes = np.stack([rng.integers(0, 2, 60), np.arange(60)], axis=1)
    split, info = stratified_split(codes, [0, 1], (0.6, 0.2, 0.2), seed=0)
    assert info["stratify_by"] == [0]
    assert set(np.unique(split)) == {0, 1, 2}
    tiny, _ = stratified_split(np.zeros((4, 1), int), [0], (0.6, 0.2, 0.2), seed=0)
    assert set(np.unique(tiny)) == {0, 1, 2}
    with pytest.raises(DataError, match="2 labelled images are too few"):
        stratified_split(np.zeros((2, 1), int), [0], (0.6, 0.2, 0.2), seed=0)
