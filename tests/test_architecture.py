"""The architecture's rules (docs/ARCHITECTURE.md), checked over the source itself.

The import graph is read from the source with :mod:`ast` (every ``import``, at module level
or inside a function, counts: a lazy import is still a dependency), so a rule broken anywhere
fails here, with the module and the line that broke it.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import audit

ROOT = Path(audit.__file__).parent
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True)
class Import:
    """``importer`` imports ``target`` (a module name) at ``line``."""

    importer: str
    target: str
    line: int


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ("audit", *path.relative_to(ROOT).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
        return
    base = node.module or ""
    if node.level:  # relative import: resolve against the importing package
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package = package[:-1]
        package = package[:len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    for alias in node.names:
        full = f"{base}.{alias.name}"
        yield full if full in MODULES else base


@functools.cache
def _imports() -> list[Import]:
    """Every import of every audit module (read when a test first asks: parsing the source
    takes 1.5 s, which every xdist worker would otherwise spend collecting this file)."""
    out = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                    continue
                out.extend(Import(module, t, node.lineno) for t in _targets(node, module))
    return out


def _internal(target: str) -> str | None:
    """The audit module ``target`` names (a name inside a module counts as the module)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in _imports():
        target = _internal(imp.target)
        if target is not None and target != imp.importer:
            graph[imp.importer].add(target)
    return graph


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _reach(start: str, graph: dict[str, set[str]]) -> dict[str, str]:
    """Every module ``start`` imports, directly or not, with the module that imports it."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        m = todo.pop()
        for t in graph[m]:
            if t not in seen and t != start:
                seen[t] = m
                todo.append(t)
    return seen


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _package_graph() -> dict[str, set[str]]:
    """The graph between audit's subpackages (audit.measure, audit.report, ...)."""
    def pkg(m: str) -> str:
        return ".".join(m.split(".")[:2]) if m.count(".") >= 1 and \
            MODULES.get(".".join(m.split(".")[:2]), Path()).name == "__init__.py" else m
    graph: dict[str, set[str]] = {}
    for m, targets in _graph().items():
        graph.setdefault(pkg(m), set()).update(pkg(t) for t in targets if pkg(t) != pkg(m))
    for targets in list(graph.values()):
        for t in targets:
            graph.setdefault(t, set())
    return graph


# Packages (or modules) that must not depend on others, with the reason (ARCHITECTURE.md).
FORBIDDEN: list[tuple[str, str, str]] = [
    ("audit.report", "torch", "the report renders documents; rendering never needs torch"),
    ("audit.measure", "torch", "measuring reads the per-image table; no model runs there"),
    ("audit.measure", "audit.report", "data flows one way: measure writes, report reads"),
    ("audit.measure", "audit.decode", "measure reads predictions, not decoders"),
    ("audit.decode", "audit.measure", "decoders come before measurement"),
    ("audit.decode", "audit.report", "data flows one way"),
    ("audit.vocabulary", "audit", "the vocabulary is a leaf: everything may use it"),
    ("audit.formatting", "audit", "formatting is a leaf: everything may use it"),
    ("audit.errors", "audit", "the errors are a leaf: everything may raise them"),
    *((m, "torch", "a sign-off reads documents; no model runs there")
      for m in ("audit.signing", "audit.pdfsign", "audit.gate", "audit.card")),
    ("audit.serve", "torch", "the review app shows documents and records reviews and labels"),
    ("audit.labels", "torch", "the review app reads and writes labels through it"),
]
# The harnesses are for the demo, the benchmarks and the tests, never for a stage.
STAGES = ["audit.extract", "audit.decode", "audit.measure", "audit.report", "audit.insight",
          "audit.samples", "audit.store", "audit.images", "audit.models"]


def _violations(source: str, target: str) -> list[str]:
    graph = _graph()
    out = []
    for m in MODULES:
        if not _in(m, source):
            continue
        direct = [i for i in _imports() if i.importer == m and _in(i.target, target)
                  and not (target == "audit" and _in(_internal(i.target) or "", source))]
        out += [f"{m} line {i.line} imports {i.target}" for i in direct]
        if target.startswith("audit") and target != "audit":
            reach = _reach(m, graph)
            out += [f"{m} imports {t} (through {via})" for t, via in reach.items()
                    if _in(t, target) and via != m]
    return out


@pytest.mark.parametrize(("source", "target", "why"), FORBIDDEN,
                         ids=[f"{s}-not-{t}" for s, t, _ in FORBIDDEN])
def test_import_rules(source: str, target: str, why: str) -> None:
    bad = _violations(source, target)
    assert not bad, f"{source} must not import {target} ({why}):\n" + "\n".join(bad)


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_the_validation_harnesses(stage: str) -> None:
    assert not _violations(stage, "audit.validation")


@pytest.mark.parametrize("package", ["audit.report", "audit.signing", "audit.pdfsign",
                                     "audit.gate", "audit.card", "audit.serve", "audit.labels",
                                     # the monitoring series, trends and report (#22)
                                     "audit.track.series", "audit.track.trends",
                                     "audit.track.document", "audit.track.charts",
                                     "audit.track.export"])
def test_documents_reach_no_torch_through_other_modules(package: str) -> None:
    graph = _graph()
    for m in (m for m in MODULES if _in(m, package)):
        for t in [m, *_reach(m, graph)]:
            torchy = [i for i in _imports() if i.importer == t and _in(i.target, "torch")]
            assert not torchy, f"{m} reaches torch through {t} line {torchy[0].line}"


def test_no_import_cycles_between_modules() -> None:
    assert _cycles(_graph()) == []


def test_no_import_cycles_between_packages() -> None:
    assert _cycles(_package_graph()) == []


def test_the_graph_is_read_correctly() -> None:
    """The checks above are only as good as the graph: known edges must be in it."""
    graph = _graph()
    assert "audit.measure.findings" in graph["audit.measure.results"]
    assert "audit.errors" in graph["audit.cli"]
    assert any(_in(i.target, "torch") for i in _imports() if _in(i.importer, "audit.extract"))
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _long_functions() -> list[str]:
    out = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = node.end_lineno - first + 1
                if lines > MAX_FUNCTION_LINES:
                    out.append(f"{module}.{node.name} ({path.name}:{node.lineno}): {lines} lines")
    return out


def test_no_function_is_longer_than_80_lines() -> None:
    long = _long_functions()
    assert not long, (f"split these where the pieces have names (at most "
                      f"{MAX_FUNCTION_LINES} lines each):\n" + "\n".join(long))


def test_the_architecture_page_lists_every_module() -> None:
    """docs/ARCHITECTURE.md's module tree has one line per module, and no dead one."""
    page = (ROOT.parent / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    tree = page[page.index("## The module tree"):]
    listed, stack = {"audit"}, []
    for line in tree.split("```")[1].splitlines()[2:]:
        indent = (len(line) - len(line.lstrip())) // 2
        name = line.split()[0]
        del stack[indent - 1:]
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
            listed.add(".".join(["audit", *stack]))
        else:
            listed.add(".".join(["audit", *stack, name.removesuffix(".py")]))
    modules = set(MODULES)
    assert listed == modules, (f"missing from the page: {sorted(modules - listed)}; "
                               f"on the page but not in the code: {sorted(listed - modules)}")
