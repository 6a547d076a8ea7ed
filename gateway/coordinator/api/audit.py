"""The central audit trail, read-only.

The superuser reads everything; admins and data stewards read the events of the
collaborations they hold those roles in; an organisation's admins read the events of
their organisation outside collaborations; everyone reads her own actions.
"""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import and_, or_, select

from gateway.coordinator import db
from gateway.coordinator.api.endpoint import endpoint
from gateway.coordinator.authz import Principal, current_user
from gateway.coordinator.models import AuditEvent, Collaboration
from gateway.coordinator.schemas import AuditOut, AuditQuery

bp = Blueprint("audit", __name__)
_READERS = {"admin", "data_steward"}


def _scope(principal: Principal):
    if principal.is_superuser:
        return None
    own = and_(AuditEvent.actor_type == "user", AuditEvent.actor_id == principal.user.id)
    conditions = [own]
    visible = principal.visible_collaboration_ids() or set()
    if visible:
        collabs = (
            db.session()
            .execute(select(Collaboration).where(Collaboration.id.in_(visible)))
            .scalars()
        )
        readable = [c.id for c in collabs if principal.roles_in(c) & _READERS]
        if readable:
            conditions.append(AuditEvent.collaboration_id.in_(readable))
    admin_orgs = [
        r.organization_id
        for r in principal.roles
        if r.name == "admin" and r.collaboration_id is None and r.organization_id is not None
    ]
    if admin_orgs:
        conditions.append(
            and_(
                AuditEvent.collaboration_id.is_(None),
                AuditEvent.organization_id.in_(admin_orgs),
            )
        )
    return or_(*conditions)


@bp.get("/audit")
@endpoint(query=AuditQuery, response=AuditOut, many=True, summary="Audit events, newest first")
def list_events(query):
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc())
    scope = _scope(current_user())
    if scope is not None:
        stmt = stmt.where(scope)
    if "collaboration_id" in query:
        stmt = stmt.where(AuditEvent.collaboration_id == query["collaboration_id"])
    if "action" in query:
        stmt = stmt.where(AuditEvent.action == query["action"])
    if "actor_name" in query:
        stmt = stmt.where(AuditEvent.actor_name == query["actor_name"])
    if "outcome" in query:
        stmt = stmt.where(AuditEvent.outcome == query["outcome"])
    if "since" in query:
        stmt = stmt.where(AuditEvent.time >= query["since"])
    if "until" in query:
        stmt = stmt.where(AuditEvent.time < query["until"])
    stmt = stmt.limit(query["limit"]).offset(query["offset"])
    return db.session().execute(stmt).scalars().all()
