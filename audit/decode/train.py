"""Activations + labels -> trained decoders with their validity evidence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from audit.concepts import ConceptSet
from audit.config import DecoderSettings
from audit.decode.bundle import DecoderBundle, LayerDecoder, standardise
from audit.decode.metrics import accuracy, concept_metrics, macro_auroc
from audit.decode.model import (
    HeadLayout,
    _nll,
    concept_probabilities,
    decide,
    fit_temperature,
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


def _targets(codes: list[np.ndarray], weights: list[np.ndarray], device: Any) -> Any:
    import torch

    from audit.decode._fit import Targets

    return Targets(torch.as_tensor(np.stack(codes), device=device),
                   torch.as_tensor(np.stack(weights), device=device))


def _logits(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits of standardised ``x`` (forward_logits, computed in torch while training)."""
    from audit.decode._fit import logits

    return logits(params, x)


def _calibrated_nll(z: np.ndarray, y: np.ndarray, kind: str, calibrate: bool
                    ) -> tuple[float, float]:
    """Validation NLL of one concept's logits and its temperature (1 unless ``calibrate``)."""
    known = y >= 0
    if not known.any():
        return float("nan"), 1.0
    z, y = z[known], y[known]
    t = fit_temperature(z, y, kind) if calibrate else 1.0
    return float(_nll(np.asarray(z, dtype=np.float64), y, kind, np.array([t]))[0]), t


def _with_linear(mlp: dict[str, np.ndarray], probe: dict[str, np.ndarray],
                 sl: slice) -> dict[str, np.ndarray]:
    """``mlp`` with the logits of columns ``sl`` replaced by the probe's (linear path)."""
    out = {k: v.copy() for k, v in mlp.items()}
    if "trunk.0.weight" in out:
        out.setdefault("skip.weight", np.zeros_like(probe["head.weight"]))
        out["head.weight"][sl] = 0.0
        out["skip.weight"][sl] = probe["head.weight"][sl]
    else:
        out["head.weight"][sl] = probe["head.weight"][sl]
    out["head.bias"][sl] = probe["head.bias"][sl]
    return out


@dataclass
class _Fitted:
    """Decoders of M members with their probes, best epochs, choices and temperatures."""

    decoders: list[dict[str, np.ndarray]]
    probes: list[dict[str, np.ndarray]]
    epochs: list[int]
    choices: list[dict[str, str]]          # per member: concept -> "mlp" or "linear"
    temperatures: list[dict[str, float]]   # per member: concept -> temperature
    history: list[dict[str, list[float]]] = field(default_factory=list)  # training curves


def _fit_members(xs: list[Any], precond: list[Any], bases: list[Any], codes: list[np.ndarray],
                 weights: list[np.ndarray], split: np.ndarray, layout: HeadLayout,
                 settings: DecoderSettings) -> _Fitted:
    """Fit probe + MLP on each member's standardised features, pick per concept on val.

    ``xs`` are torch tensors (N x D_i), ``precond`` their probe preconditioners,
    ``bases`` the principal components the hidden layers read (None: all inputs) and
    ``codes`` / ``weights`` each member's labels and sample weights (N x C). Per member
    and concept the decoder keeps the linear probe where its (calibrated) validation
    loss is not higher than the MLP's (``settings.select_linear``).
    """
    from audit.decode._fit import fit_mlps, fit_probes

    train, val = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
    t = _targets(codes, weights, xs[0].device)
    probes = fit_probes(xs, t, train, layout, max_iter=settings.probe_max_iter,
                        precond=precond)
    mlps, epochs, history = fit_mlps(xs, t, train, val, layout, settings,
                                     init=probes if settings.init_from_probe else None,
                                     bases=bases)
    out = _Fitted([], probes, epochs, [], [], history)
    for x, y, mlp, probe in zip(xs, codes, mlps, probes, strict=True):
        x_val, y = x[val].cpu().numpy(), y[val]
        lm = _logits(mlp, x_val)
        lp = _logits(probe, x_val) if settings.select_linear else None
        params, choice, temps = mlp, {}, {}
        for j, name in enumerate(layout.names):
            sl, kind = layout.slice(j), layout.kinds[j]
            nll_m, temps[name] = _calibrated_nll(lm[:, sl], y[:, j], kind, settings.calibrate)
            choice[name] = "mlp"
            if lp is not None:
                nll_p, t_p = _calibrated_nll(lp[:, sl], y[:, j], kind, settings.calibrate)
                if nll_p <= nll_m:
                    params = _with_linear(params, probe, sl)
                    choice[name], temps[name] = "linear", t_p
        out.decoders.append(params)
        out.choices.append(choice)
        out.temperatures.append(temps)
    return out


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
        metrics, linear probe, control task, selectivity, which decoder was used), the
        layer ``sweep`` (test scores for the chart, validation scores behind the choice)
        and the ``splits`` (image ids per split).

    Notes
    -----
    Per layer, a linear probe (scikit-learn's ``LogisticRegression()`` objective, batched
    L-BFGS over all layers and concepts) is fitted first. Every layer's MLP then trains at
    once on top of it: the linear path is the probe, kept fixed, and the hidden layers
    (reading the top ``trunk_components`` principal components of the standardised input;
    their head starts at zero) learn what the probe misses, with minibatch AdamW on a
    one-cycle schedule and early stopping on the validation loss after every epoch.
    Per concept and layer the decoder keeps the probe instead of the MLP when the probe's
    calibrated validation loss is not higher (``metrics["decoder"]``: ``"mlp"`` or
    ``"linear"``), so on held-out data it does not fall below the probe beyond noise.
    Temperatures are fitted on the validation split. Each concept's layer is chosen by
    validation macro AUROC (``sweep["val_scores"]``; ties to the later layer), never on
    the test split, so the held-out validity is not flattered by the choice. The control
    task (labels shuffled within the training and the validation split) is trained the
    same way at the chosen layers only. The seed fixes the split, the initialisation,
    dropout and the shuffles: two runs give the same decoders.
    """
    import torch

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
        from audit.decode._fit import gram_matrices, principal_bases, probe_preconditioners

        xt = [torch.as_tensor(xs[lay], device=dev) for lay in layers]
        grams = gram_matrices(xt, train)
        precond = probe_preconditioners(grams, len(train))
        bases = principal_bases(grams, settings.trunk_components, seed=settings.seed)
        del grams
        n_lay = len(layers)
        fitted = _fit_members(
            xt, precond, bases, [codes] * n_lay,
            [_sample_weights(codes, train, sizes, settings.class_balanced)] * n_lay,
            split, layout, settings)
        mlps, probes, epochs = fitted.decoders, fitted.probes, fitted.epochs

        # Validation and held-out metrics of every concept at every layer.
        prot = {c.name: (tuple(c.groups), codes[test, j])
                for j, c in enumerate(concept_set.concepts) if c.protected}
        decoders: dict[str, LayerDecoder] = {}
        for i, layer in enumerate(layers):
            logits = _logits(mlps[i], xs[layer])
            probe_logits = _logits(probes[i], xs[layer][test])
            temps, metrics = {}, {}
            for j, name in enumerate(layout.names):
                kind, sl = layout.kinds[j], layout.slice(j)
                temps[name] = fitted.temperatures[i][name]
                prob = concept_probabilities(logits[test, sl], kind, temps[name])
                m = concept_metrics(codes[test, j], prob, decide(prob, kind), prot)
                raw = concept_probabilities(logits[test, sl], kind)
                m["ece_uncalibrated"] = concept_metrics(codes[test, j], raw, decide(raw, kind),
                                                        {})["ece"]
                m["temperature"] = temps[name]
                m["decoder"] = fitted.choices[i][name]
                known_val = codes[val, j] >= 0
                m["val_auroc"] = macro_auroc(
                    codes[val, j][known_val],
                    concept_probabilities(logits[val, sl][known_val], kind, temps[name]))
                known = codes[test, j] >= 0
                p_prob = concept_probabilities(probe_logits[:, sl], kind)
                m["probe_accuracy"] = accuracy(codes[test, j][known],
                                               decide(p_prob, kind)[known])
                metrics[name] = m
            decoders[layer] = LayerDecoder(layer, mlps[i], *stats[layer], temps, metrics,
                                           int(epochs[i]), fitted.history[i])

        # The layer of each concept is chosen on the validation split, not on test.
        best = {name: settings.layer.get(name) or _choose(
            {lay: decoders[lay].metrics[name]["val_auroc"] for lay in layers}, layers)
            for name in layout.names}

        # Control task at each chosen layer: the same decoder trained the same way on labels
        # shuffled within the training and the validation split.
        chosen = [lay for lay in layers if lay in best.values()]
        at = [layers.index(lay) for lay in chosen]
        shuffled = _shuffled(codes, split, settings.seed + 1)
        controls = _fit_members(
            [xt[i] for i in at], [precond[i] for i in at], [bases[i] for i in at],
            [shuffled] * len(at),
            [_sample_weights(shuffled, train, sizes, settings.class_balanced)] * len(at),
            split, layout, settings).decoders

    validity: dict[str, Any] = {}
    for j, name in enumerate(layout.names):
        layer = best[name]
        logits = _logits(controls[chosen.index(layer)], xs[layer][test])
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
        sweep={"layers": layers, "metric": "macro_auroc", "chosen_on": "validation",
               "scores": {n: {lay: decoders[lay].metrics[n]["auroc"] for lay in layers}
                          for n in layout.names},
               "accuracy": {n: {lay: decoders[lay].metrics[n]["accuracy"] for lay in layers}
                            for n in layout.names},
               "probe_accuracy": {n: {lay: decoders[lay].metrics[n]["probe_accuracy"]
                                      for lay in layers} for n in layout.names},
               "val_scores": {n: {lay: decoders[lay].metrics[n]["val_auroc"]
                                  for lay in layers} for n in layout.names},
               "decoder": {n: {lay: decoders[lay].metrics[n]["decoder"] for lay in layers}
                           for n in layout.names},
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
