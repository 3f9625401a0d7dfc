"""The report's regulatory section: what the audit's numbers are evidence of.

Three short tables built from results.json, the review log and the manifest (pure, no
files): an LL144-style summary of scoring rates and impact ratios per protected category
and intersection; an index of the EU AI Act requirements each report section answers,
with the mitigation plan the review log holds; and a map to NIST AI RMF 1.0 MEASURE
subcategories. Every row says its numbers; nothing is boilerplate. The tool gives
evidence, not legal advice: :data:`DISCLAIMER` says so wherever these tables appear.

>>> [s.ref for s in SOURCES][:2]
['NYC Local Law 144 of 2021; 6 RCNY 5-301, 5-302', '29 CFR 1607.4(D)']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audit.formatting import significant
from audit.report.summary_view import FindingView, Meta, ReviewView, VerdictRow
from audit.report.viewtypes import Num, as_dict, as_float, as_int, as_list, num_from
from audit.vocabulary import FourFifths, Severity

__all__ = ["DISCLAIMER", "SOURCES", "Source", "ImpactRow", "CategoryTable", "DataSource",
           "EvidenceRow", "MitigationRow", "RegulatoryView", "regulatory_view"]

DISCLAIMER = ("gan-audit provides evidence for an assessment, not legal advice: whether a "
              "system complies with a law is for the people accountable for it and their "
              "counsel to decide.")


@dataclass(frozen=True)
class Source:
    """A rule these tables refer to: its reference (article numbers) and title."""

    ref: str
    title: str
    used_for: str


#: The rules behind the regulatory tables (shown in the method section).
SOURCES: tuple[Source, ...] = (
    Source("NYC Local Law 144 of 2021; 6 RCNY 5-301, 5-302",
           "Automated employment decision tools: bias audit; data requirements",
           "the summary table: scoring rates, impact ratios, unknowns, categories under 2% "
           "excluded"),
    Source("29 CFR 1607.4(D)",
           "EEOC Uniform Guidelines on Employee Selection Procedures: adverse impact and the "
           "\"four-fifths rule\"", "the four-fifths threshold on impact ratios"),
    Source("Regulation (EU) 2024/1689 (AI Act), Art. 10(2)(f)-(g)",
           "Data and data governance: examination of possible biases; measures to detect, "
           "prevent and mitigate them", "the evidence index and the mitigation plan"),
    Source("Regulation (EU) 2024/1689 (AI Act), Art. 12", "Record-keeping",
           "the review log and its chain head"),
    Source("Regulation (EU) 2024/1689 (AI Act), Annex IV 2(g)",
           "Technical documentation: validation and testing procedures, metrics, test logs "
           "and test reports dated and signed", "the evidence index"),
    Source("NIST AI 100-1, AI RMF 1.0, MEASURE 1.1, 1.3, 2.1, 2.11",
           "Approaches and metrics selected; independent assessors; test sets, metrics and "
           "tools documented; fairness and bias evaluated", "the NIST AI RMF map"),
)

#: Why each kind of data is used (LL144 asks whether data are historical or test data).
_DATA_WHY = {
    "real": "test data: labelled real images, the reference that generated images' shares "
            "and scores are compared with",
    "generated": "test data: the audited generator's own outputs (a generative model has no "
                 "historical decisions about people)",
    "paired": "test data: labelled held-out images that train and check the concept decoders",
}


@dataclass(frozen=True)
class ImpactRow:
    """One category (group) of one image source in the LL144 table.

    ``share`` is the group's share of the source's images (the basis of the 2% exclusion);
    ``scoring_rate`` the share of the group scoring above the real images' median score,
    with its interval and count; ``impact_ratio`` that rate over the highest group's.
    """

    group: str
    source: str
    n: int | None
    share: float | None
    scoring_rate: Num
    impact_ratio: Num
    highest_group: str | None
    four_fifths: FourFifths | None
    excluded: bool
    exclusion_reason: str | None


@dataclass(frozen=True)
class CategoryTable:
    """A protected concept or an intersection: its rows and its unknowns per source."""

    concept: str
    concepts: list[str]
    intersection: bool
    rows: list[ImpactRow]
    unknown: dict[str, int | None]


@dataclass(frozen=True)
class DataSource:
    """A data source of the audit, as results.json's meta names it, and why it is used."""

    role: str
    source: str
    why: str


@dataclass(frozen=True)
class EvidenceRow:
    """One requirement and the report section that answers it, with that section's numbers."""

    ref: str
    title: str
    evidence: str
    anchor: str


@dataclass(frozen=True)
class MitigationRow:
    """One finding in the mitigation plan: its latest review, mitigation and owner."""

    finding_id: str
    severity: Severity
    estimate: Num
    status: str
    mitigation: str | None
    owner: str | None
    reviewer: str | None
    time: str | None


@dataclass(frozen=True)
class RegulatoryView:
    """Everything the regulatory section shows."""

    date: str | None
    data_sources: list[DataSource]
    threshold: float
    exclude_below: float | None
    tables: list[CategoryTable]
    eu: list[EvidenceRow]
    nist: list[EvidenceRow]
    mitigation: list[MitigationRow]
    review_head: str | None
    review_intact: bool | None
    sources: tuple[Source, ...] = SOURCES
    disclaimer: str = DISCLAIMER


def _four_fifths(value: Any) -> FourFifths | None:
    try:
        return FourFifths(value)
    except ValueError:
        return None


def _impact_rows(treatment: Mapping[str, Any]) -> list[ImpactRow]:
    """The rows of one treatment entry joined with its scoring-rate impact ratios."""
    ratios = {(str(r.get("group")), str(r.get("source"))): r
              for r in map(as_dict, as_list(treatment.get("impact")))
              if r.get("metric") == "scoring_rate"}
    rows = []
    for r in map(as_dict, as_list(treatment.get("rows"))):
        key = (str(r.get("group")), str(r.get("source")))
        impact = ratios.get(key, {})
        rows.append(ImpactRow(
            group=key[0], source=key[1], n=as_int(r.get("n")),
            share=as_float(r.get("share_of_source")),
            scoring_rate=num_from(r.get("scoring_rate")),
            impact_ratio=num_from(impact.get("ratio")),
            highest_group=impact.get("highest_group"),
            four_fifths=_four_fifths(impact.get("four_fifths")),
            excluded=bool(r.get("excluded")), exclusion_reason=r.get("exclusion_reason")))
    return rows


def _unknown(representation: Mapping[str, Any]) -> dict[str, int | None]:
    return {source: as_int(representation.get(f"n_unknown_{source}"))
            for source in ("real", "generated")}


def category_tables(results: Mapping[str, Any]) -> list[CategoryTable]:
    """The LL144 table of each protected concept, then of each intersection."""
    reps = {str(r.get("concept")): r for r in map(as_dict, as_list(results.get("representation")))}
    tables = [CategoryTable(concept=str(t.get("concept")),
                            concepts=[str(c) for c in as_list(t.get("concepts"))],
                            intersection=False, rows=_impact_rows(t),
                            unknown=_unknown(as_dict(reps.get(str(t.get("concept"))))))
              for t in map(as_dict, as_list(results.get("treatment"))) if t.get("protected")]
    for x in map(as_dict, as_list(results.get("intersections"))):
        tables.append(CategoryTable(
            concept=str(x.get("name")), concepts=[str(c) for c in as_list(x.get("concepts"))],
            intersection=True, rows=_impact_rows(as_dict(x.get("treatment"))),
            unknown=_unknown(as_dict(x.get("representation")))))
    return tables


def _data_sources(meta: Meta) -> list[DataSource]:
    recorded = meta.recorded.get("data_sources") or meta.recorded.get("data")
    if isinstance(recorded, Mapping):
        return [DataSource(str(role), str(src), _DATA_WHY.get(str(role), "test data"))
                for role, src in recorded.items()]
    if meta.data_names:
        return [DataSource("data", meta.data_names, "test data")]
    return []


def _planned(history: Sequence[Mapping[str, Any]], latest: Mapping[str, Any]
             ) -> Mapping[str, Any]:
    """The latest entry that records a mitigation, up to ``latest`` and of the same
    results.json (a later review that only changes the status keeps the plan)."""
    if not latest or latest.get("mitigation"):
        return latest
    upto = history[:next((i + 1 for i, e in enumerate(history) if e is latest), len(history))]
    same = [e for e in upto if e.get("mitigation")
            and e.get("results_sha256") == latest.get("results_sha256")]
    return same[-1] if same else latest


def mitigation_plan(findings: Sequence[FindingView], review: ReviewView) -> list[MitigationRow]:
    """Each finding (most severe first): its latest review's status, and the mitigation and
    owner last recorded for it (on the same results)."""
    rows = []
    for f in findings:
        entry = as_dict(review.latest.get(f.id))
        plan = _planned(review.history.get(f.id, []), review.latest.get(f.id) or {})
        rows.append(MitigationRow(
            finding_id=f.id, severity=f.severity, estimate=f.estimate,
            status=str(entry.get("status") or "unreviewed"),
            mitigation=plan.get("mitigation") or None, owner=plan.get("owner") or None,
            reviewer=entry.get("reviewer"), time=entry.get("time")))
    return rows


def _n(n: int | None) -> str:
    return "n/a" if n is None else str(n)


def _count(n: int, word: str, plural: str | None = None) -> str:
    """``1 finding``, ``2 findings`` (``plural`` where adding an s is wrong)."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _eu_rows(results: Mapping[str, Any], meta: Meta, findings: Sequence[FindingView],
             plan: Sequence[MitigationRow], review: ReviewView) -> list[EvidenceRow]:
    """The EU AI Act evidence index, each row with the numbers of the section it points to."""
    tests = as_list(results.get("tests"))
    n_valid = len(as_dict(results.get("validity")))
    tables = category_tables(results)
    n_high = sum(1 for f in findings if f.severity is Severity.HIGH)
    n_mitigated = sum(1 for r in plan if r.mitigation)
    n_reviewed = sum(1 for r in plan if r.status != "unreviewed")
    check = review.verification
    head = getattr(check, "last_hash", "") or "none"
    chain = ("intact" if check is None or check.intact else "broken")
    return [
        EvidenceRow("Annex IV 2(g)", "Validation and testing procedures, metrics, test logs, "
                    "dated and signed test reports",
                    f"{_count(len(tests), 'statistical test')} with raw and adjusted p-values; "
                    f"decoder validity for {_count(n_valid, 'concept')}; audit dated "
                    f"{meta.date or 'n/a'}, every artifact hashed in the manifest "
                    f"(signatures, where the run folder has them, are checked by "
                    f"gan-audit verify)", "method"),
        EvidenceRow("Art. 10(2)(f)", "Examination of possible biases",
                    f"{_count(sum(not t.intersection for t in tables), 'protected concept')} "
                    f"and {_count(sum(t.intersection for t in tables), 'intersection')} "
                    f"examined on {_n(meta.counts.real)} "
                    f"real and "
                    f"{_n(meta.counts.generated)} "
                    f"generated images: {_count(len(findings), 'finding')}, {n_high} of high "
                    f"severity", "treatment"),
        EvidenceRow("Art. 10(2)(g)", "Measures to detect, prevent and mitigate biases",
                    f"mitigation plan: {n_mitigated} of {_count(len(plan), 'finding')} with a "
                    f"recorded mitigation, {n_reviewed} reviewed", "mitigation-plan"),
        EvidenceRow("Art. 12", "Record-keeping (automatic logging)",
                    f"review log: {_count(review.n_entries, 'entry', 'entries')}, hash chain "
                    f"{chain}, head sha256:{head}", "findings"),
    ]


def _nist_rows(results: Mapping[str, Any], meta: Meta, verdicts: Sequence[VerdictRow],
               review: ReviewView, threshold: float) -> list[EvidenceRow]:
    """The NIST AI RMF MEASURE map, each row with its numbers."""
    settings = as_dict(results.get("settings"))
    reviewers = sorted({str(e.get("reviewer")) for entries in review.history.values()
                        for e in entries if e.get("reviewer")})
    by_verdict: dict[str, int] = {}
    for v in verdicts:
        by_verdict[v.verdict.label] = by_verdict.get(v.verdict.label, 0) + 1
    alpha = as_float(settings.get("alpha"))
    return [
        EvidenceRow("MEASURE 1.1", "Approaches and metrics selected",
                    f"scoring and acceptance rates, impact ratios (threshold "
                    f"{significant(threshold)}), representation gaps; tests at alpha "
                    f"{significant(alpha)}"
                    f" with Holm correction", "method"),
        EvidenceRow("MEASURE 1.3", "Independent assessors",
                    f"{_count(len(reviewers), 'reviewer')} recorded in the review log"
                    + (f" ({', '.join(reviewers)})" if reviewers else "")
                    + "; signers' names and roles, where the run folder is signed, are listed "
                      "by gan-audit verify", "findings"),
        EvidenceRow("MEASURE 2.1", "Test sets, metrics and tools documented",
                    f"{_n(meta.counts.real)} real and "
                    f"{_n(meta.counts.generated)} "
                    f"generated images; gan-audit {meta.tool_version or 'n/a'}; seeds, hashes "
                    f"and versions in the manifest", "manifest"),
        EvidenceRow("MEASURE 2.11", "Fairness and bias evaluated and results documented",
                    f"{_count(len(verdicts), 'verdict')}: "
                    + (", ".join(f"{n} {word}" for word, n in by_verdict.items()) or "none"),
                    "summary"),
    ]


def regulatory_view(*, results: Mapping[str, Any], meta: Meta,
                    findings: Sequence[FindingView], verdicts: Sequence[VerdictRow],
                    review: ReviewView, threshold: float) -> RegulatoryView:
    """The regulatory section's tables (pure: results.json's parts and the review in).

    Parameters
    ----------
    results
        results.json.
    meta, findings, verdicts, review
        The report head's views (:mod:`audit.report.summary_view`).
    threshold
        The four-fifths threshold on impact ratios (results.json's settings, 0.8).
    """
    plan = mitigation_plan(findings, review)
    check = review.verification
    return RegulatoryView(
        date=meta.date, data_sources=_data_sources(meta), threshold=threshold,
        exclude_below=as_float(as_dict(results.get("settings")).get("exclude_below_share")),
        tables=category_tables(results),
        eu=_eu_rows(results, meta, findings, plan, review),
        nist=_nist_rows(results, meta, verdicts, review, threshold),
        mitigation=plan,
        review_head=(getattr(check, "last_hash", None) or None) if review.n_entries else None,
        review_intact=None if check is None else bool(check.intact))

