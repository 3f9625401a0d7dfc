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

from typing import TYPE_CHECKING, Any

import numpy as np

from audit.formatting import interval, percent
from audit.measure.groups import SEP
from audit.measure.sanity import sanity_caveat
from audit.vocabulary import FourFifths, Severity, Verdict, severity_rank

if TYPE_CHECKING:
    from audit.config import MeasureSettings

__all__ = ["validity_summary", "finding_validity", "results_to_findings", "verdicts"]




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
    if p_holm is not None and p_holm < alpha and big:
        return Severity.HIGH
    if p_bh is not None and p_bh < alpha:
        return Severity.MEDIUM
    return Severity.LOW


_FIELDS = ("id", "kind", "severity", "concept", "groups", "intersection", "source", "metric",
           "value", "ci", "n", "p_value", "p_holm", "p_bh", "threshold", "evidence", "validity",
           "confidence", "summary")


def _finding(**kw: Any) -> dict[str, Any]:
    """A finding with every field, in the schema's order (absent ones None or empty)."""
    unknown = set(kw) - set(_FIELDS)
    if unknown:
        raise TypeError(f"unknown finding field(s) {sorted(unknown)}")
    return {k: kw.get(k, {} if k == "evidence" else None) for k in _FIELDS}


def results_to_findings(representation: list[dict[str, Any]], treatment: list[dict[str, Any]],
                        tests: dict[str, dict[str, Any]], summary: dict[str, Any], *,
                        settings: MeasureSettings, protected: list[str],
                        discriminator: dict[str, Any] | None = None,
                        transfer: dict[str, str] | None = None) -> list[dict[str, Any]]:
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
    alpha = settings.alpha
    out: list[dict[str, Any]] = []
    dsc = discriminator or {}
    caveat = sanity_caveat(dsc)
    for problem in dsc.get("problems") or []:
        sep = dsc.get("separation") or {}
        out.append(_finding(
            id=f"F-DSC-{problem['kind']}", kind="discriminator", severity=Severity.MEDIUM,
            concept="discriminator", groups=[], metric="roc_auc", value=sep.get("auc"),
            ci=sep.get("ci"), n=(sep.get("n_real") or 0) + (sep.get("n_generated") or 0),
            evidence={"n_real": sep.get("n_real"), "n_generated": sep.get("n_generated"),
                      "real_acceptance": (dsc.get("acceptance") or {}).get("real"),
                      "generated_acceptance": (dsc.get("acceptance") or {}).get("generated"),
                      "interval_method": sep.get("method")},
            validity={"decodable": None, "balanced_accuracy": None, "group_accuracy": {}},
            confidence="normal",
            summary=(f"Discriminator sanity: {problem['message']}. "
                     + ("No treatment verdict is given." if dsc.get("constant") else
                        "Every treatment finding carries this caveat and is at most low "
                        "severity."))))

    def common(section: dict[str, Any], group: str) -> dict[str, Any]:
        concepts = section["concepts"]
        parts = group.split(SEP) if len(concepts) > 1 else [group]
        val, conf = finding_validity(summary, concepts, parts, settings.weak_decoder_below)
        return {"concept": section["concept"], "groups": [group],
                "intersection": concepts if len(concepts) > 1 else None,
                "validity": val, "confidence": conf}

    for sec in representation:
        if not sec["protected"]:
            continue
        for row in sec["rows"]:
            t = tests.get(row["test_id"] or "", {})
            p = (t.get("p_value"), t.get("p_holm"), t.get("p_bh"))
            corr, ref = row["generated_corrected"]["value"], row["reference_share"]
            evidence = {"real_k": row["real"].get("k"), "real_n": row["real"]["n"],
                        "generated_decoded_k": row["generated_raw"].get("k"),
                        "generated_n": row["generated_raw"]["n"],
                        "generated_raw_share": row["generated_raw"]["value"],
                        "generated_corrected_share": corr,
                        "generated_corrected_ci": row["generated_corrected"]["ci"],
                        "reference_share": ref, "reference": sec["reference"],
                        "correction": sec["correction"]["method"], "test": row["test_id"]}
            where = f"{sec['concept']} = {row['group']}"
            ref_words = "among real images" if sec["reference"] == "real" else "under uniform"
            rep_finding = None
            if row["under_represented"]:
                gap = row["gap"]["value"]
                big = gap is not None and gap <= -settings.severity_high_gap
                f = _finding(
                    id=f"F-REP-{sec['concept']}-{row['group']}", kind="representation",
                    severity=_severity(p[1], p[2], big, alpha), metric="share_gap",
                    value=gap, ci=row["gap"]["ci"], n=row["gap"]["n"], p_value=p[0],
                    p_holm=p[1], p_bh=p[2], threshold=-settings.under_margin,
                    evidence=evidence, **common(sec, row["group"]),
                    summary=(f"Generated images under-represent {where}: {percent(corr)} of them "
                             f"after correcting for decoder error "
                             f"({interval(row['generated_corrected']['ci'])}, "
                             f"n = {row['gap']['n']}), against {percent(ref)} {ref_words}."))
                out.append(f)
                rep_finding = f
            if row["below_coverage_floor"]:
                big = row["real"].get("k", 0) >= settings.min_group_n
                if rep_finding is not None:
                    _add_coverage(rep_finding, row, settings,
                                  Severity.HIGH if big else Severity.MEDIUM)
                    continue
                out.append(_finding(
                    id=f"F-COV-{sec['concept']}-{row['group']}", kind="coverage",
                    severity=Severity.HIGH if big else Severity.MEDIUM, metric="generated_share",
                    value=corr, ci=row["generated_corrected"]["ci"],
                    n=row["generated_corrected"]["n"], p_value=p[0], p_holm=p[1], p_bh=p[2],
                    threshold=settings.coverage_floor, evidence=evidence,
                    **common(sec, row["group"]),
                    summary=(f"The generator barely produces {where}: {percent(corr)} of "
                             f"generated images ({interval(row['generated_corrected']['ci'])}, "
                             f"n = {row['generated_corrected']['n']}), under the coverage floor "
                             f"of {percent(settings.coverage_floor)}, while {percent(ref)} "
                             f"{ref_words}: a sign of mode collapse.")))

    for sec in treatment:
        if not sec["protected"]:
            continue
        worst: dict[tuple[str, str], dict[str, Any]] = {}
        for row in sec["impact"]:
            ratio = row["ratio"]["value"]
            if ratio is None or row["four_fifths"] == FourFifths.NO_VERDICT:
                continue
            t = tests.get(row["test_id"] or "", {})
            sig = t.get("p_holm") is not None and t["p_holm"] < alpha
            if row["four_fifths"] != FourFifths.ADVERSE_IMPACT and not sig:
                continue
            key = (row["group"], row["source"])
            prev = worst.get(key)
            rank = (row["four_fifths"] == FourFifths.ADVERSE_IMPACT, -ratio)
            if prev is None or rank > prev["rank"]:
                worst[key] = {"rank": rank, "row": row, "test": t}
        for (group, source), w in sorted(worst.items()):
            row, t = w["row"], w["test"]
            ratio = row["ratio"]["value"]
            adverse = row["four_fifths"] == FourFifths.ADVERSE_IMPACT
            sev = (_severity(t.get("p_holm"), t.get("p_bh"), ratio < settings.severity_high_ratio,
                             alpha) if adverse else Severity.INFO)
            if caveat and sev in (Severity.HIGH, Severity.MEDIUM):
                sev = Severity.LOW
            metric = row["metric"]
            words = ("acceptance as real" if metric == "acceptance_rate" else
                     "scoring rate (share above the real median score)")
            rule = (f"under the four-fifths threshold of {settings.impact_threshold:.2f}"
                    if adverse else "within the four-fifths rule but statistically significant")
            pv = t.get("p_holm")
            out.append(_finding(
                id=f"F-TRT-{sec['concept']}-{group}-{source}", kind="treatment", severity=sev,
                metric=f"impact_ratio_{metric}", source=source, value=ratio,
                ci=row["ratio"]["ci"], n=row["ratio"]["n"], p_value=t.get("p_value"),
                p_holm=t.get("p_holm"), p_bh=t.get("p_bh"),
                threshold=settings.impact_threshold,
                evidence={"metric": metric, "rate": row["rate"]["value"],
                          "rate_ci": row["rate"]["ci"], "k": row["rate"].get("k"),
                          "n": row["rate"]["n"], "highest_group": row["highest_group"],
                          "highest_k": (t.get("counts") or {}).get("k2"),
                          "highest_n": (t.get("counts") or {}).get("n2"),
                          "test": row["test_id"], "test_method": t.get("method"),
                          "discriminator_caveat": caveat},
                **common(sec, group),
                summary=(f"The discriminator's {words} of {source} images with "
                         f"{sec['concept']} = {group} is {percent(row['rate']['value'])} "
                         f"(n = {row['rate']['n']}), {ratio:.3f} times that of "
                         f"{row['highest_group']} ({interval(row['ratio']['ci'], kind='num')}), "
                         f"{rule}; Holm-corrected p = "
                         f"{'n/a' if pv is None else f'{pv:.2g}'}."
                         + (f" {caveat}" if caveat else ""))))

    _add_transfer_caveats(out, representation + treatment, transfer or {})
    for name in protected:
        v = summary.get(name) or {}
        if v.get("decodable") is False:
            out.append(_finding(
                id=f"F-VAL-{name}", kind="decoder_validity", severity=Severity.MEDIUM,
                concept=name, groups=[], metric="selectivity", value=v.get("selectivity"),
                n=v.get("n_test"), evidence={"balanced_accuracy": v.get("balanced_accuracy"),
                                             "layer": v.get("layer")},
                validity={"decodable": False, "balanced_accuracy": v.get("balanced_accuracy"),
                          "group_accuracy": {}}, confidence="low",
                summary=(f"The discriminator's activations do not carry {name} beyond what a "
                         f"control task reaches (selectivity {v.get('selectivity')}): nothing "
                         f"about {name} can be concluded from this audit.")))
        for other, accs in sorted((v.get("group_accuracy") or {}).items()):
            for group, acc in sorted(accs.items()):
                if acc is None or acc >= settings.weak_decoder_below:
                    continue
                fid = f"F-VAL-{name}-{group}" if other == name else \
                    f"F-VAL-{name}-{other}-{group}"
                out.append(_finding(
                    id=fid, kind="decoder_validity", severity=Severity.LOW, concept=name,
                    groups=[group], intersection=None if other == name else [name, other],
                    metric="group_accuracy", value=float(acc), n=v.get("n_test"),
                    threshold=settings.weak_decoder_below,
                    evidence={"concept": name, "within": f"{other}={group}",
                              "balanced_accuracy": v.get("balanced_accuracy")},
                    validity={"decodable": v.get("decodable"),
                              "balanced_accuracy": v.get("balanced_accuracy"),
                              "group_accuracy": {f"{name} | {other}={group}": float(acc)}},
                    confidence="low",
                    summary=(f"The {name} decoder is weak on held-out images with {other} = "
                             f"{group} (accuracy {percent(acc)}, under "
                             f"{percent(settings.weak_decoder_below)}): findings that rest on it "
                             f"are marked low confidence.")))
    out.sort(key=lambda f: f["id"])
    return out


def _add_transfer_caveats(findings: list[dict[str, Any]], sections: list[dict[str, Any]],
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


def _add_coverage(finding: dict[str, Any], row: dict[str, Any], settings: MeasureSettings,
                  severity: str) -> None:
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


def _significant(f: dict[str, Any], alpha: float) -> bool:
    """Whether a finding's effect stands: Holm-corrected p under ``alpha``, or its whole
    interval under the finding's threshold."""
    if f["p_holm"] is not None and f["p_holm"] < alpha:
        return True
    ci, bound = f["ci"], f["threshold"]
    return not (ci is None or None in ci or bound is None) and ci[1] < bound


def verdicts(representation: list[dict[str, Any]], treatment: list[dict[str, Any]],
             findings: list[dict[str, Any]], summary: dict[str, Any], *, alpha: float = 0.05,
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
    dsc_ids = [f["id"] for f in findings if f["kind"] == "discriminator"]
    if dsc.get("constant"):
        dsc_words = ("treatment not judged: the discriminator gives (nearly) one score to "
                     "every image")
    elif dsc.get("problems"):
        dsc_words = ("caveat on treatment: " + "; ".join(p["message"] for p in dsc["problems"]))
    else:
        dsc_words = None
    out = []
    trt = {s["concept"]: s for s in treatment}
    for sec in representation:
        if not sec["protected"]:
            continue
        name, concepts = sec["concept"], sec["concepts"]
        own = [f for f in findings if f["concept"] == name and f["kind"] != "decoder_validity"]
        adverse = [f for f in own if f["kind"] == "treatment" and f["severity"] != Severity.INFO]
        under = [f for f in own if f["kind"] in ("representation", "coverage")]
        not_dec = [c for c in concepts if (summary.get(c) or {}).get("decodable") is False]
        small = sorted({r["group"] for r in trt[name]["rows"]
                        if r["small"] and not r["excluded"] and r["group"] != "unknown"}
                       | {r["group"] for r in sec["rows"] if r["small"]})
        weak = sorted({f"{r['group']} ({r['source']})" for r in trt[name].get("impact", [])
                       if r["four_fifths"] == FourFifths.INSUFFICIENT_EVIDENCE}
                      | {r["group"] for r in sec["rows"] if r.get("insufficient_evidence")})
        strong_adverse = [f for f in adverse if _significant(f, alpha)]
        strong_under = [f for f in under if _significant(f, alpha)]
        reasons = []
        if adverse:
            reasons.append(f"{len(adverse)} group/source pair(s) fall under the four-fifths "
                           f"threshold, {len(strong_adverse)} of them significant (Holm-corrected "
                           f"p < {alpha:g} or the whole interval under the threshold)")
        if under:
            reasons.append(f"{len(under)} group(s) are under-represented or missing among "
                           f"generated images, {len(strong_under)} of them significant "
                           f"(Holm-corrected p < {alpha:g} or the whole interval under the "
                           f"threshold)")
        ids = [f["id"] for f in adverse + under]
        if not_dec:
            verdict = Verdict.NOT_DECODABLE
            reasons.insert(0, f"the decoder of {', '.join(not_dec)} is not selective enough: "
                              f"the discriminator's activations do not show it")
            ids = [f"F-VAL-{c}" for c in not_dec]
        elif strong_adverse:
            verdict = Verdict.ADVERSE_IMPACT
        elif strong_under:
            verdict = Verdict.UNDER_REPRESENTED
        elif adverse:
            verdict = Verdict.POSSIBLE_ADVERSE_IMPACT
        elif under:
            verdict = Verdict.POSSIBLY_UNDER_REPRESENTED
        elif small:
            verdict = Verdict.NO_VERDICT_SMALL_GROUPS
            reasons.append(f"group(s) {', '.join(small)} have fewer images than min_group_n "
                           f"(or fewer generated images expected at the reference share)")
        elif weak:
            verdict = Verdict.INSUFFICIENT_EVIDENCE
            reasons.append(f"no gap was found, but at these numbers of images the tests of "
                           f"{', '.join(weak)} could not have detected one of the size the "
                           f"policy names (80% power; see each test's power)")
        else:
            verdict = Verdict.PASS
            reasons.append("no rule fired for any group large enough to judge")
        if dsc_words:
            reasons.insert(0, dsc_words)
            ids = dsc_ids + ids
        reason = "; ".join(reasons)
        out.append({"concept": name, "concepts": concepts, "verdict": verdict,
                    "reason": reason, "findings": ids})
    return out
