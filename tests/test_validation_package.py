"""audit.validation is the one home of synthetic data and harnesses, and the pipeline never
imports it."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

AUDIT = Path(__file__).resolve().parent.parent / "audit"
#: Modules allowed to import audit.validation (besides the package itself): the demo and
#: the CLI (its demo and validation commands).
ALLOWED = ("validation/", "demo/", "cli.py")


def _imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement of a file (at any depth)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_pipeline_module_imports_the_validation_package():
    offenders = []
    for path in sorted(AUDIT.rglob("*.py")):
        rel = path.relative_to(AUDIT).as_posix()
        if rel.startswith(ALLOWED):
            continue
        bad = sorted(m for m in _imported_modules(path)
                     if m == "audit.validation" or m.startswith("audit.validation."))
        if bad:
            offenders.append(f"audit/{rel}: {bad}")
    assert not offenders, "pipeline modules import audit.validation:\n" + "\n".join(offenders)


def test_the_rule_sees_an_import_inside_a_function(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from audit.validation.predictions import Planted\n")
    assert "audit.validation.predictions" in _imported_modules(source)


@pytest.mark.parametrize("old", ["audit.scenarios", "audit.decode.synthetic",
                                 "audit.measure.synthetic"])
def test_the_old_homes_are_gone(old):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)


def test_the_package_front_names_every_harness():
    import audit.validation as v
    from audit.validation import decoders, predictions, scenarios

    for module in (scenarios, decoders, predictions):
        for name in module.__all__:
            if name != "DEFAULT_DISCRIMINATOR":
                assert getattr(v, name) is getattr(module, name), name
    assert sorted(v.__all__) == sorted(set(v.__all__))


def test_the_measure_stage_no_longer_exports_synthetic_tables():
    import audit.measure

    assert not {"synthetic_predictions", "Planted"} & set(audit.measure.__all__)
    assert not hasattr(audit.measure, "synthetic_predictions")


def test_import_audit_does_not_load_the_validation_package():
    import subprocess
    import sys

    code = "import sys, audit; print('audit.validation' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=AUDIT.parent, check=True)
    assert out.stdout.strip() == "False"


def _long_functions(root: Path, limit: int) -> list[str]:
    """``path:function (lines)`` for every function of ``root`` longer than ``limit`` lines
    (decorators excluded, docstring included)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root).as_posix()}:{node.name} ({lines})")
    return found


@pytest.mark.parametrize("package", ["validation", "demo"])
def test_no_function_of_the_harnesses_is_over_80_lines(package):
    assert not _long_functions(AUDIT / package, 80)


def test_the_length_rule_sees_a_long_function(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n" + "    x = 1\n" * 79
                                   + "\n\ndef g():\n" + "    x = 1\n" * 80)
    assert _long_functions(tmp_path, 80) == ["m.py:g (81)"]
