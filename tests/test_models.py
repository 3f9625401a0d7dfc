"""Third-party GANs as users have them (issue 17): the loader's side.

Small modules with the shapes of real model families (NVlabs fp16 flags and per-pixel
noise, a [0, 1] sigmoid generator, torch-mimicry's reused ReLU, StyleGAN's b<res> blocks
with skip branches) written to a .py file and loaded through python: specs and pickles.
"""

from __future__ import annotations

import json
import pickle
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit.cli import cli

NETS = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn


    class SmallD(nn.Module):
        """3 x 16 x 16 -> N x 1; width sets the size (a construction argument)."""

        def __init__(self, width=4):
            super().__init__()
            torch.manual_seed(0)
            self.conv1 = nn.Conv2d(3, width, 3, 2, 1)
            self.act1 = nn.LeakyReLU(0.2)
            self.conv2 = nn.Conv2d(width, 2 * width, 3, 2, 1)
            self.act2 = nn.LeakyReLU(0.2)
            self.fc = nn.Linear(2 * width * 16, 1)

        def forward(self, x):
            return self.fc(self.act2(self.conv2(self.act1(self.conv1(x)))).flatten(1))
''')


@pytest.fixture
def nets(tmp_path: Path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


def _layers(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["layers", *args])
    return result.exit_code, result.stdout, result.stderr


# ---------------------------------------------------------------- gan-audit layers (item 2)


def _config(tmp_path: Path, discriminator: dict) -> Path:
    cfg = {"concept_set": "digits_tone", "discriminator": discriminator,
           "generator": {"spec": "builtin:digits-dcgan"},
           "paired": {"source": "builtin:digits"}, "real": {"source": "builtin:digits"}}
    path = tmp_path / "audit.yaml"
    path.write_text(json.dumps(cfg))   # JSON is YAML
    return path


def test_layers_reads_the_discriminator_section_of_a_config(nets, tmp_path) -> None:
    """Relative paths resolve against the config's folder, its kwargs and input size apply."""
    cfg = _config(tmp_path, {"spec": "python:nets.py:SmallD", "kwargs": {"width": 6},
                             "image_size": 16, "channels": 3})
    code, out, err = _layers(str(cfg), "--json")
    assert code == 0, err
    table = json.loads(out)
    shapes = {i["name"]: i["shape"] for i in table["layers"]}
    assert shapes["conv1"] == [6, 8, 8] and shapes["fc"] == [1]
    assert table["input"] == {"image_size": 16, "channels": 3, "value_range": [-1.0, 1.0]}
    # options override the section: kwargs merge, the input size is the option's
    code, out, err = _layers(str(cfg), "--kwargs", "width=2", "--json")
    assert code == 0, err
    assert {i["name"]: i["shape"] for i in json.loads(out)["layers"]}["conv1"] == [2, 8, 8]


def test_layers_takes_kwargs_code_path_and_input_size(nets, tmp_path) -> None:
    code_dir = nets.parent
    for kwargs in (["--kwargs", '{"width": 5}'], ["--kwargs", "width=5"]):
        code, out, err = _layers("python:nets:SmallD", "--code-path", str(code_dir), *kwargs,
                                 "--image-size", "16", "--channels", "3", "--json")
        assert code == 0, err
        assert {i["name"]: i["shape"] for i in json.loads(out)["layers"]}["conv1"] == [5, 8, 8]
    sys.modules.pop("nets", None)


def test_layers_opens_a_network_pickle_with_trust_and_code_path(nets, tmp_path) -> None:
    sys.path.insert(0, str(nets.parent))
    try:
        import nets as module

        with open(tmp_path / "network.pkl", "wb") as fh:
            pickle.dump({"D": module.SmallD(width=3)}, fh)
    finally:
        sys.path.remove(str(nets.parent))
        sys.modules.pop("nets", None)
    spec = f"pickle:{tmp_path / 'network.pkl'}#D"
    code, _, err = _layers(spec, "--code-path", str(nets.parent), "--image-size", "16")
    assert code == 2 and "--trust-pickle" in err and "Traceback" not in err
    code, out, err = _layers(spec, "--code-path", str(nets.parent), "--trust-pickle",
                             "--image-size", "16")
    assert code == 0, err
    assert "conv1" in out and "3 x 8 x 8" in out
    sys.modules.pop("nets", None)


@pytest.mark.parametrize(("args", "fragments"), [
    (["{cfg_bad}"], ["discriminator.image_size", "4096"]),
    (["builtin:digits-dcgan", "--kwargs", "{bad"], ["--kwargs", "not a valid JSON object"]),
    (["builtin:digits-dcgan", "--kwargs", "no_equals"], ["KEY=VALUE"]),
    (["builtin:digits-dcgan", "--kwargs", "[1, 2]"], ["KEY=VALUE"]),
    (["missing.yaml"], ["missing.yaml", "not found"]),
    (["python:nets.py:SmallD", "--code-path", "{tmp}/nowhere"], ["code_path", "not a folder"]),
])
def test_layers_errors_are_messages(args, fragments, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets.py").write_text(NETS)
    bad = _config(tmp_path, {"spec": "builtin:digits-dcgan", "image_size": 99_999})
    args = [a.replace("{cfg_bad}", str(bad)).replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = _layers(*args)
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error: ")
    for fragment in fragments:
        assert fragment in err
