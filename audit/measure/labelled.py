"""Decoder transfer measured with labels: how the decoders read labelled generated images.

The decoders' confusion matrix comes from held-out *real* images, and the correction of
generated shares (A^T p = p_hat) assumes they err on generated images as they do there.
People's labels of a sample of generated images (:mod:`audit.labels`) test that directly.
For each protected concept:

* **Consensus.** Each labelled image's group is the majority of its labellers' latest
  labels ("can't tell" left out); a tie, or "can't tell" alone, leaves the image out
  (counted).
* **Design weights.** The sample is stratified by the cell of decoded groups of the
  protected concepts (:func:`audit.labels.stratified_pick`), equal numbers per cell, so
  rare decoded groups are over-sampled. A labelled image of cell s stands for
  ``N_s / n_s`` generated images (N_s in the cell, n_s of them labelled for this concept):
  the weighted counts estimate the joint distribution of (true, decoded) group over *all*
  the run's generated images. Cells with no labelled image are left out and the share of
  generated images they hold is reported (``coverage``).
* **Generated confusion.** Its rows (true group) normalised, with percentile bootstrap
  intervals (``n_boot`` replicates, each drawing the cells' sizes again, multinomially, and
  the labelled images within each cell); and the unweighted counts.
* **Transfer gap.** Balanced accuracy (the mean of the confusion's diagonal, which does not
  depend on the group mix) on held-out real images minus that on labelled generated
  images, with a bootstrap interval (held-out counts resampled per true group, labelled
  images per cell). Plain accuracy on both sides is shown too (on held-out real images
  a count k of n, with a Wilson interval).
* **Corrected shares, both ways.** When every group has at least ``min_labels_per_group``
  labelled images (by consensus group), the decoded generated shares are corrected with
  the generated confusion as well as with the real one. With the design weights the
  former equals the labels' own stratified estimate of the true shares (also shown).
* **Finding.** A gap is large when its point value reaches ``transfer_gap``; a large gap
  whose interval excludes 0 is an ``F-VAL-<concept>-transfer-gap`` finding on the decoder
  (:func:`audit.measure.findings.label_transfer_findings`), high when the interval's lower
  bound also reaches ``transfer_gap``.

Pure: tables in, plain data out (no torch).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.errors import DataError
from audit.intervals import wilson_interval
from audit.measure.representation import corrected_shares
from audit.measure.stats import row_normalise

if TYPE_CHECKING:
    import pandas as pd

    from audit.concepts import ConceptSet
    from audit.config import MeasureSettings

__all__ = ["labelled_transfer", "consensus_labels", "RULE"]

RULE = ("a transfer gap (balanced accuracy on held-out real images minus that on labelled "
        "generated images) is large when it reaches measure.transfer_gap; a large gap whose "
        "interval excludes 0 is a finding on the decoder, high severity when the interval's "
        "lower bound reaches transfer_gap too, else medium; corrected shares with the generated "
        "confusion need measure.min_labels_per_group labelled images of every group")


def consensus_labels(labels: pd.DataFrame, concept: str, groups: Sequence[str]
                     ) -> tuple[dict[str, str], dict[str, int]]:
    """Image id -> consensus group of ``concept``, and the counts left out.

    Parameters
    ----------
    labels
        :func:`audit.labels.read_labels` (latest label per image, concept and labeller).

    Returns
    -------
    (consensus, counts): ``counts`` has ``cant_tell`` (images whose only labels are "can't
    tell") and ``disagree`` (images whose labellers tie).
    """
    part = labels[labels["concept"] == concept]
    out: dict[str, str] = {}
    counts = {"cant_tell": 0, "disagree": 0}
    for image_id, rows in part.groupby("image_id", sort=True):
        votes = rows["group"][rows["group"].isin(list(groups))].value_counts()
        if votes.empty:
            counts["cant_tell"] += 1
        elif len(votes) > 1 and votes.iloc[0] == votes.iloc[1]:
            counts["disagree"] += 1
        else:
            out[str(image_id)] = str(votes.index[0])
    return out, counts


def _estimate(value: float, reps: np.ndarray | None, n: int, confidence: float
              ) -> dict[str, Any]:
    """``{"value", "ci", "n"}`` with the percentile interval of ``reps`` (finite ones)."""
    ci = None
    if reps is not None and np.isfinite(reps).any():
        tail = (1 - confidence) / 2
        ci = [float(np.nanquantile(reps, tail)), float(np.nanquantile(reps, 1 - tail))]
    return {"value": None if not np.isfinite(value) else float(value), "ci": ci, "n": int(n)}


def _weighted_joint(true: np.ndarray, decoded: np.ndarray, weight: np.ndarray, k: int,
                    draws: np.ndarray | None = None) -> np.ndarray:
    """Weighted (true, decoded) counts: (K, K) with ``weight`` (n,); or (B, K, K) for index
    ``draws`` (B, n) with ``weight`` (B, n), the weight of each draw."""
    if draws is None:
        joint = np.zeros((k, k))
        np.add.at(joint, (true, decoded), weight)
        return joint
    b = draws.shape[0]
    joint = np.zeros((b, k, k))
    rows = np.repeat(np.arange(b), draws.shape[1])
    flat = draws.ravel()
    np.add.at(joint, (rows, true[flat], decoded[flat]), weight.ravel())
    return joint


def _stratified_draws(strata: np.ndarray, n_boot: int, rng: np.random.Generator
                      ) -> np.ndarray:
    """(B, n) bootstrap indices that resample the items within each stratum."""
    out = np.empty((n_boot, len(strata)), dtype=np.int64)
    col = 0
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        out[:, col:col + len(members)] = rng.choice(members, size=(n_boot, len(members)))
        col += len(members)
    return out


def _real_draws(confusion: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(B, K, K) held-out confusion counts resampled per true group (multinomial rows)."""
    n = confusion.sum(axis=1)
    rates = row_normalise(confusion)
    return np.stack([rng.multinomial(int(n[t]), rates[t], size=n_boot)
                     for t in range(len(n))], axis=1).astype(float)


def _balanced(joint: np.ndarray) -> np.ndarray:
    """Mean of the row-normalised diagonal over rows with any count; (..., K, K) -> (...)."""
    rows = joint.sum(axis=-1)
    diag = np.diagonal(row_normalise(joint), axis1=-2, axis2=-1)
    present = rows > 0
    return np.where(present.any(-1), (diag * present).sum(-1) / np.maximum(present.sum(-1), 1),
                    np.nan)


def _accuracy(joint: np.ndarray) -> np.ndarray:
    total = joint.sum(axis=(-2, -1))
    return np.trace(joint, axis1=-2, axis2=-1) / np.where(total > 0, total, np.nan)


def _design(generated: pd.DataFrame, protected: Sequence[str], consensus: dict[str, str],
            groups: list[str]) -> dict[str, Any]:
    """The sampling design of one concept's labelled images.

    Returns
    -------
    dict with ``stratum`` (N,) stratum index of every generated image (cells of decoded
    groups of the protected concepts), ``sizes`` (S,) images per stratum, ``keep`` (N,)
    whether an image has a consensus label, ``ids`` and ``true`` (n,) of those, ``weight``
    (n,) the design weight of each (``N_s / n_s``, summing to 1 over the strata that hold a
    labelled image) and ``coverage``, the share of generated images in those strata.
    """
    cells = generated[[f"pred__{c}" for c in protected]].astype(str).agg(" & ".join, axis=1)
    ids = generated["image_id"].astype(str).to_numpy()
    _, stratum = np.unique(cells.to_numpy(), return_inverse=True)
    sizes = np.bincount(stratum)
    keep = np.array([i in consensus for i in ids])
    labelled = np.bincount(stratum[keep], minlength=len(sizes))
    covered = int(sizes[labelled > 0].sum())
    per_image = sizes / np.maximum(labelled, 1) / covered
    return {"stratum": stratum, "sizes": sizes, "keep": keep, "ids": ids[keep],
            "weight": per_image[stratum[keep]], "coverage": covered / max(len(ids), 1),
            "n_population": len(ids),
            "true": np.array([groups.index(consensus[i]) for i in ids[keep]], dtype=np.int64)}


def labelled_transfer(generated: pd.DataFrame, labels: pd.DataFrame, validity: dict[str, Any],
                      concept_set: ConceptSet, *, settings: MeasureSettings
                      ) -> list[dict[str, Any]]:
    """The ``label_transfer`` section of results.json: one record per protected concept with
    labels (see the module docstring); [] without labels.

    Parameters
    ----------
    generated
        The audited generated images' rows of ``predictions.parquet`` (``image_id``,
        ``pred__<concept>``).
    labels
        :func:`audit.labels.read_labels`.
    validity
        ``decoders/validity.json`` (held-out real confusion counts per concept).
    """
    if labels is None or labels.empty or generated.empty:
        return []
    protected = [c.name for c in concept_set.protected]
    in_run = set(generated["image_id"].astype(str))
    out = []
    for concept in concept_set.protected:
        if not (labels["concept"] == concept.name).any():
            continue
        groups = list(concept.groups)
        consensus, left_out = consensus_labels(labels, concept.name, groups)
        left_out["not_in_run"] = sum(1 for i in consensus if i not in in_run)
        consensus = {i: g for i, g in consensus.items() if i in in_run}
        if not consensus:
            continue
        design = _design(generated, protected, consensus, groups)
        out.append(_concept_record(concept.name, groups, design, generated, validity,
                                   left_out, settings=settings,
                                   n_labellers=int(labels.loc[labels["concept"] == concept.name,
                                                              "labeller"].nunique())))
    return out


def _concept_record(name: str, groups: list[str], design: dict[str, Any],
                    generated: pd.DataFrame, validity: dict[str, Any], left_out: dict[str, int],
                    *, settings: MeasureSettings, n_labellers: int) -> dict[str, Any]:
    k, conf = len(groups), 1.0 - settings.alpha
    code = {g: i for i, g in enumerate(groups)}
    mapped = generated[f"pred__{name}"].astype(str).map(code)
    if mapped.isna().any():
        raise DataError(f"predictions.parquet: pred__{name} holds groups other than "
                        f"{groups}; re-run the decode stage with this concept set.")
    all_decoded = mapped.to_numpy().astype(np.int64)
    decoded_of = dict(zip(generated["image_id"].astype(str), all_decoded, strict=True))
    decoded = np.array([decoded_of[i] for i in design["ids"]], dtype=np.int64)
    true, weight = design["true"], design["weight"]
    joint = _weighted_joint(true, decoded, weight, k)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (true, decoded), 1)
    real = _real_confusion(validity, name, groups)
    raw = np.bincount(all_decoded, minlength=k) / max(len(all_decoded), 1)
    rng = np.random.default_rng([settings.seed, zlib.crc32(f"labelled:{name}".encode())])
    boot = _replicates(true, decoded, design, all_decoded, real, k, n_boot=settings.n_boot,
                       rng=rng)
    n_true = counts.sum(axis=1)
    short = [g for g, n in zip(groups, n_true, strict=True)
             if n < settings.min_labels_per_group]
    sufficient = not short
    gap = _gap(joint, real, boot, n=len(true), confidence=conf)
    record = {
        "concept": name, "groups": groups, "n_images": len(true), "n_labellers": n_labellers,
        "left_out": left_out, "coverage": float(design["coverage"]),
        "n_generated": int(design["n_population"]),
        "per_group": [{"group": g, "n_true": int(n_true[i]),
                       "n_decoded": int(counts[:, i].sum())} for i, g in enumerate(groups)],
        "min_per_group": settings.min_labels_per_group, "sufficient": sufficient,
        "reason": None if sufficient else (
            f"fewer than {settings.min_labels_per_group} labelled images of "
            f"{', '.join(short)}: the generated confusion is shown, but not used to correct"),
        "confusion_generated": _confusion_record(joint, counts, boot.get("joint"), conf),
        "confusion_real": None if real is None else {
            "counts": real.astype(int).tolist(), "rates": row_normalise(real).tolist()},
        **gap,
        "shares": _shares(groups, raw, joint, real, boot, sufficient=sufficient,
                          correct=settings.unknown_below == 0, confidence=conf,
                          n={"real": len(all_decoded), "labelled": len(true)}),
        "transfer_gap": settings.transfer_gap, "rule": RULE,
    }
    record["large_gap"] = (None if record["gap"]["value"] is None
                           else bool(record["gap"]["value"] >= settings.transfer_gap))
    return record


def _real_confusion(validity: dict[str, Any], name: str, groups: list[str]
                    ) -> np.ndarray | None:
    entry = (validity.get("concepts") or {}).get(name) or {}
    if entry.get("confusion") is None:
        return None
    conf = np.asarray(entry["confusion"], dtype=float)
    order = list(entry.get("groups") or groups)
    idx = [order.index(g) for g in groups]
    return conf[np.ix_(idx, idx)]


def _replicates(true: np.ndarray, decoded: np.ndarray, design: dict[str, Any],
                all_decoded: np.ndarray, real: np.ndarray | None, k: int, *, n_boot: int,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bootstrap replicates; {} for n_boot 0.

    Each replicate draws the generated images' strata again (multinomial on the stratum
    sizes: the generator's sampling) and the labelled images within each stratum (the
    labelling sample's); ``joint`` (B, K, K) is their weighted (true, decoded) counts and
    ``raw`` (B, K) the decoded shares those strata give, so that the two agree as the point
    estimates do (with every stratum labelled, ``raw`` is the column sums of ``joint``).
    ``real`` (B, K, K): held-out counts resampled per true group.
    """
    if n_boot == 0 or len(true) == 0:
        return {}
    sizes, stratum, keep = design["sizes"], design["stratum"], design["keep"]
    n, n_strata = int(sizes.sum()), len(sizes)
    drawn = rng.multinomial(n, sizes / n, size=n_boot).astype(float)  # (B, S)
    decoded_of = np.zeros(n_strata, dtype=np.int64)
    decoded_of[stratum] = all_decoded  # one decoded group per stratum (strata refine it)
    raw = drawn @ np.eye(k)[decoded_of] / n
    own = stratum[keep]  # the stratum of each labelled image
    labelled = np.bincount(own, minlength=n_strata)
    covered = np.where(labelled > 0, drawn, 0.0)
    share = covered / np.maximum(covered.sum(axis=1, keepdims=True), 1e-300)
    draws = _stratified_draws(own, n_boot, rng)
    weight = share[np.arange(n_boot)[:, None], own[draws]] / labelled[own[draws]]
    out = {"joint": _weighted_joint(true, decoded, weight, k, draws), "raw": raw}
    if real is not None:
        out["real"] = _real_draws(real, n_boot, rng)
    return out


def _confusion_record(joint: np.ndarray, counts: np.ndarray, reps: np.ndarray | None,
                      confidence: float) -> dict[str, Any]:
    rates = row_normalise(joint)
    rates[joint.sum(axis=1) == 0] = np.nan  # no labelled image of that true group
    record: dict[str, Any] = {"counts": counts.tolist(), "rates": _listed(rates),
                              "ci_low": None, "ci_high": None}
    if reps is not None:
        r = row_normalise(reps)
        r[reps.sum(axis=2) == 0] = np.nan
        tail = (1 - confidence) / 2
        with np.errstate(all="ignore"):
            record["ci_low"] = _listed(np.nanquantile(r, tail, axis=0))
            record["ci_high"] = _listed(np.nanquantile(r, 1 - tail, axis=0))
    return record


def _listed(values: np.ndarray) -> list[Any]:
    """An array as nested lists, NaN as None."""
    return [_listed(v) if np.ndim(v) else (None if not np.isfinite(v) else float(v))
            for v in values]


def _gap(joint: np.ndarray, real: np.ndarray | None, boot: dict[str, np.ndarray], *, n: int,
         confidence: float) -> dict[str, Any]:
    """Accuracy and balanced accuracy on both sides, and the gap (real minus generated)."""
    gen_reps = boot.get("joint")
    out: dict[str, Any] = {
        "accuracy": {"generated": _estimate(_accuracy(joint), None if gen_reps is None
                                            else _accuracy(gen_reps), n, confidence)},
        "balanced_accuracy": {"generated": _estimate(
            _balanced(joint), None if gen_reps is None else _balanced(gen_reps), n,
            confidence)},
    }
    if real is None:
        out["accuracy"]["real"] = out["balanced_accuracy"]["real"] = None
        out["gap"] = _estimate(np.nan, None, n, confidence)
        return out
    real_reps = boot.get("real")
    n_real = int(real.sum())
    k_real = int(np.trace(real))
    out["accuracy"]["real"] = {"value": float(_accuracy(real)), "n": n_real, "k": k_real,
                               "ci": [float(v) for v in wilson_interval(
                                   k_real, n_real, confidence=confidence)]}
    out["balanced_accuracy"]["real"] = _estimate(_balanced(real), None if real_reps is None
                                                 else _balanced(real_reps), n_real, confidence)
    both = None if real_reps is None or gen_reps is None else (_balanced(real_reps)
                                                               - _balanced(gen_reps))
    out["gap"] = _estimate(_balanced(real) - _balanced(joint), both, n, confidence)
    return out


def _shares(groups: list[str], raw: np.ndarray, joint: np.ndarray, real: np.ndarray | None,
            boot: dict[str, np.ndarray], *, sufficient: bool, correct: bool,
            n: dict[str, int], confidence: float) -> list[dict[str, Any]]:
    """Per group: the decoded share, the share corrected with the real confusion and (when
    the labels suffice) with the generated one, and the labels' stratified estimate."""
    def fix(confusion: np.ndarray | None, reps: np.ndarray | None) -> tuple[Any, Any]:
        if confusion is None or not correct:
            return None, None
        point = corrected_shares(raw[None], [confusion[None]])[0]
        return point, (None if reps is None else corrected_shares(boot["raw"], [reps]))

    by_real = fix(real, boot.get("real"))
    by_gen = fix(joint, boot.get("joint")) if sufficient else (None, None)
    labelled = joint.sum(axis=1)
    lab_reps = None if "joint" not in boot else boot["joint"].sum(axis=2)
    rows = []
    for i, g in enumerate(groups):
        def est(pair: tuple[Any, Any], size: int, i: int = i) -> dict[str, Any] | None:
            point, reps = pair
            if point is None:
                return None
            return _estimate(point[i], None if reps is None else reps[:, i], size, confidence)
        rows.append({"group": g, "decoded": float(raw[i]),
                     "corrected_real": est(by_real, n["real"]),
                     "corrected_generated": est(by_gen, n["labelled"]),
                     "labelled": est((labelled, lab_reps), n["labelled"])})
    return rows
