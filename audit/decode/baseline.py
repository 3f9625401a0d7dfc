"""Random-weights baseline: what decoders read from a discriminator that learnt nothing.

A decoder reads a concept from a layer's activations; but a concept such as tone
(inverted polarity) is visible in the pixels, and a network with random weights passes
much of it through. Then a decodable concept is no evidence of what the *trained*
discriminator learnt (the model randomisation test of Adebayo et al., NeurIPS 2018).

The baseline re-initialises a deep copy of the loaded discriminator (``reset_parameters``
on every module that has one, under a fixed seed; parameters of modules without one are
shuffled, which keeps their scale and destroys what they learnt), records the paired
images through it exactly as the run recorded them, and trains decoders with the same
settings (same split, same layer choice). Per concept,

    knowledge_gain = balanced accuracy (trained D) - balanced accuracy (random D)

on the same held-out test images, with a percentile bootstrap interval that resamples
those images (paired: both decoders read the same images). A concept whose interval
includes 0 is *decodable from pixels alone*: its representation findings stay (the
decoder still reads the images) but the report does not attribute the concept to what
the discriminator learnt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.intervals import mover_difference, wilson_interval

if TYPE_CHECKING:
    import torch.nn as nn

    from audit.concepts import ConceptSet
    from audit.config import AuditConfig

__all__ = ["randomise_module", "balanced_accuracy", "knowledge_gain", "baseline_for_run",
           "PIXELS_ALONE", "N_BOOT"]

PIXELS_ALONE = "decodable from pixels alone: not evidence of what this D learned"
N_BOOT = 1000


def randomise_module(module: nn.Module, *, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """A re-initialised deep copy of ``module`` (the original is untouched).

    Every submodule with ``reset_parameters`` is reset under ``torch.manual_seed(seed)``
    (in ``named_modules`` order); the entries of every parameter that no such module owns
    directly are shuffled with a generator seeded by ``seed``.

    Returns
    -------
    (copy, record): the copy in eval mode without gradients, and ``{"reset_modules": int,
    "shuffled_parameters": [names]}``.
    """
    import copy

    import torch

    clone = copy.deepcopy(module)
    reset, owned = 0, set()
    with torch.no_grad():
        torch.manual_seed(seed)
        for name, sub in clone.named_modules():
            if callable(getattr(sub, "reset_parameters", None)):
                sub.reset_parameters()
                reset += 1
                owned |= {f"{name}.{p}" if name else p for p, _ in
                          sub.named_parameters(recurse=False)}
        gen = torch.Generator().manual_seed(seed)
        shuffled = []
        for name, p in clone.named_parameters():
            if name in owned or p.numel() < 2:
                continue
            order = torch.randperm(p.numel(), generator=gen).to(p.device)
            p.copy_(p.reshape(-1)[order].reshape(p.shape))
            shuffled.append(name)
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone, {"reset_modules": reset, "shuffled_parameters": shuffled}


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean recall over the groups present in ``y_true``.

    ``y_true`` (N,) codes in ``[0, n_groups)``; ``y_pred`` (..., N) codes, e.g. (B, N) for B
    resamples of the rows given as index arrays already applied. Returns shape ``...``;
    equals ``sklearn.metrics.balanced_accuracy_score`` for one row.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    true_b = np.broadcast_to(y_true, y_pred.shape)
    recalls = []
    for g in range(n_groups):
        is_g = true_b == g
        n_g = is_g.sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(n_g > 0, (is_g & (y_pred == g)).sum(axis=-1) / n_g, np.nan))
    return np.nanmean(np.stack(recalls), axis=0)


def knowledge_gain(y_true: np.ndarray, trained: np.ndarray, random: np.ndarray, n_groups: int,
                   *, n_boot: int = N_BOOT, seed: int = 0, confidence: float = 0.95
                   ) -> dict[str, Any]:
    """Trained-D minus random-D balanced accuracy on the same images, with an interval.

    Parameters
    ----------
    y_true, trained, random
        (N,) true codes and the two decoders' decoded codes of the same held-out images.
    n_groups
        Groups of the concept.

    Returns
    -------
    ``{"trained_balanced_accuracy", "random_balanced_accuracy", "knowledge_gain": {value,
    ci, n}, "pixels_alone": bool, "label": str or None}``: the interval is the percentile
    bootstrap of the difference over ``n_boot`` resamples of the images (where it has zero
    width, the MOVER difference of the two accuracies' Wilson intervals at ``n``);
    ``pixels_alone`` when it includes 0 (or lies under it).
    """
    y_true = np.asarray(y_true)
    trained, random = np.asarray(trained), np.asarray(random)
    n = len(y_true)
    a, b = (float(balanced_accuracy(y_true, p, n_groups)) for p in (trained, random))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    diff = (balanced_accuracy(y_true[idx], trained[idx], n_groups)
            - balanced_accuracy(y_true[idx], random[idx], n_groups))
    tail = (1.0 - confidence) / 2.0
    lo, hi = (float(v) for v in np.nanquantile(diff, [tail, 1.0 - tail]))
    if hi - lo <= 1e-12:
        # Every resample gives the same difference (e.g. both decoders perfect): not a
        # certainty; the MOVER difference of the two accuracies' Wilson intervals at n.
        ci_a, ci_b = (wilson_interval(v * n, n, confidence=confidence) for v in (a, b))
        lo, hi = (float(v) for v in mover_difference(a, ci_a, b, ci_b))
    pixels = bool(lo <= 0.0)
    return {"trained_balanced_accuracy": a, "random_balanced_accuracy": b,
            "knowledge_gain": {"value": a - b, "ci": [lo, hi], "n": n},
            "pixels_alone": pixels, "label": PIXELS_ALONE if pixels else None}


def _codes(table: Any, concept: Any, ids: Sequence[str]) -> np.ndarray:
    """Decoded group codes of ``ids`` from a decode table (``pred__<concept>``)."""
    pred = table.set_index("image_id")[f"pred__{concept.name}"].reindex(list(ids))
    return np.array([concept.groups.index(str(v)) for v in pred], dtype=np.int64)


def _gains(concept_set: ConceptSet, labels: Any, test_ids: Sequence[str], trained: Any,
           random: Any, *, seed: int) -> dict[str, Any]:
    """Per concept, :func:`knowledge_gain` on the labelled test images."""
    out = {}
    lab = labels.set_index(labels["image_id"].astype(str))
    for j, concept in enumerate(concept_set.concepts):
        col = lab[concept.name].reindex(list(test_ids))
        keep = [i for i, v in zip(test_ids, col, strict=True)
                if v is not None and str(v) in concept.groups]
        if len(keep) < 2:
            continue
        truth = np.array([concept.groups.index(str(lab.at[i, concept.name])) for i in keep])
        out[concept.name] = knowledge_gain(truth, _codes(trained, concept, keep),
                                           _codes(random, concept, keep),
                                           len(concept.groups), seed=seed + j)
    return out


def baseline_for_run(cfg: AuditConfig, run_dir: Path, concept_set: ConceptSet, *,
                     device: str = "cpu") -> dict[str, Any]:
    """The random-weights baseline of a run: write and return ``RUN_DIR/baseline/random.json``.

    Loads the run's discriminator (:func:`audit.load.load_discriminator`), randomises a deep
    copy (:func:`randomise_module`, seed ``decoders.seed``), extracts the paired images at
    the paired store's layers with its settings into ``RUN_DIR/baseline/activations`` (a
    store like the paired one, so that an interrupted stage resumes), trains decoders with
    ``cfg.decoders`` and compares both decoders on the trained run's test split.
    With ``decoders.random_baseline: false`` it writes ``{"skipped": reason}`` only.
    """
    import dataclasses

    from audit.config import as_given
    from audit.decode import decode, load_decoders
    from audit.decode.run import _aligned_labels, store_features
    from audit.decode.train import activations_to_decoders
    from audit.extract import extract
    from audit.images import load_images
    from audit.io import atomic_write_json, ensure_dir
    from audit.load import load_discriminator, state_sha256
    from audit.store import ActivationStore

    run_dir = Path(run_dir)
    path = ensure_dir(run_dir / "baseline") / "random.json"
    if not cfg.decoders.random_baseline:
        doc: dict[str, Any] = {"version": 1, "skipped": "decoders.random_baseline is false"}
        atomic_write_json(path, doc)
        return doc
    paired = ActivationStore.open(run_dir / "activations" / "paired")
    bundle = load_decoders(run_dir / "decoders")
    model = load_discriminator(cfg.discriminator, device=device)
    module, record = randomise_module(model.module, seed=cfg.decoders.seed)
    rmodel = dataclasses.replace(model, module=module, sha256=state_sha256(module))
    source = load_images(cfg.paired, concept_set=concept_set, input=model.input,
                         require_labels=True, class_source=cfg.discriminator.class_source,
                         run_dir=run_dir)
    s = paired.settings
    store = extract(rmodel, list(paired.layers), source, out=path.parent / "activations",
                    pooling=s.pooling, batch_size=s.batch_size, device=device,
                    max_dim=s.max_dim, projection_seed=s.projection_seed,
                    include_batch_dependent=True, progress=False,
                    class_labels=source.class_labels,
                    given=lambda record: as_given(cfg, record))
    store.write_labels(source.labels)
    features, labels = store_features(store), _aligned_labels(store)
    ids = list(store.image_ids)
    sha, pooling = store.settings.model_sha256, store.settings.pooling
    random = activations_to_decoders(features, labels, concept_set, settings=cfg.decoders,
                                     model_sha256=sha, pooling=pooling, device=device)
    test = [i for i in (str(x) for x in bundle.splits.get("test", [])) if i in set(ids)]
    layers = sorted(set(bundle.best.values()), key=bundle.layers.index)
    trained_table = decode(bundle, store_features(paired, layers),
                           model_sha256=paired.settings.model_sha256, pooling=s.pooling,
                           image_ids=[str(i) for i in paired.image_ids])
    random_table = decode(random, features, model_sha256=sha, pooling=pooling, image_ids=ids)
    doc = {"version": 1, "seed": cfg.decoders.seed, "model_sha256": sha, **record,
           "same_split": [str(x) for x in random.splits.get("test", [])] == test,
           "n_test": len(test), "confidence": 0.95, "n_boot": N_BOOT,
           "layers": {c: {"trained": bundle.best.get(c), "random": random.best.get(c)}
                      for c in concept_set.names},
           "concepts": _gains(concept_set, labels, test, trained_table, random_table,
                              seed=cfg.decoders.seed)}
    atomic_write_json(path, doc)
    return doc
