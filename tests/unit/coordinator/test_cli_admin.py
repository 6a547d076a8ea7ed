"""`dsgateway coordinator organizations|users|collaborations|nodes|tokens`: the
operator's commands, run with click's CliRunner against the same database (SQLite and
PostgreSQL) as an app whose API and relay check what they wrote: a printed node key
works on the node link, a printed relay token passes the relay's check and the node
gateway's, and refused input writes nothing."""

from __future__ import annotations

import json
from datetime import timedelta

import jwt
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from gateway.coordinator import db
from gateway.coordinator.cli import coordinator
from gateway.coordinator.models import (
    AuditEvent,
    Base,
    Collaboration,
    Node,
    Organization,
    Role,
    Run,
    Task,
    User,
    utcnow,
)
from gateway.coordinator.relay.app import create_relay_app
from tests.unit.coordinator.fixtures import TEST_RELAY_SECRET, coordinator_settings

NEW_PASSWORD = "a new long password"


@pytest.fixture
def cli(app, database):
    """Runs `dsgateway coordinator ARGS` with the settings of `app`, in the environment."""
    settings = coordinator_settings(database, app.instance_path)
    env = {f"DSGATEWAY_COORD_{k}": str(v) for k, v in settings.items() if k != "TESTING"}

    def run(*args, ok=True, password=None):
        extra = {"DSGATEWAY_USER_PASSWORD": password} if password else {}
        r = CliRunner().invoke(coordinator, list(args), env={**env, **extra})
        if ok:
            assert r.exit_code == 0, r.output
        else:
            assert r.exit_code == 1, r.output
            assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
        return r

    return run


def counts(app) -> dict[str, int]:
    with app.app_context():
        s = db.session()
        return {
            t.name: s.execute(select(func.count()).select_from(t)).scalar()
            for t in Base.metadata.sorted_tables
        }


def login(client, username, password):
    return client.post("/api/auth/login", json={"username": username, "password": password})


def test_organisations_collaborations_and_users_from_the_command_line(app, client, cli):
    cli("organizations", "create", "Hospital A", "--description", "first")
    cli("organizations", "create", "Hospital B")
    r = cli("collaborations", "create", "study", "--organization", "Hospital A", "--json")
    study = json.loads(r.output)
    cli("collaborations", "add-organization", "study", "Hospital B")
    cli("users", "create", "alice", "--organization", "Hospital A", password=NEW_PASSWORD)
    cli("users", "roles", "add", "alice", "researcher", "--collaboration", "study")
    cli(
        "users",
        "create",
        "sam",
        "--organization",
        "Hospital B",
        "--email",
        "s@b.org",
        password="x" * 9,
    )
    cli("users", "roles", "add", "sam", "data_steward", "--organization", "Hospital B")

    with app.app_context():
        s = db.session()
        collab = s.get(Collaboration, study["id"])
        assert sorted(o.name for o in collab.organizations) == ["Hospital A", "Hospital B"]
        roles = s.execute(select(Role).order_by(Role.id)).scalars().all()
        b = s.execute(select(Organization).where(Organization.name == "Hospital B")).scalar()
        b_id = b.id
        assert [
            (r.user.username, r.name, r.organization_id, r.collaboration_id) for r in roles
        ] == [
            ("alice", "researcher", None, collab.id),
            ("sam", "data_steward", b.id, None),
        ]
        actors = s.execute(select(AuditEvent.actor_type, AuditEvent.actor_name)).all()
        assert set(actors) == {("system", "cli")} and len(actors) == 8

    listed = json.loads(cli("users", "list", "--organization", "Hospital A", "--json").output)
    assert [u["username"] for u in listed] == ["alice"]
    assert listed[0]["roles"][0]["collaboration_id"] == study["id"]
    table = cli("collaborations", "list").output
    assert table.splitlines()[0].split()[:3] == ["id", "name", "organizations"]
    assert "Hospital A (" in table and "study" in table
    assert "researcher in study" in cli("users", "list").output

    # The user logs in through the API with the password the command set.
    assert login(client, "alice", NEW_PASSWORD).status_code == 200
    refresh = login(client, "alice", NEW_PASSWORD).json["refresh_token"]
    cli("users", "set-password", "alice", password="another password")
    assert login(client, "alice", NEW_PASSWORD).status_code == 401
    assert login(client, "alice", "another password").status_code == 200
    assert client.post("/api/auth/refresh", json={"refresh_token": refresh}).status_code == 401
    cli("users", "disable", "alice")
    assert login(client, "alice", "another password").status_code == 401
    cli("users", "enable", "alice")
    assert login(client, "alice", "another password").status_code == 200

    refresh = login(client, "alice", "another password").json["refresh_token"]
    cli("tokens", "revoke", "--user", "alice")
    assert client.post("/api/auth/refresh", json={"refresh_token": refresh}).status_code == 401

    cli("users", "roles", "remove", "alice", "researcher", "--collaboration", "study")
    assert json.loads(cli("users", "roles", "list", "alice", "--json").output) == []
    cli("organizations", "edit", "Hospital B", "--name", "Hospital Bee")
    cli("users", "delete", "sam")
    with app.app_context():
        s = db.session()
        assert s.execute(select(User.username)).scalars().all() == ["alice"]
        assert s.execute(select(func.count()).select_from(Role)).scalar() == 0
        assert s.get(Organization, b_id).name == "Hospital Bee"


def test_a_registered_nodes_key_works_on_the_node_link_until_rotated(app, client, cli, fed):
    cli("collaborations", "add-organization", "other", "Hospital A")
    r = cli(
        "nodes", "register", "--organization", "Hospital A", "--collaboration", "other",
        "--name", "node-a-other", "--project", "demo", "--project", "cohort",
    )  # fmt: skip
    lines = r.output.splitlines()
    key = lines[
        lines.index("API key of node 'node-a-other' (shown once; only its hash is kept):") + 2
    ]
    key = key.strip()
    assert key.startswith("dsg_")
    me = client.get("/api/node/me", headers={"X-Api-Key": key})
    assert me.status_code == 200, me.json
    assert me.json["name"] == "node-a-other" and me.json["projects"] == ["cohort", "demo"]
    assert me.json["collaboration_id"] == fed.other and me.json["organization_id"] == fed.org_a

    rotated = json.loads(cli("nodes", "rotate-key", "node-a-other", "--json").output)
    assert client.get("/api/node/me", headers={"X-Api-Key": key}).status_code == 401
    new = client.get("/api/node/me", headers={"X-Api-Key": rotated["api_key"]})
    assert new.status_code == 200 and new.json["id"] == me.json["id"]

    listed = json.loads(cli("nodes", "list", "--collaboration", "other", "--json").output)
    assert sorted(n["name"] for n in listed) == ["node-a-other", "node-c"]
    assert all("api_key" not in n for n in listed)
    cli("nodes", "edit", "node-a-other", "--no-projects")
    cli("nodes", "remove", str(me.json["id"]))
    with app.app_context():
        assert db.session().get(Node, me.json["id"]) is None


def test_a_printed_relay_token_passes_the_relays_check(app, fed, cli, tmp_path, monkeypatch):
    r = cli(
        "tokens", "relay", "--user", "alice", "--collaboration", "study", "--node", "node-a",
        "--ttl", "120",
    )  # fmt: skip
    token = r.output.splitlines()[-1]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120
    assert (claims["sub"], claims["aud"], claims["node"]) == ("alice", "aud-node-a", fed.node_a)

    relay = create_relay_app(app).test_client()

    def relayed(tok):
        return relay.get("/profiles", headers={"Authorization": f"Bearer {tok}"})

    # Past the token check, the relay looks for the node's agent: none is connected.
    answer = relayed(token)
    assert answer.status_code == 500 and "is offline" in answer.json["message"]
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert relayed(tampered).status_code == 401
    # The node's gateway accepts it as configured for the relay's HS256 secret.
    from tests.unit.coordinator.test_relay_tokens import node_authenticator

    monkeypatch.setenv("DSG_RELAY_SECRET", TEST_RELAY_SECRET)
    user = node_authenticator(tmp_path, "aud-node-a", secret_env="DSG_RELAY_SECRET")
    assert user.from_bearer(token).name == "alice"

    # Disabling the user stops her tokens at the relay (after its few-second cache:
    # a new relay app has none).
    cli("users", "disable", "alice")
    assert (
        create_relay_app(app)
        .test_client()
        .get("/profiles", headers={"Authorization": f"Bearer {token}"})
        .status_code
        == 401
    )


def test_refused_commands_write_nothing(app, client, fed, cli):
    with app.app_context():
        s = db.session()
        task = Task(
            collaboration_id=fed.study, algorithm="aggregate", deadline=utcnow() + timedelta(1)
        )
        task.runs = [Run(node_id=fed.node_b)]
        s.add(task)
        s.commit()
    before = counts(app)
    refusals = [
        (("organizations", "create", "Hospital A"), "conflicts"),  # the name exists
        (("organizations", "create", "x" * 129), "name: Length"),
        (("users", "create", "bad name", "--organization", "Hospital A"), "username:"),
        (("users", "create", "zed", "--organization", "Nowhere"), "No such organisation"),
        (("users", "create", "alice", "--organization", "Hospital A"), "exists already"),
        (("users", "roles", "add", "alice", "wizard"), "name: Must be one of"),
        (("users", "roles", "add", "nobody", "data_steward"), "data steward stands for one"),
        (
            ("users", "roles", "add", "alice", "researcher", "--collaboration", "study"),
            "already holds",
        ),
        (
            (
                "users",
                "roles",
                "add",
                "carl",
                "admin",
                "--organization",
                "Registry C",
                "--collaboration",
                "study",
            ),
            "not a member of that collaboration",
        ),
        (("users", "roles", "remove", "alice", "admin"), "holds no such role"),
        (("collaborations", "create", "study"), "conflicts"),
        (("collaborations", "add-organization", "study", "Hospital B"), "already a member"),
        (("collaborations", "remove-organization", "study", "Hospital A"), "has a node"),
        (
            ("nodes", "register", "--organization", "Registry C", "--collaboration", "study"),
            "not a member",
        ),
        (
            ("nodes", "register", "--organization", "Hospital A", "--collaboration", "study"),
            "conflicts",
        ),
        (
            (
                "nodes",
                "register",
                "--organization",
                "Registry C",
                "--collaboration",
                "other",
                "--name",
                "n2",
                "--project",
                "Bad Project",
            ),
            "projects:",
        ),
        (("nodes", "remove", "node-b"), "has task runs"),
        (("nodes", "rotate-key", "node-z"), "No such node"),
        (
            ("tokens", "relay", "--user", "carl", "--collaboration", "study", "--node", "node-a"),
            "not a researcher",
        ),
        (
            ("tokens", "relay", "--user", "alice", "--collaboration", "other", "--node", "node-a"),
            "is not in collaboration",
        ),
    ]
    for args, message in refusals:
        r = cli(*args, ok=False, password="long enough password")
        assert message in r.output, (args, r.output)
    assert counts(app) == before
    with app.app_context():
        s = db.session()
        assert s.execute(select(func.count()).select_from(AuditEvent)).scalar() == 0
        keys = s.execute(select(Node.name, Node.api_key_hash).order_by(Node.id)).all()
    assert client.get("/api/node/me", headers=fed.world.as_node("node-b")).status_code == 200
    assert len(keys) == 3


def test_the_example_in_docs_coordinator_md_runs_as_written(app, client, cli):
    import shlex
    from pathlib import Path

    doc = Path(__file__).resolve().parents[3] / "docs" / "coordinator.md"
    block = doc.read_text(encoding="utf-8").split("<!-- cli-example -->\n```\n", 1)[1]
    lines = [line for line in block.split("```", 1)[0].splitlines() if line.strip()]
    outputs = []
    for line in lines:
        words = shlex.split(line)
        assert words[:2] == ["dsgateway", "coordinator"], line
        outputs.append(cli(*words[2:], password=NEW_PASSWORD).output)

    key = next(w for out in outputs for w in out.split() if w.startswith("dsg_") and len(w) > 20)
    assert client.get("/api/node/me", headers={"X-Api-Key": key}).json["name"] == "node-a"
    token = outputs[lines.index(next(x for x in lines if "tokens relay" in x))].splitlines()[-1]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["sub"], claims["exp"] - claims["iat"]) == ("alice", 28800)
    users = json.loads(outputs[-1])
    assert [(u["username"], [r["name"] for r in u["roles"]]) for u in users] == [
        ("alice", ["researcher"]),
        ("sam", ["data_steward"]),
    ]
    assert login(client, "alice", NEW_PASSWORD).status_code == 200
