"""The one typed audit configuration (YAML, validated with pydantic).

Defaults live here and only here: the CLI and the library read them from these
models. Unknown keys are errors, so a typo is never silently ignored. Relative
paths resolve against the folder of the config file.

Example (``examples/`` has commented ones)::

    name: my-audit
    concept_set: celeba_protected            # bundled name or path to a YAML file
    discriminator: {spec: "pickle:network.pkl#D", code_path: stylegan2-ada-pytorch,
                    trust_pickle: true, layers: auto}
    generator: {spec: "pickle:network.pkl#G_ema", code_path: stylegan2-ada-pytorch,
                trust_pickle: true, n: 2000, seed: 0}
    paired: {source: "celeba:data/celeba", n: 3000}
    real:   {source: "celeba:data/celeba", partition: test, n: 2000}
    measure: {min_group_n: 30, exclude_below_share: 0.02, n_boot: 1000, alpha: 0.05}
    out: reports/my-audit
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from audit._yaml import read_yaml, validate
from audit.concepts import ColumnSource, FolderSource, IdxSource
from audit.errors import ConfigError

__all__ = [
    "AuditConfig", "DiscriminatorConfig", "GeneratorConfig", "ImageSourceConfig",
    "DecoderSettings", "MeasureSettings", "ReportSettings", "load_config", "load_run_config",
    "run_config_code",
    "config_from_dict", "as_given", "run_folder_config",
    "Device", "Pooling",
]

Device = Literal["auto", "cpu", "cuda", "mps"]
Pooling = Literal["avg", "avgmax", "grid2", "flatten"]

# Spec prefixes whose remainder is a filesystem path (resolved against the config's folder).
_PATH_PREFIXES = ("torchscript:", "pickle:", "folder:", "celeba:", "idx:", "npz:", "classfolders:")


def _base_dir(info: ValidationInfo) -> Path | None:
    ctx = info.context or {}
    base = ctx.get("base_dir")
    return Path(base) if base is not None else None


def _given(info: ValidationInfo) -> dict[str, str] | None:
    """Where validation notes each resolved path and how the config gave it."""
    return (info.context or {}).get("given")


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = _base_dir(info)
    if base is not None and not value.is_absolute():
        resolved = (base / value).resolve()
        given = _given(info)
        if given is not None:
            given[str(resolved)] = value.as_posix()
        return resolved
    return value


def _split_spec(spec: str) -> tuple[str, str, str] | None:
    """``(head, path, tail)`` with ``head + path + tail == spec`` for a spec whose middle is
    a file or folder (``pickle:net.pkl#D`` -> ``("pickle:", "net.pkl", "#D")``, a ``python:``
    spec only when its module is a ``.py`` file); None for the others."""
    for prefix in _PATH_PREFIXES:
        if spec.startswith(prefix):
            path, hash_, key = spec[len(prefix):].partition("#")
            return prefix, path, hash_ + key
    if spec.startswith("python:"):
        module, sep, call = spec[len("python:"):].rpartition(":")
        if module.endswith(".py"):
            return "python:", module, sep + call
    return None


def resolve_spec(spec: str, base: Path | None, *, given: dict[str, str] | None = None) -> str:
    """Resolve the path part of a model or image spec against ``base``.

    ``pickle:net.pkl#D`` -> ``pickle:/abs/net.pkl#D``; ``python:pkg.mod:make`` is left
    alone unless the module is a ``.py`` path; ``builtin:`` specs are never paths.
    ``given`` (optional) receives ``{resolved path: path as given}``.
    """
    parts = _split_spec(spec)
    if base is None or parts is None:
        return spec
    head, path, tail = parts
    if path and not Path(path).is_absolute():
        resolved = str((base / path).resolve())
        if given is not None:
            given[resolved] = path
        path = resolved
    return f"{head}{path}{tail}"


def _resolve_spec(value: str, info: ValidationInfo) -> str:
    return resolve_spec(value, _base_dir(info), given=_given(info))


def _check_spec(value: str) -> str:
    known = ("builtin:", "python:", *_PATH_PREFIXES)
    if not value.startswith(known):
        raise ValueError(
            f"unknown spec {value!r}; it must start with one of "
            f"{', '.join(k.rstrip(':') for k in known)} followed by ':' "
            f"(for example builtin:digits-dcgan or torchscript:model.pt)")
    return value


RelPath = Annotated[Path, AfterValidator(_resolve_path)]


def _increasing(value: tuple[float, float]) -> tuple[float, float]:
    if not (math.isfinite(value[0]) and math.isfinite(value[1]) and value[0] < value[1]):
        raise ValueError(f"must be [low, high] with low < high, both finite (e.g. [-1, 1] or "
                         f"[0, 1]); got {list(value)}")
    return value


#: A range of pixel values, [low, high].
ValueRange = Annotated[tuple[float, float], AfterValidator(_increasing)]
Spec = Annotated[str, AfterValidator(_check_spec), AfterValidator(_resolve_spec)]

# Bounds on numbers that size memory: a config comes from anyone, and a huge value must be a
# message, not hours of allocation that ends in a crash (issue 16).
#: A random seed. numpy refuses negative seeds and torch seeds of 2**64 and more; 32 bits
#: (what numpy's legacy generators take) are plenty and suit every library.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="random seed, 0 .. 2**32 - 1")]
#: Images in one source. Every image's id (and class) is held in memory before the first
#: batch, about 100 bytes each: a million take 100 MB, a billion would take 100 GB; an audit
#: needs thousands.
ImageCount = Annotated[int, Field(ge=1, le=1_000_000)]


class _Section(BaseModel):
    # NaN and infinity pass no threshold check meaningfully (NaN compares false): refuse them.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


ClassSource = Annotated[ColumnSource | FolderSource | IdxSource, Field(discriminator="type")]


class ModelConfig(_Section):
    """How to load a model (discriminator or generator) from a spec."""

    spec: Spec = Field(description="builtin:NAME | torchscript:PATH | python:MODULE:CALLABLE | "
                                   "pickle:PATH#KEY")
    kwargs: dict[str, Any] = Field(default_factory=dict,
                                   description="keyword arguments of a python: factory")
    weights: RelPath | None = Field(None, description="state_dict file, loaded with "
                                                      "weights_only=True")
    weights_key: str | None = Field(None, description="key of the state_dict inside the "
                                                      "weights file")
    code_path: RelPath | None = Field(None, description="folder put on sys.path before "
                                                        "unpickling or importing a python: "
                                                        "module (e.g. the StyleGAN repo)")
    trust_pickle: bool = Field(False, description="allow pickle: specs (a pickle can run "
                                                  "arbitrary code)")
    class_label: int | None = Field(None, ge=0, description="class label for conditional "
                                                            "models (0 .. num_classes - 1)")
    keep_fp16: bool = Field(False, description="keep the network's own float16 layers "
                                               "(NVlabs use_fp16 / num_fp16_res) on CUDA: "
                                               "faster, less exact; on the CPU they always "
                                               "run in float32 (float16 is slow there)")
    num_classes: int | None = Field(None, ge=1, le=100_000,
                                    description="size of the one-hot class vector of a "
                                                "conditional model (ImageNet's 1,000 classes "
                                                "are the most GANs take; at most 100,000: one "
                                                "vector per image of a batch, 4 bytes a class)")


class DiscriminatorConfig(ModelConfig):
    """The discriminator to audit and which of its layers to record."""

    layers: Literal["auto"] | list[str] = "auto"
    include_batch_dependent: bool = False
    pooling: Pooling = "avg"
    max_dim: int = Field(4096, ge=1, le=65_536,
                         description="flatten pooling: project to at most this "
                                     "many features (at most 65,536: stored for every image, "
                                     "2 bytes each, and read whole by the decoders)")
    image_size: int | None = Field(None, ge=1, le=4096,
                                   description="input height and width in pixels (at most "
                                               "4,096: GANs reach 1,024, and the probe's batch "
                                               "of 7 images of 4,096 x 4,096 x 3 already takes "
                                               "1.4 GB)")
    channels: int | None = Field(None, ge=1, le=64, description="input channels (at most 64)")
    value_range: ValueRange = (-1.0, 1.0)
    batch_size: int = Field(64, ge=1)
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16 autocast on CUDA is faster, but rounds the discriminator's "
                            "scores to about 3 significant digits (ties at the median score); "
                            "fp32 keeps audit numbers exact")
    score_output: Literal["logit", "probability"] = Field(
        "logit", description="what the discriminator outputs: a logit (accepted as real above "
                             "0) or a probability (a sigmoid at the end: accepted above 0.5); "
                             "sets the default of measure.accept_threshold")
    class_source: ClassSource | None = Field(
        None, description="conditional discriminator: where each real image's class label "
                          "comes from, like a concept's label source: {type: column, column: "
                          "NAME} (labels CSV or NPZ array), {type: folder} (class folders) or "
                          "{type: idx}; raw values are class indices, or 'values' maps them "
                          "to indices. Generated images get the classes the generator was "
                          "given. Without it every image gets class_label")

    @field_validator("layers", mode="before")
    @classmethod
    def _layer_names_as_text(cls, value: object) -> object:
        # nn.Sequential names its layers "0", "1", ...; YAML reads `[0, 2]` as integers.
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v
                    for v in value]
        return value


class GeneratorConfig(ModelConfig):
    """The generator whose samples are audited."""

    n: ImageCount = Field(2000, description="number of images to generate (at most 1,000,000: "
                                            "each image's id is held in memory)")
    seed: Seed = 0
    batch_size: int = Field(64, ge=1)
    latent_dim: int | None = Field(None, ge=1, le=65_536,
                                   description="size of one latent (StyleGAN's is 512, "
                                               "BigGAN's 128; at most 65,536)")
    truncation: float | None = Field(None, gt=0)
    value_range: ValueRange = Field(
        (-1.0, 1.0), description="the range of the generator's output values: [-1, 1] for "
                                 "tanh outputs (NVlabs StyleGAN, DCGANs), [0, 1] for a sigmoid "
                                 "(lucidrains stylegan2-pytorch); images are scaled from it "
                                 "into the discriminator's value_range, and the first images "
                                 "are checked against it")
    call_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of every forward call (e.g. {noise_mode: random}, "
                    "{truncation_cutoff: 8}); StyleGAN-family generators (forward takes "
                    "noise_mode) get noise_mode: const unless set here. Random draws inside "
                    "forward are seeded per batch from its latents")
    save_png: bool = False
    class_sampling: Literal["fixed", "uniform"] = Field(
        "fixed", description="conditional generator: 'fixed' gives every image class_label; "
                             "'uniform' gives image i a class drawn uniformly from "
                             "num_classes with its own seed (the same whatever the batch); "
                             "the discriminator scores each image with its class")


class ImageSourceConfig(_Section):
    """A set of images (and labels where known)."""

    source: Spec = Field(description="folder:DIR | celeba:DIR | classfolders:DIR | idx:FILE | "
                                     "npz:FILE | builtin:NAME")
    labels: RelPath | None = Field(None, description="CSV with an image column and one column "
                                                     "per concept label source")
    image_column: str = "image"
    label_file: RelPath | None = Field(None, description="IDX label file for idx: sources")
    partition: Literal["train", "valid", "test", "all"] = "all"
    n: ImageCount | None = Field(None, description="use at most this many images (seeded; at "
                                                   "most 1,000,000: each image's id is held "
                                                   "in memory)")
    seed: Seed = 0
    on_bad_image: Literal["skip", "stop"] = "skip"


class GeneratedImagesConfig(_Section):
    """Generated images given as files instead of a generator."""

    images: ImageSourceConfig


def _compiles(pattern: str | None) -> str | None:
    """A regular expression option: refused with the parser's reason when it does not compile."""
    if pattern is not None:
        import re

        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from exc
    return pattern


class DecoderSettings(_Section):
    """Training of the concept decoders (one MLP per layer, all layers trained at once).

    Defaults are tuned on ``benchmarks/decoders.py`` (5,000 images x 6 layers of 64 .. 512
    channels, planted linear and non-linear concepts): the linear probe first, then the
    hidden layers on top of it with minibatch AdamW on a one-cycle schedule and early
    stopping on the validation loss, a dozen epochs at most.
    """

    random_baseline: bool = Field(True, description="also record the paired images through "
                                                    "the same discriminator with re-initialised "
                                                    "weights and train decoders on them: each "
                                                    "concept's knowledge gain (trained minus "
                                                    "random balanced accuracy) says whether the "
                                                    "D learnt it or the pixels show it (the "
                                                    "'baseline' stage: one more extraction of "
                                                    "the paired images, stored in "
                                                    "baseline/activations, and decoder "
                                                    "training)")
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [64],
                              description="hidden layer sizes of the MLP ([] = the linear "
                                          "probe alone); on the benchmark 32, 64, 128 and "
                                          "[64, 64] gave the same held-out accuracy within "
                                          "noise, 64 keeps headroom for harder concepts; "
                                          "each at most 4,096: a layer's weights take "
                                          "features x size x 4 bytes, per layer recorded)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden layer while "
                                                        "training; 0.1 was no better than 0 on "
                                                        "the benchmark (early stopping and the "
                                                        "fixed probe path regularise) and "
                                                        "costs time")
    linear_skip: bool = Field(True, description="add a linear path from the standardised "
                                                "input to the heads (MLP + linear probe)")
    init_from_probe: bool = Field(True, description="with linear_skip: the linear path is the "
                                                    "linear probe, kept fixed, and the hidden "
                                                    "layers (head starting at 0) learn what it "
                                                    "misses; otherwise all is trained from a "
                                                    "random start")
    trunk_components: int | None = Field(64, ge=1, description="with init_from_probe: the hidden "
                                                               "layers read the top principal "
                                                               "components of the standardised "
                                                               "input (folded into the weights; "
                                                               "the linear path reads all); "
                                                               "None: all inputs (on the "
                                                               "benchmark ~0.01 more accurate on "
                                                               "non-linear concepts, 25% slower)")
    select_linear: bool = Field(True, description="per concept and layer, keep the linear probe "
                                                  "instead of the MLP when its (calibrated) "
                                                  "validation loss is not higher; validity "
                                                  "says which was used ('decoder')")
    lr: float = Field(2.5e-2, gt=0, description="peak learning rate of the one-cycle schedule "
                                                "(linear warm-up over the first epoch, cosine "
                                                "decay to 0 at max_epochs)")
    weight_decay: float = Field(1e-2, ge=0)
    max_epochs: int = Field(12, ge=1, description="epochs of the one-cycle schedule (early "
                                                  "stopping usually ends sooner)")
    patience: int = Field(3, ge=1, description="stop a layer's decoder after this many epochs "
                                               "without a lower validation loss")
    prune_after: int | None = Field(3, ge=1, description="successive halving: after this many "
                                                         "epochs only the layers among the "
                                                         "prune_keep best of some concept (by "
                                                         "validation loss) train on; the others "
                                                         "keep their best state so far (None: "
                                                         "every layer trains to the end)")
    prune_keep: int = Field(1, ge=1, description="layers per concept that survive prune_after "
                                                 "(2 chose the same layers and decoders on "
                                                 "the demo and three of four synthetic "
                                                 "stores; on the fourth it moved one "
                                                 "near-tied concept to the layer below, "
                                                 "within the held-out noise)")
    batch_size: int | None = Field(384, ge=1, description="minibatch size (with lr 0.025, 384 "
                                                          "was as accurate as 256 with 0.02 or "
                                                          "more on the demo and four synthetic "
                                                          "stores, 512 with 0.028 slightly "
                                                          "less); None: full batch, which "
                                                          "needs hundreds of epochs")
    probe_max_iter: int = Field(100, ge=1, description="L-BFGS iterations of the full linear "
                                                        "probe, fitted where it can matter "
                                                        "(see probe_layers), to scikit-learn's "
                                                        "objective and probe_tol "
                                                        "(preconditioned: about 50 iterations "
                                                        "on the benchmark)")
    probe_tol: float = Field(3e-5, gt=0, description="the full probe stops when its largest "
                                                     "gradient entry is under this. scikit-learn "
                                                     "stops at 1e-4, but the preconditioned "
                                                     "solver reaches 1e-4 farther from the "
                                                     "optimum along flat directions: on the "
                                                     "benchmark's 10-class concept 1e-4 gave "
                                                     "0.940 held-out accuracy, 3e-5 0.945, the "
                                                     "optimum 0.943")
    probe_layers: int = Field(1, ge=1, description="layers per concept where the full linear "
                                                    "probe is fitted: its best by the MLPs' "
                                                    "validation scores, plus wherever the "
                                                    "choice lands; more can find a layer where the "
                                                    "probe beats every MLP, at the cost of a "
                                                    "full fit each")
    probe_start_iter: int = Field(3, ge=1, description="L-BFGS iterations of the linear start "
                                                      "at every layer (the MLP's linear path "
                                                      "and the probe's starting point); the "
                                                      "full probe is fitted at the chosen "
                                                      "layers only")
    class_balanced: bool = False
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: Seed = 0
    calibrate: bool = True
    layer: dict[str, str] = Field(default_factory=dict,
                                  description="fix the layer of a concept: {concept: layer}; "
                                              "otherwise the layer with the best validation "
                                              "macro AUROC is chosen (ties: the later layer)")
    min_selectivity: float = Field(0.05, ge=0, le=1,
                                   description="below this, a concept is not decodable")
    group_by: str | None = Field(
        None, description="a regular expression on image ids: images whose ids give the same "
                          "match (its first group if it has one) stay in the same split, so "
                          "near-duplicates (variants of one image, one person's photos) cannot "
                          "sit in train and test at once; e.g. '^(.*)-(light|dark)-' ")

    @field_validator("group_by")
    @classmethod
    def _group_by_compiles(cls, value: str | None) -> str | None:
        return _compiles(value)

    @model_validator(mode="after")
    def _split_sums_to_one(self) -> DecoderSettings:
        if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) <= 0:
            raise ValueError(f"split must be three positive fractions (train, validation, test) "
                             f"summing to 1, got {list(self.split)}")
        return self


class MeasureSettings(_Section):
    """Thresholds and statistics of the measure stage."""

    min_group_n: int = Field(30, ge=1, description="below this, numbers but no verdict")
    exclude_below_share: float = Field(0.02, ge=0, lt=1,
                                       description="groups under this share may be excluded "
                                                   "from impact ratios")
    n_boot: int = Field(1000, ge=0, le=100_000,
                        description="bootstrap replicates per interval (0: none). Each holds a "
                                    "count per cell (group x source), 8 bytes: 100,000 "
                                    "replicates of 100 cells take 80 MB, 10**9 would take "
                                    "800 GB; beyond about 10,000 the Monte-Carlo error of the "
                                    "interval ends is far below their width")
    alpha: float = Field(0.05, gt=0, lt=1)
    seed: Seed = 0
    interval: Literal["percentile", "bca"] = "percentile"
    stratified: bool = False
    cluster_by: str | None = Field(
        None, description="a regular expression on the audited images' ids: images whose ids "
                          "give the same match (its first group if it has one) form one "
                          "cluster (one person's photos, variants of one image), and the "
                          "bootstrap resamples clusters instead of images and the tests run "
                          "on effective sample sizes (Kish's design effect), so images that "
                          "are not independent neither narrow the intervals nor shrink the "
                          "p-values; an id that does not match is a cluster of its own. "
                          "Needs stratified: false")
    reference: Literal["real", "uniform"] = "real"
    under_margin: float = Field(0.05, ge=0, le=1,
                                description="a group whose corrected share falls this far below "
                                            "the reference is under-represented")
    coverage_floor: float = Field(0.01, ge=0, le=1,
                                  description="a generated share under this signals missing "
                                              "coverage")
    unknown_below: float = Field(0.0, ge=0, le=1,
                                 description="decoded max probability under this -> 'unknown'; "
                                             "above 0 it turns the decoder-error correction "
                                             "off (both sources then compare decoded shares)")
    impact_threshold: float = Field(0.8, gt=0, le=1, description="four-fifths rule")
    accept_threshold: float = Field(0.0, description="D score above which an image is accepted "
                                                     "as real (0 for a logit; 0.5 by default "
                                                     "when discriminator.score_output is "
                                                     "probability)")
    weak_decoder_below: float = Field(0.8, ge=0, le=1,
                                      description="per-group held-out accuracy under this marks "
                                                  "a finding low confidence")
    severity_high_gap: float = Field(0.10, ge=0, le=1,
                                     description="an under-representation finding is high "
                                                 "severity when Holm-significant and the "
                                                 "corrected share falls at least this far "
                                                 "below the reference (else medium when "
                                                 "BH-significant, else low)")
    severity_high_ratio: float = Field(0.6, gt=0, le=1,
                                       description="an adverse-impact finding is high severity "
                                                   "when Holm-significant and the impact ratio "
                                                   "is under this (else medium when "
                                                   "BH-significant, else low)")
    max_listed_ids: int = Field(50, ge=0, description="image ids listed per degenerate case "
                                                      "(e.g. NaN scores) in results.json")
    min_labels_per_group: int = Field(
        30, ge=1, description="labelled generated images (labels/labels.csv, by consensus "
                              "group) every group of a protected concept needs before its "
                              "generated shares are also corrected with the confusion "
                              "measured on labelled generated images (decoder transfer)")
    transfer_gap: float = Field(
        0.05, gt=0, le=1, description="a decoder's balanced accuracy on labelled generated "
                                      "images this far below that on held-out real images is "
                                      "a large transfer gap: a finding on the decoder when "
                                      "its interval excludes 0 (high when the interval's "
                                      "lower bound reaches it too)")

    @field_validator("cluster_by")
    @classmethod
    def _cluster_by_compiles(cls, value: str | None) -> str | None:
        return _compiles(value)

    @model_validator(mode="after")
    def _clusters_not_stratified(self) -> MeasureSettings:
        if self.cluster_by is not None and self.stratified:
            raise ValueError("cluster_by resamples whole clusters, which may span groups, so it "
                             "cannot keep (source, group) strata fixed: set stratified: false or "
                             "leave cluster_by out")
        return self


class ReportSettings(_Section):
    """What the report shows."""

    title: str | None = None
    pdf: bool = True
    samples_per_group: int = Field(16, ge=0, le=64,
                                   description="images in each group's grid in the report (at "
                                               "most 64, an 8 x 8 grid: a grid's images are "
                                               "held in memory as floats, and 64 images of "
                                               "1,024 x 1,024 x 3 already take 800 MB)")
    labelling_sample: int = Field(200, ge=0, le=10_000,
                                  description="generated images in the labelling sample "
                                              "(samples/labelling/: one PNG each, for "
                                              "gan-audit serve and gan-audit label), a random "
                                              "sample stratified by the decoded groups of the "
                                              "protected concepts, equal numbers per stratum; 0 "
                                              "writes none")
    labelling_seed: Seed = Field(0, description="seed of the labelling sample's draw")


class AuditConfig(_Section):
    """A whole audit: models, images, concept set, and stage settings.

    Read one with :func:`load_config` (a YAML file) or build it from a dict with
    :func:`config_from_dict`; every field has its default here (the README's "A worked
    configuration" shows them in use). Settings are pydantic models:
    ``model_copy(update=...)`` changes one.

    Examples
    --------
    >>> import audit
    >>> config = audit.load_config(audit.demo_config_path())
    >>> config.discriminator.spec, config.generator.n, config.concept_set
    ('builtin:digits-dcgan', 2000, 'digits_tone')
    >>> quick = config.model_copy(update={"measure": config.measure.model_copy(
    ...     update={"n_boot": 50})})
    >>> quick.measure.n_boot, config.measure.n_boot
    (50, 1000)
    """

    name: str = Field("audit", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    concept_set: str = "digits_tone"
    discriminator: DiscriminatorConfig
    generator: GeneratorConfig | None = None
    generated: GeneratedImagesConfig | None = None
    paired: ImageSourceConfig
    real: ImageSourceConfig
    decoders: DecoderSettings = Field(default_factory=DecoderSettings)
    measure: MeasureSettings = Field(default_factory=MeasureSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    device: Device = "auto"
    out: RelPath = Path("reports/audit")
    # {resolved path: the path as the config file gave it} (relative to the config's folder)
    _given_paths: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _one_generated_source(self) -> AuditConfig:
        if (self.generator is None) == (self.generated is None):
            raise ValueError("give exactly one of 'generator' (a model to sample) or "
                             "'generated' (a folder of generated images)")
        if (self.discriminator.score_output == "probability"
                and "accept_threshold" not in self.measure.model_fields_set):
            # A sigmoid output accepts above 0.5, not above 0 (every image would be accepted).
            self.measure = self.measure.model_copy(update={"accept_threshold": 0.5})
        return self


def config_from_dict(data: Any, *, source: str = "<config>",
                     base_dir: Path | None = None) -> AuditConfig:
    """Validate a config mapping; relative paths resolve against ``base_dir`` (and the config
    remembers how they were given: :func:`as_given`)."""
    given: dict[str, str] = {}
    cfg = validate(AuditConfig, data, source=source,
                   context={"base_dir": base_dir, "given": given})
    if isinstance(data, dict) and "concept_set" in data and base_dir is not None:
        cs = str(cfg.concept_set)
        if cs.endswith((".yaml", ".yml")) and not Path(cs).is_absolute():
            resolved = str((base_dir / cs).resolve())
            given[resolved] = cs
            cfg = cfg.model_copy(update={"concept_set": resolved})
    cfg._given_paths = given
    return cfg


def _map_paths(value: Any, fn: Callable[[str], str | None]) -> Any:
    """``value`` (plain data: a config dump, a spec, a path) with every path that ``fn``
    renames renamed, also inside specs (``folder:PATH``, ``pickle:PATH#KEY``...)."""
    if isinstance(value, dict):
        return {k: _map_paths(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_map_paths(v, fn) for v in value]
    if not isinstance(value, str):
        return value
    renamed = fn(value)
    if renamed is not None:
        return renamed
    parts = _split_spec(value)
    if parts is not None:
        head, path, tail = parts
        renamed = fn(path)
        if renamed is not None:
            return f"{head}{renamed}{tail}"
    return value


def as_given(cfg: AuditConfig, value: Any) -> Any:
    """``value`` (a spec, a path, or plain data holding them) with each path that ``cfg``
    resolved against its config file's folder written back as the file gave it
    (``folder:/home/me/audit/data`` -> ``folder:data``): what manifest.json and results.json
    record of the inputs, so that a run folder names no directory of its writer's disk.
    Paths the config gave as absolute ones stay as they are. Inside free text (a note, a
    reason) each resolved path is written back too, and so are the files below one."""
    given = cfg._given_paths
    longest_first = sorted(given, key=len, reverse=True)

    def rename(text: str) -> str | None:
        if text in given:
            return given[text]
        out = text
        for path in longest_first:
            out = out.replace(path, given[path])
        return out if out != text else None

    return _map_paths(value, rename)


def run_folder_config(cfg: AuditConfig, *, run_dir: Path) -> dict[str, Any]:
    """The resolved config as the run folder's ``config.yaml`` records it: each path the
    config file gave as a relative one is relative to the run folder (``../../data``), so
    that the folder copied elsewhere with its inputs, or alone, names nothing of the
    writer's disk, and :func:`load_run_config` finds the inputs from wherever it lies;
    ``out`` is ``.`` (the run folder itself). Paths given as absolute ones stay so."""
    root = Path(run_dir).resolve()

    def relative(path: str) -> str | None:
        if path not in cfg._given_paths:
            return None
        try:
            return Path(os.path.relpath(path, root)).as_posix()
        except ValueError:  # another drive (Windows): no relative path exists
            return path

    data = _map_paths(cfg.model_dump(mode="json"), relative)
    data["out"] = "."
    return data


def run_config_code(cfg: AuditConfig, *, images: bool = False) -> list[str]:
    """What loading ``cfg``'s models would run beyond the tool's own code: one line per
    model spec that names code (``python:`` modules and their kwargs, ``pickle:`` files,
    ``torchscript:`` programs) or a ``code_path``; [] when every model is ``builtin:``.
    With ``images`` (a command that shows the run's real images, e.g. the diagnosis
    grids), also each image source on disk: a received config could point it at the
    receiver's own pictures, which would then be rendered into the run folder."""
    risky = []
    if images:
        for name in ("paired", "real"):
            source = getattr(cfg, name).source
            if not source.startswith("builtin:"):
                risky.append(f"{name}: {source} (its images would be read and shown)")
    for name in ("discriminator", "generator"):
        model = getattr(cfg, name)
        if model is None:
            continue
        kind = model.spec.partition(":")[0]
        if kind == "python":
            kwargs = f" with kwargs {model.kwargs}" if model.kwargs else ""
            risky.append(f"{name}: {model.spec}{kwargs} (imports and calls that Python code)")
        elif kind == "pickle" or model.trust_pickle:
            risky.append(f"{name}: {model.spec} (a pickle runs code while loading)")
        elif kind == "torchscript":
            risky.append(f"{name}: {model.spec} (a TorchScript program)")
        if model.code_path is not None:
            risky.append(f"{name}: code_path {model.code_path} (put on the import path)")
    return risky


def load_run_config(run_dir: str | Path, *, trust: bool = False,
                    images: bool = False) -> AuditConfig:
    """The resolved config that a run folder records, for commands that reload its models.

    A run folder is data and may come from someone else; its config can name code to run.
    Without ``trust`` (``--trust-run-config``) only ``builtin:`` models (the tool's own code)
    are accepted: any ``python:`` spec (and its kwargs), ``pickle:``, ``torchscript:`` or
    ``code_path`` is refused with a message listing exactly what would run
    (:func:`run_config_code`); with ``images``, so are image sources on disk.
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if path.is_symlink() or not path.is_file():
        from audit.errors import RunFolderError

        raise RunFolderError(f"{run_dir}: no config.yaml (or a link), so its models are "
                             f"unknown; give the folder of a gan-audit run (the --out of "
                             f"gan-audit run).")
    cfg = load_config(path)
    risky = [] if trust else run_config_code(cfg, images=images)
    if risky:
        raise ConfigError(
            f"{path}: this command would run code or read files that the run folder names, "
            f"not you: {'; '.join(risky)}. A run folder from someone else must not make "
            f"gan-audit run its code or show your files. If you trust whoever wrote "
            f"{run_dir} (or you wrote it), add --trust-run-config.")
    return cfg


def load_config(path: str | Path) -> AuditConfig:
    """Read and validate an audit config file.

    Relative paths in the file resolve against the file's folder.

    Raises
    ------
    ConfigError
        The file is missing, not YAML, or a field is invalid; the message names the file,
        the field path and the fix.

    Examples
    --------
    >>> import audit
    >>> config = audit.load_config(audit.demo_config_path())
    >>> config.name, config.measure.n_boot
    ('demo', 1000)
    >>> audit.load_config("missing.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    audit.errors.ConfigError: missing.yaml: file not found. Check the path ...
    """
    path = Path(path)
    data = read_yaml(path, error=ConfigError)
    return config_from_dict(data, source=str(path), base_dir=path.resolve().parent)
