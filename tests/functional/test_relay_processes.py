"""The relay with every part its own process: `python -m gateway.coordinator.relay`
(the coordinator's API and relay listener, embedded mode) and a `dsgateway node run`
station (gateway and agent, whose relay loop `node run` starts). An R-like client
session goes through the relay; the coordinator is killed and restarted, and the same
session (its cookie, its R symbols, held at the node) carries on through the relay."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import pytest
import yaml

from tests.functional.conftest import Armadillo
from tests.functional.rds import unserialize
from tests.functional.test_coordinator_processes import (
    ADMIN_PASSWORD,
    ROOT,
    Federation,
    Process,
    _free_port,
    _until,
)

pytestmark = [pytest.mark.slow, pytest.mark.r]
TEXT = {"Content-Type": "text/plain"}


class RelayProcess(Process):
    def start(self) -> RelayProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.coordinator.relay", *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self


@pytest.fixture
def station(tmp_path, r_lib):
    fed = Federation(tmp_path, r_lib)
    fed.relay_url = f"http://127.0.0.1:{_free_port()}"
    fed.env["DSGATEWAY_COORD_RELAY_PORT"] = fed.relay_url.rsplit(":", 1)[1]
    fed.coordinator = RelayProcess([], fed.env, tmp_path / "coordinator.log")
    env = {**fed.env, "DSGATEWAY_ADMIN_PASSWORD": ADMIN_PASSWORD}
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "coordinator", "create-admin"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    fed.start_coordinator()
    try:
        fed.login()
        org = fed.api("POST", "/organizations", json={"name": "Hospital A"}).json()["id"]
        collab = fed.api(
            "POST", "/collaborations", json={"name": "study", "organization_ids": [org]}
        ).json()["id"]
        me = fed.api("GET", "/auth/me").json()
        fed.api(
            "POST",
            f"/users/{me['id']}/roles",
            json={"name": "researcher", "collaboration_id": collab},
        )
        node = fed.api(
            "POST",
            "/nodes",
            json={
                "name": "node-a",
                "organization_id": org,
                "collaboration_id": collab,
                "projects": ["demo"],
            },
        ).json()
        fed.node_id = node["id"]
        fed.add_station("node-a", node["api_key"], 1, r_lib)
        node_yaml = yaml.safe_load((tmp_path / "node-a" / "node.yaml").read_text())
        fed.gateway_url = f"http://127.0.0.1:{node_yaml['server']['port']}"
        _until(lambda: fed.api("GET", f"/nodes/{fed.node_id}").json()["online"], 90, "the station")
        yield fed
    finally:
        fed.stop()
        for log in sorted(tmp_path.glob("**/*.log")):
            if log.name != "audit.log":
                print(f"--- {log}\n{log.read_text()[-3000:]}")


def _relay_token(fed) -> str:
    r = fed.api("POST", "/auth/relay-token", json={"node_id": fed.node_id})
    assert r.status_code == 200, r.text
    return r.json()["token"]


def _dims(client: Armadillo):
    r = client.post("/execute", params={"async": "TRUE"}, data='dimDS("D")', headers=TEXT)
    assert r.status_code == 201, r.text
    result = client.get("/lastresult", headers={"Accept": "application/octet-stream"})
    assert result.status_code == 200, result.text
    return result.content


def test_a_relayed_session_survives_a_coordinator_restart(station):
    fed = station
    token = _relay_token(fed)
    via = Armadillo(fed.relay_url, token=token)
    _until(lambda: via.login().status_code == 204, 30, "a login through the relay")
    assert via.load_table("D", "demo/cohort/patients")["status"] == "COMPLETED"
    direct = Armadillo(fed.gateway_url, token=token)
    assert direct.login().status_code == 204
    direct.load_table("D", "demo/cohort/patients")
    relayed_bytes = _dims(via)
    assert relayed_bytes == _dims(direct)
    assert unserialize(relayed_bytes)

    # The relay's overhead on an aggregate round trip (execute + lastresult), every part
    # its own process, both measured in the same run.
    def sync_dims(client):  # one call: execute without async answers the value
        r = client.post("/execute", data='dimDS("D")', headers=TEXT)
        assert r.status_code == 200, r.text
        return r.content

    for label, call in (("async (execute + lastresult)", _dims), ("sync (execute)", sync_dims)):
        times: dict[str, list[float]] = {"relayed": [], "direct": []}
        for _ in range(40):
            for name, client in (("relayed", via), ("direct", direct)):
                started = time.perf_counter()
                call(client)
                times[name].append((time.perf_counter() - started) * 1000)
        median = {name: statistics.median(t) for name, t in times.items()}
        overhead = median["relayed"] - median["direct"]
        print(
            f"processes, aggregate round trip {label}: direct {median['direct']:.1f} ms, "
            f"relayed {median['relayed']:.1f} ms, overhead {overhead:.1f} ms"
        )
        assert overhead < 50, median  # loose: shared machines

    fed.coordinator.kill()
    fed.start_coordinator()
    # The agent reconnects; the R session (cookie, symbols) lives at the node.
    _until(lambda: via.get("/symbols").status_code == 200, 60, "the relay after the restart")
    assert via.get("/symbols").json() == ["D"]
    assert _dims(via) == relayed_bytes
    assert via.post("/logout").status_code in (200, 204)
