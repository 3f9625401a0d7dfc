"""Charts of the monitoring report: one curve per group over the points, with intervals.

Built on the report's chart helpers (:mod:`audit.report.charts`: matplotlib Agg, inline
SVG with a title, axes and alt text); no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from audit.formatting import number
from audit.report.charts import (
    _LINESTYLES,
    _MARKERS,
    PALETTE,
    _err,
    _figure,
    _margins,
    _style_axes,
    _to_svg,
)
from audit.report.viewtypes import Chart, Estimate

__all__ = ["curve_chart"]


def curve_chart(title: str, points: Sequence[str], series: Mapping[str, Sequence[Estimate]], *,
                x_label: str, y_label: str, threshold: float | None = None,
                key: str, unit_interval: bool = False) -> Chart:
    """Lines over the points, one per group, with 95% interval whiskers.

    Parameters
    ----------
    title
        The chart's title (also its SVG ``<title>``).
    points
        The x axis: point names in order (checkpoints or settings).
    series
        Group label -> one estimate per point (None values are gaps).
    x_label, y_label
        Axis labels (the y label says the unit).
    threshold
        A horizontal reference line (e.g. the four-fifths threshold 0.8).
    key
        Salt of the SVG's element ids (unique per page).
    unit_interval
        Fix the y axis to [0, 1] (shares, rates, AUCs).
    """
    fig = _figure(6.6, 2.9)
    ax = fig.add_subplot()
    xs = list(range(len(points)))
    alt_parts = []
    for i, (label, ests) in enumerate(series.items()):
        values, err = _err(ests)
        offset = (i - (len(series) - 1) / 2) * 0.04
        ax.errorbar([x + offset for x in xs], values, yerr=err, capsize=2, label=label,
                    color=PALETTE[i % len(PALETTE)], linestyle=_LINESTYLES[i % len(_LINESTYLES)],
                    marker=_MARKERS[i % len(_MARKERS)], markersize=4, linewidth=1.2,
                    elinewidth=0.8)
        alt_parts.append(f"{label}: " + ", ".join(
            f"{p} {number(e.value)}" + (f" ({number(e.lo)} to {number(e.hi)})"
                                        if e.lo is not None and e.hi is not None else "")
            for p, e in zip(points, ests, strict=False)
            if e.value is not None and math.isfinite(e.value)))
    if threshold is not None:
        ax.axhline(threshold, color="#444444", linestyle=":", linewidth=1)
    rotate = len(points) > 8 or sum(len(p) for p in points) > 60
    ax.set_xticks(xs, list(points), rotation=30 if rotate else 0,
                  ha="right" if rotate else "center")
    if unit_interval:
        ax.set_ylim(0, 1)
    _margins(fig, left=0.75, right=1.9, bottom=1.3 if rotate else 0.55)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    _style_axes(ax)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    extra = f"; dotted line at {number(threshold)}" if threshold is not None else ""
    alt = (f"Line chart: {y_label} (y axis) at each {x_label} (x axis: "
           f"{', '.join(points)}), one line per group with 95% interval whiskers{extra}. "
           + "; ".join(alt_parts) + ".")
    return _to_svg(fig, key=key, title=title, alt=alt,
                   caption=f"Each line: one group; whiskers: 95% intervals; x: {x_label}.")
