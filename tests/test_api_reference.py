"""`make docs`: the API reference pdoc builds from the docstrings, without a warning and
with every public name.

The test runs the Makefile's own module list and options (``API_MODULES``,
``PDOC_OPTIONS``), so what it checks is what ``make docs`` builds.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("pdoc", reason="pdoc builds the API reference: pip install -e '.[test]'")


def _make_variable(name: str) -> list[str]:
    match = re.search(rf"^{name} := (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, f"the Makefile defines no {name}"
    return match.group(1).split()


def _page(out: Path, module: str) -> Path:
    """pdoc's page of ``module``: ``a/b.html`` for ``a.b``."""
    return out.joinpath(*module.split(".")).with_suffix(".html")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("api-reference")
    done = subprocess.run(
        [sys.executable, "-W", "always", "-m", "pdoc", *_make_variable("PDOC_OPTIONS"),
         "--output-directory", str(out), *_make_variable("API_MODULES")],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    return out, done


@pytest.mark.slow
def test_pdoc_builds_the_reference_without_a_warning(built) -> None:
    out, done = built
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", f"pdoc warned:\n{done.stderr}"
    assert (out / "index.html").is_file()


@pytest.mark.slow
def test_every_public_name_has_its_entry(built) -> None:
    """Each name in the ``__all__`` of a documented module is an entry of its page (an
    element with that id), with its docstring's first words."""
    out, _ = built
    modules = _make_variable("API_MODULES")
    assert {"audit", "audit.api", "audit.vocabulary"} <= set(modules)
    for name in modules:
        module = importlib.import_module(name)
        page = _page(out, name).read_text(encoding="utf-8")
        for public in module.__all__:
            assert f'id="{public}"' in page, f"{name}.{public} is not in {name}'s page"
            doc = (getattr(module, public).__doc__ or "") if public != "__version__" else ""
            words = " ".join(doc.split()[:3])
            if words and callable(getattr(module, public)):
                assert words.replace("``", "") in re.sub(r"<[^>]+>", "", page).replace(
                    "&#39;", "'").replace("&quot;", '"'), f"{name}.{public}: docstring missing"


@pytest.mark.slow
def test_cross_references_render_as_links(built) -> None:
    """pdoc reads ``:class:`audit.X``` as a link but not Sphinx's ``~`` shorthand, which
    would show as a stray ``~`` before the name."""
    out, _ = built
    for name in _make_variable("API_MODULES"):
        page = _page(out, name).read_text(encoding="utf-8")
        docstrings = "".join(re.findall(r'<div class="docstring">(.*?)</div>', page, re.S))
        assert "<code>~" not in docstrings, f"{name}: a :role:`~name` in a docstring"
    assert '<a href="audit/errors.html#ConfigError">' in _page(out, "audit").read_text(
        encoding="utf-8")
