"""Collaborations: a set of organisations (and their nodes) that analyse together.

The superuser creates them; the collaboration's admins edit them and their membership;
anyone with a role in a collaboration sees it, nobody else (404).
"""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import select

from gateway.coordinator import admin, audit, db
from gateway.coordinator.api.endpoint import endpoint
from gateway.coordinator.api.lookup import get_or_404
from gateway.coordinator.authz import current_user
from gateway.coordinator.errors import Conflict, Forbidden
from gateway.coordinator.models import Collaboration, Organization
from gateway.coordinator.schemas import (
    CollaborationIn,
    CollaborationOut,
    CollaborationPatch,
    MemberIn,
    PageQuery,
)

bp = Blueprint("collaborations", __name__)


def visible_collaboration(collab_id: int) -> Collaboration:
    collab = db.session().get(Collaboration, collab_id)
    current_user().require_in(collab)
    return collab


def _administered(collab_id: int) -> Collaboration:
    collab = visible_collaboration(collab_id) if not current_user().is_superuser else None
    collab = collab or get_or_404(Collaboration, collab_id, "collaboration")
    if not current_user().administers(collab):
        raise Forbidden("Only an admin of this collaboration may change it.")
    return collab


@bp.get("/collaborations")
@endpoint(query=PageQuery, response=CollaborationOut, many=True, summary="Collaborations")
def list_collaborations(query):
    ids = current_user().visible_collaboration_ids()
    stmt = select(Collaboration).order_by(Collaboration.id)
    if ids is not None:
        stmt = stmt.where(Collaboration.id.in_(ids))
    stmt = stmt.limit(query["limit"]).offset(query["offset"])
    return db.session().execute(stmt).scalars().all()


@bp.post("/collaborations")
@endpoint(
    body=CollaborationIn,
    response=CollaborationOut,
    status=201,
    errors=(403, 404, 409),
    summary="Create a collaboration (superuser)",
)
def create_collaboration(body):
    current_user().require_superuser()
    orgs = [get_or_404(Organization, i, "organisation") for i in set(body["organization_ids"])]
    collab = Collaboration(name=body["name"], description=body["description"], organizations=orgs)
    db.session().add(collab)
    audit.record(
        "collaboration.create",
        collab,
        detail={"name": collab.name, "organizations": sorted(o.id for o in orgs)},
    )
    db.commit()
    return collab


@bp.get("/collaborations/<int:collab_id>")
@endpoint(response=CollaborationOut, errors=(404,), summary="One collaboration")
def get_collaboration(collab_id):
    return visible_collaboration(collab_id)


@bp.patch("/collaborations/<int:collab_id>")
@endpoint(
    body=CollaborationPatch,
    response=CollaborationOut,
    errors=(403, 404, 409),
    summary="Edit a collaboration (its admins)",
)
def patch_collaboration(collab_id, body):
    collab = _administered(collab_id)
    for key, value in body.items():
        setattr(collab, key, value)
    audit.record(
        "collaboration.update", collab, collaboration_id=collab.id, detail={"fields": sorted(body)}
    )
    db.commit()
    return collab


@bp.post("/collaborations/<int:collab_id>/organizations")
@endpoint(
    body=MemberIn,
    response=CollaborationOut,
    status=201,
    errors=(403, 404, 409),
    summary="Add an organisation to a collaboration (its admins)",
)
def add_member(collab_id, body):
    collab = _administered(collab_id)
    org = get_or_404(Organization, body["organization_id"], "organisation")
    if org in collab.organizations:
        raise Conflict("That organisation is already a member.")
    collab.organizations.append(org)
    audit.record(
        "collaboration.add_organization",
        collab,
        collaboration_id=collab.id,
        detail={"organization_id": org.id},
    )
    db.commit()
    return collab


@bp.delete("/collaborations/<int:collab_id>/organizations/<int:org_id>")
@endpoint(status=204, errors=(403, 404, 409), summary="Remove an organisation (its admins)")
def remove_member(collab_id, org_id):
    collab = _administered(collab_id)
    org = admin.check_member_removal(db.session(), collab, org_id)
    collab.organizations.remove(org)
    audit.record(
        "collaboration.remove_organization",
        collab,
        collaboration_id=collab.id,
        detail={"organization_id": org_id},
    )
    db.commit()
