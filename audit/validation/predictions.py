"""Synthetic per-image tables with planted disparities, for tests, fixtures and benchmarks.

:func:`synthetic_predictions` builds what the decode stage would write
(``predictions.parquet`` and ``decoders/validity.json``, see docs/ARCHITECTURE.md) for
any concept set, without images, models or decoders: true groups are drawn from
planted shares, decoded groups from a planted confusion matrix, and discriminator
scores from a normal law shifted per group. Because the truth is planted, a
measurement can be checked against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from audit.concepts import Concept, ConceptSet

__all__ = ["Planted", "DIGITS_PLANTED", "synthetic_predictions", "synthetic_results",
           "planted_confusion"]


@dataclass(frozen=True)
class Planted:
    """The truth planted in a synthetic audit table.

    Attributes
    ----------
    real_shares, generated_shares
        ``{concept: {group: share}}``; groups not named share what is left equally;
        concepts not named are uniform. Concepts are drawn independently.
    score_shift
        ``{(concept, group, source): shift}`` added to the score of every image of that
        group and source (source ``"real"`` or ``"generated"``), in logit units.
    accuracy
        Held-out accuracy of the decoder per concept: a float (every group) or
        ``{group: accuracy}``; errors spread evenly over the other groups. Default 0.95.
    real_score_mean, generated_score_mean, score_sd
        Normal law of the discriminator's logit before shifts.
    true_known
        Fraction of real audit images whose true labels are known.
    n_test
        Size of the held-out labelled set (rows with ``split == "test"``) on which the
        confusion matrices of ``validity`` are counted.
    invalid_scores
        Number of generated images whose score is NaN (a degenerate case to report).
    """

    real_shares: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    generated_shares: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    score_shift: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    accuracy: Mapping[str, float | Mapping[str, float]] = field(default_factory=dict)
    real_score_mean: float = 1.0
    generated_score_mean: float = -0.5
    score_sd: float = 1.0
    true_known: float = 1.0
    n_test: int = 600
    invalid_scores: int = 0


#: The demo's planted truth on ``digits_tone``: the generator makes too few dark
#: images (20% against 50% among real ones), the discriminator accepts thick generated
#: strokes far less often, and scores dark real images slightly lower.
DIGITS_PLANTED = Planted(
    real_shares={"tone": {"dark": 0.5}, "stroke": {"thick": 0.5}},
    generated_shares={"tone": {"dark": 0.2}, "stroke": {"thick": 0.5}},
    score_shift={("stroke", "thick", "generated"): -1.0, ("tone", "dark", "real"): -0.3},
    accuracy={"digit": 0.9, "tone": 0.97, "stroke": {"thin": 0.92, "thick": 0.88}},
    invalid_scores=3,
)


def _shares(concept: Concept, given: Mapping[str, float] | None) -> np.ndarray:
    """Shares of ``concept``'s groups (K,), given ones fixed, the rest split evenly."""
    given = dict(given or {})
    unknown = set(given) - set(concept.groups)
    if unknown:
        raise ValueError(f"planted shares name groups {sorted(unknown)} that concept "
                         f"{concept.name!r} does not have ({list(concept.groups)})")
    rest = [g for g in concept.groups if g not in given]
    left = 1.0 - sum(given.values())
    if left < -1e-9 or (not rest and abs(left) > 1e-9):
        raise ValueError(f"planted shares of {concept.name!r} must sum to 1, got {given}")
    p = np.array([given.get(g, max(left, 0.0) / max(len(rest), 1)) for g in concept.groups])
    return p / p.sum()


def planted_confusion(concept: Concept, accuracy: float | Mapping[str, float] = 0.95
                      ) -> np.ndarray:
    """Row-stochastic confusion matrix (K x K, rows true, columns decoded) of a decoder.

    ``accuracy`` is the diagonal (one float, or per group); errors spread evenly.
    """
    k = concept.n_groups
    if isinstance(accuracy, Mapping):
        acc = np.array([float(accuracy.get(g, 0.95)) for g in concept.groups])
    else:
        acc = np.full(k, float(accuracy))
    a = np.repeat(((1.0 - acc) / (k - 1))[:, None], k, axis=1)
    np.fill_diagonal(a, acc)
    return a


def _decode(rng: np.random.Generator, true: np.ndarray, a: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Decoded groups (N,) drawn from rows of ``a`` and probabilities (N, K) whose argmax
    is the decoded group (the top probability is uniform in [max(0.5, 1/K + 0.05), 1))."""
    n, k = len(true), a.shape[0]
    cum = np.cumsum(a[true], axis=1)
    decoded = (rng.random((n, 1)) > cum).sum(axis=1).clip(0, k - 1)
    top = rng.uniform(max(0.5, 1.0 / k + 0.05), 1.0, size=n)
    rest = rng.dirichlet(np.ones(k - 1), size=n) * (1.0 - top)[:, None] if k > 2 else \
        (1.0 - top)[:, None]
    probs = np.empty((n, k))
    for j in range(k):
        others = [i for i in range(k) if i != j]
        rows = decoded == j
        probs[rows, j] = top[rows]
        probs[np.ix_(rows, others)] = rest[rows]
    return decoded, probs


def _validity_entry(concept: Concept, true: np.ndarray, decoded: np.ndarray,
                    probs: np.ndarray, groups_of: dict[str, tuple[tuple[str, ...], np.ndarray]],
                    rng: np.random.Generator) -> dict[str, Any]:
    """The validity.json entry of one concept from its simulated held-out rows."""
    from sklearn.metrics import roc_auc_score

    k = concept.n_groups
    conf = np.zeros((k, k), dtype=int)
    np.add.at(conf, (true, decoded), 1)
    recall = np.diag(conf) / np.maximum(conf.sum(axis=1), 1)
    accuracy = float(np.mean(true == decoded))
    if len(np.unique(true)) < 2:
        auroc = None
    elif k == 2:
        auroc = float(roc_auc_score(true, probs[:, 1]))
    else:
        auroc = float(roc_auc_score(true, probs, multi_class="ovr", labels=list(range(k))))
    conf_top = probs.max(axis=1)
    bins = np.minimum((conf_top * 10).astype(int), 9)
    ece = float(sum(abs(np.mean(true[bins == b] == decoded[bins == b]) - conf_top[bins == b].mean())
                    * np.mean(bins == b) for b in range(10) if np.any(bins == b)))
    control = float(np.mean(rng.permutation(true) == decoded))
    group_accuracy = {
        other: {g: (float(np.mean(true[codes == i] == decoded[codes == i]))
                    if np.any(codes == i) else None) for i, g in enumerate(groups)}
        for other, (groups, codes) in groups_of.items()}
    return {
        "layer": "synthetic",
        "groups": list(concept.groups),
        "n_test": len(true),
        "confusion": conf.tolist(),
        "accuracy": accuracy,
        "balanced_accuracy": float(recall.mean()),
        "auroc": auroc,
        "ece": ece,
        "probe_accuracy": accuracy,
        "control_accuracy": control,
        "selectivity": accuracy - control,
        "decodable": accuracy - control >= 0.05,
        "group_accuracy": group_accuracy,
    }


@dataclass(frozen=True)
class _Rows:
    """The rows of a synthetic table: who they are and their scores before group shifts.

    ``sources`` and ``split`` (N,) object arrays; ``is_real``, ``is_test`` and ``known``
    (N,) bools (``known``: the true labels are given); ``score`` (N,) logits.
    """

    sources: np.ndarray
    split: np.ndarray
    is_real: np.ndarray
    is_test: np.ndarray
    known: np.ndarray
    score: np.ndarray


def _draw_rows(n_real: int, n_generated: int, planted: Planted, rng: np.random.Generator
               ) -> _Rows:
    """The audit rows (real, then generated) and the held-out labelled rows, with which
    true labels are known and a normal score per source (before group shifts)."""
    sources = np.array(["real"] * n_real + ["generated"] * n_generated
                       + ["real"] * planted.n_test, dtype=object)
    split = np.array(["audit"] * (n_real + n_generated) + ["test"] * planted.n_test, dtype=object)
    n = len(sources)
    is_real = sources == "real"
    is_test = split == "test"
    known = is_test | (is_real & (rng.random(n) < planted.true_known))
    score = np.where(is_real, planted.real_score_mean, planted.generated_score_mean)
    score = score + rng.normal(0.0, planted.score_sd, n)
    return _Rows(sources, split, is_real, is_test, known, score)


def _plant_truth(rows: _Rows, concept_set: ConceptSet, planted: Planted,
                 rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """True group codes per concept ({concept: (N,) int}) drawn from the planted shares
    (held-out rows: uniform), and the scores (N,) with the planted shifts added."""
    n = len(rows.sources)
    score = rows.score
    truth: dict[str, np.ndarray] = {}
    for concept in concept_set.concepts:
        p_real = _shares(concept, planted.real_shares.get(concept.name))
        p_gen = _shares(concept, planted.generated_shares.get(concept.name))
        p_test = np.full(concept.n_groups, 1.0 / concept.n_groups)
        true = np.empty(n, dtype=int)
        for mask, p in ((rows.is_real & ~rows.is_test, p_real), (~rows.is_real, p_gen),
                        (rows.is_test, p_test)):
            true[mask] = rng.choice(concept.n_groups, size=int(mask.sum()), p=p)
        truth[concept.name] = true
        for (cname, group, source), shift in planted.score_shift.items():
            if cname == concept.name:
                gi = concept.groups.index(group)
                score = score + shift * ((true == gi) & (rows.sources == source))
    return truth, score


def _decode_truth(rows: _Rows, truth: dict[str, np.ndarray], concept_set: ConceptSet,
                  planted: Planted, rng: np.random.Generator, columns: dict[str, Any]
                  ) -> dict[str, Any]:
    """Decode every concept through its planted confusion: adds the ``true__``,
    ``prob__`` and ``pred__`` columns to ``columns`` and returns the validity document,
    counted on the held-out rows."""
    from audit.decode.train import joint_confusions

    is_test = rows.is_test
    validity: dict[str, Any] = {"concept_set": {"name": concept_set.name,
                                                "sha256": concept_set.sha256},
                                "model_sha256": "synthetic", "concepts": {}}
    decided: dict[str, np.ndarray] = {}
    for concept in concept_set.concepts:
        a = planted_confusion(concept, planted.accuracy.get(concept.name, 0.95))
        true = truth[concept.name]
        decoded, probs = _decode(rng, true, a)
        decided[concept.name] = decoded[is_test]
        groups = np.array(concept.groups, dtype=object)
        columns[f"true__{concept.name}"] = np.where(rows.known, groups[true], None)
        for j, g in enumerate(concept.groups):
            columns[f"prob__{concept.name}__{g}"] = probs[:, j]
        columns[f"pred__{concept.name}"] = groups[decoded]
        groups_of = {c.name: (c.groups, truth[c.name][is_test]) for c in concept_set.protected}
        validity["concepts"][concept.name] = _validity_entry(
            concept, true[is_test], decoded[is_test], probs[is_test], groups_of, rng)
    validity["intersections"] = joint_confusions(
        np.stack([truth[c.name][is_test] for c in concept_set.concepts], axis=1), decided,
        concept_set)
    return validity


def synthetic_predictions(n_real: int, n_generated: int, concept_set: ConceptSet, *,
                          seed: int = 0, planted: Planted | None = None
                          ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A synthetic ``predictions`` table and its ``validity`` dict, with planted truth.

    Parameters
    ----------
    n_real, n_generated
        Number of audited real and generated images (rows with ``split == "audit"``).
    concept_set
        Concepts to simulate (every concept gets ``true__``, ``prob__`` and ``pred__``
        columns as in docs/ARCHITECTURE.md).
    seed
        Seed of everything drawn.
    planted
        The truth to plant; default :class:`Planted` (uniform shares, no score shifts,
        accuracy 0.95): an audit with nothing to find.

    Returns
    -------
    predictions
        ``n_real + n_generated + planted.n_test`` rows: the audit rows, then the
        held-out labelled rows (``split == "test"``, ``source == "real"``).
    validity
        The ``decoders/validity.json`` document; its confusion matrices (per concept
        and joint per intersection) are counted on the held-out rows.
    """
    import pandas as pd

    planted = planted if planted is not None else Planted()
    rng = np.random.default_rng(seed)
    rows = _draw_rows(n_real, n_generated, planted, rng)
    columns: dict[str, Any] = {
        "image_id": [f"{'test' if t else s}-{i:06d}" for i, (s, t) in
                     enumerate(zip(rows.sources, rows.is_test, strict=True))],
        "split": rows.split, "source": rows.sources,
    }
    truth, score = _plant_truth(rows, concept_set, planted, rng)
    validity = _decode_truth(rows, truth, concept_set, planted, rng, columns)
    if planted.invalid_scores:
        gen_rows = np.flatnonzero(~rows.is_real)
        bad = rng.choice(gen_rows, size=min(planted.invalid_scores, len(gen_rows)), replace=False)
        score[bad] = np.nan
    columns["score"] = score
    return pd.DataFrame(columns), validity


def synthetic_results(n_real: int = 2000, n_generated: int = 2000, *, seed: int = 0,
                      planted: Planted = DIGITS_PLANTED, settings: Any = None
                      ) -> dict[str, Any]:
    """A realistic results.json on ``digits_tone`` from :func:`synthetic_predictions`.

    This is how ``tests/fixtures/results_digits.json`` is made (defaults), so that
    the report can be built and tested without the other stages::

        from pathlib import Path
        from audit.io import atomic_write_json
        from audit.validation.predictions import synthetic_results
        atomic_write_json(Path("tests/fixtures/results_digits.json"), synthetic_results())
    """
    from audit.concepts import load_concept_set
    from audit.config import MeasureSettings
    from audit.measure.results import predictions_to_results

    concept_set = load_concept_set("digits_tone")
    frame, validity = synthetic_predictions(n_real, n_generated, concept_set, seed=seed,
                                            planted=planted)
    meta = {"audit_id": f"digits-synthetic-{seed}", "date": "2026-01-01",
            "model": {"discriminator": "builtin:digits-dcgan",
                      "generator": "builtin:digits-dcgan"},
            "data_sources": {"paired": "synthetic held-out labelled rows",
                             "real": "synthetic real rows",
                             "generated": f"synthetic_predictions(seed={seed})"},
            "skipped_images": {"paired": 0, "real": 0, "generated": 0}}
    return predictions_to_results(frame, concept_set, validity,
                                  settings=settings or MeasureSettings(), meta=meta)
