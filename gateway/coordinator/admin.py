"""The rules of the coordinator's objects that hold whoever asks: the REST API (after
its role checks) and the operator's CLI (`dsgateway coordinator users ...`, acting as
the superuser on the coordinator host) both go through these functions.

Each function changes the session and raises a `CoordinatorError` (BadRequest,
NotFound, Conflict) when the change is not allowed; it never commits: the caller
commits once, so a refused change leaves nothing written.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.coordinator.errors import BadRequest, Conflict, NotFound
from gateway.coordinator.models import Collaboration, Node, Organization, Role, Run, User
from gateway.coordinator.security import API_KEY_PREFIX_LEN, hash_api_key, new_api_key

__all__ = [
    "check_member_removal",
    "check_node_removal",
    "check_role_scope",
    "find_role",
    "new_node",
    "set_node_key",
]


def set_node_key(node: Node) -> str:
    """Give the node a new API key; the key itself is returned, only its hash is kept."""
    key = new_api_key()
    node.api_key_hash = hash_api_key(key)
    node.api_key_prefix = key[:API_KEY_PREFIX_LEN]
    return key


def new_node(org: Organization, collab: Collaboration, spec: dict[str, Any]) -> tuple[Node, str]:
    """A node for `org` in `collab` from a loaded `NodeIn` (name, audience, projects),
    with its API key. Not yet added to a session."""
    if org not in collab.organizations:
        raise BadRequest("That organisation is not a member of the collaboration.")
    name = spec.get("name") or f"node-{org.id}-{collab.id}"
    node = Node(
        name=name,
        organization=org,
        collaboration=collab,
        audience=spec.get("audience") or name,
        projects=sorted(set(spec.get("projects") or [])),
    )
    return node, set_node_key(node)


def check_role_scope(s: Session, user: User, spec: dict[str, Any]) -> None:
    """Whether a role (`name`, `organization_id`, `collaboration_id`) makes sense for
    this user, whoever grants it: the scope exists, an organisation named with a
    collaboration is a member of it, a data steward stands for one organisation."""
    org_id, collab_id = spec.get("organization_id"), spec.get("collaboration_id")
    org = s.get(Organization, org_id) if org_id else None
    if org_id and org is None:
        raise NotFound("No such organisation.")
    collab = s.get(Collaboration, collab_id) if collab_id else None
    if collab_id and collab is None:
        raise NotFound("No such collaboration.")
    if org is not None and collab is not None and org not in collab.organizations:
        raise BadRequest("That organisation is not a member of that collaboration.")
    if spec["name"] == "data_steward" and org_id is None:
        raise BadRequest("A data steward stands for one organisation: give organization_id.")


def find_role(user: User, spec: dict[str, Any]) -> Role | None:
    key = (spec["name"], spec.get("organization_id"), spec.get("collaboration_id"))
    return next(
        (r for r in user.roles if (r.name, r.organization_id, r.collaboration_id) == key), None
    )


def check_member_removal(s: Session, collab: Collaboration, org_id: int) -> Organization:
    """The member organisation to take out of `collab`; refused while it has a node there."""
    org = next((o for o in collab.organizations if o.id == org_id), None)
    if org is None:
        raise NotFound("That organisation is not a member.")
    has_node = s.execute(
        select(Node.id).where(Node.collaboration_id == collab.id, Node.organization_id == org_id)
    ).first()
    if has_node:
        raise Conflict("The organisation has a node in this collaboration: delete it first.")
    return org


def check_node_removal(s: Session, node: Node) -> None:
    """A node with runs stays: its runs and results are the history of tasks."""
    runs = s.execute(select(Run.id).where(Run.node_id == node.id)).first()
    if runs:
        raise Conflict(
            f"Node {node.name!r} has task runs and cannot be removed; rotate its API key "
            "to lock its agent out."
        )
