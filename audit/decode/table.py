"""The per-image table (``predictions.parquet``): decoded groups, score, split, source, truth.

One function builds it for the pipeline's run folder and for the Python API alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from audit.decode.bundle import DecoderBundle

__all__ = ["prediction_table"]


def prediction_table(bundle: DecoderBundle, features: Mapping[str, np.ndarray],
                     scores: np.ndarray, *, image_ids: Sequence[str],
                     labels: pd.DataFrame | None, concepts: Sequence[str],
                     split: str | Sequence[str], source: str, model_sha256: str,
                     pooling: str) -> pd.DataFrame:
    """Decode N images into the rows of ``predictions.parquet``.

    Parameters
    ----------
    bundle : DecoderBundle
        The trained decoders.
    features : {layer: (N, D) array}
        Pooled activations (at least the layers ``bundle.best`` chose), rows in
        ``image_ids`` order.
    scores : (N,) float array
        The discriminator's output per image.
    image_ids : sequence of str
        The N ids.
    labels : DataFrame or None
        ``image_id`` and a column per concept (group name, None/NaN where unknown); rows
        are matched by id, so their order does not matter. None: nothing is known.
    concepts : sequence of str
        The concept set's concept names (one ``true__<concept>`` column each).
    split : str or sequence of str
        ``audit`` for audited images, or each image's decoder split (train/val/test).
    source : {"real", "generated"}
        Where the images come from.
    model_sha256, pooling : str
        Where the activations come from (checked against the decoders).

    Returns
    -------
    DataFrame
        ``image_id`` (str), ``split`` (str), ``source`` (str), ``score`` (float),
        ``prob__<concept>__<group>`` (float), ``pred__<concept>`` (str) and
        ``true__<concept>`` (str or None), one row per image.
    """
    import numpy as np
    import pandas as pd

    from audit.decode.bundle import decode

    ids = [str(i) for i in image_ids]
    table = decode(bundle, features, np.asarray(scores), model_sha256=model_sha256,
                   pooling=pooling, image_ids=ids)
    table.insert(1, "split", split if isinstance(split, str) else list(split))
    table.insert(2, "source", source)
    known = None
    if labels is not None:
        known = labels.set_index(labels["image_id"].astype(str)).reindex(ids)
    for c in concepts:
        values = (known[c].to_numpy(dtype=object) if known is not None and c in known.columns
                  else [None] * len(ids))
        table[f"true__{c}"] = pd.Series([_group(v) for v in values], dtype=object)
    return table


def _group(value: Any) -> str | None:
    """A label as a group name; None for a missing one (None or NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value)
