"""A station's profiles, disclosure settings and agent policy reach the coordinator
(docs/console.md):

- a real `dsgateway node run` station (gateway over R and its agent, as a process)
  reports its node.yaml profiles and its agent.yaml policy when it starts; each
  profile's nfilter.tab at the coordinator is the value the station's own R sessions of
  that profile report (`listDisclosureSettingsDS()` through its Armadillo face), the
  seed is named but its value never leaves, the policy is exactly the agent's effective
  one (its defaults filled in, "*" as null); a restarted station reports again;
- an in-process agent reports again after a reconnect only if its settings or its
  policy changed;
- over HTTP, a report without a policy (an agent older than the policy report) is
  taken, a malformed policy is a 400 naming the fields and nothing is stored, and an
  agent whose policy the coordinator refuses still reports its profiles.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import yaml
from werkzeug.security import generate_password_hash

from gateway.agent.agent import Agent
from gateway.agent.config import Policy
from gateway.agent.executors import GatewayExecutor
from gateway.agent.link import CoordinatorLink
from gateway.agent.settings_report import SettingsReport, policy_report
from gateway.coordinator import db
from gateway.coordinator.models import AuditEvent, NodeSettings
from tests.functional.conftest import Armadillo
from tests.functional.rds import unserialize
from tests.functional.stack import Process, fast_agent_config, free_port, until
from tests.unit.coordinator.fixtures import served_world

pytestmark = pytest.mark.slow

SEED = 918273645


@pytest.fixture
def coordinator(tmp_path):
    with served_world(tmp_path, "settings-tests-" + "k" * 40, LONG_POLL_MAX=5) as world:
        org = world.org("Hospital A")
        world.study = world.collaboration("study", org)
        world.node_id = world.node("node-a", org, world.study)
        world.user("alice", org, ("researcher", None, world.study))
        yield world


def _reported(world) -> dict | None:
    r = world.client.get(
        f"/api/nodes/{world.node_id}/settings", headers=world.as_user("alice")
    ).json
    return r if r["reported"] else None


def _settings_events(world) -> list[dict]:
    from sqlalchemy import select

    with world.app.app_context():
        rows = db.session().execute(select(AuditEvent).where(AuditEvent.action == "node.settings"))
        return [e.detail for e in rows.scalars()]


def _stored(world) -> list[tuple]:
    from sqlalchemy import select

    with world.app.app_context():
        rows = db.session().execute(select(NodeSettings)).scalars()
        return [(r.node_id, r.profiles, r.policy) for r in rows]


def _r_setting(gateway_url: str, profile: str, name: str) -> float:
    """What an R session of `profile` at the station says of a disclosure setting."""
    client = Armadillo(gateway_url, "alice")
    assert client.login(profile, password="alice-pw").status_code == 204
    try:
        r = client.post(
            "/execute",
            params={"async": "FALSE"},
            data="listDisclosureSettingsDS()",
            headers={"Content-Type": "text/plain"},
        )
        assert r.status_code == 200, r.text
        value = unserialize(r.content)[name]
        return float(value[0] if isinstance(value, list) else value)
    finally:
        client.post("/logout")


def test_a_node_run_station_reports_its_profiles_as_its_r_sessions_see_them(
    coordinator, tmp_path, r_lib, example_data
):
    w = coordinator
    home = tmp_path / "station"
    shutil.copytree(example_data, home / "data")
    port = free_port()
    (home / "node.yaml").write_text(
        yaml.safe_dump(
            {
                "data_dir": "data",
                "state_dir": "var",
                "r_lib": r_lib,
                "users": {
                    "alice": {
                        "password_hash": generate_password_hash("alice-pw", "scrypt:1024:8:1"),
                        "projects": ["demo"],
                    }
                },
                "profiles": {
                    "default": {
                        "packages": ["dsGatewayBase"],
                        "options": {"datashield.seed": SEED},
                    },
                    "strict": {
                        "packages": ["dsGatewayBase"],
                        "blacklist": ["meanDS"],
                        "options": {"nfilter.tab": 7, "nfilter.glm": 0.2},
                    },
                },
                "limits": {"warm_workers": 1},
                "server": {"port": port},
            }
        )
    )
    (home / "agent.yaml").write_text(
        yaml.safe_dump(
            {
                "coordinator": w.server.url,
                "gateway": "node.yaml",
                "poll_wait": 2,
                "heartbeat_interval": 2,
                "backoff_initial": 0.2,
                "backoff_max": 1,
                # users "*" and no profile: null and "default" at the coordinator
                "policy": {
                    "collaborations": [w.study],
                    "users": "*",
                    "algorithms": ["glm", "aggregate"],
                    "projects": ["demo"],
                },
            }
        )
    )
    env = {**os.environ, "DSGATEWAY_NODE_API_KEY": w.keys["node-a"]}
    args = ["-m", "gateway.cli", "node", "run", "--config", str(home / "agent.yaml")]
    station = Process(args, env, home / "node.log").start()
    try:
        got = until(lambda: _reported(w), 120, "the station's settings", step=0.3)
        profiles = {p["name"]: p for p in got["profiles"]}
        assert sorted(profiles) == ["default", "strict"]
        default, strict = profiles["default"], profiles["strict"]
        tab = {n: {s["name"]: s for s in p["settings"]}["nfilter.tab"] for n, p in profiles.items()}
        assert tab["strict"] == {"name": "nfilter.tab", "value": "7", "source": "profile"}
        assert tab["default"]["source"] == "package"
        url = f"http://127.0.0.1:{port}"
        for name in ("default", "strict"):  # the coordinator says what R enforces
            assert float(tab[name]["value"]) == _r_setting(url, name, "nfilter.tab"), name
        assert _r_setting(url, "default", "nfilter.tab") == 3  # dsGatewayBase's default
        glm = {s["name"]: s["value"] for s in strict["settings"]}["nfilter.glm"]
        assert float(glm) == _r_setting(url, "strict", "nfilter.glm") == 0.2
        assert strict["blacklist"] == ["meanDS"]
        assert strict["package_whitelist"] == ["dsGatewayBase"]
        assert [p["name"] for p in strict["packages"]] == ["dsGatewayBase"]
        assert strict["methods"]["aggregate"] == default["methods"]["aggregate"] - 1
        assert default["withheld"] == ["datashield.seed"] and strict["withheld"] == []
        assert got["policy"] == {
            "collaborations": [w.study],
            "users": None,
            "algorithms": ["aggregate", "glm"],
            "projects": ["demo"],
            "profile": "default",
        }
        text = json.dumps(got)
        for secret in (str(SEED), str(home), w.keys["node-a"], "scrypt", "DSGATEWAY_NODE_API_KEY"):
            assert secret not in text
        assert w.server.url not in text
        assert _settings_events(w) == [{"profiles": ["default", "strict"], "changed": True}]

        # Restarted, the station reports again: the same settings, nothing changed.
        station.stop()
        station.start()
        until(lambda: len(_settings_events(w)) == 2, 120, "a second report", step=0.3)
        assert _settings_events(w)[1] == {"profiles": ["default", "strict"], "changed": False}
    finally:
        station.stop()
        print((home / "node.log").read_text(errors="replace")[-3000:], file=sys.stderr)


def test_an_agent_reports_again_after_a_reconnect_only_if_its_settings_changed(coordinator):
    w = coordinator
    policy = policy_report(Policy(algorithms=frozenset({"echo"})))
    body = {"profiles": [{"name": "default", "settings": [_tab("5")]}], "policy": policy}
    cfg = fast_agent_config(w, Policy(algorithms=frozenset({"echo"})), backoff_max=0.3)
    link = CoordinatorLink(cfg.api_url, w.keys["node-a"], cfg.request_timeout)
    settings = SettingsReport(link, lambda: body)
    agent = Agent(cfg, link, GatewayExecutor(None, cfg.policy), settings=settings).start()
    try:
        until(lambda: _reported(w), 30, "the first report")
        assert len(_settings_events(w)) == 1

        def reconnect():
            w.server.stop()
            until(lambda: not agent.connected, 30, "the agent to see the coordinator gone")
            w.server.start()
            until(lambda: agent.connected, 30, "the agent back")

        reconnect()  # the same settings: not sent again
        assert len(_settings_events(w)) == 1
        body = {"profiles": [{"name": "default", "settings": [_tab("6")]}], "policy": policy}
        reconnect()  # changed: sent
        until(lambda: len(_settings_events(w)) == 2, 30, "the changed report")
        assert _reported(w)["profiles"][0]["settings"] == [_tab("6")]
        body = {**body, "policy": {**policy, "users": ["alice"]}}
        reconnect()  # only the policy changed: sent
        until(lambda: len(_settings_events(w)) == 3, 30, "the changed policy")
        assert _settings_events(w)[2]["changed"] is True
        assert _reported(w)["policy"] == {**policy, "users": ["alice"]}
    finally:
        agent.stop(timeout=2)


def test_reports_without_a_policy_are_taken_and_malformed_ones_refused(coordinator):
    w = coordinator
    profiles = [{"name": "default", "settings": [_tab("5")]}]
    link = CoordinatorLink(w.server.url + "/api", w.keys["node-a"], 5)

    # A malformed policy: 400 with a message per field, nothing stored or audited.
    bad = {
        "collaborations": "*",  # the agent sends "*" as null
        "users": ["alice", "alice"],
        "algorithms": ["aggregate"],
        "profile": "default",
        "api_key_env": "DSGATEWAY_NODE_API_KEY",
    }
    r = w.client.put(
        "/api/node/settings",
        json={"profiles": profiles, "policy": bad},
        headers=w.as_node("node-a"),
    )
    assert r.status_code == 400
    assert r.json["errors"] == {
        "policy": {
            "collaborations": ["Not a valid list."],
            "users": ["Each item once."],
            "projects": ["Missing data for required field."],
            "api_key_env": ["Unknown field."],
        }
    }
    assert _stored(w) == [] and _settings_events(w) == []

    # An agent older than the policy report: its report is taken, with no policy.
    old = link._call("PUT", "/node/settings", json={"profiles": profiles})
    assert (old["profiles"], old["changed"]) == (1, True)
    got = _reported(w)
    assert (got["profiles"][0]["settings"], got["policy"]) == ([_tab("5")], None)

    # A policy this coordinator refuses (as one older than the policy report refuses
    # any): the agent reports its profiles without it rather than nothing.
    more = [{"name": "default", "settings": [_tab("9")]}]
    report = SettingsReport(link, lambda: {"profiles": more, "policy": {"profile": "a b"}})
    assert report.report() is True
    got = _reported(w)
    assert (got["profiles"][0]["settings"], got["policy"]) == ([_tab("9")], None)
    assert [e["changed"] for e in _settings_events(w)] == [True, True]
    assert report.report() is False  # the same body: not sent again


def _tab(value: str) -> dict:
    return {"name": "nfilter.tab", "value": value, "source": "profile"}
