"""Charts of the report's insight section (see :mod:`audit.insight`), inline SVG.

Same conventions as :mod:`audit.report.charts` (whose helpers they use): plain numbers
in, a :class:`~audit.report.charts.Chart` with title and alt text out; matplotlib is
imported on first use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from audit.formatting import finite, number
from audit.report.charts import (
    _LINESTYLES,
    _MARKERS,
    PALETTE,
    _err,
    _figure,
    _label_width,
    _margins,
    _style_axes,
    _to_svg,
)
from audit.report.viewtypes import Chart, Estimate

__all__ = ["interpolation_chart", "cka_heatmap", "lift_chart", "entropy_chart",
           "curves_chart"]


def interpolation_chart(t: Sequence[float], series: Mapping[str, Sequence[float]],
                        scores: Sequence[float] | None = None, *, title: str,
                        key: str) -> Chart:
    """Decoded probabilities along a latent path, one line per concept group.

    Parameters
    ----------
    t
        S positions along the path (0 = start, 1 = end).
    series
        Label (e.g. ``"tone: dark"``) -> S probabilities in [0, 1].
    scores
        S discriminator scores (logits), drawn dotted on a second axis.
    """
    fig = _figure(6.6, 2.8)
    ax = fig.add_subplot()
    for i, (label, values) in enumerate(series.items()):
        ax.plot(list(t), [v if finite(v) else math.nan for v in values],
                color=PALETTE[i % len(PALETTE)], linestyle=_LINESTYLES[i % len(_LINESTYLES)],
                marker=_MARKERS[i % len(_MARKERS)], markersize=3.5, linewidth=1.3, label=label)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlim(0, 1)
    ax.set_xlabel("position along the path (0 = start image, 1 = end image)")
    ax.set_ylabel("decoded probability")
    if scores is not None and len(scores):
        ax2 = ax.twinx()
        ax2.plot(list(t), list(scores), color="#555555", linestyle=":", linewidth=1.2,
                 label="D score (right axis)")
        ax2.set_ylabel("discriminator score", fontsize=9)
        ax2.tick_params(labelsize=8)
        ax2.spines["top"].set_visible(False)
    _style_axes(ax)
    legend_w = _label_width([*series, "D score (right axis)"], 7) + 1.5
    _margins(fig, left=0.7, bottom=0.55, right=legend_w)
    handles, labels = ax.get_legend_handles_labels()
    if scores is not None and len(scores):
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=7, frameon=False, loc="center left",
              bbox_to_anchor=(1.2, 0.5))
    ax.set_title(title, fontsize=10)
    alt = (f"Line chart of decoded probabilities at {len(t)} steps of a latent path. " + "; ".join(
        f"{label}: from {number(v[0], 2)} to {number(v[-1], 2)}"
        for label, v in series.items() if len(v))
        + (f"; discriminator score from {number(scores[0], 2)} to {number(scores[-1], 2)}"
           if scores is not None and len(scores) else "") + ".")
    return _to_svg(fig, key=key, title=title, alt=alt,
                   caption="Lines: probability the decoders give each group at each step; "
                           "dotted: the discriminator's score.")


def cka_heatmap(layers: Sequence[str], matrix: Sequence[Sequence[float]], *,
                key: str = "cka") -> Chart:
    """Heat map of linear CKA between every pair of layers (values in [0, 1], printed)."""
    n = len(layers)
    title = "Linear CKA between the recorded layers"
    size = min(2.2 + 0.45 * n, 7.0)
    fig = _figure(size + 1.2, size)
    ax = fig.add_subplot()
    data = [[v if finite(v) else math.nan for v in row] for row in matrix]
    im = ax.imshow(data, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(n), list(layers), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), list(layers), fontsize=8)
    for i in range(n):
        for j in range(n):
            v = data[i][j]
            ax.text(j, i, number(v, 2), ha="center", va="center",
                    fontsize=7 if n > 6 else 8, color="white" if finite(v) and v > 0.6
                    else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
    lw = _label_width(layers, 8)
    _margins(fig, left=0.3 + lw, bottom=0.3 + lw * 0.75, right=0.9)
    ax.set_title(title, fontsize=10)
    pairs = [f"{layers[i]} and {layers[j]}: {number(data[i][j], 2)}"
             for i in range(n) for j in range(i + 1, n)]
    alt = (f"Heat map of the linear CKA of each pair of {n} layers (1 on the diagonal). "
           + "; ".join(pairs) + ".")
    return _to_svg(fig, key=key, title=title, alt=alt,
                   caption="Cells: linear CKA of the pooled activations of the same images at "
                           "two layers (1: the same information up to rotation and scale).")


def lift_chart(rows: Sequence[tuple[str, Estimate]], *, key: str = "lift",
               title: str = "Over-representation among the lowest-scored images") -> Chart:
    """Forest plot of lifts (share among the lowest-scored / share among all), line at 1."""
    n = max(len(rows), 1)
    fig = _figure(6.8, min(1.2 + 0.24 * n, 9.0))
    ax = fig.add_subplot()
    ys = list(range(n))[::-1]
    values, err = _err([e for _, e in rows])
    for y, v, lo, hi, (_, e) in zip(ys, values, err[0], err[1], rows, strict=False):
        if not math.isfinite(v):
            continue
        above = finite(e.lo) and e.lo > 1
        ax.errorbar([v], [y], xerr=[[lo], [hi]], fmt="s" if above else "o",
                    color=PALETTE[5] if above else PALETTE[0], markersize=5, capsize=2,
                    elinewidth=1.0)
    ax.axvline(1.0, color="#888888", linestyle="--", linewidth=1.0, label="lift = 1")
    ax.set_yticks(ys, [label for label, _ in rows] or [""], fontsize=8 if n > 20 else 9)
    reach = [v + h for v, h in zip(values, err[1], strict=False) if math.isfinite(v)]
    ax.set_xlim(0, max([1.5, *reach]) * 1.05)
    ax.set_ylim(-0.7, n - 0.3)
    _margins(fig, left=0.5 + _label_width([label for label, _ in rows], 9), bottom=0.55,
             right=1.6)
    ax.set_xlabel("lift (share among the lowest-scored / share among all)")
    ax.set_title(title, fontsize=10)
    _style_axes(ax)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    n_above = sum(1 for _, e in rows if finite(e.lo) and e.lo > 1)
    alt = (f"Forest plot of {len(rows)} lifts with intervals and a dashed line at 1; "
           f"{n_above} interval(s) lie above 1. " + "; ".join(
               f"{label}: {number(e.value, 2)} ({number(e.lo, 2)} to {number(e.hi, 2)})" if e.ok
               else f"{label}: not available" for label, e in rows) + ".")
    return _to_svg(fig, key=key, title=title, alt=alt,
                   caption=f"Points: lift of each group among the images the discriminator "
                           f"scores lowest; whiskers: intervals; squares: interval above 1 "
                           f"({n_above} of {len(rows)}).")


def entropy_chart(concepts: Sequence[str], real: Sequence[float | None],
                  generated: Sequence[float | None], *, key: str = "entropy") -> Chart:
    """Grouped bars: normalised entropy of each concept's groups, real against generated."""
    title = "Entropy of each concept's groups: real against generated"
    k = max(len(concepts), 1)
    fig = _figure(min(6.8, 3.4 + 0.45 * k), 2.7)
    ax = fig.add_subplot()
    for i, (label, vals) in enumerate((("real", real), ("generated", generated))):
        xs = [j + (i - 0.5) * 0.38 for j in range(len(concepts))]
        ax.bar(xs, [v if finite(v) else 0 for v in vals], 0.36, color=PALETTE[i],
               hatch=(None, "//")[i], edgecolor="white", linewidth=0.3, label=label)
    ax.set_xticks(range(len(concepts)), list(concepts), fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("entropy / log K")
    _style_axes(ax)
    _margins(fig, left=0.7, bottom=0.45, right=1.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=10)
    alt = ("Bar chart of the normalised entropy of each concept's decoded groups among real and "
           "generated images. " + "; ".join(f"{c}: real {number(r, 2)}, generated {number(g, 2)}"
                                            for c, r, g in zip(concepts, real, generated,
                                                               strict=False)) + ".")
    return _to_svg(fig, key=key, title=title, alt=alt,
                   caption="Bars: entropy of the decoded groups divided by log K (1: all groups "
                           "equally frequent, 0: one group only).")


def curves_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                 xlabel: str, ylabel: str, title: str, key: str = "curves",
                 limit: float | None = None, limit_label: str = "",
                 xticks: Sequence[str] | None = None) -> Chart:
    """Lines of (steps, values) per label, with an optional dashed horizontal limit.

    ``xticks`` names the integer steps 0, 1, ... (e.g. layer names).
    """
    fig = _figure(6.4, 2.7)
    ax = fig.add_subplot()
    for i, (label, (xs, ys)) in enumerate(series.items()):
        ax.plot(list(xs), list(ys), color=PALETTE[i % len(PALETTE)],
                linestyle=_LINESTYLES[(i // len(PALETTE)) % len(_LINESTYLES)],
                marker=_MARKERS[i % len(_MARKERS)], markersize=3.5, linewidth=1.2, label=label)
    if limit is not None:
        ax.axhline(limit, color="#D55E00", linestyle="--", linewidth=1.0, label=limit_label)
    if xticks is not None:
        ax.set_xticks(range(len(xticks)), list(xticks), fontsize=8, rotation=30, ha="right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _style_axes(ax)
    _margins(fig, left=0.7, right=_label_width([*series, limit_label], 7) + 0.5,
             bottom=0.55 + (_label_width(xticks, 8) * 0.5 if xticks else 0))
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(title, fontsize=10)
    alt = (f"Line chart: {title}. " + "; ".join(
        f"{label}: {len(ys)} points, last {number(ys[-1], 2) if len(ys) else 'n/a'}"
        for label, (_, ys) in series.items()) + ".")
    return _to_svg(fig, key=key, title=title, alt=alt)
