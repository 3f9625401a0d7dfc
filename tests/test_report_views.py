"""The report's view models and the shape of the report package.

Typed views: the summary's verdicts, findings and facts are dataclasses built from the
results.json fixture, checked field by field against the JSON itself. Structure: no import
cycle in audit/report and audit/insight, no import inside a function to dodge one, and no
function longer than 80 lines there.
"""

from __future__ import annotations

import ast
import copy
import json
import math
from pathlib import Path

import pytest

from audit.errors import RunFolderError
from audit.report.summary_view import (
    DiscriminatorView,
    FindingView,
    Meta,
    VerdictRow,
    discriminator_view,
    findings_view,
    meta_view,
    review_view,
    verdicts_view,
)
from audit.report.view import ReportInputs, results_to_view
from audit.report.viewtypes import Unavailable
from audit.vocabulary import Severity, Verdict

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "results_digits.json"
PACKAGES = ("audit/report", "audit/insight")
#: Imports inside a function that are not there to dodge a cycle: optional or heavy
#: dependencies (WeasyPrint through audit.report.pdf; torch and the pipeline's stages
#: in audit.insight, which run only on a run folder with a model).
LAZY_OK = ("audit.report.pdf",)


@pytest.fixture(scope="module")
def results():
    return json.loads(FIXTURE.read_text())


def test_verdict_rows_carry_the_json_as_typed_fields(results):
    rows = verdicts_view(results)
    assert len(rows) == len(results["verdicts"]) > 0
    for row, raw in zip(rows, results["verdicts"], strict=True):
        assert isinstance(row, VerdictRow) and isinstance(row.verdict, Verdict)
        assert (row.concept, row.verdict.value, row.reason, row.findings) == \
            (raw["concept"], raw["verdict"], raw["reason"], raw["findings"])


def test_findings_are_sorted_by_severity_then_id_with_their_estimates(results):
    views = findings_view(results)
    raw = {f["id"]: f for f in results["findings"]}
    assert sorted(f.id for f in views) == sorted(raw)
    order = ["high", "medium", "low", "info"]
    assert [f.id for f in views] == sorted(raw, key=lambda i: (order.index(raw[i]["severity"]),
                                                               i))
    for f in views:
        r = raw[f.id]
        assert isinstance(f, FindingView) and isinstance(f.severity, Severity)
        assert f.severity.value == r["severity"] and f.summary == r["summary"]
        assert f.groups == r["groups"] and f.metric == r["metric"]
        if r["value"] is None:
            assert f.estimate.value is None
        else:
            assert math.isclose(f.estimate.value, r["value"])
        assert f.estimate.n == r["n"]
        if r["ci"] is not None and all(c is not None for c in r["ci"]):
            assert (f.estimate.lo, f.estimate.hi) == pytest.approx(tuple(r["ci"]))
        assert dict(f.evidence_items) == r["evidence"]
        assert f.validity.decodable == r["validity"]["decodable"]


def test_meta_falls_back_on_the_manifest_and_counts_are_none_when_absent(results):
    meta = meta_view(results, {})
    assert isinstance(meta, Meta)
    assert meta.audit_id == results["meta"]["audit_id"]
    assert meta.concept_set_sha256 == results["concept_set"]["sha256"]
    assert meta.counts.real == results["counts"]["real"]
    bare = meta_view({"meta": {}}, {"audit_id": "from-manifest", "created": "2026-01-02",
                                    "version": "9.9"})
    assert (bare.audit_id, bare.title, bare.date, bare.tool_version) == \
        ("from-manifest", "Bias audit from-manifest", "2026-01-02", "9.9")
    assert bare.counts.real is None and bare.concept_set_name is None and bare.recorded == {}


def test_the_discriminator_view_reads_the_sanity_section(results):
    raw = results["discriminator"]
    d = discriminator_view(results)
    assert isinstance(d, DiscriminatorView) and d.available
    assert d.auc.value == pytest.approx(raw["separation"]["auc"])
    assert d.auc.n == raw["separation"]["n_real"] + raw["separation"]["n_generated"]
    assert d.acceptance_real.value == pytest.approx(raw["acceptance"]["real"]["value"])
    assert [s.source for s in d.scores] == ["real", "generated"]
    assert d.scores[0].quantiles[3] == pytest.approx(raw["scores"]["real"]["quantiles"]["q50"])
    assert d.problems == [p["message"] for p in raw["problems"]]
    gone = discriminator_view({k: v for k, v in results.items() if k != "discriminator"})
    assert isinstance(gone, Unavailable) and "no 'discriminator' section" in gone.reason
    broken = copy.deepcopy(results)
    del broken["discriminator"]["acceptance"]
    with pytest.raises(RunFolderError, match=r"results\.json: discriminator lacks 'acceptance'"):
        discriminator_view(broken)


def test_review_view_keeps_latest_current_status_and_orphans(results):
    class Log:
        def __init__(self):
            fid = results["findings"][0]["id"]
            self.entries = [{"finding_id": fid, "status": "disputed"},
                            {"finding_id": fid, "status": "confirmed"},
                            {"finding_id": "F-REP-gone", "status": "confirmed"}]
            self.verification = None

        def reviews_current_results(self, e):
            return e["status"] != "confirmed" or e["finding_id"] == "F-REP-gone"

    view = review_view(findings_view(results), Log())
    fid = results["findings"][0]["id"]
    assert view.latest[fid]["status"] == "disputed"  # the confirmation reviews older results
    assert [e["status"] for e in view.history[fid]] == ["disputed", "confirmed"]
    assert view.orphans == ["F-REP-gone"] and view.n_entries == 3


@pytest.mark.parametrize("part, key", [("findings", "summary"), ("findings", "validity"),
                                       ("verdicts", "verdict")])
def test_a_finding_or_verdict_without_a_required_key_is_a_clear_error(results, part, key):
    data = copy.deepcopy(results)
    del data[part][1][key]
    with pytest.raises(RunFolderError, match=rf"results.json: {part}\[1\] lacks '{key}'.*"
                                             r"Re-run the measure stage"):
        results_to_view(ReportInputs(results=data))


def test_an_unknown_severity_is_a_clear_error(results):
    data = copy.deepcopy(results)
    data["findings"][0]["severity"] = "catastrophic"
    with pytest.raises(RunFolderError, match=r"findings\[0\] is malformed .*catastrophic"):
        results_to_view(ReportInputs(results=data))


def test_the_cli_reports_a_malformed_finding_without_a_traceback(tmp_path, results):
    from click.testing import CliRunner

    from audit.cli import cli
    from audit.runfolder import claim

    run = tmp_path / "run"
    with claim(run):
        pass
    data = copy.deepcopy(results)
    del data["findings"][0]["summary"]
    (run / "results.json").write_text(json.dumps(data))
    out = CliRunner().invoke(cli, ["report", str(run), "--no-pdf"])
    assert out.exit_code == 2 and "findings[0] lacks 'summary'" in out.output
    assert "Traceback" not in out.output


# ---------------------------------------------------------------- structure


def _modules() -> dict[str, ast.Module]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            name = ".".join((*Path(package).parts, path.stem)).removesuffix(".__init__")
            out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def _imports(nodes) -> set[str]:
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_no_import_cycle_in_report_and_insight():
    modules = _modules()
    graph = {name: {m for m in _imports(tree.body) if m in modules and m != name}
             for name, tree in modules.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and not seen.add(nxt)
                               and reaches(nxt, goal, seen)):
                return True
        return False

    assert [m for m in graph if reaches(m, m, set())] == []


def test_no_function_imports_a_sibling_module_to_dodge_a_cycle():
    modules = _modules()
    late = []
    for name, tree in modules.items():
        package = name.rsplit(".", 1)[0]
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for m in _imports(ast.walk(fn)):
                    if m.startswith(package + ".") and m not in LAZY_OK and \
                            package == "audit.report":
                        late.append(f"{name}.{fn.name} imports {m}")
    assert late == []


def test_no_function_is_longer_than_80_lines():
    long = []
    for name, tree in _modules().items():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = fn.end_lineno - fn.lineno + 1
                if lines > 80:
                    long.append(f"{name}.{fn.name}: {lines} lines")
    assert long == []


def test_significant_digits_and_missing_numbers():
    from audit.formatting import significant

    assert [significant(0.8), significant(2.345e-8, 2), significant(1234.5),
            significant(0.8, 6)] == ["0.8", "2.3e-08", "1.23e+03", "0.8"]
    assert [significant(x) for x in (None, float("nan"), float("inf"), True, "1")] == \
        ["n/a"] * 5


#: Format specs that are not numbers for a reader: a CSS colour's alpha, a progress log.
FORMAT_OK = {("audit.report.render", "_shade"), ("audit.insight.run", "insight_for_run")}


def test_numbers_are_formatted_by_audit_formatting_only():
    """No f-string number format (``:.2f``, ``:g``, ``:.0f}%``) in audit/report or
    audit/insight: numbers for people go through audit.formatting."""
    hand = []
    for name, tree in _modules().items():
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.FormattedValue) and node.format_spec is not None:
                    spec = "".join(str(v.value) for v in node.format_spec.values
                                   if isinstance(v, ast.Constant))
                    if spec and spec[-1] in "fFgGeE%" and (name, fn.name) not in FORMAT_OK:
                        hand.append(f"{name}.{fn.name}: {{...:{spec}}}")
    assert hand == []
