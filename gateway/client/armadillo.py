"""A `datashield` driver for the Armadillo API (MOLGENIS Armadillo, dsgateway's root face).

It talks to a server exactly as R's DSMolgenisArmadillo 4.x does:

- login: ``POST /select-profile`` with the profile name as the raw body (no
  Content-Type), ``Authorization: Basic`` (user and password, sent only there) or
  ``Authorization: Bearer <token>`` (sent on every call); the server's session cookie
  is kept for the later calls; a workspace to restore is loaded with
  ``POST /load-workspace?id=``;
- commands: ``POST /execute?async=TRUE`` (aggregate) and ``POST /symbols/{S}?async=TRUE``
  (assign), the R expression as a ``text/plain`` body; ``POST /load-table?table=&symbol=
  &async=TRUE[&variables=]``; completion is polled with ``GET /lastcommand`` and the
  value fetched from ``GET /lastresult`` (``Accept: application/octet-stream``: the
  bytes of R's ``serialize()``), which the server answers once the command is done;
  404 there means the command failed (its message is in ``/lastcommand``) or has no
  value;
- ``POST /logout`` on disconnect.

Aggregate results are read with `gateway.client.rds` and handed over as the Python
values the Opal face's JSON gives (see `gateway.client.rds.to_python`), so analysis code
gets the same inputs through this driver as through ``datashield-opal``.
`ArmadilloResult.fetch_r()` gives the R value itself (`gateway.client.rds.RObject`).

Use it by name in a login::

    DSLoginBuilder().add("node1", "https://node1.example.org", user="alice",
                         password="...", driver="gateway.client.ArmadilloDriver")

Armadillo keeps only the last command of a session: a result must be fetched before
the next command is sent on the same connection (`datashield.DSSession` does so).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from typing import Any
from urllib.parse import quote

import requests
from datashield.interface import DSConnection, DSDriver, DSLoginInfo, DSResult, RSession

from gateway.client import rds
from gateway.client.errors import (
    AccessDenied,
    ArmadilloError,
    AuthenticationError,
    BadRequest,
    CommandFailed,
    ConnectionFailed,
    NotFound,
    ProtocolError,
    ServerError,
    UnsupportedOperation,
)

__all__ = ["ArmadilloConnection", "ArmadilloDriver", "ArmadilloRSession", "ArmadilloResult"]

# DSMolgenisArmadillo's mapping of an error status to its kind of error and its words;
# any other error status is a server error.
_STATUS_ERRORS: dict[int, tuple[type[ArmadilloError], str]] = {
    400: (BadRequest, "Bad request"),
    401: (AuthenticationError, "Unauthorized"),
    403: (AccessDenied, "Access denied"),
    404: (NotFound, "Not found"),
}

#: Seconds to wait for an answer (a command's value may take long to compute).
DEFAULT_TIMEOUT = 300.0
_POLL_FIRST = 0.002
_POLL_MAX = 1.0
_RETRIES = 3  # /lastresult: DSMolgenisArmadillo retries (httr::RETRY) on server errors
_JSON_OBJECT = re.compile(r"\{.*\}", re.S)
_OCTETS = {"Accept": "application/octet-stream"}


def _table_path(name: str) -> str | None:
    """An Armadillo table name ``project/folder/table``; Opal's dotted
    ``project.folder.table`` is accepted too. None when the name has two parts."""
    if "/" in name:
        return name
    parts = name.split(".")
    if len(parts) == 3:
        return "/".join(parts)
    return None


class ArmadilloRSession(RSession):
    """The server's R session of a connection. Armadillo starts it at login, so it is
    started and ready as soon as the connection exists, until logout."""

    def __init__(self, connection: ArmadilloConnection):
        self.connection = connection

    def is_started(self) -> bool:
        return not self.connection.closed

    def is_ready(self) -> bool:
        return not self.connection.closed

    def is_pending(self) -> bool:
        return False

    def is_failed(self) -> bool:
        return False

    def is_terminated(self) -> bool:
        return self.connection.closed

    def get_last_message(self) -> str:
        return "logged out" if self.connection.closed else "ready"


class ArmadilloResult(DSResult):
    """The outcome of one command. ``fetch()`` waits for it (the server answers
    ``/lastresult`` when the command is done) and returns the value (None for
    assignments); a failed command raises `CommandFailed` with the node's message."""

    def __init__(self, connection: ArmadilloConnection, expression: str, with_value: bool):
        self.connection = connection
        self.expression = expression
        self.with_value = with_value
        self._sequence = connection._sequence
        self._done = False
        self._r_value: Any = None
        self._value: Any = None

    def is_completed(self) -> bool:
        if self._done:
            return True
        self._check_current()
        status = self.connection._last_command().get("status")
        return status in ("COMPLETED", "FAILED", None)

    def fetch(self) -> Any:
        if not self._done:
            self._r_value = self.connection._last_result(self.expression, self.with_value)
            self._value = rds.to_python(self._r_value) if self.with_value else None
            self._done = True
        return self._value

    def fetch_r(self) -> Any:
        """The value as R wrote it (an `rds.RObject` tree), not converted."""
        self.fetch()
        return self._r_value

    def _check_current(self) -> None:
        if self._sequence != self.connection._sequence:
            raise ArmadilloError(
                "another command was sent on this connection before this result was fetched; "
                "Armadillo keeps only the last command of a session"
            )


class ArmadilloConnection(DSConnection):
    """One logged-in session on an Armadillo-API server (see the module documentation).

    ``ArmadilloConnection(name, url, user=..., password=...)`` or ``token=...``;
    ``profile`` (default ``"default"``), ``restore`` (a workspace to load),
    ``timeout`` (seconds per HTTP request), ``verify`` (TLS verification, as requests).
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        profile: str = "default",
        restore: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        verify: bool | str = True,
    ):
        if not url or not re.match(r"^https?://", url):
            raise ValueError(f"the server URL must start with http:// or https://, not {url!r}")
        self.name = name
        self.url = url.rstrip("/")
        self.user = user
        self.token = token
        self.profile = profile or "default"
        self.timeout = timeout
        self.closed = False
        self._sequence = 0
        self._lock = threading.Lock()
        self._http = requests.Session()
        self._http.verify = verify
        self._rsession = ArmadilloRSession(self)
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"
            login_auth = None
        elif user:
            if not password:
                raise ValueError("give a password with the user name")
            basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            login_auth = f"Basic {basic}"
        else:
            raise ValueError("give a token, or a user name and password")
        headers = {"Authorization": login_auth} if login_auth else {}
        try:
            # the raw profile name, no Content-Type (the server must not form-parse it)
            response = self._request(
                "POST", "/select-profile", data=self.profile.encode(), headers=headers
            )
            if response.status_code == 404:
                raise NotFound(f"Profile not found: '{self.profile}'", status=404)
            self._raise_for_status(response)
            if restore:
                self._checked("POST", "/load-workspace", params={"id": restore})
        except BaseException:
            self._http.close()
            raise

    # ---------------------------------------------------------------- HTTP

    def _request(self, method: str, path: str, **kw) -> requests.Response:
        if self.closed:
            raise ArmadilloError(f"the connection {self.name!r} is closed")
        try:
            return self._http.request(method, self.url + path, timeout=self.timeout, **kw)
        except requests.RequestException as error:
            raise ConnectionFailed(f"{method} {self.url}{path}: {error}") from error

    def _checked(self, method: str, path: str, **kw) -> requests.Response:
        response = self._request(method, path, **kw)
        self._raise_for_status(response)
        return response

    def _raise_for_status(self, response: requests.Response) -> None:
        """DSMolgenisArmadillo's error mapping: 400 (with the server's message), 401,
        403, 404, 500; other error statuses are server errors too."""
        code = response.status_code
        if code < 400:
            return
        message = _message(response)
        where = f"{response.request.method} {response.request.path_url}"
        kind, words = _STATUS_ERRORS.get(code, (ServerError, "Internal server error"))
        raise kind(f"{words}: {message}", server_message=message, status=code, details=where)

    def _json(self, method: str, path: str, **kw) -> Any:
        response = self._checked(method, path, **kw)
        try:
            return response.json()
        except ValueError as error:
            raise ProtocolError(f"{path} did not answer JSON: {response.text[:200]!r}") from error

    # ---------------------------------------------------------------- commands

    def _command(self, path: str, expression: str, params: dict, body: str | None) -> None:
        with self._lock:
            self._sequence += 1
        headers = {"Content-Type": "text/plain"} if body is not None else {}
        response = self._request(
            "POST",
            path,
            params={**params, "async": "TRUE"},
            data=body.encode("utf-8") if body is not None else None,
            headers=headers,
        )
        self._raise_for_status(response)
        if response.status_code not in (200, 201):
            raise ProtocolError(f"{path} answered {response.status_code} to an async command")

    def _last_command(self) -> dict:
        response = self._request("GET", "/lastcommand")
        if response.status_code == 404:
            return {}
        self._raise_for_status(response)
        try:
            return response.json()
        except ValueError as error:
            raise ProtocolError("/lastcommand did not answer JSON") from error

    def _last_result(self, expression: str, with_value: bool) -> Any:
        """The value of the last command (waits for it), or the command's failure."""
        response = None
        for attempt in range(_RETRIES):
            response = self._request("GET", "/lastresult", headers=_OCTETS)
            if response.status_code < 500:
                break
            time.sleep(0.2 * 2**attempt)
        assert response is not None
        if response.status_code == 404:
            self._raise_if_failed(expression)
            if with_value:
                raise ProtocolError(f"{self.name}: the command finished without a value")
            return None
        self._raise_for_status(response)
        if not with_value:
            return None
        if not response.content:
            return None
        return rds.unserialize(response.content)

    def _raise_if_failed(self, expression: str) -> None:
        command = self._last_command()
        if command.get("status") != "FAILED":
            return
        text = command.get("message") or ""
        message = text
        found = _JSON_OBJECT.search(text)
        if found:
            try:
                message = json.loads(found.group(0)).get("message") or text
            except ValueError:
                message = text
        raise CommandFailed(
            message, expression=command.get("expression") or expression, node=self.name
        )

    def _wait(self, result: ArmadilloResult) -> ArmadilloResult:
        result.fetch()
        return result

    # ---------------------------------------------------------------- DSConnection

    def get_name(self) -> str:
        return self.name

    def list_tables(self) -> list:
        return list(self._json("GET", "/tables"))

    def has_table(self, name: str) -> bool:
        path = self._resolve_table(name, must_exist=False)
        if path is None:
            return False
        response = self._request("HEAD", f"/tables/{path}")
        if response.status_code in (403, 404):
            return False
        self._raise_for_status(response)
        return response.status_code == 200

    def _resolve_table(self, name: str, must_exist: bool = True) -> str | None:
        path = _table_path(name)
        if path is not None:
            return path
        parts = name.split(".")
        if len(parts) == 2:  # project.table: the one folder that has it
            matches = [
                t
                for t in self.list_tables()
                if t.split("/")[0] == parts[0] and t.split("/")[-1] == parts[1]
            ]
            if len(matches) == 1:
                return matches[0]
            if must_exist:
                detail = "ambiguous" if matches else "not found"
                raise NotFound(f"Table {name!r}: {detail} (use project/folder/table)", status=404)
            return None
        if must_exist:
            raise BadRequest(f"Table names are project/folder/table, not {name!r}", status=400)
        return None

    def list_table_variables(self, table: str) -> list:
        raise UnsupportedOperation("the Armadillo API has no table variables listing")

    def list_taxonomies(self) -> list:
        raise UnsupportedOperation("the Armadillo API has no taxonomies")

    def search_variables(self, query: str) -> dict:
        raise UnsupportedOperation("the Armadillo API has no variable search")

    def list_resources(self) -> list:
        return list(self._json("GET", "/resources"))

    def has_resource(self, name: str) -> bool:
        path = _table_path(name) or name
        response = self._request("HEAD", f"/resources/{path}")
        if response.status_code in (403, 404):
            return False
        self._raise_for_status(response)
        return response.status_code == 200

    def has_session(self) -> bool:
        return not self.closed

    def start_session(self, asynchronous: bool = True) -> RSession:
        return self._rsession

    def is_session_started(self) -> bool:
        return not self.closed

    def get_session(self) -> RSession:
        return self._rsession

    def assign_table(
        self,
        symbol: str,
        table: str,
        variables: list | None = None,
        missings: bool = False,
        identifiers: str | None = None,
        id_name: str | None = None,
        asynchronous: bool = True,
    ) -> DSResult:
        if identifiers is not None or id_name is not None:
            raise UnsupportedOperation("the Armadillo API has no identifiers mapping")
        params = {"table": self._resolve_table(table), "symbol": symbol}
        if variables:
            params["variables"] = ",".join(str(v) for v in variables)
        expression = f"load-table {params['table']} as {symbol}"
        self._command("/load-table", expression, params, None)
        result = ArmadilloResult(self, expression, with_value=False)
        return result if asynchronous else self._wait(result)

    def assign_resource(self, symbol: str, resource: str, asynchronous: bool = True) -> DSResult:
        params = {"resource": _table_path(resource) or resource, "symbol": symbol}
        expression = f"load-resource {params['resource']} as {symbol}"
        self._command("/load-resource", expression, params, None)
        result = ArmadilloResult(self, expression, with_value=False)
        return result if asynchronous else self._wait(result)

    def assign_expr(self, symbol: str, expr: str, asynchronous: bool = True) -> DSResult:
        self._command(f"/symbols/{quote(symbol, safe='')}", expr, {}, expr)
        result = ArmadilloResult(self, expr, with_value=False)
        return result if asynchronous else self._wait(result)

    def aggregate(self, expr: str, asynchronous: bool = True) -> DSResult:
        self._command("/execute", expr, {}, expr)
        result = ArmadilloResult(self, expr, with_value=True)
        return result if asynchronous else self._wait(result)

    def list_symbols(self) -> list:
        return list(self._json("GET", "/symbols"))

    def rm_symbol(self, name: str) -> None:
        self._checked("DELETE", f"/symbols/{quote(name, safe='')}")

    def list_profiles(self) -> dict:
        response = self._request("GET", "/profiles")
        if response.status_code == 404:
            return {"available": ["default"], "current": "default"}
        self._raise_for_status(response)
        return response.json()

    def list_methods(self, type: str = "aggregate") -> list:
        """Methods as the Opal driver lists them: ``name``, ``class`` (``func``),
        ``value`` (the R function), ``pkg``, ``version``."""
        return [
            {
                "name": m.get("name"),
                "class": "func",
                "value": m.get("function"),
                "pkg": m.get("package"),
                "version": m.get("version"),
            }
            for m in self._json("GET", f"/methods/{quote(type, safe='')}")
        ]

    def list_packages(self) -> list:
        return [
            {"pkg": p.get("name"), "version": p.get("version")}
            for p in self._json("GET", "/packages")
        ]

    def list_workspaces(self) -> list:
        return list(self._json("GET", "/workspaces"))

    def save_workspace(self, name: str) -> list:
        self._checked("POST", f"/workspaces/{quote(name, safe=':')}")
        return self.list_workspaces()

    def restore_workspace(self, name: str) -> list:
        self._checked("POST", "/load-workspace", params={"id": name})
        return self.list_workspaces()

    def rm_workspace(self, name: str) -> list:
        response = self._request("DELETE", f"/workspaces/{quote(name, safe=':')}")
        if response.status_code != 404:
            self._raise_for_status(response)
        return self.list_workspaces()

    def is_async(self) -> dict:
        return {
            "aggregate": True,
            "assign_table": True,
            "assign_resource": True,
            "assign_expr": True,
        }

    def keep_alive(self) -> None:
        try:
            self._request("GET", "/actuator/info")
        except ArmadilloError:
            pass

    def disconnect(self) -> None:
        if self.closed:
            return
        try:
            self._request("POST", "/logout")
        except ArmadilloError:
            pass
        finally:
            self.closed = True
            self._http.close()


class ArmadilloDriver(DSDriver):
    """``driver="gateway.client.ArmadilloDriver"`` in `datashield.DSLoginBuilder.add`."""

    @classmethod
    def new_connection(cls, args: DSLoginInfo, restore: str | None = None) -> DSConnection:
        return ArmadilloConnection(
            args.name,
            args.url,
            user=args.user,
            password=args.password,
            token=args.token,
            profile=args.profile,
            restore=restore,
        )


def _message(response: requests.Response) -> str:
    """The server's message: the JSON body's ``message`` (Spring and dsgateway), else the
    text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason or str(response.status_code)
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return json.dumps(body)[:500]
