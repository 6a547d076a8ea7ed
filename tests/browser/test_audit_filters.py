"""The audit filters the console's audit page uses (outcome, until) and the size of
what left a station, recorded with each run result. Real app, SQLite, test client."""

from __future__ import annotations

import pytest

from gateway.coordinator import create_app, db
from gateway.coordinator.migrate import upgrade
from tests.unit.coordinator.fixtures import PASSWORD, World


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit-filters")
    url = f"sqlite:///{tmp / 'c.db'}"
    upgrade(url)
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": url,
            "INSTANCE_PATH": str(tmp),
            "SECRET_KEY": "audit-filters-" + "k" * 32,
            "PASSWORD_HASH_METHOD": "scrypt:1024:8:1",
            "CELERY_TASK_ALWAYS_EAGER": True,
        }
    )
    w = World(app, app.test_client())
    org = w.org("Hospital A")
    w.study = w.collaboration("study", org)
    w.node_id = w.node("node-a", org, w.study)
    w.user("boss", org, ("admin", None, None))
    w.user("alice", org, ("researcher", None, w.study))
    yield w
    db.engine(app).dispose()


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
