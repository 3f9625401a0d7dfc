"""Concept sets: the bundled sets, the validation rules and their messages, the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from audit.cli import cli
from audit.concepts import ConceptSet, bundled_concept_sets, load_concept_set
from audit.errors import ConceptSetError

SEVEN = ["celeba_40", "celeba_protected", "digits_tone", "fairface", "fashion_mnist", "mnist",
         "utkface"]

# The header of CelebA's list_attr_celeba.txt, in file order (Liu et al. 2015).
CELEBA_ATTRIBUTES = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
]

GOOD = """\
name: tiny
description: A small valid set.
concepts:
  - name: digit
    kind: multiclass
    groups: [0, 1, 2]
    source: {type: idx}
  - name: tone
    kind: binary
    groups: [light, dark]
    protected: true
    reference: dark
    source: {type: column, column: tone, values: {0: light, 1: dark}}
  - name: stroke
    kind: binary
    groups: [thin, thick]
    protected: true
    source: {type: folder}
intersections:
  - [tone, stroke]
"""


def _write(tmp_path: Path, text: str, name: str = "set.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ConceptSetError) as info:
        load_concept_set(path)
    message = str(info.value)
    assert str(path) in message  # every problem names the file
    return message


def _edit(change) -> str:
    data = yaml.safe_load(GOOD)
    change(data)
    return yaml.safe_dump(data, sort_keys=False)


# ---------------------------------------------------------------- the bundled sets


def test_all_seven_sets_are_bundled():
    assert sorted(bundled_concept_sets()) == SEVEN


@pytest.mark.parametrize("name", SEVEN)
def test_bundled_set_loads_and_is_documented(name):
    cs = load_concept_set(name)
    assert isinstance(cs, ConceptSet)
    assert cs.name == name  # the file name and the set's name agree
    assert len(cs.description) > 80
    for c in cs.concepts:
        assert c.description.strip(), f"{name}.{c.name} has no description"
        assert c.reference_group in c.groups
        if c.kind == "binary":
            assert c.n_groups == 2
        values = getattr(c.source, "values", None) or {}
        assert set(values.values()) <= set(c.groups)
    for combo in cs.intersections:
        assert all(cs.concept(n).protected for n in combo)


def test_celeba_40_has_every_attribute_with_its_exact_name():
    cs = load_concept_set("celeba_40")
    attributes = [c.source.attribute for c in cs.concepts]
    assert attributes == CELEBA_ATTRIBUTES
    assert all(c.source.type == "celeba" and c.kind == "binary" for c in cs.concepts)
    assert cs.concept("Five_o_Clock_Shadow").source.attribute == "5_o_Clock_Shadow"
    assert {c.name for c in cs.protected} == {"Male", "Young", "Pale_Skin"}
    # CelebA's -1 is groups[0]: "not male" must be the first group of Male.
    assert cs.concept("Male").groups == ("female", "male")


def test_celeba_protected_reads_male_young_pale_skin():
    cs = load_concept_set("celeba_protected")
    by_attr = {c.source.attribute: c for c in cs.concepts}
    assert set(by_attr) <= set(CELEBA_ATTRIBUTES)
    assert by_attr["Male"].groups == ("female", "male") and by_attr["Male"].protected
    assert by_attr["Young"].groups == ("not_young", "young") and by_attr["Young"].protected
    assert by_attr["Pale_Skin"].groups == ("not_pale", "pale") and by_attr["Pale_Skin"].protected
    assert {c.source.attribute for c in cs.protected} == {"Male", "Young", "Pale_Skin"}
    assert ("sex", "age") in cs.intersections and ("sex", "skin") in cs.intersections
    # The descriptions say what the labels are not.
    text = cs.description + " ".join(c.description for c in cs.concepts)
    for fragment in ["not self-identified", "weak proxy", "noisy"]:
        assert fragment in text


def test_fairface_maps_its_label_strings_to_groups():
    cs = load_concept_set("fairface")
    race, gender, age = cs.concept("race"), cs.concept("gender"), cs.concept("age")
    assert set(race.source.values) == {"White", "Black", "Latino_Hispanic", "East Asian",
                                       "Southeast Asian", "Indian", "Middle Eastern"}
    assert race.n_groups == 7 and race.kind == "multiclass"
    assert set(gender.source.values) == {"Male", "Female"}
    assert list(age.source.values) == ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49",
                                       "50-59", "60-69", "more than 70"]
    assert age.n_groups == 9
    assert {c.source.column for c in cs.concepts} == {"race", "gender", "age"}
    assert cs.intersections == (("race", "gender"),)


def test_utkface_decodes_the_file_name_codes():
    cs = load_concept_set("utkface")
    assert cs.concept("gender").source.values == {"0": "male", "1": "female"}
    assert cs.concept("race").source.values == {"0": "white", "1": "black", "2": "asian",
                                                "3": "indian", "4": "others"}
    assert cs.concept("age").source.column == "age_bin"
    assert cs.concept("age").groups == load_concept_set("fairface").concept("age").groups


def test_mnist_sets_read_idx_labels_in_official_order():
    digits = load_concept_set("mnist").concept("digit")
    assert digits.source.type == "idx" and digits.groups == tuple(str(i) for i in range(10))
    garment = load_concept_set("fashion_mnist").concept("garment")
    assert garment.source.type == "idx"
    assert garment.groups == ("t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal",
                              "shirt", "sneaker", "bag", "ankle_boot")
    assert not load_concept_set("mnist").protected


# ---------------------------------------------------------------- validation


def test_good_set_loads_with_numbers_as_text(tmp_path):
    cs = load_concept_set(_write(tmp_path, GOOD))
    assert cs.concept("digit").groups == ("0", "1", "2")
    assert cs.concept("tone").source.values == {"0": "light", "1": "dark"}
    assert cs.concept("tone").reference_group == "dark"
    assert cs.concept("stroke").reference_group == "thin"  # the first group by default


def test_sha256_ignores_yaml_layout(tmp_path):
    a = load_concept_set(_write(tmp_path, GOOD, "a.yaml"))
    b = load_concept_set(_write(tmp_path, yaml.safe_dump(yaml.safe_load(GOOD)), "b.yaml"))
    assert a.sha256 == b.sha256
    c = load_concept_set(_write(tmp_path, GOOD.replace("reference: dark", "reference: light"),
                                "c.yaml"))
    assert c.sha256 != a.sha256


@pytest.mark.parametrize("change, fragment", [
    (lambda d: d["concepts"].append(dict(d["concepts"][1])),
     "concepts[1, 3]: name 'tone' is defined more than once"),
    (lambda d: d["concepts"][1].update(reference="grey"),
     "concepts[1]: concept 'tone': reference group 'grey' is not one of its groups "
     "['light', 'dark']"),
    (lambda d: d["concepts"][2].update(groups=["thin"]),
     "concepts[2]: concept 'stroke' needs at least two groups, got ['thin']"),
    (lambda d: d["concepts"][2].update(groups=["thin", "mid", "thick"]),
     "concepts[2]: concept 'stroke' is binary but has 3 groups; use kind: multiclass"),
    (lambda d: d["concepts"][2].update(groups=["thin", "thin"]),
     "lists group(s) ['thin'] more than once"),
    (lambda d: d["intersections"].append(["tone", "colour"]),
     "intersections[1]: 'colour' is not a concept of this set (concepts: digit, tone, stroke)"),
    (lambda d: d["intersections"].append(["tone", "digit"]),
     "intersections[1]: 'digit' is not protected; intersections cross protected concepts only"),
    (lambda d: d["intersections"].append(["tone"]),
     "intersections[1]: must cross at least two concepts, got ['tone']"),
    (lambda d: d["concepts"][1].update(colour="red"),
     "concepts[1].colour: unknown key"),
    (lambda d: d.update(concept=[]),
     "concept: unknown key (did you mean 'concepts'?"),
    (lambda d: d["concepts"][1]["source"].update(values={"0": "light", "1": "black"}),
     "concept 'tone': source.values maps raw values to ['black'], which are not among its "
     "groups ['light', 'dark']"),
    (lambda d: d["concepts"][1]["source"].update(type="csv"),
     "concepts[1].source.type: must be one of 'column', 'celeba', 'folder' or 'idx', got 'csv'"),
    (lambda d: d["concepts"][1]["source"].pop("type"),
     "concepts[1].source: needs a 'type' key (one of 'column', 'celeba', 'folder' or 'idx')"),
    (lambda d: d["concepts"][0].update(kind="ordinal"),
     "concepts[0].kind: must be one of 'binary' or 'multiclass', got 'ordinal'"),
    (lambda d: d["concepts"][0].update(name="2nd"),
     "concepts[0].name: must start with a letter and hold only letters, digits, '_' and '-', "
     "got '2nd'"),
    (lambda d: d["concepts"][0].update(protected="perhaps"),
     "concepts[0].protected: must be true or false, got 'perhaps'"),
    (lambda d: d["concepts"][0].pop("source"),
     "concepts[0].source: required field is missing"),
    (lambda d: d.update(concepts=[]),
     "concepts: must have at least 1 item(s), got 0"),
], ids=["duplicate-name", "reference-not-a-group", "one-group", "binary-with-3",
        "duplicate-group", "intersection-unknown", "intersection-not-protected",
        "intersection-of-one", "unknown-key", "misspelled-top-key", "values-to-non-group",
        "unknown-source-type", "source-without-type", "bad-kind", "bad-name", "bad-bool",
        "missing-source", "no-concepts"])
def test_invalid_set_names_the_problem_and_place(tmp_path, change, fragment):
    assert fragment in _error(tmp_path, _edit(change))


def test_yaml_booleans_as_group_names_get_a_quoting_hint(tmp_path):
    message = _error(tmp_path, GOOD.replace("[light, dark]", "[no, yes]"))
    assert "concepts[1].groups[0]: must be text" in message
    assert "put the text in quotes" in message and "got False" in message


@pytest.mark.parametrize("text, where, detail", [
    ("name: x\nconcepts:\n  - name: a\n   kind: binary\n", "line 4, column 4",
     "while parsing a block collection that starts at line 3, column 3"),
    ("name: x\nconcepts: [a, b\n", "line 3, column 1",
     "while parsing a flow sequence that starts at line 2, column 11"),
    ("name: x\ndescription: \"open\n", "line 3, column 1",
     "while scanning a quoted scalar that starts at line 2, column 14"),
    ("name: x\n\tconcepts: []\n", "line 2, column 1", "YAML indents with spaces, never tabs"),
])
def test_malformed_yaml_gives_line_and_column(tmp_path, text, where, detail):
    message = _error(tmp_path, text)
    assert f"malformed YAML at {where}" in message
    assert detail in message
    assert "Fix the YAML syntax there" in message


@pytest.mark.parametrize("text, fragment", [
    ("", "the file is empty"),
    ("- a\n- b\n", "expected a mapping of keys to values at the top level, got list"),
    ("just text\n", "got str"),
])
def test_not_a_mapping(tmp_path, text, fragment):
    assert fragment in _error(tmp_path, text)


def test_unknown_name_lists_the_bundled_sets():
    with pytest.raises(ConceptSetError) as info:
        load_concept_set("celeba_protectd")
    message = str(info.value)
    assert "'celeba_protectd' is neither a bundled set" in message
    for name in SEVEN:
        assert name in message


# ---------------------------------------------------------------- the CLI


BROKEN = """\
name: broken set
concepts:
  - name: a
    kind: binary
    groups: [x, y, z]
    source: {type: column, column: a}
  - name: b
    kind: multiclass
    groups: [p]
    protected: yes
    source: {type: celebA, attribute: B}
  - name: c
    kind: binary
    groups: [u, v]
    reference: w
    colour: red
    source: {type: idx}
extra_key: 1
"""

BROKEN_SET_LEVEL = """\
name: broken
concepts:
  - {name: a, kind: binary, groups: [x, y], protected: true, source: {type: idx}}
  - {name: a, kind: binary, groups: [x, y], source: {type: idx}}
  - {name: b, kind: binary, groups: [x, y], source: {type: idx}}
intersections:
  - [a, b]
  - [a, nope]
"""


def test_validate_lists_every_problem_with_its_location(tmp_path):
    path = _write(tmp_path, BROKEN, "BROKEN.yaml")
    result = CliRunner().invoke(cli, ["concept-sets", "validate", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    expected = [
        "name: must start with a letter",
        "concepts[0]: concept 'a' is binary but has 3 groups",
        "concepts[1].source.type: must be one of 'column', 'celeba', 'folder' or 'idx', "
        "got 'celebA'",
        "concepts[2].colour: unknown key",
        "extra_key: unknown key",
    ]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    for fragment in expected:
        hits = [ln for ln in lines if fragment in ln]
        assert hits, f"{fragment!r} not in:\n{result.stderr}"
        assert str(path) in hits[0]  # each problem names the file


def test_validate_lists_every_set_level_problem(tmp_path):
    path = _write(tmp_path, BROKEN_SET_LEVEL)
    result = CliRunner().invoke(cli, ["concept-sets", "validate", str(path)])
    assert result.exit_code == 2
    for fragment in ["concepts[0, 1]: name 'a' is defined more than once",
                     "intersections[0]: 'b' is not protected",
                     "intersections[1]: 'nope' is not a concept of this set"]:
        assert re.search(re.escape(f"{path}: {fragment}"), result.stderr), result.stderr


def test_validate_of_a_good_file_prints_a_summary(tmp_path):
    path = _write(tmp_path, GOOD)
    result = CliRunner().invoke(cli, ["concept-sets", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"{path}: valid concept set 'tiny': 3 concepts (digit, tone, stroke), protected: "
        f"tone, stroke, 1 intersection(s)")


def test_show_prints_the_yaml_with_descriptions():
    result = CliRunner().invoke(cli, ["concept-sets", "show", "celeba_protected"])
    assert result.exit_code == 0, result.output
    assert result.stdout == bundled_concept_sets()["celeba_protected"].read_text("utf-8")
    shown = yaml.safe_load(result.stdout)
    assert shown["name"] == "celeba_protected"
    assert all(c["description"] for c in shown["concepts"])


def test_show_of_an_unknown_set_exits_2():
    result = CliRunner().invoke(cli, ["concept-sets", "show", "no_such_set"])
    assert result.exit_code == 2
    assert "'no_such_set' is neither a bundled set" in result.stderr


def test_list_shows_all_seven_with_protected_concepts():
    result = CliRunner().invoke(cli, ["concept-sets", "list"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert sorted(rows) == SEVEN
    assert re.search(r"celeba_40\s+40\s+Male, Pale_Skin, Young$", rows["celeba_40"])
    assert re.search(r"celeba_protected\s+7\s+sex, age, skin$", rows["celeba_protected"])
    assert re.search(r"mnist\s+1\s+-$", rows["mnist"])


def test_a_key_given_twice_is_an_error_not_a_silent_replacement(tmp_path):
    text = GOOD.replace("    reference: dark\n", "    reference: dark\n    reference: light\n")
    message = _error(tmp_path, text)
    assert ("malformed YAML at line 13, column 5: the key 'reference' is given twice (first at "
            "line 12); the second would silently replace the first. Keep one of them.") in message


def test_yaml_merge_keys_still_work(tmp_path):
    text = GOOD.replace("  - name: stroke\n", "  - &stroke\n    name: stroke\n")
    text = text.replace("intersections:", "  - <<: *stroke\n    name: stroke2\n"
                                           "    groups: [narrow, wide]\nintersections:")
    cs = load_concept_set(_write(tmp_path, text))
    assert cs.concept("stroke2").source.type == "folder"  # merged from stroke
    assert cs.concept("stroke2").groups == ("narrow", "wide")  # an explicit key wins


@pytest.mark.parametrize("group", ["70+", "a/b", "a\\b", " "])
def test_group_names_that_would_break_intersections_or_file_names_are_refused(tmp_path, group):
    from audit.concepts import load_concept_set
    from audit.errors import ConceptSetError

    path = tmp_path / "set.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "concepts": [
        {"name": "age", "kind": "multiclass", "groups": ["young", group],
         "source": {"type": "column", "column": "age"}}]}))
    with pytest.raises(ConceptSetError, match="rename them"):
        load_concept_set(path)


def test_utkface_reads_70_plus_as_its_own_group():
    from audit.concepts import load_concept_set

    age = load_concept_set("utkface").concept("age")
    assert "70-plus" in age.groups and age.source.values["70+"] == "70-plus"
