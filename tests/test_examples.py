"""The example configs in examples/: valid against the schema, every path key documented.

The examples name data and weights that are not in the repository, so they are only
validated (paths need not exist), never run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AfterValidator, BaseModel

from audit._yaml import _unwrap  # the loader's own type unwrapping
from audit.concepts import load_concept_set
from audit.config import AuditConfig, load_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))
README = (EXAMPLES / "README.md").read_text(encoding="utf-8")
PATH_VALIDATORS = {"_resolve_path", "_resolve_spec"}  # audit.config's path resolvers


def _is_path_field(field: Any) -> bool:
    _, meta = _unwrap(field.annotation)
    funcs = {getattr(getattr(m, "func", None), "__name__", "") for m in [*meta, *field.metadata]
             if isinstance(m, AfterValidator)}
    return bool(funcs & PATH_VALIDATORS)


def path_keys_in_schema(model: type[BaseModel] = AuditConfig, prefix: str = "") -> set[str]:
    """Dotted names of every field of the config that resolves a path."""
    keys = {f"{prefix}concept_set"} if model is AuditConfig else set()
    for name, field in model.model_fields.items():
        tp, _ = _unwrap(field.annotation)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            keys |= path_keys_in_schema(tp, f"{prefix}{name}.")
        elif _is_path_field(field):
            keys.add(f"{prefix}{name}")
    return keys


def path_keys_used(data: dict, model: type[BaseModel] = AuditConfig, prefix: str = "") -> set[str]:
    """Dotted names of the path-valued keys a config file sets."""
    keys: set[str] = set()
    for name, value in data.items():
        field = model.model_fields[name]
        tp, _ = _unwrap(field.annotation)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(value, dict):
            keys |= path_keys_used(value, tp, f"{prefix}{name}.")
        elif _is_path_field(field) or (name == "concept_set" and model is AuditConfig
                                       and str(value).endswith((".yaml", ".yml"))):
            keys.add(f"{prefix}{name}")
    return keys


def documented_keys() -> set[str]:
    """Keys in the first column of the README's path-key table."""
    return set(re.findall(r"^\| `([a-z_.]+)` \|", README, flags=re.MULTILINE))


def test_there_is_one_example_per_case():
    assert [p.name for p in FILES] == ["celeba_stylegan2.yaml", "fairface_generated_folder.yaml",
                                       "lucidrains_stylegan2.yaml", "mimicry_sngan.yaml",
                                       "mnist_state_dict.yaml"]


def test_the_helpers_find_path_keys():
    # The schema walk must see nested, optional and spec-typed path fields.
    keys = path_keys_in_schema()
    for key in ["out", "discriminator.spec", "discriminator.weights", "discriminator.code_path",
                "generated.images.source", "paired.labels", "real.label_file"]:
        assert key in keys
    assert "measure.min_group_n" not in keys and "paired.image_column" not in keys
    used = path_keys_used({"concept_set": "mnist", "measure": {"alpha": 0.1},
                           "paired": {"source": "folder:x", "n": 3}})
    assert used == {"paired.source"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_validates_against_the_schema(path):
    cfg = load_config(path)  # the paths need not exist
    assert isinstance(cfg, AuditConfig)
    assert load_concept_set(cfg.concept_set).concepts
    # Relative paths resolve against examples/, whatever the working folder.
    assert cfg.out.is_absolute() and Path(cfg.paired.source.partition(":")[2]).is_absolute()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_path_key_of_the_example_is_documented(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    used = path_keys_used(data)
    assert used, "an example without paths tests nothing here"
    missing = used - documented_keys()
    assert not missing, f"{path.name} uses path keys not documented in examples/README.md: " \
                        f"{sorted(missing)}"


def test_readme_documents_every_path_key_of_the_schema():
    missing = path_keys_in_schema() - documented_keys()
    assert not missing, f"path keys missing from examples/README.md: {sorted(missing)}"
    unknown = documented_keys() - path_keys_in_schema()
    assert not unknown, f"examples/README.md documents keys that are not paths: {sorted(unknown)}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_readme_explains_each_example(path):
    assert f"**`{path.name}`**" in README
    assert f"]({path.name})" in README


def test_stylegan_example_loads_the_pickle_with_its_code_and_says_why_it_trusts_it():
    path = EXAMPLES / "celeba_stylegan2.yaml"
    cfg = load_config(path)
    assert cfg.concept_set == "celeba_protected"
    assert cfg.discriminator.spec.startswith("pickle:") and cfg.discriminator.spec.endswith("#D")
    assert cfg.generator.spec.endswith("#G_ema")
    for model in (cfg.discriminator, cfg.generator):
        assert model.trust_pickle and model.code_path is not None
    assert cfg.paired.source.startswith("celeba:") and cfg.real.partition == "test"
    text = path.read_text(encoding="utf-8")
    trust = text.index("trust_pickle: true")
    assert "can run any code" in text[:trust]  # the risk is explained before the flag


def test_fairface_example_audits_a_folder_of_generated_images():
    cfg = load_config(EXAMPLES / "fairface_generated_folder.yaml")
    assert cfg.concept_set == "fairface" and cfg.generator is None
    assert cfg.generated.images.source.startswith("folder:")
    assert cfg.paired.labels.name == "fairface_label_train.csv"
    assert cfg.real.labels.name == "fairface_label_val.csv"
    assert cfg.paired.image_column == cfg.real.image_column == "file"


def test_mnist_example_builds_a_state_dict_model_from_a_python_factory():
    cfg = load_config(EXAMPLES / "mnist_state_dict.yaml")
    assert cfg.concept_set == "mnist"
    for model in (cfg.discriminator, cfg.generator):
        assert model.spec.startswith("python:") and model.weights is not None
        assert not model.trust_pickle
    assert cfg.paired.source.startswith("idx:") and cfg.paired.label_file is not None
    assert cfg.real.source.startswith("idx:") and cfg.real.label_file is not None


def test_lucidrains_example_reads_images_in_zero_one_and_says_why():
    path = EXAMPLES / "lucidrains_stylegan2.yaml"
    cfg = load_config(path)
    assert cfg.discriminator.value_range == (0.0, 1.0)
    for model in (cfg.discriminator, cfg.generator):
        assert model.spec.startswith("python:") and model.weights is not None
        assert not model.trust_pickle
    text = path.read_text(encoding="utf-8")
    assert "ToTensor()" in text and "unclamped" in text and "value_range: [0, 1]" in text


def test_mimicry_example_records_blocks_never_a_reused_activation():
    cfg = load_config(EXAMPLES / "mimicry_sngan.yaml")
    for model in (cfg.discriminator, cfg.generator):
        assert model.spec.startswith("python:torch_mimicry.")
        assert model.weights_key == "model_state_dict"
    assert cfg.discriminator.layers and all(name.startswith("block")
                                            and "activation" not in name
                                            for name in cfg.discriminator.layers)
