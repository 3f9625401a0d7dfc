"""The report's insight section: views from insight/ documents, "not available" without."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from audit.cli import cli
from audit.concepts import load_concept_set
from audit.insight.curves import metadata_to_curves
from audit.insight.diagnose import predictions_to_diagnosis
from audit.insight.entropy import predictions_to_entropy
from audit.insight.interpolate import Interpolation
from audit.insight.redundancy import layers_to_redundancy
from audit.measure.bootstrap import BootstrapSpec
from audit.report.insight_view import insight_to_view, read_insight
from audit.report.render import render_template
from audit.report.view import ReportInputs, results_to_view
from audit.validation.predictions import DIGITS_PLANTED, synthetic_predictions

FIXTURE = Path(__file__).parent / "fixtures" / "results_digits.json"
SPEC = BootstrapSpec(n_boot=100, seed=0)


@pytest.fixture(scope="module")
def insight_folder(tmp_path_factory):
    """An insight/ folder written from the pure functions (as insight_for_run would)."""
    from audit.insight.run import images_to_strip
    from audit.io import atomic_write_json

    out = tmp_path_factory.mktemp("run") / "insight"
    cs = load_concept_set("digits_tone")
    table, _ = synthetic_predictions(400, 400, cs, seed=1, planted=DIGITS_PLANTED)
    atomic_write_json(out / "diagnosis.json",
                      {**predictions_to_diagnosis(table, cs, spec=SPEC).to_json(), "grids": {}})
    atomic_write_json(out / "entropy.json", {"margin": 0.1, "concepts": [
        e.to_json() for e in predictions_to_entropy(table, cs, spec=SPEC)]})
    rng = np.random.default_rng(0)
    feats = {"a": rng.normal(size=(50, 4)), "b": rng.normal(size=(50, 3))}
    sweep = {"layers": ["a", "b"], "accuracy": {"tone": {"a": 0.9, "b": 0.9}}}
    atomic_write_json(out / "redundancy.json", layers_to_redundancy(feats, sweep).to_json())
    atomic_write_json(out / "curves.json", metadata_to_curves(
        {"a": {"epochs": 3, "settings": {"max_epochs": 5}}, "b": {"epochs": 5}}, sweep).to_json())
    p = np.linspace(0, 1, 4)
    path = Interpolation(start="gen-0-1", end="gen-0-2", method="slerp", t=p,
                         groups={"tone": ["light", "dark"]},
                         probabilities={"tone": np.stack([1 - p, p], axis=1)},
                         scores=np.zeros(4), images=np.zeros((4, 1, 8, 8)))
    from PIL import Image

    Image.fromarray(images_to_strip(path.images)).save(out / "interpolation-x.png")
    atomic_write_json(out / "interpolations.json",
                      {"paths": [{**path.to_json(), "name": "x", "strip": "interpolation-x.png"}]})
    return out.parent


@functools.cache
def _fixture_view() -> dict:
    """The report's view of the fixture (its charts take a second): made once, and each
    render replaces its insight part in a copy."""
    return results_to_view(ReportInputs(results=json.loads(FIXTURE.read_text())))


def _render(insight):
    ctx = dict(_fixture_view())
    if insight is not ...:
        ctx["insight"] = insight
    return render_template("report/report.html.j2", ctx)


def test_every_view_is_shown(insight_folder):
    view = insight_to_view(read_insight(insight_folder))
    assert all(view[v]["available"] for v in ("interpolation", "diagnosis", "redundancy",
                                              "entropy", "curves"))
    assert view["redundancy"]["redundant"][0]["layer"] == "b"
    html = _render(view)
    assert 'id="insight"' in html and "the discriminator scores stroke = thick lowest" in html
    assert "Linear CKA between the recorded layers" in html
    assert "interpolation-x" not in html and "data:image/png;base64," in html
    assert "The decoders record no per-epoch history" in html


def test_rejected_has_one_meaning_in_the_report(insight_folder):
    """'Rejected' means scored at or under the acceptance threshold, and the glossary says so;
    the diagnosis, which looks at the lowest-scored share, never calls its images rejected."""
    import re

    html = _render(insight_to_view(read_insight(insight_folder)))
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html[html.index('id="insight"'):]))
    assert "lowest-scored" in text
    assert re.findall(r"\breject\w*", text.replace("not the same as rejected", "")) == []
    glossary = html[html.index('id="glossary"'):]
    assert "<em>rejected</em> when it is at or under it" in glossary[:3000]


def test_missing_views_say_not_available(insight_folder, tmp_path):
    assert read_insight(tmp_path) is None
    html = _render(insight_to_view(None))
    assert "Not available: the run folder has no insight/ views" in html
    assert "Not available: the run folder has no insight/ views" in _render(...)
    (insight_folder / "insight" / "index.json").write_text(json.dumps(
        {"interpolation": {"unavailable": "the audit has no generator"}}))
    docs = read_insight(insight_folder)
    del docs["docs"]["interpolation"]
    view = insight_to_view(docs)
    assert not view["interpolation"].available
    assert "Not available: the audit has no generator." in _render(view)


@pytest.mark.parametrize("command", ["interpolate", "diagnose", "insight"])
def test_commands_have_help_with_an_example(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "gan-audit " in result.output


def test_diagnose_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = CliRunner().invoke(cli, ["diagnose", str(tmp_path), "--no-images"])
    assert result.exit_code == 2 and "not a gan-audit run folder" in result.output


def test_a_path_of_a_conditional_generator_says_its_class(insight_folder):
    doc = read_insight(insight_folder)
    plain = _render(insight_to_view(doc))
    assert "all generated as class" not in plain
    doc["docs"]["interpolation"]["paths"][0]["class"] = 7
    html = _render(insight_to_view(doc))
    assert "all generated as class 7 (the start image&#39;s class" in html or \
        "all generated as class 7 (the start image's class" in html
