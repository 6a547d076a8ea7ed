"""HTTP plumbing shared by the Armadillo and Opal faces.

The app factory puts one `NodeServices` in `app.extensions`; views reach it with
`node()`. Views add what the audit log should say about a request with `note(...)`;
the app writes one audit record per request after the response is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from gateway.node.errors import BadRequest

if TYPE_CHECKING:
    from gateway.node.audit import AuditLog
    from gateway.node.auth import Authenticator, User
    from gateway.node.config import NodeConfig

__all__ = [
    "SYMBOL_RE",
    "TABLE_RE",
    "WORKSPACE_RE",
    "NodeServices",
    "check_symbol",
    "check_workspace",
    "iso_utc",
    "node",
    "note",
    "parse_bool",
    "read_body",
]

# Armadillo's patterns (Java regex, ASCII classes), written out for Python.
SYMBOL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]*")
SYMBOL_CSV_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]*(,[A-Za-z0-9][A-Za-z0-9_.]*)*")
WORKSPACE_RE = re.compile(r"[A-Za-z0-9_:-]{1,128}")
TABLE_RE = re.compile(r"([a-z0-9-]{0,55}[a-z0-9])/([A-Za-z0-9_:-]+)/([A-Za-z0-9_:-]+)")
MAX_NAME = 255


@dataclass
class NodeServices:
    config: NodeConfig
    authenticator: Authenticator
    audit: AuditLog
    catalogue: Any  # datasources.TableCatalogue
    registry: Any  # methods.MethodRegistry
    sessions: Any  # sessions.SessionManager
    pool: Any = None  # rpool.RPool, None when the session manager brings its own


def node() -> NodeServices:
    return current_app.extensions["dsgateway"]


def note(**fields: Any) -> None:
    """Add fields to this request's audit record (user, session, expression, ...)."""
    if "audit" not in g:
        g.audit = {}
    for key, value in fields.items():
        if key == "user" and value is not None and not isinstance(value, str):
            g.audit["user"] = value.name
            g.audit["auth"] = getattr(value, "via", None)
        else:
            g.audit[key] = value


def current_user() -> User | None:
    return g.get("user")


def read_body() -> str:
    """The raw request body as text; never form-parsed (select-profile has no type)."""
    try:
        data = request.get_data(cache=True, as_text=False, parse_form_data=False)
    except RequestEntityTooLarge:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        raise BadRequest(f"Request body too large: the limit is {limit} bytes.") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("Request body is not UTF-8 text.") from None


_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0", ""}


def parse_bool(name: str, default: bool = False) -> bool:
    """A boolean query parameter as Spring reads it (`TRUE`, `true`, `1`, ...)."""
    value = request.args.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise BadRequest(f"Query parameter '{name}' must be TRUE or FALSE, not '{value[:40]}'.")


def check_symbol(symbol: str | None, what: str = "symbol") -> str:
    if not symbol:
        raise BadRequest(f"Missing {what}.")
    if len(symbol) > MAX_NAME or not SYMBOL_RE.fullmatch(symbol):
        raise BadRequest(
            f"Invalid {what} '{symbol[:80]}': use letters, digits, '_' and '.', "
            "starting with a letter or digit."
        )
    return symbol


def check_workspace(name: str | None) -> str:
    if not name:
        raise BadRequest("Missing workspace id.")
    if not WORKSPACE_RE.fullmatch(name):
        raise BadRequest("Please use only letters, numbers, dashes, colons or underscores.")
    return name


def iso_utc(value: Any, millis: bool = False) -> str | None:
    """A timestamp (datetime, or seconds since the epoch) as ISO-8601 UTC with a `Z`.

    Armadillo (Jackson, java.time.Instant) writes `2024-05-01T12:34:56.123456Z`.
    """
    if value is None:
        return None
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    spec = "milliseconds" if millis else "microseconds"
    return value.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")


def opal_date(value: Any) -> str | None:
    """Opal's date format (Magma DateTimeType): `2024-05-01T12:34:56.123+0000`."""
    text = iso_utc(value, millis=True)
    return text[:-1] + "+0000" if text and text.endswith("Z") else text
