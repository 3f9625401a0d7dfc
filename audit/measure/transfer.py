"""Decoder transfer in results.json: which concepts' decoders read generated images that lie
outside the region of activations they were trained on, and the caveat their findings carry.

The numbers come from ``decoders/transfer.json``
(:func:`audit.decode.transfer.run_transfer`, written by the decoders stage, where the
activations are); this module only turns that document into the ``transfer`` section and
the caveat words (plain data in, plain data out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from audit.errors import DataError
from audit.formatting import interval, percent

__all__ = ["transfer_section", "transfer_caveats"]

_FIELDS = ("method", "n_components", "explained_variance", "n_train", "n_calibration",
           "quantile", "threshold", "generated", "real", "out_of_distribution", "reason")



def _caveat(concept: str, layer: str, rec: Mapping[str, Any]) -> str:
    gen = rec["generated"]
    ci = gen.get("ci") or [None, None]
    return (f"Caveat (decoder transfer): {percent(gen['value'])} of generated images ({gen['k']} "
            f"of {gen['n']}; 95% interval {interval(ci)}) lie beyond the "
            f"range of held-out real images at layer {layer}, which the {concept} decoder "
            f"reads (about {1 - rec['quantile']:.0%} expected): its held-out accuracy, and "
            f"the correction built on it, may not hold for generated images.")


def transfer_section(document: Mapping[str, Any] | None, concepts: Sequence[str]
                     ) -> list[dict[str, Any]]:
    """The ``transfer`` section of results.json: one record per concept of ``concepts``
    that ``document`` (decoders/transfer.json) covers, with its layer's numbers, whether its
    generated images are out of distribution, the rule, and the caveat (None if not).

    Raises :class:`DataError` when the document is malformed.
    """
    if not document:
        return []
    try:
        by_concept = dict(document["concepts"])
        layers = dict(document["layers"])
        rule = str(document.get("rule", ""))
        out = []
        for name in concepts:
            layer = by_concept.get(name)
            if layer is None:
                continue
            rec = layers[layer]
            row = {"concept": name, "layer": str(layer),
                   **{k: rec.get(k) for k in _FIELDS}, "rule": rule}
            ood = rec.get("out_of_distribution")
            row["out_of_distribution"] = None if ood is None else bool(ood)
            row["caveat"] = _caveat(name, str(layer), rec) if ood else None
            out.append(row)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"decoders/transfer.json is malformed ({exc!r}); run "
                        f"'gan-audit train-decoders' again to rewrite it.") from exc
    return out


def transfer_caveats(section: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Concept -> caveat, for the concepts whose generated images are out of distribution."""
    return {str(r["concept"]): str(r["caveat"]) for r in section if r.get("caveat")}
