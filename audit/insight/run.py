"""The insight views on a run folder (files and models at the edges).

Each ``*_run`` function reads what it needs from a finished run folder, calls the pure
function of its view and writes ``RUN_DIR/insight/<view>.json`` (and PNG strips or grids
under ``RUN_DIR/insight/``), which the report shows when present.
:func:`insight_for_run` runs them all; a view whose input is missing (no generator, no
activations) is recorded as unavailable with the reason, and the others still run.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.errors import AuditError, ConfigError, DataError, RunFolderError
from audit.io import atomic_write_json, ensure_dir
from audit.runfolder import read_run_file
from audit.samples import _images, _save_png, images_to_grid

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from audit.config import AuditConfig
    from audit.insight.curves import TrainingCurves
    from audit.insight.diagnose import Diagnosis
    from audit.insight.entropy import ConceptEntropy
    from audit.insight.interpolate import Interpolation, Method
    from audit.insight.redundancy import Redundancy
    from audit.measure.bootstrap import BootstrapSpec

__all__ = ["InsightRun", "interpolate_run", "auto_interpolations", "diagnose_run",
           "redundancy_run", "entropy_run", "curves_run", "insight_for_run", "INSIGHT_DIR"]

INSIGHT_DIR = "insight"
_GEN_ID = re.compile(r"^gen-(-?\d+)-(\d+)$")
#: The JSON file each view writes under ``RUN_DIR/insight/``.
_VIEW_FILES = {"entropy": "entropy.json", "diagnosis": "diagnosis.json",
               "redundancy": "redundancy.json", "curves": "curves.json",
               "interpolation": "interpolations.json"}


def images_to_strip(images: np.ndarray, *, value_range: tuple[float, float] = (-1.0, 1.0),
                    min_cell: int = 64, pad: int = 2) -> np.ndarray:
    """Images side by side in one row: N x C x H x W -> uint8 rows x cols x 3.

    Each image is a one-cell :func:`audit.samples.images_to_grid`, so strips and grids
    look alike.
    """

    cells = [images_to_grid(images[i:i + 1], value_range=value_range, min_cell=min_cell,
                            pad=pad) for i in range(len(images))]
    return np.concatenate([c if i == 0 else c[:, pad:] for i, c in enumerate(cells)], axis=1)


class InsightRun:
    """A finished run folder with its models loaded on first use.

    Parameters
    ----------
    run_dir : Path
        The run folder (``config.yaml``, ``decoders/``, ``predictions.parquet``...).
    cfg : AuditConfig, optional
        Default: ``RUN_DIR/config.yaml``.
    device : str
        Device of the generator and the discriminator.
    """

    def __init__(self, run_dir: Path, cfg: AuditConfig | None = None, *,
                 device: str = "cpu", images: bool = True) -> None:
        from audit.config import load_run_config

        self.run_dir = Path(run_dir)
        if cfg is None:  # the CLI passes one loaded with --trust-run-config when asked
            cfg = load_run_config(self.run_dir, images=images)
        self.cfg = cfg
        self.device = device
        self.out = self.run_dir / INSIGHT_DIR

    @cached_property
    def concept_set(self) -> Any:
        from audit.concepts import load_concept_set

        return load_concept_set(self.cfg.concept_set)

    @cached_property
    def bundle(self) -> Any:
        from audit.decode import load_decoders

        return load_decoders(self.run_dir / "decoders")

    @cached_property
    def model(self) -> Any:
        from audit.load import load_discriminator

        return load_discriminator(self.cfg.discriminator, device=self.device)

    @cached_property
    def generator(self) -> Any:
        if self.cfg.generator is None:
            raise DataError(f"{self.run_dir}: the audit has no generator (its config gives "
                            f"generated images instead), so latents cannot be interpolated or "
                            f"generated images redrawn. Add a generator section to the config.")
        from audit.load import load_generator

        return load_generator(self.cfg.generator, device=self.device)

    @cached_property
    def paired(self) -> Any:
        from audit.store import ActivationStore

        return ActivationStore.open(self.run_dir / "activations" / "paired")

    @cached_property
    def predictions(self) -> pd.DataFrame:
        """``predictions.parquet`` (read once)."""
        import pandas as pd

        path = self.run_dir / "predictions.parquet"
        if not path.is_file():
            raise RunFolderError(f"{path}: missing; run the decode stage first (gan-audit run "
                                 f"CONFIG.yaml).")
        from audit.runfolder import refuse_links

        return pd.read_parquet(refuse_links(path))

    def bootstrap(self) -> BootstrapSpec:
        """The interval settings of the run's measure section."""
        from audit.measure.bootstrap import BootstrapSpec

        m = self.cfg.measure
        return BootstrapSpec(n_boot=m.n_boot, seed=m.seed, method=m.interval,
                             stratified=False, confidence=1 - m.alpha)

    # ------------------------------------------------------------ latents and images

    def latent_of(self, ref: str | int) -> np.ndarray:
        """The latent of ``ref``: a seed (image 0 drawn with that seed, i.e. ``gen-SEED-0``)
        or a generated image id ``gen-<seed>-<index>`` of this run."""
        from audit.load import latents

        text = str(ref).strip()
        match = _GEN_ID.match(text)
        if match:
            seed, index = int(match.group(1)), int(match.group(2))
        elif re.fullmatch(r"-?\d+", text):
            seed, index = int(text), 0
        else:
            raise DataError(f"{text!r} is neither a seed (an integer) nor a generated image id "
                            f"(gen-<seed>-<index>, as in predictions.parquet).")
        return latents(self.generator, [index], seed=seed)[0].numpy()

    def generate(self, z: np.ndarray, classes: Sequence[int] | None = None) -> torch.Tensor:
        """Images of the latents ``z`` (S x latent shape): S x C x H x W float32 in [-1, 1],
        of the given ``classes`` (one per latent) or else the path's class."""
        import torch

        from audit.load import latents_to_images

        gcfg = self.cfg.generator
        return latents_to_images(self.generator, torch.as_tensor(np.asarray(z, dtype=np.float32)),
                                 truncation=gcfg.truncation,
                                 class_label=self.path_class if classes is None else classes)

    def classes_of(self, ids: Sequence[str]) -> list[int] | None:
        """The classes the audit generated the images ``gen-<seed>-<index>`` with (None for
        an unconditional generator or one left to its default)."""
        from audit.load import generated_classes

        picks = [(int(m.group(1)), int(m.group(2))) for m in map(_GEN_ID.match, ids) if m]
        if not picks or self.generator.conditioning is None:
            return None
        g = self.cfg.generator
        out = []
        for seed, index in picks:
            labels = generated_classes(self.generator, [index], seed=seed,
                                       class_label=g.class_label, sampling=g.class_sampling)
            if labels is None:
                return None
            out.append(int(labels[0]))
        return out

    held_class: int | None = None

    @property
    def path_class(self) -> int | None:
        """The class held along a latent path of a conditional generator: the generator's
        ``class_label``, or with ``class_sampling: uniform`` the class of the path's start
        image (:meth:`hold_class_of`)."""
        gcfg = self.cfg.generator
        if (gcfg is not None and gcfg.class_label is None and gcfg.class_sampling == "uniform"
                and self.generator.conditioning is not None):
            if self.held_class is None:
                raise ConfigError("interpolating a class-conditional generator holds one "
                                  "class along the path: set generator.class_label to that "
                                  "class, or start the path at a generated image.")
            return self.held_class
        return None if gcfg is None else gcfg.class_label

    def hold_class_of(self, ref: str | int) -> None:
        """Hold the class the audit generated ``ref`` with (a seed means image 0 of that
        seed) along the next paths."""
        text = str(ref).strip()
        image = text if _GEN_ID.match(text) else f"gen-{text}-0"
        classes = self.classes_of([image])
        self.held_class = None if not classes else classes[0]

    def read_images(self, images: torch.Tensor, classes: Sequence[int] | None = None
                    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Decoded group probabilities ({concept: N x K}) and D scores (N,) of generator
        images (N x C x H x W in [-1, 1]), read the way the run read its generated images
        (a conditional D gets ``classes``, one per image, or else the path's class)."""
        from audit.decode.run import extract_like_run
        from audit.images import TensorSource, to_model_input

        x = to_model_input((images + 1) / 2, self.model.input)
        source = TensorSource(x)
        if classes is not None:
            source.class_labels = np.asarray(classes, dtype=np.int64)
        elif self.path_class is not None:   # scored with the class they were generated with
            source.class_labels = np.full(len(x), self.path_class, dtype=np.int64)
        features, scores, _, settings = extract_like_run(
            self.model, self.bundle, self.paired.settings, source, device=self.device)
        probs = self.bundle.probabilities(features, model_sha256=settings.model_sha256,
                                          pooling=settings.pooling)
        return probs, scores.astype(float)

    def read_latents(self, z: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray],
                                                   np.ndarray]:
        """Generate, decode and score: the ``read`` step of interpolation."""
        images = self.generate(z)
        probs, scores = self.read_images(images)
        return images.numpy(), probs, scores


# ---------------------------------------------------------------- interpolation


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "path"


def _write_interpolations(run: InsightRun, paths: Sequence[Interpolation], *,
                          replace: bool) -> Path:
    """Write strips and merge ``insight/interpolations.json`` (same-named paths replaced)."""
    doc_path = run.out / "interpolations.json"
    existing: list[dict[str, Any]] = []
    if not replace and doc_path.is_file():
        existing = json.loads(read_run_file(doc_path).decode("utf-8")).get("paths", [])
    entries = {e["name"]: e for e in existing if isinstance(e, dict) and "name" in e}
    for path in paths:
        name = path.extra.setdefault("name", _slug(f"{path.start}-to-{path.end}-{path.method}"))
        strip = f"interpolation-{name}.png"
        _save_png(run.out / strip, images_to_strip(path.images))
        entries[name] = {**path.to_json(), "strip": strip}
    atomic_write_json(doc_path, {"paths": list(entries.values())})
    return doc_path


def interpolate_run(run_dir: Path, *, start: str, end: str, steps: int = 9,
                    method: Method = "slerp", cfg: AuditConfig | None = None,
                    device: str = "cpu", run: InsightRun | None = None) -> Interpolation:
    """Interpolate between two latents of a run's generator; write strip and JSON.

    ``start`` and ``end`` are seeds or generated image ids (see :meth:`InsightRun.latent_of`).
    Adds (or replaces) the path in ``insight/interpolations.json`` and writes
    ``insight/interpolation-<name>.png``.
    """
    from audit.insight.interpolate import interpolate_concepts

    run = run or InsightRun(run_dir, cfg, device=device)
    run.hold_class_of(start)
    path = interpolate_concepts(run.latent_of(start), run.latent_of(end), steps=steps,
                                read=run.read_latents, groups=_groups(run), method=method,
                                start=str(start), end=str(end))
    _note_class(run, path)
    _write_interpolations(run, [path], replace=False)
    return path


def _note_class(run: InsightRun, path: Interpolation) -> Interpolation:
    """Record the class a conditional generator held along ``path`` (``class``; making the
    path already asked for it, so it is known here)."""
    if run.path_class is not None:
        path.extra["class"] = int(run.path_class)
    return path


def _groups(run: InsightRun) -> dict[str, list[str]]:
    return {c.name: list(c.groups) for c in run.concept_set.concepts}


def auto_interpolations(run: InsightRun, *, steps: int = 9, method: Method = "slerp"
                        ) -> list[Interpolation]:
    """One path per protected concept with two or more groups: from the generated image most
    confidently decoded as its first group to the one most confidently decoded as its last
    group, so the ends differ in that concept. Replaces ``insight/interpolations.json``."""
    from audit.insight.interpolate import interpolate_concepts

    pred = run.predictions
    gen = pred[(pred["split"] == "audit") & (pred["source"] == "generated")]
    gen = gen[gen["image_id"].astype(str).str.match(_GEN_ID.pattern)]
    paths = []
    for concept in run.concept_set.protected:
        ends = []
        for group in (concept.groups[0], concept.groups[-1]):
            col = gen[f"prob__{concept.name}__{group}"]
            if col.empty:
                break
            ends.append(str(gen.loc[col.idxmax(), "image_id"]))
        if len(ends) < 2 or ends[0] == ends[1]:
            continue
        run.hold_class_of(ends[0])
        path = _note_class(run, interpolate_concepts(
            run.latent_of(ends[0]), run.latent_of(ends[1]), steps=steps, read=run.read_latents,
            groups=_groups(run), method=method, start=ends[0], end=ends[1]))
        path.extra.update(name=_slug(f"{concept.name}-{concept.groups[0]}-to-"
                                     f"{concept.groups[-1]}"), concept=concept.name)
        paths.append(path)
    _write_interpolations(run, paths, replace=True)
    return paths


# ---------------------------------------------------------------- diagnosis


def _grid_real(run: InsightRun, ids: list[str]) -> tuple[np.ndarray, tuple[float, float]]:
    from audit.images import load_images

    source = load_images(run.cfg.real, concept_set=run.concept_set, input=run.model.input,
                         run_dir=run.run_dir)
    return _images(source, ids), tuple(run.model.input.value_range)


def _grid_generated(run: InsightRun, ids: list[str]) -> tuple[np.ndarray, tuple[float, float]]:
    """The audited generated images ``ids``, made again with their latents and classes."""
    ids = [i for i in ids if _GEN_ID.match(i)]
    z = np.stack([run.latent_of(i) for i in ids])
    return run.generate(z, run.classes_of(ids) or None).numpy(), (-1.0, 1.0)


def diagnose_run(run_dir: Path, *, reject_share: float = 0.25, top_k: int = 16,
                 images: bool = True, cfg: AuditConfig | None = None, device: str = "cpu",
                 run: InsightRun | None = None) -> Diagnosis:
    """Diagnose a run's rejections; write ``insight/diagnosis.json`` and, with ``images``,
    ``insight/rejected-real.png`` and ``insight/rejected-generated.png`` (most rejected
    first). Intervals follow the run's measure settings (n_boot, seed, alpha)."""
    from audit.insight.diagnose import predictions_to_diagnosis

    run = run or InsightRun(run_dir, cfg, device=device, images=images)
    diagnosis = predictions_to_diagnosis(run.predictions, run.concept_set,
                                         reject_share=reject_share, top_k=top_k,
                                         alpha=run.cfg.measure.alpha, spec=run.bootstrap(),
                                         cluster_by=run.cfg.measure.cluster_by)
    doc = diagnosis.to_json()
    doc["grids"] = {}
    ensure_dir(run.out)
    if images:
        for s in diagnosis.sources:
            ids = [r["image_id"] for r in s.most_rejected]
            if not ids or (s.source == "generated" and run.cfg.generator is None):
                continue
            pictures, value_range = (_grid_real if s.source == "real" else _grid_generated)(
                run, ids)
            if len(pictures):
                name = f"rejected-{s.source}.png"
                _save_png(run.out / name, images_to_grid(pictures, value_range=value_range))
                doc["grids"][s.source] = name
    atomic_write_json(run.out / "diagnosis.json", doc)
    return diagnosis


# ---------------------------------------------------------------- redundancy, entropy, curves


def redundancy_run(run_dir: Path, *, tolerance: float = 0.01, max_rows: int = 2000,
                   cfg: AuditConfig | None = None, run: InsightRun | None = None
                   ) -> Redundancy:
    """CKA between the paired store's layers and the sweep's reach; ``insight/redundancy.json``."""
    from audit.decode.run import store_features
    from audit.insight.redundancy import layers_to_redundancy

    run = run or InsightRun(run_dir, cfg)
    sweep_path = run.run_dir / "decoders" / "layers.json"
    sweep = (json.loads(read_run_file(sweep_path).decode("utf-8")) if sweep_path.is_file()
             else None)
    result = layers_to_redundancy(store_features(run.paired), sweep, tolerance=tolerance,
                                  max_rows=max_rows, seed=run.cfg.measure.seed)
    atomic_write_json(run.out / "redundancy.json", result.to_json())
    return result


def entropy_run(run_dir: Path, *, margin: float = 0.1, cfg: AuditConfig | None = None,
                run: InsightRun | None = None) -> list[ConceptEntropy]:
    """Per-concept entropy, generated against real; ``insight/entropy.json``."""
    from audit.insight.entropy import predictions_to_entropy

    run = run or InsightRun(run_dir, cfg)
    spec = run.bootstrap()
    result = predictions_to_entropy(run.predictions, run.concept_set, margin=margin,
                                    spec=spec, cluster_by=run.cfg.measure.cluster_by)
    atomic_write_json(run.out / "entropy.json",
                      {"margin": margin, "confidence": spec.confidence,
                       "cluster_by": run.cfg.measure.cluster_by,
                       "concepts": [e.to_json() for e in result]})
    return result


def curves_run(run_dir: Path, *, tensorboard: Path | None = None) -> TrainingCurves:
    """Decoder curves into ``insight/curves.json`` (and TensorBoard event files under
    ``tensorboard`` when given; DependencyError if tensorboard is not installed)."""
    from audit.insight.curves import curves_to_tensorboard, decoder_curves

    if tensorboard is not None:   # fail before any work when the extra is missing
        from audit.insight.curves import _summary_writer

        _summary_writer()
    curves = decoder_curves(Path(run_dir) / "decoders")
    atomic_write_json(Path(run_dir) / INSIGHT_DIR / "curves.json", curves.to_json())
    if tensorboard is not None:
        curves_to_tensorboard(curves, tensorboard)
    return curves


# ---------------------------------------------------------------- all views


def insight_for_run(run_dir: Path, cfg: AuditConfig | None = None, *, device: str = "cpu",
                    tensorboard: Path | None = None, steps: int = 9,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every insight view of a finished run (call after the measure stage, before report).

    Writes ``RUN_DIR/insight/`` (``interpolations.json`` + strips, ``diagnosis.json`` +
    grids, ``redundancy.json``, ``entropy.json``, ``curves.json``) and
    ``insight/index.json``: per view ``{"seconds": s}`` or ``{"unavailable": reason}`` when
    its input is missing (an :class:`AuditError`, e.g. no generator); other views still run.
    With ``tensorboard``, decoder curves are also written there (a missing ``tensorboard``
    package raises DependencyError before anything runs).

    Returns the index.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if tensorboard is not None:
        from audit.insight.curves import _summary_writer

        _summary_writer()
    run = InsightRun(run_dir, cfg, device=device)
    ensure_dir(run.out)
    views: Mapping[str, Callable[[], Any]] = {
        "entropy": lambda: entropy_run(run.run_dir, run=run),
        "diagnosis": lambda: diagnose_run(run.run_dir, run=run),
        "redundancy": lambda: redundancy_run(run.run_dir, run=run),
        "curves": lambda: curves_run(run.run_dir, tensorboard=tensorboard),
        "interpolation": lambda: auto_interpolations(run, steps=steps),
    }
    index: dict[str, Any] = {}
    for name, fn in views.items():
        t0 = time.perf_counter()
        try:
            fn()
        except AuditError as exc:
            index[name] = {"unavailable": str(exc)}
            (run.out / _VIEW_FILES[name]).unlink(missing_ok=True)  # never show a stale view
            log(f"[insight] {name}: not available: {exc}")
            continue
        index[name] = {"seconds": round(time.perf_counter() - t0, 3)}
        log(f"[insight] {name}: {index[name]['seconds']:.1f} s")
    atomic_write_json(run.out / "index.json", index)
    return index
