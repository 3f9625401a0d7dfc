"""audit.api: AuditResults and Finding against results.json, predictions.parquet and
Fairlearn's own MetricFrame."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.api import AuditResults, Finding
from audit.errors import DataError, RunFolderError
from audit.vocabulary import Severity, Verdict

FIXTURE = Path(__file__).parent / "fixtures" / "results_digits.json"


@pytest.fixture(scope="module")
def doc() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def measured(tmp_path_factory, cs):
    """A run folder written by the measure stage (synthetic predictions with planted gaps,
    their validity.json, measure_run), and the results measure_run returned."""
    from audit.config import MeasureSettings
    from audit.measure import measure_run
    from audit.runfolder import claim
    from audit.validation.predictions import DIGITS_PLANTED, synthetic_predictions

    run = tmp_path_factory.mktemp("api") / "run"
    with claim(run):
        pass
    frame, validity = synthetic_predictions(400, 400, cs, seed=3, planted=DIGITS_PLANTED)
    frame.to_parquet(run / "predictions.parquet", index=False)
    (run / "decoders").mkdir()
    (run / "decoders" / "validity.json").write_text(json.dumps(validity))
    returned = measure_run(run, cs, MeasureSettings(n_boot=50), meta={"audit_id": "api-test"})
    return run, returned


@pytest.fixture(scope="module")
def read(measured) -> AuditResults:
    """The measured run folder read back (the tests below do not change it)."""
    return AuditResults.from_run(measured[0])


# ------------------------------------------------------------------ Finding


def test_every_finding_round_trips_exactly(doc) -> None:
    assert doc["findings"]
    for entry in doc["findings"]:
        finding = Finding.from_dict(entry)
        assert finding.to_dict() == entry
        assert list(finding.to_dict()) == list(entry)          # schema key order kept
        assert isinstance(finding.severity, Severity)
        assert finding.severity.value == entry["severity"]
        assert finding.groups == tuple(entry["groups"])


def test_finding_keeps_keys_the_schema_does_not_name(doc) -> None:
    entry = {**doc["findings"][0], "reviewed_by": "someone"}
    finding = Finding.from_dict(entry)
    assert finding.extra == {"reviewed_by": "someone"}
    assert finding.to_dict() == entry


def test_finding_without_a_required_key_is_a_clear_error(doc) -> None:
    entry = {k: v for k, v in doc["findings"][0].items() if k != "severity"}
    with pytest.raises(DataError, match=r"lacks severity"):
        Finding.from_dict(entry)
    with pytest.raises(DataError, match=r"severity 'grave' is not one of"):
        Finding.from_dict({**doc["findings"][0], "severity": "grave"})


def test_findings_frame_has_one_row_per_finding(doc) -> None:
    results = AuditResults(doc)
    frame = results.findings_frame()
    assert list(frame["id"]) == [f["id"] for f in doc["findings"]]
    for row, entry in zip(frame.to_dict("records"), doc["findings"], strict=True):
        assert row["severity"] is Severity(entry["severity"])
        assert row["groups"] == tuple(entry["groups"])
        for key in ("kind", "concept", "metric", "confidence", "summary"):
            assert row[key] == entry[key]
        for key in ("value", "p_value", "p_holm", "p_bh", "threshold"):
            assert row[key] == pytest.approx(entry[key], nan_ok=True) if entry[key] is not None \
                else np.isnan(row[key])
        low, high = entry["ci"] or (None, None)
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
        assert row["n"] == entry["n"]
    assert frame["value"].dtype == "float64" and str(frame["n"].dtype) == "Int64"


# ------------------------------------------------------------------ sections


def test_summary_and_verdicts_follow_the_document(doc) -> None:
    results = AuditResults(doc)
    s = results.summary
    assert s.audit_id == doc["meta"]["audit_id"] and s.counts == doc["counts"]
    assert sum(s.findings_by_severity.values()) == len(doc["findings"])
    assert s.findings_by_severity[Severity.HIGH] == sum(f["severity"] == "high"
                                                        for f in doc["findings"])
    assert list(s.findings_by_severity) == list(Severity)
    verdicts = results.verdicts
    assert list(verdicts["concept"]) == [v["concept"] for v in doc["verdicts"]]
    assert all(isinstance(v, Verdict) for v in verdicts["verdict"])
    assert list(verdicts["label"]) == [Verdict(v["verdict"]).label for v in doc["verdicts"]]
    assert list(verdicts["findings"]) == [tuple(v["findings"]) for v in doc["verdicts"]]


def test_section_frames_hold_every_row_with_interval_columns(doc) -> None:
    results = AuditResults(doc)
    rep, trt, inter = results.representation, results.treatment, results.intersections
    assert len(rep) == sum(len(s["rows"]) for s in doc["representation"])
    assert len(trt) == sum(len(s["rows"]) for s in doc["treatment"])
    assert len(inter) == sum(len(i["representation"]["rows"]) + len(i["treatment"]["rows"])
                             for i in doc["intersections"])
    row = doc["treatment"][1]["rows"][0]
    concept = doc["treatment"][1]["concept"]
    got = trt[(trt["concept"] == concept) & (trt["group"] == row["group"])
              & (trt["source"] == row["source"])].iloc[0]
    est = row["acceptance_rate"]
    assert got["acceptance_rate"] == pytest.approx(est["value"])
    assert (got["acceptance_rate_ci_low"], got["acceptance_rate_ci_high"]) == \
        (pytest.approx(est["ci"][0]), pytest.approx(est["ci"][1]))
    assert (got["acceptance_rate_n"], got["acceptance_rate_k"]) == (est["n"], est["k"])
    for frame in (rep, trt):
        for column in frame.columns:
            if column.endswith(("_ci_low", "_ci_high")):
                assert frame[column].dtype == "float64", column
            if column.endswith(("_n", "_k")):
                assert str(frame[column].dtype) == "Int64", column
    assert set(inter["kind"]) == {"representation", "treatment"}
    assert set(inter["concept"]) == {i["name"] for i in doc["intersections"]}
    assert not set(rep["concept"]) & set(inter["concept"])


def test_decoders_frame_reads_validity_json(measured) -> None:
    run, _ = measured
    validity = json.loads((run / "decoders" / "validity.json").read_text())
    frame = AuditResults.from_run(run).decoders.set_index("concept")
    assert set(frame.index) == set(validity["concepts"])
    for name, v in validity["concepts"].items():
        assert frame.loc[name, "layer"] == v["layer"]
        assert frame.loc[name, "balanced_accuracy"] == pytest.approx(v["balanced_accuracy"])
        assert frame.loc[name, "n_test"] == v["n_test"]


# ------------------------------------------------------------------ round trips


def test_from_run_equals_the_object_built_from_what_measure_returned(measured) -> None:
    run, returned = measured
    read = AuditResults.from_run(run)
    assert read == AuditResults(returned)
    assert read.run_dir == run
    assert len(read.predictions) == len(pd.read_parquet(run / "predictions.parquet"))
    assert read.validity == json.loads((run / "decoders" / "validity.json").read_text())
    assert read != AuditResults({**returned, "notes": ["changed"]})


def test_to_json_writes_a_file_that_reads_back_equal(measured, tmp_path) -> None:
    run, _ = measured
    results = AuditResults.from_run(run)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert results.to_json(copy / "results.json") == copy / "results.json"
    assert AuditResults.from_run(copy) == results
    assert json.loads((copy / "results.json").read_text()) == results.to_dict()


def test_measure_run_validates_what_it_writes(measured, cs, monkeypatch, tmp_path) -> None:
    import audit.measure.results as mr
    from audit.config import MeasureSettings

    run, returned = measured
    broken = json.loads(json.dumps(returned))
    broken["findings"][0].pop("summary")
    monkeypatch.setattr(mr, "predictions_to_results", lambda *a, **k: broken)
    target = tmp_path / "run"
    shutil.copytree(run, target)
    (target / "results.json").unlink()
    with pytest.raises(DataError, match="findings/0"):
        mr.measure_run(target, cs, MeasureSettings(n_boot=10))
    assert not (target / "results.json").exists()


# ------------------------------------------------------------------ schema version


@pytest.mark.parametrize("version, words", [
    (1, "written by an older gan-audit: re-run `gan-audit measure CONFIG`"),
    (3, "written by a newer gan-audit: upgrade gan-audit"),
    ("2", "not a results.json that gan-audit wrote"),
])
def test_another_schema_version_is_a_clear_error(doc, tmp_path, version, words) -> None:
    with pytest.raises(RunFolderError, match=re.escape(words)):
        AuditResults({**doc, "schema_version": version})
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({**doc, "schema_version": version}))
    message = f"schema_version {version!r}, but this gan-audit reads version 2"
    with pytest.raises(RunFolderError, match=re.escape(message)) as info:
        AuditResults.from_run(run)
    assert words in str(info.value) and str(run / "results.json") in str(info.value)


def test_cli_report_on_an_older_results_file_exits_2_with_the_message(doc, tmp_path) -> None:
    from click.testing import CliRunner

    from audit.cli import cli
    from audit.runfolder import claim

    run = tmp_path / "run"
    with claim(run):  # a run folder: the tool's marker
        pass
    (run / "results.json").write_text(json.dumps({**doc, "schema_version": 1}))
    result = CliRunner().invoke(cli, ["report", str(run), "--no-pdf"])
    assert result.exit_code == 2
    assert "written by an older gan-audit: re-run `gan-audit measure CONFIG`" in result.output
    assert "Traceback" not in result.output
    assert not (run / "report.html").exists()


def test_a_document_that_breaks_the_schema_says_where(doc) -> None:
    broken = json.loads(json.dumps(doc))
    broken["verdicts"][0]["verdict"] = "fine"
    with pytest.raises(RunFolderError, match=r"verdicts/0/verdict"):
        AuditResults(broken)


# ------------------------------------------------------------------ Fairlearn


def _by_hand(predictions: pd.DataFrame, results: dict, *, source: str, concept: str,
             decision: str):
    """Fairlearn's MetricFrame built directly from predictions.parquet."""
    from fairlearn.metrics import MetricFrame, selection_rate

    rows = predictions[(predictions["split"] == "audit") & (predictions["source"] == source)
                       & np.isfinite(predictions["score"])]
    parts = []
    for c in concept.split("+"):
        parts.append(rows[f"true__{c}"].fillna(rows[f"pred__{c}"]).astype(str))
    group = parts[0] if len(parts) == 1 else parts[0] + "+" + parts[1]
    cut = (results["settings"]["accept_threshold"] if decision == "accepted"
           else results["treatment"][0]["median_real_score"])
    return MetricFrame(metrics=selection_rate, y_true=(rows["source"] == "real").astype(int),
                       y_pred=(rows["score"] > cut).astype(int),
                       sensitive_features=group.rename(concept))


@pytest.mark.parametrize("metric, decision", [("acceptance_rate", "accepted"),
                                              ("scoring_rate", "above_median")])
@pytest.mark.parametrize("source", ["real", "generated"])
@pytest.mark.parametrize("concept", ["tone", "tone+stroke"])
def test_metric_frame_equals_fairlearn_on_predictions_and_the_results(
        measured, read, metric, decision, source, concept) -> None:
    run, returned = measured
    results = read
    got = results.metric_frame(metric, source=source, concept=concept)
    expected = _by_hand(pd.read_parquet(run / "predictions.parquet"), returned,
                        source=source, concept=concept, decision=decision)
    pd.testing.assert_series_equal(got.by_group.sort_index(), expected.by_group.sort_index(),
                                   check_names=False, check_index_type=False)
    # ... and equal to what the measure stage counted on cells (results.json).
    sections = [*returned["treatment"], *(i["treatment"] for i in returned["intersections"])]
    section = next(s for s in sections if s["concept"] == concept)
    for row in section["rows"]:
        if row["source"] == source and row[metric]["n"] > 0:
            assert got.by_group[row["group"]] == pytest.approx(row[metric]["value"])


def test_metric_frame_defaults_to_protected_concepts_and_takes_functions(measured, read
                                                                         ) -> None:
    from fairlearn.metrics import count, true_positive_rate

    run, results = measured[0], read
    frame = results.metric_frame({"tpr": true_positive_rate, "n": count}, source="both")
    assert list(frame.by_group.index.names) == ["tone", "stroke"]
    assert int(frame.overall["n"]) == int(
        np.isfinite(results.predictions.query("split == 'audit'")["score"]).sum())
    decoded = results.metric_frame("count", source="real", concept="tone", groups="decoded")
    table = pd.read_parquet(run / "predictions.parquet")
    real = table[(table["split"] == "audit") & (table["source"] == "real")
                 & np.isfinite(table["score"])]
    assert decoded.by_group.to_dict() == real["pred__tone"].value_counts().to_dict()


@pytest.mark.parametrize("call, message", [
    (lambda r: r.metric_frame("precision"), "metric 'precision' is not one of"),
    (lambda r: r.metric_frame({"a": "acceptance_rate", "s": "scoring_rate"}),
     "the metrics need different decisions"),
    (lambda r: r.metric_frame(concept="age"), "concept(s) ['age'] are not in this audit"),
    (lambda r: r.metric_frame(source="fake"), "source 'fake' is not one of"),
])
def test_metric_frame_misuse_is_a_clear_error(read, call, message) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        call(read)


def test_metric_frame_without_predictions_says_how_to_get_them(doc) -> None:
    with pytest.raises(DataError, match=r"needs the per-image predictions"):
        AuditResults(doc).metric_frame()


# ------------------------------------------------------------------ compare, show, report


def test_compare_uses_the_report_comparison(doc) -> None:
    a = AuditResults(doc)
    later = json.loads(json.dumps(doc))
    gone = later["findings"].pop()
    later["verdicts"] = [{**v, "findings": [i for i in v["findings"] if i != gone["id"]]}
                         for v in later["verdicts"]]
    comparison = a.compare(AuditResults(later))
    assert [f["id"] for f in comparison["findings"]["resolved"]] == [gone["id"]]
    same = a.compare(a)
    assert same["metrics"] and all(m["change"] in (0, None) for m in same["metrics"])
    assert not same["findings"]["new"] and not same["findings"]["resolved"]


def test_repr_html_shows_verdicts_with_labels_and_escapes_text(doc) -> None:
    marked = json.loads(json.dumps(doc))
    marked["verdicts"][0]["reason"] = "<script>alert(1)</script>"
    shown = AuditResults(marked)._repr_html_()
    assert "<script>" not in shown and "&lt;script&gt;" in shown
    for v in doc["verdicts"]:
        verdict = Verdict(v["verdict"])
        assert f'class="verdict tone-{verdict.tone}"' in shown and verdict.label in shown
    assert f"{len(doc['findings'])} finding(s)" in shown


def test_to_html_writes_a_report_with_every_verdict_label(doc, tmp_path) -> None:
    import html

    varied = json.loads(json.dumps(doc))  # three verdicts whose labels are not their values
    for v, verdict in zip(varied["verdicts"], (Verdict.POSSIBLE_ADVERSE_IMPACT,
                                               Verdict.POSSIBLY_UNDER_REPRESENTED,
                                               Verdict.NO_VERDICT_SMALL_GROUPS), strict=True):
        v["verdict"] = verdict.value
    path = AuditResults(varied).to_html(tmp_path / "out" / "report.html")
    text = html.unescape(path.read_text(encoding="utf-8"))
    assert "<html" in text[:300]
    for v in varied["verdicts"]:
        assert Verdict(v["verdict"]).label in text, v["verdict"]
    assert doc["meta"]["audit_id"] in text


def test_to_html_of_a_run_folder_uses_its_side_files(measured, tmp_path) -> None:
    run, _ = measured
    results = AuditResults.from_run(run)
    alone = AuditResults(results.to_dict())
    with_run = results.to_html(tmp_path / "a.html").read_text(encoding="utf-8")
    without = alone.to_html(tmp_path / "b.html").read_text(encoding="utf-8")
    # the decoder table reads the run's decoders/validity.json (n/a without it)
    assert "decoders/validity.json)." in with_run and "decoders/validity.json)." not in without


def test_to_pdf_prints_the_report_html(doc, tmp_path, monkeypatch) -> None:
    """to_pdf hands WeasyPrint the very HTML of to_html (the PDF itself is tested in
    tests/test_report.py); without WeasyPrint it says what to install."""
    import audit.report.pdf
    from audit.errors import DependencyError

    printed = {}

    def html_to_pdf(html: str, out: Path) -> Path:
        printed.update(html=html, out=out)
        return out

    results = AuditResults(doc)
    monkeypatch.setattr(audit.report.pdf, "html_to_pdf", html_to_pdf)
    assert results.to_pdf(tmp_path / "report.pdf") == tmp_path / "report.pdf"
    assert printed["html"] == results.to_html(tmp_path / "report.html").read_text("utf-8")
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # import weasyprint -> ImportError
    drawn = []
    monkeypatch.setattr(AuditResults, "_report_html", lambda self: drawn.append(self) or "")
    with pytest.raises(DependencyError, match="pip install weasyprint"):
        results.to_pdf(tmp_path / "report.pdf")
    assert not (tmp_path / "report.pdf").exists()
    assert not drawn  # said before the report's charts were drawn (a second for nothing)


# ------------------------------------------------------------------ front, docs


def test_public_front_exports_and_needs_no_torch() -> None:
    code = ("import json, sys, audit\n"
            f"r = audit.AuditResults(json.load(open({str(FIXTURE)!r})))\n"
            "r.representation; r.findings_frame(); r._repr_html_()\n"
            "assert audit.Finding is type(r.findings[0])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    import audit

    assert {"AuditResults", "Finding"} <= set(audit.__all__)
