"""Tasks from creation to result: dispatch, the node link, finalize, cancel, expiry,
and the idempotence of every Celery task (each is called twice here)."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from gateway.coordinator import db
from gateway.coordinator.models import AuditEvent, Result, Run, Task, utcnow
from gateway.coordinator.tasks import dispatch, dispatch_task, finalize, finalize_task, sweep_once


def create_task(client, fed, **body):
    body = {"collaboration_id": fed.study, "algorithm": "sum", **body}
    r = client.post("/api/tasks", headers=fed.world.as_user("alice"), json=body)
    assert r.status_code == 201, r.json
    return r.json


def poll(client, fed, node, wait=0):
    r = client.get(f"/api/node/work?wait={wait}", headers=fed.world.as_node(node))
    assert r.status_code == 200, r.json
    return r.json["work"]


def post(client, fed, node, run_id, **body):
    body = {"status": "completed", **body}
    return client.post(
        f"/api/node/runs/{run_id}/result", headers=fed.world.as_node(node), json=body
    )


def test_a_task_runs_on_every_node_and_its_results_are_combined(client, fed):
    task = create_task(client, fed, parameters={"x": 1})
    assert task["status"] == "running"  # dispatched (eager Celery in these tests)
    assert task["node_ids"] == [fed.node_a, fed.node_b]
    assert task["runs"] == {"pending": 2}
    [item_a] = poll(client, fed, "node-a")
    assert item_a["kind"] == "task_run" and item_a["algorithm"] == "sum"
    assert item_a["parameters"] == {"x": 1} and item_a["attempt"] == 1
    assert item_a["user"] == "alice"
    assert poll(client, fed, "node-a") == []  # started runs are not handed out again
    [item_b] = poll(client, fed, "node-b")
    assert poll(client, fed, "node-c") == []
    assert post(client, fed, "node-a", item_a["run_id"], result=[1, 2]).status_code == 200
    alice = fed.world.as_user("alice")
    assert client.get(f"/api/tasks/{task['id']}/result", headers=alice).status_code == 404
    r = post(client, fed, "node-b", item_b["run_id"], result=[10, 20], log="fine")
    assert r.json == {"run_id": item_b["run_id"], "status": "completed", "duplicate": False}
    done = client.get(f"/api/tasks/{task['id']}", headers=alice).json
    assert done["status"] == "completed" and done["runs"] == {"completed": 2}
    result = client.get(f"/api/tasks/{task['id']}/result", headers=alice).json
    assert result["value"] == [11, 22]
    runs = client.get(f"/api/tasks/{task['id']}/runs", headers=alice).json
    assert [r["log"] for r in runs] == ["", "fine"]
    assert all(r["started_at"] and r["finished_at"] for r in runs)


def test_a_failed_run_fails_the_task_with_its_reason(client, fed):
    task = create_task(client, fed)
    for node in ("node-a", "node-b"):
        [item] = poll(client, fed, node)
        status = "failed" if node == "node-b" else "completed"
        post(client, fed, node, item["run_id"], status=status, result=1, message="no table")
    t = client.get(f"/api/tasks/{task['id']}", headers=fed.world.as_user("alice")).json
    assert t["status"] == "failed"
    assert t["message"] == "node-b: failed (no table)"


def test_aggregation_errors_fail_the_task(client, fed):
    task = create_task(client, fed)
    for node, value in (("node-a", [1]), ("node-b", "text")):
        [item] = poll(client, fed, node)
        post(client, fed, node, item["run_id"], result=value)
    t = client.get(f"/api/tasks/{task['id']}", headers=fed.world.as_user("alice")).json
    assert t["status"] == "failed" and t["message"].startswith("Central aggregation failed")


def test_unknown_algorithms_return_the_node_results(client, fed):
    task = create_task(client, fed, algorithm="glm.step", node_ids=[fed.node_b])
    [item] = poll(client, fed, "node-b")
    post(client, fed, "node-b", item["run_id"], result={"beta": [0.5]})
    r = client.get(f"/api/tasks/{task['id']}/result", headers=fed.world.as_user("alice"))
    assert r.json["value"] == {str(fed.node_b): {"beta": [0.5]}}


def test_posting_a_result_twice_stores_it_once(client, fed):
    create_task(client, fed, node_ids=[fed.node_a])
    [item] = poll(client, fed, "node-a")
    first = post(client, fed, "node-a", item["run_id"], result=5)
    again = post(client, fed, "node-a", item["run_id"], result=5)
    assert first.json["duplicate"] is False and again.json["duplicate"] is True
    other = post(client, fed, "node-a", item["run_id"], result=6)
    assert other.status_code == 409
    assert fed.world.count(Result) == 1


def test_a_node_cannot_touch_another_nodes_runs(client, fed):
    create_task(client, fed, node_ids=[fed.node_a])
    [item] = poll(client, fed, "node-a")
    r = post(client, fed, "node-b", item["run_id"], result=666)
    assert r.status_code == 404
    r = client.post(
        "/api/node/heartbeat",
        headers=fed.world.as_node("node-b"),
        json={"running": [item["run_id"]]},
    )
    assert r.json["cancel"] == [item["run_id"]]
    assert client.get("/api/node/work", headers={"X-Api-Key": "dsg_forged"}).status_code == 401
    assert client.get("/api/node/work").status_code == 401
    # A user's token is not a node key, nor the other way round.
    assert client.get("/api/node/work", headers=fed.world.as_user("root")).status_code == 401
    assert client.get("/api/tasks", headers=fed.world.as_node("node-a")).status_code == 401


def test_dispatch_twice_makes_one_run_per_node(app, client, fed):
    task = create_task(client, fed)  # dispatched once already
    with app.app_context():
        assert dispatch_task(task["id"]) == []
        dispatch.apply(args=(task["id"],))  # through Celery's own call path
    assert fed.world.count(Run) == 2


def test_a_duplicate_dispatch_racing_the_first_makes_no_duplicate(app, client, fed):
    from gateway.coordinator.models import Task as T

    with app.app_context():
        s = db.session()
        t = T(
            collaboration_id=fed.study,
            algorithm="noop",
            target_node_ids=[fed.node_a, fed.node_b],
            deadline=utcnow() + timedelta(hours=1),
        )
        s.add(t)
        s.commit()
        task_id = t.id
    errors = []

    def deliver():
        try:
            with app.app_context():
                dispatch_task(task_id)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert fed.world.count(Run) == 2


def test_finalize_twice_makes_one_result(app, client, fed):
    task = create_task(client, fed, node_ids=[fed.node_a])
    [item] = poll(client, fed, "node-a")
    post(client, fed, "node-a", item["run_id"], result=3)  # finalizes (eager)
    with app.app_context():
        assert finalize_task(task["id"]) is None
        finalize.apply(args=(task["id"],))
    assert fed.world.count(Result) == 1
    finished = [
        e
        for e in client.get("/api/audit", headers=fed.world.as_user("root")).json
        if e["action"] == "task.finish"
    ]
    assert len(finished) == 1


def test_two_pollers_never_get_the_same_run(app, client, fed):
    for _ in range(12):
        create_task(client, fed, node_ids=[fed.node_a], algorithm="noop")
    got: list[list[int]] = []
    lock = threading.Lock()

    failures = []

    def poller():
        c = app.test_client()
        mine = []
        for _ in range(8):
            r = c.get("/api/node/work?limit=2", headers=fed.world.as_node("node-a"))
            if r.status_code != 200:
                failures.append(r.json)
                return
            mine.extend(i["run_id"] for i in r.json["work"])
        with lock:
            got.append(mine)

    threads = [threading.Thread(target=poller) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == []
    claimed = [rid for mine in got for rid in mine]
    assert len(claimed) == 12 and len(set(claimed)) == 12


def test_a_long_poll_wakes_when_work_is_dispatched(app, client, fed):
    answer = {}

    def wait_for_work():
        c = app.test_client()
        answer["r"] = c.get("/api/node/work?wait=5", headers=fed.world.as_node("node-a"))

    th = threading.Thread(target=wait_for_work)
    th.start()
    threading.Event().wait(0.3)
    started = utcnow()
    create_task(client, fed, node_ids=[fed.node_a])
    th.join(timeout=10)
    assert len(answer["r"].json["work"]) == 1
    assert (utcnow() - started).total_seconds() < 4  # woken, not timed out (wait=5)


def test_an_idle_long_poll_returns_empty_after_the_wait(client, fed):
    start = utcnow()
    assert poll(client, fed, "node-a", wait=0.5) == []
    assert (utcnow() - start).total_seconds() >= 0.5


def test_cancel_stops_the_runs_and_tells_the_agent(client, fed):
    task = create_task(client, fed)
    [item] = poll(client, fed, "node-a")
    assert (
        client.post(
            f"/api/tasks/{task['id']}/cancel", headers=fed.world.as_user("steward_a")
        ).status_code
        == 403
    )
    r = client.post(f"/api/tasks/{task['id']}/cancel", headers=fed.world.as_user("alice"))
    assert r.status_code == 200 and r.json["status"] == "cancelled"
    assert r.json["runs"] == {"cancelled": 2}
    assert poll(client, fed, "node-b") == []
    hb = client.post(
        "/api/node/heartbeat",
        headers=fed.world.as_node("node-a"),
        json={"running": [item["run_id"]]},
    )
    assert hb.json["cancel"] == [item["run_id"]]
    assert post(client, fed, "node-a", item["run_id"], result=1).status_code == 409
    again = client.post(f"/api/tasks/{task['id']}/cancel", headers=fed.world.as_user("alice"))
    assert again.status_code == 409


def test_sweep_expires_runs_past_the_deadline_and_fails_the_task(app, client, fed):
    task = create_task(client, fed, timeout=60)
    [item] = poll(client, fed, "node-a")
    post(client, fed, "node-a", item["run_id"], result=1)
    with app.app_context():
        db.session().execute(update(Task).where(Task.id == task["id"]).values(deadline=utcnow()))
        db.session().commit()
        counts = sweep_once()
        assert counts["expired"] == 1 and counts["finalized"] == 1
        assert sweep_once()["expired"] == 0
    t = client.get(f"/api/tasks/{task['id']}", headers=fed.world.as_user("alice")).json
    assert t["status"] == "failed" and "node-b: expired" in t["message"]
    assert poll(client, fed, "node-b") == []


def test_sweep_requeues_runs_of_a_silent_agent_then_gives_up(app, client, fed):
    app.config["RUN_MAX_ATTEMPTS"] = 2
    task = create_task(client, fed, node_ids=[fed.node_a])

    def lapse():
        with app.app_context():
            db.session().execute(
                update(Run)
                .where(Run.task_id == task["id"])
                .values(lease_expires=utcnow() - timedelta(seconds=1))
            )
            db.session().commit()
            return sweep_once()

    [first] = poll(client, fed, "node-a")
    assert lapse()["requeued"] == 1
    [second] = poll(client, fed, "node-a")
    assert second["run_id"] == first["run_id"] and second["attempt"] == 2
    # A heartbeat keeps the lease alive.
    hb = client.post(
        "/api/node/heartbeat",
        headers=fed.world.as_node("node-a"),
        json={"running": [second["run_id"]]},
    )
    assert hb.json["cancel"] == []
    assert lapse()["lost"] == 1
    t = client.get(f"/api/tasks/{task['id']}", headers=fed.world.as_user("alice")).json
    assert t["status"] == "failed" and "stopped answering" in t["message"]


def test_sweep_dispatches_a_task_whose_message_was_lost(app, client, fed):
    with app.app_context():
        t = Task(
            collaboration_id=fed.study,
            algorithm="noop",
            target_node_ids=[fed.node_a],
            created_at=utcnow() - timedelta(minutes=1),
            deadline=utcnow() + timedelta(hours=1),
        )
        db.session().add(t)
        db.session().commit()
        assert sweep_once()["dispatched"] == 1
        assert sweep_once()["dispatched"] == 0
    assert fed.world.count(Run) == 1
    assert len(poll(client, fed, "node-a")) == 1


def test_tasks_need_a_researcher_role_and_nodes_of_the_collaboration(client, fed):
    w = fed.world
    body = {"collaboration_id": fed.study, "algorithm": "noop"}
    for user, status in (("coord", 403), ("steward_a", 403), ("carl", 404), ("nobody", 404)):
        assert client.post("/api/tasks", headers=w.as_user(user), json=body).status_code == status
    r = client.post(
        "/api/tasks", headers=w.as_user("alice"), json=dict(body, node_ids=[fed.node_c])
    )
    assert r.status_code == 400 and "node_ids" in r.json["errors"]
    assert w.count(Task) == 0
    # Everyone with a role in the study sees its tasks.
    create_task(client, fed)
    for user in ("coord", "steward_a", "admin_a", "root"):
        assert len(client.get("/api/tasks", headers=w.as_user(user)).json) == 1, user
    events = [e["action"] for e in client.get("/api/audit", headers=w.as_user("coord")).json]
    assert "task.create" in events and "task.dispatch" in events
    assert w.count(AuditEvent) >= 2


@pytest.mark.parametrize("wait", ["-1", "x", "601"])
def test_bad_long_poll_parameters(client, fed, wait):
    r = client.get(f"/api/node/work?wait={wait}", headers=fed.world.as_node("node-a"))
    assert r.status_code == 400 and "wait" in r.json["errors"]


def test_a_restarted_agent_gives_back_its_runs_at_once(client, fed):
    task = create_task(client, fed, node_ids=[fed.node_a])
    create_task(client, fed, node_ids=[fed.node_a])
    first, second = poll(client, fed, "node-a")
    hb = client.post(
        "/api/node/heartbeat",
        headers=fed.world.as_node("node-a"),
        json={"running": [second["run_id"]], "reset": True},
    )
    assert hb.status_code == 200 and hb.json["cancel"] == []
    [again] = poll(client, fed, "node-a")
    assert again["run_id"] == first["run_id"] and again["attempt"] == 2
    assert again["task_id"] == task["id"]


def test_an_agent_that_was_taken_over_gets_no_more_work(client, fed):
    key = fed.world.as_node("node-a")
    old, new = "old-agent-0001", "new-agent-0002"
    r = client.post("/api/node/heartbeat", headers=key, json={"reset": True, "session": old})
    assert r.status_code == 200
    create_task(client, fed, node_ids=[fed.node_a])
    [item] = client.get(f"/api/node/work?session={old}", headers=key).json["work"]
    # A new agent process starts: the old one's run is given back, and the old one
    # (a poll still waiting after it was killed, or a twin with the same key) gets nothing.
    r = client.post("/api/node/heartbeat", headers=key, json={"reset": True, "session": new})
    assert r.status_code == 200
    stale = client.get(f"/api/node/work?session={old}", headers=key)
    assert stale.status_code == 409 and "taken over" in stale.json["message"]
    [again] = client.get(f"/api/node/work?session={new}", headers=key).json["work"]
    assert again["run_id"] == item["run_id"] and again["attempt"] == 2
