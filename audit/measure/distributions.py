"""Score distributions per group: binned discriminator scores, for the report's histograms.

The mean score and the rates of a group summarise its score distribution in a few
numbers; the histogram shows what they hide (two modes, a long tail under the
acceptance threshold). Every concept's histograms share one set of bin edges (equal
widths over the range of all finite audited scores), so a reader compares concepts on
one axis, and the counts are plain ``numpy.histogram`` counts of each (source, group)'s
finite scores: the report draws them from results.json alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from audit.measure.groups import SOURCES

__all__ = ["HIST_BINS", "score_bin_edges", "score_histogram"]

#: Bins of every score histogram: about 30 images per bin for groups of 1,000.
HIST_BINS = 30


def score_bin_edges(scores: np.ndarray, *, bins: int = HIST_BINS) -> np.ndarray | None:
    """``bins + 1`` equal-width edges over the range of the finite ``scores`` (N,);
    None when no score is finite. One score for every image gives a unit-wide range
    around it (``numpy.histogram_bin_edges``' rule)."""
    finite = np.asarray(scores, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    return np.histogram_bin_edges(finite, bins=bins)


def score_histogram(scores: np.ndarray, source: np.ndarray, codes: np.ndarray,
                    labels: list[str], edges: np.ndarray) -> dict[str, Any]:
    """Counts of finite scores per bin, per source and group.

    Parameters
    ----------
    scores
        (N,) discriminator scores (output units); NaN and infinite ones are left out.
    source
        (N,) 0 real, 1 generated.
    codes
        (N,) group codes in ``[0, len(labels))`` (a grouping's ``best``).
    labels
        Group labels by code (``unknown`` last); a group with no image of a source is
        left out of that source.
    edges
        (B + 1,) increasing bin edges (:func:`score_bin_edges`).

    Returns
    -------
    ``{"edges": [B + 1 floats], "counts": {source: {group: [B ints]}}}``; each list
    equals ``numpy.histogram(scores[rows], bins=edges)[0]`` over that source and group's
    finite scores.
    """
    scores = np.asarray(scores, dtype=float)
    source, codes = np.asarray(source), np.asarray(codes)
    edges = np.asarray(edges, dtype=float)
    finite = np.isfinite(scores)
    rows = np.zeros((len(SOURCES), len(labels)), dtype=bool)
    rows.flat[np.unique(source[finite] * len(labels) + codes[finite])] = True
    # numpy.histogram's bins in one pass over all groups: [e_i, e_i+1), the last one closed,
    # values outside the edges left out
    inside = finite & (scores >= edges[0]) & (scores <= edges[-1])
    n_bins = len(edges) - 1
    bins = np.minimum(np.searchsorted(edges, scores[inside], side="right") - 1, n_bins - 1)
    table = np.bincount((source[inside] * len(labels) + codes[inside]) * n_bins + bins,
                        minlength=len(SOURCES) * len(labels) * n_bins
                        ).reshape(len(SOURCES), len(labels), n_bins)
    counts: dict[str, dict[str, list[int]]] = {}
    for s, name in enumerate(SOURCES):
        per = {label: table[s, code].astype(int).tolist()
               for code, label in enumerate(labels) if rows[s, code]}
        if per:
            counts[name] = per
    return {"edges": [float(e) for e in edges], "counts": counts}
