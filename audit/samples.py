"""Image grids for the report: what the decoders call each group, and the extremes of D.

For every group of every concept, a grid of generated images decoded as that group
(a seeded random pick, not the most confident ones, so a reader sees typical
decodings); and the real audited images that the discriminator scores lowest and
highest. Written as PNG files under ``RUN_DIR/samples/`` with ``samples/index.json``
saying what each grid shows.

Also the labelling sample (``samples/labelling/``, :mod:`audit.labels`): a stratified random
sample of the generated images, one PNG each, enlarged (nearest neighbour) to at least
:data:`LABEL_VIEW_PX` pixels a side so that a person can label it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from audit.concepts import ConceptSet
from audit.config import AuditConfig
from audit.errors import DataError
from audit.io import atomic_path, atomic_write_json, ensure_dir

__all__ = ["images_to_grid", "write_samples", "write_labelling_sample", "LABEL_VIEW_PX",
           "LABEL_MAX_PX"]

#: Smallest side, in pixels, of a labelling PNG (small images are enlarged to it).
LABEL_VIEW_PX = 256
#: Largest side of a labelling PNG (larger images are shrunk to it: 200 PNGs of 1,024 x
#: 1,024 would take some 300 MB of the run folder; 512 pixels show a face well).
LABEL_MAX_PX = 512
_PIXELS_IN_MEMORY = 1 << 24  # values of a batch of generated images held at once (64 MB)


def images_to_grid(images: np.ndarray, *, value_range: tuple[float, float] = (-1.0, 1.0),
                   min_cell: int = 64, pad: int = 2) -> np.ndarray:
    """Tile images into one picture.

    Parameters
    ----------
    images : N x C x H x W float array in ``value_range`` (C is 1 or 3)
    min_cell : small images are enlarged (nearest neighbour) to at least this size

    Returns
    -------
    uint8 array, rows x cols x 3
    """
    n = images.shape[0]
    x = _enlarged(images, value_range=value_range, min_side=min_cell)
    h, w = x.shape[2:]
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[top:top + h, left:left + w] = (x[k].transpose(1, 2, 0) * 255).round()
    return grid


def _enlarged(images: np.ndarray, *, value_range: tuple[float, float], min_side: int
              ) -> np.ndarray:
    """N x C x H x W images in ``value_range`` -> N x 3 x H' x W' floats in [0, 1], enlarged
    by a whole factor (nearest neighbour) until the longer side reaches ``min_side``."""
    c, h, w = images.shape[1:]
    lo, hi = value_range
    x = np.clip((images.astype(np.float32) - lo) / (hi - lo), 0, 1)
    if c == 1:
        x = np.repeat(x, 3, axis=1)
    scale = max(1, math.ceil(min_side / max(h, w)))
    if scale > 1:
        x = x.repeat(scale, axis=2).repeat(scale, axis=3)
    return x


def _at_most(picture: np.ndarray, side: int) -> np.ndarray:
    """H x W x 3 uint8 shrunk (Lanczos, aspect kept) so that its longer side is at most
    ``side``; unchanged when it already is."""
    from PIL import Image

    h, w = picture.shape[:2]
    if max(h, w) <= side:
        return picture
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(picture).resize(size, Image.Resampling.LANCZOS))


def _save_png(path: Path, grid: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def _images(source: Any, ids: list[str]) -> np.ndarray:
    """The images ``ids`` of ``source`` (those it has), N x C x H x W as numpy."""
    position = {str(i): k for k, i in enumerate(source.image_ids)}
    batch = source.get_batch([position[i] for i in ids if i in position])
    return batch.images.detach().cpu().numpy()


def _sources(cfg: AuditConfig, concept_set: ConceptSet, device: str,
             run_dir: Path) -> tuple[Any, Any, Any]:
    from audit.images import generated_images, load_images
    from audit.load import load_discriminator

    model = load_discriminator(cfg.discriminator, device=device)
    real = load_images(cfg.real, concept_set=concept_set, input=model.input, run_dir=run_dir)
    return model, real, generated_images(cfg, concept_set=concept_set, input=model.input,
                                         device=device, run_dir=run_dir)


def write_samples(cfg: AuditConfig, run_dir: Path, concept_set: ConceptSet, *,
                  device: str = "cpu") -> dict[str, Any]:
    """Write the report's image grids (and the labelling sample) from
    ``predictions.parquet``; returns the grids' index."""
    import pandas as pd

    run_dir = Path(run_dir)
    k = cfg.report.samples_per_group
    out = ensure_dir(run_dir / "samples")
    index: dict[str, Any] = {"per_group": k, "grids": []}
    labelling = _wants_labelling(cfg, concept_set)
    if k > 0 or labelling:
        predictions = pd.read_parquet(run_dir / "predictions.parquet")
        audit = predictions[predictions["split"] == "audit"]
        model, real_source, gen_source = _sources(cfg, concept_set, device, run_dir)
        value_range = tuple(model.input.value_range)
        if labelling:
            write_labelling_sample(audit[audit["source"] == "generated"], gen_source, run_dir,
                                   concept_set, n=cfg.report.labelling_sample,
                                   seed=cfg.report.labelling_seed, value_range=value_range)
        if k > 0:
            index["grids"] = _grids(audit, concept_set, out, k=k, value_range=value_range,
                                    sources=(real_source, gen_source))
    atomic_write_json(out / "index.json", index)
    return index


def _grids(audit: Any, concept_set: ConceptSet, out: Path, *, k: int,
           value_range: tuple[float, float], sources: tuple[Any, Any]) -> list[dict[str, Any]]:
    """Write each group's grid of ``k`` generated images and the real images D scored
    lowest and highest into ``out``; returns their index entries."""
    real_source, gen_source = sources
    grids = []
    rng = np.random.default_rng(k)
    generated = audit[audit["source"] == "generated"]
    for concept in concept_set.concepts:
        for group in concept.groups:
            ids = generated.loc[generated[f"pred__{concept.name}"] == group, "image_id"]
            entry = {"file": f"generated-{concept.name}-{group}.png", "kind": "generated",
                     "concept": concept.name, "group": group, "n_available": len(ids),
                     "n_shown": 0}
            if len(ids):
                pick = rng.choice(ids.to_numpy(), size=min(k, len(ids)), replace=False)
                images = _images(gen_source, [str(i) for i in pick])
                _save_png(out / entry["file"], images_to_grid(images, value_range=value_range))
                entry["n_shown"] = len(images)
            grids.append(entry)
    real = audit[audit["source"] == "real"].sort_values("score", kind="stable")
    for name, rows in (("lowest", real.head(k)), ("highest", real.tail(k).iloc[::-1])):
        if len(rows):
            images = _images(real_source, [str(i) for i in rows["image_id"]])
            _save_png(out / f"real-{name}.png", images_to_grid(images, value_range=value_range))
        grids.append({"file": f"real-{name}.png", "kind": f"real-{name}",
                      "n_shown": len(rows), "scores": [float(s) for s in rows["score"]]})
    return grids


def _wants_labelling(cfg: AuditConfig, concept_set: ConceptSet) -> bool:
    return cfg.report.labelling_sample > 0 and bool(concept_set.protected)


def write_labelling_sample(generated: Any, source: Any, run_dir: Path,
                           concept_set: ConceptSet, *, n: int, seed: int,
                           value_range: tuple[float, float]) -> dict[str, Any]:
    """Write ``samples/labelling/``: a PNG per image of the labelling sample and its index.

    Parameters
    ----------
    generated
        The audited generated images' rows of ``predictions.parquet`` (``image_id`` and
        ``pred__<concept>`` of every protected concept).
    source
        Their image source (``image_ids``, ``get_batch``).
    n, seed
        Sample size and seed (:func:`audit.labels.sample_index`).

    Returns
    -------
    The index written (:func:`audit.labels.sample_index`).
    """
    from audit.labels import SAMPLE_DIR, SAMPLE_INDEX, sample_index

    choices = {c.name: list(c.groups) for c in concept_set.protected}
    index, positions = sample_index(
        image_ids=[str(i) for i in generated["image_id"]],
        decoded={c: generated[f"pred__{c}"].astype(str).tolist() for c in choices},
        choices=choices, n=n, seed=seed)
    ensure_dir(run_dir / SAMPLE_DIR)
    ids = [str(generated["image_id"].iloc[int(i)]) for i in positions]
    start, step = 0, 4  # a few images first, then as many as _PIXELS_IN_MEMORY allows
    while start < len(ids):
        chunk = ids[start:start + step]
        batch = _images(source, chunk)
        if len(batch) != len(chunk):
            raise DataError("the generated images of predictions.parquet are not all in the "
                            "run's generated image source; run `gan-audit run CONFIG` again so "
                            "that every stage reads the same images.")
        for j, image in enumerate(batch):
            item = index["items"][start + j]
            pixels = _enlarged(image[None], value_range=value_range, min_side=LABEL_VIEW_PX)[0]
            _save_png(run_dir / item["file"], _at_most(
                (pixels.transpose(1, 2, 0) * 255).round().astype(np.uint8), LABEL_MAX_PX))
        start += len(chunk)
        step = max(1, min(64, _PIXELS_IN_MEMORY // max(1, batch[0].size)))
    atomic_write_json(run_dir / SAMPLE_INDEX, index)
    return index
