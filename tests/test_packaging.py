"""A wheel built from the repo ships templates/ and concept_sets/ and works outside the repo."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling", reason="hatchling (in the test extras) builds the wheel")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(REPO)], check=True, capture_output=True)
    (whl,) = out.glob("gan_audit-*.whl")
    return whl


def test_wheel_holds_templates_concept_sets_and_py_typed(wheel):
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "audit/py.typed" in names
    assert "audit/concept_sets/digits_tone.yaml" in names
    shipped_sets = {Path(n).stem for n in names if n.startswith("audit/concept_sets/")}
    repo_sets = {p.stem for p in (REPO / "concept_sets").glob("*.yaml")}
    assert shipped_sets == repo_sets
    shipped_templates = {n for n in names if n.startswith("audit/templates/")}
    repo_templates = {f"audit/templates/{p.relative_to(REPO / 'templates').as_posix()}"
                      for p in (REPO / "templates").rglob("*") if p.is_file()}
    assert shipped_templates == repo_templates


def test_installed_wheel_runs_outside_the_repo(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    target = env_dir / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    # Dependencies come from the test environment's site-packages (not the repo): the
    # editable install's .pth is not read from PYTHONPATH, so `audit` must come from the wheel.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    code = ("import audit, sys\n"
            "from audit.cli import main\n"
            "print(audit.__file__, file=sys.stderr)\n"
            "sys.argv = ['gan-audit', 'concept-sets', 'show', 'celeba_protected']\n"
            "main()\n")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert str(env_dir) in out.stderr, f"audit was imported from {out.stderr}"
    assert "name: celeba_protected" in out.stdout
