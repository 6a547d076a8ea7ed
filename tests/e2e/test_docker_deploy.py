"""Deployment with Docker (docker/, docs/deployment.md) under the real daemon.

The images are built here without a registry (tests/e2e/deploy_images.py): local
stand-ins for the public bases are made with mmdebstrap (docker/offline/make-bases.sh;
the Python and node bases are the one base scripts/ensure-docker.sh makes for the
client-image tests), the wheels on the host (docker/build.sh), and each is tagged with a
hash of what makes it, so a second run finds them and builds nothing. `make test` starts
making them in the background before pytest; the fixture waits for that.

Then compose.coordinator.yml brings up PostgreSQL, Redis, the migration, the API with
its relay and a Celery worker; compose.station.yml brings up two stations on different
synthetic data, registered through the REST API with the keys as compose secrets. A
federated mean (an `aggregate` task with meanDS) must equal the mean of the two
stations' data pooled.

Everything made for a run (compose projects, containers, networks, volumes, files) is
named dsgw-deploy-test-<random> and removed at the end whatever happens; the cached
images are tagged dsgw-deploy-test/* and dsgw-local/* and only older tags of those
are removed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import requests
import yaml

from tests.e2e import deploy_images

# The timeout covers a fresh machine's first image builds (a few minutes), waited for.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

DOCKER_DIR = deploy_images.DOCKER_DIR
PREFIX = deploy_images.PREFIX
ADMIN_PASSWORD = "deploy-admin-" + secrets.token_hex(8)
STATIONS = {"station-a": 1, "station-b": 2}  # name: seed of its synthetic data


_run = deploy_images.run


def _until(check, timeout: float, what: str, step: float = 1.0):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = check()
        except (requests.RequestException, subprocess.SubprocessError) as err:
            last = err
        if last and not isinstance(last, Exception):
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# ---------------------------------------------------------------- compose and images


@pytest.fixture(scope="module")
def compose(docker_client) -> list[str]:
    """The compose command: the plugin when present, else Debian's docker-compose
    (installed here when neither is)."""
    if _run(["docker", "compose", "version"], check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is None:
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker-compose"])
    return ["docker-compose"]


@pytest.fixture(scope="module")
def images(docker_client) -> dict[str, str]:
    """Image names: COORDINATOR_IMAGE, NODE_IMAGE, REDIS_IMAGE, POSTGRES_IMAGE."""
    return deploy_images.ensure()


# ---------------------------------------------------------------- the deployment


class Deployment:
    def __init__(self, compose: list[str], images: dict[str, str], work: Path):
        self.compose, self.images, self.work = compose, images, work
        self.name = f"{PREFIX}-{secrets.token_hex(4)}"
        self.projects: list[tuple[str, list[str], dict]] = []  # to take down, in reverse
        self.http = requests.Session()
        self.url = ""
        self.secrets = {"postgres": secrets.token_hex(16), "secret_key": secrets.token_hex(32)}
        self.node_ids: dict[str, int] = {}
        self.data: dict[str, Path] = {}

    def _write(self, path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)  # the containers' user (uid 10001) reads the mounted files
        return path

    def up(self, project: str, files: list[str], env: dict, env_file: Path | None = None):
        args = [*self.compose, "-p", project]
        for f in files:
            args += ["-f", f]
        if env_file is not None:  # the documented way to give POSTGRES_PASSWORD
            args += ["--env-file", str(env_file)]
        self.projects.append((project, args, env))
        _run([*args, "up", "-d"], env=env, timeout=600)

    def down(self) -> None:
        for project, args, env in reversed(self.projects):
            proc = _run([*args, "down", "-v", "--timeout", "10"], env=env, check=False)
            if proc.returncode != 0:
                print(f"compose down {project}: {proc.stderr[-2000:]}")

    def logs(self) -> None:
        for project, args, env in self.projects:
            out = _run([*args, "logs", "--no-color", "--tail", "60"], env=env, check=False)
            print(f"--- {project}\n{out.stdout[-6000:]}")

    def container(self, project: str, service: str) -> str:
        out = _run(
            [
                "docker", "ps", "-aq",
                "--filter", f"label=com.docker.compose.project={project}",
                "--filter", f"label=com.docker.compose.service={service}",
            ]
        ).stdout.split()  # fmt: skip
        assert len(out) == 1, f"{project}/{service}: {out}"
        return out[0]

    def health(self, project: str, service: str) -> str:
        cid = self.container(project, service)
        state = json.loads(_run(["docker", "inspect", "-f", "{{json .State}}", cid]).stdout)
        return (state.get("Health") or {}).get("Status", state["Status"])

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return self.http.request(method, f"{self.url}/api{path}", timeout=30, **kw)

    # -- the coordinator

    def start_coordinator(self) -> None:
        secret_file = self._write(self.work / "secrets" / "coordinator_secret_key",
                                  self.secrets["secret_key"])  # fmt: skip
        env_file = self._write(self.work / "coordinator.env",
                               f"POSTGRES_PASSWORD={self.secrets['postgres']}\n")  # fmt: skip
        env = {
            **os.environ,
            **self.images,
            "COORDINATOR_SECRET_KEY_FILE": str(secret_file),
            # Published on the loopback at ports the kernel picks (others run servers too).
            "COORDINATOR_API_BIND": "127.0.0.1:",
            "COORDINATOR_RELAY_BIND": "127.0.0.1:",
            "SWEEP_INTERVAL": "2",
        }
        args = [str(DOCKER_DIR / "compose.coordinator.yml")]
        self.coordinator = self.name
        self.up(self.name, args, env, env_file)
        _until(lambda: self.health(self.name, "api") == "healthy", 180, "the API healthy")
        port = _run([*self.projects[-1][1], "port", "api", "5000"], env=env).stdout.strip()
        self.url = f"http://127.0.0.1:{port.rsplit(':', 1)[1]}"
        cid = self.container(self.name, "api")
        _run(
            [
                "docker", "exec", "-e", f"DSGATEWAY_ADMIN_PASSWORD={ADMIN_PASSWORD}", cid,
                "dsgateway-entrypoint", "dsgateway", "coordinator", "create-admin",
                "--username", "admin", "--no-migrate",
            ]
        )  # fmt: skip
        r = self.api("POST", "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def register(self) -> dict[str, str]:
        """Organisations, a collaboration, the admin as its researcher, one node per
        station; returns each station's API key."""
        keys = {}
        orgs = {}
        for name in STATIONS:
            r = self.api("POST", "/organizations", json={"name": f"Hospital {name}"})
            assert r.status_code == 201, r.text
            orgs[name] = r.json()["id"]
        r = self.api(
            "POST", "/collaborations", json={"name": "deploy", "organization_ids": [*orgs.values()]}
        )
        assert r.status_code == 201, r.text
        self.collaboration = r.json()["id"]
        me = self.api("GET", "/auth/me").json()
        r = self.api(
            "POST",
            f"/users/{me['id']}/roles",
            json={"name": "researcher", "collaboration_id": self.collaboration},
        )
        assert r.status_code == 201, r.text
        for name, org in orgs.items():
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
            self.node_ids[name] = r.json()["id"]
            keys[name] = r.json()["api_key"]
        return keys

    # -- the stations

    def start_station(self, name: str, seed: int, key: str) -> None:
        from gateway.node.exampledata import generate_example_data

        home = self.work / name
        generate_example_data(home / "data", seed=seed)
        for path in [home, *home.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.data[name] = home / "data"
        agent = {
            "coordinator": "http://api:5000",  # the API's name on the coordinator's network
            "gateway": "node.yaml",
            "poll_wait": 5,
            "heartbeat_interval": 2,
            "backoff_initial": 0.2,
            "backoff_max": 2,
            "policy": {"algorithms": ["aggregate"], "projects": ["demo"], "users": "*"},
        }
        node = {
            "data_dir": "/srv/dsgateway/data",
            "state_dir": "/var/lib/dsgateway",
            "profiles": {"default": {"packages": ["dsGatewayBase"]}},
            "limits": {"warm_workers": 1, "max_sessions": 4},
            "server": {"host": "127.0.0.1", "port": 8080},
        }
        self._write(home / "config" / "agent.yaml", yaml.safe_dump(agent))
        self._write(home / "config" / "node.yaml", yaml.safe_dump(node))
        key_file = self._write(home / "secrets" / "node_api_key", key)
        # The coordinator and the stations share one machine here: the stations join the
        # coordinator's network instead of reaching it through a public URL.
        override = self._write(
            home / "network.yml",
            yaml.safe_dump(
                {"networks": {"default": {"external": True, "name": f"{self.name}_default"}}}
            ),
        )
        env = {
            **os.environ,
            "NODE_IMAGE": self.images["NODE_IMAGE"],
            "STATION_CONFIG_DIR": str(home / "config"),
            "DATA_DIR": str(home / "data"),
            "NODE_API_KEY_FILE": str(key_file),
            "NODE_MEMORY": "2g",
        }
        files = [str(DOCKER_DIR / "compose.station.yml"), str(override)]
        self.up(f"{self.name}-{name}", files, env)

    def pooled(self, column: str) -> float:
        frames = [
            pd.read_parquet(d / "demo" / "cohort" / "patients.parquet") for d in self.data.values()
        ]
        return float(pd.concat(frames)[column].mean())


@pytest.fixture(scope="module")
def deployment(compose, images):
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    work.chmod(0o755)
    dep = Deployment(compose, images, work)
    started = time.monotonic()
    try:
        dep.start_coordinator()
        keys = dep.register()
        for name, seed in STATIONS.items():
            dep.start_station(name, seed, keys[name])
        _until(
            lambda: all(n["online"] for n in dep.api("GET", "/nodes").json()),
            180,
            "both stations online",
        )
        print(f"deployment up in {time.monotonic() - started:.0f} s")
        yield dep
    finally:
        try:
            dep.logs()
        finally:
            dep.down()
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- the tests


def test_a_federated_mean_through_the_deployed_coordinator_equals_the_pooled_mean(deployment):
    dep = deployment
    r = dep.api(
        "POST",
        "/tasks",
        json={
            "collaboration_id": dep.collaboration,
            "algorithm": "aggregate",
            "parameters": {
                "table": "demo/cohort/patients",
                "symbol": "D",
                "expressions": ["meanDS(D$age)", "meanDS(D$bmi)"],
            },
        },
    )
    assert r.status_code == 201, r.text
    task = r.json()["id"]
    done = _until(
        lambda: (
            (t := dep.api("GET", f"/tasks/{task}").json())["status"]
            in ("completed", "failed", "cancelled")
            and t
        ),
        180,
        f"task {task}",
    )
    assert done["status"] == "completed", done.get("message")
    value = dep.api("GET", f"/tasks/{task}/result").json()["value"]
    assert set(value) == {str(i) for i in dep.node_ids.values()}
    for i, column in enumerate(["age", "bmi"]):
        answers = [node["results"][i] for node in value.values()]
        n = sum(a["Nvalid"] for a in answers)
        federated = sum(a["EstimatedMean"] * a["Nvalid"] for a in answers) / n
        assert federated == pytest.approx(dep.pooled(column), rel=1e-12), column
    # bmi has missing values: the counts must be those of the pooled data too.
    pooled_valid = sum(
        int(pd.read_parquet(d / "demo/cohort/patients.parquet")["bmi"].notna().sum())
        for d in dep.data.values()
    )
    assert sum(node["results"][1]["Nvalid"] for node in value.values()) == pooled_valid


def test_every_service_is_healthy_and_the_schema_is_at_head(deployment):
    dep = deployment
    for service in ("postgres", "redis", "api"):
        assert dep.health(dep.coordinator, service) == "healthy", service
    _until(lambda: dep.health(dep.coordinator, "worker") == "healthy", 120, "worker healthy")
    for name in STATIONS:
        _until(lambda n=name: dep.health(f"{dep.name}-{n}", "node") == "healthy", 120, name)
    migrate = dep.container(dep.coordinator, "migrate")
    state = json.loads(_run(["docker", "inspect", "-f", "{{json .State}}", migrate]).stdout)
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    api = dep.container(dep.coordinator, "api")
    cmd = ["dsgateway-entrypoint", "dsgateway", "coordinator", "db", "current"]
    out = _run(["docker", "exec", api, *cmd]).stdout
    current, head = (part.split(":")[1].strip() for part in out.strip().split("  "))
    assert current == head, out
    # PostgreSQL holds the data (no SQLite file in the instance volume), and the secret
    # key came from the compose secret (none was generated there).
    files = _run(["docker", "exec", api, "ls", "-A", "/var/lib/dsgateway"]).stdout.split()
    assert sorted(files) == ["celerybeat-schedule.db"] or files == [], files


def test_images_run_as_non_root_with_health_checks_and_no_secrets(deployment):
    dep = deployment
    # Everything secret this deployment used; none of it may be in an image.
    keys = [
        Path(dep.work / n / "secrets" / "node_api_key").read_text() for n in STATIONS
    ]  # fmt: skip
    secret_values = [*dep.secrets.values(), ADMIN_PASSWORD, *keys]
    for name in ("COORDINATOR_IMAGE", "NODE_IMAGE"):
        image = dep.images[name]
        config = json.loads(_run(["docker", "image", "inspect", image]).stdout)[0]["Config"]
        history = _run(["docker", "history", "--no-trunc", image]).stdout
        assert config["User"] == "10001:10001", image
        assert config["Healthcheck"]["Test"] == ["CMD", "dsgateway-healthcheck"], image
        assert "/var/lib/dsgateway" in config["Volumes"], image
        dump = json.dumps(config) + history
        for value in secret_values:
            assert value not in dump, f"a secret is in {image}"
        for var in config["Env"]:
            key = var.split("=", 1)[0]
            assert not any(w in key for w in ("PASSWORD", "SECRET", "API_KEY")), var
    # The running processes are not root either.
    for project, service in [(dep.coordinator, "api"), (f"{dep.name}-station-a", "node")]:
        cid = dep.container(project, service)
        assert _run(["docker", "exec", cid, "id", "-u"]).stdout.strip() == "10001"
