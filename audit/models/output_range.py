"""A generator's output range: declared in the config, checked against what it outputs, and
mapped to the tool's [-1, 1] by scaling; values outside the declared range are clamped and
counted, never silently."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from audit.errors import ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Images seen before the range check decides that the lower part of the declared range is
#: unused (a [0, 1] generator declared [-1, 1]); one batch of 16 images of real content has
#: dark pixels if the range has them.
CHECK_IMAGES = 16
#: Ranges generators use, suggested in that order when the declared one does not fit.
_COMMON_RANGES = ((-1.0, 1.0), (0.0, 1.0), (0.0, 255.0))


@dataclass
class OutputRange:
    """The declared range of a generator's images and what its images held so far.

    ``clamped`` counts pixel values outside ``declared`` (clamped to it) among ``values``;
    ``low``/``high`` are the extremes seen; ``checked``: the first :data:`CHECK_IMAGES`
    images agreed with the declared range.
    """

    declared: tuple[float, float] = (-1.0, 1.0)
    images: int = 0
    values: int = 0
    clamped: int = 0
    low: float = math.inf
    high: float = -math.inf
    checked: bool = False
    #: the user wrote value_range in the config (a disagreement is then a warning)
    explicit: bool = False
    #: while checking: values under the middle of the declared range, and in its top quarter
    below_middle: int = 0
    top_quarter: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for manifests: declared range, extremes seen, clamped values."""
        seen = self.values > 0
        return {"value_range": list(self.declared), "images": self.images,
                "values": self.values, "clamped_values": self.clamped,
                "observed_min": self.low if seen else None,
                "observed_max": self.high if seen else None}


def range_disagreement(state: OutputRange) -> str | None:
    """Why the images seen so far clearly do not come in ``state.declared``; None when they
    may.

    Clear: a value beyond the declared range by more than half its width (a [0, 255]
    generator declared [0, 1], a [-1, 1] one declared [0, 1]), or, once :data:`CHECK_IMAGES`
    images were seen, images that use the top quarter of the range (at least 0.5% of their
    values there) but almost nothing of its lower half (under 0.5% of their values below
    the middle): a [0, 1] generator declared [-1, 1], even one whose raw output overshoots
    [0, 1] a little (lucidrains' generator returns its RGB unclamped) or whose images are
    dark. Quantiles, not extremes, decide, so a few stray pixels change nothing; a narrow
    range about the middle (an untrained tanh generator) is no disagreement.
    """
    lo, hi = state.declared
    width = hi - lo
    if state.low < lo - 0.5 * width or state.high > hi + 0.5 * width:
        return "values far outside the declared range"
    if (state.images >= CHECK_IMAGES and state.values
            and state.below_middle < 0.005 * state.values
            and state.top_quarter >= 0.005 * state.values):
        return (f"only {100 * state.below_middle / state.values:.2f}% of the values lie in "
                f"the lower half of the declared range")
    return None


def _suggest(low: float, high: float, declared: tuple[float, float]) -> tuple[float, float]:
    """The first common range but the declared one holding [low, high] (20% slack: raw
    outputs overshoot a little) at the data's scale (its width at least half the range's),
    else the integers around it."""
    for lo, hi in _COMMON_RANGES:
        slack = 0.2 * (hi - lo)
        if ((lo, hi) != declared and low >= lo - slack and high <= hi + slack
                and high - low >= 0.5 * (hi - lo) - 2 * slack):
            return lo, hi
    return float(math.floor(low)), float(math.ceil(high))


def _text(value: float) -> str:
    return f"{value:g}"


def images_to_tool_range(images: torch.Tensor, state: OutputRange, *, spec: str
                         ) -> torch.Tensor:
    """Generator output (N x C x H x W in ``state.declared``) -> the same images in [-1, 1].

    Until the range is checked, the values seen are compared with the declared range
    (:func:`range_disagreement`): a clear disagreement is a :class:`ModelLoadError` naming
    the observed min/max and the config line to add. Values outside the declared range are
    clamped and counted in ``state.clamped``.
    """
    lo, hi = state.declared
    state.images += int(images.shape[0])
    state.values += images.numel()
    if images.numel():
        state.low = min(state.low, float(images.min()))
        state.high = max(state.high, float(images.max()))
    if not state.checked:
        state.below_middle += int((images < lo + 0.5 * (hi - lo)).sum())
        state.top_quarter += int((images >= hi - 0.25 * (hi - lo)).sum())
        why = range_disagreement(state)
        if why is not None and state.explicit and not why.startswith("values far outside"):
            import warnings

            warnings.warn(f"{spec}: the generator's first {state.images} images have values "
                          f"in [{state.low:.4g}, {state.high:.4g}] ({why}), but "
                          f"generator.value_range is [{_text(lo)}, {_text(hi)}] as the config "
                          f"says; kept as declared. Check it if the images look wrong in the "
                          f"report's samples.", stacklevel=2)
            why = None
            state.checked = True
        if why is not None:
            s_lo, s_hi = _suggest(state.low, state.high, state.declared)
            default = "" if state.explicit else " (the default)"
            raise ModelLoadError(
                f"{spec}: the generator's first {state.images} images have values in "
                f"[{state.low:.4g}, {state.high:.4g}] ({why}), but generator.value_range is "
                f"[{_text(lo)}, {_text(hi)}]{default}. Mapped from the wrong range, the "
                f"images would reach the discriminator distorted and every finding would "
                f"change. Declare the generator's range in the config, e.g. "
                f"`generator: {{value_range: [{_text(s_lo)}, {_text(s_hi)}]}}`.")
        state.checked = state.images >= CHECK_IMAGES
    outside = int(((images < lo) | (images > hi)).sum())
    state.clamped += outside
    if outside:
        images = images.clamp(lo, hi)
    if (lo, hi) == (-1.0, 1.0):
        return images     # already the tool's range: bit for bit as the generator made them
    return (images - lo) * (2.0 / (hi - lo)) - 1.0
