"""The PDF path of issue #24: the same pages and text as before, charts as SVG images.

The reference is the previous path itself, run on the same machine and fonts (a recorded
fingerprint would break with every WeasyPrint or font update): the report's HTML with the
facts lists' grid column put back to ``1fr`` and the charts handed to WeasyPrint inline
(benchmarks/report.py's ``previous_html`` and ``html_to_pdf(..., charts="inline")``).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from audit.report import render_report
from audit.report.pdf import html_to_pdf, svg_charts_to_images
from tests.test_report import FIXTURE, make_run

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "report.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("report_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> str:
    """The report of the digits fixture with every side file (manifest, samples, layers)."""
    run = make_run(tmp_path_factory.mktemp("run"))
    return render_report(run, pdf=False)["html"].read_text(encoding="utf-8")


#: The sections of the report that draw charts, and the manifest's facts list.
CHARTED = ("validity", "representation", "treatment", "manifest")


@pytest.fixture(scope="module")
def charted_html(tmp_path_factory) -> str:
    """A shorter report (16 pages, not 40; two PDFs of the whole took 15 s) with every kind
    of chart and the facts lists: the digits fixture without its ten-group concept, and of
    its sections only those in CHARTED (the cover and the table of contents stay)."""
    results = json.loads(FIXTURE.read_text(encoding="utf-8"))
    for key in ("representation", "treatment", "tests"):
        results[key] = [r for r in results[key] if r["concept"] != "digit"]
    del results["validity"]["digit"]
    run = make_run(tmp_path_factory.mktemp("charted"), results=results)
    html = render_report(run, pdf=False)["html"].read_text(encoding="utf-8")
    return re.sub(r'<section id="(\w+)".*?</section>',
                  lambda m: m.group(0) if m.group(1) in CHARTED else "", html, flags=re.DOTALL)


@pytest.mark.slow
def test_pdf_has_the_pages_and_text_of_the_previous_path(charted_html, tmp_path):
    pytest.importorskip("weasyprint")
    html = charted_html
    kinds = re.findall(r'<svg role="img" aria-label="(Line chart|Bar chart|Forest plot|Step '
                       r'histograms) ', html)
    assert set(kinds) == {"Line chart", "Bar chart", "Forest plot", "Step histograms"}
    assert len(kinds) == html.count('class="chart-svg"') >= 10
    assert "<pattern" in html and html.count('<dl class="facts"') >= 2  # hatches, the grid
    assert [m for m in re.findall(r'<section id="(\w+)"', html)] == list(CHARTED)
    bench = _benchmark()
    new = html_to_pdf(html, tmp_path / "new.pdf")
    old = html_to_pdf(bench.previous_html(html), tmp_path / "old.pdf", charts="inline")
    new_pages, old_pages = bench.pdf_pages_text(new), bench.pdf_pages_text(old)
    assert len(new_pages) == len(old_pages) >= 12
    for number, (a, b) in enumerate(zip(new_pages, old_pages, strict=True), start=1):
        assert a == b, f"page {number} differs"
    if shutil.which("pdftotext"):  # pypdf, the fallback, does not read the charts' text
        text = " ".join(new_pages)
        assert "share of images" in text  # the representation charts' y axis
        assert "four-fifths line (0.8)" in text and "parity (1.0)" in text  # forest legends


def test_every_chart_becomes_an_svg_image_with_its_alt_text_and_title(html):
    charts = re.findall(r'<svg role="img" aria-label="([^"]*)" class="chart-svg" .*?</svg>',
                        html, re.DOTALL)
    titles = re.findall(r'class="chart-svg" [^>]*>\s*<title>([^<]+)</title>', html)
    assert len(charts) == len(titles) >= 5
    out = svg_charts_to_images(html)
    assert "<svg" not in out
    images = re.findall(r'<img class="chart-svg" alt="([^"]*)" '
                        r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)">', out)
    assert [alt for alt, _ in images] == charts and all(charts)
    for (_, data), title in zip(images, titles, strict=True):
        svg = base64.b64decode(data).decode("utf-8")
        assert svg.startswith("<svg ") and svg.endswith("</svg>")
        assert 'xmlns="http://www.w3.org/2000/svg"' in svg and f"<title>{title}</title>" in svg
    # Nothing else of the document changes.
    assert re.sub(r"<img class=\"chart-svg\"[^>]*>", "", out) == re.sub(
        r'<svg role="img" aria-label="[^"]*" class="chart-svg" .*?</svg>', "", html,
        flags=re.DOTALL)


def test_the_previous_grid_is_what_the_benchmark_reverts(html):
    """The benchmark's baseline edits exactly one declaration of the stylesheet."""
    bench = _benchmark()
    assert html.count(bench.NEW_GRID) == 1 and bench.PREVIOUS_GRID not in html
    old = bench.previous_html(html)
    assert old.count(bench.PREVIOUS_GRID) == 1 and len(old) == len(html) - len(
        bench.NEW_GRID) + len(bench.PREVIOUS_GRID)
