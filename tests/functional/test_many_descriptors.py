"""Servers past descriptor 1023: waitress' default loop uses select(), which cannot watch
a descriptor numbered 1024 or more, so a coordinator with a few hundred connected
agents (or a gateway with many R sessions) stopped serving. Both servers use poll()
and the coordinator raises the soft limit on open files for CONNECTION_LIMIT.

The descriptors here are real: the test opens files until the next socket is numbered
past 1023, then starts a server and talks to it over HTTP."""

from __future__ import annotations

import contextlib
import os
import resource

import pandas as pd
import pytest
import requests

from tests.functional.conftest import Armadillo, make_token


@contextlib.contextmanager
def descriptors_past_1023():
    """Open /dev/null until the process's next descriptor is at least 1100."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if want < 1200:
        pytest.fail(f"the hard limit on open files ({hard}) is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    held: list[int] = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_coordinator_serves_on_high_descriptors(tmp_path):
    from gateway.coordinator import create_app
    from gateway.coordinator.server import BackgroundServer

    app = create_app(
        {
            "TESTING": True,
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "SECRET_KEY": "test-signing-key-" + "x" * 32,
        }
    )
    with descriptors_past_1023():
        server = BackgroundServer(app).start()
        try:
            assert server._server.socket.fileno() >= 1024  # the condition under test
            with requests.Session() as http:
                for _ in range(3):  # each on the kept connection, also past 1023
                    r = http.get(f"{server.url}/api/health", timeout=10)
                    assert r.status_code == 200, r.text
        finally:
            server.stop()


def test_make_server_raises_the_open_files_limit_for_its_connections(tmp_path):
    from gateway.coordinator import create_app
    from gateway.coordinator.server import make_server

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.fail(f"the hard limit on open files ({hard}) is too low for this test")
    app = create_app(
        {
            "TESTING": True,
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "SECRET_KEY": "test-signing-key-" + "x" * 32,
            "CONNECTION_LIMIT": 1400,
        }
    )
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        server = make_server(app, "127.0.0.1", 0)
        server.close()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 1400 + 512
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_gateway_serves_a_session_on_high_descriptors(gateway):
    """A second server on the running gateway's app, started past 1023: a login, an
    R session (its worker's socket is past 1023 too) and an aggregate."""
    from gateway.node.server import BackgroundServer

    with descriptors_past_1023():
        server = BackgroundServer(gateway.app).start()
        try:
            client = Armadillo(server.url, token=make_token())
            assert client.login().status_code == 204
            assert client.load_table("D", "demo/cohort/patients")["status"] == "COMPLETED"
            mean = client.execute("meanDS(D$age)")
        finally:
            server.stop()
    ages = pd.read_parquet(gateway.data_dir / "demo" / "cohort" / "patients.parquet")["age"]
    assert mean["EstimatedMean"] == [pytest.approx(ages.mean())]
    assert mean["Nvalid"] == [ages.notna().sum()]
