"""The report's insight section: ``RUN_DIR/insight/`` documents -> template context.

:func:`read_insight` reads the files (the edge); :func:`insight_to_view` is pure and
turns them into what ``templates/report/sections/insight.html.j2`` shows. A view whose
file is missing becomes an :class:`~audit.report.viewtypes.Unavailable` with the reason
(``insight/index.json`` says why a view could not run).

:func:`audit.report.render.load_run` passes ``read_insight(run_dir)`` into
:class:`~audit.report.view.ReportInputs`, and :func:`audit.report.view.results_to_view`
adds ``"insight": insight_to_view(inputs.insight)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audit.errors import RunFolderError
from audit.report.insight_charts import (
    cka_heatmap,
    curves_chart,
    entropy_chart,
    interpolation_chart,
    lift_chart,
)
from audit.report.runfiles import recorded_images
from audit.report.viewtypes import Estimate, Unavailable
from audit.runfolder import read_artifact

__all__ = ["INSIGHT_FILES", "read_insight", "insight_to_view"]

#: View name -> its JSON file under ``RUN_DIR/insight/``.
INSIGHT_FILES = {"interpolation": "interpolations.json", "diagnosis": "diagnosis.json",
                 "redundancy": "redundancy.json", "entropy": "entropy.json",
                 "curves": "curves.json"}
INSIGHT_DIR = "insight"
_HOW = "run `gan-audit insight RUN_DIR` after the audit, then `gan-audit report RUN_DIR`"


def read_insight(run_dir: Path, manifest: Mapping[str, Any] | None = None
                 ) -> dict[str, Any] | None:
    """``{"docs": {view: JSON}, "index": JSON, "pngs": {file: bytes}, "refused": [warning]}``
    of ``RUN_DIR/insight/``, or None when the folder is absent. Unreadable files are skipped
    (the view then says it is not available); files are read without following links, and
    PNGs are embedded only when ``manifest`` records their bytes
    (:func:`audit.report.runfiles.recorded_images`)."""
    folder = Path(run_dir) / INSIGHT_DIR
    if not folder.is_dir():
        return None

    def load(name: str) -> Any:
        try:
            return json.loads(read_artifact(run_dir, f"{INSIGHT_DIR}/{name}").decode("utf-8"))
        except (OSError, RunFolderError, UnicodeDecodeError, json.JSONDecodeError):
            return None

    docs = {view: load(name) for view, name in INSIGHT_FILES.items()}
    pngs, refused = recorded_images(run_dir, INSIGHT_DIR, manifest)
    return {"docs": {k: v for k, v in docs.items() if isinstance(v, dict)},
            "index": load("index.json") or {}, "pngs": pngs, "refused": refused}


def _missing(view: str, index: Mapping[str, Any]) -> Unavailable:
    why = (index.get(view) or {}).get("unavailable") if isinstance(index.get(view), dict) \
        else None
    if why:
        return Unavailable(f"{why}".rstrip("."))
    return Unavailable(f"the run folder has no insight/{INSIGHT_FILES[view]} ({_HOW})")


def _interpolation_view(doc: Mapping[str, Any], pngs: Mapping[str, bytes]) -> dict[str, Any]:
    paths = []
    for i, p in enumerate(doc.get("paths") or []):
        probs = p.get("probabilities") or {}
        series = {}
        for concept, per_group in probs.items():
            groups = list(per_group)
            shown = groups[1:] if len(groups) == 2 else groups
            if len(groups) > 2:   # multiclass: the groups decoded at either end
                ends = {(p.get("summary") or {}).get(concept, {}).get(k) for k in ("start", "end")}
                shown = [g for g in groups if g in ends]
            for g in shown:
                series[f"{concept}: {g}"] = per_group[g]
        title = f"Along the path from {p.get('start')} to {p.get('end')}"
        summary = [{"concept": c, **s} for c, s in (p.get("summary") or {}).items()]
        paths.append({"name": p.get("name"), "start": p.get("start"), "end": p.get("end"),
                      "method": p.get("method"), "steps": p.get("steps"),
                      "class": p.get("class"),
                      "strip": pngs.get(str(p.get("strip"))), "summary": summary,
                      "chart": interpolation_chart(p.get("t") or [], series, p.get("scores"),
                                                   title=title, key=f"interp-{i}")})
    if not paths:
        return {"available": False, "reason": "no interpolation path was written (the concept "
                "set has no protected concept, or no generated images to start from)"}
    return {"available": True, "paths": paths}


def _diagnosis_view(doc: Mapping[str, Any], pngs: Mapping[str, bytes]) -> dict[str, Any]:
    lifts = [g for g in doc.get("lifts") or [] if isinstance(g, dict)]
    charts = []
    for source in ("real", "generated"):
        rows = [(f"{g['concept']}: {g['group']}",
                 Estimate(g.get("lift"), *(g.get("lift_ci") or (None, None))))
                for g in lifts if g.get("source") == source]
        if rows:
            charts.append(lift_chart(rows, key=f"lift-{source}",
                                     title=f"Over-representation among the lowest-scored "
                                           f"{source} images"))
    grids = {s: pngs.get(f) for s, f in (doc.get("grids") or {}).items()}
    return {"available": True, "reject_share": doc.get("reject_share"),
            "confidence": doc.get("confidence"), "summary": list(doc.get("summary") or []),
            "named": list(doc.get("named") or []), "lifts": lifts, "charts": charts,
            "sources": list(doc.get("sources") or []), "grids": grids}


def _redundancy_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    layers = [str(x) for x in doc.get("layers") or []]
    return {"available": True, "layers": layers, "metric": doc.get("metric"),
            "tolerance": doc.get("tolerance"), "n_images": doc.get("n_images"),
            "redundant": list(doc.get("redundant") or []),
            "chart": cka_heatmap(layers, doc.get("cka") or []) if layers else None}


def _entropy_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    rows = [c for c in doc.get("concepts") or [] if isinstance(c, dict)]
    return {"available": True, "margin": doc.get("margin"), "rows": rows,
            "chart": entropy_chart([r["concept"] for r in rows],
                                   [r.get("entropy_real") for r in rows],
                                   [r.get("entropy_generated") for r in rows]) if rows else None}


def _curves_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    layers = [str(x) for x in doc.get("layers") or []]
    history = [c for c in doc.get("history") or [] if isinstance(c, dict)]
    if history:
        chart = curves_chart({c["tag"]: (c["steps"], c["values"]) for c in history},
                             xlabel="epoch", ylabel="loss", key="curves",
                             title="Decoder training curves per layer")
        note = ""
    else:
        best = doc.get("best_epoch") or {}
        pts = [(i, best[lay]) for i, lay in enumerate(layers) if lay in best]
        limit = doc.get("max_epochs")
        chart = curves_chart({"best epoch": ([p[0] for p in pts], [p[1] for p in pts])},
                             xlabel="discriminator layer (input side first)",
                             ylabel="epoch", key="curves", xticks=layers,
                             title="Best epoch of each layer's decoder (early stopping)",
                             limit=float(limit) if isinstance(limit, (int, float)) else None,
                             limit_label="max_epochs") if pts else None
        note = ("The decoders record no per-epoch history, so the chart shows each layer's best "
                "epoch against the limit; a best epoch at the limit means training may have "
                "stopped before converging")
    return {"available": True, "chart": chart, "note": note, "has_history": bool(history)}


def insight_to_view(insight: Mapping[str, Any] | None) -> dict[str, Any]:
    """The template context of the insight section (pure).

    Parameters
    ----------
    insight
        :func:`read_insight`'s result, or None.

    Returns
    -------
    dict
        ``available`` (any view present) and one entry per view (``interpolation``,
        ``diagnosis``, ``redundancy``, ``entropy``, ``curves``): a dict with
        ``available: True`` and its tables and charts, or an :class:`Unavailable`.
    """
    if not insight:
        return {"available": False,
                **{v: Unavailable(f"the run folder has no insight/ folder ({_HOW})")
                   for v in INSIGHT_FILES}}
    docs, pngs, index = insight.get("docs") or {}, insight.get("pngs") or {}, \
        insight.get("index") or {}
    makers = {"interpolation": lambda d: _interpolation_view(d, pngs),
              "diagnosis": lambda d: _diagnosis_view(d, pngs),
              "redundancy": _redundancy_view, "entropy": _entropy_view, "curves": _curves_view}
    out: dict[str, Any] = {"available": bool(docs)}
    for view, make in makers.items():
        if view not in docs:
            out[view] = _missing(view, index)
            continue
        made = make(docs[view])
        out[view] = made if made.get("available") else Unavailable(made["reason"])
    return out
