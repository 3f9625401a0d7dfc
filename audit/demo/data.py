"""The demo's data: scikit-learn's handwritten digits with two planted protected attributes.

The 1,797 real 8 x 8 digits bundled with scikit-learn (no download) are scaled to
32 x 32 and rendered in four variants whose truth is known exactly:

- tone: ``light`` = light ink (+1) on a dark ground (-1); ``dark`` = the exact
  negation (dark ink on a light ground).
- stroke: ``thin`` = as drawn; ``thick`` = the ink dilated by one pixel (a 3 x 3
  max filter, stride 1) before any inversion.

The images are split by image, once and for all, into three disjoint parts:
``gan`` (trains the demo GAN), ``paired`` (labelled images that train the concept
decoders) and ``audit`` (held-out real images that are audited). The split hashes
each image's index, so it depends on no random generator and never changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import numpy as np

from audit.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    import torch

__all__ = [
    "GAN_MIX",
    "PARTS",
    "SPLIT_SHARES",
    "BUILTIN_SOURCES",
    "IMAGE_SIZE",
    "render",
    "digits_split",
    "make_set",
    "plan_set",
    "DigitsPlan",
    "builtin_source",
    "builtin_plan",
]

Tone = Literal["light", "dark"]
Stroke = Literal["thin", "thick"]
Part = Literal["gan", "paired", "audit"]

IMAGE_SIZE = 32
#: The imbalanced mix the demo GAN trains on (and the mix of the real audit images):
#: 80% light / 20% dark tone, 70% thin / 30% thick stroke, assigned independently.
GAN_MIX: dict[str, float] = {"tone_dark": 0.2, "stroke_thick": 0.3}
#: Share of each digit class that goes to each part (cut per class, so every part
#: holds every digit in about the same proportion).
SPLIT_SHARES: dict[str, float] = {"gan": 0.45, "paired": 0.30, "audit": 0.25}
PARTS: tuple[str, ...] = tuple(SPLIT_SHARES)
TONES: tuple[str, ...] = ("light", "dark")
STROKES: tuple[str, ...] = ("thin", "thick")
BUILTIN_SOURCES: dict[str, str] = {
    "digits-paired": "the paired part, every image in all four tone x stroke variants "
                     "(balanced, exactly labelled)",
    "digits-audit": "the audit part in the real-world mix (20% dark tone, 30% thick stroke)",
}


# ---------------------------------------------------------------- rendering


def _as_ink(images: object) -> torch.Tensor:
    """Ink intensity in [0, 1] at 32 x 32, N x 1 x 32 x 32 float32.

    ``images`` is either N x 8 x 8 (or N x 1 x 8 x 8) in scikit-learn's 0..16 scale,
    or N x 32 x 32 (or N x 1 x 32 x 32) light-tone thin-stroke images in [-1, 1].
    """
    import torch
    import torch.nn.functional as F

    if isinstance(images, torch.Tensor):
        x = images.detach().to(torch.float32)
    else:
        x = torch.from_numpy(np.array(images, dtype=np.float32))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3] or \
            x.shape[2] not in (8, IMAGE_SIZE):
        raise DataError(f"render: expected N x 8 x 8 digits (0..16) or N x 1 x 32 x 32 images "
                        f"in [-1, 1], got shape {tuple(x.shape)}.")
    if x.shape[2] == 8:
        ink = F.interpolate(x / 16.0, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                            align_corners=False)
    else:
        ink = (x + 1.0) / 2.0
    return ink.clamp_(0.0, 1.0)


def render(images: object, *, tone: Tone, stroke: Stroke) -> torch.Tensor:
    """Render digits in one tone x stroke variant.

    A pure function: the same input always gives the same output, and the four
    variants of an image differ only by the planted transformation.

    Parameters
    ----------
    images : array-like or torch.Tensor
        N x 8 x 8 (or N x 1 x 8 x 8) digits in scikit-learn's 0..16 scale, as in
        ``load_digits().images``; or N x (1 x) 32 x 32 light-tone thin-stroke images
        in [-1, 1] (the output of ``render(..., tone="light", stroke="thin")``).
    tone : {"light", "dark"}
        ``light``: ink +1 on ground -1. ``dark``: the exact negation of ``light``.
    stroke : {"thin", "thick"}
        ``thin``: as drawn. ``thick``: the ink dilated by a 3 x 3 max filter.

    Returns
    -------
    torch.Tensor
        N x 1 x 32 x 32, float32 in [-1, 1].
    """
    import torch.nn.functional as F

    if tone not in TONES:
        raise DataError(f"render: unknown tone {tone!r}; use one of {list(TONES)}.")
    if stroke not in STROKES:
        raise DataError(f"render: unknown stroke {stroke!r}; use one of {list(STROKES)}.")
    ink = _as_ink(images)
    if stroke == "thick":
        ink = F.max_pool2d(ink, kernel_size=3, stride=1, padding=1)
    out = ink * 2.0 - 1.0
    return -out if tone == "dark" else out


# ---------------------------------------------------------------- the split


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images 1797 x 8 x 8 (0..16, float64) and targets (int)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, target = bunch.images, bunch.target
    images.flags.writeable = False
    target.flags.writeable = False
    return images, target


@lru_cache(maxsize=1)
def _light_thin() -> torch.Tensor:
    """All 1,797 digits at 32 x 32, light tone, thin stroke (N x 1 x 32 x 32)."""
    return render(_digits()[0], tone="light", stroke="thin")


def _hash_key(index: int) -> str:
    return hashlib.sha256(f"sklearn-digits/{index}".encode()).hexdigest()


def digits_split() -> dict[str, np.ndarray]:
    """Indices (into ``load_digits()``) of the three disjoint parts.

    Within each digit class, images are ordered by the sha256 of their index and cut
    at 45% / 30% / 25%, so the split is fixed, stratified by digit, and depends on no
    random generator.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"gan": ..., "paired": ..., "audit": ...}``: sorted int64 indices; disjoint,
        together all 1,797 images.
    """
    _, target = _digits()
    parts: dict[str, list[int]] = {p: [] for p in PARTS}
    for digit in np.unique(target):
        members = sorted(np.flatnonzero(target == digit).tolist(), key=_hash_key)
        n = len(members)
        cut1 = round(n * SPLIT_SHARES["gan"])
        cut2 = cut1 + round(n * SPLIT_SHARES["paired"])
        parts["gan"] += members[:cut1]
        parts["paired"] += members[cut1:cut2]
        parts["audit"] += members[cut2:]
    return {p: np.array(sorted(idx), dtype=np.int64) for p, idx in parts.items()}


# ---------------------------------------------------------------- labelled sets


def _check_share(name: str, share: float) -> float:
    share = float(share)
    if not 0.0 <= share <= 1.0:
        raise DataError(f"make_set: {name}={share} must be a share between 0 and 1.")
    return share


def _exact_assignment(n: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean array with exactly round(n * share) True values, in a seeded random order."""
    flags = np.zeros(n, dtype=bool)
    flags[: round(n * share)] = True
    return flags[rng.permutation(n)]


def make_set(part: Part, *, n: int, tone_share_dark: float, stroke_share_thick: float,
             seed: int, balanced: bool = False) -> tuple[torch.Tensor, pd.DataFrame]:
    """:func:`plan_set`, rendered: every image of the set and its labels."""
    plan, labels = plan_set(part, n=n, tone_share_dark=tone_share_dark,
                            stroke_share_thick=stroke_share_thick, seed=seed, balanced=balanced)
    return plan.render(np.arange(len(labels))), labels


@dataclass(frozen=True)
class DigitsPlan:
    """Which digit, in which variant, each image of a set is; rendered on demand.

    ``index`` (N,) rows of scikit-learn's digits, ``dark`` and ``thick`` (N,) bool.
    """

    index: np.ndarray
    dark: np.ndarray
    thick: np.ndarray

    def render(self, rows: Sequence[int]) -> torch.Tensor:
        """Images ``rows`` of the set: len(rows) x 1 x 32 x 32, float32 in [-1, 1] (each
        image rendered alone: the same pixels whichever rows are asked for together)."""
        import torch

        rows = np.asarray(rows, dtype=np.int64)
        dark, thick = self.dark[rows], self.thick[rows]
        base = _light_thin()[torch.as_tensor(self.index[rows])]
        images = torch.empty_like(base)
        for is_dark in (False, True):
            for is_thick in (False, True):
                sel = torch.as_tensor(np.flatnonzero((dark == is_dark) & (thick == is_thick)))
                if len(sel):
                    images[sel] = render(base[sel], tone="dark" if is_dark else "light",
                                         stroke="thick" if is_thick else "thin")
        return images.contiguous()


def _balanced_draw(order: np.ndarray, n: int, *, part: str, shares: tuple[float, float],
                   rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n / 4`` images of ``order`` (the part in a seeded order, M indices)
    each in all four variants, shuffled: ``(index, repeat, dark, thick)``, each (n,)."""
    m = len(order)
    if shares != (0.5, 0.5):
        raise DataError("make_set: balanced=True renders every image in all four variants, "
                        "so both shares must be 0.5.")
    if n % 4 or n > 4 * m:
        raise DataError(f"make_set: balanced=True needs n a multiple of 4 and at most "
                        f"{4 * m} (4 x the {m} images of part {part!r}); got n={n}.")
    index = np.repeat(order[: n // 4], 4)
    repeat = np.zeros(n, dtype=np.int64)
    dark = np.tile([False, False, True, True], n // 4)
    thick = np.tile([False, True, False, True], n // 4)
    shuffle = rng.permutation(n)
    return index[shuffle], repeat, dark[shuffle], thick[shuffle]


def _planted_draw(order: np.ndarray, n: int, *, shares: tuple[float, float],
                  rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exactly ``round(n * share)`` dark and thick images (``shares``: tone dark, stroke
    thick), each by its own permutation, drawn from ``order`` (M indices):
    ``(index, repeat, dark, thick)``, each (n,); ``repeat`` counts how often an image
    already appeared in its variant."""
    m = len(order)
    dark = _exact_assignment(n, shares[0], rng)
    thick = _exact_assignment(n, shares[1], rng)
    cell = dark.astype(np.int64) * 2 + thick.astype(np.int64)
    # Consecutive positions of one cyclic order: distinct images within a variant
    # until a variant needs more than m images, and distinct images overall while
    # n <= m. A variant that needs more than m images repeats them, marked -r2, -r3...
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(cell, kind="stable")] = np.arange(n)
    offset = np.concatenate([[0], np.cumsum(np.bincount(cell, minlength=4))])[cell]
    return order[rank % m], (rank - offset) // m, dark, thick


def plan_set(part: Part, *, n: int, tone_share_dark: float, stroke_share_thick: float,
             seed: int, balanced: bool = False) -> tuple[DigitsPlan, pd.DataFrame]:
    """A labelled set of digits from one part, with planted tone and stroke shares.

    Exactly ``round(n * tone_share_dark)`` images are dark and exactly
    ``round(n * stroke_share_thick)`` are thick, each assigned by its own seeded
    permutation (tone and stroke independent). Images are drawn from the part in a
    seeded order without repeating an image while ``n`` is at most the part size;
    beyond, an image appears again in other variants, and only when one variant
    needs more images than the part holds does an image repeat in the same variant
    (its id then ends in ``-r2``, ``-r3``, ...).

    Parameters
    ----------
    part : {"gan", "paired", "audit"}
        Which part of :func:`digits_split` to draw from.
    n : int
        Number of images.
    tone_share_dark, stroke_share_thick : float
        Shares in [0, 1] of dark-tone and thick-stroke images.
    seed : int
        Seed of the draw; the same arguments always give the same set.
    balanced : bool
        Render ``n / 4`` images of the part in all four variants (``n`` a multiple of
        4; both shares must be 0.5).

    Returns
    -------
    plan : DigitsPlan
        Renders the N x 1 x 32 x 32 images (float32 in [-1, 1]) on demand.
    labels : pandas.DataFrame
        One row per image: ``image_id`` (``digits-<part>-<index>-<tone>-<stroke>``,
        stable and unique), ``digit`` ("0".."9"), ``tone`` ("light"|"dark"),
        ``stroke`` ("thin"|"thick").
    """
    import pandas as pd

    split = digits_split()
    if part not in split:
        raise DataError(f"make_set: unknown part {part!r}; use one of {list(PARTS)}.")
    tone_share_dark = _check_share("tone_share_dark", tone_share_dark)
    stroke_share_thick = _check_share("stroke_share_thick", stroke_share_thick)
    pool = split[part]
    m = len(pool)
    n = int(n)
    if n < 1:
        raise DataError(f"make_set: n={n} must be at least 1.")
    if int(seed) < 0:
        raise DataError(f"make_set: seed={seed} must be a non-negative integer.")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), PARTS.index(part)]))
    order = pool[rng.permutation(m)]

    shares = (tone_share_dark, stroke_share_thick)
    if balanced:
        index, repeat, dark, thick = _balanced_draw(order, n, part=part, shares=shares, rng=rng)
    else:
        index, repeat, dark, thick = _planted_draw(order, n, shares=shares, rng=rng)

    tone = np.where(dark, "dark", "light")
    stroke = np.where(thick, "thick", "thin")
    target = _digits()[1][index]
    labels = pd.DataFrame({
        "image_id": [f"digits-{part}-{i:05d}-{t}-{s}" + (f"-r{r + 1}" if r else "")
                     for i, t, s, r in zip(index, tone, stroke, repeat, strict=True)],
        "digit": target.astype(str),
        "tone": tone,
        "stroke": stroke,
    })
    return DigitsPlan(index, dark, thick), labels


def builtin_source(name: str, *, n: int | None = None,
                   seed: int = 0) -> tuple[torch.Tensor, pd.DataFrame]:
    """:func:`builtin_plan`, rendered: every image of the source and its labels."""
    plan, labels = builtin_plan(name, n=n, seed=seed)
    return plan.render(np.arange(len(labels))), labels


def builtin_plan(name: str, *, n: int | None = None,
                 seed: int = 0) -> tuple[DigitsPlan, pd.DataFrame]:
    """A builtin labelled image source (``builtin:digits-paired``, ``builtin:digits-audit``).

    Parameters
    ----------
    name : str
        ``digits-paired``: the paired part, balanced, every image in all four
        variants (default n = 4 x part size). ``digits-audit``: the audit part in the
        real-world mix :data:`GAN_MIX` (default n = part size, each image once).
        A ``builtin:`` prefix is accepted.
    n : int, optional
        Number of images.
    seed : int
        Seed of the draw.

    Returns
    -------
    plan, labels
        As :func:`plan_set`.
    """
    key = name.removeprefix("builtin:")
    if key not in BUILTIN_SOURCES:
        known = ", ".join(f"builtin:{k}" for k in BUILTIN_SOURCES)
        raise DataError(f"unknown builtin image source {name!r}; known sources: {known}.")
    split = digits_split()
    if key == "digits-paired":
        m = len(split["paired"])
        return plan_set("paired", n=4 * m if n is None else n, tone_share_dark=0.5,
                        stroke_share_thick=0.5, seed=seed, balanced=True)
    m = len(split["audit"])
    return plan_set("audit", n=m if n is None else n, tone_share_dark=GAN_MIX["tone_dark"],
                    stroke_share_thick=GAN_MIX["stroke_thick"], seed=seed)
