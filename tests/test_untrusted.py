"""Untrusted files: pickles only with trust_pickle, torch.load with weights_only=True, safe
YAML, no writing into folders that are not run folders, and HTML escaping in the report."""

from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import pytest
import yaml
from test_bad_inputs import FIXED, HOSTILE_NAME, invoke, shared_run, snapshot, write_config

from audit.errors import RunFolderError
from audit.runfolder import claim, is_owned

PACKAGE = Path(__file__).resolve().parent.parent / "audit"
SCRIPT = "<script>alert(1)</script>"


class _Payload:
    """Unpickling this creates the folder ``path``: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


# ---------------------------------------------------------------- pickles and torch.load


def test_a_pickle_spec_without_trust_pickle_is_refused_unopened(tmp_path):
    marker = tmp_path / "code-ran"
    (tmp_path / "net.pkl").write_bytes(pickle.dumps({"D": _Payload(marker)}))
    d = {**FIXED["discriminator"], "spec": f"pickle:{tmp_path / 'net.pkl'}#D"}
    cfg = write_config(tmp_path / "audit.yaml", {**FIXED, "discriminator": d,
                                                 "out": str(tmp_path / "run")})
    result = invoke("run", cfg)
    assert result.exit_code == 2, result.output
    assert "refusing to load the pickle" in result.output
    assert "trust_pickle: true" in result.output
    assert not marker.exists()


def test_weights_holding_python_objects_are_refused_unrun(tmp_path):
    import torch

    marker = tmp_path / "code-ran"
    torch.save({"payload": _Payload(marker)}, tmp_path / "weights.pt")
    d = {**FIXED["discriminator"], "spec": "python:audit.demo.models:DigitsDiscriminator",
         "weights": str(tmp_path / "weights.pt")}
    cfg = write_config(tmp_path / "audit.yaml", {**FIXED, "discriminator": d,
                                                 "out": str(tmp_path / "run")})
    result = invoke("run", cfg)
    assert result.exit_code == 2, result.output
    assert "torch.load(weights_only=True)" in result.output
    assert not marker.exists()


def _calls(tree: ast.AST):
    """(call, name of the enclosing function) for every call in a module."""
    def walk(node: ast.AST, func: str):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef,
                                                     ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Call):
                yield child, inner
            yield from walk(child, inner)
    yield from walk(tree, "<module>")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def test_source_loads_untrusted_data_only_safely():
    """Grep the package: unpickling happens in audit.models.pickle.unpickle alone (behind
    trust_pickle); torch.load elsewhere has weights_only=True; numpy never unpickles; YAML
    is read with a SafeLoader, in audit/_yaml.py alone (where its size, alias and nesting
    bounds apply)."""
    problems, seen = [], {"torch.load": 0, "yaml": 0}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(PACKAGE.parent)
        for call, func in _calls(tree):
            name = _dotted(call.func)
            pickle_path = (where.as_posix(), func) == ("audit/models/pickle.py", "unpickle")
            if name == "torch.load":
                seen["torch.load"] += 1
                if _keyword(call, "weights_only") is not True and not pickle_path:
                    problems.append(f"{where}:{call.lineno} torch.load without weights_only=True")
            elif name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"):
                if not pickle_path:
                    problems.append(f"{where}:{call.lineno} {name} outside unpickle")
            elif name in ("np.load", "numpy.load") and _keyword(call, "allow_pickle") not in (
                    None, False):
                problems.append(f"{where}:{call.lineno} np.load with allow_pickle")
            elif name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
                problems.append(f"{where}:{call.lineno} {name}")
            elif name.startswith("yaml.") and name.split(".")[1] in (
                    "safe_load", "compose", "compose_all", "parse", "scan",
                    "load") and where.as_posix() != "audit/_yaml.py":
                problems.append(f"{where}:{call.lineno} {name} outside audit/_yaml.py (read "
                                f"YAML with audit._yaml.read_yaml: its bounds apply there)")
            elif name == "yaml.load":
                seen["yaml"] += 1
                loader = _keyword(call, "Loader")
                loader_name = next((_dotted(kw.value) for kw in call.keywords
                                    if kw.arg == "Loader"), None)
                if loader is None or loader_name not in ("_UniqueKeyLoader", "yaml.SafeLoader",
                                                         "yaml.CSafeLoader"):
                    problems.append(f"{where}:{call.lineno} yaml.load with {loader_name}")
    assert not problems, problems
    assert seen["torch.load"] >= 2 and seen["yaml"] >= 1  # the scan saw the real calls
    from audit._yaml import _UniqueKeyLoader

    assert issubclass(_UniqueKeyLoader, yaml.SafeLoader)


# ---------------------------------------------------------------- YAML


@pytest.mark.parametrize("where", ["config", "concept set"])
def test_python_tags_in_yaml_are_refused(where, tmp_path):
    marker = tmp_path / "code-ran"
    tag = f"!!python/object/apply:os.mkdir [{json.dumps(str(marker))}]"
    if where == "config":
        text = f"name: {tag}\n" + yaml.safe_dump({k: v for k, v in FIXED.items()
                                                  if k != "name"})
        (tmp_path / "audit.yaml").write_text(text)
        name = "audit.yaml"
    else:
        (tmp_path / "cs.yaml").write_text(f"name: demo\ndescription: {tag}\nconcepts: []\n")
        write_config(tmp_path / "audit.yaml", {**FIXED, "concept_set": str(tmp_path / "cs.yaml"),
                                               "out": str(tmp_path / "run")})
        name = "cs.yaml"
    result = invoke("run", tmp_path / "audit.yaml")
    assert result.exit_code == 2, result.output
    assert f"{name}: malformed YAML at line" in result.output
    assert "safe loading" in result.output
    assert not marker.exists() and not (tmp_path / "run").exists()


def alias_bomb(levels: int = 9) -> str:
    """A 'billion laughs' mapping: each level lists nine aliases of the level below, so
    ``levels`` levels written out hold 9**levels values, in about 80 bytes a level."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["config", "concept set"])
def test_a_yaml_alias_bomb_is_refused_before_it_expands(where, tmp_path):
    """716 bytes that would be 387 million values when copied (JSON dumps, validation):
    refused with a message, with a few MB of memory at most."""
    import textwrap
    import tracemalloc

    from audit.concepts import load_concept_set
    from audit.config import load_config
    from audit.errors import ConceptSetError, ConfigError

    bomb = textwrap.indent(alias_bomb(), "    ")
    if where == "config":
        path = tmp_path / "audit.yaml"
        path.write_text(yaml.safe_dump({k: v for k, v in FIXED.items() if k != "discriminator"})
                        + "discriminator:\n  spec: builtin:digits-dcgan\n  kwargs:\n"
                        + bomb)
        load, error = load_config, ConfigError
    else:
        path = tmp_path / "cs.yaml"
        path.write_text("name: demo\nconcepts: []\nnotes:\n" + bomb)
        load, error = load_concept_set, ConceptSetError
    assert len(path.read_bytes()) < 1000
    tracemalloc.start()
    try:
        with pytest.raises(error) as info:
            load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.startswith(f"{path}: its aliases (*name) repeat ")
    assert "more than the 10,000 allowed" in message
    assert "'<<: *base' are fine" in message
    assert peak < 20 * 2**20, peak


def test_yaml_aliases_and_merge_keys_within_the_bound_still_load():
    from audit._yaml import MAX_ALIAS_VALUES, parse_yaml

    data = parse_yaml(alias_bomb(4), source="four.yaml")  # 9**4 + 820 values: under the bound
    assert len(data["a3"]) == 9 and data["a3"][0][0][0] == data["a0"]
    assert 9 ** 4 < MAX_ALIAS_VALUES < 9 ** 5
    with pytest.raises(Exception, match="more than the 10,000 allowed"):
        parse_yaml(alias_bomb(5), source="five.yaml")


def test_a_yaml_file_over_one_mib_is_refused_unread(tmp_path):
    from audit._yaml import MAX_YAML_BYTES, read_yaml
    from audit.errors import ConfigError

    # One long block scalar: PyYAML reads it in a fraction of a second (a list of 350k
    # items took 10 s), and the sizes sit on the bound: one byte over, then exactly on it.
    head = "values: |\n  "
    n = MAX_YAML_BYTES - len(head) - 1  # x * n and a newline: exactly MAX_YAML_BYTES bytes
    path = tmp_path / "big.yaml"
    path.write_text(head + "x" * (n + 1) + "\n")
    assert path.stat().st_size == MAX_YAML_BYTES + 1
    with pytest.raises(ConfigError, match=r"big.yaml: larger than 1 MiB, the most a config or "
                                          r"concept set may be"):
        read_yaml(path)
    path.write_text(head + "x" * n + "\n")
    assert path.stat().st_size == MAX_YAML_BYTES
    assert read_yaml(path) == {"values": "x" * n + "\n"}  # on the bound: read


def test_yaml_nested_too_deeply_is_a_message_not_a_recursion_error(tmp_path):
    from audit.config import load_config
    from audit.errors import ConfigError

    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml: the YAML nests too deeply"):
        load_config(path)


# ---------------------------------------------------------------- where a run may write


def test_a_run_never_writes_into_a_folder_of_something_else(tmp_path):
    """``out`` naming a folder with other files (here ``out: .``, next to the config and a
    config.yaml of the user) is refused before anything is written."""
    (tmp_path / "config.yaml").write_text("my own file")
    (tmp_path / "results.json").write_text('{"mine": true}')
    cfg = write_config(tmp_path / "audit.yaml", {**FIXED, "out": "."})
    before = snapshot(tmp_path)
    result = invoke("run", cfg)
    assert result.exit_code == 2, result.output
    assert "not empty and not a run folder made by gan-audit" in result.output
    assert "audit.yaml, config.yaml" in result.output
    assert snapshot(tmp_path) == before


def test_which_folders_a_run_may_write_into(tmp_path):
    """A run writes into a new or empty folder (and marks it) or into a folder it marked
    before; a folder without the marker is refused even when it holds only the names a run
    uses (a user's own samples/ or decoders/), or an earlier gan-audit's manifest."""
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "absent", tmp_path / "empty"):
        with claim(folder) as created:
            assert created
        assert is_owned(folder)
        with claim(folder) as created:  # its own folder, again
            assert not created
    staged = tmp_path / "staged"
    (staged / "samples").mkdir(parents=True)
    (staged / "samples" / "holiday.png").write_bytes(b"mine")
    with pytest.raises(RunFolderError, match=r"no \.gan-audit-run marker"), claim(staged):
        pass
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text('{"tool": "gan-audit", "format": 1}')
    with pytest.raises(RunFolderError, match="earlier gan-audit"), claim(old):
        pass
    home = tmp_path / "home"
    home.mkdir()
    for name in ("thesis.tex", "config.yaml", *(f"f{i}" for i in range(6))):
        (home / name).write_text("")
    shown = r"holds config.yaml, f0, f1, f2, f3 \(\+3 more\)"
    with pytest.raises(RunFolderError, match=shown), claim(home):
        pass
    assert not is_owned(staged) and not is_owned(home)


# ---------------------------------------------------------------- HTML escaping


def test_the_report_escapes_every_string_it_did_not_write(tmp_path):
    """Group names, names and paths from the config and the manifest, image ids (skipped
    files named with markup), sample file names and review notes appear as text."""
    from audit.report import results_to_html

    fixture = Path(__file__).parent / "fixtures" / "results_digits.json"
    text = fixture.read_text().replace('"light"', json.dumps("light" + SCRIPT))
    results = json.loads(text)
    results["meta"].update({
        "name": "n" + SCRIPT, "title": "t" + SCRIPT,
        "model": {"discriminator": f"python:{SCRIPT}.py:D", "generator": "builtin:x"},
        "data_sources": {"real": {"source": f"folder:/data/{SCRIPT}", "n": 3}},
        "skipped_images": {"real": [{"image_id": HOSTILE_NAME, "reason": f"cannot read {SCRIPT}"}]},
    })
    results["degenerate"].append({"kind": "invalid_scores", "count": 1, "message": "m" + SCRIPT,
                                  "image_ids": [HOSTILE_NAME]})
    results["notes"].append("note " + SCRIPT)
    manifest = {"tool": "gan-audit", "audit_id": "a" + SCRIPT, "created": "2026-01-01",
                "hashes": {"files": {f"/w/{SCRIPT}.pt": "ab" * 32}}}
    html = results_to_html(results, manifest=manifest,
                           samples={f"generated-tone-light{SCRIPT}.png": b"\x89PNG"})
    assert "<script" not in html.lower()
    assert "<b onmouseover" not in html
    assert "light&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "t&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the title
    assert "&lt;b onmouseover=alert(1)&gt;x.png" in html
    assert "folder:/data/&lt;script&gt;" in html


def test_the_report_of_a_run_shows_a_hostile_file_name_as_text(tmp_path_factory):
    """End to end: an unreadable image named with markup is listed, escaped."""
    run = shared_run(tmp_path_factory, "dirty")
    html = (run / "report.html").read_text()
    assert "<b onmouseover" not in html
    assert html.count("&lt;b onmouseover=alert(1)&gt;x.png") >= 1


def test_commands_that_reload_a_run_folders_models_refuse_its_code_unless_trusted(tmp_path):
    """A run folder from someone else may name a pickle or a .py file in its config.yaml:
    decode, interpolate, diagnose and insight refuse it without --trust-run-config."""
    import yaml
    from click.testing import CliRunner

    from audit.cli import cli
    from audit.config import load_run_config
    from audit.errors import ConfigError

    run = tmp_path / "theirs"
    run.mkdir()
    evil = tmp_path / "evil.py"
    evil.write_text("raise SystemExit('this code must not run')\n")
    (run / "config.yaml").write_text(yaml.safe_dump({
        "discriminator": {"spec": f"python:{evil}:make"},
        "generator": {"spec": "pickle:net.pkl#G", "trust_pickle": True},
        "paired": {"source": "builtin:digits-paired"}, "real": {"source": "builtin:digits-audit"},
    }))
    with pytest.raises(ConfigError, match="--trust-run-config") as err:
        load_run_config(run)
    assert "a pickle runs code" in str(err.value) and "imports and calls" in str(err.value)
    for args in (["decode", str(run), str(tmp_path)],
                 ["interpolate", str(run), "--from", "1", "--to", "2"],
                 ["diagnose", str(run)], ["insight", str(run)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert "--trust-run-config" in result.stderr, args
