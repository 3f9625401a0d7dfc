"""Decoder transfer to generated images, without labels: do they look like what it learnt?

A decoder is trained and validated on labelled *real* images; the audit applies it to
*generated* ones, whose labels nobody has. Where generated images' activations lie
outside the region the decoder was trained on, its held-out accuracy (and the confusion
matrix that corrects generated shares) says little about how it reads them.

For each layer a decoder reads, this module fits a reference on the activations of the
paired *train* split (the decoder's own training images):

- standardise each feature (mean and sd of the train split, as the decoder does);
- principal components that explain ``VARIANCE`` of the variance, at most
  ``MAX_COMPONENTS`` and at most one per ``MIN_IMAGES_PER_COMPONENT`` training images
  (a covariance estimated from few images per dimension is unstable);
- a distance in two parts, each scaled to mean 1 on the training images: the squared
  Mahalanobis distance in those components (the PCA-whitened space) divided by their
  number, plus the squared residual off the components divided by its training mean
  (an image unlike every training image in a direction the components left out is far
  too). Without residual (the components span the data) the first part alone.

The distances of held-out real images (the paired *val* and *test* splits, which the
reference never saw) calibrate it: their ``QUANTILE`` (99th percentile) is the edge of
the real range. Generated images beyond it are counted, k of n, with a Wilson interval;
an in-distribution generator puts about 1% there. The audited real images are counted
the same way, as a check of the calibration.

Rule (``OOD_LOWER``): generated images are *out of distribution* for a layer when the
Wilson interval's lower bound of their share beyond the edge exceeds 5%, five times the
1% expected, at 95% confidence. The margin absorbs the noise of a 99th percentile
estimated from a few hundred held-out images (its own share of exceedances varies by
about a percentage point) while a clear shift of activations is caught at the usual audit
sizes (tests/test_decode_transfer.py: with 13 components, a mean shift of 2 sd along one
principal direction puts 12% of 2,000 generated images beyond, lower bound 11%; 1 sd puts
3% there and is not called out of distribution).

Pure numpy: arrays in, plain data out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audit.intervals import wilson_interval

__all__ = ["QUANTILE", "OOD_LOWER", "VARIANCE", "MAX_COMPONENTS", "TransferReference",
           "fit_reference", "distance_parts", "reference_distances",
           "activations_to_transfer", "run_transfer", "RULE"]

QUANTILE = 0.99
OOD_LOWER = 0.05
VARIANCE = 0.95
MAX_COMPONENTS = 64
MIN_IMAGES_PER_COMPONENT = 5
#: Held-out real images under this leave the 99th percentile too rough to calibrate.
MIN_CALIBRATION = 50
RULE = (f"out of distribution when the lower bound of the 95% Wilson interval of the share "
        f"of generated images beyond the {QUANTILE:.0%} quantile of held-out real distances "
        f"exceeds {OOD_LOWER:.0%} (about {1 - QUANTILE:.0%} expected)")


@dataclass(frozen=True)
class TransferReference:
    """The region of activations a decoder was trained on.

    Attributes
    ----------
    mean, std
        (D,) standardisation of the train split (std floored at 1e-6).
    components
        (k, D) principal directions of the standardised train activations.
    variances
        (k,) their variances (ddof 1).
    t2_mean, q_mean
        Mean on the train split of the whitened squared distance over k and of the squared
        residual (``q_mean`` None when the components leave no residual).
    n_train
        Training images.
    explained
        Share of the total variance the k components explain.
    """

    mean: np.ndarray
    std: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    t2_mean: float
    q_mean: float | None
    n_train: int
    explained: float


def _standardised(ref_mean: np.ndarray, ref_std: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, dtype=np.float64) - ref_mean) / ref_std


def fit_reference(train: np.ndarray, *, variance: float = VARIANCE,
                  max_components: int = MAX_COMPONENTS) -> TransferReference:
    """Fit the reference on training activations ``train`` (N x D, N >= 3)."""
    x = np.asarray(train, dtype=np.float64)
    n = x.shape[0]
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0, ddof=1), 1e-6)
    z = (x - mean) / std
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    eig = s ** 2 / (n - 1)
    total = float(eig.sum())
    positive = int(np.sum(eig > 1e-12 * max(total, 1e-300)))
    cum = np.cumsum(eig) / total if total > 0 else np.ones_like(eig)
    k = int(np.searchsorted(cum, variance - 1e-12) + 1)
    k = max(1, min(k, max_components, max(1, n // MIN_IMAGES_PER_COMPONENT), positive or 1))
    components, variances = vt[:k], np.maximum(eig[:k], 1e-12)
    partial = TransferReference(mean, std, components, variances, 1.0, None, n,
                                float(cum[k - 1]))
    t2, q = distance_parts(partial, x)
    leftover = positive > k and float(q.mean()) > 1e-12
    return TransferReference(mean, std, components, variances, float(t2.mean()),
                             float(q.mean()) if leftover else None, n, float(cum[k - 1]))


def distance_parts(ref: TransferReference, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t2, q), each (N,): the squared Mahalanobis distance of activations ``x`` (N x D) in
    the reference's components over k, and their squared residual off the components."""
    z = _standardised(ref.mean, ref.std, x)
    proj = z @ ref.components.T                                  # (N, k)
    t2 = np.sum(proj ** 2 / ref.variances, axis=1) / len(ref.variances)
    q = np.maximum(np.sum(z ** 2, axis=1) - np.sum(proj ** 2, axis=1), 0.0)
    return t2, q


def reference_distances(ref: TransferReference, x: np.ndarray) -> np.ndarray:
    """(N,) distance of activations ``x`` (N x D) from the training region: the two parts
    of :func:`distance_parts`, each over its training mean, summed."""
    t2, q = distance_parts(ref, x)
    out = t2 / ref.t2_mean
    if ref.q_mean is not None:
        out = out + q / ref.q_mean
    return out


def _share(beyond: np.ndarray, confidence: float) -> dict[str, Any]:
    n, k = int(beyond.size), int(beyond.sum())
    ci = wilson_interval(k, n, confidence=confidence) if n else None
    return {"value": k / n if n else None, "ci": None if ci is None else [float(ci[0]),
                                                                          float(ci[1])],
            "n": n, "k": k}


def activations_to_transfer(train: np.ndarray, heldout: np.ndarray, generated: np.ndarray, *,
                            real: np.ndarray | None = None, quantile: float = QUANTILE,
                            confidence: float = 0.95) -> dict[str, Any]:
    """How far generated activations lie from the decoder's training region, for one layer.

    Parameters
    ----------
    train
        (N_train, D) activations of the images the decoder was trained on.
    heldout
        (N_cal, D) activations of held-out real images (calibration).
    generated
        (N_gen, D) activations of generated images.
    real
        (N_real, D) activations of the audited real images (a check), optional.

    Returns
    -------
    ``{"method", "n_components", "explained_variance", "n_train", "n_calibration",
    "quantile", "threshold", "generated": share, "real": share or None,
    "out_of_distribution": bool or None, "reason"}`` where a share is ``{value, ci, n, k}``
    (Wilson interval). ``out_of_distribution`` is None (with ``reason``) when fewer than
    ``MIN_CALIBRATION`` held-out images, fewer than 3 training images or no generated
    image leave nothing to judge.
    """
    train, heldout = np.asarray(train), np.asarray(heldout)
    generated = np.asarray(generated)
    base: dict[str, Any] = {"method": "pca_mahalanobis_residual", "n_train": len(train),
                            "n_calibration": len(heldout), "quantile": quantile,
                            "n_components": None, "explained_variance": None,
                            "threshold": None, "generated": None, "real": None,
                            "out_of_distribution": None, "reason": None}
    if len(train) < 3 or len(heldout) < MIN_CALIBRATION or len(generated) == 0:
        base["reason"] = (f"not measured: {len(train)} training, {len(heldout)} held-out "
                          f"(at least {MIN_CALIBRATION} needed) and {len(generated)} "
                          f"generated image(s)")
        return base
    ref = fit_reference(train)
    threshold = float(np.quantile(reference_distances(ref, heldout), quantile))
    gen = _share(reference_distances(ref, generated) > threshold, confidence)
    lower = gen["ci"][0]
    base.update({
        "n_components": len(ref.variances), "explained_variance": ref.explained,
        "threshold": threshold, "generated": gen,
        "real": None if real is None or len(real) == 0 else
        _share(reference_distances(ref, np.asarray(real)) > threshold, confidence),
        "out_of_distribution": bool(lower > OOD_LOWER)})
    return base


def run_transfer(features: Mapping[str, Mapping[str, np.ndarray]], splits: Mapping[str, Any],
                 paired_ids: Sequence[str], best: Mapping[str, str], *,
                 confidence: float = 0.95) -> dict[str, Any]:
    """The ``decoders/transfer.json`` document: :func:`activations_to_transfer` for every
    layer a concept is read from.

    Parameters
    ----------
    features
        ``{"paired" | "real" | "generated": {layer: N x D}}`` (``real`` optional).
    splits
        The decoders' ``splits.json`` (image ids per split: train, val, test).
    paired_ids
        The paired store's image ids, in the order of its rows.
    best
        Concept -> the layer its decoder reads.
    """
    ids = np.asarray([str(i) for i in paired_ids])
    train = np.isin(ids, [str(i) for i in splits.get("train", [])])
    held = np.isin(ids, [str(i) for i in [*splits.get("val", []), *splits.get("test", [])]])
    layers = {}
    for layer in dict.fromkeys(best.values()):
        paired = np.asarray(features["paired"][layer])
        real = features.get("real", {}).get(layer)
        layers[layer] = activations_to_transfer(paired[train], paired[held],
                                                np.asarray(features["generated"][layer]),
                                                real=None if real is None else np.asarray(real),
                                                confidence=confidence)
    return {"version": 1, "rule": RULE, "quantile": QUANTILE, "ood_lower": OOD_LOWER,
            "confidence": confidence, "concepts": dict(best), "layers": layers}
