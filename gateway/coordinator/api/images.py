"""Client images at the coordinator (docs/client-images.md has the contract):

- researchers create image tasks and follow each node's run (its phase while it works,
  then `completed`, `not approved`, `failed`, `killed`, `timed out` ...);
- everyone in a collaboration sees where an image may run: the approvals each node's
  agent mirrors here (the node's own store stays the authority: nothing here makes a
  node run anything);
- a data steward of a node's organisation may queue a decision for the node; its agent
  applies it if the node allows decisions from the coordinator, and reports back.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, current_app
from marshmallow import ValidationError
from sqlalchemy import select

from gateway.coordinator import audit, db
from gateway.coordinator.api.collaborations import visible_collaboration
from gateway.coordinator.api.endpoint import endpoint
from gateway.coordinator.api.nodes import visible_node
from gateway.coordinator.api.tasks import visible_task
from gateway.coordinator.app import services
from gateway.coordinator.authz import current_node, current_user
from gateway.coordinator.errors import BadRequest, Conflict, Forbidden, NotFound
from gateway.coordinator.image_schemas import (
    IMAGE_ALGORITHM,
    CollaborationImageOut,
    DecisionAckIn,
    ImageDecisionIn,
    ImageDecisionOut,
    ImageQuery,
    ImageRunOut,
    ImageTaskIn,
    ImageTaskOut,
    MirrorIn,
    MirrorOut,
    NodeDecisionsOut,
    NodeImageOut,
    PhaseIn,
    PhaseOut,
    image_task_parameters,
)
from gateway.coordinator.models import (
    RUN_FINAL,
    Collaboration,
    ImageDecision,
    ImageRunPhase,
    Node,
    NodeImage,
    Run,
    Task,
    utcnow,
)
from gateway.coordinator.runs import node_run

bp = Blueprint("images", __name__)

# The node's state of a digest -> the audit action of a change to it.
_STATE_ACTIONS = {
    "approved": "image.approve",
    "rejected": "image.reject",
    "revoked": "image.revoke",
    "pending": "image.request",
}


def checked_image_parameters(
    parameters: dict[str, Any], collab: Collaboration, targets: list[int]
) -> dict[str, Any]:
    """For POST /tasks with algorithm "image": the same checks as POST /image-tasks,
    messages under `parameters`; the relay's stations resolved (`resolve_stations`)."""
    try:
        return resolve_stations(image_task_parameters(parameters), collab, targets)
    except ValidationError as err:
        raise BadRequest(
            "Invalid request body.", errors={"parameters": err.normalized_messages()}
        ) from None


def resolve_stations(
    parameters: dict[str, Any], collab: Collaboration, targets: list[int]
) -> dict[str, Any]:
    """`parameters` with `stations` resolved: for a relay task the node ids it names,
    each a node of `collab` (else ValidationError naming the others), by default the
    target nodes; None without the relay. Callers check the user's role in `collab`
    first, so the answer tells an outsider nothing of another collaboration's nodes."""
    if not parameters["relay"]:
        return {**parameters, "stations": None}
    if parameters["stations"] is None:
        return {**parameters, "stations": list(targets)}
    nodes = {n.id for n in collab.nodes}
    strangers = [n for n in parameters["stations"] if n not in nodes]
    if strangers:
        raise ValidationError({"stations": [f"Not nodes of this collaboration: {strangers}"]})
    return parameters


# ------------------------------------------------------------------ image tasks


@bp.post("/image-tasks")
@endpoint(
    body=ImageTaskIn,
    response=ImageTaskOut,
    status=201,
    errors=(403, 404),
    summary="Create an image task: an image pinned by digest, run at each target node "
    "that approved it (researchers of the collaboration)",
)
def create_image_task(body):
    from gateway.coordinator.tasks import queue

    principal = current_user()
    s = db.session()
    collab = s.get(Collaboration, body["collaboration_id"])
    principal.require_in(collab, {"researcher"})
    nodes = {n.id for n in collab.nodes}
    targets = sorted(nodes if body["node_ids"] is None else set(body["node_ids"]))
    strangers = [n for n in targets if n not in nodes]
    if strangers:
        raise BadRequest(
            "Invalid request body.",
            errors={"node_ids": [f"Not nodes of this collaboration: {strangers}"]},
        )
    if not targets:
        raise BadRequest("The collaboration has no nodes to run the task on.")
    try:
        parameters = resolve_stations(
            image_task_parameters(
                {
                    "image": body["image"],
                    "files": body["files"],
                    "input": body["parameters"],
                    "timeout": body["run_timeout"],
                    "relay": body["relay"],
                    "stations": body["stations"],
                }
            ),
            collab,
            targets,
        )
    except ValidationError as err:  # the body's own fields: its stations, its size
        raise BadRequest("Invalid request body.", errors=err.normalized_messages()) from None
    if body["relay"] and services().tokens.relay_key is None:
        # Fail closed and early: without a signing key no node could open the others.
        raise BadRequest(
            "Invalid request body.",
            errors={
                "relay": [
                    "This coordinator has no relay (no RELAY_PRIVATE_KEY_FILE or "
                    "RELAY_SECRET): multi-node image tasks cannot run here."
                ]
            },
        )
    timeout = body["timeout"] or int(current_app.config["TASK_DEFAULT_TIMEOUT"])
    now = utcnow()
    task = Task(
        name=body["name"],
        collaboration=collab,
        creator_id=principal.user.id,
        algorithm=IMAGE_ALGORITHM,
        parameters=parameters,
        target_node_ids=targets,
        status="pending",
        created_at=now,
        deadline=now + timedelta(seconds=timeout),
    )
    s.add(task)
    audit.record(
        "image_task.create",
        task,
        detail={
            "image": parameters["image"],
            "digest": parameters["digest"],
            "nodes": targets,
            "relay": parameters["relay"],
            "stations": parameters["stations"],
        },
    )
    db.commit()
    queue("dispatch", task.id)
    s.refresh(task)
    return task


def _follow(run: Run, phase: ImageRunPhase | None, names: dict[int, str]) -> dict[str, Any]:
    status = run.status
    if status == "started":  # taken by the node: its phase, or still being checked
        status = phase.phase if phase is not None else "pending"
    result = run.result if isinstance(run.result, dict) else None
    return {
        "run_id": run.id,
        "task_id": run.task_id,
        "node_id": run.node_id,
        "node_name": names.get(run.node_id, ""),
        "status": status,
        "phase": phase.phase if phase is not None and run.status == "started" else None,
        "message": run.message,
        "log": run.log,
        "result": result,
        "digest": (result or {}).get("digest") or (run.task.parameters or {}).get("digest"),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "updated_at": run.finished_at or (phase.updated_at if phase else run.started_at),
    }


@bp.get("/tasks/<int:task_id>/image-runs")
@endpoint(
    response=ImageRunOut,
    many=True,
    errors=(404,),
    summary="Each node's run of an image task, with the status a researcher follows",
)
def image_runs(task_id):
    task = visible_task(task_id)
    s = db.session()
    runs = s.execute(select(Run).where(Run.task_id == task.id).order_by(Run.id)).scalars().all()
    ids = [r.id for r in runs]
    phases = {
        p.run_id: p
        for p in s.execute(select(ImageRunPhase).where(ImageRunPhase.run_id.in_(ids))).scalars()
    }
    names = dict(
        s.execute(select(Node.id, Node.name).where(Node.id.in_(task.target_node_ids))).all()
    )
    return [_follow(r, phases.get(r.id), names) for r in runs]


# ------------------------------------------------------------------ where images may run


@bp.get("/collaborations/<int:collab_id>/images")
@endpoint(
    query=ImageQuery,
    response=CollaborationImageOut,
    many=True,
    errors=(404,),
    summary="Per image digest, each node's word on it (as the nodes mirror it)",
)
def collaboration_images(collab_id, query):
    collab = visible_collaboration(collab_id)
    nodes = sorted(collab.nodes, key=lambda n: n.id)
    stmt = select(NodeImage).where(NodeImage.node_id.in_([n.id for n in nodes]))
    if "digest" in query:
        stmt = stmt.where(NodeImage.digest == query["digest"])
    rows = db.session().execute(stmt.order_by(NodeImage.digest)).scalars().all()
    by_digest: dict[str, dict[int, NodeImage]] = {}
    for row in rows:
        by_digest.setdefault(row.digest, {})[row.node_id] = row
    out = []
    for digest, at in by_digest.items():
        entries = []
        for node in nodes:
            row = at.get(node.id)
            entry: dict[str, Any] = {
                "node_id": node.id,
                "node_name": node.name,
                "organization_id": node.organization_id,
                "digest": digest,
                "state": "none",
                "may_run": False,
                "labels": {},
                "updated_at": None,
            }
            if row is not None:
                entry.update({k: getattr(row, k) for k in NodeImageOut._declared_fields})
                entry["may_run"] = row.state == "approved" and (
                    row.collaborations is None or collab.id in row.collaborations
                )
            entries.append(entry)
        image = next((r.image for r in at.values() if r.image), None)
        out.append({"digest": digest, "image": image, "nodes": entries})
    return out


@bp.get("/nodes/<int:node_id>/images")
@endpoint(
    response=NodeImageOut,
    many=True,
    errors=(404,),
    summary="The node's word on each image digest (as its agent mirrors it)",
)
def node_images(node_id):
    node = visible_node(node_id)
    stmt = select(NodeImage).where(NodeImage.node_id == node.id).order_by(NodeImage.digest)
    return db.session().execute(stmt).scalars().all()


# ------------------------------------------------------------------ decisions for a node


@bp.post("/nodes/<int:node_id>/images/decisions")
@endpoint(
    body=ImageDecisionIn,
    response=ImageDecisionOut,
    status=202,
    errors=(403, 404),
    summary="Queue an approval, rejection or revocation for the node (its organisation's "
    "data stewards); the node applies it if it takes decisions from the coordinator",
)
def queue_decision(node_id, body):
    principal = current_user()
    node = visible_node(node_id)
    if not principal.steward_of(node):
        raise Forbidden("Only a data steward of the node's organisation may decide for it.")
    decision = ImageDecision(
        node_id=node.id,
        digest=body["digest"],
        decision=body["decision"],
        reason=body["reason"].strip(),
        image=body["image"],
        collaborations=body["collaborations"],
        requested_by_id=principal.user.id,
        requested_by=principal.user.username,
        status="queued",
        message="",
        created_at=utcnow(),
    )
    db.session().add(decision)
    audit.record(
        "image.decision",
        decision,
        collaboration_id=node.collaboration_id,
        detail={
            "node_id": node.id,
            "digest": decision.digest,
            "decision": decision.decision,
            "reason": decision.reason[:500],
        },
    )
    db.commit()
    return decision


@bp.get("/nodes/<int:node_id>/images/decisions")
@endpoint(
    response=ImageDecisionOut,
    many=True,
    errors=(403, 404),
    summary="Decisions queued for the node and what became of them (its stewards, admins)",
)
def list_decisions(node_id):
    principal = current_user()
    node = visible_node(node_id)
    if not (principal.steward_of(node) or principal.administers(node.collaboration)):
        raise Forbidden("Only the node's data stewards or the collaboration's admins may.")
    stmt = select(ImageDecision).where(ImageDecision.node_id == node.id)
    return db.session().execute(stmt.order_by(ImageDecision.id.desc())).scalars().all()


# ------------------------------------------------------------------ the node link


def _mirror_rows(body: dict) -> dict[str, dict[str, Any]]:
    """What the node says, one row per digest; a decision outranks a pending request."""
    rows: dict[str, dict[str, Any]] = {}
    for req in body["requests"]:
        rows[req["digest"]] = {
            "state": "pending",
            "image": req["image"],
            "reason": "",
            "decided_by": "",
            "decided_at": None,
            "collaborations": None,
            "requested_by": req["requested_by"] or None,
            "requested_collaboration_id": req["collaboration"],
            "labels": req["labels"],
        }
    for app in body["approvals"]:
        asked = rows.get(app["digest"], {})
        rows[app["digest"]] = {
            "state": app["state"],
            "image": app["image"] or asked.get("image"),
            "reason": app["reason"],
            "decided_by": app["decided_by"],
            "decided_at": app["decided_at"],
            "collaborations": app["collaborations"],
            "requested_by": asked.get("requested_by"),
            "requested_collaboration_id": asked.get("requested_collaboration_id"),
            "labels": asked.get("labels") or {},
        }
    return rows


@bp.put("/node/images")
@endpoint(
    auth="node",
    body=MirrorIn,
    response=MirrorOut,
    summary="The node's whole image approval store (approvals and pending requests): "
    "replaces its mirror here",
)
def mirror(body):
    node = current_node()
    s = db.session()
    have = {
        r.digest: r
        for r in s.execute(select(NodeImage).where(NodeImage.node_id == node.id)).scalars()
    }
    wanted = _mirror_rows(body)
    now = utcnow()
    changed = 0
    for digest, values in wanted.items():
        row = have.pop(digest, None)
        if row is not None and all(getattr(row, k) == v for k, v in values.items()):
            continue
        news = row is None or row.state != values["state"] or row.decided_at != values["decided_at"]
        if row is None:
            row = NodeImage(node_id=node.id, digest=digest)
            s.add(row)
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = now
        changed += 1
        if news:  # a decision or request the coordinator had not heard of
            audit.record(
                _STATE_ACTIONS[values["state"]],
                node,
                target_type="node",
                detail={
                    "digest": digest,
                    "image": values["image"],
                    "by": values["decided_by"] or values["requested_by"],
                    "reason": values["reason"][:500],
                },
            )
    for row in have.values():  # the node no longer holds these
        s.delete(row)
        changed += 1
    db.commit()
    return {
        "approvals": len(body["approvals"]),
        "requests": len(body["requests"]),
        "changed": changed,
    }


@bp.post("/node/runs/<int:run_id>/phase")
@endpoint(
    auth="node",
    body=PhaseIn,
    response=PhaseOut,
    errors=(404, 409),
    summary="Where an image run is (pulling, starting, running)",
)
def run_phase(run_id, body):
    run = node_run(db.session(), current_node(), run_id)
    s = db.session()
    if run.status in RUN_FINAL:
        raise Conflict(f"The run is already {run.status}.")
    row = s.get(ImageRunPhase, run.id) or ImageRunPhase(run_id=run.id)
    row.phase, row.detail, row.updated_at = body["phase"], body["detail"], utcnow()
    s.add(row)
    db.commit()
    return {"run_id": run.id, "phase": row.phase}


@bp.get("/node/images/decisions")
@endpoint(
    auth="node",
    response=NodeDecisionsOut,
    summary="Decisions queued at the coordinator for this node, oldest first",
)
def queued_decisions():
    node = current_node()
    stmt = (
        select(ImageDecision)
        .where(ImageDecision.node_id == node.id, ImageDecision.status == "queued")
        .order_by(ImageDecision.id)
    )
    decisions = db.session().execute(stmt).scalars().all()
    db.commit()
    return {"decisions": decisions}


@bp.post("/node/images/decisions/<int:decision_id>")
@endpoint(
    auth="node",
    body=DecisionAckIn,
    response=ImageDecisionOut,
    errors=(404, 409),
    summary="The node applied (or refused) a queued decision",
)
def ack_decision(decision_id, body):
    node = current_node()
    decision = db.session().get(ImageDecision, decision_id)
    if decision is None or decision.node_id != node.id:
        raise NotFound("No such decision.")
    if decision.status != "queued":
        if decision.status == body["status"]:
            return decision  # a repeat of the same answer
        raise Conflict(f"The decision is already {decision.status}.")
    decision.status = body["status"]
    decision.message = body["message"]
    decision.applied_at = utcnow()
    audit.record(
        f"image.decision.{body['status']}",
        decision,
        outcome="ok" if body["status"] == "applied" else "refused",
        collaboration_id=node.collaboration_id,
        detail={
            "node_id": node.id,
            "digest": decision.digest,
            "decision": decision.decision,
            "by": decision.requested_by,
            "message": body["message"][:500],
        },
    )
    db.commit()
    return decision
