"""`gateway.client.CoordinatorClient` against the embedded coordinator (SQLite, in-process
Celery) served over HTTP on loopback, with node agents answering the runs."""

from __future__ import annotations

import pytest

from gateway.client import CoordinatorClient, CoordinatorError
from tests.functional import test_coordinator_agent as agent_tests
from tests.unit.coordinator.fixtures import PASSWORD

pytestmark = pytest.mark.slow

coordinator = agent_tests.coordinator  # the embedded coordinator on loopback, and a World
start_agent = agent_tests.start_agent


def client_for(world, username: str = "alice") -> CoordinatorClient:
    c = CoordinatorClient(world.server.url)
    c.login(username, PASSWORD)
    return c


def test_a_task_end_to_end_with_the_client(coordinator, capsys):
    w = coordinator
    for name in ("node-a", "node-b", "node-c"):
        start_agent(w, name)
    c = client_for(w)
    assert c.access_token and c.refresh_token
    collabs = c.collaborations()
    assert [x["id"] for x in collabs] == [w.study]
    assert sorted(n["id"] for n in c.nodes(w.study)) == sorted(w.nodes)

    task = c.create_task(w.study, "echo", {"k": [1, 2]})
    # The embedded worker may dispatch before the answer is written: pending or running.
    assert task["status"] in ("pending", "running") and task["node_ids"] == sorted(w.nodes)
    done = c.wait(task["id"], timeout=20)
    assert done["status"] == "completed"
    assert done["runs"] == {"completed": 3}
    assert "3/3" in capsys.readouterr().err  # the tqdm bar
    assert c.result(task["id"])["value"] == {str(n): {"k": [1, 2]} for n in w.nodes}
    runs = c.runs(task["id"])
    assert sorted(r["node_id"] for r in runs) == sorted(w.nodes)
    assert {r["status"] for r in runs} == {"completed"}

    one = c.create_task(w.study, "echo", {"x": 1}, nodes=[w.nodes[0]])
    assert c.wait(one["id"], timeout=20, progress=False)["status"] == "completed"
    assert c.result(one["id"])["value"] == {str(w.nodes[0]): {"x": 1}}

    with pytest.raises(CoordinatorError) as e:
        c.cancel(task["id"])
    assert e.value.status == 409 and "already completed" in e.value.message


def test_errors_carry_status_and_message(coordinator):
    w = coordinator
    with pytest.raises(CoordinatorError) as e:
        CoordinatorClient(w.server.url).login("alice", "wrong password")
    assert e.value.status == 401
    assert e.value.message == "Invalid username or password."

    other_org = w.org("Elsewhere")
    other = w.collaboration("other", other_org)
    w.node("node-x", other_org, other)
    w.user("bob", other_org, ("researcher", None, other))
    bob = client_for(w, "bob")
    theirs = bob.create_task(other, "noop")

    alice = client_for(w)
    with pytest.raises(CoordinatorError) as e:
        alice.task(theirs["id"])
    assert e.value.status == 404 and e.value.message == "No such task."
    with pytest.raises(CoordinatorError) as e:
        alice.create_task(w.study, "echo", nodes=[999])
    assert e.value.status == 400 and "node_ids" in e.value.details

    # a pending task is cancelled; its result is then a 404
    assert bob.cancel(theirs["id"])["status"] == "cancelled"
    with pytest.raises(CoordinatorError) as e:
        bob.result(theirs["id"])
    assert e.value.status == 404
    assert bob.wait(theirs["id"], timeout=5, progress=False)["status"] == "cancelled"


def test_an_expired_access_token_is_refreshed_once(coordinator):
    w = coordinator
    c = client_for(w)
    c.access_token = "not-a-token"
    assert [x["id"] for x in c.collaborations()] == [w.study]
    assert c.access_token != "not-a-token"
    c.access_token = c.refresh_token = "not-a-token"
    with pytest.raises(CoordinatorError) as e:
        c.collaborations()
    assert e.value.status == 401


def test_relay_tokens(coordinator):
    w = coordinator
    c = client_for(w)
    token = c.relay_token(w.study, w.nodes[1])
    assert token["node_id"] == w.nodes[1] and token["collaboration_id"] == w.study
    assert token["audience"] == "aud-node-b" and token["projects"] == ["demo"]
    with pytest.raises(CoordinatorError) as e:
        c.relay_token(w.study, 999)
    assert e.value.status == 404
