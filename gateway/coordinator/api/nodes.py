"""Nodes: one per organisation and collaboration, each with its own API key.

A collaboration's admins add and remove nodes; they and the data stewards of the
node's organisation edit it (which projects relay tokens open, the token audience)
and rotate its key. The key is shown once, when made; only its hash is kept.

A node's agent reports its station's profiles and disclosure settings and its own
policy (`PUT /node/settings`, with the node's key: a node only ever writes its own);
everyone with a role in the node's collaboration reads them. They are a copy,
read-only here: the station's node.yaml and agent.yaml are the authority.
"""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import select

from gateway.coordinator import admin, audit, db
from gateway.coordinator.api.collaborations import visible_collaboration
from gateway.coordinator.api.endpoint import endpoint
from gateway.coordinator.api.lookup import get_or_404
from gateway.coordinator.authz import current_node, current_user
from gateway.coordinator.errors import Forbidden, NotFound
from gateway.coordinator.models import Collaboration, Node, NodeSettings, Organization, utcnow
from gateway.coordinator.schemas import (
    NodeIn,
    NodeKeyOut,
    NodeOut,
    NodePatch,
    NodeQuery,
    NodeSettingsAck,
    NodeSettingsIn,
    NodeSettingsOut,
)

bp = Blueprint("nodes", __name__)


def visible_node(node_id: int) -> Node:
    node = db.session().get(Node, node_id)
    if node is None or not current_user().roles_in(node.collaboration):
        raise NotFound("No such node.")
    return node


def _with_key(node: Node, key: str) -> Node:
    node.api_key = key  # for this response only; never stored
    return node


def _may_manage(node: Node) -> None:
    principal = current_user()
    if not (principal.administers(node.collaboration) or principal.steward_of(node)):
        raise Forbidden("Only the collaboration's admins or the node's data stewards may.")


@bp.get("/nodes")
@endpoint(query=NodeQuery, response=NodeOut, many=True, summary="Nodes of visible collaborations")
def list_nodes(query):
    ids = current_user().visible_collaboration_ids()
    stmt = select(Node).order_by(Node.id)
    if ids is not None:
        stmt = stmt.where(Node.collaboration_id.in_(ids))
    for key in ("collaboration_id", "organization_id"):
        if key in query:
            stmt = stmt.where(getattr(Node, key) == query[key])
    stmt = stmt.limit(query["limit"]).offset(query["offset"])
    return db.session().execute(stmt).scalars().all()


@bp.post("/nodes")
@endpoint(
    body=NodeIn,
    response=NodeKeyOut,
    status=201,
    errors=(403, 404, 409),
    summary="Register a node (the collaboration's admins); the API key is in the answer",
)
def create_node(body):
    principal = current_user()
    collab = db.session().get(Collaboration, body["collaboration_id"])
    if not principal.is_superuser:
        visible_collaboration(body["collaboration_id"])
    if collab is None:
        raise NotFound("No such collaboration.")
    if not principal.administers(collab):
        raise Forbidden("Only an admin of this collaboration may add nodes.")
    org = get_or_404(Organization, body["organization_id"], "organisation")
    node, key = admin.new_node(org, collab, body)
    db.session().add(node)
    audit.record("node.create", node, detail={"name": node.name, "organization_id": org.id})
    db.commit()
    return _with_key(node, key)


@bp.get("/nodes/<int:node_id>")
@endpoint(response=NodeOut, errors=(404,), summary="One node")
def get_node(node_id):
    return visible_node(node_id)


@bp.patch("/nodes/<int:node_id>")
@endpoint(
    body=NodePatch,
    response=NodeOut,
    errors=(403, 404, 409),
    summary="Edit a node (collaboration admins, the node's data stewards)",
)
def patch_node(node_id, body):
    node = visible_node(node_id)
    _may_manage(node)
    if "projects" in body:
        body["projects"] = sorted(set(body["projects"]))
    for key, value in body.items():
        setattr(node, key, value)
    audit.record("node.update", node, detail={k: body[k] for k in sorted(body)})
    db.commit()
    return node


@bp.post("/nodes/<int:node_id>/api-key")
@endpoint(
    response=NodeKeyOut,
    errors=(403, 404),
    summary="Replace the node's API key (the old one stops working at once)",
)
def rotate_key(node_id):
    node = visible_node(node_id)
    _may_manage(node)
    key = admin.set_node_key(node)
    audit.record("node.rotate_key", node)
    db.commit()
    return _with_key(node, key)


@bp.delete("/nodes/<int:node_id>")
@endpoint(status=204, errors=(403, 404, 409), summary="Remove a node that has no runs")
def delete_node(node_id):
    node = visible_node(node_id)
    if not current_user().administers(node.collaboration):
        raise Forbidden("Only an admin of this collaboration may remove nodes.")
    admin.check_node_removal(db.session(), node)
    audit.record("node.delete", node, detail={"name": node.name})
    db.session().delete(node)
    db.commit()


# ------------------------------------------------------------------ a station's settings


@bp.get("/nodes/<int:node_id>/settings")
@endpoint(
    response=NodeSettingsOut,
    errors=(404,),
    summary="The station's profiles, disclosure settings and agent policy as its agent "
    "last reported them (anyone with a role in the node's collaboration; read-only: the "
    "station's node.yaml and agent.yaml are the authority)",
)
def node_settings(node_id):
    node = visible_node(node_id)
    row = db.session().get(NodeSettings, node.id)
    return {
        "node_id": node.id,
        "node_name": node.name,
        "reported": row is not None,
        "reported_at": row.reported_at if row is not None else None,
        "profiles": row.profiles if row is not None else [],
        "policy": row.policy if row is not None else None,
    }


@bp.put("/node/settings")
@endpoint(
    auth="node",
    body=NodeSettingsIn,
    response=NodeSettingsAck,
    summary="The station's profiles, disclosure settings and agent policy (its agent, at "
    "start and after a reconnect if they changed): replace the node's last report",
)
def report_settings(body):
    node = current_node()  # the key says which node: a node reports only its own
    now = utcnow()
    changed = _store_settings(node, body["profiles"], body["policy"], now)
    audit.record(
        "node.settings",
        node,
        target_type="node",
        detail={
            "profiles": [p["name"] for p in body["profiles"]][:100],
            "changed": changed,
        },
    )
    db.commit()
    return {"profiles": len(body["profiles"]), "changed": changed, "reported_at": now}


def _store_settings(node: Node, profiles: list, policy: dict | None, now) -> bool:
    """Replace the node's row (one per node) in the request's transaction; True if the
    profiles or the policy differ from the stored ones (a report without a policy
    clears it: the station no longer says). Two reports of one node racing to create
    the row: the second's commit is a 409, and the first's report stands."""
    s = db.session()
    row = s.get(NodeSettings, node.id, with_for_update=True)
    if row is None:
        s.add(NodeSettings(node_id=node.id, profiles=profiles, policy=policy, reported_at=now))
        return True
    changed = (row.profiles, row.policy) != (profiles, policy)
    row.profiles, row.policy, row.reported_at = profiles, policy, now
    return changed
