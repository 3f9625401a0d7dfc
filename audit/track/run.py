"""``gan-audit track``: audit every point (checkpoint or setting) into one tracking folder.

    OUT/
      track/<point>/        one run folder per point (a full audit, or a fixed-decoder one)
      track.json            points, stage timings and reuse, series, trends, findings
      series.csv, series.parquet   the tidy monitoring series
      track.html, track.pdf the monitoring report (templates/track/)

Points are audited one at a time and each point's models are released before the next
(memory flat in the number of points); of each finished audit only its series rows are
kept. What is reused, per point, is what does not depend on it:

* per-checkpoint decoders (default): every stage of an audit depends on the checkpoint's D
  (the activations of the real images are its D's), so nothing is shared between points;
  a rerun (or a checkpoint added to the list) reuses every finished point's stages;
* fixed decoders (``--reference-decoders RUN``, and a truncation sweep): the real images'
  activations, the decoders, their validity and the random-weights baseline are the
  reference's; only the point's generation, recording through the reference D, (its D's
  scores,) decoding and measuring run (:mod:`audit.track.fixed`).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.config import AuditConfig
from audit.errors import AuditError
from audit.track.plan import TrackPlan, point_config, track_plan
from audit.track.series import Point, SeriesRow, results_to_rows

__all__ = ["PointRun", "TrackSummary", "run_track", "POINTS_DIR"]

POINTS_DIR = "track"


@dataclass
class PointRun:
    """One point's audit: its run folder, each stage's seconds, what was reused (and from
    where), and the series rows read from its results.json."""

    point: Point
    run_dir: Path
    seconds: dict[str, float]
    reused: dict[str, str]
    rows: list[SeriesRow]
    wall_seconds: float
    parts: dict[str, float] = field(default_factory=dict)

    def to_json(self, out: Path) -> dict[str, Any]:
        """As track.json's ``points`` stores it (paths relative to the tracking folder)."""
        return {"name": self.point.name, "index": self.point.index,
                "setting": self.point.setting,
                "run": self.run_dir.relative_to(out).as_posix(),
                "seconds": self.seconds, "extract_parts": self.parts, "reused": self.reused,
                "wall_seconds": round(self.wall_seconds, 3)}


@dataclass
class TrackSummary:
    """What :func:`run_track` did and found."""

    out: Path
    plan: TrackPlan
    points: list[PointRun]
    document: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)

    @property
    def findings(self) -> list[dict[str, Any]]:
        """The tracking run's findings (trends and change points), most severe first."""
        return list(self.document.get("findings") or [])


def _release() -> None:
    """Free the last point's models before the next is loaded (memory flat in N)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _naming(point: Point, spec: str | None, exc: AuditError) -> AuditError:
    """``exc`` with the point that failed named first (same class where it allows)."""
    what = f"checkpoint {point.name} ({spec})" if spec else f"setting {point.name}"
    message = f"{what}: {exc}"
    if point.setting is not None and "truncation" in str(exc):
        message += (" A truncation sweep needs a generator whose forward takes truncation_psi "
                    "(or truncation), as StyleGAN's and the demo's do.")
    try:
        return type(exc)(message)
    except TypeError:
        return AuditError(message)


def _audit_point(cfg: AuditConfig, plan: TrackPlan, point: Point, reference: Any, *,
                 out: Path, concept_set: Any, device: str, pdf: bool,
                 log: Callable[[str], None]) -> PointRun:
    """One point: a full audit (per-checkpoint decoders) or a fixed-decoder one."""
    from audit.pipeline import run_audit
    from audit.track.fixed import audit_with_reference

    run_dir = out / POINTS_DIR / point.name
    point_cfg = point_config(cfg, plan, point)

    def prefixed(line: str) -> None:
        log(f"[{point.name}] {line}")

    start = time.perf_counter()
    try:
        if reference is None:
            summary = run_audit(point_cfg, out=run_dir, device=device, pdf=pdf, log=prefixed)
        else:
            summary = audit_with_reference(point_cfg, reference, run_dir=run_dir,
                                           concept_set=concept_set, device=device, pdf=pdf,
                                           log=prefixed)
    except AuditError as exc:
        raise _naming(point, plan.specs[point.index], exc) from exc
    reused = {name: "cached (inputs unchanged)" for name in summary.cached}
    if reference is not None:
        reused.update({"real activations, decoders, validity, baseline":
                       f"reference run {reference.run_dir.name}"})
    rows = results_to_rows(_results(run_dir), point)
    return PointRun(point, run_dir, dict(summary.seconds), reused, rows,
                    time.perf_counter() - start, _extract_parts(run_dir, summary))


def _extract_parts(run_dir: Path, summary: Any) -> dict[str, float]:
    """The seconds of each step of a fixed-decoder point's extract stage, when it ran now."""
    import json

    from audit.runfolder import read_run_file

    if "extract" in summary.cached:
        return {}
    manifest = json.loads(read_run_file(run_dir / "manifest.json").decode("utf-8"))
    return dict(manifest.get("stages", {}).get("extract", {}).get("parts") or {})


def _results(run_dir: Path) -> dict[str, Any]:
    import json

    from audit.runfolder import read_run_file

    return json.loads(read_run_file(run_dir / "results.json").decode("utf-8"))


def _reference_for(plan: TrackPlan, point: Point, done: list[PointRun], *,
                   out: Path, concept_set: Any, trust: bool) -> Any:
    """The fixed instrument of ``point``: the given reference run, or in a sweep the first
    setting's run (None for that first one, and with per-checkpoint decoders)."""
    from audit.track.fixed import open_reference

    if plan.reference is not None:
        return open_reference(plan.reference, concept_set=concept_set, trust=trust)
    if plan.mode == "truncation" and done:
        return open_reference(done[0].run_dir, concept_set=concept_set, trust=True)
    return None


def run_track(config: AuditConfig | str | Path, *, checkpoints: list[str] | None = None,
              truncation: list[float] | None = None, reference: Path | None = None,
              baseline: str | None = None, out: Path | None = None,
              device: str | None = None, pdf: bool | None = None, point_pdf: bool = False,
              trust_run_config: bool = False,
              log: Callable[[str], None] | None = None) -> TrackSummary:
    """Audit every point of a tracking run and write the monitoring report.

    Parameters
    ----------
    config : AuditConfig or path
        The audit configuration every point shares (its ``track:`` section gives the points
        unless ``checkpoints`` or ``truncation`` do).
    checkpoints, truncation, reference, baseline
        As the command line's ``--checkpoints``, ``--truncation``, ``--reference-decoders``
        and ``--baseline`` (see :func:`audit.track.plan.track_plan`).
    out : Path, optional
        The tracking folder; default: the config's ``out``.
    device, pdf : optional
        As :func:`audit.pipeline.run_audit`; ``pdf`` is the monitoring report's PDF
        (default: the config's ``report.pdf``); ``point_pdf`` also renders each point's.
    trust_run_config : bool
        Load a reference run's discriminator even when its config names code to run.

    Returns
    -------
    TrackSummary
    """
    from audit.concepts import load_concept_set
    from audit.config import load_config
    from audit.load import resolve_device
    from audit.runfolder import claim
    from audit.track.document import write_track

    cfg = config if isinstance(config, AuditConfig) else load_config(config)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    plan = track_plan(cfg, checkpoints=checkpoints, truncation=truncation,
                      reference=reference, baseline=baseline)
    out = Path(out if out is not None else cfg.out)
    concept_set = load_concept_set(cfg.concept_set)
    dev = resolve_device(device or cfg.device)
    want_pdf = cfg.report.pdf if pdf is None else pdf
    done: list[PointRun] = []
    with claim(out, kind="track") as first:
        try:
            _audit_points(cfg, plan, done, out=out, concept_set=concept_set, device=dev,
                          point_pdf=point_pdf, trust=trust_run_config, log=log)
        except BaseException:
            if first and not done:
                _discard_empty(out)  # failed before any point finished: nothing left
            raise
        summary = TrackSummary(out, plan, done)
        write_track(summary, cfg=cfg, pdf=want_pdf)
    return summary


def _audit_points(cfg: AuditConfig, plan: TrackPlan, done: list[PointRun], *, out: Path,
                  concept_set: Any, device: str, point_pdf: bool, trust: bool,
                  log: Callable[[str], None]) -> None:
    """Every point in order, one at a time, appended to ``done`` as each finishes."""
    for point in plan.points:
        ref = _reference_for(plan, point, done, out=out, concept_set=concept_set, trust=trust)
        log(f"[track] {point.name} ({point.index + 1} of {len(plan.points)})")
        done.append(_audit_point(cfg, plan, point, ref, out=out, concept_set=concept_set,
                                 device=device, pdf=point_pdf, log=log))
        del ref
        _release()


def _discard_empty(out: Path) -> None:
    """Remove a tracking folder this call created when no point finished (the failed
    point's own run folder was discarded by its audit): its empty points folder, then the
    folder itself (only what the tool wrote)."""
    import contextlib

    from audit.pipeline import _discard

    with contextlib.suppress(OSError):
        (out / POINTS_DIR).rmdir()  # only if empty
    if (out / POINTS_DIR).exists():
        return  # a point's work is kept for the rerun to resume from
    with contextlib.suppress(OSError, AuditError):
        _discard(out)
