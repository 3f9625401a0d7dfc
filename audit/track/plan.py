"""What a tracking run audits: the points (checkpoints or settings) and each one's config.

:func:`track_plan` turns the command line and the config's ``track:`` section into a
:class:`TrackPlan`: the points in order, how each point's config differs from the tracked
one (:func:`point_config`), which decoders are used, and the baseline of the change points.
It reads no model: a glob that matches nothing, a missing checkpoint file, a duplicate name
or a mix of checkpoints and a sweep are refused here, before any work.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from audit.config import AuditConfig
from audit.errors import ConfigError
from audit.track.series import Point

__all__ = ["TrackPlan", "track_plan", "point_config", "checkpoint_name"]

_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class TrackPlan:
    """A tracking run's points and how they are audited.

    Attributes
    ----------
    mode : {"checkpoints", "truncation"}
        Curves over training checkpoints, or over a sampling setting of one generator.
    points : tuple of Point
        In order; ``Point.name`` is also the point's run folder name.
    specs : tuple of str or None
        Per point: the checkpoint's spec (checkpoints mode); None in a sweep.
    reference : Path or None
        ``--reference-decoders RUN``: every point's generated images are decoded by RUN's
        discriminator and decoders. In a sweep without one, the first point's run is the
        reference (D and decoders are fixed across settings).
    baseline : str
        The point the change points compare with.
    """

    mode: Literal["checkpoints", "truncation"]
    points: tuple[Point, ...]
    specs: tuple[str | None, ...]
    reference: Path | None
    baseline: str

    @property
    def decoders(self) -> str:
        """``reference`` (one fixed decoder set) or ``per-checkpoint``."""
        return "reference" if self.reference is not None or self.mode == "truncation" \
            else "per-checkpoint"


def checkpoint_name(spec: str) -> str:
    """A checkpoint's name (its run folder): ``builtin:digits-dcgan-e10`` ->
    ``digits-dcgan-e10``, ``pickle:/runs/network-000400.pkl#D`` or a path ->
    ``network-000400`` (other characters than letters, digits, ``_ . -`` become ``_``)."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
    else:
        path = spec.partition(":")[2] if spec.startswith("pickle:") else spec
        name = Path(path.partition("#")[0]).stem
    # a folder name and part of an audit name: letters, digits, '_', '.', '-' only
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).lstrip("._-") or "checkpoint"


def _expand(entries: list[str]) -> list[str]:
    """Checkpoint entries with globs expanded (sorted) and files checked."""
    out: list[str] = []
    for entry in entries:
        path = entry.removeprefix("pickle:").partition("#")[0]
        if entry.startswith("builtin:"):
            out.append(entry)
        elif _GLOB.search(path):
            found = sorted(p for p in glob.glob(path) if Path(p).is_file())
            if not found:
                raise ConfigError(f"checkpoints: the glob {path!r} matches no file. Check the "
                                  f"pattern (quote it so that gan-audit, not the shell, expands "
                                  f"it) and the folder.")
            out += found
        elif not Path(path).is_file():
            raise ConfigError(f"checkpoints: {path}: file not found. Give network pickles "
                              f"(e.g. network-snapshot-000400.pkl) or builtin:NAME specs.")
        else:
            out.append(path)
    return out


def _truncation_name(psi: float) -> str:
    return f"truncation-{psi:g}"


def _baseline(points: tuple[Point, ...], baseline: str | None) -> str:
    if baseline is None:
        return points[0].name
    names = [p.name for p in points]
    if baseline not in names:
        raise ConfigError(f"track.baseline: {baseline!r} is not one of the points "
                          f"({', '.join(names)}); name one of them or leave it out (the first).")
    return baseline


def track_plan(cfg: AuditConfig, *, checkpoints: list[str] | None = None,
               truncation: list[float] | None = None, reference: Path | None = None,
               baseline: str | None = None) -> TrackPlan:
    """The points of a tracking run: the command line's, else the config's ``track:``.

    Raises
    ------
    ConfigError
        No points, both checkpoints and a sweep, a glob matching nothing, a missing file,
        two checkpoints with one name, fewer than two points, or a baseline that is not a
        point; a sweep without a generator.
    """
    section = cfg.track
    checkpoints = list(checkpoints or (section.checkpoints if section else []))
    truncation = list(truncation or (section.truncation if section else []))
    reference = reference or (section.reference_decoders if section else None)
    baseline = baseline or (section.baseline if section else None)
    if bool(checkpoints) == bool(truncation):
        raise ConfigError("gan-audit track needs either checkpoints (--checkpoints A.pkl B.pkl, "
                          "or track.checkpoints) or a sampling sweep (--truncation 1.0 0.7 "
                          "..., or track.truncation), " + ("not both." if checkpoints
                                                           else "and got neither."))
    if checkpoints:
        specs = tuple(_expand(checkpoints))
        names = [checkpoint_name(s) for s in specs]
        points = tuple(Point(n, i) for i, n in enumerate(names))
        mode: Literal["checkpoints", "truncation"] = "checkpoints"
    else:
        if cfg.generator is None:
            raise ConfigError("--truncation samples a generator, but the config gives a folder "
                              "of generated images ('generated'); give a 'generator' instead.")
        specs = tuple(None for _ in truncation)
        points = tuple(Point(_truncation_name(t), i, float(t))
                       for i, t in enumerate(truncation))
        mode = "truncation"
    dupes = sorted({p.name for p in points if [q.name for q in points].count(p.name) > 1})
    if dupes:
        raise ConfigError(f"two points named {dupes[0]!r}: each checkpoint (or setting) needs "
                          f"a name of its own (its run folder); rename the files.")
    if len(points) < 2:
        raise ConfigError(f"one point ({points[0].name}): a curve needs at least two; for one "
                          f"model use gan-audit run.")
    return TrackPlan(mode, points, specs, reference, _baseline(points, baseline))


def _swap_path(model_spec: str, checkpoint: str, what: str) -> str:
    """``model_spec`` (a pickle: spec) with its file replaced by ``checkpoint``'s."""
    if checkpoint.startswith("builtin:"):
        return checkpoint
    if not model_spec.startswith("pickle:"):
        raise ConfigError(f"checkpoint {checkpoint}: a checkpoint file replaces the file of "
                          f"pickle: specs (a StyleGAN network pickle holds D and G), but "
                          f"{what}.spec is {model_spec}. Use pickle:FILE#KEY specs, or "
                          f"builtin:NAME checkpoints.")
    key = model_spec.partition("#")[2]
    return f"pickle:{checkpoint}" + (f"#{key}" if key else "")


def _class_sampling(cfg: AuditConfig) -> dict[str, str]:
    """A conditional generator with classes (``num_classes``) but neither a class label
    nor a class sampling is swept class-conditionally: ``class_sampling: uniform``, so each
    setting samples every class (not the generator's default class alone)."""
    g = cfg.generator
    if (g is not None and g.num_classes and g.class_label is None
            and "class_sampling" not in g.model_fields_set):
        return {"class_sampling": "uniform"}
    return {}


def point_config(cfg: AuditConfig, plan: TrackPlan, point: Point) -> AuditConfig:
    """The config of one point's audit: the checkpoint in both specs (or the setting in
    ``generator.truncation``, sampling every class of a conditional generator with classes:
    :func:`_class_sampling`), the name ``<name>-<point>``, no ``track:`` section."""
    update: dict[str, object] = {"track": None, "name": f"{cfg.name}-{point.name}"}
    spec = plan.specs[point.index]
    if spec is not None:
        update["discriminator"] = cfg.discriminator.model_copy(
            update={"spec": _swap_path(cfg.discriminator.spec, spec, "discriminator")})
        if cfg.generator is not None:
            update["generator"] = cfg.generator.model_copy(
                update={"spec": _swap_path(cfg.generator.spec, spec, "generator")})
    if point.setting is not None and cfg.generator is not None:
        update["generator"] = cfg.generator.model_copy(update={
            "truncation": point.setting, **_class_sampling(cfg)})
    out = cfg.model_copy(update=update)
    out._given_paths = dict(cfg._given_paths)
    return out
