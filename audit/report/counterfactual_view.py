"""The report's counterfactual treatment section (issue 22 item 4): results.json's
``counterfactual`` section and the strips of edited images -> template context and a chart.

Pure: documents and PNG bytes in, plain data and inline SVG out (no torch, no files).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from audit.formatting import finite, number
from audit.report.charts import PALETTE, _figure, _label_width, _margins, _style_axes, _to_svg
from audit.report.viewtypes import Chart, as_dict, as_list

__all__ = ["STRIP_PREFIX", "CounterfactualRow", "CounterfactualView", "counterfactual_view",
           "effect_chart"]

#: Key prefix of the strips in the report's samples mapping (``samples/counterfactual/``).
STRIP_PREFIX = "counterfactual/"


@dataclass(frozen=True)
class CounterfactualRow:
    """One edited direction as the report shows it."""

    concept: str
    group: str
    value: float | None
    lo: float | None
    hi: float | None
    n: int | None
    p_holm: float | None
    significant: bool
    unadjusted: float | None
    concept_change: float | None
    leakage: dict[str, float | None]
    leakage_ratio: float | None
    large_leakage: bool
    r2: float | None
    strip: bytes | None
    strip_name: str | None
    strip_latents: int | None = None

    @property
    def label(self) -> str:
        return f"{self.concept} = {self.group}"


@dataclass(frozen=True)
class CounterfactualView:
    """The section's context: ``available`` False (with ``reason``) when the test was not
    run."""

    available: bool
    reason: str = ""
    rows: list[CounterfactualRow] = field(default_factory=list)
    chart: Chart | None = None
    steps: int | None = None
    span: float | None = None
    n: int | None = None
    confidence: float | None = None
    edited: str | None = None
    caveat: str = ""
    max_leakage: float | None = None


def _num(value: Any) -> float | None:
    return float(value) if finite(value) else None


def _row(entry: Mapping[str, Any], strips: Mapping[str, bytes]) -> CounterfactualRow:
    effect = as_dict(entry.get("effect"))
    ci = as_list(effect.get("ci"))
    name = str(entry.get("strip") or "")
    key = STRIP_PREFIX + name.rpartition("/")[2] if name else ""
    return CounterfactualRow(
        concept=str(entry.get("concept")), group=str(entry.get("group")),
        value=_num(effect.get("value")), lo=_num(ci[0]) if len(ci) == 2 else None,
        hi=_num(ci[1]) if len(ci) == 2 else None, n=effect.get("n"),
        p_holm=_num(entry.get("p_holm")), significant=bool(entry.get("significant")),
        unadjusted=_num(as_dict(entry.get("unadjusted")).get("value")),
        concept_change=_num(entry.get("concept_change")),
        leakage={str(k): _num(v) for k, v in as_dict(entry.get("leakage")).items()},
        leakage_ratio=_num(entry.get("leakage_ratio")),
        large_leakage=bool(entry.get("large_leakage")),
        r2=_num(as_dict(entry.get("direction")).get("r2")),
        strip=strips.get(key), strip_name=name or None,
        strip_latents=as_dict(entry.get("direction")).get("strip_latents"))


def counterfactual_view(results: Mapping[str, Any], samples: Mapping[str, bytes] | None
                        ) -> CounterfactualView:
    """The section's context from results.json (``counterfactual``; absent in results
    written before it existed) and the report's samples (strips under
    :data:`STRIP_PREFIX`)."""
    section = results.get("counterfactual")
    if not isinstance(section, Mapping):
        return CounterfactualView(available=False, reason=(
            "the counterfactual test was not run (set counterfactual: {enabled: true} in the "
            "config; it needs a generator)"))
    rows = [_row(as_dict(e), samples or {}) for e in as_list(section.get("directions"))]
    return CounterfactualView(
        available=True, rows=rows, chart=effect_chart(rows) if rows else None,
        steps=section.get("steps"), span=_num(section.get("span")), n=section.get("n"),
        confidence=_num(section.get("confidence")), edited=section.get("edited"),
        caveat=str(section.get("caveat") or ""), max_leakage=_num(section.get("max_leakage")))


def effect_chart(rows: list[CounterfactualRow], *, key: str = "counterfactual") -> Chart:
    """Effects with intervals (left) and each edit's change of its own and the other
    concepts (right), one row per edited direction."""
    n = len(rows)
    fig = _figure(8.4, min(1.8 + 0.34 * n, 9.0))
    left, right = fig.add_gridspec(1, 2, width_ratios=[1.3, 1.0], wspace=0.45).subplots()
    ys = list(range(n))[::-1]
    for y, r in zip(ys, rows, strict=True):
        if r.value is None:
            continue
        lo = r.value - r.lo if r.lo is not None else 0.0
        hi = r.hi - r.value if r.hi is not None else 0.0
        left.errorbar([r.value], [y], xerr=[[lo], [hi]], fmt="s" if r.significant else "o",
                      color=PALETTE[5] if r.significant else PALETTE[0], markersize=5,
                      capsize=2, elinewidth=1.0)
    left.axvline(0.0, color="#888888", linestyle=":", linewidth=0.8)
    labels = [r.label for r in rows]
    left.set_yticks(ys, labels)
    left.set_ylim(-0.7, n - 0.3)
    left.set_xlabel("D's score per unit of decoded probability")
    left.set_ylabel("edited direction")
    left.set_title("Effect on D's score", fontsize=10)
    others = sorted({c for r in rows for c in r.leakage})
    height = 0.8 / (len(others) + 1)
    for j, concept in enumerate(["(own)", *others]):
        values = [(r.concept_change if concept == "(own)" else r.leakage.get(concept)) or 0.0
                  for r in rows]
        left_y = [y - 0.4 + height * (j + 0.5) for y in ys]
        right.barh(left_y, values, height=height, color=PALETTE[(j + 2) % len(PALETTE)],
                   label="edited concept" if concept == "(own)" else concept)
    right.set_yticks(ys, [""] * n)
    right.set_ylim(-0.7, n - 0.3)
    right.set_xlim(0, 1)
    right.set_xlabel("change, first to last step (TV)")
    right.set_title("What the edit changed", fontsize=10)
    right.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in (left, right):
        _style_axes(ax)
    _margins(fig, left=0.6 + _label_width(labels), bottom=0.6, right=1.6)
    title = "Counterfactual treatment: effects and leakage"
    alt = ("Two panels, one row per edited direction. Left: the change of the discriminator's "
           "score per unit of decoded probability, with intervals and a dotted line at 0. "
           "Right: how much the edit changed its own concept and each other concept. "
           + "; ".join(f"{r.label}: effect {number(r.value, 3)} ({number(r.lo, 3)} to "
                       f"{number(r.hi, 3)}), own change {number(r.concept_change, 2)}, "
                       + ", ".join(f"{c} {number(v, 2)}" for c, v in r.leakage.items())
                       for r in rows) + ".")
    significant = sum(r.significant for r in rows)
    caption = (f"Squares: significant after Holm ({significant} of {n}); whiskers: intervals. "
               f"Bars: mean total variation between the decoded groups at the two ends of the "
               f"edit, for the edited concept and each other concept (the leakage).")
    if any(r.value is not None and not math.isfinite(r.value) for r in rows):
        caption += " Directions without an estimate are not drawn."
    return _to_svg(fig, key=key, title=title, alt=alt, caption=caption)
