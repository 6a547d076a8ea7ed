"""The Armadillo face: the DataSHIELD API of MOLGENIS Armadillo, at the root of the host.

What real clients (DSI + DSMolgenisArmadillo) rely on is in docs/gateway-api.md and
PROTOCOL.md section 1. In short: `POST /select-profile` logs in (Basic or Bearer) and
sets a session cookie that names one R session; later calls carry the cookie (and the
Bearer token, if that is how the user logged in). Commands are async: the client polls
`/lastcommand` and fetches `/lastresult`, the RDS bytes of the value.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, g, jsonify, request

from gateway.node.audit_outcomes import command_outcome
from gateway.node.errors import BadRequest, GatewayError, NotFound, Unauthorized
from gateway.node.web import (
    SYMBOL_CSV_RE,
    TABLE_RE,
    check_symbol,
    check_workspace,
    iso_utc,
    node,
    note,
    parse_bool,
    read_body,
)

__all__ = ["COOKIE", "bp", "failed_message"]

COOKIE = "JSESSIONID"  # the name Armadillo (Spring) uses; clients keep it via their handle
FACE = "armadillo"

bp = Blueprint("armadillo", __name__)


# ---------------------------------------------------------------- logins


@dataclass(frozen=True)
class _Login:
    user: object  # auth.User
    session_id: str


class _Logins:
    """Session cookie -> (user, R session). The cookie is a random 256-bit token, issued
    anew at each login, and only ever leads to a session of the user who logged in."""

    MAX = 10_000

    def __init__(self) -> None:
        self._items: dict[str, _Login] = {}
        self._lock = threading.Lock()

    def add(self, user, session_id: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            if len(self._items) >= self.MAX:
                # Forget the oldest logins; their sessions have long been reaped.
                for key in list(self._items)[: self.MAX // 10]:
                    del self._items[key]
            self._items[token] = _Login(user, session_id)
        return token

    def get(self, token: str | None) -> _Login | None:
        if not token:
            return None
        with self._lock:
            return self._items.get(token)

    def pop(self, token: str | None) -> _Login | None:
        with self._lock:
            return self._items.pop(token, None) if token else None


def _logins() -> _Logins:
    return current_app.extensions["dsgateway.armadillo.logins"]


@bp.record_once
def _init(state) -> None:
    state.app.extensions.setdefault("dsgateway.armadillo.logins", _Logins())


def _same_user(a, b) -> bool:
    return a.name == b.name and getattr(a, "via", None) == getattr(b, "via", None)


def _caller(need_session: bool = True, foreign_cookie_ok: bool = False):
    """Who calls, and with which R session. Credentials in a header win; a cookie must
    then belong to the same user (at login another user's cookie is just ignored).
    Without a header the cookie alone identifies her."""
    services = node()
    note(face=FACE)
    header = request.headers.get("Authorization")
    header_user = services.authenticator.from_authorization(header) if header else None
    token = request.cookies.get(COOKIE)
    login = _logins().get(token)
    if login and header_user and not _same_user(login.user, header_user):
        note(user=header_user)
        if not foreign_cookie_ok:
            raise Unauthorized("This session cookie belongs to another login.")
        login = None
    user = header_user or (login.user if login else None)
    if user is None:
        if token:
            raise Unauthorized("Unknown or expired session: log in again (POST /select-profile).")
        raise Unauthorized("Authentication required.")
    g.user = user
    note(user=user)
    if login is None:
        if need_session:
            raise Unauthorized(
                "No DataSHIELD session: select a profile first (POST /select-profile)."
            )
        return user, None
    try:
        session = services.sessions.get(login.session_id, user)
    except NotFound:
        _logins().pop(token)
        if need_session:
            raise Unauthorized(
                "Your DataSHIELD session has ended (logout or idle timeout): log in again."
            ) from None
        return user, None
    note(session=session.id)
    return user, session


# ---------------------------------------------------------------- formatting


def failed_message(message: str | None) -> str:
    """A FAILED command's message as Armadillo words it. The R client takes the first
    `{...}` of it as JSON and shows its `message`, so nothing before it may hold a `{`."""
    text = message or "Unknown error"
    if text.startswith("Error evaluating: {"):
        return text
    body = {"status": "400", "key": "REvaluationRuntimeException", "message": text}
    return "Error evaluating: " + json.dumps(body, separators=(",", ":"))


def _command_json(cmd) -> dict:
    out = {"id": str(cmd.id), "expression": cmd.expression, "withResult": bool(cmd.with_result)}
    out["status"] = cmd.status
    out["createDate"] = iso_utc(cmd.create_date)
    if cmd.start_date is not None:
        out["startDate"] = iso_utc(cmd.start_date)
    if cmd.end_date is not None:
        out["endDate"] = iso_utc(cmd.end_date)
    if cmd.status == "FAILED":
        out["message"] = failed_message(cmd.message)
    return out


def _profile(session) -> str:
    if session is not None:
        return session.profile
    profiles = node().registry.profiles
    return "default" if "default" in profiles else profiles[0]


def _wait_timeout() -> float:
    # The worker is stopped at command_timeout, so the command ends before this.
    return node().config.limits.command_timeout + 60


def _created() -> Response:
    response = Response(status=201)
    response.headers["Location"] = "/lastcommand"
    return response


def _finish_sync(cmd, value: bool) -> Response:
    """A synchronous command: wait, then 200 (with the value for /execute) or 500."""
    cmd.wait(_wait_timeout())
    if cmd.status == "COMPLETED":
        if value:
            data = cmd.result or b""
            note(outcome=command_outcome(cmd), message=cmd.message)
            return Response(data, status=200, mimetype="application/octet-stream")
        return Response(status=200)
    message = failed_message(cmd.message if cmd.status == "FAILED" else "Command did not finish")
    note(outcome=command_outcome(cmd), message=cmd.message)
    return jsonify(status=500, error="Internal Server Error", message=message), 500


# ---------------------------------------------------------------- login and info


@bp.get("/actuator/info")
def actuator_info():
    note(face=FACE, action="info")
    info = {"build": {"artifact": "dsgateway", "name": "dsgateway", "version": _version()}}
    oidc = node().config.oidc
    if oidc is not None:
        info["auth"] = {"issuerUri": oidc.issuer_uri, "clientId": oidc.client_id}
    return jsonify(info)


@bp.get("/actuator/health")
def actuator_health():
    note(face=FACE, action="health")
    return jsonify(status="UP")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dsgateway")
    except PackageNotFoundError:
        return "0.1.0"


@bp.post("/select-profile")
def select_profile():
    note(action="select-profile")
    user, _ = _caller(need_session=False, foreign_cookie_ok=True)
    services = node()
    name = read_body().strip() or "default"
    note(profile=name[:100])
    if name not in services.registry.profiles:
        raise NotFound(f"Profile: {name[:100]} not found")
    old_token = request.cookies.get(COOKIE)
    old = _logins().get(old_token)
    if old is not None and _same_user(old.user, user):
        _logins().pop(old_token)
        try:
            services.sessions.close(old.session_id, user)
        except NotFound:
            pass
    session = services.sessions.create(user, name)
    note(session=session.id)
    token = _logins().add(user, session.id)
    response = Response(status=204)
    response.set_cookie(
        COOKIE, token, path="/", httponly=True, samesite="Lax", secure=request.is_secure
    )
    return response


@bp.post("/logout")
def logout():
    note(action="logout")
    user, session = _caller(need_session=False)
    _logins().pop(request.cookies.get(COOKIE))
    if session is not None:
        try:
            node().sessions.close(session.id, user)
        except NotFound:
            pass
    response = Response(status=200)
    response.delete_cookie(COOKIE, path="/")
    return response


# ---------------------------------------------------------------- tables and resources


def _readable_tables(user) -> list[str]:
    return [str(ref) for ref in node().catalogue.list() if user.can_read(ref.project)]


@bp.get("/tables")
def list_tables():
    note(action="tables")
    user, _ = _caller(need_session=False)
    return jsonify(_readable_tables(user))


@bp.route("/tables/<project>/<folder>/<table>", methods=["HEAD"])
def table_exists(project, folder, table):
    note(action="table-exists", table=f"{project}/{folder}/{table}"[:300])
    user, _ = _caller(need_session=False)
    name = f"{project}/{folder}/{table}"
    if TABLE_RE.fullmatch(name) and user.can_read(project) and node().catalogue.exists(name):
        return Response(status=200)
    return Response(status=404)


@bp.post("/load-table")
def load_table():
    note(action="load-table")
    user, session = _caller()
    table = request.args.get("table", "")
    symbol = request.args.get("symbol", "")
    variables = request.args.get("variables")
    sync = not parse_bool("async")
    note(table=table[:300], symbol=symbol[:100])
    check_symbol(symbol)
    match = TABLE_RE.fullmatch(table)
    if not match:
        raise BadRequest(f"Invalid table name '{table[:100]}': expected project/folder/table.")
    names = None
    if variables is not None and variables.strip():
        if not SYMBOL_CSV_RE.fullmatch(variables.replace(" ", "")):
            raise BadRequest("Invalid variables: give a comma-separated list of column names.")
        names = [v.strip() for v in variables.split(",") if v.strip()]
    project, folder, name = match.groups()
    missing = NotFound(f"Project '{project}' has no object '{folder}/{name}'")
    if not user.can_read(project):
        raise missing
    try:
        node().catalogue.resolve(table)
    except NotFound:
        raise missing from None
    cmd = session.assign_table(symbol, table, names, wait=False)
    note(command=str(cmd.id))
    return _finish_sync(cmd, value=False) if sync else _created()


@bp.get("/resources")
def list_resources():
    note(action="resources")
    _caller(need_session=False)
    return jsonify([])


@bp.route("/resources/<project>/<folder>/<resource>", methods=["HEAD"])
def resource_exists(project, folder, resource):
    note(action="resource-exists")
    _caller(need_session=False)
    return Response(status=404)


@bp.post("/load-resource")
def load_resource():
    note(action="load-resource")
    _caller()
    resource = request.args.get("resource", "")
    check_symbol(request.args.get("symbol"))
    if not TABLE_RE.fullmatch(resource):
        raise BadRequest(f"Invalid resource name '{resource[:100]}'.")
    raise NotFound(f"Resource not found: this node has no resources ('{resource}').")


# ---------------------------------------------------------------- commands


@bp.post("/symbols/<symbol>")
def assign_symbol(symbol):
    note(action="assign")
    _, session = _caller()
    check_symbol(symbol)
    expression = read_body()
    sync = not parse_bool("async")
    note(symbol=symbol, expression=expression)
    cmd = session.assign_expr(symbol, expression, wait=False)
    note(command=str(cmd.id))
    return _finish_sync(cmd, value=False) if sync else _created()


@bp.post("/execute")
def execute():
    note(action="execute")
    _, session = _caller()
    expression = read_body()
    sync = not parse_bool("async")
    note(expression=expression)
    cmd = session.aggregate(expression, fmt="rds", wait=False)
    note(command=str(cmd.id))
    return _finish_sync(cmd, value=True) if sync else _created()


@bp.get("/lastcommand")
def last_command():
    note(action="lastcommand")
    _, session = _caller()
    cmd = session.last_command
    if cmd is None:
        raise NotFound("No command has been run in this session.")
    note(command=str(cmd.id))
    if cmd.done and command_outcome(cmd) == "blocked":
        # The client learns of the refusal here (async commands): on record as such.
        note(outcome="blocked", expression=cmd.expression, message=cmd.message)
    return jsonify(_command_json(cmd))


@bp.get("/lastresult")
def last_result():
    note(action="lastresult")
    _, session = _caller()
    cmd = session.last_command
    if cmd is None:
        raise NotFound("No command has been run in this session.")
    note(command=str(cmd.id), expression=cmd.expression)
    cmd.wait(_wait_timeout())
    if cmd.status == "FAILED":
        note(outcome=command_outcome(cmd), message=cmd.message)
        raise NotFound("The last command failed: see /lastcommand.")
    if cmd.status != "COMPLETED":
        raise NotFound("The last command has not finished.")
    if not cmd.with_result or cmd.result is None:
        raise NotFound("The last command has no value (an assignment).")
    note(outcome=command_outcome(cmd), message=cmd.message)
    return Response(cmd.result, status=200, mimetype="application/octet-stream")


@bp.get("/symbols")
def list_symbols():
    note(action="symbols")
    _, session = _caller()
    return jsonify(list(session.symbols()))


@bp.delete("/symbols/<symbol>")
def remove_symbol(symbol):
    note(action="rm-symbol")
    _, session = _caller()
    check_symbol(symbol)
    note(symbol=symbol)
    try:
        session.remove_symbol(symbol)
    except NotFound:
        pass  # as R's rm() of a missing object: a warning, not an error
    return Response(status=200)


# ---------------------------------------------------------------- configuration


@bp.get("/methods/<kind>")
def list_methods(kind):
    note(action=f"methods-{kind}"[:40])
    _, session = _caller(need_session=False)
    if kind not in ("aggregate", "assign"):
        raise NotFound(f"No such method type: '{kind[:40]}' (use aggregate or assign).")
    methods = node().registry.methods(_profile(session), kind)
    return jsonify(
        [
            {"name": m.name, "function": m.function, "package": m.package, "version": m.version}
            for m in methods
        ]
    )


def _split_list(field: str | None) -> list[str]:
    return [item.strip() for item in (field or "").split(",") if item.strip()]


@bp.get("/packages")
def list_packages():
    note(action="packages")
    _, session = _caller(need_session=False)
    out = []
    for pkg in node().registry.packages(_profile(session)):
        item = {"name": pkg.name, "version": pkg.version, "built": "", "libPath": ""}
        if pkg.aggregate:
            item["aggregateMethods"] = _split_list(pkg.aggregate)
        if pkg.assign:
            item["assignMethods"] = _split_list(pkg.assign)
        if pkg.options:
            pairs = (opt.partition("=") for opt in _split_list(pkg.options))
            item["options"] = {k.strip(): v.strip() for k, _, v in pairs}
        out.append(item)
    return jsonify(out)


@bp.get("/profiles")
def list_profiles():
    note(action="profiles")
    _, session = _caller(need_session=False)
    return jsonify({"available": list(node().registry.profiles), "current": _profile(session)})


# ---------------------------------------------------------------- workspaces


@bp.get("/workspaces")
def list_workspaces():
    note(action="workspaces")
    user, _ = _caller(need_session=False)
    return jsonify(
        [
            {"name": ws["name"], "lastModified": iso_utc(ws["lastModified"]), "size": ws["size"]}
            for ws in node().sessions.workspaces(user)
        ]
    )


@bp.post("/workspaces/<name>")
def save_workspace(name):
    note(action="save-workspace")
    _, session = _caller()
    check_workspace(name)
    note(workspace=name)
    session.save_workspace(name)
    return Response(status=201)


@bp.delete("/workspaces/<name>")
def delete_workspace(name):
    note(action="delete-workspace")
    user, _ = _caller(need_session=False)
    check_workspace(name)
    note(workspace=name)
    try:
        node().sessions.delete_workspace(user, name)
    except NotFound:
        pass  # Armadillo: "Workspace was removed or did not exist."
    return Response(status=200)


@bp.post("/load-workspace")
def load_workspace():
    note(action="load-workspace")
    _, session = _caller()
    name = check_workspace(request.args.get("id"))
    note(workspace=name)
    session.restore_workspace(name)
    return Response(status=200)


def error_body(err: GatewayError, status: int) -> dict:
    """Spring Boot's error JSON, which Armadillo sends and the R client reads `message` of."""
    reasons = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
    return {
        "timestamp": iso_utc(time.time(), millis=True),
        "status": status,
        "error": reasons.get(status, "Internal Server Error"),
        "message": err.message,
        "path": request.path,
    }
