"""Trend tests and change points of the monitoring curves, and the findings they make.

Each curve (one group's series over the points: :func:`audit.track.series.rows_by_curve`)
gets a trend test (:func:`audit.measure.trend.trend_test`: the slope on the point index,
its interval and p-value, weighted by each point's standard error from its interval) and
change points against a baseline point (:func:`audit.measure.trend.change_points`).
p-values are Holm- and Benjamini-Hochberg-adjusted across the bias curves (the trend tests
one family, the change points another); a trend or change is a finding like those of one
audit: high when Holm-significant and big, medium when BH-significant, else low. Context
curves (decoder validity, discriminator sanity) are tested and reported, never findings.
Pure: rows in, plain data out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from audit.track.series import (
    BIAS_FAMILIES,
    SeriesRow,
    curve_family,
    curve_words,
    rows_by_curve,
)
from audit.vocabulary import Severity

__all__ = ["CurveTrend", "CurveChange", "TrendSettings", "rows_to_trends",
           "trends_to_findings", "MIN_POINTS"]

#: A trend needs at least this many points with an estimate.
MIN_POINTS = 2


@dataclass(frozen=True)
class TrendSettings:
    """How trends are judged (the audit's measure settings, for consistency).

    ``alpha``: significance after correction; ``high_gap``: a share curve's fitted change
    over the whole range that makes a Holm-significant trend high; ``impact_threshold``: an
    impact-ratio curve is high when Holm-significant, falling and under it at the last
    point; ``n_boot``, ``seed``: the trend test's resampling.
    """

    alpha: float = 0.05
    high_gap: float = 0.10
    impact_threshold: float = 0.8
    n_boot: int = 9999
    seed: int = 0


@dataclass(frozen=True)
class CurveTrend:
    """The trend test of one curve: ``slope`` per point (per unit of the setting in a
    sweep; in the curve's unit), ``change`` the fitted change over the range, its
    interval, raw and adjusted p-values; ``reason`` says why no test ran (too few points)."""

    curve: str
    group: str
    family: str
    bias: bool
    n_points: int
    slope: float | None = None
    slope_ci: tuple[float, float] | None = None
    p_value: float | None = None
    p_holm: float | None = None
    p_bh: float | None = None
    method: str | None = None
    change: float | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As track.json stores it."""
        out = asdict(self)
        out["slope_ci"] = list(self.slope_ci) if self.slope_ci else None
        return out


@dataclass(frozen=True)
class CurveChange:
    """A change point: the curve at ``point`` differs from it at ``baseline``."""

    curve: str
    group: str
    point: str
    baseline: str
    difference: float
    ci: tuple[float, float]
    p_value: float
    p_holm: float | None = None
    p_bh: float | None = None

    def to_json(self) -> dict[str, Any]:
        """As track.json stores it."""
        out = asdict(self)
        out["ci"] = list(self.ci)
        return out


def _se(row: SeriesRow) -> float | None:
    """Standard error from the row's 95% interval
    (:func:`audit.measure.trend.se_from_interval`); None without one."""
    from audit.measure.trend import se_from_interval

    se = se_from_interval([row.low, row.high])
    return se if math.isfinite(se) else None


def _usable(rows: Sequence[SeriesRow]) -> list[SeriesRow]:
    return [r for r in rows if r.estimate is not None and math.isfinite(r.estimate)]


def _test_curve(curve: str, group: str, rows: Sequence[SeriesRow], *, baseline: str,
                settings: TrendSettings) -> tuple[CurveTrend, list[CurveChange]]:
    from audit.measure.trend import change_points, trend_test

    family = curve_family(curve)
    bias = family in BIAS_FAMILIES
    usable = _usable(rows)
    if len(usable) < MIN_POINTS:
        return CurveTrend(curve, group, family, bias, len(usable),
                          reason=f"{len(usable)} point(s) with an estimate; a trend needs "
                                 f"{MIN_POINTS}"), []
    values = [r.estimate for r in usable]
    ses = [_se(r) for r in usable]
    if len(set(values)) == 1 and len(set(ses)) == 1:
        return CurveTrend(curve, group, family, bias, len(usable),
                          reason="the same estimate and interval at every point (e.g. real "
                                 "images scored by one fixed discriminator): nothing to "
                                 "test"), []
    se = ([math.nan if s is None else s for s in ses]
          if any(s is not None and s > 0 for s in ses) else None)
    # x: the setting in a sweep (slope per unit of psi), else the point's position
    index = [r.setting if r.setting is not None else r.index for r in usable]
    test = trend_test(values, se=se, index=index, n_boot=settings.n_boot, seed=settings.seed)
    if not math.isfinite(test.p_value):
        return CurveTrend(curve, group, family, bias, test.n_points, method=test.method,
                          reason=f"no test ({test.method.replace('_', ' ')}: "
                                 f"{test.n_points} point(s) with an interval)"), []
    change = test.slope * (index[-1] - index[0])
    trend = CurveTrend(curve, group, family, bias, test.n_points, test.slope,
                       (float(test.slope_ci[0]), float(test.slope_ci[1])), test.p_value,
                       method=test.method, change=change)
    names = [r.point for r in usable]
    if se is None or baseline not in names:
        return trend, []
    changes = [CurveChange(curve, group, names[c.index], baseline, c.difference,
                           (float(c.ci[0]), float(c.ci[1])), c.p_value)
               for c in change_points(values, se, baseline=names.index(baseline))]
    return trend, changes


def _adjust(items: list[Any]) -> list[Any]:
    """``items`` (trends or changes of bias curves) with Holm and BH p-values across them."""
    from dataclasses import replace

    from audit.measure.stats import adjust_pvalues

    holm, bh = adjust_pvalues([i.p_value for i in items])
    return [replace(i, p_holm=h, p_bh=b) for i, h, b in zip(items, holm, bh, strict=True)]


def rows_to_trends(rows: Sequence[SeriesRow], *, baseline: str,
                   settings: TrendSettings = TrendSettings()
                   ) -> tuple[list[CurveTrend], list[CurveChange]]:
    """Trend test and change points of every curve in ``rows``.

    Parameters
    ----------
    rows : sequence of SeriesRow
        Every point's estimates (:func:`audit.track.series.series_to_rows`).
    baseline : str
        The point the change points compare against (the first, or a named one).
    settings : TrendSettings

    Returns
    -------
    (trends, changes)
        One :class:`CurveTrend` per (curve, group), in curve order; the change points of
        the bias curves. Holm/BH adjustment runs over the bias curves' trends (one family)
        and over their change points (another); context trends keep raw p-values only.
    """
    trends, changes = [], []
    for (curve, group), series in rows_by_curve(rows).items():
        trend, found = _test_curve(curve, group, series, baseline=baseline, settings=settings)
        trends.append(trend)
        if trend.bias:
            changes += found
    tested = [t for t in trends if t.bias and t.p_value is not None]
    adjusted = {(t.curve, t.group): t for t in _adjust(tested)} if tested else {}
    trends = [adjusted.get((t.curve, t.group), t) for t in trends]
    return trends, _adjust(changes) if changes else []


def _severity(p_holm: float | None, p_bh: float | None, big: bool, alpha: float) -> Severity:
    if p_holm is not None and p_holm < alpha and big:
        return Severity.HIGH
    if p_bh is not None and p_bh < alpha:
        return Severity.MEDIUM
    return Severity.LOW


def _big(family: str, change: float, last: SeriesRow | None, settings: TrendSettings) -> bool:
    """A share that moved by ``high_gap`` or more; an impact ratio that fell to under the
    four-fifths threshold."""
    if family == "generated_share":
        return abs(change) >= settings.high_gap
    return change < 0 and last is not None and last.estimate is not None and (
        last.estimate < settings.impact_threshold)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9+=._-]+", "_", text)


def _subject(curve: str, group: str) -> dict[str, Any]:
    """concept, groups, intersection and source of a bias curve's group ``concept=group``."""
    concept, _, name = group.partition("=")
    parts = curve.split(":")
    return {"concept": concept, "groups": [name],
            "intersection": concept.split("+") if "+" in concept else None,
            "source": parts[2] if len(parts) > 2 else "generated"}


def _evidence(series: Sequence[SeriesRow]) -> dict[str, Any]:
    """Each point's estimate, interval and group size, as the finding's evidence."""
    return {"points": [{"point": r.point, "index": r.index, "setting": r.setting,
                        "estimate": r.estimate, "ci": [r.low, r.high], "n": r.n}
                       for r in series]}


def _record(*, curve: str, group: str, series: Sequence[SeriesRow], evidence: dict[str, Any],
            **fields: Any) -> dict[str, Any]:
    """A tracking finding: what both kinds share (subject, evidence of every point, no
    decoder validity of its own, no threshold) around ``fields``."""
    from audit.measure.findings import finding_record

    return finding_record(**_subject(curve, group), threshold=None,
                          evidence={**_evidence(series), "curve": curve, **evidence},
                          validity={"decodable": None, "balanced_accuracy": None,
                                    "group_accuracy": {}},
                          confidence="normal", **fields)


def _sentence(curve: str) -> str:
    """The curve in words, capitalised to start a sentence."""
    words = curve_words(curve)
    return words[:1].upper() + words[1:]


def _per(series: Sequence[SeriesRow]) -> str:
    return "unit of the setting" if any(r.setting is not None for r in series) else "point"


def _trend_finding(trend: CurveTrend, series: Sequence[SeriesRow], *, baseline: str,
                   settings: TrendSettings) -> dict[str, Any]:
    from audit.formatting import pvalue

    usable = _usable(series)
    last = usable[-1] if usable else None
    slope, change = trend.slope or 0.0, trend.change or 0.0  # (set: tested curves only)
    low, high = trend.slope_ci or (math.nan, math.nan)
    severity = _severity(trend.p_holm, trend.p_bh, _big(trend.family, change, last, settings),
                         settings.alpha)
    word = "rises" if change > 0 else "falls"  # along the points' order
    ns = [r.n for r in series if r.n is not None]
    return _record(
        id=f"F-TRD-{_slug(trend.curve)}-{_slug(trend.group)}", kind="trend",
        severity=severity, curve=trend.curve, group=trend.group, series=series,
        metric="slope", value=slope, ci=[low, high], n=min(ns) if ns else None,
        p_value=trend.p_value, p_holm=trend.p_holm, p_bh=trend.p_bh,
        evidence={"fitted_change": change, "method": trend.method,
                  "n_points": trend.n_points, "baseline": baseline},
        summary=(f"{_sentence(trend.curve)} of "
                 f"{trend.group} {word} from {series[0].point} to {series[-1].point} "
                 f"({trend.n_points} points): {change:+.3g} over the range, {slope:+.3g} per "
                 f"{_per(series)} ({low:+.3g} to {high:+.3g}); Holm-corrected p = "
                 f"{pvalue(trend.p_holm)} ({trend.method})."))


def _change_finding(change: CurveChange, series: Sequence[SeriesRow], *,
                    settings: TrendSettings) -> dict[str, Any]:
    from audit.formatting import pvalue

    family = curve_family(change.curve)
    at = next(r for r in series if r.point == change.point)
    severity = _severity(change.p_holm, change.p_bh,
                         _big(family, change.difference, at, settings), settings.alpha)
    return _record(
        id=f"F-CHG-{_slug(change.curve)}-{_slug(change.group)}-{_slug(change.point)}",
        kind="change_point", severity=severity, curve=change.curve, group=change.group,
        series=series, metric="difference_from_baseline", value=change.difference,
        ci=list(change.ci), n=at.n, p_value=change.p_value, p_holm=change.p_holm,
        p_bh=change.p_bh, evidence={"point": change.point, "baseline": change.baseline},
        summary=(f"{_sentence(change.curve)} of "
                 f"{change.group} at {change.point} differs from the "
                 f"baseline {change.baseline} by {change.difference:+.3g} "
                 f"({change.ci[0]:+.3g} to {change.ci[1]:+.3g}, n = {at.n}); "
                 f"Holm-corrected p = {pvalue(change.p_holm)}."))


def trends_to_findings(trends: Sequence[CurveTrend], changes: Sequence[CurveChange],
                       rows: Sequence[SeriesRow], *, baseline: str,
                       settings: TrendSettings = TrendSettings()) -> list[dict[str, Any]]:
    """The findings of a tracking run, most severe first (results.json's finding fields).

    ``F-TRD-<curve>-<group>`` (kind ``trend``) for each bias curve whose trend test has a raw
    p-value under ``alpha``; ``F-CHG-<curve>-<group>-<point>`` (kind ``change_point``) for
    each change point significant after Benjamini-Hochberg. Severity: high when
    Holm-significant and big (a share moving by ``high_gap`` or more over the range; an
    impact ratio falling to under ``impact_threshold``), medium when BH-significant, else low.
    """
    from audit.vocabulary import severity_rank

    by_curve = rows_by_curve(rows)
    out = [_trend_finding(t, by_curve[(t.curve, t.group)], baseline=baseline,
                          settings=settings)
           for t in trends if t.bias and t.p_value is not None and t.p_value < settings.alpha]
    out += [_change_finding(c, by_curve[(c.curve, c.group)], settings=settings)
            for c in changes if c.p_bh is not None and c.p_bh < settings.alpha]
    return sorted(out, key=lambda f: (severity_rank(f["severity"]), f["kind"] != "trend",
                                      f["id"]))
