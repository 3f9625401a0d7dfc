"""The monitoring series: per-point results.json documents -> tidy rows, one per estimate.

A tracking run audits several *points*: the checkpoints of a training run, or the sampling
settings (truncation) of one generator. Each point's audit writes its own results.json;
this module reads the numbers the monitoring report draws out of them, as tidy rows
(point, curve, group, estimate, low, high, n) that the trend tests, the report and the
CSV/Parquet exports all share.

Curves (``Curve.name``):

* ``generated_share``: each protected group's share of the generated images, corrected for
  decoder error (``representation[].rows[].generated_corrected``), intersections included;
* ``impact_ratio:<metric>:<source>``: the discriminator's impact ratio of each protected
  group (its scoring or acceptance rate over the highest group's), on real or generated
  images;
* ``decoder_balanced_accuracy``: each concept's held-out balanced accuracy (its validity);
* ``d_separation_auc``, ``d_acceptance:real``, ``d_acceptance:generated``: the
  discriminator sanity figures.

The first two families are *bias* curves (their trends become findings); the others are
*context* (their trends are reported, not judged). Pure: plain data in, plain data out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Point", "SeriesRow", "BIAS_FAMILIES", "results_to_rows", "series_to_rows",
           "rows_by_curve", "curve_family", "curve_words", "CURVE_LABELS"]

#: Curve families whose trends are findings (the others are context).
BIAS_FAMILIES = ("generated_share", "impact_ratio")

#: Each curve family's unit, short (a chart's y axis; :func:`curve_words` says it in full).
CURVE_LABELS = {
    "generated_share": "share (corrected)",
    "impact_ratio": "impact ratio",
    "decoder_balanced_accuracy": "balanced accuracy",
    "d_separation_auc": "ROC AUC",
    "d_acceptance": "share accepted",
}


@dataclass(frozen=True)
class Point:
    """One audited point of a tracking run.

    Attributes
    ----------
    name : str
        Its label (a checkpoint's name, or ``truncation=0.7``); also its run folder's name.
    index : int
        Its position along the x axis (0, 1, ...): training order, or the order given.
    setting : float or None
        The sampling setting (a truncation psi) for a sweep; None for checkpoints.
    """

    name: str
    index: int
    setting: float | None = None


@dataclass(frozen=True)
class SeriesRow:
    """One estimate of one curve at one point (the tidy export's row).

    ``estimate``, ``low`` and ``high`` are in the curve's unit (a share or rate in [0, 1],
    a ratio, an AUC); ``low``/``high`` the 95% interval (None where the audit gave none);
    ``n`` the images behind the estimate (None where not applicable).
    """

    point: str
    index: int
    setting: float | None
    curve: str
    group: str
    estimate: float | None
    low: float | None
    high: float | None
    n: int | None

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON object (field names as the CSV's columns)."""
        return asdict(self)


def curve_family(curve: str) -> str:
    """``impact_ratio:scoring_rate:generated`` -> ``impact_ratio``."""
    return curve.split(":", 1)[0]


def curve_words(curve: str) -> str:
    """A curve in words: ``impact_ratio:scoring_rate:generated`` -> ``the impact ratio of
    the scoring rate on generated images``."""
    family, _, rest = curve.partition(":")
    if family == "impact_ratio":
        metric, _, source = rest.partition(":")
        return f"the impact ratio of the {metric.replace('_', ' ')} on {source} images"
    if family == "d_acceptance":
        return f"the share of {rest} images the discriminator accepts"
    return {"generated_share": "the share of generated images (corrected for decoder error)",
            "decoder_balanced_accuracy": "the decoder's held-out balanced accuracy",
            "d_separation_auc": "the discriminator's ROC AUC, real vs generated",
            }.get(family, curve)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def _estimate(value: Mapping[str, Any] | None) -> tuple[float | None, float | None,
                                                       float | None, int | None]:
    """(estimate, low, high, n) of a results.json estimate ``{value, ci, n}``."""
    if not isinstance(value, Mapping):
        return None, None, None, None
    ci = value.get("ci") or [None, None]
    n = value.get("n")
    return (_num(value.get("value")), _num(ci[0]), _num(ci[1]),
            int(n) if isinstance(n, int | float) and math.isfinite(n) else None)


def _representation_sections(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    sections = list(results.get("representation") or [])
    sections += [i["representation"] for i in results.get("intersections") or []
                 if isinstance(i.get("representation"), Mapping)]
    return [s for s in sections if s.get("protected")]


def _treatment_sections(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    sections = list(results.get("treatment") or [])
    sections += [i["treatment"] for i in results.get("intersections") or []
                 if isinstance(i.get("treatment"), Mapping)]
    return [s for s in sections if s.get("protected")]


def _share_rows(results: Mapping[str, Any]) -> list[tuple[str, str, tuple]]:
    return [("generated_share", f"{sec['concept']}={row['group']}",
             _estimate(row.get("generated_corrected")))
            for sec in _representation_sections(results) for row in sec.get("rows") or []]


def _impact_rows(results: Mapping[str, Any]) -> list[tuple[str, str, tuple]]:
    return [(f"impact_ratio:{row['metric']}:{row['source']}", f"{sec['concept']}={row['group']}",
             _estimate(row.get("ratio")))
            for sec in _treatment_sections(results) for row in sec.get("impact") or []]


def _context_rows(results: Mapping[str, Any]) -> list[tuple[str, str, tuple]]:
    out: list[tuple[str, str, tuple]] = []
    for concept, entry in sorted((results.get("validity") or {}).items()):
        if isinstance(entry, Mapping):
            n = entry.get("n_test")
            out.append(("decoder_balanced_accuracy", concept,
                        (_num(entry.get("balanced_accuracy")), None, None,
                         int(n) if isinstance(n, int) else None)))
    dsc = results.get("discriminator") or {}
    sep = dsc.get("separation") or {}
    ci = sep.get("ci") or [None, None]
    n_sep = (sep.get("n_real") or 0) + (sep.get("n_generated") or 0)
    out.append(("d_separation_auc", "all", (_num(sep.get("auc")), _num(ci[0]), _num(ci[1]),
                                            n_sep or None)))
    for source in ("real", "generated"):
        out.append((f"d_acceptance:{source}", "all",
                    _estimate((dsc.get("acceptance") or {}).get(source))))
    return out


def results_to_rows(results: Mapping[str, Any], point: Point) -> list[SeriesRow]:
    """Every curve's estimate at ``point`` from its audit's results.json document.

    Parameters
    ----------
    results : mapping
        A results.json document (schema of :mod:`audit.measure.results`).
    point : Point
        Which point the document audited.

    Returns
    -------
    list of SeriesRow
        Bias curves first (shares, impact ratios), then the context curves.
    """
    found = _share_rows(results) + _impact_rows(results) + _context_rows(results)
    return [SeriesRow(point.name, point.index, point.setting, curve, group, *est)
            for curve, group, est in found]


def series_to_rows(documents: Sequence[tuple[Point, Mapping[str, Any]]]) -> list[SeriesRow]:
    """:func:`results_to_rows` of every point, in point order."""
    return [row for point, results in sorted(documents, key=lambda d: d[0].index)
            for row in results_to_rows(results, point)]


def rows_by_curve(rows: Sequence[SeriesRow]) -> dict[tuple[str, str], list[SeriesRow]]:
    """(curve, group) -> its rows in point order (the series one chart line draws)."""
    out: dict[tuple[str, str], list[SeriesRow]] = {}
    for row in sorted(rows, key=lambda r: r.index):
        out.setdefault((row.curve, row.group), []).append(row)
    return out
