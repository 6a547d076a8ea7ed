"""A real gateway for the HTTP tests: real R workers, waitress on a loopback port.

One gateway serves the whole test session (starting R takes a few seconds). Its node:
- data: the example study in project `demo`, the same patients in project `other`
  twice (folders `cohort` and `archive`, so `other.patients` is ambiguous on Opal);
- users: alice reads `demo`, bob reads `other`, carol reads everything;
- tokens: HS256 with the secret in $DSG_TEST_TOKEN_SECRET (see `make_token`);
- profiles: `default` (dsGatewayBase only) and `faults` (plus dsTestFaults, whose
  canaryDS records every call in the `canary` file).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
import requests
from werkzeug.security import generate_password_hash

from tests.functional.rds import unserialize

TOKEN_SECRET = "functional-test-secret-0123456789abcdef"
ISSUER = "https://coordinator.test"
AUDIENCE = "node-test"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


@dataclass
class Gateway:
    url: str
    config: object
    app: object
    data_dir: Path
    canary: Path
    work: Path

    @property
    def audit_path(self) -> Path:
        return self.config.audit_path

    def audit(self, **filters) -> list[dict]:
        from gateway.node.audit import AuditLog

        return AuditLog(self.audit_path).read(**filters)


def http_get(url: str, **kw) -> requests.Response:
    return requests.get(url, timeout=60, **kw)


def make_token(sub="dave", projects=("demo",), secret=TOKEN_SECRET, **claims) -> str:
    body = {
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(time.time()) + 600,
        "projects": list(projects),
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, secret, algorithm="HS256")


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, canary, faults_lib, example_data) -> Gateway:
    from gateway.node.app import close_services, create_app
    from gateway.node.config import NodeConfig
    from gateway.node.server import BackgroundServer

    work = tmp_path_factory.mktemp("gateway")
    data = work / "data"
    shutil.copytree(example_data, data)
    patients = data / "demo" / "cohort" / "patients.parquet"
    for folder in ("cohort", "archive"):
        (data / "other" / folder).mkdir(parents=True)
        shutil.copy(patients, data / "other" / folder / "patients.parquet")
    os.environ["DSG_TEST_TOKEN_SECRET"] = TOKEN_SECRET
    hashes = {name: generate_password_hash(pw, method="scrypt") for name, pw in PASSWORDS.items()}
    config = NodeConfig.from_dict(
        {
            "data_dir": str(data),
            "state_dir": str(work / "state"),
            "r_lib": faults_lib,
            "users": {
                "alice": {"password_hash": hashes["alice"], "projects": ["demo"]},
                "bob": {"password_hash": hashes["bob"], "projects": ["other"]},
                "carol": {"password_hash": hashes["carol"], "projects": "*"},
            },
            "tokens": {
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "secret_env": "DSG_TEST_TOKEN_SECRET",
            },
            "profiles": {
                "default": {"packages": ["dsGatewayBase"]},
                "faults": {"packages": ["dsGatewayBase", "dsTestFaults"]},
            },
            "limits": {
                "max_sessions": 40,
                "warm_workers": 2,
                "command_timeout": 30,
                "idle_timeout": 900,
            },
            "server": {"max_body": 200_000, "threads": 32},
        }
    )
    app = create_app(config)
    server = BackgroundServer(app).start()
    try:
        yield Gateway(server.url, config, app, data, canary, work)
    finally:
        server.stop()
        close_services(app.extensions["dsgateway"])


# ---------------------------------------------------------------- an Armadillo client


class Armadillo:
    """What DSMolgenisArmadillo does over HTTP, in Python: for the API tests."""

    def __init__(self, url: str, user: str | None = None, token: str | None = None):
        self.url = url
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.user = user

    def login(self, profile: str = "", password: str | None = None) -> requests.Response:
        auth = None
        if self.user:
            auth = (self.user, password if password is not None else PASSWORDS[self.user])
        return self.http.post(f"{self.url}/select-profile", data=profile.encode(), auth=auth)

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.url + path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.http.post(self.url + path, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.http.delete(self.url + path, **kw)

    def head(self, path: str, **kw) -> requests.Response:
        return self.http.head(self.url + path, **kw)

    def wait(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            cmd = self.get("/lastcommand").json()
            if cmd["status"] in ("COMPLETED", "FAILED") or time.monotonic() > deadline:
                return cmd
            time.sleep(0.05)

    def load_table(self, symbol: str, table: str, variables: str | None = None) -> dict:
        params = {"table": table, "symbol": symbol, "async": "TRUE"}
        if variables:
            params["variables"] = variables
        r = self.post("/load-table", params=params)
        assert r.status_code == 201, r.text
        return self.wait()

    def assign(self, symbol: str, expr: str) -> dict:
        r = self.post(
            f"/symbols/{symbol}",
            params={"async": "TRUE"},
            data=expr,
            headers={"Content-Type": "text/plain"},
        )
        assert r.status_code == 201, r.text
        return self.wait()

    def execute(self, expr: str):
        """The value of an aggregate (unserialized), or the FAILED command as a dict."""
        r = self.post(
            "/execute", params={"async": "TRUE"}, data=expr, headers={"Content-Type": "text/plain"}
        )
        assert r.status_code == 201, r.text
        result = self.get("/lastresult", headers={"Accept": "application/octet-stream"})
        if result.status_code == 404:
            return self.get("/lastcommand").json()
        assert result.status_code == 200, result.text
        return unserialize(result.content)

    def symbols(self) -> list[str]:
        return self.get("/symbols").json()


@pytest.fixture
def armadillo(gateway):
    """A logged-in Armadillo client of alice (profile default), logged out afterwards."""
    client = Armadillo(gateway.url, "alice")
    assert client.login().status_code == 204
    yield client
    client.post("/logout")
