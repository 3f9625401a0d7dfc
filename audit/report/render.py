"""Render the audit report: run folder -> report.html (+ report.pdf).

The HTML is one self-contained file: inline CSS (screen and print), charts as
inline SVG, sample grids as inline PNG (``data:`` URLs); it requests nothing from
any network. Jinja autoescaping is on, so a concept name or a reviewer's note that
contains HTML is shown as text. The PDF is made from the same HTML by WeasyPrint
(see :mod:`audit.report.pdf`).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from audit.errors import RunFolderError
from audit.formatting import fmt, pvalue, significant
from audit.io import atomic_write_text
from audit.manifest import record_artifacts
from audit.measure.results import (  # the results.json version this renderer reads
    SCHEMA_VERSION,
    check_schema_version,
)
from audit.report.counterfactual_view import STRIP_PREFIX
from audit.report.insight_view import read_insight
from audit.report.review import read_review_log
from audit.report.runfiles import read_json, recorded_images
from audit.report.view import ReportInputs, results_to_view
from audit.report.viewtypes import flatten
from audit.resources import resource_dir
from audit.vocabulary import label, tone

__all__ = ["SCHEMA_VERSION", "jinja_env", "load_results", "load_run", "metric_kind",
           "results_to_html", "render_report", "render_template"]

SAMPLE_NAME = re.compile(r"^(generated-.+|real-(lowest|highest))\.png$")


# ---------------------------------------------------------------- filters



def metric_kind(metric: Any) -> str:
    """How to format a finding's metric (by its name)."""
    m = str(metric)
    if "ratio" in m:
        return "ratio"
    if "gap" in m or "difference" in m:
        return "pp"
    if any(w in m for w in ("rate", "share", "accuracy", "coverage")):
        return "pct"
    return "num"


def _slug(text: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def _anchor(finding_id: Any) -> str:
    return "f-" + _slug(finding_id)


def _rounded(v: Any) -> Any:
    if isinstance(v, float):
        return float(significant(v, 6)) if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_rounded(x) for x in v]
    return v


def _plain(v: Any) -> str:
    """A value as text: floats to 6 significant digits, lists and mappings as JSON."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return significant(v, 6)
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(_rounded(v), ensure_ascii=False, default=str)
    return str(v)


def _dictitems(d: Any) -> list[tuple[str, Any]]:
    return [(str(k), v) for k, v in d.items()] if isinstance(d, Mapping) else []


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _shade(share: Any) -> str:
    if not isinstance(share, (int, float)) or not math.isfinite(share):
        return "transparent"
    return f"rgba(0, 114, 178, {0.06 + 0.5 * max(0.0, min(1.0, share)):.2f})"


def _svg(svg: str) -> Any:
    """Mark chart SVG (made by :mod:`audit.report.charts`, text already escaped) as safe."""
    from markupsafe import Markup

    return Markup(svg)


def _flat(d: Any) -> dict[str, Any]:
    return flatten(d) if isinstance(d, Mapping) else {}


def _omit(d: Any, keys: list[str]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys} if isinstance(d, Mapping) else {}


@lru_cache(maxsize=1)
def jinja_env() -> Any:
    """The Jinja environment of the reports: templates/ folder, autoescape on, strict."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(fmt=fmt, pval=pvalue, label=label, tone=tone, metric_kind=metric_kind,
                       slug=_slug,
                       anchor=_anchor, plain=_plain, dictitems=_dictitems, png_uri=_png_uri,
                       shade=_shade, svg=_svg, flat=_flat, omit=_omit)
    return env


def render_template(name: str, context: Mapping[str, Any]) -> str:
    """Render ``templates/<name>`` with ``context`` (autoescaped)."""
    return jinja_env().get_template(name).render(**context)


# ---------------------------------------------------------------- run folder


def _schema_warnings(results: Mapping[str, Any]) -> list[str]:
    """Top-level parts of results.json that are missing or of the wrong type.

    A cheap check (the measure stage validates against results.schema.json when it
    writes the file); what is missing is shown as "not available" where it belongs.
    """
    expected = {"meta": dict, "concept_set": dict, "settings": dict, "bootstrap": dict,
                "counts": dict, "validity": dict, "representation": list, "treatment": list,
                "intersections": list, "exclusions": list, "unknowns": list,
                "degenerate": list, "tests": list, "findings": list, "verdicts": list,
                "notes": list}
    bad = [f"{key} ({'missing' if key not in results else 'not a ' + kind.__name__})"
           for key, kind in expected.items() if not isinstance(results.get(key), kind)]
    if not bad:
        return []
    return [f"results.json lacks or has malformed parts: {', '.join(bad)}; the report shows "
            f"them as not available. Re-run the measure stage to complete them."]


def load_results(run_dir: Path) -> dict[str, Any]:
    """A run folder's results.json, checked to be an object of the schema version this
    gan-audit reads."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: not a folder. Give the run folder of an audit "
                             f"(the --out of gan-audit run).")
    results = read_json(run_dir, "results.json", required=True)
    check_schema_version(results, where=run_dir / "results.json")
    return results


def load_run(run_dir: Path) -> ReportInputs:
    """Read what a report shows from a run folder (results.json is required).

    Reads results.json, manifest.json, decoders/validity.json, decoders/layers.json,
    review.jsonl, samples/*.png and samples/counterfactual/*.png; nothing else.
    """
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    manifest = read_json(run_dir, "manifest.json", required=False)
    samples, refused = recorded_images(run_dir, "samples", manifest, pattern=SAMPLE_NAME)
    strips, refused_strips = recorded_images(run_dir, "samples/counterfactual", manifest)
    samples.update({STRIP_PREFIX + name: data for name, data in strips.items()})
    refused += refused_strips
    insight = read_insight(run_dir, manifest)
    if insight is not None:
        refused += insight.pop("refused")
    return ReportInputs(
        results=results,
        manifest=manifest,
        validity=read_json(run_dir, "decoders/validity.json", required=False),
        layers=read_json(run_dir, "decoders/layers.json", required=False),
        review=read_review_log(run_dir),
        samples=samples,
        warnings=_schema_warnings(results) + refused,
        insight=insight,
    )


def results_to_html(results: Mapping[str, Any], *, manifest: Mapping[str, Any] | None = None,
                    validity: Mapping[str, Any] | None = None,
                    layers: Mapping[str, Any] | None = None, review: Any = None,
                    samples: Mapping[str, bytes] | None = None,
                    warnings: list[str] | None = None) -> str:
    """The report as one self-contained HTML document.

    Parameters
    ----------
    results
        The results.json document (the schema version :data:`SCHEMA_VERSION`).
    manifest, validity, layers
        manifest.json, decoders/validity.json and decoders/layers.json, if at hand.
    review
        A :class:`audit.report.review.ReviewLog` (entries and chain check), if any.
    samples
        File name -> PNG bytes of the sample grids (``generated-<concept>-<group>.png``,
        ``real-lowest.png``, ``real-highest.png``).
    """
    inputs = ReportInputs(results=results, manifest=manifest, validity=validity, layers=layers,
                          review=review, samples=samples, warnings=list(warnings or []))
    return render_template("report/report.html.j2", results_to_view(inputs))


def render_report(run_dir: Path, *, pdf: bool = True) -> dict[str, Path]:
    """Render ``RUN_DIR/report.html`` (and ``report.pdf``) from the run folder alone.

    Returns
    -------
    ``{"html": path, "pdf": path}`` (no ``"pdf"`` key when ``pdf`` is False).

    Raises
    ------
    RunFolderError
        results.json missing, unreadable or of another schema version.
    DependencyError
        ``pdf=True`` and WeasyPrint cannot be loaded (report.html is written first).
    """
    run_dir = Path(run_dir)
    inputs = load_run(run_dir)
    html = render_template("report/report.html.j2", results_to_view(inputs))
    out = {"html": run_dir / "report.html"}
    atomic_write_text(out["html"], html)
    if pdf:
        from audit.report.pdf import html_to_pdf

        out["pdf"] = html_to_pdf(html, run_dir / "report.pdf")
    record_artifacts(run_dir, [path.name for path in out.values()])  # manifest's hashes
    return out
