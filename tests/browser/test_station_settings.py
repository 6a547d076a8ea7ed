"""The collaboration page's station settings, in headless Chromium, against an
in-process coordinator (no R: the agent's report is sent with the node's key, as
gateway/agent/settings_report.py sends it; a real station's report is in
test_journeys.py and tests/functional/test_node_settings.py): a profile's own value
over the package default, the options named without values, the agent's policy, a
station that has not reported, where the settings are changed, a station's new report
shown by the page's 10-second refresh without a reload, and nothing for another
collaboration's user. Screenshot: collaboration-settings-profiles."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway.agent.config import Policy
from gateway.agent.settings_report import policy_report, profile_settings
from tests.browser.test_journeys import assert_same_origin, sign_in
from tests.unit.coordinator.fixtures import PASSWORD, served_world

pytestmark = pytest.mark.slow

# dsGatewayBase's declared defaults (its DESCRIPTION) and a strict profile over them.
PACKAGE = {
    "default.nfilter.tab": "3",
    "default.nfilter.glm": "0.33",
    "datashield.privacyLevel": "5",
}
OWN = {"nfilter.tab": "7", "datashield.seed": "55501"}


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("station-settings")
    with served_world(tmp, "station-settings-" + "k" * 40) as w:
        a, b, c = w.org("Hospital A"), w.org("Hospital B"), w.org("Registry C")
        w.study = w.collaboration("study", a, b)
        w.other = w.collaboration("other", c)
        w.node_a = w.node("node-a", a, w.study)
        w.node_b = w.node("node-b", b, w.study)
        w.user("rita", a, ("researcher", None, w.study))
        w.user("otto", c, ("researcher", None, w.other))
        settings, withheld = profile_settings({**PACKAGE, **OWN}, OWN)
        profile = {
            "name": "strict",
            "packages": [{"name": "dsGatewayBase", "version": "0.3.0"}],
            "package_whitelist": ["dsGatewayBase"],
            "blacklist": ["histogramDS1"],
            "methods": {"aggregate": 60, "assign": 30},
            "settings": settings,
            "withheld": withheld,
        }
        policy = Policy(
            collaborations=frozenset({w.study}),
            users=frozenset({"rita", "ben"}),
            algorithms=frozenset({"aggregate", "glm"}),
            projects=frozenset({"demo"}),
            profile="strict",
        )
        body = {"profiles": [profile], "policy": policy_report(policy)}
        r = w.client.put("/api/node/settings", json=body, headers=w.as_node("node-a"))
        assert r.status_code == 200, r.json
        yield SimpleNamespace(url=w.server.url, world=w)


def test_a_researcher_sees_each_stations_profiles_read_only(open_page, fed):
    rp = open_page()
    page = rp.page
    sign_in(rp, fed, "rita", PASSWORD)
    page.goto(f"{fed.url}/console/collaborations/{fed.world.study}")
    a = page.get_by_role("region", name="Settings of node-a")
    table = a.get_by_role("table", name="Disclosure settings of profile strict at node-a")
    table.wait_for()
    rows = [r.get_by_role("cell").all_inner_texts() for r in table.locator("tbody tr").all()]
    assert rows == [
        ["datashield.privacyLevel", "5", "package default"],
        ["nfilter.glm", "0.33", "package default"],
        ["nfilter.tab", "7", "the profile (node.yaml)"],
    ]
    text = a.inner_text()
    assert "Profile strict" in text and "Blacklist\nhistogramDS1" in text
    assert "Package whitelist\ndsGatewayBase" in text and "60 aggregate, 30 assign" in text
    assert "values not shown here: datashield.seed." in text and "55501" not in text
    assert "node.yaml (profiles:) and agent.yaml (policy:)" in text
    assert "through its data steward" in text
    policy = a.get_by_role("group", name="Agent policy of node-a").inner_text()
    assert f"Collaborations served\n#{fed.world.study} (this one)" in policy
    assert "Researchers\nben, rita" in policy and "Algorithms\naggregate, glm" in policy
    assert "Projects task runs read\ndemo" in policy and "Profile task runs use\nstrict" in policy
    assert "agent.yaml (policy:)" in policy
    assert "does not serve this collaboration" not in policy
    b = page.get_by_role("region", name="Settings of node-b")
    assert "Not reported yet" in b.inner_text()
    assert b.locator("table").count() == 0
    rp.shot("collaboration-settings-profiles")
    assert not rp.errors
    assert_same_origin(rp, fed)


def test_another_collaborations_user_sees_no_station_settings(open_page, fed):
    rp = open_page()
    page = rp.page
    sign_in(rp, fed, "otto", PASSWORD)
    page.goto(f"{fed.url}/console/collaborations/{fed.world.study}")
    page.locator("#page-error").get_by_text("No such collaboration.").wait_for()
    assert page.locator("#station-settings").is_hidden()
    assert page.locator(".station-settings").count() == 0
    assert_same_origin(rp, fed)


def test_a_stations_new_report_shows_without_a_reload(open_page, fed):
    """node-b reports (first as an agent older than the policy report, then with its
    policy and a changed profile): the page's refresh (every 10 s; the browser's clock
    is moved on rather than waited for) shows each, in the same page."""
    from gateway.coordinator import db
    from gateway.coordinator.models import NodeSettings

    w = fed.world
    rp = open_page()
    page = rp.page
    sign_in(rp, fed, "rita", PASSWORD)
    page.clock.install()
    page.goto(f"{fed.url}/console/collaborations/{w.study}")
    b = page.get_by_role("region", name="Settings of node-b")
    b.get_by_text("Not reported yet").wait_for()
    page.evaluate("window.sameDocument = true")  # gone if the page were loaded again

    def report(body):
        r = w.client.put("/api/node/settings", json=body, headers=w.as_node("node-b"))
        assert r.status_code == 200, r.json

    def cells(name):
        table = b.get_by_role("table", name=f"Disclosure settings of profile {name} at node-b")
        table.wait_for()
        return [r.get_by_role("cell").all_inner_texts() for r in table.locator("tbody tr").all()]

    tab = {"name": "nfilter.tab", "value": "4", "source": "profile"}
    try:
        report({"profiles": [{"name": "default", "settings": [tab]}]})
        page.clock.run_for(11_000)
        assert cells("default") == [["nfilter.tab", "4", "the profile (node.yaml)"]]
        policy_b = b.get_by_role("group", name="Agent policy of node-b")
        assert "did not report its agent's policy" in policy_b.inner_text()

        # The station restarts with a stricter profile and a policy that leaves this
        # collaboration out.
        other = fed.world.other
        policy = policy_report(Policy(collaborations=frozenset({other}), users=None))
        report(
            {
                "profiles": [{"name": "default", "settings": [tab | {"value": "9"}]}],
                "policy": policy,
            }
        )
        page.clock.run_for(11_000)
        b.get_by_text("does not serve this collaboration").wait_for()
        assert cells("default") == [["nfilter.tab", "9", "the profile (node.yaml)"]]
        text = policy_b.inner_text()
        assert f"Collaborations served\n#{other}\n" in text
        assert "Researchers\nany researcher" in text and "Algorithms\naggregate" in text
        assert "did not report" not in text
        # node-a's card is as it was; the page was never loaded again.
        a = page.get_by_role("region", name="Settings of node-a")
        assert "Profile task runs use\nstrict" in a.inner_text()
        assert page.evaluate("window.sameDocument") is True
        assert not rp.errors
        assert_same_origin(rp, fed)
    finally:  # node-b has not reported, for the module's other tests
        with w.app.app_context():
            db.session().execute(
                NodeSettings.__table__.delete().where(NodeSettings.node_id == w.node_b)
            )
            db.commit()
