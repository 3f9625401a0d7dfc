"""Findings and verdicts: the rules that fired, in words a reviewer can check.

A finding has an id that is stable across re-runs of the same audit
(``F-REP-tone-dark``, ``F-COV-...``, ``F-TRT-stroke-thick-generated``,
``F-VAL-...``): it is built from the rule, the concept and the group only, never
from numbers or order. Severity follows documented thresholds of
:class:`~audit.config.MeasureSettings`:

- representation (under-represented by more than ``under_margin``, for a group with
  ``min_group_n`` real images and as many generated ones expected at the reference
  share; smaller groups get numbers but no finding) and treatment
  (impact ratio under ``impact_threshold``): **high** when significant after Holm
  and the effect passes ``severity_high_gap`` / ``severity_high_ratio``; **medium**
  when significant after Benjamini-Hochberg; **low** otherwise;
- treatment gaps that pass the four-fifths rule but are significant after Holm: **info**;
- coverage (corrected generated share under ``coverage_floor`` while the reference
  is above it): **high** when the real group has ``min_group_n`` images, else medium.
  One fact, one finding: a group that is also under-represented gets no ``F-COV``
  finding; its ``F-REP`` finding carries the coverage numbers (``evidence.coverage``)
  and the graver of the two severities;
- decoder validity: a protected concept that is not decodable is **medium**, a group
  the decoder reads with accuracy under ``weak_decoder_below`` is **low**.

Every finding carries the decoder's held-out validity for its concept and groups and
is marked ``confidence: low`` when the decoder is weak there.

Verdicts weigh significance: a point estimate past a threshold that is neither
significant after Holm nor wholly past the threshold by its interval gives a
``(not significant)`` verdict, never ``adverse impact`` or ``under-represented``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, cast

import numpy as np

from audit.formatting import interval, percent
from audit.measure.groups import SEP
from audit.measure.sanity import sanity_caveat
from audit.vocabulary import FourFifths, Severity, Verdict, severity_rank

if TYPE_CHECKING:
    from audit.config import MeasureSettings

__all__ = ["FindingRecord", "validity_summary", "finding_validity", "results_to_findings",
           "verdicts", "label_transfer_findings"]


def validity_summary(validity: dict[str, Any], concept_names: list[str]) -> dict[str, Any]:
    """Per concept: decodable, accuracies, n_test and group accuracies from validity.json.

    Per-class accuracy (recall) is computed from the confusion counts.
    """
    out: dict[str, Any] = {}
    for name in concept_names:
        entry = (validity.get("concepts") or {}).get(name) or {}
        conf = entry.get("confusion")
        class_acc: dict[str, float | None] = {}
        if conf is not None and entry.get("groups"):
            c = np.asarray(conf, dtype=float)
            for i, g in enumerate(entry["groups"]):
                class_acc[g] = float(c[i, i] / c[i].sum()) if c[i].sum() > 0 else None
        out[name] = {
            "decodable": entry.get("decodable"),
            "balanced_accuracy": entry.get("balanced_accuracy"),
            "accuracy": entry.get("accuracy"),
            "selectivity": entry.get("selectivity"),
            "n_test": entry.get("n_test"),
            "layer": entry.get("layer"),
            "class_accuracy": class_acc,
            "group_accuracy": entry.get("group_accuracy") or {},
        }
    return out


def finding_validity(summary: dict[str, Any], concepts: list[str], groups: list[str],
                     weak_below: float) -> tuple[dict[str, Any], str]:
    """The decoder validity behind a finding about ``groups`` of ``concepts`` (one group
    per concept, as in an intersection cell), and its confidence (``normal`` / ``low``).

    ``group_accuracy`` keys read ``"tone | stroke=thick"``: the accuracy of the tone
    decoder on held-out images of the stroke group thick.
    """
    decodable: list[bool | None] = []
    bal: list[float] = []
    acc: dict[str, float | None] = {}
    for c in concepts:
        v = summary.get(c) or {}
        decodable.append(v.get("decodable"))
        if v.get("balanced_accuracy") is not None:
            bal.append(float(v["balanced_accuracy"]))
        for d, g in zip(concepts, groups, strict=True):
            val = (v.get("group_accuracy") or {}).get(d, {}).get(g)
            if val is None and d == c:
                val = (v.get("class_accuracy") or {}).get(g)
            acc[f"{c} | {d}={g}"] = None if val is None else float(val)
    if any(d is False for d in decodable):
        dec: bool | None = False
    elif all(d is True for d in decodable):
        dec = True
    else:
        dec = None
    weak = dec is False or any(a is not None and a < weak_below for a in acc.values())
    return ({"decodable": dec, "balanced_accuracy": min(bal) if bal else None,
             "group_accuracy": acc}, "low" if weak else "normal")


def _severity(p_holm: float | None, p_bh: float | None, big: bool, alpha: float) -> Severity:
    """High when significant after Holm and ``big``, medium when significant after
    Benjamini-Hochberg, else low."""
    if p_holm is not None and p_holm < alpha and big:
        return Severity.HIGH
    if p_bh is not None and p_bh < alpha:
        return Severity.MEDIUM
    return Severity.LOW


class FindingRecord(TypedDict):
    """One finding as results.json stores it: the schema's fields, in its order."""

    id: str
    kind: str
    severity: Severity
    concept: str
    groups: list[str]
    intersection: list[str] | None
    source: str | None
    metric: str
    value: float | None
    ci: list[float | None] | None
    n: int | None
    p_value: float | None
    p_holm: float | None
    p_bh: float | None
    threshold: float | None
    evidence: dict[str, Any]
    validity: dict[str, Any]
    confidence: str
    summary: str


_FIELDS = tuple(FindingRecord.__annotations__)


def _finding(**kw: Any) -> FindingRecord:
    """A finding with every field, in the schema's order (absent ones None or empty)."""
    unknown = set(kw) - set(_FIELDS)
    if unknown:
        raise TypeError(f"unknown finding field(s) {sorted(unknown)}")
    return cast(FindingRecord, {k: kw.get(k, {} if k == "evidence" else None) for k in _FIELDS})


def _p_values(test: dict[str, Any]) -> dict[str, float | None]:
    """A test record's raw, Holm- and Benjamini-Hochberg-corrected p-values as finding
    fields (None where the test is missing)."""
    return {"p_value": test.get("p_value"), "p_holm": test.get("p_holm"),
            "p_bh": test.get("p_bh")}


def _subject(section: dict[str, Any], group: str, summary: dict[str, Any],
             settings: MeasureSettings) -> dict[str, Any]:
    """Whom a finding on ``group`` of a section is about (concept, groups, intersection)
    and the validity and confidence of the decoders it rests on, as finding fields."""
    concepts = section["concepts"]
    parts = group.split(SEP) if len(concepts) > 1 else [group]
    val, conf = finding_validity(summary, concepts, parts, settings.weak_decoder_below)
    return {"concept": section["concept"], "groups": [group],
            "intersection": concepts if len(concepts) > 1 else None,
            "validity": val, "confidence": conf}


def results_to_findings(representation: list[dict[str, Any]], treatment: list[dict[str, Any]],
                        tests: dict[str, dict[str, Any]], summary: dict[str, Any], *,
                        settings: MeasureSettings, protected: list[str],
                        discriminator: dict[str, Any] | None = None,
                        transfer: dict[str, str] | None = None) -> list[FindingRecord]:
    """Every finding of the audit, sorted by id.

    Parameters
    ----------
    representation, treatment
        Sections of every grouping (concepts and intersections).
    tests
        Test records by id, with corrected p-values.
    summary
        :func:`validity_summary` of the concepts.
    protected
        Names of the protected concepts (decoder validity findings).
    discriminator
        The sanity section (:func:`audit.measure.sanity.discriminator_sanity`). Each problem
        it names becomes an ``F-DSC-...`` finding; then every treatment finding carries
        the caveat and its severity is capped at low, and a D with one score for every
        image gets no treatment finding at all.
    transfer
        Concept -> caveat where generated images lie outside the activations its decoder
        was trained on (:func:`audit.measure.transfer.transfer_caveats`): every finding
        that rests on the decoded groups of generated images (representation, coverage,
        treatment of generated images) of that concept, or of an intersection crossing
        it, carries the caveat (``evidence.transfer_caveat`` and its summary); severity and
        confidence (which speaks of the decoder's held-out accuracy) are left as they are.
    """
    dsc = discriminator or {}
    out = [*_discriminator_findings(dsc),
           *_representation_findings(representation, tests, summary, settings),
           *_treatment_findings(treatment, tests, summary, settings,
                                caveat=sanity_caveat(dsc))]
    _add_transfer_caveats(out, representation + treatment, transfer or {})
    out += _decoder_validity_findings(protected, summary, settings)
    out.sort(key=lambda f: f["id"])
    return out


def _discriminator_findings(dsc: dict[str, Any]) -> list[FindingRecord]:
    """One ``F-DSC-<kind>`` finding (medium) per problem the discriminator sanity section
    names, with the separation's ROC AUC as its value."""
    sep = dsc.get("separation") or {}
    acceptance = dsc.get("acceptance") or {}
    consequence = ("No treatment verdict is given." if dsc.get("constant") else
                   "Every treatment finding carries this caveat and is at most low severity.")
    return [_finding(
        id=f"F-DSC-{problem['kind']}", kind="discriminator", severity=Severity.MEDIUM,
        concept="discriminator", groups=[], metric="roc_auc", value=sep.get("auc"),
        ci=sep.get("ci"), n=(sep.get("n_real") or 0) + (sep.get("n_generated") or 0),
        evidence={"n_real": sep.get("n_real"), "n_generated": sep.get("n_generated"),
                  "real_acceptance": acceptance.get("real"),
                  "generated_acceptance": acceptance.get("generated"),
                  "interval_method": sep.get("method")},
        validity={"decodable": None, "balanced_accuracy": None, "group_accuracy": {}},
        confidence="normal",
        summary=f"Discriminator sanity: {problem['message']}. {consequence}")
        for problem in dsc.get("problems") or []]


def _representation_findings(representation: list[dict[str, Any]],
                             tests: dict[str, dict[str, Any]], summary: dict[str, Any],
                             settings: MeasureSettings) -> list[FindingRecord]:
    """``F-REP`` (under-represented) and ``F-COV`` (under the coverage floor) findings of
    the protected sections' groups; a group that is both gets its ``F-REP`` finding only,
    carrying the coverage numbers and the graver severity."""
    out: list[FindingRecord] = []
    for sec in representation:
        if not sec["protected"]:
            continue
        for row in sec["rows"]:
            test = tests.get(row["test_id"] or "", {})
            subject = _subject(sec, row["group"], summary, settings)
            under = (_under_represented_finding(sec, row, test, subject, settings)
                     if row["under_represented"] else None)
            if under is not None:
                out.append(under)
            if row["below_coverage_floor"]:
                severity = (Severity.HIGH if row["real"].get("k", 0) >= settings.min_group_n
                            else Severity.MEDIUM)
                if under is not None:
                    _add_coverage(under, row, settings, severity)
                else:
                    out.append(_coverage_finding(sec, row, test, subject, settings, severity))
    return out


def _share_evidence(section: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The counts and shares behind a representation or coverage finding."""
    return {"real_k": row["real"].get("k"), "real_n": row["real"]["n"],
            "generated_decoded_k": row["generated_raw"].get("k"),
            "generated_n": row["generated_raw"]["n"],
            "generated_raw_share": row["generated_raw"]["value"],
            "generated_corrected_share": row["generated_corrected"]["value"],
            "generated_corrected_ci": row["generated_corrected"]["ci"],
            "reference_share": row["reference_share"], "reference": section["reference"],
            "correction": section["correction"]["method"], "test": row["test_id"]}


def _reference_words(section: dict[str, Any]) -> str:
    """Where the reference share comes from, as the end of a sentence."""
    return "among real images" if section["reference"] == "real" else "under uniform"


def _under_represented_finding(section: dict[str, Any], row: dict[str, Any],
                               test: dict[str, Any], subject: dict[str, Any],
                               settings: MeasureSettings) -> FindingRecord:
    """``F-REP-<concept>-<group>``: the generated share (corrected for decoder error) is
    under the reference share by more than ``under_margin``; high severity needs a gap
    of ``severity_high_gap``."""
    gap = row["gap"]["value"]
    big = gap is not None and gap <= -settings.severity_high_gap
    p = _p_values(test)
    corrected = row["generated_corrected"]
    return _finding(
        id=f"F-REP-{section['concept']}-{row['group']}", kind="representation",
        severity=_severity(p["p_holm"], p["p_bh"], big, settings.alpha), metric="share_gap",
        value=gap, ci=row["gap"]["ci"], n=row["gap"]["n"], **p,
        threshold=-settings.under_margin, evidence=_share_evidence(section, row), **subject,
        summary=(f"Generated images under-represent {section['concept']} = {row['group']}: "
                 f"{percent(corrected['value'])} of them after correcting for decoder error "
                 f"({interval(corrected['ci'])}, n = {row['gap']['n']}), against "
                 f"{percent(row['reference_share'])} {_reference_words(section)}."))


def _coverage_finding(section: dict[str, Any], row: dict[str, Any], test: dict[str, Any],
                      subject: dict[str, Any], settings: MeasureSettings,
                      severity: Severity) -> FindingRecord:
    """``F-COV-<concept>-<group>``: the generator barely produces the group (corrected
    generated share under ``coverage_floor``), a sign of mode collapse."""
    corrected = row["generated_corrected"]
    return _finding(
        id=f"F-COV-{section['concept']}-{row['group']}", kind="coverage", severity=severity,
        metric="generated_share", value=corrected["value"], ci=corrected["ci"],
        n=corrected["n"], **_p_values(test), threshold=settings.coverage_floor,
        evidence=_share_evidence(section, row), **subject,
        summary=(f"The generator barely produces {section['concept']} = {row['group']}: "
                 f"{percent(corrected['value'])} of generated images "
                 f"({interval(corrected['ci'])}, n = {corrected['n']}), under the coverage "
                 f"floor of {percent(settings.coverage_floor)}, while "
                 f"{percent(row['reference_share'])} {_reference_words(section)}: a sign of "
                 f"mode collapse."))


def _add_coverage(finding: FindingRecord, row: dict[str, Any], settings: MeasureSettings,
                  severity: Severity) -> None:
    """One fact, one finding: a group both under-represented and under the coverage floor
    gets one finding (its F-REP id) carrying both numbers and the graver severity."""
    est = row["generated_corrected"]
    finding["evidence"]["coverage"] = {"generated_share": est["value"], "ci": est["ci"],
                                       "floor": settings.coverage_floor, "severity": severity}
    if severity_rank(severity) < severity_rank(finding["severity"]):
        finding["severity"] = severity
    finding["summary"] += (f" That is under the coverage floor of "
                           f"{percent(settings.coverage_floor)}: the generator barely produces "
                           f"them, a sign of mode collapse.")


def _treatment_findings(treatment: list[dict[str, Any]], tests: dict[str, dict[str, Any]],
                        summary: dict[str, Any], settings: MeasureSettings, *,
                        caveat: str | None) -> list[FindingRecord]:
    """``F-TRT`` findings of the protected sections: per group and source, the worst impact
    row under the four-fifths threshold or significant after Holm."""
    out: list[FindingRecord] = []
    for sec in treatment:
        if not sec["protected"]:
            continue
        worst = _worst_impact_rows(sec, tests, settings.alpha)
        for (group, source), (row, test) in sorted(worst.items()):
            out.append(_treatment_finding(sec, group, source, row, test,
                                          _subject(sec, group, summary, settings),
                                          settings, caveat=caveat))
    return out


def _worst_impact_rows(section: dict[str, Any], tests: dict[str, dict[str, Any]],
                       alpha: float) -> dict[tuple[str, str], tuple[dict[str, Any],
                                                                    dict[str, Any]]]:
    """(group, source) -> (impact row, its test) of the section's worst impact row there,
    among those under the four-fifths threshold or significant after Holm at ``alpha``:
    adverse impact before significance alone, then the lowest ratio."""
    worst: dict[tuple[str, str], tuple[tuple[bool, float], dict[str, Any], dict[str, Any]]] = {}
    for row in section["impact"]:
        ratio = row["ratio"]["value"]
        if ratio is None or row["four_fifths"] == FourFifths.NO_VERDICT:
            continue
        test = tests.get(row["test_id"] or "", {})
        adverse = row["four_fifths"] == FourFifths.ADVERSE_IMPACT
        significant = test.get("p_holm") is not None and test["p_holm"] < alpha
        if not adverse and not significant:
            continue
        key, rank = (row["group"], row["source"]), (adverse, -ratio)
        if key not in worst or rank > worst[key][0]:
            worst[key] = (rank, row, test)
    return {key: (row, test) for key, (_, row, test) in worst.items()}


def _treatment_severity(row: dict[str, Any], test: dict[str, Any], settings: MeasureSettings,
                        caveat: str | None) -> Severity:
    """Adverse impact by the p-values (high needs a ratio under ``severity_high_ratio``);
    a significant gap within the four-fifths rule is info; a discriminator that failed a
    sanity check caps the severity at low."""
    if row["four_fifths"] == FourFifths.ADVERSE_IMPACT:
        severity = _severity(test.get("p_holm"), test.get("p_bh"),
                             row["ratio"]["value"] < settings.severity_high_ratio,
                             settings.alpha)
    else:
        severity = Severity.INFO
    if caveat and severity in (Severity.HIGH, Severity.MEDIUM):
        return Severity.LOW
    return severity


def _treatment_finding(section: dict[str, Any], group: str, source: str, row: dict[str, Any],
                       test: dict[str, Any], subject: dict[str, Any],
                       settings: MeasureSettings, *, caveat: str | None) -> FindingRecord:
    """``F-TRT-<concept>-<group>-<source>``: the impact ratio of the group's rate (acceptance
    or scoring) to the highest group's, with the discriminator caveat where there is one."""
    ratio = row["ratio"]["value"]
    metric = row["metric"]
    words = ("acceptance as real" if metric == "acceptance_rate" else
             "scoring rate (share above the real median score)")
    rule = (f"under the four-fifths threshold of {settings.impact_threshold:.2f}"
            if row["four_fifths"] == FourFifths.ADVERSE_IMPACT
            else "within the four-fifths rule but statistically significant")
    pv = test.get("p_holm")
    counts = test.get("counts") or {}
    return _finding(
        id=f"F-TRT-{section['concept']}-{group}-{source}", kind="treatment",
        severity=_treatment_severity(row, test, settings, caveat),
        metric=f"impact_ratio_{metric}", source=source, value=ratio,
        ci=row["ratio"]["ci"], n=row["ratio"]["n"], **_p_values(test),
        threshold=settings.impact_threshold,
        evidence={"metric": metric, "rate": row["rate"]["value"],
                  "rate_ci": row["rate"]["ci"], "k": row["rate"].get("k"),
                  "n": row["rate"]["n"], "highest_group": row["highest_group"],
                  "highest_k": counts.get("k2"), "highest_n": counts.get("n2"),
                  "test": row["test_id"], "test_method": test.get("method"),
                  "discriminator_caveat": caveat},
        **subject,
        summary=(f"The discriminator's {words} of {source} images with "
                 f"{section['concept']} = {group} is {percent(row['rate']['value'])} "
                 f"(n = {row['rate']['n']}), {ratio:.3f} times that of "
                 f"{row['highest_group']} ({interval(row['ratio']['ci'], kind='num')}), "
                 f"{rule}; Holm-corrected p = {'n/a' if pv is None else f'{pv:.2g}'}."
                 + (f" {caveat}" if caveat else "")))


def _decoder_validity_findings(protected: list[str], summary: dict[str, Any],
                               settings: MeasureSettings) -> list[FindingRecord]:
    """``F-VAL`` findings of the protected concepts: one (medium) for a concept that is not
    decodable, one (low) per group its decoder reads with accuracy under
    ``weak_decoder_below``."""
    out: list[FindingRecord] = []
    for name in protected:
        entry = summary.get(name) or {}
        if entry.get("decodable") is False:
            out.append(_not_decodable_finding(name, entry))
        for other, accs in sorted((entry.get("group_accuracy") or {}).items()):
            for group, acc in sorted(accs.items()):
                if acc is None or acc >= settings.weak_decoder_below:
                    continue
                out.append(_weak_decoder_finding(name, other, group, float(acc), entry,
                                                 settings))
    return out


def _not_decodable_finding(name: str, entry: dict[str, Any]) -> FindingRecord:
    """``F-VAL-<concept>``: the concept's decoder is not selective, so nothing about the
    concept can be concluded."""
    return _finding(
        id=f"F-VAL-{name}", kind="decoder_validity", severity=Severity.MEDIUM,
        concept=name, groups=[], metric="selectivity", value=entry.get("selectivity"),
        n=entry.get("n_test"), evidence={"balanced_accuracy": entry.get("balanced_accuracy"),
                                         "layer": entry.get("layer")},
        validity={"decodable": False, "balanced_accuracy": entry.get("balanced_accuracy"),
                  "group_accuracy": {}}, confidence="low",
        summary=(f"The discriminator's activations do not carry {name} beyond what a "
                 f"control task reaches (selectivity {entry.get('selectivity')}): nothing "
                 f"about {name} can be concluded from this audit."))


def _weak_decoder_finding(name: str, other: str, group: str, accuracy: float,
                          entry: dict[str, Any], settings: MeasureSettings) -> FindingRecord:
    """``F-VAL-<concept>-<group>`` (or ``F-VAL-<concept>-<other>-<group>`` within another
    concept's group): the decoder's held-out accuracy there is under
    ``weak_decoder_below``."""
    return _finding(
        id=f"F-VAL-{name}-{group}" if other == name else f"F-VAL-{name}-{other}-{group}",
        kind="decoder_validity", severity=Severity.LOW, concept=name,
        groups=[group], intersection=None if other == name else [name, other],
        metric="group_accuracy", value=accuracy, n=entry.get("n_test"),
        threshold=settings.weak_decoder_below,
        evidence={"concept": name, "within": f"{other}={group}",
                  "balanced_accuracy": entry.get("balanced_accuracy")},
        validity={"decodable": entry.get("decodable"),
                  "balanced_accuracy": entry.get("balanced_accuracy"),
                  "group_accuracy": {f"{name} | {other}={group}": accuracy}},
        confidence="low",
        summary=(f"The {name} decoder is weak on held-out images with {other} = "
                 f"{group} (accuracy {percent(accuracy)}, under "
                 f"{percent(settings.weak_decoder_below)}): findings that rest on it "
                 f"are marked low confidence."))


def _add_transfer_caveats(findings: list[FindingRecord], sections: list[dict[str, Any]],
                          caveats: dict[str, str]) -> None:
    """Findings on generated images' decoded groups of a concept whose generated images are
    out of distribution for its decoder carry the caveat (in place)."""
    crossed = {s["concept"]: s["concepts"] for s in sections}
    for f in findings:
        on_generated = f["kind"] in ("representation", "coverage") or (
            f["kind"] == "treatment" and f["source"] == "generated")
        words = [caveats[c] for c in crossed.get(f["concept"], []) if c in caveats]
        if not on_generated or not words:
            continue
        f["evidence"]["transfer_caveat"] = " ".join(words)
        f["summary"] += " " + " ".join(words)


def _significant(f: Mapping[str, Any], alpha: float) -> bool:
    """Whether a finding's effect stands: Holm-corrected p under ``alpha``, or its whole
    interval under the finding's threshold."""
    if f["p_holm"] is not None and f["p_holm"] < alpha:
        return True
    ci, bound = f["ci"], f["threshold"]
    return not (ci is None or None in ci or bound is None) and ci[1] < bound


def verdicts(representation: list[dict[str, Any]], treatment: list[dict[str, Any]],
             findings: Sequence[Mapping[str, Any]], summary: dict[str, Any], *,
             alpha: float = 0.05,
             discriminator: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One verdict per protected concept and per intersection.

    Precedence: not decodable > adverse impact > under-represented > possible adverse
    impact (not significant) > possibly under-represented (not significant) > no verdict
    (small groups) > insufficient evidence (a test found nothing but could not have found
    the policy's gap at 80% power) > pass. A ratio under the four-fifths threshold makes ``adverse
    impact`` only when it is significant after Holm correction at ``alpha`` or its whole
    interval lies under the threshold; an under-representation (or coverage) finding
    makes ``under-represented`` only when significant after Holm or its whole interval
    lies under its threshold (the gap under ``-under_margin``, the corrected share under
    ``coverage_floor``). Otherwise the ``(not significant)`` verdicts say a point
    estimate crossed the line. ``findings`` lists every adverse-impact and representation
    finding of the concept (or the decoder validity findings when it is not decodable).
    When the ``discriminator`` failed a sanity check, each reason starts with it (and
    the ``F-DSC`` findings are listed); a D with one score for every image has no
    treatment findings, and the reason says treatment was not judged.
    """
    dsc = discriminator or {}
    dsc_words = _discriminator_words(dsc)
    dsc_ids = [f["id"] for f in findings if f["kind"] == "discriminator"]
    trt = {s["concept"]: s for s in treatment}
    out = []
    for sec in representation:
        if not sec["protected"]:
            continue
        evidence = _concept_evidence(sec, trt[sec["concept"]], findings, summary, alpha)
        verdict = _choose_verdict(evidence)
        reasons = _reasons(evidence, verdict, alpha)
        ids = ([f"F-VAL-{c}" for c in evidence.not_decodable]
               if verdict == Verdict.NOT_DECODABLE
               else [f["id"] for f in evidence.adverse + evidence.under])
        if dsc_words:
            reasons.insert(0, dsc_words)
            ids = dsc_ids + ids
        out.append({"concept": sec["concept"], "concepts": sec["concepts"], "verdict": verdict,
                    "reason": "; ".join(reasons), "findings": ids})
    return out


def _discriminator_words(dsc: dict[str, Any]) -> str | None:
    """The clause every reason starts with when the discriminator failed a sanity check
    (None when it passed)."""
    if dsc.get("constant"):
        return ("treatment not judged: the discriminator gives (nearly) one score to "
                "every image")
    if dsc.get("problems"):
        return "caveat on treatment: " + "; ".join(p["message"] for p in dsc["problems"])
    return None


@dataclass(frozen=True)
class _ConceptEvidence:
    """What the verdict on one protected concept (or intersection) weighs."""

    #: Treatment findings under the four-fifths threshold, and those of them significant.
    adverse: list[Mapping[str, Any]]
    strong_adverse: list[Mapping[str, Any]]
    #: Representation and coverage findings, and those of them significant.
    under: list[Mapping[str, Any]]
    strong_under: list[Mapping[str, Any]]
    #: Crossed concepts whose decoder is not selective.
    not_decodable: list[str]
    #: Groups too small to judge.
    small: list[str]
    #: Groups (``group (source)`` for treatment) whose tests could not have found the
    #: policy's gap.
    underpowered: list[str]


def _concept_evidence(representation: dict[str, Any], treatment: dict[str, Any],
                      findings: Sequence[Mapping[str, Any]], summary: dict[str, Any],
                      alpha: float) -> _ConceptEvidence:
    """The findings, small groups and underpowered tests of one concept's representation
    and treatment sections."""
    name = representation["concept"]
    own = [f for f in findings if f["concept"] == name and f["kind"] != "decoder_validity"]
    adverse = [f for f in own if f["kind"] == "treatment" and f["severity"] != Severity.INFO]
    under = [f for f in own if f["kind"] in ("representation", "coverage")]
    rep_rows = representation["rows"]
    small = ({r["group"] for r in treatment["rows"]
              if r["small"] and not r["excluded"] and r["group"] != "unknown"}
             | {r["group"] for r in rep_rows if r["small"]})
    weak = ({f"{r['group']} ({r['source']})" for r in treatment.get("impact", [])
             if r["four_fifths"] == FourFifths.INSUFFICIENT_EVIDENCE}
            | {r["group"] for r in rep_rows if r.get("insufficient_evidence")})
    return _ConceptEvidence(
        adverse=adverse, strong_adverse=[f for f in adverse if _significant(f, alpha)],
        under=under, strong_under=[f for f in under if _significant(f, alpha)],
        not_decodable=[c for c in representation["concepts"]
                       if (summary.get(c) or {}).get("decodable") is False],
        small=sorted(small), underpowered=sorted(weak))


def _choose_verdict(evidence: _ConceptEvidence) -> Verdict:
    """The first verdict that applies, in :class:`~audit.vocabulary.Verdict`'s order of
    precedence."""
    if evidence.not_decodable:
        return Verdict.NOT_DECODABLE
    if evidence.strong_adverse:
        return Verdict.ADVERSE_IMPACT
    if evidence.strong_under:
        return Verdict.UNDER_REPRESENTED
    if evidence.adverse:
        return Verdict.POSSIBLE_ADVERSE_IMPACT
    if evidence.under:
        return Verdict.POSSIBLY_UNDER_REPRESENTED
    if evidence.small:
        return Verdict.NO_VERDICT_SMALL_GROUPS
    if evidence.underpowered:
        return Verdict.INSUFFICIENT_EVIDENCE
    return Verdict.PASS


def _reasons(evidence: _ConceptEvidence, verdict: Verdict, alpha: float) -> list[str]:
    """The clauses of a verdict's reason: why the concept is not decodable, how many
    findings (and how many significant) of each kind, and what a verdict without findings
    rests on."""
    significant = (f"significant (Holm-corrected p < {alpha:g} or the whole interval under "
                   f"the threshold)")
    reasons = []
    if verdict == Verdict.NOT_DECODABLE:
        reasons.append(f"the decoder of {', '.join(evidence.not_decodable)} is not selective "
                       f"enough: the discriminator's activations do not show it")
    if evidence.adverse:
        reasons.append(f"{len(evidence.adverse)} group/source pair(s) fall under the "
                       f"four-fifths threshold, {len(evidence.strong_adverse)} of them "
                       f"{significant}")
    if evidence.under:
        reasons.append(f"{len(evidence.under)} group(s) are under-represented or missing "
                       f"among generated images, {len(evidence.strong_under)} of them "
                       f"{significant}")
    if verdict == Verdict.NO_VERDICT_SMALL_GROUPS:
        reasons.append(f"group(s) {', '.join(evidence.small)} have fewer images than "
                       f"min_group_n (or fewer generated images expected at the reference "
                       f"share)")
    elif verdict == Verdict.INSUFFICIENT_EVIDENCE:
        reasons.append(f"no gap was found, but at these numbers of images the tests of "
                       f"{', '.join(evidence.underpowered)} could not have detected one of "
                       f"the size the policy names (80% power; see each test's power)")
    elif verdict == Verdict.PASS:
        reasons.append("no rule fired for any group large enough to judge")
    return reasons


def label_transfer_findings(section: Sequence[Mapping[str, Any]], *,
                            settings: MeasureSettings) -> list[FindingRecord]:
    """``F-VAL-<concept>-transfer-gap`` findings from the ``label_transfer`` section
    (:func:`audit.measure.labelled.labelled_transfer`): a decoder that reads labelled
    generated images clearly worse than held-out real ones. Raised when the gap reaches
    ``transfer_gap`` and its interval excludes 0, with enough labels of every group; high
    when the interval's lower bound reaches ``transfer_gap`` too, else medium."""
    out: list[FindingRecord] = []
    for rec in section:
        gap = rec.get("gap") or {}
        value, ci = gap.get("value"), gap.get("ci") or [None, None]
        if not rec.get("sufficient") or value is None or ci[0] is None:
            continue
        if value < settings.transfer_gap or ci[0] <= 0:
            continue
        high = ci[0] >= settings.transfer_gap
        bal = rec["balanced_accuracy"]
        name = str(rec["concept"])
        out.append(_finding(
            id=f"F-VAL-{name}-transfer-gap", kind="decoder_validity",
            severity=Severity.HIGH if high else Severity.MEDIUM, concept=name, groups=[],
            source="generated", metric="transfer_gap", value=value, ci=ci,
            n=rec.get("n_images"), threshold=settings.transfer_gap,
            evidence={"balanced_accuracy_real": bal["real"]["value"],
                      "balanced_accuracy_generated": bal["generated"]["value"],
                      "n_labelled": rec.get("n_images"), "rule": rec.get("rule")},
            validity={"decodable": None, "balanced_accuracy": bal["real"]["value"],
                      "group_accuracy": {}},
            confidence="normal",
            summary=(f"The {name} decoder reads labelled generated images worse than held-out "
                     f"real ones: balanced accuracy {percent(bal['generated']['value'])} "
                     f"against {percent(bal['real']['value'])}, a gap of {percent(value)} "
                     f"({1 - settings.alpha:.0%} interval {interval(ci)}; {rec.get('n_images')} "
                     f"labelled images). "
                     f"Generated shares corrected with the real-image confusion may be off; "
                     f"see the corrected shares with the generated-image confusion.")))
    return out
