"""What the coordinator records of each relayed call (`relay.call`), over real HTTP
through the relay to a real gateway (R): the expression of the calls that carry one
(Armadillo's execute and assign, Opal's aggregate and assign), the size of the answer
that left the station (equal to what the client received), and never another body.
The fixture is test_relay.py's (a coordinator, its relay listener, node A's agent)."""

from __future__ import annotations

import json

import pytest
import requests

from gateway.coordinator import db
from gateway.coordinator.models import AuditEvent
from tests.functional.test_relay import relay, relay_token, relayed  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.r]

TEXT = {"Content-Type": "text/plain"}
RDS = {"Accept": "application/octet-stream"}
SECRET = "hunter2-never-recorded"


def relay_calls(world, since_id: int) -> list[dict]:
    """The relay.call events written after event `since_id`, oldest first."""
    assert world.listener.app.extensions["relay_auditor"].flush()
    with world.app.app_context():
        events = (
            db.session()
            .query(AuditEvent)
            .filter(AuditEvent.action == "relay.call", AuditEvent.id > since_id)
            .order_by(AuditEvent.id)
            .all()
        )
        return [{"user": e.actor_name, "outcome": e.outcome, **e.detail} for e in events]


def last_event_id(world) -> int:
    with world.app.app_context():
        return max([e.id for e in db.session().query(AuditEvent)] or [0])


def test_armadillo_calls_record_their_expression_and_the_size_of_the_answer(relay):  # noqa: F811
    start = last_event_id(relay)
    client = relayed(relay, relay_token(relay, relay.node_a))
    # A body that is no expression (here a password) is never recorded.
    login = client.post("/select-profile", data=json.dumps({"password": SECRET}), headers=TEXT)
    assert login.status_code in (204, 400, 404), login.text
    assert client.login().status_code == 204
    assert client.load_table("D", "demo/cohort/patients")["status"] == "COMPLETED"
    value = client.post("/execute", data="meanDS(D$age)", headers={**TEXT, **RDS})
    assert value.status_code == 200 and len(value.content) > 100
    assign = client.post("/symbols/E", data="D$age", headers=TEXT)
    assert assign.status_code == 200, assign.text
    queued = client.post("/execute", params={"async": "TRUE"}, data="meanDS(E)", headers=TEXT)
    assert queued.status_code == 201 and queued.content == b""
    assert client.wait()["status"] == "COMPLETED"
    result = client.get("/lastresult", headers=RDS)
    assert result.status_code == 200
    assert result.content == value.content  # the same mean, fetched apart
    long = "meanDS(D$age)" + " " * 3000
    client.post("/execute", data=long, headers={**TEXT, **RDS})
    client.post("/logout")

    calls = relay_calls(relay, start)
    assert {c["user"] for c in calls} == {"alice"}
    assert SECRET not in json.dumps(calls)
    by = {(c["method"], c["path"], c.get("expression")): c for c in calls}
    sync = by[("POST", "/execute", "meanDS(D$age)")]
    assert (sync["status"], sync["bytes"], sync["outcome"]) == (200, len(value.content), "ok")
    assert by[("POST", "/symbols/E", "D$age")]["bytes"] == len(assign.content)
    assert by[("POST", "/execute", "meanDS(E)")]["bytes"] == 0  # 201, the value comes later
    fetched = [c for c in calls if c["path"] == "/lastresult"]
    assert [c["bytes"] for c in fetched] == [len(result.content)]
    assert "expression" not in fetched[0]  # a GET carries none
    cut = next(c for c in calls if c.get("expression_cut"))
    assert cut["expression_cut"] == len(long) == 3013
    assert cut["expression"] == long[:2000] + "… [cut: 3013 characters in all]"
    # Every call that got an answer says its size; only the expression calls say more.
    for c in calls:
        assert "bytes" in c, c
        extra = set(c) - {"user", "outcome", "method", "path", "remote", "status", "ms", "bytes"}
        assert extra <= {"expression", "expression_cut"}, c
        assert bool(extra) == (
            (c["method"], c["path"]) in {("POST", "/execute"), ("POST", "/symbols/E")}
        ), c


def test_opal_calls_record_their_expression_and_the_size_of_the_answer(relay):  # noqa: F811
    start = last_event_id(relay)
    token = relay_token(relay, relay.node_a)
    base = f"{relay.listener.url}/nodes/{relay.node_a}/ws"
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    opened = http.post(f"{base}/datashield/sessions", timeout=60)
    assert opened.status_code == 201, opened.text
    session = f"{base}/datashield/session/{opened.json()['id']}"
    try:
        table = http.put(f"{session}/symbol/D/table/demo.cohort.patients", timeout=60)
        assert table.status_code == 201, table.text
        assign = http.put(f"{session}/symbol/E", data="D$age", headers=TEXT, timeout=60)
        assert assign.status_code == 201, assign.text
        value = http.post(f"{session}/aggregate", data="meanDS(E)", headers=TEXT, timeout=60)
        assert value.status_code == 200, value.text
        assert len(value.content) == len(value.text.encode()) > 10
    finally:
        http.delete(session, timeout=60)
    calls = relay_calls(relay, start)
    sid = opened.json()["id"]
    by = {(c["method"], c["path"]): c for c in calls}
    aggregate = by[("POST", f"/ws/datashield/session/{sid}/aggregate")]
    assert (aggregate["expression"], aggregate["bytes"]) == ("meanDS(E)", len(value.content))
    assigned = by[("PUT", f"/ws/datashield/session/{sid}/symbol/E")]
    assert (assigned["expression"], assigned["bytes"]) == ("D$age", len(assign.content))
    loaded = by[("PUT", f"/ws/datashield/session/{sid}/symbol/D/table/demo.cohort.patients")]
    assert "expression" not in loaded and loaded["bytes"] == len(table.content)
    assert by[("POST", "/ws/datashield/sessions")]["bytes"] == len(opened.content)
