"""An audit in memory, stage by stage: load, record activations, train decoders, measure.

Each function takes and returns objects (no run folder is written), so a notebook can
go from a GAN to an :class:`audit.api.results.AuditResults` in a few lines, look at
what each stage made, and change one stage without re-running the others. The command
line runs the same stages into a run folder (:func:`run`), its cache and record.

The demo audit, in memory (a few seconds on a CPU; docs/python-api.md explains each step):

>>> import tempfile
>>> import audit
>>> gan = audit.load_gan(audit.demo_config_path())
>>> paired = audit.record_activations(gan, "paired")          # labelled real images
>>> decoders = audit.train_decoders(paired, gan=gan)
>>> real = audit.record_activations(gan, "real")
>>> fake = audit.record_activations(gan, gan.generate(500, seed=0))
>>> results = audit.measure_bias(decoders, real=real, generated=fake,
...                              settings=gan.config.measure.model_copy(update={"n_boot": 50}))
>>> results.summary.counts["generated"]
500
>>> results.to_html(tempfile.mkdtemp() + "/demo.html").name
'demo.html'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from audit.api.results import AuditResults
    from audit.concepts import ConceptSet
    from audit.config import AuditConfig, DecoderSettings, MeasureSettings
    from audit.decode.bundle import DecoderBundle
    from audit.images import ImageSource
    from audit.models.specs import LoadedGenerator, LoadedModel

__all__ = ["Gan", "Activations", "Decoders", "load_gan", "record_activations",
           "train_decoders", "measure_bias", "run", "demo_config_path"]

ImageSet = Literal["paired", "real", "generated"]


def demo_config_path() -> Path:
    """The embedded demo's config file (digits with planted tone and stroke biases).

    Returns
    -------
    Path
        The YAML file inside the installed package; :func:`load_gan`, :func:`run` and
        :func:`audit.load_config` take it.

    Examples
    --------
    >>> import audit
    >>> path = audit.demo_config_path()
    >>> path.name, path.is_file()
    ('demo.yaml', True)
    """
    from audit.pipeline import demo_config

    return demo_config()


def _as_config(config: AuditConfig | str | Path | Mapping[str, Any]) -> AuditConfig:
    from audit.config import AuditConfig, config_from_dict, load_config

    if isinstance(config, AuditConfig):
        return config
    if isinstance(config, Mapping):
        return config_from_dict(dict(config), source="<dict>", base_dir=Path.cwd())
    return load_config(config)


@dataclass
class Gan:
    """A loaded GAN: its discriminator, its generator (if any) and the config they came from.

    Attributes
    ----------
    discriminator : LoadedModel
        In eval mode, with its input spec (``.input``), layers and sha256.
    generator : LoadedGenerator or None
        None when the config audits a folder of generated images instead.
    config : AuditConfig
        Image sets, decoder and measure settings, concept set.
    concept_set : ConceptSet
        The concepts the audit decodes (the config's ``concept_set``).

    Examples
    --------
    >>> import audit
    >>> gan = audit.load_gan(audit.demo_config_path())
    >>> gan.discriminator.input         # what the discriminator takes: N x 1 x 32 x 32 in [-1, 1]
    InputSpec(image_size=32, channels=1, value_range=(-1.0, 1.0))
    >>> len(gan.images("paired").image_ids)                     # the config's labelled images
    2156
    >>> gan.generate(8, seed=0).image_ids[:3]                   # made lazily, batch by batch
    ['gen-0-0', 'gen-0-1', 'gen-0-2']
    """

    discriminator: LoadedModel
    generator: LoadedGenerator | None
    config: AuditConfig
    concept_set: ConceptSet

    def images(self, which: ImageSet | str) -> ImageSource:
        """One of the config's image sets, ready for the discriminator.

        ``"paired"`` (labelled images that train the decoders; every concept must be
        labelled), ``"real"`` (audited real images, labels where known) or ``"generated"``
        (the config's generator, or its folder of generated images). Any other value is an
        image spec such as ``folder:DIR`` or ``npz:FILE``.

        Returns
        -------
        ImageSource
            Images read batch by batch as N x C x H x W float32 tensors in the
            discriminator's input range, their ``image_ids`` and a ``labels`` DataFrame
            (``image_id`` and one column per concept: the group, or None where unknown).
        """
        from audit.images import generated_images, load_images

        cfg = self.config
        target = self.discriminator.input
        if which == "generated":
            source = generated_images(cfg, concept_set=self.concept_set, input=target)
        else:
            section = {"paired": cfg.paired, "real": cfg.real}.get(which, which)
            source = load_images(section, concept_set=self.concept_set, input=target,
                                 require_labels=which == "paired",
                                 class_source=cfg.discriminator.class_source)
        return source

    def generate(self, n: int, *, seed: int = 0, batch_size: int | None = None
                 ) -> ImageSource:
        """``n`` generated images (image ``i`` is ``gen-<seed>-<i>``, the same in every run);
        made batch by batch as they are used, never all in memory.

        Returns
        -------
        ImageSource
            Batches of N x C x H x W float32 tensors in the discriminator's input range;
            ``labels`` has ``image_id`` and one column per concept, all None (unknown).

        Raises
        ------
        ConfigError
            The config has no generator (it audits a folder of generated images).
        """
        from audit.errors import ConfigError
        from audit.images import sampled_images

        if self.generator is None or self.config.generator is None:
            raise ConfigError("this GAN has no generator: give the config a generator spec, or "
                              "audit its generated images with gan.images('generated').")
        return sampled_images(self.generator, self.config.generator, n=n, seed=seed,
                              target=self.discriminator.input, concept_set=self.concept_set,
                              batch_size=batch_size)


def load_gan(config: AuditConfig | str | Path | Mapping[str, Any], *,
             device: str = "cpu") -> Gan:
    """Load the discriminator and generator a config names (a YAML path, a dict or an
    :class:`audit.config.AuditConfig`), and its concept set.

    Model code and pickles load only as the config allows (``trust`` fields): a config
    from someone else cannot make this import code.

    Returns
    -------
    Gan
        The models in eval mode on ``device``, the config and its concept set.

    Raises
    ------
    AuditError
        The config is invalid (:class:`audit.errors.ConfigError`), a model does not load
        (:class:`audit.errors.ModelLoadError`) or the concept set is invalid.

    Examples
    --------
    >>> import audit
    >>> gan = audit.load_gan(audit.demo_config_path())
    >>> gan.config.name, gan.concept_set.names, gan.generator is not None
    ('demo', ['digit', 'tone', 'stroke'], True)
    """
    from audit.concepts import load_concept_set
    from audit.load import load_discriminator, load_generator

    cfg = _as_config(config)
    return Gan(discriminator=load_discriminator(cfg.discriminator, device=device),
               generator=None if cfg.generator is None else load_generator(cfg.generator,
                                                                            device=device),
               config=cfg, concept_set=load_concept_set(cfg.concept_set))


@dataclass
class Activations:
    """Pooled activations of some discriminator layers, and the discriminator's scores.

    Attributes
    ----------
    features : dict of str to ndarray
        Layer name -> (N, D_layer) float16, or float32 for a layer whose values exceed
        float16's range (what a run folder's store keeps, so that the API and the command
        line give the same numbers), rows in ``image_ids`` order;
        D_layer is the layer's channels after pooling (at most the config's ``max_dim``).
    scores : ndarray
        (N,) float32: the discriminator's output per image.
    image_ids : list of str
        N ids (unreadable images and images with non-finite activations are left out
        and listed in ``skipped``).
    labels : DataFrame
        N rows in ``image_ids`` order: ``image_id`` (str) and one column per concept of
        the images' concept set (object: the group name, or None where unknown).
    model_sha256, pooling : str
        Which discriminator and pooling made them: decoders refuse other activations.
    skipped : list of dict
        ``{"image_id", "reason"}`` of each image left out.

    Examples
    --------
    >>> import audit
    >>> gan = audit.load_gan(audit.demo_config_path())
    >>> acts = audit.record_activations(gan, gan.generate(8, seed=0))
    >>> len(acts), acts.layers
    (8, ['blocks.0', 'blocks.1', 'blocks.2', 'blocks.3'])
    >>> acts.features["blocks.3"].shape, acts.features["blocks.3"].dtype
    ((8, 128), dtype('float16'))
    >>> acts.scores.shape, acts.scores.dtype
    ((8,), dtype('float32'))
    >>> list(acts.labels.columns)                      # generated images: groups unknown
    ['image_id', 'digit', 'tone', 'stroke']
    """

    features: dict[str, np.ndarray]
    scores: np.ndarray
    image_ids: list[str]
    labels: pd.DataFrame
    model_sha256: str
    pooling: str
    skipped: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def layers(self) -> list[str]:
        """The recorded layers, in the model's order."""
        return list(self.features)


def record_activations(model: Gan | LoadedModel, images: Any, *,
                       layers: Sequence[str] | Literal["auto"] | None = None,
                       pooling: str | None = None, batch_size: int | None = None,
                       device: str | None = None, progress: bool = False) -> Activations:
    """Run ``images`` through the discriminator and keep the pooled activations of
    ``layers`` and the score of every image, in memory.

    Parameters
    ----------
    model : Gan or LoadedModel
        A :class:`Gan` (its discriminator, with its config's layers, pooling and batch
        size as defaults) or a discriminator from :func:`audit.load.load_discriminator`.
    images : str, ImageSource, Tensor or ndarray
        With a :class:`Gan`, the name of one of its config's image sets (``"paired"``,
        ``"real"``, ``"generated"``); ``gan.images(...)``, ``gan.generate(...)``; or an
        N x C x H x W float tensor or array of the model's size and channels, already in
        its input range (``model.input``; ids ``"0"``, ``"1"``, ...).
    layers : list of str or "auto", optional
        Default: the config's, else ``"auto"`` (block outputs, see ``gan-audit layers``).
    pooling, batch_size : optional
        Default: the config's, else ``"avg"`` and 64.
    device : str, optional
        Default: where the discriminator is.
    progress : bool
        A progress bar on stderr.

    Returns
    -------
    Activations
        ``features`` (layer -> N x D_layer float16, float32 past float16's range),
        ``scores`` (N float32), ids, labels.

    Raises
    ------
    LayerError
        A layer is not one of the model's (the message suggests the closest names).

    Examples
    --------
    >>> import numpy as np
    >>> import audit
    >>> gan = audit.load_gan(audit.demo_config_path())
    >>> real = audit.record_activations(gan, "real")             # one of the config's sets
    >>> len(real), real.features["blocks.0"].shape
    (2000, (2000, 32))
    >>> images = np.zeros((4, 1, 32, 32), dtype=np.float32)      # N x C x H x W in [-1, 1]
    >>> acts = audit.record_activations(gan.discriminator, images, layers=["blocks.1"])
    >>> acts.image_ids, acts.layers, acts.features["blocks.1"].shape
    (['0', '1', '2', '3'], ['blocks.1'], (4, 64))
    """
    import pandas as pd

    from audit.extract import activations_in_memory

    section = model.config.discriminator if isinstance(model, Gan) else None
    if isinstance(model, Gan):
        images = model.images(images) if isinstance(images, str) else images
        model = model.discriminator
    recorded = activations_in_memory(
        model, images, layers=layers or (section.layers if section else "auto"),
        pooling=pooling or (section.pooling if section else "avg"),  # type: ignore[arg-type]
        batch_size=batch_size or (section.batch_size if section else 64),
        max_dim=section.max_dim if section else 4096, device=device or model.device,
        progress=progress,
        include_batch_dependent=section.include_batch_dependent if section else False)
    labels = recorded.source.labels
    labels = labels.set_index(labels["image_id"].astype(str)).reindex(recorded.image_ids)
    return Activations(features=recorded.features, scores=recorded.scores,
                       image_ids=recorded.image_ids,
                       labels=pd.DataFrame(labels.drop(columns="image_id"))
                       .rename_axis("image_id").reset_index(),
                       model_sha256=model.sha256, pooling=recorded.settings.pooling,
                       skipped=recorded.skipped)


@dataclass
class Decoders:
    """Trained concept decoders of one discriminator, with their held-out validity.

    Attributes
    ----------
    bundle : DecoderBundle
        The decoders of every layer and the layer chosen per concept.
    concept_set : ConceptSet
        What they decode.
    trained_on : Activations or None
        The labelled activations they were trained on (for the decoder-transfer check of
        :func:`measure_bias`).

    Examples
    --------
    >>> import audit
    >>> gan = audit.load_gan(audit.demo_config_path())
    >>> decoders = audit.train_decoders(audit.record_activations(gan, "paired"), gan=gan)
    >>> sorted(decoders.validity["concepts"])
    ['digit', 'stroke', 'tone']
    >>> table = decoders.decode(audit.record_activations(gan, gan.generate(8, seed=0)),
    ...                         source="generated")
    >>> table.shape[0], list(table.columns[:4])
    (8, ['image_id', 'split', 'source', 'score'])
    >>> [c for c in table.columns if c.startswith(("prob__tone", "pred__tone", "true__tone"))]
    ['prob__tone__light', 'prob__tone__dark', 'pred__tone', 'true__tone']
    """

    bundle: DecoderBundle
    concept_set: ConceptSet
    trained_on: Activations | None = None

    @property
    def validity(self) -> dict[str, Any]:
        """Held-out accuracy, selectivity, calibration per concept (``validity.json``)."""
        return self.bundle.validity

    def decode(self, activations: Activations, *, split: str = "audit",
               source: str = "real") -> pd.DataFrame:
        """Decode recorded images: one row per image.

        Parameters
        ----------
        activations : Activations
            Recorded by the discriminator (and pooling) the decoders were trained on.
        split : str
            The ``split`` column's value (the pipeline uses ``audit``).
        source : str
            The ``source`` column's value: ``real`` or ``generated``.

        Returns
        -------
        DataFrame
            N rows in ``activations.image_ids`` order: ``image_id``, ``split``,
            ``source`` (str); ``score`` (float32: the discriminator's output);
            ``prob__<concept>__<group>`` (float64 in [0, 1], one per group, summing to 1
            per concept); ``pred__<concept>`` (str: the most probable group);
            ``true__<concept>`` (object: the labelled group, or None where unknown). The
            columns of ``predictions.parquet`` (docs/ARCHITECTURE.md).
        """
        from audit.decode.table import prediction_table

        return prediction_table(self.bundle, activations.features, activations.scores,
                                image_ids=activations.image_ids, labels=activations.labels,
                                concepts=self.concept_set.names, split=split, source=source,
                                model_sha256=activations.model_sha256,
                                pooling=activations.pooling)

    def save(self, folder: str | Path) -> Path:
        """Write the decoders (safetensors + JSON) to ``folder``."""
        from audit.decode import save_decoders

        return save_decoders(self.bundle, folder)


def train_decoders(activations: Activations, concept_set: ConceptSet | None = None, *,
                   settings: DecoderSettings | None = None, device: str = "cpu",
                   gan: Gan | None = None) -> Decoders:
    """Train one decoder per layer and concept on labelled activations and measure each
    on held-out images (grouped split, control task, calibration, layer choice).

    ``concept_set`` and ``settings`` default to the ``gan``'s config when given; without
    ``gan``, ``settings`` default to :class:`audit.config.DecoderSettings` and
    ``concept_set`` must be named.

    Parameters
    ----------
    activations : Activations
        Labelled activations (every concept labelled on the images it trains on), e.g. of
        the config's ``"paired"`` images.

    Returns
    -------
    Decoders
        The bundle, its held-out ``validity`` and ``decode``.

    Examples
    --------
    >>> import audit
    >>> gan = audit.load_gan(audit.demo_config_path())
    >>> paired = audit.record_activations(gan, "paired")
    >>> decoders = audit.train_decoders(paired, gan.concept_set)
    >>> decoders.validity["concepts"]["tone"]["decodable"]
    True
    """
    from audit.config import DecoderSettings
    from audit.decode.train import activations_to_decoders
    from audit.errors import ConfigError

    if concept_set is None:
        if gan is None:
            raise ConfigError("train_decoders needs the concept set to decode: pass "
                              "concept_set=... (or gan=... to take the config's).")
        concept_set = gan.concept_set
    if settings is None:
        settings = gan.config.decoders if gan is not None else DecoderSettings()
    bundle = activations_to_decoders(activations.features, activations.labels, concept_set,
                                     settings=settings, model_sha256=activations.model_sha256,
                                     pooling=activations.pooling, device=device)
    return Decoders(bundle=bundle, concept_set=concept_set, trained_on=activations)


def measure_bias(decoders: Decoders, *, real: Activations, generated: Activations,
                 settings: MeasureSettings | None = None,
                 meta: Mapping[str, Any] | None = None) -> AuditResults:
    """Decode real and generated images and measure representation and treatment.

    Returns an :class:`audit.api.results.AuditResults` holding the results document
    (validated against its schema), the per-image table and the decoders' validity.
    The decoder-transfer check (how far generated activations lie from the decoders'
    training data) runs when ``decoders`` know their training activations; the
    random-weights baseline needs a second discriminator and is left to :func:`run`.

    Parameters
    ----------
    real, generated : Activations
        Recorded by the discriminator the decoders were trained on.
    settings : MeasureSettings, optional
        Thresholds, bootstrap, clusters; default :class:`audit.config.MeasureSettings`
        (a :class:`Gan`'s are ``gan.config.measure``).
    meta : mapping, optional
        results.json's ``meta`` (default ``{"name": "in-memory"}``).

    Examples
    --------
    >>> import audit
    >>> from audit.config import MeasureSettings
    >>> gan = audit.load_gan(audit.demo_config_path())
    >>> decoders = audit.train_decoders(audit.record_activations(gan, "paired"), gan=gan)
    >>> results = audit.measure_bias(
    ...     decoders, real=audit.record_activations(gan, "real"),
    ...     generated=audit.record_activations(gan, gan.generate(300, seed=0)),
    ...     settings=MeasureSettings(n_boot=50))
    >>> results.summary.counts["real"], results.summary.counts["generated"]
    (2000, 300)
    >>> results.verdicts["concept"].tolist()
    ['tone', 'stroke', 'tone+stroke']
    """
    import pandas as pd

    from audit.api.results import AuditResults
    from audit.config import MeasureSettings
    from audit.measure.results import predictions_to_results

    settings = settings or MeasureSettings()
    transfer = None if decoders.trained_on is None else _transfer(decoders, real, generated)
    table = pd.concat([decoders.decode(real, source="real"),
                       decoders.decode(generated, source="generated")], ignore_index=True)
    results = predictions_to_results(table, decoders.concept_set, decoders.validity,
                                     settings=settings, meta=dict(meta or {"name": "in-memory"}),
                                     transfer=transfer)
    return AuditResults(results, predictions=table, validity=decoders.validity)  # validates


def _transfer(decoders: Decoders, real: Activations, generated: Activations
              ) -> dict[str, Any]:
    """The decoder-transfer section (``decoders/transfer.json`` of a run folder)."""
    from audit.decode.transfer import run_transfer

    bundle, paired = decoders.bundle, decoders.trained_on
    assert paired is not None  # the caller checks
    layers = sorted(set(bundle.best.values()), key=bundle.layers.index)
    features = {name: {layer: acts.features[layer] for layer in layers}
                for name, acts in (("paired", paired), ("generated", generated), ("real", real))}
    return run_transfer(features, bundle.splits, paired.image_ids, bundle.best)


def run(config: AuditConfig | str | Path | Mapping[str, Any], *, out: str | Path | None = None,
        device: str | None = None, pdf: bool | None = None,
        log: Callable[[str], None] | None = None) -> AuditResults:
    """The whole audit into a run folder (what ``gan-audit run`` does): every stage,
    cached, with the report; returns the results read back from the folder.

    Parameters
    ----------
    config : AuditConfig, str, Path or mapping
        A config, its YAML file, or its content as a dict (relative paths then resolve
        against the working directory).
    out : str or Path, optional
        The run folder; default the config's ``out``.
    device, pdf : optional
        Default: the config's ``device`` and ``report.pdf``.
    log : callable, optional
        Receives each progress line (default: printed on stderr).

    Examples
    --------
    A small audit of the demo (fewer images, a shorter bootstrap, no baseline):

    >>> import tempfile
    >>> import audit
    >>> config = {"name": "small-demo", "concept_set": "digits_tone",
    ...           "discriminator": {"spec": "builtin:digits-dcgan"},
    ...           "generator": {"spec": "builtin:digits-dcgan", "n": 300},
    ...           "paired": {"source": "builtin:digits-paired", "n": 800},
    ...           "real": {"source": "builtin:digits-audit", "n": 300},
    ...           "decoders": {"random_baseline": False, "group_by": r"^(digits-paired-\\d+)-"},
    ...           "measure": {"n_boot": 50}, "report": {"samples_per_group": 0}}
    >>> results = audit.run(config, out=tempfile.mkdtemp() + "/run", pdf=False,
    ...                     log=lambda line: None)
    >>> results.summary.counts["real"], (results.run_dir / "report.html").is_file()
    (300, True)
    >>> audit.AuditResults.from_run(results.run_dir) == results
    True
    """
    from audit.api.results import AuditResults
    from audit.pipeline import run_audit

    summary = run_audit(_as_config(config), out=None if out is None else Path(out),
                        device=device, pdf=pdf, log=log)
    return AuditResults.from_run(summary.run_dir)
