"""Numbers for people, formatted one way everywhere (findings, report, charts, comparison).

Every function takes anything and returns text: a value that is missing, not a number
(``None``, NaN, infinity, a bool, a string) reads ``n/a``.

>>> percent(0.1234), percent(0.5, digits=0), points(-0.031), number(2 / 3)
('12.3%', '50%', '-3.1 pp', '0.667')
>>> interval([0.1, 0.25]), interval([0.81, 0.97], kind="num"), interval(None)
('10.0% to 25.0%', '0.810 to 0.970', 'no interval')
>>> pvalue(0.0001), pvalue(0.0412), percent(float("nan")), significant(0.8), significant(2e-05, 2)
('< 0.001', '0.041', 'n/a', '0.8', '2e-05')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["finite", "number", "significant", "percent", "points", "pvalue", "interval", "fmt",
           "KINDS"]


def finite(x: Any) -> bool:
    """True for an int or float that is finite (bools are not numbers here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def number(x: Any, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals, e.g. ``0.812``."""
    return f"{x:.{digits}f}" if finite(x) else "n/a"


def significant(x: Any, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits: ``0.8`` -> ``0.8``, ``1234.5`` -> ``1.23e+03``."""
    return f"{x:.{digits}g}" if finite(x) else "n/a"


def percent(x: Any, digits: int = 1) -> str:
    """A fraction as a percentage, e.g. ``0.123`` -> ``12.3%``."""
    return f"{100 * x:.{digits}f}%" if finite(x) else "n/a"


def points(x: Any, digits: int = 1) -> str:
    """A difference of fractions in percentage points, e.g. ``-0.031`` -> ``-3.1 pp``."""
    return f"{100 * x:.{digits}f} pp" if finite(x) else "n/a"


def pvalue(p: Any) -> str:
    """A p-value with 3 decimals, ``< 0.001`` below that."""
    if not finite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


KINDS = {
    "pct": percent,
    "pct0": lambda x: percent(x, digits=0),
    "pp": points,
    "num": number,
    "num2": lambda x: number(x, digits=2),
    "ratio": number,
    "p": pvalue,
}


def fmt(x: Any, kind: str = "num") -> str:
    """Format ``x`` by kind: ``pct``, ``pct0``, ``pp``, ``num``, ``num2``, ``ratio``, ``p``.

    The report's ``fmt`` filter; an unknown kind raises KeyError (a template bug).
    """
    return KINDS[kind](x)


def interval(ci: Sequence[Any] | None, kind: str = "pct") -> str:
    """An interval ``[lo, hi]`` as ``lo to hi`` in ``kind``; ``no interval`` if missing."""
    if ci is None or len(ci) != 2 or not all(finite(v) for v in ci):
        return "no interval"
    return f"{fmt(ci[0], kind)} to {fmt(ci[1], kind)}"
