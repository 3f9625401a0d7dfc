"""The audit config: the documented example, unknown keys, types, paths, defaults."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

import audit.config as config_module
from audit.config import (
    AuditConfig,
    DecoderSettings,
    DiscriminatorConfig,
    GeneratorConfig,
    MeasureSettings,
    ReportSettings,
    config_from_dict,
    load_config,
    resolve_spec,
)
from audit.errors import ConfigError

MINIMAL = {
    "discriminator": {"spec": "builtin:digits-dcgan"},
    "generator": {"spec": "builtin:digits-dcgan"},
    "paired": {"source": "builtin:digits-paired"},
    "real": {"source": "builtin:digits-audit"},
}


def _write(tmp_path: Path, data: dict | str, name: str = "audit.yaml") -> Path:
    path = tmp_path / name
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


DROP = object()  # _with(generator=DROP) leaves the section out


def _with(**sections) -> dict:
    data = {k: dict(v) for k, v in MINIMAL.items()}
    for key, value in sections.items():
        if value is DROP:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def _error(tmp_path: Path, data: dict | str) -> str:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def _docstring_example() -> str:
    doc = config_module.__doc__
    block = doc.split("Example (``examples/`` has commented ones)::", 1)[1]
    return textwrap.dedent(block).strip()


def test_the_docstring_example_validates(tmp_path):
    text = _docstring_example()
    assert text.startswith("name: my-audit")
    cfg = load_config(_write(tmp_path, text))
    assert cfg.name == "my-audit"
    assert cfg.concept_set == "celeba_protected"
    assert cfg.discriminator.spec == f"pickle:{tmp_path / 'network.pkl'}#D"
    assert cfg.discriminator.trust_pickle is True
    assert cfg.discriminator.code_path == tmp_path / "stylegan2-ada-pytorch"
    assert cfg.generator.spec.endswith("network.pkl#G_ema") and cfg.generator.n == 2000
    assert cfg.real.partition == "test" and cfg.real.n == 2000
    assert cfg.measure.min_group_n == 30 and cfg.measure.n_boot == 1000
    assert cfg.out == tmp_path / "reports" / "my-audit"


def test_minimal_config_takes_every_default_from_the_models(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.measure == MeasureSettings()
    assert cfg.decoders == DecoderSettings()
    assert cfg.report == ReportSettings()
    fields = AuditConfig.model_fields
    assert cfg.name == fields["name"].default
    assert cfg.concept_set == fields["concept_set"].default
    assert cfg.device == fields["device"].default
    assert cfg.out == tmp_path / fields["out"].default
    for key, field in DiscriminatorConfig.model_fields.items():
        if key != "spec" and not field.is_required() and field.default_factory is None:
            assert getattr(cfg.discriminator, key) == field.default, key
    for key, field in GeneratorConfig.model_fields.items():
        if key != "spec" and field.default_factory is None:
            assert getattr(cfg.generator, key) == field.default, key
    assert cfg.generated is None


@pytest.mark.parametrize("data, fragment", [
    (_with(mesure={"alpha": 0.1}), "mesure: unknown key (did you mean 'measure'?"),
    (_with(measure={"min_grup_n": 5}),
     "measure.min_grup_n: unknown key (did you mean 'min_group_n'?"),
    (_with(discriminator={"spec": "builtin:x", "layer": ["a"]}),
     "discriminator.layer: unknown key (did you mean 'layers'?"),
    (_with(paired={"source": "builtin:x", "labels_csv": "l.csv"}),
     "paired.labels_csv: unknown key"),
])
def test_unknown_keys_are_errors_naming_the_field_path(tmp_path, data, fragment):
    message = _error(tmp_path, data)
    assert fragment in message
    assert "unknown keys are not ignored" in message


@pytest.mark.parametrize("section, fragment", [
    ({"measure": {"min_group_n": "ten"}},
     "measure.min_group_n: must be an integer >= 1, got 'ten'"),
    ({"measure": {"min_group_n": 0}}, "measure.min_group_n: must be an integer >= 1, got 0"),
    ({"measure": {"n_boot": 2.5}},
     "measure.n_boot: must be an integer >= 0 and <= 100000, got 2.5"),
    ({"measure": {"alpha": 1.5}}, "measure.alpha: must be a number > 0 and < 1, got 1.5"),
    ({"measure": {"exclude_below_share": "two percent"}},
     "measure.exclude_below_share: must be a number >= 0 and < 1, got 'two percent'"),
    ({"measure": {"accept_threshold": float("nan")}},
     "measure.accept_threshold: must be a finite number, got nan"),
    ({"measure": {"interval": "normal"}},
     "measure.interval: must be one of 'percentile' or 'bca', got 'normal'"),
    ({"measure": {"stratified": "sometimes"}},
     "measure.stratified: must be true or false, got 'sometimes'"),
    ({"measure": None}, "measure: must be a mapping of keys to values"),
    ({"measure": [1, 2]}, "measure: must be a mapping of keys to values"),
    ({"discriminator": {"spec": "builtin:x", "pooling": "max"}},
     "discriminator.pooling: must be one of 'avg', 'avgmax', 'grid2' or 'flatten', got 'max'"),
    ({"discriminator": {"spec": "builtin:x", "layers": 3}},
     "discriminator.layers: must be 'auto' or a list, e.g. [a, b], got 3"),
    ({"discriminator": {"spec": "builtin:x", "value_range": [0]}},
     "discriminator.value_range: must be a list of 2 items, got 1"),
    ({"discriminator": {"spec": "builtin:x", "weights": 12}},
     "discriminator.weights: must be a file or folder path (text), got 12"),
    ({"discriminator": {"spec": "D.pt"}},
     "discriminator.spec: unknown spec 'D.pt'; it must start with one of builtin, python"),
    ({"discriminator": {"spec": 7}},
     "discriminator.spec: must be text (put it in quotes to make it text), got 7"),
    ({"generator": {"spec": "builtin:x", "n": -5}},
     "generator.n: must be an integer >= 1 and <= 1000000, got -5"),
    ({"decoders": {"split": [0.5, 0.5]}}, "decoders.split: must be a list of 3 items, got 2"),
    ({"decoders": {"split": [0.5, 0.3, 0.3]}},
     "decoders: split must be three positive fractions (train, validation, test) summing to 1"),
    ({"decoders": {"dropout": 1}}, "decoders.dropout: must be a number >= 0 and < 1, got 1"),
    ({"device": "gpu"}, "device: must be one of 'auto', 'cpu', 'cuda' or 'mps', got 'gpu'"),
    ({"name": "my audit"}, "name: must start with a letter or digit and hold only letters"),
    ({"paired": {"n": 10}}, "paired.source: required field is missing"),
])
def test_wrong_values_name_the_file_field_and_value(tmp_path, section, fragment):
    message = _error(tmp_path, _with(**section))
    assert f"{tmp_path / 'audit.yaml'}: {fragment}" in message, message


def test_every_problem_is_listed_one_a_line(tmp_path):
    message = _error(tmp_path, _with(measure={"min_group_n": "ten", "alpha": 0, "bogus": 1},
                                     device="gpu"))
    lines = message.splitlines()
    assert len(lines) == 4
    assert all(line.startswith(f"{tmp_path / 'audit.yaml'}: ") for line in lines)


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs" / "celeba"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # somewhere else: the working folder must not matter
    data = _with(
        concept_set="sets/mine.yaml",
        discriminator={"spec": "pickle:../nets/net.pkl#D", "code_path": "stylegan",
                       "weights": "/abs/w.pt"},
        generator={"spec": "python:gen.py:make", "weights": "w/g.pt"},
        paired={"source": "celeba:data", "labels": "labels.csv"},
        real={"source": "idx:mnist/t10k-images.gz", "label_file": "mnist/t10k-labels.gz"},
        out="runs/a")
    cfg = load_config(_write(folder, data))
    assert cfg.concept_set == str(folder / "sets" / "mine.yaml")
    assert cfg.discriminator.spec == f"pickle:{tmp_path / 'configs' / 'nets' / 'net.pkl'}#D"
    assert cfg.discriminator.code_path == folder / "stylegan"
    assert cfg.discriminator.weights == Path("/abs/w.pt")
    assert cfg.generator.spec == f"python:{folder / 'gen.py'}:make"
    assert cfg.generator.weights == folder / "w" / "g.pt"
    assert cfg.paired.source == f"celeba:{folder / 'data'}"
    assert cfg.paired.labels == folder / "labels.csv"
    assert cfg.real.source == f"idx:{folder / 'mnist' / 't10k-images.gz'}"
    assert cfg.real.label_file == folder / "mnist" / "t10k-labels.gz"
    assert cfg.out == folder / "runs" / "a"


def test_specs_that_are_not_paths_stay_as_written(tmp_path):
    assert resolve_spec("builtin:digits-dcgan", tmp_path) == "builtin:digits-dcgan"
    assert resolve_spec("python:pkg.models:make_d", tmp_path) == "python:pkg.models:make_d"
    cfg = load_config(_write(tmp_path, _with(concept_set="celeba_protected")))
    assert cfg.concept_set == "celeba_protected"  # a bundled name is not a path


def test_config_from_dict_without_a_base_leaves_paths_alone():
    cfg = config_from_dict(_with(out="runs/x", paired={"source": "folder:imgs"}))
    assert cfg.out == Path("runs/x")
    assert cfg.paired.source == "folder:imgs"


@pytest.mark.parametrize("generated", [False, True])
def test_exactly_one_of_generator_and_generated(tmp_path, generated):
    images = {"images": {"source": "folder:samples"}}
    if generated:  # both given
        data = _with(generated=images)
    else:  # neither given
        data = _with(generator=DROP)
    message = _error(tmp_path, data)
    assert "give exactly one of 'generator' (a model to sample) or 'generated'" in message


def test_generated_images_alone_are_valid(tmp_path):
    cfg = load_config(_write(tmp_path, _with(generator=DROP,
                                             generated={"images": {"source": "folder:s"}})))
    assert cfg.generator is None
    assert cfg.generated.images.source == f"folder:{tmp_path / 's'}"


@pytest.mark.parametrize("text, fragment", [
    ("", "the file is empty"),
    ("[1, 2]\n", "expected a mapping of keys to values at the top level, got list"),
    ("name: a\n  out: b\n", "malformed YAML at line 2, column 6"),
])
def test_file_level_problems(tmp_path, text, fragment):
    assert fragment in _error(tmp_path, text)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_layer_names_given_as_numbers_become_text(tmp_path):
    # nn.Sequential names its layers "0", "1", ...; YAML reads [0, 2] as integers.
    cfg = load_config(_write(tmp_path, _with(discriminator={"spec": "builtin:x",
                                                            "layers": [0, 2, "main.3"]})))
    assert cfg.discriminator.layers == ["0", "2", "main.3"]


def test_a_union_reports_only_the_branch_that_got_furthest(tmp_path):
    message = _error(tmp_path, _with(discriminator={"spec": "builtin:x", "layers": [["a"]]}))
    assert message.splitlines() == [
        f"{tmp_path / 'audit.yaml'}: discriminator.layers[0]: must be text, got a list ['a']"]


@pytest.mark.parametrize("text, fragment", [
    ("measure:\n  1: 2\n", "measure: the key 1 is not text; keys are names"),
    ("decoders:\n  layer: {tone: [1]}\n", "decoders.layer['tone']: must be text, got a list [1]"),
    ("report:\n  'my title': x\n", "report['my title']: unknown key"),
    ("measure:\n  alpha:\n", "measure.alpha: must be a number > 0 and < 1, got an empty value"),
    ("measure:\n  accept_threshold: .inf\n",
     "measure.accept_threshold: must be a finite number, got inf"),
])
def test_odd_keys_and_values_are_named_plainly(tmp_path, text, fragment):
    base = yaml.safe_dump(MINIMAL, sort_keys=False)
    assert fragment in _error(tmp_path, base + text)


def test_a_probability_discriminator_accepts_above_one_half_unless_told_otherwise():
    from audit.config import config_from_dict

    base = {"discriminator": {"spec": "builtin:digits-dcgan", "score_output": "probability"},
            "generator": {"spec": "builtin:digits-dcgan"},
            "paired": {"source": "builtin:digits-paired"},
            "real": {"source": "builtin:digits-audit"}}
    assert config_from_dict(base).measure.accept_threshold == 0.5
    told = {**base, "measure": {"accept_threshold": 0.7}}
    assert config_from_dict(told).measure.accept_threshold == 0.7
    logit = {**base, "discriminator": {"spec": "builtin:digits-dcgan"}}
    assert config_from_dict(logit).measure.accept_threshold == 0.0


def test_a_config_with_anchors_and_merge_keys_loads(tmp_path):
    """Aliases are bounded (an alias bomb is refused, see test_untrusted.py), not banned:
    sharing a model section with ``<<: *base`` is what real configs do."""
    text = textwrap.dedent("""\
        discriminator: &model
          spec: builtin:digits-dcgan
          batch_size: 32
        generator:
          <<: *model
          n: 500
        paired: {source: builtin:digits-paired, seed: &seed 7}
        real: {source: builtin:digits-audit, seed: *seed}
        """)
    cfg = load_config(_write(tmp_path, text))
    assert cfg.generator.spec == "builtin:digits-dcgan" and cfg.generator.batch_size == 32
    assert cfg.generator.n == 500 and cfg.paired.seed == cfg.real.seed == 7


@pytest.mark.parametrize("section, fragment", [
    ({"measure": {"seed": -1}}, "measure.seed: must be an integer >= 0 and <= 4294967295, got -1"),
    ({"decoders": {"seed": 2**64}}, "decoders.seed: must be an integer >= 0 and <= 4294967295"),
    ({"paired": {"source": "builtin:digits-paired", "seed": -3}},
     "paired.seed: must be an integer >= 0 and <= 4294967295, got -3"),
    ({"generator": {"spec": "builtin:x", "seed": -1}}, "generator.seed: must be an integer >= 0"),
    ({"measure": {"n_boot": 10**9}},
     "measure.n_boot: must be an integer >= 0 and <= 100000, got 1000000000"),
    ({"generator": {"spec": "builtin:x", "n": 10**9}},
     "generator.n: must be an integer >= 1 and <= 1000000, got 1000000000"),
    ({"real": {"source": "builtin:digits-audit", "n": 10**9}},
     "real.n: must be an integer >= 1 and <= 1000000"),
    ({"report": {"samples_per_group": 10**6}},
     "report.samples_per_group: must be an integer >= 0 and <= 64"),
    ({"discriminator": {"spec": "builtin:x", "max_dim": 10**9}},
     "discriminator.max_dim: must be an integer >= 1 and <= 65536"),
    ({"discriminator": {"spec": "builtin:x", "image_size": 10**6}},
     "discriminator.image_size: must be an integer >= 1 and <= 4096"),
    ({"discriminator": {"spec": "builtin:x", "num_classes": 10**9}},
     "discriminator.num_classes: must be an integer >= 1 and <= 100000"),
    ({"discriminator": {"spec": "builtin:x", "class_label": -1}},
     "discriminator.class_label: must be an integer >= 0, got -1"),
    ({"generator": {"spec": "builtin:x", "latent_dim": 10**9}},
     "generator.latent_dim: must be an integer >= 1 and <= 65536"),
    ({"decoders": {"hidden": [64, 10**9]}},
     "decoders.hidden[1]: must be an integer >= 1 and <= 4096, got 1000000000"),
    ({"decoders": {"hidden": [0]}}, "decoders.hidden[0]: must be an integer >= 1 and <= 4096"),
])
def test_seeds_and_counts_that_would_crash_or_exhaust_memory_are_refused(tmp_path, section,
                                                                         fragment):
    """Issue 16: a negative seed crashed numpy, n_boot of 1e9 would allocate 800 GB of
    bootstrap counts; each bound is a message naming the field."""
    message = _error(tmp_path, _with(**section))
    assert f"{tmp_path / 'audit.yaml'}: {fragment}" in message, message


def test_seeds_and_counts_at_their_bounds_are_accepted(tmp_path):
    cfg = load_config(_write(tmp_path, _with(
        measure={"seed": 2**32 - 1, "n_boot": 100_000},
        generator={"spec": "builtin:x", "seed": 0, "n": 1_000_000},
        decoders={"seed": 2**32 - 1, "hidden": [4096, 1]},
        report={"samples_per_group": 64})))
    assert cfg.measure.seed == 2**32 - 1 and cfg.measure.n_boot == 100_000
    assert cfg.generator.n == 1_000_000 and cfg.decoders.hidden == [4096, 1]
    import numpy as np
    import torch

    np.random.default_rng(cfg.measure.seed)  # the largest seed suits numpy and torch
    np.random.RandomState(cfg.measure.seed)
    torch.Generator().manual_seed(cfg.decoders.seed)
