"""Client images run by the node under a real Docker daemon, against a real gateway.

Each run gets an internal network whose only way out is a proxy container that relays
to a unix socket, which the agent relays to the gateway (docs/client-images.md). These
tests show, from inside running containers, that this is the only way out; that limits
stop bombs and loops and say why; that output and logs are bounded and checked; that
the steward's approvals decide, by digest; and that nothing of a run is left behind.
"""

from __future__ import annotations

import secrets
import socket
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from gateway.agent.images.contract import RunLimits, RunRequest, RunStatus
from gateway.agent.images.policy import ImagePolicy
from gateway.agent.images.runner import ImageRunner, RunnerConfig
from gateway.agent.images.sandbox import LABEL_NODE
from gateway.node.audit import AuditLog
from tests.e2e.conftest import PY_BASE

pytestmark = [pytest.mark.slow, pytest.mark.r, pytest.mark.timeout(600)]

TABLE = "demo/cohort/patients"


class _Node:
    """A station: its approval store, audit log and runner."""

    def __init__(self, tmp_path: Path, docker, gateway, tokens):
        self.name = f"e2e-{secrets.token_hex(3)}"
        self.docker = docker
        self.gateway = gateway
        self.tokens = tokens
        self.state = tmp_path / self.name
        self.audit = AuditLog(self.state / "audit.log")
        self.policy = ImagePolicy.in_state_dir(self.state, self.audit)
        self.work = self.state / "runs"
        self._n = 0

    def runner(self, proxy_image: str = PY_BASE, **limits) -> ImageRunner:
        config = RunnerConfig(
            gateway=self.gateway.address,
            work_dir=self.work,
            proxy_image=proxy_image,
            limits=RunLimits(**{"wall_time": 60, **limits}),
            node=self.name,
            pull=False,
        )
        return ImageRunner(self.docker, self.policy, config, self.audit)

    def approve(self, digest: str, **kw) -> None:
        self.policy.approve(digest, by="steward", reason=kw.pop("reason", "reviewed"), **kw)

    def request(self, image: str, script: str | None = None, **kw) -> RunRequest:
        self._n += 1
        files = {"script.py": textwrap.dedent(script)} if script else {}
        files.update(kw.pop("files", {}))
        return RunRequest(
            run_id=kw.pop("run_id", f"run{self._n}"),
            image=image,
            user="dave",
            token=self.tokens.token_for(user="dave", projects=["demo"], ttl=120, run_id="x"),
            files=files,
            **kw,
        )

    def leftovers(self) -> list[str]:
        label = {"label": f"{LABEL_NODE}={self.name}"}
        found = [c.name for c in self.docker.containers.list(all=True, filters=label)]
        found += [n.name for n in self.docker.networks.list(filters=label)]
        found += [v.name for v in self.docker.volumes.list(filters=label)]
        if self.work.exists():
            found += [str(p) for p in self.work.iterdir()]
        return found

    def close(self) -> None:
        self.policy.close()
        self.audit.close()


def _station(tmp_path, docker_client, image_gateway, image_tokens):
    station = _Node(tmp_path, docker_client, image_gateway, image_tokens)
    yield station
    # After every test, whatever happened: nothing of its runs is left in Docker or on disk.
    left = station.leftovers()
    station.close()
    assert left == [], f"runs left things behind: {left}"


@pytest.fixture
def node(tmp_path, docker_client, image_gateway, image_tokens):
    yield from _station(tmp_path, docker_client, image_gateway, image_tokens)


@pytest.fixture
def node_b(tmp_path, docker_client, image_gateway, image_tokens):
    """A second station, with its own steward."""
    yield from _station(tmp_path, docker_client, image_gateway, image_tokens)


def pooled_mean_age(gateway) -> float:
    return float(pd.read_parquet(gateway.data_dir / "demo/cohort/patients.parquet")["age"].mean())


# ---------------------------------------------------------------- runs that work


def test_python_image_runs_a_script_and_an_algorithm_through_the_gateway(
    node, client_python, image_gateway
):
    node.approve(client_python, image="dsgateway-test/client-python:dev")
    runner = node.runner()
    ref = f"dsgateway-test/client-python:dev@{client_python}"
    statuses = []
    script = """
        answer = session.aggregate("meanDS(D$age)")
        write_json("mean.json", answer["node"])
        print("mean computed at the node", flush=True)
    """
    result = runner.run(
        node.request(
            ref,
            files={"analysis.py": textwrap.dedent(script)},
            parameters={"script": "analysis.py", "tables": {"D": TABLE}},
        ),
        on_status=lambda status, _detail: statuses.append(status),
    )
    assert result.status is RunStatus.COMPLETED, (result.reason, result.log)
    assert statuses == [
        RunStatus.PENDING,
        RunStatus.STARTING,
        RunStatus.RUNNING,
        RunStatus.COMPLETED,
    ]
    assert result.image_id == client_python == result.digest
    value = result.output("mean.json").to_dict()["content"]
    assert value["EstimatedMean"] == pytest.approx(pooled_mean_age(image_gateway), rel=1e-12)
    assert "mean computed at the node" in result.log

    # A named algorithm, with its table written as JSON and CSV.
    result = runner.run(
        node.request(
            ref,
            parameters={
                "algorithm": "mean",
                "args": {"x": "D$age"},
                "tables": {"D": {"table": TABLE, "variables": ["age"]}},
            },
        )
    )
    assert result.status is RunStatus.COMPLETED, (result.reason, result.log)
    assert {f.name for f in result.outputs} == {"result.json", "result.csv"}
    frame = result.output("result.json").to_dict()["content"]
    row = frame["data"][frame["index"].index("combined")]
    assert row[frame["columns"].index("mean")] == pytest.approx(pooled_mean_age(image_gateway))

    # The same script through dsgateway's own Armadillo driver (the root face).
    result = runner.run(
        node.request(
            ref,
            files={"analysis.py": textwrap.dedent(script)},
            parameters={"script": "analysis.py", "tables": {"D": TABLE}, "driver": "armadillo"},
        )
    )
    assert result.status is RunStatus.COMPLETED, (result.reason, result.log)
    value = result.output("mean.json").to_dict()["content"]
    assert value["EstimatedMean"] == pytest.approx(pooled_mean_age(image_gateway), rel=1e-12)

    # The gateway saw the researcher of the token, through its usual checks.
    calls = image_gateway.audit(user="dave", action="execute")
    assert any("meanDS" in (c.get("expression") or "") for c in calls)
    runs = node.audit.read(action="image_run")
    assert [r["status"] for r in runs] == ["completed", "completed", "completed"]
    assert runs[0]["digest"] == client_python and runs[0]["outcome"] == "returned"


def test_r_image_runs_a_script_through_the_gateway(node, client_r, image_gateway):
    node.approve(client_r)
    script = """
        dims <- dsg_aggregate('dimDS("D")')
        m <- dsg_aggregate("meanDS(D$age)")
        write_json("result.json", list(dims = dims, mean = m$EstimatedMean))
        cat("R says hello\\n")
    """
    result = node.runner().run(
        node.request(
            f"dsgateway-test/client-r:dev@{client_r}",
            files={"analysis.R": textwrap.dedent(script)},
            parameters={"script": "analysis.R", "tables": {"D": TABLE}},
        )
    )
    assert result.status is RunStatus.COMPLETED, (result.reason, result.log)
    out = result.output("result.json").to_dict()["content"]
    assert out["mean"] == pytest.approx(pooled_mean_age(image_gateway), rel=1e-12)
    assert out["dims"][0] == 500
    assert "R says hello" in result.log


def test_an_r_error_fails_the_run_with_the_log(node, client_r):
    node.approve(client_r)
    result = node.runner().run(
        node.request(
            client_r,
            files={"analysis.R": 'dsg_aggregate("readRDS(D)")\n'},
            parameters={"script": "analysis.R"},
        )
    )
    assert result.status is RunStatus.FAILED
    assert result.reason == "The analysis exited with code 1. See the log."
    assert "No such DataSHIELD" in result.log  # the gateway's refusal, for the researcher


# ---------------------------------------------------------------- digests and approvals


def test_one_changed_byte_is_a_new_digest_and_is_refused(
    node, node_b, probe_image, docker_client, tmp_path
):
    # Two images that differ in one byte of one file.
    context = tmp_path / "changed"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM dsgateway-test/probe:dev\nCOPY extra /extra\n")
    (context / "extra").write_bytes(b"\x01")
    approved, _ = docker_client.images.build(path=str(context), rm=True)
    (context / "extra").write_bytes(b"\x02")
    changed, _ = docker_client.images.build(path=str(context), rm=True)
    moving = "dsgateway-test/probe-moving:v1"
    try:
        assert len({probe_image, approved.id, changed.id}) == 3
        node.approve(approved.id, reason="reviewed with extra=1")
        node.approve(probe_image, reason="probe v1")
        runner = node.runner()
        script = """
            import json, os
            extra = open("/extra", "rb").read().hex() if os.path.exists("/extra") else None
            json.dump({"extra": extra}, open("/output/which.json", "w"))
        """
        ok = runner.run(node.request(f"dsgateway-test/probe:dev@{approved.id}", script))
        assert ok.status is RunStatus.COMPLETED, ok.reason
        assert ok.output("which.json").to_dict()["content"] == {"extra": "01"}
        refused = runner.run(node.request(f"dsgateway-test/probe:dev@{changed.id}", script))
        assert refused.status is RunStatus.NOT_APPROVED
        assert "has not been approved" in refused.reason and refused.image_id is None

        # Move a tag from an approved image to the changed one: a run pinned to the
        # approved digest still runs the approved content, the tag alone runs nothing.
        docker_client.images.get(probe_image).tag("dsgateway-test/probe-moving", "v1")
        changed.tag("dsgateway-test/probe-moving", "v1")
        tag_only = runner.run(node.request(moving, script))
        assert tag_only.status is RunStatus.NOT_APPROVED and "has no digest" in tag_only.reason
        pinned = runner.run(node.request(f"{moving}@{probe_image}", script))
        assert pinned.status is RunStatus.COMPLETED, pinned.reason
        assert pinned.image_id == probe_image
        assert pinned.output("which.json").to_dict()["content"] == {"extra": None}
        mismatch = runner.run(node.request(f"{moving}@{probe_image}", script, digest=changed.id))
        assert mismatch.status is RunStatus.NOT_APPROVED and "must be the same" in mismatch.reason
    finally:
        for name in (moving, approved.id, changed.id):
            try:
                docker_client.images.remove(name, force=True)
            except Exception:  # noqa: S110 (already gone)
                pass

    script = "print('hello')\n"
    # At another station that rejected the image, the same request ends "not approved",
    # while the first completes.
    node_b.policy.reject(probe_image, by="steward-b", reason="we do not run probes")
    results = {}

    def run_at(station, key):
        results[key] = station.runner().run(station.request(probe_image, script))

    stations = ((node, "a"), (node_b, "b"))
    threads = [threading.Thread(target=run_at, args=station) for station in stations]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["a"].status is RunStatus.COMPLETED
    assert results["b"].status is RunStatus.NOT_APPROVED
    assert "rejected by steward-b" in results["b"].reason
    assert "we do not run probes" in results["b"].reason


def test_revoking_an_approval_stops_new_runs_at_once(node, probe_image, tmp_path):
    node.approve(probe_image)
    runner = node.runner()
    script = "print('ran', flush=True)\n"
    assert runner.run(node.request(probe_image, script)).status is RunStatus.COMPLETED
    # The steward's CLI: another store object (another process) on the same files.
    steward_log = AuditLog(node.state / "audit.log")
    steward = ImagePolicy.in_state_dir(node.state, steward_log)
    steward.revoke(probe_image, by="steward", reason="found a problem")
    steward.close()
    steward_log.close()
    result = runner.run(node.request(probe_image, script))
    assert result.status is RunStatus.NOT_APPROVED
    assert "revoked by steward" in result.reason and "found a problem" in result.reason
    events = [(r["action"], r.get("status")) for r in node.audit]
    assert events == [
        ("image_approve", None),
        ("image_run", "completed"),
        ("image_revoke", None),
        ("image_run", "not approved"),
    ]


# ---------------------------------------------------------------- the sandbox, from inside


PROBE = r"""
import concurrent.futures, errno, json, os, socket, urllib.request

params = json.load(open("/input/parameters.json"))
out = {}

def tcp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.5)
    try:
        s.connect((host, port))
        return "connected"
    except OSError as err:
        return type(err).__name__
    finally:
        s.close()

gw = None
for line in open("/proc/net/route").read().splitlines()[1:]:
    f = line.split()
    if f[1] == "00000000":
        gw = socket.inet_ntoa(bytes.fromhex(f[2])[::-1])
out["default_gateway"] = gw
targets = [
    (host, port)
    for host in params["hosts"] + ([gw] if gw else []) + ["1.1.1.1", "8.8.8.8"]
    for port in params["ports"] + [53, 80, 443]
]
with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
    answers = pool.map(lambda t: tcp(*t), targets)
out["tcp"] = {f"{h}:{p}": a for (h, p), a in zip(targets, answers)}
try:
    socket.getaddrinfo("deb.debian.org", 443)
    out["dns"] = "resolved"
except OSError as err:
    out["dns"] = type(err).__name__
with urllib.request.urlopen(os.environ["DSGATEWAY_URL"] + "/actuator/health", timeout=10) as r:
    out["gateway"] = json.loads(r.read())

out["data_dir_visible"] = os.path.exists(params["data_dir"])
mounts = open("/proc/mounts").read()
out["mounts"] = [line.split()[1] for line in mounts.splitlines()]
out["data_dir_mounted"] = params["data_dir"] in mounts or "/cohort" in mounts
out["parquet_found"] = [
    os.path.join(d, f) for d, _, fs in os.walk("/", onerror=None)
    if not d.startswith(("/proc", "/sys")) for f in fs if f.endswith(".parquet")
]
out["writes"] = {}
for path in ["/probe", "/etc/probe", "/input/probe", "/usr/probe", "/var/tmp/probe",
             "/run/probe", "/tmp/probe", "/output/probe.json"]:
    try:
        with open(path, "w") as fh:
            fh.write("{}")
        out["writes"][path] = "ok"
    except OSError as err:
        out["writes"][path] = errno.errorcode.get(err.errno, str(err.errno))
lines = open("/proc/self/status").read().splitlines()
status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
out["uid"] = os.getuid()
out["cap_eff"] = status["CapEff"].strip()
out["no_new_privs"] = status.get("NoNewPrivs", "").strip()
out["ipv6"] = open("/proc/net/if_inet6").read() if os.path.exists("/proc/net/if_inet6") else ""
out["env"] = sorted(k for k in os.environ if k.startswith("DSGATEWAY_"))
os.remove("/output/probe.json")
json.dump(out, open("/output/probe.json", "w"))
"""


def test_from_inside_only_the_gateway_is_reachable_and_only_output_is_writable(
    node, probe_image, image_gateway
):
    # Stand-ins for other services of the machine: one on loopback only (like the
    # coordinator of a one-machine federation), one on every address.
    listeners, seen = [], []
    for host in ("127.0.0.1", "0.0.0.0"):
        s = socket.create_server((host, 0))
        s.settimeout(0.2)
        listeners.append(s)
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for s in listeners:
                try:
                    conn, peer = s.accept()
                    seen.append(peer)
                    conn.close()
                except OSError:
                    pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    hosts = sorted(
        {
            a.address
            for addrs in psutil.net_if_addrs().values()
            for a in addrs
            if a.family == socket.AF_INET
        }
    )
    node.approve(probe_image)
    try:
        result = node.runner().run(
            node.request(
                probe_image,
                PROBE,
                parameters={
                    "hosts": hosts,
                    "ports": [s.getsockname()[1] for s in listeners] + [image_gateway.address[1]],
                    "data_dir": str(image_gateway.data_dir),
                },
            )
        )
    finally:
        stop.set()
        watcher.join()
        for s in listeners:
            s.close()
    assert result.status is RunStatus.COMPLETED, (result.reason, result.log)
    probe = result.output("probe.json").to_dict()["content"]

    assert probe["gateway"] == {"status": "UP"}  # the one way out
    assert {k: v for k, v in probe["tcp"].items() if v == "connected"} == {}
    assert seen == []  # nothing on the machine was reached, by any address
    assert probe["dns"] == "gaierror"

    assert probe["data_dir_visible"] is False and probe["data_dir_mounted"] is False
    assert probe["parquet_found"] == []
    assert "/input" in probe["mounts"] and "/output" in probe["mounts"]

    writes = probe["writes"]
    assert writes.pop("/tmp/probe") == "ok" and writes.pop("/output/probe.json") == "ok"
    assert set(writes.values()) <= {"EROFS", "EACCES"}, writes
    assert probe["uid"] != 0
    assert probe["cap_eff"] == "0000000000000000"
    assert probe["no_new_privs"] == "1"
    assert probe["ipv6"].strip() == ""
    assert probe["env"] == [
        "DSGATEWAY_INPUT",
        "DSGATEWAY_OUTPUT",
        "DSGATEWAY_OUTPUT_LIMIT",
        "DSGATEWAY_PROFILE",
        "DSGATEWAY_RUN_ID",
        "DSGATEWAY_TOKEN",
        "DSGATEWAY_URL",
    ]


# ---------------------------------------------------------------- limits


def test_fork_bomb_is_stopped_by_the_process_limit(node, probe_image):
    node.approve(probe_image)
    script = """
        import os, time
        n = 0
        while True:
            try:
                if os.fork() == 0:
                    time.sleep(600)
                    os._exit(0)
                n += 1
            except OSError as err:
                print(f"fork refused after {n}: {err}", flush=True)
                time.sleep(0.2)
    """
    result = node.runner(pids=48, wall_time=4).run(node.request(probe_image, script))
    assert result.status is RunStatus.TIMED_OUT
    assert "process limit of 48" in result.reason, result.reason
    assert "Resource temporarily unavailable" in result.log


def test_memory_bomb_is_killed_at_the_memory_limit(node, probe_image):
    node.approve(probe_image)
    script = """
        chunks = []
        while True:
            chunks.append(bytearray(8 * 1024 * 1024))
    """
    result = node.runner(memory_mb=96).run(node.request(probe_image, script))
    assert result.status is RunStatus.KILLED
    assert "memory limit of 96 MiB" in result.reason and "OOM" in result.reason
    assert result.exit_code == 137


def test_endless_loop_is_timed_out_and_a_cancel_kills(node, probe_image):
    node.approve(probe_image)
    runner = node.runner(wall_time=3)
    started = time.monotonic()
    result = runner.run(node.request(probe_image, "while True:\n    pass\n"))
    assert result.status is RunStatus.TIMED_OUT
    assert result.reason.startswith("Timed out: the run exceeded its wall-time limit of 3 s")
    assert time.monotonic() - started < 15

    runner = node.runner(wall_time=60)
    running, holder = threading.Event(), {}

    def run():
        request = node.request(probe_image, "while 1: pass\n", run_id="to-cancel")
        holder["r"] = runner.run(
            request, on_status=lambda status, _: status is RunStatus.RUNNING and running.set()
        )

    thread = threading.Thread(target=run)
    thread.start()
    assert running.wait(30)
    assert runner.cancel("to-cancel", "the researcher cancelled the task")
    thread.join(30)
    assert holder["r"].status is RunStatus.KILLED
    assert holder["r"].reason == "Stopped at the node: the researcher cancelled the task."
    assert not runner.cancel("to-cancel")  # over: nothing to cancel


def test_logs_are_cut_with_a_marker(node, probe_image):
    node.approve(probe_image)
    # stdout and stderr are two pipes: only the order within one of them is certain, so
    # each stream's line is written with the other one flushed and settled first.
    script = """
        import sys, time
        print("FIRST LINE", flush=True)
        time.sleep(0.2)
        print("STDERR TOO", file=sys.stderr, flush=True)
        time.sleep(0.2)
        for i in range(20000):
            print(f"noise {i:06d} " + "x" * 80)
        print("LAST WORDS", flush=True)
        sys.exit(3)
    """
    result = node.runner(log_bytes=4096).run(node.request(probe_image, script))
    assert result.status is RunStatus.FAILED
    assert result.reason == "The analysis exited with code 3. See the log."
    assert result.log.startswith("FIRST LINE\nSTDERR TOO\n")
    assert result.log.rstrip().endswith("LAST WORDS")
    assert "bytes of output cut here" in result.log
    assert len(result.log.encode()) < 4096 + 200


def test_output_is_checked_before_it_leaves(node, probe_image):
    node.approve(probe_image)
    runner = node.runner(output_bytes=64 * 1024, output_files=4)
    too_big = """
        import json
        json.dump(["x" * 1000] * 100, open("/output/big.json", "w"))
    """
    result = runner.run(node.request(probe_image, too_big))
    assert result.status is RunStatus.FAILED and result.outputs == []
    assert "larger than the limit of 65536 bytes" in result.reason

    # The volume itself is bounded: writing far more fails inside the container.
    flood = """
        with open("/output/flood.csv", "w") as fh:
            for _ in range(10000):
                fh.write("1,2,3,4" * 1000)
    """
    result = runner.run(node.request(probe_image, flood))
    assert result.status is RunStatus.FAILED
    assert "No space left on device" in result.log

    wrong_type = "open('/output/data.rds', 'wb').write(b'X\\n')\n"
    result = runner.run(node.request(probe_image, wrong_type))
    assert result.status is RunStatus.FAILED and ".json, .csv or .png" in result.reason

    fine = "open('/output/ok.csv', 'w').write('a,b\\n1,2\\n')\n"
    result = runner.run(node.request(probe_image, fine))
    assert result.status is RunStatus.COMPLETED
    assert result.output("ok.csv").data == b"a,b\n1,2\n"


# ---------------------------------------------------------------- clean-up on faults


def test_everything_is_removed_when_starting_fails(node, probe_image, monkeypatch):
    from gateway.agent.images import sandbox

    node.approve(probe_image)

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(sandbox.Sandbox, "create_analysis", broken)
    result = node.runner().run(node.request(probe_image, "print(1)\n"))
    assert result.status is RunStatus.FAILED and result.reason == "Node error: RuntimeError"
    # (the autouse fixture checks that network, proxy, volume and directory are gone)

    monkeypatch.undo()
    no_proxy = node.runner(proxy_image="dsgateway-test/no-such-proxy:0")
    result = no_proxy.run(node.request(probe_image, "print(1)\n"))
    assert result.status is RunStatus.FAILED
    assert "could not run the image" in result.reason


def test_leftovers_of_a_crashed_agent_are_removed(node, probe_image, docker_client):
    from gateway.agent.images.sandbox import LABEL_RUN

    labels = {LABEL_NODE: node.name, LABEL_RUN: "crashed"}
    docker_client.networks.create(f"{node.name}-crashed", internal=True, labels=labels)
    docker_client.containers.create(probe_image, name=f"{node.name}-crashed", labels=labels)
    docker_client.volumes.create(f"{node.name}-crashed", labels=labels)
    assert len(node.leftovers()) == 3
    assert node.runner().remove_leftovers() == 3
