"""Decoders on disk: safetensors weights and JSON metadata (never a pickle).

A decoders folder holds, per layer, ``<layer>.safetensors`` (the MLP weights) and
``<layer>.json`` (layer, pooling, concept set with its sha256, standardisation
statistics, temperatures, hidden sizes, training settings, metrics, discriminator
sha256), plus ``layers.json`` (sweep), ``validity.json`` and ``splits.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from audit.concepts import ConceptSet
from audit.config import DecoderSettings
from audit.decode.bundle import DecoderBundle, LayerDecoder
from audit.errors import RunFolderError
from audit.io import atomic_path, atomic_write_json, ensure_dir

__all__ = ["save_decoders", "load_decoders", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_RETRAIN = "Train the decoders again (gan-audit train-decoders CONFIG.yaml)."


def _file_stem(layer: str) -> str:
    """A layer name as a file name ('/' and other separators become '_')."""
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in layer)


def save_decoders(bundle: DecoderBundle, directory: str | Path) -> Path:
    """Write the decoders of every layer, the sweep, validity and splits to ``directory``.

    Every file is written atomically. Returns the folder.
    """
    from safetensors.numpy import save_file

    directory = ensure_dir(Path(directory))
    concept_set = {"name": bundle.concept_set.name, "sha256": bundle.concept_set.sha256,
                   "definition": bundle.concept_set.model_dump(mode="json")}
    files = {}
    for layer in bundle.layers:
        dec = bundle.decoders[layer]
        stem = _file_stem(layer)
        if stem in files.values():          # e.g. 'a/b' and 'a_b'
            stem = f"{stem}-{len(files)}"
        with atomic_path(directory / f"{stem}.safetensors", suffix=".safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v, dtype=np.float32)
                       for k, v in dec.params.items()}, str(tmp),
                      metadata={"layer": layer, "format_version": str(FORMAT_VERSION)})
        atomic_write_json(directory / f"{stem}.json", {
            "format_version": FORMAT_VERSION, "layer": layer, "pooling": bundle.pooling,
            "model_sha256": bundle.model_sha256, "concept_set": concept_set,
            "n_features": dec.n_features, "hidden": list(bundle.settings.hidden),
            "weights": f"{stem}.safetensors", "mean": dec.mean, "std": dec.std,
            "temperatures": dec.temperatures, "epochs": dec.epochs, "history": dec.history,
            "settings": bundle.settings.model_dump(mode="json"), "metrics": dec.metrics,
        })
        files[layer] = stem
    atomic_write_json(directory / "layers.json", {**bundle.sweep, "files": files})
    atomic_write_json(directory / "validity.json", bundle.validity)
    atomic_write_json(directory / "splits.json", bundle.splits)
    return directory


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise RunFolderError(f"{path}: missing; the decoders folder is incomplete. {_RETRAIN}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{path}: not readable JSON ({exc}); the file is corrupt. "
                             f"{_RETRAIN}") from exc


def _read_weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if not path.is_file():
        raise RunFolderError(f"{path}: missing; the decoders folder is incomplete. {_RETRAIN}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise RunFolderError(f"{path}: not a readable safetensors file ({exc}). "
                             f"{_RETRAIN}") from exc


def _layer_decoder(directory: Path, layer: str, stem: str, sha: str
                   ) -> tuple[LayerDecoder, dict[str, Any]]:
    meta = _read_json(directory / f"{stem}.json")
    where = directory / f"{stem}.json"
    try:
        if meta["format_version"] != FORMAT_VERSION:
            raise RunFolderError(f"{where}: decoder format {meta['format_version']}, this "
                                 f"gan-audit reads format {FORMAT_VERSION}. {_RETRAIN}")
        if meta["layer"] != layer or meta["concept_set"]["sha256"] != sha:
            raise RunFolderError(f"{where}: belongs to layer {meta['layer']!r} / concept set "
                                 f"{meta['concept_set']['name']!r}, not to this folder's "
                                 f"layer {layer!r} and concept set. {_RETRAIN}")
        params = _read_weights(directory / meta["weights"])
        mean = np.asarray(meta["mean"], dtype=np.float32)
        std = np.asarray(meta["std"], dtype=np.float32)
        dec = LayerDecoder(layer, params, mean, std,
                           {k: float(v) for k, v in meta["temperatures"].items()},
                           meta["metrics"], int(meta["epochs"]), meta.get("history") or {})
        n_hidden = sum(1 for k in params if k.startswith("trunk.") and k.endswith(".weight"))
        if (params["trunk.0.weight" if n_hidden else "head.weight"].shape[1] != len(mean)
                or n_hidden != len(meta["hidden"]) or len(std) != len(mean)):
            raise RunFolderError(f"{directory / meta['weights']}: the weights do not fit "
                                 f"{where} (hidden sizes or feature count differ). {_RETRAIN}")
    except (KeyError, TypeError, ValueError) as exc:
        raise RunFolderError(f"{where}: missing or malformed field ({exc!r}). "
                             f"{_RETRAIN}") from exc
    return dec, meta


def load_decoders(directory: str | Path) -> DecoderBundle:
    """Read decoders written by :func:`save_decoders` (safetensors and JSON only).

    Raises :class:`RunFolderError` naming the missing or corrupt file.
    """
    from audit.runfolder import refuse_links

    directory = Path(directory)
    if not directory.is_dir():
        raise RunFolderError(f"{directory}: no decoders folder here. {_RETRAIN}")
    for path in [directory, *directory.iterdir()]:
        refuse_links(path)
    sweep = _read_json(directory / "layers.json")
    validity = _read_json(directory / "validity.json")
    splits = _read_json(directory / "splits.json")
    try:
        files = sweep.pop("files")
        layers = tuple(sweep["layers"])
        sha = validity["concept_set"]["sha256"]
        decoders, metas = {}, {}
        for layer in layers:
            decoders[layer], metas[layer] = _layer_decoder(directory, layer, files[layer], sha)
        meta = metas[layers[0]]
        concept_set = ConceptSet.model_validate(meta["concept_set"]["definition"])
        settings = DecoderSettings.model_validate(meta["settings"])
    except RunFolderError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise RunFolderError(f"{directory}: layers.json, validity.json or a layer file is "
                             f"malformed ({exc!r}). {_RETRAIN}") from exc
    if concept_set.sha256 != sha:
        raise RunFolderError(f"{directory}: the stored concept set does not match its sha256 "
                             f"in validity.json; the folder was edited. {_RETRAIN}")
    return DecoderBundle(concept_set=concept_set, model_sha256=meta["model_sha256"],
                         pooling=meta["pooling"], layers=layers, decoders=decoders,
                         best=dict(sweep["best"]), validity=validity, sweep=sweep,
                         splits=splits, settings=settings)
