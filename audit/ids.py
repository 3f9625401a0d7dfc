"""Groups of images from their ids: the variants of one source image share a key.

Used wherever images that are not independent must stay together: the decoders' split
(:mod:`audit.decode.split`), the bootstrap's clusters (:mod:`audit.measure`) and the
insight views. A leaf: it imports nothing of the tool.

>>> id_groups(["digit-7-dark", "digit-7-light", "digit-9-dark", "other"], r"^(digit-\\d+)-")
array([1, 1, 2, 0])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["id_groups"]


def id_groups(image_ids: Sequence[str], pattern: str | None) -> np.ndarray | None:
    """Group key per image from a regular expression on its id (None without a pattern).

    The key is the match's first group if the pattern has one, else the whole match; an
    id that does not match (or whose key is empty, or whose group took no part in the
    match) is a group of its own.
    """
    if pattern is None:
        return None
    import re

    rx = re.compile(pattern)
    keys = []
    for image_id in image_ids:
        m = rx.search(str(image_id))
        key = None if m is None else (m.group(1) if rx.groups else m.group(0))
        keys.append(f"={key}" if key else f"\0{image_id}")    # a shared key / its own group
    return np.unique(np.asarray(keys, dtype=object), return_inverse=True)[1].reshape(-1)
