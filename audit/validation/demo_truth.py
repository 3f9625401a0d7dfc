"""Labels of the demo's generated images from its planted truth: pixel rules, not decoders.

The demo's groups are rendered by simple pixel operations (:mod:`audit.demo.data`), so
simple pixel rules read them back without any decoder (:mod:`audit.demo.train`):

* **tone**: :func:`audit.demo.train.tone_is_dark` (the mean pixel; the ground covers most
  of an image). On the real audit images it gives the planted 20.0% dark exactly.
* **stroke**: the ink-pixel threshold of :func:`audit.demo.train.check_models` (fit on the
  paired part), whose accuracy on held-out real images is known: 90.3%
  (``training.json``, ``check.generated.stroke_rule``). Its labels are a noisy truth (about
  one in ten wrong on real images), and that must be said wherever they are used.

:func:`truth_labels` labels the run's labelling sample with them, as rows for
:func:`audit.labels.append_labels`; :func:`truth_shares` gives the rules' shares over all
the run's generated images (what corrected shares should approach).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["STROKE_RULE_ACCURACY", "truth_labels", "truth_shares", "rule_groups"]



def _check() -> dict[str, Any]:
    """The sanity check recorded when the demo GAN was trained (``training.json``)."""
    from audit.demo.models import WEIGHTS_DIR

    return json.loads((WEIGHTS_DIR / "training.json").read_text(encoding="utf-8"))["check"]


#: The stroke rule's accuracy on held-out real images (training.json).
STROKE_RULE_ACCURACY = float(_check()["generated"]["stroke_rule"]["accuracy_on_held_out_real"])


def rule_groups(images: Any) -> dict[str, np.ndarray]:
    """N x 1 x 32 x 32 demo images in [-1, 1] (torch) -> concept -> (N,) group by the rules."""
    from audit.demo.train import ink_pixels, tone_is_dark

    threshold = float(_check()["generated"]["stroke_rule"]["ink_pixel_threshold"])
    dark = tone_is_dark(images).numpy()
    thick = (ink_pixels(images) > threshold).numpy()
    return {"tone": np.where(dark, "dark", "light"), "stroke": np.where(thick, "thick", "thin")}


def _generated(run_dir: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Every generated image of a demo run folder (sampled again from its config, as the
    run did) -> ids and their groups by the rules."""
    import torch

    from audit.config import load_config
    from audit.images import sampled_images
    from audit.load import load_generator

    cfg = load_config(Path(run_dir) / "config.yaml")
    g = cfg.generator
    if g is None:
        raise ValueError("a demo run folder samples its generator; this one has none")
    source = sampled_images(load_generator(g, device="cpu"), g, n=g.n, seed=g.seed,
                            target=None, concept_set=None)
    groups: dict[str, list[np.ndarray]] = {"tone": [], "stroke": []}
    with torch.no_grad():
        for start in range(0, g.n, 500):
            batch = source.get_batch(list(range(start, min(start + 500, g.n))))
            for concept, values in rule_groups(batch.images.float()).items():
                groups[concept].append(values)
    return [str(i) for i in source.image_ids], {c: np.concatenate(v) for c, v in groups.items()}


def truth_labels(run_dir: Path) -> list[dict[str, str]]:
    """Rows (image_id, concept, group) labelling every image of the run's labelling sample
    by the pixel rules (tone exact, stroke 90.3% accurate on real images)."""
    from audit.labels import labelling_sample

    ids, groups = _generated(run_dir)
    position = {i: k for k, i in enumerate(ids)}
    return [{"image_id": item.image_id, "concept": concept,
             "group": str(groups[concept][position[item.image_id]])}
            for item in labelling_sample(Path(run_dir)) for concept in ("tone", "stroke")]


def truth_shares(run_dir: Path) -> dict[str, dict[str, float]]:
    """Concept -> group -> share of all the run's generated images, by the pixel rules."""
    _, groups = _generated(run_dir)
    return {c: {g: float(np.mean(v == g)) for g in np.unique(v)} for c, v in groups.items()}
