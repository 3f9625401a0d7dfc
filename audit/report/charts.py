"""Charts of the report: matplotlib (Agg) figures turned into inline SVG.

Every chart function takes plain numbers and returns a :class:`Chart`: the SVG
markup (text kept as text, so a reader can search it and a PDF keeps it), a
title, and an alt text that says in words what the chart shows. Templates put
the SVG inline, so the report needs no file and no network.

matplotlib is imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import io
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from audit.formatting import finite, number, percent, significant
from audit.report.viewtypes import Chart, Estimate

__all__ = [
    "Chart",
    "Estimate",
    "representation_chart",
    "forest_plot",
    "layer_sweep_chart",
    "score_distribution_chart",
]

#: Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000")
_LINESTYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _figure(width: float, height: float) -> Any:
    """A fresh matplotlib Figure (no pyplot, so no global state and no GUI)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=72)


def _margins(fig: Any, *, left: float, bottom: float, right: float = 0.15,
             top: float = 0.4) -> None:
    """Fixed margins in inches (constrained layout would double the drawing time)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=min(left / w, 0.6), right=1 - right / w,
                        bottom=min(bottom / h, 0.6), top=1 - top / h)


def _label_width(labels: Sequence[str], size: float = 9) -> float:
    """Rough width in inches of the longest tick label at ``size`` points."""
    longest = max((len(str(x)) for x in labels), default=1)
    return 0.55 * size / 72 * longest


_PROLOG = re.compile(r"^.*?(?=<svg)", re.DOTALL)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


def _to_svg(fig: Any, *, key: str, title: str, alt: str, caption: str = "") -> Chart:
    """Render ``fig`` to SVG text fit for inlining in HTML.

    The XML prolog, doctype and metadata are dropped; the root gets ``role="img"``,
    an ``aria-label`` (the alt text) and a ``<title>``. ``key`` salts matplotlib's
    element ids so that two charts in one page never share an id.
    """
    from html import escape

    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": key}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = _METADATA.sub("", _PROLOG.sub("", buf.getvalue(), count=1))
    label = escape(alt, quote=True)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{label}" class="chart-svg" ', 1)
    head_end = svg.index(">") + 1
    svg = svg[:head_end] + f"\n <title>{escape(title)}</title>" + svg[head_end:]
    return Chart(svg=svg, title=title, alt=alt, caption=caption)


def _style_axes(ax: Any) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(labelsize=9)
    ax.grid(axis="both", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


def _err(estimates: Sequence[Estimate]) -> tuple[list[float], list[list[float]]]:
    """Values and asymmetric error bars (NaN where missing, so nothing is drawn)."""
    values, lower, upper = [], [], []
    for e in estimates:
        v = e.value if finite(e.value) else math.nan
        values.append(v)
        lo = e.lo if finite(e.lo) and math.isfinite(v) else v
        hi = e.hi if finite(e.hi) and math.isfinite(v) else v
        lower.append(max(v - lo, 0.0) if math.isfinite(v) else 0.0)
        upper.append(max(hi - v, 0.0) if math.isfinite(v) else 0.0)
    return values, [lower, upper]



def representation_chart(concept: str, groups: Sequence[str],
                         series: Mapping[str, Sequence[Estimate]], *, level: float = 0.95,
                         key: str = "") -> Chart:
    """Grouped bar chart of group shares with interval error bars.

    Parameters
    ----------
    concept
        The concept's name (used in the title).
    groups
        The K group names, in order.
    series
        Label -> K estimates of the share (fraction in [0, 1]) of each group,
        e.g. ``{"real": ..., "generated (raw)": ..., "generated (corrected)": ...}``.
    level
        Confidence level of the intervals (for the alt text).
    """
    title = f"Representation of {concept}: share of each group"
    k = max(len(groups), 1)
    width = min(6.8, 4.2 + 0.3 * k)
    fig = _figure(width, 2.9)
    ax = fig.add_subplot()
    n_series = max(len(series), 1)
    bar_w = 0.8 / n_series
    alt_parts = []
    for i, (label, ests) in enumerate(series.items()):
        values, err = _err(ests)
        xs = [j + (i - (n_series - 1) / 2) * bar_w for j in range(len(groups))]
        ax.bar(xs, [0 if math.isnan(v) else v for v in values], bar_w * 0.95, yerr=err,
               capsize=2, color=PALETTE[i % len(PALETTE)], label=label,
               hatch=(None, "//", "\\\\", "xx")[i % 4], edgecolor="white", linewidth=0.3,
               error_kw={"elinewidth": 0.9, "ecolor": "#222222"})
        alt_parts.append(f"{label}: " + ", ".join(
            f"{g} {percent(e.value)} ({percent(e.lo)} to {percent(e.hi)})"
            for g, e in zip(groups, ests, strict=False)))
    rotate = k > 6 or sum(len(str(g)) for g in groups) > 60
    ax.set_xticks(range(len(groups)), [str(g) for g in groups],
                  rotation=30 if rotate else 0, ha="right" if rotate else "center")
    _margins(fig, left=0.7, right=1.75,
             bottom=0.55 + (_label_width(groups) * 0.5 if rotate else 0))
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(_percent_formatter())
    ax.set_xlabel(f"group of {concept}")
    ax.set_ylabel("share of images")
    ax.set_title(title, fontsize=10)
    _style_axes(ax)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    alt = (f"Bar chart of the share of each group of {concept} among images, with "
           f"{percent(level, digits=0)} interval error bars. " + "; ".join(alt_parts) + ".")
    caption = (f"Bars: share of each group among real images, generated images as decoded, and "
               f"generated images corrected for decoder error; whiskers: "
               f"{percent(level, digits=0)} intervals.")
    return _to_svg(fig, key=key or f"rep-{concept}", title=title, alt=alt, caption=caption)


def _percent_formatter() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)


def forest_plot(rows: Sequence[tuple[str, Estimate]], *, threshold: float = 0.8,
                title: str = "Impact ratios with intervals", key: str = "forest",
                xlabel: str = "impact ratio (group rate / highest group rate)") -> Chart:
    """Forest plot: one row per (concept, group) with its ratio and interval.

    Parameters
    ----------
    rows
        ``(label, estimate)`` pairs, drawn top to bottom; ratios are unitless.
    threshold
        The four-fifths line (drawn dashed); points left of it are filled red.
    """
    n = max(len(rows), 1)
    fig = _figure(6.8, min(1.2 + 0.24 * n, 9.0))
    ax = fig.add_subplot()
    ys = list(range(n))[::-1]
    values, err = _err([e for _, e in rows])
    below = [math.isfinite(v) and v < threshold for v in values]
    for y, v, lo, hi, b in zip(ys, values, err[0], err[1], below, strict=False):
        if not math.isfinite(v):
            continue
        ax.errorbar([v], [y], xerr=[[lo], [hi]], fmt="s" if b else "o",
                    color=PALETTE[5] if b else PALETTE[0], markersize=5, capsize=2,
                    elinewidth=1.0)
    ax.axvline(threshold, color="#D55E00", linestyle="--", linewidth=1.0,
               label=f"four-fifths line ({significant(threshold, 6)})")
    ax.axvline(1.0, color="#888888", linestyle=":", linewidth=0.8, label="parity (1.0)")
    ax.set_yticks(ys, [label for label, _ in rows] or [""], fontsize=8 if n > 20 else 9)
    finite = [v + h for v, h in zip(values, err[1], strict=False) if math.isfinite(v)]
    ax.set_xlim(0, max([1.1, threshold + 0.1, *finite]) * 1.02)
    ax.set_ylim(-0.7, n - 0.3)
    _margins(fig, left=0.5 + _label_width([label for label, _ in rows],
                                          8 if n > 20 else 9), bottom=0.55, right=1.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("group")
    ax.set_title(title, fontsize=10)
    _style_axes(ax)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    n_below = sum(below)
    alt = (f"Forest plot of {len(rows)} impact ratios with intervals and a dashed line at "
           f"{significant(threshold, 6)}; {n_below} point estimate(s) fall below it. " + "; ".join(
               f"{label}: {number(e.value, 2)} ({number(e.lo, 2)} to {number(e.hi, 2)})" if e.ok
               else f"{label}: not available" for label, e in rows) + ".")
    caption = (f"Points: impact ratio of each group; whiskers: intervals; dashed line: the "
               f"four-fifths threshold ({significant(threshold, 6)}); {n_below} of {len(rows)} "
               f"below it (square markers).")
    return _to_svg(fig, key=key, title=title, alt=alt, caption=caption)



def layer_sweep_chart(layers: Sequence[str], scores: Mapping[str, Mapping[str, float]], *,
                      metric: str = "score", best: Mapping[str, str] | None = None,
                      key: str = "layers") -> Chart:
    """Held-out decoder score per layer, one line per concept; the chosen layer is ringed.

    Parameters
    ----------
    layers
        Layer names in network order (x axis).
    scores
        Concept -> layer -> held-out score (e.g. macro AUROC, in [0, 1]).
    best
        Concept -> chosen layer, marked with an open circle.
    """
    best = best or {}
    title = f"Layer sweep: held-out {metric} of each concept's decoder per layer"
    n = len(scores)
    fig = _figure(6.6, 3.2 if n <= 8 else 3.2 + 0.12 * min(n - 8, 32))
    ax = fig.add_subplot()
    xs = list(range(len(layers)))
    for i, (concept, per_layer) in enumerate(scores.items()):
        ys = [per_layer.get(layer, math.nan) for layer in layers]
        ys = [y if finite(y) else math.nan for y in ys]
        ax.plot(xs, ys, color=PALETTE[i % len(PALETTE)],
                linestyle=_LINESTYLES[(i // len(PALETTE)) % len(_LINESTYLES)],
                marker=_MARKERS[i % len(_MARKERS)], markersize=3.5, linewidth=1.2,
                label=concept)
        chosen = best.get(concept)
        if chosen in layers:
            j = list(layers).index(chosen)
            if math.isfinite(ys[j]):
                ax.plot([j], [ys[j]], "o", markersize=9, markerfacecolor="none",
                        markeredgecolor="#000000", markeredgewidth=0.9)
    rotate = len(layers) > 5
    ax.set_xticks(xs, list(layers), rotation=30 if rotate else 0, fontsize=8,
                  ha="right" if rotate else "center")
    legend_w = (_label_width(list(scores), 7) + 0.4) * (1 if n <= 14 else 2)
    _margins(fig, left=0.7, right=legend_w,
             bottom=0.55 + (_label_width(layers, 8) * 0.5 if rotate else 0))
    ax.set_xlabel("discriminator layer (input side to output side)")
    ax.set_ylabel(f"held-out {metric}")
    ax.set_title(title, fontsize=10)
    _style_axes(ax)
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5),
              ncol=1 if n <= 14 else 2)
    alt = (f"Line chart of the held-out {metric} of the decoder of each of {n} concept(s) at "
           f"each of {len(layers)} layer(s) ({', '.join(layers)}); a ring marks the layer "
           f"chosen. " + "; ".join(
               f"{c}: best {best.get(c, 'n/a')} at "
               f"{number(s.get(best.get(c, ''), math.nan), 2)}" for c, s in scores.items()) + ".")
    caption = (f"Lines: held-out {metric} of each concept's decoder at each layer; rings: the "
               f"layer chosen for the audit.")
    return _to_svg(fig, key=key, title=title, alt=alt, caption=caption)


def score_distribution_chart(concept: str, edges: Sequence[float],
                             counts: Mapping[str, Sequence[float]], *,
                             source: str = "real", threshold: float | None = None,
                             median: float | None = None, key: str = "") -> Chart:
    """Discriminator score distribution of each group of a concept, as step histograms.

    Parameters
    ----------
    concept
        The concept's name (title and alt text).
    edges
        B + 1 increasing bin edges of the discriminator score (its output units, e.g.
        logits).
    counts
        Group -> B counts of images per bin; a group's size (the sum) is in the legend.
    source
        Which images were counted (``real`` or ``generated``).
    threshold
        The acceptance threshold (score above it: accepted as real), drawn dashed.
    median
        The median score of all real images (the scoring rate's cut), drawn dotted.

    With equal-width bins the y axis is the share of the group's images in each bin;
    with unequal widths it is a density (share per score unit), so areas compare.
    """
    title = f"Discriminator score distribution by group of {concept} ({source} images)"
    fig = _figure(6.6, 3.0)
    ax = fig.add_subplot()
    widths = [b - a for a, b in itertools.pairwise(edges)]
    equal = bool(widths) and max(widths) - min(widths) <= 1e-9 * max(abs(max(widths)), 1.0)
    mids = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    alt_parts = []
    for i, (group, c) in enumerate(counts.items()):
        total = float(sum(c))
        if total <= 0:
            alt_parts.append(f"{group}: no images")
            continue
        heights = [x / total if equal else (x / total / w if w > 0 else 0.0)
                   for x, w in zip(c, widths, strict=False)]
        ax.stairs(heights, list(edges), color=PALETTE[i % len(PALETTE)],
                  linestyle=_LINESTYLES[i % len(_LINESTYLES)], linewidth=1.5,
                  label=f"{group} (n={int(total)})")
        mean = sum(m * x for m, x in zip(mids, c, strict=False)) / total
        part = f"{group}: n={int(total)}, mean about {number(mean, 2)}"
        if threshold is not None and finite(threshold):
            above = sum(x for m, x in zip(mids, c, strict=False) if m > threshold) / total
            part += f", about {percent(above, digits=0)} above the acceptance threshold"
        alt_parts.append(part)
    lines = []
    if threshold is not None and finite(threshold):
        ax.axvline(threshold, color="#000000", linestyle=(0, (6, 2)), linewidth=1.3,
                   label=f"acceptance threshold ({significant(threshold)})")
        lines.append(f"a dashed line marks the acceptance threshold ({significant(threshold)})")
    if median is not None and finite(median):
        ax.axvline(median, color="#666666", linestyle=":", linewidth=1.5,
                   label=f"median real score ({significant(median)})")
        lines.append(f"a dotted line the median score of all real images ({significant(median)}), "
                     f"the cut of the scoring rate")
    legend_w = _label_width([f"acceptance threshold ({threshold})", *counts], 8) + 0.3
    _margins(fig, left=0.75, bottom=0.55, right=min(legend_w, 2.6))
    ax.set_xlabel("discriminator score (the discriminator's output units)")
    if equal:
        ax.set_ylabel("share of the group's images")
        ax.yaxis.set_major_formatter(_percent_formatter())
    else:
        ax.set_ylabel("density (share per score unit)")
    ax.set_title(title, fontsize=10)
    _style_axes(ax)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    alt = (f"Step histograms of the discriminator score of {source} images for each group of "
           f"{concept}" + (f"; {' and '.join(lines)}" if lines else "") + ". "
           + "; ".join(alt_parts) + ".")
    caption = ("Lines: the share of each group's images in each score bin (each group sums "
               "to 100%); dashed: the acceptance threshold (to its right: accepted as real); "
               "dotted: the median real score (to its right: counted in the scoring rate)."
               if equal else
               "Lines: density of the discriminator score of each group (area 1 per group); "
               "dashed: the acceptance threshold; dotted: the median real score.")
    return _to_svg(fig, key=key or f"scores-{concept}-{source}", title=title, alt=alt,
                   caption=caption)
