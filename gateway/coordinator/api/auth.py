"""Login, token refresh, logout, who am I, and relay tokens for one node."""

from __future__ import annotations

from flask import Blueprint, current_app
from sqlalchemy import select

from gateway.coordinator import audit, db
from gateway.coordinator.api.endpoint import endpoint
from gateway.coordinator.app import services
from gateway.coordinator.authz import current_user
from gateway.coordinator.errors import NotFound, Unauthorized
from gateway.coordinator.models import Node, User, utcnow
from gateway.coordinator.schemas import (
    LoginIn,
    RefreshIn,
    RelayKeyOut,
    RelayTokenIn,
    RelayTokenOut,
    TokenOut,
    UserOut,
)
from gateway.coordinator.security import check_password

bp = Blueprint("auth", __name__)
BAD_CREDENTIALS = "Invalid username or password."


def _tokens_for(user: User) -> dict:
    tokens = services().tokens
    return {
        "access_token": tokens.access_token(user),
        "refresh_token": tokens.refresh_token(user),
        "token_type": "Bearer",
        "expires_in": tokens.access_ttl,
    }


@bp.post("/auth/login")
@endpoint(auth="none", body=LoginIn, response=TokenOut, summary="Log in with a password")
def login(body):
    s = db.session()
    user = s.execute(select(User).where(User.username == body["username"])).scalar()
    method = current_app.config["PASSWORD_HASH_METHOD"]
    ok = check_password(user.password_hash if user else None, body["password"], method)
    if not ok or user is None or not user.active:
        audit.record_now(
            "auth.login",
            outcome="refused",
            actor_type="user",
            actor_name=body["username"][:128],
            actor_id=user.id if user else None,
        )
        raise Unauthorized(BAD_CREDENTIALS)
    user.last_login = utcnow()
    audit.record(
        "auth.login",
        user,
        actor_type="user",
        actor_id=user.id,
        actor_name=user.username,
        organization_id=user.organization_id,
    )
    db.commit()
    return _tokens_for(user)


@bp.post("/auth/refresh")
@endpoint(auth="none", body=RefreshIn, response=TokenOut, summary="New tokens for a refresh token")
def refresh(body):
    claims = services().tokens.decode(body["refresh_token"], "refresh")
    user = db.session().get(User, int(claims["sub"]))
    if user is None or not user.active or claims.get("gen") != user.token_generation:
        raise Unauthorized("Invalid or expired token.")
    return _tokens_for(user)


@bp.post("/auth/logout")
@endpoint(status=204, summary="Revoke every refresh token of the caller")
def logout():
    user = current_user().user
    user.token_generation += 1
    audit.record("auth.logout", user)
    db.commit()


@bp.get("/auth/me")
@endpoint(response=UserOut, summary="The caller, with her roles")
def me():
    return current_user().user


@bp.post("/auth/relay-token")
@endpoint(
    body=RelayTokenIn,
    response=RelayTokenOut,
    errors=(403, 404),
    summary="A token for one node's gateway, scoped to the caller and the node's collaboration",
)
def relay_token(body):
    """For a researcher of the node's collaboration. The node's gateway accepts it as a
    Bearer token (`iss`, `aud`, `exp`, `sub` = user name, `projects`)."""
    principal = current_user()
    node = db.session().get(Node, body["node_id"])
    if node is None:
        raise NotFound("No such node.")
    try:
        principal.require_in(node.collaboration, {"researcher"})
    except NotFound:
        raise NotFound("No such node.") from None
    svc = services().tokens
    token = svc.relay_token(principal.user, node)
    audit.record(
        "relay.token",
        node,
        collaboration_id=node.collaboration_id,
        detail={"projects": sorted(node.projects or [])},
    )
    db.commit()
    return {
        "token": token,
        "token_type": "Bearer",
        "expires_in": svc.relay_ttl,
        "issuer": svc.relay_issuer,
        "audience": node.audience,
        "node_id": node.id,
        "collaboration_id": node.collaboration_id,
        "projects": sorted(node.projects or []),
    }


@bp.get("/auth/relay-key")
@endpoint(auth="none", response=RelayKeyOut, errors=(404,), summary="How nodes verify relay tokens")
def relay_key():
    svc = services().tokens
    if svc.relay_key is None:
        raise NotFound("Relay tokens are not configured.")
    return {
        "issuer": svc.relay_issuer,
        "algorithm": svc.relay_key.algorithm,
        "public_key": svc.relay_key.public_pem,
    }
