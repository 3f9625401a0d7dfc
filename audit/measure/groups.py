"""Group codes of the audited images, and the cell counts every measurement rests on.

A *grouping* is one concept, or one intersection of protected concepts. Each image
gets an integer code per grouping: ``0 .. G-1`` for its group, ``G`` for ``unknown``
(decoded with a max probability under ``unknown_below``). All rate metrics,
shares and their bootstrap replicates are functions of one cell-count vector per
grouping: the audited images counted by (source, group, score state), followed by
the held-out confusion counts of the concepts involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from audit.concepts import Concept, ConceptSet

__all__ = ["Grouping", "groupings", "score_states", "ScoreState", "N_STATES", "VALID_STATES",
           "ACCEPTED_STATES", "ABOVE_MEDIAN_STATES", "SOURCES", "SHARE_PARTS", "UNKNOWN",
           "CellLayout"]

SOURCES = ("real", "generated")
#: Parts of the share cells: each source split into images with a known true group
#: (counted by it) and images without (counted by their decoded group).
SHARE_PARTS = ("real_labelled", "real_unlabelled", "generated_labelled",
               "generated_unlabelled")
UNKNOWN = "unknown"


class ScoreState(IntEnum):
    """What an audited image's score says: the last axis of the treatment cells.

    A finite score is above the median score of the real audited images or not (at or
    below it), and above ``accept_threshold`` (accepted as real) or not.
    """

    INVALID = 0                   # NaN or infinite score
    BELOW_MEDIAN = 1
    BELOW_MEDIAN_ACCEPTED = 2
    ABOVE_MEDIAN = 3
    ABOVE_MEDIAN_ACCEPTED = 4


#: Number of score states (the length of the treatment cells' last axis).
N_STATES = len(ScoreState)
#: States of images with a finite score, of those accepted as real, and of those scored
#: above the real median: sums over them give the rates' denominators and numerators.
VALID_STATES = (ScoreState.BELOW_MEDIAN, ScoreState.BELOW_MEDIAN_ACCEPTED,
                ScoreState.ABOVE_MEDIAN, ScoreState.ABOVE_MEDIAN_ACCEPTED)
ACCEPTED_STATES = (ScoreState.BELOW_MEDIAN_ACCEPTED, ScoreState.ABOVE_MEDIAN_ACCEPTED)
ABOVE_MEDIAN_STATES = (ScoreState.ABOVE_MEDIAN, ScoreState.ABOVE_MEDIAN_ACCEPTED)
SEP = "+"


@dataclass(frozen=True)
class Grouping:
    """One concept or intersection, with the group code of every audited image.

    Attributes
    ----------
    name
        ``"tone"``, or ``"tone+stroke"`` for an intersection.
    concepts
        The concepts crossed (one for a plain concept).
    groups
        G group labels; intersection labels join the parts with ``+`` (``"dark+thick"``),
        in the order of ``numpy.kron`` of the parts.
    protected
        Whether verdicts and tests apply.
    best
        (N,) codes in ``[0, G]``: the true group where known, else the decoded one
        (``G`` = unknown).
    decoded
        (N,) decoded codes in ``[0, G]``.
    labelled
        (N,) whether the image's true group is known (of every crossed concept).
    confusions
        Held-out confusion counts (K_i x K_i) of each crossed concept, or None where
        validity has none (then no correction); for an intersection whose joint
        confusion validity measured, that one G x G matrix.
    joint
        Whether ``confusions`` is an intersection's measured joint confusion.
    fallback
        Why an intersection's correction falls back to the Kronecker product of its
        concepts' confusions (None for plain concepts and joint corrections).
    """

    name: str
    concepts: tuple[str, ...]
    groups: tuple[str, ...]
    protected: bool
    best: np.ndarray
    decoded: np.ndarray
    labelled: np.ndarray
    confusions: tuple[np.ndarray, ...] | None
    joint: bool = False
    fallback: str | None = None

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def is_intersection(self) -> bool:
        return len(self.concepts) > 1

    def labels(self) -> list[str]:
        """Group labels with ``unknown`` last (index G)."""
        return [*self.groups, UNKNOWN]


@dataclass(frozen=True)
class CellLayout:
    """Where each count sits in a grouping's cell vector.

    The first ``n_parts * (G + 1) * n_states`` cells are audited images by
    (part, group incl. unknown, state); then each crossed concept's confusion counts,
    row by row. Treatment cells have 2 parts (the sources) and the :class:`ScoreState`
    states; share cells have 4 parts (:data:`SHARE_PARTS`) and one state.
    """

    n_groups: int
    confusion_sizes: tuple[int, ...]
    n_parts: int = 2
    n_states: int = N_STATES

    @property
    def n_audit(self) -> int:
        return self.n_parts * (self.n_groups + 1) * self.n_states

    @property
    def size(self) -> int:
        return self.n_audit + sum(k * k for k in self.confusion_sizes)

    def audit(self, cells: np.ndarray) -> np.ndarray:
        """(B, C) -> (B, n_parts, G + 1, n_states) audited image counts."""
        return cells[:, :self.n_audit].reshape(len(cells), self.n_parts, self.n_groups + 1,
                                               self.n_states)

    def confusions(self, cells: np.ndarray) -> list[np.ndarray]:
        """(B, C) -> list of (B, K_i, K_i) confusion counts."""
        out, start = [], self.n_audit
        for k in self.confusion_sizes:
            out.append(cells[:, start:start + k * k].reshape(len(cells), k, k))
            start += k * k
        return out

    def strata(self, *, stratified: bool) -> np.ndarray:
        """Resampling strata of the cells: confusion rows are always their own strata (the
        held-out set is resampled per true group); audited cells form one stratum, or one
        per (part, group) when ``stratified``."""
        if stratified:
            audit = np.repeat(np.arange(self.n_parts * (self.n_groups + 1)), self.n_states)
        else:
            audit = np.zeros(self.n_audit, dtype=int)
        parts, next_label = [audit], int(audit.max()) + 1
        for k in self.confusion_sizes:
            parts.append(np.repeat(np.arange(next_label, next_label + k), k))
            next_label += k
        return np.concatenate(parts)


def score_states(scores: np.ndarray, median: float, accept_threshold: float) -> np.ndarray:
    """(N,) :class:`ScoreState` codes of the images' ``scores`` (N,): INVALID where a score
    is NaN or infinite, else whether it is above ``median`` and above ``accept_threshold``."""
    scores = np.asarray(scores, dtype=float)
    with np.errstate(invalid="ignore"):
        above, accepted = scores > median, scores > accept_threshold
    state = np.select([above & accepted, above, accepted],
                      [ScoreState.ABOVE_MEDIAN_ACCEPTED, ScoreState.ABOVE_MEDIAN,
                       ScoreState.BELOW_MEDIAN_ACCEPTED], ScoreState.BELOW_MEDIAN)
    return np.where(np.isfinite(scores), state, ScoreState.INVALID)


def _codes(values: pd.Series, concept: Concept, column: str) -> np.ndarray:
    """Group names -> codes (-1 where missing); a DataError naming unknown names.

    Each distinct value is read as text once (a million rows hold a few distinct names;
    a categorical column is not expanded at all), then the rows take its code.
    """
    import pandas as pd

    if isinstance(values.dtype, pd.CategoricalDtype):               # categories present
        index = values.cat.codes.to_numpy().astype(np.int64)
        present = np.bincount(index[index >= 0], minlength=len(values.cat.categories)) > 0
        uniques = np.asarray(values.cat.categories, dtype=object)[present]
        index = np.append(np.cumsum(present) - 1, -1)[index]
    else:
        index, uniques = pd.factorize(values, use_na_sentinel=True)    # -1 where missing
    text = pd.Series(np.asarray(uniques, dtype=object), dtype=object).astype("string")
    known = {g: i for i, g in enumerate(concept.groups)}
    bad = sorted({t for t in text if t not in known})
    if bad:
        raise DataError(f"predictions column {column!r} holds group(s) {bad[:5]} that concept "
                        f"{concept.name!r} does not have ({list(concept.groups)}). Decode with "
                        f"the same concept set, or fix the labels.")
    lookup = np.array([known[t] for t in text] + [-1], dtype=np.int64)
    return lookup[index]                                            # index -1: the last, -1


def _concept_codes(frame: pd.DataFrame, concept: Concept, *, unknown_below: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best, decoded, labelled) for one concept; unknown is code K."""
    k = concept.n_groups
    decoded = _codes(frame[f"pred__{concept.name}"], concept, f"pred__{concept.name}")
    if np.any(decoded < 0):
        raise DataError(f"predictions column 'pred__{concept.name}' has missing values; every "
                        f"image must have a decoded group. Re-run the decode stage.")
    unsure = np.zeros(len(frame), dtype=bool)
    if unknown_below > 0:
        probs = frame[[f"prob__{concept.name}__{g}" for g in concept.groups]].to_numpy(float)
        unsure = np.nanmax(probs, axis=1) < unknown_below
    decoded = np.where(unsure, k, decoded)
    true_col = f"true__{concept.name}"
    if true_col in frame:
        true = _codes(frame[true_col], concept, true_col)
        labelled = true >= 0
        best = np.where(labelled, true, decoded)
    else:
        labelled = np.zeros(len(frame), dtype=bool)
        best = decoded
    return best, decoded, labelled


def required_columns(concept_set: ConceptSet, unknown_below: float) -> list[str]:
    """Columns ``predictions`` must have for this concept set."""
    cols = ["split", "source", "score", "image_id"]
    for c in concept_set.concepts:
        cols.append(f"pred__{c.name}")
        if unknown_below > 0:
            cols += [f"prob__{c.name}__{g}" for g in c.groups]
    return cols


def groupings(frame: pd.DataFrame, concept_set: ConceptSet, validity: dict[str, Any], *,
              unknown_below: float) -> tuple[list[Grouping], list[Grouping]]:
    """The groupings of the audited rows: (one per concept, one per intersection).

    ``frame`` holds only the audited rows. Intersections cross the codes of their
    concepts; an image unknown in any part is unknown in the intersection.
    """
    per_concept: dict[str, Grouping] = {}
    for concept in concept_set.concepts:
        best, decoded, labelled = _concept_codes(frame, concept, unknown_below=unknown_below)
        conf = _confusion(validity, concept)
        per_concept[concept.name] = Grouping(
            name=concept.name, concepts=(concept.name,), groups=tuple(concept.groups),
            protected=concept.protected, best=best, decoded=decoded, labelled=labelled,
            confusions=None if conf is None else (conf,))
    crossed = []
    for combo in concept_set.intersections:
        parts = [per_concept[name] for name in combo]
        best = _cross([p.best for p in parts], [p.n_groups for p in parts])
        decoded = _cross([p.decoded for p in parts], [p.n_groups for p in parts])
        labels = [""]
        for p in parts:
            labels = [f"{a}{SEP}{g}" if a else g for a in labels for g in p.groups]
        confs = None if any(p.confusions is None for p in parts) else \
            tuple(p.confusions[0] for p in parts)  # type: ignore[index]
        joint, fallback = _joint_confusion(validity, SEP.join(combo), labels)
        crossed.append(Grouping(name=SEP.join(combo), concepts=tuple(combo),
                                groups=tuple(labels), protected=True, best=best,
                                decoded=decoded,
                                labelled=np.logical_and.reduce([p.labelled for p in parts]),
                                confusions=confs if joint is None else (joint,),
                                joint=joint is not None, fallback=fallback))
    return list(per_concept.values()), crossed


def _cross(codes: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    total = int(np.prod(sizes))
    out = np.zeros(len(codes[0]), dtype=np.int64)
    unknown = np.zeros(len(codes[0]), dtype=bool)
    for c, k in zip(codes, sizes, strict=True):
        unknown |= c >= k
        out = out * k + np.minimum(c, k - 1)
    return np.where(unknown, total, out)


def _confusion(validity: dict[str, Any], concept: Concept) -> np.ndarray | None:
    """The held-out confusion counts of ``concept`` in its group order, or None."""
    entry = (validity.get("concepts") or {}).get(concept.name)
    if not entry or entry.get("confusion") is None:
        return None
    return _counts(entry, concept.name, list(concept.groups))


def _joint_confusion(validity: dict[str, Any], name: str, groups: list[str]
                     ) -> tuple[np.ndarray | None, str | None]:
    """An intersection's measured joint confusion counts (G x G, rows in ``groups``
    order), or None and why the Kronecker product is used instead."""
    entry = (validity.get("intersections") or {}).get(name)
    if not entry or entry.get("confusion") is None:
        return None, (f"validity.json has no joint confusion for {name} (decoders trained "
                      f"before it was recorded; re-run train-decoders to measure it)")
    conf = _counts(entry, name, groups)
    empty = [groups[i] for i in np.flatnonzero(conf.sum(axis=1) == 0)]
    if empty:
        return None, (f"the joint confusion of {name} has no held-out image in group(s) "
                      f"{empty}, so its rows for them are unknown")
    return conf, None


def _counts(entry: dict[str, Any], name: str, groups: list[str]) -> np.ndarray:
    """The confusion counts of a validity entry reordered to ``groups``; a DataError
    when they do not fit."""
    conf = np.asarray(entry["confusion"], dtype=float)
    order = list(entry.get("groups") or groups)
    k = len(groups)
    if conf.shape != (k, k) or sorted(order) != sorted(groups):
        raise DataError(f"validity.json: the confusion matrix of {name!r} is "
                        f"{conf.shape[0]}x{conf.shape[1] if conf.ndim > 1 else 0} over groups "
                        f"{order}, but {name!r} has groups {groups}. Re-run "
                        f"train-decoders with this concept set.")
    if np.any(conf < 0) or np.any(conf != np.round(conf)):
        raise DataError(f"validity.json: the confusion matrix of {name!r} must hold "
                        f"non-negative counts (rows = true group), got {conf.tolist()}.")
    idx = [order.index(g) for g in groups]
    return conf[np.ix_(idx, idx)].astype(np.int64)
