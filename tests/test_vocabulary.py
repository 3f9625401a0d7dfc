"""One vocabulary: the results schema, the report's badges and the code use the same words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import audit
from audit.report.render import jinja_env
from audit.vocabulary import FourFifths, Severity, Verdict, label, severity_rank, tone

SCHEMA = json.loads((Path(audit.__file__).parent / "measure" / "results.schema.json").read_text())


def _enum_at(*keys: str) -> list[str]:
    node = SCHEMA
    for k in keys:
        node = node[k]
    return node["enum"]


def test_the_schema_allows_exactly_the_vocabulary() -> None:
    verdict = _enum_at("properties", "verdicts", "items", "properties", "verdict")
    assert verdict == [v.value for v in Verdict]          # same words, in precedence order
    severity = _enum_at("$defs", "finding", "properties", "severity")
    assert severity == [s.value for s in Severity]


def test_the_four_fifths_outcomes_in_the_schema_are_the_enum() -> None:
    def find(node):  # every schema node under a "four_fifths" key
        if isinstance(node, dict):
            for k, v in node.items():
                yield from ([v] if k == "four_fifths" else find(v))
        elif isinstance(node, list):
            for v in node:
                yield from find(v)

    found = list(find(SCHEMA))
    assert found and all(n["enum"] == [v.value for v in FourFifths] for n in found)


def test_values_are_identifiers_and_labels_are_prose() -> None:
    for enum in (Verdict, Severity, FourFifths):
        for word in enum:
            assert word.value.replace("_", "").isalpha() and word.value.islower()
            assert label(word.value) == word.label and tone(word.value) == word.tone
            assert word.tone in {"bad", "warn", "info", "good"}
    assert Verdict.POSSIBLY_UNDER_REPRESENTED.label == \
        "possibly under-represented (not significant)"
    assert json.dumps({"v": Verdict.ADVERSE_IMPACT}) == '{"v": "adverse_impact"}'


def test_severity_orders_by_seriousness_not_by_alphabet() -> None:
    assert sorted([Severity.INFO, Severity.HIGH, Severity.LOW, Severity.MEDIUM]) == \
        [Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO]
    assert sorted(["low", "bogus", "high"], key=severity_rank) == ["high", "low", "bogus"]
    with pytest.raises(TypeError):
        _ = Severity.HIGH < Verdict.PASS  # different scales do not compare


@pytest.mark.parametrize("word", [*Verdict, *FourFifths, *Severity])
def test_a_badge_shows_the_label_and_is_coloured_by_tone(word) -> None:
    html = _badge(word.value)
    assert f">{word.label}</span>" in html.replace("&#39;", "'")
    assert f" t-{word.tone}" in html


def _badge(value: str) -> str:
    env = jinja_env()
    return env.from_string("{% import 'report/_macros.html.j2' as m %}{{ m.badge(v) }}") \
        .render(v=value)
