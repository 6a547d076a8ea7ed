"""A federation on one machine, every part its own process: a coordinator with its
relay (`dsgateway coordinator relay`: embedded SQLite, the in-process Celery transport,
no Redis) and three stations (`dsgateway node run`: a gateway over R and an agent).

Everything is set up through the product's own commands and REST API, as an operator
and the stations' stewards would: `coordinator create-admin`, then organisations, a
collaboration, a researcher and the nodes through `/api`, then each station's
node.yaml and agent.yaml and its registry.

    fed = DemoFederation(Path("demo-run"), seed=2020)
    fed.start(echo=print)      # returns once every station is online
    ...                        # fed.coordinator_url, fed.relay_url, fed.researcher
    fed.stop()

The working directory holds everything: ``coordinator/`` (its database with the central
audit trail, its log), one folder per station (``data/``, ``node.yaml``, ``agent.yaml``,
``var/audit.log``, ``node.log``), ``credentials.json`` (mode 0600) and ``pids``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from gateway.demo.registry import SITES, TABLE, write_registry

__all__ = ["DemoError", "DemoFederation", "Researcher", "station_profiles", "stop_recorded"]

MARKER = ".dsgateway-demo"
PROJECT = TABLE.split("/")[0]
COLLABORATION = "MS and COVID-19"
RESEARCHER = "alice"
START_TIMEOUT = 180  # seconds: three R gateways starting on a small shared machine


class DemoError(RuntimeError):
    """The demo could not be set up; the message says what to look at."""


@dataclass(frozen=True)
class Researcher:
    username: str
    password: str


def station_profiles(seed: int) -> dict:
    """A station's DataSHIELD profiles. `datashield.seed` is the station's own secret
    seed: the server functions that add random noise (ds.histogram's blurred range and
    its probabilistic method, among others) refuse to run without it, and a fixed seed
    gives the same noise to the same question, so asking again and averaging reveals
    nothing (docs/guides/data-stewards.md)."""
    return {
        "default": {
            "packages": ["dsGatewayBase"],
            "options": {"datashield.seed": seed},
        }
    }


def _station_seed() -> int:
    # Each station its own, unknown to researchers: as a steward would choose it.
    return secrets.randbelow(2**31 - 2) + 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass
class _Process:
    name: str
    args: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            # A session of its own: Ctrl-C in the demo's terminal reaches the demo,
            # which stops the parts in order, and --keep-running leaves them up.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *self.args],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise DemoError(
                f"{self.name} exited with status {self.proc.returncode}; "
                f"end of {self.log}:\n{_tail(self.log)}"
            )


@dataclass
class DemoFederation:
    work: Path
    seed: int = 2020
    r_lib: str | None = None
    coordinator_url: str = ""
    relay_url: str = ""
    researcher: Researcher | None = None
    stations: dict[str, Path] = field(default_factory=dict)
    _processes: list[_Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.work = Path(self.work).resolve()
        self.http = requests.Session()
        self.relay_secret = secrets.token_urlsafe(32)
        self.admin_password = secrets.token_urlsafe(12)

    # ------------------------------------------------------------------ set-up

    def prepare_workdir(self) -> None:
        """Make an empty working directory, or empty one a previous demo left (never a
        directory the demo did not make, never one whose parts still run)."""
        if self.work.exists() and any(self.work.iterdir()):
            if not (self.work / MARKER).exists():
                raise DemoError(
                    f"{self.work} exists and was not made by the demo; "
                    "choose another with --workdir."
                )
            if _running_pids(self.work):
                raise DemoError(
                    f"A demo still runs in {self.work}; stop it first: "
                    f"dsgateway demo --stop --workdir {self.work}"
                )
            import shutil

            shutil.rmtree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / MARKER).write_text("made by `dsgateway demo`\n")

    def start(self, echo: Callable[[str], None] = print) -> None:
        """Start the coordinator and the stations; return once all are online."""
        self.prepare_workdir()
        port, relay_port = _free_port(), _free_port()
        self.coordinator_url = f"http://127.0.0.1:{port}"
        self.relay_url = f"http://127.0.0.1:{relay_port}"
        home = self.work / "coordinator"
        home.mkdir()
        # Embedded defaults whatever this shell says: no coordinator settings inherited.
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DSGATEWAY_COORD", "DSGATEWAY_NODE_API_KEY"))
        }
        env = {
            **inherited,
            "DSGATEWAY_COORD_INSTANCE_PATH": str(home),
            "DSGATEWAY_COORD_PORT": str(port),
            "DSGATEWAY_COORD_RELAY_PORT": str(relay_port),
            # One machine: relay tokens signed with a shared secret (HS256) that the
            # stations get in their environment, never in a file.
            "DSGATEWAY_COORD_RELAY_SECRET": self.relay_secret,
        }
        echo(f"Coordinator: creating the administrator (instance folder {home}) ...")
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "coordinator", "create-admin"],
            cwd=self.work,
            env={**env, "DSGATEWAY_ADMIN_PASSWORD": self.admin_password},
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise DemoError(f"coordinator create-admin failed:\n{done.stdout}{done.stderr}")
        coordinator = _Process(
            "the coordinator", ["coordinator", "relay"], env, self.work, home / "coordinator.log"
        )
        self._launch(coordinator)
        self._until(lambda: self._get("/health").ok, 60, "the coordinator", coordinator)
        echo(f"Coordinator on {self.coordinator_url}/api, relay on {self.relay_url}")

        self._login("admin", self.admin_password)
        nodes = self._register(echo)
        self._write_credentials()
        for site, node in zip(SITES, nodes, strict=True):
            self._start_station(site.name, node, env)
        echo("Waiting for the three stations to start R and connect ...")
        self._until(self._all_online, START_TIMEOUT, "all stations online", None)
        echo("All stations online.")

    def _register(self, echo) -> list[dict]:
        names = [s.label.split(" (")[0] for s in SITES]
        orgs = [self._post("/organizations", {"name": n[0].upper() + n[1:]}) for n in names]
        org_ids = [o["id"] for o in orgs]
        collab = self._post("/collaborations", {"name": COLLABORATION, "organization_ids": org_ids})
        self.collaboration_id = collab["id"]
        password = secrets.token_urlsafe(12)
        user = self._post(
            "/users",
            {"username": RESEARCHER, "password": password, "organization_id": org_ids[0]},
        )
        self._post(
            f"/users/{user['id']}/roles",
            {"name": "researcher", "collaboration_id": self.collaboration_id},
        )
        self.researcher = Researcher(RESEARCHER, password)
        echo(
            f"Registered 3 organisations, the collaboration {COLLABORATION!r} and the "
            f"researcher {RESEARCHER!r}"
        )
        nodes = []
        for site, org in zip(SITES, org_ids, strict=True):
            nodes.append(
                self._post(
                    "/nodes",
                    {
                        "name": site.name,
                        "organization_id": org,
                        "collaboration_id": self.collaboration_id,
                        "projects": [PROJECT],
                    },
                )
            )
        return nodes

    def _start_station(self, name: str, node: dict, coordinator_env: dict) -> None:
        home = self.work / name
        site = next(i for i, s in enumerate(SITES) if s.name == name)
        write_registry(home / "data", site, self.seed)
        node_yaml = {
            "data_dir": "data",
            "state_dir": "var",
            "tokens": {
                "issuer": "https://coordinator.invalid",  # the coordinator's RELAY_ISSUER
                "audience": node["audience"],
                "secret_env": "DSGATEWAY_RELAY_SECRET",
            },
            "profiles": station_profiles(_station_seed()),
            "limits": {"warm_workers": 1},
            "server": {"port": _free_port()},
        }
        if self.r_lib:
            node_yaml["r_lib"] = self.r_lib
        (home / "node.yaml").write_text(yaml.safe_dump(node_yaml, sort_keys=False))
        agent_yaml = {
            "coordinator": self.coordinator_url,
            "gateway": "node.yaml",
            "poll_wait": 20,
            "heartbeat_interval": 5,
            "backoff_initial": 0.2,
            "backoff_max": 5,
            "policy": {
                "collaborations": [self.collaboration_id],
                "algorithms": ["aggregate", "glm"],
                "projects": [PROJECT],
            },
        }
        (home / "agent.yaml").write_text(yaml.safe_dump(agent_yaml, sort_keys=False))
        env = {
            key: value
            for key, value in coordinator_env.items()
            if not key.startswith("DSGATEWAY_COORD")
        }
        env["DSGATEWAY_NODE_API_KEY"] = node["api_key"]
        env["DSGATEWAY_RELAY_SECRET"] = self.relay_secret
        self.stations[name] = home
        self._launch(
            _Process(
                name,
                ["node", "run", "--config", "agent.yaml"],
                env,
                home,
                home / "node.log",
            )
        )

    def _launch(self, process: _Process) -> None:
        process.start()
        self._processes.append(process)
        (self.work / "pids").write_text(
            "".join(f"{p.proc.pid}\n" for p in self._processes if p.proc is not None)
        )

    def _write_credentials(self) -> None:
        path = self.work / "credentials.json"
        path.touch(mode=0o600)
        path.write_text(
            json.dumps(
                {
                    "coordinator": self.coordinator_url,
                    "relay": self.relay_url,
                    "admin": {"username": "admin", "password": self.admin_password},
                    "researcher": {
                        "username": self.researcher.username,
                        "password": self.researcher.password,
                    },
                },
                indent=2,
            )
        )

    # ------------------------------------------------------------------ HTTP

    def _get(self, path: str) -> requests.Response:
        return self.http.get(f"{self.coordinator_url}/api{path}", timeout=30)

    def _post(self, path: str, body: dict) -> dict:
        r = self.http.post(f"{self.coordinator_url}/api{path}", json=body, timeout=30)
        if r.status_code >= 400:
            raise DemoError(f"POST /api{path} answered {r.status_code}: {r.text}")
        return r.json()

    def _login(self, username: str, password: str) -> None:
        r = self.http.post(
            f"{self.coordinator_url}/api/auth/login",
            json={"username": username, "password": password},
            timeout=30,
        )
        if r.status_code != 200:
            raise DemoError(f"Login as {username} failed: {r.status_code} {r.text}")
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def _all_online(self) -> bool:
        nodes = self._get(f"/nodes?collaboration_id={self.collaboration_id}").json()
        return len(nodes) == len(SITES) and all(n["online"] for n in nodes)

    def _until(self, check, timeout: float, what: str, process: _Process | None) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for p in [process] if process else self._processes:
                p.check_alive()
            try:
                if check():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        logs = "\n".join(f"--- {p.log}\n{_tail(p.log, 1500)}" for p in self._processes)
        raise DemoError(f"Timed out after {timeout} s waiting for {what}.\n{logs}")

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """SIGTERM to every part at once, then wait for each (SIGKILL after 30 s)."""
        for p in self._processes:
            if p.proc is not None and p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in self._processes:
            if p.proc is None:
                continue
            try:
                p.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait(timeout=10)
        (self.work / "pids").unlink(missing_ok=True)

    def stop_command(self) -> str:
        return f"dsgateway demo --stop --workdir {self.work}"


def _running_pids(work: Path) -> list[int]:
    path = Path(work) / "pids"
    if not path.exists():
        return []
    alive = []
    for line in path.read_text().split():
        if line.isdigit() and _alive(int(line)):
            alive.append(int(line))
    return alive


def stop_recorded(work: Path, timeout: float = 30) -> list[int]:
    """Stop the parts a `--keep-running` demo left in ``work``; return their pids."""
    pids = _running_pids(work)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < end and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    (Path(work) / "pids").unlink(missing_ok=True)
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A stopped child of ours stays a zombie until reaped; count it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
