"""The counterfactual stage: latents edited along concept directions, regenerated, decoded and
scored (issue 22 item 4), into ``RUN_DIR/counterfactual/``.

For each protected concept the config names (``counterfactual.concepts``, default all):

1. the direction: the audit's own generated images (``predictions.parquet``, ids
   ``gen-<seed>-<index>``) give latents (drawn again from their seeds) and the decoders' reading
   of each image; :func:`audit.measure.counterfactual.latents_to_direction` fits the decoded
   log-odds of each group (a binary concept: its positive group) on the latents;
2. the edits: ``n`` other latents (indices after the audited ones, seed
   ``counterfactual.seed``) are moved along the unit direction by ``steps`` offsets from
   ``-span`` to ``+span`` (the rest of each latent held fixed), regenerated
   (:func:`audit.load.latents_to_images`, the run's truncation and classes), recorded through
   the discriminator and decoded exactly as the run read its generated images
   (:meth:`audit.insight.run.InsightRun.read_images`: hooks in memory and the run's decoders);
3. ``counterfactual/edits.parquet`` (one row per edited image: direction, latent, step,
   offset, D score, every concept's decoded probabilities) and ``counterfactual/directions.json``
   (how each direction was fitted), and one strip of edited images per direction under
   ``samples/counterfactual/`` (rows: latents; columns: steps).

What is edited is the generator's input latent ``z`` as the tool passes it to forward: for a
StyleGAN-type generator that is ``z`` before the mapping network (truncation, if any, applies
after the edit), not ``w``, in which InterFaceGAN found attributes more disentangled; the
leakage the measure stage reports says how clean the edit was. The statistics are in
:mod:`audit.measure.counterfactual`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.errors import ConfigError, DataError
from audit.io import atomic_path, atomic_write_json, ensure_dir

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from audit.concepts import Concept, ConceptSet
    from audit.config import AuditConfig, CounterfactualSettings
    from audit.insight.run import InsightRun
    from audit.measure.counterfactual import Direction

#: A validation harness's discriminator: (images N x C x H x W in [-1, 1], D's scores (N,))
#: -> scores (N,).
Rescore = Callable[["torch.Tensor", np.ndarray], np.ndarray]

__all__ = ["OUT_DIR", "STRIP_DIR", "EDITED", "counterfactual_concepts", "edit_offsets",
           "directions_to_test", "fitting_latents", "fit_direction", "edit_latents",
           "read_edits", "counterfactual_for_run"]

OUT_DIR = "counterfactual"
STRIP_DIR = "samples/counterfactual"
EDITED = ("z, the generator's input latent as passed to its forward (for a StyleGAN-type "
          "generator: before the mapping network and truncation; not w)")
_GEN_ID = re.compile(r"^gen-(-?\d+)-(\d+)$")


def counterfactual_concepts(settings: CounterfactualSettings, concept_set: ConceptSet
                            ) -> list[Concept]:
    """The protected concepts to test: ``settings.concepts`` or every protected concept.

    Raises :class:`ConfigError` for a name the concept set lacks or a concept that is not
    protected.
    """
    protected = {c.name: c for c in concept_set.protected}
    if not protected:
        raise ConfigError(f"counterfactual: the concept set {concept_set.name!r} protects no "
                          f"concept, so there is nothing to test. Mark a concept protected, "
                          f"or set counterfactual.enabled: false.")
    if settings.concepts is None:
        return list(protected.values())
    names = {c.name for c in concept_set.concepts}
    for name in settings.concepts:
        if name not in names:
            raise ConfigError(f"counterfactual.concepts: {name!r} is not a concept of the "
                              f"concept set {concept_set.name!r} (it has: "
                              f"{', '.join(sorted(names))}). Fix the name.")
        if name not in protected:
            raise ConfigError(f"counterfactual.concepts: {name!r} is not protected in the "
                              f"concept set {concept_set.name!r}; the test is for protected "
                              f"concepts ({', '.join(protected) or 'none'}). Remove it, or mark "
                              f"it protected in the concept set.")
    return [protected[n] for n in dict.fromkeys(settings.concepts)]


def edit_offsets(settings: CounterfactualSettings) -> np.ndarray:
    """The ``steps`` offsets along the unit direction, from ``-span`` to ``+span``."""
    return np.linspace(-settings.span, settings.span, settings.steps)


def directions_to_test(concept: Concept) -> list[str]:
    """The groups edited towards: a binary concept's positive group; each group of a one-of-K
    concept (that group against the rest)."""
    return [concept.groups[1]] if concept.kind == "binary" else list(concept.groups)


def fitting_latents(run: InsightRun) -> tuple[np.ndarray, pd.DataFrame]:
    """The audited generated images' latents (N x D, flattened, drawn again from their ids
    ``gen-<seed>-<index>``) and their rows of ``predictions.parquet``."""
    from audit.load import latents

    pred = run.predictions
    gen = pred[(pred["split"] == "audit") & (pred["source"] == "generated")]
    match = gen["image_id"].astype(str).str.extract(_GEN_ID.pattern)
    gen = gen[match[0].notna()]
    match = match[match[0].notna()].astype(np.int64)
    if gen.empty:
        raise DataError(f"{run.run_dir}/predictions.parquet has no generated images of this "
                        f"run's generator (ids gen-<seed>-<index>) to fit directions on; re-run "
                        f"the audit with a generator section.")
    z = np.empty((len(gen), int(np.prod(run.generator.latent_shape))), dtype=np.float64)
    for seed in match[0].unique():
        rows = np.flatnonzero(match[0].to_numpy() == seed)
        z[rows] = latents(run.generator, match[1].to_numpy()[rows], seed=int(seed)).reshape(
            len(rows), -1).numpy()
    return z, gen.reset_index(drop=True)


def fit_direction(run: InsightRun, concept: str, group: str,
                  fitting: tuple[np.ndarray, pd.DataFrame] | None = None) -> Direction:
    """The latent direction of ``concept = group`` as the run's decoders read it, fitted on
    the audited generated images (``fitting``: :func:`fitting_latents`, computed if not
    given)."""
    from audit.measure.counterfactual import concept_logit, latents_to_direction

    z_fit, gen = fitting if fitting is not None else fitting_latents(run)
    logit = concept_logit(gen[f"prob__{concept}__{group}"].to_numpy(dtype=float))
    keep = np.isfinite(logit)  # images whose activations were not finite: no reading
    return latents_to_direction(z_fit[keep], logit[keep])


def edit_latents(run: InsightRun, settings: CounterfactualSettings
                 ) -> tuple[np.ndarray, list[int] | None]:
    """``n`` latents (n x D, flattened) disjoint from the audited ones, and their classes (a
    conditional generator's, drawn as the audit draws them; else None)."""
    from audit.load import generated_classes, latents

    g = run.cfg.generator
    indices = list(range(g.n, g.n + settings.n))  # after the audited (fitting) latents
    z = latents(run.generator, indices, seed=settings.seed).reshape(settings.n, -1).numpy()
    classes = generated_classes(run.generator, indices, seed=settings.seed,
                                class_label=g.class_label, sampling=g.class_sampling)
    return z.astype(np.float64), None if classes is None else [int(c) for c in classes]


def read_edits(run: InsightRun, z0: np.ndarray, classes: list[int] | None,
               direction: Direction, settings: CounterfactualSettings, *, keep: int,
               rescore: Rescore | None = None
               ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Edit latents ``z0`` (n x D) along ``direction`` by the settings' offsets, then
    generate, decode and score the n x steps images in generator batches.

    Returns ``({concept: (n * steps) x K}, scores (n * steps,), images of the first
    ``keep`` latents' edits (keep * steps x C x H x W))``, latent-major (latent 0's steps
    first). ``rescore`` (validation harnesses) replaces D's scores: (images, scores) ->
    scores.
    """
    offsets = edit_offsets(settings)
    steps, n = len(offsets), len(z0)
    z = (z0[:, None, :] + offsets[None, :, None] * direction.vector[None, None, :]).reshape(
        n * steps, -1)
    cls = None if classes is None else [c for c in classes for _ in range(steps)]
    shape = tuple(run.generator.latent_shape)
    probs: dict[str, list[np.ndarray]] = {}
    scores, kept = [], []
    batch = run.cfg.generator.batch_size
    for start in range(0, len(z), batch):
        part = None if cls is None else cls[start:start + batch]
        images = run.generate(z[start:start + batch].reshape(-1, *shape), part)
        p, s = run.read_images(images, part)
        for concept, values in p.items():
            probs.setdefault(concept, []).append(np.asarray(values, dtype=float))
        s = np.asarray(s if rescore is None else rescore(images, s), dtype=float)
        scores.append(s)
        if start < keep * steps:
            kept.append(images[:keep * steps - start].numpy())
    return ({c: np.concatenate(v) for c, v in probs.items()}, np.concatenate(scores),
            np.concatenate(kept) if kept else np.empty((0,)))


def _strip(images: np.ndarray, rows: int, steps: int, path: Path) -> None:
    """Rows of edited images (one latent a row, its steps left to right) as one PNG."""
    from audit.insight.run import images_to_strip
    from audit.samples import _save_png

    strips = [images_to_strip(images[r * steps:(r + 1) * steps]) for r in range(rows)]
    _save_png(path, np.concatenate([s if i == 0 else s[2:] for i, s in enumerate(strips)]))


def _edit_one(run: InsightRun, concept: Concept, group: str,
              fitting: tuple[np.ndarray, pd.DataFrame], z0: np.ndarray,
              classes: list[int] | None, settings: CounterfactualSettings
              ) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fit one direction, edit the latents along it, read the edits: (its entry in
    directions.json, its rows of edits.parquet)."""
    import pandas as pd

    direction = fit_direction(run, concept.name, group, fitting)
    offsets = edit_offsets(settings)
    steps, n = len(offsets), len(z0)
    keep = min(settings.strip_latents, n)
    probs, scores, images = read_edits(run, z0, classes, direction, settings, keep=keep)
    table = pd.DataFrame({"concept": concept.name, "group": group,
                          "latent": np.repeat(np.arange(n), steps),
                          "step": np.tile(np.arange(steps), n),
                          "offset": np.tile(offsets, n), "score": scores})
    for c in run.concept_set.concepts:
        for k, g in enumerate(c.groups):
            table[f"prob__{c.name}__{g}"] = probs[c.name][:, k]
    strip = f"{STRIP_DIR}/{_file_name(concept.name, group)}.png"
    _strip(images, keep, steps, run.run_dir / strip)
    return ({"concept": concept.name, "group": group, "n_fit": direction.n,
             "r2": direction.r2, "logit_per_unit": direction.logit_per_unit,
             "strip": strip, "strip_latents": keep}, table)


def _file_name(concept: str, group: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{concept}-{group}").strip("_.") or "direction"


def counterfactual_for_run(cfg: AuditConfig, run_dir: Path, concept_set: ConceptSet, *,
                           device: str = "cpu") -> dict[str, Any]:
    """Run the counterfactual edits of a run folder (after its decode stage).

    Writes ``counterfactual/edits.parquet``, ``counterfactual/directions.json`` and
    ``samples/counterfactual/<concept>-<group>.png``; returns the directions document.
    Raises :class:`ConfigError` for concepts the concept set does not protect and
    :class:`DataError` when the run has no generated images to fit directions on.
    """
    import pandas as pd

    from audit.insight.run import InsightRun

    settings = cfg.counterfactual
    concepts = counterfactual_concepts(settings, concept_set)
    run = InsightRun(Path(run_dir), cfg, device=device)
    fitting = fitting_latents(run)
    z0, classes = edit_latents(run, settings)
    ensure_dir(run.run_dir / OUT_DIR)
    ensure_dir(run.run_dir / STRIP_DIR)
    entries, tables = [], []
    for concept in concepts:
        for group in directions_to_test(concept):
            entry, table = _edit_one(run, concept, group, fitting, z0, classes, settings)
            entries.append(entry)
            tables.append(table)
    document = {"version": 1, "edited": EDITED, "n": settings.n, "steps": settings.steps,
                "span": settings.span, "offsets": [float(o) for o in edit_offsets(settings)],
                "seed": settings.seed, "truncation": cfg.generator.truncation,
                "conditional": classes is not None, "directions": entries}
    with atomic_path(run.run_dir / OUT_DIR / "edits.parquet", suffix=".parquet") as tmp:
        pd.concat(tables, ignore_index=True).to_parquet(tmp, index=False)
    atomic_write_json(run.run_dir / OUT_DIR / "directions.json", document)
    return document
