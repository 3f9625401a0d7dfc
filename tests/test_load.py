"""Load stage: model specs, adapters for discriminator quirks, generator sampling."""

from __future__ import annotations

import json
import pickle
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from audit.config import DiscriminatorConfig, GeneratorConfig
from audit.errors import ModelLoadError
from audit.load import (
    BUILTIN_MODELS,
    BuiltinModel,
    load_discriminator,
    load_generator,
    sample_generated,
    state_sha256,
)

# Tiny networks with the quirks of real discriminators, written to a .py file so that they
# load through python:FILE.py:NAME specs (and pickles need their module on code_path).
NETS = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn


    class PlainD(nn.Module):
        """1 x 16 x 16 -> N x 1."""

        def __init__(self, width=4):
            super().__init__()
            torch.manual_seed(0)
            self.conv1 = nn.Conv2d(1, width, 3, 2, 1)
            self.act1 = nn.LeakyReLU(0.2)
            self.conv2 = nn.Conv2d(width, 2 * width, 3, 2, 1)
            self.act2 = nn.LeakyReLU(0.2)
            self.unused = nn.Linear(2, 2)
            self.fc = nn.Linear(2 * width * 16, 1)

        def forward(self, x):
            h = self.act2(self.conv2(self.act1(self.conv1(x))))
            return self.fc(h.flatten(1))


    class Block(nn.Module):
        """A StyleGAN2-ADA-like block: returns (x, img)."""

        def __init__(self, cin, cout):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, 2, 1)

        def forward(self, x, img):
            return F.leaky_relu(self.conv(x), 0.2), F.avg_pool2d(img, 2)


    class TupleD(nn.Module):
        img_resolution = 16
        img_channels = 1

        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.b16 = Block(1, 4)
            self.b8 = Block(4, 8)
            self.out = nn.Linear(8 * 16 + 16, 1)

        def forward(self, img):
            x, y = self.b16(img, img)
            x, y = self.b8(x, y)
            return self.out(torch.cat([x.flatten(1), y.flatten(1)], 1)), y


    class MinibatchStd(nn.Module):
        def forward(self, x):
            std = x.std(dim=0, unbiased=False).mean()
            return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], 1)


    class MbstdD(nn.Module):
        img_resolution = 16

        def __init__(self):
            super().__init__()
            torch.manual_seed(2)
            self.conv1 = nn.Conv2d(1, 4, 3, 2, 1)
            self.act1 = nn.LeakyReLU(0.2)
            self.mbstd = MinibatchStd()
            self.conv2 = nn.Conv2d(5, 8, 3, 2, 1)
            self.act2 = nn.LeakyReLU(0.2)
            self.fc = nn.Linear(8 * 16, 1)

        def forward(self, x):
            h = self.act1(self.conv1(x))
            h = self.act2(self.conv2(self.mbstd(h)))
            return self.fc(h.flatten(1))


    class CondD(nn.Module):
        """Conditional: forward(img, c) with c one-hot of size c_dim."""

        img_resolution = 16
        c_dim = 3

        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.conv = nn.Conv2d(1, 4, 3, 2, 1)
            self.act = nn.LeakyReLU(0.2)
            self.fc = nn.Linear(4 * 64, 5)
            self.embed = nn.Linear(3, 5)

        def forward(self, img, c):
            h = self.fc(self.act(self.conv(img)).flatten(1))
            return (h * self.embed(c)).sum(1, keepdim=True)


    class AugD(PlainD):
        """Augments inside forward while diffaug is on (as Projected GAN does)."""

        img_resolution = 16

        def __init__(self):
            super().__init__()
            self.diffaug = True

        def forward(self, x):
            if self.diffaug:
                x = x + 0.5 * torch.randn_like(x)
            return super().forward(x)


    class NoisyD(PlainD):
        """Augments inside forward with no known switch."""

        img_resolution = 16

        def forward(self, x):
            return super().forward(x + 0.5 * torch.randn_like(x))


    class TinyG(nn.Module):
        z_dim = 8

        def __init__(self):
            super().__init__()
            torch.manual_seed(4)
            self.fc = nn.Linear(8, 16 * 16)

        def forward(self, z, truncation_psi=1.0):
            return torch.tanh(self.fc(z * truncation_psi) * 3).view(-1, 1, 16, 16)


    def make_plain(width=4):
        return PlainD(width=width)
''')


@pytest.fixture
def nets(tmp_path: Path) -> Path:
    """The tiny networks as a .py file; specs are python:<file>:<Name>."""
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


def spec(nets: Path, name: str) -> str:
    return f"python:{nets}:{name}"


def no_hooks(module: torch.nn.Module) -> bool:
    return all(not m._forward_hooks for m in module.modules())


# ---------------------------------------------------------------- plain loading


def test_plain_discriminator_loads_in_eval_mode_without_grad(nets: Path) -> None:
    model = load_discriminator(spec(nets, "PlainD"))
    assert not model.module.training
    assert all(not p.requires_grad for p in model.module.parameters())
    assert model.input.channels == 1  # from the first convolution
    assert any("probed with 16 x 16" in n for n in model.notes)  # 32 fails, 16 runs
    assert model.batch_dependent_layers == []
    shapes = {i.name: i.shape for i in model.layer_info}
    assert shapes["conv1"] == (4, 8, 8) and shapes["act2"] == (8, 4, 4)
    assert shapes["unused"] is None  # never called by forward
    assert no_hooks(model.module)


def test_sha256_depends_on_weights_only(nets: Path, tmp_path: Path) -> None:
    a = load_discriminator(spec(nets, "PlainD"), probe=False)
    b = load_discriminator(DiscriminatorConfig(spec=spec(nets, "make_plain")), probe=False)
    assert a.sha256 == b.sha256  # same weights, another factory
    c = load_discriminator(DiscriminatorConfig(spec=spec(nets, "make_plain"),
                                               kwargs={"width": 2}), probe=False)
    assert c.sha256 != a.sha256
    # the same state from a weights file hashes the same
    torch.save(a.module.state_dict(), tmp_path / "w.pt")
    with torch.no_grad():
        for p in b.module.parameters():
            p.zero_()
    assert state_sha256(b.module) != a.sha256
    d = load_discriminator(DiscriminatorConfig(spec=spec(nets, "make_plain"),
                                               weights=tmp_path / "w.pt"), probe=False)
    assert d.sha256 == a.sha256


def test_weights_that_do_not_fit_list_the_keys(nets: Path, tmp_path: Path) -> None:
    state = load_discriminator(spec(nets, "PlainD"), probe=False).module.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["fc.bias"]
    torch.save({"model": state}, tmp_path / "ckpt.pt")
    with pytest.raises(ModelLoadError, match=r"missing keys: fc\.bias.*unexpected keys: "
                                             r"extra\.weight"):
        load_discriminator(DiscriminatorConfig(spec=spec(nets, "PlainD"),
                                               weights=tmp_path / "ckpt.pt",
                                               weights_key="model"))
    with pytest.raises(ModelLoadError, match=r"no key 'D'.*\['model'\]"):
        load_discriminator(DiscriminatorConfig(spec=spec(nets, "PlainD"),
                                               weights=tmp_path / "ckpt.pt", weights_key="D"))


def test_bad_specs_say_what_to_do(nets: Path) -> None:
    with pytest.raises(ModelLoadError, match="has no 'Nope'"):
        load_discriminator(spec(nets, "Nope"))
    with pytest.raises(ModelLoadError, match="cannot import module 'no_such_module'"):
        load_discriminator("python:no_such_module:D")
    with pytest.raises(ModelLoadError, match=r"unknown builtin model 'nope'.*digits-dcgan"):
        load_discriminator("builtin:nope")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_discriminator("torchscript:/no/such/file.pt")


def test_builtin_registry_is_imported_lazily(nets: Path, monkeypatch) -> None:
    monkeypatch.setitem(BUILTIN_MODELS, "tiny", BuiltinModel(
        discriminator=f"{nets}:MbstdD", generator=f"{nets}:TinyG", image_size=16, channels=1,
        latent_dim=8))
    model = load_discriminator("builtin:tiny")
    assert model.input.image_size == 16 and model.input.channels == 1
    assert load_generator("builtin:tiny").latent_dim == 8


# ---------------------------------------------------------------- quirks


def test_blocks_returning_tuples_are_adapted(nets: Path) -> None:
    model = load_discriminator(spec(nets, "TupleD"))
    info = {i.name: i for i in model.layer_info}
    assert info["b16"].tuple_output and info["b8"].tuple_output
    assert info["b8"].shape == (8, 4, 4)  # the first element, x
    assert any("tuples" in n and "b16" in n for n in model.notes)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    assert model.scores(model.forward(x)).shape == (3,)  # the model output is a tuple too


def test_conditional_discriminator_needs_a_class_label(nets: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"conditional.*'c'.*class_label"):
        load_discriminator(spec(nets, "CondD"))
    model = load_discriminator(DiscriminatorConfig(spec=spec(nets, "CondD"), class_label=1))
    assert model.conditioning is not None and model.conditioning.num_classes == 3
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    s0 = model.scores(model.forward(x, [0, 0, 0, 0]))
    s1 = model.scores(model.forward(x))  # the config's label 1
    ref = model.module(x, torch.nn.functional.one_hot(torch.ones(4, dtype=torch.long), 3).float())
    torch.testing.assert_close(s1, ref[:, 0])
    assert not torch.allclose(s0, s1)
    with pytest.raises(ModelLoadError, match=r"class labels must lie in \[0, 2\]"):
        model.forward(x, [0, 1, 2, 3])


def test_minibatch_stddev_layers_are_flagged(nets: Path) -> None:
    model = load_discriminator(spec(nets, "MbstdD"))
    assert set(model.batch_dependent_layers) == {"mbstd", "conv2", "act2", "fc"}
    info = {i.name: i for i in model.layer_info}
    assert not info["act1"].batch_dependent and info["mbstd"].shape == (5, 8, 8)


def test_augmentation_flag_is_switched_off(nets: Path) -> None:
    model = load_discriminator(spec(nets, "AugD"))
    assert model.module.diffaug is False
    assert any("diffaug switched off" in n for n in model.notes)
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(model.forward(x), model.forward(x))


def test_augmentation_without_a_known_flag_warns(nets: Path) -> None:
    with pytest.warns(UserWarning, match="different outputs"):
        model = load_discriminator(spec(nets, "NoisyD"))
    assert all(i.nondeterministic for i in model.layer_info if i.shape is not None)


# ---------------------------------------------------------------- pickle and torchscript


@pytest.fixture
def network_pickle(tmp_path: Path) -> tuple[Path, Path]:
    """A StyleGAN-style network pickle {'D', 'G_ema'} whose classes live in code/mynets.py."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "mynets.py").write_text(NETS)
    with _code_on_path(code, "mynets", insert=True):
        import mynets

        path = tmp_path / "network.pkl"
        with open(path, "wb") as fh:
            pickle.dump({"D": mynets.TupleD(), "G_ema": mynets.TinyG()}, fh)
    return path, code


@contextmanager
def _code_on_path(code: Path, module: str, *, insert: bool = False) -> Iterator[None]:
    """Afterwards ``code`` is off ``sys.path`` (the loader leaves a code_path there) and
    ``module`` and its submodules are forgotten, so the next test imports its own."""
    if insert:
        sys.path.insert(0, str(code))
    try:
        yield
    finally:
        while str(code) in sys.path:
            sys.path.remove(str(code))
        top = module.split(".")[0]
        for key in [k for k in sys.modules if k == top or k.startswith(top + ".")]:
            sys.modules.pop(key)


def test_pickle_is_refused_without_trust(network_pickle) -> None:
    path, code = network_pickle
    with pytest.raises(ModelLoadError, match=r"arbitrary code.*trust_pickle: true"):
        load_discriminator(DiscriminatorConfig(spec=f"pickle:{path}#D", code_path=code))


def test_pickle_loads_with_trust_and_code_path(network_pickle) -> None:
    path, code = network_pickle
    with pytest.raises(ModelLoadError, match=r"needs the module 'mynets'.*code_path"):
        load_discriminator(DiscriminatorConfig(spec=f"pickle:{path}#D", trust_pickle=True))
    with _code_on_path(code, "mynets"):
        model = load_discriminator(DiscriminatorConfig(spec=f"pickle:{path}#D", code_path=code,
                                                       trust_pickle=True))
        assert type(model.module).__name__ == "TupleD" and model.input.image_size == 16
        gen = load_generator(GeneratorConfig(spec=f"pickle:{path}#G_ema", code_path=code,
                                             trust_pickle=True))
        assert gen.latent_dim == 8
        with pytest.raises(ModelLoadError, match=r"no key 'X'.*\['D', 'G_ema'\]"):
            load_discriminator(DiscriminatorConfig(spec=f"pickle:{path}#X", code_path=code,
                                                   trust_pickle=True))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_round_trip(tiny_discriminator, tmp_path: Path) -> None:
    path = tmp_path / "d.pt"
    torch.jit.script(tiny_discriminator).save(str(path))
    model = load_discriminator(DiscriminatorConfig(spec=f"torchscript:{path}", image_size=16))
    assert model.weights_sha256 == state_sha256(tiny_discriminator)
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    torch.testing.assert_close(model.forward(x), tiny_discriminator(x))
    assert {i.name for i in model.layer_info} >= {"0", "2", "5"}


# ---------------------------------------------------------------- generator


def test_generated_images_do_not_depend_on_batch_size(nets: Path, tmp_path: Path) -> None:
    gen = load_generator(spec(nets, "TinyG"))
    a = sample_generated(gen, n=7, seed=3, batch_size=3)
    b = sample_generated(gen, n=7, seed=3, batch_size=7, png_dir=tmp_path / "png")
    assert a.shape == (7, 1, 16, 16) and a.min() >= -1 and a.max() <= 1
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(sample_generated(gen, n=4, seed=3, batch_size=2), a[:4])
    assert not torch.allclose(sample_generated(gen, n=7, seed=4, batch_size=7), a)
    assert sorted(p.name for p in (tmp_path / "png").iterdir())[:2] == ["gen-3-0.png",
                                                                     "gen-3-1.png"]
    import numpy as np
    from PIL import Image

    png = torch.from_numpy(np.asarray(Image.open(tmp_path / "png" / "gen-3-5.png"),
                                      dtype=np.float32)) / 255 * 2 - 1
    torch.testing.assert_close(png, a[5, 0], atol=1 / 255 + 1e-6, rtol=0)


def test_truncation_is_passed_or_refused(nets: Path) -> None:
    gen = load_generator(GeneratorConfig(spec=spec(nets, "TinyG"), truncation=0.5))
    full = sample_generated(gen, n=2, seed=0)
    half = sample_generated(gen, n=2, seed=0, truncation=0.5)
    assert not torch.allclose(full, half)
    with pytest.raises(ModelLoadError, match="no truncation"):
        load_generator(GeneratorConfig(spec=spec(nets, "PlainD"), truncation=0.5,
                                       latent_dim=4))


# ---------------------------------------------------------------- CLI


def test_cli_layers_table_and_json(nets: Path) -> None:
    from click.testing import CliRunner

    from audit.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["layers", spec(nets, "MbstdD")])
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.stdout.splitlines()[1:]}
    assert "batch-dependent" in lines["mbstd"] and "batch-dependent" not in lines["act1"]
    assert "8 x 8 x 8" not in lines["conv1"] and "4 x 8 x 8" in lines["conv1"]
    res = runner.invoke(cli, ["layers", spec(nets, "PlainD"), "--image-size", "16", "--json"])
    data = json.loads(res.stdout)
    by_name = {x["name"]: x for x in data["layers"]}
    assert by_name["fc"]["params"] == 8 * 16 + 1 and by_name["conv2"]["shape"] == [8, 4, 4]
    res = runner.invoke(cli, ["layers", spec(nets, "PlainD"), "--image-size", "20"])
    assert res.exit_code == 2 and "failed on a dummy batch" in res.output


@pytest.mark.parametrize("args, fragment", [
    (["builtin:digits-dcgan", "--image-size", "100000"],
     "gan-audit layers: image_size: must be an integer >= 1 and <= 4096, got 100000"),
    (["D.pt"], "gan-audit layers: spec: unknown spec 'D.pt'"),
])
def test_cli_layers_refuses_bad_options_with_a_message(args, fragment) -> None:
    """A 100,000-pixel dummy batch would exhaust memory; a bad spec was a traceback."""
    from click.testing import CliRunner

    from audit.cli import cli

    res = CliRunner().invoke(cli, ["layers", *args])
    assert res.exit_code == 2, res.output
    assert fragment in res.output and "Traceback" not in res.output


# ---------------------------------------------------------------- model code that fails (#16)


@pytest.mark.parametrize("code, kind, fragment", [
    ("raise RuntimeError('needs CUDA 13')\n", "RuntimeError", "needs CUDA 13"),
    ("def D(:\n    pass\n", "SyntaxError", "line 1"),
    ("WIDTH = int('wide')\n", "ValueError", "invalid literal for int()"),
    ("import sys\nsys.exit('usage: train.py --data DIR')\n", "SystemExit",
     "usage: train.py --data DIR"),
])
def test_a_module_raising_at_import_names_the_spec_and_the_exception(tmp_path, code, kind,
                                                                     fragment) -> None:
    path = tmp_path / "broken.py"
    path.write_text(code)
    with pytest.raises(ModelLoadError) as info:
        load_discriminator(f"python:{path}:D")
    message = str(info.value)
    assert message.startswith(f"python:{path}:D: importing '{path}' raised {kind}")
    assert fragment in message and "full traceback with --debug" in message
    if kind != "SyntaxError":
        assert f"at {path}, line" in message  # where in the user's code
    path.write_text(NETS)  # fixed: loads (the failed import left no half-made module behind)
    assert type(load_discriminator(f"python:{path}:PlainD").module).__name__ == "PlainD"


def test_a_factory_raising_any_exception_names_the_kwargs_and_the_exception(nets) -> None:
    code = nets.read_text() + textwrap.dedent('''

        def make_checked(width=4):
            if width > 8:
                raise ValueError(f"width {width} is wider than the checkpoint")
            return PlainD(width=width)
    ''')
    nets.write_text(code)
    cfg = DiscriminatorConfig(spec=spec(nets, "make_checked"), kwargs={"width": 16})
    with pytest.raises(ModelLoadError) as info:
        load_discriminator(cfg)
    message = str(info.value)
    assert f"calling {nets}:make_checked with kwargs {{'width': 16}} raised ValueError" in message
    assert "width 16 is wider than the checkpoint" in message
    assert "full traceback with --debug" in message
    with pytest.raises(ModelLoadError, match=r"raised TypeError.*depth.*Fix the kwargs"):
        load_discriminator(DiscriminatorConfig(spec=spec(nets, "make_plain"),
                                               kwargs={"depth": 3}))


def test_a_missing_package_imported_by_model_code_names_pip_not_code_path(tmp_path) -> None:
    path = tmp_path / "needs.py"
    path.write_text("import torch\nimport sklearnx_not_installed.metrics\n")
    with pytest.raises(ModelLoadError) as info:
        load_discriminator(f"python:{path}:D")
    message = str(info.value)
    assert (f"the package 'sklearnx_not_installed' (imported by {path}, line 2) is not "
            f"installed. Install it: pip install sklearnx_not_installed.") in message
    assert "code_path" not in message


def test_a_missing_repository_module_names_code_path_not_pip(tmp_path) -> None:
    path = tmp_path / "uses_repo.py"
    path.write_text("import dnnlib\n")
    with pytest.raises(ModelLoadError) as info:
        load_discriminator(f"python:{path}:D")
    message = str(info.value)
    assert "the module 'dnnlib'" in message and "model repository's own code" in message
    assert "set code_path to the folder that holds dnnlib/" in message
    assert "pip install" not in message


def test_a_python_spec_finds_its_module_through_code_path(tmp_path) -> None:
    repo = tmp_path / "repo"
    (repo / "training").mkdir(parents=True)
    (repo / "training" / "__init__.py").write_text("")
    (repo / "training" / "nets_for_code_path.py").write_text(NETS)
    target = "python:training.nets_for_code_path:PlainD"
    with _code_on_path(repo, "training"):
        with pytest.raises(ModelLoadError, match=r"No module named 'training'.*set code_path"):
            load_discriminator(target)
        model = load_discriminator(DiscriminatorConfig(spec=target, code_path=repo))
        assert type(model.module).__name__ == "PlainD"
        with pytest.raises(ModelLoadError, match=r"package 'training' has no module "
                                                 r"'training.nets'; it has nets_for_code_path"):
            load_discriminator(DiscriminatorConfig(spec="python:training.nets:PlainD",
                                                   code_path=repo))


def _pickle_of(tmp_path: Path, code: Path, module: str, name: str) -> Path:
    """A pickle {'D': module.name()} whose class lives in ``code/module``."""
    with _code_on_path(code, module, insert=True):
        obj = getattr(__import__(module, fromlist=[name]), name)()
        path = tmp_path / "network.pkl"
        with open(path, "wb") as fh:
            pickle.dump({"D": obj}, fh)
    return path


def test_unpickling_tells_a_missing_package_from_missing_repository_code(tmp_path) -> None:
    code = tmp_path / "repo"
    (code / "dnnlib").mkdir(parents=True)
    (code / "dnnlib" / "__init__.py").write_text(NETS)
    path = _pickle_of(tmp_path, code, "dnnlib", "PlainD")
    # the repository's own module, no code_path: code_path is the fix
    with pytest.raises(ModelLoadError) as info:
        load_discriminator(DiscriminatorConfig(spec=f"pickle:{path}#D", trust_pickle=True))
    message = str(info.value)
    assert "unpickling needs the module 'dnnlib'" in message
    assert "set code_path to the folder that holds dnnlib/" in message
    assert "pip install" not in message
    # the repository's code needs a package that is not installed: pip is the fix
    (code / "dnnlib" / "__init__.py").write_text("import requestsx_not_installed\n" + NETS)
    with _code_on_path(code, "dnnlib"), pytest.raises(ModelLoadError) as info:
        load_discriminator(DiscriminatorConfig(spec=f"pickle:{path}#D", trust_pickle=True,
                                               code_path=code))
    message = str(info.value)
    assert "unpickling needs the module 'requestsx_not_installed'" in message
    assert (f"the package 'requestsx_not_installed' (imported by "
            f"{code / 'dnnlib' / '__init__.py'}, line 1) is not installed. Install it: "
            f"pip install requestsx_not_installed.") in message
    assert "code_path" not in message


def test_unpickling_a_module_missing_from_an_installed_package_names_its_version(
        tmp_path) -> None:
    """A pickle made with numpy 2 names numpy._core, which numpy 1 does not have."""
    path = tmp_path / "new_numpy.pkl"
    path.write_bytes(b"cnumpy._core_not_in_this_version.multiarray\n_reconstruct\n.")
    with pytest.raises(ModelLoadError) as info:
        load_discriminator(DiscriminatorConfig(spec=f"pickle:{path}#D", trust_pickle=True))
    message = str(info.value)
    assert "the installed 'numpy' has no module 'numpy._core_not_in_this_version'" in message
    assert "another version of numpy" in message and "pip install --upgrade numpy" in message


def test_an_unpickling_error_raised_by_model_code_is_a_message(tmp_path) -> None:
    code = tmp_path / "repo"
    code.mkdir()
    (code / "fragile.py").write_text(NETS + textwrap.dedent('''

        class Fragile(PlainD):
            def __setstate__(self, state):
                raise KeyError("conv9")
    '''))
    path = _pickle_of(tmp_path, code, "fragile", "Fragile")
    with _code_on_path(code, "fragile"), pytest.raises(ModelLoadError) as info:
        load_discriminator(DiscriminatorConfig(spec=f"pickle:{path}#D", trust_pickle=True,
                                               code_path=code))
    message = str(info.value)
    assert f"cannot unpickle {path} (KeyError at {code / 'fragile.py'}, line" in message
    assert "'conv9'; full traceback with --debug" in message


@pytest.mark.parametrize("body, got", [
    ("return self.fc(h.flatten(1)).mean()", "a 0-dim tensor (one number)"),
    ("return self.fc(h.flatten(1)).mean(0)", "a tensor of shape (1,)"),
    ("return self.fc(h.flatten(1)).reshape(2, -1)", "a tensor of shape (2, 2)"),
])
def test_a_discriminator_without_one_score_per_image_is_refused(nets, body, got) -> None:
    nets.write_text(nets.read_text() + textwrap.dedent(f'''

        class Pooled(PlainD):
            img_resolution = 16

            def forward(self, x):
                h = self.act2(self.conv2(self.act1(self.conv1(x))))
                {body}
    '''))
    with pytest.raises(ModelLoadError) as info:
        load_discriminator(spec(nets, "Pooled"))
    assert str(info.value).startswith(
        f"{spec(nets, 'Pooled')}: the discriminator returned {got} for a batch of 4 images; "
        f"expected N or N x 1 logits, one score per image (shape (4,) or (4, 1)).")


def test_a_package_raising_at_import_is_reported_by_the_load_stage(tmp_path, monkeypatch) -> None:
    """The run's cache key looks the module's file up (which imports its package): an error
    there is left to the load stage, which reports it, instead of a traceback."""
    from audit.pipeline import _spec_files

    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("raise RuntimeError('half installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = DiscriminatorConfig(spec="python:brokenpkg.nets:D")
    try:
        assert _spec_files(cfg) == {}
        with pytest.raises(ModelLoadError, match=r"importing 'brokenpkg.nets' raised "
                                                 r"RuntimeError at .*__init__.py, line 1: "
                                                 r"half installed"):
            load_discriminator(cfg)
    finally:
        sys.modules.pop("brokenpkg", None)


def test_a_missing_pkg_resources_names_the_setuptools_that_has_it(tmp_path) -> None:
    """StyleGAN3's code imports pkg_resources, which setuptools dropped in version 81: the
    fix is an older setuptools, not a package named pkg_resources (found in review)."""
    import importlib.util

    from audit.models.usercode import missing_module

    code = tmp_path / "repo"
    code.mkdir()
    (code / "legacy.py").write_text(
        "def load():\n"
        "    raise ModuleNotFoundError(\"No module named 'pkg_resources'\", "
        "name='pkg_resources')\n")
    spec = importlib.util.spec_from_file_location("legacy_under_test", code / "legacy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(ModuleNotFoundError) as info:
        module.load()
    message = missing_module(info.value, code_path=code)
    assert "pip install 'setuptools<81'" in message
    assert "pip install pkg_resources" not in message
