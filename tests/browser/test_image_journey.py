"""The client-image journey in the console, in headless Chromium, against a federation
whose two stations run images under a real Docker daemon (`dsgateway node run` with an
`images:` section, as docs/client-images.md configures it):

- a researcher asks for an image no station knows: her runs end "not approved" and each
  station records her request;
- node A's data steward approves it in the console, node B's rejects it with a reason;
  the stations apply the decisions;
- the researcher picks the approved image in the console and runs a script: node A's
  run completes and she reads its output (the mean age, equal to node A's own data);
  node B's run is "not approved", with the steward's reason;
- a call a disclosure filter refuses (relayed, and as a task run) is "blocked" in the
  station's audit log and under the console's outcome filter.

The Python client image is the one the e2e image tests build (tests/e2e/conftest.py;
Docker's cache makes it quick after the first build). Screenshots go to
tests/browser/artifacts/ (task-new-image-error, task-image-requested, approvals-image,
task-image, audit-blocked).
"""

from __future__ import annotations

import json
import os
import re
import uuid

import pandas as pd
import pytest
import yaml

from gateway.node.audit import AuditLog
from tests.browser.test_journeys import PASSWORD, _ok, assert_same_origin, sign_in
from tests.e2e.conftest import PY_BASE, client_python, docker_client  # noqa: F401 (fixtures)
from tests.functional.conftest import Armadillo
from tests.functional.stack import Stack, until

pytestmark = [pytest.mark.slow, pytest.mark.r, pytest.mark.timeout(900)]

TABLE = "demo/cohort/patients"
MEAN_SCRIPT = """\
answer = session.aggregate("meanDS(D$age)")
write_json("mean.json", answer["node"])
"""
REJECTION = "not reviewed for our registry"
RUN_WAIT_MS = 240_000


class ImageStack(Stack):
    """The functional stack, each station's agent configured to run client images."""

    def _add_station(self, name: str, node_id: int, key: str, seed: int) -> None:
        super()._add_station(name, node_id, key, seed)
        # The station was started without images: add the section, start it again.
        station = self.stations[name]
        station.process.kill()
        agent_yaml = station.home / "agent.yaml"
        config = yaml.safe_load(agent_yaml.read_text())
        config["images"] = {
            "proxy_image": PY_BASE,
            "docker_host": os.environ["DOCKER_HOST"],  # set by the docker_client fixture
            # Labels what the runs create: ours alone, on a shared daemon.
            "node_name": f"browser-{name}-{uuid.uuid4().hex[:6]}",
            "pull": False,
            "sync_interval": 0.3,
            "limits": {"wall_time": 120},
        }
        agent_yaml.write_text(yaml.safe_dump(config))
        station.process.start()


@pytest.fixture(scope="module")
def fed(tmp_path_factory, r_lib, docker_client, client_python):  # noqa: F811
    work = tmp_path_factory.mktemp("console-images")
    stack = ImageStack(
        work, r_lib, stations=("node-a", "node-b"), algorithms=["image", "aggregate"], relay=True
    )
    try:
        stack.start()
        api = stack.api
        nodes = {n["name"]: n for n in _ok(api("GET", "/nodes"), 200)}
        people = {
            "rita": (nodes["node-a"], {"name": "researcher"}),
            "stella": (nodes["node-a"], {"name": "data_steward"}),
            "sam": (nodes["node-b"], {"name": "data_steward"}),
        }
        for name, (node, role) in people.items():
            org = node["organization_id"]
            user = _ok(
                api(
                    "POST",
                    "/users",
                    json={"username": name, "password": PASSWORD, "organization_id": org},
                )
            )
            role = {**role, "collaboration_id": stack.collaboration}
            if role["name"] == "data_steward":
                role["organization_id"] = org
            _ok(api("POST", f"/users/{user['id']}/roles", json=role))
        stack.nodes = nodes
        stack.digest = client_python
        stack.image = f"dsgateway-test/client-python:dev@{client_python}"
        yield stack
    finally:
        stack.stop()
        stack.print_logs()


def mirrored(fed, states: dict[str, str]) -> dict[str, dict]:
    """Wait until the coordinator's mirror shows these states of the image."""

    def check():
        listing = fed.api(
            "GET", f"/collaborations/{fed.collaboration}/images", params={"digest": fed.digest}
        ).json()
        if not listing:
            return None
        at = {n["node_name"]: n for n in listing[0]["nodes"]}
        return at if all(at[k]["state"] == v for k, v in states.items()) else None

    return until(check, 60, f"the mirror to show {states}", step=0.3)


def fill_image_task(page, fed, script: str = MEAN_SCRIPT) -> None:
    page.goto(f"{fed.url}/console/tasks/new?collaboration={fed.collaboration}")
    page.wait_for_selector("#station-list input")
    page.get_by_label("Analysis").select_option("image")
    page.get_by_label("Tables for the script").fill(f"D = {TABLE}")
    page.get_by_label("Script", exact=True).fill(script)


def runs_row(page, station: str):
    return page.locator("#runs tbody tr", has_text=station)


def wait_until_final(page) -> str:
    page.locator("#live", has_text=re.compile(r"The task is (completed|failed)")).wait_for(
        timeout=RUN_WAIT_MS
    )
    return page.locator("#live").inner_text()


def test_a_researcher_asks_for_an_image_the_stations_do_not_know(open_page, fed):
    rp = open_page()
    page = rp.page
    sign_in(rp, fed, "rita")
    fill_image_task(page, fed)
    # No station knows an image yet: the only choice is to name one, pinned by digest.
    image = page.get_by_label("Image", exact=True)
    assert image.input_value() == "other"
    reference = page.get_by_label("Image reference, pinned by digest")
    reference.fill("dsgateway-test/client-python:dev")
    page.get_by_role("button", name="Submit task").click()
    page.locator("#image_ref-error").get_by_text("with its digest").wait_for()
    assert reference.get_attribute("aria-invalid") == "true"
    assert "image_ref-error" in reference.get_attribute("aria-describedby")
    # Keyboard: the reference field comes right after the choice of image.
    image.focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "image_ref"
    rp.shot("task-new-image-error")
    reference.fill(fed.image)
    page.get_by_role("button", name="Submit task").click()
    page.wait_for_url(re.compile(r"/console/tasks/\d+$"))
    assert "failed" in wait_until_final(page)
    for station in ("node-a", "node-b"):
        row = runs_row(page, station)
        assert "not approved" in row.locator(".badge").inner_text()
        assert f"image {fed.digest} has not been approved" in row.inner_text()
    rp.shot("task-image-requested")
    assert_same_origin(rp, fed)
    # Each station recorded her request, and mirrors it for its steward.
    at = mirrored(fed, {"node-a": "pending", "node-b": "pending"})
    assert {n["requested_by"] for n in at.values()} == {"rita"}


def decide_in_console(open_page, fed, steward: str, station: str, decision: str, reason: str):
    rp = open_page()
    page = rp.page
    sign_in(rp, fed, steward)
    page.get_by_role("link", name="Image approvals").click()
    section = page.get_by_role("region", name=f"Images at {station}")
    row = section.locator("tbody tr", has_text=fed.digest[:19])
    row.wait_for()
    text = row.inner_text()
    assert "dsgateway-test/client-python:dev" in text and "rita" in text and "study" in text
    assert "pending" in row.locator(".badge").inner_text()
    row.get_by_role("button", name=decision).click()
    dialog = page.locator("#decision-dialog")
    dialog.get_by_label("Reason").fill(reason)
    dialog.get_by_role("button", name=decision).click()
    dialog.wait_for(state="hidden")
    node_id = fed.nodes[station]["id"]
    decisions = _ok(fed.api("GET", f"/nodes/{node_id}/images/decisions"), 200)
    assert [(d["digest"], d["decision"], d["reason"]) for d in decisions] == [
        (fed.digest, decision.lower(), reason)
    ]
    return rp


def test_stewards_approve_at_one_station_and_reject_at_the_other(open_page, fed):
    rp = decide_in_console(open_page, fed, "stella", "node-a", "Approve", "reviewed v1")
    rp.shot("approvals-image")
    assert_same_origin(rp, fed)
    rp = decide_in_console(open_page, fed, "sam", "node-b", "Reject", REJECTION)
    assert_same_origin(rp, fed)
    at = mirrored(fed, {"node-a": "approved", "node-b": "rejected"})
    assert (at["node-a"]["may_run"], at["node-b"]["may_run"]) == (True, False)
    assert at["node-b"]["reason"] == REJECTION
    # The steward's page shows what the station now holds.
    page = rp.page
    page.get_by_label("Show").select_option("rejected")
    section = page.get_by_role("region", name="Images at node-b")
    section.locator(".badge", has_text="rejected").wait_for()
    row = section.locator("tbody tr")
    assert row.count() == 1 and "sam (via coordinator)" in row.inner_text()
    assert REJECTION in row.inner_text()


def test_the_image_runs_where_approved_and_is_not_approved_where_rejected(open_page, fed, tmp_path):
    rp = open_page()
    page = rp.page
    sign_in(rp, fed, "rita")
    fill_image_task(page, fed)
    image = page.get_by_label("Image", exact=True)
    option = image.locator(f'option[value="{fed.digest}"]')
    assert "may run at node-a" in option.text_content()
    image.select_option(fed.digest)
    assert page.get_by_label("Image reference, pinned by digest").is_hidden()
    image.focus()
    page.keyboard.press("Tab")  # the hidden reference field is skipped
    assert page.evaluate("document.activeElement.id") == "tables"
    page.get_by_role("button", name="Submit task").click()
    page.wait_for_url(re.compile(r"/console/tasks/\d+$"))
    task_id = int(page.url.rsplit("/", 1)[1])
    wait_until_final(page)

    # Node A ran it: its output, read as a table, is node A's own mean age.
    a = runs_row(page, "node-a")
    assert a.locator(".badge").inner_text() == "completed"
    outputs = page.get_by_role("region", name="Outputs from node-a")
    outputs.wait_for()
    values = dict(
        tuple(outputs.locator("tbody tr").nth(i).locator("td").all_inner_texts())
        for i in range(outputs.locator("tbody tr").count())
    )
    own = pd.read_parquet(fed.stations["node-a"].data_dir / f"{TABLE}.parquet")["age"]
    assert float(values["EstimatedMean"]) == pytest.approx(float(own.mean()), rel=1e-12)
    assert int(values["Nvalid"]) == len(own)
    runs = {r["node_name"]: r for r in _ok(fed.api("GET", f"/tasks/{task_id}/image-runs"), 200)}
    content = runs["node-a"]["result"]["outputs"][0]["content"]
    assert float(values["EstimatedMean"]) == content["EstimatedMean"]
    with page.expect_download() as download:
        outputs.get_by_role("button", name="Download mean.json").click()
    saved = tmp_path / "mean.json"
    download.value.save_as(saved)
    assert json.loads(saved.read_text()) == content

    # Node B's steward rejected it: "not approved", with who and why.
    b = runs_row(page, "node-b")
    assert b.locator(".badge").inner_text() == "not approved"
    assert "rejected by sam" in b.inner_text() and REJECTION in b.inner_text()
    assert page.get_by_role("region", name="Outputs from node-b").count() == 0
    rp.shot("task-image")
    assert_same_origin(rp, fed)


def test_a_call_a_disclosure_filter_refuses_is_blocked_in_the_console(open_page, fed):
    # Every id is seen once: table1DDS refuses the table (counts below nfilter.tab).
    refused = "table1DDS(D$id)"
    token = _ok(
        fed.api("POST", "/auth/relay-token", json={"node_id": fed.nodes["node-a"]["id"]}), 200
    )["token"]
    via = Armadillo(fed.relay_url, token=token)
    until(lambda: via.login().status_code == 204, 30, "a login through the relay")
    assert via.load_table("D", TABLE)["status"] == "COMPLETED"
    r = via.post("/execute", data=refused, headers={"Content-Type": "text/plain"})
    assert r.status_code == 500 and "invalid counts present" in r.text
    via.post("/logout")
    task = _ok(
        fed.api(
            "POST",
            "/tasks",
            json={
                "collaboration_id": fed.collaboration,
                "algorithm": "aggregate",
                "node_ids": [fed.nodes["node-a"]["id"]],
                "parameters": {"table": TABLE, "symbol": "D", "expressions": [refused]},
            },
        )
    )
    until(
        lambda: fed.api("GET", f"/tasks/{task['id']}").json()["status"] == "failed",
        120,
        "the aggregate task to fail",
    )
    # The station's own audit log: the relayed call and the task's command, blocked.
    station = AuditLog(fed.stations["node-a"].home / "var" / "audit.log")
    blocked = [e for e in station.read(outcome="blocked") if e.get("expression") == refused]
    assert {e["action"] for e in blocked} >= {"execute", "aggregate"}

    rp = open_page()
    page = rp.page
    sign_in(rp, fed, "stella")
    page.goto(f"{fed.url}/console/audit")
    page.get_by_label("Outcome").select_option(label="Blocked by a disclosure filter")
    with page.expect_response(lambda r: "outcome=blocked" in r.url) as answer:
        page.get_by_role("button", name="Filter").click()
    shown = len(answer.value.json())
    page.wait_for_function(
        "n => document.querySelectorAll('#events tbody tr').length === n"
        " && [...document.querySelectorAll('#events .badge')]"
        ".every((b) => b.textContent === 'blocked')",
        arg=shown,
    )
    events = page.locator("#events tbody tr")
    rows = [events.nth(i).inner_text() for i in range(events.count())]
    assert any("relay.call" in r and "/execute" in r for r in rows), rows
    # The relayed call with its expression, and the size of the refusal that left.
    call = events.filter(has_text="relay.call").filter(has_text=f"POST /execute {refused}")
    size = page.evaluate(f"({len(r.content)}).toLocaleString()")
    assert call.first.locator("td").last.inner_text() == f"{size} B"
    assert any("run.result" in r and "invalid counts present" in r for r in rows), rows
    badges = set(events.locator(".badge").all_inner_texts())
    assert badges == {"blocked"}
    rp.shot("audit-blocked")
    assert_same_origin(rp, fed)
