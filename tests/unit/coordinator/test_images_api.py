"""The coordinator's client-image API (docs/client-images.md), on SQLite and PostgreSQL:
image tasks pinned by digest, the statuses a researcher follows, the approvals nodes
mirror, and decisions stewards queue for their node."""

from __future__ import annotations

from sqlalchemy import select

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
IMAGE = f"registry.example.org/team/analysis:1.2@{DIGEST}"


def _events(app, action: str) -> list[dict]:
    from gateway.coordinator import db
    from gateway.coordinator.models import AuditEvent

    with app.app_context():
        rows = db.session().execute(select(AuditEvent).where(AuditEvent.action == action))
        return [{"actor": e.actor_name, "outcome": e.outcome, **e.detail} for e in rows.scalars()]


def test_image_tasks_are_pinned_by_digest_and_followed_per_node(fed, client):
    w = fed.world
    alice = w.as_user("alice")
    body = {"collaboration_id": fed.study, "image": "registry.example.org/team/analysis:1.2"}
    r = client.post("/api/image-tasks", json=body, headers=alice)
    assert r.status_code == 400
    assert "not pinned by digest" in r.json["errors"]["image"][0]
    r = client.post(
        "/api/tasks",
        json={"collaboration_id": fed.study, "algorithm": "image", "parameters": {"image": "x:1"}},
        headers=alice,
    )
    assert r.status_code == 400 and "parameters" in r.json["errors"]

    body.update(
        image=IMAGE,
        files={"analysis.py": "print(1)"},
        parameters={"script": "analysis.py"},
        run_timeout=60,
    )
    r = client.post("/api/image-tasks", json=body, headers=alice)
    assert r.status_code == 201, r.json
    task = r.json
    assert (task["kind"], task["digest"], task["image"]) == ("image", DIGEST, IMAGE)
    assert task["node_ids"] == [fed.node_a, fed.node_b]
    assert (task["relay"], task["stations"]) == (False, None)

    runs = client.get(f"/api/tasks/{task['id']}/image-runs", headers=alice).json
    assert [(r["node_name"], r["status"]) for r in runs] == [("node-a", "pending")] * 1 + [
        ("node-b", "pending")
    ]

    # Each node takes its run: the work item carries what the node needs.
    items = {}
    for name in ("node-a", "node-b"):
        work = client.get("/api/node/work", headers=w.as_node(name)).json["work"]
        assert len(work) == 1
        items[name] = work[0]
    assert items["node-a"]["algorithm"] == "image"
    assert items["node-a"]["parameters"] == {
        "image": IMAGE,
        "digest": DIGEST,
        "files": {"analysis.py": "print(1)"},
        "input": {"script": "analysis.py"},
        "timeout": 60,
        "relay": False,
        "stations": None,
    }
    a, b = items["node-a"]["run_id"], items["node-b"]["run_id"]
    r = client.post(
        f"/api/node/runs/{a}/phase", json={"phase": "running"}, headers=w.as_node("node-a")
    )
    assert r.status_code == 200
    r = client.post(
        f"/api/node/runs/{a}/phase", json={"phase": "running"}, headers=w.as_node("node-b")
    )
    assert r.status_code == 404  # not its run
    reason = f"Not approved: image {DIGEST} was rejected by dana at ...: unreviewed"
    r = client.post(
        f"/api/node/runs/{b}/result",
        json={"status": "not approved", "message": reason},
        headers=w.as_node("node-b"),
    )
    assert r.status_code == 200, r.json
    r = client.post(
        f"/api/node/runs/{b}/phase", json={"phase": "running"}, headers=w.as_node("node-b")
    )
    assert r.status_code == 409
    runs = {
        r["node_name"]: r
        for r in client.get(f"/api/tasks/{task['id']}/image-runs", headers=alice).json
    }
    assert (runs["node-a"]["status"], runs["node-a"]["phase"]) == ("running", "running")
    assert (runs["node-b"]["status"], runs["node-b"]["message"]) == ("not approved", reason)
    client.post(
        f"/api/node/runs/{a}/result",
        json={
            "status": "completed",
            "result": {"status": "completed", "digest": DIGEST, "outputs": []},
        },
        headers=w.as_node("node-a"),
    )
    task = client.get(f"/api/tasks/{task['id']}", headers=alice).json
    assert task["status"] == "failed" and "node-b: not approved" in task["message"]
    assert task["runs"] == {"completed": 1, "not approved": 1}
    # Outsiders see nothing of it.
    assert (
        client.get(f"/api/tasks/{task['id']}/image-runs", headers=w.as_user("carl")).status_code
        == 404
    )


def test_mirrored_approvals_and_decisions_queued_for_a_node(fed, client, app):
    w = fed.world
    approval = {
        "digest": DIGEST,
        "state": "approved",
        "reason": "reviewed v1.2",
        "decided_by": "dana",
        "decided_at": "2026-01-02T03:04:05.678Z",
        "image": "registry.example.org/team/analysis:1.2",
        "collaborations": None,
    }
    request = {
        "digest": DIGEST,
        "image": IMAGE,
        "requested_by": "alice",
        "collaboration": fed.study,
        "labels": {"org.opencontainers.image.title": "analysis"},
    }
    r = client.put("/api/node/images", json={"approvals": [approval]}, headers=w.as_node("node-a"))
    assert r.json == {"approvals": 1, "requests": 0, "changed": 1}
    r = client.put("/api/node/images", json={"approvals": [approval]}, headers=w.as_node("node-a"))
    assert r.json["changed"] == 0  # the same store again: nothing new
    r = client.put(
        "/api/node/images",
        json={"approvals": [], "requests": [request]},
        headers=w.as_node("node-b"),
    )
    assert r.json["changed"] == 1
    bad = client.put(
        "/api/node/images",
        json={"approvals": [{"digest": "sha256:1"}]},
        headers=w.as_node("node-b"),
    )
    assert bad.status_code == 400

    listing = client.get(f"/api/collaborations/{fed.study}/images", headers=w.as_user("alice")).json
    assert [e["digest"] for e in listing] == [DIGEST]
    at = {n["node_name"]: n for n in listing[0]["nodes"]}
    assert (at["node-a"]["state"], at["node-a"]["may_run"], at["node-a"]["decided_by"]) == (
        "approved",
        True,
        "dana",
    )
    assert (at["node-b"]["state"], at["node-b"]["may_run"], at["node-b"]["requested_by"]) == (
        "pending",
        False,
        "alice",
    )
    assert at["node-b"]["labels"] == request["labels"]
    mine = client.get(f"/api/nodes/{fed.node_b}/images", headers=w.as_user("alice")).json
    assert [(m["digest"], m["state"]) for m in mine] == [(DIGEST, "pending")]

    # Decisions: only stewards of the node's organisation.
    decision = {"digest": OTHER, "decision": "reject", "reason": "not reviewed"}
    url = f"/api/nodes/{fed.node_a}/images/decisions"
    assert client.post(url, json=decision, headers=w.as_user("alice")).status_code == 403
    other = f"/api/nodes/{fed.node_b}/images/decisions"
    assert client.post(other, json=decision, headers=w.as_user("steward_a")).status_code == 403
    bad = client.post(url, json={**decision, "collaborations": [1]}, headers=w.as_user("steward_a"))
    assert bad.status_code == 400 and "collaborations" in bad.json["errors"]
    r = client.post(url, json=decision, headers=w.as_user("steward_a"))
    assert r.status_code == 202 and r.json["status"] == "queued"
    queued = client.get("/api/node/images/decisions", headers=w.as_node("node-a")).json
    assert [(d["digest"], d["decision"], d["requested_by"]) for d in queued["decisions"]] == [
        (OTHER, "reject", "steward_a")
    ]
    assert client.get("/api/node/images/decisions", headers=w.as_node("node-b")).json == {
        "decisions": []
    }
    ack = f"/api/node/images/decisions/{r.json['id']}"
    assert (
        client.post(ack, json={"status": "applied"}, headers=w.as_node("node-b")).status_code == 404
    )
    done = client.post(ack, json={"status": "applied"}, headers=w.as_node("node-a"))
    assert done.json["status"] == "applied" and done.json["applied_at"]
    assert (
        client.post(ack, json={"status": "applied"}, headers=w.as_node("node-a")).status_code == 200
    )
    assert (
        client.post(ack, json={"status": "refused"}, headers=w.as_node("node-a")).status_code == 409
    )
    seen = client.get(url, headers=w.as_user("steward_a")).json
    assert [d["status"] for d in seen] == ["applied"]

    assert [e["digest"] for e in _events(app, "image.approve")] == [DIGEST]
    assert [(e["digest"], e["by"]) for e in _events(app, "image.request")] == [(DIGEST, "alice")]
    assert [e["actor"] for e in _events(app, "image.decision")] == ["steward_a"]
    assert [e["actor"] for e in _events(app, "image.decision.applied")] == ["node-a"]


# ---------------------------------------------------------------- tokens, relay, disclosure


def _take(client, w, node: str) -> dict:
    work = client.get("/api/node/work", headers=w.as_node(node)).json["work"]
    assert len(work) == 1
    return work[0]


def _claims(token: str) -> dict:
    import jwt

    from tests.unit.coordinator.fixtures import TEST_RELAY_SECRET

    return jwt.decode(token, TEST_RELAY_SECRET, algorithms=["HS256"], options={"verify_aud": False})


def test_image_work_items_carry_relay_tokens_scoped_to_node_and_deadline(fed, client):
    w = fed.world
    body = {
        "collaboration_id": fed.study,
        "image": IMAGE,
        "parameters": {"script": "a.py"},
        "relay": True,
        "timeout": 120,  # shorter than RELAY_TOKEN_TTL: the tokens end with the task
    }
    r = client.post("/api/image-tasks", json=body, headers=w.as_user("alice"))
    assert r.status_code == 201, r.json
    task = client.get(f"/api/tasks/{r.json['id']}", headers=w.as_user("alice")).json
    item = _take(client, w, "node-a")
    assert item["parameters"]["relay"] is True
    # The coordinator's disclosure rules travel with the run.
    assert item["disclosure"]["min_count"] == 5 and item["disclosure"]["max_rows"] == 100
    # A token for this node's gateway (tokens_from: coordinator) ...
    own = _claims(item["gateway_token"])
    assert (own["sub"], own["node"], own["collaboration"]) == ("alice", fed.node_a, fed.study)
    assert own["aud"] == "aud-node-a"
    from datetime import datetime

    deadline = datetime.fromisoformat(task["deadline"].replace("Z", "+00:00")).timestamp()
    assert own["exp"] <= deadline + 1
    # ... and, the task naming no stations, one per target node for the relay, each
    # scoped to its node.
    assert (r.json["relay"], r.json["stations"]) == (True, [fed.node_a, fed.node_b])
    stations = item["relay_stations"]
    assert [(s["name"], s["node_id"]) for s in stations] == [
        ("node-a", fed.node_a),
        ("node-b", fed.node_b),
    ]
    for station in stations:
        claims = _claims(station["token"])
        assert (claims["node"], claims["aud"]) == (station["node_id"], f"aud-{station['name']}")
        assert claims["collaboration"] == fed.study and claims["sub"] == "alice"
        assert claims["exp"] <= deadline + 1


def test_stations_are_nodes_of_the_collaboration_named_once_with_the_relay(fed, client, app):
    w = fed.world
    alice = w.as_user("alice")
    body = {"collaboration_id": fed.study, "image": IMAGE, "node_ids": [fed.node_a]}
    bad = [
        ({"stations": []}, "Name at least one station"),
        ({"stations": [fed.node_b], "relay": False}, "reached through the relay"),
        ({"stations": [fed.node_b, 999]}, "Not nodes of this collaboration: [999]"),
        ({"stations": [fed.node_c]}, f"Not nodes of this collaboration: [{fed.node_c}]"),
        ({"stations": ["node-b"]}, "Not a valid integer"),
    ]
    for extra, message in bad:
        r = client.post("/api/image-tasks", json={**body, **extra}, headers=alice)
        assert r.status_code == 400, (extra, r.json)
        assert message in str(r.json["errors"]["stations"]), r.json
    # POST /tasks with algorithm "image": the same checks, under `parameters`.
    for parameters, message in [
        ({"stations": [fed.node_b]}, "`relay: true`"),
        ({"stations": [fed.node_c], "relay": True}, f"[{fed.node_c}]"),
    ]:
        r = client.post(
            "/api/tasks",
            json={
                "collaboration_id": fed.study,
                "algorithm": "image",
                "node_ids": [fed.node_a],
                "parameters": {"image": IMAGE, **parameters},
            },
            headers=alice,
        )
        assert r.status_code == 400, r.json
        assert message in str(r.json["errors"]["parameters"]["stations"])
    # carl, a researcher of the other collaboration, names his node in a study task: his
    # role is checked first (the study is not his to see), and nothing of nodes is said.
    r = client.post(
        "/api/image-tasks", json={**body, "stations": [fed.node_c]}, headers=w.as_user("carl")
    )
    assert r.status_code == 404 and "stations" not in r.text
    # ... and from his own collaboration, a node of the study is a stranger.
    mine = {"collaboration_id": fed.other, "image": IMAGE, "stations": [fed.node_c, fed.node_a]}
    r = client.post("/api/image-tasks", json=mine, headers=w.as_user("carl"))
    assert r.status_code == 400
    assert r.json["errors"]["stations"] == [f"Not nodes of this collaboration: [{fed.node_a}]"]
    assert _events(app, "image_task.create") == []  # nothing was written


def test_a_task_at_one_node_gets_relay_tokens_for_exactly_its_stations(fed, client, app):
    w = fed.world
    alice = w.as_user("alice")
    body = {
        "collaboration_id": fed.study,
        "image": IMAGE,
        "node_ids": [fed.node_a],
        "stations": [fed.node_b, fed.node_a, fed.node_b],  # each station once, in order
    }
    r = client.post("/api/image-tasks", json=body, headers=alice)
    assert r.status_code == 201, r.json
    task = r.json
    assert (task["node_ids"], task["relay"]) == ([fed.node_a], True)
    assert task["stations"] == [fed.node_a, fed.node_b]
    item = _take(client, w, "node-a")
    assert item["parameters"]["relay"] is True
    assert item["parameters"]["stations"] == [fed.node_a, fed.node_b]
    got = [(s["name"], s["node_id"], _claims(s["token"])["node"]) for s in item["relay_stations"]]
    assert got == [("node-a", fed.node_a, fed.node_a), ("node-b", fed.node_b, fed.node_b)]
    # The run is node-a's alone: node-b runs nothing, it only answers relayed calls.
    assert client.get("/api/node/work", headers=w.as_node("node-b")).json["work"] == []
    runs = client.get(f"/api/tasks/{task['id']}/image-runs", headers=alice).json
    assert [r["node_name"] for r in runs] == ["node-a"]

    # Only the station named: node-a runs, with a token for node-b and none for itself.
    body["stations"] = [fed.node_b]
    task = client.post("/api/image-tasks", json=body, headers=alice).json
    item = _take(client, w, "node-a")
    assert [(s["name"], s["node_id"]) for s in item["relay_stations"]] == [("node-b", fed.node_b)]
    created = _events(app, "image_task.create")
    assert [(e["nodes"], e["relay"], e["stations"]) for e in created] == [
        ([fed.node_a], True, [fed.node_a, fed.node_b]),
        ([fed.node_a], True, [fed.node_b]),
    ]
    assert client.get(f"/api/tasks/{task['id']}", headers=alice).json["parameters"]["stations"] == [
        fed.node_b
    ]


def test_no_relay_token_for_a_station_outside_the_tasks_collaboration(fed, client, app):
    """Minting checks the stations again (a task stored by other means, a node moved):
    a token carries its node's collaboration, so the run gets none rather than some."""
    from gateway.coordinator import db
    from gateway.coordinator.models import Task

    w = fed.world
    body = {"collaboration_id": fed.study, "image": IMAGE, "node_ids": [fed.node_a]}
    body["stations"] = [fed.node_a, fed.node_b]
    task = client.post("/api/image-tasks", json=body, headers=w.as_user("alice")).json
    with app.app_context():
        row = db.session().get(Task, task["id"])
        row.parameters = {**row.parameters, "stations": [fed.node_a, fed.node_c]}
        db.commit()
    item = _take(client, w, "node-a")
    assert "relay_stations" not in item
    assert item["relay_error"] == (
        f"the stations [{fed.node_c}] are not nodes of the task's collaboration"
    )


def test_a_relay_task_needs_a_relay_signing_key(fed, client, app):
    from gateway.coordinator.app import services

    w = fed.world
    tokens = services(app).tokens
    key, tokens.relay_key = tokens.relay_key, None
    try:
        body = {"collaboration_id": fed.study, "image": IMAGE, "relay": True}
        r = client.post("/api/image-tasks", json=body, headers=w.as_user("alice"))
        assert r.status_code == 400
        assert "no relay" in r.json["errors"]["relay"][0]
        # A task without the relay still runs; its items carry no token, and say nothing
        # of stations (a node taking tokens from the coordinator fails that run).
        body["relay"] = False
        assert (
            client.post("/api/image-tasks", json=body, headers=w.as_user("alice")).status_code
            == 201
        )
        item = _take(client, w, "node-a")
        assert "gateway_token" not in item and "relay_stations" not in item
    finally:
        tokens.relay_key = key


def test_the_coordinator_blocks_image_output_its_disclosure_rules_refuse(fed, client, app):
    w = fed.world
    alice = w.as_user("alice")
    body = {"collaboration_id": fed.study, "image": IMAGE, "node_ids": [fed.node_a]}
    counts = "sex,n\nfemale,12\nmale,3\n"  # a cell of 3, under the minimum of 5
    for content, expected in [
        (counts, "column 'n' holds the count 3, under the minimum of 5"),
        ({"age": list(range(150))}, "has 150 rows, more than the limit of 100"),
    ]:
        task = client.post("/api/image-tasks", json=body, headers=alice).json
        item = _take(client, w, "node-a")
        kind = "text/csv" if isinstance(content, str) else "application/json"
        output = {"name": "out", "type": kind, "size": 1, "content": content}
        r = client.post(
            f"/api/node/runs/{item['run_id']}/result",
            json={"status": "completed", "result": {"status": "completed", "outputs": [output]}},
            headers=w.as_node("node-a"),
        )
        assert r.status_code == 200 and r.json["status"] == "failed"
        run = client.get(f"/api/tasks/{task['id']}/image-runs", headers=alice).json[0]
        assert run["status"] == "failed" and run["result"] is None
        assert run["message"].startswith("Blocked by disclosure check at the coordinator: out")
        assert expected in run["message"]
    blocked = _events(app, "run.blocked")
    assert [(e["outcome"], e["check"]) for e in blocked] == [("blocked", "disclosure")] * 2

    # What the rules allow is stored as it came.
    task = client.post("/api/image-tasks", json=body, headers=alice).json
    item = _take(client, w, "node-a")
    fine = {"name": "mean.json", "type": "application/json", "size": 1, "content": {"mean": 41.5}}
    result = {"status": "completed", "outputs": [fine]}
    r = client.post(
        f"/api/node/runs/{item['run_id']}/result",
        json={"status": "completed", "result": result},
        headers=w.as_node("node-a"),
    )
    assert r.json["status"] == "completed"
    run = client.get(f"/api/tasks/{task['id']}/image-runs", headers=alice).json[0]
    assert run["result"]["outputs"][0]["content"] == {"mean": 41.5}
