"""The relay listener: a Flask app of its own (its own port), sharing the coordinator's
settings, database and relay hub.

- Armadillo API at the root: R's DSMolgenisArmadillo builds absolute paths, so no path
  prefix can name the node; the bearer relay token does (its `node` claim).
- Opal API under `/nodes/<node_id>/ws/...` (Opal clients take a base URL with a path);
  the token must be for that node. R's opalr sends the token only on its login check,
  then only cookies: the relay sets its own session cookie (cookie.py), from which a
  later call's token is taken and checked exactly as one sent in a header.

Every call: the relay token is verified (signature, issuer, expiry, audience = the
node's, the collaboration is the node's, the user exists, is active and is still a
researcher of the collaboration) and the node's agent must be connected; otherwise the
answer is 401/403/404/500 in the face's own error format. Then the request (method,
path, query, body, and the headers DataSHIELD needs, including the same bearer token:
the node's gateway verifies it again) goes to the node's agent through the hub, and the
gateway's answer comes back unchanged (status, body, Content-Type, Set-Cookie,
Location). Every call is audited here (`relay.call`, by auditor.py's thread: with the
expression of the calls that carry one and the size of the answer) and at the node by
its gateway.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from flask import Flask, Response, jsonify, request
from sqlalchemy import select

from gateway.coordinator import audit, db
from gateway.coordinator.authz import Principal
from gateway.coordinator.models import Node, User
from gateway.coordinator.relay.auditor import CallAuditor, call_detail, relayed_outcome
from gateway.coordinator.relay.cookie import COOKIE, CookieSealer, cookie_path

__all__ = ["Grant", "RelayRefused", "create_relay_app"]

log = logging.getLogger(__name__)

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
# What is carried to the node, and back.
REQUEST_HEADERS = ("Authorization", "X-Opal-Auth", "Cookie", "Content-Type", "Accept")
RESPONSE_HEADERS = frozenset(
    {
        "content-type",
        "set-cookie",
        "location",
        "x-opal-version",
        "www-authenticate",
        "content-disposition",
    }
)
_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


@dataclass(frozen=True)
class Grant:
    """What a verified relay token allows: this user, on this node."""

    user_id: int
    user_name: str
    organization_id: int
    node_id: int
    node_name: str
    collaboration_id: int
    expires: float = 0.0  # the token's `exp` (epoch seconds)


class RelayRefused(Exception):
    def __init__(self, status: int, message: str, **audit_fields: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.audit_fields = audit_fields


def _error(face: str, status: int, message: str) -> Response:
    """The face's own error JSON: Spring Boot's for Armadillo (the R client reads
    `message`), Opal's ClientErrorDto for Opal."""
    if face == "opal":
        key = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}.get(
            status, "BadRequest" if status < 500 else "InternalServerError"
        )
        body = {"code": status, "status": key, "arguments": [message], "message": message}
    else:
        body = {
            "timestamp": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "status": status,
            "error": _REASONS.get(status, "Internal Server Error"),
            "message": message,
            "path": request.path,
        }
    response = jsonify(body)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="dsgateway-relay"'
    return response


def _token(face: str) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if face == "opal" and request.headers.get("X-Opal-Auth", "").strip():
        return request.headers["X-Opal-Auth"].strip()
    return None


def _without_relay_cookie(header: str) -> str:
    """The client's Cookie header less the relay's own cookie: the node gets the token
    in Authorization, never the sealed cookie."""
    kept = [
        part.strip()
        for part in header.split(";")
        if part.strip() and part.split("=", 1)[0].strip() != COOKIE
    ]
    return "; ".join(kept)


def _node_cookie_path(set_cookie: str, node_id: int) -> str:
    """A node gateway's Set-Cookie on the Opal face, its Path moved under the node's
    prefix: the cookies of two nodes behind one relay host never meet in a jar."""
    parts = set_cookie.split(";")
    for i, part in enumerate(parts[1:], start=1):
        name, _, value = part.strip().partition("=")
        if name.lower() == "path":
            value = value.strip()
            if value == "/" or value.startswith("/ws"):
                inner = "" if value == "/" else value[len("/ws") :]
                parts[i] = f" Path={cookie_path(node_id)}{inner}"
    return ";".join(parts)


def _is_logout(face: str, method: str, path: str) -> bool:
    return face == "opal" and method == "DELETE" and path.startswith("/ws/auth/session")


def create_relay_app(coordinator_app: Flask) -> Flask:
    from gateway.coordinator.app import services
    from gateway.coordinator.relay import hub_of
    from gateway.coordinator.relay.hub import NodeLost

    app = Flask("gateway.coordinator.relay")
    app.config["MAX_CONTENT_LENGTH"] = coordinator_app.config.get("MAX_CONTENT_LENGTH")
    app.config["THREADS"] = coordinator_app.config["THREADS"]
    app.config["CONNECTION_LIMIT"] = coordinator_app.config["CONNECTION_LIMIT"]
    app.json.sort_keys = False
    cfg = coordinator_app.config
    hub = hub_of(coordinator_app)
    timeout = float(cfg.get("RELAY_TIMEOUT", 600))
    tokens = services(coordinator_app).tokens
    auditor = CallAuditor(coordinator_app)
    app.extensions["relay_auditor"] = auditor
    sealer = CookieSealer(cfg["SECRET_KEY"])

    def verify(token: str, face: str, path_node: int | None) -> tuple[User, Node, dict]:
        key = tokens.relay_key
        if key is None:
            raise RelayRefused(500, "The relay is not configured (no relay signing key).")
        verify_key = key.signing_key
        if not key.algorithm.startswith("HS"):
            verify_key = verify_key.public_key()
        try:
            claims = jwt.decode(
                token,
                verify_key,
                algorithms=[key.algorithm],
                issuer=tokens.relay_issuer,
                leeway=5,
                options={
                    "verify_aud": False,  # checked below, against the node's audience
                    "require": ["exp", "iss", "aud", "sub", "node", "collaboration"],
                },
            )
        except jwt.ExpiredSignatureError:
            raise RelayRefused(
                401, "The relay token has expired: get a new one (POST /api/auth/relay-token)."
            ) from None
        except jwt.PyJWTError:
            raise RelayRefused(401, "Invalid relay token.") from None
        node_id, collab_id = claims.get("node"), claims.get("collaboration")
        if not isinstance(node_id, int) or not isinstance(collab_id, int):
            raise RelayRefused(401, "Invalid relay token.")
        if path_node is not None and path_node != node_id:
            raise RelayRefused(403, "This relay token is for another node.")
        s = db.session()
        node = s.get(Node, node_id)
        if node is None:
            raise RelayRefused(404, "No such node.")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if node.audience not in audiences:
            raise RelayRefused(401, "Invalid relay token.")
        user = s.execute(select(User).where(User.username == str(claims["sub"]))).scalar()
        if user is None or not user.active:
            raise RelayRefused(401, "Invalid relay token.")
        if node.collaboration_id != collab_id:
            raise RelayRefused(
                403,
                "This relay token is for another collaboration.",
                user_id=user.id,
                node_id=node.id,
            )
        if "researcher" not in Principal(user, list(user.roles)).roles_in(node.collaboration):
            raise RelayRefused(
                403,
                "You are no longer a researcher of this node's collaboration.",
                user_id=user.id,
                node_id=node.id,
            )
        return user, node, claims

    def record(action, outcome, user, node, detail):
        fields: dict[str, Any] = {"detail": detail}
        if user is not None:
            fields.update(
                actor_type="user",
                actor_id=user.id,
                actor_name=user.username,
                organization_id=user.organization_id,
            )
        if node is not None:
            fields["collaboration_id"] = node.collaboration_id
        audit.record(action, node, outcome=outcome, **fields)

    cache_ttl = float(cfg.get("RELAY_AUTH_CACHE", 5))
    # Keyed by the token's digest: no bearer token is kept here in plain form.
    grants: dict[tuple[bytes, int | None], tuple[float, Grant]] = {}
    grants_lock = threading.Lock()

    def grant_for(token: str, face: str, path_node: int | None) -> Grant:
        """verify(), remembered for RELAY_AUTH_CACHE seconds (never past `exp`): a
        session's many /lastcommand polls then cost no database reads. A membership
        taken away takes effect within that time; refusals are never remembered."""
        now = time.monotonic()
        key = (hashlib.sha256(token.encode("utf-8")).digest(), path_node)
        with grants_lock:
            hit = grants.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        user, node, claims = verify(token, face, path_node)
        grant = Grant(
            user.id,
            user.username,
            user.organization_id,
            node.id,
            node.name,
            node.collaboration_id,
            float(claims["exp"]),
        )
        if cache_ttl > 0:
            until = min(now + cache_ttl, now + float(claims["exp"]) - time.time())
            with grants_lock:
                if len(grants) > 10000:
                    grants.clear()
                grants[key] = (until, grant)
        return grant

    def set_relay_cookie(response: Response, token: str, grant: Grant) -> None:
        """After a call authorised by a header token: the cookie opalr's later calls
        carry (unless the one sent already holds this very token)."""
        held = request.cookies.get(COOKIE)
        if held and sealer.open(held, grant.node_id) == token:
            return
        lifetime = int(grant.expires - time.time())
        value = sealer.seal(token, grant.node_id)
        if lifetime <= 0 or value is None:
            return
        response.set_cookie(
            COOKIE,
            value,
            max_age=lifetime,  # never beyond the token's expiry
            path=cookie_path(grant.node_id),
            httponly=True,
            samesite="Strict",
            secure=request.is_secure,
        )

    def clear_relay_cookie(response: Response, node_id: int) -> None:
        response.delete_cookie(
            COOKIE,
            path=cookie_path(node_id),
            httponly=True,
            samesite="Strict",
            secure=request.is_secure,
        )

    def relay(face: str, path: str, path_node: int | None) -> Response:
        token = _token(face)
        from_cookie = False
        logout = _is_logout(face, request.method, path)
        if token is None and face == "opal" and request.cookies.get(COOKIE):
            token = sealer.open(request.cookies[COOKIE], path_node)
            from_cookie = True
        if token is None:
            if face == "armadillo" and path == "/actuator/info":
                return jsonify({"app": "dsgateway relay"})  # no OIDC: the client uses token=
            if not from_cookie:
                return _error(face, 401, "Send a relay token: Authorization: Bearer <token>.")
        started = time.monotonic()
        grant = None
        try:
            if token is None:  # a cookie that does not open: altered, or another node's
                raise RelayRefused(
                    401, "Invalid relay session cookie: log in again with the relay token."
                )
            with coordinator_app.app_context():
                grant = grant_for(token, face, path_node)
                if not hub.connected(grant.node_id):
                    raise RelayRefused(
                        500,
                        f"Node {grant.node_name!r} is offline: its agent is not connected to "
                        "the coordinator. Try again later.",
                    )
        except RelayRefused as err:
            detail = {
                "method": request.method,
                "path": path,
                "status": err.status,
                "message": err.message,
            }
            with coordinator_app.app_context():
                user_id = err.audit_fields.get("user_id")
                node_id = err.audit_fields.get("node_id")
                if grant is not None:
                    user_id, node_id = grant.user_id, grant.node_id
                s = db.session()
                user = s.get(User, user_id) if user_id is not None else None
                node = s.get(Node, node_id) if node_id is not None else None
                record("relay.refused", "refused", user, node, detail)
                db.commit()
            refusal = _error(face, err.status, err.message)
            if from_cookie or logout:  # a cookie that opens nothing is of no more use
                clear_relay_cookie(refusal, path_node)
            return refusal
        body = request.get_data()
        headers = []
        for name in REQUEST_HEADERS:
            value = request.headers.get(name)
            if value is None:
                continue
            if name == "Cookie":
                value = _without_relay_cookie(value)
            elif from_cookie and name in ("Authorization", "X-Opal-Auth"):
                continue  # the cookie's token is the credential: nothing else goes on
            if value:
                headers.append([name, value])
        if from_cookie:
            headers.append(["Authorization", f"Bearer {token}"])
        outgoing = {
            "face": face,
            "method": request.method,
            "path": path,
            "query": request.query_string.decode("latin-1"),
            "headers": headers,
            "body": base64.b64encode(body).decode("ascii"),
            "user": grant.user_name,
            "collaboration_id": grant.collaboration_id,
            "timeout": timeout,
        }
        detail = {"method": request.method, "path": path, "remote": request.remote_addr or ""}
        try:
            answer = hub.call(grant.node_id, outgoing, timeout)
            lost = None
        except NodeLost:
            answer = None
            lost = f"Node {grant.node_name!r} went offline before it answered."
        answer_body = None  # what left the station: none without an answer
        if answer is None:
            status = 500
            message = lost or f"Node {grant.node_name!r} did not answer within {timeout:g} seconds."
            detail["message"] = message
            response = _error(face, 500, message)
        else:
            status = int(answer["status"])
            answer_body = base64.b64decode(answer.get("body") or "")
            response = Response(answer_body, status=status)
            response.headers.remove("Content-Type")
            for name, value in answer.get("headers") or []:
                if name.lower() not in RESPONSE_HEADERS:
                    continue
                if face == "opal" and name.lower() == "location" and value.startswith("/ws"):
                    value = f"/nodes/{grant.node_id}{value}"
                if face == "opal" and name.lower() == "set-cookie":
                    value = _node_cookie_path(value, grant.node_id)
                response.headers.add(name, value)
        if face == "opal":
            if logout:
                clear_relay_cookie(response, grant.node_id)
            elif not from_cookie and status < 400:
                set_relay_cookie(response, token, grant)
        detail["status"] = status
        # The expression (only of the calls that carry one) and the answer's size.
        detail.update(call_detail(face, request.method, path, body, answer_body))
        detail["ms"] = round((time.monotonic() - started) * 1000, 1)
        outcome = relayed_outcome(status, (answer or {}).get("headers"))
        # Written by the auditor's thread: the client does not wait for it.
        auditor.put(grant, detail, outcome)
        return response

    @app.route("/nodes/<int:node_id>/ws", defaults={"path": ""}, methods=METHODS)
    @app.route("/nodes/<int:node_id>/ws/<path:path>", methods=METHODS)
    def opal(node_id: int, path: str):
        return relay("opal", "/ws/" + path if path else "/ws", node_id)

    @app.route("/", defaults={"path": ""}, methods=METHODS)
    @app.route("/<path:path>", methods=METHODS)
    def armadillo(path: str):
        return relay("armadillo", "/" + path, None)

    @app.errorhandler(413)
    def _too_large(_err):
        return _error("armadillo", 400, "Request body too large.")

    @app.errorhandler(Exception)
    def _unexpected(err):
        log.exception("relay error on %s %s", request.method, request.path)
        return _error("armadillo", 500, f"Relay error ({type(err).__name__}).")

    return app
