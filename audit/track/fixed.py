"""One point's audit with a fixed instrument: a reference run's discriminator and decoders.

With ``--reference-decoders RUN`` (and in a sampling sweep, where the first setting's run is
the reference), what is held fixed is the *instrument* that says which group an image shows:
RUN's discriminator (the layers its decoders read) and its decoders. A point's generated
images are recorded through RUN's D, never the point's own, and decoded by RUN's decoders;
real images' activations, decoders and held-out validity are RUN's and are not recomputed.
What the point changes is what is measured: its generator's images, and (checkpoints) its
discriminator's *scores*, on the real audited images and on its generated images, so the
treatment and sanity figures are still the point's own D's.

A point's run folder then holds:

    decoders/, baseline/random.json    copied from RUN (transfer.json: this point's images)
    activations/generated/             the point's generated images through RUN's D
    scores.parquet                     the point's D's scores (image_id, source, score), only
                                       when its D is not RUN's
    predictions.parquet                RUN's real and paired rows + the generated rows, with
                                       the point's D's scores on the audited images
    results.json, tables/, report.html measure and report, as in any run

Stages (manifest keys): ``extract`` (copy, record, score), ``decode``, ``measure``,
``report``; each skipped when its inputs are unchanged, like :func:`audit.pipeline.run_audit`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.config import AuditConfig
from audit.errors import ConfigError, RunFolderError

__all__ = ["Reference", "open_reference", "audit_with_reference"]

_SCORER_FIELDS = {"spec", "kwargs", "weights", "weights_key", "class_label", "num_classes",
                  "score_output"}


@dataclass(frozen=True)
class Reference:
    """A finished run whose discriminator and decoders decode every point.

    ``cfg`` is the run's own config (from its config.yaml), ``key`` the sha256 of its
    decoders' validity and its predictions (what a point's stages depend on).
    """

    run_dir: Path
    cfg: AuditConfig
    key: str


def _sha(path: Path) -> str:
    from audit.runfolder import read_run_file

    return hashlib.sha256(read_run_file(path)).hexdigest()


def open_reference(run_dir: Path, *, concept_set: Any, trust: bool = False) -> Reference:
    """Check and open a reference run folder.

    Raises
    ------
    RunFolderError
        Not a finished run folder (no decoders, predictions or results).
    ConfigError
        Its concept set is not the tracked one, or its config names code to run and
        ``trust`` is off (see :func:`audit.config.load_run_config`).
    """
    from audit.config import load_run_config
    from audit.runfolder import is_owned, read_run_file

    run_dir = Path(run_dir)
    needed = ["decoders/validity.json", "predictions.parquet", "results.json"]
    missing = [n for n in needed if not (run_dir / n).is_file()]
    if not run_dir.is_dir() or not is_owned(run_dir) or missing:
        why = "missing " + ", ".join(missing) if missing else "no marker"
        raise RunFolderError(f"--reference-decoders {run_dir}: not a finished gan-audit run "
                             f"folder ({why}). Give the --out of a finished gan-audit run.")
    results = json.loads(read_run_file(run_dir / "results.json").decode("utf-8"))
    theirs = (results.get("concept_set") or {})
    if theirs.get("sha256") != concept_set.sha256:
        raise ConfigError(f"--reference-decoders {run_dir}: its decoders read the concept set "
                          f"{theirs.get('name')!r} (sha256 {str(theirs.get('sha256'))[:12]}...), "
                          f"not the tracked {concept_set.name!r} "
                          f"({concept_set.sha256[:12]}...); decoders only decode the concepts "
                          f"they were trained on. Give a run of the same concept set.")
    cfg = load_run_config(run_dir, trust=trust)
    key = hashlib.sha256((_sha(run_dir / "decoders/validity.json")
                          + _sha(run_dir / "predictions.parquet")).encode()).hexdigest()
    return Reference(run_dir, cfg, key)


def _same_scorer(cfg: AuditConfig, ref: Reference) -> bool:
    """Whether the point's discriminator is the reference's (then its scores are reused)."""
    mine = cfg.discriminator.model_dump(mode="json", include=_SCORER_FIELDS)
    theirs = ref.cfg.discriminator.model_dump(mode="json", include=_SCORER_FIELDS)
    return mine == theirs


def _copy_instrument(ref: Reference, run_dir: Path) -> None:
    """RUN's decoders (not its transfer.json: that is the point's) and baseline verdict."""
    from audit.io import atomic_write_bytes, ensure_dir
    from audit.runfolder import read_run_file

    ensure_dir(run_dir / "decoders")
    for path in sorted((ref.run_dir / "decoders").iterdir()):
        if path.is_file() and path.name != "transfer.json":
            atomic_write_bytes(run_dir / "decoders" / path.name, read_run_file(path))
    baseline = ref.run_dir / "baseline" / "random.json"
    ensure_dir(run_dir / "baseline")
    atomic_write_bytes(run_dir / "baseline" / "random.json",
                       read_run_file(baseline) if baseline.is_file()
                       else b'{"version": 1, "skipped": "the reference run has none"}\n')


def _layers(bundle: Any) -> list[str]:
    return sorted(set(bundle.best.values()), key=bundle.layers.index)


def _record_generated(cfg: AuditConfig, ref: Reference, run_dir: Path, bundle: Any,
                      concept_set: Any, device: str) -> None:
    """The point's generated images through RUN's D, at the layers RUN's decoders read."""
    from audit.batches import full_batch_size
    from audit.config import as_given
    from audit.extract import extract
    from audit.images import generated_images
    from audit.load import load_discriminator

    d = ref.cfg.discriminator
    model = load_discriminator(d, device=device)
    source = generated_images(cfg, concept_set=concept_set, input=model.input, device=device,
                              run_dir=run_dir)
    store = extract(model, _layers(bundle), source, out=run_dir / "activations" / "generated",
                    pooling=d.pooling, batch_size=full_batch_size(model, d.batch_size),
                    device=device, max_dim=d.max_dim, progress=False, precision=d.precision,
                    include_batch_dependent=d.include_batch_dependent,
                    class_labels=source.class_labels, given=lambda r: as_given(cfg, r))
    store.write_labels(source.labels)


def _score_with_point(cfg: AuditConfig, ref: Reference, run_dir: Path, bundle: Any,
                      concept_set: Any, device: str) -> None:
    """``scores.parquet``: the point's own D's scores of RUN's real audited images and of
    the point's generated images (the same images, sampled again with the same seeds)."""
    import numpy as np
    import pandas as pd

    from audit.batches import full_batch_size
    from audit.extract import activations_in_memory
    from audit.images import generated_images, load_images
    from audit.io import atomic_path
    from audit.load import load_discriminator

    d = cfg.discriminator
    model = load_discriminator(d, device=device)
    sources = {"real": load_images(ref.cfg.real, concept_set=concept_set, input=model.input,
                                   class_source=d.class_source, run_dir=run_dir),
               "generated": generated_images(cfg, concept_set=concept_set, input=model.input,
                                             device=device, run_dir=run_dir)}
    # any one layer will do (only the scores are kept): the reference's, if this D has it
    layer = _layers(bundle)[:1]
    layers = layer if layer and layer[0] in dict(model.module.named_modules()) else "auto"
    frames = []
    for name, source in sources.items():
        got = activations_in_memory(model, source, layers=layers,
                                    pooling=d.pooling, max_dim=d.max_dim,
                                    batch_size=full_batch_size(model, d.batch_size),
                                    device=device, precision=d.precision,
                                    include_batch_dependent=d.include_batch_dependent,
                                    class_labels=source.class_labels)
        frames.append(pd.DataFrame({"image_id": got.image_ids, "source": name,
                                    "score": np.asarray(got.scores, dtype=np.float64)}))
    with atomic_path(run_dir / "scores.parquet", suffix=".parquet") as tmp:
        pd.concat(frames, ignore_index=True).to_parquet(tmp, index=False)


def _extract(cfg: AuditConfig, ref: Reference, run_dir: Path, concept_set: Any,
             device: str, own_scores: bool, parts: dict[str, float]) -> None:
    """The ``extract`` stage of a fixed-decoder point; ``parts`` receives the seconds of
    each of its steps (the per-point cost, in track.json)."""
    import time

    from audit.decode import load_decoders
    from audit.decode.run import write_transfer
    from audit.store import ActivationStore

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        parts[name] = round(time.perf_counter() - start, 3)
        return out

    timed("copy the reference's decoders", lambda: _copy_instrument(ref, run_dir))
    bundle = load_decoders(run_dir / "decoders")
    timed("generate and record through the reference D",
          lambda: _record_generated(cfg, ref, run_dir, bundle, concept_set, device))
    timed("decoder transfer", lambda: write_transfer(
        run_dir, bundle, ActivationStore.open(ref.run_dir / "activations" / "paired")))
    if own_scores:
        timed("scores of the point's own D (real and generated)",
              lambda: _score_with_point(cfg, ref, run_dir, bundle, concept_set, device))


def _predictions(ref: Reference, run_dir: Path, concept_set: Any) -> None:
    """RUN's rows of real images + this point's generated rows; the point's D's scores."""
    import numpy as np
    import pandas as pd

    from audit.decode import load_decoders
    from audit.decode.run import store_features
    from audit.decode.table import prediction_table
    from audit.io import atomic_path
    from audit.store import ActivationStore

    bundle = load_decoders(run_dir / "decoders")
    store = ActivationStore.open(run_dir / "activations" / "generated")
    ids = [str(i) for i in store.image_ids]
    generated = prediction_table(
        bundle, store_features(store, _layers(bundle)), np.asarray(store.scores()),
        image_ids=ids, labels=store.labels(), concepts=concept_set.names, split="audit",
        source="generated", model_sha256=store.settings.model_sha256,
        pooling=store.settings.pooling)
    real = pd.read_parquet(ref.run_dir / "predictions.parquet")
    table = pd.concat([real[real["source"] == "real"], generated], ignore_index=True)
    if (run_dir / "scores.parquet").is_file():
        table = _with_point_scores(table, pd.read_parquet(run_dir / "scores.parquet"))
    with atomic_path(run_dir / "predictions.parquet", suffix=".parquet") as tmp:
        table.to_parquet(tmp, index=False)


def _with_point_scores(table: Any, scores: Any) -> Any:
    """``table`` with the audited rows' scores replaced by the point's D's (by source and
    image id); paired rows keep the reference D's scores, which measure does not read."""
    audited = table["split"] == "audit"
    key = table["source"].astype(str) + "\0" + table["image_id"].astype(str)
    lookup = dict(zip(scores["source"].astype(str) + "\0" + scores["image_id"].astype(str),
                      scores["score"], strict=True))
    missing = [k for k in key[audited] if k not in lookup]
    if missing:
        raise RunFolderError(f"the point's discriminator scored other images than the "
                             f"reference run audited ({len(missing)} missing, e.g. "
                             f"{missing[0].replace(chr(0), ' ')}); the reference run's real "
                             f"images must still be readable where its config says.")
    table = table.copy()
    table.loc[audited, "score"] = [lookup[k] for k in key[audited]]
    return table


def audit_with_reference(cfg: AuditConfig, ref: Reference, *, run_dir: Path,
                         concept_set: Any, device: str, pdf: bool,
                         log: Callable[[str], None]) -> Any:
    """One point's audit into ``run_dir`` with ``ref``'s discriminator and decoders (module
    docstring); returns the :class:`audit.pipeline.RunSummary`."""
    from audit.load import shared_models
    from audit.manifest import write_manifest
    from audit.pipeline import _hash, _measure, _report, _spec_files, run_folder

    if cfg.generator is None:
        raise ConfigError("fixed decoders audit a generator's images: the config gives a "
                          "folder of generated images ('generated'); give a 'generator'.")
    own_scores = not _same_scorer(cfg, ref)
    stamps = [_spec_files(s, run_dir=run_dir) for s in (cfg.generator, cfg.discriminator)]
    with run_folder(cfg, run_dir, device=device, log=log) as run, shared_models():
        where = os.path.relpath(ref.run_dir.resolve(), run_dir.resolve())  # portable
        run.manifest["reference_decoders"] = {"run": Path(where).as_posix(), "key": ref.key,
                                              "scores": "point" if own_scores else "reference"}
        extract_key = _hash("track-extract", ref.key, concept_set.sha256,
                            cfg.generator.model_dump(mode="json"),
                            cfg.discriminator.model_dump(mode="json") if own_scores else None,
                            *stamps)
        parts: dict[str, float] = {}
        if run.stage("extract", extract_key, ["activations", "decoders", "baseline"],
                     lambda: _extract(cfg, ref, run_dir, concept_set, device, own_scores,
                                      parts),
                     optional=("scores.parquet",)):
            run.manifest["stages"]["extract"]["parts"] = parts
            write_manifest(run_dir, run.manifest)
        decode_key = _hash("decode", extract_key)
        run.stage("decode", decode_key, ["predictions.parquet"],
                  lambda: _predictions(ref, run_dir, concept_set))
        measure_key = _hash("measure", decode_key, concept_set.sha256,
                            cfg.measure.model_dump(mode="json"), cfg.report.title)
        run.stage("measure", measure_key, ["results.json", "tables"],
                  lambda: _measure(run_dir, concept_set, cfg))
        report_key = _hash("report", measure_key, cfg.report.model_dump(mode="json"), pdf)
        outputs = ["report.html", "report.pdf"] if pdf else ["report.html"]
        run.stage("report", report_key, outputs, lambda: _report(run_dir, pdf))
    return run.summary
