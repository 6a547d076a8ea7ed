"""The API node agents call, authenticated by their node's API key (`X-Api-Key`).

Agents only ever connect out: they long-poll for work, post results, and heartbeat.
Every call refreshes the node's last-seen time. A node sees and touches only its own
runs: another node's run is answered as not found.
"""

from __future__ import annotations

import json
import time

from flask import Blueprint, current_app
from sqlalchemy import bindparam, select

from gateway.coordinator import audit, db
from gateway.coordinator.api.endpoint import endpoint
from gateway.coordinator.app import services
from gateway.coordinator.authz import current_node
from gateway.coordinator.errors import Conflict, NotFound
from gateway.coordinator.liveness import touch_node
from gateway.coordinator.models import Node, Run
from gateway.coordinator.runs import (
    all_runs_final,
    claim_runs,
    extend_leases,
    finish_run,
    release_runs,
)
from gateway.coordinator.schemas import (
    HeartbeatIn,
    HeartbeatOut,
    NodeOut,
    RunResultIn,
    RunResultOut,
    WorkOut,
    WorkQuery,
)

bp = Blueprint("node_link", __name__)
_AGENT_OF_NODE = select(Node.agent_session).where(Node.id == bindparam("node_id"))


def _work_item(run: Run) -> dict:
    from gateway.coordinator.image_runs import IMAGE_ALGORITHM, image_work_fields

    task = run.task
    item = {
        "kind": "task_run",
        "run_id": run.id,
        "task_id": task.id,
        "collaboration_id": task.collaboration_id,
        "algorithm": task.algorithm,
        # A later round's node parameters (e.g. the current coefficients) update the task's.
        "parameters": {**(task.parameters or {}), **(run.parameters or {})},
        "round": run.round,
        "user": task.creator.username if task.creator else None,
        "attempt": run.attempts,
        "deadline": task.deadline,
        "lease_expires": run.lease_expires,
    }
    if task.algorithm == IMAGE_ALGORITHM:
        # Run tokens, relay stations and disclosure rules (gateway/coordinator/image_runs.py).
        item.update(image_work_fields(run))
    return item


@bp.get("/node/me")
@endpoint(auth="node", response=NodeOut, summary="The calling node")
def me():
    node = current_node()
    db.commit()
    return node


@bp.get("/node/work")
@endpoint(
    auth="node",
    query=WorkQuery,
    response=WorkOut,
    summary="Long poll: the node's pending runs, each marked started for this caller only",
)
def work(query):
    cfg = current_app.config
    node = current_node()
    s = db.session()
    notifier = services().notifier
    wait = min(float(query["wait"]), float(cfg["LONG_POLL_MAX"]))
    limit = query["limit"] or int(cfg["WORK_BATCH"])
    end = time.monotonic() + wait
    agent = query["session"]
    while True:
        version = notifier.version(node.id)
        if agent is not None:
            current = s.execute(_AGENT_OF_NODE, {"node_id": node.id}).scalar()
            if current not in (None, agent):
                db.commit()
                raise Conflict("Another agent of this node has taken over: this one may stop.")
        runs = claim_runs(s, node, limit, float(cfg["RUN_LEASE"]), agent)
        items = [_work_item(run) for run in runs]
        for run in runs:
            audit.record("run.start", run, detail={"attempt": run.attempts})
        left = end - time.monotonic()
        db.commit()  # never hold a transaction (or an SQLite write lock) while waiting
        if items or left <= 0:
            return {"work": items}
        woken = notifier.wait(node.id, version, min(left, notifier.recheck))
        if not woken and notifier.exact and time.monotonic() >= end:
            # No notification can have been missed: no need to look again.
            return {"work": []}


@bp.post("/node/runs/<int:run_id>/result")
@endpoint(
    auth="node",
    body=RunResultIn,
    response=RunResultOut,
    errors=(404, 409),
    summary="Post a run's result (repeating the same result is harmless)",
)
def post_result(run_id, body):
    from gateway.coordinator.tasks import queue

    node = current_node()
    s = db.session()
    run = s.get(Run, run_id)
    if run is None or run.node_id != node.id:
        raise NotFound("No such run.")
    wanted, result, message = _size_checked(body)
    stored, status = finish_run(
        s,
        run,
        wanted,
        result,
        body["log"],
        message,
        int(current_app.config["LOG_EXCERPT_CHARS"]),
    )
    if not stored:
        same = status == wanted and (status != "completed" or run.result == result)
        if same:
            db.commit()
            return {"run_id": run.id, "status": status, "duplicate": True}
        raise Conflict(f"The run is already {status}.")
    audit.record(
        "run.result",
        run,
        # The node's word that a disclosure filter refused decides; else the status.
        outcome=body["outcome"] or ("ok" if status == "completed" else "failed"),
        collaboration_id=run.task.collaboration_id,
        # bytes: the size of what left the station (its result as JSON), for the audit.
        detail={
            "status": status,
            "message": body["message"][:500],
            "bytes": len(json.dumps(body["result"])) if body["result"] is not None else 0,
        },
    )
    task = run.task
    db.commit()
    # Checked after the commit, not before: two nodes' last results committing at the
    # same moment would each see the other's run still open inside their own
    # transactions, and neither would queue finalize. After both commits at least one
    # of them sees every run final (a second finalize is harmless: it is idempotent).
    finished = all_runs_final(s, task)
    db.commit()
    if finished:
        queue("finalize", task.id)
    return {"run_id": run.id, "status": status, "duplicate": False}


def _size_checked(body: dict) -> tuple[str, object, str]:
    """The coordinator's own check on what a node releases: a result over
    MAX_RESULT_BYTES (as compact JSON) is not stored, and its run fails saying why."""
    limit = int(current_app.config["MAX_RESULT_BYTES"])
    if body["status"] != "completed" or body["result"] is None:
        return body["status"], body["result"], body["message"]
    size = len(json.dumps(body["result"], separators=(",", ":")).encode())
    if size <= limit:
        return body["status"], body["result"], body["message"]
    return (
        "failed",
        None,
        f"The node's result is {size} bytes, over the coordinator's limit of {limit} "
        "(MAX_RESULT_BYTES); it was not stored.",
    )


@bp.post("/node/heartbeat")
@endpoint(
    auth="node",
    body=HeartbeatIn,
    response=HeartbeatOut,
    summary="I am alive; these runs are still running (their leases are extended)",
)
def heartbeat(body):
    node = current_node()
    touch_node(node, force=True)
    cfg = current_app.config
    s = db.session()
    cancel = extend_leases(s, node, body["running"], float(cfg["RUN_LEASE"]))
    released = []
    if body["reset"]:
        released = release_runs(
            s, node, body["running"], int(cfg["RUN_MAX_ATTEMPTS"]), body["session"]
        )
        if released:
            audit.record("node.release_runs", node, detail={"runs": released})
    db.commit()
    if released:
        services().notifier.notify([node.id])
    return {"time": node.last_seen, "cancel": cancel}
