"""What the coordinator adds to an image run, going out and coming back.

Going out (`image_work_fields`, merged into the node's work item by node_link):
- `disclosure`: the coordinator's disclosure rules (IMAGE_DISCLOSURE); the node applies
  them together with its own, the stricter of each;
- `gateway_token`: a relay token of the task's creator for this run's node, for nodes
  that take run tokens from the coordinator (`images.tokens_from: coordinator`); the
  node's gateway verifies it as it verifies any relayed call;
- for a task that asked for the relay (`parameters.relay`): `relay_stations`, a relay
  token per target node (scoped to that node and the task's collaboration), or
  `relay_error` saying why there are none. Tokens expire with the task's deadline or
  after RELAY_TOKEN_TTL, whichever is first.

Coming back (`disclosure_gate`, called by runs.finish_run): a completed image run's
output files are checked again with the coordinator's rules; a refused one is stored
as `failed` with the reason, its output dropped, and audited `run.blocked`.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import select

from gateway.agent.images.disclosure import DisclosureRefused, DisclosureRules, check_outputs
from gateway.coordinator.models import Node, Run, utcnow

__all__ = ["IMAGE_ALGORITHM", "disclosure_gate", "disclosure_rules", "image_work_fields"]

log = logging.getLogger(__name__)

IMAGE_ALGORITHM = "image"
BLOCKED = "Blocked by disclosure check at the coordinator"


def disclosure_rules(config: Any = None) -> DisclosureRules:
    """The coordinator's rules (IMAGE_DISCLOSURE over the defaults). Settings that do not
    parse stop the coordinator at start (config.load_settings checks them)."""
    config = current_app.config if config is None else config
    return DisclosureRules.from_dict(config.get("IMAGE_DISCLOSURE") or {})


def image_work_fields(run: Run) -> dict[str, Any]:
    from gateway.coordinator import db
    from gateway.coordinator.app import services

    task = run.task
    out: dict[str, Any] = {"disclosure": disclosure_rules().to_dict()}
    tokens = services().tokens
    wants_relay = (task.parameters or {}).get("relay") is True
    creator = task.creator
    why_not = None
    if tokens.relay_key is None:
        why_not = (
            "the coordinator cannot sign relay tokens (it has no RELAY_PRIVATE_KEY_FILE or "
            "RELAY_SECRET)"
        )
    elif creator is None or not creator.active:
        why_not = "the task's creator is no longer an active user"
    if why_not is not None:
        if wants_relay:
            out["relay_error"] = why_not
        return out
    expires = min(task.deadline, utcnow() + _ttl()) if task.deadline else None
    out["gateway_token"] = tokens.relay_token(creator, run.node, expires_at=expires)
    if wants_relay:
        nodes = db.session().execute(
            select(Node).where(Node.id.in_(task.target_node_ids or [])).order_by(Node.id)
        )
        out["relay_stations"] = [
            {"name": n.name, "node_id": n.id, "token": tokens.relay_token(creator, n, expires)}
            for n in nodes.scalars()
        ]
    return out


def _ttl():
    from datetime import timedelta

    return timedelta(seconds=int(current_app.config["RELAY_TOKEN_TTL"]))


def disclosure_gate(run: Run, status: str, result: Any, message: str) -> tuple[str, Any, str]:
    """(status, result, message) to store for a node's answer: a completed image run
    whose output the coordinator's rules refuse becomes failed, without its output."""
    if status != "completed" or run.task.algorithm != IMAGE_ALGORITHM or not has_app_context():
        return status, result, message
    outputs = result.get("outputs") if isinstance(result, dict) else None
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        return "failed", None, f"{BLOCKED}: the node's result does not list its output files."
    try:
        check_outputs(outputs, disclosure_rules())
    except DisclosureRefused as err:
        from gateway.coordinator import audit

        reason = f"{BLOCKED}: {err}"
        audit.record(
            "run.blocked",
            run,
            outcome="blocked",
            collaboration_id=run.task.collaboration_id,
            detail={"check": "disclosure", "message": reason[:500]},
        )
        return "failed", None, reason
    return status, result, message
