"""The parts bench/coordinator.py starts: a coordinator process (`python -m
gateway.coordinator.relay`, admin, collaborations made through its API), `dsgateway
node run` stations, simulated node agents on the real node-link HTTP API, a fresh
PostgreSQL database, and a keep-alive client like R's libcurl. Ports and waiting come
from the test suite's helpers (tests/functional/stack.py)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from gateway.agent.keepalive import KeepAlive  # noqa: E402 (after the path)
from gateway.agent.link import WorkNews  # noqa: E402
from tests.functional.stack import free_port as _free_port  # noqa: E402
from tests.functional.stack import until as _until  # noqa: E402

ADMIN_PASSWORD = "bench-admin-password"  # noqa: S105 - a throw-away local coordinator
RELAY_SECRET = "bench-relay-secret-0123456789abcdef0123456789"  # noqa: S105
TEXT = {"Content-Type": "text/plain"}
REDIS_URL = os.environ.get("DSGATEWAY_BENCH_REDIS", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "DSGATEWAY_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class Client:
    """A keep-alive HTTP client with a cookie and a bearer token, as libcurl is for R's
    httr (`requests` alone costs about a millisecond per call on these machines)."""

    def __init__(self, url: str, token: str):
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.cookie = None

    def request(self, method: str, path: str, body=None, headers=None) -> tuple[int, bytes]:
        headers = {**self.auth, **(headers or {})}
        if self.cookie:
            headers["Cookie"] = self.cookie
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return response.status, data

    def close(self) -> None:
        self.conn.close()


# ------------------------------------------------------------------ processes


class Coordinator:
    """`python -m gateway.coordinator.relay` (API + relay listener, embedded Celery),
    SQLite in a temporary directory, an admin made by `create-admin`."""

    def __init__(self, work: Path, extra_env: dict[str, str] | None = None):
        self.work = work
        self.port, self.relay_port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.relay_url = f"http://127.0.0.1:{self.relay_port}"
        self.env = {
            **os.environ,
            "DSGATEWAY_COORD_INSTANCE_PATH": str(work / "coordinator"),
            "DSGATEWAY_COORD_PORT": str(self.port),
            "DSGATEWAY_COORD_RELAY_PORT": str(self.relay_port),
            "DSGATEWAY_COORD_PASSWORD_HASH_METHOD": "scrypt:1024:8:1",
            "DSGATEWAY_COORD_RELAY_SECRET": RELAY_SECRET,
            "DSGATEWAY_COORD_LONG_POLL_MAX": "60",
            **(extra_env or {}),
        }
        self.http = requests.Session()
        self.procs: list[subprocess.Popen] = []
        if "DSGATEWAY_COORD_DATABASE_URL" in self.env:
            subprocess.run(
                [sys.executable, "-m", "gateway.cli", "coordinator", "db", "upgrade"],
                cwd=ROOT,
                env=self.env,
                check=True,
                capture_output=True,
            )
        subprocess.run(
            [sys.executable, "-m", "gateway.cli", "coordinator", "create-admin"],
            cwd=ROOT,
            env={**self.env, "DSGATEWAY_ADMIN_PASSWORD": ADMIN_PASSWORD},
            check=True,
            capture_output=True,
        )
        self.proc = self.spawn([sys.executable, "-m", "gateway.coordinator.relay"], "coordinator")
        _until(lambda: self.api("GET", "/health").ok, 60, "the coordinator")
        r = self.api("POST", "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        r.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def spawn(self, argv: list[str], name: str, env: dict | None = None) -> subprocess.Popen:
        with (self.work / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env or self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return self.http.request(method, f"{self.url}/api{path}", timeout=60, **kw)

    def ok(self, method: str, path: str, **kw) -> dict | list:
        r = self.api(method, path, **kw)
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json()

    def collaboration(self, nodes: int, projects=("demo",)) -> tuple[int, list[dict]]:
        """A collaboration of `nodes` organisations with a node each (the admin is a
        researcher of it); its id and the nodes (with their API keys)."""
        stamp = f"{time.monotonic_ns()}"
        orgs = [
            self.ok("POST", "/organizations", json={"name": f"org {stamp} {i}"})["id"]
            for i in range(nodes)
        ]
        collab = self.ok(
            "POST", "/collaborations", json={"name": f"c {stamp}", "organization_ids": orgs}
        )["id"]
        me = self.ok("GET", "/auth/me")
        self.ok(
            "POST",
            f"/users/{me['id']}/roles",
            json={"name": "researcher", "collaboration_id": collab},
        )
        made = [
            self.ok(
                "POST",
                "/nodes",
                json={
                    "name": f"n{stamp}-{i}",
                    "organization_id": org,
                    "collaboration_id": collab,
                    "projects": list(projects),
                },
            )
            for i, org in enumerate(orgs)
        ]
        return collab, made

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.http.close()


def start_station(coord: Coordinator, node: dict, work: Path) -> tuple[subprocess.Popen, str]:
    """A `dsgateway node run` station (gateway over R + agent) for `node`; its process
    and its gateway's URL."""
    from gateway.node.exampledata import generate_example_data

    home = work / node["name"]
    generate_example_data(home / "data", seed=1)
    gw_port = _free_port()
    (home / "node.yaml").write_text(
        yaml.safe_dump(
            {
                "data_dir": "data",
                "state_dir": "var",
                "r_lib": os.environ.get("DSGATEWAY_R_LIB", str(ROOT / ".rlib")),
                "tokens": {
                    "issuer": "https://coordinator.invalid",
                    "audience": node["audience"],
                    "secret_env": "DSG_RELAY_SECRET",
                },
                "profiles": {"default": {"packages": ["dsGatewayBase"]}},
                "limits": {"warm_workers": 1},
                "server": {"port": gw_port},
            }
        )
    )
    (home / "agent.yaml").write_text(
        yaml.safe_dump(
            {
                "coordinator": coord.url,
                "gateway": "node.yaml",
                "poll_wait": 30,
                "policy": {"projects": ["demo"]},
            }
        )
    )
    env = {
        **coord.env,
        "DSGATEWAY_NODE_API_KEY": node["api_key"],
        "DSG_RELAY_SECRET": RELAY_SECRET,
    }
    argv = [
        sys.executable,
        "-m",
        "gateway.cli",
        "node",
        "run",
        "--config",
        str(home / "agent.yaml"),
    ]
    return coord.spawn(argv, node["name"], env), f"http://127.0.0.1:{gw_port}"


# ------------------------------------------------------------------ simulated agents


class SimAgent:
    """A node agent reduced to its node link, speaking the real HTTP API as a real
    idle station (`dsgateway node run`) does: one relay exchange long poll (a real
    station's relay loop keeps one waiting once a whole poll brought no call), which
    also watches for work (`work`/`work_seen`, gateway/coordinator/relay/watch.py);
    told of work, a work poll that does not wait, answering every run at once with
    its parameters (no-op). The work loop is the real agent's, on the same
    `gateway.agent.link.WorkNews`: it long-polls for work itself only while the relay
    exchange is down. No heartbeats unless asked (`heartbeat()`): a real agent sends
    them only while it holds runs.

    `legacy=True`: an agent from before work news (a work long poll and a relay
    exchange long poll, each held all the time), for comparison.

    Light on purpose (kept-alive `http.client` connections, as the real relay loop
    uses): the benchmark's own agents share the machine's two cores with the
    coordinator."""

    def __init__(self, url: str, key: str, poll_wait: float, legacy: bool = False):
        self.url, self.poll_wait = f"{url}/api", poll_wait
        self.headers = {"X-Api-Key": key, "Content-Type": "application/json"}
        self.session_id = os.urandom(16).hex()
        self.stop = threading.Event()
        self.news = None if legacy else WorkNews()
        self.threads = [
            threading.Thread(target=self._work, daemon=True),
            threading.Thread(target=self._relay, daemon=True),
        ]
        self._beat = KeepAlive(self.url, timeout=120, proxies=False)

    def _call(self, link: KeepAlive, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        status, _, out = link.request(method, path, data, self.headers)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {out[:200]!r}")
        return json.loads(out)

    def start(self) -> SimAgent:
        body = {"running": [], "reset": True, "session": self.session_id}
        self._call(self._beat, "POST", "/node/heartbeat", body)
        # A real agent's start-up connection stays open until the coordinator's channel
        # timeout (waitress: 120 s) closes it; closing it now reaches that steady state
        # (one connection per idle station) without waiting two minutes.
        self._beat.close()
        for t in self.threads:
            t.start()
        return self

    def close(self) -> None:
        self.stop.set()
        if self.news is not None:
            self.news.close()

    def heartbeat(self) -> None:
        self._call(self._beat, "POST", "/node/heartbeat", {"running": []})

    def _work(self) -> None:
        """gateway.agent.agent.Agent._once, without the runs' threads."""
        link = KeepAlive(self.url, timeout=self.poll_wait + 60, proxies=False)
        limit, more = 10, False
        while not self.stop.is_set():
            wait = self.poll_wait
            if more:
                wait = 0
            elif self.news is not None:
                heard = self.news.next(self.poll_wait)
                if heard in ("idle", "lost"):
                    continue
                if heard == "work":
                    wait = 0
            path = f"/node/work?wait={wait}&limit={limit}&session={self.session_id}"
            try:
                items = self._call(link, "GET", path)["work"]
                more = len(items) >= limit
                for item in items:
                    result = {"status": "completed", "result": {"echo": item["parameters"]}}
                    self._call(link, "POST", f"/node/runs/{item['run_id']}/result", result)
            except (OSError, RuntimeError, http.client.HTTPException):
                self.stop.wait(1)

    def _relay(self) -> None:
        """gateway.agent.relay.RelayAgent's one waiting worker of an idle station."""
        link = KeepAlive(self.url, timeout=self.poll_wait + 60, proxies=False)
        while not self.stop.is_set():
            body = {"responses": [], "wait": self.poll_wait, "limit": 1}
            if self.news is not None:
                body["work"] = self.news.seen
            try:
                answer = self._call(link, "POST", "/node/relay/exchange", body)
                if self.news is not None:
                    self.news.heard(answer)
            except (OSError, RuntimeError, http.client.HTTPException):
                if self.news is not None:
                    self.news.lost()
                self.stop.wait(1)


@contextlib.contextmanager
def postgres_database():
    """A fresh PostgreSQL database (dropped afterwards); its URL."""
    from sqlalchemy import create_engine, make_url, text

    server = make_url(POSTGRES_URL)
    name = f"dsgw_bench_{os.urandom(6).hex()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
