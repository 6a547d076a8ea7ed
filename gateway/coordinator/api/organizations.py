"""Organisations: the superuser creates them; members of an organisation's
collaborations see it; its admins edit it."""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import or_, select

from gateway.coordinator import audit, db
from gateway.coordinator.api.endpoint import endpoint
from gateway.coordinator.authz import Principal, current_user
from gateway.coordinator.errors import Forbidden, NotFound
from gateway.coordinator.models import Organization, collaboration_members
from gateway.coordinator.schemas import (
    OrganizationIn,
    OrganizationOut,
    OrganizationPatch,
    PageQuery,
)

bp = Blueprint("organizations", __name__)


def _visible_filter(principal: Principal):
    """None: every organisation; else an SQL condition on Organization.id."""
    if principal.is_superuser:
        return None
    collabs = principal.visible_collaboration_ids() or set()
    own = {principal.user.organization_id}
    own.update(r.organization_id for r in principal.roles if r.organization_id is not None)
    in_collabs = select(collaboration_members.c.organization_id).where(
        collaboration_members.c.collaboration_id.in_(collabs)
    )
    return or_(Organization.id.in_(own), Organization.id.in_(in_collabs))


def visible_organization(org_id: int) -> Organization:
    principal = current_user()
    cond = _visible_filter(principal)
    query = select(Organization).where(Organization.id == org_id)
    if cond is not None:
        query = query.where(cond)
    org = db.session().execute(query).scalar()
    if org is None:
        raise NotFound("No such organisation.")
    return org


@bp.get("/organizations")
@endpoint(query=PageQuery, response=OrganizationOut, many=True, summary="Organisations")
def list_organizations(query):
    cond = _visible_filter(current_user())
    stmt = select(Organization).order_by(Organization.id)
    if cond is not None:
        stmt = stmt.where(cond)
    stmt = stmt.limit(query["limit"]).offset(query["offset"])
    return db.session().execute(stmt).scalars().all()


@bp.post("/organizations")
@endpoint(
    body=OrganizationIn,
    response=OrganizationOut,
    status=201,
    errors=(403, 409),
    summary="Create an organisation (superuser)",
)
def create_organization(body):
    current_user().require_superuser()
    org = Organization(name=body["name"], description=body["description"])
    db.session().add(org)
    audit.record("organization.create", org, detail={"name": org.name})
    db.commit()
    return org


@bp.get("/organizations/<int:org_id>")
@endpoint(response=OrganizationOut, errors=(404,), summary="One organisation")
def get_organization(org_id):
    return visible_organization(org_id)


@bp.patch("/organizations/<int:org_id>")
@endpoint(
    body=OrganizationPatch,
    response=OrganizationOut,
    errors=(403, 404, 409),
    summary="Edit an organisation (its admins)",
)
def patch_organization(org_id, body):
    org = visible_organization(org_id)
    if "admin" not in current_user().roles_for_org(org.id):
        raise Forbidden("Only an admin of this organisation may edit it.")
    for key, value in body.items():
        setattr(org, key, value)
    audit.record("organization.update", org, detail={"fields": sorted(body)})
    db.commit()
    return org
