"""HTML to PDF with WeasyPrint (the only module that imports it).

The PDF is made from the very HTML of the report: WeasyPrint applies the
``@media print`` rules and ``@page`` boxes of the inline stylesheet (A4, running
header with the audit id, "page X of Y", table of contents with page numbers).
Resources may only come from ``data:`` URLs: the report never reaches a network.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from audit.errors import DependencyError
from audit.io import atomic_path

__all__ = ["html_to_pdf", "load_weasyprint"]

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


def html_to_pdf(html: str, out: Path) -> Path:
    """Write the PDF of ``html`` (a whole document) to ``out`` atomically.

    Parameters
    ----------
    html
        A self-contained HTML document (inline CSS, SVG and data: images).
    out
        Path of the PDF to write; its folder is created.

    Returns
    -------
    The path written.
    """
    weasyprint = load_weasyprint()
    out = Path(out)
    # WeasyPrint logs every unsupported CSS property of the screen stylesheet; keep quiet.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    document = weasyprint.HTML(string=html, base_url=None, url_fetcher=_fetcher(weasyprint),
                               media_type="print")
    with atomic_path(out, suffix=".pdf") as tmp:
        document.write_pdf(str(tmp))
    return out
