"""When a node's last_seen is written (gateway/coordinator/liveness.py): at once for a
node not seen lately, queued and written in one transaction for a node seen recently,
not at all within the granularity; never by the request's own transaction."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import event, select, update

from gateway.coordinator import db
from gateway.coordinator.liveness import _EXT, FLUSH_EVERY, GRANULARITY, SeenQueue, seen_queue
from gateway.coordinator.models import Node, utcnow


@pytest.fixture
def nodes(world):
    org = world.org("Hospital A")
    org_b = world.org("Hospital B")
    collab = world.collaboration("study", org, org_b)
    return world, world.node("node-a", org, collab), world.node("node-b", org_b, collab)


def _stored(app, node_id):
    with app.app_context():
        return db.session().execute(select(Node.last_seen).where(Node.id == node_id)).scalar()


def _set_seen(app, node_id, seen):
    with app.app_context():
        s = db.session()
        s.execute(update(Node).where(Node.id == node_id).values(last_seen=seen))
        s.commit()


def _node_updates(app):
    """A list that fills with the UPDATE statements on `nodes` sent from now on."""
    seen: list[str] = []

    def before(_conn, _cursor, statement, *_):
        if statement.lstrip().upper().startswith("UPDATE NODES"):
            seen.append(statement)

    event.listen(db.engine(app), "before_cursor_execute", before)
    return seen


def test_a_node_never_seen_is_written_at_once(app, client, nodes):
    w, node_a, _ = nodes
    before = utcnow()
    assert client.get("/api/node/me", headers=w.as_node("node-a")).status_code == 200
    assert _stored(app, node_a) >= before
    assert seen_queue(app).pending() == {}


def test_a_node_seen_recently_is_queued_then_written_with_others(app, client, nodes):
    w, node_a, node_b = nodes
    earlier = utcnow() - timedelta(seconds=30)  # online, past the granularity
    _set_seen(app, node_a, earlier)
    _set_seen(app, node_b, earlier)
    updates = _node_updates(app)
    for name in ("node-a", "node-b"):
        r = client.get("/api/node/me", headers=w.as_node(name))
        assert r.status_code == 200 and r.json["online"] is True
    # Nothing written by the requests; both queued with the time of their request.
    assert updates == []
    assert _stored(app, node_a) == earlier
    pending = seen_queue(app).pending()
    assert set(pending) == {node_a, node_b} and all(t > earlier for t in pending.values())
    # One statement for both (executemany), in one transaction.
    assert seen_queue(app).flush() == 2
    assert len(updates) == 1
    assert _stored(app, node_a) == pending[node_a] and _stored(app, node_b) == pending[node_b]
    assert seen_queue(app).pending() == {}


def test_a_node_about_to_show_offline_is_written_at_once(app, client, nodes):
    w, node_a, _ = nodes
    offline_after = app.config["NODE_OFFLINE_AFTER"]
    # Later than the queue allows (the database may lag FLUSH_EVERY behind the queue).
    earlier = utcnow() - timedelta(seconds=offline_after - 2 * FLUSH_EVERY + 5)
    _set_seen(app, node_a, earlier)
    assert client.get("/api/node/me", headers=w.as_node("node-a")).status_code == 200
    assert _stored(app, node_a) > earlier + timedelta(seconds=10)
    assert seen_queue(app).pending() == {}


def test_within_the_granularity_nothing_is_written_or_queued(app, client, nodes):
    w, node_a, _ = nodes
    earlier = utcnow() - GRANULARITY / 3
    _set_seen(app, node_a, earlier)
    updates = _node_updates(app)
    assert client.get("/api/node/me", headers=w.as_node("node-a")).status_code == 200
    assert updates == [] and seen_queue(app).pending() == {}
    assert _stored(app, node_a) == earlier


def test_a_heartbeat_writes_its_time_once(app, client, nodes):
    """The heartbeat's time is written at once (its answer carries it); the request's
    session never writes the node row again on its own commit."""
    w, node_a, _ = nodes
    _set_seen(app, node_a, utcnow() - GRANULARITY / 3)
    updates = _node_updates(app)
    r = client.post("/api/node/heartbeat", headers=w.as_node("node-a"), json={"running": []})
    assert r.status_code == 200, r.json
    assert len(updates) == 1
    stored = _stored(app, node_a)
    assert r.json["time"].startswith(stored.isoformat()[:19])


def test_the_queue_writes_itself_within_its_period(app, client, nodes):
    w, node_a, _ = nodes
    app.extensions[_EXT] = SeenQueue(app, flush_every=0.2)
    earlier = utcnow() - timedelta(seconds=30)
    _set_seen(app, node_a, earlier)
    assert client.get("/api/node/me", headers=w.as_node("node-a")).status_code == 200
    deadline = time.monotonic() + 10
    while _stored(app, node_a) == earlier and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stored(app, node_a) > earlier
    assert seen_queue(app).pending() == {}
    seen_queue(app).close()


def test_a_failed_write_keeps_the_times_for_the_next_turn(app, client, nodes, monkeypatch):
    """A fake fault: the database refusing the write (hard to cause for one statement
    on a live database)."""
    w, node_a, _ = nodes
    earlier = utcnow() - timedelta(seconds=30)
    _set_seen(app, node_a, earlier)
    assert client.get("/api/node/me", headers=w.as_node("node-a")).status_code == 200
    queued = seen_queue(app).pending()[node_a]

    def refuse(_app):
        raise RuntimeError("the database is away")

    monkeypatch.setattr(db, "session_scope", refuse)
    assert seen_queue(app).flush() == 0
    assert seen_queue(app).pending() == {node_a: queued}
    monkeypatch.undo()
    assert seen_queue(app).flush() == 1
    assert _stored(app, node_a) == queued
