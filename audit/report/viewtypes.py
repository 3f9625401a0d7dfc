"""The report's view types and the readers that build them, shared by every view module.

Pure and cheap (no matplotlib, no jinja): :mod:`audit.report.view`,
:mod:`audit.report.insight_view`, :mod:`audit.report.compare` and
:mod:`audit.report.charts` import from here and never from one another's internals, so the
package has no import cycle.

The ``as_*`` readers take a value from a JSON document that may be missing or of the wrong
type and return a value of the stated type (an absent part reads as empty, a non-finite
number as None), so a view built from them has attributes that always exist.

>>> num_from({"value": 0.25, "ci": [0.2, 0.3], "n": 40, "k": 10})
Num(value=0.25, lo=0.2, hi=0.3, n=40, k=10, unbounded=None)
>>> as_float(float("nan")), as_int(3.0), as_list({"a": 1}), as_dict(None)
(None, 3, [], {})
>>> flatten({"a": {"b": 1, "c": {}}, "d": 2})
{'a.b': 1, 'a.c': {}, 'd': 2}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audit.formatting import finite

__all__ = ["Unavailable", "Chart", "Estimate", "Num", "num_from", "as_float", "as_int",
           "as_list", "as_dict", "as_str", "flatten"]


@dataclass(frozen=True)
class Unavailable:
    """A part of the report that cannot be shown, and why (plain text)."""

    reason: str
    available: bool = False


@dataclass(frozen=True)
class Chart:
    """An inline SVG chart with its title and alt text (both plain text)."""

    svg: str
    title: str
    alt: str
    caption: str = ""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval; any part may be missing (None)."""

    value: float | None
    lo: float | None = None
    hi: float | None = None

    @property
    def ok(self) -> bool:
        return finite(self.value)


@dataclass(frozen=True)
class Num:
    """A number with its interval and the group size it rests on (``k`` successes of ``n``)."""

    value: float | None
    lo: float | None = None
    hi: float | None = None
    n: int | None = None
    k: int | None = None
    unbounded: str | None = None

    @property
    def ok(self) -> bool:
        return finite(self.value)

    @property
    def has_ci(self) -> bool:
        return finite(self.lo) and finite(self.hi)

    def estimate(self) -> Estimate:
        return Estimate(self.value, self.lo, self.hi)


def as_float(x: Any) -> float | None:
    """``x`` as a float when it is a finite number, else None."""
    return float(x) if finite(x) else None


def as_int(x: Any) -> int | None:
    """``x`` as an int when it is a finite number, else None."""
    return int(x) if finite(x) else None


def as_list(x: Any) -> list[Any]:
    """``x`` as a list when it is one, else ``[]``."""
    return list(x) if isinstance(x, list) else []


def as_dict(x: Any) -> dict[str, Any]:
    """``x`` as a dict when it is a mapping, else ``{}``."""
    return dict(x) if isinstance(x, Mapping) else {}


def as_str(x: Any) -> str | None:
    """``x`` as text, None staying None."""
    return None if x is None else str(x)


def num_from(d: Any, *, value: Any = None, ci: Any = None, n: Any = None) -> Num:
    """A :class:`Num` from a schema ``estimate`` ({value, ci, n, k}) or loose parts."""
    unbounded = None
    if isinstance(d, Mapping):
        value, ci, n = d.get("value"), d.get("ci"), d.get("n")
        k = d.get("k")
        unbounded = str(d["unbounded"]) if d.get("unbounded") else None
    else:
        value = d if d is not None else value
        k = None
    lo = hi = None
    if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2:
        lo, hi = as_float(ci[0]), as_float(ci[1])
    return Num(as_float(value), lo, hi, as_int(n), as_int(k), unbounded)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b": value}`` (an empty mapping stays a value)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
