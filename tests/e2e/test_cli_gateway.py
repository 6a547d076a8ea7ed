"""`dsgateway gateway serve` as a real process: quick start on a data directory, a
DataSHIELD session over HTTP, the audit log read back with `dsgateway gateway audit`,
and a clean stop on SIGTERM that leaves no R process behind."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests

from tests.functional.rds import unserialize

pytestmark = [pytest.mark.r, pytest.mark.slow]

PASSWORD = "cli-test-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dsgateway(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


@pytest.fixture
def served(tmp_path, example_data, r_lib):
    data = tmp_path / "data"
    shutil.copytree(example_data, data)
    port = free_port()
    env = dict(os.environ, DSGATEWAY_ADMIN_PASSWORD=PASSWORD, DSGATEWAY_R_LIB=r_lib)
    proc = subprocess.Popen(
        dsgateway("gateway", "serve", "--data", str(data), "--port", str(port)),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/actuator/info", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read()
    else:
        proc.kill()
        pytest.fail("the gateway did not start within 60 s")
    yield proc, url, tmp_path
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_serve_quick_start_session_audit_and_clean_stop(served, example_data):
    proc, url, workdir = served
    http = requests.Session()
    assert (
        http.post(
            f"{url}/select-profile", data=b"", auth=("admin", PASSWORD), timeout=30
        ).status_code
        == 204
    )
    r = http.post(
        f"{url}/load-table",
        params={"table": "demo/cohort/patients", "symbol": "D", "async": "FALSE"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    r = http.post(
        f"{url}/execute",
        params={"async": "FALSE"},
        data="dimDS('D')",
        headers={"Content-Type": "text/plain"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    import pyarrow.parquet as pq

    rows = pq.read_metadata(example_data / "demo" / "cohort" / "patients.parquet").num_rows
    assert unserialize(r.content)[0] == rows
    r = http.post(
        f"{url}/execute", data="system('id')", timeout=60, headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 400

    r_processes = [p for p in psutil.Process(proc.pid).children(recursive=True)]
    assert len(r_processes) >= 2  # the zygote and at least one session

    audit = subprocess.run(
        dsgateway(
            "gateway", "audit", "--log", str(workdir / "var" / "audit.log"), "--outcome", "refused"
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "system('id')" in audit.stdout

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    output = proc.stdout.read()
    assert "Quick start: user 'admin'" in output
    time.sleep(0.5)
    assert not [p for p in r_processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_hash_password_makes_a_hash_the_config_accepts():
    out = subprocess.run(
        dsgateway("gateway", "hash-password", "--password", "s3cret"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    from werkzeug.security import check_password_hash

    assert out.startswith("scrypt:") and check_password_hash(out, "s3cret")
