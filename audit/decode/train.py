"""Activations + labels -> trained decoders with their validity evidence."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from audit.concepts import ConceptSet
from audit.config import DecoderSettings
from audit.decode.bundle import DecoderBundle, LayerDecoder, standardise
from audit.decode.metrics import (
    accuracy,
    balanced_accuracy,
    concept_metrics,
    confusion_counts,
    expected_calibration_error,
    macro_auroc,
)
from audit.decode.model import (
    HeadLayout,
    _nll,
    concept_probabilities,
    decide,
    temperature_and_nll,
)
from audit.decode.split import SPLITS, encode_labels, grouped_split, id_groups
from audit.errors import ConfigError, DataError

__all__ = ["activations_to_decoders", "train_decoders", "joint_confusions"]


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
            raise DataError(f"layer {layer!r}: the activations contain NaN or infinite values; "
                            f"re-extract that layer or leave it out.")
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
    if calibrate:
        t, nll = temperature_and_nll(z, y, kind)
        return nll, t
    return float(_nll(np.asarray(z, dtype=np.float64), y, kind, np.array([1.0]))[0]), 1.0


def _val_auroc(z: np.ndarray, y: np.ndarray, kind: str, temperature: float) -> float:
    """Macro AUROC of one concept's logits ``z`` at ``temperature`` on labelled rows."""
    known = y >= 0
    return macro_auroc(y[known], concept_probabilities(z[known], kind, temperature))


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


def _paired_layout(layout: HeadLayout) -> HeadLayout:
    """``layout`` followed by a copy of itself: the real and the control-task concepts."""
    return HeadLayout((*layout.names, *(f"{n} (control)" for n in layout.names)),
                      layout.kinds * 2, layout.groups * 2)


def _calibrate(params: dict[str, np.ndarray], x_val: np.ndarray, y_val: np.ndarray,
               layout: HeadLayout, settings: DecoderSettings, only: Sequence[str] | None = None,
               ) -> tuple[np.ndarray, dict[str, float], dict[str, float]]:
    """Validation logits, then per concept (of ``only``, default all) the temperature and
    the calibrated NLL."""
    z = _logits(params, x_val)
    temps, nlls = {}, {}
    for j, name in enumerate(layout.names):
        if only is not None and name not in only:
            continue
        nlls[name], temps[name] = _calibrated_nll(z[:, layout.slice(j)], y_val[:, j],
                                                  layout.kinds[j], settings.calibrate)
    return z, temps, nlls


def _select(mlp: dict[str, np.ndarray], probe: dict[str, np.ndarray], x_val: np.ndarray,
            y_val: np.ndarray, layout: HeadLayout, settings: DecoderSettings,
            only: Sequence[str], calibrated: tuple[dict[str, float], dict[str, float]]
            | None = None, z_val: np.ndarray | None = None,
            ) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, float]]:
    """Per concept of ``only``, the MLP or the probe, whichever has the lower calibrated
    validation loss (the other concepts' outputs stay as they are).

    ``calibrated``: the MLP's temperatures and calibrated losses (:func:`_calibrate`) of
    the concepts of ``only``, if known; ``z_val``: its validation logits, if kept (the
    probe's go in where the probe is chosen). Returns the decoder's weights,
    ``{concept: "mlp" | "linear"}`` and the temperatures of the concepts of ``only``. Ties
    go to the probe; without ``settings.select_linear`` the MLP is kept.
    """
    if calibrated is None:
        _, temps, nll_m = _calibrate(mlp, x_val, y_val, layout, settings, only)
    else:
        temps, nll_m = ({n: d[n] for n in only} for d in calibrated)
    choice = dict.fromkeys(only, "mlp")
    if not settings.select_linear:
        return mlp, choice, temps
    z_p, temps_p, nll_p = _calibrate(probe, x_val, y_val, layout, settings, only)
    params = mlp
    for j, name in enumerate(layout.names):
        if name in choice and nll_p[name] <= nll_m[name]:
            params = _with_linear(params, probe, layout.slice(j))
            choice[name], temps[name] = "linear", temps_p[name]
            if z_val is not None:
                z_val[:, layout.slice(j)] = z_p[:, layout.slice(j)]
    return params, choice, temps


def _zero_linear(width: int, dim: int) -> dict[str, np.ndarray]:
    """A linear map with every output 0 (rows are filled in as probes are fitted)."""
    return {"head.weight": np.zeros((width, dim), dtype=np.float32),
            "head.bias": np.zeros(width, dtype=np.float32)}


def _columns(layout: HeadLayout, names: Sequence[str]) -> np.ndarray:
    """The output rows of ``names``' logits (in ``layout``'s order)."""
    return np.array(layout.rows([j for j, n in enumerate(layout.names) if n in names]))


def _paired_start(start: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Starting point of a :func:`_paired_layout` fit: the real task's linear start, the
    control task's at 0."""
    return {k: np.concatenate([v, np.zeros_like(v)]) for k, v in start.items()}


def joint_confusions(codes: np.ndarray, decided: Mapping[str, np.ndarray],
                     concept_set: ConceptSet) -> dict[str, dict[str, Any]]:
    """Held-out joint confusion counts of every intersection of ``concept_set``.

    Parameters
    ----------
    codes : n x C int
        True group codes of the test images (``-1`` where missing), columns in the order
        of ``concept_set.concepts``.
    decided : {concept: (n,) int}
        Decoded group codes of the same images (each concept at its chosen layer).
    concept_set : ConceptSet
        Gives the intersections and the concepts' groups.

    Returns
    -------
    ``{"tone+stroke": {"concepts", "groups", "n_test", "confusion"}}``: joint groups in
    product order (``"dark+thick"``; the first concept's group varies slowest), counts
    (rows = true joint group, columns = decoded joint group) over the images whose every
    crossed concept is labelled.
    """
    out: dict[str, dict[str, Any]] = {}
    for combo in concept_set.intersections:
        idx = [concept_set.names.index(name) for name in combo]
        known = np.logical_and.reduce([codes[:, j] >= 0 for j in idx])
        true = np.zeros(int(known.sum()), dtype=np.int64)
        pred = np.zeros_like(true)
        labels = [""]
        for name, j in zip(combo, idx, strict=True):
            groups = concept_set.concepts[j].groups
            true = true * len(groups) + codes[known, j]
            pred = pred * len(groups) + decided[name][known]
            labels = [f"{a}+{g}" if a else g for a in labels for g in groups]
        out["+".join(combo)] = {"concepts": list(combo), "groups": labels,
                                "n_test": len(true),
                                "confusion": confusion_counts(true, pred, len(labels)).tolist()}
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
        metrics, linear probe, control task, selectivity, which decoder was used; the
        joint confusion counts of each intersection, :func:`joint_confusions`), the
        layer ``sweep`` (test scores for the chart, validation scores behind the choice)
        and the ``splits`` (image ids per split).

    Notes
    -----
    Per layer, a few batched L-BFGS steps of the linear probe's objective (scikit-learn's
    ``LogisticRegression()``: ``probe_start_iter``) give a linear start. Every layer's MLP
    then trains at once on top of it: the linear path is that start, kept fixed, and the
    hidden layers (reading the top ``trunk_components`` principal components of the
    standardised input; their head starts at zero) learn what it misses, with minibatch
    AdamW on a one-cycle schedule, early stopping on the validation loss after every
    epoch, and successive halving (``prune_after``, ``prune_keep``: layers that lead no
    concept stop early). The full probe of a concept (to scikit-learn's tolerance within
    ``probe_max_iter``, from the start; for the real and the control task at once) is
    fitted only where it can matter: at the concept's best layer by the MLPs' validation
    macro AUROC (``probe_layers``) and wherever the choice then lands. There the decoder
    keeps the probe instead of the MLP for that concept when the probe's calibrated
    validation loss is not higher
    (``metrics["decoder"]``: ``"mlp"`` or ``"linear"``), so on held-out data it does not
    fall below the probe beyond noise, and the layer is chosen again. ``probe_accuracy``
    is NaN where no probe of the concept was fitted.
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
    split, split_info = grouped_split(codes, protected, settings.split, seed=settings.seed,
                                      groups=id_groups(labels["image_id"].astype(str).tolist(),
                                                       settings.group_by))
    train, val, test = (np.flatnonzero(split == i) for i in range(3))
    sizes = [len(g) for g in layout.groups]

    # Standardise each layer with training-split statistics (two passes over the training
    # rows, sums in float64).
    stats, xs = {}, {}
    for layer in layers:
        f = np.asarray(features[layer], dtype=np.float32)
        f_train = f[train]
        mean = f_train.mean(axis=0, dtype=np.float64).astype(np.float32)
        std = np.sqrt(np.mean(np.square(f_train - mean), axis=0, dtype=np.float64)
                      ).astype(np.float32)
        std[~(std > 1e-6)] = 1.0
        stats[layer] = (mean, std)
        xs[layer] = standardise(f, mean, std)

    dev = _torch_device(device)
    fork = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork, device_type=dev.type if fork else "cuda"):
        torch.manual_seed(settings.seed)
        from audit.decode._fit import fit_mlps, principal_bases
        from audit.decode._lbfgs import designs, fit_probes, gram_matrices, probe_preconditioners

        xt = [torch.as_tensor(xs[lay], device=dev) for lay in layers]
        design = designs(xt, train)          # shared by every probe fit on the training rows
        grams = gram_matrices(design)
        precond = probe_preconditioners(grams, len(train))
        bases = principal_bases(grams, settings.trunk_components, seed=settings.seed)
        del grams
        n_lay = len(layers)

        # Linear starts at every layer: a few L-BFGS steps of the probe's objective (all
        # of them without hidden layers, where the decoder is the probe).
        shuffled = _shuffled(codes, split, settings.seed + 1)
        full = not settings.hidden
        t_real = _targets([codes] * n_lay, [(codes >= 0).astype(np.float32)] * n_lay, dev)
        starts = fit_probes(xt, t_real, train, layout, precond=precond, design=design,
                            max_iter=settings.probe_max_iter if full
                            else settings.probe_start_iter, tol=settings.probe_tol)

        # Every layer's MLP at once, its linear path started from there.
        init = starts if settings.init_from_probe else None
        weights = _sample_weights(codes, train, sizes, settings.class_balanced)
        fixed = [layers.index(lay) for lay in settings.layer.values()]
        projected = [x if b is None else x @ b for x, b in zip(xt, bases, strict=True)]
        mlps, epochs, history = fit_mlps(xt, _targets([codes] * n_lay, [weights] * n_lay, dev),
                                         train, val, layout, settings, init=init, bases=bases,
                                         keep=fixed, projected=projected)

        # The layer of each concept is chosen on the validation split, not on test.
        val_scores: dict[str, dict[str, float]] = {name: {} for name in layout.names}
        temps: list[dict[str, float]] = []
        mlp_nll: list[dict[str, float]] = []      # calibrated validation loss of each MLP
        choices = [dict.fromkeys(layout.names, "mlp") for _ in layers]

        z_val: list[np.ndarray] = []             # validation logits of each layer's decoder

        def score(i: int, names: Sequence[str]) -> None:
            """Validation macro AUROC of ``names`` at layer i."""
            z = z_val[i]
            for j, name in enumerate(layout.names):
                if name in names:
                    val_scores[name][layers[i]] = _val_auroc(
                        z[:, layout.slice(j)], codes[val, j], layout.kinds[j], temps[i][name])

        for i, layer in enumerate(layers):
            z, t, nll = _calibrate(mlps[i], xs[layer][val], codes[val], layout, settings)
            temps.append(t)
            mlp_nll.append(nll)
            z_val.append(z)
            score(i, layout.names)

        # The linear probe of each concept (scikit-learn's objective, to its tolerance),
        # for the real and the control task at once, only where it can matter: at the
        # concept's best layer(s) by the MLPs' validation scores (``probe_layers``; an MLP
        # starts from its layer's linear start and leaves it only for a lower validation
        # loss), then wherever the choice lands. There the decoder keeps the probe instead
        # of the MLP when the MLP does not lower the calibrated validation loss, and the
        # layer is chosen again on the resulting validation scores.
        probed: dict[int, set[str]] = {i: set() for i in range(n_lay)}
        probe_real = [_zero_linear(layout.width, x.shape[1]) for x in xt]
        probe_ctrl = [_zero_linear(layout.width, x.shape[1]) for x in xt]
        wanted = {(layers.index(lay), name) for name, lay in settings.layer.items()}
        for name in layout.names:
            ranked = sorted(range(n_lay), key=lambda i, s=val_scores[name]: (
                np.nan_to_num(s[layers[i]], nan=-np.inf), i))
            wanted.update((i, name) for i in ranked[-settings.probe_layers:])
        paired, both = _paired_layout(layout), np.concatenate([codes, shuffled], axis=1)
        while True:
            new: dict[int, list[str]] = {}
            for i, name in sorted(wanted):
                if name not in probed[i]:
                    new.setdefault(i, []).append(name)
            if new:
                # One batched fit: the problems not wanted at a layer stay out of the batch.
                members = sorted(new)
                mask = np.array([[name in new[i] for name in layout.names] * 2
                                 for i in members])
                fitted = fit_probes(
                    [xt[i] for i in members],
                    _targets([both] * len(members), [(both >= 0).astype(np.float32)]
                             * len(members), dev),
                    train, paired, precond=[precond[i] for i in members],
                    design=[design[i] for i in members], wanted=mask,
                    max_iter=settings.probe_max_iter, tol=settings.probe_tol,
                    init=[_paired_start(starts[i]) for i in members])
                for i, p in zip(members, fitted, strict=True):
                    names = new[i]
                    cols = _columns(layout, names)
                    for target, rows in ((probe_real[i], cols), (probe_ctrl[i],
                                                                  cols + layout.width)):
                        for k, v in p.items():
                            target[k][cols] = v[rows]
                    probed[i].update(names)
                    mlps[i], choice, t = _select(mlps[i], probe_real[i], xs[layers[i]][val],
                                                 codes[val], layout, settings, only=names,
                                                 calibrated=(temps[i], mlp_nll[i]),
                                                 z_val=z_val[i])
                    choices[i].update(choice)
                    temps[i].update(t)
                    score(i, names)
            best = {name: settings.layer.get(name) or _choose(val_scores[name], layers)
                    for name in layout.names}
            wanted = {(layers.index(lay), name) for name, lay in best.items()}
            if all(name in probed[i] for i, name in wanted):
                break
        chosen = [lay for lay in layers if lay in best.values()]
        at = [layers.index(lay) for lay in chosen]

        # The control task at the chosen layers, trained and decided like the real one:
        # its own linear start, the MLP on top, then per concept chosen there the MLP or
        # the control's probe, whichever has the lower calibrated validation loss.
        t_shuf = _targets([shuffled] * len(at), [(shuffled >= 0).astype(np.float32)] * len(at),
                          dev)
        ctrl_starts = ([probe_ctrl[i] for i in at] if full else
                       fit_probes([xt[i] for i in at], t_shuf, train, layout,
                                  precond=[precond[i] for i in at],
                                  design=[design[i] for i in at],
                                  max_iter=settings.probe_start_iter, tol=settings.probe_tol))
        w_ctrl = _sample_weights(shuffled, train, sizes, settings.class_balanced)
        controls, _, _ = fit_mlps(
            [xt[i] for i in at], _targets([shuffled] * len(at), [w_ctrl] * len(at), dev),
            train, val, layout, settings,
            init=ctrl_starts if settings.init_from_probe else None,
            bases=[bases[i] for i in at], keep=range(len(at)),   # no halving: all chosen
            projected=[projected[i] for i in at])
    controls = [_select(c, probe_ctrl[i], xs[layers[i]][val], shuffled[val], layout, settings,
                        only=[n for n in layout.names if best[n] == layers[i]])[0]
                for c, i in zip(controls, at, strict=True)]

    # Validation and held-out metrics of every concept at every layer.
    prot = {c.name: (tuple(c.groups), codes[test, j])
            for j, c in enumerate(concept_set.concepts) if c.protected}
    decoders: dict[str, LayerDecoder] = {}
    decided: dict[str, np.ndarray] = {}       # test-split decisions at the chosen layers
    for i, layer in enumerate(layers):
        logits = _logits(mlps[i], xs[layer][test])
        probe_logits = _logits(probe_real[i], xs[layer][test]) if probed[i] else None
        metrics = {}
        for j, name in enumerate(layout.names):
            kind, sl, t = layout.kinds[j], layout.slice(j), temps[i][name]
            prob = concept_probabilities(logits[:, sl], kind, t)
            pred = decide(prob, kind)
            if best[name] == layer:
                decided[name] = pred
            m = concept_metrics(codes[test, j], prob, pred, prot)
            raw = concept_probabilities(logits[:, sl], kind)
            known = codes[test, j] >= 0
            m["ece_uncalibrated"] = expected_calibration_error(codes[test, j][known],
                                                               raw[known])
            m["temperature"] = t
            m["decoder"] = choices[i][name]
            m["val_auroc"] = val_scores[name][layer]
            m["probe_accuracy"] = float("nan")
            if probe_logits is not None and name in probed[i]:
                p_prob = concept_probabilities(probe_logits[:, sl], kind)
                m["probe_accuracy"] = accuracy(codes[test, j][known],
                                               decide(p_prob, kind)[known])
            metrics[name] = m
        decoders[layer] = LayerDecoder(layer, mlps[i], *stats[layer], temps[i], metrics,
                                       int(epochs[i]), history[i])

    validity: dict[str, Any] = {}
    for j, name in enumerate(layout.names):
        layer = best[name]
        logits = _logits(controls[chosen.index(layer)], xs[layer][test])
        known = codes[test, j] >= 0
        ctrl_pred = decide(concept_probabilities(logits[:, layout.slice(j)], layout.kinds[j]),
                           layout.kinds[j])[known]
        ctrl_acc = accuracy(codes[test, j][known], ctrl_pred)
        ctrl_bal = balanced_accuracy(codes[test, j][known], ctrl_pred)
        m = dict(decoders[layer].metrics[name])
        # Selectivity (Hewitt & Liang 2019) on balanced accuracy: with plain accuracy a
        # majority-class guess of an imbalanced concept matches a good decoder.
        selectivity = m["balanced_accuracy"] - ctrl_bal
        validity[name] = {
            "layer": layer, "groups": list(layout.groups[j]), **m,
            "control_accuracy": ctrl_acc, "control_balanced_accuracy": ctrl_bal,
            "selectivity": selectivity, "selectivity_accuracy": m["accuracy"] - ctrl_acc,
            "decodable": bool(np.isfinite(selectivity)
                              and selectivity >= settings.min_selectivity),
        }
    return DecoderBundle(
        concept_set=concept_set, model_sha256=model_sha256, pooling=pooling,
        layers=tuple(layers), decoders=decoders, best=best,
        validity={"concept_set": {"name": concept_set.name, "sha256": concept_set.sha256},
                  "model_sha256": model_sha256, "concepts": validity,
                  "intersections": joint_confusions(codes[test], decided, concept_set)},
        sweep={"layers": layers, "metric": "macro_auroc", "chosen_on": "validation",
               "scores": {n: {lay: decoders[lay].metrics[n]["auroc"] for lay in layers}
                          for n in layout.names},
               "accuracy": {n: {lay: decoders[lay].metrics[n]["accuracy"] for lay in layers}
                            for n in layout.names},
               "probe_accuracy": {n: {lay: decoders[lay].metrics[n]["probe_accuracy"]
                                      for lay in layers} for n in layout.names},
               "val_scores": val_scores,
               "decoder": {n: {lay: decoders[lay].metrics[n]["decoder"] for lay in layers}
                           for n in layout.names},
               "best": best},
        splits={"seed": settings.seed, "fractions": list(settings.split),
                "stratify_by": [concept_set.concepts[j].name
                                for j in split_info["stratify_by"]],
                "pooled_rows": split_info["pooled_rows"],
                "group_by": settings.group_by, "n_groups": split_info.get("n_groups"),
                **{name: labels["image_id"].astype(str).to_numpy()[split == i].tolist()
                   for i, name in enumerate(SPLITS)}},
        settings=settings,
    )


train_decoders = activations_to_decoders
