"""Trained decoders in memory, and decoding new activations with them (numpy only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from audit.concepts import ConceptSet
from audit.config import DecoderSettings
from audit.decode.model import HeadLayout, decide, forward_logits, logits_to_probabilities
from audit.errors import DataError

__all__ = ["LayerDecoder", "DecoderBundle", "decode", "standardise"]


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std as float32; ``x`` is N x D (float16 or float32)."""
    return ((np.asarray(x, dtype=np.float32) - mean) / std).astype(np.float32, copy=False)


@dataclass(frozen=True)
class LayerDecoder:
    """The decoder of one layer: standardisation, MLP weights, temperatures, metrics.

    Attributes
    ----------
    layer : str
        Layer name.
    params : dict of str to ndarray
        Weights (float32, out x in), see :mod:`audit.decode.model`.
    mean, std : (D,) float32
        Standardisation statistics from the training split.
    temperatures : dict of str to float
        Temperature per concept (1 when not calibrated).
    metrics : dict
        Held-out metrics per concept at this layer (see ``decoders/validity.json``).
    epochs : int
        Best epoch of early stopping.
    history : dict
        Training curve: ``epoch``, ``train_loss``, ``val_loss`` (empty when not trained
        here, e.g. a decoder that is its linear probe).
    """

    layer: str
    params: dict[str, np.ndarray]
    mean: np.ndarray
    std: np.ndarray
    temperatures: dict[str, float]
    metrics: dict[str, dict] = field(default_factory=dict)
    epochs: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Raw logits (N x width) of features ``x`` (N x D, not standardised)."""
        return forward_logits(self.params, standardise(x, self.mean, self.std))


@dataclass(frozen=True)
class DecoderBundle:
    """Decoders of every layer for one concept set, one model and one pooling.

    Each concept is read from its chosen layer (``best``). ``validity``, ``sweep`` and
    ``splits`` hold the contents of ``decoders/validity.json``, ``layers.json`` and
    ``splits.json``.
    """

    concept_set: ConceptSet
    model_sha256: str
    pooling: str
    layers: tuple[str, ...]
    decoders: dict[str, LayerDecoder]
    best: dict[str, str]
    validity: dict[str, Any]
    sweep: dict[str, Any]
    splits: dict[str, Any]
    settings: DecoderSettings

    @property
    def layout(self) -> HeadLayout:
        return HeadLayout.from_concepts(self.concept_set)

    def check_source(self, features: Mapping[str, np.ndarray], *, model_sha256: str,
                     pooling: str) -> int:
        """Refuse activations these decoders were not trained on; return the row count N.

        Raises :class:`DataError` saying whether the model, the pooling, a layer or a
        layer's width differs.
        """
        if model_sha256 != self.model_sha256:
            raise DataError(
                f"these activations come from another model: the decoders were trained on the "
                f"discriminator with sha256 {self.model_sha256[:16]}..., the activations are "
                f"from {str(model_sha256)[:16]}.... Decoders only read the model they were "
                f"trained on; train decoders on this model (gan-audit train-decoders).")
        if pooling != self.pooling:
            raise DataError(
                f"these activations use another pooling: the decoders were trained on "
                f"{self.pooling!r} pooled activations, these are {pooling!r} pooled. Extract "
                f"with pooling: {self.pooling}, or train decoders on {pooling!r} activations.")
        rows = set()
        for layer in sorted(set(self.best.values()), key=self.layers.index):
            readers = [c for c, lay in self.best.items() if lay == layer]
            if layer not in features:
                raise DataError(
                    f"the activations have no layer {layer!r}, which the decoder(s) of "
                    f"{readers} read (layers given: {sorted(features)}). Extract that layer "
                    f"too.")
            x = np.asarray(features[layer])
            want = self.decoders[layer].n_features
            if x.ndim != 2 or x.shape[1] != want:
                raise DataError(
                    f"layer {layer!r}: the activations have shape {tuple(x.shape)} but its "
                    f"decoder expects N x {want} features; they come from another layer or "
                    f"pooling than the decoders were trained on. Extract layer {layer!r} with "
                    f"pooling {self.pooling!r}.")
            rows.add(x.shape[0])
        if len(rows) > 1:
            raise DataError(f"the layers' activations have different numbers of rows "
                            f"({sorted(rows)}); give every layer for the same images.")
        return rows.pop() if rows else 0

    def probabilities(self, features: Mapping[str, np.ndarray], *, model_sha256: str,
                      pooling: str) -> dict[str, np.ndarray]:
        """Calibrated group probabilities per concept (N x K), each from its chosen layer."""
        self.check_source(features, model_sha256=model_sha256, pooling=pooling)
        layout = self.layout
        out: dict[str, np.ndarray] = {}
        for layer in dict.fromkeys(self.best[c] for c in layout.names):
            dec = self.decoders[layer]
            probs = logits_to_probabilities(dec.logits(features[layer]), layout,
                                            dec.temperatures)
            out.update({c: probs[c] for c in layout.names if self.best[c] == layer})
        return {c: out[c] for c in layout.names}

    def predict(self, features: Mapping[str, np.ndarray], *, model_sha256: str, pooling: str,
                threshold: float = 0.5) -> pd.DataFrame:
        """The ``prob__<concept>__<group>`` and ``pred__<concept>`` columns of predictions.

        Parameters
        ----------
        features : {layer: N x D array}
            Pooled activations of the same N images for (at least) the chosen layers.
        model_sha256, pooling : str
            Where the activations come from; must match the decoders' (else DataError).
        threshold : float
            A binary concept decodes to its positive group where p >= threshold.
        """
        probs = self.probabilities(features, model_sha256=model_sha256, pooling=pooling)
        cols: dict[str, Any] = {}
        for c in self.concept_set.concepts:
            for j, g in enumerate(c.groups):
                cols[f"prob__{c.name}__{g}"] = probs[c.name][:, j]
        for c in self.concept_set.concepts:
            codes = decide(probs[c.name], c.kind, threshold)
            cols[f"pred__{c.name}"] = np.asarray(c.groups, dtype=object)[codes]
        return pd.DataFrame(cols)


def decode(bundle: DecoderBundle, features: Mapping[str, np.ndarray],
           scores: np.ndarray | None = None, *, model_sha256: str, pooling: str,
           image_ids: list[str] | None = None, threshold: float = 0.5) -> pd.DataFrame:
    """Decode images: every group's probability, the decoded group and the D score.

    Parameters
    ----------
    bundle : DecoderBundle
        Trained (or loaded) decoders.
    features : {layer: N x D array}
        Pooled activations of N images.
    scores : (N,) float, optional
        The discriminator's own output per image (column ``score``).
    model_sha256, pooling : str
        Where the activations come from (checked against the decoders).
    image_ids : list of str, optional
        Column ``image_id``.
    threshold : float
        Binary decision threshold on the positive group's probability.

    Returns
    -------
    DataFrame
        One row per image: ``image_id``, ``score`` (when given), ``prob__*`` and ``pred__*``.
    """
    table = bundle.predict(features, model_sha256=model_sha256, pooling=pooling,
                           threshold=threshold)
    front: dict[str, Any] = {}
    for name, values in (("image_id", image_ids), ("score", scores)):
        if values is not None:
            values = np.asarray(values)
            if len(values) != len(table):
                raise DataError(f"{len(values)} {name} values for {len(table)} images; give "
                                f"one per image.")
            front[name] = values
    return pd.concat([pd.DataFrame(front), table], axis=1) if front else table
