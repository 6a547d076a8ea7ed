"""What the coordinator adds to an image run, going out and coming back.

Going out (`image_work_fields`, merged into the node's work item by node_link):
- `disclosure`: the coordinator's disclosure rules (IMAGE_DISCLOSURE); the node applies
  them together with its own, the stricter of each;
- `gateway_token`: a relay token of the task's creator for this run's node, for nodes
  that take run tokens from the coordinator (`images.tokens_from: coordinator`); the
  node's gateway verifies it as it verifies any relayed call;
- for a task that asked for the relay (`parameters.relay`): `relay_stations`, a relay
  token per station the task names (`parameters.stations`; tasks made before it
  existed: the target nodes), each scoped to that node and the task's collaboration, or
  `relay_error` saying why there are none. A station that is not (or no longer) a node
  of the task's collaboration gets no token and the run none at all: a token carries
  its node's collaboration, so minting one would open another collaboration's data.
  Tokens expire with the task's deadline or after RELAY_TOKEN_TTL, whichever is first.

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
from gateway.coordinator.models import Node, Run, Task, utcnow

__all__ = [
    "IMAGE_ALGORITHM",
    "disclosure_gate",
    "disclosure_rules",
    "image_work_fields",
    "relay_station_ids",
]

log = logging.getLogger(__name__)

IMAGE_ALGORITHM = "image"
BLOCKED = "Blocked by disclosure check at the coordinator"


def disclosure_rules(config: Any = None) -> DisclosureRules:
    """The coordinator's rules (IMAGE_DISCLOSURE over the defaults). Settings that do not
    parse stop the coordinator at start (config.load_settings checks them)."""
    config = current_app.config if config is None else config
    return DisclosureRules.from_dict(config.get("IMAGE_DISCLOSURE") or {})


def relay_station_ids(task: Task) -> list[int] | None:
    """The node ids a run of `task` reaches through the relay; None without the relay.
    A task made before `stations` existed reaches its target nodes."""
    parameters = task.parameters or {}
    if parameters.get("relay") is not True:
        return None
    stations = parameters.get("stations")
    return list(stations if stations is not None else task.target_node_ids or [])


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
        wanted = relay_station_ids(task) or []
        nodes = db.session().execute(
            select(Node)
            .where(Node.id.in_(wanted), Node.collaboration_id == task.collaboration_id)
            .order_by(Node.id)
        )
        found = list(nodes.scalars())
        strangers = sorted(set(wanted) - {n.id for n in found})
        if strangers or not found:  # fail closed: no tokens rather than some
            out["relay_error"] = (
                f"the stations {strangers} are not nodes of the task's collaboration"
                if strangers
                else "the task names no stations"
            )
            return out
        out["relay_stations"] = [
            {"name": n.name, "node_id": n.id, "token": tokens.relay_token(creator, n, expires)}
            for n in found
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
