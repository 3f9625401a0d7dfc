"""Each example config of examples/, run end to end on a tiny model of its family (issue 17).

The test builds the family's model small and randomly initialised (:mod:`families`),
rewrites the example's model paths (spec, weights, code_path) and sizes to the built
files, swaps its data for the demo's digits (no download), and runs `gan-audit layers`
and `gan-audit run --no-pdf` through CliRunner. Everything else of the example (value
ranges, trust_pickle, weights_key, batch sizes, layers, score_output) is used as written:
that is what is under test.

The loader's side of each family is tested here too: `layers` with a config or
--code-path/--trust-pickle, generator.value_range, reused modules refused, fp32 on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from families import dcgan, lucidrains, mimicry, stylegan2

from audit.cli import cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAMILIES_DIR = Path(__file__).resolve().parent / "families"

#: family -> its example config
EXAMPLE = {"stylegan2": "celeba_stylegan2.yaml", "lucidrains": "lucidrains_stylegan2.yaml",
           "mimicry": "mimicry_sngan.yaml", "plain": "mnist_state_dict.yaml"}

# The demo's data instead of the examples' (CelebA, FairFace, MNIST): small and built in.
TINY_DATA: dict[str, Any] = {
    "concept_set": "digits_tone",
    "paired": {"source": "builtin:digits-paired", "n": 240},
    "real": {"source": "builtin:digits-audit", "n": 120},
    "decoders": {"max_epochs": 8},
    "measure": {"n_boot": 50},
    "report": {"pdf": False, "samples_per_group": 2, "labelling_sample": 24},
    "device": "cpu",
}


def build(family: str, folder: Path) -> dict[str, dict[str, Any]]:
    """Build the family's tiny model in ``folder``; what replaces the example's model keys
    (per section: the built files, and sizes for 32 px)."""
    if family == "stylegan2":
        pkl, code = stylegan2.build_pickle(folder, seed=0)
        model = {"code_path": str(code), "image_size": 32}
        return {"discriminator": {"spec": f"pickle:{pkl}#D", **model},
                "generator": {"spec": f"pickle:{pkl}#G_ema", "code_path": str(code)}}
    if family == "lucidrains":
        paths = lucidrains.build(folder)
        module = FAMILIES_DIR / "lucidrains.py"
        return {"discriminator": {"spec": f"python:{module}:Discriminator",
                                  "kwargs": {"image_size": 32, "network_capacity": 4},
                                  "weights": str(paths["D"]), "image_size": 32},
                "generator": {"spec": f"python:{module}:LatentGenerator",
                              "kwargs": {"image_size": 32, "latent_dim": 32,
                                         "network_capacity": 4},
                              "weights": str(paths["G"]), "latent_dim": 32}}
    if family == "mimicry":
        paths = mimicry.build(folder)
        module = FAMILIES_DIR / "mimicry.py"
        return {"discriminator": {"spec": f"python:{module}:SNGANDiscriminator32",
                                  "kwargs": {"ndf": 16}, "weights": str(paths["D"]),
                                  "image_size": 32, "layers": ["block2", "block3", "block4"]},
                "generator": {"spec": f"python:{module}:SNGANGenerator32",
                              "kwargs": {"nz": 32, "ngf": 16}, "weights": str(paths["G"])}}
    # plain: the example's own kwargs (ndf 64, nz 100, ngf 64); 32 px for the DCGAN's convs
    checkpoint = dcgan.build(folder, ndf=64, nz=100, ngf=64)
    module = FAMILIES_DIR / "dcgan.py"
    return {"discriminator": {"spec": f"python:{module}:Discriminator",
                              "weights": str(checkpoint), "image_size": 32},
            "generator": {"spec": f"python:{module}:Generator", "weights": str(checkpoint)}}


def example_config(family: str, folder: Path, **generator: Any) -> Path:
    """The family's example with its model rewritten to the built one and the demo's data;
    written to ``folder/audit.yaml``. ``generator``: more generator keys."""
    data = yaml.safe_load((EXAMPLES / EXAMPLE[family]).read_text(encoding="utf-8"))
    built = build(family, folder)
    for section in ("discriminator", "generator"):
        data[section] = {**data[section], **built[section]}
    data["generator"].update({"n": 120, **generator})
    data.update({**TINY_DATA, "out": str(folder / "run")})
    path = folder / "audit.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def _unload_stylegan_code():
    """Each test unpickles with its own code folder: none is left importable after it."""
    yield
    stylegan2.forget_code()


# ---------------------------------------------------------------- gan-audit run


@pytest.mark.parametrize("family", ["stylegan2", "mimicry", "plain"])
def test_the_example_runs_on_a_tiny_model_of_its_family(family, tmp_path):
    config = example_config(family, tmp_path)
    result = invoke("run", config, "--no-pdf")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert results["schema_version"]
    assert (run / "report.html").is_file()
    for store in ("paired", "real", "generated"):
        manifest = json.loads((run / "activations" / store / "manifest.json").read_text())
        batches = manifest["batches"]
        assert batches["batch_dependent"] is (family == "stylegan2")
        # 120 generated / real images in batches of 32 (StyleGAN): 8 padded rows each
        if family == "stylegan2" and store != "paired":
            assert manifest["padded_rows"] == 8 and batches["group_size"] == 4
        if family != "stylegan2":
            assert manifest["padded_rows"] == 0
    # the method section says how a batch-dependent score was formed (issue 17, item 8)
    said = [n for n in results["notes"] if "depends on the other images in its batch" in n]
    assert len(said) == (family == "stylegan2")
    if said:
        assert "repeated rows: 16 in paired, 8 in real, 8 in generated" in said[0]
        assert "depends on the other images in its batch" in (run / "report.html").read_text()


def test_interpolate_and_decode_call_stylegan_with_full_batches(tmp_path):
    # On main, mbstd's reshape failed on any batch but 4, 8, 12...: `interpolate` with its
    # 9 default steps always, `decode` on 5 images; the message blamed image_size.
    import numpy as np
    from PIL import Image

    config = example_config("stylegan2", tmp_path)
    assert invoke("run", config, "--no-pdf").exit_code == 0
    run = tmp_path / "run"
    result = invoke("interpolate", run, "--from", "gen-0-0", "--to", "gen-0-4",
                    "--trust-run-config")
    assert result.exit_code == 0, result.output
    doc = json.loads((run / "insight" / "interpolations.json").read_text())
    assert any(path["steps"] == 9 and len(path["scores"]) == 9 for path in doc["paths"])
    rng = np.random.default_rng(0)
    files = []
    for i in range(5):
        files.append(tmp_path / f"face-{i}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(files[-1])
    out = tmp_path / "decoded.csv"
    result = invoke("decode", run, *files, "--csv", out, "--trust-run-config")
    assert result.exit_code == 0, result.output
    assert len(out.read_text(encoding="utf-8").strip().splitlines()) == 1 + 5


def test_a_batch_size_off_the_mbstd_group_is_rounded_and_said_once(tmp_path):
    config = example_config("stylegan2", tmp_path)
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["discriminator"]["batch_size"] = 6
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = invoke("run", config, "--no-pdf")
    assert result.exit_code == 0, result.output
    assert "using batch_size 8" in result.output
    # said once for the run (as "warning: ..." on stderr), not once per store or stage
    assert result.output.count("batch_size 6 is not a multiple") == 1
    for store in ("paired", "real", "generated"):
        manifest = json.loads((tmp_path / "run" / "activations" / store /
                               "manifest.json").read_text())
        assert manifest["settings"]["batch_size"] == manifest["batches"]["batch_size"] == 8


def test_lucidrains_runs_with_its_generator_range_declared(tmp_path):
    config = example_config("lucidrains", tmp_path, value_range=[0, 1])
    result = invoke("run", config, "--no-pdf")
    assert result.exit_code == 0, result.output


def test_lucidrains_images_read_as_minus_one_one_stop_with_the_line_to_add(tmp_path):
    # Without generator.value_range the [0, 1] images would be read as [-1, 1]: every
    # finding wrong, silently (issue 17, item 3).
    config = example_config("lucidrains", tmp_path)
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    del data["generator"]["value_range"]  # what a user who missed the example's line has
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = invoke("run", config, "--no-pdf")
    assert result.exit_code == 2
    assert "value_range" in result.output and "[0, 1]" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- gan-audit layers


@pytest.mark.parametrize(("family", "cls", "channels", "expect"), [
    ("lucidrains", "lucidrains.py:Discriminator", 3, ["blocks.0", "blocks.3", "to_logit"]),
    ("mimicry", "mimicry.py:SNGANDiscriminator32", 3, ["block1", "block4", "l5"]),
    ("plain", "dcgan.py:Discriminator", 1, ["main.0", "main.8", "main.9"]),
])
def test_layers_lists_a_python_spec_of_each_family(family, cls, channels, expect):
    result = invoke("layers", f"python:{FAMILIES_DIR / cls}", "--image-size", 32,
                    "--channels", channels)
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.output.splitlines()[1:] if line.strip()]
    for name in expect:
        assert name in names


def test_layers_opens_a_network_pickle_with_code_path_and_trust(tmp_path):
    pkl, code = stylegan2.build_pickle(tmp_path)
    result = invoke("layers", f"pickle:{pkl}#D", "--code-path", code, "--trust-pickle",
                    "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert "b4.mbstd" in doc["batch_dependent_layers"]
    assert {"b32", "b16", "b8", "b4"} <= {layer["name"] for layer in doc["layers"]}


@pytest.mark.parametrize("family", list(EXAMPLE))
def test_layers_takes_the_example_config(family, tmp_path):
    result = invoke("layers", example_config(family, tmp_path))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def test_layers_marks_torch_mimicrys_reused_relu(tmp_path):
    result = invoke("layers", f"python:{FAMILIES_DIR / 'mimicry.py'}:SNGANDiscriminator32",
                    "--image-size", 32, "--channels", 3, "--json")
    assert result.exit_code == 0, result.output
    text = json.dumps(json.loads(result.output))
    assert "reused" in text


def test_a_reused_relu_is_refused_as_a_layer_naming_its_block(tmp_path):
    config = example_config("mimicry", tmp_path)
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["discriminator"]["layers"] = ["block3.activation"]
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = invoke("run", config, "--no-pdf")
    assert result.exit_code == 2
    assert "block3.activation" in result.output and "'block3'" in result.output
    assert "Traceback" not in result.output


def test_auto_layers_of_torch_mimicry_are_never_reused_modules(tmp_path):
    from audit.config import DiscriminatorConfig
    from audit.load import auto_layers, load_discriminator

    paths = mimicry.build(tmp_path)
    model = load_discriminator(DiscriminatorConfig(
        spec=f"python:{FAMILIES_DIR / 'mimicry.py'}:SNGANDiscriminator32",
        weights=paths["D"], weights_key="model_state_dict", image_size=32, channels=3))
    assert not any("activation" in name for name in auto_layers(model))


def test_auto_layers_of_stylegan_are_blocks_never_a_skip_branch(tmp_path):
    from audit.config import DiscriminatorConfig
    from audit.load import auto_layers, load_discriminator

    pkl, code = stylegan2.build_pickle(tmp_path)
    model = load_discriminator(DiscriminatorConfig(spec=f"pickle:{pkl}#D", code_path=code,
                                                   trust_pickle=True))
    chosen = auto_layers(model)
    assert chosen and set(chosen) <= {"b32", "b16", "b8"}


def test_fp16_stylegan_blocks_run_in_float32_on_the_cpu(tmp_path):
    import torch

    from audit.config import DiscriminatorConfig
    from audit.load import load_discriminator

    pkl, code = stylegan2.build_pickle(tmp_path, num_fp16_res=4)
    model = load_discriminator(DiscriminatorConfig(spec=f"pickle:{pkl}#D", code_path=code,
                                                   trust_pickle=True))
    seen = []
    model.module.b32.register_forward_hook(lambda _m, _i, out: seen.append(out[0].dtype))
    model.forward(torch.zeros(4, 3, 32, 32))
    assert seen[-1] == torch.float32


def test_the_built_network_pickle_needs_its_code_folder(tmp_path):
    # As real NVlabs pickles: without code_path the classes cannot be found.
    from audit.config import DiscriminatorConfig
    from audit.errors import ModelLoadError
    from audit.load import load_discriminator

    pkl, _ = stylegan2.build_pickle(tmp_path)
    with pytest.raises(ModelLoadError, match="code_path"):
        load_discriminator(DiscriminatorConfig(spec=f"pickle:{pkl}#D", trust_pickle=True))
    with pytest.raises(ModelLoadError, match="trust_pickle"):
        load_discriminator(DiscriminatorConfig(spec=f"pickle:{pkl}#D",
                                               code_path=tmp_path / "stylegan2-ada-pytorch"))


def test_the_stylegan_fixture_has_the_quirks_of_the_real_networks(tmp_path):
    # What the tests above rely on: the built networks behave like NVlabs' ones.
    import torch

    pkl, code = stylegan2.build_pickle(tmp_path, num_fp16_res=4)
    snapshot = stylegan2.load_pickle(pkl, code)
    assert set(snapshot) >= {"G", "D", "G_ema"}
    D, G = snapshot["D"], snapshot["G_ema"]
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    c = torch.zeros(8, 0)
    out = D.b32(None, x)
    assert isinstance(out, tuple) and out[0].dtype == torch.float16     # fp16 flag honoured
    assert D.b32(None, x, force_fp32=True)[0].dtype == torch.float32
    with pytest.raises(RuntimeError):
        D(x[:5], c[:5])                                  # mbstd: batches of 4, 8, 12... only
    z = torch.randn(4, 32)
    with torch.no_grad():
        assert not torch.equal(G(z, c[:4]), G(z, c[:4]))                 # noise_mode='random'
        assert torch.equal(G(z, c[:4], noise_mode="const"), G(z, c[:4], noise_mode="const"))


@pytest.mark.parametrize("family", ["lucidrains", "stylegan2"])
def test_a_generated_image_never_depends_on_the_images_it_is_generated_with(family, tmp_path):
    """Noise drawn inside forward (lucidrains; StyleGAN with noise_mode: random) is seeded
    by the image's own latent: image 3 alone, in a batch, and in a shuffled batch is the same
    picture, so the report's grids show the images that were audited (issue 17, item 8)."""
    import torch

    from audit.config import GeneratorConfig
    from audit.load import generate_batch, load_generator

    section = build(family, tmp_path)["generator"]
    if family == "stylegan2":
        section.update(call_kwargs={"noise_mode": "random"}, trust_pickle=True)
    else:
        section["value_range"] = [0, 1]
    generator = load_generator(GeneratorConfig(**section))
    alone = generate_batch(generator, [3], seed=0)
    batch = generate_batch(generator, list(range(8)), seed=0)
    shuffled = generate_batch(generator, [5, 3, 0, 7], seed=0)
    assert generator.stochastic  # forward draws random numbers: the case under test
    assert torch.equal(alone[0], batch[3]) and torch.equal(alone[0], shuffled[1])
    again = generate_batch(load_generator(GeneratorConfig(**section)), [3], seed=0)
    assert torch.equal(alone, again)  # and across loads (runs)


def test_a_lucidrains_batch_of_one_image_is_scored(tmp_path):
    """lucidrains' D returns logits.squeeze(): a batch of one image gives a 0-dim tensor
    (found in review: n = 1 mod the batch size stopped the run after earlier work)."""
    import torch

    from audit.config import DiscriminatorConfig
    from audit.load import load_discriminator

    model = load_discriminator(DiscriminatorConfig(**build("lucidrains", tmp_path)
                                                   ["discriminator"]))
    x = torch.rand(3, 3, 32, 32)
    batch = model.scores(model.forward(x))
    alone = model.scores(model.forward(x[1:2]))
    assert alone.shape == (1,) and torch.allclose(alone[0], batch[1], atol=1e-5)
