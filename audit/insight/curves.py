"""Decoder training curves: read what the decoders folder records, write it to TensorBoard.

What a decoders folder records (``decoders/<layer>.json``, ``decoders/layers.json``):

- per layer, ``history`` when the decode stage keeps one: ``{"epoch": [...], "<series>":
  [...], ...}`` (e.g. ``train_loss``, ``val_loss`` per epoch) -- one curve per series;
- per layer, ``epochs``: the best epoch of early stopping, against ``settings.max_epochs``
  (a best epoch at the last one says training may have stopped too early);
- the layer sweep: held-out score and accuracy of each concept's decoder at each layer
  (a curve over layers, input side first).

:func:`metadata_to_curves` is pure; :func:`decoder_curves` reads a folder;
:func:`curves_to_tensorboard` writes event files with
``torch.utils.tensorboard.SummaryWriter`` when the optional ``tensorboard`` package is
installed (``pip install 'gan-audit[tensorboard]'``), and raises a
:class:`~audit.errors.DependencyError` saying so otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import DependencyError, RunFolderError

__all__ = ["Curve", "TrainingCurves", "metadata_to_curves", "decoder_curves",
           "curves_to_tensorboard", "TENSORBOARD_HINT"]

TENSORBOARD_HINT = "pip install 'gan-audit[tensorboard]'"


@dataclass(frozen=True)
class Curve:
    """One scalar series: ``tag`` (TensorBoard name, ``group/name``), steps and values."""

    tag: str
    steps: list[int]
    values: list[float]
    step_label: str = "epoch"


@dataclass(frozen=True)
class TrainingCurves:
    """Every series a decoders folder records.

    ``history``: per-epoch series (empty when the decode stage keeps no history);
    ``sweep``: held-out metrics per concept along the layers (step = layer index);
    ``best_epoch``: best epoch of early stopping per layer; ``max_epochs``: the limit.
    """

    layers: list[str]
    history: list[Curve] = field(default_factory=list)
    sweep: list[Curve] = field(default_factory=list)
    best_epoch: dict[str, int] = field(default_factory=dict)
    max_epochs: int | None = None

    @property
    def curves(self) -> list[Curve]:
        best = [Curve(tag="decoder/best_epoch", steps=list(range(len(self.layers))),
                      values=[float(self.best_epoch[lay]) for lay in self.layers
                              if lay in self.best_epoch], step_label="layer index")
                ] if self.best_epoch and len(self.best_epoch) == len(self.layers) else []
        return [*self.history, *self.sweep, *best]

    def to_json(self) -> dict[str, Any]:
        return {"layers": self.layers, "history": [asdict(c) for c in self.history],
                "sweep": [asdict(c) for c in self.sweep], "best_epoch": self.best_epoch,
                "max_epochs": self.max_epochs, "has_history": bool(self.history)}


def _floats(values: Any) -> list[float] | None:
    if not isinstance(values, list) or not values:
        return None
    try:
        return [math.nan if v is None else float(v) for v in values]  # null: not measured
    except (TypeError, ValueError):
        return None


def metadata_to_curves(layer_meta: Mapping[str, Mapping[str, Any]],
                       sweep: Mapping[str, Any] | None) -> TrainingCurves:
    """Curves from the per-layer metadata and the sweep (pure).

    Parameters
    ----------
    layer_meta : {layer: dict}
        The contents of ``decoders/<layer>.json`` per layer, input side first.
    sweep : dict or None
        ``decoders/layers.json``.
    """
    layers = [str(lay) for lay in (sweep or {}).get("layers") or layer_meta]
    history, best, max_epochs = [], {}, None
    for layer in layers:
        meta = layer_meta.get(layer) or {}
        if isinstance(meta.get("epochs"), (int, float)):
            best[layer] = int(meta["epochs"])
        limit = (meta.get("settings") or {}).get("max_epochs")
        if isinstance(limit, int):
            max_epochs = limit
        hist = meta.get("history")
        if isinstance(hist, Mapping):
            series = {k: _floats(v) for k, v in hist.items() if k != "epoch"}
            n = max((len(v) for v in series.values() if v), default=0)
            steps = [int(e) for e in hist.get("epoch") or range(1, n + 1)]
            for name, values in series.items():
                if values and len(values) == len(steps):
                    history.append(Curve(tag=f"{layer}/{name}", steps=steps, values=values))
    sweep_curves = []
    for key, label in (("accuracy", "accuracy"), ("scores", (sweep or {}).get("metric"))):
        table = (sweep or {}).get(key)
        if not isinstance(table, Mapping):
            continue
        for concept, per_layer in table.items():
            pts = [(i, float(per_layer[lay])) for i, lay in enumerate(layers)
                   if isinstance(per_layer, Mapping) and per_layer.get(lay) is not None]
            if pts:
                sweep_curves.append(Curve(tag=f"sweep_{label or key}/{concept}",
                                          steps=[p[0] for p in pts], values=[p[1] for p in pts],
                                          step_label="layer index"))
    return TrainingCurves(layers=layers, history=history, sweep=sweep_curves, best_epoch=best,
                          max_epochs=max_epochs)


def _read(path: Path) -> Any:
    try:
        from audit.runfolder import read_run_file

        return json.loads(read_run_file(path).decode("utf-8"))
    except FileNotFoundError as exc:
        raise RunFolderError(f"{path}: missing; train the decoders first (gan-audit "
                             f"train-decoders CONFIG.yaml).") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{path}: not readable JSON ({exc}); train the decoders "
                             f"again.") from exc


def decoder_curves(decoders_dir: Path) -> TrainingCurves:
    """The curves a ``decoders/`` folder records (see the module docstring)."""
    decoders_dir = Path(decoders_dir)
    sweep = _read(decoders_dir / "layers.json")
    files = sweep.get("files") or {}
    meta = {str(lay): _read(decoders_dir / f"{stem}.json") for lay, stem in files.items()}
    return metadata_to_curves(meta, sweep)


def _summary_writer() -> Any:
    try:
        import tensorboard  # noqa: F401  (torch's writer needs it)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise DependencyError(f"writing TensorBoard event files needs the optional "
                              f"'tensorboard' package, which is not installed: "
                              f"{TENSORBOARD_HINT}. Everything else works without it; leave "
                              f"out --tensorboard.") from exc
    return SummaryWriter


def curves_to_tensorboard(curves: TrainingCurves, log_dir: Path) -> list[Path]:
    """Write every curve as TensorBoard scalars under ``log_dir``; returns the event files.

    Raises
    ------
    DependencyError
        ``tensorboard`` is not installed (the message says ``pip install
        'gan-audit[tensorboard]'``). Nothing is written then.
    """
    writer_cls = _summary_writer()
    from audit.io import ensure_dir

    log_dir = ensure_dir(Path(log_dir))
    before = set(log_dir.rglob("events.out.tfevents.*"))
    writer = writer_cls(log_dir=str(log_dir))
    try:
        for curve in curves.curves:
            for step, value in zip(curve.steps, curve.values, strict=True):
                if math.isfinite(value):  # e.g. no training loss at the starting point
                    writer.add_scalar(curve.tag, value, global_step=step)
        writer.add_text("decoder/layers", ", ".join(
            f"{i}: {lay}" for i, lay in enumerate(curves.layers)) or "(none)")
    finally:
        writer.close()
    return sorted(set(log_dir.rglob("events.out.tfevents.*")) - before)
