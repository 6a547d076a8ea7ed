"""Central audit events: who did what to which object, with what outcome.

`record` adds the event to the request's session, so it is written in the same
transaction as the change it describes (both or neither). Refusals that roll the
request back (a failed login) are written with `record_now`, in a session of their own.
"""

from __future__ import annotations

from typing import Any

from flask import g, has_request_context, request

from gateway.coordinator import db
from gateway.coordinator.models import AuditEvent

__all__ = ["OUTCOMES", "record", "record_now"]

# ok: done (a value returned, for calls and runs); refused: not allowed (rights, the
# node's whitelist or policy); blocked: a station's disclosure filter stopped it;
# failed: allowed but went wrong.
OUTCOMES = ("ok", "refused", "blocked", "failed")


def _collaboration_of(target: Any) -> int | None:
    """Events about a collaboration, or about something inside one, are filed under it."""
    if target is None:
        return None
    if type(target).__name__ == "Collaboration":
        return target.id
    return getattr(target, "collaboration_id", None)


def _event(action: str, outcome: str, target: Any, **fields: Any) -> AuditEvent:
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
    actor_type, actor_id, actor_name, org_id = "system", None, "", None
    principal = g.get("principal")
    node = g.get("node")
    if principal is not None:
        user = principal.user
        actor_type, actor_id, actor_name, org_id = "user", user.id, user.username, None
        org_id = user.organization_id
    elif node is not None:
        actor_type, actor_id, actor_name = "node", node.id, node.name
        org_id = node.organization_id
    target_type = fields.pop("target_type", None)
    if target is not None and target_type is None:
        target_type = type(target).__name__.lower()
    event = AuditEvent(
        actor_type=fields.pop("actor_type", actor_type),
        actor_id=fields.pop("actor_id", actor_id),
        actor_name=fields.pop("actor_name", actor_name),
        action=action,
        outcome=outcome,
        organization_id=fields.pop("organization_id", org_id),
        collaboration_id=fields.pop("collaboration_id", _collaboration_of(target)),
        target_type=target_type or "",
        target_id=getattr(target, "id", None),
        detail=fields.pop("detail", {}) or {},
        remote=(request.remote_addr or "") if has_request_context() else "",
    )
    if fields:
        raise TypeError(f"unknown audit fields: {sorted(fields)}")
    return event


def record(action: str, target: Any = None, outcome: str = "ok", **fields: Any) -> AuditEvent:
    if target is not None and getattr(target, "id", 0) is None:
        db.session().flush()  # a new object gets its id, for the record
    event = _event(action, outcome, target, **fields)
    db.session().add(event)
    return event


def record_now(action: str, target: Any = None, outcome: str = "ok", **fields: Any) -> None:
    event = _event(action, outcome, target, **fields)
    with db.session_scope() as s:
        s.add(event)
