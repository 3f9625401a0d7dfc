"""``gan-audit track``: bias curves across checkpoints and sampling settings.

One audit per point (a training checkpoint, or a truncation setting of one generator) into
one tracking folder, the monitoring series read from each point's results.json
(:mod:`~audit.track.series`), a trend test and change points per curve with their findings
(:mod:`~audit.track.trends`), and the monitoring report and exports
(:mod:`~audit.track.document`, :mod:`~audit.track.export`). :func:`run_track` runs it all.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_track"]


def run_track(*args: Any, **kwargs: Any) -> Any:
    """See :func:`audit.track.run.run_track` (imported on first use: no torch here)."""
    from audit.track.run import run_track as run

    return run(*args, **kwargs)
