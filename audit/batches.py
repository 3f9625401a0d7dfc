"""How a discriminator is called on images: batch size, batch order and padding.

A discriminator with a minibatch standard deviation layer (StyleGAN2-ADA and StyleGAN3's
``b4.mbstd``) gives each image an output that depends on the other images of its batch,
and fails on a batch that is not a multiple of its group size. The layer probe marks such
a model (:attr:`audit.load.LoadedModel.batch_dependent_layers`); it is then always called
with full batches:

- the batch size is rounded up to a multiple of the group size (the ``group_size`` of the
  model's modules, as NVlabs' ``MinibatchStdLayer`` has, else :data:`DEFAULT_GROUP_SIZE`),
  and the user is told once (:func:`full_batch_size`);
- images go into batches in a seeded random order within each shard of a store
  (:func:`batch_order`), so that a batch mixes groups and whatever order the source has
  (folders sorted by group, say); rows are stored back in source order;
- a last, shorter batch is padded with repeated images of that same batch
  (:func:`padding_rows`), whose outputs are dropped; the store manifest counts them.

Other models keep consecutive batches in source order, unpadded.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from audit.load import LoadedModel

__all__ = ["DEFAULT_GROUP_SIZE", "is_batch_dependent", "group_size", "full_batch_size",
           "batch_order", "padding_rows", "describe_batches"]

#: The group size assumed for a batch-dependent model whose modules say none (StyleGAN's
#: ``mbstd_group_size`` default).
DEFAULT_GROUP_SIZE = 4


def is_batch_dependent(model: LoadedModel) -> bool:
    """Whether the probe found a module whose output depends on the other images of the
    batch (then the score does too, and every call gets a full batch)."""
    return bool(model.batch_dependent_layers)


def group_size(model: LoadedModel) -> int | None:
    """The batch size a batch-dependent model needs a multiple of; None if it needs none.

    The least common multiple of the integer ``group_size`` attributes of the model's
    modules (NVlabs' ``MinibatchStdLayer``; ``group_size=None`` there means the whole batch
    is one group), else :data:`DEFAULT_GROUP_SIZE`.
    """
    if not is_batch_dependent(model):
        return None
    found = [m.group_size for m in model.module.modules()
             if isinstance(getattr(m, "group_size", None), int)
             and not isinstance(m.group_size, bool) and m.group_size > 0]
    return math.lcm(*found) if found else DEFAULT_GROUP_SIZE


def full_batch_size(model: LoadedModel, batch_size: int) -> int:
    """``batch_size`` rounded up to a multiple of the model's group size (a warning says so).

    Parameters
    ----------
    model : LoadedModel
        A probed discriminator.
    batch_size : int
        Images per forward pass that the user asked for.

    Returns
    -------
    int
        ``batch_size`` itself when the model is not batch-dependent or it is already a
        multiple of the group size; else the next multiple.
    """
    size = group_size(model)
    if size is None or batch_size % size == 0:
        return batch_size
    rounded = -(-batch_size // size) * size
    warnings.warn(f"{model.spec}: batch_size {batch_size} is not a multiple of the "
                  f"discriminator's minibatch group size ({size}; its output depends on the "
                  f"other images of a batch, in groups of {size}): using batch_size {rounded}. "
                  f"Set discriminator.batch_size to a multiple of {size} to silence this.",
                  stacklevel=2)
    return rounded


def batch_order(start: int, stop: int, *, batch_size: int,
                seed: int | None) -> list[list[int]]:
    """The batches of image indices ``start .. stop - 1``.

    ``seed`` None: consecutive batches in source order. Otherwise a random permutation of
    the range, seeded by ``(seed, start)``, cut into consecutive batches: the same for the
    same shard on every run and every process.
    """
    import numpy as np

    if seed is None:
        order = np.arange(start, stop)
    else:
        order = np.random.default_rng([seed, start]).permutation(np.arange(start, stop))
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def padding_rows(n: int, size: int, *, group: int | None = None) -> np.ndarray:
    """Row indices that fill a batch of ``n`` images up to ``size``: ``0 .. n-1``, then
    repeats of the batch's own images (``size`` rows; ``n`` rows when ``n >= size``).

    With ``group`` (the minibatch-stddev group size G, ``size`` a multiple of it), the
    repeats are placed so that no image appears twice in one group whenever ``n >= G``:
    NVlabs' layer groups rows strided, row r with r + size/G, r + 2 size/G, ..., so a
    copy next to its original would shrink that group's standard deviation, and the scores
    of the real rows in it would be ones the audit never sees elsewhere.
    """
    import numpy as np

    if n >= size or n == 0:
        return np.arange(max(n, size)) % max(n, 1)
    if group is None or size % group:
        return np.arange(size) % n
    stride = size // group
    in_group: list[set[int]] = [set() for _ in range(stride)]
    for r in range(n):
        in_group[r % stride].add(r)
    used = [0] * n
    rows = list(range(n))
    for p in range(n, size):
        members = in_group[p % stride]
        r = min((r for r in range(n) if r not in members), key=lambda r: (used[r], r),
                default=min(range(n), key=lambda r: (used[r], r)))
        members.add(r)
        used[r] += 1
        rows.append(r)
    return np.asarray(rows)


def describe_batches(model: LoadedModel, *, batch_size: int,
                     order_seed: int | None) -> dict[str, Any]:
    """How the batches were formed, for the store manifest (and the report's method)."""
    dependent = is_batch_dependent(model)
    return {"batch_dependent": dependent, "batch_size": batch_size,
            "group_size": group_size(model),
            "batch_dependent_layers": list(model.batch_dependent_layers),
            "order": ("seeded random order within each shard, rows stored in source order; "
                      "a short last batch padded with repeats of its own images, their "
                      "outputs dropped") if dependent else "source order",
            "order_seed": order_seed}
