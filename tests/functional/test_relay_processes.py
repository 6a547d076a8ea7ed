"""The relay with every part its own process: `python -m gateway.coordinator.relay`
(the coordinator's API and relay listener, embedded mode) and a `dsgateway node run`
station (gateway and agent, whose relay loop `node run` starts). An R-like client
session goes through the relay; the coordinator is killed and restarted, and the same
session (its cookie, its R symbols, held at the node) carries on through the relay."""

from __future__ import annotations

import pytest

from tests.functional.conftest import Armadillo
from tests.functional.rds import unserialize
from tests.functional.stack import Stack, running_stack, until

pytestmark = [pytest.mark.slow, pytest.mark.r]
TEXT = {"Content-Type": "text/plain"}


@pytest.fixture
def stack(tmp_path, r_lib):
    with running_stack(tmp_path, r_lib, stations=("node-a",), relay=True) as stack:
        yield stack


def _relay_token(stack: Stack) -> str:
    r = stack.api("POST", "/auth/relay-token", json={"node_id": stack.node_ids["node-a"]})
    assert r.status_code == 200, r.text
    return r.json()["token"]


def _dims(client: Armadillo):
    r = client.post("/execute", params={"async": "TRUE"}, data='dimDS("D")', headers=TEXT)
    assert r.status_code == 201, r.text
    result = client.get("/lastresult", headers={"Accept": "application/octet-stream"})
    assert result.status_code == 200, result.text
    return result.content


def test_a_relayed_session_survives_a_coordinator_restart(stack):
    token = _relay_token(stack)
    via = Armadillo(stack.relay_url, token=token)
    until(lambda: via.login().status_code == 204, 30, "a login through the relay")
    assert via.load_table("D", "demo/cohort/patients")["status"] == "COMPLETED"
    direct = Armadillo(stack.stations["node-a"].gateway_url, token=token)
    assert direct.login().status_code == 204
    direct.load_table("D", "demo/cohort/patients")
    relayed_bytes = _dims(via)
    assert relayed_bytes == _dims(direct)
    assert unserialize(relayed_bytes)[:2] == [500, 11]  # the station's data, seed 1

    # A synchronous execute answers the value itself, relayed as directly. (The relay's
    # added time is a figure of `make bench`, not a test threshold.)
    sync = {
        name: client.post("/execute", data='dimDS("D")', headers=TEXT)
        for name, client in (("relayed", via), ("direct", direct))
    }
    assert sync["relayed"].status_code == sync["direct"].status_code == 200
    assert sync["relayed"].content == sync["direct"].content == relayed_bytes

    stack.kill_coordinator()
    stack.start_coordinator()
    # The agent reconnects; the R session (cookie, symbols) lives at the node.
    until(lambda: via.get("/symbols").status_code == 200, 60, "the relay after the restart")
    assert via.get("/symbols").json() == ["D"]
    assert _dims(via) == relayed_bytes
    assert via.post("/logout").status_code in (200, 204)
