"""The decode stage: concept decoders trained on discriminator activations.

One decoder per layer maps a pooled activation vector to every concept of a concept
set at once (a small MLP with one head per concept: sigmoid for binary concepts,
softmax for multiclass ones). Training measures each decoder's validity on held-out
images (accuracy, balanced accuracy, macro AUROC, calibration, confusion counts,
accuracy within protected groups) against a linear probe and a shuffled-label control
task, sweeps the layers and picks the best layer per concept.

Public entry points::

    bundle = activations_to_decoders(features, labels, concept_set, settings=...,
                                     model_sha256=..., pooling="avg")
    save_decoders(bundle, run_dir / "decoders"); bundle = load_decoders(...)
    table = decode(bundle, features, scores, model_sha256=..., pooling="avg")

Training imports torch; loading and decoding need numpy only.
"""

from __future__ import annotations

from audit.decode.bundle import DecoderBundle, LayerDecoder, decode
from audit.decode.persist import load_decoders, save_decoders
from audit.decode.train import activations_to_decoders, train_decoders

__all__ = ["DecoderBundle", "LayerDecoder", "activations_to_decoders", "train_decoders",
           "decode", "save_decoders", "load_decoders"]
