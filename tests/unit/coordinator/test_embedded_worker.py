"""The embedded coordinator's Celery worker (memory:// broker, a worker thread) waits for
messages instead of polling its queues: idle, it looks at them about once per Celery
loop timeout (2 s), where the 50 ms polling it replaced looked 40 times in 2 s; a
queued task still runs (its effect is in the database); a put wakes a waiting drain;
and if waiting fails, the transport polls as kombu's own does."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from kombu import Connection
from sqlalchemy import func, select

from gateway.coordinator import db, memory_transport
from gateway.coordinator.celery_app import EmbeddedWorker
from gateway.coordinator.models import Run, Task
from tests.functional.stack import until
from tests.unit.coordinator.fixtures import TEST_RELAY_SECRET, World, sqlite_coordinator


@pytest.fixture
def embedded(tmp_path):
    settings = {
        "RELAY_SECRET": TEST_RELAY_SECRET,
        "SWEEP_INTERVAL": 3600,  # no sweep message during the idle window
        "CELERY_QUEUE": f"dsgw-embedded-{uuid.uuid4().hex[:8]}",
    }
    with sqlite_coordinator(tmp_path, "embedded-worker-" + "k" * 40, **settings) as app:
        worker = EmbeddedWorker(app).start()
        try:
            yield app, worker
        finally:
            worker.stop()


def _transport(worker: EmbeddedWorker):
    # The broker connection of the worker's consumer, once it has connected.
    consumer = getattr(worker._worker, "consumer", None)
    connection = getattr(consumer, "connection", None)
    return connection.transport if connection is not None else None


@pytest.mark.slow
def test_the_idle_embedded_worker_does_not_poll_and_still_runs_a_queued_task(embedded):
    app, worker = embedded
    transport = until(lambda: _transport(worker), 30, "the worker's broker connection")
    assert isinstance(transport, memory_transport.Transport)
    until(lambda: transport.checks > 0, 30, "the worker draining its queues")

    before = transport.checks
    time.sleep(2)
    idle_checks = transport.checks - before
    # Waiting: the queues are looked at when Celery's 2 s drain ends (and once when it
    # starts); polling every 50 ms looked 40 times.
    assert idle_checks <= 4, idle_checks

    world = World(app, app.test_client())
    a, b = world.org("Hospital A"), world.org("Hospital B")
    study = world.collaboration("study", a, b)
    node_a, node_b = world.node("node-a", a, study), world.node("node-b", b, study)
    world.user("alice", a, ("researcher", None, study))
    r = world.client.post(
        "/api/tasks",
        headers=world.as_user("alice"),
        json={"collaboration_id": study, "algorithm": "sum"},
    )
    assert r.status_code == 201, r.json
    task_id = r.json["id"]

    def dispatched():
        with db.session_scope(app) as s:
            nodes = s.execute(select(Run.node_id).where(Run.task_id == task_id)).scalars()
            status = s.execute(select(Task.status).where(Task.id == task_id)).scalar_one()
            return status == "running" and sorted(nodes) == sorted([node_a, node_b])

    # The worker thread ran `dispatch`: one run per node, the task running.
    until(dispatched, 30, "the embedded worker to dispatch the task")
    with db.session_scope(app) as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 2


def test_a_put_wakes_a_waiting_drain(monkeypatch):
    # No re-check before the drain's own timeout: only the put's signal can end the wait.
    monkeypatch.setattr(memory_transport, "RECHECK", 60.0)
    name = f"wake-{uuid.uuid4().hex[:8]}"
    with (
        Connection("memory://", transport=memory_transport.Transport) as consumer,
        Connection("memory://", transport=memory_transport.Transport) as publisher,
    ):
        queue = consumer.SimpleQueue(name)
        got: list = []
        reader = threading.Thread(target=lambda: got.append(queue.get(timeout=60).payload))
        reader.start()
        transport = consumer.transport
        until(lambda: transport.checks == 1, 30, "the drain to find the queue empty")

        publisher.SimpleQueue(name).put({"n": 1})
        reader.join(timeout=60)
        assert got == [{"n": 1}]
        assert transport.checks == 2  # the empty look, then the one the put woke
        queue.close()


def test_if_waiting_fails_the_transport_polls(monkeypatch):
    arrivals = memory_transport._Arrivals()

    def broken_wait(seen, timeout):
        raise RuntimeError("no waiting here")

    monkeypatch.setattr(arrivals, "wait", broken_wait)
    monkeypatch.setattr(memory_transport, "ARRIVALS", arrivals)
    name = f"poll-{uuid.uuid4().hex[:8]}"
    with (
        Connection(
            "memory://",
            transport=memory_transport.Transport,
            transport_options={"polling_interval": 0.01},
        ) as consumer,
        Connection("memory://", transport=memory_transport.Transport) as publisher,
    ):
        queue = consumer.SimpleQueue(name)
        with pytest.raises(TimeoutError):  # empty: kombu's polling drain times out
            consumer.drain_events(timeout=0.2)
        assert arrivals.broken

        # A message put while the (polling) drain is under way is still taken.
        got: list = []
        reader = threading.Thread(target=lambda: got.append(queue.get(timeout=60).payload))
        reader.start()
        publisher.SimpleQueue(name).put({"n": 2})
        reader.join(timeout=60)
        assert got == [{"n": 2}]
        queue.close()
