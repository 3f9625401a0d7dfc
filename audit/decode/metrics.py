"""Validity metrics of a concept decoder on held-out rows (pure numpy).

Every function takes integer true codes ``y`` (n,) in ``0 .. K-1`` and decoded
probabilities ``prob`` (n x K, rows summing to 1) of the same rows; rows with a
missing label are removed by the caller. Undefined values (no rows, one class)
are NaN, written as ``null`` in JSON.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "balanced_accuracy", "macro_auroc", "expected_calibration_error",
           "confusion_counts", "concept_metrics"]


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Share of rows whose decoded group ``pred`` equals the true group ``y``."""
    return float(np.mean(y == pred)) if len(y) else float("nan")


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the groups present in ``y`` (scikit-learn's definition)."""
    if not len(y):
        return float("nan")
    present = np.unique(y)
    return float(np.mean([np.mean(pred[y == k] == k) for k in present]))


def _binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted one half; NaN without both classes.

    Each positive score counts the negatives below it (and half of those equal to it),
    by binary search in the sorted negative scores.
    """
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg = np.sort(score[~positive])
    pos = score[positive]
    below = np.searchsorted(neg, pos, side="left")
    upto = np.searchsorted(neg, pos, side="right")
    return float((below.sum() + 0.5 * (upto - below).sum()) / (n_pos * n_neg))


def macro_auroc(y: np.ndarray, prob: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the groups present (both sides) in ``y``.

    For two groups this is the AUROC of the positive group's probability.
    """
    k = prob.shape[1]
    if k == 2:
        return _binary_auroc(y == 1, prob[:, 1])
    values = [_binary_auroc(y == j, prob[:, j]) for j in range(k)]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, *, bins: int = 15) -> float:
    """Top-label expected calibration error with ``bins`` equal-width confidence bins.

    ECE = sum over bins of (rows in bin / n) * |accuracy in bin - mean confidence in bin|,
    where confidence is the largest probability of a row and a row is correct when its
    argmax is its true group.
    """
    if not len(y):
        return float("nan")
    conf = prob.max(axis=1)
    correct = (prob.argmax(axis=1) == y).astype(float)
    # Bin edges (0, 1/bins], ..., ((bins-1)/bins, 1]; confidence is always >= 1/K > 0.
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, correct, bins) - np.bincount(idx, conf, bins))
    return float(gap.sum() / len(y)) if count.sum() else float("nan")


def confusion_counts(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """K x K counts: row = true group, column = decoded group."""
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def concept_metrics(y: np.ndarray, prob: np.ndarray, pred: np.ndarray,
                    protected: dict[str, tuple[tuple[str, ...], np.ndarray]]) -> dict:
    """Held-out validity of one concept's decoder.

    Parameters
    ----------
    y : (n,) int
        True group codes, ``-1`` where the label is missing (those rows are ignored).
    prob : n x K float
        Decoded (calibrated) group probabilities.
    pred : (n,) int
        Decoded group codes.
    protected : {name: (groups, codes)}
        Every protected concept's groups and true codes (n,) of the same rows, ``-1``
        where missing; gives the accuracy within each of its groups.

    Returns
    -------
    dict
        ``n_test``, ``confusion`` (counts), ``accuracy``, ``balanced_accuracy``, ``auroc``,
        ``ece`` and ``group_accuracy`` as in ``decoders/validity.json``.
    """
    known = y >= 0
    yk, pk, dk = y[known], prob[known], pred[known]
    group_acc = {
        name: {g: accuracy(yk[codes[known] == j], dk[codes[known] == j])
               for j, g in enumerate(groups)}
        for name, (groups, codes) in protected.items()
    }
    return {
        "n_test": int(known.sum()),
        "confusion": confusion_counts(yk, dk, prob.shape[1]).tolist(),
        "accuracy": accuracy(yk, dk),
        "balanced_accuracy": balanced_accuracy(yk, dk),
        "auroc": macro_auroc(yk, pk),
        "ece": expected_calibration_error(yk, pk),
        "group_accuracy": group_acc,
    }
