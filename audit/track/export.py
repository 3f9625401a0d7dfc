"""Exports of the monitoring series: tidy CSV and Parquet, and TensorBoard scalars.

The tidy table has one row per estimate: ``point``, ``index``, ``setting``, ``curve``,
``group``, ``estimate``, ``low``, ``high``, ``n`` (:class:`audit.track.series.SeriesRow`).
TensorBoard needs the optional extra (``pip install 'gan-audit[tensorboard]'``), as the
decoder curves of ``gan-audit insight --tensorboard`` do: without it the export raises
:class:`audit.errors.DependencyError` before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audit.track.series import SeriesRow

__all__ = ["COLUMNS", "rows_to_frame", "write_series", "series_to_tensorboard",
           "check_tensorboard"]

COLUMNS = ("point", "index", "setting", "curve", "group", "estimate", "low", "high", "n")


def rows_to_frame(rows: Sequence[SeriesRow]) -> Any:
    """The tidy table as a pandas DataFrame (columns :data:`COLUMNS`; ``n`` nullable)."""
    import pandas as pd

    frame = pd.DataFrame([r.to_json() for r in rows], columns=list(COLUMNS))
    frame["n"] = frame["n"].astype("Int64")
    for column in ("setting", "estimate", "low", "high"):
        frame[column] = frame[column].astype("float64")
    return frame


def write_series(rows: Sequence[SeriesRow], out: Path) -> dict[str, Path]:
    """Write ``series.csv`` and ``series.parquet`` into ``out`` (atomically)."""
    from audit.io import atomic_path, atomic_write_text

    frame = rows_to_frame(rows)
    paths = {"csv": Path(out) / "series.csv", "parquet": Path(out) / "series.parquet"}
    atomic_write_text(paths["csv"], frame.to_csv(index=False))
    with atomic_path(paths["parquet"], suffix=".parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    return paths


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
