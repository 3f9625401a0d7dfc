"""Planted truths for the counterfactual treatment test: discriminators built to use, or not
to use, the demo's tone (issue 22 item 6).

The demo plants tone as polarity: a ``dark`` digit is the exact negative of its ``light``
variant (:func:`audit.demo.data.render`), so light images have a negative mean pixel (a dark
ground) and dark ones a positive mean. Two discriminators are built around the demo D:

- ``uses``: D's score minus ``beta`` times the image's mean brightness (in [-1, 1]): a D
  that scores dark-tone images lower, by construction;
- ``blind``: D's score of the image turned to the light polarity first (negated when its
  mean is positive): its score cannot depend on tone, only on what the edit changes besides
  tone (the digit's shape, its stroke).

Both are read with the run's own decoders (the activations of the demo D), so the edited
concept is measured the same way in both; only the score under test differs. The
counterfactual test should find an effect for ``uses`` and, at its nominal rate, none for
``blind``; :func:`counterfactual_trials` measures both over seeds of the edited latents
(``benchmarks/counterfactual.py``, docs/VALIDATION.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from audit.insight.run import InsightRun

__all__ = ["Variant", "VARIANTS", "mean_brightness", "to_light_polarity", "variant_scores",
           "Trial", "counterfactual_trials"]

Variant = Literal["demo", "uses", "blind"]
VARIANTS: tuple[Variant, ...] = ("demo", "uses", "blind")


def mean_brightness(images: torch.Tensor) -> np.ndarray:
    """Each image's mean pixel: (N,) in [-1, 1] of N x C x H x W images in [-1, 1]."""
    return images.flatten(1).mean(1).numpy().astype(float)


def to_light_polarity(images: torch.Tensor) -> torch.Tensor:
    """Images negated where their mean is positive (dark tone -> light tone), the others
    unchanged: a tone-invariant view of N x C x H x W images in [-1, 1]."""
    flip = images.flatten(1).mean(1) > 0
    return images * (1 - 2 * flip.float())[:, None, None, None]


def variant_scores(variant: Variant, run: InsightRun, *, beta: float
                   ) -> Callable[[torch.Tensor, np.ndarray], np.ndarray] | None:
    """The score of a discriminator variant, as the stage's ``rescore`` hook: (images,
    the demo D's scores) -> scores (N,); None for the demo D itself."""
    if variant == "demo":
        return None
    if variant == "uses":
        return lambda images, scores: scores - beta * mean_brightness(images)
    if variant == "blind":
        return lambda images, scores: run.read_images(to_light_polarity(images))[1]
    raise ValueError(f"unknown variant {variant!r}; use one of {VARIANTS}")


@dataclass(frozen=True)
class Trial:
    """One replicate: a variant's effect on fresh edited latents."""

    variant: str
    seed: int
    value: float | None
    ci: list[float] | None
    p_value: float | None
    unadjusted: float | None
    unadjusted_p: float | None
    concept_change: float
    leakage: dict[str, float]

    @property
    def detected(self) -> bool:
        return self.ci is not None and (self.ci[0] > 0 or self.ci[1] < 0)


def counterfactual_trials(run_dir: Path, *, concept: str = "tone", group: str = "dark",
                          seeds: Sequence[int], variants: Sequence[Variant] = VARIANTS,
                          n: int = 96, steps: int = 9, span: float = 1.5, beta: float = 0.5,
                          n_boot: int = 1000, confidence: float = 0.95, device: str = "cpu",
                          log: Callable[[str], None] | None = None) -> list[Trial]:
    """The counterfactual test of each variant on ``len(seeds)`` sets of edited latents.

    ``run_dir`` is a finished demo run (its decoders and generated images); the direction is
    fitted once on its generated images, as the stage fits it. Each seed draws ``n`` new
    latents; every variant is scored on the same edited images.
    """
    from audit.config import load_run_config
    from audit.counterfactual import edit_latents, edit_offsets, fit_direction, read_edits
    from audit.insight.run import InsightRun
    from audit.measure.counterfactual import edit_effect, edit_leakage

    cfg = load_run_config(Path(run_dir))
    run = InsightRun(Path(run_dir), cfg, device=device)
    direction = fit_direction(run, concept, group)
    k = list(next(c for c in run.concept_set.concepts if c.name == concept).groups).index(group)
    out = []
    for seed in seeds:
        settings = cfg.counterfactual.model_copy(update={"n": n, "steps": steps,
                                                         "span": span, "seed": seed})
        z0, classes = edit_latents(run, settings)
        for variant in variants:
            probs, scores, _ = read_edits(run, z0, classes, direction, settings, keep=0,
                                          rescore=variant_scores(variant, run, beta=beta))
            p = {c: v.reshape(n, steps, -1) for c, v in probs.items()}
            effect, raw = edit_effect(p[concept][:, :, k], scores.reshape(n, steps),
                                      edit_offsets(settings), n_boot=n_boot, seed=seed,
                                      confidence=confidence)
            change = edit_leakage({c: (v[:, 0], v[:, -1]) for c, v in p.items()})
            trial = Trial(variant=variant, seed=seed, value=effect["value"], ci=effect["ci"],
                          p_value=effect["p_value"], unadjusted=raw["value"],
                          unadjusted_p=raw["p_cluster"], concept_change=change.pop(concept),
                          leakage=change)
            out.append(trial)
            if log is not None:
                log(f"seed {seed} {variant}: effect {trial.value:+.3f} ci {trial.ci} "
                    f"detected {trial.detected} (unadjusted {trial.unadjusted:+.3f}, "
                    f"p {trial.unadjusted_p:.2g})")
    return out


def summarise(trials: Sequence[Trial]) -> dict[str, dict[str, Any]]:
    """Per variant: share detected (with its Monte Carlo standard error), mean effect,
    replicates."""
    out = {}
    for variant in dict.fromkeys(t.variant for t in trials):
        ts = [t for t in trials if t.variant == variant]
        rate = float(np.mean([t.detected for t in ts]))
        raw = float(np.mean([t.unadjusted_p is not None and t.unadjusted_p < 0.05
                             for t in ts]))
        out[variant] = {"detected": rate, "se": float(np.sqrt(rate * (1 - rate) / len(ts))),
                        "mean_effect": float(np.mean([t.value for t in ts])),
                        "unadjusted_detected": raw,
                        "mean_unadjusted": float(np.mean([t.unadjusted for t in ts])),
                        "concept_change": float(np.mean([t.concept_change for t in ts])),
                        "leakage": {c: float(np.mean([t.leakage[c] for t in ts]))
                                    for c in ts[0].leakage},
                        "replicates": len(ts)}
    return out
