"""gan-audit card: the bias sections of a Hugging Face-style model card from results.json.

:func:`results_to_card` (pure) writes the "Bias, Risks, and Limitations" and "Evaluation"
sections as Markdown under YAML metadata front matter (``tags`` and a ``model-index``
whose metrics are the discriminator's ROC AUC and the top findings' values): the verdicts
with their labels, the top findings with intervals and group sizes, the decoders'
validity and the discriminator's sanity line, with relative links to the full report.
:func:`write_card` reads a run folder and writes the card atomically.

>>> text = results_to_card({"meta": {"audit_id": "a"}, "findings": [], "verdicts": []})
>>> text.startswith("---\\n") and "## Bias, Risks, and Limitations" in text
True
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from audit.formatting import fmt, interval, number, percent
from audit.report.render import metric_kind
from audit.report.summary_view import (
    TOP_FINDINGS,
    DiscriminatorView,
    FindingView,
    discriminator_view,
    findings_view,
    meta_view,
    verdicts_view,
)
from audit.report.viewtypes import Num, Unavailable, as_dict, as_float, as_int

__all__ = ["CARD_NAME", "results_to_card", "sanity_line", "write_card"]

#: The card's name in a run folder (recorded in its manifest).
CARD_NAME = "model-card.md"


def _cell(value: Any) -> str:
    """Text for one Markdown table cell: no line breaks, ``|`` escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _estimate(e: Num, kind: str) -> str:
    """``12.3% [10.0% to 15.0%]``: a value with its interval."""
    shown = fmt(e.value, kind)
    return shown + (f" [{interval([e.lo, e.hi], kind)}]" if e.has_ci else "")


def sanity_line(d: DiscriminatorView | Unavailable) -> str:
    """The discriminator's sanity check in one sentence (as the report's summary says it)."""
    if isinstance(d, Unavailable):
        return f"Discriminator sanity: not available ({d.reason})."
    counts = f"{d.n_real if d.n_real is not None else 'n/a'} real, " \
             f"{d.n_generated if d.n_generated is not None else 'n/a'} generated images"
    figures = (f"ROC AUC real vs generated {_estimate(d.auc, 'num')} ({counts}); accepts "
               f"{_estimate(d.acceptance_real, 'pct')} of real and "
               f"{_estimate(d.acceptance_generated, 'pct')} of generated images")
    if d.problems:
        return (f"Discriminator sanity: fails {len(d.problems)} check(s): "
                f"{'; '.join(d.problems)}. {figures}.")
    return f"Discriminator sanity: passes: it tells real from generated images: {figures}."


def _front_matter(meta: Any, disc: DiscriminatorView | Unavailable,
                  top: Sequence[FindingView]) -> str:
    """YAML metadata: tags and a model-index of the audit's headline numbers."""
    import yaml

    metrics: list[dict[str, Any]] = []
    if not isinstance(disc, Unavailable) and disc.auc.ok:
        metrics.append({"type": "roc_auc", "name": "discriminator ROC AUC, real vs generated",
                        "value": disc.auc.value})
    for f in top:
        if f.estimate.ok:
            metrics.append({"type": f.metric, "name": f.id, "value": f.estimate.value})
    doc = {
        "tags": ["gan-audit", "bias-audit", "fairness"],
        "model-index": [{"name": meta.model_name or meta.audit_id, "results": [{
            "task": {"type": "bias-audit", "name": "GAN bias audit through its discriminator"},
            "dataset": {"type": "audit", "name": meta.data_names or meta.audit_id},
            "metrics": metrics}]}],
    }
    return "---\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True) + "---\n"


def _validity_rows(results: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for name, v in as_dict(results.get("validity")).items():
        v = as_dict(v)
        n = as_int(v.get("n_test"))
        rows.append([name, number(as_float(v.get("balanced_accuracy"))),
                     {True: "yes", False: "no"}.get(v.get("decodable"), "n/a"),
                     "n/a" if n is None else n])
    return rows


def _bias_section(results: Mapping[str, Any], top: Sequence[FindingView], n_findings: int,
                  disc: DiscriminatorView | Unavailable) -> list[str]:
    """## Bias, Risks, and Limitations: verdicts, top findings, limitations."""
    verdicts = verdicts_view(results)
    lines = ["## Bias, Risks, and Limitations", "",
             f"Verdicts for {len(verdicts)} protected concept(s) and intersection(s):", ""]
    lines += _table(["Protected concept", "Verdict", "Reason"],
                    [[v.concept, v.verdict.label, v.reason] for v in verdicts])
    lines += ["", f"Top {len(top)} of {n_findings} finding(s), the most severe first:", ""]
    lines += _table(["Finding", "Severity", "Metric", "Estimate [interval]", "n", "Summary"],
                    [[f.id, f.severity.label, f.metric.replace("_", " "),
                      _estimate(f.estimate, metric_kind(f.metric)),
                      "n/a" if f.estimate.n is None else f.estimate.n, f.summary]
                     for f in top])
    sanity = (f"- {sanity_line(disc)}" if isinstance(disc, Unavailable) or disc.problems
              else "- The discriminator passes its sanity check (see Evaluation): its scores "
                   "can be read as evidence.")
    lines += ["", "Limitations:", "", sanity,
              "- The concept decoders read what is decodable from the discriminator's "
              "layers, not what the model uses; a finding holds only as far as its decoder "
              "is valid (see Evaluation).",
              "- These numbers are evidence for an assessment, not legal advice.", ""]
    return lines


def _evaluation_section(results: Mapping[str, Any], meta: Any,
                        disc: DiscriminatorView | Unavailable) -> list[str]:
    """## Evaluation: data, metrics and results (decoder validity, discriminator sanity)."""
    c = meta.counts
    settings = as_dict(results.get("settings"))
    level = (as_float(as_dict(results.get("bootstrap")).get("confidence"))
             or 1 - (as_float(settings.get("alpha")) or 0.05))
    lines = ["## Evaluation", "", "### Testing Data", "",
             f"{c.real if c.real is not None else 'n/a'} real and "
             f"{c.generated if c.generated is not None else 'n/a'} generated images; data: "
             f"{meta.data_names or 'not recorded'}; concept set "
             f"{meta.concept_set_name or 'unknown'}.", "", "### Metrics", "",
             f"Shares of each group among generated vs real images (corrected for decoder "
             f"error), the discriminator's scoring and acceptance rates per group, and impact "
             f"ratios (a group's rate over the highest group's; four-fifths threshold "
             f"{settings.get('impact_threshold', 0.8)}); intervals at level "
             f"{percent(level, digits=0)}.",
             "", "### Results", "", sanity_line(disc), "", "Decoder validity (held-out):", ""]
    lines += _table(["Concept", "Balanced accuracy", "Decodable", "n held out"],
                    _validity_rows(results))
    return [*lines, ""]


def results_to_card(results: Mapping[str, Any], *, manifest: Mapping[str, Any] | None = None,
                    report_links: Mapping[str, str] | None = None) -> str:
    """The model card's bias sections as Markdown with YAML front matter (pure).

    Parameters
    ----------
    results
        results.json.
    manifest
        manifest.json (completes the audit's date and version), if at hand.
    report_links
        Link text -> relative URL of the full report (``{"report.html": "report.html"}``).

    Returns
    -------
    str
        ``---`` YAML ``---`` then the Markdown sections.
    """
    meta = meta_view(results, as_dict(manifest))
    findings = findings_view(results)
    top = findings[:TOP_FINDINGS]
    disc = discriminator_view(results)
    links = " · ".join(f"[{name}]({url})" for name, url in (report_links or {}).items())
    head = [f"# {meta.title}", "",
            f"Written by gan-audit {meta.tool_version or 'n/a'} from results.json (audit "
            f"{meta.audit_id}, {meta.date or 'date not recorded'})."
            + (f" Full report: {links}." if links else ""), ""]
    body = head + _bias_section(results, top, len(findings), disc)
    body += _evaluation_section(results, meta, disc)
    return _front_matter(meta, disc, top) + "\n" + "\n".join(body)


def write_card(run_dir: Path, *, out: Path | None = None) -> Path:
    """Write the model card of a run folder (default ``RUN_DIR/model-card.md``), atomically.

    Links to report.html and report.pdf are relative to where the card is written.

    Raises
    ------
    RunFolderError
        results.json missing, unreadable or of another schema version; ``out`` is a
        folder or cannot be written.
    """
    from audit.errors import RunFolderError
    from audit.io import atomic_write_text
    from audit.report.render import load_results
    from audit.report.runfiles import read_json

    run_dir = Path(run_dir)
    results = load_results(run_dir)
    manifest = read_json(run_dir, "manifest.json", required=False)
    path = Path(out) if out is not None else run_dir / CARD_NAME
    if path.is_dir():
        raise RunFolderError(f"{path}: is a folder; give the card's file name with --out, "
                             f"e.g. --out {path / CARD_NAME}.")
    links = {name: Path(os.path.relpath(run_dir / name, path.parent)).as_posix()
             for name in ("report.html", "report.pdf")}
    text = results_to_card(results, manifest=manifest, report_links=links)
    try:
        atomic_write_text(path, text)
    except OSError as exc:  # disk full is an AuditError already (audit.io)
        raise RunFolderError(f"{path}: cannot write the model card ({exc.strerror}); give "
                             f"a writable place with --out FILE.") from exc
    return path
