"""Fixtures for the coordinator's tests, on SQLite and on PostgreSQL.

`database` is parametrised: every test that uses it (through `app`) runs once per
backend. Each backend's database is made once per test session (PostgreSQL: a database
with a unique name, dropped at the end, so parallel sessions never collide) and brought
to the schema by the Alembic migrations, never `create_all`; between tests the tables
are emptied.

PostgreSQL is expected at DSGATEWAY_TEST_POSTGRES (default
postgresql+psycopg://postgres@127.0.0.1:5432/test; `scripts/ensure-services.sh` starts
it). It is a failure, not a skip, when it is not there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, make_url, text

if TYPE_CHECKING:
    from flask import Flask

POSTGRES_ENV = "DSGATEWAY_TEST_POSTGRES"
POSTGRES_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_ENV = "DSGATEWAY_TEST_REDIS"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"
TEST_RELAY_SECRET = "relay-test-secret-0123456789abcdef0123456789"
PASSWORD = "correct horse battery"


@dataclass
class Database:
    backend: str
    url: str
    tables: list[str] = field(default_factory=list)

    def empty(self) -> None:
        engine = create_engine(self.url)
        try:
            # DELETE, children first: on tables this small it is much faster than
            # TRUNCATE on PostgreSQL. Ids keep counting up; no test relies on them.
            with engine.begin() as conn:
                for name in self.tables:
                    conn.execute(text(f"DELETE FROM {name}"))  # noqa: S608 (our names)
        finally:
            engine.dispose()


def _postgres_server_url() -> str:
    return os.environ.get(POSTGRES_ENV, POSTGRES_DEFAULT)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; its URL."""
    server = make_url(_postgres_server_url())
    name = f"dsgw_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as err:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {server.render_as_string(hide_password=True)} "
            f"({type(err).__name__}): run scripts/ensure-services.sh"
        )
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database(request, tmp_path_factory) -> Database:
    from gateway.coordinator.migrate import upgrade
    from gateway.coordinator.models import Base

    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("coordinator-db") / "coordinator.db"
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_database")
    upgrade(url)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)] + ["audit_events"]
    return Database(request.param, url, list(dict.fromkeys(tables)))


def coordinator_settings(database: Database, instance: Path, **extra) -> dict:
    return {
        "TESTING": True,
        "DATABASE_URL": database.url,
        "INSTANCE_PATH": str(instance),
        "SECRET_KEY": "test-signing-key-" + "x" * 32,
        "PASSWORD_HASH_METHOD": "scrypt:1024:8:1",  # cheap in tests, same code path
        "CELERY_TASK_ALWAYS_EAGER": True,
        "RELAY_SECRET": TEST_RELAY_SECRET,
        "RELAY_ISSUER": "https://coordinator.test",
        "LONG_POLL_MAX": 5,
        **extra,
    }


@pytest.fixture
def app(database, tmp_path):
    from gateway.coordinator import create_app, db

    database.empty()
    app = create_app(coordinator_settings(database, tmp_path / "instance"))
    yield app
    db.engine(app).dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


# ------------------------------------------------------------------ building a world


class World:
    """Makes organisations, users with roles, collaborations and nodes directly in the
    database (fast), and access tokens for its users, for the API tests."""

    def __init__(self, app, client):
        self.app = app
        self.client = client
        self.keys: dict[str, str] = {}  # node name -> API key

    def _session(self):
        from gateway.coordinator import db

        return db.session()

    def org(self, name: str):
        from gateway.coordinator import db
        from gateway.coordinator.models import Organization

        with self.app.app_context():
            org = Organization(name=name)
            db.session().add(org)
            db.session().commit()
            return org.id

    def user(self, name: str, org_id: int, *roles: tuple, password: str = PASSWORD) -> int:
        """roles: (name, organization_id, collaboration_id) tuples."""
        from gateway.coordinator import db
        from gateway.coordinator.models import Role, User
        from gateway.coordinator.security import hash_password

        with self.app.app_context():
            user = User(
                username=name,
                organization_id=org_id,
                password_hash=hash_password(password, self.app.config["PASSWORD_HASH_METHOD"]),
            )
            user.roles = [Role(name=r, organization_id=o, collaboration_id=c) for r, o, c in roles]
            db.session().add(user)
            db.session().commit()
            return user.id

    def collaboration(self, name: str, *org_ids: int) -> int:
        from gateway.coordinator import db
        from gateway.coordinator.models import Collaboration, Organization

        with self.app.app_context():
            s = db.session()
            orgs = [s.get(Organization, i) for i in org_ids]
            collab = Collaboration(name=name, organizations=orgs)
            s.add(collab)
            s.commit()
            return collab.id

    def node(self, name: str, org_id: int, collab_id: int, projects=("demo",)) -> int:
        from gateway.coordinator import db
        from gateway.coordinator.models import Node
        from gateway.coordinator.security import hash_api_key, new_api_key

        key = new_api_key()
        with self.app.app_context():
            node = Node(
                name=name,
                organization_id=org_id,
                collaboration_id=collab_id,
                api_key_hash=hash_api_key(key),
                api_key_prefix=key[:8],
                audience=f"aud-{name}",
                projects=list(projects),
            )
            db.session().add(node)
            db.session().commit()
            self.keys[name] = key
            return node.id

    def token(self, username: str) -> str:
        from sqlalchemy import select

        from gateway.coordinator.app import services
        from gateway.coordinator.models import User

        with self.app.app_context():
            user = self._session().execute(select(User).where(User.username == username)).scalar()
            return services(self.app).tokens.access_token(user)

    def as_user(self, username: str) -> dict:
        return {"Authorization": f"Bearer {self.token(username)}"}

    def as_node(self, name: str) -> dict:
        return {"X-Api-Key": self.keys[name]}

    def count(self, model) -> int:
        from sqlalchemy import func, select

        with self.app.app_context():
            return self._session().execute(select(func.count()).select_from(model)).scalar()


# ------------------------------------------------------------ a coordinator of its own


@contextmanager
def sqlite_coordinator(folder: Path, secret_key: str, **settings) -> Iterator[Flask]:
    """A coordinator app of a test's (or a module's) own: a fresh SQLite database in
    ``folder``, brought to the schema by the migrations as a deployment's is, and the
    instance folder there too. ``settings`` add to (or replace) the few every such app
    needs. The database engine is disposed on the way out."""
    from gateway.coordinator import create_app, db
    from gateway.coordinator.migrate import upgrade

    url = f"sqlite:///{folder / 'coordinator.db'}"
    upgrade(url)
    app = create_app(
        {
            "DATABASE_URL": url,
            "INSTANCE_PATH": str(folder / "instance"),
            "SECRET_KEY": secret_key,
            "PASSWORD_HASH_METHOD": "scrypt:1024:8:1",  # cheap in tests, same code path
            **settings,
        }
    )
    try:
        yield app
    finally:
        db.engine(app).dispose()


@contextmanager
def served_world(folder: Path, secret_key: str, threads: int = 8, **settings) -> Iterator[World]:
    """A `sqlite_coordinator` served over real HTTP on a free loopback port
    (``world.server``, a BackgroundServer: its ``.url``, ``stop()``, ``start()``), and an
    empty `World` on it for the test to fill. The server is stopped on the way out."""
    from gateway.coordinator.server import BackgroundServer

    with sqlite_coordinator(folder, secret_key, **settings) as app:
        world = World(app, app.test_client())
        world.server = BackgroundServer(app, threads=threads).start()
        try:
            yield world
        finally:
            world.server.stop()


@dataclass
class Federation:
    """Two collaborations: `study` (hospitals A and B, a node each) and `other`
    (hospital C, one node). Users: root (superuser), alice (researcher in study),
    steward_a (data steward of A), admin_a (admin of organisation A), coord (admin of
    the study collaboration), carl (researcher in other)."""

    world: World
    org_a: int
    org_b: int
    org_c: int
    study: int
    other: int
    node_a: int
    node_b: int
    node_c: int


@pytest.fixture
def world(app, client) -> World:
    return World(app, client)


@pytest.fixture
def fed(world) -> Federation:
    w = world
    a, b, c = w.org("Hospital A"), w.org("Hospital B"), w.org("Registry C")
    study = w.collaboration("study", a, b)
    other = w.collaboration("other", c)
    na = w.node("node-a", a, study)
    nb = w.node("node-b", b, study)
    nc = w.node("node-c", c, other)
    w.user("root", a, ("admin", None, None))
    w.user("alice", a, ("researcher", None, study))
    w.user("steward_a", a, ("data_steward", a, study))
    w.user("admin_a", a, ("admin", a, None))
    w.user("coord", b, ("admin", None, study))
    w.user("carl", c, ("researcher", c, None))
    w.user("nobody", b)
    return Federation(w, a, b, c, study, other, na, nb, nc)
