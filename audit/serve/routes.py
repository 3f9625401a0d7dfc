"""The review app's routes: which page or action answers which path (see
:mod:`audit.serve.app` for the checks every route goes through)."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from audit.serve import handlers
from audit.serve.app import ReviewApp
from audit.serve.security import Guard

__all__ = ["create_app"]


def create_app(run_dir: Path, *, guard: Guard) -> Starlette:
    """The review app of ``run_dir`` behind ``guard`` (see :mod:`audit.serve.security`)."""
    app = ReviewApp(run_dir, guard)
    h = handlers.Handlers(app)
    routes = [
        Route("/", app.guarded(h.summary), methods=["GET"]),
        Route("/findings", app.guarded(h.findings), methods=["GET"]),
        Route("/findings/{finding_id}", app.guarded(h.finding), methods=["GET"]),
        Route("/findings/{finding_id}/review", app.guarded(h.review), methods=["POST"]),
        Route("/report", app.guarded(h.report), methods=["GET"]),
        Route("/report", app.guarded(h.rerender), methods=["POST"]),
        Route("/label", app.guarded(h.label), methods=["GET"]),
        Route("/label", app.guarded(h.answer), methods=["POST"]),
        Route("/label/name", app.guarded(h.labeller), methods=["POST"]),
        Route("/files/{rel:path}", app.guarded(app.file), methods=["GET"]),
        Route("/static/{name}", app.guarded(app.static), methods=["GET"]),
        Route("/favicon.ico", app.guarded(lambda ctx: Response(status_code=204)),
              methods=["GET"]),  # no icon: nothing to fetch, nothing to log
    ]
    star = Starlette(routes=routes)
    star.state.review_app = app
    return star
