"""Image tasks end to end: a real coordinator (HTTP, SQLite, its Celery worker thread),
two stations whose agents are wired as `dsgateway node run` wires them
(gateway.agent.dispatch.build_executor: Docker runner, approval store, approval sync),
a real gateway (R) and a real Docker daemon with images built here.

What the sandbox itself stops (data dir, host network, coordinator, internet, read-only
root, fork and memory bombs, endless loops) is shown in test_client_images.py against
the same runner; here: the coordinator's path around it: approvals at each node decide,
statuses reach the researcher, approvals are mirrored, decisions made at the
coordinator are applied by the node, and both audit logs hold every step.

The coordinator signs relay tokens with the gateway's HS256 secret, issuer and audience,
so its tokens open the gateway as a node's would: node-a signs its run tokens itself
(`tokens_from: node`), node-b takes them from the coordinator (`tokens_from:
coordinator`). The relay listener runs too, with a relay agent per station, and both
stations let image runs reach it (`images.relay`): a task with `relay` opens both.
"""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap
import threading

import pandas as pd
import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import func

from gateway.agent.agent import Agent
from gateway.agent.config import AgentConfig
from gateway.agent.dispatch import build_executor
from gateway.agent.images.cli import images as images_cli
from gateway.agent.images.policy import ImagePolicy
from gateway.agent.images.tokens import ItemTokenSource, JwtTokenMinter
from gateway.agent.link import CoordinatorLink
from gateway.agent.relay import RelayAgent
from gateway.client import CoordinatorClient
from gateway.coordinator import db
from gateway.coordinator.celery_app import EmbeddedWorker
from gateway.coordinator.models import AuditEvent, ImageRunPhase, Node
from gateway.coordinator.relay.app import create_relay_app
from gateway.coordinator.server import BackgroundServer
from gateway.node.audit import AuditLog
from tests.e2e.conftest import AUDIENCE, ISSUER, PY_BASE, TOKEN_SECRET
from tests.functional.stack import until
from tests.unit.coordinator.fixtures import PASSWORD, served_world

pytestmark = [pytest.mark.slow, pytest.mark.r, pytest.mark.timeout(900)]

TABLE = "demo/cohort/patients"
PROBE = "script.py"  # what the probe image runs
MEAN_SCRIPT = """
    answer = session.aggregate("meanDS(D$age)")
    write_json("mean.json", answer["node"])
"""


class Station:
    def __init__(self, name: str, state_dir, gateway):
        self.name = name
        self.state_dir = state_dir
        self.node_cfg = dataclasses.replace(gateway.config, state_dir=state_dir)
        self.audit = AuditLog(self.node_cfg.audit_path)

    def policy(self) -> ImagePolicy:
        """The steward's store, opened as the CLI opens it (another handle)."""
        return ImagePolicy.in_state_dir(self.state_dir, self.audit)

    def cli(self, *args: str) -> dict:
        out = CliRunner().invoke(images_cli, ["--state-dir", str(self.state_dir), *args])
        assert out.exit_code == 0, out.output
        return json.loads(out.output.splitlines()[-1])

    def audit_lines(self, action: str) -> list[dict]:
        return AuditLog(self.node_cfg.audit_path).read(action=action)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, docker_client, image_gateway, image_tokens):
    tmp = tmp_path_factory.mktemp("image-tasks")
    settings = {
        # Relay tokens the gateway accepts (it verifies them as any relayed call's).
        "RELAY_SECRET": TOKEN_SECRET,
        "RELAY_ISSUER": ISSUER,
        "SWEEP_INTERVAL": 0.5,
        "LONG_POLL_MAX": 5,
    }
    with served_world(tmp, "image-tasks-" + "k" * 40, threads=16, **settings) as w:
        app, server = w.app, w.server
        worker = EmbeddedWorker(app).start()
        relay = BackgroundServer(create_relay_app(app), threads=16).start()
        org_a, org_b = w.org("Hospital A"), w.org("Hospital B")
        w.study = w.collaboration("study", org_a, org_b)
        w.node_ids = {
            "node-a": w.node("node-a", org_a, w.study),
            "node-b": w.node("node-b", org_b, w.study),
        }
        with app.app_context():  # both stations stand for the one gateway of these tests
            for node in db.session().query(Node):
                node.audience = AUDIENCE
            db.commit()
        w.relay_url, w.api_port = relay.url, server.port
        w.user("alice", org_a, ("researcher", None, w.study))
        w.user("steward_a", org_a, ("data_steward", org_a, w.study))
        w.user("steward_b", org_b, ("data_steward", org_b, w.study))
        w.url = server.url + "/api"
        w.stations, stoppers = {}, []
        for name in ("node-a", "node-b"):
            station = Station(name, tmp / name, image_gateway)
            cfg = AgentConfig.from_dict(
                {
                    "coordinator": server.url,
                    "poll_wait": 2,
                    "heartbeat_interval": 1,
                    "backoff_initial": 0.05,
                    "backoff_max": 0.5,
                    "request_timeout": 10,
                    "policy": {"algorithms": ["image"], "projects": ["demo"]},
                    "images": {
                        "proxy_image": PY_BASE,
                        "docker_host": os.environ["DOCKER_HOST"],  # set by docker_client
                        "node_name": f"e2e-tasks-{name}",
                        "pull": False,
                        "tokens_from": "node" if name == "node-a" else "coordinator",
                        "relay": relay.url,
                        "sync_interval": 0.3,
                        "limits": {"wall_time": 120},
                    },
                }
            )
            link = CoordinatorLink(cfg.api_url, w.keys[name], cfg.request_timeout)
            executor = build_executor(
                cfg, link, None, station.node_cfg, image_gateway.address, station.audit
            )
            agent = Agent(cfg, link, executor).start()
            relayer = RelayAgent(
                cfg.api_url, w.keys[name], image_gateway.url, cfg.policy, poll_wait=2
            ).start()
            station.executor = executor
            stoppers.append((agent, executor, relayer))
            w.stations[name] = station
        try:
            yield w
        finally:
            threads = [threading.Thread(target=a.stop, args=(2,)) for a, _, _ in stoppers]
            threads += [threading.Thread(target=r.stop, args=(2,)) for _, _, r in stoppers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for _, executor, _ in stoppers:
                executor.close()
            relay.stop()
            worker.stop()


def api(w, method: str, path: str, user: str = "alice", **kw):
    return requests.request(method, w.url + path, headers=w.as_user(user), timeout=30, **kw)


def image_task(w, image: str, script: str, file: str = "analysis.py", **body) -> dict:
    r = api(
        w,
        "POST",
        "/image-tasks",
        json={
            "collaboration_id": w.study,
            "image": image,
            "files": {file: textwrap.dedent(script)},
            "parameters": {"script": file, "tables": {"D": TABLE}},
            **body,
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


def finished_runs(w, task_id: int) -> dict[str, dict]:
    def check():
        task = api(w, "GET", f"/tasks/{task_id}").json()
        return task["status"] in ("completed", "failed", "cancelled")

    until(check, 300, f"task {task_id}")
    runs = api(w, "GET", f"/tasks/{task_id}/image-runs").json()
    return {r["node_name"]: r for r in runs}


def mirrored(w, digest: str, states: dict[str, str]) -> dict[str, dict]:
    """Wait until the coordinator shows these states of `digest`; each node's entry."""

    def check():
        listing = api(w, "GET", f"/collaborations/{w.study}/images", params={"digest": digest})
        entries = listing.json()
        if not entries:
            return None
        at = {n["node_name"]: n for n in entries[0]["nodes"]}
        return at if all(at[k]["state"] == v for k, v in states.items()) else None

    return until(check, 60, f"the mirror of {digest} to show {states}")


def central_audit(w, action: str) -> list[AuditEvent]:
    with w.app.app_context():
        rows = db.session().query(AuditEvent).filter(AuditEvent.action == action).all()
        return [(e.actor_name, e.outcome, dict(e.detail)) for e in rows]


def pooled_mean_age(gateway) -> float:
    return float(pd.read_parquet(gateway.data_dir / f"{TABLE}.parquet")["age"].mean())


# ---------------------------------------------------------------- the tests


def test_an_approved_image_runs_at_two_nodes_and_returns_its_output(
    stack, client_python, image_gateway
):
    w = stack
    a, b = w.stations["node-a"], w.stations["node-b"]
    ref = f"dsgateway-test/client-python:dev@{client_python}"
    # Node A's steward decides at the station (the CLI); node B's from the coordinator.
    a.cli("approve", client_python, "--reason", "reviewed v1", "--by", "dana", "--image", ref)
    r = api(
        w,
        "POST",
        f"/nodes/{w.node_ids['node-b']}/images/decisions",
        user="steward_b",
        json={"digest": client_python, "decision": "approve", "reason": "reviewed too"},
    )
    assert r.status_code == 202, r.text
    at = mirrored(w, client_python, {"node-a": "approved", "node-b": "approved"})
    assert (at["node-a"]["decided_by"], at["node-a"]["may_run"]) == ("dana", True)
    assert at["node-b"]["decided_by"] == "steward_b (via coordinator)"
    decided = api(w, "GET", f"/nodes/{w.node_ids['node-b']}/images/decisions", user="steward_b")
    assert [d["status"] for d in decided.json()] == ["applied"]

    # node-b's run token comes from the coordinator (a relay token for node-b), which
    # node-b's gateway accepts as it accepts relayed calls.
    assert isinstance(a.executor.images.tokens, JwtTokenMinter)
    assert isinstance(b.executor.images.tokens, ItemTokenSource)
    task = image_task(w, ref, MEAN_SCRIPT)
    runs = finished_runs(w, task["id"])
    expected = pooled_mean_age(image_gateway)
    for name in ("node-a", "node-b"):
        run = runs[name]
        assert run["status"] == "completed", (run["message"], run["log"])
        outputs = {o["name"]: o for o in run["result"]["outputs"]}
        assert outputs["mean.json"]["content"]["EstimatedMean"] == pytest.approx(expected)
        assert run["digest"] == client_python
    assert api(w, "GET", f"/tasks/{task['id']}").json()["status"] == "completed"
    value = api(w, "GET", f"/tasks/{task['id']}/result").json()["value"]
    assert set(value) == {str(i) for i in w.node_ids.values()}
    # The nodes said where their runs were while they worked.
    with w.app.app_context():
        phases = {p.run_id: p.phase for p in db.session().query(ImageRunPhase)}
    assert sorted(phases[r["run_id"]] for r in runs.values()) == ["running", "running"]

    # The gateway saw the researcher; both audit logs hold the decisions and the runs.
    assert any("meanDS" in (c.get("expression") or "") for c in image_gateway.audit(user="alice"))
    assert [(e["user"], e["digest"]) for e in a.audit_lines("image_approve")] == [
        ("dana", client_python)
    ]
    assert [e["user"] for e in b.audit_lines("image_approve")] == ["steward_b (via coordinator)"]
    for station in (a, b):
        ran = [e for e in station.audit_lines("image_run") if e["digest"] == client_python]
        assert [(e["status"], e["user"]) for e in ran] == [("completed", "alice")]
    approvals = [d for _, _, d in central_audit(w, "image.approve") if d["digest"] == client_python]
    assert sorted(d["by"] for d in approvals) == ["dana", "steward_b (via coordinator)"]
    assert [actor for actor, _, _ in central_audit(w, "image.decision.applied")] == ["node-b"]
    results = [d for _, _, d in central_audit(w, "run.result")]
    assert [d["status"] for d in results][-2:] == ["completed", "completed"]


def test_a_changed_byte_is_a_new_digest_refused_everywhere_and_asked_for(
    stack, probe_image, docker_client, tmp_path
):
    w = stack
    context = tmp_path / "changed"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM dsgateway-test/probe:dev\nCOPY extra /extra\n")
    (context / "extra").write_bytes(b"\x01")
    approved, _ = docker_client.images.build(path=str(context), rm=True)
    (context / "extra").write_bytes(b"\x02")
    changed, _ = docker_client.images.build(path=str(context), rm=True)
    assert approved.id != changed.id
    for station in w.stations.values():
        station.cli("approve", approved.id, "--reason", "reviewed extra=01", "--by", "dana")
    script = "import json; json.dump({'ok': True}, open('/output/ok.json', 'w'))\n"
    ok = finished_runs(
        w, image_task(w, f"dsgateway-test/probe:dev@{approved.id}", script, PROBE)["id"]
    )
    assert {n: r["status"] for n, r in ok.items()} == {"node-a": "completed", "node-b": "completed"}

    refused = finished_runs(
        w, image_task(w, f"dsgateway-test/probe:dev@{changed.id}", script)["id"]
    )
    for run in refused.values():
        assert run["status"] == "not approved"
        assert f"image {changed.id} has not been approved" in run["message"]
    # Each node recorded the request, and mirrors it: the stewards see who asked.
    at = mirrored(w, changed.id, {"node-a": "pending", "node-b": "pending"})
    assert {n["requested_by"] for n in at.values()} == {"alice"}
    assert {n["requested_collaboration_id"] for n in at.values()} == {w.study}
    for station in w.stations.values():
        asked = [e for e in station.audit_lines("image_request") if e["digest"] == changed.id]
        assert [e["user"] for e in asked] == ["alice"]
        runs = [e for e in station.audit_lines("image_run") if e["digest"] == changed.id]
        assert [(e["status"], e["outcome"]) for e in runs] == [("not approved", "refused")]
    asked = [d for _, _, d in central_audit(w, "image.request") if d["digest"] == changed.id]
    assert len(asked) == 2


def test_a_rejection_and_a_revocation_end_runs_not_approved_with_the_reason(stack, probe_image):
    w = stack
    a, b = w.stations["node-a"], w.stations["node-b"]
    a.cli("approve", probe_image, "--reason", "probe reviewed", "--by", "dana")
    b.cli("reject", probe_image, "--reason", "no network probes here", "--by", "erik")
    script = "import json; json.dump({'hello': 1}, open('/output/hello.json', 'w'))\n"
    # Through the Python client this time.
    researcher = CoordinatorClient(w.url)
    researcher.login("alice", PASSWORD)
    task = researcher.create_image_task(
        w.study, f"dsgateway-test/probe:dev@{probe_image}", {PROBE: script}, name="hello"
    )
    assert researcher.wait(task["id"], timeout=300, progress=False)["status"] == "failed"
    runs = {r["node_name"]: r for r in researcher.image_runs(task["id"])}
    assert runs["node-a"]["status"] == "completed"
    assert runs["node-a"]["result"]["outputs"][0]["content"] == {"hello": 1}
    assert runs["node-b"]["status"] == "not approved"
    assert "rejected by erik" in runs["node-b"]["message"]
    assert "no network probes here" in runs["node-b"]["message"]

    # Revoked at node A: the next run there does not start, at once.
    a.cli("revoke", probe_image, "--reason", "superseded by v2", "--by", "dana")
    runs = finished_runs(
        w, image_task(w, f"dsgateway-test/probe:dev@{probe_image}", script, PROBE)["id"]
    )
    assert runs["node-a"]["status"] == "not approved"
    assert "revoked by dana" in runs["node-a"]["message"]

    # A decision from the coordinator the node cannot apply comes back refused.
    r = api(
        w,
        "POST",
        f"/nodes/{w.node_ids['node-a']}/images/decisions",
        user="steward_a",
        json={"digest": probe_image, "decision": "revoke", "reason": "again"},
    )
    assert r.status_code == 202
    url = f"/nodes/{w.node_ids['node-a']}/images/decisions"

    def answered():
        mine = [d for d in api(w, "GET", url, user="steward_a").json() if d["id"] == r.json()["id"]]
        return mine[0] if mine[0]["status"] != "queued" else None

    done = until(answered, 60, "node A to answer the decision")
    assert done["status"] == "refused" and "nothing to revoke" in done["message"]

    at = mirrored(w, probe_image, {"node-a": "revoked", "node-b": "rejected"})
    assert at["node-b"]["reason"] == "no network probes here"
    assert [e["digest"] for e in b.audit_lines("image_reject")] == [probe_image]
    assert [e["digest"] for e in a.audit_lines("image_revoke")] == [probe_image]
    assert [e["outcome"] for e in a.audit_lines("image_decision")] == ["refused"]
    central = {
        action: [d["by"] for _, _, d in central_audit(w, action) if d["digest"] == probe_image]
        for action in ("image.reject", "image.revoke")
    }
    assert central == {"image.reject": ["erik"], "image.revoke": ["dana"]}
    refused = central_audit(w, "image.decision.refused")
    assert [(actor, outcome) for actor, outcome, _ in refused] == [("node-a", "refused")]


def test_a_cancelled_task_kills_its_running_containers(stack, probe_image, docker_client):
    w = stack
    a = w.stations["node-a"]
    a.cli("approve", probe_image, "--reason", "probe, again", "--by", "dana")
    script = "import time\nprint('waiting', flush=True)\ntime.sleep(600)\n"
    task = image_task(
        w, f"dsgateway-test/probe:dev@{probe_image}", script, PROBE, node_ids=[w.node_ids["node-a"]]
    )

    def running():
        runs = api(w, "GET", f"/tasks/{task['id']}/image-runs").json()
        return bool(runs) and runs[0]["status"] == "running"

    until(running, 120, "the run to be running")
    assert api(w, "POST", f"/tasks/{task['id']}/cancel").status_code == 200

    def killed():
        return [e for e in a.audit_lines("image_run") if e["status"] == "killed"]

    ended = until(killed, 120, "the node to kill the run")
    assert "cancelled by the coordinator" in ended[-1]["message"]
    label = {"label": "dsgateway.node=e2e-tasks-node-a"}
    until(lambda: not docker_client.containers.list(all=True, filters=label), 60, "clean-up")
    run = api(w, "GET", f"/tasks/{task['id']}/image-runs").json()[0]
    assert run["status"] == "cancelled"


# The pooled mean of D$age over every station the script's session opened, and their
# names: what a relay task's script computes.
POOLED_MEAN_SCRIPT = """
    means = ds.mean(session, "D$age")
    write_json(
        "pooled.json",
        {"mean": float(means.loc[ds.COMBINED, "mean"]),
         "n_valid": int(means.loc[ds.COMBINED, "n_valid"]),
         "stations": sorted(c.name for c in session.conns)},
    )
"""

RELAY_SCRIPT = (
    """
    import json
    import os
    import socket

    import requests
"""
    + POOLED_MEAN_SCRIPT
    + """
    # The relay port leads to the coordinator's relay listener and nothing else of it.
    relay = os.environ["DSGATEWAY_RELAY_URL"]
    station = json.loads(os.environ["DSGATEWAY_STATIONS"])[0]
    bare = requests.get(relay + "/api/openapi.json", timeout=10)
    signed = requests.get(
        relay + "/api/openapi.json",
        headers={"Authorization": "Bearer " + station["token"]},
        timeout=10,
    )
    ports = {}
    for host in ("relay", "gateway"):
        try:
            socket.create_connection((host, parameters["api_port"]), timeout=3).close()
            ports[host] = "open"
        except OSError as err:
            ports[host] = type(err).__name__
    write_json(
        "probe.json",
        {"bare": [bare.status_code, bare.text[:300]],
         "signed_is_api": "/image-tasks" in signed.text,
         "ports": ports},
    )
"""
)


def test_a_script_opens_both_stations_through_the_relay_and_only_the_relay(
    stack, client_python, image_gateway
):
    w = stack
    ref = f"dsgateway-test/client-python:dev@{client_python}"
    for station in w.stations.values():
        station.cli("approve", client_python, "--reason", "reviewed for the relay", "--by", "dana")
    task = image_task(
        w,
        ref,
        RELAY_SCRIPT,
        relay=True,
        parameters={"script": "analysis.py", "tables": {"D": TABLE}, "api_port": w.api_port},
    )
    runs = finished_runs(w, task["id"])
    # Both stations answered (here they serve the same rows): the pooled figures are
    # those of both stations' rows together, whichever station's run computed them.
    ages = pd.read_parquet(image_gateway.data_dir / f"{TABLE}.parquet")["age"]
    pooled = pd.concat([ages, ages])
    for name, run in runs.items():
        assert run["status"] == "completed", (run["message"], run["log"])
        outputs = {o["name"]: o["content"] for o in run["result"]["outputs"]}
        assert outputs["pooled.json"]["stations"] == ["node-a", "node-b"]
        assert outputs["pooled.json"]["n_valid"] == int(pooled.notna().sum())
        assert outputs["pooled.json"]["mean"] == pytest.approx(float(pooled.mean()), rel=1e-10)
        # The coordinator's API is not there: the relay answers its own refusal, a signed
        # call goes to a station's gateway, and the API's port is closed everywhere.
        probe = outputs["probe.json"]
        assert probe["bare"][0] == 401 and "Send a relay token" in probe["bare"][1]
        assert probe["signed_is_api"] is False
        assert set(probe["ports"].values()) <= {"ConnectionRefusedError", "TimeoutError"}
        ran = [
            e for e in w.stations[name].audit_lines("image_run") if e["run"] == str(run["run_id"])
        ]
        assert ran[0]["stations"] == ["node-a", "node-b"]

    # The relay carried alice's calls to each node, and audited them.
    def relayed():  # written by the relay's audit thread, soon after each call
        calls = central_audit(w, "relay.call")
        return {d["path"] for actor, _, d in calls if actor == "alice"} >= {"/execute"}

    until(relayed, 30, "the relay's audit of alice's calls")


def test_output_the_disclosure_check_refuses_never_leaves(stack, probe_image):
    w = stack
    a = w.stations["node-a"]
    a.cli("approve", probe_image, "--reason", "probe for disclosure", "--by", "dana")
    cases = [
        (
            "open('/output/counts.csv', 'w').write('sex,n\\nfemale,12\\nmale,3\\n')\n",
            "counts.csv: the table, column 'n' holds the count 3, under the minimum of 5",
        ),
        (
            "import json\n"
            "json.dump([{'age': a} for a in range(150)], open('/output/rows.json', 'w'))\n",
            "rows.json: the JSON value has 150 rows, more than the limit of 100",
        ),
    ]
    for script, reason in cases:
        task = image_task(
            w,
            f"dsgateway-test/probe:dev@{probe_image}",
            script,
            PROBE,
            node_ids=[w.node_ids["node-a"]],
        )
        run = finished_runs(w, task["id"])["node-a"]
        assert run["status"] == "failed" and run["result"] is None
        assert run["message"].startswith(f"Blocked by disclosure check at the node: {reason}")
        assert "Merge small groups" in run["message"] or "not rows" in run["message"]
        logged = [e for e in a.audit_lines("image_run") if e["run"] == str(run["run_id"])]
        assert [(e["outcome"], e["status"], e["bytes"]) for e in logged] == [
            ("blocked", "failed", 0)
        ]
        assert "Blocked by disclosure check" in logged[0]["message"]
        central = [d for _, _, d in central_audit(w, "run.result") if d["status"] == "failed"]
        assert any(reason in d["message"] for d in central)


R_RELAY_SCRIPT = """
    at <- lapply(stations, function(s) dsg_aggregate("meanDS(D$age)", station = s))
    n <- sum(vapply(at, function(m) m$Nvalid, 0))
    total <- sum(vapply(at, function(m) m$EstimatedMean * m$Nvalid, 0))
    write_json("pooled.json", list(stations = stations, n_valid = n, mean = total / n))
"""


def test_an_r_script_opens_every_station_through_the_relay(stack, client_r, image_gateway):
    w = stack
    for station in w.stations.values():
        station.cli("approve", client_r, "--reason", "R runner reviewed", "--by", "dana")
    task = image_task(
        w, f"dsgateway-test/client-r:dev@{client_r}", R_RELAY_SCRIPT, "analysis.R", relay=True
    )
    ages = pd.read_parquet(image_gateway.data_dir / f"{TABLE}.parquet")["age"]
    pooled = pd.concat([ages, ages])
    for run in finished_runs(w, task["id"]).values():
        assert run["status"] == "completed", (run["message"], run["log"])
        out = {o["name"]: o["content"] for o in run["result"]["outputs"]}["pooled.json"]
        assert out["stations"] == ["node-a", "node-b"]
        assert out["n_valid"] == int(pooled.notna().sum())
        assert out["mean"] == pytest.approx(float(pooled.mean()), rel=1e-10)


def test_a_script_runs_once_at_one_node_and_reaches_the_stations_it_names(
    stack, client_python, image_gateway
):
    """`node_ids: [a]`, `stations: [a, b]`: one run, at node-a, whose steward approved
    the image, over both stations; node-b runs nothing (its steward has rejected the
    image) and answers the relayed calls as it answers a researcher's own."""
    w = stack
    a, b = w.stations["node-a"], w.stations["node-b"]
    node_a, node_b = w.node_ids["node-a"], w.node_ids["node-b"]
    a.cli("approve", client_python, "--reason", "reviewed, run once", "--by", "dana")
    b.cli("reject", client_python, "--reason", "not run here", "--by", "erik")
    with w.app.app_context():
        last = db.session().query(func.max(AuditEvent.id)).scalar() or 0
    b_runs = len(b.audit_lines("image_run"))
    researcher = CoordinatorClient(w.url)
    researcher.login("alice", PASSWORD)
    task = researcher.create_image_task(
        w.study,
        f"dsgateway-test/client-python:dev@{client_python}",
        {"analysis.py": textwrap.dedent(POOLED_MEAN_SCRIPT)},
        parameters={"script": "analysis.py", "tables": {"D": TABLE}},
        nodes=[node_a],
        stations=[node_a, node_b],
    )
    assert (task["node_ids"], task["relay"], task["stations"]) == ([node_a], True, [node_a, node_b])
    assert researcher.wait(task["id"], timeout=300, progress=False)["status"] == "completed"
    runs = researcher.image_runs(task["id"])
    assert [(r["node_name"], r["status"]) for r in runs] == [("node-a", "completed")]
    out = {o["name"]: o["content"] for o in runs[0]["result"]["outputs"]}["pooled.json"]
    ages = pd.read_parquet(image_gateway.data_dir / f"{TABLE}.parquet")["age"]
    pooled = pd.concat([ages, ages])  # both stations' rows (the same rows here)
    assert out["stations"] == ["node-a", "node-b"]
    assert out["n_valid"] == int(pooled.notna().sum())
    assert out["mean"] == pytest.approx(float(pooled.mean()), rel=1e-10)

    ran = [e for e in a.audit_lines("image_run") if e["run"] == str(runs[0]["run_id"])]
    assert [(e["status"], e["stations"]) for e in ran] == [("completed", ["node-a", "node-b"])]
    assert len(b.audit_lines("image_run")) == b_runs  # node-b ran nothing

    def relayed_to_b():  # the relay's audit thread writes each call soon after it
        with w.app.app_context():
            rows = (
                db.session()
                .query(AuditEvent)
                .filter(
                    AuditEvent.action == "relay.call",
                    AuditEvent.id > last,
                    AuditEvent.target_id == node_b,
                )
            )
            return [e.actor_name for e in rows]

    assert set(until(relayed_to_b, 30, "the relay's audit of the calls to node-b")) == {"alice"}
    created = [d for _, _, d in central_audit(w, "image_task.create") if d["nodes"] == [node_a]]
    assert created[-1]["stations"] == [node_a, node_b]
