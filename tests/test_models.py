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
from typing import ClassVar

import pytest
import torch
from click.testing import CliRunner

from audit.cli import cli
from audit.config import DiscriminatorConfig, GeneratorConfig
from audit.errors import LayerError, ModelLoadError
from audit.load import load_discriminator, load_generator

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


    class SigmoidG(nn.Module):
        """lucidrains-style: images in [0, 1] through a sigmoid."""

        z_dim = 8

        def __init__(self):
            super().__init__()
            torch.manual_seed(4)
            self.fc = nn.Linear(8, 3 * 8 * 8)

        def raw(self, z):
            return (self.fc(z) * 2).view(-1, 3, 8, 8)

        def forward(self, z):
            return torch.sigmoid(self.raw(z))


    class TanhTwin(SigmoidG):
        """The same images in [-1, 1]: 2 * sigmoid - 1."""

        def forward(self, z):
            return 2 * torch.sigmoid(self.raw(z)) - 1


    class ByteG(SigmoidG):
        """Images in [0, 255]."""

        def forward(self, z):
            return 255 * torch.sigmoid(self.raw(z))


    class NoiseLayer(nn.Module):
        """NVlabs SynthesisLayer-like: per-pixel noise, random unless noise_mode='const'."""

        def __init__(self):
            super().__init__()
            self.register_buffer("noise_const", torch.randn(1, 1, 8, 8))
            self.noise_strength = 0.5

        def forward(self, x, noise_mode="random"):
            if noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, 8, 8, device=x.device)
            elif noise_mode == "const":
                noise = self.noise_const
            else:
                noise = 0
            return x + noise * self.noise_strength


    class StyleG(nn.Module):
        """NVlabs Generator-like: forward(z, c, truncation_psi, **synthesis_kwargs)."""

        z_dim = 8
        c_dim = 0

        def __init__(self):
            super().__init__()
            torch.manual_seed(5)
            self.fc = nn.Linear(8, 3 * 8 * 8)
            self.layer = NoiseLayer()

        def forward(self, z, c, truncation_psi=1, **synthesis_kwargs):
            x = self.fc(z * truncation_psi).view(-1, 3, 8, 8)
            return torch.tanh(self.layer(x, **synthesis_kwargs))


    class DropoutG(SigmoidG):
        """Draws random numbers in forward and has no switch for it."""

        def forward(self, z):
            return torch.tanh(self.raw(z) + torch.randn(z.shape[0], 3, 8, 8))


    class Fp16Block(nn.Module):
        """NVlabs-like: casts to float16 inside forward while use_fp16 is on."""

        def __init__(self, channels, use_fp16):
            super().__init__()
            self.use_fp16 = use_fp16
            self.weight = nn.Parameter(torch.randn(1, channels, 1, 1))

        def forward(self, x, force_fp32=False):
            dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
            x = x.to(dtype) * self.weight.to(dtype) + 0.1
            return F.leaky_relu(x, 0.2)


    class Fp16D(nn.Module):
        """num_fp16_res: how many blocks run in float16."""

        img_resolution = 8
        img_channels = 3

        def __init__(self, num_fp16_res=2):
            super().__init__()
            torch.manual_seed(6)
            self.num_fp16_res = num_fp16_res
            self.b8 = Fp16Block(3, use_fp16=num_fp16_res >= 1)
            self.b4 = Fp16Block(3, use_fp16=num_fp16_res >= 2)
            self.out = nn.Linear(3 * 8 * 8, 1)

        def forward(self, img, **block_kwargs):
            x = self.b4(self.b8(img, **block_kwargs), **block_kwargs)
            return self.out(x.float().flatten(1))


    class SGBlock(nn.Module):
        """StyleGAN2-ADA resnet DiscriminatorBlock: conv0, conv1, skip; returns (x, img)."""

        def __init__(self, cin, cout):
            super().__init__()
            self.conv0 = nn.Conv2d(cin, cin, 3, 1, 1)
            self.conv1 = nn.Conv2d(cin, cout, 3, 2, 1)
            self.skip = nn.Conv2d(cin, cout, 1, 2, 0, bias=False)

        def forward(self, x, img):
            y = self.skip(x)
            x = self.conv1(F.leaky_relu(self.conv0(x), 0.2))
            return (y + F.leaky_relu(x, 0.2)) * 0.7, img


    class MbstdLayer(nn.Module):
        def forward(self, x):
            std = x.std(dim=0, unbiased=False).mean()
            return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], 1)


    class SGEpilogue(nn.Module):
        """b4: mbstd, conv, fc, out (batch-dependent through mbstd)."""

        def __init__(self, cin):
            super().__init__()
            self.mbstd = MbstdLayer()
            self.conv = nn.Conv2d(cin + 1, cin, 3, 1, 1)
            self.fc = nn.Linear(cin * 16, cin)
            self.out = nn.Linear(cin, 1)

        def forward(self, x, img):
            x = F.leaky_relu(self.conv(self.mbstd(x)), 0.2)
            return self.out(F.leaky_relu(self.fc(x.flatten(1)), 0.2))


    class StyleD(nn.Module):
        img_resolution = 32
        img_channels = 3

        def __init__(self):
            super().__init__()
            torch.manual_seed(7)
            self.b32 = SGBlock(3, 8)
            self.b16 = SGBlock(8, 8)
            self.b8 = SGBlock(8, 8)
            self.b4 = SGEpilogue(8)

        def forward(self, img):
            x, img_ = self.b32(img, img)
            x, img_ = self.b16(x, img_)
            x, img_ = self.b8(x, img_)
            return self.b4(x, img_)


    class MimicryBlock(nn.Module):
        """torch-mimicry DBlock: one ReLU module used twice, shortcut c_sc."""

        def __init__(self, cin, cout):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, 1, 1)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1)
            self.c_sc = nn.Conv2d(cin, cout, 1, 1, 0)
            self.activation = nn.ReLU()

        def forward(self, x):
            h = self.c2(self.activation(self.c1(self.activation(x))))
            return F.avg_pool2d(h + self.c_sc(x), 2)


    class MimicryD(nn.Module):
        """SNGAN discriminator: block1 .. block4, then the activation, a sum and l5."""

        img_resolution = 32
        img_channels = 3

        def __init__(self):
            super().__init__()
            torch.manual_seed(8)
            self.block1 = MimicryBlock(3, 8)
            self.block2 = MimicryBlock(8, 8)
            self.block3 = MimicryBlock(8, 8)
            self.block4 = MimicryBlock(8, 8)
            self.l5 = nn.Linear(8, 1)
            self.activation = nn.ReLU()

        def forward(self, x):
            h = self.block4(self.block3(self.block2(self.block1(x))))
            return self.l5(torch.sum(self.activation(h), dim=(2, 3)))


    class LucidD(nn.Module):
        """lucidrains-like: a ModuleList of residual blocks (conv_res), then final_conv."""

        img_resolution = 32
        img_channels = 3

        def __init__(self):
            super().__init__()
            torch.manual_seed(9)
            self.blocks = nn.ModuleList([ResBlock(3, 8), ResBlock(8, 8), ResBlock(8, 8),
                                         ResBlock(8, 8)])
            self.final_conv = nn.Conv2d(8, 8, 3, 1, 1)
            self.to_logit = nn.Linear(8 * 4, 1)

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.to_logit(self.final_conv(x).flatten(1))


    class ResBlock(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv_res = nn.Conv2d(cin, cout, 1, 2)
            self.net = nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.LeakyReLU(0.2),
                                     nn.Conv2d(cout, cout, 3, 2, 1), nn.LeakyReLU(0.2))

        def forward(self, x):
            return self.net(x) + self.conv_res(x)


    class LazyImportD(SmallD):
        """Imports a package at its first forward (as NVlabs' custom ops build plugins)."""

        img_resolution = 16

        def forward(self, x):
            import gan_audit_no_such_package  # noqa: F401
            return super().forward(x)


    class LazyImportG(SigmoidG):
        def forward(self, z):
            import gan_audit_no_such_package  # noqa: F401
            return super().forward(z)
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


# ---------------------------------------------------------------- generator output range (item 3)


def _gen(nets: Path, name: str, **fields):
    return load_generator(GeneratorConfig(spec=f"python:{nets}:{name}", **fields))


def test_a_generator_in_0_1_declared_as_minus_1_1_is_refused_with_the_line(nets) -> None:
    from audit.load import generate_batch

    with pytest.raises(ModelLoadError) as err:
        generate_batch(_gen(nets, "SigmoidG"), range(16), seed=0)
    message = str(err.value)
    assert "generator: {value_range: [0, 1]}" in message
    assert "generator.value_range is [-1, 1] (the default)" in message
    # the observed extremes, as the images hold them
    z_images = _gen(nets, "SigmoidG", value_range=(0, 1))
    raw = torch.sigmoid(z_images.module.raw(_latents(z_images, 16)))
    assert f"[{float(raw.min()):.4g}, {float(raw.max()):.4g}]" in message


def _latents(generator, n: int) -> torch.Tensor:
    from audit.load import latents

    return latents(generator, range(n), seed=0)


def test_fewer_images_than_the_check_needs_are_not_judged_on_the_lower_half(nets) -> None:
    """Eight images in [0, 1] do not yet prove that [-1, 1] is wrong; sixteen do."""
    from audit.load import generate_batch

    generator = _gen(nets, "SigmoidG")
    generate_batch(generator, range(8), seed=0)
    with pytest.raises(ModelLoadError, match=r"first 16 images"):
        generate_batch(generator, range(8, 16), seed=0)


def test_values_far_outside_the_range_are_refused_at_once(nets) -> None:
    from audit.load import generate_batch

    with pytest.raises(ModelLoadError, match=r"far outside.*value_range: \[0, 255\]"):
        generate_batch(_gen(nets, "ByteG", value_range=(0, 1)), range(2), seed=0)
    images = generate_batch(_gen(nets, "ByteG", value_range=(0, 255)), range(16), seed=0)
    assert float(images.min()) >= -1 and float(images.max()) <= 1


def test_a_declared_0_1_generator_gives_the_images_of_its_minus_1_1_twin(nets) -> None:
    from audit.load import generate_batch

    sigmoid = generate_batch(_gen(nets, "SigmoidG", value_range=(0, 1)), range(20), seed=3)
    twin = generate_batch(_gen(nets, "TanhTwin"), range(20), seed=3)
    torch.testing.assert_close(sigmoid, twin, rtol=0, atol=1e-6)
    assert float(sigmoid.min()) < -0.3   # scaled: the dark half of [-1, 1] is used


def test_clamped_values_are_counted_not_hidden(nets) -> None:
    """A generator that overshoots its declared range a little is clamped, and the count of
    clamped values is what the images held outside the range."""
    from audit.load import generate_batch

    generator = _gen(nets, "TanhTwin", value_range=(-0.5, 0.5))
    raw = 2 * torch.sigmoid(generator.module.raw(_latents(generator, 16))) - 1
    images = generate_batch(generator, range(16), seed=0)
    expected = int(((raw < -0.5) | (raw > 0.5)).sum())
    assert expected > 0 and generator.output.clamped == expected
    assert float(images.abs().max()) == 1.0
    record = generator.output.to_dict()
    assert record["clamped_values"] == expected and record["values"] == raw.numel()
    assert record["observed_min"] == pytest.approx(float(raw.min()))


# ---------------------------------------------------------------- reproducible generation (item 4)


def _images(nets: Path, name: str, *, seed: int = 0, n: int = 6, **fields) -> torch.Tensor:
    """Images of a freshly loaded generator, as one run makes them."""
    from audit.load import generate_batch

    generator = load_generator(GeneratorConfig(spec=f"python:{nets}:{name}", **fields))
    return generate_batch(generator, range(n), seed=seed)


def test_stylegan_generators_get_constant_noise_by_default(nets) -> None:
    from audit.load import latents

    generator = load_generator(GeneratorConfig(spec=f"python:{nets}:StyleG"))
    assert generator.call_kwargs == {"noise_mode": "const"}
    assert any("noise_mode='const'" in note for note in generator.notes)
    images = _images(nets, "StyleG")
    # the images of constant noise, computed by hand
    z = latents(generator, range(6), seed=0)
    with torch.no_grad():
        expected = generator.module(z, torch.zeros(6, 0), noise_mode="const")
    assert torch.equal(images, expected)


def test_random_noise_is_seeded_per_batch(nets) -> None:
    """Two runs of the same config give bit-identical images; another seed other images."""
    random = {"call_kwargs": {"noise_mode": "random"}}
    one, two = _images(nets, "StyleG", **random), _images(nets, "StyleG", **random)
    assert torch.equal(one, two)
    assert not torch.equal(one, _images(nets, "StyleG", seed=1, **random))
    assert not torch.equal(one, _images(nets, "StyleG"))   # random noise is not the constant
    # a generator that draws random numbers with no switch at all is seeded the same way
    assert torch.equal(_images(nets, "DropoutG"), _images(nets, "DropoutG"))
    assert not torch.equal(_images(nets, "DropoutG"), _images(nets, "DropoutG", seed=1))


def test_generation_leaves_the_global_random_state_alone(nets) -> None:
    from audit.load import generate_batch

    generator = load_generator(GeneratorConfig(spec=f"python:{nets}:DropoutG"))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate_batch(generator, range(4), seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_call_kwargs_forward_cannot_take_are_refused(nets) -> None:
    with pytest.raises(ModelLoadError, match=r"call_kwargs \['noise_mode'\] are not parameters"):
        load_generator(GeneratorConfig(spec=f"python:{nets}:SigmoidG",
                                       call_kwargs={"noise_mode": "const"}))


# ---------------------------------------------------------------- precision (item 6)


def _fp16_d(nets: Path, **fields):
    return load_discriminator(DiscriminatorConfig(spec=f"python:{nets}:Fp16D", **fields))


def test_float16_layers_run_in_float32_on_cpu(nets) -> None:
    model = _fp16_d(nets)
    assert [name for name, m in model.module.named_modules() if getattr(m, "use_fp16", False)] \
        == []
    assert model.dtype == "float32"
    assert any("float16 layers run in float32 (b8, b4" in note for note in model.notes)
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    # the reference: the same weights built without float16 layers
    reference = load_discriminator(DiscriminatorConfig(spec=f"python:{nets}:Fp16D",
                                                       kwargs={"num_fp16_res": 0}))
    with torch.no_grad():
        assert torch.equal(model.forward(x), reference.forward(x))
        assert model.module.b8(x).dtype == torch.float32


def test_keep_fp16_is_for_cuda_only(nets) -> None:
    from audit.models.precision import set_precision

    model = _fp16_d(nets, keep_fp16=True)     # on the CPU: float32 all the same, and said
    assert model.dtype == "float32" and not model.module.b8.use_fp16
    assert any("keep_fp16 applies on CUDA only" in note for note in model.notes)
    module = _fp16_d(nets, kwargs={"num_fp16_res": 2}).module
    module.b8.use_fp16 = module.b4.use_fp16 = True
    dtype, built, notes = set_precision(module, device="cuda", keep_fp16=True)
    assert (dtype, built, notes) == ("float16+float32", ["b8", "b4"], [])
    assert module.b8.use_fp16 and module.b4.use_fp16   # kept as the user chose
    dtype, _, _ = set_precision(module, device="cuda", keep_fp16=False)
    assert dtype == "float32" and not module.b8.use_fp16


def test_float16_weights_run_in_float32(nets) -> None:
    from audit.models.precision import set_precision

    module = torch.nn.Linear(3, 2).half()
    dtype, built, notes = set_precision(module, device="cpu", keep_fp16=False)
    assert dtype == "float32" and built == [] and module.weight.dtype == torch.float32
    assert notes == ["weights stored in float16 run in float32"]


def test_the_store_manifest_records_the_dtype(nets, tmp_path) -> None:
    from audit.extract import extract

    store = extract(_fp16_d(nets), ["b4"], torch.rand(4, 3, 8, 8) * 2 - 1,
                    out=tmp_path / "store")
    assert store.manifest["model"]["dtype"] == "float32"


# ---------------------------------------------------------------- identity (item 8)


def _pickled(nets: Path, tmp_path: Path, name: str, make) -> str:
    sys.path.insert(0, str(nets.parent))
    try:
        import nets as module

        with open(tmp_path / f"{name}.pkl", "wb") as fh:
            pickle.dump({"D": make(module)}, fh)
    finally:
        sys.path.remove(str(nets.parent))
        sys.modules.pop("nets", None)
    return f"pickle:{tmp_path / name}.pkl#D"


def test_an_fp16_and_an_fp32_build_of_the_same_weights_differ(nets, tmp_path) -> None:
    """Pickles (no construction arguments known): only the float16 flags tell them apart."""
    def load(spec: str):
        return load_discriminator(DiscriminatorConfig(spec=spec, code_path=nets.parent,
                                                      trust_pickle=True), probe=False)

    fp16 = load(_pickled(nets, tmp_path, "fp16", lambda m: m.Fp16D(num_fp16_res=2)))
    fp32 = load(_pickled(nets, tmp_path, "fp32", lambda m: m.Fp16D(num_fp16_res=0)))
    again = load(_pickled(nets, tmp_path, "again", lambda m: m.Fp16D(num_fp16_res=2)))
    sys.modules.pop("nets", None)
    assert fp16.weights_sha256 == fp32.weights_sha256      # the same weights
    assert fp16.sha256 != fp32.sha256                        # but not the same model
    assert fp16.identity["fp16_layers"] == ["b8", "b4"] and fp32.identity["fp16_layers"] == []
    assert again.sha256 == fp16.sha256                       # and the hash is stable


def test_identity_covers_class_kwargs_and_dtype(nets) -> None:
    from audit.models.identity import identity_sha256

    def load(**fields):
        return load_discriminator(DiscriminatorConfig(spec=f"python:{nets}:Fp16D", **fields),
                                  probe=False)

    two, zero = load(kwargs={"num_fp16_res": 2}), load(kwargs={"num_fp16_res": 0})
    assert two.weights_sha256 == zero.weights_sha256 and two.sha256 != zero.sha256
    assert two.identity["class"] == "Fp16D" and two.identity["kwargs"] == {"num_fp16_res": 2}
    assert two.identity["dtype"] == "float32"
    assert identity_sha256({**two.identity, "dtype": "float16+float32"}) != two.sha256
    assert identity_sha256({**two.identity, "class": "Other"}) != two.sha256
    assert identity_sha256(dict(two.identity)) == two.sha256


def test_generators_and_manifests_carry_the_identity(nets, tmp_path) -> None:
    from audit.extract import extract

    generator = load_generator(GeneratorConfig(spec=f"python:{nets}:SigmoidG",
                                               value_range=(0, 1)))
    assert generator.identity["class"] == "SigmoidG"
    assert generator.identity["weights_sha256"] == generator.weights_sha256 != generator.sha256
    model = _fp16_d(nets)
    store = extract(model, ["b4"], torch.rand(4, 3, 8, 8) * 2 - 1, out=tmp_path / "store")
    assert store.manifest["model"]["identity"] == model.identity
    assert store.manifest["model"]["sha256"] == model.sha256


# ---------------------------------------------------------------- layer choice (item 7)


def _d(nets: Path, name: str):
    return load_discriminator(DiscriminatorConfig(spec=f"python:{nets}:{name}"))


def test_auto_picks_stylegan_blocks_not_inner_convs_nor_skip(nets) -> None:
    from audit.load import auto_layers

    model = _d(nets, "StyleD")
    assert model.batch_dependent_layers[:1] == ["b4"]
    assert auto_layers(model) == ["b32", "b16", "b8"]
    # b4 (the epilogue) ends in the score: one value per image, never a feature layer
    assert auto_layers(model, include_batch_dependent=True) == ["b32", "b16", "b8"]


def test_auto_picks_the_top_level_blocks_of_mimicry_and_lucidrains(nets) -> None:
    from audit.load import auto_layers

    assert auto_layers(_d(nets, "MimicryD")) == ["block1", "block2", "block3", "block4"]
    assert auto_layers(_d(nets, "LucidD")) == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]


def test_a_reused_module_is_found_listed_and_refused(nets, tmp_path) -> None:
    from audit.extract import resolve_layers

    model = _d(nets, "MimicryD")
    calls = {i.name: i.calls for i in model.layer_info}
    assert calls["block2.activation"] == 2 and calls["activation"] == 1
    assert calls["block2"] == 1 and calls["block2.c1"] == 1
    code, out, err = _layers(f"python:{nets}:MimicryD")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("block2.activation "))
    assert row.endswith("reused (called 2 times)")
    row = next(line for line in out.splitlines() if line.startswith("activation "))
    assert "reused" not in row
    with pytest.raises(LayerError, match=r"'block2.activation' is one module called 2 times"
                                         r".*enclosing block 'block2'"):
        resolve_layers(model, ["block3", "block2.activation"])
    assert resolve_layers(model, ["block2", "activation"]) == ["block2", "activation"]


def test_skip_branches_are_named_as_such() -> None:
    from audit.models.probe import is_skip_branch

    for name in ("b8.skip", "block2.c_sc", "blocks.0.conv_res", "layer1.0.shortcut.0",
                 "skip_conv"):
        assert is_skip_branch(name), name
    for name in ("b8", "b8.conv1", "res_block1", "residual_block", "blocks.0.net",
                 "downsample"):
        assert not is_skip_branch(name), name


# ---------------------------------------------------------------- model code errors (item 5)


def test_a_package_imported_inside_forward_is_named_not_the_input_size(nets) -> None:
    with pytest.raises(ModelLoadError) as err:
        _d(nets, "LazyImportD")
    message = str(err.value)
    assert "needs the module 'gan_audit_no_such_package'" in message
    assert "pip install gan_audit_no_such_package" in message
    assert "image_size" not in message
    code, _, err_text = _layers(f"python:{nets}:LazyImportD")
    assert code == 2 and "pip install gan_audit_no_such_package" in err_text
    assert "Traceback" not in err_text


def test_errors_inside_the_generators_forward_are_messages(nets) -> None:
    from audit.load import generate_batch

    with pytest.raises(ModelLoadError, match=r"the generator's forward needs the module "
                                             r"'gan_audit_no_such_package'.*pip install"):
        generate_batch(_gen(nets, "LazyImportG"), range(2), seed=0)
    wrong = _gen(nets, "SigmoidG", latent_dim=5, value_range=(0, 1))   # the net takes 8
    with pytest.raises(ModelLoadError, match=r"the generator's forward raised RuntimeError"
                                             r".*Check latent_dim \(latents here are 2 x 5\)"):
        generate_batch(wrong, range(2), seed=0)


def _range_check(images: torch.Tensor, declared=(-1.0, 1.0), explicit=False):
    from audit.models.output_range import OutputRange, images_to_tool_range

    state = OutputRange(declared, explicit=explicit)
    return images_to_tool_range(images, state, spec="python:g:G"), state


def test_the_range_check_reads_quantiles_not_extremes() -> None:
    """Found in review: a [0, 1] generator whose raw output overshoots a little (lucidrains
    returns its RGB unclamped) or whose images are dark escaped a check on the extremes."""
    gen = torch.Generator().manual_seed(0)
    raw = torch.rand(16, 3, 8, 8, generator=gen)
    raw[0, 0, 0, :3] = torch.tensor([-0.06, -0.15, 1.1])  # a few stray pixels
    dark = 0.7 * torch.rand(16, 3, 8, 8, generator=gen)
    for images in (raw, dark):
        with pytest.raises(ModelLoadError, match=r"value_range: \[0, 1\]"):
            _range_check(images)
    # a StyleGAN-like [-1, 1] generator with noise overshoot: no [0, 255] suggestion
    wide = (0.5 * torch.randn(16, 3, 8, 8, generator=gen)).clamp(-1.13, 1.05)
    _range_check(wide)  # overshoot, and half its values below the middle: no disagreement
    from audit.models.output_range import _suggest

    assert _suggest(-2.26, 1.09, (0.0, 1.0)) != (0.0, 255.0)  # not at the data's scale
    assert _suggest(-0.15, 1.1, (-1.0, 1.0)) == (0.0, 1.0)


def test_a_declared_range_that_looks_unused_is_a_warning_not_a_stop() -> None:
    bright = 0.5 + 0.5 * torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning, match="kept as declared"):
        images, state = _range_check(bright, explicit=True)
    assert state.checked and torch.equal(images, bright)
    with pytest.raises(ModelLoadError, match="far outside"):  # never plausible: still a stop
        _range_check(bright * 255, declared=(0.0, 1.0), explicit=True)


def test_an_nvlabs_persistent_networks_identity_names_its_class_and_code() -> None:
    """NVlabs' persistence wraps every network class in one local ``Decorator`` and keeps
    the original class name and module source on the object: the identity uses both, so
    two networks, or a pickle re-saved with patched code, differ (found in review)."""
    from torch import nn

    from audit.models.identity import class_name, identity_sha256, model_identity

    class Decorator(nn.Linear):  # what torch_utils.persistence makes of every class
        pass

    class Cfg:
        kwargs: ClassVar[dict] = {}

    def persistent(name: str, source: str) -> nn.Module:
        net = Decorator(2, 1)
        net._orig_class_name = name
        net._orig_module_name = "training.networks_stylegan2"
        net._orig_module_src = source
        return net

    d, g = persistent("Discriminator", "v1"), persistent("Generator", "v1")
    assert class_name(d) == "training.networks_stylegan2.Discriminator"
    ids = [identity_sha256(model_identity(m, Cfg(), dtype="float32", built_fp16=[],
                                          weights_sha256="w"))
           for m in (d, g, persistent("Discriminator", "v2 (patched)"))]
    assert len(set(ids)) == 3
