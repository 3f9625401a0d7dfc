"""The main job: every stage of an audit into one run folder, resumable and cached.

``run_audit`` runs extract -> decoders -> baseline (random-weights D) -> decode -> samples
-> measure -> insight -> report.
Each stage records the hash of its inputs in ``manifest.json``; a stage whose key
matches and whose outputs exist is skipped, so a second run with only a new
threshold re-measures and re-renders in seconds. Every file is written atomically
and a stage is marked done only after its outputs are in place, so an interrupted
run leaves a consistent folder and the next run resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from audit._version import __version__
from audit.config import AuditConfig, as_given, load_config, run_folder_config
from audit.errors import AuditError
from audit.io import atomic_write_text, sha256_file
from audit.labels import LABELS_FILE
from audit.manifest import (
    differing_artifacts,
    new_manifest,
    read_manifest,
    record_artifacts,
    utc_now,
    write_manifest,
)

__all__ = ["run_audit", "RunSummary", "demo_config", "STAGES"]

STAGES = ("extract", "decoders", "baseline", "decode", "samples", "measure", "insight",
          "report")


@dataclass
class RunSummary:
    """What a run did: where, how long each stage took, and what it found."""

    run_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


def demo_config() -> Path:
    """The embedded demo's config file (inside the package)."""
    return Path(__file__).resolve().parent / "demo" / "demo.yaml"


def _hash(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _tree_stamp(root: Path, *, skip: Path | None = None) -> str:
    """sha256 of every file's relative path, size and modification time below ``root``
    (none from inside the run folder ``skip``, which changes with every run).

    Cheap (no file is read) and changes whenever a file is added, removed, rewritten or
    touched: what a cache key of an image folder or a code tree needs.
    """
    from audit.images import files_under

    h = hashlib.sha256()
    for path in sorted(files_under(root, skip=skip)):
        st = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n"
                 .encode("utf-8", "surrogateescape"))  # file names need not be UTF-8
    return h.hexdigest()


def _spec_files(section: Any, *, run_dir: Path | None = None,
                given: Callable[[str], str] = str) -> dict[str, str]:
    """Content stamps of what a model or image spec reads: weights, pickles, label files
    (sha256 of their bytes), image folders and code trees (path, size and mtime of each
    file), and the file of a ``python:`` module. Part of the extract stage's cache key,
    so that new images in the same folder, or edited model code, are extracted again.
    Files inside ``run_dir`` (a run folder inside an image folder) are not stamped.

    Keyed by each path as the config gave it (``given``, e.g. :func:`audit.config.as_given`),
    the tool's own files as ``builtin:demo/data.py`` and a module found on the import path
    as ``python:MODULE``: names that hold wherever the files lie."""
    if section is None:
        return {}
    data = section.model_dump(mode="json")
    if "images" in data:  # generated: {images: {...}}
        data = data["images"]
    package = Path(__file__).resolve().parent
    files: dict[str, str] = {}
    spec = data.get("spec") or data.get("source") or ""
    prefix, _, rest = spec.partition(":")
    candidates = [(c, given(c)) for c in (data.get("weights"), data.get("labels"),
                                          data.get("label_file")) if c]
    folders = [data.get("code_path")]
    if prefix in ("torchscript", "pickle", "idx", "npz"):
        path = rest.partition("#")[0]
        candidates.append((path, given(path)))
    elif prefix in ("folder", "celeba", "classfolders"):
        folders.append(rest)
    elif prefix == "builtin":  # the shipped demo: its code and its weights' checksums
        for part in ("data.py", "models.py", "weights/SHA256SUMS"):
            candidates.append((str(package / "demo" / part), f"builtin:demo/{part}"))
    elif prefix == "python":
        module = rest.rpartition(":")[0]
        if module.endswith(".py"):
            candidates.append((module, given(module)))
        else:
            import importlib.util

            try:  # (imports the module's packages: the load stage reports their errors)
                found = importlib.util.find_spec(module)
            except (Exception, SystemExit):
                found = None
            if found is not None and found.origin and Path(found.origin).is_file():
                candidates.append((found.origin, f"python:{module}"))
    for c, label in candidates:
        if Path(c).is_file():
            files[label] = sha256_file(Path(c))
    for folder in folders:
        if folder and Path(folder).is_dir():
            files[given(folder)] = _tree_stamp(Path(folder), skip=run_dir)
    return files


class _Run:
    """One run folder and its manifest; runs or skips stages by their input keys, and records
    the sha256 and size of every stage's outputs (``manifest.artifacts``) so that damaged,
    truncated or edited outputs are computed again instead of trusted."""

    def __init__(self, cfg: AuditConfig, run_dir: Path, device: str,
                 log: Callable[[str], None]) -> None:
        from audit.runfolder import sweep_temporaries

        self.cfg, self.run_dir, self.device, self.log = cfg, run_dir, device, log
        sweep_temporaries(run_dir)  # what a killed earlier run left half-written
        # inputs relative to the run folder, no directory of this disk (portable)
        config_text = yaml.safe_dump(run_folder_config(cfg, run_dir=run_dir), sort_keys=False)
        self.config_sha = hashlib.sha256(config_text.encode()).hexdigest()
        manifest = read_manifest(run_dir)
        if manifest is None:
            manifest = new_manifest(audit_id=f"{cfg.name}-{self.config_sha[:8]}",
                                    config_sha256=self.config_sha, device=device)
        manifest["config_sha256"] = self.config_sha
        self.manifest = manifest
        self.damaged = False  # a stage's outputs were damaged: every later stage runs again
        write_manifest(run_dir, manifest)
        atomic_write_text(run_dir / "config.yaml", config_text)
        self.summary = RunSummary(run_dir=run_dir)

    def stage(self, name: str, key: str, outputs: list[str], fn: Callable[[], Any], *,
              optional: tuple[str, ...] = (), keep: bool = False) -> bool:
        """Run ``fn`` unless the stage's key matches and its outputs are the ones the manifest
        recorded (same files, sizes and sha256); True if it ran. ``optional`` outputs (e.g.
        generated/ PNGs, written only with save_png) are checked, removed and recorded like
        the others but need not exist.

        Outputs made from other inputs, or damaged, are removed first (only files the tool
        wrote: :func:`audit.runfolder.remove_created`), unless ``keep`` (they were just
        written for these inputs by another process, e.g. the ranks of torchrun).
        """
        from audit.runfolder import remove_created

        record = self.manifest["stages"].get(name, {})
        paths = [self.run_dir / o for o in outputs]
        outputs = [*outputs, *optional]
        stale = record.get("key") not in (None, key)  # outputs of other inputs
        if record.get("key") == key and record.get("done") and all(p.exists() for p in paths):
            problems = [] if keep else differing_artifacts(self.run_dir, outputs, self.manifest,
                                                           thorough=False)
            if not problems and not self.damaged:
                self.summary.cached.append(name)
                self.summary.seconds[name] = 0.0
                self.log(f"[{name}] up to date (inputs unchanged), reused")
                return False
            stale = True  # damaged, or made from damaged inputs: replaced, not patched
            if problems:
                self.damaged = True
                more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
                self.log(f"[{name}] outputs differ from the manifest ({problems[0]}{more}): "
                         f"computing them again")
        if stale and not keep:
            remove_created(self.run_dir, outputs)  # never mix them with new ones
        self.manifest["stages"][name] = {"key": key, "done": False}
        write_manifest(self.run_dir, self.manifest)
        self.log(f"[{name}] running ...")
        start = time.perf_counter()
        fn()
        seconds = round(time.perf_counter() - start, 3)
        record_artifacts(self.run_dir, outputs, self.manifest)
        self.manifest["stages"][name] = {
            "key": key, "done": True, "seconds": seconds, "finished": utc_now(),
            "outputs": [o for o in outputs if (self.run_dir / o).exists()]}
        write_manifest(self.run_dir, self.manifest)
        self.summary.seconds[name] = seconds
        self.log(f"[{name}] done in {seconds:.1f} s")
        return True


def run_audit(config: AuditConfig | str | Path, *, out: Path | None = None,
              device: str | None = None, pdf: bool | None = None,
              log: Callable[[str], None] | None = None, extracted: bool = False) -> RunSummary:
    """Run a whole audit into a run folder.

    Parameters
    ----------
    config : AuditConfig or path
        The audit configuration (a YAML path is loaded and validated).
    out : Path, optional
        Run folder; default: the config's ``out``.
    device : {"auto", "cpu", "cuda", "mps"}, optional
        Default: the config's ``device``.
    pdf : bool, optional
        Render report.pdf; default: the config's ``report.pdf``.
    log : callable, optional
        Receives one progress line per stage (default: print to stderr).
    extracted : bool
        The activation stores were just written for this config (by every rank under
        torchrun); the extract stage then only checks them instead of replacing them.

    Returns
    -------
    RunSummary
    """
    from audit.concepts import load_concept_set
    from audit.load import resolve_device, shared_models
    from audit.runfolder import claim

    cfg = config if isinstance(config, AuditConfig) else load_config(config)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    run_dir = Path(out if out is not None else cfg.out)
    if device is not None:
        cfg = cfg.model_copy(update={"device": device})
    want_pdf = cfg.report.pdf if pdf is None else pdf
    concept_set = load_concept_set(cfg.concept_set)
    dev = resolve_device(cfg.device)
    with claim(run_dir) as first:  # our folder, one writer
        try:
            run = _Run(cfg, run_dir, dev, log)
            run.manifest["seeds"] = {
                "generator": cfg.generator.seed if cfg.generator else None,
                "paired": cfg.paired.seed, "real": cfg.real.seed,
                "decoders": cfg.decoders.seed, "bootstrap": cfg.measure.seed}
            with shared_models():      # each network loaded once for all stages
                _stages(run, cfg, run_dir, concept_set, dev, want_pdf, extracted)
        except BaseException:
            if first and _wrote_nothing_yet(run_dir):
                with contextlib.suppress(OSError, AuditError):
                    _discard(run_dir)  # a first run that failed before any work: nothing left
            raise
    results_path = run_dir / "results.json"
    run.summary.results = json.loads(results_path.read_text(encoding="utf-8"))
    run.summary.outputs = {"results": results_path, "html": run_dir / "report.html"}
    if want_pdf:
        run.summary.outputs["pdf"] = run_dir / "report.pdf"
    return run.summary


def _wrote_nothing_yet(run_dir: Path) -> bool:
    """Whether the tool wrote nothing into ``run_dir`` but its manifest and config: a run
    that failed there (a bad layer, a model that does not load) is discarded, while any
    work done (a shard, a decoder) is kept for the rerun to resume from."""
    from audit.runfolder import created_files

    return created_files(run_dir) <= {"manifest.json", "config.yaml"}


def _discard(run_dir: Path) -> None:
    """Remove a run folder this process created, file by file (only what the tool wrote)."""
    from audit.runfolder import LOCK, MARKER, created_files, remove_created

    tops = sorted({rel.split("/")[0] for rel in created_files(run_dir)})
    remove_created(run_dir, [t for t in tops if (run_dir / t).exists()])
    (run_dir / MARKER).unlink(missing_ok=True)
    if not [p for p in run_dir.iterdir() if p.name != LOCK]:
        (run_dir / LOCK).unlink(missing_ok=True)  # its lock goes when the claim closes it
        run_dir.rmdir()


def _stages(run: _Run, cfg: AuditConfig, run_dir: Path, concept_set: Any, dev: str,
            want_pdf: bool, extracted: bool) -> None:
    """Every stage of :func:`run_audit`, each skipped when its inputs have not changed."""
    sections = (cfg.discriminator, cfg.generator, cfg.generated, cfg.paired, cfg.real)
    # hashes and stats, once; inputs named as the config gave them, so that a project
    # folder moved elsewhere whole (config, inputs, run folder) keeps its keys
    stamps = [_spec_files(s, run_dir=run_dir, given=lambda p: as_given(cfg, p))
              for s in sections]
    extract_key = _hash("extract", __version__, concept_set.sha256,
                        *(as_given(cfg, s.model_dump(mode="json")) if s is not None else None
                          for s in sections), *stamps)
    run.stage("extract", extract_key, ["activations"],
              lambda: _extract(cfg, run_dir, dev), optional=("generated",), keep=extracted)
    _record_data(run, cfg, files={k: v for stamp in stamps for k, v in stamp.items()})

    decoders_key = _hash("decoders", extract_key, concept_set.sha256,
                         cfg.decoders.model_dump(mode="json", exclude={"random_baseline"}))
    run.stage("decoders", decoders_key, ["decoders"],
              lambda: _train(run_dir, concept_set, cfg, dev))

    baseline_key = _hash("baseline", decoders_key, cfg.decoders.random_baseline)
    run.stage("baseline", baseline_key, ["baseline"],
              lambda: _baseline(cfg, run_dir, concept_set, dev))

    decode_key = _hash("decode", decoders_key)
    run.stage("decode", decode_key, ["predictions.parquet"],
              lambda: predictions_from_run(run_dir, concept_set))

    samples_key = _hash("samples", decode_key, cfg.report.samples_per_group,
                        cfg.report.labelling_sample, cfg.report.labelling_seed)
    run.stage("samples", samples_key, ["samples"],
              lambda: _samples(cfg, run_dir, concept_set, dev))

    labels = run_dir / LABELS_FILE  # people's labels of generated images (decoder transfer)
    measure_key = _hash("measure", decode_key, baseline_key, concept_set.sha256,
                        cfg.measure.model_dump(mode="json"), cfg.report.title,
                        *([sha256_file(labels)] if labels.is_file() else []))
    run.stage("measure", measure_key, ["results.json", "tables"],
              lambda: _measure(run_dir, concept_set, cfg))

    insight_key = _hash("insight", decode_key, measure_key)
    run.stage("insight", insight_key, ["insight"],
              lambda: _insight(cfg, run_dir, dev))

    review = run_dir / "review.jsonl"
    report_key = _hash("report", measure_key, samples_key, insight_key,
                       cfg.report.model_dump(mode="json"),
                       want_pdf, sha256_file(review) if review.exists() else None)
    outputs = ["report.html", "report.pdf"] if want_pdf else ["report.html"]
    run.stage("report", report_key, outputs, lambda: _report(run_dir, want_pdf))


# ---------------------------------------------------------------- stages


def _extract(cfg: AuditConfig, run_dir: Path, device: str) -> None:
    from audit.extract import extract_from_config

    extract_from_config(cfg, out=run_dir, device=device, progress=True)


def _stores(run_dir: Path) -> dict[str, Any]:
    from audit.store import ActivationStore

    return {name: ActivationStore.open(run_dir / "activations" / name)
            for name in ("paired", "real", "generated")}


def _record_data(run: _Run, cfg: AuditConfig, *, files: dict[str, str]) -> None:
    """Hashes (``files``: the content stamps of the extract key), data sources and skipped
    images of the stores, into the manifest."""
    stores = _stores(run.run_dir)
    paired = stores["paired"].settings
    run.manifest["hashes"] = {
        "config": run.config_sha,
        "discriminator": paired.model_sha256,
        "files": files,
        # each store's source fingerprint: its images (ids, content stamp) and transform
        "data": {name: store.settings.source_fingerprint for name, store in stores.items()},
    }
    gen_spec = cfg.generator.spec if cfg.generator else cfg.generated.images.source  # type: ignore[union-attr]
    run.manifest["model"] = {"discriminator": as_given(cfg, cfg.discriminator.spec),
                             "generator": as_given(cfg, cfg.generator.spec) if cfg.generator
                             else None,
                             "layers": list(stores["paired"].layers),
                             "pooling": paired.pooling,
                             # what each model's sha256 covers: class, kwargs, dtype, weights
                             "identity": {
                                 "discriminator": stores["paired"].manifest.get(
                                     "model", {}).get("identity"),
                                 "generator": stores["generated"].manifest.get(
                                     "source", {}).get("generator", {}).get("identity")},
                             # how a batch-dependent D was batched, and the repeated rows
                             "batches": {name: {**(store.manifest.get("batches") or {}),
                                                "padded_rows": store.manifest.get(
                                                    "padded_rows", 0)}
                                         for name, store in stores.items()}}
    run.manifest["data_sources"] = {}
    for name, spec in (("paired", cfg.paired.source), ("real", cfg.real.source),
                       ("generated", gen_spec)):
        recorded = stores[name].manifest.get("source", {})
        notes = recorded.get("notes")  # e.g. what was left out
        # a generator's declared and observed output range, and the values clamped to it
        output = recorded.get("generator_output")
        run.manifest["data_sources"][name] = ({"source": as_given(cfg, spec),
                                               "n": stores[name].n_images}
                                              | ({"notes": notes} if notes else {})
                                              | ({"generator_output": output} if output else {}))
    run.manifest["skipped_images"] = {name: list(store.skipped) for name, store in stores.items()
                                      if store.skipped}
    write_manifest(run.run_dir, run.manifest)


def _train(run_dir: Path, concept_set: Any, cfg: AuditConfig, device: str) -> None:
    from audit.decode.run import train_run_decoders

    train_run_decoders(run_dir, concept_set, cfg.decoders, device=device)


def _baseline(cfg: AuditConfig, run_dir: Path, concept_set: Any, device: str) -> None:
    from audit.decode.baseline import baseline_for_run

    baseline_for_run(cfg, run_dir, concept_set, device=device)


def predictions_from_run(run_dir: Path, concept_set: Any) -> Any:
    """Decode every stored image and write ``predictions.parquet`` (docs/ARCHITECTURE.md).

    Paired images carry their decoder split (train/val/test) and true labels; real and
    generated images are the audited ones (split ``audit``); real images keep their
    true labels where the source has them.
    """
    import numpy as np
    import pandas as pd

    from audit.decode import load_decoders
    from audit.decode.run import store_features
    from audit.decode.table import prediction_table
    from audit.io import atomic_path

    bundle = load_decoders(run_dir / "decoders")
    layers = sorted(set(bundle.best.values()), key=bundle.layers.index)
    split_of = _split_lookup(bundle.splits)
    tables = []
    for name, store in _stores(run_dir).items():
        ids = [str(i) for i in store.image_ids]
        tables.append(prediction_table(
            bundle, store_features(store, layers), np.asarray(store.scores()), image_ids=ids,
            labels=store.labels(), concepts=concept_set.names,
            split=[split_of.get(i, "train") for i in ids] if name == "paired" else "audit",
            source="generated" if name == "generated" else "real",
            model_sha256=store.settings.model_sha256, pooling=store.settings.pooling))
    predictions = pd.concat(tables, ignore_index=True)
    with atomic_path(run_dir / "predictions.parquet", suffix=".parquet") as tmp:
        predictions.to_parquet(tmp, index=False)
    return predictions


def _split_lookup(splits: dict[str, Any]) -> dict[str, str]:
    """image id -> decoder split (``train``, ``val`` or ``test``) from ``splits.json``."""
    return {str(i): split for split in ("train", "val", "test") for i in splits.get(split, [])}


def _samples(cfg: AuditConfig, run_dir: Path, concept_set: Any, device: str) -> None:
    from audit.samples import write_samples

    write_samples(cfg, run_dir, concept_set, device=device)


def _measure(run_dir: Path, concept_set: Any, cfg: AuditConfig) -> None:
    from audit.measure.results import measure_run, run_meta

    measure_run(run_dir, concept_set, cfg.measure,
                meta=run_meta(run_dir, name=cfg.name, title=cfg.report.title))


def _insight(cfg: AuditConfig, run_dir: Path, device: str) -> None:
    from audit.insight import insight_for_run

    insight_for_run(run_dir, cfg, device=device)


def _report(run_dir: Path, pdf: bool) -> None:
    from audit.report import render_report

    render_report(run_dir, pdf=pdf)

