"""Loading a discriminator: its module, input spec, conditioning and layer probe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from audit.models.build import (
    build_for_use,
    find_conditioning,
    first_conv_channels,
    resolve_device,
    shared,
    switch_off_augmentation,
)
from audit.models.identity import identity_sha256
from audit.models.probe import probe_layers
from audit.models.specs import InputSpec, LoadedModel, as_config, int_attr
from audit.models.torchscript import adapt_torchscript

if TYPE_CHECKING:  # pragma: no cover
    from audit.config import DiscriminatorConfig


def load_discriminator(cfg: DiscriminatorConfig | str, *, device: str = "cpu",
                       probe: bool = True) -> LoadedModel:
    """Load a discriminator from a spec or its config section.

    Parameters
    ----------
    cfg : DiscriminatorConfig or str
        The config section, or a bare spec string (defaults for everything else).
    device : str
        ``cpu``, ``cuda``, ``mps`` or ``auto``.
    probe : bool
        Run :func:`probe_layers` on dummy batches to fill ``layer_info`` and
        ``batch_dependent_layers``, and to check for augmentation inside forward.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelLoadError
        The spec does not resolve, the pickle is not trusted, the weights do not fit.
    """
    cfg = as_config(cfg, "DiscriminatorConfig")
    device = resolve_device(device)
    return shared(("discriminator", cfg.model_dump_json(), device, probe),
                   lambda: _load_discriminator(cfg, device, probe))


def _load_discriminator(cfg: Any, device: str, probe: bool) -> LoadedModel:
    built = build_for_use(cfg, "discriminator", device=device)
    module, notes, builtin = built.module, built.notes, built.builtin
    weights, identity, dtype = built.weights_sha256, built.identity, built.dtype
    notes += switch_off_augmentation(module)
    image_size = cfg.image_size or int_attr(module, "img_resolution", "image_size", "resolution")
    channels = cfg.channels or int_attr(module, "img_channels", "channels", "in_channels")
    if builtin is not None:
        image_size = image_size or builtin.image_size
        channels = channels or builtin.channels
    if channels is None:
        channels = first_conv_channels(module)
        if channels is not None:
            notes.append(f"input channels {channels} taken from the first convolution")
    model = LoadedModel(
        module=adapt_torchscript(module, notes).to(device), spec=cfg.spec,
        sha256=identity_sha256(identity), weights_sha256=weights, identity=identity,
        input=InputSpec(image_size, channels, tuple(cfg.value_range)), notes=notes,
        conditioning=find_conditioning(module, cfg), device=device,
        classes_from_data=cfg.class_source is not None, dtype=dtype)
    if probe:
        model.layer_info = probe_layers(model)
        model.batch_dependent_layers = [i.name for i in model.layer_info if i.batch_dependent]
    return model
