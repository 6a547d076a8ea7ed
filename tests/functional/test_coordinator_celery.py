"""The coordinator with real Redis, a real Celery worker process and PostgreSQL.

The API runs in this process (Flask test client); dispatch and finalize run in a
`dsgateway coordinator worker --beat` subprocess reached through a Redis server of
this module's own (so the test can stop and restart it, and never touches anyone
else's queues); nodes are played by this test through the node API. Faults: duplicate
deliveries, the worker killed and restarted mid-task, Redis gone for a few seconds.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from gateway.coordinator import create_app, db
from gateway.coordinator.migrate import upgrade
from gateway.coordinator.models import Result, Run
from tests.functional.stack import CeleryWorker, RedisServer, coordinator_env, until
from tests.unit.coordinator.fixtures import (  # noqa: F401 (fixture)
    TEST_RELAY_SECRET,
    Database,
    World,
    postgres_database,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres_database):  # noqa: F811 (the fixture)
    work = tmp_path_factory.mktemp("celery-stack")
    server = RedisServer(work)
    server.start()
    upgrade(postgres_database)
    settings = {
        "DATABASE_URL": postgres_database,
        "INSTANCE_PATH": str(work / "instance"),
        "SECRET_KEY": "functional-" + "k" * 40,
        "PASSWORD_HASH_METHOD": "scrypt:1024:8:1",
        "CELERY_BROKER_URL": server.url,
        "CELERY_RESULT_BACKEND": server.url,
        "CELERY_QUEUE": f"dsgw-test-{uuid.uuid4().hex[:8]}",
        "WORK_NOTIFIER": "redis",
        "REDIS_URL": server.url,
        "SWEEP_INTERVAL": 1,
        "REDISPATCH_AFTER": 1,
        "RELAY_SECRET": TEST_RELAY_SECRET,
        "LONG_POLL_MAX": 20,
    }
    env = {**os.environ, **coordinator_env(settings)}
    worker = CeleryWorker(
        [
            *("-m", "gateway.coordinator.cli", "worker", "--pool", "threads", "-c", "4"),
            *("--beat", "--loglevel", "INFO"),
        ],
        env,
        work / "worker.log",
    ).start(timeout=30)
    try:
        yield server, worker, settings, Database("postgresql", postgres_database)
    finally:
        worker.stop()
        server.stop()


@pytest.fixture
def fed(stack):
    _server, _worker, settings, database = stack
    from gateway.coordinator.models import Base

    database.tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    database.empty()
    app = create_app(settings)
    world = World(app, app.test_client())
    a, b = world.org("A"), world.org("B")
    study = world.collaboration("study", a, b)
    world.node("node-a", a, study)
    world.node("node-b", b, study)
    world.user("alice", a, ("researcher", None, study))
    world.study = study
    try:
        yield world
    finally:
        from gateway.coordinator.app import services

        services(app).notifier.close()
        db.engine(app).dispose()


def create_task(w: World, **body) -> dict:
    r = w.client.post(
        "/api/tasks",
        headers=w.as_user("alice"),
        json={"collaboration_id": w.study, "algorithm": "sum", **body},
    )
    assert r.status_code == 201, r.json
    return r.json


def poll(w: World, node: str, wait: float = 15) -> list[dict]:
    r = w.client.get(f"/api/node/work?wait={wait}", headers=w.as_node(node))
    assert r.status_code == 200, r.json
    return r.json["work"]


def answer(w: World, node: str, item: dict, value) -> None:
    r = w.client.post(
        f"/api/node/runs/{item['run_id']}/result",
        headers=w.as_node(node),
        json={"status": "completed", "result": value},
    )
    assert r.status_code == 200, r.json


def task_state(w: World, task_id: int) -> dict:
    return w.client.get(f"/api/tasks/{task_id}", headers=w.as_user("alice")).json


def wait_final(w: World, task_id: int, timeout: float = 20) -> dict:
    return until(
        lambda: (t := task_state(w, task_id))["status"] in ("completed", "failed") and t,
        timeout,
        f"task {task_id} to finish",
    )


def test_a_task_through_redis_and_a_worker_process(fed):
    started = time.monotonic()
    task = create_task(fed)
    assert task["status"] in ("pending", "running")  # the worker dispatches it
    # Woken through Redis pub/sub by the worker's dispatch, long before the poll's own
    # timeout (a loaded CI machine can take seconds to start the dispatch).
    [a] = poll(fed, "node-a", wait=55)
    assert time.monotonic() - started < 45
    [b] = poll(fed, "node-b")
    answer(fed, "node-a", a, [1, 2])
    answer(fed, "node-b", b, [3, 4])
    done = wait_final(fed, task["id"])
    assert done["status"] == "completed"
    result = fed.client.get(f"/api/tasks/{task['id']}/result", headers=fed.as_user("alice"))
    assert result.json["value"] == [4, 6]


def test_duplicate_deliveries_make_one_set_of_runs_and_one_result(fed):
    celery = fed.app.extensions["celery"]
    task = create_task(fed)
    for _ in range(3):
        celery.send_task("gateway.coordinator.tasks.dispatch", args=[task["id"]])
    items = poll(fed, "node-a") + poll(fed, "node-b")
    assert len(items) == 2
    for item, node in zip(items, ("node-a", "node-b"), strict=True):
        answer(fed, node, item, 1)
    for _ in range(3):
        celery.send_task("gateway.coordinator.tasks.finalize", args=[task["id"]])
    assert wait_final(fed, task["id"])["status"] == "completed"
    time.sleep(1)  # let the extra deliveries run
    assert fed.count(Run) == 2 and fed.count(Result) == 1
    assert task_state(fed, task["id"])["runs"] == {"completed": 2}


def test_the_worker_killed_and_restarted_mid_task(stack, fed):
    _server, worker, _settings, _db = stack
    task = create_task(fed)
    [a] = poll(fed, "node-a")
    [b] = poll(fed, "node-b")
    worker.kill()
    try:
        answer(fed, "node-a", a, 10)
        answer(fed, "node-b", b, 20)  # its finalize message waits in Redis
        time.sleep(0.5)
        assert task_state(fed, task["id"])["status"] == "running"
    finally:
        worker.start()
    done = wait_final(fed, task["id"])
    assert done["status"] == "completed"
    assert fed.count(Result) == 1


def test_redis_gone_for_a_few_seconds(stack, fed):
    server, _worker, _settings, _db = stack
    server.stop()
    try:
        task = create_task(fed)  # the dispatch message cannot be sent: still 201
        assert task["status"] == "pending"
        time.sleep(2)
    finally:
        server.start()  # an empty Redis: every queued message is gone
    # The worker reconnects; its beat's sweep finds the pending task and dispatches it.
    [a] = poll(fed, "node-a", wait=20)
    [b] = poll(fed, "node-b", wait=20)
    answer(fed, "node-a", a, 1)
    answer(fed, "node-b", b, 2)
    done = wait_final(fed, task["id"], timeout=30)
    assert done["status"] == "completed"
    assert (
        fed.client.get(f"/api/tasks/{task['id']}/result", headers=fed.as_user("alice")).json[
            "value"
        ]
        == 3
    )
