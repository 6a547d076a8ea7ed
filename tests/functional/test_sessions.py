"""The session core over real R processes: isolation, limits and faults, concurrency."""

import concurrent.futures
import os
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from gateway.node.datasources import TableCatalogue
from gateway.node.errors import ExpressionRefused, NotFound, RSessionFailed
from gateway.node.limits import Limits
from gateway.node.methods import MethodRegistry, Profile
from gateway.node.rpool import RPool
from gateway.node.sessions import SessionManager

pytestmark = pytest.mark.r


class User:
    def __init__(self, name, projects=None):
        self.name = name
        self.projects = projects

    def can_read(self, project):
        return self.projects is None or project in self.projects


@pytest.fixture(scope="module")
def pool(canary, faults_lib):
    limits = Limits(
        command_timeout=2.0,
        memory_per_session=400,
        warm_workers=2,
        max_sessions=30,
        interrupt_grace=2.0,
    )
    pool = RPool(r_lib=faults_lib, limits=limits).start()
    yield pool
    pool.stop()


@pytest.fixture(scope="module")
def manager(pool, example_data, tmp_path_factory):
    profiles = {
        "default": Profile("default"),
        "strict": Profile(
            "strict",
            packages=["dsGatewayBase"],
            blacklist=["meanDS"],
            options={"nfilter.tab": "10"},
        ),
    }
    registry = MethodRegistry(pool.packages(), profiles)
    catalogue = TableCatalogue(example_data, [])
    mgr = SessionManager(
        pool, registry, catalogue, None, pool.limits, tmp_path_factory.mktemp("state")
    )
    yield mgr
    mgr.close_all()


def patients(example_data):
    return pq.read_table(example_data / "demo" / "cohort" / "patients.parquet").to_pandas()


def rds_value(raw: bytes):
    """Unserialize an RDS payload in a separate R, to check numbers exactly."""
    import subprocess

    out = subprocess.run(
        ["Rscript", "-e", "x <- unserialize(file('stdin', 'rb') |> readBin('raw', 1e7)); dput(x)"],
        input=raw,
        capture_output=True,
        check=True,
    )
    return out.stdout.decode()


def process_gone(pid: int, within: float = 10.0) -> bool:
    """The process ended (its socket can close a moment before the kernel reaps it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_login_load_and_mean_match_the_data(manager, example_data):
    session = manager.create(User("alice"), "default")
    cmd = session.assign_table("D", "demo/cohort/patients", wait=True)
    assert cmd.status == "COMPLETED", cmd.message
    cmd = session.aggregate("meanDS(D$age)", fmt="json", wait=True)
    assert cmd.status == "COMPLETED", cmd.message
    import json

    result = json.loads(cmd.result)
    ages = patients(example_data)["age"]
    assert result["EstimatedMean"] == pytest.approx(ages.mean(), rel=1e-12)
    assert result["Nvalid"] == ages.notna().sum()
    cmd = session.aggregate("dimDS('D')", fmt="json", wait=True)
    assert json.loads(cmd.result) == list(patients(example_data).shape)
    assert session.symbols() == ["D"]
    manager.close(session.id)


def test_rds_result_is_r_serialization(manager):
    session = manager.create(User("alice"), "default")
    session.assign_table("D", "demo/cohort/patients", variables=["age", "sex"], wait=True)
    cmd = session.aggregate("colnamesDS('D')", wait=True)
    assert cmd.result[:2] == b"X\n"  # XDR serialization, as R's serialize(x, NULL)
    assert rds_value(cmd.result).strip() == 'c("age", "sex")'
    manager.close(session.id)


def test_variables_and_unknown_ones(manager):
    session = manager.create(User("alice"), "default")
    with pytest.raises(Exception, match="Unknown variable"):
        session.assign_table("D", "demo/cohort/patients", variables=["age", "nope"])
    manager.close(session.id)


def test_sessions_are_isolated(manager):
    a = manager.create(User("alice"), "default")
    b = manager.create(User("bob"), "default")
    a.assign_table("D", "demo/cohort/patients", wait=True)
    assert b.symbols() == []
    assert a.worker.pid != b.worker.pid
    with pytest.raises(NotFound):
        manager.get(a.id, User("bob"))
    manager.close(a.id)
    manager.close(b.id)


def test_refused_expression_never_reaches_r(manager, canary):
    session = manager.create(User("alice"), "default")
    before = canary.read_text() if canary.exists() else ""
    for expr in [
        'canaryDS(system("id"))',
        "canaryDS()[1]",
        "canaryDS(x <- 1)",
        "base::canaryDS()",
        "`canaryDS`()",
    ]:
        with pytest.raises(ExpressionRefused):
            session.aggregate(expr)
    assert (canary.read_text() if canary.exists() else "") == before
    # ... while an allowed call does reach R, so the canary can see at all.
    assert session.aggregate("canaryDS()", wait=True).status == "COMPLETED"
    assert canary.read_text().count("called") == before.count("called") + 1
    manager.close(session.id)


def test_profile_whitelist_blacklist_and_options(manager):
    session = manager.create(User("alice"), "strict")
    with pytest.raises(ExpressionRefused, match="meanDS"):
        session.aggregate("meanDS(D$age)")
    with pytest.raises(ExpressionRefused, match="spinDS"):  # package not in the profile
        session.aggregate("spinDS()")
    cmd = session.aggregate("listDisclosureSettingsDS()", fmt="json", wait=True)
    assert cmd.status == "COMPLETED", cmd.message
    assert '"nfilter.tab":10' in cmd.result.replace(" ", "")
    manager.close(session.id)
    with pytest.raises(NotFound, match="Profile"):
        manager.create(User("alice"), "nope")


def test_r_error_fails_the_command_only(manager):
    session = manager.create(User("alice"), "default")
    cmd = session.aggregate("meanDS(nothere$x)", wait=True)
    assert cmd.status == "FAILED"
    assert "Error" in cmd.message and "nothere" in cmd.message
    assert session.aggregate("pidDS()", fmt="json", wait=True).status == "COMPLETED"
    manager.close(session.id)


@pytest.mark.slow
def test_endless_loop_is_stopped_at_the_time_limit(manager):
    session = manager.create(User("alice"), "default")
    started = time.monotonic()
    cmd = session.aggregate("spinDS()", wait=True)
    assert cmd.status == "FAILED"
    assert "time limit" in cmd.message
    assert time.monotonic() - started < 10
    # R was interrupted, not killed: the session goes on with its symbols.
    assert session.aggregate("pidDS()", fmt="json", wait=True).status == "COMPLETED"
    manager.close(session.id)


@pytest.mark.slow
def test_memory_bomb_is_stopped_at_the_memory_limit(manager):
    session = manager.create(User("alice"), "default")
    other = manager.create(User("bob"), "default")
    cmd = session.aggregate("allocDS(2000)", wait=True)
    assert cmd.status == "FAILED"
    assert "cannot allocate" in cmd.message
    # Within the limit it works, and other sessions never noticed.
    assert session.aggregate("allocDS(50)", fmt="json", wait=True).result == "6553600"
    assert other.aggregate("pidDS()", fmt="json", wait=True).status == "COMPLETED"
    manager.close(session.id)
    manager.close(other.id)


def test_killed_worker_fails_the_command_and_the_session_says_why(manager):
    session = manager.create(User("alice"), "default")
    other = manager.create(User("bob"), "default")
    pid = session.worker.pid
    cmd = session.aggregate("crashDS()", wait=True)
    assert cmd.status == "FAILED"
    assert "stopped unexpectedly" in cmd.message
    assert session.state == "FAILED"
    with pytest.raises(RSessionFailed, match="stopped unexpectedly"):
        session.aggregate("pidDS()")
    assert process_gone(pid)
    assert other.aggregate("pidDS()", fmt="json", wait=True).status == "COMPLETED"
    # A new login after the crash gets a working R.
    fresh = manager.create(User("alice"), "default")
    assert fresh.aggregate("pidDS()", fmt="json", wait=True).status == "COMPLETED"
    for s in (session, other, fresh):
        manager.close(s.id)


def test_worker_killed_from_outside(manager):
    session = manager.create(User("alice"), "default")
    os.kill(session.worker.pid, 9)
    cmd = session.aggregate("pidDS()", wait=True)
    assert cmd.status == "FAILED" and "stopped unexpectedly" in cmd.message
    manager.close(session.id)


def test_workspace_save_and_restore(manager):
    alice = User("alice")
    session = manager.create(alice, "default")
    session.assign_table("D", "demo/cohort/patients", wait=True)
    session.save_workspace("ws-1")
    names = [w["name"] for w in manager.workspaces(alice)]
    assert "ws-1" in names
    assert manager.workspaces(User("bob")) == []
    fresh = manager.create(alice, "default")
    fresh.restore_workspace("ws-1")
    assert fresh.symbols() == ["D"]
    with pytest.raises(Exception, match="Invalid workspace"):
        fresh.save_workspace("../../etc/x")
    with pytest.raises(NotFound):
        manager.create(User("bob"), "default").restore_workspace("ws-1")
    manager.delete_workspace(alice, "ws-1")
    for s in (session, fresh):
        manager.close(s.id)


def test_max_sessions(pool, example_data, tmp_path):
    registry = MethodRegistry(pool.packages(), {"default": Profile("default")})
    mgr = SessionManager(
        pool, registry, TableCatalogue(example_data, []), None, Limits(max_sessions=2), tmp_path
    )
    mgr.create(User("a"), "default")
    mgr.create(User("b"), "default")
    with pytest.raises(Exception, match="maximum of 2 sessions"):
        mgr.create(User("c"), "default")
    mgr.close_all()


@pytest.mark.slow
def test_twenty_sessions_in_parallel(manager, example_data):
    ages = patients(example_data)["age"].to_numpy()

    def work(i):
        session = manager.create(User(f"user{i}"), "default")
        session.assign_table("D", "demo/cohort/patients", wait=True)
        means = []
        for _ in range(50):
            cmd = session.aggregate("meanDS(D$age)", fmt="json", wait=True)
            assert cmd.status == "COMPLETED", cmd.message
            means.append(cmd.result)
        manager.close(session.id)
        return means

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        results = list(ex.map(work, range(20)))
    import json

    for means in results:
        assert len(means) == 50
        for raw in means:
            assert json.loads(raw)["EstimatedMean"] == pytest.approx(np.nanmean(ages), rel=1e-12)
