"""Node agents and the coordinator over real HTTP, in the embedded mode (SQLite, the
in-memory Celery transport with its worker thread, no Redis): tasks run end to end,
agents reconnect after the coordinator goes away, a restarted agent loses nothing, the
node's policy has the last word, and the `aggregate` algorithm runs through a real
gateway (R) as the researcher who created the task.

Agents come in two kinds: without a relay (they long-poll for work) and as stations
do (`station=True`: a relay loop whose exchange also tells of work, and a work poll
only when told; gateway.agent.link.WorkNews)."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.agent.agent import Agent
from gateway.agent.config import Policy
from gateway.agent.executors import ALGORITHMS, GatewayExecutor
from gateway.agent.link import CoordinatorLink, WorkNews
from gateway.agent.relay import RelayAgent
from gateway.coordinator.celery_app import EmbeddedWorker
from gateway.coordinator.models import Run
from gateway.coordinator.server import BackgroundServer
from tests.functional.stack import fast_agent_config, until
from tests.unit.coordinator.fixtures import TEST_RELAY_SECRET, World, sqlite_coordinator

pytestmark = pytest.mark.slow


@pytest.fixture
def coordinator(tmp_path):
    settings = {
        "RELAY_SECRET": TEST_RELAY_SECRET,
        "SWEEP_INTERVAL": 0.5,
        "LONG_POLL_MAX": 10,
        "RUN_LEASE": 30,
    }
    with sqlite_coordinator(tmp_path, "agent-tests-" + "k" * 40, **settings) as app:
        worker = EmbeddedWorker(app).start()
        server = BackgroundServer(app, threads=16).start()
        world = World(app, app.test_client())
        orgs = [world.org(f"Hospital {c}") for c in "ABC"]
        world.study = world.collaboration("study", *orgs)
        world.nodes = [
            world.node(f"node-{c}", o, world.study) for c, o in zip("abc", orgs, strict=True)
        ]
        world.user("alice", orgs[0], ("researcher", None, world.study))
        world.user("mallory", orgs[1], ("researcher", None, world.study))
        world.server = server
        agents: list = []  # Agent and RelayAgent
        world.agents = agents
        try:
            yield world
        finally:
            stoppers = [threading.Thread(target=a.stop, args=(2,)) for a in agents]
            for t in stoppers:
                t.start()
            server.stop()
            for t in stoppers:
                t.join()
            worker.stop()


def start_agent(
    world,
    name: str,
    functions=None,
    policy_algorithms=("echo", "sum", "slow"),
    station: bool = False,
    **policy,
) -> Agent:
    algorithms = None if policy_algorithms is None else frozenset(policy_algorithms)
    policy = {"algorithms": algorithms, **policy}
    cfg = fast_agent_config(world, Policy(**policy))
    link = CoordinatorLink(cfg.api_url, world.keys[name], cfg.request_timeout)
    news = WorkNews() if station else None
    agent = Agent(cfg, link, GatewayExecutor(None, cfg.policy, functions), news=news).start()
    world.agents.append(agent)
    if station:  # no relay call reaches the (absent) gateway in these tests
        relay = RelayAgent.from_config(cfg, world.keys[name], "http://127.0.0.1:9", news=news)
        agent.relay = relay.start()
        world.agents.append(agent.relay)
    return agent


def node_value(value):
    """A `sum` node algorithm answering `value`."""
    return {**ALGORITHMS, "sum": lambda _ctx, _params: value}


def create_task(world, **body) -> dict:
    r = world.client.post(
        "/api/tasks",
        headers=world.as_user(body.pop("as_user", "alice")),
        json={"collaboration_id": world.study, "algorithm": "sum", **body},
    )
    assert r.status_code == 201, r.json
    return r.json


def final(world, task_id: int, timeout: float = 20) -> dict:
    def check():
        t = world.client.get(f"/api/tasks/{task_id}", headers=world.as_user("alice")).json
        return t if t["status"] in ("completed", "failed", "cancelled") else None

    return until(check, timeout, f"task {task_id}")


def result(world, task_id: int):
    r = world.client.get(f"/api/tasks/{task_id}/result", headers=world.as_user("alice"))
    assert r.status_code == 200, r.json
    return r.json["value"]


@pytest.mark.parametrize("station", [False, True], ids=["agents", "stations"])
def test_three_agents_run_tasks_end_to_end(coordinator, station):
    w = coordinator
    for name, value in (("node-a", 1), ("node-b", 10), ("node-c", 100)):
        start_agent(w, name, node_value(value), station=station)
    started = time.monotonic()
    tasks = [create_task(w) for _ in range(5)]
    for task in tasks:
        assert final(w, task["id"])["status"] == "completed"
        assert result(w, task["id"]) == 111
    assert time.monotonic() - started < 30  # loose: shared, noisy machines
    echo = create_task(w, algorithm="echo", parameters={"k": [1, 2]}, node_ids=w.nodes[:1])
    assert final(w, echo["id"])["status"] == "completed"
    assert result(w, echo["id"]) == {str(w.nodes[0]): {"k": [1, 2]}}
    me = w.client.get(f"/api/nodes/{w.nodes[0]}", headers=w.as_user("alice")).json
    assert me["online"] is True


def test_a_noop_task_on_fifty_nodes(coordinator):
    """Fifty agents (threads) at once: every long poll holds a server thread and the
    agents' other requests still get through (waitress's default connection limit did
    not let them)."""
    w = coordinator
    orgs = [w.org(f"Site {i}") for i in range(50)]
    big = w.collaboration("big", *orgs)
    for i, org in enumerate(orgs):
        w.node(f"site-{i}", org, big)
        start_agent(w, f"site-{i}", policy_algorithms=None)
    w.user("bea", orgs[0], ("researcher", None, big))
    time.sleep(1)  # let the polls settle
    r = w.client.post(
        "/api/tasks", headers=w.as_user("bea"), json={"collaboration_id": big, "algorithm": "noop"}
    )
    started = time.monotonic()
    done = until(
        lambda: (
            (t := w.client.get(f"/api/tasks/{r.json['id']}", headers=w.as_user("bea")).json)[
                "status"
            ]
            == "completed"
            and t
        ),
        30,
        "the task on fifty nodes",
    )
    assert done["runs"] == {"completed": 50}
    assert time.monotonic() - started < 15  # about 1 s here; loose for shared machines


@pytest.mark.parametrize("station", [False, True], ids=["agent", "station"])
def test_an_agent_reconnects_when_the_coordinator_comes_back(coordinator, station):
    w = coordinator
    w.server.stop()  # the coordinator is down when the agent starts
    agent = start_agent(w, "node-a", node_value(7), station=station)
    time.sleep(0.5)
    assert agent.connected is False
    task = create_task(w, node_ids=w.nodes[:1])  # in-process: the database is there
    w.server.start()
    assert final(w, task["id"])["status"] == "completed"
    assert result(w, task["id"]) == 7
    # A coordinator restart in the middle: down, a task arrives, up again.
    w.server.stop()
    task = create_task(w, node_ids=w.nodes[:1])
    time.sleep(1)
    w.server.start()
    assert final(w, task["id"])["status"] == "completed"
    until(lambda: agent.connected, 10, "the agent to be connected")


@pytest.mark.parametrize("station", [False, True], ids=["agent", "station"])
def test_a_restarted_agent_loses_nothing(coordinator, station):
    w = coordinator
    release = threading.Event()

    def slow(_ctx, _params):
        release.wait(30)
        return 1

    first = start_agent(w, "node-a", {**ALGORITHMS, "slow": slow}, station=station)
    task = create_task(w, algorithm="slow", node_ids=w.nodes[:1])
    until(lambda: first.running, 10, "the first agent to start the run")
    first.stop(timeout=0.5)  # killed mid-run: its result never comes
    if station:
        first.relay.stop(timeout=0.5)
    second = start_agent(w, "node-a", {**ALGORITHMS, "slow": lambda _c, _p: 2}, station=station)
    done = final(w, task["id"])
    assert done["status"] == "completed" and result(w, task["id"]) == {str(w.nodes[0]): 2}
    release.set()
    # The agent counts a result once the coordinator's answer is back, which can be a
    # moment after the task shows completed: wait for the count, then check it is one.
    until(lambda: second.completed, 10, "the second agent to count its result")
    assert second.completed == 1
    runs = w.client.get(f"/api/tasks/{task['id']}/runs", headers=w.as_user("alice")).json
    assert [r["attempts"] for r in runs] == [2]
    assert w.count(Run) == 1


def test_an_idle_station_holds_only_its_relay_exchange_and_is_told_of_work(coordinator):
    """A station's work loop holds no long poll while its relay exchange watches: it
    polls for work only when told, without waiting, and the work runs."""
    w = coordinator
    seen: list[tuple[str, str]] = []  # (path, the wait asked for) of the node link
    inner = w.app.wsgi_app

    def counting(environ, start_response):
        if environ["PATH_INFO"].startswith("/api/node/"):
            query = dict(p.partition("=")[::2] for p in environ["QUERY_STRING"].split("&"))
            seen.append((environ["PATH_INFO"], query.get("wait", "")))
        return inner(environ, start_response)

    w.app.wsgi_app = counting
    agent = start_agent(w, "node-a", node_value(5), station=True)
    exchanges = lambda: sum(p == "/api/node/relay/exchange" for p, _ in seen)  # noqa: E731
    until(lambda: exchanges() >= 3, 20, "three relay exchanges")  # a few idle poll periods
    assert [p for p, _ in seen if p == "/api/node/work"] == []
    assert agent.news.seen  # the coordinator watches for it
    task = create_task(w, node_ids=w.nodes[:1])
    assert final(w, task["id"])["status"] == "completed"
    assert result(w, task["id"]) == 5
    polls = [wait for p, wait in seen if p == "/api/node/work"]
    assert polls and all(float(wait) == 0 for wait in polls), polls


def test_the_nodes_policy_has_the_last_word(coordinator):
    w = coordinator
    start_agent(w, "node-a", node_value(1), users=frozenset({"alice"}))
    start_agent(w, "node-b", node_value(2), algorithms=frozenset({"echo"}))
    by_mallory = create_task(w, as_user="mallory", node_ids=w.nodes[:1])
    assert final(w, by_mallory["id"])["status"] == "failed"
    unknown = create_task(w, node_ids=w.nodes[1:2])
    t = final(w, unknown["id"])
    assert t["status"] == "failed"
    assert "Refused by the node's policy: algorithm 'sum'" in t["message"]
    runs = w.client.get(f"/api/tasks/{by_mallory['id']}/runs", headers=w.as_user("alice")).json
    assert runs[0]["message"] == "Refused by the node's policy: user 'mallory'."


@pytest.mark.r
def test_aggregate_runs_through_the_real_gateway_as_the_researcher(coordinator, gateway):
    w = coordinator
    sessions = gateway.app.extensions["dsgateway"].sessions
    policy = Policy(algorithms=frozenset({"aggregate"}), projects=frozenset({"demo"}))
    cfg = fast_agent_config(w, policy, poll_wait=5, heartbeat_interval=20, request_timeout=30)
    link = CoordinatorLink(cfg.api_url, w.keys["node-a"], 10)
    w.agents.append(Agent(cfg, link, GatewayExecutor(sessions, policy)).start())
    params = {
        "table": "demo/cohort/patients",
        "symbol": "D",
        "expressions": ['dimDS("D")', 'classDS("D$age")'],
    }
    task = create_task(w, algorithm="aggregate", parameters=params, node_ids=w.nodes[:1])
    done = final(w, task["id"], timeout=60)
    assert done["status"] == "completed", done["message"]
    value = result(w, task["id"])[str(w.nodes[0])]
    dims, klass = value["results"]
    import pyarrow.parquet as pq

    table = pq.read_table(gateway.data_dir / "demo" / "cohort" / "patients.parquet")
    assert dims == [table.num_rows, table.num_columns]
    assert klass in ("numeric", "integer", ["numeric"], ["integer"])
    entries = gateway.audit(user="alice")
    assert any(e.get("expression") == 'dimDS("D")' for e in entries)
    # What the gateway refuses fails the run, with the gateway's reason.
    bad = dict(params, expressions=['nonsense("D$age")'])
    task = create_task(w, algorithm="aggregate", parameters=bad, node_ids=w.nodes[:1])
    t = final(w, task["id"], timeout=60)
    assert t["status"] == "failed" and "nonsense" in t["message"]
    # A project outside the node's policy is not there at all.
    other = dict(params, table="other/cohort/patients")
    task = create_task(w, algorithm="aggregate", parameters=other, node_ids=w.nodes[:1])
    t = final(w, task["id"], timeout=60)
    assert t["status"] == "failed" and "not found" in t["message"]
