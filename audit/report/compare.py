"""Compare two audits (e.g. two checkpoints of one GAN): metrics, findings, settings.

:func:`results_to_comparison` is pure: two results.json documents (and optionally
their decoders/validity.json) in, one JSON-ready dict out. :func:`render_compare`
reads two run folders and writes compare.json, compare.html and compare.pdf.

A metric is compared when both audits have it (same key); the change is B - A and
the intervals "overlap" when [lo_A, hi_A] and [lo_B, hi_B] share a point (a rough
screen, not a test: non-overlap at 95% implies a difference, overlap does not
imply none).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from audit.formatting import percent
from audit.io import atomic_write_json, atomic_write_text
from audit.report.render import load_results, render_template
from audit.report.runfiles import read_json
from audit.report.viewtypes import Num, as_dict, as_list, num_from
from audit.runfolder import claim

__all__ = ["flatten_metrics", "results_to_comparison", "render_compare"]


def _metrics_of(entry: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, str, Num]]:
    """(key, unit, number) of one representation or treatment entry."""
    concept = str(entry.get("concept"))
    for r in as_list(entry.get("rows")):
        r = as_dict(r)
        g = str(r.get("group"))
        if prefix == "representation":
            for field in ("real", "generated_raw", "generated_corrected", "gap"):
                if field in r:
                    yield f"representation/{concept}/{g}/{field}", "share", num_from(r[field])
        else:
            src = str(r.get("source"))
            for field in ("mean_score", "scoring_rate", "acceptance_rate"):
                if field in r:
                    unit = "score" if field == "mean_score" else "rate"
                    yield f"treatment/{concept}/{src}/{g}/{field}", unit, num_from(r[field])
    if prefix == "representation":
        for kind, d in as_dict(entry.get("distances")).items():
            for m, e in as_dict(d).items():
                yield f"representation/{concept}/distance/{kind}/{m}", "distance", num_from(e)
    else:
        for r in as_list(entry.get("impact")):
            r = as_dict(r)
            yield (f"impact/{concept}/{r.get('metric')}/{r.get('source')}/{r.get('group')}",
                   "ratio", num_from(r.get("ratio")))
        fl = as_dict(entry.get("fairlearn"))
        for m in ("demographic_parity_difference", "demographic_parity_ratio",
                  "equalized_odds_difference"):
            if m in fl:
                yield f"fairlearn/{concept}/{m}", "ratio" if "ratio" in m else "difference", \
                    num_from(fl[m])


def flatten_metrics(results: Mapping[str, Any]) -> dict[str, tuple[str, Num]]:
    """Every number of a results.json with an interval: key -> (unit, number).

    Keys look like ``representation/tone/dark/generated_corrected``,
    ``treatment/stroke/generated/thick/scoring_rate``,
    ``impact/tone/scoring_rate/real/dark``, ``validity/tone/balanced_accuracy``.
    """
    out: dict[str, tuple[str, Num]] = {}
    entries = [("representation", as_dict(e)) for e in as_list(results.get("representation"))]
    entries += [("treatment", as_dict(e)) for e in as_list(results.get("treatment"))]
    for x in as_list(results.get("intersections")):
        entries += [("representation", as_dict(as_dict(x).get("representation"))),
                    ("treatment", as_dict(as_dict(x).get("treatment")))]
    for kind, entry in entries:
        for key, unit, value in _metrics_of(entry, kind):
            out[key] = (unit, value)
    for concept, v in as_dict(results.get("validity")).items():
        for m in ("balanced_accuracy", "accuracy", "selectivity"):
            if m in as_dict(v):
                out[f"validity/{concept}/{m}"] = ("share" if m != "selectivity" else "difference",
                                                  num_from(as_dict(v)[m]))
    return out


def _overlap(a: Num, b: Num) -> bool | None:
    if not (a.has_ci and b.has_ci):
        return None
    return bool(a.lo <= b.hi and b.lo <= a.hi)  # type: ignore[operator]


def _num_json(x: Num) -> dict[str, Any]:
    return {"value": x.value, "ci": [x.lo, x.hi] if x.has_ci else None, "n": x.n}


def _decoders(results: Mapping[str, Any], validity_file: Mapping[str, Any] | None
              ) -> dict[str, dict[str, Any]]:
    """Concept -> {layer, balanced_accuracy} of the decoders behind an audit."""
    merged: dict[str, dict[str, Any]] = {}
    for name, v in as_dict(results.get("validity")).items():
        merged[name] = {"layer": as_dict(v).get("layer"),
                        "balanced_accuracy": as_dict(v).get("balanced_accuracy")}
    for name, v in as_dict(as_dict(validity_file).get("concepts")).items():
        merged.setdefault(name, {}).update(
            {k: as_dict(v)[k] for k in ("layer", "balanced_accuracy") if k in as_dict(v)})
    return merged


def results_to_comparison(a: Mapping[str, Any], b: Mapping[str, Any], *,
                          validity_a: Mapping[str, Any] | None = None,
                          validity_b: Mapping[str, Any] | None = None,
                          names: tuple[str, str] = ("A", "B"),
                          decoder_tolerance: float = 0.02) -> dict[str, Any]:
    """Compare audit A (before) with audit B (after).

    Parameters
    ----------
    a, b
        The two results.json documents.
    validity_a, validity_b
        Their decoders/validity.json, if at hand (layers and validity of the decoders).
    names
        How the two audits are called (their run folders).
    decoder_tolerance
        A decoder's balanced accuracy may move this much (absolute) before the
        decoders count as different.

    Returns
    -------
    ``{"audits", "warnings", "metrics", "only_in_a", "only_in_b", "findings"}``; each
    metric: key, unit, a, b (value, ci, n), change (B - A), intervals_overlap.
    """
    warnings = [w for w in (
        _concept_set_warning(a, b, names),
        _decoder_warning(_decoders(a, validity_a), _decoders(b, validity_b), decoder_tolerance),
        _settings_warning(a, b)) if w]
    ma, mb = flatten_metrics(a), flatten_metrics(b)
    return {
        "audits": [_audit_facts(names[0], a), _audit_facts(names[1], b)],
        "warnings": warnings,
        "metrics": _metric_changes(ma, mb),
        "only_in_a": sorted(set(ma) - set(mb)),
        "only_in_b": sorted(set(mb) - set(ma)),
        "findings": _finding_changes(a, b),
    }


def _audit_facts(name: str, results: Mapping[str, Any]) -> dict[str, Any]:
    """Name, audit id, date and concept set of one audit."""
    meta = as_dict(results.get("meta"))
    return {"name": name, "audit_id": meta.get("audit_id"), "date": meta.get("date"),
            "concept_set": as_dict(results.get("concept_set"))}


def _concept_set_warning(a: Mapping[str, Any], b: Mapping[str, Any], names: tuple[str, str]
                         ) -> str | None:
    """A warning when the audits used different concept sets (by sha256)."""
    cs_a, cs_b = as_dict(a.get("concept_set")), as_dict(b.get("concept_set"))
    if cs_a.get("sha256") == cs_b.get("sha256"):
        return None
    return (f"The audits used different concept sets: {cs_a.get('name')} "
            f"(sha256 {str(cs_a.get('sha256'))[:12]}…) in {names[0]}, "
            f"{cs_b.get('name')} (sha256 {str(cs_b.get('sha256'))[:12]}…) in "
            f"{names[1]}; groups may not mean the same.")


def _decoder_warning(dec_a: Mapping[str, Mapping[str, Any]],
                     dec_b: Mapping[str, Mapping[str, Any]], tolerance: float) -> str | None:
    """A warning naming the concepts whose decoder changed layer or moved its balanced
    accuracy by more than ``tolerance``."""
    changed = []
    for concept in sorted(set(dec_a) & set(dec_b)):
        la, lb = dec_a[concept].get("layer"), dec_b[concept].get("layer")
        ba, bb = dec_a[concept].get("balanced_accuracy"), dec_b[concept].get("balanced_accuracy")
        moved = (isinstance(ba, (int, float)) and isinstance(bb, (int, float))
                 and abs(bb - ba) > tolerance)
        if la != lb or moved:
            changed.append(f"{concept} (layer {la} → {lb}, balanced accuracy "
                           f"{percent(ba)} → {percent(bb)})")
    if not changed:
        return None
    return ("The audits read the concepts through different decoders: " + "; ".join(changed)
            + ". Part of any change may come from the decoders.")


def _settings_warning(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """A warning listing the settings whose values differ."""
    set_a, set_b = as_dict(a.get("settings")), as_dict(b.get("settings"))
    diff = sorted(k for k in set(set_a) | set(set_b) if set_a.get(k) != set_b.get(k))
    if not diff:
        return None
    return "The audits used different thresholds or settings: " + "; ".join(
        f"{k} {set_a.get(k)!r} → {set_b.get(k)!r}" for k in diff) + "."


def _metric_changes(ma: Mapping[str, tuple[str, Num]], mb: Mapping[str, tuple[str, Num]]
                    ) -> list[dict[str, Any]]:
    """Each metric both audits have (A's order): both values, the change B - A and whether
    the intervals overlap."""
    metrics = []
    for key in [k for k in ma if k in mb]:
        unit, xa = ma[key]
        xb = mb[key][1]
        change = (xb.value - xa.value) if (xa.ok and xb.ok) else None
        metrics.append({"key": key, "unit": unit, "a": _num_json(xa), "b": _num_json(xb),
                        "change": change, "intervals_overlap": _overlap(xa, xb)})
    return metrics


_BRIEF = ("id", "kind", "severity", "confidence", "concept", "groups", "metric", "value", "ci",
          "n", "summary")


def _finding_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Findings new in B, resolved (only in A), of changed severity, and unchanged (ids)."""
    fa = {str(as_dict(f).get("id")): as_dict(f) for f in as_list(a.get("findings"))}
    fb = {str(as_dict(f).get("id")): as_dict(f) for f in as_list(b.get("findings"))}

    def brief(f: Mapping[str, Any]) -> dict[str, Any]:
        return {k: f.get(k) for k in _BRIEF}

    both = sorted(set(fa) & set(fb))
    return {
        "new": [brief(fb[i]) for i in sorted(set(fb) - set(fa))],
        "resolved": [brief(fa[i]) for i in sorted(set(fa) - set(fb))],
        "changed_severity": [{"id": i, "severity_a": fa[i].get("severity"),
                              "severity_b": fb[i].get("severity"),
                              "summary_b": fb[i].get("summary")}
                             for i in both if fa[i].get("severity") != fb[i].get("severity")],
        "unchanged": [i for i in both if fa[i].get("severity") == fb[i].get("severity")],
    }


def render_compare(run_a: Path, run_b: Path, *, out: Path, pdf: bool = True
                   ) -> dict[str, Path]:
    """Write ``compare.json``, ``compare.html`` (and ``compare.pdf``) to ``out``.

    Reads results.json (required) and decoders/validity.json (if present) of each run.
    """
    run_a, run_b = Path(run_a), Path(run_b)

    def validity(run: Path) -> Any:
        return read_json(run, "decoders/validity.json", required=False)

    comparison = results_to_comparison(load_results(run_a), load_results(run_b),
                                       validity_a=validity(run_a), validity_b=validity(run_b),
                                       names=(str(run_a), str(run_b)))
    out = Path(out)
    with claim(out, kind="compare"):  # a new, empty or earlier comparison folder only
        paths = {"json": out / "compare.json", "html": out / "compare.html"}
        atomic_write_json(paths["json"], comparison)
        html = render_template("report/compare.html.j2", {
            "title": f"Comparison of {run_a.name} and {run_b.name}", "c": comparison,
            "tool_version": None})
        atomic_write_text(paths["html"], html)
        if pdf:
            from audit.report.pdf import html_to_pdf

            paths["pdf"] = html_to_pdf(html, out / "compare.pdf")
    return paths
