"""A whole federation on one machine, every part its own process, for functional tests.

    with running_stack(tmp_path, r_lib, redis=True, database_url=pg) as stack:
        client = stack.admin_client()          # a CoordinatorClient, logged in
        task = client.create_task(stack.collaboration, "glm", {...})
        stack.kill_worker(); stack.start_worker()

- The coordinator: `dsgateway coordinator serve` (or `python -m gateway.coordinator.relay`
  with ``relay=True``: the API plus the relay listener at `.relay_url`).
- Embedded mode by default (SQLite in the instance folder, the in-process Celery
  transport). With ``redis=True`` a private `redis-server` on a free port is the broker
  and the work notifier, and a separate `dsgateway coordinator worker --beat` process
  runs the Celery tasks and the sweep. ``database_url`` (e.g. the session's fresh
  PostgreSQL database) replaces SQLite; it is migrated first.
- One `dsgateway node run` station (gateway over R + agent) per name in ``stations``,
  each with its own example data (seed 1, 2, 3...) in `station.home / "data"`.
- An admin user (`ADMIN_PASSWORD`) who is also researcher of the collaboration.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from tests.unit.coordinator.fixtures import TEST_RELAY_SECRET, World, served_world

__all__ = [
    "ADMIN_PASSWORD",
    "ROOT",
    "CeleryWorker",
    "Process",
    "RedisServer",
    "Stack",
    "Station",
    "coordinator_env",
    "free_port",
    "relay_token",
    "relay_world",
    "remove_roles",
    "running_stack",
    "until",
]

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "federation-admin-pw"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(check, timeout: float, what: str, step: float = 0.1):
    """Calls ``check`` until it returns something true (request errors count as not
    yet); AssertionError after ``timeout`` seconds."""
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
    """A child process in its own process group (so that what it forks, e.g. Celery's
    beat, goes with it), output appended to ``log``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        if self.proc is not None:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=20)
        self.proc = None

    def terminate(self) -> None:
        if self.alive:
            self._signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.alive:
            self.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # whatever of the group is left


class CeleryWorker(Process):
    """A Celery worker process: `start` empties its log and returns once the worker
    says it is ready (killing it if it never does)."""

    def start(self, timeout: float = 60) -> CeleryWorker:
        self.log.write_text("")
        super().start()
        try:
            until(lambda: "ready." in self.log.read_text(), timeout, "the Celery worker")
        except AssertionError:
            self.kill()
            raise
        return self


class RedisServer:
    """A private `redis-server` on a free port, nothing saved (in ``workdir``): stop
    and start it again to play Redis gone; it comes back empty."""

    def __init__(self, workdir: Path):
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed: run scripts/ensure-services.sh")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        import redis

        with (self.workdir / "redis.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis(port=self.port)

        def up():
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        until(up, 10, "redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def coordinator_env(settings: dict) -> dict[str, str]:
    """Coordinator settings as the environment variables a coordinator process reads."""
    return {
        f"DSGATEWAY_COORD_{key}": value if isinstance(value, str) else json.dumps(value)
        for key, value in settings.items()
    }


def _cli(*args: str) -> list[str]:
    return ["-m", "gateway.cli", *args]


@dataclass
class Station:
    name: str
    node_id: int
    home: Path
    process: Process
    gateway_url: str

    @property
    def data_dir(self) -> Path:
        return self.home / "data"


class Stack:
    def __init__(
        self,
        work: Path,
        r_lib: str,
        *,
        stations: Sequence[str] = ("node-a", "node-b", "node-c"),
        algorithms: Sequence[str] = ("aggregate",),
        redis: bool = False,
        database_url: str | None = None,
        relay: bool = False,
        settings: dict | None = None,
    ):
        self.work = work
        self.r_lib = r_lib
        self.station_names = list(stations)
        self.algorithms = list(algorithms)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.relay_url = f"http://127.0.0.1:{free_port()}" if relay else None
        coordinator: dict = {
            "INSTANCE_PATH": str(work / "coordinator"),
            "PORT": self.url.rsplit(":", 1)[1],
            "PASSWORD_HASH_METHOD": "scrypt:1024:8:1",
            "RELAY_SECRET": TEST_RELAY_SECRET,
            "SWEEP_INTERVAL": 1,
            "REDISPATCH_AFTER": 1,
            "RUN_LEASE": 60,
        }
        if relay:
            coordinator["RELAY_PORT"] = self.relay_url.rsplit(":", 1)[1]
        if database_url:
            coordinator["DATABASE_URL"] = database_url
        self.redis = RedisServer(work) if redis else None
        self.redis_port = self.redis.port if self.redis else None
        if self.redis:
            broker = self.redis.url
            coordinator.update(
                CELERY_BROKER_URL=broker,
                CELERY_RESULT_BACKEND=broker,
                CELERY_QUEUE=f"dsgw-test-{uuid.uuid4().hex[:8]}",
                WORK_NOTIFIER="redis",
                REDIS_URL=broker,
            )
        coordinator.update(settings or {})
        self.env = {**os.environ, "DSGATEWAY_R_LIB": r_lib, **coordinator_env(coordinator)}
        self.database_url = database_url
        serve = ["-m", "gateway.coordinator.relay"] if relay else _cli("coordinator", "serve")
        self.coordinator = Process(serve, self.env, work / "coordinator.log")
        self.worker = (
            CeleryWorker(
                _cli("coordinator", "worker", "--pool", "threads", "-c", "4", "--beat"),
                self.env,
                work / "worker.log",
            )
            if redis
            else None
        )
        self.stations: dict[str, Station] = {}
        self.http = requests.Session()
        self.collaboration: int | None = None

    # ------------------------------------------------------------ the API as admin

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return self.http.request(method, f"{self.url}/api{path}", timeout=30, **kw)

    def login(self) -> None:
        r = self.api("POST", "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def admin_client(self):
        """A `gateway.client.CoordinatorClient` logged in as the admin (a researcher of
        the collaboration too)."""
        from gateway.client import CoordinatorClient

        client = CoordinatorClient(self.url)
        client.login("admin", ADMIN_PASSWORD)
        return client

    @property
    def node_ids(self) -> dict[str, int]:
        return {name: s.node_id for name, s in self.stations.items()}

    # ------------------------------------------------------------ life cycle

    def start(self) -> Stack:
        if self.redis is not None:
            self.redis.start()
        if self.database_url:
            subprocess.run(
                [sys.executable, *_cli("coordinator", "db", "upgrade")],
                cwd=ROOT,
                env=self.env,
                check=True,
                capture_output=True,
            )
        subprocess.run(
            [sys.executable, *_cli("coordinator", "create-admin")],
            cwd=ROOT,
            env={**self.env, "DSGATEWAY_ADMIN_PASSWORD": ADMIN_PASSWORD},
            check=True,
            capture_output=True,
        )
        self.start_coordinator()
        if self.worker is not None:
            self.start_worker()
        self.login()
        self._federation()
        return self

    def start_coordinator(self) -> None:
        self.coordinator.start()
        until(lambda: self.api("GET", "/health").ok, 60, "the coordinator")

    def kill_coordinator(self) -> None:
        self.coordinator.kill()

    def start_worker(self) -> None:
        assert self.worker is not None, "no separate worker: start the stack with redis=True"
        self.worker.start()

    def kill_worker(self) -> None:
        assert self.worker is not None, "no separate worker: start the stack with redis=True"
        self.worker.kill()

    def kill_station(self, name: str) -> None:
        self.stations[name].process.kill()

    def start_station(self, name: str) -> None:
        self.stations[name].process.start()

    def _federation(self) -> None:
        orgs = []
        for name in self.station_names:
            r = self.api("POST", "/organizations", json={"name": f"Hospital of {name}"})
            assert r.status_code == 201, r.text
            orgs.append(r.json()["id"])
        r = self.api("POST", "/collaborations", json={"name": "study", "organization_ids": orgs})
        assert r.status_code == 201, r.text
        self.collaboration = r.json()["id"]
        me = self.api("GET", "/auth/me").json()
        r = self.api(
            "POST",
            f"/users/{me['id']}/roles",
            json={"name": "researcher", "collaboration_id": self.collaboration},
        )
        assert r.status_code == 201, r.text
        for seed, (org, name) in enumerate(zip(orgs, self.station_names, strict=True), 1):
            r = self.api(
                "POST",
                "/nodes",
                json={
                    "name": name,
                    "organization_id": org,
                    "collaboration_id": self.collaboration,
                    "projects": ["demo"],
                },
            )
            assert r.status_code == 201, r.text
            self._add_station(name, r.json()["id"], r.json()["api_key"], seed)
        until(
            lambda: all(
                self.api("GET", f"/nodes/{s.node_id}").json()["online"]
                for s in self.stations.values()
            ),
            120,
            "every station online",
            step=0.3,
        )

    def _add_station(self, name: str, node_id: int, key: str, seed: int) -> None:
        from gateway.node.exampledata import generate_example_data

        home = self.work / name
        generate_example_data(home / "data", seed=seed)
        port = free_port()
        (home / "node.yaml").write_text(
            yaml.safe_dump(
                {
                    "data_dir": "data",
                    "state_dir": "var",
                    "r_lib": self.r_lib,
                    "tokens": {
                        "issuer": "https://coordinator.invalid",
                        "audience": name,
                        "secret_env": "DSG_RELAY_SECRET",
                    },
                    "profiles": {"default": {"packages": ["dsGatewayBase"]}},
                    "limits": {"warm_workers": 1},
                    "server": {"port": port},
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
                    "policy": {"algorithms": self.algorithms, "projects": ["demo"]},
                }
            )
        )
        env = {**self.env, "DSGATEWAY_NODE_API_KEY": key, "DSG_RELAY_SECRET": TEST_RELAY_SECRET}
        process = Process(_cli("node", "run", "--config", str(agent_yaml)), env, home / "node.log")
        self.stations[name] = Station(
            name, node_id, home, process.start(), f"http://127.0.0.1:{port}"
        )

    def stop(self) -> None:
        procs = [s.process for s in self.stations.values()]
        procs += [p for p in (self.worker, self.coordinator) if p is not None]
        for proc in procs:  # all at once, then wait for each
            proc.terminate()
        for proc in procs:
            proc.stop()
        if self.redis is not None:
            self.redis.stop()

    def print_logs(self, tail: int = 3000) -> None:
        for log in sorted(self.work.glob("**/*.log")):
            if log.name != "audit.log":
                print(f"--- {log}\n{log.read_text(errors='replace')[-tail:]}")


@contextmanager
def running_stack(work: Path, r_lib: str, **options) -> Iterator[Stack]:
    """A started `Stack`, stopped (and its logs printed, for failures) on the way out."""
    stack = Stack(work, r_lib, **options)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        stack.print_logs()


# ------------------------------------------------------------ the relay, in process


@contextmanager
def relay_world(
    folder: Path, secret_key: str, gateway_url: str, build: Callable[[World], dict]
) -> Iterator[World]:
    """A coordinator and its relay in this process, in front of the test gateway at
    ``gateway_url`` (tests/functional/conftest.py's): the API (``world.server``) and the
    relay listener (``world.listener``) each on a port of their own.

    ``build(world)`` makes the organisations, collaborations, nodes and users, and
    returns the nodes that get a relay agent: node name -> its `Policy`. Every node's
    audience is the test gateway's and the coordinator signs with the secret that
    gateway trusts, so a relay token is one the gateway accepts. The agents
    (``world.agents``: node name -> RelayAgent) are connected when this yields; on the
    way out they stop, then the listener, then the API."""
    from gateway.agent.relay import RelayAgent
    from gateway.coordinator import db
    from gateway.coordinator.models import Node
    from gateway.coordinator.relay.app import create_relay_app
    from gateway.coordinator.server import BackgroundServer
    from tests.functional.conftest import AUDIENCE, ISSUER, TOKEN_SECRET

    settings = {
        "RELAY_SECRET": TOKEN_SECRET,  # what the test gateway trusts
        "RELAY_ISSUER": ISSUER,
        "LONG_POLL_MAX": 5,
        "RELAY_TIMEOUT": 60,
        "RELAY_AUTH_CACHE": 0.5,
        "RELAY_POLL_GRACE": 1,
    }
    with served_world(folder, secret_key, threads=16, **settings) as world:
        world.listener = BackgroundServer(create_relay_app(world.app), threads=16).start()
        try:
            policies = build(world)
            with world.app.app_context():
                for node in db.session().query(Node):
                    node.audience = AUDIENCE  # the test gateway's
                db.session().commit()
            world.agents = {}
            try:
                for name, policy in policies.items():
                    world.agents[name] = RelayAgent(
                        f"{world.server.url}/api",
                        world.keys[name],
                        gateway_url,
                        policy,
                        poll_wait=2,
                        backoff_initial=0.05,
                        backoff_max=0.5,
                        request_timeout=5,
                    ).start()
                for agent in world.agents.values():
                    until(lambda agent=agent: agent.connected, 10, "the relay agents to connect")
                yield world
            finally:
                for agent in world.agents.values():
                    agent.stop(1)
        finally:
            world.listener.stop()


def relay_token(world: World, node_id: int, user: str = "alice") -> str:
    """A relay token for ``user`` to reach node ``node_id``, from the coordinator's API."""
    r = world.client.post(
        "/api/auth/relay-token", headers=world.as_user(user), json={"node_id": node_id}
    )
    assert r.status_code == 200, r.json
    return r.json["token"]


def remove_roles(world: World, username: str) -> None:
    """Takes every role away from ``username`` (a researcher who left the collaboration),
    then waits out the relay's cache of who may call (RELAY_AUTH_CACHE, 0.5 s in a
    `relay_world`), so the relay's next check of the user's token sees it."""
    from gateway.coordinator import db
    from gateway.coordinator.models import Role, User

    with world.app.app_context():
        s = db.session()
        user = s.query(User).filter_by(username=username).one()
        s.query(Role).filter_by(user_id=user.id).delete()
        s.commit()
    time.sleep(world.app.config["RELAY_AUTH_CACHE"] + 0.1)


def fast_agent_config(world: World, policy, **overrides):
    """An agent's settings for a test against ``world``'s served coordinator: short
    polls, heartbeats and back-off, so faults and reconnects play out in seconds."""
    from gateway.agent.config import AgentConfig

    settings = {
        "coordinator": world.server.url,
        "poll_wait": 1,
        "heartbeat_interval": 0.5,
        "backoff_initial": 0.05,
        "backoff_max": 0.5,
        "request_timeout": 5,
        "policy": policy,
        **overrides,
    }
    return AgentConfig(**settings)
