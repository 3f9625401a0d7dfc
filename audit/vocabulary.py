"""The audit's words, defined once: severities, verdicts and the four-fifths outcome.

Each is a :class:`enum.StrEnum` whose *value* is a stable identifier (what results.json
stores, what CSS classes and scripts match on) and whose :attr:`label` is the prose a
reader sees. Order matters and is the definition order: severities from the most to the
least severe, verdicts by precedence (the first that applies to a concept wins).

>>> Severity("high") < Severity.LOW          # more severe sorts first
True
>>> sorted(["info", "high", "low"], key=severity_rank)
['high', 'low', 'info']
>>> Verdict.POSSIBLE_ADVERSE_IMPACT.label
'possible adverse impact (not significant)'
>>> label("under_represented"), tone("under_represented")
('under-represented', 'bad')
>>> label("not a vocabulary word")          # other text passes through unchanged
'not a vocabulary word'
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = ["Severity", "Verdict", "FourFifths", "severity_rank", "label", "tone"]


class _Word(StrEnum):
    """A vocabulary word: stable value, prose label, tone (good/warn/info/bad)."""

    @property
    def label(self) -> str:
        """The prose a reader sees, e.g. ``"adverse impact"``."""
        return _LABELS.get(self, self.value.replace("_", " "))

    @property
    def tone(self) -> str:
        """One of ``bad``, ``warn``, ``info``, ``good``: how the report colours it."""
        return _TONES[self]

    @property
    def rank(self) -> int:
        """Position in the definition order (0 = most severe / highest precedence)."""
        return list(type(self)).index(self)

    def __lt__(self, other: object) -> bool:  # order by rank, not alphabetically
        if isinstance(other, type(self)):
            return self.rank < other.rank
        return NotImplemented

    def __le__(self, other: object) -> bool:
        if isinstance(other, type(self)):
            return self.rank <= other.rank
        return NotImplemented

    def __gt__(self, other: object) -> bool:
        if isinstance(other, type(self)):
            return self.rank > other.rank
        return NotImplemented

    def __ge__(self, other: object) -> bool:
        if isinstance(other, type(self)):
            return self.rank >= other.rank
        return NotImplemented


class Severity(_Word):
    """How serious a finding is, from the most to the least severe.

    Examples
    --------
    >>> from audit import Severity
    >>> Severity("medium"), Severity.MEDIUM == "medium"       # a StrEnum: equal to its value
    (<Severity.MEDIUM: 'medium'>, True)
    >>> sorted([Severity.INFO, Severity.HIGH, Severity.LOW])  # most severe first
    [<Severity.HIGH: 'high'>, <Severity.LOW: 'low'>, <Severity.INFO: 'info'>]
    >>> Severity.HIGH.label, Severity.HIGH.tone, Severity.HIGH.rank
    ('high', 'bad', 0)
    """

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


class Verdict(_Word):
    """One verdict per protected concept, in order of precedence.

    Examples
    --------
    >>> from audit import Verdict
    >>> Verdict("possible_adverse_impact").label                # the prose a reader sees
    'possible adverse impact (not significant)'
    >>> Verdict.UNDER_REPRESENTED.value, Verdict.UNDER_REPRESENTED.tone
    ('under_represented', 'bad')
    >>> min([Verdict.PASS, Verdict.ADVERSE_IMPACT])             # the one that takes precedence
    <Verdict.ADVERSE_IMPACT: 'adverse_impact'>
    """

    NOT_DECODABLE = "not_decodable"
    ADVERSE_IMPACT = "adverse_impact"
    UNDER_REPRESENTED = "under_represented"
    POSSIBLE_ADVERSE_IMPACT = "possible_adverse_impact"
    POSSIBLY_UNDER_REPRESENTED = "possibly_under_represented"
    NO_VERDICT_SMALL_GROUPS = "no_verdict_small_groups"
    INSUFFICIENT_EVIDENCE = "insufficient_evidence"
    PASS = "pass"


class FourFifths(_Word):
    """The outcome of the four-fifths rule for one group and source."""

    ADVERSE_IMPACT = "adverse_impact"
    INSUFFICIENT_EVIDENCE = "insufficient_evidence"
    NO_VERDICT = "no_verdict"
    PASS = "pass"


_LABELS: dict[_Word, str] = {
    Verdict.UNDER_REPRESENTED: "under-represented",
    Verdict.POSSIBLE_ADVERSE_IMPACT: "possible adverse impact (not significant)",
    Verdict.POSSIBLY_UNDER_REPRESENTED: "possibly under-represented (not significant)",
    Verdict.NO_VERDICT_SMALL_GROUPS: "no verdict (small groups)",
}

_TONES: dict[_Word, str] = {
    Severity.HIGH: "bad", Severity.MEDIUM: "warn", Severity.LOW: "info", Severity.INFO: "info",
    Verdict.NOT_DECODABLE: "warn", Verdict.ADVERSE_IMPACT: "bad",
    Verdict.UNDER_REPRESENTED: "bad", Verdict.POSSIBLE_ADVERSE_IMPACT: "warn",
    Verdict.POSSIBLY_UNDER_REPRESENTED: "warn", Verdict.NO_VERDICT_SMALL_GROUPS: "info",
    Verdict.INSUFFICIENT_EVIDENCE: "warn", Verdict.PASS: "good",
    FourFifths.ADVERSE_IMPACT: "bad", FourFifths.INSUFFICIENT_EVIDENCE: "warn",
    FourFifths.NO_VERDICT: "info", FourFifths.PASS: "good",
}

# A value names one word; where two enums share a value (``pass``) they share its label
# and tone, so the lookup below does not need to know which enum a string came from.
_BY_VALUE: dict[str, _Word] = {w.value: w for e in (FourFifths, Verdict, Severity) for w in e}


def severity_rank(value: Any) -> int:
    """Sort key for severities: 0 for ``high`` ... 3 for ``info``; unknown values last."""
    try:
        return Severity(value).rank
    except ValueError:
        return len(Severity)


def label(value: Any) -> str:
    """The prose label of a vocabulary value; any other value as ``str(value)``."""
    word = _BY_VALUE.get(str(value))
    return word.label if word is not None else str(value)


def tone(value: Any) -> str | None:
    """The tone (``bad``/``warn``/``info``/``good``) of a vocabulary value, else None."""
    word = _BY_VALUE.get(str(value))
    return word.tone if word is not None else None
