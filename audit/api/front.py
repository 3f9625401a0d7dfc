"""An audit in memory, stage by stage: load, record activations, train decoders, measure.

Each function takes and returns objects (no run folder is written), so a notebook can
go from a GAN to an :class:`~audit.api.results.AuditResults` in a few lines, look at
what each stage made, and change one stage without re-running the others. The command
line runs the same stages into a run folder (:func:`run`), its cache and record.

>>> import audit
>>> gan = audit.load_gan(audit.demo_config_path())             # doctest: +SKIP
>>> paired = gan.images("paired")                              # labelled real images
>>> decoders = audit.train_decoders(audit.record_activations(gan.discriminator, paired))
>>> real = audit.record_activations(gan.discriminator, gan.images("real"))
>>> fake = audit.record_activations(gan.discriminator, gan.generate(2000, seed=0))
>>> results = audit.measure_bias(decoders, real=real, generated=fake)
>>> results.to_html("demo.html")
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
    """The embedded demo's config file (digits with planted tone and stroke biases)."""
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
        made batch by batch as they are used, never all in memory."""
        from audit.errors import ConfigError
        from audit.images import GeneratedSource, _unknown_labels

        if self.generator is None:
            raise ConfigError("this GAN has no generator: give the config a generator spec, or "
                              "audit its generated images with gan.images('generated').")
        g = self.config.generator
        source = GeneratedSource(self.generator, n=n, seed=seed, target=self.discriminator.input,
                                 batch_size=batch_size or g.batch_size, truncation=g.truncation,
                                 class_label=g.class_label, class_sampling=g.class_sampling)
        source.labels = _unknown_labels(source.image_ids, self.concept_set.names)
        return source


def load_gan(config: AuditConfig | str | Path | Mapping[str, Any], *,
             device: str = "cpu") -> Gan:
    """Load the discriminator and generator a config names (a YAML path, a dict or an
    :class:`~audit.config.AuditConfig`), and its concept set.

    Model code and pickles load only as the config allows (``trust`` fields): a config
    from someone else cannot make this import code.
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
        Layer name -> (N, D_layer) float16 (what a run folder's store keeps, so that
        the API and the command line give the same numbers), rows in ``image_ids`` order.
    scores : ndarray
        (N,) float32: the discriminator's output per image.
    image_ids : list of str
        N ids (unreadable images and images with non-finite activations are left out
        and listed in ``skipped``).
    labels : DataFrame
        ``image_id`` and one column per concept: the group name, or None where unknown.
    model_sha256, pooling : str
        Which discriminator and pooling made them: decoders refuse other activations.
    skipped : list of dict
        ``{"image_id", "reason"}`` of each image left out.
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
        ``"real"``, ``"generated"``); ``gan.images(...)``, ``gan.generate(...)``; or
        N x C x H x W already in the model's input range (ids ``"0"``, ``"1"``, ...).
    layers : list of str or "auto", optional
        Default: the config's, else ``"auto"`` (block outputs, see ``gan-audit layers``).
    pooling, batch_size : optional
        Default: the config's, else ``"avg"`` and 64.
    device : str, optional
        Default: where the discriminator is.
    progress : bool
        A progress bar on stderr.
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

        Returns
        -------
        DataFrame
            ``image_id`` (str), ``split`` (str), ``source`` (``real``/``generated``),
            ``score`` (float32), ``prob__<concept>__<group>`` (float32),
            ``pred__<concept>`` (str), ``true__<concept>`` (str or None): the columns of
            ``predictions.parquet``.
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

    ``concept_set`` and ``settings`` default to the ``gan``'s config when given, else to
    the concept set of ``activations``' labels is an error: name one.
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

    Returns an :class:`~audit.api.results.AuditResults` holding the results document
    (validated against its schema), the per-image table and the decoders' validity.
    The decoder-transfer check (how far generated activations lie from the decoders'
    training data) runs when ``decoders`` know their training activations; the
    random-weights baseline needs a second discriminator and is left to :func:`run`.
    """
    import pandas as pd

    from audit.api.results import AuditResults
    from audit.config import MeasureSettings
    from audit.measure.results import predictions_to_results, validate_results

    settings = settings or MeasureSettings()
    transfer = None if decoders.trained_on is None else _transfer(decoders, real, generated)
    table = pd.concat([decoders.decode(real, source="real"),
                       decoders.decode(generated, source="generated")], ignore_index=True)
    results = predictions_to_results(table, decoders.concept_set, decoders.validity,
                                     settings=settings, meta=dict(meta or {"name": "in-memory"}),
                                     transfer=transfer)
    validate_results(results)
    return AuditResults(results, predictions=table, validity=decoders.validity)


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
    cached, with the report; returns the results read back from the folder."""
    from audit.api.results import AuditResults
    from audit.pipeline import run_audit

    summary = run_audit(_as_config(config), out=None if out is None else Path(out),
                        device=device, pdf=pdf, log=log)
    return AuditResults.from_run(summary.run_dir)
