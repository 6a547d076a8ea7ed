"""Relay tokens: issued by the coordinator for one user, collaboration and node, and
accepted by that node's gateway (gateway/node/auth.py) exactly as it is configured in
docs/configuration.md; refused by any other node."""

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.coordinator import create_app, db
from gateway.node.auth import Authenticator
from gateway.node.config import NodeConfig
from gateway.node.errors import Unauthorized
from tests.unit.coordinator.fixtures import TEST_RELAY_SECRET, World, coordinator_settings


def node_authenticator(tmp_path, audience, **tokens) -> Authenticator:
    cfg = NodeConfig.from_dict(
        {
            "data_dir": str(tmp_path),
            "tokens": {"issuer": "https://coordinator.test", "audience": audience, **tokens},
        }
    )
    return Authenticator(cfg)


def relay_token(client, fed, user="alice", node_id=None):
    r = client.post(
        "/api/auth/relay-token",
        headers=fed.world.as_user(user),
        json={"node_id": node_id or fed.node_a},
    )
    return r


def test_the_node_gateway_accepts_an_hs256_relay_token(client, fed, tmp_path, monkeypatch):
    monkeypatch.setenv("DSG_RELAY_SECRET", TEST_RELAY_SECRET)
    r = relay_token(client, fed)
    assert r.status_code == 200, r.json
    body = r.json
    assert body["audience"] == "aud-node-a" and body["projects"] == ["demo"]
    assert body["collaboration_id"] == fed.study and body["node_id"] == fed.node_a
    user = node_authenticator(tmp_path, "aud-node-a", secret_env="DSG_RELAY_SECRET").from_bearer(
        body["token"]
    )
    assert user.name == "alice" and user.projects == frozenset({"demo"})
    assert user.can_read("demo") and not user.can_read("other")
    # Node B's gateway (another audience) refuses it.
    with pytest.raises(Unauthorized):
        node_authenticator(tmp_path, "aud-node-b", secret_env="DSG_RELAY_SECRET").from_bearer(
            body["token"]
        )
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600
    assert {"iss", "aud", "sub", "exp", "projects", "collaboration", "node"} <= set(claims)
    events = client.get("/api/audit", headers=fed.world.as_user("alice")).json
    assert [e["action"] for e in events] == ["relay.token"]


def test_relay_tokens_only_for_researchers_of_the_nodes_collaboration(client, fed):
    assert relay_token(client, fed, "carl").status_code == 404
    assert relay_token(client, fed, "nobody").status_code == 404
    assert relay_token(client, fed, "coord").status_code == 403
    assert relay_token(client, fed, "alice", node_id=fed.node_c).status_code == 404
    assert relay_token(client, fed, "carl", node_id=fed.node_c).status_code == 200
    assert relay_token(client, fed, "alice", node_id=999999).status_code == 404


def test_rs256_relay_tokens_verify_with_the_published_public_key(database, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "relay.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    database.empty()
    app = create_app(
        coordinator_settings(
            database, tmp_path / "instance", RELAY_SECRET=None, RELAY_PRIVATE_KEY_FILE=str(pem)
        )
    )
    try:
        client = app.test_client()
        w = World(app, client)
        org = w.org("A")
        collab = w.collaboration("s", org)
        node = w.node("n1", org, collab, projects=("demo", "extra"))
        w.user("rita", org, ("researcher", None, collab))
        published = client.get("/api/auth/relay-key").json
        assert published["algorithm"] == "RS256"
        public = tmp_path / "coordinator-public.pem"
        public.write_text(published["public_key"])
        r = client.post("/api/auth/relay-token", headers=w.as_user("rita"), json={"node_id": node})
        user = node_authenticator(tmp_path, "aud-n1", public_key_file=str(public)).from_bearer(
            r.json["token"]
        )
        assert user.name == "rita" and user.projects == frozenset({"demo", "extra"})
    finally:
        db.engine(app).dispose()


def test_without_a_relay_key_tokens_are_refused_clearly(database, tmp_path):
    database.empty()
    app = create_app(coordinator_settings(database, tmp_path / "instance", RELAY_SECRET=None))
    try:
        client = app.test_client()
        assert client.get("/api/auth/relay-key").status_code == 404
        w = World(app, client)
        org = w.org("A")
        collab = w.collaboration("s", org)
        node = w.node("n1", org, collab)
        w.user("rita", org, ("researcher", None, collab))
        r = client.post("/api/auth/relay-token", headers=w.as_user("rita"), json={"node_id": node})
        assert r.status_code == 500 and "not configured" in r.json["message"]
    finally:
        db.engine(app).dispose()
