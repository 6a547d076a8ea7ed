"""The node's image approval store: two tables in a SQLite file of the node's state dir.

- `image_approvals`: the steward's current word on each digest (one row per digest);
- `image_events`: every approval, rejection, revocation and change of rule, appended
  and never updated, so the history survives the current state being changed;
- `image_requests` (version 2): digests a run asked for that the steward has not
  decided on yet, with who asked, for which collaboration, and the image's labels.

The schema is small and node-local: it is made with `create_all` and versioned with
SQLite's `user_version` (a later change adds an upgrade step in `ensure_schema`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Integer, String, Text, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "SCHEMA_VERSION",
    "STATES",
    "Base",
    "ImageApproval",
    "ImageEvent",
    "ImageRequest",
    "configure_engine",
    "ensure_schema",
]

SCHEMA_VERSION = 2

#: What a steward's current word on a digest can be.
STATES = ("approved", "rejected", "revoked")


class Base(DeclarativeBase):
    pass


class ImageApproval(Base):
    __tablename__ = "image_approvals"

    digest: Mapped[str] = mapped_column(String(71), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    decided_by: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The reference the steward looked at (for people; decisions use the digest only).
    image: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # Collaboration ids the image may run for; NULL: any collaboration.
    collaborations: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)


class ImageEvent(Base):
    __tablename__ = "image_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    digest: Mapped[str] = mapped_column(String(71), index=True)
    action: Mapped[str] = mapped_column(String(16))  # approve|reject|revoke|restrict
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    image: Mapped[str | None] = mapped_column(String(512), nullable=True)
    collaborations: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)


class ImageRequest(Base):
    """The last run that asked for a digest nobody decided on (one row per digest)."""

    __tablename__ = "image_requests"

    digest: Mapped[str] = mapped_column(String(71), primary_key=True)
    image: Mapped[str | None] = mapped_column(String(512), nullable=True)
    requested_by: Mapped[str] = mapped_column(String(128))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    collaboration: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The image's labels when the node has it (title, description, source ...).
    labels: Mapped[dict | None] = mapped_column(JSON, nullable=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: the agent reads while the steward's CLI writes, neither waits for the other.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=FULL")  # a decision once made survives a crash
    cursor.close()


def configure_engine(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)


def ensure_schema(engine: Engine) -> None:
    """Make the tables if missing; refuse a store written by a newer version."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            version = conn.execute(text("PRAGMA user_version")).scalar_one()
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"The image approval store has schema version {version}; this "
                    f"dsgateway knows version {SCHEMA_VERSION} only. Upgrade dsgateway."
                )
        Base.metadata.create_all(conn)  # a version 1 store gains image_requests
        if engine.dialect.name == "sqlite":
            conn.execute(text(f"PRAGMA user_version = {SCHEMA_VERSION}"))
