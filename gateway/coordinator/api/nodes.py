"""Nodes: one per organisation and collaboration, each with its own API key.

A collaboration's admins add and remove nodes; they and the data stewards of the
node's organisation edit it (which projects relay tokens open, the token audience)
and rotate its key. The key is shown once, when made; only its hash is kept.
"""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import select

from gateway.coordinator import admin, audit, db
from gateway.coordinator.api.collaborations import visible_collaboration
from gateway.coordinator.api.endpoint import endpoint
from gateway.coordinator.api.lookup import get_or_404
from gateway.coordinator.authz import current_user
from gateway.coordinator.errors import Forbidden, NotFound
from gateway.coordinator.models import Collaboration, Node, Organization
from gateway.coordinator.schemas import NodeIn, NodeKeyOut, NodeOut, NodePatch, NodeQuery

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
