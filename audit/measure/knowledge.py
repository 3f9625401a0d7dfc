"""Knowledge gain in results.json: what the trained discriminator adds over the same
architecture with random weights, per concept (``baseline/random.json``, written by the
pipeline's baseline stage, :func:`audit.decode.baseline.baseline_for_run`).

Plain data in, plain data out: the numbers are computed where the activations are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from audit.errors import DataError

__all__ = ["baseline_section"]


def baseline_section(document: Mapping[str, Any] | None, concepts: Sequence[str]
                     ) -> list[dict[str, Any]]:
    """The ``baseline`` section of results.json: per concept of ``concepts`` that the
    document covers, the trained-D and random-D balanced accuracies, ``knowledge_gain``
    ({value, ci, n}), the layers each decoder read, and ``pixels_alone`` with its label.
    [] without a document or when the baseline was skipped.

    Raises :class:`DataError` when the document is malformed.
    """
    if not document or document.get("skipped"):
        return []
    try:
        gains, layers = dict(document["concepts"]), dict(document.get("layers") or {})
        out = []
        for name in concepts:
            g = gains.get(name)
            if g is None:
                continue
            gain = g["knowledge_gain"]
            ci = [float(gain["ci"][0]), float(gain["ci"][1])]
            pixels = bool(g["pixels_alone"])
            out.append({"concept": name,
                        "trained_layer": (layers.get(name) or {}).get("trained"),
                        "random_layer": (layers.get(name) or {}).get("random"),
                        "trained_balanced_accuracy": float(g["trained_balanced_accuracy"]),
                        "random_balanced_accuracy": float(g["random_balanced_accuracy"]),
                        "knowledge_gain": {"value": float(gain["value"]), "ci": ci,
                                           "n": int(gain["n"])},
                        "pixels_alone": pixels,
                        "label": str(g["label"]) if pixels and g.get("label") else None})
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise DataError(f"baseline/random.json is malformed ({exc!r}); run 'gan-audit run' "
                        f"again to rewrite it.") from exc
    return out
