"""The docstring examples of the public API run as written, and every public name has one.

Each name of ``audit.__all__`` (but ``__version__``) is one test: its docstring must hold
a ``>>>`` example, and the example must give the output it shows. The modules of the
API are one test each: their own examples and those of every function, class and method
defined in them that is not a public name already (so nothing runs twice).
"""

from __future__ import annotations

import doctest
import importlib
from typing import Any

import pytest

import audit

PUBLIC = [name for name in audit.__all__ if name != "__version__"]
#: Public names whose example runs a whole (small) audit into a run folder.
SLOW = {"run"}
MODULES = ["audit", "audit.api", "audit.api.front", "audit.api.results", "audit.vocabulary",
           "audit.formatting", "audit.ids"]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _qualified(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _run(tests: list[doctest.DocTest]) -> None:
    """Run ``tests``; fail with doctest's report of every example that went wrong."""
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test, out=report.append)
    outcome = runner.summarize(verbose=False)
    assert outcome.failed == 0, "".join(report)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in PUBLIC])
def test_public_name_has_an_example_that_runs(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    obj = getattr(audit, name)
    own = doctest.DocTestFinder(recurse=False).find(obj, _qualified(obj))
    examples = [t for t in own if t.examples]
    assert examples, f"audit.{name} has no >>> example in its docstring"
    _run(examples)


def _module_tests(module_name: str) -> list[doctest.DocTest]:
    public = {_qualified(getattr(audit, name)) for name in PUBLIC}
    module = importlib.import_module(module_name)
    return [t for t in doctest.DocTestFinder().find(module)
            if t.examples and t.name not in public]


@pytest.mark.parametrize("module_name", MODULES)
def test_module_examples_run(module_name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _run(_module_tests(module_name))


def test_the_check_sees_a_missing_or_wrong_example() -> None:
    """The two checks above can fail: a docstring without ``>>>`` has no example, and an
    example whose output differs is a failure."""
    def undocumented() -> None:
        """No example here."""

    def wrong() -> None:
        """>>> 1 + 1
        3
        """

    assert not [t for t in doctest.DocTestFinder(recurse=False).find(undocumented)
                if t.examples]
    with pytest.raises(AssertionError, match="Expected"):
        _run(doctest.DocTestFinder(recurse=False).find(wrong, "wrong", globs={}))


def test_modules_hold_examples() -> None:
    """The module docstrings of the front, the results and the vocabulary are examples."""
    for name in ("audit.api.front", "audit.api.results", "audit.vocabulary",
                 "audit.formatting"):
        module = importlib.import_module(name)
        own = doctest.DocTestFinder(recurse=False).find(module)
        assert own and own[0].examples, name
