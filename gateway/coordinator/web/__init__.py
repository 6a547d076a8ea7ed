"""The web console: server-rendered HTML shells plus small ES modules (no build step)
that call the same REST API (/api) with the JWT from the login endpoint.

Every page is a shell the server renders the same way for everyone; what a user sees in
it comes from the API, with her token and her roles, so the console can never show more
than the API lets her read. Everything it loads (scripts, styles, icons) is served from
here: nothing from another origin, which the Content-Security-Policy also enforces.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Flask, Response, redirect, render_template, url_for

__all__ = ["PAGES", "bp", "init_app"]

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

# Scripts, styles, fetches and images only from this origin; plots are inline SVG.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Page:
    template: str
    title: str
    script: str  # static/js/pages/<script>.js


PAGES = {
    "login": Page("login.html", "Sign in", "login"),
    "collaborations": Page("collaborations.html", "Collaborations", "collaborations"),
    "collaboration": Page("collaboration.html", "Collaboration", "collaboration"),
    "task_new": Page("task_new.html", "New task", "task_new"),
    "task": Page("task.html", "Task", "task"),
    "approvals": Page("approvals.html", "Image approvals", "approvals"),
    "audit": Page("audit.html", "Audit trail", "audit"),
    "admin": Page("admin.html", "Administration", "admin"),
}


def _render(name: str, **context) -> Response:
    page = PAGES[name]
    html = render_template(f"console/{page.template}", page=page, page_name=name, **context)
    return Response(html, mimetype="text/html")


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
def collaborations():
    return _render("collaborations")


@bp.get("/login")
def login():
    return _render("login")


@bp.get("/collaborations/<int:collaboration_id>")
def collaboration(collaboration_id: int):
    return _render("collaboration", object_id=collaboration_id)


@bp.get("/tasks/new")
def task_new():
    return _render("task_new")


@bp.get("/tasks/<int:task_id>")
def task(task_id: int):
    return _render("task", object_id=task_id)


@bp.get("/approvals")
def approvals():
    return _render("approvals")


@bp.get("/audit")
def audit():
    return _render("audit")


@bp.get("/admin")
def admin():
    return _render("admin")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.get("/")
    def _root():
        return redirect(url_for("console.collaborations"))
