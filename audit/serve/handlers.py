"""The review app's pages and actions, one method each (the routes are in
:func:`audit.serve.app.create_app`; every one is already checked when it gets here)."""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import HTMLResponse, Response

from audit.errors import AuditError, DependencyError, ReviewError, RunFolderError
from audit.report.review import STATUSES, append_review, head_summary
from audit.serve import labelling, pages
from audit.serve.app import Ctx, ReviewApp, finding_url

__all__ = ["Handlers"]

_MAX_TEXT = 10_000  # characters of a note, mitigation, owner or name


def _text(form: Any, name: str) -> str:
    return str(form.get(name) or "")[:_MAX_TEXT]


class Handlers:
    """The pages (GET) and actions (POST) of one :class:`ReviewApp`."""

    def __init__(self, app: ReviewApp) -> None:
        self.app = app
        self.run_dir = app.run_dir

    # ------------------------------------------------------------ summary

    def summary(self, ctx: Ctx) -> Response:
        _, view = self.app.views.report()
        log, review = self.app.views.review()
        counts = {s: 0 for s in (pages.UNREVIEWED, *STATUSES)}
        for f in view["findings"]:
            counts[review.latest[f.id]["status"] if f.id in review.latest
                   else pages.UNREVIEWED] += 1
        return self.app.page(
            "serve/summary.html.j2", ctx, title=view["title"], view=view, review=review,
            head=head_summary(log.check), counts=counts, report=self._report_state(),
            labelling=self._labelling_summary())

    def _report_state(self) -> dict[str, Any]:
        """Whether report.html exists and is older than the last review."""
        def mtime(name: str) -> float | None:
            path = self.run_dir / name
            return path.stat().st_mtime if path.is_file() and not path.is_symlink() else None

        html, log = mtime("report.html"), mtime("review.jsonl")
        return {"exists": html is not None,
                "stale": html is not None and log is not None and log > html,
                "pdf": mtime("report.pdf") is not None}

    def _labelling_summary(self) -> dict[str, Any]:
        from audit.labels import labelling_sample, read_labels

        try:
            items = labelling_sample(self.run_dir)
            labels = read_labels(self.run_dir)
        except AuditError as exc:
            return {"error": str(exc), "images": 0, "labels": 0, "labellers": []}
        return {"error": None, "images": len(items), "labels": len(labels),
                "labellers": sorted({str(x) for x in labels["labeller"]}) if len(labels)
                else []}

    # ------------------------------------------------------------ findings

    def findings(self, ctx: Ctx) -> Response:
        _, view = self.app.views.report()
        _, review = self.app.views.review()
        query = pages.FindingsQuery.from_params(ctx.query)
        rows = pages.filter_findings(view["findings"], review.latest, query)
        return self.app.page(
            "serve/findings.html.j2", ctx, title="Findings", rows=rows, query=query,
            options=pages.filter_options(view["findings"]), sorts=pages.sort_links(query),
            total=len(view["findings"]), finding_url=finding_url)

    def _finding(self, finding_id: str) -> Any:
        _, view = self.app.views.report()
        return next((f for f in view["findings"] if f.id == finding_id), None), view

    def finding(self, ctx: Ctx, *, error: str | None = None, status: int = 200) -> Response:
        finding, view = self._finding(ctx.path["finding_id"])
        if finding is None:
            return self.app.page("serve/error.html.j2", ctx, status=404, title="No such finding",
                                 message=f"This audit has no finding {ctx.path['finding_id']!r}.",
                                 fix="Pick one from the findings table.")
        _, review = self.app.views.review()
        latest = review.latest.get(finding.id)
        form = {"status": (latest or {}).get("status", ""), "note": "",
                "mitigation": (latest or {}).get("mitigation", ""),
                "owner": (latest or {}).get("owner", ""),
                "reviewer": ctx.session.get("reviewer", ""), **(ctx.form if error else {})}
        unreviewed = [f.id for f in view["findings"]
                      if f.id not in review.latest and f.id != finding.id]
        concept = self.app.views.concept(finding.concept)
        return self.app.page(
            "serve/finding.html.j2", ctx, status=status, title=finding.id, f=finding,
            detail=pages.finding_detail(finding, concept),
            history=review.history.get(finding.id, []), latest=latest, statuses=STATUSES,
            form=form, error=error, next_url=finding_url(unreviewed[0]) if unreviewed else None,
            verification=review.verification, level=concept["level"])

    def review(self, ctx: Ctx) -> Response:
        finding_id = ctx.path["finding_id"]
        reviewer = _text(ctx.form, "reviewer").strip()
        try:
            entry = append_review(self.run_dir, finding_id, status=_text(ctx.form, "status"),
                                  reviewer=reviewer, note=_text(ctx.form, "note"),
                                  mitigation=_text(ctx.form, "mitigation"),
                                  owner=_text(ctx.form, "owner"))
        except ReviewError as exc:
            return self.finding(ctx, error=str(exc), status=400)
        ctx.session["reviewer"] = reviewer
        return self.app.redirect(ctx, finding_url(finding_id), flash=(
            f"Recorded: {entry['finding_id']} {entry['status']} by {entry['reviewer']} "
            f"(entry {entry['hash'][:12]}). Re-render the report to include it."))

    # ------------------------------------------------------------ report

    def report(self, ctx: Ctx) -> Response:
        from audit.runfolder import read_artifact

        try:
            html = read_artifact(self.run_dir, "report.html")
        except FileNotFoundError:
            return self.app.page("serve/error.html.j2", ctx, status=404,
                                 title="No report yet", message="report.html is not in the "
                                 "run folder yet.", fix="Render it from the summary page.")
        return HTMLResponse(html)

    def rerender(self, ctx: Ctx) -> Response:
        """Render report.html (and report.pdf when asked) with the reviews, as
        ``gan-audit report`` does: under the run folder's lock, one render at a time."""
        from audit.report.render import render_report
        from audit.runfolder import claim

        pdf = ctx.form.get("pdf") == "1"
        start = time.perf_counter()
        try:
            with self.app.render_lock, claim(self.run_dir, create=False):
                paths = render_report(self.run_dir, pdf=pdf)
        except DependencyError as exc:
            return self.app.redirect(ctx, "/", flash=f"report.html re-rendered; no PDF: {exc}")
        except RunFolderError as exc:
            return self.app.redirect(ctx, "/", flash=f"Not re-rendered: {exc}")
        names = " and ".join(p.name for p in paths.values())
        return self.app.redirect(ctx, "/", flash=(
            f"Re-rendered {names} with the reviews ({time.perf_counter() - start:.1f} s)."))

    # ------------------------------------------------------------ labelling

    def _sample(self) -> tuple[list[Any], dict[str, list[str]]]:
        from audit.labels import label_choices, labelling_sample

        return labelling_sample(self.run_dir), label_choices(self.run_dir)

    def label(self, ctx: Ctx, *, error: str | None = None, status: int = 200) -> Response:
        from audit.labels import read_labels

        labeller = ctx.session.get("labeller")
        if not labeller or ctx.query.get("rename"):
            return self.app.page("serve/label_name.html.j2", ctx, title="Labelling",
                                 labeller=labeller or "", error=error, status=status)
        items, choices = self._sample()
        done = labelling.answered_by(read_labels(self.run_dir), labeller)
        return self.app.page(
            "serve/label.html.j2", ctx, status=status, title="Labelling", labeller=labeller,
            items=items, question=labelling.next_question(items, choices, done),
            progress=labelling.progress(items, choices, done), error=error)

    def labeller(self, ctx: Ctx) -> Response:
        name = _text(ctx.form, "labeller").strip()
        if not name:
            return self.label(ctx, error="Give your name: it is recorded with each label.",
                              status=400)
        ctx.session["labeller"] = name
        return self.app.redirect(ctx, "/label")

    def answer(self, ctx: Ctx) -> Response:
        from audit.labels import CANT_TELL, append_labels

        labeller = ctx.session.get("labeller")
        if not labeller:
            return self.app.redirect(ctx, "/label")
        items, choices = self._sample()
        image_id, concept = _text(ctx.form, "image_id"), _text(ctx.form, "concept")
        group = _text(ctx.form, "group")
        if image_id not in {str(i.image_id) for i in items} or concept not in choices or \
                group not in [*choices[concept], CANT_TELL]:
            return self.label(ctx, error=f"Not an answer of this sample ({image_id!r}, "
                                         f"{concept!r}, {group!r}); nothing was saved.",
                              status=400)
        append_labels(self.run_dir, [{"image_id": image_id, "concept": concept,
                                      "group": group}], labeller=labeller, source="web")
        return self.app.redirect(ctx, "/label")
