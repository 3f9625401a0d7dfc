"""Concept sets: which concepts a decoder reads, which are protected, and where labels come from.

A concept set is a YAML file (see ``concept_sets/``)::

    name: digits_tone
    description: ...
    concepts:
      - name: tone
        kind: binary            # binary | multiclass (one of K)
        groups: [light, dark]   # binary: [negative, positive]; the sigmoid predicts the positive
        protected: true
        reference: light        # the reference group of disparity measures
        source: {type: column, column: tone}
        description: ...
    intersections:
      - [tone, stroke]          # protected concepts crossed for intersectional analysis

Label sources: ``column`` (a CSV column; optional ``values`` maps raw values to
groups), ``celeba`` (a CelebA attribute; -1 is ``groups[0]``, 1 is ``groups[1]``),
``folder`` (the image's parent folder name is the group; optional ``values``),
``idx`` (an MNIST-style IDX label; label ``i`` is ``groups[i]``).
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from audit._yaml import read_yaml, validate
from audit.errors import ConceptSetError

__all__ = ["Concept", "ConceptSet", "LabelSource", "load_concept_set", "bundled_concept_sets"]

_NAME = r"^[A-Za-z][A-Za-z0-9_\-]*$"
_NOT_IN_GROUP = ("+", "/", "\\")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_text(value: object) -> object:
    # YAML reads `0` as an integer; group names and raw label values are always text.
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class _ValuesSource(_Strict):
    @field_validator("values", mode="before", check_fields=False)
    @classmethod
    def _values_as_text(cls, value: object) -> object:
        if isinstance(value, dict):
            return {_as_text(k): _as_text(v) for k, v in value.items()}
        return value


class ColumnSource(_ValuesSource):
    """Labels from a CSV column; ``values`` maps raw cell values (as text) to groups."""

    type: Literal["column"]
    column: str = Field(min_length=1)
    values: dict[str, str] | None = None


class CelebASource(_Strict):
    """Labels from ``list_attr_celeba.txt``: -1 is ``groups[0]``, 1 is ``groups[1]``."""

    type: Literal["celeba"]
    attribute: str = Field(min_length=1)


class FolderSource(_ValuesSource):
    """The image's parent folder name is the group (class-per-folder layout)."""

    type: Literal["folder"]
    values: dict[str, str] | None = None


class IdxSource(_Strict):
    """An MNIST-style IDX label file: label ``i`` is ``groups[i]``."""

    type: Literal["idx"]


LabelSource = Annotated[
    Union[ColumnSource, CelebASource, FolderSource, IdxSource], Field(discriminator="type")
]


class Concept(_Strict):
    """One concept: its groups, whether it is protected, and its label source."""

    name: str = Field(pattern=_NAME)
    kind: Literal["binary", "multiclass"]
    groups: tuple[str, ...]
    protected: bool = False
    reference: str | None = None
    source: LabelSource
    description: str = ""

    @field_validator("groups", mode="before")
    @classmethod
    def _groups_as_text(cls, value: object) -> object:
        # YAML reads `[0, 1]` as integers; group names are always text.
        if isinstance(value, list):
            return tuple(_as_text(v) for v in value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Concept:
        if len(self.groups) < 2:
            raise ValueError(f"concept {self.name!r} needs at least two groups, got "
                             f"{list(self.groups)}")
        if len(set(self.groups)) != len(self.groups):
            dup = sorted({g for g in self.groups if self.groups.count(g) > 1})
            raise ValueError(f"concept {self.name!r} lists group(s) {dup} more than once")
        bad = [g for g in self.groups if not g.strip() or any(ch in g for ch in _NOT_IN_GROUP)]
        if bad:
            raise ValueError(f"concept {self.name!r}: group name(s) {bad} are empty or contain "
                             f"one of {' '.join(_NOT_IN_GROUP)} ('+' joins groups of "
                             f"intersections, slashes would make file names); rename them "
                             f"(e.g. '70+' -> '70-plus') and map raw values with source.values")
        if self.kind == "binary" and len(self.groups) != 2:
            raise ValueError(f"concept {self.name!r} is binary but has {len(self.groups)} groups; "
                             f"use kind: multiclass for one-of-K concepts")
        values = getattr(self.source, "values", None) or {}
        strays = sorted({g for g in values.values() if g not in self.groups})
        if strays:
            raise ValueError(f"concept {self.name!r}: source.values maps raw values to "
                             f"{strays}, which are not among its groups {list(self.groups)}; "
                             f"map every raw value to one of the groups")
        if self.reference is not None and self.reference not in self.groups:
            raise ValueError(f"concept {self.name!r}: reference group {self.reference!r} is not "
                             f"one of its groups {list(self.groups)}")
        return self

    @property
    def reference_group(self) -> str:
        """The reference group (the first group unless the set names one)."""
        return self.reference if self.reference is not None else self.groups[0]

    @property
    def n_groups(self) -> int:
        return len(self.groups)


class ConceptSet(_Strict):
    """A named collection of concepts, some protected, with intersections to cross.

    Read one with :func:`load_concept_set` (a bundled set or a YAML file; the README's
    "Concept sets" lists the bundled ones).

    Examples
    --------
    >>> import audit
    >>> cs = audit.load_concept_set("digits_tone")
    >>> cs.names, [c.name for c in cs.protected], cs.intersections
    (['digit', 'tone', 'stroke'], ['tone', 'stroke'], (('tone', 'stroke'),))
    >>> cs.concept("tone").groups, cs.concept("tone").reference_group
    (('light', 'dark'), 'light')
    """

    name: str = Field(pattern=_NAME)
    description: str = ""
    concepts: tuple[Concept, ...] = Field(min_length=1)
    intersections: tuple[tuple[str, ...], ...] = ()

    @model_validator(mode="after")
    def _check(self) -> ConceptSet:
        # Collect every set-level problem, one line each with its location.
        problems: list[str] = []
        names = [c.name for c in self.concepts]
        for name in sorted({n for n in names if names.count(n) > 1}):
            where = [i for i, n in enumerate(names) if n == name]
            problems.append(f"concepts{where}: name {name!r} is defined more than once; "
                            f"concept names must be unique")
        protected = {c.name for c in self.concepts if c.protected}
        for i, combo in enumerate(self.intersections):
            if len(combo) < 2:
                problems.append(f"intersections[{i}]: must cross at least two concepts, got "
                                f"{list(combo)}")
            for name in combo:
                if name not in names:
                    problems.append(f"intersections[{i}]: {name!r} is not a concept of this set "
                                    f"(concepts: {', '.join(names)})")
                elif name not in protected:
                    problems.append(f"intersections[{i}]: {name!r} is not protected; "
                                    f"intersections cross protected concepts only (add "
                                    f"'protected: true' to it, or remove it from the list)")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def concept(self, name: str) -> Concept:
        """The concept called ``name``; :class:`ConceptSetError` if there is none."""
        for c in self.concepts:
            if c.name == name:
                return c
        raise ConceptSetError(f"concept set {self.name!r} has no concept {name!r}; it has "
                              f"{[c.name for c in self.concepts]}.")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    @property
    def protected(self) -> list[Concept]:
        """The protected concepts, in file order."""
        return [c for c in self.concepts if c.protected]

    @cached_property
    def sha256(self) -> str:
        """Hash of the canonical JSON form: equal sets hash equal, whatever the YAML layout."""
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()


def concept_sets_dir() -> Path:
    """The folder of bundled concept sets (inside the wheel, or the repo's top level)."""
    from audit.resources import resource_dir

    return resource_dir("concept_sets")


def bundled_concept_sets() -> dict[str, Path]:
    """Names of the bundled concept sets mapped to their files, sorted by name."""
    return {p.stem: p for p in sorted(concept_sets_dir().glob("*.yaml"))}


def load_concept_set(name_or_path: str | Path) -> ConceptSet:
    """Load a bundled concept set by name, or a YAML file by path.

    Raises
    ------
    ConceptSetError
        Neither a bundled name nor a file, or invalid: the message lists every problem
        with its location.

    Examples
    --------
    >>> import audit
    >>> audit.load_concept_set("digits_tone").names
    ['digit', 'tone', 'stroke']
    >>> from audit.concepts import bundled_concept_sets
    >>> sorted(bundled_concept_sets())[:3]
    ['celeba_40', 'celeba_protected', 'digits_tone']
    """
    text = str(name_or_path)
    bundled = bundled_concept_sets()
    if text in bundled:
        path = bundled[text]
    else:
        path = Path(text)
        if not path.exists():
            raise ConceptSetError(
                f"concept set {text!r} is neither a bundled set ({', '.join(bundled)}) nor an "
                f"existing file. Use one of those names, or give the path to a YAML file.")
    data = read_yaml(path, error=ConceptSetError)
    return validate(ConceptSet, data, source=str(path), error=ConceptSetError)
