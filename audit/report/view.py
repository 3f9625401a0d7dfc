"""From the run folder's documents to what the templates show (pure, no files).

:func:`results_to_view` turns results.json (see ``audit/measure/results.schema.json``)
plus the optional decoders/validity.json, decoders/layers.json, manifest.json, the review
log and the sample grids into the mapping the templates read: typed views for the
report's head (:mod:`audit.report.summary_view`), plain dicts for the other sections.
Every optional part that is missing becomes an ``Unavailable`` with the reason, so a
template shows "not available: <reason>" instead of failing. Numbers are not formatted
here; the template filters do that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from audit.formatting import finite
from audit.report.charts import (
    forest_plot,
    layer_sweep_chart,
    representation_chart,
    score_distribution_chart,
)
from audit.report.counterfactual_view import counterfactual_view
from audit.report.insight_view import insight_to_view
from audit.report.regulatory_view import regulatory_view
from audit.report.summary_view import (
    TOP_FINDINGS,
    discriminator_view,
    findings_view,
    meta_view,
    review_view,
    verdicts_view,
)
from audit.report.viewtypes import (
    Chart,
    Estimate,
    Num,
    Unavailable,
    as_dict,
    as_float,
    as_int,
    as_list,
    flatten,
    num_from,
)

__all__ = ["SECTIONS", "ReportInputs", "results_to_view"]

#: Section anchors and titles, in report order (also the table of contents).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "1. Summary and verdicts"),
    ("scope", "2. Scope and data"),
    ("validity", "3. Decoder validity"),
    ("representation", "4. Representation"),
    ("treatment", "5. Treatment by the discriminator"),
    ("samples", "6. Samples"),
    ("findings", "7. Findings and review"),
    ("method", "8. Method and limitations"),
    ("manifest", "9. Reproducibility manifest"),
    ("insight", "10. What the discriminator knows"),
    ("regulatory", "11. Regulatory evidence"),
    ("counterfactual", "12. Counterfactual treatment test"),
)


#: Charts get expensive with many concepts; past this many, per-concept charts are
#: drawn for protected concepts only (the tables still cover every concept).
MAX_CHARTED_CONCEPTS = 12


# ---------------------------------------------------------------- sections


def _confusion(groups: list[str], confusion: list[Any]) -> dict[str, Any] | Unavailable:
    """Held-out confusion counts as rows of ``{group, total, cells: [{count, share}]}``."""
    if not (confusion and groups and len(confusion) == len(groups)):
        return Unavailable("no held-out confusion counts for this concept "
                           "(decoders/validity.json is absent or lacks 'confusion')")
    rows = []
    for g, row in zip(groups, confusion, strict=False):
        row = [int(c) if finite(c) else 0 for c in as_list(row)]
        total = sum(row)
        rows.append({"group": g, "total": total, "cells": [
            {"count": c, "share": (c / total) if total else None} for c in row]})
    return {"groups": groups, "rows": rows}


def _validity_row(name: str, merged: Mapping[str, Any]) -> dict[str, Any]:
    """One concept's decoder metrics (validity.json's entry over results.json's)."""
    groups = [str(g) for g in as_list(merged.get("groups"))]
    group_acc = [{"concept": other, "group": g, "accuracy": as_float(acc)}
                 for other, per in as_dict(merged.get("group_accuracy")).items()
                 for g, acc in as_dict(per).items()]
    metrics = ("accuracy", "balanced_accuracy", "auroc", "ece", "probe_accuracy",
               "control_accuracy", "control_balanced_accuracy", "selectivity")
    return {
        "concept": name, "layer": merged.get("layer"), "groups": groups,
        "n_test": as_int(merged.get("n_test")),
        **{m: as_float(merged.get(m)) for m in metrics},
        "decodable": merged.get("decodable"),
        "class_accuracy": {str(k): as_float(v) for k, v in
                           as_dict(merged.get("class_accuracy")).items()},
        "group_accuracy": group_acc,
        "confusion": _confusion(groups, as_list(merged.get("confusion"))),
    }


def _group_accuracy_matrix(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy within protected groups: decoders x (protected concept, group)."""
    columns: list[tuple[str, str]] = []
    for r in rows:
        for g in r["group_accuracy"]:
            if (g["concept"], g["group"]) not in columns:
                columns.append((g["concept"], g["group"]))
    return {"columns": columns, "rows": [
        {"concept": r["concept"], "accuracies": [
            next((g["accuracy"] for g in r["group_accuracy"]
                  if (g["concept"], g["group"]) == col), None) for col in columns]}
        for r in rows if r["group_accuracy"]]}


def _layer_sweep(layers_file: Mapping[str, Any] | None
                 ) -> tuple[Chart | Unavailable, dict[str, Any] | None]:
    """The layer sweep of decoders/layers.json: its chart and its table (None without)."""
    lf = as_dict(layers_file)
    sweep: Chart | Unavailable
    if lf.get("layers") and as_dict(lf.get("scores")):
        scores = {str(c): {str(k): v for k, v in as_dict(s).items()}
                  for c, s in as_dict(lf.get("scores")).items()}
        sweep = layer_sweep_chart([str(x) for x in lf["layers"]], scores,
                                  metric=str(lf.get("metric", "score")).replace("_", " "),
                                  best={str(k): str(v)
                                        for k, v in as_dict(lf.get("best")).items()})
    else:
        sweep = Unavailable("decoders/layers.json is absent from the run folder, so the "
                            "layer sweep cannot be drawn (re-run train-decoders to write it)")
    table = None
    if lf.get("layers"):
        table = {"layers": [str(x) for x in lf["layers"]],
                 "metric": str(lf.get("metric", "score")),
                 "rows": [{"concept": c,
                           "scores": [as_float(as_dict(s).get(layer)) for layer in lf["layers"]],
                           "best": as_dict(lf.get("best")).get(c)}
                          for c, s in as_dict(lf.get("scores")).items()]}
    return sweep, table


def _validity_view(results: Mapping[str, Any], validity_file: Mapping[str, Any] | None,
                   layers_file: Mapping[str, Any] | None,
                   concepts_order: list[str]) -> dict[str, Any]:
    """Per concept decoder metrics (validity.json wins over results.json's copy)."""
    from_results = as_dict(results.get("validity"))
    from_file = as_dict(as_dict(validity_file).get("concepts"))
    names = [c for c in concepts_order if c in from_results or c in from_file]
    names += sorted((set(from_results) | set(from_file)) - set(names))
    rows = [_validity_row(name, {**as_dict(from_results.get(name)),
                                 **as_dict(from_file.get(name))}) for name in names]
    binary_confusions = [r for r in rows if not isinstance(r["confusion"], Unavailable)
                         and len(r["confusion"]["groups"]) == 2]
    sweep, sweep_table = _layer_sweep(layers_file)
    return {"rows": rows, "sweep_chart": sweep, "sweep_table": sweep_table,
            "group_matrix": _group_accuracy_matrix(rows), "binary_confusions": binary_confusions,
            "source": "decoders/validity.json" if from_file else "results.json"}


def _representation_view(entry: Mapping[str, Any], *, chart: bool, level: float,
                         key: str) -> dict[str, Any]:
    rows = []
    for r in as_list(entry.get("rows")):
        r = as_dict(r)
        rows.append({
            "group": str(r.get("group")),
            "real": num_from(r.get("real")), "raw": num_from(r.get("generated_raw")),
            "corrected": num_from(r.get("generated_corrected")),
            "reference_share": as_float(r.get("reference_share")),
            "gap": num_from(r.get("gap")),
            "under_represented": bool(r.get("under_represented")),
            "below_coverage_floor": bool(r.get("below_coverage_floor")),
            "insufficient_evidence": bool(r.get("insufficient_evidence")),
            "small": bool(r.get("small")), "test_id": r.get("test_id"),
        })
    dist = as_dict(entry.get("distances"))
    distances = [{"kind": kind, "metric": m, "value": num_from(as_dict(dist.get(kind)).get(m))}
                 for kind in ("raw", "corrected") for m in ("l1", "l2", "kl")
                 if as_dict(dist.get(kind)).get(m) is not None]
    name = str(entry.get("concept"))
    view: dict[str, Any] = {
        "concept": name, "concepts": [str(c) for c in as_list(entry.get("concepts"))],
        "protected": bool(entry.get("protected")), "reference": entry.get("reference"),
        "correction": as_dict(entry.get("correction")),
        "n_real": as_int(entry.get("n_real")), "n_generated": as_int(entry.get("n_generated")),
        "n_unknown_real": as_int(entry.get("n_unknown_real")),
        "n_unknown_generated": as_int(entry.get("n_unknown_generated")),
        "rows": rows, "distances": distances,
    }
    if chart and rows:
        groups = [r["group"] for r in rows]
        view["chart"] = representation_chart(
            name, groups, {"real": [r["real"].estimate() for r in rows],
                           "generated (raw)": [r["raw"].estimate() for r in rows],
                           "generated (corrected)": [r["corrected"].estimate() for r in rows]},
            level=level, key=key)
    else:
        view["chart"] = Unavailable(
            "no group rows" if not rows else
            "chart drawn for protected concepts only in audits with many concepts; "
            "the table holds every number")
    return view


def _treatment_view(entry: Mapping[str, Any], *, chart: bool, key: str) -> dict[str, Any]:
    rows = []
    for r in as_list(entry.get("rows")):
        r = as_dict(r)
        rows.append({
            "group": str(r.get("group")), "source": r.get("source"), "n": as_int(r.get("n")),
            "n_invalid_score": as_int(r.get("n_invalid_score")),
            "share_of_source": as_float(r.get("share_of_source")),
            "mean_score": num_from(r.get("mean_score")),
            "scoring_rate": num_from(r.get("scoring_rate")),
            "acceptance_rate": num_from(r.get("acceptance_rate")),
            "small": bool(r.get("small")), "excluded": bool(r.get("excluded")),
            "exclusion_reason": r.get("exclusion_reason"),
        })
    impact = []
    for r in as_list(entry.get("impact")):
        r = as_dict(r)
        impact.append({
            "metric": str(r.get("metric")), "source": r.get("source"),
            "group": str(r.get("group")), "rate": num_from(r.get("rate")),
            "highest_group": r.get("highest_group"), "ratio": num_from(r.get("ratio")),
            "four_fifths": r.get("four_fifths"), "reason": r.get("reason"),
            "test_id": r.get("test_id"),
        })
    ratios = {(r["group"], str(r["source"])): r["ratio"] for r in impact
              if r["metric"] == "scoring_rate"}
    for r in rows:
        r["scoring_ratio"] = ratios.get((r["group"], str(r["source"])), Num(None))
    fl = as_dict(entry.get("fairlearn"))
    fairlearn = {
        "groups_used": [str(g) for g in as_list(fl.get("groups_used"))],
        "per_group": [{"group": str(as_dict(p).get("group")),
                       "count": as_int(as_dict(p).get("count")),
                       "selection_rate": num_from(as_dict(p).get("selection_rate")),
                       "true_positive_rate": num_from(as_dict(p).get("true_positive_rate")),
                       "false_positive_rate": num_from(as_dict(p).get("false_positive_rate"))}
                      for p in as_list(fl.get("per_group"))],
        "dp_difference": num_from(fl.get("demographic_parity_difference")),
        "dp_ratio": num_from(fl.get("demographic_parity_ratio")),
        "eo_difference": num_from(fl.get("equalized_odds_difference")),
    } if fl else None
    name = str(entry.get("concept"))
    hist = as_dict(entry.get("score_histogram"))
    real = {str(g): list(c) for g, c in as_dict(as_dict(hist.get("counts")).get("real")).items()
            if isinstance(c, list) and sum(x for x in c if finite(x)) > 0}
    edges = [float(e) for e in as_list(hist.get("edges")) if finite(e)]
    # Nothing to show is left out, not announced: the table above holds the numbers.
    distributions: list[Chart] = []
    if chart and real and len(edges) >= 2 and all(len(c) == len(edges) - 1
                                                  for c in real.values()):
        distributions.append(score_distribution_chart(
            name, edges, real, source="real", threshold=as_float(entry.get("accept_threshold")),
            median=as_float(entry.get("median_real_score")), key=f"{key}-real"))
    return {
        "concept": name, "concepts": [str(c) for c in as_list(entry.get("concepts"))],
        "protected": bool(entry.get("protected")),
        "median_real_score": as_float(entry.get("median_real_score")),
        "accept_threshold": as_float(entry.get("accept_threshold")),
        "rows": rows, "impact": impact, "fairlearn": fairlearn,
        "distributions": distributions,
    }


def _forest_charts(treatments: Sequence[Mapping[str, Any]], threshold: float
                   ) -> list[Chart] | Unavailable:
    """One forest plot per (metric, source) over every protected concept's impact ratios."""
    panels: dict[tuple[str, str], list[tuple[str, Estimate]]] = {}
    for t in treatments:
        if not t["protected"]:
            continue
        for r in t["impact"]:
            panels.setdefault((r["metric"], str(r["source"])), []).append(
                (f"{t['concept']}: {r['group']}", r["ratio"].estimate()))
    if not panels:
        return Unavailable("no impact ratios in results.json (no protected concept with two "
                           "or more groups large enough)")
    charts = []
    for (metric, source), rows in sorted(panels.items()):
        what = metric.replace("_", " ")
        for start in range(0, len(rows), 36):  # one page per 36 rows at most
            part = rows[start:start + 36]
            suffix = f" (part {start // 36 + 1})" if len(rows) > 36 else ""
            charts.append(forest_plot(
                part, threshold=threshold,
                title=f"Impact ratios of the {what} on {source} images{suffix}",
                key=f"forest-{metric}-{source}-{start}",
                xlabel=f"impact ratio ({what} of the group / highest group's)"))
    return charts


def _samples_view(samples: Mapping[str, bytes] | None, representation: Sequence[Mapping[str, Any]]
                  ) -> dict[str, Any]:
    """Sample grids: generated images decoded as each group; real ones scored lowest/highest."""
    samples = dict(samples or {})
    if not samples:
        return {"available": False, "reason": "the run folder has no samples/ images (the "
                "pipeline writes them when the generator or images are at hand; rendering "
                "from results.json alone cannot make them)", "groups": [], "real": []}
    groups = []
    for rep in representation:
        if "+" in str(rep.get("concept")):
            continue
        for r in as_list(rep.get("rows")):
            g = str(as_dict(r).get("group"))
            name = f"generated-{rep.get('concept')}-{g}.png"
            groups.append({"concept": rep.get("concept"), "group": g, "file": name,
                           "png": samples.get(name)})
    real = [{"which": which, "file": f"real-{which}.png", "png": samples.get(f"real-{which}.png")}
            for which in ("lowest", "highest")]
    return {"available": True, "reason": "", "groups": groups, "real": real}


def _transfer_view(section: Any) -> list[dict[str, Any]]:
    """Rows of the decoder-transfer table (results.json's ``transfer``; [] when absent)."""
    rows = []
    for r in as_list(section):
        r = as_dict(r)
        ood = r.get("out_of_distribution")
        rows.append({"concept": str(r.get("concept")), "layer": str(r.get("layer")),
                     "n_components": as_int(r.get("n_components")),
                     "n_train": as_int(r.get("n_train")),
                     "n_calibration": as_int(r.get("n_calibration")),
                     "generated": num_from(r.get("generated")), "real": num_from(r.get("real")),
                     "status": ("not measured" if ood is None else
                                "out of distribution" if ood else "within range"),
                     "reason": r.get("reason"), "rule": str(r.get("rule") or "")})
    return rows


def _label_transfer_view(section: Any) -> list[dict[str, Any]]:
    """Per concept, decoder transfer measured with labels (results.json's ``label_transfer``;
    [] when the run has no labels): accuracies, gap, confusion on labelled generated images
    with intervals, and the generated shares corrected both ways."""
    out = []
    for r in (as_dict(x) for x in as_list(section)):
        groups = [str(g) for g in as_list(r.get("groups"))]
        gen = as_dict(r.get("confusion_generated"))
        counts, rates = as_list(gen.get("counts")), as_list(gen.get("rates"))
        low, high = as_list(gen.get("ci_low")), as_list(gen.get("ci_high"))
        rows = [{"group": g, "cells": [
            {"count": as_int(_at(as_list(_at(counts, i)), j)),
             "rate": num_from(None, value=as_float(_at(as_list(_at(rates, i)), j)),
                              ci=[_at(as_list(_at(low, i)), j), _at(as_list(_at(high, i)), j)])}
            for j in range(len(groups))]} for i, g in enumerate(groups)]
        acc, bal = as_dict(r.get("accuracy")), as_dict(r.get("balanced_accuracy"))
        out.append({
            "concept": str(r.get("concept")), "groups": groups, "rows": rows,
            "n_images": as_int(r.get("n_images")), "n_labellers": as_int(r.get("n_labellers")),
            "coverage": as_float(r.get("coverage")), "sufficient": bool(r.get("sufficient")),
            "reason": r.get("reason"), "min_per_group": as_int(r.get("min_per_group")),
            "left_out": as_dict(r.get("left_out")),
            "accuracy_real": num_from(acc.get("real")),
            "accuracy_generated": num_from(acc.get("generated")),
            "balanced_real": num_from(bal.get("real")),
            "balanced_generated": num_from(bal.get("generated")),
            "gap": num_from(r.get("gap")), "large_gap": r.get("large_gap"),
            "shares": [{"group": str(as_dict(s).get("group")),
                        "decoded": as_float(as_dict(s).get("decoded")),
                        "real": num_from(as_dict(s).get("corrected_real")),
                        "generated": num_from(as_dict(s).get("corrected_generated")),
                        "labelled": num_from(as_dict(s).get("labelled"))}
                       for s in as_list(r.get("shares"))],
            "rule": str(r.get("rule") or "")})
    return out


def _at(values: list[Any], i: int) -> Any:
    return values[i] if i < len(values) else None


def _baseline_view(section: Any) -> list[dict[str, Any]]:
    """Rows of the knowledge-gain table (results.json's ``baseline``; [] when absent)."""
    return [{"concept": str(as_dict(r).get("concept")),
             "trained_layer": as_dict(r).get("trained_layer"),
             "random_layer": as_dict(r).get("random_layer"),
             "trained": as_float(as_dict(r).get("trained_balanced_accuracy")),
             "random": as_float(as_dict(r).get("random_balanced_accuracy")),
             "gain": num_from(as_dict(r).get("knowledge_gain")),
             "pixels_alone": bool(as_dict(r).get("pixels_alone")),
             "label": as_dict(r).get("label")} for r in as_list(section)]


def _group_counts(representation: Sequence[Mapping[str, Any]],
                  validity_file: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Images per (concept, group): real and generated (decoded), held-out labelled."""
    heldout: dict[tuple[str, str], int] = {}
    for name, v in as_dict(as_dict(validity_file).get("concepts")).items():
        groups, conf = as_list(as_dict(v).get("groups")), as_list(as_dict(v).get("confusion"))
        for g, row in zip(groups, conf, strict=False):
            heldout[(str(name), str(g))] = int(sum(c for c in as_list(row) if finite(c)))
    rows = []
    for rep in representation:
        name = str(rep.get("concept"))
        for r in as_list(rep.get("rows")):
            g = str(as_dict(r).get("group"))
            rows.append({"concept": name, "group": g,
                         "real": num_from(as_dict(r).get("real")).k,
                         "generated": num_from(as_dict(r).get("generated_raw")).k,
                         "heldout": heldout.get((name, g))})
    return rows


def _skipped_view(skipped: Any) -> list[dict[str, Any]]:
    """Rows of the degenerate-cases table for the images extraction skipped, per image set
    (``manifest.skipped_images``: unreadable files, non-finite activations)."""
    rows = []
    for name, items in as_dict(skipped).items():
        records = [as_dict(x) for x in as_list(items)]
        if not records:
            continue
        reasons = sorted({str(r.get("reason", "")).split(" (")[0] for r in records})
        rows.append({"kind": "skipped_images", "source": str(name), "count": len(records),
                     "image_ids": [str(r.get("image_id")) for r in records],
                     "message": f"{len(records)} {name} image(s) were skipped and left out of "
                                f"every number: {'; '.join(reasons)}"})
    return rows


@dataclass
class ReportInputs:
    """Everything a report is rendered from (already read from the run folder)."""

    results: Mapping[str, Any]
    manifest: Mapping[str, Any] | None = None
    validity: Mapping[str, Any] | None = None
    layers: Mapping[str, Any] | None = None
    review: Any = None
    samples: Mapping[str, bytes] | None = None
    warnings: list[str] = field(default_factory=list)
    insight: Mapping[str, Any] | None = None


def _artifacts_view(artifacts: Any) -> list[dict[str, Any]]:
    """The files a run recorded (``manifest.artifacts``: path -> sha256, size, mtime), as
    table rows in path order: path, size in bytes (with thousands separators), sha256.

    The modification times stay in manifest.json (they serve the cache, not the reader).
    Malformed entries show "not recorded" rather than failing (the manifest may come from
    someone else)."""
    rows = []
    for path, entry in sorted(as_dict(artifacts).items()):
        entry = as_dict(entry)
        size, digest = entry.get("size"), entry.get("sha256")
        rows.append({"path": str(path),
                     "size": (f"{size:,}" if isinstance(size, int) and not isinstance(size, bool)
                              else "not recorded"),
                     "sha256": str(digest) if isinstance(digest, str) else "not recorded"})
    return rows


def _level_and_threshold(results: Mapping[str, Any]) -> tuple[float, float]:
    """The confidence level of the intervals and the impact-ratio threshold."""
    settings = as_dict(results.get("settings"))
    boot = as_dict(results.get("bootstrap"))
    level = as_float(boot.get("confidence")) or (1 - (as_float(settings.get("alpha")) or 0.05))
    return level, as_float(settings.get("impact_threshold")) or 0.8


def _concept_views(results: Mapping[str, Any], *, level: float, threshold: float
                   ) -> dict[str, Any]:
    """Representation, treatment and intersection views, and the forest plots over them.

    Past :data:`MAX_CHARTED_CONCEPTS` concepts, only protected ones get charts and detail.
    """
    representation = [as_dict(r) for r in as_list(results.get("representation"))]
    treatment = [as_dict(t) for t in as_list(results.get("treatment"))]
    inter = [as_dict(x) for x in as_list(results.get("intersections"))]
    n_concepts = len(representation)

    def charted(entry: Mapping[str, Any]) -> bool:
        return n_concepts <= MAX_CHARTED_CONCEPTS or bool(entry.get("protected"))

    rep_views = [{**_representation_view(r, chart=charted(r), level=level, key=f"rep-{i}"),
                  "detail": charted(r)} for i, r in enumerate(representation)]
    trt_views = [{**_treatment_view(t, chart=charted(t), key=f"trt-{i}"), "detail": charted(t)}
                 for i, t in enumerate(treatment)]
    inter_views = [_intersection_view(x, level=level, index=i) for i, x in enumerate(inter)]
    forest_inputs = trt_views + [{**iv["treatment"], "protected": True} for iv in inter_views]
    return {"representation": rep_views, "treatment": trt_views,
            "intersections": inter_views,
            "forest_charts": _forest_charts(forest_inputs, threshold)}


def _intersection_view(x: Mapping[str, Any], *, level: float, index: int) -> dict[str, Any]:
    """One intersection of protected concepts: its representation and treatment views."""
    rep = as_dict(x.get("representation"))
    return {
        "name": str(x.get("name")), "concepts": [str(c) for c in as_list(x.get("concepts"))],
        "representation": _representation_view(rep, chart=len(as_list(rep.get("rows"))) <= 12,
                                               level=level, key=f"int-rep-{index}"),
        "treatment": _treatment_view(as_dict(x.get("treatment")), chart=False,
                                     key=f"int-trt-{index}"),
    }


def results_to_view(inputs: ReportInputs) -> dict[str, Any]:
    """The template context of a report (pure: documents in, plain data and SVG out).

    Raises
    ------
    RunFolderError
        A verdict or finding of results.json lacks a key the schema requires.
    """
    results = as_dict(inputs.results)
    manifest = as_dict(inputs.manifest)
    meta = meta_view(results, manifest)
    level, threshold = _level_and_threshold(results)
    representation = [as_dict(r) for r in as_list(results.get("representation"))]
    findings = findings_view(results)
    review = review_view(findings, inputs.review)
    verdicts = verdicts_view(results)
    return {
        "sections": SECTIONS,
        "insight": insight_to_view(inputs.insight),
        "counterfactual": counterfactual_view(results, inputs.samples),
        "meta": meta,
        "title": meta.title,
        "tool_version": meta.tool_version,
        "settings": as_dict(results.get("settings")),
        "bootstrap": as_dict(results.get("bootstrap")),
        "level": level,
        "threshold": threshold,
        "discriminator": discriminator_view(results),
        "verdicts": verdicts,
        "regulatory": regulatory_view(results=results, meta=meta, findings=findings,
                                      verdicts=verdicts, review=review, threshold=threshold),
        "top_findings": findings[:TOP_FINDINGS],
        "findings": findings,
        "validity": _validity_view(results, inputs.validity, inputs.layers,
                                   [str(r.get("concept")) for r in representation]),
        "transfer": _transfer_view(results.get("transfer")),
        "label_transfer": _label_transfer_view(results.get("label_transfer")),
        "baseline": _baseline_view(results.get("baseline")),
        **_concept_views(results, level=level, threshold=threshold),
        "exclusions": [as_dict(x) for x in as_list(results.get("exclusions"))],
        "unknowns": [as_dict(x) for x in as_list(results.get("unknowns"))],
        "degenerate": [as_dict(x) for x in as_list(results.get("degenerate"))]
        + _skipped_view(meta.recorded.get("skipped_images") or manifest.get("skipped_images")),
        "tests": [as_dict(x) for x in as_list(results.get("tests"))],
        "notes": [str(x) for x in as_list(results.get("notes"))],
        "samples": _samples_view(inputs.samples, representation),
        "review": review,
        "latest": review.latest,
        "model_hashes": flatten(as_dict(manifest.get("hashes"))),
        "group_counts": _group_counts(representation, inputs.validity),
        "manifest": manifest or None,
        "artifacts": _artifacts_view(manifest.get("artifacts")),
        "warnings": list(inputs.warnings),
    }
