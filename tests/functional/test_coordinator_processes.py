"""A whole federation on one machine, every part its own process, talking real HTTP:
`dsgateway coordinator serve` (embedded mode: SQLite, the in-process Celery transport)
and three `dsgateway node run` stations (a gateway over R and an agent each, on
different data). A researcher runs an `aggregate` task on all three; a station's agent
is killed and restarted mid-task; the coordinator is killed and restarted mid-task.
Every task ends completed, nothing is lost or doubled.

The processes are started by `tests.functional.stack`. `Process` and `Federation`
below are the older helpers, kept only while test_relay_processes.py imports them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.functional.stack import Stack, running_stack
from tests.unit.coordinator.fixtures import TEST_RELAY_SECRET

pytestmark = [pytest.mark.slow, pytest.mark.r]
ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "federation-admin-pw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(check, timeout: float, what: str, step: float = 0.1):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = check()
        except requests.RequestException as err:
            last = err
        if last and not isinstance(last, Exception):
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


class Federation:
    def __init__(self, work: Path, r_lib: str):
        self.work = work
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DSGATEWAY_R_LIB": r_lib,
            "DSGATEWAY_COORD_INSTANCE_PATH": str(work / "coordinator"),
            "DSGATEWAY_COORD_PORT": str(self.port),
            "DSGATEWAY_COORD_PASSWORD_HASH_METHOD": "scrypt:1024:8:1",
            "DSGATEWAY_COORD_RELAY_SECRET": TEST_RELAY_SECRET,
            "DSGATEWAY_COORD_SWEEP_INTERVAL": "1",
            "DSGATEWAY_COORD_REDISPATCH_AFTER": "1",
            "DSGATEWAY_COORD_RUN_LEASE": "60",
        }
        self.coordinator = Process(["coordinator", "serve"], self.env, work / "coordinator.log")
        self.nodes: dict[str, Process] = {}
        self.http = requests.Session()

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return self.http.request(method, f"{self.url}/api{path}", timeout=30, **kw)

    def start_coordinator(self) -> None:
        self.coordinator.start()
        _until(lambda: self.api("GET", "/health").ok, 30, "the coordinator")

    def login(self) -> None:
        r = self.api("POST", "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def add_station(self, name: str, key: str, seed: int, r_lib: str) -> None:
        from gateway.node.exampledata import generate_example_data

        home = self.work / name
        generate_example_data(home / "data", seed=seed)
        node_yaml = home / "node.yaml"
        node_yaml.write_text(
            yaml.safe_dump(
                {
                    "data_dir": "data",
                    "state_dir": "var",
                    "r_lib": r_lib,
                    "tokens": {
                        "issuer": "https://coordinator.invalid",
                        "audience": name,
                        "secret_env": "DSG_RELAY_SECRET",
                    },
                    "profiles": {"default": {"packages": ["dsGatewayBase"]}},
                    "limits": {"warm_workers": 1},
                    "server": {"port": _free_port()},
                }
            )
        )
        agent_yaml = home / "agent.yaml"
        agent_yaml.write_text(
            yaml.safe_dump(
                {
                    "coordinator": self.url,
                    "gateway": "node.yaml",
                    "poll_wait": 5,
                    "heartbeat_interval": 2,
                    "backoff_initial": 0.2,
                    "backoff_max": 2,
                    "policy": {"algorithms": ["aggregate"], "projects": ["demo"]},
                }
            )
        )
        env = {**self.env, "DSGATEWAY_NODE_API_KEY": key, "DSG_RELAY_SECRET": TEST_RELAY_SECRET}
        self.nodes[name] = Process(
            ["node", "run", "--config", str(agent_yaml)], env, home / "node.log"
        ).start()

    def stop(self) -> None:
        procs = [*self.nodes.values(), self.coordinator]
        for proc in procs:  # all at once, then wait for each
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.stop()


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
    return _until(
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
    assert node_dims(fed, task["id"]) == {n: [500, 11] for n in ("node-a", "node-b", "node-c")}

    # A station's agent is killed: its run waits; restarted, the station catches up.
    fed.kill_station("node-c")
    task = create_task(fed)
    _until(
        lambda: fed.api("GET", f"/tasks/{task['id']}").json()["runs"].get("completed") == 2,
        60,
        "the two live stations",
    )
    assert fed.api("GET", f"/tasks/{task['id']}").json()["status"] == "running"
    fed.start_station("node-c")
    done = finished(fed, task["id"], timeout=90)
    assert done["status"] == "completed", done["message"]
    assert len(node_dims(fed, task["id"])) == 3

    # The coordinator is killed right after accepting a task, and started again.
    task = create_task(fed)
    fed.kill_coordinator()
    fed.start_coordinator()
    done = finished(fed, task["id"], timeout=90)
    assert done["status"] == "completed", done["message"]
    runs = fed.api("GET", f"/tasks/{task['id']}/runs").json()
    assert len(runs) == 3 and all(r["status"] == "completed" for r in runs)
    tasks = fed.api("GET", "/tasks").json()
    assert [t["status"] for t in tasks] == ["completed"] * 3
