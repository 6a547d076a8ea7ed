"""The Opal face: the part of Opal's REST API (under /ws) that DataSHIELD clients use.

Clients: the Python `datashield` + `datashield-opal` packages and R's DSOpal (through
opalr). Credentials: `Authorization: Basic <b64>` (Python, on every request),
`Authorization: X-Opal-Auth <b64>` or a token in `X-Opal-Auth: <token>` (opalr), or
`Authorization: Bearer <jwt>`. opalr sends them ONLY on its login check
(`GET /ws/system/subject-profile/_current`) and then relies on Opal's session cookie
`opalsid`, so that call sets one and later calls may carry just the cookie.

Table names. Opal names a table `datasource.table`; here a datasource is a project and
a table is `folder.table`, so `project.folder.table` names one table. Because the
Python client splits names on dots and keeps the first two parts (in has_table and
list_table_variables), a table can also be named `project.table` when its name is
unique in the project. Datasource listings show the `folder.table` names only.
"""

from __future__ import annotations

import re
import secrets
import struct
import threading
import time

from flask import Blueprint, Response, current_app, g, jsonify, request

from gateway.node.audit_outcomes import command_outcome
from gateway.node.errors import BadRequest, Forbidden, GatewayError, NotFound, Unauthorized
from gateway.node.web import (
    check_symbol,
    check_workspace,
    node,
    note,
    opal_date,
    parse_bool,
    read_body,
)

__all__ = ["bp", "error_body", "rds_character"]

FACE = "opal"
OPAL_VERSION = "5.1.0"  # what we say we are: DSOpal checks >= 4.2 for profiles
CONTEXT = "DataSHIELD"
ENTITY_TYPE = "Participant"

bp = Blueprint("opal", __name__, url_prefix="/ws")


@bp.after_request
def _version_header(response: Response) -> Response:
    response.headers["X-Opal-Version"] = OPAL_VERSION
    return response


COOKIE = "opalsid"  # Opal's session cookie; opalr reads this name from the login answer


class _Logins:
    """opalsid -> user. The cookie is a random 256-bit token issued at a login check made
    with credentials. It lapses after the node's idle timeout without use, and never
    outlives the token it was issued on."""

    MAX = 10_000

    def __init__(self) -> None:
        self._items: dict[str, tuple[object, float]] = {}  # token -> (user, last use)
        self._lock = threading.Lock()

    def add(self, user) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            if len(self._items) >= self.MAX:
                for key in list(self._items)[: self.MAX // 10]:  # the oldest logins
                    del self._items[key]
            self._items[token] = (user, time.monotonic())
        return token

    def get(self, token: str | None, idle: float):
        if not token:
            return None
        with self._lock:
            item = self._items.get(token)
            if item is None:
                return None
            user, used = item
            expires = getattr(user, "expires", None)
            if time.monotonic() - used > idle or (expires is not None and time.time() > expires):
                del self._items[token]
                return None
            self._items[token] = (user, time.monotonic())
            return user

    def pop(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._items.pop(token, None)


def _logins() -> _Logins:
    return current_app.extensions["dsgateway.opal.logins"]


@bp.record_once
def _init(state) -> None:
    state.app.extensions.setdefault("dsgateway.opal.logins", _Logins())


def _caller():
    """Who calls: credentials in a header win; without them, the opalsid cookie."""
    note(face=FACE)
    services = node()
    authorization = request.headers.get("Authorization")
    token = request.headers.get("X-Opal-Auth")
    if authorization:
        user = services.authenticator.from_authorization(authorization)
    elif token:
        user = services.authenticator.from_bearer(token.strip())
    else:
        cookie = request.cookies.get(COOKIE)
        user = _logins().get(cookie, services.config.limits.idle_timeout)
        if user is None:
            if cookie:
                raise Unauthorized("Unknown or expired session: log in again.")
            raise Unauthorized("Authentication required.")
        g.opal_cookie_login = True
    g.user = user
    note(user=user)
    return user


def _session(session_id: str):
    user = _caller()
    session = node().sessions.get(session_id, user)
    note(session=session.id)
    return user, session


def _wants_rds() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "application/octet-stream"])
    return best == "application/octet-stream"


def _wait_timeout() -> float:
    return node().config.limits.command_timeout + 60


# ---------------------------------------------------------------- subject, system


@bp.get("/system/subject-profile/_current")
def subject_profile():
    note(action="login-check")
    user = _caller()
    realm = "dsgateway-token" if getattr(user, "via", "") == "token" else "dsgateway"
    response = jsonify({"principal": user.name, "realm": realm, "groups": [], "otpEnabled": False})
    if not g.get("opal_cookie_login"):
        # opalr's login: later calls carry only this cookie (see the module's docstring).
        response.set_cookie(
            COOKIE,
            _logins().add(user),
            path="/",
            httponly=True,
            samesite="Lax",
            secure=request.is_secure,
        )
    return response


@bp.delete("/auth/session/_current")
@bp.delete("/auth/session/<sid>")
def logout(sid: str = "_current"):
    """Opal's logout; opalr names its session id (the opalsid value) in the path."""
    note(action="logout")
    _caller()
    cookie = request.cookies.get(COOKIE)
    if sid in ("_current", cookie):
        _logins().pop(cookie)
    response = Response(status=200)
    response.delete_cookie(COOKIE, path="/")
    return response


@bp.get("/system/conf/taxonomies")
def taxonomies():
    note(action="taxonomies")
    _caller()
    return jsonify([])


@bp.get("/datasources/variables/_search")
def search_variables():
    note(action="search-variables")
    _caller()
    return jsonify({"totalHits": 0, "hits": []})


# ---------------------------------------------------------------- tables


def _projects(user) -> dict[str, list]:
    """Readable project -> its TableRefs."""
    out: dict[str, list] = {}
    for ref in node().catalogue.list():
        if user.can_read(ref.project):
            out.setdefault(ref.project, []).append(ref)
    return out


def _datasource_json(project: str, refs: list) -> dict:
    return {
        "name": project,
        "link": f"/datasource/{project}",
        "table": [f"{r.folder}.{r.table}" for r in refs],
        "view": [],
        "type": "dsgateway",
    }


def _find_table(user, project: str, name: str):
    """The TableRef named `folder.table`, or `table` if unique in the project."""
    refs = _projects(user).get(project, [])
    if "." in name:
        folder, _, table = name.partition(".")
        found = [r for r in refs if r.folder == folder and r.table == table]
    else:
        found = [r for r in refs if r.table == name]
        if len(found) > 1:
            raise BadRequest(
                f"Table name '{name}' is ambiguous in project '{project}': "
                f"use {project}.<folder>.{name}"
            )
    if not found:
        raise NotFound(f"No such table '{project}.{name}'")
    return found[0]


def _table_from_path(user, path: str):
    """An Opal table path `project.folder.table` or `project.table` -> TableRef."""
    project, sep, rest = path.partition(".")
    if not sep or not rest:
        raise BadRequest(f"Invalid table name '{path[:100]}': expected project.folder.table.")
    if ":" in rest and rest.count(".") < 1:
        raise BadRequest("Assigning a single variable (project.table:variable) is not supported.")
    return _find_table(user, project, rest)


@bp.get("/datasources")
def datasources():
    note(action="tables")
    user = _caller()
    return jsonify([_datasource_json(p, refs) for p, refs in sorted(_projects(user).items())])


@bp.get("/datasource/<project>")
def datasource(project):
    note(action="datasource")
    user = _caller()
    refs = _projects(user).get(project)
    if refs is None:
        raise NotFound(f"No such datasource '{project}'")
    return jsonify(_datasource_json(project, refs))


def _table_json(ref, name: str | None = None) -> dict:
    name = name or f"{ref.folder}.{ref.table}"
    return {
        "name": name,
        "datasourceName": ref.project,
        "entityType": ENTITY_TYPE,
        "link": f"/datasource/{ref.project}/table/{name}",
    }


@bp.get("/datasource/<project>/tables")
def datasource_tables(project):
    note(action="tables")
    user = _caller()
    return jsonify([_table_json(r) for r in _projects(user).get(project, [])])


@bp.get("/datasource/<project>/table/<name>")
def table(project, name):
    note(action="table-exists", table=f"{project}.{name}"[:300])
    user = _caller()
    ref = _find_table(user, project, name)
    return jsonify(_table_json(ref, name))


_VALUE_TYPES = [
    (re.compile(r"^(u?int\d+)$"), "integer"),
    (re.compile(r"^(halffloat|float|double|decimal.*)$"), "decimal"),
    (re.compile(r"^bool$"), "boolean"),
    (re.compile(r"^date\d+.*$"), "date"),
    (re.compile(r"^timestamp.*$"), "datetime"),
]


def _value_type(arrow_type) -> str:
    try:
        from gateway.node.datasources import opal_value_type

        return opal_value_type(arrow_type)
    except ImportError:
        text = str(arrow_type)
        return next((name for rx, name in _VALUE_TYPES if rx.match(text)), "text")


@bp.get("/datasource/<project>/table/<name>/variables")
def variables(project, name):
    note(action="variables", table=f"{project}.{name}"[:300])
    user = _caller()
    ref = _find_table(user, project, name)
    link = f"/datasource/{project}/table/{name}"
    return jsonify(
        [
            {
                "name": column,
                "entityType": ENTITY_TYPE,
                "valueType": _value_type(arrow_type),
                "isRepeatable": False,
                "index": i,
                "link": f"{link}/variable/{column}",
                "parentLink": {"link": link, "rel": ref.project},
            }
            for i, (column, arrow_type) in enumerate(node().catalogue.columns(str(ref)))
        ]
    )


@bp.get("/projects")
def projects():
    note(action="projects")
    user = _caller()
    return jsonify(
        [
            {"name": p, "title": p, "datasource": _datasource_json(p, refs)}
            for p, refs in sorted(_projects(user).items())
        ]
    )


@bp.get("/project/<project>")
def project(project):
    note(action="project")
    user = _caller()
    refs = _projects(user).get(project)
    if refs is None:
        raise NotFound(f"No such project '{project}'")
    return jsonify(
        {"name": project, "title": project, "datasource": _datasource_json(project, refs)}
    )


@bp.get("/project/<project>/resources")
def resources(project):
    note(action="resources")
    user = _caller()
    if project not in _projects(user):
        raise NotFound(f"No such project '{project}'")
    return jsonify([])


@bp.get("/project/<project>/resource/<name>")
def resource(project, name):
    note(action="resource-exists")
    _caller()
    raise NotFound(f"No such resource '{project}.{name}': this node has no resources")


# ---------------------------------------------------------------- sessions


def _wall_clock(value):
    """Session.last_access is time.monotonic(): turn it into a date."""
    if isinstance(value, int | float):
        return time.time() - (time.monotonic() - value)
    return value


def _session_json(session) -> dict:
    last = session.last_command
    busy = last is not None and last.status in ("PENDING", "IN_PROGRESS")
    created = opal_date(session.created)
    return {
        "id": session.id,
        "user": session.user.name,
        "creationDate": created,
        "lastAccessDate": opal_date(_wall_clock(session.last_access)),
        "status": "BUSY" if busy else "WAITING",
        "link": f"/datashield/session/{session.id}",
        "context": CONTEXT,
        "profile": session.profile,
        "cluster": session.profile,
        "server": "dsgateway",
        "currentExecutionTimeMillis": 0,
        "totalExecutionTimeMillis": 0,
        "state": session.state,
        "events": [f"{session.state};{created};Created"],
    }


@bp.get("/datashield/sessions")
def list_sessions():
    note(action="sessions")
    user = _caller()
    return jsonify([_session_json(s) for s in node().sessions.sessions_of(user)])


@bp.post("/datashield/sessions")
def create_session():
    note(action="create-session")
    user = _caller()
    services = node()
    profile = request.args.get("profile") or "default"
    restore = request.args.get("restore")
    note(profile=profile[:100])
    if profile not in services.registry.profiles:
        raise NotFound(f"DataSHIELD profile does not exist: {profile[:100]}")
    if restore:
        check_workspace(restore)
    session = services.sessions.create(user, profile)
    note(session=session.id)
    if restore:
        note(workspace=restore)
        session.restore_workspace(restore)
    response = jsonify(_session_json(session))
    response.status_code = 201
    response.headers["Location"] = f"/ws/datashield/session/{session.id}"
    return response


@bp.delete("/datashield/sessions")
def delete_sessions():
    note(action="close-sessions")
    user = _caller()
    for session in node().sessions.sessions_of(user):
        try:
            node().sessions.close(session.id, user)
        except NotFound:
            pass
    return Response(status=200)


@bp.get("/datashield/session/<session_id>")
def get_session(session_id):
    note(action="session")
    _, session = _session(session_id)
    return jsonify(_session_json(session))


@bp.delete("/datashield/session/<session_id>")
def delete_session(session_id):
    note(action="close-session")
    user, session = _session(session_id)
    save = request.args.get("save")
    if save:
        check_workspace(save)
        note(workspace=save)
        session.save_workspace(save)
    node().sessions.close(session.id, user)
    return Response(status=200)


# ---------------------------------------------------------------- symbols


def rds_character(values: list[str]) -> bytes:
    """R's serialize() of a character vector (XDR, format version 2), built here so
    the symbol list needs no trip to R. Strings are UTF-8 CHARSXPs."""
    out = [b"X\n", struct.pack(">iii", 2, 0x040202, 0x020300)]
    out.append(struct.pack(">ii", 16, len(values)))  # STRSXP, no attributes
    for value in values:
        data = value.encode("utf-8")
        utf8 = any(b > 127 for b in data)
        levels = (1 << 3) if utf8 else (1 << 6)  # UTF8_MASK or ASCII_MASK
        out.append(struct.pack(">ii", 9 | (levels << 12), len(data)))  # CHARSXP
        out.append(data)
    return b"".join(out)


@bp.get("/datashield/session/<session_id>/symbols")
def list_symbols(session_id):
    note(action="symbols")
    _, session = _session(session_id)
    names = list(session.symbols())
    if _wants_rds():
        return Response(rds_character(names), mimetype="application/octet-stream")
    return jsonify(names)


@bp.get("/datashield/session/<session_id>/symbol/<symbol>")
def get_symbol(session_id, symbol):
    note(action="get-symbol")
    _session(session_id)
    raise Forbidden("Reading the value of a symbol is not allowed in DataSHIELD.")


@bp.delete("/datashield/session/<session_id>/symbol/<symbol>")
def remove_symbol(session_id, symbol):
    note(action="rm-symbol")
    _, session = _session(session_id)
    check_symbol(symbol)
    note(symbol=symbol)
    try:
        session.remove_symbol(symbol)
    except NotFound:
        pass  # Opal ignores a missing symbol
    return Response(status=200)


def _assigned(cmd, is_async: bool) -> Response:
    if is_async:
        return Response(str(cmd.id), status=201, mimetype="text/plain")
    cmd.wait(_wait_timeout())
    if cmd.status != "COMPLETED":
        raise _RuntimeFailure(cmd.message or "The command did not finish.")
    return Response(status=201)


@bp.put("/datashield/session/<session_id>/symbol/<symbol>")
def assign_expr(session_id, symbol):
    if request.mimetype == "application/x-opal":
        # DSOpal assigns a table this way: the body is its name, not R code.
        return assign_table(session_id, symbol, read_body().strip())
    note(action="assign")
    _, session = _session(session_id)
    check_symbol(symbol)
    expression = read_body()
    is_async = parse_bool("async")
    note(symbol=symbol, expression=expression)
    cmd = session.assign_expr(symbol, expression, wait=False)
    note(command=str(cmd.id))
    return _assigned(cmd, is_async)


# Magma's `name().any("a","b")` (or `name.any(...)`) over plain double- or single-quoted
# names; nothing else of Magma's JavaScript filters is understood.
_NAME_ANY = re.compile(r"\s*name\s*(?:\(\s*\))?\s*\.\s*any\s*\((.*)\)\s*", re.DOTALL)
_QUOTED = r"\s*(?:\"([A-Za-z0-9_.]+)\"|'([A-Za-z0-9_.]+)')\s*"
_QUOTED_LIST = re.compile(rf"{_QUOTED}(?:,{_QUOTED})*")
_ONE_QUOTED = re.compile(_QUOTED)


def _variables_filter(value: str | None) -> list[str] | None:
    """The Python client's `name.any("a","b")` variable filter -> ["a", "b"]."""
    if value is None or not value.strip():
        return None
    match = _NAME_ANY.fullmatch(value)
    if not match or not _QUOTED_LIST.fullmatch(match.group(1)):
        raise BadRequest(
            'Unsupported variables filter: use name.any("a","b") with plain column names.'
        )
    names = [a or b for a, b in _ONE_QUOTED.findall(match.group(1))]
    for name in names:
        check_symbol(name, "variable name")
    return names


@bp.put("/datashield/session/<session_id>/symbol/<symbol>/table/<path>")
def assign_table(session_id, symbol, path):
    note(action="load-table")
    user, session = _session(session_id)
    check_symbol(symbol)
    is_async = parse_bool("async")
    note(symbol=symbol, table=path[:300])
    names = _variables_filter(request.args.get("variables"))
    ref = _table_from_path(user, path)
    note(table=str(ref))
    cmd = session.assign_table(symbol, str(ref), names, wait=False)
    note(command=str(cmd.id))
    return _assigned(cmd, is_async)


@bp.put("/datashield/session/<session_id>/symbol/<symbol>/resource/<path>")
def assign_resource(session_id, symbol, path):
    note(action="load-resource")
    _session(session_id)
    check_symbol(symbol)
    raise NotFound(f"No such resource '{path[:100]}': this node has no resources")


# ---------------------------------------------------------------- aggregate, commands


class _RuntimeFailure(GatewayError):
    """An R error in a synchronous call: Opal answers 400 RServerRuntimeError."""

    status = 400
    key = "RServerRuntimeError"


@bp.post("/datashield/session/<session_id>/aggregate")
def aggregate(session_id):
    note(action="execute")
    _, session = _session(session_id)
    expression = read_body()
    is_async = parse_bool("async")
    fmt = "rds" if _wants_rds() else "json"
    note(expression=expression)
    cmd = session.aggregate(expression, fmt=fmt, wait=False)
    note(command=str(cmd.id))
    if is_async:
        return Response(str(cmd.id), status=200, mimetype="text/plain")
    cmd.wait(_wait_timeout())
    if cmd.status != "COMPLETED":
        note(outcome=command_outcome(cmd), message=cmd.message)
        raise _RuntimeFailure(cmd.message or "The command did not finish.")
    return _result_response(cmd)


def _result_response(cmd) -> Response:
    result = cmd.result
    if result is None:
        return Response(status=204)
    note(outcome=command_outcome(cmd), message=cmd.message)
    if isinstance(result, bytes | bytearray):
        return Response(bytes(result), status=200, mimetype="application/octet-stream")
    return Response(result, status=200, mimetype="application/json")


def _command_json(cmd) -> dict:
    out = {
        "id": str(cmd.id),
        "script": cmd.expression,
        "status": cmd.status,
        "createDate": opal_date(cmd.create_date),
        "withResult": bool(cmd.with_result),
    }
    if cmd.start_date is not None:
        out["startDate"] = opal_date(cmd.start_date)
    if cmd.end_date is not None:
        out["endDate"] = opal_date(cmd.end_date)
    if cmd.status == "FAILED":
        out["error"] = cmd.message or "Unknown error"
    return out


def _command(session, rid: str):
    cmd = session.commands.get(rid)
    if cmd is None:
        raise NotFound(f"No such command '{rid[:80]}' in this session")
    note(command=str(cmd.id))
    return cmd


@bp.get("/datashield/session/<session_id>/commands")
def list_commands(session_id):
    note(action="commands")
    _, session = _session(session_id)
    return jsonify([_command_json(c) for c in list(session.commands.values())])


@bp.get("/datashield/session/<session_id>/command/<rid>")
def get_command(session_id, rid):
    note(action="command")
    _, session = _session(session_id)
    cmd = _command(session, rid)
    if parse_bool("wait"):
        cmd.wait(_wait_timeout())
    if cmd.done and command_outcome(cmd) == "blocked":
        # The client learns of the refusal here (async commands): on record as such.
        note(outcome="blocked", expression=cmd.expression, message=cmd.message)
    return jsonify(_command_json(cmd))


def _forget(session, rid: str) -> None:
    session.remove_command(rid)


@bp.delete("/datashield/session/<session_id>/command/<rid>")
def delete_command(session_id, rid):
    note(action="rm-command")
    _, session = _session(session_id)
    _forget(session, rid)
    return Response(status=200)


@bp.get("/datashield/session/<session_id>/command/<rid>/result")
def command_result(session_id, rid):
    note(action="result")
    _, session = _session(session_id)
    cmd = _command(session, rid)
    note(expression=cmd.expression)
    if cmd.status in ("PENDING", "IN_PROGRESS"):
        if not parse_bool("wait"):
            return Response(status=204)
        cmd.wait(_wait_timeout())
    if cmd.status == "FAILED":
        note(outcome=command_outcome(cmd), message=cmd.message)
        raise _RuntimeFailure(cmd.message or "The command failed.")
    response = _result_response(cmd) if cmd.with_result else Response(status=204)
    if parse_bool("rm", default=True):
        _forget(session, rid)
    return response


# ---------------------------------------------------------------- workspaces


@bp.post("/datashield/session/<session_id>/workspaces")
def save_workspace(session_id):
    note(action="save-workspace")
    _, session = _session(session_id)
    name = check_workspace(request.args.get("save"))
    note(workspace=name)
    session.save_workspace(name)
    return Response(status=200)


@bp.put("/datashield/session/<session_id>/workspace/<name>")
def restore_workspace(session_id, name):
    note(action="load-workspace")
    _, session = _session(session_id)
    check_workspace(name)
    note(workspace=name)
    session.restore_workspace(name)
    return Response(status=200)


def _workspace_owner():
    user = _caller()
    context = request.args.get("context", CONTEXT)
    if context != CONTEXT:
        raise BadRequest(f"Only the {CONTEXT} context exists here, not '{context[:40]}'.")
    owner = request.args.get("user", user.name)
    if owner != user.name:
        raise Forbidden("You can only see and remove your own workspaces.")
    return user


@bp.get("/service/r/workspaces")
def list_workspaces():
    note(action="workspaces")
    user = _workspace_owner()
    wanted = request.args.get("name")
    return jsonify(
        [
            {
                "name": ws["name"],
                "user": user.name,
                "lastAccessDate": opal_date(ws["lastModified"]),
                "context": CONTEXT,
                "size": ws["size"],
            }
            for ws in node().sessions.workspaces(user)
            if wanted is None or ws["name"] == wanted
        ]
    )


@bp.delete("/service/r/workspaces")
def delete_workspaces():
    note(action="delete-workspace")
    user = _workspace_owner()
    name = request.args.get("name")
    if name:
        targets = [check_workspace(name)]
    else:
        targets = [w["name"] for w in node().sessions.workspaces(user)]
    for target in targets:
        note(workspace=target)
        try:
            node().sessions.delete_workspace(user, target)
        except NotFound:
            pass  # already gone: Opal answers 200 too
    return Response(status=200)


# ---------------------------------------------------------------- configuration


def _profile_json(name: str) -> dict:
    return {
        "name": name,
        "cluster": name,
        "enabled": True,
        "restrictedAccess": False,
        "rParser": "v2",
    }


@bp.get("/datashield/profiles")
def profiles():
    note(action="profiles")
    _caller()
    return jsonify([_profile_json(p) for p in node().registry.profiles])


@bp.get("/datashield/profile/<name>")
def profile(name):
    note(action="profile")
    _caller()
    if name not in node().registry.profiles:
        raise NotFound(f"DataSHIELD profile does not exist: {name[:100]}")
    return jsonify(_profile_json(name))


def _method_json(m) -> dict:
    return {
        "name": m.name,
        "DataShield.RFunctionDataShieldMethodDto.method": {
            "func": m.function,
            "rPackage": m.package,
            "version": m.version,
        },
    }


def _methods(kind: str):
    if kind not in ("aggregate", "assign"):
        raise NotFound(f"No such method type: '{kind[:40]}' (use aggregate or assign).")
    name = request.args.get("profile") or "default"
    if name not in node().registry.profiles:
        raise NotFound(f"DataSHIELD profile does not exist: {name[:100]}")
    return node().registry.methods(name, kind)


@bp.get("/datashield/env/<kind>/methods")
def methods(kind):
    note(action=f"methods-{kind}"[:40])
    _caller()
    return jsonify([_method_json(m) for m in _methods(kind)])


@bp.get("/datashield/env/<kind>/method/<name>")
def method(kind, name):
    note(action=f"method-{kind}"[:40])
    _caller()
    for m in _methods(kind):
        if m.name == name:
            return jsonify(_method_json(m))
    raise NotFound(f"No such DataSHIELD '{kind.upper()}' method with name: {name[:80]}")


@bp.get("/datashield/packages")
def packages():
    note(action="packages")
    _caller()
    name = request.args.get("profile") or "default"
    if name not in node().registry.profiles:
        raise NotFound(f"DataSHIELD profile does not exist: {name[:100]}")
    out = []
    for pkg in node().registry.packages(name):
        description = [
            {"key": "Package", "value": pkg.name},
            {"key": "Version", "value": pkg.version},
        ]
        for key, value in (
            ("AggregateMethods", pkg.aggregate),
            ("AssignMethods", pkg.assign),
            ("Options", pkg.options),
        ):
            if value:
                description.append({"key": key, "value": value})
        out.append(
            {"name": pkg.name, "description": description, "cluster": name, "rserver": "dsgateway"}
        )
    return jsonify(out)


# ---------------------------------------------------------------- errors


def error_body(err: GatewayError, status: int) -> dict:
    """Opal's ClientErrorDto; opalr shows `arguments`, the Python client keeps the dict."""
    key = getattr(err, "key", None)
    if key is None:
        from gateway.node.errors import ExpressionRefused

        if isinstance(err, ExpressionRefused):
            key = "DataShieldParseError"
        else:
            key = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}.get(
                status, "BadRequest" if status < 500 else "InternalServerError"
            )
    return {"code": status, "status": key, "arguments": [err.message], "message": err.message}
