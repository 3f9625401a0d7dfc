"""Activations + labels -> trained decoders with their validity evidence.

:func:`activations_to_decoders` (alias :func:`train_decoders`) takes in-memory arrays
and runs four phases, each a function of its own: :func:`prepare_split_and_scaling`,
:func:`fit_heads_per_layer`, :func:`fit_controls`, :func:`measure_validity`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
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
from audit.decode.split import SPLITS, encode_labels, grouped_split
from audit.errors import ConfigError, DataError
from audit.ids import id_groups

__all__ = ["LayerHeads", "LayerInputs", "PreparedData", "activations_to_decoders",
           "fit_controls", "fit_heads_per_layer", "joint_confusions", "layer_inputs",
           "measure_validity", "prepare_split_and_scaling", "standardise_layers",
           "train_decoders"]


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
    Four phases, each its own function: :func:`prepare_split_and_scaling` (grouped,
    stratified split; standardisation with training-split statistics),
    :func:`fit_heads_per_layer` (linear starts, every layer's MLP at once, probes where
    they matter, the layer choice on validation), :func:`fit_controls` (the control task
    at the chosen layers) and :func:`measure_validity` (held-out metrics, selectivity,
    joint confusions). Their docstrings say how. The seed fixes the split, the
    initialisation, dropout and the shuffles: two runs give the same decoders.
    """
    settings = settings or DecoderSettings()
    data = prepare_split_and_scaling(features, labels, concept_set, settings=settings)
    with _seeded_torch(device, settings.seed) as dev:
        inputs = layer_inputs(data, settings=settings, device=dev)
        heads = fit_heads_per_layer(data, inputs, settings=settings)
        controls = fit_controls(data, inputs, heads, settings=settings)
    decoders, validity = measure_validity(data, heads, controls, settings=settings)
    return _bundle(data, heads, decoders, validity, settings=settings,
                   model_sha256=model_sha256, pooling=pooling)


train_decoders = activations_to_decoders


# ----------------------------------------------------------- phase 1: split and scaling


@dataclass
class PreparedData:
    """The labelled images split and standardised (:func:`prepare_split_and_scaling`).

    Attributes
    ----------
    concept_set : ConceptSet
        The concepts decoded; ``layout`` says where their logits sit.
    layers : list of str
        Layer order (ties go to later layers).
    codes, shuffled : N x C int64
        Group codes (``-1`` missing) and the control task's (each concept's codes
        permuted within the training and within the validation split).
    split : (N,) int
        0 train, 1 validation, 2 test; ``split_info`` how it was drawn.
    x : {layer: N x D float32}
        Standardised activations; ``stats[layer]`` = (mean, std), (D,) float32 each.
    image_ids : (N,) str
    """

    concept_set: ConceptSet
    layout: HeadLayout
    layers: list[str]
    codes: np.ndarray
    shuffled: np.ndarray
    split: np.ndarray
    split_info: dict[str, Any]
    x: dict[str, np.ndarray]
    stats: dict[str, tuple[np.ndarray, np.ndarray]]
    image_ids: np.ndarray

    @cached_property
    def train(self) -> np.ndarray:
        return np.flatnonzero(self.split == 0)

    @cached_property
    def val(self) -> np.ndarray:
        return np.flatnonzero(self.split == 1)

    @cached_property
    def test(self) -> np.ndarray:
        return np.flatnonzero(self.split == 2)


def prepare_split_and_scaling(features: Mapping[str, np.ndarray], labels: pd.DataFrame,
                              concept_set: ConceptSet, *, settings: DecoderSettings,
                              ) -> PreparedData:
    """Check the inputs, split the images, standardise every layer.

    Parameters
    ----------
    features : {layer: N x D array}
        Activations (float16 or float32), rows in the order of ``labels``.
    labels : DataFrame
        ``image_id`` and one column per concept (group names, missing where unknown).
    concept_set : ConceptSet
    settings : DecoderSettings
        ``split`` fractions, ``group_by``, ``seed``, fixed ``layer`` choices.

    Returns
    -------
    PreparedData
        The split is grouped (``group_by``: variants of one image stay together) and
        stratified on the protected concepts; each layer is standardised with its
        training rows' mean and standard deviation (float64 sums; 1 where constant).

    Raises
    ------
    DataError
        No layers, no ``image_id`` column, activations that do not match the labels or
        are not finite.
    ConfigError
        ``settings.layer`` names an unknown concept or a layer not given.
    """
    layers = _check_inputs(features, labels)
    for concept, layer in settings.layer.items():
        concept_set.concept(concept)
        if layer not in features:
            raise ConfigError(f"decoders.layer fixes concept {concept!r} to layer {layer!r}, "
                              f"which was not recorded (layers: {layers}). Use one of those "
                              f"or record that layer.")
    codes = encode_labels(labels, concept_set)
    protected = [j for j, c in enumerate(concept_set.concepts) if c.protected] or [0]
    ids = labels["image_id"].astype(str).to_numpy()
    split, split_info = grouped_split(codes, protected, settings.split, seed=settings.seed,
                                      groups=id_groups(ids.tolist(), settings.group_by))
    stats, xs = standardise_layers(features, np.flatnonzero(split == 0))
    return PreparedData(concept_set, HeadLayout.from_concepts(concept_set), layers, codes,
                        _shuffled(codes, split, settings.seed + 1), split, split_info, xs,
                        stats, ids)


def standardise_layers(features: Mapping[str, np.ndarray], train: np.ndarray,
                       ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]],
                                  dict[str, np.ndarray]]:
    """Per layer, the training rows' (mean, std) ((D,) float32 each; std 1 where below
    1e-6) and the standardised N x D float32 activations (two passes over the training
    rows, sums in float64)."""
    stats, xs = {}, {}
    for layer, x in features.items():
        f = np.asarray(x, dtype=np.float32)
        f_train = f[train]
        mean = f_train.mean(axis=0, dtype=np.float64).astype(np.float32)
        std = np.sqrt(np.mean(np.square(f_train - mean), axis=0, dtype=np.float64)
                      ).astype(np.float32)
        std[~(std > 1e-6)] = 1.0
        stats[layer] = (mean, std)
        xs[layer] = standardise(f, mean, std)
    return stats, xs


# ---------------------------------------------------------------- phase 2: layer heads


@contextmanager
def _seeded_torch(device: str, seed: int) -> Iterator[Any]:
    """The torch device, with torch's global generators seeded inside and restored after."""
    import torch

    dev = _torch_device(device)
    fork = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork, device_type=dev.type if fork else "cuda"):
        torch.manual_seed(seed)
        yield dev


@dataclass
class LayerInputs:
    """Every layer's standardised activations on the device (``xt``, N x D_l float32) and
    what every fit on the training rows shares: transposed designs, the probes'
    preconditioners, the hidden layers' principal bases and the inputs projected on them
    (N x k, or ``xt`` where D_l <= k)."""

    xt: list[Any]
    design: list[Any]
    precond: list[Any]
    bases: list[Any]
    projected: list[Any]

    def at(self, members: Sequence[int]) -> LayerInputs:
        """The layers ``members`` only."""
        return LayerInputs(*([v[i] for i in members] for v in (
            self.xt, self.design, self.precond, self.bases, self.projected)))


def layer_inputs(data: PreparedData, *, settings: DecoderSettings, device: Any) -> LayerInputs:
    """:class:`LayerInputs` of ``data`` on ``device`` (``trunk_components`` components,
    seeded with ``settings.seed``)."""
    import torch

    from audit.decode._fit import principal_bases
    from audit.decode._lbfgs import designs, gram_matrices, probe_preconditioners

    xt = [torch.as_tensor(data.x[lay], device=device) for lay in data.layers]
    design = designs(xt, data.train)
    grams = gram_matrices(design)
    bases = principal_bases(grams, settings.trunk_components, seed=settings.seed)
    return LayerInputs(xt, design, probe_preconditioners(grams, len(data.train)), bases,
                       [x if b is None else x @ b for x, b in zip(xt, bases, strict=True)])


def _codes_targets(codes: np.ndarray, m: int, device: Any,
                   weights: np.ndarray | None = None) -> Any:
    """``Targets`` of ``m`` members with the same codes (N x C) and weights (default 1
    where labelled)."""
    w = (codes >= 0).astype(np.float32) if weights is None else weights
    return _targets([codes] * m, [w] * m, device)


@dataclass
class LayerHeads:
    """Every layer's decoder after :func:`fit_heads_per_layer`, by layer index.

    ``mlps`` (weights; the probe's rows where it replaced the MLP, ``choices``),
    ``epochs`` and ``history`` of training, ``temps`` and ``mlp_nll`` (calibrated
    validation loss) per concept, ``z_val`` (validation logits, n_val x width),
    ``val_scores`` ({concept: {layer: validation macro AUROC}}), the full probes of the
    real and the control task (``probe_real``, ``probe_ctrl``; rows of the concepts in
    ``probed`` filled), the linear ``starts`` and the chosen layer per concept (``best``).
    """

    mlps: list[dict[str, np.ndarray]]
    epochs: list[int]
    history: list[dict[str, list[float]]]
    temps: list[dict[str, float]]
    mlp_nll: list[dict[str, float]]
    z_val: list[np.ndarray]
    val_scores: dict[str, dict[str, float]]
    choices: list[dict[str, str]]
    probed: dict[int, set[str]]
    probe_real: list[dict[str, np.ndarray]]
    probe_ctrl: list[dict[str, np.ndarray]]
    starts: list[dict[str, np.ndarray]]
    best: dict[str, str]

    def chosen(self, layers: Sequence[str]) -> list[int]:
        """Indices of the layers chosen for some concept, in layer order."""
        return [i for i, lay in enumerate(layers) if lay in self.best.values()]

    def score(self, data: PreparedData, i: int, names: Sequence[str]) -> None:
        """Validation macro AUROC of ``names`` at layer i."""
        layout, val = data.layout, data.val
        for j, name in enumerate(layout.names):
            if name in names:
                self.val_scores[name][data.layers[i]] = _val_auroc(
                    self.z_val[i][:, layout.slice(j)], data.codes[val, j], layout.kinds[j],
                    self.temps[i][name])


def fit_heads_per_layer(data: PreparedData, inputs: LayerInputs, *,
                        settings: DecoderSettings) -> LayerHeads:
    """Every layer's decoder, then each concept's layer, chosen on the validation split.

    Per layer, a few batched L-BFGS steps of the linear probe's objective
    (scikit-learn's ``LogisticRegression()``: ``probe_start_iter``; all of them,
    ``probe_max_iter``, without hidden layers, where the decoder is the probe) give a
    linear start. Every layer's MLP then trains at once on top of it
    (:func:`audit.decode._fit.fit_mlps`: the linear path is that start, kept fixed; the
    hidden layers read the top ``trunk_components`` principal components; minibatch
    AdamW on a one-cycle schedule, early stopping on the validation loss, successive
    halving). Temperatures are fitted on the validation split and each concept's layer
    is chosen by validation macro AUROC (ties to the later layer), never on the test
    split; the full probes are fitted where they can matter
    (:func:`_fit_probes_where_they_matter`).

    Parameters
    ----------
    data : PreparedData
    inputs : LayerInputs
        Of ``data``'s layers (:func:`layer_inputs`).
    settings : DecoderSettings

    Returns
    -------
    LayerHeads
    """
    from audit.decode._fit import fit_mlps
    from audit.decode._lbfgs import fit_probes

    layout, codes, n_lay = data.layout, data.codes, len(data.layers)
    dev = inputs.xt[0].device
    full = not settings.hidden
    starts = fit_probes(inputs.xt, _codes_targets(codes, n_lay, dev), data.train, layout,
                        precond=inputs.precond, design=inputs.design, tol=settings.probe_tol,
                        max_iter=settings.probe_max_iter if full else settings.probe_start_iter)
    weights = _sample_weights(codes, data.train, [len(g) for g in layout.groups],
                              settings.class_balanced)
    mlps, epochs, history = fit_mlps(
        inputs.xt, _codes_targets(codes, n_lay, dev, weights), data.train, data.val, layout,
        settings, init=starts if settings.init_from_probe else None, bases=inputs.bases,
        keep=[data.layers.index(lay) for lay in settings.layer.values()],
        projected=inputs.projected)
    heads = LayerHeads(mlps, epochs, history, [], [], [], {n: {} for n in layout.names},
                       [dict.fromkeys(layout.names, "mlp") for _ in data.layers],
                       {i: set() for i in range(n_lay)},
                       [_zero_linear(layout.width, x.shape[1]) for x in inputs.xt],
                       [_zero_linear(layout.width, x.shape[1]) for x in inputs.xt], starts, {})
    for i, layer in enumerate(data.layers):
        z, t, nll = _calibrate(mlps[i], data.x[layer][data.val], codes[data.val], layout,
                               settings)
        heads.temps.append(t)
        heads.mlp_nll.append(nll)
        heads.z_val.append(z)
        heads.score(data, i, layout.names)
    _fit_probes_where_they_matter(data, inputs, heads, settings=settings)
    return heads


def _fit_probes_where_they_matter(data: PreparedData, inputs: LayerInputs, heads: LayerHeads,
                                  *, settings: DecoderSettings) -> None:
    """The full linear probes (scikit-learn's objective, to its tolerance), for the real
    and the control task at once, only where they can matter; ``heads.best`` set.

    First at each concept's best layer(s) by the MLPs' validation scores
    (``probe_layers``; an MLP starts from its layer's linear start and leaves it only for
    a lower validation loss) and at fixed layers, then wherever the choice lands. There
    the decoder keeps the probe instead of the MLP when the MLP does not lower the
    calibrated validation loss (:func:`_select`), and the layer is chosen again on the
    resulting validation scores, until every chosen layer's concept has its probe.
    """
    layers, names = data.layers, data.layout.names
    wanted = {(layers.index(lay), name) for name, lay in settings.layer.items()}
    for name in names:
        ranked = sorted(range(len(layers)), key=lambda i, s=heads.val_scores[name]: (
            np.nan_to_num(s[layers[i]], nan=-np.inf), i))
        wanted.update((i, name) for i in ranked[-settings.probe_layers:])
    while True:
        new: dict[int, list[str]] = {}
        for i, name in sorted(wanted):
            if name not in heads.probed[i]:
                new.setdefault(i, []).append(name)
        if new:
            _fit_new_probes(data, inputs, heads, new, settings=settings)
        heads.best = {name: settings.layer.get(name) or _choose(heads.val_scores[name], layers)
                      for name in names}
        wanted = {(layers.index(lay), name) for name, lay in heads.best.items()}
        if all(name in heads.probed[i] for i, name in wanted):
            return


def _fit_new_probes(data: PreparedData, inputs: LayerInputs, heads: LayerHeads,
                    new: dict[int, list[str]], *, settings: DecoderSettings) -> None:
    """Fit the probes of concepts ``new[i]`` at layers i (one batched fit, real and
    control task side by side, from the linear starts; the problems not wanted stay out
    of the batch), then per layer keep the probe or the MLP (:func:`_select`) and score
    again."""
    from audit.decode._lbfgs import fit_probes

    layout, members = data.layout, sorted(new)
    both = np.concatenate([data.codes, data.shuffled], axis=1)
    mask = np.array([[name in new[i] for name in layout.names] * 2 for i in members])
    sub = inputs.at(members)
    fitted = fit_probes(sub.xt, _codes_targets(both, len(members), sub.xt[0].device),
                        data.train, _paired_layout(layout), precond=sub.precond,
                        design=sub.design, wanted=mask, max_iter=settings.probe_max_iter,
                        tol=settings.probe_tol,
                        init=[_paired_start(heads.starts[i]) for i in members])
    val = data.val
    for i, p in zip(members, fitted, strict=True):
        names = new[i]
        cols = _columns(layout, names)
        for target, rows in ((heads.probe_real[i], cols),
                             (heads.probe_ctrl[i], cols + layout.width)):
            for k, v in p.items():
                target[k][cols] = v[rows]
        heads.probed[i].update(names)
        heads.mlps[i], choice, t = _select(
            heads.mlps[i], heads.probe_real[i], data.x[data.layers[i]][val], data.codes[val],
            layout, settings, only=names, calibrated=(heads.temps[i], heads.mlp_nll[i]),
            z_val=heads.z_val[i])
        heads.choices[i].update(choice)
        heads.temps[i].update(t)
        heads.score(data, i, names)


# ------------------------------------------------------------------- phase 3: controls


def fit_controls(data: PreparedData, inputs: LayerInputs, heads: LayerHeads, *,
                 settings: DecoderSettings) -> dict[str, dict[str, np.ndarray]]:
    """The control task (Hewitt & Liang 2019) at the chosen layers, trained and decided
    like the real one.

    Labels shuffled within the training and within the validation split
    (``data.shuffled``): its own linear start (the full control probe without hidden
    layers), the MLP on top (no successive halving: every chosen layer is kept), then per
    concept chosen at the layer the MLP or the control's probe, whichever has the lower
    calibrated validation loss.

    Returns
    -------
    {layer: weights}
        The control decoder of each chosen layer (numpy, out x in, as ``heads.mlps``).
    """
    from audit.decode._fit import fit_mlps
    from audit.decode._lbfgs import fit_probes

    at = heads.chosen(data.layers)
    sub, layout, shuffled = inputs.at(at), data.layout, data.shuffled
    dev = sub.xt[0].device
    starts = ([heads.probe_ctrl[i] for i in at] if not settings.hidden else
              fit_probes(sub.xt, _codes_targets(shuffled, len(at), dev), data.train, layout,
                         precond=sub.precond, design=sub.design,
                         max_iter=settings.probe_start_iter, tol=settings.probe_tol))
    weights = _sample_weights(shuffled, data.train, [len(g) for g in layout.groups],
                              settings.class_balanced)
    controls, _, _ = fit_mlps(
        sub.xt, _codes_targets(shuffled, len(at), dev, weights), data.train, data.val,
        layout, settings, init=starts if settings.init_from_probe else None,
        bases=sub.bases, keep=range(len(at)), projected=sub.projected)
    out = {}
    for c, i in zip(controls, at, strict=True):
        layer = data.layers[i]
        out[layer] = _select(c, heads.probe_ctrl[i], data.x[layer][data.val],
                             shuffled[data.val], layout, settings,
                             only=[n for n in layout.names if heads.best[n] == layer])[0]
    return out


# ------------------------------------------------------------------- phase 4: validity


def measure_validity(data: PreparedData, heads: LayerHeads,
                     controls: Mapping[str, dict[str, np.ndarray]], *,
                     settings: DecoderSettings,
                     ) -> tuple[dict[str, LayerDecoder], dict[str, Any]]:
    """Held-out (test split) metrics of every concept at every layer, and the validity
    evidence of each concept at its chosen layer.

    Returns
    -------
    decoders : {layer: LayerDecoder}
        Weights, standardisation, temperatures and per-concept metrics
        (:func:`audit.decode.metrics.concept_metrics`, plus uncalibrated ECE,
        temperature, decoder kind, validation AUROC, probe accuracy: NaN where no probe
        of the concept was fitted at the layer).
    validity : dict
        ``concepts``: per concept its chosen layer's metrics, the control task's
        (balanced) accuracy, the selectivity (balanced accuracy over the control's;
        ``decodable`` when at least ``min_selectivity``); ``intersections``: the joint
        confusion counts (:func:`joint_confusions`).
    """
    decoders: dict[str, LayerDecoder] = {}
    decided: dict[str, np.ndarray] = {}       # test-split decisions at the chosen layers
    for i, layer in enumerate(data.layers):
        decoders[layer] = _layer_decoder(data, heads, i, decided)
    concepts = {name: _concept_validity(data, j, decoders[heads.best[name]],
                                        controls[heads.best[name]], settings)
                for j, name in enumerate(data.layout.names)}
    cs = data.concept_set
    return decoders, {"concept_set": {"name": cs.name, "sha256": cs.sha256},
                      "concepts": concepts,
                      "intersections": joint_confusions(data.codes[data.test], decided, cs)}


def _layer_decoder(data: PreparedData, heads: LayerHeads, i: int,
                   decided: dict[str, np.ndarray]) -> LayerDecoder:
    """Layer i's decoder with its test metrics; its decisions of the concepts chosen there
    go into ``decided``."""
    layer, layout, test = data.layers[i], data.layout, data.test
    codes = data.codes[test]
    prot = {c.name: (tuple(c.groups), codes[:, j])
            for j, c in enumerate(data.concept_set.concepts) if c.protected}
    logits = _logits(heads.mlps[i], data.x[layer][test])
    probe_logits = _logits(heads.probe_real[i], data.x[layer][test]) if heads.probed[i] else None
    metrics = {}
    for j, name in enumerate(layout.names):
        kind, sl, t = layout.kinds[j], layout.slice(j), heads.temps[i][name]
        prob = concept_probabilities(logits[:, sl], kind, t)
        pred = decide(prob, kind)
        if heads.best[name] == layer:
            decided[name] = pred
        m = concept_metrics(codes[:, j], prob, pred, prot)
        known = codes[:, j] >= 0
        m["ece_uncalibrated"] = expected_calibration_error(
            codes[known, j], concept_probabilities(logits[:, sl], kind)[known])
        m["temperature"] = t
        m["decoder"] = heads.choices[i][name]
        m["val_auroc"] = heads.val_scores[name][layer]
        m["probe_accuracy"] = float("nan")
        if probe_logits is not None and name in heads.probed[i]:
            p_prob = concept_probabilities(probe_logits[:, sl], kind)
            m["probe_accuracy"] = accuracy(codes[known, j], decide(p_prob, kind)[known])
        metrics[name] = m
    return LayerDecoder(layer, heads.mlps[i], *data.stats[layer], heads.temps[i], metrics,
                        int(heads.epochs[i]), heads.history[i])


def _concept_validity(data: PreparedData, j: int, decoder: LayerDecoder,
                      control: dict[str, np.ndarray], settings: DecoderSettings,
                      ) -> dict[str, Any]:
    """Concept j's validity at its chosen layer (``decoder``) against the control task's
    decoder there (test split)."""
    layout, test, name = data.layout, data.test, data.layout.names[j]
    logits = _logits(control, data.x[decoder.layer][test])
    known = data.codes[test, j] >= 0
    ctrl_pred = decide(concept_probabilities(logits[:, layout.slice(j)], layout.kinds[j]),
                       layout.kinds[j])[known]
    truth = data.codes[test, j][known]
    ctrl_acc, ctrl_bal = accuracy(truth, ctrl_pred), balanced_accuracy(truth, ctrl_pred)
    m = dict(decoder.metrics[name])
    # Selectivity (Hewitt & Liang 2019) on balanced accuracy: with plain accuracy a
    # majority-class guess of an imbalanced concept matches a good decoder.
    selectivity = m["balanced_accuracy"] - ctrl_bal
    return {"layer": decoder.layer, "groups": list(layout.groups[j]), **m,
            "control_accuracy": ctrl_acc, "control_balanced_accuracy": ctrl_bal,
            "selectivity": selectivity, "selectivity_accuracy": m["accuracy"] - ctrl_acc,
            "decodable": bool(np.isfinite(selectivity)
                              and selectivity >= settings.min_selectivity)}


def _bundle(data: PreparedData, heads: LayerHeads, decoders: dict[str, LayerDecoder],
            validity: dict[str, Any], *, settings: DecoderSettings, model_sha256: str,
            pooling: str) -> DecoderBundle:
    """The :class:`DecoderBundle` of the four phases' results: decoders, validity, the
    layer sweep (test scores for the chart, validation scores behind the choice) and the
    image ids of each split."""
    layers, names, cs = data.layers, data.layout.names, data.concept_set

    def per_layer(key: str) -> dict[str, dict[str, Any]]:
        return {n: {lay: decoders[lay].metrics[n][key] for lay in layers} for n in names}

    info = data.split_info
    return DecoderBundle(
        concept_set=cs, model_sha256=model_sha256, pooling=pooling, layers=tuple(layers),
        decoders=decoders, best=heads.best,
        validity={"concept_set": validity["concept_set"], "model_sha256": model_sha256,
                  "concepts": validity["concepts"],
                  "intersections": validity["intersections"]},
        sweep={"layers": layers, "metric": "macro_auroc", "chosen_on": "validation",
               "scores": per_layer("auroc"), "accuracy": per_layer("accuracy"),
               "probe_accuracy": per_layer("probe_accuracy"), "val_scores": heads.val_scores,
               "decoder": per_layer("decoder"), "best": heads.best},
        splits={"seed": settings.seed, "fractions": list(settings.split),
                "stratify_by": [cs.concepts[j].name for j in info["stratify_by"]],
                "pooled_rows": info["pooled_rows"], "group_by": settings.group_by,
                "n_groups": info.get("n_groups"),
                **{name: data.image_ids[data.split == i].tolist()
                   for i, name in enumerate(SPLITS)}},
        settings=settings,
    )
