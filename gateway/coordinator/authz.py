"""Who is calling, and what their roles let them do.

A role is held over a scope:
- a collaboration (`collaboration_id` set): that collaboration only (with
  `organization_id` also set, it acts for that organisation inside it: a data steward of
  hospital A in study S manages A's node of S);
- an organisation (only `organization_id`): the organisation itself and every
  collaboration it is a member of;
- everything (neither): only meaningful for `admin`, the superuser.

What each role may do is written next to each endpoint (`require_*` calls) and
summarised in docs/coordinator.md. Anything not granted is refused; a collaboration the
caller has no role in is answered as if it did not exist (404), so nothing of it leaks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from flask import current_app, g, request
from sqlalchemy import bindparam, select

from gateway.coordinator import db
from gateway.coordinator.errors import Forbidden, NotFound, Unauthorized
from gateway.coordinator.liveness import touch_node
from gateway.coordinator.models import Collaboration, Node, Organization, Role, User
from gateway.coordinator.security import hash_api_key

__all__ = [
    "ANY_ROLE",
    "Principal",
    "authenticate_node",
    "authenticate_user",
    "current_node",
    "current_user",
]

ANY_ROLE = frozenset({"admin", "researcher", "data_steward"})
_NODE_BY_KEY = select(Node).where(Node.api_key_hash == bindparam("key_hash"))


@dataclass
class Principal:
    """A user with her roles, and the collaborations each role reaches."""

    user: User
    roles: list[Role] = field(default_factory=list)

    @property
    def is_superuser(self) -> bool:
        return any(
            r.name == "admin" and r.organization_id is None and r.collaboration_id is None
            for r in self.roles
        )

    def _role_reaches(self, role: Role, collab: Collaboration) -> bool:
        if role.collaboration_id is not None:
            return role.collaboration_id == collab.id
        if role.organization_id is not None:
            return any(o.id == role.organization_id for o in collab.organizations)
        return True

    def roles_in(self, collab: Collaboration) -> set[str]:
        return {r.name for r in self.roles if self._role_reaches(r, collab)}

    def roles_for_org(self, organization_id: int) -> set[str]:
        """Roles over the organisation itself (not one of its collaborations)."""
        return {
            r.name
            for r in self.roles
            if r.collaboration_id is None
            and (r.organization_id is None or r.organization_id == organization_id)
        }

    def administers(self, collab: Collaboration) -> bool:
        """The superuser, or an admin whose role is scoped to exactly this collaboration."""
        return self.is_superuser or any(
            r.name == "admin" and r.collaboration_id == collab.id and r.organization_id is None
            for r in self.roles
        )

    def steward_of(self, node: Node) -> bool:
        """Admin or data steward over this node's organisation, in its collaboration."""
        for r in self.roles:
            if r.name not in ("admin", "data_steward"):
                continue
            if r.organization_id is None and r.collaboration_id is None:
                return True
            org_ok = r.organization_id in (None, node.organization_id)
            collab_ok = r.collaboration_id in (None, node.collaboration_id)
            if r.organization_id is None and r.name == "data_steward":
                org_ok = False  # a steward always stands for one organisation
            if org_ok and collab_ok:
                return True
        return False

    def visible_collaboration_ids(self) -> set[int] | None:
        """None: all of them (superuser)."""
        if self.is_superuser:
            return None
        ids = {r.collaboration_id for r in self.roles if r.collaboration_id is not None}
        org_ids = {
            r.organization_id
            for r in self.roles
            if r.collaboration_id is None and r.organization_id is not None
        }
        if org_ids:
            rows = db.session().execute(
                select(Collaboration.id)
                .join(Collaboration.organizations)
                .where(Organization.id.in_(org_ids))
            )
            ids.update(rows.scalars())
        return ids

    # -------------------------------------------------- checks that raise

    def require_superuser(self) -> None:
        if not self.is_superuser:
            raise Forbidden("Only an administrator may do this.")

    def require_in(self, collab: Collaboration | None, names: Iterable[str] = ANY_ROLE) -> None:
        """The collaboration must exist and be visible (404 otherwise); the caller must
        hold one of `names` in it (403 otherwise)."""
        if collab is None:
            raise NotFound("No such collaboration.")
        held = self.roles_in(collab)
        if not held:
            raise NotFound("No such collaboration.")
        if not held & set(names):
            raise Forbidden(f"This needs the role {' or '.join(sorted(names))} here.")


# ------------------------------------------------------------------ authentication


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Log in first: send Authorization: Bearer <access token>.")
    return token.strip()


def authenticate_user() -> Principal:
    tokens = current_app.extensions["dsgateway_coordinator"].tokens
    claims = tokens.decode(_bearer(), "access")
    user = db.session().get(User, int(claims["sub"]))
    if user is None or not user.active:
        raise Unauthorized("Invalid or expired token.")
    principal = Principal(user, list(user.roles))
    g.principal = principal
    return principal


def current_user() -> Principal:
    principal = g.get("principal")
    if principal is None:
        raise Unauthorized("Log in first.")
    return principal


def authenticate_node() -> Node:
    key = request.headers.get("X-Api-Key") or ""
    if not key:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "apikey":
            key = value.strip()
    if not key:
        raise Unauthorized("Send the node's API key in X-Api-Key.")
    s = db.session()
    node = s.execute(_NODE_BY_KEY, {"key_hash": hash_api_key(key)}).scalar()
    if node is None:
        raise Unauthorized("Invalid API key.")
    touch_node(node)
    g.node = node
    return node


def current_node() -> Node:
    node = g.get("node")
    if node is None:
        raise Unauthorized("Send the node's API key in X-Api-Key.")
    return node
