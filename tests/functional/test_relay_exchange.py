# ruff: noqa: F811 - the coordinator fixtures are imported by name, as pytest wants
"""`POST /api/node/relay/exchange`, the agent's one request per relayed call (answers,
then a long poll for the next calls), on SQLite and PostgreSQL, without R: its node
key check (remembered for RELAY_AUTH_CACHE), its input validation, and that a node
takes and answers only its own calls."""

from __future__ import annotations

import threading

from gateway.coordinator import db
from gateway.coordinator.models import Node
from gateway.coordinator.relay import hub_of
from tests.unit.coordinator.fixtures import (  # noqa: F401 (fixtures)
    app,
    client,
    database,
    fed,
    postgres_database,
    world,
)

URL = "/api/node/relay/exchange"


def _queue_call(app, node_id: int, request: dict) -> tuple[threading.Thread, dict]:
    """A researcher's call waiting for node `node_id`'s answer (as the listener does)."""
    out: dict = {}
    thread = threading.Thread(
        target=lambda: out.setdefault("answer", hub_of(app).call(node_id, request, timeout=10))
    )
    thread.start()
    return thread, out


def _wait_queued(app, node_id: int) -> None:
    hub = hub_of(app)
    for _ in range(500):
        if hub.pending(node_id):
            return
        threading.Event().wait(0.01)
    raise AssertionError("the call was never queued")


def test_a_node_takes_and_answers_only_its_own_calls(fed, client, app):
    w = fed.world
    thread, out = _queue_call(app, fed.node_a, {"method": "GET", "path": "/symbols"})
    _wait_queued(app, fed.node_a)
    # Node b sees nothing of a's call, and cannot answer it.
    r = client.post(URL, headers=w.as_node("node-b"), json={"wait": 0})
    assert r.status_code == 200 and r.json["requests"] == []
    r = client.post(URL, headers=w.as_node("node-a"), json={"wait": 1, "limit": 1})
    assert r.status_code == 200, r.json
    (call,) = r.json["requests"]
    assert call["path"] == "/symbols"
    answer = {"id": call["id"], "status": 200, "headers": [["Content-Type", "x"]], "body": "AA=="}
    r = client.post(URL, headers=w.as_node("node-b"), json={"responses": [answer], "limit": 0})
    assert r.status_code == 200 and r.json["unknown"] == [call["id"]]
    # Node a's answer, and in the same request its wait for the next call.
    r = client.post(URL, headers=w.as_node("node-a"), json={"responses": [answer], "wait": 0})
    assert r.status_code == 200
    assert r.json == {"accepted": [call["id"]], "unknown": [], "requests": []}
    thread.join(10)
    assert out["answer"] == {"status": 200, "headers": [["Content-Type", "x"]], "body": "AA=="}
    # Answering twice: nobody waits any more.
    r = client.post(URL, headers=w.as_node("node-a"), json={"responses": [answer]})
    assert r.json["unknown"] == [call["id"]]


def test_bad_input_is_refused_and_delivers_nothing(fed, client, app):
    w = fed.world
    thread, out = _queue_call(app, fed.node_a, {"method": "GET", "path": "/x"})
    _wait_queued(app, fed.node_a)
    call = client.post(URL, headers=w.as_node("node-a"), json={"wait": 1}).json["requests"][0]
    good = {"id": call["id"], "status": 200, "body": ""}
    cases = [
        ({"responses": [good], "wait": "soon"}, "wait"),
        ({"responses": [good, {"id": "x", "status": 42}]}, "responses"),
        ({"responses": [good], "limit": 1000}, "limit"),
        ({"responses": [good], "extra": 1}, "extra"),
    ]
    for body, field in cases:
        r = client.post(URL, headers=w.as_node("node-a"), json=body)
        assert r.status_code == 400, (body, r.json)
        assert field in r.json["errors"], (body, r.json)
    assert "answer" not in out  # none of the bad requests delivered the good answer
    r = client.post(URL, headers=w.as_node("node-a"), json={"responses": [good]})
    assert r.json["accepted"] == [call["id"]]
    thread.join(10)
    assert out["answer"]["status"] == 200


def test_the_node_key_is_checked_and_remembered_for_relay_auth_cache(fed, client, app):
    w = fed.world
    assert client.post(URL, json={}).status_code == 401
    assert client.post(URL, headers={"X-Api-Key": "dsg_nonsense"}, json={}).status_code == 401
    # Bad input from an unknown caller: 401 first, it learns nothing of the schema.
    assert client.post(URL, headers={"X-Api-Key": "x"}, json={"wait": "x"}).status_code == 401
    assert client.post(URL, headers=w.as_node("node-a"), json={}).status_code == 200
    with app.app_context():  # the key is revoked (as a rotation does)
        db.session().get(Node, fed.node_a).api_key_hash = "0" * 64
        db.session().commit()
    # Remembered for RELAY_AUTH_CACHE (5 s by default) ...
    assert client.post(URL, headers=w.as_node("node-a"), json={}).status_code == 200
    # ... and refused at once without the cache.
    app.config["RELAY_AUTH_CACHE"] = 0
    app.extensions.pop("dsgateway_relay_node_keys", None)
    assert client.post(URL, headers=w.as_node("node-a"), json={}).status_code == 401
