"""Labels to integer codes, and the stratified train/validation/test split (pure numpy)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from audit.concepts import ConceptSet
from audit.errors import DataError

__all__ = ["encode_labels", "stratified_split", "grouped_split", "SPLITS"]

SPLITS = ("train", "val", "test")


def _as_group(value: object) -> str | None:
    """A label cell as a group name; None where missing (None, NaN, empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a numeric column with NaN reads 3 as 3.0
    text = str(value)
    return text or None


def encode_labels(labels: pd.DataFrame, concept_set: ConceptSet) -> np.ndarray:
    """Group names to codes: N x C int64, ``groups.index(label)``, ``-1`` where missing.

    Raises :class:`DataError` if a concept has no column or a label is not one of
    its groups.
    """
    codes = np.full((len(labels), len(concept_set.concepts)), -1, dtype=np.int64)
    for j, concept in enumerate(concept_set.concepts):
        if concept.name not in labels.columns:
            raise DataError(
                f"the labels have no column {concept.name!r} for concept {concept.name!r} of "
                f"concept set {concept_set.name!r} (columns: {list(labels.columns)}). Add the "
                f"column (missing values are allowed) or use a concept set without it.")
        index = {g: i for i, g in enumerate(concept.groups)}
        # Each distinct cell once (pandas' factorize marks missing cells -1).
        keys, uniques = pd.factorize(labels[concept.name], use_na_sentinel=True)
        names = [_as_group(v) for v in uniques]
        bad = sorted({c for c in names if c is not None and c not in index})
        if bad:
            raise DataError(
                f"labels of concept {concept.name!r} include {bad[:5]}, which are not among "
                f"its groups {list(concept.groups)}. Map them to groups in the concept set "
                f"(source 'values'), or leave them empty to mark them unknown.")
        lookup = np.array([index[c] if c is not None else -1 for c in names] + [-1],
                          dtype=np.int64)
        codes[:, j] = lookup[keys]                  # key -1 picks the trailing -1
    return codes


def _strata(codes: np.ndarray, min_size: int) -> np.ndarray:
    """Stratum id per row from crossed code columns; strata under ``min_size`` pooled (-1)."""
    if codes.shape[1] == 0:
        return np.zeros(len(codes), dtype=np.int64)
    _, key, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    key = key.reshape(-1)
    return np.where(counts[key] >= min_size, key, -1)


def grouped_split(codes: np.ndarray, stratify: Sequence[int], fractions: Sequence[float], *,
                  seed: int, groups: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """:func:`stratified_split` that keeps every group of rows (``groups``, N int keys) in
    one split: the groups are split, stratified by their first row's codes."""
    if groups is None:
        return stratified_split(codes, stratify, fractions, seed=seed)
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    part, info = stratified_split(codes[first], stratify, fractions, seed=seed)
    return part[inverse.reshape(-1)], {**info, "grouped": True, "n_groups": len(first)}


def stratified_split(codes: np.ndarray, stratify: Sequence[int], fractions: Sequence[float], *,
                     seed: int) -> tuple[np.ndarray, dict]:
    """Assign every row to train (0), validation (1) or test (2), stratified.

    Rows are stratified by the crossed codes of the ``stratify`` columns (missing is a
    value of its own). Strata too small to reach every split (under ``3 / min(fractions)``
    rows) are pooled into one stratum; when more than half of the rows fall in pooled
    strata the key falls back to the first column alone, then to no stratification.

    Parameters
    ----------
    codes : N x C int
        Label codes from :func:`encode_labels`.
    stratify : list of int
        Columns of ``codes`` to cross (e.g. the protected concepts).
    fractions : (train, val, test)
        Fractions summing to 1.
    seed : int
        Seed of the shuffle within strata.

    Returns
    -------
    split : (N,) int8
        0 = train, 1 = val, 2 = test.
    info : dict
        ``stratify_by`` (the columns finally used) and ``pooled_rows``.
    """
    n = len(codes)
    fr = np.asarray(fractions, dtype=float)
    if n < 3 or round(n * fr.min()) < 1:
        raise DataError(f"{n} labelled images are too few to split into train, validation and "
                        f"test with fractions {list(fractions)}; label more images.")
    min_size = math.ceil(3 / fr.min())
    candidates = [list(stratify), list(stratify[:1]), []]
    for cols in candidates:
        strata = _strata(codes[:, cols], min_size)
        if (strata == -1).mean() <= 0.5:
            break
    rng = np.random.default_rng(seed)
    split = np.empty(n, dtype=np.int8)
    for s in np.unique(strata):
        rows = rng.permutation(np.flatnonzero(strata == s))
        bounds = np.round(np.cumsum(fr) * len(rows)).astype(int)
        split[rows] = np.searchsorted(bounds, np.arange(len(rows)), side="right")
    # Tiny data: make sure each split has at least one row.
    for part in range(3):
        if not (split == part).any():
            donor = int(np.argmax(np.bincount(split, minlength=3)))
            split[np.flatnonzero(split == donor)[0]] = part
    return split, {"stratify_by": cols, "pooled_rows": int((strata == -1).sum())}
