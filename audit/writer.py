"""A background writer: finished shards are written on one thread while the next compute.

::

    with BackgroundWriter(write_shard) as write:      # write_shard(k, shard) -> None
        for k, shard in shards_as_they_finish():
            write(k, shard)        # returns at once; waits only while the last one is written

One job at a time (a queue of depth one): handing over a job first waits for the previous
one, so at most two shards are held in memory, the one being written and the one being
filled, whatever the number of shards. An error of a write (a full disk, an interruption)
is raised again in the calling thread, the same exception, at the next hand-over or when
the block ends; nothing later is written then. When the block itself fails, the write in
hand is finished (each file is atomic, a shard's meta last, so it is complete or absent)
before the block's error goes on: no thread writes after the block has ended.

A leaf: it imports nothing of the tool.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

__all__ = ["BackgroundWriter"]


class BackgroundWriter:
    """Run ``write(*args)`` on one background thread, one job at a time.

    Parameters
    ----------
    write : callable
        The job (e.g. write one shard of a store); its return value is ignored.
    name : str
        The thread's name (seen in tracebacks and profilers).
    """

    def __init__(self, write: Callable[..., Any], *, name: str = "gan-audit-writer") -> None:
        self._write = write
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._busy: Future[Any] | None = None

    def __call__(self, *args: Any) -> None:
        """Hand over one job: wait for the previous one (raising its error), then start."""
        self.wait()
        self._busy = self._pool.submit(self._write, *args)

    def wait(self) -> None:
        """Wait for the job in hand, if any; its error is raised here, as it was raised."""
        busy, self._busy = self._busy, None
        if busy is not None:
            busy.result()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self.wait()
            else:  # the block failed: finish the write in hand; the block's error wins
                with contextlib.suppress(BaseException):
                    self.wait()
        finally:
            self._pool.shutdown(wait=True)
