"""Property tests: whatever YAML or data a user gives the config and concept-set loaders,
they return a valid object or raise one clear error naming the file, never another exception.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit._yaml import validate
from audit.concepts import ConceptSet, load_concept_set
from audit.config import AuditConfig, config_from_dict, load_config
from audit.errors import ConceptSetError, ConfigError

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

VALID_CONFIG = {
    "name": "p",
    "concept_set": "digits_tone",
    "discriminator": {"spec": "builtin:digits-dcgan", "layers": ["main.2"], "pooling": "avg"},
    "generator": {"spec": "builtin:digits-dcgan", "n": 10, "seed": 1},
    "paired": {"source": "builtin:digits-paired", "n": 30},
    "real": {"source": "folder:imgs", "labels": "l.csv"},
    "decoders": {"hidden": [8], "split": [0.6, 0.2, 0.2]},
    "measure": {"min_group_n": 5, "alpha": 0.1},
    "report": {"pdf": False},
    "out": "runs/x",
}
VALID_SET = {
    "name": "s",
    "concepts": [
        {"name": "a", "kind": "binary", "groups": ["x", "y"], "protected": True,
         "reference": "y", "source": {"type": "column", "column": "a", "values": {"0": "x"}}},
        {"name": "b", "kind": "multiclass", "groups": ["p", "q", "r"], "protected": True,
         "source": {"type": "celeba", "attribute": "B"}},
    ],
    "intersections": [["a", "b"]],
}

# The kinds of values YAML's safe loader produces (and a few it cannot, for the dict API).
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["auto", "avg", "binary", "multiclass", "column", "celeba", "idx",
                     "folder", "builtin:x", "pickle:n.pkl#D", "folder:d", "x", "y", "a", "b",
                     "0", "1", "-1", "yes", "ten", ".nan", "a b", ""]),
)
keys = st.one_of(
    st.sampled_from(sorted({*AuditConfig.model_fields, *VALID_CONFIG["measure"],
                            "spec", "source", "concepts", "groups", "kind", "type", "column",
                            "values", "reference", "protected", "intersections", "attribute"})),
    st.text(max_size=8), st.integers(-3, 3))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=20)

# Text that looks like YAML: its syntax characters, words of the schema, line breaks.
yaml_text = st.lists(st.one_of(
    st.sampled_from([":", " ", "  ", "\n", "- ", "[", "]", "{", "}", ",", "#", "&a", "*a", "!",
                     "!!binary", "!!python/object:os.system", "'", '"', "|", ">", "\t", "?",
                     "%YAML 1.1", "---", "...", "name", "concepts", "measure", "min_group_n",
                     "groups", "source", "type: idx", "discriminator", "spec", "yes", "~"]),
    st.text(max_size=6)), max_size=40).map("".join)


def _mutations(base: dict) -> st.SearchStrategy[dict]:
    """``base`` with one value replaced, one key added or one key removed, at any depth."""
    paths: list[tuple] = []

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append((*prefix, k))
                walk(v, (*prefix, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append((*prefix, i))
                walk(v, (*prefix, i))

    walk(base, ())

    @st.composite
    def mutate(draw):
        data = copy.deepcopy(base)
        path = draw(st.sampled_from(paths))
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "add", "remove"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(keys)] = draw(values)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        return data

    return mutate()


def _check_error(exc: ConfigError, source: str) -> None:
    message = str(exc)
    assert message.strip()
    for line in message.splitlines():
        assert line.startswith(source), f"a line of the message does not name {source}: {line!r}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("props")


@pytest.mark.parametrize(("name", "load", "error", "model"), [
    ("audit.yaml", load_config, ConfigError, AuditConfig),
    ("set.yaml", load_concept_set, ConceptSetError, ConceptSet),
], ids=["config", "concept_set"])
@SETTINGS
@given(text=st.one_of(yaml_text, st.text(max_size=200)))
def test_any_yaml_text_gives_an_object_or_a_clear_error(folder, name, load, error, model, text):
    path = folder / name
    path.write_text(text, encoding="utf-8")
    try:
        loaded = load(path)
    except error as exc:
        _check_error(exc, str(path))
    else:
        assert isinstance(loaded, model)


@SETTINGS
@given(data=st.one_of(values, _mutations(VALID_CONFIG)))
def test_any_data_gives_a_config_or_a_config_error(data):
    try:
        cfg = config_from_dict(data, source="cfg.yaml", base_dir=Path("/base"))
    except ConfigError as exc:
        _check_error(exc, "cfg.yaml")
    else:
        # Whatever got through is usable: finite thresholds, a split that sums to one.
        assert (cfg.generator is None) != (cfg.generated is None)
        assert math.isclose(sum(cfg.decoders.split), 1.0, abs_tol=1e-6)
        assert all(math.isfinite(v) for v in cfg.measure.model_dump().values()
                   if isinstance(v, float))
        assert cfg.out.is_absolute()


@SETTINGS
@given(data=st.one_of(values, _mutations(VALID_SET)))
def test_any_data_gives_a_concept_set_or_a_concept_set_error(data):
    try:
        cs = validate(ConceptSet, data, source="set.yaml", error=ConceptSetError)
    except ConceptSetError as exc:
        _check_error(exc, "set.yaml")
    else:
        # Whatever got through keeps the set's rules.
        assert len(set(cs.names)) == len(cs.names)
        for c in cs.concepts:
            assert c.n_groups >= 2 and c.reference_group in c.groups
            assert c.kind != "binary" or c.n_groups == 2
            assert all(isinstance(g, str) for g in c.groups)
            assert set((getattr(c.source, "values", None) or {}).values()) <= set(c.groups)
        protected = {c.name for c in cs.protected}
        assert all(set(combo) <= protected and len(combo) >= 2 for combo in cs.intersections)


def test_the_mutation_bases_are_valid():
    # Mutations start from valid data, so that they reach the deep validators.
    assert config_from_dict(VALID_CONFIG, base_dir=Path("/base")).name == "p"
    assert validate(ConceptSet, VALID_SET, source="s", error=ConceptSetError).name == "s"


def test_yaml_never_builds_python_objects(folder):
    path = folder / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hacked']\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "malformed YAML at line 1, column 7: could not determine a constructor" in str(
        info.value)
    assert "files are read with safe loading, which builds no Python objects" in str(info.value)
