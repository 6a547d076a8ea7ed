"""The relay through Redis (RELAY_HUB=redis): the relay listener of one coordinator
app and the agent's relay poll on ANOTHER app (as two API processes would be), sharing
only Redis and the database; a relayed session against the real gateway, and the
hub's rules (one answer, by its node only; a node that stops polling); and work news on
the agent's exchange with the Redis notifier across processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import redis

from gateway.agent.config import Policy
from gateway.agent.relay import RelayAgent
from gateway.coordinator import db
from gateway.coordinator.models import Node
from gateway.coordinator.relay import hub_of
from gateway.coordinator.relay.app import create_relay_app
from gateway.coordinator.relay.hub import NodeLost, RedisRelayHub
from gateway.coordinator.server import BackgroundServer
from tests.functional.conftest import AUDIENCE, ISSUER, TOKEN_SECRET, Armadillo
from tests.functional.stack import RedisServer, relay_token, until
from tests.unit.coordinator.fixtures import World, served_world, sqlite_coordinator

pytestmark = pytest.mark.slow
TEXT = {"Content-Type": "text/plain"}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def test_the_redis_hub_rules(redis_url):
    hub = RedisRelayHub(redis_url, "test-hub", grace=0.5)
    other = RedisRelayHub(redis_url, "test-hub", grace=0.5)  # another process
    assert hub.connected(1) is False
    result = {}

    def answer():
        (call,) = other.take(1, wait=5, limit=10)
        assert other.respond(2, call.id, {"status": 200}) is False  # not node 2's
        assert other.respond(1, call.id, {"status": 201, "echo": call.request}) is True
        assert other.respond(1, call.id, {"status": 202}) is False  # once only
        result["done"] = True

    t = threading.Thread(target=answer)
    t.start()
    time.sleep(0.1)  # node 1 polls: connected
    assert hub.connected(1) is True
    assert hub.call(1, {"path": "/x"}, timeout=5) == {"status": 201, "echo": {"path": "/x"}}
    t.join()
    assert result["done"] and hub.pending(1) == 0
    # A node that takes a call and stops polling: NodeLost after the grace.
    t = threading.Thread(target=other.take, args=(1, 1, 1))
    t.start()
    started = time.monotonic()
    with pytest.raises(NodeLost):
        hub.call(1, {"p": 1}, timeout=30)
    assert time.monotonic() - started < 5
    t.join()
    # A call nobody takes times out and leaves nothing queued.
    other.take(3, wait=0, limit=1)  # node 3 polled: connected for the grace
    assert hub.call(3, {"p": 1}, timeout=0.3) is None
    assert hub.pending(3) == 0


@pytest.mark.r
def test_a_relayed_session_across_two_api_processes(tmp_path, redis_url, gateway):
    secret_key = "relay-redis-" + "k" * 40
    settings = {
        "RELAY_SECRET": TOKEN_SECRET,
        "RELAY_ISSUER": ISSUER,
        "RELAY_HUB": "redis",
        "REDIS_URL": redis_url,
        "CELERY_QUEUE": f"relay-test-{time.time_ns()}",
        "LONG_POLL_MAX": 5,
    }
    # Two apps on one SQLite database: the agents' API process (served) and another,
    # whose relay listener the researcher calls. Each brings the schema up to date as
    # `coordinator serve` does on SQLite (the second finds nothing to do).
    with (
        served_world(tmp_path, secret_key, **settings) as world,
        sqlite_coordinator(tmp_path, secret_key, **settings) as front,
    ):
        assert isinstance(hub_of(front), RedisRelayHub)
        org = world.org("Hospital A")
        study = world.collaboration("study", org)
        node_id = world.node("node-a", org, study)
        with world.app.app_context():
            db.session().get(Node, node_id).audience = AUDIENCE
            db.session().commit()
        world.user("alice", org, ("researcher", None, study))
        listener = BackgroundServer(create_relay_app(front), threads=8).start()
        agent = RelayAgent(
            f"{world.server.url}/api", world.keys["node-a"], gateway.url, Policy(), poll_wait=2
        ).start()
        try:
            until(lambda: agent.connected, 10, "the relay agent")
            token = relay_token(world, node_id)
            client = Armadillo(listener.url, token=token)
            assert client.login().status_code == 204
            assert client.load_table("D", "demo/cohort/patients")["status"] == "COMPLETED"
            direct = Armadillo(gateway.url, token=token)
            assert direct.login().status_code == 204
            direct.load_table("D", "demo/cohort/patients")
            assert client.execute('dimDS("D")') == direct.execute('dimDS("D")')
            for c in (client, direct):
                assert c.post("/logout").status_code in (200, 204)
        finally:
            agent.stop(0.5)
            listener.stop()


def test_work_news_on_the_exchange_across_processes(tmp_path, redis_url):
    """The Redis notifier and hub: an agent's exchange waiting in one API process ends
    when a dispatch in ANOTHER process (a Celery worker's, here a child process)
    notifies its node; a node with nothing new keeps waiting."""
    queue = f"work-news-{time.time_ns()}"
    settings = {
        "RELAY_HUB": "redis",
        "WORK_NOTIFIER": "redis",
        "REDIS_URL": redis_url,
        "CELERY_QUEUE": queue,
        "LONG_POLL_MAX": 60,
    }
    with sqlite_coordinator(tmp_path, "work-news-" + "k" * 40, **settings) as app:
        world = World(app, app.test_client())
        orgs = world.org("Hospital A"), world.org("Hospital B")
        study = world.collaboration("study", *orgs)
        node_a, node_b = (
            world.node(f"node-{c}", o, study) for c, o in zip("ab", orgs, strict=True)
        )
        exchange = "/api/node/relay/exchange"
        seen = {
            name: app.test_client().post(exchange, headers=world.as_node(name), json={"work": ""})
            for name in ("node-a", "node-b")
        }
        assert all(r.status_code == 200 and r.json["work"] is False for r in seen.values())
        # The API process listens (the first watching exchange subscribed it).
        channel = f"{queue}:work"
        listeners = redis.Redis.from_url(redis_url)
        until(lambda: dict(listeners.pubsub_numsub(channel))[channel.encode()], 10, "a subscriber")
        out: dict = {}

        def wait(name):
            body = {"wait": 60, "work": seen[name].json["work_seen"]}
            r = app.test_client().post(exchange, headers=world.as_node(name), json=body)
            out[name] = r.json

        waiters = {
            name: threading.Thread(target=wait, args=(name,)) for name in ("node-a", "node-b")
        }
        for t in waiters.values():
            t.start()
        hub = hub_of(app)
        until(lambda: all(hub._watching.get(n) for n in (node_a, node_b)), 10, "both waiting")
        notify = (
            "import sys; from gateway.coordinator.notify import RedisWorkNotifier; "
            "RedisWorkNotifier(sys.argv[1], sys.argv[2]).notify([int(sys.argv[3])])"
        )
        subprocess.run([sys.executable, "-c", notify, redis_url, channel, str(node_a)], check=True)
        waiters["node-a"].join(30)  # half its wait: it ended because of the notification
        assert not waiters["node-a"].is_alive()
        assert out["node-a"]["work"] is True and out["node-a"]["requests"] == []
        assert waiters["node-b"].is_alive()  # node b had nothing: still waiting
        try:
            # A relay call ends node b's wait, with no work news.
            answer = {}
            caller = threading.Thread(
                target=lambda: answer.setdefault("a", hub.call(node_b, {"path": "/x"}, timeout=20))
            )
            caller.start()
            waiters["node-b"].join(30)
            assert out["node-b"]["work"] is False
            (call,) = out["node-b"]["requests"]
            assert hub.respond(node_b, call["id"], {"status": 200}) is True
            caller.join(30)
            assert answer["a"] == {"status": 200}
        finally:
            app.extensions["dsgateway_coordinator"].notifier.close()
