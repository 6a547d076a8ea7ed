"""Each role's main journey in the console, in headless Chromium, against a running
federation: `dsgateway coordinator serve` and two `dsgateway node run` stations (gateway
over R + agent) as processes (tests/functional/stack.py). Every request the browser
makes must stay on the coordinator's origin; screenshots of each main page are saved
in tests/browser/artifacts/."""

from __future__ import annotations

import json
import re

import pytest

from tests.functional.stack import running_stack

pytestmark = [pytest.mark.slow, pytest.mark.r]

PASSWORD = "console-pass-123"
DIGEST = "sha256:" + "ab" * 32
GLM_WAIT_MS = 300_000


def _ok(r, status=201):
    assert r.status_code == status, r.text
    return r.json()


@pytest.fixture(scope="module")
def fed(tmp_path_factory, r_lib):
    work = tmp_path_factory.mktemp("console-stack")
    with running_stack(work, r_lib, stations=("node-a", "node-b"), algorithms=["glm"]) as stack:
        api = stack.api
        nodes = {n["name"]: n for n in _ok(api("GET", "/nodes"), 200)}
        org_a = nodes["node-a"]["organization_id"]
        elsewhere = _ok(api("POST", "/organizations", json={"name": "Elsewhere"}))["id"]
        other = _ok(
            api("POST", "/collaborations", json={"name": "other", "organization_ids": [elsewhere]})
        )
        people = {
            "rita": (org_a, {"name": "researcher", "collaboration_id": stack.collaboration}),
            "stella": (
                org_a,
                {
                    "name": "data_steward",
                    "organization_id": org_a,
                    "collaboration_id": stack.collaboration,
                },
            ),
            "otto": (elsewhere, {"name": "researcher", "collaboration_id": other["id"]}),
        }
        for name, (org, role) in people.items():
            user = _ok(
                api(
                    "POST",
                    "/users",
                    json={"username": name, "password": PASSWORD, "organization_id": org},
                )
            )
            _ok(api("POST", f"/users/{user['id']}/roles", json=role))
        stack.nodes = nodes
        stack.other = other
        stack.glm_task = None
        yield stack


def sign_in(rp, fed, username, password=PASSWORD):
    page = rp.page
    page.goto(f"{fed.url}/console/")
    page.wait_for_url(re.compile(r"/console/login"))
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/console/$"))
    page.wait_for_selector("#collaborations table, #collaborations .empty")


def assert_same_origin(rp, fed):
    outside = [u for u in rp.requests if not u.startswith((fed.url + "/", "blob:", "data:"))]
    assert rp.requests and outside == [], outside
    assert rp.errors == []


def test_a_wrong_password_is_said_next_to_the_form(open_page, fed):
    rp = open_page()
    page = rp.page
    page.goto(f"{fed.url}/console/login")
    page.get_by_role("button", name="Sign in").click()
    assert page.locator("#username-error").inner_text() == "Enter your user name."
    page.get_by_label("User name").fill("rita")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    page.locator(".form-error").get_by_text("Invalid").wait_for()
    rp.shot("login")
    assert_same_origin(rp, fed)


def test_researcher_submits_a_glm_and_sees_its_coefficients_table_and_plot(
    open_page, fed, tmp_path
):
    rp = open_page()
    page = rp.page
    sign_in(rp, fed, "rita")
    assert page.locator("#collaborations").get_by_role("link", name="study").is_visible()
    rp.shot("collaborations")
    page.get_by_role("link", name="study").click()
    nodes = page.locator("#nodes tbody tr")
    nodes.first.wait_for()
    assert nodes.count() == 2
    assert [nodes.nth(i).locator(".badge").inner_text() for i in range(2)] == ["online", "online"]
    rp.shot("collaboration")
    page.get_by_role("link", name="Submit a task here").click()
    page.wait_for_selector("#station-list input")
    page.get_by_label("Analysis").select_option("glm")
    page.get_by_label("Table", exact=True).fill("demo/cohort/patients")
    # The API's field message (400) appears next to the field it is about.
    page.get_by_label("Formula", exact=True).fill("outcome ~ age +")
    page.get_by_role("button", name="Submit task").click()
    page.locator("#formula-error").wait_for()
    assert page.get_by_label("Formula", exact=True).get_attribute("aria-invalid") == "true"
    rp.shot("task-new-error")
    page.get_by_label("Formula", exact=True).fill("outcome ~ age + bmi")
    page.get_by_label("Family").select_option("binomial")
    page.get_by_role("button", name="Submit task").click()
    page.wait_for_url(re.compile(r"/console/tasks/\d+$"))
    task_id = int(page.url.rsplit("/", 1)[1])
    fed.glm_task = task_id
    page.locator("#result table").wait_for(timeout=GLM_WAIT_MS)
    value = _ok(fed.api("GET", f"/tasks/{task_id}/result"), 200)["value"]
    rows = page.locator("#result table tbody tr")
    assert rows.count() == len(value["coefficients"]) == 3
    for i, (term, coef) in enumerate(value["coefficients"].items()):
        cells = rows.nth(i).locator("td")
        assert cells.nth(0).inner_text() == term
        assert float(cells.nth(1).inner_text()) == pytest.approx(coef["Estimate"], rel=1e-5)
        assert float(cells.nth(2).inner_text()) == pytest.approx(coef["Std. Error"], rel=1e-5)
    # The odds-ratio plot: one point per term but the intercept.
    plot = page.locator("#result svg.plot")
    assert plot.locator("circle").count() == 2
    assert "Odds ratios" in plot.locator("title").text_content()
    assert page.locator("#runs").get_by_text("completed").count() >= 2
    rp.shot("task-glm")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download JSON").click()
    saved = tmp_path / "result.json"
    download.value.save_as(saved)
    assert json.loads(saved.read_text()) == value
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    download.value.save_as(tmp_path / "result.csv")
    csv = (tmp_path / "result.csv").read_text().splitlines()
    assert csv[0].startswith("term,estimate,std_error") and len(csv) == 4
    assert_same_origin(rp, fed)


def test_a_user_of_another_collaboration_sees_none_of_it(open_page, fed):
    rp = open_page()
    page = rp.page
    sign_in(rp, fed, "otto")
    listed = page.locator("#collaborations").inner_text()
    assert "other" in listed and "study" not in listed
    assert "No tasks yet." in page.locator("#tasks").inner_text()
    task_id = fed.glm_task or 1
    page.goto(f"{fed.url}/console/tasks/{task_id}")
    page.locator("#page-error").get_by_text("No such task.").wait_for()
    assert "outcome" not in page.locator("main").inner_text()
    page.goto(f"{fed.url}/console/collaborations/{fed.collaboration}")
    page.locator("#page-error").get_by_text("No such collaboration.").wait_for()
    assert page.locator("#nodes tbody tr").count() == 0
    assert page.locator("#settings .station-settings").count() == 0
    node_a = fed.nodes["node-a"]["id"]
    seen = page.evaluate(
        """async (id) => {
          const token = JSON.parse(sessionStorage.getItem("dsgateway.tokens")).access_token;
          const r = await fetch(`/api/nodes/${id}/settings`,
            { headers: { Authorization: `Bearer ${token}` } });
          return r.status;
        }""",
        node_a,
    )
    assert seen == 404  # the station's settings, through the API, as for the node
    assert page.locator('[data-nav="approvals"]').is_hidden()
    assert page.locator('[data-nav="admin"]').is_hidden()
    assert_same_origin(rp, fed)


def test_steward_sees_a_pending_image_and_approves_it_with_a_reason(open_page, fed):
    node = fed.nodes["node-a"]
    key = fed.stations["node-a"].process.env["DSGATEWAY_NODE_API_KEY"]
    # Stands in for the agent's mirror of its store (the stations here run no images).
    request = {
        "digest": DIGEST,
        "image": "registry.test/team/analysis:1.0",
        "requested_by": "rita",
        "collaboration": fed.collaboration,
        "labels": {"description": "mean age"},
    }
    r = fed.http.put(
        f"{fed.url}/api/node/images",
        headers={"X-Api-Key": key},
        json={"approvals": [], "requests": [request]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    rp = open_page()
    page = rp.page
    sign_in(rp, fed, "stella")
    page.get_by_role("link", name="Image approvals").click()
    section = page.get_by_role("region", name="Images at node-a")
    row = section.locator("tbody tr")
    row.first.wait_for()
    text = row.first.inner_text()
    assert "registry.test/team/analysis:1.0" in text and "rita" in text and "study" in text
    assert "description: mean age" in text
    rp.shot("approvals")
    row.first.get_by_role("button", name="Approve").click()
    dialog = page.locator("#decision-dialog")
    dialog.get_by_role("button", name="Approve").click()  # without a reason: refused here
    assert "Give a reason" in dialog.locator("#reason-error").inner_text()
    dialog.get_by_label("Reason").fill("reviewed v1.0")
    dialog.get_by_role("button", name="Approve").click()
    dialog.wait_for(state="hidden")
    decisions = _ok(fed.api("GET", f"/nodes/{node['id']}/images/decisions"), 200)
    assert [(d["digest"], d["decision"], d["reason"]) for d in decisions] == [
        (DIGEST, "approve", "reviewed v1.0")
    ]
    # The stations' settings as their agents reported them: read-only, with where they
    # are changed; node-a's nfilter.tab is what its node.yaml profile gives its R
    # sessions (dsGatewayBase's default, 3: the stack's profile sets none).
    page.goto(f"{fed.url}/console/collaborations/{fed.collaboration}")
    station = page.get_by_role("region", name="Settings of node-a")
    row = station.get_by_role("row").filter(has_text="nfilter.tab")
    row.wait_for()
    reported = _ok(fed.api("GET", f"/nodes/{node['id']}/settings"), 200)
    (tab,) = [s for s in reported["profiles"][0]["settings"] if s["name"] == "nfilter.tab"]
    assert tab == {"name": "nfilter.tab", "value": "3", "source": "package"}
    cells = row.get_by_role("cell").all_inner_texts()
    assert cells == ["nfilter.tab", "3", "package default"]
    text = station.inner_text()
    assert "Profile default" in text and "node.yaml" in text and "you as its data steward" in text
    assert "Reported by the station's agent" in text
    assert "Packages served\ndsGatewayBase " in text and "Blacklist\nnone" in text
    rp.shot("collaboration-settings")
    page.goto(f"{fed.url}/console/audit")
    page.get_by_label("Outcome").select_option("ok")
    page.get_by_label("User").fill("stella")
    page.get_by_role("button", name="Filter").click()
    page.locator("#events").get_by_text("image.decision").first.wait_for()
    rp.shot("audit")
    assert_same_origin(rp, fed)


def test_admin_registers_a_station_and_sees_its_key_once(open_page, fed):
    from tests.functional.stack import ADMIN_PASSWORD

    rp = open_page()
    page = rp.page
    sign_in(rp, fed, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Administration").click()
    page.wait_for_selector("#admin-nodes table")
    form = page.locator("#node-form")
    form.get_by_label("Collaboration").select_option(label="other")
    form.get_by_label("Organisation").select_option(label="Elsewhere")
    form.get_by_label("Name").fill("bad name!")
    form.get_by_role("button", name="Register station").click()
    form.locator("#node-name-error").wait_for()
    form.get_by_label("Name").fill("node-x")
    form.get_by_role("button", name="Register station").click()
    key = page.locator("#api-key")
    key.wait_for()
    assert key.inner_text().startswith("dsg_")
    rp.shot("admin")
    node = next(n for n in _ok(fed.api("GET", "/nodes"), 200) if n["name"] == "node-x")
    assert key.inner_text().startswith(node["api_key_prefix"])
    page.reload()
    page.wait_for_selector("#admin-nodes table")
    assert page.locator("#api-key").count() == 0  # shown once
    # Removing is confirmed; cancelling leaves the station.
    row = page.locator("#admin-nodes tr", has_text="node-x")
    row.get_by_role("button", name="Remove").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Cancel").click()
    assert fed.api("GET", f"/nodes/{node['id']}").status_code == 200
    row.get_by_role("button", name="Remove").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Remove").click()
    page.locator("#admin-nodes tr", has_text="node-x").wait_for(state="detached")
    assert fed.api("GET", f"/nodes/{node['id']}").status_code == 404
    assert_same_origin(rp, fed)
