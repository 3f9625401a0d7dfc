"""The review app: a small Starlette application over one run folder.

Pages: the summary (``/``), the findings table (``/findings``, filtered and sorted from the
query string), a finding (``/findings/ID``: numbers, charts, sample grids, its review history
and the review form), the rendered report (``/report``, re-rendered by a POST there) and the
labelling page (``/label``); :func:`audit.serve.routes.create_app` maps them. Images come
from ``/files/samples/...`` (see :func:`audit.serve.security.run_file`); the stylesheets and
script from ``/static/``.

Every route goes through :meth:`ReviewApp.guarded`: the Host check, the access token or
session cookie, and for a POST the Origin check and the CSRF token. The work itself (files,
the review log, the labels) runs in a worker thread; the review log and the labels file
have their own locks, so two tabs writing at once both land.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from audit.errors import AuditError
from audit.serve import views
from audit.serve.security import Guard, run_file

__all__ = ["Ctx", "ReviewApp", "finding_url"]

_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY",
            "Cache-Control": "no-store"}
_STATIC = {"serve.css": ("serve/serve.css", "text/css"),
           "serve.js": ("serve/serve.js", "text/javascript"),
           "report.css": ("report/screen.css", "text/css")}


@dataclass
class Ctx:
    """One request as a page handler sees it (already checked)."""

    path: Mapping[str, str]
    query: Mapping[str, str]
    form: Mapping[str, str]
    session: dict[str, Any]
    csrf: str


def _forbidden(why: str, fix: str) -> Response:
    html = views.render("serve/error.html.j2", {
        "title": "Forbidden", "status": 403, "message": why, "fix": fix, "nav": False,
        "csrf": "", "flash": None})
    return HTMLResponse(html, status_code=403, headers=_HEADERS)


def _without_token(request: Request) -> str:
    """The request's path and query with ``token`` left out (where the first visit goes)."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    return request.url.path + ("?" + urlencode(rest) if rest else "")


class ReviewApp:
    """The app's state: the run folder, the guard, the cached report view, the render lock."""

    def __init__(self, run_dir: Path, guard: Guard) -> None:
        self.run_dir = Path(run_dir)
        self.guard = guard
        self.cookie = f"gan-audit-{guard.cookie_suffix}"
        self.views = views.ViewCache(self.run_dir)
        self.render_lock = threading.Lock()

    # ------------------------------------------------------------ checks

    def _session_response(self, request: Request) -> Response:
        """The first visit: a valid ``?token=`` gets a session cookie and a redirect."""
        if not self.guard.token_ok(request.query_params.get("token")):
            return _forbidden("The access token in the address is not this server's.",
                              "Open the address that 'gan-audit serve' printed (with its "
                              "?token=...), or restart the server for a new one.")
        sid = self.guard.new_session()
        response = RedirectResponse(_without_token(request), status_code=303,
                                    headers=_HEADERS)
        response.set_cookie(self.cookie, sid, httponly=True, samesite="strict", path="/")
        return response

    async def _check_write(self, request: Request, sid: str) -> dict[str, str] | Response:
        """A POST's form when its Origin and CSRF token are right, else a 403 page."""
        host = request.headers.get("host")
        if not self.guard.origin_ok(request.headers.get("origin"), host):
            return _forbidden("This write came from another site (its Origin is not this "
                              "server), so it was refused.",
                              "Use the app's own pages to record reviews and labels.")
        form = {k: str(v) for k, v in (await request.form()).items() if isinstance(v, str)}
        if not self.guard.csrf_ok(sid, form.get("csrf")):
            return _forbidden("This form's security token is missing or stale (a form from "
                              "an earlier server, or from another site), so nothing was "
                              "written.",
                              "Reload the page and submit the form again.")
        return form

    def guarded(self, handler: Callable[[Ctx], Response]) -> Callable[[Request], Any]:
        """``handler`` behind the Host, token/session and (for POST) Origin and CSRF checks;
        it runs in a worker thread."""
        async def endpoint(request: Request) -> Response:
            if not self.guard.host_ok(request.headers.get("host")):
                return _forbidden("This server answers only at the address it printed (the "
                                  "request named another host).",
                                  "Open the address that 'gan-audit serve' printed.")
            if "token" in request.query_params:
                return self._session_response(request)
            sid = request.cookies.get(self.cookie)
            session = self.guard.session(sid)
            if session is None or sid is None:
                return _forbidden("This page needs the access token.",
                                  "Open the address that 'gan-audit serve' printed (it ends "
                                  "with ?token=...); the browser then remembers it.")
            form: dict[str, str] = {}
            if request.method == "POST":
                checked = await self._check_write(request, sid)
                if isinstance(checked, Response):
                    return checked
                form = checked
            ctx = Ctx(path=dict(request.path_params), query=dict(request.query_params),
                      form=form, session=session, csrf=self.guard.csrf_token(sid))
            response = await run_in_threadpool(self._handle, handler, ctx)
            response.headers.update({k: v for k, v in _HEADERS.items()
                                     if k not in response.headers})
            return response

        return endpoint

    def _handle(self, handler: Callable[[Ctx], Response], ctx: Ctx) -> Response:
        try:
            return handler(ctx)
        except AuditError as exc:  # a run folder that cannot be read as it is
            return self.page("serve/error.html.j2", ctx, status=409, title="Cannot do that",
                             message=str(exc), fix="Fix the run folder, then reload.")

    # ------------------------------------------------------------ responses

    def page(self, template: str, ctx: Ctx, *, status: int = 200, **context: Any) -> Response:
        """A page of ``templates/serve/`` with the common context (CSRF token, flash)."""
        html = views.render(template, {"csrf": ctx.csrf, "nav": True, "status": status,
                                       "flash": ctx.session.pop("flash", None),
                                       "run_name": self.run_dir.name, **context})
        return HTMLResponse(html, status_code=status)

    def redirect(self, ctx: Ctx, url: str, flash: str | None = None) -> Response:
        if flash:
            ctx.session["flash"] = flash
        return RedirectResponse(url, status_code=303)

    # ------------------------------------------------------------ files

    def _recorded_for(self, rel: str) -> dict[str, Any] | None:
        """What :func:`run_file` checks ``rel`` against: the manifest's record of the
        report's grids (always required, as in the report), and of a labelling image when
        the manifest records it (an image of the labelling sample is sent even if not)."""
        recorded = self.views.recorded()
        if rel in recorded or not rel.startswith("samples/labelling/"):
            return recorded
        from audit.labels import labelling_sample

        if rel in {str(item.file) for item in labelling_sample(self.run_dir)}:
            return None
        raise FileNotFoundError(rel)

    def file(self, ctx: Ctx) -> Response:
        rel = ctx.path["rel"]
        try:
            data = run_file(self.run_dir, rel, recorded=self._recorded_for(rel))
        except (FileNotFoundError, AuditError, OSError):
            return self.page("serve/error.html.j2", ctx, status=404, title="Not found",
                             message=f"No image {rel!r} that this app may send.",
                             fix="Images are sent only from the run folder's samples/.")
        return Response(data, media_type="image/png")

    def static(self, ctx: Ctx) -> Response:
        entry = _STATIC.get(ctx.path["name"])
        if entry is None:
            return self.page("serve/error.html.j2", ctx, status=404, title="Not found",
                             message="No such file.", fix="")
        return Response(views.template_text(entry[0]), media_type=entry[1])


def finding_url(finding_id: str) -> str:
    """The page of a finding (its id quoted for a path segment)."""
    return "/findings/" + quote(finding_id, safe="")
