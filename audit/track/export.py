"""Exports of the monitoring series: the tidy table as CSV and Parquet.

One row per estimate: ``point``, ``index``, ``setting``, ``curve``, ``group``, ``estimate``,
``low``, ``high``, ``n`` (:class:`audit.track.series.SeriesRow`). TensorBoard scalars:
:mod:`audit.track.tensorboard`. No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audit.track.series import SeriesRow

__all__ = ["COLUMNS", "rows_to_frame", "write_series"]

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
