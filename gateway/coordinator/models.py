"""The coordinator's tables (SQLAlchemy 2, typed mappings).

Times are stored as naive UTC and come back as aware UTC (`UTCDateTime`), so SQLite and
PostgreSQL behave alike. Uniqueness that the task code relies on for idempotence is a
database constraint, not a hope: one run per (task, node, round), one result per task, one node
per (organisation, collaboration).

The schema is created by the Alembic migrations in `migrations/`, never by
`create_all`; a test checks that the migrations produce exactly these tables.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "IMAGE_DECISIONS",
    "IMAGE_DECISION_STATUSES",
    "IMAGE_PHASES",
    "IMAGE_STATES",
    "ROLE_NAMES",
    "RUN_FINAL",
    "RUN_STATUSES",
    "TASK_FINAL",
    "TASK_STATUSES",
    "AuditEvent",
    "Base",
    "Collaboration",
    "ImageDecision",
    "ImageRunPhase",
    "Node",
    "NodeImage",
    "NodeSettings",
    "Organization",
    "Result",
    "Role",
    "Run",
    "Task",
    "User",
    "utcnow",
]

ROLE_NAMES = ("admin", "researcher", "data_steward")
# Image runs end in the last three too (docs/client-images.md); their progress while
# `started` is the phase in ImageRunPhase.
RUN_STATUSES = (
    "pending",
    "started",
    "completed",
    "failed",
    "expired",
    "cancelled",
    "not approved",
    "killed",
    "timed out",
)
RUN_FINAL = frozenset(
    {"completed", "failed", "expired", "cancelled", "not approved", "killed", "timed out"}
)
TASK_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TASK_FINAL = frozenset({"completed", "failed", "cancelled"})


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


collaboration_members = Table(
    "collaboration_members",
    Base.metadata,
    Column(
        "collaboration_id",
        ForeignKey("collaborations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "organization_id",
        ForeignKey("organizations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
)


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    collaborations: Mapped[list[Collaboration]] = relationship(
        secondary=collaboration_members, back_populates="organizations"
    )


class Collaboration(Base):
    __tablename__ = "collaborations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    organizations: Mapped[list[Organization]] = relationship(
        secondary=collaboration_members, back_populates="collaborations"
    )
    nodes: Mapped[list[Node]] = relationship(back_populates="collaboration")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    email: Mapped[str | None] = mapped_column(String(256))
    password_hash: Mapped[str] = mapped_column(String(256))
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped on password change or logout-everywhere: refresh tokens carry it.
    token_generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login: Mapped[datetime | None] = mapped_column()

    organization: Mapped[Organization] = relationship()
    roles: Mapped[list[Role]] = relationship(
        back_populates="user", cascade="all, delete-orphan", order_by="Role.id"
    )


class Role(Base):
    """A role held by a user over a scope: a collaboration (if set), else an
    organisation and every collaboration it belongs to, else everything."""

    __tablename__ = "roles"
    __table_args__ = (CheckConstraint(_in("name", ROLE_NAMES), name="name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(32))
    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    collaboration_id: Mapped[int | None] = mapped_column(
        ForeignKey("collaborations.id", ondelete="CASCADE")
    )

    user: Mapped[User] = relationship(back_populates="roles")


class Node(Base):
    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("organization_id", "collaboration_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    collaboration_id: Mapped[int] = mapped_column(ForeignKey("collaborations.id"), index=True)
    # SHA-256 of the key: keys are 256-bit random, so a fast hash is as good as a KDF
    # and lets a request find its node by one indexed lookup.
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_prefix: Mapped[str] = mapped_column(String(16))
    # The `aud` of relay tokens for this node (its gateway's tokens.audience).
    audience: Mapped[str] = mapped_column(String(256))
    # Projects of this node the collaboration's researchers may read (relay tokens).
    projects: Mapped[list[Any]] = mapped_column(default=list)
    last_seen: Mapped[datetime | None] = mapped_column()
    # The agent process that last (re)started for this node: polls of any other one
    # (a killed agent's poll still waiting, a second agent with the same key) get no work.
    agent_session: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    organization: Mapped[Organization] = relationship()
    collaboration: Mapped[Collaboration] = relationship(back_populates="nodes")


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (CheckConstraint(_in("status", TASK_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    collaboration_id: Mapped[int] = mapped_column(ForeignKey("collaborations.id"), index=True)
    creator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    algorithm: Mapped[str] = mapped_column(String(128))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Node ids fixed at creation, so that a repeated dispatch targets the same nodes.
    target_node_ids: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    deadline: Mapped[datetime] = mapped_column()
    # Iterative algorithms: the round now running (0 is the first) and the central
    # algorithm's state between rounds. Single-round tasks stay at round 0, state None.
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    state: Mapped[Any | None] = mapped_column(JSON)

    collaboration: Mapped[Collaboration] = relationship()
    creator: Mapped[User | None] = relationship()
    runs: Mapped[list[Run]] = relationship(back_populates="task", order_by="Run.id")
    result: Mapped[Result | None] = relationship(back_populates="task")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("task_id", "node_id", "round"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The node's parameters for this round (None: the task's parameters).
    parameters: Mapped[Any | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    lease_expires: Mapped[datetime | None] = mapped_column()
    log: Mapped[str] = mapped_column(Text, default="")
    message: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[Any | None] = mapped_column(JSON)

    task: Mapped[Task] = relationship(back_populates="runs")
    node: Mapped[Node] = relationship()


class Result(Base):
    """The central result of a task: its node results combined by the algorithm's
    aggregation function."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), unique=True)
    value: Mapped[Any | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    task: Mapped[Task] = relationship(back_populates="result")


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_type: Mapped[str] = mapped_column(String(16))  # user | node | system
    actor_id: Mapped[int | None] = mapped_column()
    actor_name: Mapped[str] = mapped_column(String(128), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16), default="ok")
    organization_id: Mapped[int | None] = mapped_column()
    collaboration_id: Mapped[int | None] = mapped_column(index=True)
    target_type: Mapped[str] = mapped_column(String(32), default="")
    target_id: Mapped[int | None] = mapped_column()
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    remote: Mapped[str] = mapped_column(String(64), default="")


# ------------------------------------------------------------------ client images
# (docs/client-images.md). The nodes' approval stores are the authority; these tables
# are what the coordinator was told (NodeImage), what it was asked to deliver
# (ImageDecision) and how far an image run has come (ImageRunPhase).

IMAGE_STATES = ("approved", "rejected", "revoked", "pending")
IMAGE_DECISIONS = ("approve", "reject", "revoke")
IMAGE_DECISION_STATUSES = ("queued", "applied", "refused")
IMAGE_PHASES = ("pulling", "starting", "running")


class NodeImage(Base):
    """A node's word on one image digest, as its agent last mirrored it."""

    __tablename__ = "node_images"
    __table_args__ = (
        UniqueConstraint("node_id", "digest"),
        CheckConstraint(_in("state", IMAGE_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(71), index=True)
    state: Mapped[str] = mapped_column(String(16))
    image: Mapped[str | None] = mapped_column(String(512))
    reason: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str] = mapped_column(String(128), default="")
    decided_at: Mapped[datetime | None] = mapped_column()
    # Collaboration ids an approval covers; None: any.
    collaborations: Mapped[list[Any] | None] = mapped_column(JSON)
    requested_by: Mapped[str | None] = mapped_column(String(128))
    requested_collaboration_id: Mapped[int | None] = mapped_column()
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    node: Mapped[Node] = relationship()


class ImageDecision(Base):
    """A steward's decision made at the coordinator, waiting for (or taken by) the node."""

    __tablename__ = "image_decisions"
    __table_args__ = (
        CheckConstraint(_in("decision", IMAGE_DECISIONS), name="decision"),
        CheckConstraint(_in("status", IMAGE_DECISION_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(71))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    image: Mapped[str | None] = mapped_column(String(512))
    collaborations: Mapped[list[Any] | None] = mapped_column(JSON)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    requested_by: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    applied_at: Mapped[datetime | None] = mapped_column()


class ImageRunPhase(Base):
    """Where a started image run is (pulling, starting, running), as its node reports."""

    __tablename__ = "image_run_phases"
    __table_args__ = (CheckConstraint(_in("phase", IMAGE_PHASES), name="phase"),)

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    phase: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class NodeSettings(Base):
    """A station's profiles, disclosure settings and agent policy, as its agent last
    reported them.

    One row per node, replaced whole by each report; the station's own node.yaml and
    agent.yaml stay the authority (nothing here changes what the station does)."""

    __tablename__ = "node_settings"

    node_id: Mapped[int] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    # [{name, packages, package_whitelist, blacklist, methods, settings, withheld}, ...]
    profiles: Mapped[list[Any]] = mapped_column(JSON)
    # {collaborations, users, algorithms, projects, profile} of agent.yaml's `policy:`;
    # None: the agent did not report it (older than the policy report).
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reported_at: Mapped[datetime] = mapped_column(default=utcnow)
