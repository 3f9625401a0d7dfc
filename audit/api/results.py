"""An audit's results as a Python object: :class:`AuditResults` and :class:`Finding`.

:class:`AuditResults` holds one results.json document (checked against the JSON Schema
when it is built, read or written), and, when at hand, the per-image table
(predictions.parquet) and the decoders' validity (decoders/validity.json). It gives
each section as a pandas DataFrame, the findings as :class:`Finding` objects, a
Fairlearn ``MetricFrame`` over the predictions, a comparison with another audit, the
report as HTML or PDF, and a summary table in a notebook. Nothing needs a run folder;
:meth:`AuditResults.from_run` reads one.

Every estimate of results.json (a value with its interval and the group size behind
it) becomes four columns in the DataFrames, named after the estimate: ``X`` (float64,
NaN where undefined), ``X_ci_low`` and ``X_ci_high`` (float64, NaN where no interval
could be computed) and ``X_n`` (Int64: images behind it); the estimate of a rate (a
share of images) has a fifth, ``X_k`` (Int64: its successes).

>>> import json
>>> from audit.api import AuditResults
>>> from audit.config import MeasureSettings
>>> from audit.validation.predictions import synthetic_results
>>> results = AuditResults(synthetic_results(300, 300, settings=MeasureSettings(n_boot=50)))
>>> results.summary.counts
{'real': 300, 'generated': 300, 'total': 600, 'invalid_scores': 3}
>>> results.verdicts[["concept", "verdict"]].to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
[{'concept': 'tone', 'verdict': <Verdict.UNDER_REPRESENTED: 'under_represented'>},
 {'concept': 'stroke', 'verdict': <Verdict.ADVERSE_IMPACT: 'adverse_impact'>},
 {'concept': 'tone+stroke', 'verdict': <Verdict.ADVERSE_IMPACT: 'adverse_impact'>}]
>>> results.findings[0].severity
<Severity.HIGH: 'high'>
>>> len(results.findings_frame()) == len(results.findings)
True
>>> rep = results.representation
>>> rep.loc[rep["concept"] == "tone", ["group", "real", "real_n", "real_k"]].to_string(index=False)
'group  real  real_n  real_k\\nlight  0.51     300     153\\n dark  0.49     300     147'
>>> AuditResults(json.loads(json.dumps(results.to_dict()))) == results
True
"""

from __future__ import annotations

import copy
import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from audit.errors import DataError, RunFolderError
from audit.vocabulary import Severity, Verdict

if TYPE_CHECKING:
    import pandas as pd
    from fairlearn.metrics import MetricFrame

__all__ = ["AuditResults", "Finding", "Summary"]

Source = Literal["real", "generated", "both"]
Decision = Literal["accepted", "above_median"]

#: Named metrics of :meth:`AuditResults.metric_frame`: Fairlearn's function and the
#: decision it is evaluated on (``y_pred``); ``y_true`` is "the image is real".
_METRICS: dict[str, tuple[str, Decision | None]] = {
    "acceptance_rate": ("selection_rate", "accepted"),
    "selection_rate": ("selection_rate", "accepted"),
    "scoring_rate": ("selection_rate", "above_median"),
    "true_positive_rate": ("true_positive_rate", "accepted"),
    "false_positive_rate": ("false_positive_rate", "accepted"),
    "count": ("count", None),
}

#: Colours of the vocabulary's tones in the notebook summary (as in the report).
_TONE_COLOURS = {"bad": "#b2182b", "warn": "#b35806", "info": "#2166ac", "good": "#1a7837"}


# ---------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One finding of an audit: an entry of results.json's ``findings``.

    The fields mirror the JSON Schema's ``finding`` (audit/measure/results.schema.json);
    :meth:`from_dict` and :meth:`to_dict` convert without loss.

    Attributes
    ----------
    id
        Stable identifier, ``F-<REP|TRT|COV|VAL|DSC>-...`` (the review log refers to it).
    kind
        ``representation``, ``treatment``, ``coverage``, ``decoder_validity`` or
        ``discriminator``.
    severity
        How serious it is (:class:`audit.vocabulary.Severity`).
    concept, groups, intersection
        The concept (``"a+b"`` for an intersection), the groups concerned, and the
        crossed concepts of an intersection (None otherwise).
    source
        ``real``, ``generated`` or None (representation compares both).
    metric, value, ci, n, threshold
        What was measured, its estimate, its interval ``(low, high)`` (None where none
        could be computed), the images behind it and the policy's threshold.
    p_value, p_holm, p_bh
        The test's p-value, Holm- and Benjamini-Hochberg-corrected (None without a test).
    evidence, validity
        The counts behind the finding, and the decoder's held-out validity for it
        (plain mappings; treat them as read-only).
    confidence
        ``normal``, or ``low`` where the decoder behind the finding is weak.
    summary
        One sentence for a reader.
    extra
        Keys of the entry the schema does not name (kept so that the round trip is exact).

    Examples
    --------
    >>> entry = {"id": "F-TRT-tone-dark-real", "kind": "treatment", "severity": "high",
    ...          "concept": "tone", "groups": ["dark"], "intersection": None,
    ...          "source": "real", "metric": "acceptance_rate_ratio", "value": 0.5,
    ...          "ci": [0.4, 0.6], "n": 700, "p_value": 1e-9, "p_holm": 2e-9, "p_bh": 2e-9,
    ...          "threshold": 0.8, "evidence": {}, "validity": {"decodable": True,
    ...          "balanced_accuracy": 0.97, "group_accuracy": {}}, "confidence": "normal",
    ...          "summary": "Real dark images are accepted half as often."}
    >>> finding = Finding.from_dict(entry)
    >>> finding.severity, finding.severity.label, finding.ci
    (<Severity.HIGH: 'high'>, 'high', (0.4, 0.6))
    >>> finding.to_dict() == entry
    True
    """

    id: str
    kind: str
    severity: Severity
    concept: str
    groups: tuple[str, ...]
    intersection: tuple[str, ...] | None
    source: str | None
    metric: str
    value: float | None
    ci: tuple[float | None, float | None] | None
    n: int | None
    p_value: float | None
    p_holm: float | None
    p_bh: float | None
    threshold: float | None
    evidence: Mapping[str, Any] = field(hash=False, repr=False)
    validity: Mapping[str, Any] = field(hash=False, repr=False)
    confidence: str = "normal"
    summary: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> Finding:
        """The finding of one results.json ``findings`` entry.

        Raises
        ------
        DataError
            A key the schema requires is missing, or the severity is not a known one.
        """
        names = [f.name for f in fields(cls) if f.name != "extra"]
        missing = [name for name in names if name not in entry]
        if missing:
            raise DataError(f"finding {entry.get('id', '?')!r} lacks {', '.join(missing)}: "
                            f"not a results.json finding. Re-run `gan-audit measure CONFIG`.")
        try:
            severity = Severity(entry["severity"])
        except ValueError as exc:
            raise DataError(f"finding {entry['id']!r}: severity {entry['severity']!r} is not "
                            f"one of {[s.value for s in Severity]}.") from exc
        ci, inter = entry["ci"], entry["intersection"]
        return cls(**{name: copy.deepcopy(entry[name]) for name in names}
                   | {"severity": severity, "groups": tuple(entry["groups"]),
                      "intersection": None if inter is None else tuple(inter),
                      "ci": None if ci is None else (ci[0], ci[1]),
                      "extra": {k: copy.deepcopy(v) for k, v in entry.items()
                                if k not in names}})

    def to_dict(self) -> dict[str, Any]:
        """The results.json entry of this finding (plain JSON values, schema key order)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name != "extra":
                out[f.name] = copy.deepcopy(getattr(self, f.name))
        out["severity"] = self.severity.value
        out["groups"] = list(self.groups)
        out["intersection"] = None if self.intersection is None else list(self.intersection)
        out["ci"] = None if self.ci is None else list(self.ci)
        return out | copy.deepcopy(dict(self.extra))

    @property
    def low_confidence(self) -> bool:
        """Whether the decoder behind the finding is weak (``confidence == "low"``)."""
        return self.confidence == "low"


# ---------------------------------------------------------------- summary


@dataclass(frozen=True)
class Summary:
    """The headline of an audit (what :attr:`AuditResults.summary` returns).

    Attributes
    ----------
    audit_id, date, concept_set, tool_version
        From results.json's ``meta`` and ``concept_set`` (None where absent).
    counts
        Audited images: ``{"real", "generated", "total", "invalid_scores"}``.
    findings_by_severity
        Number of findings per severity, most severe first (every severity present).
    verdicts
        Concept (or intersection ``"a+b"``) -> its verdict, in results.json's order.
    """

    audit_id: str | None
    date: str | None
    concept_set: str | None
    tool_version: str | None
    counts: Mapping[str, int]
    findings_by_severity: Mapping[Severity, int]
    verdicts: Mapping[str, Verdict]


# ---------------------------------------------------------------- results


def _canonical(document: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` as the plain JSON values results.json holds (numpy values and enum
    members converted, tuples as lists, NaN as null): what it reads back as."""
    from audit.io import to_jsonable

    return json.loads(json.dumps(to_jsonable(dict(document)), allow_nan=False))


def _checked(document: Any, *, where: str | Path) -> dict[str, Any]:
    """``document`` canonicalised, of this schema version and valid against the schema;
    else :class:`RunFolderError` naming ``where``."""
    from audit.measure import check_schema_version, validate_results

    check_schema_version(document, where=where)
    document = _canonical(document)
    try:
        validate_results(document)
    except DataError as exc:
        raise RunFolderError(f"{where}: {exc}\nRe-run `gan-audit measure CONFIG` to rewrite "
                             f"it.") from exc
    return document


def _frame(rows: list[dict[str, Any]], columns: Sequence[str], *,
           objects: Sequence[str] = ()) -> pd.DataFrame:
    """A DataFrame of ``rows`` with exactly ``columns`` (in order; absent keys as None);
    the ``objects`` columns keep their Python objects (enum members are not turned into
    plain strings)."""
    import pandas as pd

    frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=list(columns))
    for column in objects:
        frame[column] = pd.Series([r.get(column) for r in rows], index=frame.index,
                                  dtype=object)
    return frame


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Interval columns as float64 and counts as Int64 (see the module docstring)."""
    for column in frame.columns:
        if column.endswith(("_ci_low", "_ci_high")) or column in (
                "reference_share", "share_of_source"):
            frame[column] = frame[column].astype("float64")
        elif column.endswith(("_n", "_k")) or column in ("n", "n_invalid_score"):
            frame[column] = frame[column].astype("Int64")
        elif f"{column}_ci_low" in frame.columns:
            frame[column] = frame[column].astype("float64")
    return frame


class AuditResults:
    """The results of one audit, typed: sections as DataFrames, findings as objects.

    Parameters
    ----------
    results
        The results.json document (a mapping, as :func:`audit.measure.predictions_to_results`
        returns it or as read from the file). It is copied, converted to plain JSON values
        and validated against the JSON Schema.
    predictions
        The per-image table (predictions.parquet, as :meth:`audit.Decoders.decode` makes
        it; columns in docs/ARCHITECTURE.md: ``image_id``, ``split``, ``source`` (str),
        ``score`` (float32), ``true__<concept>`` (str or None),
        ``prob__<concept>__<group>`` (float), ``pred__<concept>`` (str)), needed by
        :meth:`metric_frame` only.
    validity
        The decoders' validity (decoders/validity.json), if at hand: :attr:`decoders`
        then shows every field of it, and reports and comparisons use it.
    run_dir
        The run folder the results come from, if any: reports then show its side files
        (manifest, layer sweep, review log, samples).

    Raises
    ------
    RunFolderError
        ``results`` is of another schema version (the message says which gan-audit wrote
        it) or does not match the schema (the message lists where).

    Examples
    --------
    >>> from audit import AuditResults, Severity
    >>> from audit.config import MeasureSettings
    >>> from audit.validation.predictions import synthetic_results
    >>> document = synthetic_results(300, 300, settings=MeasureSettings(n_boot=50))
    >>> results = AuditResults(document)                 # a results.json document
    >>> results.summary.findings_by_severity[Severity.HIGH] > 0
    True
    >>> trt = results.treatment                          # one row per concept, group, source
    >>> [c for c in trt.columns if c.startswith("acceptance")]  # doctest: +NORMALIZE_WHITESPACE
    ['acceptance_rate', 'acceptance_rate_ci_low', 'acceptance_rate_ci_high',
     'acceptance_rate_n', 'acceptance_rate_k']
    >>> trt.loc[(trt["concept"] == "tone") & (trt["source"] == "real"), "group"].tolist()
    ['light', 'dark']
    """

    __hash__ = None  # type: ignore[assignment]  # mutable contents: compare, do not hash

    def __init__(self, results: Mapping[str, Any], *, predictions: pd.DataFrame | None = None,
                 validity: Mapping[str, Any] | None = None,
                 run_dir: str | Path | None = None) -> None:
        self._run_dir = None if run_dir is None else Path(run_dir)
        where = "results" if self._run_dir is None else self._run_dir / "results.json"
        self._doc = _checked(results, where=where)
        self._predictions = predictions
        self._validity = None if validity is None else copy.deepcopy(dict(validity))

    # ------------------------------------------------------------ reading and writing

    @classmethod
    def from_run(cls, run_dir: str | Path) -> AuditResults:
        """The results of a run folder: results.json (required), predictions.parquet and
        decoders/validity.json (when present), each read without following a link.

        Raises
        ------
        RunFolderError
            No such folder; results.json missing, not JSON, of another schema version or
            not valid; predictions.parquet unreadable.
        """
        from audit.report.render import load_results
        from audit.report.runfiles import read_json

        run_dir = Path(run_dir)
        results = load_results(run_dir)  # the folder, the file, JSON, schema_version
        return cls(results, predictions=_read_predictions(run_dir),
                   validity=read_json(run_dir, "decoders/validity.json", required=False),
                   run_dir=run_dir)

    def to_dict(self) -> dict[str, Any]:
        """A copy of the results.json document (plain JSON values)."""
        return copy.deepcopy(self._doc)

    def to_json(self, path: str | Path) -> Path:
        """Write the results.json document to ``path`` (validated, atomically); returns it."""
        from audit.io import atomic_write_json

        path = Path(path)
        _checked(self._doc, where=path)
        atomic_write_json(path, self._doc)
        return path

    def _report_html(self) -> str:
        """The report's HTML: with the run folder's side files when it is known."""
        from dataclasses import replace

        from audit.report.render import load_run, render_template, results_to_html
        from audit.report.view import results_to_view

        if self._run_dir is None:
            return results_to_html(self._doc, validity=self._validity)
        inputs = replace(load_run(self._run_dir), results=self._doc)
        if self._validity is not None:
            inputs = replace(inputs, validity=self._validity)
        return render_template("report/report.html.j2", results_to_view(inputs))

    def to_html(self, path: str | Path) -> Path:
        """Write the audit report (one self-contained HTML file) to ``path``; returns it."""
        from audit.io import atomic_write_text

        path = Path(path)
        atomic_write_text(path, self._report_html())
        return path

    def to_pdf(self, path: str | Path) -> Path:
        """Write the audit report as PDF to ``path`` (needs WeasyPrint); returns it.

        Raises
        ------
        DependencyError
            WeasyPrint cannot be loaded (the message says what to install).
        """
        from audit.report.pdf import html_to_pdf, load_weasyprint

        load_weasyprint()  # without it, fail before a second of drawing the report's charts
        return html_to_pdf(self._report_html(), Path(path))

    # ------------------------------------------------------------ plain parts

    @property
    def run_dir(self) -> Path | None:
        """The run folder the results were read from (None when built in memory)."""
        return self._run_dir

    @property
    def predictions(self) -> pd.DataFrame | None:
        """The per-image table (predictions.parquet), or None when not given."""
        return self._predictions

    @property
    def validity(self) -> dict[str, Any] | None:
        """The decoders/validity.json document, or None when not given."""
        return copy.deepcopy(self._validity)

    @property
    def summary(self) -> Summary:
        """The headline: audit id, date, counts, findings per severity, verdicts."""
        meta, doc = self._doc["meta"], self._doc
        per_severity = {s: 0 for s in Severity}
        for f in doc["findings"]:
            per_severity[Severity(f["severity"])] += 1
        return Summary(audit_id=meta.get("audit_id"), date=meta.get("date"),
                       concept_set=doc["concept_set"].get("name"),
                       tool_version=meta.get("tool_version"), counts=dict(doc["counts"]),
                       findings_by_severity=per_severity,
                       verdicts={v["concept"]: Verdict(v["verdict"]) for v in doc["verdicts"]})

    @property
    def findings(self) -> list[Finding]:
        """The findings, in results.json's order (most severe first)."""
        return [Finding.from_dict(f) for f in self._doc["findings"]]

    def findings_frame(self) -> pd.DataFrame:
        """The findings as a DataFrame, one row per finding, in results.json's order.

        Columns: ``id``, ``kind``, ``severity`` (:class:`audit.vocabulary.Severity`,
        object), ``concept``, ``groups`` (tuple of str), ``intersection`` (tuple or
        None), ``source``, ``metric``, ``value``, ``ci_low``, ``ci_high`` (float64),
        ``n`` (Int64), ``p_value``, ``p_holm``, ``p_bh``, ``threshold`` (float64),
        ``confidence`` and ``summary`` (str).
        """
        columns = ["id", "kind", "severity", "concept", "groups", "intersection", "source",
                   "metric", "value", "ci_low", "ci_high", "n", "p_value", "p_holm", "p_bh",
                   "threshold", "confidence", "summary"]
        rows = [{**{c: getattr(f, c) for c in columns if hasattr(f, c)},
                 "ci_low": (f.ci or (None, None))[0], "ci_high": (f.ci or (None, None))[1]}
                for f in self.findings]
        frame = _frame(rows, columns, objects=["severity"])
        for column in ("value", "ci_low", "ci_high", "p_value", "p_holm", "p_bh", "threshold"):
            frame[column] = frame[column].astype("float64")
        frame["n"] = frame["n"].astype("Int64")
        return frame

    @property
    def verdicts(self) -> pd.DataFrame:
        """One verdict per protected concept and intersection, in results.json's order.

        Columns: ``concept`` (str; ``"a+b"`` for an intersection), ``concepts`` (tuple of
        str), ``verdict`` (:class:`audit.vocabulary.Verdict`, object), ``label`` (its
        prose), ``tone`` (``bad``/``warn``/``info``/``good``), ``reason`` (str) and
        ``findings`` (tuple of finding ids behind it).
        """
        rows = [{"concept": v["concept"], "concepts": tuple(v["concepts"]),
                 "verdict": Verdict(v["verdict"]), "label": Verdict(v["verdict"]).label,
                 "tone": Verdict(v["verdict"]).tone, "reason": v["reason"],
                 "findings": tuple(v["findings"])} for v in self._doc["verdicts"]]
        return _frame(rows, ["concept", "concepts", "verdict", "label", "tone", "reason",
                             "findings"], objects=["verdict"])

    # ------------------------------------------------------------ sections

    def _tables(self) -> dict[str, pd.DataFrame]:
        from audit.measure import results_to_tables

        return results_to_tables(self._doc)

    def _intersection_names(self) -> set[str]:
        return {i["representation"]["concept"] for i in self._doc["intersections"]} | {
            i["treatment"]["concept"] for i in self._doc["intersections"]} | {
            i["name"] for i in self._doc["intersections"]}

    def _section(self, table: str, *, intersections: bool) -> pd.DataFrame:
        frame = self._tables()[table]
        if frame.empty:
            return frame
        inside = frame["concept"].isin(self._intersection_names())
        return _typed(frame[inside == intersections].reset_index(drop=True))

    @property
    def representation(self) -> pd.DataFrame:
        """Who appears: one row per concept and group (intersections: :attr:`intersections`).

        Columns: ``concept``, ``group`` (str); the estimates ``real`` (share among real
        images), ``generated_raw`` (decoded share among generated images),
        ``generated_corrected`` (corrected for decoder error) and ``gap`` (corrected
        generated share minus the reference share), each with ``_ci_low``, ``_ci_high``,
        ``_n`` columns, and ``_k`` for the rates ``real`` and ``generated_raw`` (see the
        module docstring for their dtypes); ``reference_share`` (float64);
        ``under_represented``, ``below_coverage_floor`` (bool); ``test_id`` (str or
        None).
        """
        return self._section("representation", intersections=False)

    @property
    def treatment(self) -> pd.DataFrame:
        """How the discriminator scores each group: one row per concept, group and source.

        Columns: ``concept``, ``group``, ``source`` (``real``/``generated``), ``n``,
        ``n_invalid_score`` (Int64), ``share_of_source`` (float64); the estimates
        ``mean_score``, ``scoring_rate`` (share above the median real score) and
        ``acceptance_rate`` (share scored above ``accept_threshold``), each with
        ``_ci_low``, ``_ci_high``, ``_n``, and ``_k`` for the two rates; ``small``,
        ``excluded`` (bool) and ``exclusion_reason`` (str or None).
        """
        return self._section("treatment", intersections=False)

    @property
    def impact(self) -> pd.DataFrame:
        """Impact ratios and the four-fifths rule: one row per concept (and intersection),
        metric, source and group.

        Columns: ``concept``, ``metric`` (``acceptance_rate``/``scoring_rate``),
        ``source``, ``group`` (str); the estimates ``rate`` (with ``rate_ci_low``,
        ``rate_ci_high``, ``rate_n``, ``rate_k``) and ``ratio`` (rate over the highest
        group's; with ``ratio_ci_low``, ``ratio_ci_high``, ``ratio_n``);
        ``highest_group`` (str); ``four_fifths`` (a
        :class:`audit.vocabulary.FourFifths` value, str); ``reason``, ``test_id`` (str).
        Empty (no columns) when the audit has no treatment.
        """
        frame = self._tables()["impact"]
        return frame if frame.empty else _typed(frame.reset_index(drop=True))

    @property
    def intersections(self) -> pd.DataFrame:
        """The intersections of protected concepts (``concept`` = ``"a+b"``): their
        representation rows (``kind == "representation"``, the columns of
        :attr:`representation`, ``source`` None) followed by their treatment rows
        (``kind == "treatment"``, the columns of :attr:`treatment`); a column absent from
        one kind is NaN/None in its rows."""
        import pandas as pd

        rep = self._section("representation", intersections=True)
        trt = self._section("treatment", intersections=True)
        parts = [frame.assign(kind=kind) for kind, frame in
                 (("representation", rep), ("treatment", trt)) if not frame.empty]
        if not parts:
            return pd.DataFrame(columns=["kind", "concept", "group", "source"])
        frame = pd.concat(parts, ignore_index=True)
        return frame[["kind", *[c for c in frame.columns if c != "kind"]]]

    @property
    def decoders(self) -> pd.DataFrame:
        """The decoders' held-out validity: one row per concept, at the layer it is read
        from.

        Columns: ``concept``, ``layer`` (str or None), ``decoder`` (``mlp``/``linear`` or
        None), ``decodable`` (bool or None), ``balanced_accuracy``, ``accuracy``,
        ``auroc``, ``selectivity``, ``ece`` (float64, NaN where not measured) and
        ``n_test`` (Int64: held-out test images). From decoders/validity.json when given,
        else from results.json's ``validity`` summary (no ``decoder``, ``auroc``, ``ece``).
        """
        columns = ["concept", "layer", "decoder", "decodable", "balanced_accuracy",
                   "accuracy", "auroc", "selectivity", "ece", "n_test"]
        merged: dict[str, dict[str, Any]] = {
            name: dict(v) for name, v in self._doc["validity"].items()}
        for name, v in ((self._validity or {}).get("concepts") or {}).items():
            merged.setdefault(name, {}).update(v)
        frame = _frame([{"concept": name, **v} for name, v in merged.items()], columns)
        for column in ("balanced_accuracy", "accuracy", "auroc", "selectivity", "ece"):
            frame[column] = frame[column].astype("float64")
        frame["n_test"] = frame["n_test"].astype("Int64")
        return frame

    @property
    def counterfactual(self) -> pd.DataFrame:
        """The counterfactual treatment test (issue 22): one row per edited direction; empty
        (with the columns) when the audit did not run it.

        Columns: ``concept``, ``group`` (the direction), ``effect`` (change of D's score per
        unit of decoded probability, the edit's drift held fixed), ``ci_low``, ``ci_high``,
        ``n`` (latents, Int64), ``p_value``, ``p_holm``, ``significant`` (bool),
        ``unadjusted`` (the slope without the drift held), ``concept_change`` (mean total
        variation of the edited concept between the edit's ends), ``max_leakage_concept``,
        ``max_leakage`` (the other concept the edit changed most, and by how much),
        ``large_leakage`` (bool) and ``r2`` (of the direction's fit).
        """
        columns = ["concept", "group", "effect", "ci_low", "ci_high", "n", "p_value", "p_holm",
                   "significant", "unadjusted", "concept_change", "max_leakage_concept",
                   "max_leakage", "large_leakage", "r2"]
        rows = []
        for r in (self._doc.get("counterfactual") or {}).get("directions") or []:
            effect, leak = r.get("effect") or {}, r.get("max_leakage") or {}
            ci = effect.get("ci") or [None, None]
            rows.append({**r, "effect": effect.get("value"), "ci_low": ci[0], "ci_high": ci[1],
                         "n": effect.get("n"),
                         "unadjusted": (r.get("unadjusted") or {}).get("value"),
                         "max_leakage_concept": leak.get("concept"),
                         "max_leakage": leak.get("value"),
                         "r2": (r.get("direction") or {}).get("r2")})
        frame = _frame(rows, columns)
        for column in ("effect", "ci_low", "ci_high", "p_value", "p_holm", "unadjusted",
                       "concept_change", "max_leakage", "r2"):
            frame[column] = frame[column].astype("float64")
        frame["n"] = frame["n"].astype("Int64")
        for column in ("significant", "large_leakage"):
            frame[column] = frame[column].astype("bool")
        return frame

    # ------------------------------------------------------------ Fairlearn

    def metric_frame(self, metric: str | Callable[..., Any] | Mapping[str, Any] =
                     "acceptance_rate", *, source: Source = "real",
                     concept: str | Sequence[str] | None = None,
                     groups: Literal["audited", "decoded"] = "audited",
                     decision: Decision | None = None) -> MetricFrame:
        """A Fairlearn ``MetricFrame`` of the discriminator's decisions by group.

        Evaluated on the audited rows of the predictions (``split == "audit"``) of
        ``source`` whose score is finite, as the measure stage counts them:
        ``y_true`` is 1 for a real image, ``y_pred`` the discriminator's decision.

        Parameters
        ----------
        metric
            A name: ``acceptance_rate`` (= ``selection_rate``: share scored above the
            audit's ``accept_threshold``), ``scoring_rate`` (share above the median score
            of the real audited images), ``true_positive_rate``, ``false_positive_rate``
            (of acceptance; meaningful with ``source="both"``) or ``count``; or a metric
            function ``f(y_true, y_pred)``; or a mapping of names to either.
        source
            ``real``, ``generated`` or ``both``.
        concept
            Sensitive feature(s): a concept or intersection name (``"tone+stroke"``) or
            several; default every protected concept (one column each).
        groups
            ``audited``: an image's true group where known, else its decoded group (the
            groups the audit counts; generated images have no true group);
            ``decoded``: the decoder's group for every image. With the audit's
            ``unknown_below`` > 0, an image decoded with a lower max probability is in
            group ``unknown``.
        decision
            The ``y_pred`` of function metrics: ``accepted`` (default) or
            ``above_median``; named metrics imply theirs.

        Returns
        -------
        fairlearn.metrics.MetricFrame
            ``by_group`` indexed by the sensitive features' groups.

        Raises
        ------
        DataError
            No predictions at hand, a column missing, an unknown metric or concept, or
            metrics that need different decisions.
        """
        import numpy as np
        import pandas as pd
        from fairlearn.metrics import MetricFrame

        metrics, decision = self._metric_functions(metric, decision)
        audited = self._audited_rows(source)
        scores = audited["score"].to_numpy(dtype=float)
        if decision == "above_median":
            median = self._doc["treatment"][0]["median_real_score"] \
                if self._doc["treatment"] else None
            if median is None:
                raise DataError("scoring_rate needs the median score of the real audited "
                                "images, and this audit has none.")
            y_pred = (scores > median).astype(int)
        else:
            y_pred = (scores > float(self._doc["settings"]["accept_threshold"])).astype(int)
        y_true = (audited["source"].to_numpy() == "real").astype(int)
        names = self._sensitive_names(concept)
        sensitive = pd.DataFrame({name: self._group_column(audited, name, basis=groups)
                                  for name in names}, index=audited.index)
        return MetricFrame(metrics=metrics, y_true=np.asarray(y_true), y_pred=y_pred,
                           sensitive_features=sensitive.reset_index(drop=True))

    @staticmethod
    def _metric_functions(metric: Any, decision: Decision | None
                          ) -> tuple[Any, Decision]:
        """Fairlearn metric functions for ``metric`` and the one decision they share."""
        import fairlearn.metrics as fm

        def one(m: Any) -> tuple[Any, Decision | None]:
            if callable(m):
                return m, None
            if m not in _METRICS:
                raise DataError(f"metric {m!r} is not one of {sorted(_METRICS)}; pass a "
                                f"function f(y_true, y_pred) for any other.")
            name, implied = _METRICS[m]
            return getattr(fm, name), implied

        if isinstance(metric, Mapping):
            resolved = {str(k): one(v) for k, v in metric.items()}
            functions: Any = {k: f for k, (f, _) in resolved.items()}
            implied = {d for _, d in resolved.values() if d is not None}
        else:
            functions, d = one(metric)
            implied = {d} if d is not None else set()
        if decision is not None:
            implied |= {decision}
        if len(implied) > 1:
            raise DataError(f"the metrics need different decisions ({sorted(implied)}): "
                            f"make one metric_frame per decision.")
        return functions, (implied.pop() if implied else "accepted")

    def _audited_rows(self, source: Source) -> pd.DataFrame:
        """The audited rows of ``source`` with a finite score."""
        import numpy as np

        frame = self._predictions
        if frame is None:
            raise DataError("metric_frame needs the per-image predictions: build AuditResults "
                            "with predictions=<the predictions.parquet table>, or read a run "
                            "folder that has predictions.parquet with AuditResults.from_run.")
        missing = [c for c in ("source", "score") if c not in frame.columns]
        if missing:
            raise DataError(f"the predictions lack the column(s) {missing} (docs/ARCHITECTURE.md"
                            f" lists them). Re-run `gan-audit train-decoders CONFIG.yaml`, "
                            f"which rewrites it.")
        if source not in ("real", "generated", "both"):
            raise DataError(f"source {source!r} is not one of 'real', 'generated', 'both'.")
        keep = np.isfinite(frame["score"].to_numpy(dtype=float))
        if "split" in frame.columns:
            keep &= (frame["split"] == "audit").to_numpy()
        if source != "both":
            keep &= (frame["source"] == source).to_numpy()
        return frame.loc[keep]

    def _sensitive_names(self, concept: str | Sequence[str] | None) -> list[str]:
        """Concept and intersection names to group by (default: the protected concepts)."""
        known = {s["concept"]: s for s in self._doc["treatment"]} | {
            i["name"]: i["treatment"] for i in self._doc["intersections"]}
        if concept is None:
            return [s["concept"] for s in self._doc["treatment"] if s["protected"]]
        names = [concept] if isinstance(concept, str) else list(concept)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise DataError(f"concept(s) {unknown} are not in this audit; it has "
                            f"{sorted(known)}.")
        return names

    def _group_column(self, rows: pd.DataFrame, name: str, *, basis: str) -> pd.Series:
        """Each row's group of concept or intersection ``name`` (parts joined by ``+``;
        ``unknown`` where any part is)."""
        import numpy as np
        import pandas as pd

        if basis not in ("audited", "decoded"):
            raise DataError(f"groups {basis!r} is not 'audited' or 'decoded'.")
        inter = {i["name"]: i["concepts"] for i in self._doc["intersections"]}
        groups = {s["concept"]: s["groups"] for s in self._doc["treatment"]}
        below = float(self._doc["settings"].get("unknown_below") or 0.0)
        parts = []
        for part in inter.get(name, [name]):
            pred = f"pred__{part}"
            if pred not in rows.columns:
                raise DataError(f"the predictions lack the column {pred!r}. Decode with the "
                                f"concept set of this audit.")
            column = rows[pred].astype(object)
            if below > 0:
                probs = rows[[f"prob__{part}__{g}" for g in groups[part]]].to_numpy(float)
                column = column.where(~(np.nanmax(probs, axis=1) < below), "unknown")
            true = f"true__{part}"
            if basis == "audited" and true in rows.columns:
                column = rows[true].astype(object).where(rows[true].notna(), column)
            parts.append(column.astype(str))
        joined = parts[0]
        for column in parts[1:]:
            joined = joined + "+" + column
        if len(parts) > 1:
            any_unknown = np.logical_or.reduce([(c == "unknown").to_numpy() for c in parts])
            joined = joined.where(~any_unknown, "unknown")
        return pd.Series(joined.to_numpy(), index=rows.index, name=name)

    # ------------------------------------------------------------ comparing, showing

    def _name(self) -> str:
        if self._run_dir is not None:
            return str(self._run_dir)
        return str(self._doc["meta"].get("audit_id") or "audit")

    def compare(self, other: AuditResults, *, decoder_tolerance: float = 0.02
                ) -> dict[str, Any]:
        """Compare this audit (A, before) with ``other`` (B, after).

        Returns
        -------
        dict
            :func:`audit.report.compare.results_to_comparison`'s document: ``audits``,
            ``warnings`` (different concept sets, decoders or settings), ``metrics``
            (each: key, unit, a, b, change = B - A, intervals_overlap), ``only_in_a``,
            ``only_in_b`` and ``findings`` (new, resolved, changed_severity, unchanged).
        """
        from audit.report.compare import results_to_comparison

        if not isinstance(other, AuditResults):
            raise TypeError(f"compare() takes AuditResults, not {type(other).__name__}")
        return results_to_comparison(self._doc, other._doc, validity_a=self._validity,
                                     validity_b=other._validity,
                                     names=(self._name(), other._name()),
                                     decoder_tolerance=decoder_tolerance)

    def __eq__(self, other: object) -> bool:
        """Equal when the results.json documents are (predictions and paths aside)."""
        if not isinstance(other, AuditResults):
            return NotImplemented
        return self._doc == other._doc

    def __repr__(self) -> str:
        s = self.summary
        verdicts = {k: v.value for k, v in s.verdicts.items()}
        return (f"AuditResults(audit_id={s.audit_id!r}, findings={len(self._doc['findings'])},"
                f" verdicts={verdicts})")

    def _repr_html_(self) -> str:
        """The summary as an HTML table (every text escaped), for notebooks."""
        s = self.summary
        e = html.escape
        per_severity = s.findings_by_severity
        severities = ", ".join(f"{n} {sev.label}" for sev, n in per_severity.items() if n)
        head = (f"<p><strong>Audit {e(str(s.audit_id))}</strong>"
                f"{' (' + e(str(s.date)) + ')' if s.date else ''} · concept set "
                f"{e(str(s.concept_set))} · {s.counts.get('real', 0)} real and "
                f"{s.counts.get('generated', 0)} generated images · "
                f"{sum(per_severity.values())} finding(s)"
                f"{': ' + severities if severities else ''}</p>")
        rows = "".join(
            f"<tr><td>{e(v['concept'])}</td><td><span class=\"verdict tone-"
            f"{Verdict(v['verdict']).tone}\" style=\"color: "
            f"{_TONE_COLOURS[Verdict(v['verdict']).tone]}; font-weight: bold\">"
            f"{e(Verdict(v['verdict']).label)}</span></td><td>{e(v['reason'])}</td></tr>"
            for v in self._doc["verdicts"])
        table = ("<table><thead><tr><th>concept</th><th>verdict</th><th>reason</th></tr>"
                 f"</thead><tbody>{rows}</tbody></table>")
        return f"<div class=\"gan-audit-results\">{head}{table}</div>"


def _read_predictions(run_dir: Path) -> pd.DataFrame | None:
    """``RUN_DIR/predictions.parquet`` (never through a link), or None when absent."""
    import io

    import pandas as pd

    from audit.runfolder import read_artifact

    try:
        data = read_artifact(run_dir, "predictions.parquet")
    except FileNotFoundError:
        return None
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise RunFolderError(f"{run_dir / 'predictions.parquet'}: unreadable Parquet file "
                             f"({exc}). Re-run `gan-audit train-decoders CONFIG.yaml` to "
                             f"rewrite it.") from exc
