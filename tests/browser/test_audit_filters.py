"""The audit filters the console's audit page uses (outcome, until) and the size of
what left a station, recorded with each run result. Real app, SQLite, test client."""

from __future__ import annotations

import pytest

from tests.unit.coordinator.fixtures import PASSWORD, World, sqlite_coordinator


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit-filters")
    settings = {"TESTING": True, "CELERY_TASK_ALWAYS_EAGER": True}
    with sqlite_coordinator(tmp, "audit-filters-" + "k" * 32, **settings) as app:
        w = World(app, app.test_client())
        org = w.org("Hospital A")
        w.study = w.collaboration("study", org)
        w.node_id = w.node("node-a", org, w.study)
        w.user("boss", org, ("admin", None, None))
        w.user("alice", org, ("researcher", None, w.study))
        yield w


def test_outcome_and_until_filter_and_result_size_is_recorded(world):
    w = world
    c = w.client
    assert c.post("/api/auth/login", json={"username": "alice", "password": "wrong"}).status_code
    ok = c.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert ok.status_code == 200
    task = c.post(
        "/api/tasks",
        headers=w.as_user("alice"),
        json={"collaboration_id": w.study, "algorithm": "echo", "parameters": {"k": 1}},
    ).json
    work = c.get("/api/node/work", headers=w.as_node("node-a")).json["work"]
    assert [item["task_id"] for item in work] == [task["id"]]
    posted = c.post(
        f"/api/node/runs/{work[0]['run_id']}/result",
        headers=w.as_node("node-a"),
        json={"status": "completed", "result": {"k": [1, 2, 3]}},
    )
    assert posted.status_code == 200, posted.json
    boss = w.as_user("boss")
    refused = c.get("/api/audit?outcome=refused", headers=boss).json
    assert refused and {e["outcome"] for e in refused} == {"refused"}
    assert any(e["action"] == "auth.login" for e in refused)
    results = c.get("/api/audit?action=run.result&outcome=ok", headers=boss).json
    assert [e["detail"]["bytes"] for e in results] == [len('{"k": [1, 2, 3]}')]
    assert c.get("/api/audit?until=2000-01-01T00:00:00Z", headers=boss).json == []
    everything = c.get("/api/audit?until=2999-01-01", headers=boss).json
    assert len(everything) == len(c.get("/api/audit", headers=boss).json) > 2
    bad = c.get("/api/audit?until=yesterday", headers=boss)
    assert bad.status_code == 400 and "until" in bad.json["errors"]


def test_a_run_a_disclosure_filter_refused_is_filed_as_blocked(world):
    w = world
    c = w.client
    task = c.post(
        "/api/tasks",
        headers=w.as_user("alice"),
        json={"collaboration_id": w.study, "algorithm": "echo", "parameters": {}},
    ).json
    work = c.get("/api/node/work", headers=w.as_node("node-a")).json["work"]
    run_id = next(i["run_id"] for i in work if i["task_id"] == task["id"])
    url = f"/api/node/runs/{run_id}/result"
    odd = c.post(url, headers=w.as_node("node-a"), json={"status": "failed", "outcome": "fine"})
    assert odd.status_code == 400 and "outcome" in odd.json["errors"]
    posted = c.post(
        url,
        headers=w.as_node("node-a"),
        json={
            "status": "failed",
            "outcome": "blocked",
            "message": "table1DDS(D$id): Error : invalid table - invalid counts present",
        },
    )
    assert posted.status_code == 200, posted.json
    boss = w.as_user("boss")
    blocked = c.get("/api/audit?outcome=blocked", headers=boss).json
    assert [(e["action"], e["target_id"]) for e in blocked] == [("run.result", run_id)]
    assert "invalid counts" in blocked[0]["detail"]["message"]
    bad = c.get("/api/audit?outcome=sideways", headers=boss)
    assert bad.status_code == 400 and "outcome" in bad.json["errors"]


def test_a_relayed_call_takes_the_stations_outcome():
    from gateway.coordinator.relay.auditor import relayed_outcome

    def said(word):
        return [["Content-Type", "application/json"], ["X-DSGateway-Outcome", word]]

    assert relayed_outcome(500, said("blocked")) == "blocked"
    assert relayed_outcome(200, said("blocked")) == "blocked"  # a returned refusal
    assert relayed_outcome(400, said("refused")) == "refused"  # the whitelist
    assert relayed_outcome(200, said("returned")) == "ok"
    # No word, or one we do not know, or "fine" on an error: the status decides.
    assert relayed_outcome(500, said("returned")) == "failed"
    assert relayed_outcome(500, said("whatever")) == "failed"
    assert relayed_outcome(404, None) == "failed"
    assert relayed_outcome(200, []) == "ok"
