"""Celery tasks of the coordinator. All state is in the database; each task reads what
is there and moves it forward, so running one twice (a duplicate delivery, a retry
after a worker died, the sweep catching up) changes nothing the second time:

- `dispatch(task_id)`: one run per target node (the unique (task, node) constraint
  makes a second insert fail, not duplicate), task -> running, wake the nodes' polls.
- `finalize(task_id)`: when every run of the task's current round is final, combine
  the node results with the algorithm's aggregation function into the task's one
  result (unique per task) and mark the task completed, or failed with the reasons of
  the runs that failed. An iterative algorithm may instead ask for another round: the
  task's round number moves on by a conditional update (one caller wins) and the new
  round's runs are inserted in the same transaction (unique per (task, node, round)).
- `sweep()`: periodic. Expires runs past their task's deadline, gives runs whose agent
  went silent back to pending (or fails them after RUN_MAX_ATTEMPTS), dispatches tasks
  whose dispatch message was lost, finalizes tasks whose finalize message was lost.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from gateway.coordinator import db
from gateway.coordinator.aggregation import NextRound
from gateway.coordinator.models import (
    TASK_FINAL,
    AuditEvent,
    Node,
    Result,
    Run,
    Task,
    utcnow,
)
from gateway.coordinator.runs import OPEN, all_runs_final

__all__ = ["dispatch", "finalize", "queue", "sweep"]

log = logging.getLogger(__name__)


def _services():
    from gateway.coordinator.app import services

    return services()


def _audit(s, action: str, task: Task, outcome: str = "ok", **detail: Any) -> None:
    s.add(
        AuditEvent(
            actor_type="system",
            actor_name="coordinator",
            action=action,
            outcome=outcome,
            collaboration_id=task.collaboration_id,
            target_type="task",
            target_id=task.id,
            detail=detail,
        )
    )


# ------------------------------------------------------------------ dispatch


def dispatch_task(task_id: int) -> list[int]:
    """Create the missing runs of the first round; returns the node ids notified. (The
    runs of later rounds are made with the round, in `_advance`'s transaction.)"""
    s = db.session()
    task = s.get(Task, task_id, populate_existing=True)
    if task is None or task.status in TASK_FINAL or task.round != 0:
        return []
    have = set(
        s.execute(select(Run.node_id).where(Run.task_id == task_id, Run.round == 0)).scalars()
    )
    missing = [n for n in task.target_node_ids if n not in have]
    for node_id in missing:
        s.add(Run(task_id=task_id, node_id=node_id, round=0, status="pending"))
    if task.status == "pending":
        task.status = "running"
        task.dispatched_at = utcnow()
        _audit(s, "task.dispatch", task, nodes=list(task.target_node_ids))
    try:
        s.commit()
    except IntegrityError:  # another delivery of this message got there first
        s.rollback()
        return []
    if missing:
        _services().notifier.notify(missing)
    return missing


@shared_task(name="gateway.coordinator.tasks.dispatch", acks_late=True)
def dispatch(task_id: int) -> None:
    dispatch_task(task_id)


# ------------------------------------------------------------------ finalize


def _failure_reason(runs: list[Run], names: dict[int, str]) -> str:
    parts = []
    for run in runs:
        if run.status == "completed":
            continue
        why = run.message or run.status
        parts.append(f"{names.get(run.node_id, run.node_id)}: {run.status} ({why})")
    return "; ".join(parts)[:4000]


def finalize_task(task_id: int) -> str | None:
    """When every run of the task's current round is in: the central step. Returns the
    task's final status, or "round N" when it started round N, if this call did it;
    None if there was nothing to do or another call got there first."""
    s = db.session()
    task = s.get(Task, task_id, populate_existing=True)
    if task is None or task.status in TASK_FINAL or not all_runs_final(s, task):
        return None
    current = task.round
    runs = (
        s.execute(select(Run).where(Run.task_id == task_id, Run.round == current)).scalars().all()
    )
    value: Any = None
    if all(r.status == "completed" for r in runs):
        try:
            outcome = _services().aggregators.step(
                task.algorithm,
                {r.node_id: r.result for r in runs},
                task.parameters,
                task.state,
                current,
            )
            if isinstance(outcome, NextRound):
                json.dumps([outcome.parameters, outcome.state])  # fail here, not in the DB
                return _advance(s, task, current, outcome)
            value = outcome.result
            status, message = "completed", ""
        except Exception as err:
            log.exception("aggregation of task %s failed", task_id)
            status, message = "failed", f"Central aggregation failed: {err}"[:4000]
    else:
        names = dict(
            s.execute(
                select(Node.id, Node.name).where(Node.id.in_([r.node_id for r in runs]))
            ).all()
        )
        status, message = "failed", _failure_reason(list(runs), names)
        if current:
            message = f"Round {current}: {message}"[:4000]
    changed = s.execute(
        update(Task)
        .where(Task.id == task_id, Task.status.in_(("pending", "running")), Task.round == current)
        .values(status=status, message=message, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:
        s.rollback()
        return None
    if status == "completed":
        s.add(Result(task_id=task_id, value=value))
    s.refresh(task)
    _audit(s, "task.finish", task, outcome="ok" if status == "completed" else "failed")
    try:
        s.commit()
    except IntegrityError:  # a concurrent finalize stored the result
        s.rollback()
        return None
    return status


def _advance(s, task: Task, current: int, outcome: NextRound) -> str | None:
    """Start round `current + 1`: the conditional update on the round number lets one
    caller through, and the unique (task, node, round) constraint stops a second set
    of runs whatever happens."""
    nxt = current + 1
    changed = s.execute(
        update(Task)
        .where(Task.id == task.id, Task.status == "running", Task.round == current)
        .values(round=nxt, state=outcome.state)
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:
        s.rollback()
        return None
    for node_id in task.target_node_ids:
        s.add(
            Run(
                task_id=task.id,
                node_id=node_id,
                round=nxt,
                parameters=outcome.parameters,
                status="pending",
            )
        )
    _audit(s, "task.round", task, round=nxt)
    try:
        s.commit()
    except IntegrityError:
        s.rollback()
        return None
    _services().notifier.notify(list(task.target_node_ids))
    return f"round {nxt}"


@shared_task(name="gateway.coordinator.tasks.finalize", acks_late=True)
def finalize(task_id: int) -> None:
    finalize_task(task_id)


# ------------------------------------------------------------------ sweep


def sweep_once() -> dict[str, int]:
    s = db.session()
    cfg = current_app.config
    now = utcnow()
    counts = {
        "expired": 0,
        "requeued": 0,
        "lost": 0,
        "dispatched": 0,
        "finalized": 0,
        "advanced": 0,
    }
    touched: set[int] = set()

    # Runs of tasks past their deadline.
    overdue = s.execute(
        select(Run.id, Run.task_id)
        .join(Task, Task.id == Run.task_id)
        .where(Run.status.in_(OPEN), Task.deadline <= now)
    ).all()
    for run_id, task_id in overdue:
        done = s.execute(
            update(Run)
            .where(Run.id == run_id, Run.status.in_(OPEN))
            .values(status="expired", finished_at=now, message="The task's deadline passed.")
            .execution_options(synchronize_session=False)
        )
        counts["expired"] += done.rowcount
        touched.add(task_id)

    # Started runs whose agent stopped renewing the lease: again, or give up.
    silent = s.execute(
        select(Run.id, Run.task_id, Run.attempts).where(
            Run.status == "started", Run.lease_expires < now
        )
    ).all()
    requeued_nodes: set[int] = set()
    for run_id, task_id, attempts in silent:
        if attempts < int(cfg["RUN_MAX_ATTEMPTS"]):
            values = {"status": "pending", "lease_expires": None}
            key = "requeued"
        else:
            values = {
                "status": "failed",
                "finished_at": now,
                "lease_expires": None,
                "message": f"The node stopped answering ({attempts} attempts).",
            }
            key = "lost"
            touched.add(task_id)
        done = s.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "started", Run.lease_expires < now)
            .values(**values)
            .returning(Run.node_id)
        ).all()
        counts[key] += len(done)
        if key == "requeued":
            requeued_nodes.update(n for (n,) in done)
    s.commit()
    if requeued_nodes:
        _services().notifier.notify(requeued_nodes)

    # Tasks whose dispatch never happened.
    stale = s.execute(
        select(Task.id).where(
            Task.status == "pending",
            Task.created_at < now - timedelta(seconds=float(cfg["REDISPATCH_AFTER"])),
        )
    ).scalars()
    for task_id in list(stale):
        if dispatch_task(task_id):
            counts["dispatched"] += 1

    # Running tasks with every run in: finalize (covers lost finalize messages too).
    running = s.execute(select(Task.id).where(Task.status == "running")).scalars().all()
    for task_id in set(running) | touched:
        done = finalize_task(task_id)
        if done:
            counts["advanced" if done.startswith("round") else "finalized"] += 1
    return counts


@shared_task(name="gateway.coordinator.tasks.sweep", acks_late=True)
def sweep() -> dict[str, int]:
    return sweep_once()


def queue(name: str, *args: Any) -> bool:
    """Queue task `name` ("dispatch", "finalize") of this app's Celery, but a broker that
    is away is not the caller's failure: the database already holds the state, and
    `sweep` will catch up. Returns True if queued.

    The task is looked up on the Flask app's own Celery app, not through the
    `shared_task` proxy (which follows Celery's default app, the newest one made)."""
    celery = current_app.extensions["celery"]
    try:
        celery.tasks[f"gateway.coordinator.tasks.{name}"].delay(*args)
        return True
    except Exception as err:
        log.warning("could not queue %s%r (%s); the sweep will catch up", name, args, err)
        return False
