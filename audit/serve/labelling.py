"""The labelling page's logic: which question comes next, its keys, and the progress.

The labelling sample (:func:`audit.labels.labelling_sample`) is asked image by image, one
protected concept at a time: "which group of *tone* is this image?", with one key per group
(``1``, ``2``, ...) and ``0`` for "can't tell". Every answer is saved at once
(:func:`audit.labels.append_labels`), so the next question is the first one the labeller
has not answered in the labels file: closing the browser loses nothing, and coming back
resumes there. Pure (the labels come in as a table).

>>> keys_for(["light", "dark"])
[Choice(key='1', group='light'), Choice(key='2', group='dark'), Choice(key='0', group='cant_tell')]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CANT_TELL_KEY", "KEYS", "Choice", "Progress", "Question", "answered_by",
           "keys_for", "next_question", "progress"]

#: Keys of the groups, in the concept's group order (no ``x``: it reads as "none").
KEYS = "123456789abcdefghijklmnopqrstuvwyz"
#: The key of "can't tell".
CANT_TELL_KEY = "0"
_CANT_TELL = "cant_tell"  # audit.labels.CANT_TELL (a test pins that they agree)


@dataclass(frozen=True)
class Choice:
    """One answer: its key and the group it records (``cant_tell`` for "can't tell")."""

    key: str
    group: str


@dataclass(frozen=True)
class Question:
    """The next question: which image (its position in the sample) and which concept."""

    item: Any  # audit.labels.LabelItem
    position: int
    concept: str
    choices: list[Choice]
    concept_position: int
    concepts: int


@dataclass(frozen=True)
class Progress:
    """Answers given out of the answers asked, and images complete out of the sample."""

    answered: int
    total: int
    images_done: int
    images: int

    @property
    def percent(self) -> int:
        return round(100 * self.answered / self.total) if self.total else 100


def keys_for(groups: Sequence[str]) -> list[Choice]:
    """The keys of a concept's groups (``1``.. in group order) and ``0`` for can't tell."""
    if len(groups) > len(KEYS):
        groups = groups[:len(KEYS)]  # more groups than keys: the rest by mouse only
    return [*(Choice(k, str(g)) for k, g in zip(KEYS, groups, strict=False)),
            Choice(CANT_TELL_KEY, _CANT_TELL)]


def answered_by(labels: Any, labeller: str) -> set[tuple[str, str]]:
    """(image id, concept) pairs ``labeller`` answered, from the labels table
    (:func:`audit.labels.read_labels`: columns image_id, concept, labeller, ...)."""
    if labels is None or len(labels) == 0:
        return set()
    mine = labels[labels["labeller"].astype(str) == labeller]
    return set(zip(mine["image_id"].astype(str), mine["concept"].astype(str), strict=True))


def next_question(items: Sequence[Any], choices: Mapping[str, Sequence[str]],
                  done: set[tuple[str, str]]) -> Question | None:
    """The first (image, concept) of the sample not in ``done``; None when all are."""
    concepts = list(choices)
    for position, item in enumerate(items):
        for k, concept in enumerate(concepts):
            if (str(item.image_id), concept) not in done:
                return Question(item=item, position=position, concept=concept,
                                choices=keys_for(choices[concept]), concept_position=k,
                                concepts=len(concepts))
    return None


def progress(items: Sequence[Any], choices: Mapping[str, Sequence[str]],
             done: set[tuple[str, str]]) -> Progress:
    """How far the labeller is: answers and complete images (only the sample's count)."""
    concepts = list(choices)
    answered = images_done = 0
    for item in items:
        mine = sum((str(item.image_id), c) in done for c in concepts)
        answered += mine
        images_done += mine == len(concepts)
    return Progress(answered=answered, total=len(items) * len(concepts),
                    images_done=images_done, images=len(items))
