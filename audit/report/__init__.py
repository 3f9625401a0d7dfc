"""The report stage: results.json (+ review log) -> report.html and report.pdf.

Also the review log (``review.jsonl``, hash-chained) and the comparison of two
audits. WeasyPrint is imported only by :mod:`audit.report.pdf`, and matplotlib
only when a chart is drawn.
"""

from __future__ import annotations

from audit.report.compare import render_compare, results_to_comparison
from audit.report.pdf import html_to_pdf
from audit.report.render import load_run, render_report, results_to_html
from audit.report.review import (
    STATUSES,
    ReviewLog,
    ReviewLogCheck,
    append_review,
    read_review_log,
    verify_review_log,
)

__all__ = [
    "STATUSES",
    "ReviewLog",
    "ReviewLogCheck",
    "append_review",
    "html_to_pdf",
    "load_run",
    "read_review_log",
    "render_compare",
    "render_report",
    "results_to_comparison",
    "results_to_html",
    "verify_review_log",
]
