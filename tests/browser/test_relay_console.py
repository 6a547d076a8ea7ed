"""The console's relay parts, in headless Chromium, against test_relay.py's federation
(an in-process coordinator and its relay listener, node A's relay agent in front of a
real gateway over R, node B registered without an agent):

- the task form's "Reach stations through the relay": a checkbox per node of the
  collaboration, keyboard reachable; the browser's own check and the API's
  `errors.stations` / `errors.relay` next to those fields; the suggestion to run the
  script at one target; the task's page shows the relay and the stations' names;
- the audit page shows a relayed call's expression and the size of its answer, equal
  to the bytes the client received.

A run of a relay image task itself is tests/e2e/test_image_tasks.py's. Screenshots:
task-new-relay, task-new-relay-error, task-relay, audit-relay-expression.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from gateway.coordinator import db
from gateway.coordinator.models import Node
from tests.browser.test_journeys import assert_same_origin, sign_in
from tests.functional.conftest import gateway  # noqa: F401 (fixture)
from tests.functional.test_relay import relay, relay_token, relayed  # noqa: F401 (fixture)
from tests.unit.coordinator.fixtures import PASSWORD, served_world

pytestmark = [pytest.mark.slow, pytest.mark.r]

IMAGE = "registry.example/team/multi:1.0@sha256:" + "cd" * 32
SCRIPT = 'print(session.aggregate("meanDS(D$age)"))\n'
TEXT = {"Content-Type": "text/plain"}
RDS = {"Accept": "application/octet-stream"}


@pytest.fixture(scope="module")
def fed(relay):  # noqa: F811
    w = relay
    with w.app.app_context():
        org_a = db.session().get(Node, w.node_a).organization_id
    w.user("stella", org_a, ("data_steward", org_a, w.study))
    return SimpleNamespace(url=w.server.url, world=w)


def fill_image_task(page, url: str, collaboration: int) -> None:
    page.goto(f"{url}/console/tasks/new?collaboration={collaboration}")
    page.wait_for_selector("#station-list input")
    page.locator('#image option[value="other"]').wait_for(state="attached")  # images asked
    page.get_by_label("Analysis").select_option("image")
    assert page.get_by_label("Image", exact=True).input_value() == "other"
    page.get_by_label("Image reference, pinned by digest").fill(IMAGE)
    page.get_by_label("Script", exact=True).fill(SCRIPT)


def test_a_relay_image_task_names_its_stations_in_the_form_and_on_its_page(open_page, fed):
    w = fed.world
    a, b = w.node_a, w.node_b
    rp = open_page()
    page = rp.page
    sign_in(rp, fed, "alice", PASSWORD)
    fill_image_task(page, fed.url, w.study)
    stations = page.get_by_role("group", name="Stations the script reaches")
    assert stations.is_hidden()
    # Keyboard: Space ticks the relay; Tab goes on to the first station it reaches.
    relay_box = page.get_by_label("Reach stations through the relay")
    relay_box.focus()
    page.keyboard.press("Space")
    assert relay_box.is_checked() and stations.is_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == f"relay-node-{a}"
    boxes = {n: stations.get_by_label(re.compile(f"^{n} ")) for n in ("node-a", "node-b")}
    assert all(box.is_checked() for box in boxes.values())  # every node at first
    # Both nodes are targets too: the script would run twice. One target is offered.
    suggestion = page.locator("#relay-suggestion")
    assert "runs at every station checked under Stations (2 now)" in suggestion.inner_text()
    one = page.get_by_role("button", name="Run it at node-a only")
    assert one.is_visible()
    rp.shot("task-new-relay")

    # The browser's own check: a relay reaching no station.
    for box in boxes.values():
        box.uncheck()
    assert suggestion.is_hidden()
    page.get_by_role("button", name="Submit task").click()
    error = page.locator("#relay-stations-error")
    assert "Choose at least one station the script reaches" in error.inner_text()
    group = page.locator("#relay-stations")
    assert group.get_attribute("aria-invalid") == "true"
    assert "relay-stations-error" in group.get_attribute("aria-describedby")
    rp.shot("task-new-relay-error")

    # The API's check (a station it does not know: not a node of the collaboration).
    boxes["node-b"].check()
    page.evaluate(
        """() => {
          const box = Object.assign(document.createElement("input"),
            {type: "checkbox", name: "relay_station", value: "99999", id: "stranger"});
          box.checked = true;
          document.querySelector("#relay-station-list").append(box);
        }"""
    )
    with page.expect_response(lambda r: r.url.endswith("/api/image-tasks")) as answer:
        page.get_by_role("button", name="Submit task").click()
    assert answer.value.status == 400
    assert answer.value.json()["errors"]["stations"] == ["Not nodes of this collaboration: [99999]"]
    error.get_by_text("Not nodes of this collaboration: [99999]").wait_for()
    page.evaluate("() => document.querySelector('#stranger').remove()")

    # Both stations, and the one target offered (node-a: online, and first).
    boxes["node-a"].check()
    one.click()
    assert page.evaluate("document.activeElement.id") == f"node-{a}"
    assert page.locator(f"#node-{a}").is_checked() and not page.locator(f"#node-{b}").is_checked()
    assert suggestion.is_hidden()
    page.get_by_role("button", name="Submit task").click()
    page.wait_for_url(re.compile(r"/console/tasks/\d+$"))
    task_id = int(page.url.rsplit("/", 1)[1])
    reached = page.locator("#relay-stations li")
    reached.first.wait_for()
    assert reached.all_inner_texts() == ["node-a", "node-b"]
    relay_row = page.locator("#summary dt", has_text="Relay")
    assert relay_row.evaluate("dt => dt.nextElementSibling.textContent").startswith("yes")
    rp.shot("task-relay")
    task = w.client.get(f"/api/tasks/{task_id}", headers=w.as_user("alice")).json
    assert task["node_ids"] == [a]
    assert (task["parameters"]["relay"], task["parameters"]["stations"]) == (True, [a, b])
    assert task["parameters"]["image"] == IMAGE
    assert_same_origin(rp, fed)


@pytest.fixture(scope="module")
def no_relay(tmp_path_factory):
    """A coordinator without a relay (no RELAY_SECRET, no key file)."""
    tmp = tmp_path_factory.mktemp("no-relay")
    with served_world(tmp, "no-relay-" + "k" * 40) as w:
        org = w.org("Hospital A")
        w.study = w.collaboration("study", org)
        w.node("node-a", org, w.study)
        w.user("rita", org, ("researcher", None, w.study))
        yield SimpleNamespace(url=w.server.url, world=w)


def test_the_apis_relay_message_is_shown_next_to_the_relay_checkbox(open_page, no_relay):
    rp = open_page()
    page = rp.page
    sign_in(rp, no_relay, "rita", PASSWORD)
    fill_image_task(page, no_relay.url, no_relay.world.study)
    page.get_by_label("Reach stations through the relay").check()
    page.get_by_role("button", name="Submit task").click()
    error = page.locator("#relay-error")
    error.get_by_text("This coordinator has no relay").wait_for()
    # After the checkbox's row (not between box and label), and tied to the box.
    assert error.evaluate("p => p.previousElementSibling.className") == "check"
    relay_box = page.get_by_label("Reach stations through the relay")
    assert relay_box.get_attribute("aria-invalid") == "true"
    assert "relay-error" in relay_box.get_attribute("aria-describedby")
    assert page.evaluate("document.activeElement.id") == "relay"  # focus on the field
    assert_same_origin(rp, no_relay)


def test_the_audit_page_shows_a_relayed_expression_and_the_size_of_its_answer(
    open_page,
    fed,
):
    w = fed.world
    via = relayed(w, relay_token(w, w.node_a, "alice"))
    assert via.login().status_code == 204
    assert via.load_table("D", "demo/cohort/patients")["status"] == "COMPLETED"
    value = via.post("/execute", data="meanDS(D$age)", headers={**TEXT, **RDS})
    assert value.status_code == 200
    long = "meanDS(D$age)" + " " * 3000
    assert via.post("/execute", data=long, headers={**TEXT, **RDS}).status_code == 200
    via.post("/logout")
    assert w.listener.app.extensions["relay_auditor"].flush()

    rp = open_page()
    page = rp.page
    sign_in(rp, fed, "stella", PASSWORD)
    page.goto(f"{fed.url}/console/audit")
    page.get_by_label("User").fill("alice")
    with page.expect_response(lambda r: "actor_name=alice" in r.url):
        page.get_by_role("button", name="Filter").click()
    rows = page.locator("#events tbody tr", has_text="relay.call")
    row = rows.filter(
        has=page.locator("code.expression", has_text=re.compile(r"^meanDS\(D\$age\)$"))
    )
    row.first.wait_for()
    cells = row.first.locator("td").all_inner_texts()
    headers = page.locator("#events thead th").all_inner_texts()
    shown = dict(zip(headers, cells, strict=True))
    assert shown["Action"] == "relay.call" and shown["Outcome"] == "returned"
    assert shown["What"].startswith("POST /execute meanDS(D$age)")
    size = page.evaluate(f"({len(value.content)}).toLocaleString()")
    assert shown["Size of what left"] == f"{size} B"
    cut = rows.filter(has_text="… [cut: 3013 characters in all]")
    assert cut.count() == 1 and "POST /execute meanDS(D$age)" in cut.inner_text()
    rp.shot("audit-relay-expression")
    assert_same_origin(rp, fed)
