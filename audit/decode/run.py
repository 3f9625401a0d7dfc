"""The decode stage on a run folder (files at the edges): train from the paired store,
and decode new images with a run's decoders. Used by the CLI commands
``train-decoders`` and ``decode``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit.concepts import ConceptSet
from audit.config import AuditConfig, DecoderSettings
from audit.decode.bundle import DecoderBundle, decode
from audit.decode.persist import load_decoders, save_decoders
from audit.decode.train import activations_to_decoders
from audit.errors import DataError, RunFolderError

__all__ = ["train_run_decoders", "decode_images", "extract_like_run", "store_features",
           "write_transfer"]

_EXTRACT = "Run `gan-audit extract CONFIG.yaml` first."


def store_features(store: Any, layers: Sequence[str] | None = None
                   ) -> dict[str, np.ndarray]:
    """``{layer: N x D}`` of an :class:`audit.store.ActivationStore`, in its layer order."""
    return {layer: np.asarray(store.read(layer)) for layer in (layers or store.layers)}


def _aligned_labels(store: Any) -> pd.DataFrame:
    labels = store.labels()
    if labels is None:
        raise RunFolderError(f"{store.path}: the paired store has no labels.parquet; decoders "
                             f"need labelled images. {_EXTRACT}")
    labels = labels.assign(image_id=labels["image_id"].astype(str)).drop_duplicates("image_id")
    missing = sorted(set(store.image_ids) - set(labels["image_id"]))
    if missing:
        raise DataError(f"{store.path}: {len(missing)} stored images have no labels row (e.g. "
                        f"{missing[:3]}); re-run the extraction.")
    return labels.set_index("image_id").loc[store.image_ids].reset_index()


def train_run_decoders(run_dir: Path, concept_set: ConceptSet, settings: DecoderSettings, *,
                       device: str = "cpu") -> DecoderBundle:
    """Train decoders on ``RUN_DIR/activations/paired`` and write ``RUN_DIR/decoders/``."""
    from audit.store import ActivationStore

    store = ActivationStore.open(Path(run_dir) / "activations" / "paired")
    bundle = activations_to_decoders(
        store_features(store), _aligned_labels(store), concept_set, settings=settings,
        model_sha256=store.settings.model_sha256, pooling=store.settings.pooling,
        device=device)
    save_decoders(bundle, Path(run_dir) / "decoders")
    write_transfer(run_dir, bundle, store)
    return bundle


def write_transfer(run_dir: Path, bundle: DecoderBundle, paired: Any) -> Path | None:
    """Write ``RUN_DIR/decoders/transfer.json``: how far the generated images' activations
    at each concept's layer lie from the paired train split's
    (:func:`audit.decode.transfer.run_transfer`); None (nothing written) when the run folder
    has no generated store."""
    from audit.decode.transfer import run_transfer
    from audit.io import atomic_write_json
    from audit.store import ActivationStore

    root = Path(run_dir) / "activations"
    if not (root / "generated").is_dir():
        return None
    layers = sorted(set(bundle.best.values()), key=bundle.layers.index)
    features = {"paired": store_features(paired, layers),
                "generated": store_features(ActivationStore.open(root / "generated"), layers)}
    if (root / "real").is_dir():
        features["real"] = store_features(ActivationStore.open(root / "real"), layers)
    doc = run_transfer(features, bundle.splits, paired.image_ids, bundle.best)
    path = Path(run_dir) / "decoders" / "transfer.json"
    atomic_write_json(path, doc)
    return path


def _image_source(images: Sequence[str], input_spec: Any, run_dir: Path) -> Any:
    """One image source from CLI arguments: a folder (none of the run folder's own files),
    an NPZ file, or image files."""
    from audit.images import FileSource, load_images

    if len(images) == 1 and Path(images[0]).is_dir():
        return load_images(f"folder:{images[0]}", input=input_spec, run_dir=run_dir)
    if len(images) == 1 and images[0].endswith(".npz"):
        return load_images(f"npz:{images[0]}", input=input_spec)
    paths = [Path(p).resolve() for p in images]
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: no such image file. Give a folder, an .npz file or image "
                            f"files.")
    common = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return FileSource(f"files:{len(paths)}", common, paths, target=input_spec)


def decode_images(run_dir: Path, images: Sequence[str], *, device: str = "cpu",
                  trust_run_config: bool = False, class_label: int | None = None
                  ) -> pd.DataFrame:
    """Decode any images with the decoders and the discriminator of a run folder.

    Loads ``RUN_DIR/config.yaml`` (for the discriminator), ``RUN_DIR/decoders/`` and the
    paired store's settings (pooling, projection), records the chosen layers of the
    images in memory and returns :func:`audit.decode.decode`'s table.
    ``class_label``: the class of every image for a class-conditional discriminator
    (default: the run's ``discriminator.class_label``).
    """
    from audit.config import load_run_config
    from audit.load import load_discriminator
    from audit.store import ActivationStore

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunFolderError(f"{run_dir}: no config.yaml, so the discriminator is unknown; "
                             f"give the folder of a gan-audit run.")
    cfg: AuditConfig = load_run_config(run_dir, trust=trust_run_config)
    bundle = load_decoders(run_dir / "decoders")
    paired = ActivationStore.open(run_dir / "activations" / "paired").settings
    model = load_discriminator(cfg.discriminator, device=device)
    source = _image_source(images, model.input, run_dir)
    if class_label is not None:
        if model.conditioning is None:
            import warnings

            warnings.warn(f"--class-label {class_label} is ignored: the run's discriminator "
                          f"({model.spec}) is not class-conditional.", stacklevel=2)
        source.class_labels = np.full(len(source), class_label, dtype=np.int64)
    features, scores, ids, settings = extract_like_run(model, bundle, paired, source,
                                                       device=device)
    return decode(bundle, features, scores, model_sha256=settings.model_sha256,
                  pooling=settings.pooling, image_ids=ids)


def extract_like_run(model: Any, bundle: DecoderBundle, paired: Any, source: Any, *,
                     device: str = "cpu"
                     ) -> tuple[dict[str, np.ndarray], np.ndarray, list[str], Any]:
    """Record new images exactly as a run recorded its own, at the decoders' chosen layers.

    ``paired`` is the settings of the run's paired store (pooling, batch size, projection,
    batch order): a batch-dependent discriminator gets full batches of the run's size,
    however few the images (:mod:`audit.batches`).
    Returns ``({layer: N x D}, scores (N,), image ids, settings)``, recorded in memory
    (:func:`audit.extract.activations_in_memory`: hooks and decoders, no store).
    """
    from audit.extract import activations_in_memory

    layers = [lay for lay in bundle.layers if lay in set(bundle.best.values())]
    recorded = activations_in_memory(
        model, source, layers=layers, pooling=paired.pooling, batch_size=paired.batch_size,
        device=device, max_dim=paired.max_dim, projection_seed=paired.projection_seed,
        include_batch_dependent=True, batch_seed=getattr(paired, "order_seed", None) or 0,
        class_labels=source.class_labels)
    return recorded.features, recorded.scores, recorded.image_ids, recorded.settings
