# ruff: noqa: F811 - the coordinator fixtures are imported by name, as pytest wants
"""`POST /api/node/relay/exchange`, the agent's one request per relayed call (answers,
then a long poll for the next calls), on SQLite and PostgreSQL, without R: its node
key check (remembered for RELAY_AUTH_CACHE), its input validation, that a node
takes and answers only its own calls, and its work news (`work`/`work_seen`: the
wait also ends when the node has work, and no dispatch is missed)."""

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
        ({"responses": [good], "work": 5}, "work"),
        ({"responses": [good], "work": "x" * 65}, "work"),
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


def _create_task(client, fed, node_ids) -> int:
    body = {"collaboration_id": fed.study, "algorithm": "echo", "node_ids": node_ids}
    r = client.post("/api/tasks", headers=fed.world.as_user("alice"), json=body)
    assert r.status_code == 201, r.json
    return r.json["id"]


def _work(client, fed, node: str) -> list:
    r = client.get("/api/node/work?wait=0", headers=fed.world.as_node(node))
    assert r.status_code == 200, r.json
    return r.json["work"]


def test_the_exchange_tells_of_work_and_misses_none(fed, client, app):
    w = fed.world
    a = w.as_node("node-a")

    def exchange(seen, **body):
        r = client.post(URL, headers=a, json={"wait": 0, "work": seen, **body})
        assert r.status_code == 200, r.json
        return r.json

    # Without `work`, as older agents send it: no work news in the answer.
    assert "work" not in client.post(URL, headers=a, json={"wait": 0}).json
    first = exchange("")
    assert first["work"] is False and first["requests"] == []
    seen = first["work_seen"]
    assert exchange(seen) == {**first, "work": False, "work_seen": seen}
    # Dispatched while the agent was between two exchanges: told on the next one.
    task = _create_task(client, fed, [fed.node_a])
    told = exchange(seen)
    assert told["work"] is True and told["work_seen"] != seen
    # An agent that has never heard (a restart; another process's version): the
    # database says runs are waiting.
    assert exchange("")["work"] is True
    assert exchange("another-process:0")["work"] is True
    (item,) = _work(client, fed, "node-a")
    assert item["task_id"] == task
    # Fetched: nothing more to tell, whatever the agent last heard.
    assert exchange(told["work_seen"])["work"] is False
    assert exchange("")["work"] is False
    # Node b's work is not node a's news.
    _create_task(client, fed, [fed.node_b])
    assert exchange(told["work_seen"])["work"] is False
    assert len(_work(client, fed, "node-b")) == 1


def test_a_waiting_exchange_ends_when_work_is_dispatched(fed, app):
    """An idle agent's one long poll: the exchange waiting for relay calls ends as
    soon as its node has work (the wait would otherwise last a minute), and relay
    calls still come through it."""
    w = fed.world
    a = w.as_node("node-a")
    app.config["LONG_POLL_MAX"] = 60
    seen = app.test_client().post(URL, headers=a, json={"work": ""}).json["work_seen"]
    out: dict = {}

    def wait_for_news():
        r = app.test_client().post(URL, headers=a, json={"wait": 60, "work": seen})
        out["answer"] = r.json

    waiter = threading.Thread(target=wait_for_news)
    waiter.start()
    for _ in range(500):  # the exchange is waiting in the (in-memory) hub
        if hub_of(app)._polling[fed.node_a]:
            break
        threading.Event().wait(0.01)
    else:
        raise AssertionError("the exchange never waited")
    task = _create_task(app.test_client(), fed, [fed.node_a])
    waiter.join(30)  # half the wait: it ended because of the dispatch
    assert not waiter.is_alive()
    assert out["answer"]["work"] is True and out["answer"]["requests"] == []
    (item,) = _work(app.test_client(), fed, "node-a")
    assert item["task_id"] == task
    # A relay call still ends a watching exchange, with no work news.
    thread, answer = _queue_call(app, fed.node_a, {"method": "GET", "path": "/symbols"})
    r = app.test_client().post(
        URL, headers=a, json={"wait": 60, "work": out["answer"]["work_seen"]}
    )
    assert r.json["work"] is False
    (call,) = r.json["requests"]
    reply = {"id": call["id"], "status": 200, "body": ""}
    assert app.test_client().post(URL, headers=a, json={"responses": [reply]}).status_code == 200
    thread.join(10)
    assert answer["answer"]["status"] == 200
