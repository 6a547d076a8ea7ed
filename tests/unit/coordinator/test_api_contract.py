"""The API as a whole: the OpenAPI document covers every route and resolves; bad input
on every endpoint answers 400 with field messages and writes nothing; every error is
JSON with a message."""

import re

import pytest

from gateway.coordinator import models

BAD_BODIES = [
    {"unexpected_field": 1},
    [1, 2, 3],
    "a string",
]


def all_rows(world) -> int:
    tables = [
        models.Organization,
        models.User,
        models.Role,
        models.Collaboration,
        models.Node,
        models.Task,
        models.Run,
        models.Result,
        models.AuditEvent,
    ]
    return sum(world.count(t) for t in tables)


def test_openapi_covers_every_api_route_and_every_ref_resolves(app, client):
    doc = client.get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)
    schemas = doc["components"]["schemas"]
    for ref in re.findall(r'"\$ref": "#/components/schemas/(\w+)"', str(doc).replace("'", '"')):
        assert ref in schemas
    assert {"TaskIn", "TaskOut", "NodeKeyOut", "RunResultIn", "ErrorOut"} <= set(schemas)
    login = doc["paths"]["/api/auth/login"]["post"]
    assert login["security"] == [] and "400" in login["responses"]
    assert doc["paths"]["/api/node/work"]["get"]["security"] == [{"nodeApiKey": []}]


def _path_values(fed, client):
    w = fed.world
    task = client.post(
        "/api/tasks",
        headers=w.as_user("alice"),
        json={"collaboration_id": fed.study, "algorithm": "noop"},
    ).json
    runs = client.get(f"/api/tasks/{task['id']}/runs", headers=w.as_user("alice")).json
    me = client.get("/api/auth/me", headers=w.as_user("alice")).json
    return {
        "collab_id": fed.study,
        "org_id": fed.org_a,
        "node_id": fed.node_a,
        "user_id": me["id"],
        "role_id": me["roles"][0]["id"],
        "task_id": task["id"],
        "run_id": runs[0]["id"],
        "decision_id": 1,  # image decisions: the body is checked before the lookup
    }


def test_bad_bodies_on_every_endpoint_give_400_and_write_nothing(client, fed):
    values = _path_values(fed, client)
    doc = client.get("/api/openapi.json").json
    checked = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if "requestBody" not in op:
                continue
            url = path.format(**values)
            if op["security"] == [{"nodeApiKey": []}]:
                headers = fed.world.as_node("node-a")
            else:
                headers = fed.world.as_user("root")
            before = all_rows(fed.world)
            for body in BAD_BODIES:
                r = client.open(url, method=method.upper(), headers=headers, json=body)
                assert r.status_code == 400, (method, path, body, r.json)
                assert r.json["message"] and "errors" in r.json, (path, r.json)
            r = client.open(
                url,
                method=method.upper(),
                headers=headers,
                data="{not json",
                content_type="application/json",
            )
            assert r.status_code == 400 and r.json["message"], (path, r.json)
            assert all_rows(fed.world) == before, (method, path)
            checked += 1
    assert checked >= 15


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/tasks?limit=0", "limit"),
        ("/api/tasks?status=done", "status"),
        ("/api/nodes?collaboration_id=x", "collaboration_id"),
        ("/api/audit?since=yesterday", "since"),
        ("/api/users?offset=-1", "offset"),
        ("/api/organizations?nope=1", "nope"),
    ],
)
def test_bad_query_strings_give_field_messages(client, fed, url, field):
    r = client.get(url, headers=fed.world.as_user("root"))
    assert r.status_code == 400 and field in r.json["errors"], r.json


def test_field_messages_name_each_bad_field(client, fed):
    r = client.post(
        "/api/users",
        headers=fed.world.as_user("root"),
        json={"username": "bad name!", "password": "short", "organization_id": 0},
    )
    assert r.status_code == 400
    assert set(r.json["errors"]) == {"username", "password", "organization_id"}
    r = client.patch(f"/api/nodes/{fed.node_a}", headers=fed.world.as_user("root"), json={})
    assert r.status_code == 400 and "_schema" in r.json["errors"]


def test_anonymous_callers_get_401_before_any_validation(client, fed):
    r = client.post("/api/tasks", json={"garbage": True})
    assert r.status_code == 401 and r.json == {
        "message": "Log in first: send Authorization: Bearer <access token>."
    }


def test_unknown_routes_and_methods_answer_json(client):
    r = client.get("/api/nothing-here")
    assert r.status_code == 404 and r.json["message"].startswith("No such endpoint")
    r = client.delete("/api/tasks")
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    assert client.get("/api/health").json == {"status": "ok"}


def _bodies(doc, path, method):
    """A plausible body for the endpoint (schema-valid where it is simple)."""
    samples = {
        ("/api/auth/login", "post"): {"username": "alice", "password": "x"},
        ("/api/auth/refresh", "post"): {"refresh_token": "x"},
    }
    return samples.get((path, method), {})


OUTSIDERS = ("carl", "nobody")


def test_every_endpoint_refuses_strangers_anonymous_callers_and_the_wrong_credential(client, fed):
    """The authorisation matrix, in the large: for every endpoint, an anonymous caller
    gets 401, a node key on a user endpoint (and a user token on a node endpoint) gets
    401, and users with no role in the study get no 2xx on anything of the study."""
    values = _path_values(fed, client)
    doc = client.get("/api/openapi.json").json
    w = fed.world
    for path, ops in doc["paths"].items():
        url = path.format(**values)
        for method, op in ops.items():
            body = _bodies(doc, path, method)
            kind = op["security"]
            if kind == []:
                continue
            r = client.open(url, method=method.upper(), json=body)
            assert r.status_code == 401, (method, path, r.status_code)
            wrong = w.as_user("root") if kind == [{"nodeApiKey": []}] else w.as_node("node-a")
            r = client.open(url, method=method.upper(), json=body, headers=wrong)
            assert r.status_code == 401, (method, path, r.status_code)
            if kind != [{"bearerAuth": []}]:
                continue
            scoped = any(k in path for k in ("collab_id", "node_id", "task_id", "run_id"))
            about_alice = "user_id" in path
            if not (scoped or about_alice):
                continue
            for user in OUTSIDERS:
                r = client.open(url, method=method.upper(), json=body, headers=w.as_user(user))
                assert r.status_code in (400, 403, 404), (user, method, path, r.status_code)


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("root", {"collabs": 2, "nodes": 3, "tasks": 1, "audit": True}),
        ("coord", {"collabs": 1, "nodes": 2, "tasks": 1, "audit": True}),
        ("steward_a", {"collabs": 1, "nodes": 2, "tasks": 1, "audit": True}),
        ("admin_a", {"collabs": 1, "nodes": 2, "tasks": 1, "audit": True}),
        ("alice", {"collabs": 1, "nodes": 2, "tasks": 1, "audit": False}),
        ("carl", {"collabs": 1, "nodes": 1, "tasks": 0, "audit": False}),
        ("nobody", {"collabs": 0, "nodes": 0, "tasks": 0, "audit": False}),
    ],
)
def test_what_each_role_sees(client, fed, user, expected):
    client.post(
        "/api/tasks",
        headers=fed.world.as_user("alice"),
        json={"collaboration_id": fed.study, "algorithm": "noop"},
    )
    h = fed.world.as_user(user)
    assert len(client.get("/api/collaborations", headers=h).json) == expected["collabs"]
    assert len(client.get("/api/nodes", headers=h).json) == expected["nodes"]
    assert len(client.get("/api/tasks", headers=h).json) == expected["tasks"]
    events = client.get("/api/audit", headers=h).json
    sees_task_events = any(e["action"] == "task.create" for e in events)
    assert sees_task_events == (expected["audit"] or user == "alice"), events
