"""HTML to PDF with WeasyPrint (the only module that imports it).

The PDF is made from the very HTML of the report: WeasyPrint applies the
``@media print`` rules and ``@page`` boxes of the inline stylesheet (A4, running
header with the audit id, "page X of Y", table of contents with page numbers).
Resources may only come from ``data:`` URLs: the report never reaches a network.

Speed (profiled with benchmarks/report.py; figures in :func:`svg_charts_to_images`):
WeasyPrint runs its CSS cascade and builds boxes over every element of the document,
inline SVG included (hundreds of paths per chart), so the PDF takes the charts as
``data:image/svg+xml`` images instead: the same vector drawing and text, drawn by
WeasyPrint's SVG renderer without passing through the HTML's cascade. The HTML report
keeps the inline SVG (sharp, searchable, one file). The other cause, the facts lists'
grid column, is fixed in templates/report/screen.css.
"""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path
from typing import Any, Literal

from audit.errors import DependencyError
from audit.io import atomic_path

__all__ = ["html_to_pdf", "load_weasyprint", "svg_charts_to_images"]

_INSTALL = ("pip install weasyprint (and its system libraries: Pango >= 1.44, e.g. "
            "apt-get install -y libpango-1.0-0 libpangoft2-1.0-0 on Debian/Ubuntu; see "
            "https://doc.courtbouillon.org/weasyprint/stable/first_steps.html)")


def load_weasyprint() -> Any:
    """Import WeasyPrint, or raise :class:`DependencyError` saying what to install."""
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: Pango/cairo shared libraries missing
        raise DependencyError(f"the PDF report needs WeasyPrint, which cannot be loaded "
                              f"({type(exc).__name__}: {exc}). Install it: {_INSTALL}. The HTML "
                              f"report does not need it (use --no-pdf).") from exc
    return weasyprint


def _fetcher(weasyprint: Any) -> Any:
    """A URL fetcher that serves ``data:`` URLs only."""
    try:
        from weasyprint.urls import URLFetcher
    except ImportError:  # WeasyPrint < 68: fetchers are functions
        from weasyprint import default_url_fetcher

        def fetch(url: str, *args: Any, **kwargs: Any) -> Any:
            if not url.startswith("data:"):
                raise ValueError(f"gan-audit reports load no external resource: {url}")
            return default_url_fetcher(url, *args, **kwargs)

        return fetch
    return URLFetcher(allowed_protocols=("data",))


#: An inline chart as :func:`audit.report.charts._to_svg` writes it (matplotlib's SVG has no
#: nested ``<svg>``; the aria-label is escaped, so it holds no double quote).
_CHART_SVG = re.compile(r'<svg role="img" aria-label="([^"]*)" class="chart-svg" .*?</svg>',
                        re.DOTALL)


def _chart_image(match: re.Match[str]) -> str:
    svg = match.group(0)
    head = svg[:svg.index(">") + 1]
    # The <img> needs the namespace that the HTML parser supplied to the inline element.
    if "xmlns=" not in head:
        svg = svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return (f'<img class="chart-svg" alt="{match.group(1)}" '
            f'src="data:image/svg+xml;base64,{data}">')


def svg_charts_to_images(html: str) -> str:
    """The report's inline SVG charts as ``<img src="data:image/svg+xml;base64,...">``.

    The drawing is the same SVG (vector, its text kept as text, its ``<title>`` inside); the
    ``aria-label`` becomes the image's ``alt``. Inline, WeasyPrint cascades the report's CSS
    over every path of every chart and builds a box for each; as an image it only draws it.
    On the demo's report (19 charts, 61 pages) this takes the PDF from 11.3 to 10.0 s of CPU
    on a loaded 2-core machine; the text of every page is unchanged.

    >>> svg_charts_to_images('<p><svg role="img" aria-label="A &amp; B" class="chart-svg" '
    ...                      'width="10pt"><title>T</title></svg></p>').split(" src=")[0]
    '<p><img class="chart-svg" alt="A &amp; B"'
    """
    return _CHART_SVG.sub(_chart_image, html)


def html_to_pdf(html: str, out: Path, *, charts: Literal["image", "inline"] = "image") -> Path:
    """Write the PDF of ``html`` (a whole document) to ``out`` atomically.

    Parameters
    ----------
    html
        A self-contained HTML document (inline CSS, SVG and data: images).
    out
        Path of the PDF to write; its folder is created.
    charts
        ``"image"``: the inline chart SVGs go to WeasyPrint as SVG images
        (:func:`svg_charts_to_images`); ``"inline"``: as they are in the HTML (the slower
        path before issue #24, kept for benchmarks/report.py's comparison).

    Returns
    -------
    The path written.
    """
    weasyprint = load_weasyprint()
    out = Path(out)
    # WeasyPrint logs every unsupported CSS property of the screen stylesheet; keep quiet.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    if charts == "image":
        html = svg_charts_to_images(html)
    document = weasyprint.HTML(string=html, base_url=None, url_fetcher=_fetcher(weasyprint),
                               media_type="print")
    with atomic_path(out, suffix=".pdf") as tmp:
        document.write_pdf(str(tmp))
    return out
