"""Iterative (multi-round) tasks, on SQLite and PostgreSQL: rounds follow each other,
a duplicate or concurrent finalize advances a round once, a node failing in a later
round, cancel and expiry between rounds, the MAX_RESULT_BYTES check, and the glm
task's parameters checked at creation.

`Countdown` is a test algorithm (not a fake of anything): it adds the node results up
over `rounds` rounds, sending the round number to the nodes each time."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from gateway.coordinator import db
from gateway.coordinator.aggregation import Done, NextRound
from gateway.coordinator.app import services
from gateway.coordinator.models import Result, Run, Task, utcnow
from gateway.coordinator.tasks import finalize, finalize_task, sweep_once
from tests.unit.coordinator.test_tasks import poll, post


class Countdown:
    def step(self, results, parameters, state, round):
        total = (state or 0) + sum(results.values())
        if round + 1 >= parameters["rounds"]:
            return Done({"total": total, "rounds": round + 1})
        return NextRound({"k": round + 1}, total)


@pytest.fixture
def countdown(app):
    services(app).aggregators.add("countdown", Countdown())


def start(client, fed, rounds=3, **body):
    body = {
        "collaboration_id": fed.study,
        "algorithm": "countdown",
        "parameters": {"rounds": rounds},
        **body,
    }
    r = client.post("/api/tasks", headers=fed.world.as_user("alice"), json=body)
    assert r.status_code == 201, r.json
    return r.json


def task_of(client, fed, task_id):
    return client.get(f"/api/tasks/{task_id}", headers=fed.world.as_user("alice")).json


def answer_round(client, fed, value=1, nodes=("node-a", "node-b")):
    items = {}
    for node in nodes:
        [item] = poll(client, fed, node)
        items[node] = item
        assert post(client, fed, node, item["run_id"], result=value).status_code == 200
    return items


def test_rounds_follow_each_other_to_one_result(client, fed, countdown):
    task = start(client, fed, rounds=3)
    for r in range(3):
        assert task_of(client, fed, task["id"])["round"] == r
        items = answer_round(client, fed, value=r + 1)
        for item in items.values():
            assert item["round"] == r
            # the task's parameters, updated by the round's node parameters
            assert item["parameters"] == ({"rounds": 3} if r == 0 else {"rounds": 3, "k": r})
    done = task_of(client, fed, task["id"])
    assert done["status"] == "completed" and done["round"] == 2
    assert done["runs"] == {"completed": 6}
    result = client.get(f"/api/tasks/{task['id']}/result", headers=fed.world.as_user("alice"))
    assert result.json["value"] == {"total": 2 * (1 + 2 + 3), "rounds": 3}
    runs = client.get(f"/api/tasks/{task['id']}/runs", headers=fed.world.as_user("alice")).json
    assert sorted((r["round"], r["node_id"]) for r in runs) == [
        (r, n) for r in range(3) for n in (fed.node_a, fed.node_b)
    ]
    assert poll(client, fed, "node-a") == []


def test_duplicate_and_concurrent_finalize_advance_a_round_once(app, client, fed, countdown):
    task = start(client, fed, rounds=3)
    # Round 0's results go in without a finalize message (as if the broker lost it).
    items = {node: poll(client, fed, node)[0] for node in ("node-a", "node-b")}
    with app.app_context():
        s = db.session()
        s.execute(
            update(Run)
            .where(Run.id.in_([i["run_id"] for i in items.values()]))
            .values(status="completed", result=1, finished_at=utcnow())
        )
        s.commit()
    outcomes, errors = [], []

    def deliver():
        try:
            with app.app_context():
                outcomes.append(finalize_task(task["id"]))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert sorted(outcomes, key=str) == [None, None, None, "round 1"]
    with app.app_context():
        finalize.apply(args=(task["id"],))  # a late duplicate through Celery's call path
        assert sweep_once()["advanced"] == 0
        rounds = db.session().execute(select(Run.round).where(Run.task_id == task["id"]))
        assert sorted(rounds.scalars()) == [0, 0, 1, 1]
        assert db.session().get(Task, task["id"]).state == 2
    # The task goes on normally from there.
    answer_round(client, fed)
    answer_round(client, fed)
    assert task_of(client, fed, task["id"])["status"] == "completed"
    assert fed.world.count(Result) == 1


def test_a_node_failing_in_round_two_fails_the_task(client, fed, countdown):
    task = start(client, fed, rounds=3)
    answer_round(client, fed)
    [a] = poll(client, fed, "node-a")
    [b] = poll(client, fed, "node-b")
    post(client, fed, "node-a", a["run_id"], result=1)
    post(client, fed, "node-b", b["run_id"], status="failed", message="disclosure risk")
    done = task_of(client, fed, task["id"])
    assert done["status"] == "failed" and done["round"] == 1
    assert done["message"] == "Round 1: node-b: failed (disclosure risk)"
    assert done["runs"] == {"completed": 3, "failed": 1}
    assert fed.world.count(Result) == 0
    assert poll(client, fed, "node-a") == []


def test_cancel_between_rounds(client, fed, countdown):
    task = start(client, fed, rounds=3)
    answer_round(client, fed)
    [a] = poll(client, fed, "node-a")  # round 1 started at node a, pending at node b
    r = client.post(f"/api/tasks/{task['id']}/cancel", headers=fed.world.as_user("alice"))
    assert r.status_code == 200 and r.json["status"] == "cancelled"
    assert r.json["runs"] == {"completed": 2, "cancelled": 2}
    hb = client.post(
        "/api/node/heartbeat", headers=fed.world.as_node("node-a"), json={"running": [a["run_id"]]}
    )
    assert hb.json["cancel"] == [a["run_id"]]
    assert post(client, fed, "node-a", a["run_id"], result=1).status_code == 409
    assert poll(client, fed, "node-b") == []
    assert task_of(client, fed, task["id"])["round"] == 1
    assert fed.world.count(Run) == 4 and fed.world.count(Result) == 0


def test_expiry_in_a_later_round(app, client, fed, countdown):
    task = start(client, fed, rounds=3, timeout=60)
    answer_round(client, fed)
    [a] = poll(client, fed, "node-a")
    post(client, fed, "node-a", a["run_id"], result=1)
    with app.app_context():
        db.session().execute(update(Task).where(Task.id == task["id"]).values(deadline=utcnow()))
        db.session().commit()
        counts = sweep_once()
        assert counts["expired"] == 1 and counts["finalized"] == 1
        assert sweep_once() == dict.fromkeys(counts, 0)
    done = task_of(client, fed, task["id"])
    assert done["status"] == "failed" and done["message"].startswith("Round 1: node-b: expired")


def test_a_lost_run_in_a_later_round_is_handed_out_again(app, client, fed, countdown):
    task = start(client, fed, rounds=2)
    answer_round(client, fed)
    [first] = poll(client, fed, "node-a")
    with app.app_context():
        db.session().execute(
            update(Run)
            .where(Run.id == first["run_id"])
            .values(lease_expires=utcnow() - timedelta(seconds=1))
        )
        db.session().commit()
        assert sweep_once()["requeued"] == 1
    [again] = poll(client, fed, "node-a")
    assert (again["run_id"], again["round"], again["attempt"]) == (first["run_id"], 1, 2)
    answer_round(client, fed, nodes=("node-b",))
    post(client, fed, "node-a", again["run_id"], result=1)
    assert task_of(client, fed, task["id"])["status"] == "completed"


def test_a_result_over_max_result_bytes_fails_its_run(app, client, fed, countdown):
    app.config["MAX_RESULT_BYTES"] = 100
    task = start(client, fed, rounds=1)
    [a] = poll(client, fed, "node-a")
    r = post(client, fed, "node-a", a["run_id"], result=list(range(100)))
    assert r.status_code == 200 and r.json["status"] == "failed"
    runs = client.get(f"/api/tasks/{task['id']}/runs", headers=fed.world.as_user("alice")).json
    big = next(run for run in runs if run["id"] == a["run_id"])
    assert big["result"] is None and "MAX_RESULT_BYTES" in big["message"]
    assert "291 bytes" in big["message"]  # len(json.dumps(list(range(100)))) compact
    # The agent posting it again is told it is the same (not an error to retry).
    assert post(client, fed, "node-a", a["run_id"], result=list(range(100))).json["duplicate"]


@pytest.mark.parametrize(
    ("parameters", "fields"),
    [
        ({"formula": "y ~ x"}, {"table"}),
        ({"table": "p/t", "formula": "y x"}, {"formula"}),
        ({"table": "p/t", "formula": "y ~ x", "family": "gamma"}, {"family"}),
        ({"table": "p/t", "formula": "y ~ x", "max_iterations": 0}, {"max_iterations"}),
        ({"table": "p/t", "formula": "y ~ x", "tolerance": "small"}, {"tolerance"}),
        ({"table": "p/t", "formula": "y ~ x", "variables": "y"}, {"variables"}),
        ({"table": "p/t", "formula": "y ~ x", "link": "probit"}, {"link"}),
    ],
)
def test_glm_parameters_are_checked_at_creation(client, fed, parameters, fields):
    body = {"collaboration_id": fed.study, "algorithm": "glm", "parameters": parameters}
    r = client.post("/api/tasks", headers=fed.world.as_user("alice"), json=body)
    assert r.status_code == 400, r.json
    assert set(r.json["errors"]["parameters"]) == fields
    assert fed.world.count(Task) == 0
