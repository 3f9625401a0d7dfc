"""What the review app's pages show, from the report's views (pure: no files, no HTTP).

The findings table is filtered and sorted on the server from the query string, so it works
without JavaScript and a filtered view is a link one can share. A finding's page reuses the
report's views (:func:`audit.report.view.results_to_view`): its numbers, its concept's
charts and the sample grids of its groups.

>>> q = FindingsQuery.from_params({"severity": "high", "sort": "concept", "order": "desc"})
>>> q.severity, q.sort, q.descending
('high', 'concept', True)
>>> FindingsQuery.from_params({"sort": "nonsense"}).sort
'severity'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from audit.report.review import STATUSES
from audit.report.summary_view import FindingView
from audit.vocabulary import Severity

__all__ = ["UNREVIEWED", "SORTS", "FindingRow", "FindingsQuery", "filter_findings",
           "filter_options", "finding_detail", "sort_links"]

#: The status of a finding no review of these results has named.
UNREVIEWED = "unreviewed"
#: Columns the findings table sorts by.
SORTS: tuple[str, ...] = ("severity", "status", "concept", "kind", "id")
_STATUS_ORDER = (UNREVIEWED, *STATUSES)


@dataclass(frozen=True)
class FindingsQuery:
    """The findings table's filters and sort, read from a query string ('' = any)."""

    severity: str = ""
    status: str = ""
    concept: str = ""
    kind: str = ""
    sort: str = "severity"
    descending: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> FindingsQuery:
        """The query of ``params`` (a request's query string); unknown values are ignored."""
        sort = str(params.get("sort") or "severity")
        return cls(severity=str(params.get("severity") or ""),
                   status=str(params.get("status") or ""),
                   concept=str(params.get("concept") or ""), kind=str(params.get("kind") or ""),
                   sort=sort if sort in SORTS else "severity",
                   descending=str(params.get("order") or "") == "desc")

    def params(self, **change: Any) -> str:
        """This query as a query string, with ``change`` applied (empty filters left out)."""
        q = replace(self, **change)
        items = {"severity": q.severity, "status": q.status, "concept": q.concept,
                 "kind": q.kind, "sort": q.sort, "order": "desc" if q.descending else "asc"}
        return urlencode({k: v for k, v in items.items() if v})


@dataclass(frozen=True)
class FindingRow:
    """One row of the findings table: the finding and its latest review status."""

    finding: FindingView
    status: str
    review: Mapping[str, Any] | None


def _rows(findings: Sequence[FindingView], latest: Mapping[str, Any]) -> list[FindingRow]:
    return [FindingRow(f, str(latest[f.id]["status"]) if f.id in latest else UNREVIEWED,
                       latest.get(f.id)) for f in findings]


def _sort_key(sort: str) -> Any:
    def status_rank(s: str) -> int:
        return _STATUS_ORDER.index(s) if s in _STATUS_ORDER else len(_STATUS_ORDER)

    keys = {
        "severity": lambda r: (r.finding.severity.rank, r.finding.id),
        "status": lambda r: (status_rank(r.status), r.finding.severity.rank, r.finding.id),
        "concept": lambda r: (r.finding.concept, r.finding.severity.rank, r.finding.id),
        "kind": lambda r: (r.finding.kind, r.finding.severity.rank, r.finding.id),
        "id": lambda r: r.finding.id,
    }
    return keys[sort]


def filter_findings(findings: Sequence[FindingView], latest: Mapping[str, Any],
                    query: FindingsQuery) -> list[FindingRow]:
    """The rows of the findings table: filtered by ``query``, then sorted.

    Parameters
    ----------
    findings
        Every finding of the audit (:func:`audit.report.summary_view.findings_view`).
    latest
        Finding id -> its latest review entry of the current results
        (:func:`audit.report.review.latest_status`).
    """
    rows = [r for r in _rows(findings, latest)
            if (not query.severity or r.finding.severity.value == query.severity)
            and (not query.status or r.status == query.status)
            and (not query.concept or r.finding.concept == query.concept)
            and (not query.kind or r.finding.kind == query.kind)]
    return sorted(rows, key=_sort_key(query.sort), reverse=query.descending)


def filter_options(findings: Sequence[FindingView]) -> dict[str, list[str]]:
    """The choices of each filter: every severity and status, the audit's concepts and kinds."""
    return {"severity": [s.value for s in Severity], "status": list(_STATUS_ORDER),
            "concept": sorted({f.concept for f in findings}),
            "kind": sorted({f.kind for f in findings})}


def sort_links(query: FindingsQuery) -> dict[str, dict[str, str]]:
    """Per sortable column: the query string that sorts by it (toggling the order when it
    is the current one) and its ``aria-sort`` value."""
    out = {}
    for col in SORTS:
        current = query.sort == col
        out[col] = {
            "href": "?" + query.params(sort=col, descending=current and not query.descending),
            "aria": ("descending" if query.descending else "ascending") if current else "none"}
    return out


def _concept_parts(finding: FindingView) -> list[tuple[str, str]]:
    """(concept, group) pairs of a finding: an intersection's groups split per concept."""
    concepts = finding.intersection or [finding.concept]
    pairs = []
    for g in finding.groups:
        parts = g.split("+") if finding.intersection else [g]
        pairs += [(c, p) for c, p in zip(concepts, parts, strict=False)]
    return list(dict.fromkeys(pairs))


def _sample_images(finding: FindingView, view: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The sample grids behind a finding: generated images decoded as each group of its
    concept(s), the finding's own groups first; and the real images the discriminator
    scored lowest (rejected) and highest (accepted)."""
    samples = view["samples"]
    if not samples["available"]:
        return []
    own = set(_concept_parts(finding))
    concepts = {c for c, _ in own}
    grids = [g for g in samples["groups"] if g["concept"] in concepts and g["png"]]
    grids.sort(key=lambda g: ((g["concept"], g["group"]) not in own, g["concept"]))
    out = [{"file": f"samples/{g['file']}", "own": (g["concept"], g["group"]) in own,
            "caption": f"Generated images decoded as {g['concept']} = {g['group']}",
            "alt": f"A grid of generated images that the decoder reads as {g['concept']} "
                   f"{g['group']} (a seeded random pick)"} for g in grids]
    words = {"lowest": "the discriminator scores lowest (it rejects them most)",
             "highest": "the discriminator scores highest (it accepts them most)"}
    out += [{"file": f"samples/{r['file']}", "own": False,
             "caption": f"Real audited images {words[r['which']]}",
             "alt": f"A grid of the real audited images {words[r['which']]}"}
            for r in samples["real"] if r["png"]]
    return out


def _charts(finding: FindingView, view: Mapping[str, Any]) -> list[Any]:
    """The report's charts of a finding's concept: representation for a share finding,
    score distributions and the impact-ratio forest plot of its source for a treatment one."""
    inter = {x["name"]: x for x in view["intersections"]}
    rep = {r["concept"]: r for r in view["representation"]}
    trt = {t["concept"]: t for t in view["treatment"]}
    name = finding.concept
    if finding.kind in ("representation", "coverage"):
        entry = inter[name]["representation"] if name in inter else rep.get(name)
        return [entry["chart"]] if entry else []
    if finding.kind != "treatment":
        return []
    charts = list(trt[name]["distributions"]) if name in trt else []
    forest = view["forest_charts"]
    if isinstance(forest, list):
        charts += [c for c in forest if f"on {finding.source} images" in c.title]
    return charts


def _tables(finding: FindingView, view: Mapping[str, Any]) -> dict[str, Any]:
    """The concept's representation rows and impact rows (the numbers behind the charts)."""
    inter = {x["name"]: x for x in view["intersections"]}
    name = finding.concept
    if name in inter:
        rep, trt = inter[name]["representation"], inter[name]["treatment"]
    else:
        rep = next((r for r in view["representation"] if r["concept"] == name), None)
        trt = next((t for t in view["treatment"] if t["concept"] == name), None)
    return {"representation": rep if finding.kind in ("representation", "coverage") else None,
            "treatment": trt if finding.kind == "treatment" else None}


def finding_detail(finding: FindingView, view: Mapping[str, Any]) -> dict[str, Any]:
    """What a finding's page shows besides the finding: charts, tables and sample grids.

    ``view`` is the report's context (:func:`audit.report.view.results_to_view`).
    """
    return {"charts": _charts(finding, view), "images": _sample_images(finding, view),
            **_tables(finding, view)}
