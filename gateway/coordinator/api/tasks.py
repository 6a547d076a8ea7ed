"""Tasks (one algorithm run on some nodes of a collaboration), their runs (one per
node) and their central result.

Researchers of a collaboration create tasks in it; everyone with a role in it sees
its tasks, runs and results; the creator and the collaboration's admins cancel.
Creating a task writes it (pending) in one transaction, then queues its dispatch: if
the broker is away, the task stays pending until the sweep dispatches it.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, current_app
from sqlalchemy import select, update

from gateway.coordinator import audit, db
from gateway.coordinator.api.endpoint import endpoint
from gateway.coordinator.authz import current_user
from gateway.coordinator.errors import BadRequest, Conflict, Forbidden, NotFound
from gateway.coordinator.models import TASK_FINAL, Collaboration, Run, Task, utcnow
from gateway.coordinator.runs import OPEN
from gateway.coordinator.schemas import ResultOut, RunOut, TaskIn, TaskOut, TaskQuery

bp = Blueprint("tasks", __name__)


def visible_task(task_id: int) -> Task:
    task = db.session().get(Task, task_id)
    if task is None or not current_user().roles_in(task.collaboration):
        raise NotFound("No such task.")
    return task


@bp.get("/tasks")
@endpoint(query=TaskQuery, response=TaskOut, many=True, summary="Tasks, newest first")
def list_tasks(query):
    ids = current_user().visible_collaboration_ids()
    stmt = select(Task).order_by(Task.id.desc())
    if ids is not None:
        stmt = stmt.where(Task.collaboration_id.in_(ids))
    for key in ("collaboration_id", "status"):
        if key in query:
            stmt = stmt.where(getattr(Task, key) == query[key])
    stmt = stmt.limit(query["limit"]).offset(query["offset"])
    return db.session().execute(stmt).scalars().all()


@bp.post("/tasks")
@endpoint(
    body=TaskIn,
    response=TaskOut,
    status=201,
    errors=(403, 404),
    summary="Create a task (researchers of the collaboration)",
)
def create_task(body):
    from gateway.coordinator.app import services
    from gateway.coordinator.tasks import queue

    principal = current_user()
    s = db.session()
    collab = s.get(Collaboration, body["collaboration_id"])
    principal.require_in(collab, {"researcher"})
    problems = services().aggregators.validate(body["algorithm"], body["parameters"])
    if problems:
        raise BadRequest(
            f"Invalid parameters for {body['algorithm']}.",
            errors={"parameters": problems},
        )
    nodes = {n.id for n in collab.nodes}
    if body["node_ids"] is None:
        targets = sorted(nodes)
    else:
        targets = sorted(set(body["node_ids"]))
        strangers = [n for n in targets if n not in nodes]
        if strangers:
            raise BadRequest(
                "Invalid request body.",
                errors={"node_ids": [f"Not nodes of this collaboration: {strangers}"]},
            )
    if not targets:
        raise BadRequest("The collaboration has no nodes to run the task on.")
    if body["algorithm"] == "image":  # pinned by digest, as POST /image-tasks checks
        from gateway.coordinator.api.images import checked_image_parameters

        body["parameters"] = checked_image_parameters(body["parameters"], collab, targets)
    timeout = body["timeout"] or int(current_app.config["TASK_DEFAULT_TIMEOUT"])
    now = utcnow()
    task = Task(
        name=body["name"],
        collaboration=collab,
        creator_id=principal.user.id,
        algorithm=body["algorithm"],
        parameters=body["parameters"],
        target_node_ids=targets,
        status="pending",
        created_at=now,
        deadline=now + timedelta(seconds=timeout),
    )
    s.add(task)
    audit.record("task.create", task, detail={"algorithm": task.algorithm, "nodes": targets})
    db.commit()
    queue("dispatch", task.id)
    s.refresh(task)
    return task


@bp.get("/tasks/<int:task_id>")
@endpoint(response=TaskOut, errors=(404,), summary="One task, with its runs counted by status")
def get_task(task_id):
    return visible_task(task_id)


@bp.post("/tasks/<int:task_id>/cancel")
@endpoint(
    response=TaskOut,
    errors=(403, 404, 409),
    summary="Cancel a task (its creator, the collaboration's admins)",
)
def cancel_task(task_id):
    principal = current_user()
    task = visible_task(task_id)
    if task.creator_id != principal.user.id and not principal.administers(task.collaboration):
        raise Forbidden("Only the task's creator or the collaboration's admins may cancel it.")
    s = db.session()
    now = utcnow()
    done = s.execute(
        update(Task)
        .where(Task.id == task.id, Task.status.notin_(TASK_FINAL))
        .values(
            status="cancelled", finished_at=now, message=f"Cancelled by {principal.user.username}."
        )
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:
        s.refresh(task)
        raise Conflict(f"The task is already {task.status}.")
    s.execute(
        update(Run)
        .where(Run.task_id == task.id, Run.status.in_(OPEN))
        .values(status="cancelled", finished_at=now, message="The task was cancelled.")
        .execution_options(synchronize_session=False)
    )
    audit.record("task.cancel", task)
    db.commit()
    s.refresh(task)
    return task


@bp.get("/tasks/<int:task_id>/runs")
@endpoint(response=RunOut, many=True, errors=(404,), summary="The runs of a task")
def task_runs(task_id):
    task = visible_task(task_id)
    return (
        db.session()
        .execute(select(Run).where(Run.task_id == task.id).order_by(Run.id))
        .scalars()
        .all()
    )


@bp.get("/tasks/<int:task_id>/result")
@endpoint(response=ResultOut, errors=(404,), summary="The central result of a completed task")
def task_result(task_id):
    task = visible_task(task_id)
    if task.result is None:
        raise NotFound(f"The task has no result ({task.status}).")
    return task.result


@bp.get("/runs/<int:run_id>")
@endpoint(response=RunOut, errors=(404,), summary="One run")
def get_run(run_id):
    run = db.session().get(Run, run_id)
    if run is None or not current_user().roles_in(run.task.collaboration):
        raise NotFound("No such run.")
    return run
