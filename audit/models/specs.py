"""Model specs and what loading them gives: builtin registry, input spec, conditioning, the
loaded discriminator and generator types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from audit.errors import LayerError, ModelLoadError
from audit.models.output_range import OutputRange

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped with the tool: factories as ``module:callable`` strings (imported lazily)
    and the input it expects."""

    discriminator: str
    generator: str
    image_size: int
    channels: int
    latent_dim: int
    #: Fixed keyword arguments of both factories (e.g. a checkpoint's epoch).
    factory_kwargs: tuple[tuple[str, Any], ...] = ()


def _demo_checkpoints() -> dict[str, BuiltinModel]:
    """``digits-dcgan-eNN``: the checkpoints of the demo's training run (issue 22)."""
    from audit.demo.checkpoints import TRACK_SAVE_EPOCHS, checkpoint_name

    return {checkpoint_name(e): BuiltinModel(
        discriminator="audit.demo.models:track_discriminator",
        generator="audit.demo.models:track_generator", image_size=32, channels=1,
        latent_dim=64, factory_kwargs=(("epoch", e),)) for e in TRACK_SAVE_EPOCHS}


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "digits-dcgan": BuiltinModel(discriminator="audit.demo.models:builtin_discriminator",
                                 generator="audit.demo.models:builtin_generator",
                                 image_size=32, channels=1, latent_dim=64),
    **_demo_checkpoints(),
}


@dataclass(frozen=True)
class InputSpec:
    """What a model expects as input: N x channels x image_size x image_size in value_range.

    ``None`` where the model does not say (then the images decide, unchanged).
    """

    image_size: int | None
    channels: int | None
    value_range: tuple[float, float] = (-1.0, 1.0)


@dataclass(frozen=True)
class Conditioning:
    """How to pass class labels to a conditional model.

    ``param`` is the forward argument (``c``, ``y``...), passed positionally second.
    ``num_classes`` set: a one-hot float vector of that size (StyleGAN's ``c``; 0 for an
    unconditional StyleGAN, which still takes an empty ``c``); None: integer labels
    (BigGAN's ``y``).
    ``class_label`` is the default label when the data gives none.
    """

    param: str
    num_classes: int | None
    class_label: int | None

    def tensor(self, n: int, labels: Any = None, *, device: Any = "cpu") -> torch.Tensor:
        """Labels for a batch of ``n`` images: N x num_classes one-hot, or N integers."""
        import torch

        if self.num_classes == 0:
            return torch.zeros(n, 0, device=device)
        if labels is None:
            if self.class_label is None:
                raise ModelLoadError(
                    f"the model is conditional (its forward takes {self.param!r}) but no class "
                    f"label was given. Set class_label (and num_classes for a one-hot vector) in "
                    f"the model's config section, or for a discriminator class_source (each "
                    f"image's class from its labels).")
            labels = torch.full((n,), int(self.class_label), dtype=torch.long)
        labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(n)
        if self.num_classes is None:
            return labels
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise ModelLoadError(f"class labels must lie in [0, {self.num_classes - 1}] for this "
                                 f"model (num_classes={self.num_classes}); got "
                                 f"{int(labels.min())}..{int(labels.max())}.")
        return torch.nn.functional.one_hot(labels, self.num_classes).float()


@dataclass(frozen=True)
class LayerInfo:
    """One module of a model as seen by one dummy forward pass.

    ``shape`` is the output shape per image (without the batch dimension), None when the
    module was not called or returned no tensor. ``batch_dependent``: the output for one
    image changed when the other images of the batch changed. ``nondeterministic``: two calls
    on the same batch differed (augmentation or dropout inside forward). ``calls``: how many
    times forward called the module (``reused`` when more than once).
    """

    name: str
    type: str
    shape: tuple[int, ...] | None
    params: int
    batch_dependent: bool = False
    nondeterministic: bool = False
    tuple_output: bool = False
    order: int = -1
    calls: int = 0

    @property
    def reused(self) -> bool:
        """One module called several times in a forward pass (not a usable hook point)."""
        return self.calls > 1

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type,
                "shape": list(self.shape) if self.shape is not None else None,
                "params": self.params, "batch_dependent": self.batch_dependent,
                "nondeterministic": self.nondeterministic, "tuple_output": self.tuple_output,
                "calls": self.calls, "reused": self.reused}


@dataclass
class LoadedModel:
    """A discriminator ready for auditing: eval mode, no gradients, quirks adapted.

    Attributes
    ----------
    module : nn.Module
        The model in eval mode with ``requires_grad`` off.
    spec : str
        The spec it was loaded from.
    sha256 : str
        Hash of its identity (:mod:`audit.models.identity`): class, construction arguments,
        dtype, float16 layers and weights; the same model gives the same hash whatever file
        its weights came from.
    input : InputSpec
        Expected input size, channels and value range.
    notes : list of str
        Adapters applied (e.g. "blocks return tuples: took element 0").
    batch_dependent_layers : list of str
        Modules whose output depends on the other images in the batch.
    layer_info : list of LayerInfo
        Every module with its output shape for one dummy batch (see :func:`probe_layers`).
    conditioning : Conditioning or None
        How class labels are passed, for conditional models.
    classes_from_data : bool
        Each image's class comes with the images (``class_source``), not from the config.
    dtype : str
        What the model runs in: ``float32``, or ``float16+float32`` where its float16 layers
        were kept (CUDA, ``keep_fp16``).
    weights_sha256 : str
        Hash of its state alone (tensors of ``state_dict`` in sorted key order).
    identity : dict
        What ``sha256`` hashes, as plain data (for manifests).
    """

    module: nn.Module
    spec: str
    sha256: str
    input: InputSpec
    notes: list[str] = field(default_factory=list)
    batch_dependent_layers: list[str] = field(default_factory=list)
    layer_info: list[LayerInfo] = field(default_factory=list)
    conditioning: Conditioning | None = None
    device: str = "cpu"
    classes_from_data: bool = False
    dtype: str = "float32"
    weights_sha256: str = ""
    identity: dict[str, Any] = field(default_factory=dict)

    def forward(self, x: torch.Tensor, class_labels: Any = None) -> torch.Tensor:
        """Raw model output for images ``x`` (N x C x H x W); the first tensor of a tuple.

        Raises :class:`ModelLoadError` unless the output has one row per image (N, N x 1, or
        N x ... multi-scale logits): a 0-dim tensor or another batch size has no score per
        image.
        """
        if self.conditioning is not None:
            out = self.module(x, self.conditioning.tensor(x.shape[0], class_labels,
                                                          device=x.device))
        else:
            out = self.module(x)
        out = first_tensor(out)
        n = x.shape[0]
        if out.ndim == 0 and n == 1:
            out = out.reshape(1)  # `logits.squeeze()` of one image (lucidrains): its score
        if out.ndim == 0 or out.shape[0] != n:
            got = "a 0-dim tensor (one number)" if out.ndim == 0 else \
                f"a tensor of shape {tuple(out.shape)}"
            raise ModelLoadError(
                f"{self.spec}: the discriminator returned {got} for a batch of {n} images; "
                f"expected N or N x 1 logits, one score per image (shape ({n},) or ({n}, 1)). "
                f"Make forward return a score per image (no mean or sum over the batch), or "
                f"wrap the model so that it does.")
        return out

    def scores(self, output: torch.Tensor) -> torch.Tensor:
        """The realness score per image (N,) from the raw output: N or N x 1 as is, a wider
        output (multi-scale logits, as in Projected GAN) averaged per image."""
        return output.reshape(output.shape[0], -1).float().mean(dim=1)


@dataclass
class LoadedGenerator:
    """A generator ready for sampling: eval mode, no gradients.

    ``latent_shape`` is the shape of one latent (``(latent_dim,)`` or ``(latent_dim, 1, 1)``);
    ``truncation_param`` the forward keyword taking the truncation, if any; ``output`` the
    declared range of its images and what they held so far (clamped values counted);
    ``call_kwargs`` the keywords of every forward call (``noise_mode='const'`` for
    StyleGAN-family generators unless the config says otherwise); ``dtype``, ``sha256``,
    ``weights_sha256`` and ``identity`` as for :class:`LoadedModel`.
    """

    module: nn.Module
    spec: str
    sha256: str
    latent_shape: tuple[int, ...]
    notes: list[str] = field(default_factory=list)
    conditioning: Conditioning | None = None
    truncation_param: str | None = None
    device: str = "cpu"
    output: OutputRange = field(default_factory=OutputRange)
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    weights_sha256: str = ""
    identity: dict[str, Any] = field(default_factory=dict)
    #: whether forward draws random numbers (noise): then each image is generated alone,
    #: so that it never depends on the images it shares a call with (None: not known yet)
    stochastic: bool | None = None

    @property
    def value_range(self) -> tuple[float, float]:
        """The range the generator's images come in (config ``generator.value_range``)."""
        return self.output.declared

    @property
    def latent_dim(self) -> int:
        return self.latent_shape[0]


def first_tensor(out: Any) -> torch.Tensor:
    """The tensor in a module output: itself, or the first tensor of a tuple/list/dict."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out
    if isinstance(values, (tuple, list)) or isinstance(out, dict):
        for item in values:
            if isinstance(item, torch.Tensor):
                return item
    raise LayerError(f"a module returned {type(out).__name__}, which holds no tensor; pick a "
                     f"module whose output is a tensor (see `gan-audit layers`).")


SPEC_KINDS = ("builtin", "torchscript", "python", "pickle")


def parse_spec(spec: str) -> tuple[str, str]:
    """``kind:rest`` -> (kind, rest); an unknown kind is a :class:`ModelLoadError`."""
    kind, _, rest = spec.partition(":")
    if kind not in SPEC_KINDS:
        raise ModelLoadError(f"{spec}: unknown spec type {kind!r}; use "
                             f"{', '.join(k + ':' for k in SPEC_KINDS[:-1])} or "
                             f"{SPEC_KINDS[-1]}:.")
    return kind, rest


def as_config(cfg: Any, cls_name: str) -> Any:
    """A bare spec string -> its config section (``cls_name`` of audit.config) with defaults."""
    from audit import config as config_module

    cls = getattr(config_module, cls_name)
    if isinstance(cfg, str):
        return cls(spec=cfg)
    return cfg


def int_attr(module: Any, *names: str) -> int | None:
    """The first of ``names`` that ``module`` has as a positive int attribute, else None."""
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
