"""track.json and the monitoring report: what a tracking run found, written to its folder.

:func:`track_document` gathers the points (with their stage timings and what each reused),
the tidy series, the trend tests, the change points and the findings into one JSON
document; :func:`track_view` turns it into what ``templates/track/track.html.j2`` shows
(one chart per curve and concept, tables of trends and findings); :func:`write_track`
writes track.json, series.csv/.parquet, track.html and track.pdf. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.report.viewtypes import Chart, Estimate
from audit.track.charts import curve_chart
from audit.track.series import (
    CURVE_LABELS,
    SeriesRow,
    curve_family,
    curve_words,
    rows_by_curve,
)
from audit.track.trends import TrendSettings, rows_to_trends, trends_to_findings

if TYPE_CHECKING:
    from audit.config import AuditConfig

__all__ = ["TRACK_VERSION", "track_document", "track_view", "write_track", "render_track"]

TRACK_VERSION = 1
_UNIT = {"generated_share", "d_acceptance", "d_separation_auc", "decoder_balanced_accuracy"}


def trend_settings(cfg: AuditConfig) -> TrendSettings:
    """The trend tests' settings from the tracked config (its measure settings)."""
    m = cfg.measure
    return TrendSettings(alpha=m.alpha, high_gap=m.severity_high_gap,
                         impact_threshold=m.impact_threshold,
                         n_boot=cfg.track.n_boot if cfg.track else 9999, seed=m.seed)


def _cost(summary: Any) -> dict[str, Any]:
    """Per-point wall time and the stages that ran or were reused (``summary``: an
    :class:`audit.track.run.TrackSummary`)."""
    walls = [p.wall_seconds for p in summary.points]
    return {"points": len(walls), "total_seconds": round(sum(walls), 3),
            "mean_seconds_per_point": round(sum(walls) / len(walls), 3) if walls else None}


def track_document(summary: Any, *, cfg: AuditConfig) -> dict[str, Any]:
    """track.json: points, decoders used, series, trends, change points and findings."""
    from audit.concepts import load_concept_set

    plan = summary.plan
    rows = [r for p in summary.points for r in p.rows]
    settings = trend_settings(cfg)
    trends, changes = rows_to_trends(rows, baseline=plan.baseline, settings=settings)
    findings = trends_to_findings(trends, changes, rows, baseline=plan.baseline,
                                  settings=settings)
    concept_set = load_concept_set(cfg.concept_set)
    reference = plan.reference or (summary.points[0].run_dir if plan.mode == "truncation"
                                   else None)
    if reference is not None and Path(reference).resolve().is_relative_to(
            Path(summary.out).resolve()):  # inside the tracking folder: named from it
        reference = Path(reference).resolve().relative_to(Path(summary.out).resolve())
    return {
        "version": TRACK_VERSION, "name": cfg.name, "mode": plan.mode,
        "concept_set": {"name": concept_set.name, "sha256": concept_set.sha256},
        "decoders": {"kind": plan.decoders,
                     "reference": Path(reference).as_posix() if reference is not None
                     else None},
        "baseline": plan.baseline,
        "settings": {"alpha": settings.alpha, "high_gap": settings.high_gap,
                     "impact_threshold": settings.impact_threshold,
                     "n_boot": settings.n_boot, "seed": settings.seed,
                     "generator_n": cfg.generator.n if cfg.generator else None,
                     "measure_n_boot": cfg.measure.n_boot},
        "points": [p.to_json(summary.out) for p in summary.points],
        "cost": _cost(summary),
        "series": [r.to_json() for r in rows],
        "trends": [t.to_json() for t in trends],
        "changes": [c.to_json() for c in changes],
        "findings": findings,
    }


@dataclass(frozen=True)
class CurveView:
    """One chart of the report and the trend rows under it."""

    family: str
    curve: str
    concept: str
    chart: Chart
    trends: list[dict[str, Any]]


def _rows(doc: Mapping[str, Any]) -> list[SeriesRow]:
    return [SeriesRow(**r) for r in doc.get("series") or []]


def _chart_for(curve: str, concept: str, groups: dict[str, list[SeriesRow]],
               points: list[str], ticks: list[str], x_label: str, key: str) -> Chart:
    family = curve_family(curve)
    series = {}
    for group, rows in groups.items():
        at = {r.point: r for r in rows}
        series[group.partition("=")[2] or group] = [
            Estimate(at[p].estimate, at[p].low, at[p].high) if p in at else Estimate(None)
            for p in points]
    what = curve_words(curve).removeprefix("the ")
    title = f"{what[0].upper()}{what[1:]}" + (f": {concept}" if concept != "all" else "")
    return curve_chart(title, ticks, series, x_label=x_label, y_label=CURVE_LABELS[family],
                       threshold=0.8 if family == "impact_ratio" else None, key=key,
                       unit_interval=family in _UNIT)


def track_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What the monitoring template shows: the document plus one chart per curve and
    concept (context curves: one chart per curve), each with its trend rows."""
    rows = _rows(doc)
    points = [p["name"] for p in doc.get("points") or []]
    # the x axis: psi values in a sweep, checkpoint names otherwise
    ticks = [f"{p['setting']:g}" if p.get("setting") is not None else p["name"]
             for p in doc.get("points") or []]
    x_label = "checkpoint" if doc.get("mode") == "checkpoints" else "truncation psi"
    trends = {(t["curve"], t["group"]): t for t in doc.get("trends") or []}
    charts: dict[tuple[str, str], dict[str, list[SeriesRow]]] = {}
    for (curve, group), series in rows_by_curve(rows).items():
        concept = group.partition("=")[0] if "=" in group else "all"
        charts.setdefault((curve, concept), {})[group] = series
    views = [CurveView(curve_family(curve), curve, concept,
                       _chart_for(curve, concept, groups, points, ticks, x_label,
                                  key=f"track-{i}"),
                       [trends[(curve, g)] for g in groups if (curve, g) in trends])
             for i, ((curve, concept), groups) in enumerate(charts.items())]
    findings = list(doc.get("findings") or [])
    counts = {sev: sum(f["severity"] == sev for f in findings)
              for sev in ("high", "medium", "low")}
    return {"doc": doc, "counts": counts,
            "headline": [f for f in findings if f["kind"] == "trend"][:5],
            "bias": [v for v in views if v.family in ("generated_share",
                                                                 "impact_ratio")],
            "context": [v for v in views if v.family not in ("generated_share",
                                                            "impact_ratio")],
            "x_label": x_label,
            "per": "checkpoint" if doc.get("mode") == "checkpoints" else "unit of psi"}


def render_track(doc: Mapping[str, Any]) -> str:
    """The monitoring report's HTML (templates/track/track.html.j2)."""
    from audit._version import __version__
    from audit.report.render import render_template

    return render_template("track/track.html.j2", {
        **track_view(doc), "title": f"Monitoring report: {doc.get('name')}",
        "tool_version": __version__})


def write_track(summary: Any, *, cfg: AuditConfig, pdf: bool) -> dict[str, Path]:
    """Write track.json, series.csv, series.parquet, track.html (and track.pdf) into the
    tracking folder; sets ``summary.document`` and ``summary.outputs``."""
    from audit.io import atomic_write_json, atomic_write_text
    from audit.track.export import write_series

    out = summary.out
    doc = track_document(summary, cfg=cfg)
    atomic_write_json(out / "track.json", doc)
    paths = {"json": out / "track.json", **write_series(_rows(doc), out)}
    html = render_track(doc)
    atomic_write_text(out / "track.html", html)
    paths["html"] = out / "track.html"
    if pdf:
        from audit.report.pdf import html_to_pdf

        paths["pdf"] = html_to_pdf(html, out / "track.pdf")
    summary.document, summary.outputs = doc, paths
    return paths

