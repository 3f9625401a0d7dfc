"""Render time of the audit report: HTML and PDF, for the digits demo and a 40-concept audit.

Two run folders are built first (not timed): the digits fixture
(tests/fixtures/results_digits.json with a synthetic decoders/validity.json: the demo's
results, 3 concepts), and a synthetic CelebA-sized audit: 40 binary concepts (3 protected,
one intersection) measured by audit.measure from audit.validation.predictions's planted
table. ``--run DIR`` adds a real run folder (e.g. reports/demo after ``make demo``, whose
report also has sample grids, the insight section and the manifest); it is copied first.

Then render_report(pdf=False) is timed (HTML: read the run folder, draw the charts, fill
the templates, write report.html), and the PDF of that HTML by two paths, alternated
repeat by repeat so that a busy machine slows both alike:

* new: :func:`audit.report.pdf.html_to_pdf` as the report stage calls it (charts handed to
  WeasyPrint as SVG images; the facts lists' grid with a ``minmax(0, 1fr)`` column);
* previous: the approach before issue #24, exactly: the same HTML with the facts lists'
  column put back to ``1fr`` (:func:`previous_html`: the only change to the templates) and
  ``html_to_pdf(..., charts="inline")`` (the charts inline, as WeasyPrint got them before).

Both PDFs are checked to have the same page count and the same text on every page
(pdftotext's, charts' text included, or pypdf's without it). The
first render of a process also imports matplotlib, Jinja and WeasyPrint: it is run once
untimed. Wall and CPU seconds are printed (CPU is steadier on a shared machine). Goals:
PDF of the demo <= 2 s, of the 40-concept audit <= 3 s. The last line is
``ratio=<previous PDF seconds / new PDF seconds>`` for the 40-concept audit (the speedup).

    .venv/bin/python benchmarks/report.py            # 3 HTML and 3 x 2 PDF repeats
    .venv/bin/python benchmarks/report.py --quick    # 1 repeat each, smaller tables
    .venv/bin/python benchmarks/report.py --run reports/demo
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
GOAL_HTML_S = 2.0
GOAL_PDF_S = {"digits (3 concepts)": 2.0, "synthetic 40 concepts": 3.0}
#: The facts lists' grid column before issue #24 (see templates/report/screen.css).
PREVIOUS_GRID, NEW_GRID = "max-content 1fr;", "max-content minmax(0, 1fr);"


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


def previous_html(html: str) -> str:
    """The report's HTML as the PDF stage got it before issue #24 (the facts grid's ``1fr``)."""
    if NEW_GRID not in html:
        raise ValueError("the report's stylesheet no longer has the facts grid this "
                         "benchmark reverts; update PREVIOUS_GRID/NEW_GRID")
    return html.replace(NEW_GRID, PREVIOUS_GRID)


def pdf_pages_text(path: Path) -> list[str]:
    """The text of each page of a PDF, whitespace runs as one space.

    With poppler's pdftotext where installed: it also reads the charts' text (titles, axes,
    legends), which pypdf (the fallback) does not reach inside the SVG drawings.
    """
    import re
    import subprocess

    exe = shutil.which("pdftotext")
    if exe:
        out = subprocess.run([exe, "-enc", "UTF-8", str(path), "-"], capture_output=True,
                             check=True).stdout.decode("utf-8")
        pages = out.split("\f")[:-1]  # each page ends with a form feed
    else:
        from pypdf import PdfReader

        pages = [page.extract_text() for page in PdfReader(path).pages]
    return [re.sub(r"\s+", " ", page).strip() for page in pages]


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn`` over ``repeats`` calls."""
    return _medians([_once(fn) for _ in range(repeats)])


def _once(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def pdf_both_ways(html: str, run: Path,
                  repeats: int) -> tuple[dict[str, tuple[float, float]], int]:
    """Median (wall, CPU) seconds of the new and the previous PDF path (alternated), and the
    page count; exits if the two PDFs differ in page count or in any page's text."""
    from audit.report.pdf import html_to_pdf

    old_html = previous_html(html)
    paths = {"new": run / "report.pdf", "previous": run / "report-previous.pdf"}
    calls = {"new": lambda: html_to_pdf(html, paths["new"]),
             "previous": lambda: html_to_pdf(old_html, paths["previous"], charts="inline")}
    times: dict[str, list[tuple[float, float]]] = {"new": [], "previous": []}
    for i in range(repeats):
        for name in ("new", "previous") if i % 2 == 0 else ("previous", "new"):
            times[name].append(_once(calls[name]))
    new, old = pdf_pages_text(paths["new"]), pdf_pages_text(paths["previous"])
    if new != old:
        differ = [i + 1 for i, (a, b) in enumerate(zip(new, old, strict=False)) if a != b]
        raise SystemExit(f"{run.name}: the new PDF differs from the previous one: "
                         f"{len(new)} against {len(old)} pages, text differs on {differ[:10]}")
    return {name: _medians(t) for name, t in times.items()}, len(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, smaller tables")
    parser.add_argument("--run", type=Path, action="append", default=[],
                        help="also time this run folder's report (copied first)")
    args = parser.parse_args()
    from audit.report.render import render_report

    html_repeats, pdf_repeats = (1, 1) if args.quick else (3, 3)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"digits (3 concepts)": digits_run(Path(tmp) / "digits"),
                "synthetic 40 concepts": concepts40_run(
                    Path(tmp) / "c40", n=2000 if args.quick else 5000,
                    n_boot=50 if args.quick else 200)}
        for i, extra in enumerate(args.run):
            runs[f"{extra.name} (--run)"] = Path(shutil.copytree(extra, Path(tmp) / f"run{i}"))
        render_report(runs["digits (3 concepts)"], pdf=True)  # imports, font cache: untimed
        speedups = {}
        for name, run in runs.items():
            html_s, html_cpu = timed(lambda run=run: render_report(run, pdf=False),
                                     html_repeats)
            html = (run / "report.html").read_text(encoding="utf-8")
            pdf, pages = pdf_both_ways(html, run, pdf_repeats)
            (new_s, new_cpu), (old_s, old_cpu) = pdf["new"], pdf["previous"]
            speedups[name] = old_s / new_s
            goal = GOAL_PDF_S.get(name)
            verdict = (f"; goal <= {goal:.0f} s: {'met' if new_s <= goal else 'missed'}"
                       if goal else "")
            print(f"{name}: HTML {html_s:.2f} s wall ({html_cpu:.2f} s CPU, "
                  f"{len(html) / 1e6:.2f} MB); PDF {new_s:.2f} s wall ({new_cpu:.2f} s CPU) "
                  f"against {old_s:.2f} s ({old_cpu:.2f} s CPU) before: "
                  f"{old_s / new_s:.2f}x ({old_cpu / new_cpu:.2f}x CPU), "
                  f"{pages} pages, same text on every page{verdict}", flush=True)
    print(f"ratio={speedups['synthetic 40 concepts']:.2f}")


if __name__ == "__main__":
    main()
