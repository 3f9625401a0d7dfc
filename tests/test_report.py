"""The report stage: HTML and PDF from a run folder (results.json fixture + side files)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from audit.errors import DependencyError, RunFolderError
from audit.formatting import fmt as _fmt
from audit.manifest import RUN_FOLDER_FORMAT, record_artifacts
from audit.report import append_review, render_report, results_to_html
from audit.report.view import SECTIONS
from audit.runfolder import claim
from audit.vocabulary import label as vocabulary_label

FIXTURE = Path(__file__).parent / "fixtures" / "results_digits.json"
SCRIPT = "<script>alert(1)</script>"


def _png(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 48), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_run(path: Path, *, results: dict | None = None, side_files: bool = True) -> Path:
    """A run folder: the fixture results.json, and (optionally) validity, layers, manifest,
    samples as the pipeline writes them."""
    with claim(path):  # a run folder: the tool's marker
        pass
    if results is None:
        shutil.copy(FIXTURE, path / "results.json")
    else:
        (path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    if not side_files:
        return path
    from audit.concepts import load_concept_set
    from audit.validation.predictions import DIGITS_PLANTED, synthetic_predictions

    _, validity = synthetic_predictions(50, 50, load_concept_set("digits_tone"), seed=0,
                                        planted=DIGITS_PLANTED)
    (path / "decoders").mkdir(exist_ok=True)
    (path / "decoders" / "validity.json").write_text(json.dumps(validity))
    (path / "decoders" / "layers.json").write_text(json.dumps({
        "layers": ["main.2", "main.5", "main.8"], "metric": "macro_auroc",
        "scores": {"digit": {"main.2": 0.81, "main.5": 0.93, "main.8": 0.9},
                   "tone": {"main.2": 0.99, "main.5": 0.995, "main.8": 0.97},
                   "stroke": {"main.2": 0.88, "main.5": 0.95, "main.8": 0.96}},
        "best": {"digit": "main.5", "tone": "main.5", "stroke": "main.8"}}))
    (path / "manifest.json").write_text(json.dumps({
        "tool": "gan-audit", "format": RUN_FOLDER_FORMAT, "version": "0.1.0",
        "created": "2026-01-01T00:00:00Z",
        "audit_id": "digits-synthetic-0", "config_sha256": "c" * 64, "seeds": {"measure": 0},
        "hashes": {"discriminator": "d" * 64, "weights": "e" * 64, "data": {"real": "f" * 64}},
        "versions": {"python": "3.11", "torch": "2.x", "fairlearn": "0.15"},
        "machine": {"platform": "linux", "cpu_count": 2, "device": "cpu"},
        "stages": {"extract": {"key": "a" * 64, "seconds": 3.25, "done": True}}}))
    samples = path / "samples"
    samples.mkdir(exist_ok=True)
    for i, name in enumerate(["generated-tone-light", "generated-tone-dark", "real-lowest",
                              "real-highest"]):
        (samples / f"{name}.png").write_bytes(_png(i))
    record_artifacts(path, ["samples"])  # the manifest records what the run wrote
    return path


class _Collector(HTMLParser):
    """Text, URL attributes and table structure of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.th_scopes: list[str | None] = []
        self.tables = 0
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        for key in ("src", "href", "xlink:href", "srcset", "action"):
            if attrs.get(key) is not None:
                self.urls.append((tag, key, attrs[key]))
        if tag == "th":
            self.th_scopes.append(attrs.get("scope"))
        if tag == "table":
            self.tables += 1
        if tag in ("style", "title", "svg"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("style", "title", "svg"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


def parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    c.close()
    return c


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One full render (HTML + PDF) of the fixture, shared by the tests that read it."""
    run = make_run(tmp_path_factory.mktemp("run"))
    paths = render_report(run, pdf=True)
    return run, paths


@pytest.fixture(scope="module")
def results():
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def fixture_html(results) -> str:
    """``results_to_html`` of the unchanged fixture (a second of charts), made once."""
    return results_to_html(results)


def test_render_writes_html_and_pdf(rendered):
    run, paths = rendered
    assert paths == {"html": run / "report.html", "pdf": run / "report.pdf"}
    assert paths["pdf"].read_bytes().startswith(b"%PDF-")
    assert not list(run.glob(".report.*"))  # no temporary files left


def pdf_pages(path: Path) -> list[str]:
    """The text of each page of a PDF: poppler's pdftotext where installed (0.2 s for the
    fixture's report), else pypdf (5 s)."""
    exe = shutil.which("pdftotext")
    if exe is None:
        from pypdf import PdfReader

        return [p.extract_text() or "" for p in PdfReader(path).pages]
    out = subprocess.run([exe, "-enc", "UTF-8", str(path), "-"], capture_output=True,
                         check=True).stdout.decode("utf-8")
    return out.split("\f")[:-1]  # each page ends with a form feed


def test_pdf_holds_section_titles_and_headline_numbers(rendered, results):
    from pypdf import PdfReader

    reader = PdfReader(rendered[1]["pdf"])
    pages = pdf_pages(rendered[1]["pdf"])
    assert len(pages) == len(reader.pages)
    text = squash(" ".join(pages))
    for _, title in SECTIONS:
        assert title in text, title
    # Running header with the audit id, "page X of Y" footer, TOC with page numbers.
    n = len(pages)
    assert n > 5
    box = reader.pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (595, 842)  # A4
    assert f"page 3 of {n}" in squash(pages[2])
    assert "digits-synthetic-0" in squash(pages[3])
    assert re.search(r"3\. Decoder validity \.*\s*\d+", text)
    # Headline numbers: every finding's estimate and every verdict.
    for f in results["findings"]:
        kind = "ratio" if "ratio" in f["metric"] else "pp"
        assert _fmt(f["value"], kind) in text, f["id"]
    for v in results["verdicts"]:
        assert vocabulary_label(v["verdict"]) in text


def test_html_numbers_equal_results(rendered, results):
    text = squash(" ".join(parse(rendered[1]["html"].read_text()).text))
    checked = 0
    for rep in results["representation"]:
        for row in rep["rows"]:
            real = row["real"]
            assert f"{_fmt(real['value'], 'pct')} [{_fmt(real['ci'][0], 'pct')}, " \
                   f"{_fmt(real['ci'][1], 'pct')}] {real['k']}/{real['n']}" in text
            corr = row["generated_corrected"]
            assert f"{_fmt(corr['value'], 'pct')} [{_fmt(corr['ci'][0], 'pct')}, " \
                   f"{_fmt(corr['ci'][1], 'pct')}]" in text
            checked += 2
    for trt in results["treatment"]:
        for imp in trt["impact"]:
            ratio = imp["ratio"]
            if ratio["value"] is None:
                continue
            assert f"{_fmt(ratio['value'], 'ratio')} [{_fmt(ratio['ci'][0], 'ratio')}, " \
                   f"{_fmt(ratio['ci'][1], 'ratio')}]" in text
            checked += 1
        for row in trt["rows"]:
            rate = row["scoring_rate"]
            assert f"{_fmt(rate['value'], 'pct')}" in text and f"{rate['k']}/{rate['n']}" in text
    counts = results["counts"]
    assert f"{counts['real']} real, {counts['generated']} generated" in text
    assert checked > 20


def test_html_is_self_contained_and_accessible(rendered):
    html = rendered[1]["html"].read_text()
    doc = parse(html)
    assert doc.tags[0] == "html"
    for tag, key, url in doc.urls:
        assert url.startswith(("#", "data:image/png;base64,")), (tag, key, url)
    assert not re.search(r"url\(\s*['\"]?(?!data:|#)", html)  # no CSS url() to fetch
    assert "@import" not in html and "<script" not in html.lower() and "<link" not in html
    # Tables have header cells with scope; every chart has a title and alt text.
    assert doc.tables > 10 and doc.th_scopes and all(s in ("col", "row")
                                                     for s in doc.th_scopes)
    svgs = re.findall(r"<svg [^>]*>\s*<title>[^<]+</title>", html)
    assert len(svgs) == html.count("<svg ") >= 5
    assert all('aria-label="' in s and 'role="img"' in s for s in svgs)
    # Sample grids inline as PNG; missing ones say so.
    assert html.count('src="data:image/png;base64,') == 4
    assert "samples/generated-stroke-thin.png is absent" in html
    assert '<meta name="viewport"' in html and "overflow-x: auto" in html


def _inject(results: dict) -> dict:
    """Rename concept 'tone' to a name with a script tag everywhere in results.json."""
    text = json.dumps(results).replace("tone", SCRIPT + "tone")
    return json.loads(text)


def test_script_in_concept_name_and_note_is_escaped(tmp_path, results):
    run = make_run(tmp_path / "run", results=_inject(results), side_files=False)
    fid = next(f["id"] for f in _inject(results)["findings"] if SCRIPT in f["id"])
    append_review(run, fid, status="disputed", reviewer="R <b>x</b>",
                  note="<script>alert(2)</script> & more")
    html = render_report(run, pdf=False)["html"].read_text()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;tone" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt; &amp; more" in html
    assert "R &lt;b&gt;x&lt;/b&gt;" in html
    text = squash(" ".join(parse(html).text))
    assert "<script>alert(2)</script> & more" in text  # shown as text


def test_absent_optional_parts_are_not_available(tmp_path, results):
    partial = {k: v for k, v in results.items() if k not in ("intersections", "tests")}
    run = make_run(tmp_path / "run", results=partial, side_files=False)
    html = render_report(run, pdf=False)["html"].read_text()
    text = squash(" ".join(parse(html).text))
    assert "Not available: the run folder has no samples/ images" in text
    assert "Not available: the run folder has no manifest.json" in text
    assert "Not available: decoders/layers.json is absent" in text
    assert "results.json lacks or has malformed parts: intersections (missing), tests " \
           "(missing)" in text
    for _, title in SECTIONS:
        assert title in text


def test_score_distributions_are_drawn_per_concept_with_both_thresholds(results):
    import copy

    data = copy.deepcopy(results)
    tone = next(t for t in data["treatment"] if t["concept"] == "tone")
    tone["score_histogram"] = {"edges": [-3, -1, 0, 1, 3],
                               "counts": {"real": {"light": [10, 20, 30, 40],
                                                   "dark": [40, 30, 20, 10]},
                                          "generated": {"light": [1, 1, 1, 1]}}}
    tone["accept_threshold"], tone["median_real_score"] = 0.0, 0.25
    html = results_to_html(data)
    start = html.index("Discriminator score distribution by group of tone (real images)")
    svg = html[html.rindex("<svg", 0, start):html.index("</svg>", start)]
    assert "<title>Discriminator score distribution by group of tone (real images)</title>" \
        in svg
    text = [t for t in re.findall(r">([^<>]+)<", svg) if t.strip()]  # the SVG's text
    # axes with units, a legend with group sizes and both lines
    assert "discriminator score (the discriminator's output units)" in text
    assert "density (share per score unit)" in text  # unequal bins: a density
    for label in ("light (n=100)", "dark (n=100)", "acceptance threshold (0)",
                  "median real score (0.25)"):
        assert label in text
    # alt text: bin mids -2, -0.5, 0.5, 2; means (-20 - 10 + 15 + 80) / 100 and its mirror;
    # above the threshold: the bins with mids 0.5 and 2
    alt = re.search(r'aria-label="([^"]*)"', svg).group(1)
    assert "light: n=100, mean about 0.65, about 70% above the acceptance threshold; " \
           "dark: n=100, mean about -0.65, about 30% above" in alt
    assert "dashed line marks the acceptance threshold (0)" in alt
    assert "Discriminator score distribution by group of tone (generated images)" not in html


def test_concepts_without_histograms_show_nothing_not_an_apology(results):
    import copy

    data = copy.deepcopy(results)
    for t in data["treatment"]:
        t.pop("score_histogram", None)
    html = results_to_html(data)
    assert "Discriminator score distribution" not in html
    text = squash(" ".join(parse(html).text))
    assert "Score distributions per group" not in text and "no score histograms" not in text


def test_the_fixture_draws_a_histogram_for_every_charted_concept(results, fixture_html):
    html = fixture_html
    for t in results["treatment"]:
        assert f"Discriminator score distribution by group of {t['concept']} (real images)" \
            in html
    # equal-width bins: the y axis is the share of each group's images
    assert "share of the group's images" in html


def test_the_transfer_table_shows_each_concept_and_only_when_measured(results, fixture_html):
    import copy

    data = copy.deepcopy(results)
    assert data["transfer"] == []
    assert "Transfer to generated images" not in fixture_html  # the HTML of these results
    share = {"value": 0.405, "ci": [0.383, 0.426], "n": 2000, "k": 809}
    data["transfer"] = [{
        "concept": "stroke", "layer": "blocks.1.1", "method": "pca_mahalanobis_residual",
        "n_components": 4, "explained_variance": 0.95, "n_train": 1292, "n_calibration": 864,
        "quantile": 0.99, "threshold": 5.1, "generated": share,
        "real": {"value": 0.0115, "ci": [0.0077, 0.0172], "n": 2000, "k": 23},
        "out_of_distribution": True, "reason": None, "rule": "the <rule>", "caveat": "c"}]
    from audit.measure import validate_results

    validate_results(data)
    text = squash(" ".join(parse(results_to_html(data)).text))
    assert "Transfer to generated images" in text and "Rule: the <rule>." in text
    assert "stroke blocks.1.1 4 1292 / 864 40.5% [38.3%, 42.6%] 809/2000 1.1% [0.8%, 1.7%] " \
           "23/2000 out of distribution" in text


def test_the_manifest_lists_each_recorded_file_as_a_table_row(rendered):
    """Each file manifest.json records appears once as a row: path, bytes, sha256 (not a JSON
    dump); a hostile entry shows "not recorded" instead of failing the render."""
    run, paths = rendered
    manifest = json.loads((run / "manifest.json").read_text())
    text = squash(" ".join(parse(paths["html"].read_text()).text))
    assert '"sha256"' not in text  # no JSON dump of the manifest's records
    # report.html and report.pdf are recorded after they are written: the rest is listed.
    listed = {p: e for p, e in manifest["artifacts"].items() if not p.startswith("report.")}
    assert len(listed) >= 4
    for path, entry in listed.items():
        assert f"{path} {entry['size']:,} {entry['sha256']}" in text, path
    from audit.report.view import _artifacts_view

    rows = _artifacts_view({"b.png": {"size": "12", "sha256": 5}, "a.png": "junk",
                            "c.png": {"size": 1234567, "sha256": "ab"}})
    assert rows == [{"path": "a.png", "size": "not recorded", "sha256": "not recorded"},
                    {"path": "b.png", "size": "not recorded", "sha256": "not recorded"},
                    {"path": "c.png", "size": "1,234,567", "sha256": "ab"}]
    # artifacts that are not a mapping are not dropped: they show as another manifest field
    html = results_to_html(json.loads(FIXTURE.read_text()),
                           manifest={**manifest, "artifacts": ["<b>odd</b>"]})
    assert "Other manifest fields" in html and "&lt;b&gt;odd&lt;/b&gt;" in html


def test_results_to_html_needs_only_results(results):
    html = results_to_html(results)
    assert "digits-synthetic-0" in html and "4. Representation" in html


@pytest.mark.parametrize("content, message", [
    (None, "not found. Run the measure stage first"),
    ("{not json", "not valid JSON"),
    (json.dumps({"schema_version": 99}), "schema_version 99, but this gan-audit reads"),
])
def test_bad_run_folder_is_a_clear_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(RunFolderError, match=re.escape(message)):
        render_report(tmp_path, pdf=False)


def test_missing_weasyprint_says_what_to_install_and_html_still_works(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", side_files=False)
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # import weasyprint -> ImportError
    with pytest.raises(DependencyError, match=r"pip install weasyprint.*--no-pdf"):
        render_report(run, pdf=True)
    assert (run / "report.html").exists() and not (run / "report.pdf").exists()


def test_cli_report(tmp_path):
    from click.testing import CliRunner

    from audit.cli import cli

    run = make_run(tmp_path / "run", side_files=False)
    result = CliRunner().invoke(cli, ["report", str(run), "--no-pdf"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(run / "report.html")
    missing = CliRunner().invoke(cli, ["report", str(tmp_path / "nope"), "--no-pdf"])
    assert missing.exit_code == 2 and "not a folder" in missing.output


def _chromium() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.slow
def test_chromium_renders_the_html(rendered, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed: apt-get install -y chromium")
    import numpy as np
    from PIL import Image

    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1280,2000", "--enable-logging=stderr", "--v=0",
           rendered[1]["html"].resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert shot.exists(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10  # text and tables drew something
    assert (pixels < 128).mean() > 0.005
    errors = [line for line in proc.stderr.splitlines()
              if "Uncaught" in line or "ERROR:CONSOLE" in line or "CONSOLE(" in line]
    assert not errors, errors
