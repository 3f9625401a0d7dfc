"""The monitoring series as TensorBoard scalars (the optional ``tensorboard`` extra).

As the decoder curves of ``gan-audit insight --tensorboard`` (:mod:`audit.insight.curves`,
whose writer this reuses): without ``pip install 'gan-audit[tensorboard]'`` the export raises
:class:`audit.errors.DependencyError` before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from audit.track.series import SeriesRow

__all__ = ["check_tensorboard", "series_to_tensorboard"]


def check_tensorboard() -> None:
    """Raise :class:`audit.errors.DependencyError` (with the install line) when the
    tensorboard extra is missing: called before any point is audited."""
    from audit.insight.curves import _summary_writer

    _summary_writer()


def series_to_tensorboard(rows: Sequence[SeriesRow], log_dir: Path) -> list[Path]:
    """Every curve as TensorBoard scalars under ``log_dir`` (tag ``curve/group``, step = the
    point's index); returns the event files written.

    Raises
    ------
    DependencyError
        ``tensorboard`` is not installed (the message says ``pip install
        'gan-audit[tensorboard]'``); nothing is written then.
    """
    from audit.insight.curves import _summary_writer
    from audit.io import ensure_dir

    writer_cls = _summary_writer()
    log_dir = ensure_dir(Path(log_dir))
    before = set(log_dir.rglob("events.out.tfevents.*"))
    writer = writer_cls(log_dir=str(log_dir))
    try:
        for row in rows:
            if row.estimate is not None and math.isfinite(row.estimate):
                writer.add_scalar(f"{row.curve}/{row.group}", row.estimate,
                                  global_step=row.index)
        points = sorted({(r.index, r.point) for r in rows})
        writer.add_text("track/points", ", ".join(f"{i}: {p}" for i, p in points) or "(none)")
    finally:
        writer.close()
    return sorted(set(log_dir.rglob("events.out.tfevents.*")) - before)
