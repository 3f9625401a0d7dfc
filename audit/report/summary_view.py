"""The report's head: what was audited, does the discriminator work, the verdicts, the
findings and their review.

Typed view models built from results.json, so a template reads attributes that always
exist instead of guessing keys. Within a verdict, a finding or the discriminator section,
the keys that ``audit/measure/results.schema.json`` requires are relied on (the measure
stage validates the file against the schema when it writes it); one that is missing or
malformed anyway (a hand-edited file) is a :class:`~audit.errors.RunFolderError` naming
the item and the key.
A whole top-level part that is missing reads as empty (the report warns about it).

>>> row = VerdictRow.from_json({"concept": "tone", "concepts": ["tone"], "verdict": "pass",
...                             "reason": "no gap", "findings": []})
>>> row.verdict is Verdict.PASS, row.verdict.label
(True, 'pass')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from audit.errors import RunFolderError
from audit.report.viewtypes import (
    Num,
    Unavailable,
    as_dict,
    as_float,
    as_int,
    as_list,
    as_str,
    num_from,
)
from audit.vocabulary import Severity, Verdict

__all__ = ["Counts", "Meta", "VerdictRow", "FindingValidity", "FindingView", "ScoreSummary",
           "DiscriminatorView", "ReviewView", "meta_view", "discriminator_view",
           "verdicts_view", "findings_view", "review_view"]

T = TypeVar("T")

#: How many findings the summary lists (the most severe first).
TOP_FINDINGS = 8


@dataclass(frozen=True)
class Counts:
    """Images in the audit (results.json's ``counts``); None where not recorded."""

    real: int | None
    generated: int | None
    total: int | None
    invalid_scores: int | None

    @classmethod
    def from_json(cls, d: Any) -> Counts:
        d = as_dict(d)
        return cls(real=as_int(d.get("real")), generated=as_int(d.get("generated")),
                   total=as_int(d.get("total")), invalid_scores=as_int(d.get("invalid_scores")))


@dataclass(frozen=True)
class Meta:
    """What was audited, when and with what (the report's cover and scope).

    ``recorded`` is results.json's ``meta`` as written (shown field by field); the other
    fields fall back on manifest.json where results.json does not say.
    """

    title: str
    audit_id: str
    date: str | None
    tool_version: str | None
    model_name: str | None
    data_names: str | None
    concept_set_name: str | None
    concept_set_sha256: str | None
    counts: Counts
    recorded: dict[str, Any]


@dataclass(frozen=True)
class VerdictRow:
    """One protected concept's verdict (an item of results.json's ``verdicts``)."""

    concept: str
    concepts: list[str]
    verdict: Verdict
    reason: str
    findings: list[str]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VerdictRow:
        return cls(concept=str(d["concept"]), concepts=[str(c) for c in d["concepts"]],
                   verdict=Verdict(d["verdict"]), reason=str(d["reason"]),
                   findings=[str(f) for f in d["findings"]])


@dataclass(frozen=True)
class FindingValidity:
    """How well the decoder behind a finding reads its concept."""

    decodable: bool | None
    balanced_accuracy: float | None
    group_accuracy: dict[str, float | None]


@dataclass(frozen=True)
class FindingView:
    """One finding as the report shows it (an item of results.json's ``findings``).

    ``estimate`` is the measured value with its interval and group size; ``evidence_items``
    the evidence mapping as ``(name, value)`` pairs in recorded order.
    """

    id: str
    kind: str
    severity: Severity
    confidence: str
    concept: str
    groups: list[str]
    intersection: list[str] | None
    source: str | None
    metric: str
    estimate: Num
    threshold: float | None
    p_value: float | None
    p_holm: float | None
    p_bh: float | None
    validity: FindingValidity
    evidence_items: list[tuple[str, Any]]
    summary: str

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> FindingView:
        v = f["validity"]
        validity = FindingValidity(
            decodable=v["decodable"], balanced_accuracy=as_float(v["balanced_accuracy"]),
            group_accuracy={str(k): as_float(x) for k, x in v["group_accuracy"].items()})
        intersection = f["intersection"]
        return cls(
            id=str(f["id"]), kind=str(f["kind"]), severity=Severity(f["severity"]),
            confidence=str(f["confidence"]), concept=str(f["concept"]),
            groups=[str(g) for g in f["groups"]],
            intersection=None if intersection is None else [str(c) for c in intersection],
            source=as_str(f["source"]), metric=str(f["metric"]),
            estimate=num_from(f["value"], value=f["value"], ci=f["ci"], n=f["n"]),
            threshold=f["threshold"], p_value=f["p_value"], p_holm=f["p_holm"],
            p_bh=f["p_bh"], validity=validity,
            evidence_items=[(str(k), val) for k, val in f["evidence"].items()],
            summary=str(f["summary"]))


_AUC_METHODS = {
    "delong": "DeLong interval",
    "obuchowski": "DeLong interval for clustered images (Obuchowski)",
    "wilson_min_n": "complete separation: Wilson interval on the smaller of the two counts",
}
_QUANTILES = ("q00", "q05", "q25", "q50", "q75", "q95", "q100")


@dataclass(frozen=True)
class ScoreSummary:
    """The discriminator's scores on one source: count, quantiles (min, 5%, 25%, median,
    75%, 95%, max), mean and standard deviation, in the discriminator's output units."""

    source: str
    n: int | None
    quantiles: list[float | None]
    mean: float | None
    sd: float | None

    @classmethod
    def from_json(cls, source: str, d: Mapping[str, Any]) -> ScoreSummary:
        q = as_dict(d["quantiles"])  # null when the source has no scored image
        return cls(source=source, n=as_int(d["n"]), quantiles=[as_float(q.get(k))
                                                               for k in _QUANTILES],
                   mean=as_float(d["mean"]), sd=as_float(d["sd"]))


@dataclass(frozen=True)
class DiscriminatorView:
    """Does the discriminator work? Its separation of real from generated images (ROC AUC
    with interval), the share of each it accepts, its scores and the checks it failed."""

    auc: Num
    n_real: int | None
    n_generated: int | None
    method: str | None
    method_words: str
    acceptance_real: Num
    acceptance_generated: Num
    accept_threshold: float | None
    scores: list[ScoreSummary]
    constant: bool
    problems: list[str]
    available: bool = True

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DiscriminatorView:
        sep, acc = d["separation"], d["acceptance"]
        n_real, n_gen = as_int(sep["n_real"]), as_int(sep["n_generated"])
        method = as_str(sep.get("method"))  # optional in the schema
        return cls(
            auc=num_from(sep["auc"], value=sep["auc"], ci=sep["ci"],
                         n=(n_real or 0) + (n_gen or 0)),
            n_real=n_real, n_generated=n_gen, method=method,
            method_words=_AUC_METHODS.get(str(method), "interval method not recorded"),
            acceptance_real=num_from(acc["real"]),
            acceptance_generated=num_from(acc["generated"]),
            accept_threshold=as_float(d["accept_threshold"]),
            scores=[ScoreSummary.from_json(source, d["scores"][source])
                    for source in ("real", "generated")],
            constant=bool(d["constant"]), problems=[str(p["message"]) for p in d["problems"]])


@dataclass(frozen=True)
class ReviewView:
    """The review log as the report shows it.

    ``history``: finding id -> its entries, oldest first; ``latest``: finding id -> the
    latest entry that reviews these results; ``orphans``: ids the log names that this
    audit does not have; ``verification``: the log's chain check (None without a log).
    """

    history: dict[str, list[Any]]
    latest: dict[str, Any]
    orphans: list[str]
    verification: Any
    n_entries: int


def _parse(what: str, make: Callable[[Any], T], item: Any) -> T:
    """``make(item)``; an item that lacks a required key or is malformed is a
    RunFolderError naming ``what`` (e.g. ``findings[3]``)."""
    try:
        return make(item)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        cause = f"lacks {exc}" if isinstance(exc, KeyError) else f"is malformed ({exc})"
        raise RunFolderError(
            f"results.json: {what} {cause}; results.schema.json requires it. Re-run the "
            f"measure stage to rewrite results.json.") from exc


def _items(section: Any, what: str, make: Callable[[Any], T]) -> list[T]:
    """``make`` applied to each item of a results.json list (see :func:`_parse`)."""
    return [_parse(f"{what}[{i}]", make, item) for i, item in enumerate(as_list(section))]


def discriminator_view(results: Mapping[str, Any]) -> DiscriminatorView | Unavailable:
    """The discriminator's sanity figures, or why they cannot be shown."""
    section = results.get("discriminator")
    if not as_dict(section):
        return Unavailable("results.json has no 'discriminator' section (it was measured by "
                           "an earlier gan-audit; re-run 'gan-audit measure')")
    return _parse("discriminator", DiscriminatorView.from_json, section)


def verdicts_view(results: Mapping[str, Any]) -> list[VerdictRow]:
    """The verdict of each protected concept, in results.json's order."""
    return _items(results.get("verdicts"), "verdicts", VerdictRow.from_json)


def findings_view(results: Mapping[str, Any]) -> list[FindingView]:
    """Every finding, the most severe first (then by id)."""
    findings = _items(results.get("findings"), "findings", FindingView.from_json)
    return sorted(findings, key=lambda f: (f.severity.rank, f.id))


def _first(d: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if d.get(k):
            return d[k]
    return None


def _names(x: Any) -> str | None:
    """Data sources as one line of text (a string, a list, or a mapping role -> source)."""
    if x is None:
        return None
    if isinstance(x, Mapping):
        return "; ".join(f"{k}: {_names(v)}" for k, v in x.items())
    if isinstance(x, list):
        return "; ".join(str(_names(v)) for v in x)
    return str(x)


def meta_view(results: Mapping[str, Any], manifest: Mapping[str, Any]) -> Meta:
    """The audit's facts from results.json's ``meta``, ``concept_set`` and ``counts``,
    completed from manifest.json (``{}`` when there is none)."""
    meta = as_dict(results.get("meta"))
    concept_set = as_dict(results.get("concept_set"))
    audit_id = str(meta.get("audit_id") or manifest.get("audit_id") or "unnamed audit")
    return Meta(
        title=str(meta.get("title") or f"Bias audit {audit_id}"),
        audit_id=audit_id,
        date=as_str(meta.get("date") or meta.get("created") or manifest.get("created")),
        tool_version=as_str(meta.get("tool_version") or manifest.get("version")),
        model_name=_names(_first(meta, ("model", "model_spec", "discriminator", "model_name"))),
        data_names=_names(_first(meta, ("data", "data_sources", "sources", "real_source"))),
        concept_set_name=as_str(concept_set.get("name")),
        concept_set_sha256=as_str(concept_set.get("sha256")),
        counts=Counts.from_json(results.get("counts")),
        recorded=meta)


def review_view(findings: Sequence[FindingView], review: Any) -> ReviewView:
    """Latest status and history of each finding; the chain check of the log.

    ``review`` is a :class:`audit.report.review.ReviewLog` or None.
    """
    entries = list(getattr(review, "entries", []) or [])
    history: dict[str, list[Any]] = {}
    for e in entries:
        history.setdefault(str(e.get("finding_id")), []).append(e)
    known = {f.id for f in findings}
    current = getattr(review, "reviews_current_results", lambda e: True)
    latest = {}
    for e in entries:  # the status is the latest review of these results, not earlier ones
        if current(e):
            latest[str(e.get("finding_id"))] = e
    return ReviewView(history=history, latest=latest, orphans=sorted(set(history) - known),
                      verification=getattr(review, "verification", None),
                      n_entries=len(entries))
