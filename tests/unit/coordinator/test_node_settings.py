"""A station's profiles, disclosure settings and agent policy at the coordinator
(docs/console.md), on SQLite and PostgreSQL: the agent's report is checked, stored one
row per node (replaced, never appended), audited, and read by the node's collaboration
only; a report without a policy (an older agent) is still taken; and what the agent puts
in a report (gateway/agent/settings_report.py): the effective settings and policy, never
another option's value."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from gateway.agent.config import AgentConfig
from gateway.agent.settings_report import profile_settings, station_settings
from gateway.node.config import NodeConfig
from gateway.node.methods import MethodRegistry, PackageInfo, Profile

PROFILE = {
    "name": "default",
    "packages": [{"name": "dsGatewayBase", "version": "0.3.0"}],
    "package_whitelist": None,
    "blacklist": ["histogramDS1"],
    "methods": {"aggregate": 40, "assign": 20},
    "settings": [
        {"name": "nfilter.subset", "value": "3", "source": "package"},
        {"name": "nfilter.tab", "value": "5", "source": "profile"},
    ],
    "withheld": ["datashield.seed"],
}
POLICY = {
    "collaborations": [1, 4],
    "users": ["alice", "bob"],
    "algorithms": ["aggregate", "glm"],
    "projects": ["demo"],
    "profile": "default",
}


def _rows(app, model, **where) -> list:
    from gateway.coordinator import db

    with app.app_context():
        s = db.session()
        rows = list(s.execute(select(model).filter_by(**where)).scalars())
        s.expunge_all()  # readable after the app context ends
        return rows


def test_a_report_is_stored_replaced_audited_and_read_by_the_collaboration(fed, client, app):
    from gateway.coordinator.models import AuditEvent, NodeSettings

    w = fed.world
    url = f"/api/nodes/{fed.node_a}/settings"
    before = client.get(url, headers=w.as_user("alice"))
    assert before.status_code == 200
    assert before.json == {
        "node_id": fed.node_a,
        "node_name": "node-a",
        "reported": False,
        "reported_at": None,
        "profiles": [],
        "policy": None,
    }

    r = client.put("/api/node/settings", json={"profiles": [PROFILE]}, headers=w.as_node("node-a"))
    assert r.status_code == 200, r.json
    assert (r.json["profiles"], r.json["changed"]) == (1, True)
    first = r.json["reported_at"]

    # Researchers, the node's stewards and the collaboration's admins read it.
    for user in ("alice", "steward_a", "coord", "root"):
        got = client.get(url, headers=w.as_user(user))
        assert got.status_code == 200, user
        assert got.json["reported"] and got.json["profiles"] == [PROFILE]
        assert got.json["reported_at"] == first

    # A second report replaces the first: one row per node, the new values only.
    strict = {**PROFILE, "name": "strict", "settings": [PROFILE["settings"][1] | {"value": "10"}]}
    again = client.put(
        "/api/node/settings", json={"profiles": [strict]}, headers=w.as_node("node-a")
    )
    assert (again.json["profiles"], again.json["changed"]) == (1, True)
    same = client.put(
        "/api/node/settings", json={"profiles": [strict]}, headers=w.as_node("node-a")
    )
    assert same.json["changed"] is False
    assert len(_rows(app, NodeSettings, node_id=fed.node_a)) == 1
    got = client.get(url, headers=w.as_user("alice")).json
    assert [p["name"] for p in got["profiles"]] == ["strict"]
    assert got["profiles"][0]["settings"] == [
        {"name": "nfilter.tab", "value": "10", "source": "profile"}
    ]
    assert got["reported_at"] >= first

    events = _rows(app, AuditEvent, action="node.settings")
    assert [(e.actor_name, e.target_id, e.detail["changed"]) for e in events] == [
        ("node-a", fed.node_a, True),
        ("node-a", fed.node_a, True),
        ("node-a", fed.node_a, False),
    ]
    assert events[0].collaboration_id == fed.study and events[0].detail["profiles"] == ["default"]


def test_the_agents_policy_is_stored_with_the_profiles_and_may_be_absent(fed, client, app):
    from gateway.coordinator.models import NodeSettings

    w = fed.world
    url = f"/api/nodes/{fed.node_a}/settings"

    def report(body):
        r = client.put("/api/node/settings", json=body, headers=w.as_node("node-a"))
        assert r.status_code == 200, r.json
        return r.json["changed"]

    assert report({"profiles": [PROFILE], "policy": POLICY}) is True
    got = client.get(url, headers=w.as_user("alice")).json
    assert got["policy"] == POLICY and got["profiles"] == [PROFILE]
    # "*" is null; only the policy changes: a change.
    anyone = {**POLICY, "collaborations": None, "users": None, "algorithms": None}
    assert report({"profiles": [PROFILE], "policy": anyone}) is True
    assert report({"profiles": [PROFILE], "policy": anyone}) is False
    assert client.get(url, headers=w.as_user("steward_a")).json["policy"] == anyone
    # An agent older than the policy report sends none: taken, and the stored one goes
    # (the station no longer says what its policy is).
    assert report({"profiles": [PROFILE]}) is True
    got = client.get(url, headers=w.as_user("alice")).json
    assert (got["reported"], got["policy"], got["profiles"]) == (True, None, [PROFILE])
    [row] = _rows(app, NodeSettings, node_id=fed.node_a)
    assert row.policy is None


def test_a_node_reports_only_its_own_settings(fed, client, app):
    from gateway.coordinator.models import NodeSettings

    w = fed.world
    # The key names the node; the body cannot name another one.
    r = client.put(
        "/api/node/settings",
        json={"profiles": [PROFILE], "node_id": fed.node_b},
        headers=w.as_node("node-a"),
    )
    assert r.status_code == 400 and "node_id" in r.json["errors"]
    r = client.put("/api/node/settings", json={"profiles": [PROFILE]}, headers=w.as_node("node-a"))
    assert r.status_code == 200
    assert [row.node_id for row in _rows(app, NodeSettings)] == [fed.node_a]
    b = client.get(f"/api/nodes/{fed.node_b}/settings", headers=w.as_user("alice")).json
    assert (b["reported"], b["profiles"]) == (False, [])
    # Without a node's key, or with a user's token, nothing is written.
    assert client.put("/api/node/settings", json={"profiles": [PROFILE]}).status_code == 401
    as_user = client.put(
        "/api/node/settings", json={"profiles": [PROFILE]}, headers=w.as_user("root")
    )
    assert as_user.status_code == 401
    assert len(_rows(app, NodeSettings)) == 1


def test_another_collaborations_users_get_404(fed, client):
    w = fed.world
    client.put("/api/node/settings", json={"profiles": [PROFILE]}, headers=w.as_node("node-a"))
    for user in ("carl", "nobody"):
        r = client.get(f"/api/nodes/{fed.node_a}/settings", headers=w.as_user(user))
        assert r.status_code == 404, user
        assert r.json["message"] == "No such node."
    assert (
        client.get(f"/api/nodes/{fed.node_c}/settings", headers=w.as_user("carl")).json["reported"]
        is False
    )
    assert client.get("/api/nodes/9999/settings", headers=w.as_user("root")).status_code == 404
    assert client.get(f"/api/nodes/{fed.node_a}/settings").status_code == 401


def test_bad_reports_are_refused_with_field_messages_and_nothing_stored(fed, client, app):
    from gateway.coordinator.models import AuditEvent, NodeSettings

    w = fed.world

    def setting(**kw):
        return {"profiles": [{**PROFILE, "settings": [{**PROFILE["settings"][0], **kw}]}]}

    cases = [
        ({}, "profiles"),
        ({"profiles": []}, "profiles"),
        ({"profiles": [{"settings": []}]}, "profiles"),
        # A secret, or any option that is not a disclosure setting, is never stored.
        (setting(name="datashield.seed", value="7253"), "profiles"),
        (setting(name="db.password"), "profiles"),
        (setting(value="9" * 257), "profiles"),
        (setting(source="somewhere"), "profiles"),
        ({"profiles": [{**PROFILE, "name": "a b"}]}, "profiles"),
        ({"profiles": [PROFILE, PROFILE]}, "_schema"),
        ({"profiles": [{**PROFILE, "settings": PROFILE["settings"][:1] * 2}]}, "profiles"),
        ({"profiles": [{**PROFILE, "withheld": ["x"] * 501}]}, "profiles"),
        ({"profiles": [{**PROFILE, "blacklist": ["m"] * 1001}]}, "profiles"),
        ({"profiles": [PROFILE] * 101}, "profiles"),
        ({"profiles": [{**PROFILE, "packages": [{"name": "dsBase"}]}]}, "profiles"),
        ({"profiles": [{**PROFILE, "data_dir": "/srv/data"}]}, "profiles"),
        # The policy: every field, each bounded, nothing else (no key, no address).
        *(({"profiles": [PROFILE], "policy": bad}, "policy") for bad in BAD_POLICIES),
    ]
    for body, field in cases:
        r = client.put("/api/node/settings", json=body, headers=w.as_node("node-a"))
        assert r.status_code == 400, body
        assert field in r.json["errors"], (body, r.json)
    r = client.put(
        "/api/node/settings",
        data="{not json",
        headers={**w.as_node("node-a"), "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert _rows(app, NodeSettings) == []
    assert _rows(app, AuditEvent, action="node.settings") == []


BAD_POLICIES = [
    "*",
    {k: v for k, v in POLICY.items() if k != "users"},
    {**POLICY, "collaborations": "*"},
    {**POLICY, "collaborations": [0]},
    {**POLICY, "collaborations": [1, 1]},
    {**POLICY, "users": ["alice bob"]},
    {**POLICY, "users": ["u"] * 1001},
    {**POLICY, "algorithms": ["rm -rf"]},
    {**POLICY, "projects": None},
    {**POLICY, "projects": ["../etc"]},
    {**POLICY, "profile": None},
    {**POLICY, "api_key_env": "DSGATEWAY_NODE_API_KEY"},
]


def test_a_malformed_policy_is_named_in_the_field_messages(fed, client, app):
    from gateway.coordinator.models import NodeSettings

    w = fed.world
    r = client.put(
        "/api/node/settings",
        json={"profiles": [PROFILE], "policy": {**POLICY, "users": ["ok", "not ok"]}},
        headers=w.as_node("node-a"),
    )
    assert r.status_code == 400
    assert r.json["errors"] == {
        "policy": {"users": {"1": ["Letters, digits, '_', '.', '@', '-'; 1-128."]}}
    }
    r = client.put(
        "/api/node/settings",
        json={"profiles": [PROFILE], "policy": {"profile": "default", "secret": "x"}},
        headers=w.as_node("node-a"),
    )
    assert r.status_code == 400
    assert r.json["errors"]["policy"] == {
        "collaborations": ["Missing data for required field."],
        "users": ["Missing data for required field."],
        "algorithms": ["Missing data for required field."],
        "projects": ["Missing data for required field."],
        "secret": ["Unknown field."],
    }
    assert _rows(app, NodeSettings) == []


def test_a_removed_node_takes_its_settings_with_it(fed, client, app):
    from gateway.coordinator import db
    from gateway.coordinator.models import NodeSettings

    w = fed.world
    client.put("/api/node/settings", json={"profiles": [PROFILE]}, headers=w.as_node("node-b"))
    r = client.delete(f"/api/nodes/{fed.node_b}", headers=w.as_user("coord"))
    assert r.status_code == 204
    with app.app_context():
        count = db.session().execute(select(func.count()).select_from(NodeSettings)).scalar()
    assert count == 0


# ---------------------------------------------------------------- what the agent reports


def test_effective_settings_profile_over_package_defaults_and_secrets_withheld():
    options = {
        "datashield.privacyLevel": "5",
        "default.datashield.privacyControlLevel": '"banana"',
        "default.nfilter.tab": "3",
        "default.nfilter.glm": "0.33",
        "nfilter.tab": "5",
        "datashield.seed": "7253",
        "test.faults.marker": "42",
    }
    settings, withheld = profile_settings(options, {"nfilter.tab": "5", "datashield.seed": "7253"})
    assert settings == [
        {"name": "datashield.privacyControlLevel", "value": '"banana"', "source": "package"},
        {"name": "datashield.privacyLevel", "value": "5", "source": "package"},
        {"name": "nfilter.glm", "value": "0.33", "source": "package"},
        {"name": "nfilter.tab", "value": "5", "source": "profile"},
    ]
    assert withheld == ["datashield.seed", "test.faults.marker"]
    assert "7253" not in repr(settings)


def test_station_settings_from_the_gateways_registry(tmp_path: Path):
    """The body the agent sends, from a real MethodRegistry and node.yaml's profiles
    (packages as R would describe them; no R needed): accepted by the coordinator's
    schema, and nothing in it of paths, users or the seed."""
    from gateway.coordinator.schemas import NodeSettingsIn

    config = NodeConfig.from_dict(
        {
            "data_dir": str(tmp_path / "data"),
            "state_dir": str(tmp_path / "state"),
            "users": {"alice": {"password_hash": "scrypt:1:1:1$a$b", "projects": ["p"]}},
            "profiles": {
                "default": {"options": {"nfilter.tab": 5, "datashield.seed": 7253}},
                "strict": {
                    "packages": ["dsGatewayBase"],
                    "blacklist": ["meanDS"],
                    "options": {"nfilter.glm": 0.2},
                },
            },
        }
    )
    packages = [
        PackageInfo(
            "dsGatewayBase",
            "0.3.0",
            aggregate="meanDS, lengthDS, exists=base::exists",
            assign="asFactorDS",
            options="default.nfilter.tab=3, default.nfilter.glm=0.33, datashield.privacyLevel=5",
        ),
        PackageInfo("dsOther", "1.0", aggregate="otherDS"),
        PackageInfo("stats", "4.3.0"),  # not a DataSHIELD package
    ]
    profiles = {
        n: Profile(n, list(p.packages) if p.packages else None, list(p.blacklist), p.options)
        for n, p in config.profiles.items()
    }

    class Services:  # the two attributes station_settings reads of the gateway's services
        registry = MethodRegistry(packages, profiles)

    Services.config = config
    assert "policy" not in station_settings(Services)  # as an agent without one sends it
    agent = AgentConfig.from_dict(
        {
            "coordinator": "https://coordinator.example.org",
            "api_key_env": "MY_SECRET_KEY_VAR",
            "policy": {"users": ["bob", "alice"], "projects": ["p"]},
        }
    )
    body = station_settings(Services, agent.policy)
    assert NodeSettingsIn().load(body) == body
    # The effective policy: agent.yaml's values over the defaults, sorted, null for "*".
    assert body["policy"] == {
        "collaborations": None,
        "users": ["alice", "bob"],
        "algorithms": ["aggregate"],
        "projects": ["p"],
        "profile": "default",
    }
    default, strict = body["profiles"]
    assert default["name"] == "default" and default["package_whitelist"] is None
    assert [p["name"] for p in default["packages"]] == ["dsGatewayBase", "dsOther"]
    assert default["methods"] == {"aggregate": 4, "assign": 1}
    assert {s["name"]: (s["value"], s["source"]) for s in default["settings"]} == {
        "datashield.privacyLevel": ("5", "package"),
        "nfilter.glm": ("0.33", "package"),
        "nfilter.tab": ("5", "profile"),
    }
    assert default["withheld"] == ["datashield.seed"]
    assert strict["package_whitelist"] == ["dsGatewayBase"]
    assert strict["blacklist"] == ["meanDS"] and strict["methods"] == {"aggregate": 2, "assign": 1}
    assert {s["name"]: s["value"] for s in strict["settings"]}["nfilter.glm"] == "0.2"
    text = repr(body)
    for secret in ("7253", str(tmp_path), "scrypt", "MY_SECRET_KEY_VAR", "example.org"):
        assert secret not in text
    assert "alice" not in repr(body["profiles"])  # node.yaml's users are not reported
