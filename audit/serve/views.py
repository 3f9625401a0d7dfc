"""The run folder as the review app reads it: the report's view, cached; the review log, fresh.

The report's head (meta, verdicts, findings) is built once and again only when results.json,
the manifest or the decoders' validity file change (their size, time or inode). Charts are
the costly part (the whole report's take a second or more), so a finding's page draws only
its own concept's, once per concept. The sample grids come with the manifest's record of
them; the images themselves are checked again when sent. The review log
is read on every page, so a review recorded in another tab or with ``gan-audit review``
shows at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audit.report.render import load_run, render_template
from audit.report.review import ReviewLog, read_review_log
from audit.report.summary_view import (
    ReviewView,
    discriminator_view,
    findings_view,
    meta_view,
    review_view,
    verdicts_view,
)
from audit.report.view import ReportInputs, results_to_view
from audit.resources import resource_dir

__all__ = ["ViewCache", "render", "template_text"]

_WATCHED = ("results.json", "manifest.json", "decoders/validity.json")


def render(template: str, context: Mapping[str, Any]) -> str:
    """``templates/<template>`` rendered with the report's Jinja set-up (autoescaped)."""
    return render_template(template, context)


def template_text(name: str) -> str:
    """The text of ``templates/<name>`` (a stylesheet or script the pages link to)."""
    return (resource_dir("templates") / name).read_text(encoding="utf-8")


def _stamp(run_dir: Path) -> tuple[Any, ...]:
    """What the view is built from, cheaply: size, time and inode of each watched file."""
    out = []
    for rel in _WATCHED:
        try:
            st = os.stat(run_dir / rel, follow_symlinks=False)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def _focused(results: Mapping[str, Any], concept: str) -> dict[str, Any]:
    """results.json narrowed to one concept (or intersection) and the concepts it crosses:
    what a finding's page draws, at a fraction of the whole report's charts."""
    inter = [x for x in results.get("intersections") or []
             if isinstance(x, Mapping) and x.get("name") == concept]
    names = {concept, *(str(c) for x in inter for c in x.get("concepts") or [])}

    def keep(section: str) -> list[Any]:
        return [e for e in results.get(section) or []
                if isinstance(e, Mapping) and str(e.get("concept")) in names]

    return {**results, "representation": keep("representation"),
            "treatment": keep("treatment"), "intersections": inter}


class ViewCache:
    """The report's view of one run folder, rebuilt when its files change.

    :meth:`report` is the light part every page needs (meta, discriminator, verdicts,
    findings); :meth:`concept` the charts and tables of one concept, for a finding's page.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._value: tuple[ReportInputs, dict[str, Any]] | None = None
        self._concepts: dict[str, dict[str, Any]] = {}

    def report(self) -> tuple[ReportInputs, dict[str, Any]]:
        """``(inputs, view)``: what :func:`audit.report.render.load_run` read, and the
        report's head built from it (``meta``, ``title``, ``discriminator``, ``verdicts``,
        ``findings`` (most severe first), ``warnings``)."""
        with self._lock:
            stamp = _stamp(self.run_dir)
            if self._value is None or stamp != self._key:
                inputs = load_run(self.run_dir)
                results, manifest = inputs.results, dict(inputs.manifest or {})
                meta = meta_view(results, manifest)
                view = {"meta": meta, "title": meta.title,
                        "discriminator": discriminator_view(results),
                        "verdicts": verdicts_view(results), "findings": findings_view(results),
                        "warnings": list(inputs.warnings)}
                self._value, self._key, self._concepts = (inputs, view), stamp, {}
            return self._value

    def concept(self, name: str) -> dict[str, Any]:
        """The report's view (:func:`audit.report.view.results_to_view`) of one concept or
        intersection and the concepts it crosses: its charts, tables and sample grids."""
        inputs, _ = self.report()
        with self._lock:
            if name not in self._concepts:
                focused = ReportInputs(**{**vars(inputs),
                                          "results": _focused(inputs.results, name)})
                self._concepts[name] = results_to_view(focused)
            return self._concepts[name]

    def review(self) -> tuple[ReviewLog, ReviewView]:
        """The review log as it is now, and the report's view of it (latest status per
        finding, history, chain check)."""
        log = read_review_log(self.run_dir)
        return log, review_view(self.report()[1]["findings"], log)

    def recorded(self) -> dict[str, Any]:
        """The manifest's ``artifacts`` (path -> {sha256, size}); ``{}`` without one."""
        manifest = self.report()[0].manifest or {}
        artifacts = manifest.get("artifacts") if isinstance(manifest, Mapping) else None
        return dict(artifacts) if isinstance(artifacts, Mapping) else {}
