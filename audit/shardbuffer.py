"""One shard's rows on the host, filled batch by batch while extraction runs.

::

    buf = ShardBuffer(("b1", "b2"), capacity=8192, device="cuda:0")
    for batch in batches:
        buf.begin_batch(batch.skipped)                      # images the source could not read
        buf.add({"b1": p1, "b2": p2}, scores, ids, rows)    # N x D and N, on the device
    shard = buf.finish(stop=False)     # waits for the device once; rows with NaN/inf dropped

The forward hooks pool every layer where the model runs (:func:`audit.extract.pool_activation`
on the device), so only N x D rows cross to the host: one copy per layer and batch, straight
into a buffer that holds the whole shard (rows x D float32, allocated at the first batch).
On CUDA that buffer is pinned and the copies are non-blocking: the host waits for the device
once per shard, in :meth:`ShardBuffer.finish`, not once per batch. On the CPU (and MPS) the
copies are ordinary ones. The values are those of the pooled tensors, float32, whatever the
device: the store rounds them to float16 when it writes them (:func:`audit.store.storage_array`).

Rows whose activations are not finite (NaN or infinite, in any layer) are checked once per
shard, in :meth:`ShardBuffer.finish`: they are skipped like unreadable images, and listed in
the order the images came (each batch's unreadable images, then its non-finite ones), or stop
the run when asked, naming the first image and how many more its batch held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from audit.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

__all__ = ["ShardBuffer", "ShardRows", "finite_rows"]


@dataclass
class ShardRows:
    """A finished shard, rows in the order the batches ran (the extract stage puts them back
    in source order): kept image ids, their source indices, activations per layer
    (rows x D float32; (0, 0) float16 when no image was read), scores (rows, float32), the
    skipped images (``{"image_id", "reason"}``) and the padding rows that were added."""

    ids: list[str]
    rows: list[int]
    acts: dict[str, np.ndarray]
    scores: np.ndarray
    skipped: list[dict[str, str]]
    padded: int


class ShardBuffer:
    """The host side of one shard (see the module docstring).

    Parameters
    ----------
    layers : tuple of str
        The recorded layers, in order.
    capacity : int
        The most rows the shard can get (its number of images).
    device : str
        Where the model runs; ``cuda...`` gets pinned buffers and non-blocking copies.
    """

    def __init__(self, layers: tuple[str, ...], capacity: int, *, device: str = "cpu") -> None:
        self.layers = tuple(layers)
        self.capacity = capacity
        self.device = device
        self.pinned = device.startswith("cuda")
        self.acts: dict[str, torch.Tensor] = {}
        self.scores: torch.Tensor | None = None
        self.ids: list[str] = []
        self.rows: list[int] = []
        self.filled = 0
        self.padded = 0
        self._batches = 0
        self._starts: list[tuple[int, int]] = []           # (first row, batch number)
        self._unreadable: list[tuple[int, dict[str, str]]] = []

    def begin_batch(self, unreadable: list[dict[str, str]]) -> None:
        """A new batch starts; ``unreadable``: its images that the source could not read."""
        self._unreadable += [(self._batches, s) for s in unreadable]
        self._batches += 1

    def add(self, pooled: dict[str, torch.Tensor], scores: torch.Tensor, ids: list[str],
            rows: list[int]) -> None:
        """Copy one batch in: ``pooled[layer]`` (at least N x D, on the model's device; rows
        past N, padding, are left out), ``scores`` (at least N), for N = ``len(ids)`` images
        whose source indices are ``rows``."""
        n = len(ids)
        start, stop = self.filled, self.filled + n
        if stop > self.capacity:
            raise ValueError(f"{stop} rows for a shard of {self.capacity}")
        held = self.scores
        if held is None:
            held = self._allocate({name: int(pooled[name].shape[1]) for name in self.layers})
        for name in self.layers:
            self.acts[name][start:stop].copy_(pooled[name][:n], non_blocking=self.pinned)
        held[start:stop].copy_(scores[:n], non_blocking=self.pinned)
        self._starts.append((start, self._batches - 1))
        self.ids += ids
        self.rows += rows
        self.filled = stop

    def _allocate(self, dims: dict[str, int]) -> torch.Tensor:
        """The shard's buffers (float32, pinned on CUDA) for layers of ``dims`` features;
        returns the scores' one."""
        import torch

        def empty(*shape: int) -> torch.Tensor:
            return torch.empty(shape, dtype=torch.float32, pin_memory=self.pinned)

        self.acts = {name: empty(self.capacity, d) for name, d in dims.items()}
        self.scores = empty(self.capacity)
        return self.scores

    def finish(self, *, stop: bool) -> ShardRows:
        """The shard's kept rows, once the copies have landed; ``stop``: a non-finite row is
        a :class:`DataError` (naming the image) instead of a skipped image."""
        import numpy as np

        if self.pinned and self.filled:
            import torch

            torch.cuda.synchronize(self.device)   # the non-blocking copies have landed
        n = self.filled
        if self.scores is None:
            return ShardRows([], [], {name: np.empty((0, 0), np.float16) for name in self.layers},
                             np.empty(0, np.float32), [s for _, s in self._unreadable],
                             self.padded)
        arrays = {name: self.acts[name][:n].numpy() for name in self.layers}
        keep, dropped = finite_rows(arrays, self.ids, stop=stop, batch_of=self._batch_of)
        every = bool(keep.all())
        skipped = [s for _, s in sorted(self._unreadable + dropped, key=lambda e: e[0])]
        return ShardRows(
            ids=self.ids if every else [i for i, k in zip(self.ids, keep, strict=True) if k],
            rows=self.rows if every else [r for r, k in zip(self.rows, keep, strict=True) if k],
            acts={name: a if every else a[keep] for name, a in arrays.items()},
            scores=self.scores[:n].numpy() if every else self.scores[:n].numpy()[keep],
            skipped=skipped, padded=self.padded)

    def _batch_of(self, row: int) -> int:
        """The batch number of a filled row."""
        import bisect

        return self._starts[bisect.bisect_right(self._starts, (row, 1 << 62)) - 1][1]


def finite_rows(arrays: dict[str, np.ndarray], image_ids: list[str], *, stop: bool,
                batch_of: Any = None) -> tuple[np.ndarray, list[tuple[int, dict[str, str]]]]:
    """Which images have finite activations (float32, as the model gave them) in every layer.

    NaN or infinite activations would poison every decoder and average into every number:
    such images are skipped like unreadable ones (``{"image_id", "reason"}`` records, listed
    in the store manifest and the report), or stop the run when ``stop``.

    Parameters
    ----------
    arrays : dict
        Layer -> N x D activations.
    image_ids : list of str
        The N images.
    stop : bool
        Raise :class:`DataError` at the first image with non-finite activations.
    batch_of : callable, optional
        Row -> batch number (default: one batch), for the order of the records and the
        count in the message.

    Returns
    -------
    keep : bool array (N,)
    dropped : list of (batch number, record), in row order
    """
    import numpy as np

    where = batch_of or (lambda _row: 0)
    keep = np.ones(len(image_ids), dtype=bool)
    first_bad: dict[int, str] = {}
    for name, arr in arrays.items():
        bad = ~np.isfinite(arr.reshape(len(image_ids), -1)).all(axis=1)
        for i in np.flatnonzero(bad & keep):
            first_bad[int(i)] = name
        keep &= ~bad
    dropped = [(where(i), {"image_id": image_ids[i], "reason": f"non-finite activations (NaN "
                                                               f"or infinite) at layer {name!r}"})
               for i, name in sorted(first_bad.items())]
    if dropped and stop:
        first = dropped[0]
        more = sum(1 for b, _ in dropped[1:] if b == first[0])
        raise DataError(f"{first[1]['image_id']}: {first[1]['reason']}"
                        + (f" (and {more} more image(s) in this batch)" if more else "")
                        + ". Check the model and the images, or set on_bad_image: skip to skip "
                          "such images (they are listed in the manifest and the report).")
    return keep, dropped
