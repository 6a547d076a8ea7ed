"""The life of a run, as database operations every caller shares (views, Celery tasks).

Every state change is a compare-and-set (`UPDATE ... WHERE status IN (...)`), so two
pollers never claim the same run, two deliveries of the same result store it once, and
a late answer cannot overwrite a run that has been expired or cancelled. On PostgreSQL
the second writer waits for the first one's row lock and then finds the status changed;
on SQLite writers are serialised by the database lock. Either way the row count says
who won.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, exists, or_, select, update
from sqlalchemy.orm import Session

from gateway.coordinator.models import RUN_FINAL, Node, Run, Task, utcnow

__all__ = [
    "PENDING_RUNS_OF_NODE",
    "all_runs_final",
    "claim_runs",
    "extend_leases",
    "finish_run",
    "node_run",
    "release_runs",
]

OPEN = ("pending", "started")

# Built once: an idle agent's poll runs this every time, and building the statement
# costs more CPU than running it (SQLAlchemy caches the compiled form by structure).
# PENDING_RUNS_OF_NODE: the runs a work poll of node `node_id` would claim at `now`
# (also asked, with limit 1, by the relay's work watch).
PENDING_RUNS_OF_NODE = (
    select(Run.id)
    .join(Task, Task.id == Run.task_id)
    .where(
        Run.node_id == bindparam("node_id"),
        Run.status == "pending",
        Task.status == "running",
        Task.deadline > bindparam("now"),
    )
)
_PENDING_FOR_NODE = PENDING_RUNS_OF_NODE.order_by(Run.id).limit(bindparam("limit"))


def claim_runs(
    s: Session, node: Node, limit: int, lease: float, agent_session: str | None = None
) -> list[Run]:
    """Mark up to `limit` pending runs of this node started (with a lease) and return
    them. With `agent_session`, only while that agent is the node's current one (see
    Node.agent_session). The caller commits."""
    now = utcnow()
    params = {"node_id": node.id, "now": now, "limit": limit}
    candidates = s.execute(_PENDING_FOR_NODE, params).scalars().all()
    if not candidates:
        return []
    claimed: list[int] = []
    current_agent = []
    if agent_session is not None:
        current_agent = [
            exists().where(
                Node.id == node.id,
                or_(Node.agent_session.is_(None), Node.agent_session == agent_session),
            )
        ]
    for run_id in candidates:
        result = s.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "pending", *current_agent)
            .values(
                status="started",
                started_at=now,
                lease_expires=now + timedelta(seconds=lease),
                attempts=Run.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            claimed.append(run_id)
    if not claimed:
        return []
    runs = s.execute(select(Run).where(Run.id.in_(claimed)).order_by(Run.id)).scalars().all()
    for run in runs:
        s.refresh(run)
    return list(runs)


def finish_run(
    s: Session,
    run: Run,
    status: str,
    result: Any,
    log: str,
    message: str,
    log_chars: int,
) -> tuple[bool, str]:
    """Store a node's answer. Returns (stored, current status): False when the run was
    already final (the caller decides whether that is a harmless repeat). A completed
    image run's output passes the coordinator's disclosure check first (image_runs)."""
    from gateway.coordinator.image_runs import disclosure_gate

    status, result, message = disclosure_gate(run, status, result, message)
    now = utcnow()
    outcome = s.execute(
        update(Run)
        .where(Run.id == run.id, Run.status.in_(OPEN))
        .values(
            status=status,
            result=result if status == "completed" else None,
            log=log[-log_chars:] if log_chars else "",
            message=message,
            finished_at=now,
            lease_expires=None,
        )
        .execution_options(synchronize_session=False)
    )
    s.refresh(run)
    return outcome.rowcount == 1, run.status


def node_run(s: Session, node: Node, run_id: int) -> Run:
    """A run of this node, for the node link's handlers; NotFound for another node's
    run too (a node sees only its own)."""
    from gateway.coordinator.errors import NotFound

    run = s.get(Run, run_id)
    if run is None or run.node_id != node.id:
        raise NotFound("No such run.")
    return run


def extend_leases(s: Session, node: Node, run_ids: Iterable[int], lease: float) -> list[int]:
    """Extend the leases of runs the agent says it is working on; return the ids it
    should stop (not its own, or no longer started)."""
    ids = sorted(set(run_ids))
    if not ids:
        return []
    now = utcnow()
    s.execute(
        update(Run)
        .where(Run.id.in_(ids), Run.node_id == node.id, Run.status == "started")
        .values(lease_expires=now + timedelta(seconds=lease))
        .execution_options(synchronize_session=False)
    )
    alive = set(
        s.execute(
            select(Run.id).where(Run.id.in_(ids), Run.node_id == node.id, Run.status == "started")
        ).scalars()
    )
    return [i for i in ids if i not in alive]


def release_runs(
    s: Session,
    node: Node,
    keep: Iterable[int],
    max_attempts: int,
    agent_session: str | None = None,
) -> list[int]:
    """A restarted agent gives back the runs it had claimed and no longer works on:
    pending again at once (instead of after their lease), or failed after
    `max_attempts` claims. Returns the ids made pending again."""
    keep = set(keep)
    now = utcnow()
    if agent_session is not None:
        s.execute(
            update(Node)
            .where(Node.id == node.id)
            .values(agent_session=agent_session)
            .execution_options(synchronize_session=False)
        )
    started = s.execute(
        select(Run.id, Run.attempts).where(Run.node_id == node.id, Run.status == "started")
    ).all()
    released = []
    for run_id, attempts in started:
        if run_id in keep:
            continue
        values: dict[str, Any] = {"status": "pending", "lease_expires": None}
        if attempts >= max_attempts:
            values = {
                "status": "failed",
                "finished_at": now,
                "lease_expires": None,
                "message": f"The node's agent restarted during the run ({attempts} attempts).",
            }
        done = s.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "started")
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount and values["status"] == "pending":
            released.append(run_id)
    return released


def all_runs_final(s: Session, task: Task) -> bool:
    """Every run of the task's current round is final (earlier rounds are, always)."""
    statuses: Sequence[str] = (
        s.execute(select(Run.status).where(Run.task_id == task.id, Run.round == task.round))
        .scalars()
        .all()
    )
    return len(statuses) >= len(task.target_node_ids or []) and all(
        st in RUN_FINAL for st in statuses
    )
