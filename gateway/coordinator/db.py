"""One SQLAlchemy engine per app and one session per request (or per Celery task).

A request works in one transaction: views call `commit()` once, at the end, when
everything they meant to write is in the session; anything not committed is rolled back
when the app context ends, so a failing request leaves nothing half-written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app, g
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.coordinator.errors import Conflict

__all__ = ["commit", "engine", "init_app", "make_engine", "session", "session_scope"]

_EXT = "dsgateway_coordinator_db"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # Several request threads share the file; wait for the writer instead of failing.
        eng = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(eng, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return eng
    return create_engine(url, pool_pre_ping=True)


def init_app(app: Flask) -> None:
    url = app.config["DATABASE_URL"]
    eng = make_engine(url)
    app.extensions[_EXT] = sessionmaker(bind=eng, expire_on_commit=False)
    app.teardown_appcontext(_close_session)


def engine(app: Flask | None = None) -> Engine:
    factory = (app or current_app).extensions[_EXT]
    return factory.kw["bind"]


def session() -> Session:
    """The session of the current app context (a request or a task)."""
    s = g.get("_db_session")
    if s is None:
        s = current_app.extensions[_EXT]()
        g._db_session = s
    return s


def commit() -> None:
    """Commit the request's one transaction; a unique or foreign-key clash becomes 409."""
    try:
        session().commit()
    except IntegrityError:
        session().rollback()
        raise Conflict("That conflicts with existing data.") from None


@contextmanager
def session_scope(app: Flask | None = None) -> Iterator[Session]:
    """A separate session for writes that must survive the request's rollback (the
    audit record of a refused login)."""
    s = (app or current_app).extensions[_EXT]()
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()


def _close_session(_exc: BaseException | None) -> None:
    s = g.pop("_db_session", None)
    if s is not None:
        s.rollback()
        s.close()
