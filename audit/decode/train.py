"""Activations + labels -> trained decoders with their validity evidence."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from audit.concepts import ConceptSet
from audit.config import DecoderSettings
from audit.decode.bundle import DecoderBundle, LayerDecoder, standardise
from audit.decode.metrics import accuracy, concept_metrics
from audit.decode.model import (
    HeadLayout,
    concept_probabilities,
    decide,
    fit_temperature,
    forward_logits,
)
from audit.decode.split import SPLITS, encode_labels, stratified_split
from audit.errors import ConfigError, DataError

__all__ = ["activations_to_decoders", "train_decoders"]


def _check_inputs(features: Mapping[str, np.ndarray], labels: pd.DataFrame) -> list[str]:
    if not features:
        raise DataError("no activations given: pass at least one layer's N x D features.")
    if "image_id" not in labels.columns:
        raise DataError(f"the labels table has no 'image_id' column (columns: "
                        f"{list(labels.columns)}); add the image ids.")
    for layer, x in features.items():
        shape = np.shape(x)
        if len(shape) != 2 or shape[0] != len(labels):
            raise DataError(f"layer {layer!r}: activations of shape {shape} do not match the "
                            f"{len(labels)} labelled images; expected {len(labels)} x D, rows "
                            f"in the order of the labels.")
        if not np.isfinite(np.asarray(x, dtype=np.float32)).all():
            raise DataError(f"layer {layer!r}: the activations contain NaN or infinite values "
                            f"(float16 overflow?); re-extract that layer or leave it out.")
    return list(features)


def _sample_weights(codes: np.ndarray, train: np.ndarray, sizes: list[int],
                    balanced: bool) -> np.ndarray:
    """N x C float32: 0 where missing; n / (K * n_k) per class when ``balanced``, else 1."""
    w = (codes >= 0).astype(np.float32)
    if not balanced:
        return w
    for j, k in enumerate(sizes):
        counts = np.bincount(codes[train, j][codes[train, j] >= 0], minlength=k)
        present = counts > 0
        cw = np.zeros(k)
        cw[present] = counts.sum() / (present.sum() * counts[present])
        w[:, j] = np.where(codes[:, j] >= 0, cw[codes[:, j].clip(min=0)], 0.0)
    return w


def _shuffled(codes: np.ndarray, split: np.ndarray, seed: int) -> np.ndarray:
    """Control-task labels: each concept's labels permuted within train and within val."""
    rng = np.random.default_rng(seed)
    out = codes.copy()
    for part in (0, 1):
        rows = np.flatnonzero(split == part)
        for j in range(codes.shape[1]):
            out[rows, j] = codes[rows[rng.permutation(len(rows))], j]
    return out


def _choose(scores: dict[str, float], layers: list[str]) -> str:
    """Best layer by score; ties (and all-undefined) go to the later layer."""
    best = layers[-1]
    best_score = -np.inf
    for layer in layers:
        s = scores[layer]
        if np.isfinite(s) and s >= best_score:
            best, best_score = layer, s
    return best


def _torch_device(device: str) -> Any:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _padded(xs: list[np.ndarray], device: Any) -> Any:
    """M x N x Dmax float32 tensor, each member zero-padded to the widest."""
    import torch

    out = torch.zeros(len(xs), xs[0].shape[0], max(x.shape[1] for x in xs), device=device)
    for i, x in enumerate(xs):
        out[i, :, :x.shape[1]] = torch.from_numpy(x)
    return out


def _targets(codes: list[np.ndarray], weights: list[np.ndarray], device: Any) -> Any:
    import torch

    from audit.decode._fit import Targets

    return Targets(torch.as_tensor(np.stack(codes), device=device),
                   torch.as_tensor(np.stack(weights), device=device))


def activations_to_decoders(features: Mapping[str, np.ndarray], labels: pd.DataFrame,
                            concept_set: ConceptSet, *, settings: DecoderSettings | None = None,
                            model_sha256: str, pooling: str, device: str = "cpu",
                            ) -> DecoderBundle:
    """Train one decoder MLP per layer and measure its validity on held-out images.

    Parameters
    ----------
    features : {layer: N x D array}
        Pooled activations (float16 or float32) of N labelled images, rows in the order
        of ``labels``; the mapping's order is the layer order (ties go to later layers).
    labels : DataFrame
        ``image_id`` and one column per concept with group names, missing where unknown.
    concept_set : ConceptSet
        The concepts to decode.
    settings : DecoderSettings
        Network, training, split, calibration and layer-choice settings.
    model_sha256, pooling : str
        Identify the discriminator and the pooling; the decoders refuse other activations.
    device : str
        ``cpu``, ``cuda``, ``mps`` or ``auto``.

    Returns
    -------
    DecoderBundle
        Decoders of every layer, the chosen layer per concept, ``validity`` (held-out
        metrics, linear probe, control task, selectivity), the layer ``sweep`` and the
        ``splits`` (image ids per split).

    Notes
    -----
    Every layer's MLP trains at once (full batch unless ``settings.batch_size``), with
    AdamW and early stopping on the validation loss. Temperatures are fitted on the
    validation split. The control task (labels shuffled within the training and the
    validation split) is trained at each concept's chosen layer. The seed fixes the
    split, the initialisation, dropout and the shuffles: two runs give the same decoders.
    """
    import torch

    from audit.decode._fit import fit_mlps, fit_probes

    settings = settings or DecoderSettings()
    layers = _check_inputs(features, labels)
    for concept, layer in settings.layer.items():
        concept_set.concept(concept)
        if layer not in features:
            raise ConfigError(f"decoders.layer fixes concept {concept!r} to layer {layer!r}, "
                              f"which was not recorded (layers: {layers}). Use one of those "
                              f"or record that layer.")
    layout = HeadLayout.from_concepts(concept_set)
    codes = encode_labels(labels, concept_set)
    protected = [j for j, c in enumerate(concept_set.concepts) if c.protected] or [0]
    split, split_info = stratified_split(codes, protected, settings.split, seed=settings.seed)
    train, val, test = (np.flatnonzero(split == i) for i in range(3))
    sizes = [len(g) for g in layout.groups]

    # Standardise each layer with training-split statistics.
    stats, xs = {}, {}
    for layer in layers:
        f = np.asarray(features[layer], dtype=np.float32)
        mean = f[train].mean(axis=0, dtype=np.float64).astype(np.float32)
        std = f[train].std(axis=0, dtype=np.float64).astype(np.float32)
        std[~(std > 1e-6)] = 1.0
        stats[layer] = (mean, std)
        xs[layer] = standardise(f, mean, std)

    dev = _torch_device(device)
    fork = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork, device_type=dev.type if fork else "cuda"):
        torch.manual_seed(settings.seed)
        x_all = _padded([xs[lay] for lay in layers], dev)
        fan_in = [xs[lay].shape[1] for lay in layers]
        weights = _sample_weights(codes, train, sizes, settings.class_balanced)
        t_real = _targets([codes] * len(layers), [weights] * len(layers), dev)
        mlps, epochs = fit_mlps(x_all, fan_in, t_real, train, val, layout, settings)
        probes = fit_probes(x_all, fan_in, t_real, train, layout)
        del x_all

        # Held-out metrics of every concept at every layer.
        prot = {c.name: (tuple(c.groups), codes[test, j])
                for j, c in enumerate(concept_set.concepts) if c.protected}
        decoders: dict[str, LayerDecoder] = {}
        for i, layer in enumerate(layers):
            logits = forward_logits(mlps[i], xs[layer])
            probe_logits = forward_logits(probes[i], xs[layer][test])
            temps, metrics = {}, {}
            for j, name in enumerate(layout.names):
                kind, sl = layout.kinds[j], layout.slice(j)
                temps[name] = (fit_temperature(logits[val, sl], codes[val, j], kind)
                               if settings.calibrate else 1.0)
                prob = concept_probabilities(logits[test, sl], kind, temps[name])
                m = concept_metrics(codes[test, j], prob, decide(prob, kind), prot)
                raw = concept_probabilities(logits[test, sl], kind)
                m["ece_uncalibrated"] = concept_metrics(codes[test, j], raw, decide(raw, kind),
                                                        {})["ece"]
                m["temperature"] = temps[name]
                known = codes[test, j] >= 0
                p_prob = concept_probabilities(probe_logits[:, sl], kind)
                m["probe_accuracy"] = accuracy(codes[test, j][known],
                                               decide(p_prob, kind)[known])
                metrics[name] = m
            decoders[layer] = LayerDecoder(layer, mlps[i], *stats[layer], temps, metrics,
                                           int(epochs[i]))

        best = {name: settings.layer.get(name) or _choose(
            {lay: decoders[lay].metrics[name]["auroc"] for lay in layers}, layers)
            for name in layout.names}

        # Control task at each chosen layer: same MLP, labels shuffled within splits.
        chosen = [lay for lay in layers if lay in best.values()]
        shuffled = _shuffled(codes, split, settings.seed + 1)
        sw = _sample_weights(shuffled, train, sizes, settings.class_balanced)
        controls, _ = fit_mlps(_padded([xs[lay] for lay in chosen], dev),
                               [xs[lay].shape[1] for lay in chosen],
                               _targets([shuffled] * len(chosen), [sw] * len(chosen), dev),
                               train, val, layout, settings)

    validity: dict[str, Any] = {}
    for j, name in enumerate(layout.names):
        layer = best[name]
        logits = forward_logits(controls[chosen.index(layer)], xs[layer][test])
        known = codes[test, j] >= 0
        ctrl = accuracy(codes[test, j][known],
                        decide(concept_probabilities(logits[:, layout.slice(j)],
                                                     layout.kinds[j]), layout.kinds[j])[known])
        m = dict(decoders[layer].metrics[name])
        selectivity = m["accuracy"] - ctrl
        validity[name] = {
            "layer": layer, "groups": list(layout.groups[j]), **m,
            "control_accuracy": ctrl, "selectivity": selectivity,
            "decodable": bool(np.isfinite(selectivity)
                              and selectivity >= settings.min_selectivity),
        }
    return DecoderBundle(
        concept_set=concept_set, model_sha256=model_sha256, pooling=pooling,
        layers=tuple(layers), decoders=decoders, best=best,
        validity={"concept_set": {"name": concept_set.name, "sha256": concept_set.sha256},
                  "model_sha256": model_sha256, "concepts": validity},
        sweep={"layers": layers, "metric": "macro_auroc",
               "scores": {n: {lay: decoders[lay].metrics[n]["auroc"] for lay in layers}
                          for n in layout.names},
               "accuracy": {n: {lay: decoders[lay].metrics[n]["accuracy"] for lay in layers}
                            for n in layout.names},
               "probe_accuracy": {n: {lay: decoders[lay].metrics[n]["probe_accuracy"]
                                      for lay in layers} for n in layout.names},
               "best": best},
        splits={"seed": settings.seed, "fractions": list(settings.split),
                "stratify_by": [concept_set.concepts[j].name
                                for j in split_info["stratify_by"]],
                "pooled_rows": split_info["pooled_rows"],
                **{name: labels["image_id"].astype(str).to_numpy()[split == i].tolist()
                   for i, name in enumerate(SPLITS)}},
        settings=settings,
    )


train_decoders = activations_to_decoders
