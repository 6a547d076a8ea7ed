"""The relay's parts without R or servers: the hub of calls in flight, the agent's own
policy check, and what a relayed call's audit records (fast; the HTTP behaviour is in
test_relay.py and test_relay_audit.py)."""

from __future__ import annotations

import threading
import time

import jwt
import pytest

from gateway.agent.config import Policy
from gateway.agent.relay import policy_refusal
from gateway.coordinator.relay.hub import NodeLost, RelayHub


def _answer_later(hub: RelayHub, node_id: int, delay: float = 0.05) -> threading.Thread:
    def work():
        calls = hub.take(node_id, wait=5, limit=10)
        time.sleep(delay)
        for call in calls:
            assert hub.respond(node_id, call.id, {"status": 200, "echo": call.request})

    t = threading.Thread(target=work)
    t.start()
    return t


def test_a_call_is_answered_by_its_node():
    hub = RelayHub()
    t = _answer_later(hub, 1)
    answer = hub.call(1, {"path": "/x"}, timeout=5)
    t.join()
    assert answer == {"status": 200, "echo": {"path": "/x"}}
    assert hub.pending(1) == 0


def test_another_node_cannot_answer_or_take_a_call():
    hub = RelayHub()
    result = {}
    caller = threading.Thread(target=lambda: result.update(a=hub.call(1, {"p": 1}, timeout=1)))
    caller.start()
    assert hub.take(2, wait=0.2, limit=10) == []  # node 2 sees nothing of node 1's
    (call,) = hub.take(1, wait=2, limit=10)
    assert hub.respond(2, call.id, {"status": 200}) is False
    assert hub.respond(1, call.id, {"status": 201}) is True
    assert hub.respond(1, call.id, {"status": 202}) is False  # answered once only
    caller.join()
    assert result["a"] == {"status": 201}


def test_an_unanswered_call_times_out_and_leaves_nothing_behind():
    hub = RelayHub()
    hub.take(1, wait=0, limit=1)  # node 1 has polled: connected for the grace
    started = time.monotonic()
    assert hub.call(1, {"p": 1}, timeout=0.2) is None
    assert 0.2 <= time.monotonic() - started < 2
    assert hub.pending(1) == 0
    assert hub.take(1, wait=0, limit=10) == []


def test_a_call_whose_node_stops_polling_ends_at_once():
    """An agent that took a call and died: the caller learns it after the grace, not
    after the whole timeout."""
    hub = RelayHub(grace=0.3)
    taker = threading.Thread(target=hub.take, args=(1, 2, 1))
    taker.start()  # takes the call, then never answers nor polls again
    started = time.monotonic()
    with pytest.raises(NodeLost):
        hub.call(1, {"p": 1}, timeout=30)
    assert time.monotonic() - started < 3
    taker.join()
    assert hub.pending(1) == 0


def test_a_node_is_connected_while_it_polls_and_for_a_grace_after():
    hub = RelayHub(grace=0.3)
    assert hub.connected(1) is False
    poller = threading.Thread(target=hub.take, args=(1, 0.3, 1))
    poller.start()
    time.sleep(0.1)
    assert hub.connected(1) is True
    poller.join()
    assert hub.connected(1) is True  # between two polls
    time.sleep(0.35)
    assert hub.connected(1) is False


def test_take_returns_at_most_limit_calls_in_order():
    hub = RelayHub()
    callers = [threading.Thread(target=hub.call, args=(1, {"n": n}, 1)) for n in range(3)]
    for c in callers:
        c.start()
        time.sleep(0.02)
    first = hub.take(1, wait=1, limit=2)
    second = hub.take(1, wait=1, limit=2)
    assert [c.request["n"] for c in first] == [0, 1]
    assert [c.request["n"] for c in second] == [2]
    for call in first + second:
        hub.respond(1, call.id, {"status": 200})
    for c in callers:
        c.join()


def _item(token: str | None) -> dict:
    headers = [["Authorization", f"Bearer {token}"]] if token else []
    return {"id": "x", "face": "armadillo", "path": "/execute", "headers": headers}


def test_the_agents_policy_reads_the_token_not_the_coordinators_word():
    token = jwt.encode({"sub": "mallory", "collaboration": 7}, "k" * 32, algorithm="HS256")
    item = {**_item(token), "user": "alice", "collaboration_id": 1}  # what a liar would say
    assert policy_refusal(item, Policy()) is None
    only_alice = Policy(users=frozenset({"alice"}))
    assert policy_refusal(item, only_alice) == "Refused by the node's policy: user 'mallory'."
    only_one = Policy(collaborations=frozenset({1}))
    assert "collaboration not served here" in policy_refusal(item, only_one)
    assert "need a relay token" in policy_refusal(_item(None), Policy())
    assert "unreadable" in policy_refusal(_item("not-a-jwt"), Policy())


# ------------------------------------------------------------ what relay.call records


def test_the_expression_is_recorded_only_for_the_calls_that_carry_one():
    from gateway.coordinator.relay.auditor import call_detail, expression_of

    expr = b"meanDS(D$age)"
    carrying = [
        ("armadillo", "POST", "/execute"),
        ("armadillo", "POST", "/symbols/E"),
        ("opal", "POST", "/ws/datashield/session/42/aggregate"),
        ("opal", "PUT", "/ws/datashield/session/42/symbol/E"),
    ]
    for face, method, path in carrying:
        assert expression_of(face, method, path, expr) == {"expression": "meanDS(D$age)"}
    secret = b'{"username": "alice", "password": "hunter2"}'
    others = [
        ("armadillo", "POST", "/select-profile"),
        ("armadillo", "POST", "/login"),
        ("armadillo", "GET", "/execute"),  # the method counts too
        ("armadillo", "DELETE", "/symbols/E"),
        ("armadillo", "POST", "/execute/more"),  # the whole path, not a prefix
        ("armadillo", "POST", "/ws/datashield/session/42/aggregate"),  # Opal's, other face
        ("opal", "POST", "/execute"),
        ("opal", "PUT", "/ws/datashield/session/42/symbol/E/table/demo.cohort.patients"),
        ("opal", "POST", "/ws/datashield/sessions"),
        ("opal", "POST", "/ws/auth/sessions"),
    ]
    for face, method, path in others:
        assert expression_of(face, method, path, secret) == {}, (face, method, path)
        detail = call_detail(face, method, path, secret, b"x" * 7)
        assert detail == {"bytes": 7} and "hunter2" not in repr(detail)
    # The size of the answer's body; no answer (a timeout): no size.
    assert call_detail("armadillo", "POST", "/execute", expr, b"\x00" * 123) == {
        "expression": "meanDS(D$age)",
        "bytes": 123,
    }
    assert call_detail("armadillo", "POST", "/execute", expr, None) == {
        "expression": "meanDS(D$age)"
    }
    assert call_detail("armadillo", "GET", "/lastresult", b"", b"") == {"bytes": 0}


def test_a_long_expression_is_cut_and_marked_as_cut():
    from gateway.coordinator.relay.auditor import EXPRESSION_LIMIT, expression_of

    long = "c(" + ", ".join(["1"] * 2000) + ")"  # 6,001 characters
    assert len(long) == 6001 > EXPRESSION_LIMIT == 2000
    got = expression_of("armadillo", "POST", "/execute", long.encode())
    assert got["expression_cut"] == 6001
    assert got["expression"] == long[:2000] + "… [cut: 6001 characters in all]"
    exact = "x" * EXPRESSION_LIMIT
    assert expression_of("armadillo", "POST", "/execute", exact.encode()) == {"expression": exact}
    # Not UTF-8 (the station refuses it): recorded as sent, undecodable bytes replaced.
    odd = expression_of("armadillo", "POST", "/execute", b"meanDS(\xff)")
    assert odd == {"expression": "meanDS(\ufffd)"}
