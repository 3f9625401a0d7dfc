"""Load stage: turn a model spec into a module in eval mode, with its quirks handled.

Specs (see ``DiscriminatorConfig`` / ``GeneratorConfig``)::

    builtin:NAME                      models shipped with the tool (``digits-dcgan``)
    torchscript:PATH
    python:MODULE:CALLABLE            MODULE dotted or a .py path; kwargs, weights, weights_key,
                                      code_path (a folder holding MODULE, e.g. a repository)
    pickle:PATH#KEY                   with code_path and trust_pickle (StyleGAN2-ADA / StyleGAN3)

Adapters for real discriminators: blocks or models that return tuples (the first
tensor is taken, and :attr:`LoadedModel.notes` says so), conditional models that
need class labels (``c``/``y``), augmentation switched on inside forward (known
flags such as ``diffaug`` are switched off, and a warning is raised when two calls
on the same input differ), and layers whose output depends on the other images in the
batch (minibatch standard deviation), found by running one image inside two different
batches.

This module is the stage's front: the names other stages use. The work is done in
:mod:`audit.models`, one module per job (spec kinds, user code, weights, probe, generation).
"""

from __future__ import annotations

from audit.models.build import resolve_device, shared_models
from audit.models.discriminator import load_discriminator
from audit.models.generate import (
    class_count,
    generate_batch,
    generated_classes,
    image_seed,
    latents,
    latents_to_images,
    load_generator,
    sample_generated,
    save_png,
)
from audit.models.probe import auto_layers, hookable_modules, probe_layers
from audit.models.specs import (
    BUILTIN_MODELS,
    BuiltinModel,
    Conditioning,
    InputSpec,
    LayerInfo,
    LoadedGenerator,
    LoadedModel,
    first_tensor,
)
from audit.models.weights import state_sha256

__all__ = [
    "BUILTIN_MODELS", "BuiltinModel", "InputSpec", "LayerInfo", "LoadedModel", "LoadedGenerator",
    "Conditioning", "load_discriminator", "load_generator", "sample_generated", "probe_layers",
    "state_sha256", "resolve_device", "save_png", "hookable_modules", "auto_layers",
    "class_count", "generate_batch", "generated_classes", "image_seed", "latents",
    "latents_to_images", "first_tensor", "shared_models",
]
