"""The command line: help everywhere, lazy imports, and one clear message per user error."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from audit.cli import cli
from audit.errors import AuditError


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        yield path
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path)


ALL_COMMANDS = sorted(_commands(cli))


def test_design_commands_exist():
    names = {" ".join(p) for p in ALL_COMMANDS}
    for expected in ["demo", "run", "layers", "extract", "train-decoders", "measure", "decode",
                     "report", "review", "compare", "concept-sets list", "concept-sets show",
                     "concept-sets validate"]:
        assert expected in names


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help_with_an_example(path, flag):
    result = CliRunner().invoke(cli, [*path, flag])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    assert "Example" in result.output, f"{' '.join(path)} --help shows no example"


def test_version():
    from audit import __version__

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


@pytest.mark.parametrize("args", [["--help"], ["concept-sets", "list"]])
def test_help_does_not_import_heavy_libraries(args):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from audit.cli import cli\n"
        f"r = CliRunner().invoke(cli, {args!r})\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'fairlearn', 'weasyprint', 'matplotlib', 'sklearn') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"'gan-audit {' '.join(args)}' imported {out.stdout.strip()}"


def _failing_command(monkeypatch):
    @click.command("_fail", hidden=True)     # registered only by the monkeypatch below
    def _fail() -> None:
        """Fail with a user error."""
        raise AuditError("thing.yaml: something is wrong. Fix it like this.")

    monkeypatch.setitem(cli.commands, "_fail", _fail)


def test_user_error_exits_2_with_one_message_and_no_traceback(monkeypatch):
    _failing_command(monkeypatch)
    result = CliRunner().invoke(cli, ["_fail"])
    assert result.exit_code == 2
    assert result.stderr == "error: thing.yaml: something is wrong. Fix it like this.\n"
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(monkeypatch):
    _failing_command(monkeypatch)
    result = CliRunner().invoke(cli, ["--debug", "_fail"])
    assert isinstance(result.exception, AuditError)


def test_usage_error_exits_2():
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_python_dash_m_audit_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "audit", "--version"], capture_output=True,
                         text=True, check=True)
    assert "gan-audit" in out.stdout


def test_public_front_is_lazy_and_complete():
    code = ("import sys, audit\n"
            "assert 'torch' not in sys.modules\n"
            "print(sorted(audit.__all__))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    names = eval(out.stdout)  # a printed list of strings
    for name in ["load_gan", "record_activations", "train_decoders", "measure_bias", "run",
                 "AuditResults", "Finding", "Severity", "Verdict", "ConceptSet"]:
        assert name in names
    # no public name is a submodule's: ``import audit.decode`` would shadow it
    assert not {"decode", "extract", "measure", "report"} & set(names)
