"""The relay over real HTTP: a coordinator (its API and its relay listener, each on a
port of its own), a node agent's relay loop, and the session's real gateway (R).

A researcher's client talks to the relay listener with a relay token from
`POST /api/auth/relay-token`; the call goes to the node's agent and gateway and back.
The gateway verifies the same token itself (the coordinator signs with the secret the
test gateway trusts, for the gateway's issuer and audience)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import jwt
import pytest
import requests
from datashield import DSLoginBuilder, DSSession

from gateway.agent.config import Policy
from gateway.agent.relay import RelayAgent
from gateway.coordinator import db
from tests.functional.conftest import AUDIENCE, TOKEN_SECRET, Armadillo
from tests.functional.rds import unserialize
from tests.functional.rscript import run_r_script
from tests.functional.stack import relay_token, relay_world, remove_roles, until

pytestmark = [pytest.mark.slow, pytest.mark.r]

RDS = {"Accept": "application/octet-stream"}
R_SCRIPT = Path(__file__).with_name("test_r_armadillo_client.R")
TEXT = {"Content-Type": "text/plain"}


@pytest.fixture(scope="module")
def relay(tmp_path_factory, gateway):
    def federation(world):
        orgs = [world.org(f"Hospital {c}") for c in "AB"]
        world.study = world.collaboration("study", *orgs)
        world.other = world.collaboration("other", *orgs)
        world.node_a = world.node("node-a", orgs[0], world.study)
        world.node_b = world.node("node-b", orgs[1], world.study)  # no agent: offline
        world.node_x = world.node("node-x", orgs[0], world.other)
        world.user(
            "alice", orgs[0], ("researcher", None, world.study), ("researcher", None, world.other)
        )
        world.user("bob", orgs[0], ("researcher", None, world.study))
        world.user("mallory", orgs[1], ("researcher", None, world.study))
        return {"node-a": Policy(users=frozenset({"alice", "bob"}))}

    tmp = tmp_path_factory.mktemp("relay")
    with relay_world(tmp, "relay-tests-" + "k" * 40, gateway.url, federation) as world:
        world.agent = world.agents["node-a"]
        yield world


def relayed(world, token: str) -> Armadillo:
    return Armadillo(world.listener.url, token=token)


def test_an_r_client_session_through_the_relay_equals_the_direct_one(relay, gateway):
    token = relay_token(relay, relay.node_a)
    via, direct = relayed(relay, token), Armadillo(gateway.url, token=token)
    for client in (via, direct):
        login = client.login()
        assert login.status_code == 204, login.text
        assert "Path=/" in login.headers["Set-Cookie"]
        assert client.head("/tables/demo/cohort/patients").status_code == 200
        assert client.load_table("D", "demo/cohort/patients")["status"] == "COMPLETED"
    answers = []
    for client in (via, direct):
        r = client.post("/execute", params={"async": "TRUE"}, data="meanDS(D$age)", headers=TEXT)
        assert r.status_code == 201 and r.headers["Location"] == "/lastcommand"
        assert client.wait()["status"] == "COMPLETED"
        result = client.get("/lastresult", headers=RDS)
        assert result.status_code == 200
        assert result.headers["Content-Type"] == "application/octet-stream"
        answers.append(result.content)
    assert answers[0] == answers[1]
    assert unserialize(answers[0])  # a real R value
    executes_before = len(gateway.audit(user="alice", action="execute"))
    # A command failing in R: FAILED, with the message the client parses.
    r = via.post("/execute", params={"async": "TRUE"}, data="meanDS(nosuch)", headers=TEXT)
    assert r.status_code == 201
    failed = via.wait()
    assert failed["status"] == "FAILED"
    message = failed["message"]
    assert message.startswith('Error evaluating: {"status":"400"')
    inner = json.loads(message[message.index("{") : message.rindex("}") + 1])
    assert "nosuch" in inner["message"]
    assert via.get("/lastresult", headers=RDS).status_code == 404
    # A bad expression: 400 at once, Armadillo's JSON error.
    bad = via.post("/execute", params={"async": "TRUE"}, data="noSuchMethodDS(D)", headers=TEXT)
    assert bad.status_code == 400
    assert "No such DataSHIELD 'AGGREGATE' method" in bad.json()["message"]
    assert via.get("/symbols").json() == ["D"]
    assert via.post("/logout").status_code in (200, 204)
    assert via.get("/lastcommand").status_code in (401, 404)
    direct.post("/logout")
    # Audited at the node under the researcher's name, and centrally.
    relayed_only = gateway.audit(user="alice", action="execute")[executes_before:]
    assert len(relayed_only) == 2  # the FAILED one and the refused one, as alice
    assert {e.get("outcome") for e in relayed_only} >= {"refused"}
    with relay.app.app_context():
        from gateway.coordinator.models import AuditEvent

        events = db.session().query(AuditEvent).filter_by(action="relay.call").all()
        assert any(e.actor_name == "alice" and e.detail["path"] == "/execute" for e in events)


def _mean_and_dims(urls: dict[str, str], token: str, driver: str, table: str) -> dict:
    """Through the Python `datashield` client with ``driver``, one session per named URL:
    name -> (meanDS(D$age), dimDS("D")) of ``table``."""
    values = {}
    for name, url in urls.items():
        builder = DSLoginBuilder()
        builder.add(name, url, token=token, driver=driver)
        session = DSSession(builder.build())
        session.open()
        try:
            session.assign_table("D", table)
            values[name] = (
                session.aggregate("meanDS(D$age)")[name],
                session.aggregate('dimDS("D")')[name],
            )
        finally:
            session.close()
    return values


def test_the_python_datashield_client_through_the_relay(relay, gateway):
    token = relay_token(relay, relay.node_a)
    urls = {"relayed": relay.listener.url, "direct": gateway.url}
    values = _mean_and_dims(urls, token, "gateway.client.ArmadilloDriver", "demo/cohort/patients")
    assert values["relayed"] == values["direct"]


def test_the_opal_face_through_the_relay(relay):
    token = relay_token(relay, relay.node_a)
    base = f"{relay.listener.url}/nodes/{relay.node_a}"
    auth = {"Authorization": f"Bearer {token}"}
    r = requests.get(f"{base}/ws/datasources", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers.get("X-Opal-Version")
    other = requests.get(
        f"{relay.listener.url}/nodes/{relay.node_b}/ws/datasources", headers=auth, timeout=30
    )
    assert (
        other.status_code == 403
        and other.json()["message"] == "This relay token is for another node."
    )


def _forged(world, **changes) -> str:
    claims = jwt.decode(
        relay_token(world, world.node_a), TOKEN_SECRET, algorithms=["HS256"], audience=AUDIENCE
    )
    claims.update(changes)
    return jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")


def test_tokens_that_do_not_fit_are_refused(relay):
    url = relay.listener.url
    cases = {
        "expired": (_forged(relay, exp=int(time.time()) - 60), 401, "expired"),
        "tampered": (relay_token(relay, relay.node_a)[:-3] + "abc", 401, "Invalid relay token."),
        "other audience": (_forged(relay, aud="someone-else"), 401, "Invalid relay token."),
        "other collaboration": (_forged(relay, collaboration=relay.other), 403, "collaboration"),
        "unknown node": (_forged(relay, node=9999), 404, "No such node."),
    }
    for what, (token, status, text) in cases.items():
        r = relayed(relay, token).login()
        assert r.status_code == status, (what, r.text)
        body = r.json()
        assert body["status"] == status and text in body["message"], (what, body)
    assert requests.post(f"{url}/select-profile", data=b"", timeout=10).status_code == 401
    basic = requests.post(f"{url}/select-profile", data=b"", auth=("alice", "x"), timeout=10)
    assert basic.status_code == 401
    assert requests.get(f"{url}/actuator/info", timeout=10).status_code == 200
    # Each refusal is audited centrally, with the user when the token named a real one.
    with relay.app.app_context():
        from gateway.coordinator.models import AuditEvent

        refused = db.session().query(AuditEvent).filter_by(action="relay.refused").all()
        messages = [e.detail["message"] for e in refused]
        assert all(e.outcome == "refused" for e in refused)
        assert "This relay token is for another collaboration." in messages
        other = next(e for e in refused if "another collaboration" in e.detail["message"])
        assert other.actor_name == "alice" and other.collaboration_id == relay.study


def test_a_researcher_who_left_the_collaboration_is_refused(relay):
    token = relay_token(relay, relay.node_a, "bob")
    assert relayed(relay, token).login().status_code == 204
    remove_roles(relay, "bob")
    r = relayed(relay, token).get("/lastcommand")
    assert r.status_code == 403 and "no longer a researcher" in r.json()["message"]


def test_an_offline_node_is_answered_clearly(relay):
    r = relayed(relay, relay_token(relay, relay.node_b)).login()
    assert r.status_code == 500
    assert r.json()["message"].startswith("Node 'node-b' is offline")


def test_the_nodes_own_policy_refuses_a_user(relay, gateway):
    before = len(gateway.audit(user="mallory"))
    r = relayed(relay, relay_token(relay, relay.node_a, "mallory")).login()
    assert r.status_code == 403
    assert r.json()["message"] == "Refused by the node's policy: user 'mallory'."
    assert len(gateway.audit(user="mallory")) == before  # never reached the gateway


def test_the_r_client_test_passes_unchanged_through_the_relay(relay, gateway):
    """test_r_armadillo_client.R (httr, exactly as DSMolgenisArmadillo drives the
    Armadillo API) with a relay token (`DSG_AUTH=token`: DSMolgenisArmadillo's
    `token=`): every check passes through the relay, and the same ones pass direct."""
    token = relay_token(relay, relay.node_a)
    passed = {}
    for name, url in (("relayed", relay.listener.url), ("direct", gateway.url)):
        env = {
            "DSG_URL": url,
            "DSG_AUTH": "token",
            "DSG_TOKEN": token,
            "DSG_TABLE": "demo/cohort/patients",
        }
        passed[name] = run_r_script(R_SCRIPT, env, min_passed=40)
    assert passed["relayed"] == passed["direct"]


def test_an_idle_agent_keeps_one_relay_poll_and_more_once_calls_come(relay):
    """Idle, the agent holds one relay poll at the coordinator (a waitress thread each);
    the first call brings back a second, so that calls arriving meanwhile are taken."""
    agent = relay.agent
    until(lambda: agent._want == 1, 15, "the agent to settle on one poll (poll_wait 2 s)")
    client = relayed(relay, relay_token(relay, relay.node_a))
    assert client.login().status_code == 204
    assert agent._want == agent.pollers == 2
    assert client.post("/logout").status_code in (200, 204)


def test_a_blocking_lastresult_does_not_hold_up_other_relayed_sessions(relay):
    """/lastresult blocks until its command is done; the agent forwards calls
    concurrently, so another session (even on the same node) is not kept waiting."""
    token = relay_token(relay, relay.node_a)
    slow, quick = relayed(relay, token), relayed(relay, token)
    assert slow.login("faults").status_code == 204
    assert quick.login().status_code == 204
    r = slow.post("/execute", params={"async": "TRUE"}, data="sleepDS(3)", headers=TEXT)
    assert r.status_code == 201
    started = time.monotonic()
    waiter = threading.Thread(
        target=lambda: setattr(waiter, "answer", slow.get("/lastresult", headers=RDS))
    )
    waiter.start()
    time.sleep(0.2)  # the slow /lastresult is now held at the node
    assert quick.get("/lastcommand").status_code == 404  # nothing run yet in this session
    assert slow.get("/lastcommand").json()["status"] in ("PENDING", "IN_PROGRESS")
    assert time.monotonic() - started < 2
    waiter.join(30)
    assert waiter.answer.status_code == 200 and unserialize(waiter.answer.content) == [3.0]
    assert time.monotonic() - started > 2.5
    for client in (slow, quick):
        client.post("/logout")


def test_an_answer_too_large_for_the_relay_is_a_clear_error(relay):
    client = relayed(relay, relay_token(relay, relay.node_a))
    assert client.login().status_code == 204
    assert len(client.get("/methods/aggregate").content) > 3000
    saved = relay.app.config["MAX_CONTENT_LENGTH"]
    relay.app.config["MAX_CONTENT_LENGTH"] = 3000  # what the agent may post back
    try:
        r = client.get("/methods/aggregate")
        assert r.status_code == 500
        assert "too large for the relay" in r.json()["message"]
        assert client.get("/lastcommand").status_code == 404  # small answers still pass
    finally:
        relay.app.config["MAX_CONTENT_LENGTH"] = saved
    client.post("/logout")


def test_the_python_opal_client_through_the_relay(relay, gateway):
    """datashield-opal with a base URL under /nodes/<id> and the relay token."""
    token = relay_token(relay, relay.node_a)
    urls = {"relayed": f"{relay.listener.url}/nodes/{relay.node_a}", "direct": gateway.url}
    values = _mean_and_dims(urls, token, "datashield_opal.OpalDriver", "demo.cohort.patients")
    assert values["relayed"] == values["direct"]


def test_an_agent_that_dies_mid_call_is_answered_clearly(relay, gateway):
    """Node b's agent takes a call that blocks (a /lastresult of a 10 s command), then
    stops: the caller gets a clear 500 once the node's last poll has ended (its wait,
    2 s here) plus RELAY_POLL_GRACE, not after RELAY_TIMEOUT (60 s here)."""
    agent = RelayAgent(
        f"{relay.server.url}/api",
        relay.keys["node-b"],
        gateway.url,
        Policy(),
        poll_wait=2,
        backoff_initial=0.05,
        request_timeout=5,
    ).start()
    try:
        until(lambda: agent.connected, 10, "node b's relay agent")
        client = relayed(relay, relay_token(relay, relay.node_b))
        assert client.login("faults").status_code == 204
        r = client.post("/execute", params={"async": "TRUE"}, data="sleepDS(10)", headers=TEXT)
        assert r.status_code == 201
        started = time.monotonic()
        waiter = threading.Thread(
            target=lambda: setattr(waiter, "answer", client.get("/lastresult", headers=RDS))
        )
        waiter.start()
        time.sleep(0.3)
    finally:
        agent.stop(0.5)  # gone, with the call in its hands
    waiter.join(30)
    assert waiter.answer.status_code == 500
    assert waiter.answer.json()["message"] == "Node 'node-b' went offline before it answered."
    assert time.monotonic() - started < 8  # before the command itself could end
    time.sleep(1.1)  # RELAY_POLL_GRACE: node b is offline again for the other tests
