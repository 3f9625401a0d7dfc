"""Render time of the audit report: HTML and PDF, for the digits demo and a 40-concept audit.

Two run folders are built first (not timed): the digits fixture
(tests/fixtures/results_digits.json with a synthetic decoders/validity.json), and a
synthetic CelebA-sized audit: 40 binary concepts (3 protected, one intersection)
measured by audit.measure from audit.validation.predictions's planted table.

Then render_report(pdf=False) is timed (HTML: read the run folder, draw the charts,
fill the templates, write report.html) and html_to_pdf on the same HTML (PDF). The
first render of a process also imports matplotlib, Jinja and WeasyPrint: it is run
once untimed. Wall and CPU seconds are printed (the CPU figure is steadier on a
shared machine). Goals for the 40-concept audit: HTML < 2 s, PDF < 15 s. The last
line is ``ratio=<PDF seconds / 15 s goal>`` (below 1 meets the goal).

    .venv/bin/python benchmarks/report.py            # 3 HTML and 2 PDF repeats
    .venv/bin/python benchmarks/report.py --quick    # 1 repeat each, smaller tables
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "results_digits.json"
GOAL_HTML_S, GOAL_PDF_S = 2.0, 15.0


def digits_run(path: Path) -> Path:
    """The digits fixture as a run folder (results.json + decoders/validity.json)."""
    from audit.concepts import load_concept_set
    from audit.validation.predictions import DIGITS_PLANTED, synthetic_predictions

    path.mkdir(parents=True)
    shutil.copy(FIXTURE, path / "results.json")
    _, validity = synthetic_predictions(100, 100, load_concept_set("digits_tone"), seed=0,
                                        planted=DIGITS_PLANTED)
    (path / "decoders").mkdir()
    (path / "decoders" / "validity.json").write_text(json.dumps(validity))
    return path


def concepts40_run(path: Path, *, n: int, n_boot: int) -> Path:
    """A 40-concept audit (CelebA-sized): 40 binary concepts, 3 protected, 1 intersection."""
    from audit.concepts import ConceptSet
    from audit.config import MeasureSettings
    from audit.measure.results import predictions_to_results
    from audit.validation.predictions import Planted, synthetic_predictions

    names = ["Male", "Young", "Pale_Skin"] + [f"attribute_{i:02d}" for i in range(37)]
    concept_set = ConceptSet.model_validate({
        "name": "synthetic_40", "intersections": [["Male", "Young"]],
        "concepts": [{"name": name, "kind": "binary", "groups": ["no", "yes"],
                      "protected": i < 3, "reference": "no",
                      "source": {"type": "column", "column": name}}
                     for i, name in enumerate(names)]})
    planted = Planted(generated_shares={"Male": {"yes": 0.3}},
                      score_shift={("Young", "no", "generated"): -0.8})
    predictions, validity = synthetic_predictions(n, n, concept_set, seed=0, planted=planted)
    results = predictions_to_results(predictions, concept_set, validity,
                                     settings=MeasureSettings(n_boot=n_boot),
                                     meta={"audit_id": "synthetic-40", "date": "2026-01-01"})
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))
    (path / "decoders").mkdir()
    (path / "decoders" / "validity.json").write_text(json.dumps(validity))
    return path


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn`` over ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, smaller tables")
    args = parser.parse_args()
    from pypdf import PdfReader

    from audit.report.pdf import html_to_pdf
    from audit.report.render import render_report

    html_repeats, pdf_repeats = (1, 1) if args.quick else (3, 2)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"digits (3 concepts)": digits_run(Path(tmp) / "digits"),
                "synthetic 40 concepts": concepts40_run(
                    Path(tmp) / "c40", n=2000 if args.quick else 5000,
                    n_boot=50 if args.quick else 200)}
        render_report(runs["digits (3 concepts)"], pdf=True)  # imports, font cache: untimed
        figures = {}
        for name, run in runs.items():
            html_s, html_cpu = timed(lambda run=run: render_report(run, pdf=False),
                                     html_repeats)
            html = (run / "report.html").read_text(encoding="utf-8")
            pdf_s, pdf_cpu = timed(lambda run=run, html=html: html_to_pdf(html,
                                                                          run / "report.pdf"),
                                   pdf_repeats)
            pages = len(PdfReader(run / "report.pdf").pages)
            figures[name] = (html_s, pdf_s)
            print(f"{name}: HTML {html_s:.2f} s wall ({html_cpu:.2f} s CPU, "
                  f"{len(html) / 1e6:.2f} MB); PDF {pdf_s:.2f} s wall ({pdf_cpu:.2f} s CPU, "
                  f"{pages} pages)")
    html_40, pdf_40 = figures["synthetic 40 concepts"]
    print(f"goals for 40 concepts: HTML < {GOAL_HTML_S:.0f} s: {html_40:.2f} s "
          f"({'met' if html_40 < GOAL_HTML_S else 'missed'}); PDF < {GOAL_PDF_S:.0f} s: "
          f"{pdf_40:.2f} s ({'met' if pdf_40 < GOAL_PDF_S else 'missed'})")
    print(f"html ratio={html_40 / GOAL_HTML_S:.2f}")
    print(f"ratio={pdf_40 / GOAL_PDF_S:.2f}")


if __name__ == "__main__":
    main()
