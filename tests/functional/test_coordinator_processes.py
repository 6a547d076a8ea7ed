"""A whole federation on one machine, every part its own process, talking real HTTP:
`dsgateway coordinator serve` (embedded mode: SQLite, the in-process Celery transport)
and three `dsgateway node run` stations (a gateway over R and an agent each, on
different data). A researcher runs an `aggregate` task on all three; a station's agent
is killed and restarted mid-task; the coordinator is killed and restarted mid-task.
Every task ends completed, nothing is lost or doubled.

The processes are started by `tests.functional.stack`."""

from __future__ import annotations

import pytest

from tests.functional.stack import Stack, running_stack, until

pytestmark = [pytest.mark.slow, pytest.mark.r]


@pytest.fixture
def federation(tmp_path, r_lib):
    with running_stack(tmp_path, r_lib) as stack:
        yield stack


DIMS = {"table": "demo/cohort/patients", "symbol": "D", "expressions": ['dimDS("D")']}


def create_task(fed: Stack, **body) -> dict:
    r = fed.api(
        "POST",
        "/tasks",
        json={
            "collaboration_id": fed.collaboration,
            "algorithm": "aggregate",
            "parameters": DIMS,
            **body,
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


def finished(fed: Stack, task_id: int, timeout: float = 60) -> dict:
    return until(
        lambda: (
            (t := fed.api("GET", f"/tasks/{task_id}").json())["status"]
            in ("completed", "failed", "cancelled")
            and t
        ),
        timeout,
        f"task {task_id}",
        step=0.2,
    )


def node_dims(fed: Stack, task_id: int) -> dict[str, list]:
    value = fed.api("GET", f"/tasks/{task_id}/result").json()["value"]
    names = {str(i): n for n, i in fed.node_ids.items()}
    return {names[k]: v["results"][0] for k, v in value.items()}


def test_a_federation_of_processes_survives_agent_and_coordinator_restarts(federation):
    fed = federation
    task = create_task(fed)
    done = finished(fed, task["id"])
    assert done["status"] == "completed", done["message"]
    every_station = {n: [500, 11] for n in ("node-a", "node-b", "node-c")}
    assert node_dims(fed, task["id"]) == every_station

    # A station's agent is killed: its run waits; restarted, the station catches up.
    fed.kill_station("node-c")
    task = create_task(fed)
    until(
        lambda: fed.api("GET", f"/tasks/{task['id']}").json()["runs"].get("completed") == 2,
        60,
        "the two live stations",
    )
    assert fed.api("GET", f"/tasks/{task['id']}").json()["status"] == "running"
    fed.start_station("node-c")
    done = finished(fed, task["id"], timeout=90)
    assert done["status"] == "completed", done["message"]
    assert node_dims(fed, task["id"]) == every_station

    # The coordinator is killed right after accepting a task, and started again.
    task = create_task(fed)
    fed.kill_coordinator()
    fed.start_coordinator()
    done = finished(fed, task["id"], timeout=90)
    assert done["status"] == "completed", done["message"]
    runs = fed.api("GET", f"/tasks/{task['id']}/runs").json()
    assert len(runs) == 3 and all(r["status"] == "completed" for r in runs)
    assert node_dims(fed, task["id"]) == every_station
    tasks = fed.api("GET", "/tasks").json()
    assert [t["status"] for t in tasks] == ["completed"] * 3
