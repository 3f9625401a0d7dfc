"""The Python API: typed, in-memory access to an audit.

:class:`AuditResults` wraps one results.json document (with the per-image table and the
decoders' validity when at hand) and gives its sections as pandas DataFrames, its
findings as :class:`Finding` objects, Fairlearn ``MetricFrame``\\ s over the predictions,
comparisons and reports; :meth:`AuditResults.from_run` reads a run folder.
"""

from __future__ import annotations

from audit.api.results import AuditResults, Finding, Summary

__all__ = ["AuditResults", "Finding", "Summary"]
