"""Faults and load over real HTTP: an endless loop, a memory bomb, a killed R process and
20 parallel sessions, each through the Armadillo face as DSMolgenisArmadillo drives it.
In every case the gateway keeps serving other sessions and the failing session reports
FAILED with a message the R client can show."""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from werkzeug.security import generate_password_hash

from tests.functional.rds import unserialize

pytestmark = pytest.mark.r

PASSWORD = "fault-pw"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, canary, faults_lib, example_data):
    from gateway.node.app import close_services, create_app
    from gateway.node.config import NodeConfig
    from gateway.node.server import BackgroundServer

    work = tmp_path_factory.mktemp("faults-gateway")
    shutil.copytree(example_data, work / "data")
    config = NodeConfig.from_dict(
        {
            "data_dir": str(work / "data"),
            "state_dir": str(work / "state"),
            "r_lib": faults_lib,
            "users": {
                f"user{i}": {
                    "password_hash": generate_password_hash(PASSWORD, "scrypt"),
                    "projects": ["demo"],
                }
                for i in range(22)
            },
            "profiles": {"default": {}},
            "limits": {
                "max_sessions": 30,
                "warm_workers": 2,
                "command_timeout": 2,
                "memory_per_session": 400,
                "idle_timeout": 600,
            },
            "server": {"threads": 48},
        }
    )
    app = create_app(config)
    server = BackgroundServer(app).start()
    yield server.url
    server.stop()
    close_services(app.extensions["dsgateway"])


def login(url: str, user: str = "user0") -> requests.Session:
    http = requests.Session()
    r = http.post(f"{url}/select-profile", data=b"", auth=(user, PASSWORD), timeout=60)
    assert r.status_code == 204, r.text
    return http


def run(http: requests.Session, url: str, expr: str) -> dict:
    """POST /execute?async=TRUE, then poll /lastcommand as the R client does."""
    r = http.post(
        f"{url}/execute",
        params={"async": "TRUE"},
        data=expr,
        headers={"Content-Type": "text/plain"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    delay = 0.05
    while True:
        cmd = http.get(f"{url}/lastcommand", timeout=60).json()
        if cmd["status"] in ("COMPLETED", "FAILED"):
            return cmd
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def r_client_message(cmd: dict) -> str:
    """What DSMolgenisArmadillo shows: the first {...} in `message`, parsed as JSON."""
    match = re.search(r"\{.*\}", cmd["message"], re.DOTALL)
    assert match, cmd["message"]
    return json.loads(match.group(0))["message"]


def test_endless_loop_is_stopped_and_the_session_goes_on(gateway):
    http, other = login(gateway, "user1"), login(gateway, "user2")
    started = time.monotonic()
    cmd = run(http, gateway, "spinDS()")
    assert cmd["status"] == "FAILED"
    assert "time limit of 2 s" in r_client_message(cmd)
    assert time.monotonic() - started < 15
    assert http.get(f"{gateway}/lastresult", timeout=60).status_code == 404
    # Interrupted, not killed: this session and the others still work.
    assert run(http, gateway, "pidDS()")["status"] == "COMPLETED"
    assert run(other, gateway, "pidDS()")["status"] == "COMPLETED"


def test_memory_bomb_is_stopped_at_the_memory_limit(gateway):
    http, other = login(gateway, "user3"), login(gateway, "user4")
    cmd = run(http, gateway, "allocDS(3000)")
    assert cmd["status"] == "FAILED"
    assert "cannot allocate" in r_client_message(cmd)
    assert run(http, gateway, "allocDS(10)")["status"] == "COMPLETED"
    assert run(other, gateway, "pidDS()")["status"] == "COMPLETED"


def test_killed_r_process_fails_the_command_and_the_session_says_so(gateway):
    http, other = login(gateway, "user5"), login(gateway, "user6")
    cmd = run(http, gateway, "crashDS()")
    assert cmd["status"] == "FAILED"
    assert "stopped unexpectedly" in r_client_message(cmd)
    # Later calls say clearly that the session is gone, as an error the R client raises.
    r = http.post(
        f"{gateway}/execute",
        params={"async": "TRUE"},
        data="pidDS()",
        headers={"Content-Type": "text/plain"},
        timeout=60,
    )
    assert r.status_code == 500 and "stopped unexpectedly" in r.json()["message"]
    assert run(other, gateway, "pidDS()")["status"] == "COMPLETED"
    # A new login gets a working R.
    assert run(login(gateway, "user5"), gateway, "pidDS()")["status"] == "COMPLETED"
    assert requests.get(f"{gateway}/actuator/info", timeout=60).status_code == 200


@pytest.mark.slow
def test_twenty_sessions_in_parallel_each_loading_and_running_fifty_aggregates(
    gateway, example_data
):
    table = pq.read_table(example_data / "demo" / "cohort" / "patients.parquet").to_pandas()
    expected = {"age": table["age"].mean(), "bmi": table["bmi"].mean()}

    def work(i: int) -> list[float]:
        http = login(gateway, f"user{i}")
        r = http.post(
            f"{gateway}/load-table",
            params={"table": "demo/cohort/patients", "symbol": "D", "async": "TRUE"},
            timeout=60,
        )
        assert r.status_code == 201, r.text
        assert http.get(f"{gateway}/lastcommand", timeout=60).json()["status"] in (
            "PENDING",
            "IN_PROGRESS",
            "COMPLETED",
        )
        wrong = []
        for k in range(50):
            var = "age" if k % 2 == 0 else "bmi"
            r = http.post(
                f"{gateway}/execute",
                params={"async": "TRUE"},
                data=f"meanDS(D${var})",
                headers={"Content-Type": "text/plain"},
                timeout=60,
            )
            assert r.status_code == 201, r.text
            result = http.get(
                f"{gateway}/lastresult", timeout=120, headers={"Accept": "application/octet-stream"}
            )
            assert result.status_code == 200, result.text
            value = unserialize(result.content)["EstimatedMean"]
            value = value[0] if isinstance(value, list) else value
            if not np.isclose(value, expected[var], rtol=1e-12):
                wrong.append((k, var, value))
        http.post(f"{gateway}/logout", timeout=60)
        return wrong

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(work, range(20)))
    assert results == [[] for _ in range(20)]
