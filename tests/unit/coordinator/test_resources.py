"""Organisations, users, roles, collaborations and nodes through the API, with who may
do what (the authorisation matrix) and what a stranger to a collaboration sees."""

import pytest

from gateway.coordinator.models import AuditEvent, Collaboration, Node, Organization, Role, User


def test_superuser_builds_a_collaboration(client, fed):
    w = fed.world
    root = w.as_user("root")
    r = client.post("/api/organizations", headers=root, json={"name": "Clinic D"})
    assert r.status_code == 201, r.json
    org_d = r.json["id"]
    r = client.post(
        "/api/collaborations",
        headers=root,
        json={"name": "trial", "organization_ids": [fed.org_a, org_d]},
    )
    assert r.status_code == 201, r.json
    collab = r.json
    assert collab["organization_ids"] == sorted([fed.org_a, org_d])
    r = client.post(
        "/api/nodes",
        headers=root,
        json={"organization_id": org_d, "collaboration_id": collab["id"], "projects": ["demo"]},
    )
    assert r.status_code == 201, r.json
    node = r.json
    assert node["api_key"].startswith("dsg_") and node["api_key"][:8] == node["api_key_prefix"]
    assert node["online"] is False and node["audience"] == node["name"]
    # The key works for the node link, and is never shown again.
    me = client.get("/api/node/me", headers={"X-Api-Key": node["api_key"]})
    assert me.status_code == 200 and me.json["id"] == node["id"] and me.json["online"] is True
    assert "api_key" not in client.get(f"/api/nodes/{node['id']}", headers=root).json
    # A second node of the same organisation in the same collaboration is a conflict.
    again = client.post(
        "/api/nodes",
        headers=root,
        json={"organization_id": org_d, "collaboration_id": collab["id"], "name": "other-name"},
    )
    assert again.status_code == 409
    assert fed.world.count(Node) == 4


def test_only_the_superuser_creates_organisations_and_collaborations(client, fed):
    w = fed.world
    for user in ("alice", "admin_a", "coord", "steward_a", "nobody"):
        r = client.post("/api/organizations", headers=w.as_user(user), json={"name": "X"})
        assert r.status_code == 403, user
        r = client.post("/api/collaborations", headers=w.as_user(user), json={"name": "X"})
        assert r.status_code == 403, user
    assert w.count(Organization) == 3 and w.count(Collaboration) == 2


def test_a_researcher_of_one_collaboration_sees_nothing_of_another(client, fed):
    w = fed.world
    carl = w.as_user("carl")  # researcher in `other` (through Registry C)
    collabs = client.get("/api/collaborations", headers=carl).json
    assert [c["id"] for c in collabs] == [fed.other]
    assert client.get(f"/api/collaborations/{fed.study}", headers=carl).status_code == 404
    nodes = client.get("/api/nodes", headers=carl).json
    assert [n["id"] for n in nodes] == [fed.node_c]
    assert client.get(f"/api/nodes/{fed.node_a}", headers=carl).status_code == 404
    orgs = {o["name"] for o in client.get("/api/organizations", headers=carl).json}
    assert orgs == {"Registry C"}
    assert client.get(f"/api/organizations/{fed.org_a}", headers=carl).status_code == 404
    # Alice's task in the study: invisible to carl, and so are its runs and result.
    task = client.post(
        "/api/tasks",
        headers=w.as_user("alice"),
        json={"collaboration_id": fed.study, "algorithm": "noop"},
    ).json
    assert client.get("/api/tasks", headers=carl).json == []
    assert client.get(f"/api/tasks/{task['id']}", headers=carl).status_code == 404
    assert client.get(f"/api/tasks/{task['id']}/runs", headers=carl).status_code == 404
    assert client.get(f"/api/tasks/{task['id']}/result", headers=carl).status_code == 404
    assert client.post(f"/api/tasks/{task['id']}/cancel", headers=carl).status_code == 404
    runs = client.get(f"/api/tasks/{task['id']}/runs", headers=w.as_user("alice")).json
    assert client.get(f"/api/runs/{runs[0]['id']}", headers=carl).status_code == 404
    r = client.post(
        "/api/tasks", headers=carl, json={"collaboration_id": fed.study, "algorithm": "noop"}
    )
    assert r.status_code == 404
    r = client.post("/api/auth/relay-token", headers=carl, json={"node_id": fed.node_a})
    assert r.status_code == 404
    events = client.get("/api/audit", headers=carl).json
    assert all(e["collaboration_id"] != fed.study for e in events)
    # And a user without any role sees nothing at all.
    nobody = w.as_user("nobody")
    assert client.get("/api/collaborations", headers=nobody).json == []
    assert client.get("/api/nodes", headers=nobody).json == []
    assert client.get("/api/tasks", headers=nobody).json == []


@pytest.mark.parametrize(
    ("user", "status"),
    [
        ("root", 200),
        ("coord", 200),
        ("steward_a", 200),
        ("admin_a", 200),
        ("alice", 403),
        ("carl", 404),
        ("nobody", 404),
    ],
)
def test_who_may_edit_node_a(client, fed, user, status):
    r = client.patch(
        f"/api/nodes/{fed.node_a}",
        headers=fed.world.as_user(user),
        json={"projects": ["demo", "extra"]},
    )
    assert r.status_code == status, r.json
    if status == 200:
        assert r.json["projects"] == ["demo", "extra"]


def test_a_data_steward_manages_only_her_organisations_node(client, fed):
    steward = fed.world.as_user("steward_a")
    assert (
        client.patch(f"/api/nodes/{fed.node_b}", headers=steward, json={"projects": []}).status_code
        == 403
    )
    assert client.post(f"/api/nodes/{fed.node_b}/api-key", headers=steward).status_code == 403
    old = fed.world.keys["node-a"]
    r = client.post(f"/api/nodes/{fed.node_a}/api-key", headers=steward)
    assert r.status_code == 200 and r.json["api_key"] != old
    assert client.get("/api/node/me", headers={"X-Api-Key": old}).status_code == 401
    assert client.get("/api/node/me", headers={"X-Api-Key": r.json["api_key"]}).status_code == 200


def test_collaboration_admin_manages_membership_and_nodes(client, fed):
    w = fed.world
    coord, alice = w.as_user("coord"), w.as_user("alice")
    body = {"organization_id": fed.org_c}
    r = client.post(f"/api/collaborations/{fed.study}/organizations", headers=alice, json=body)
    assert r.status_code == 403
    r = client.post(f"/api/collaborations/{fed.study}/organizations", headers=coord, json=body)
    assert r.status_code == 201 and fed.org_c in r.json["organization_ids"]
    r = client.post(f"/api/collaborations/{fed.study}/organizations", headers=coord, json=body)
    assert r.status_code == 409
    r = client.post(
        "/api/nodes",
        headers=coord,
        json={"organization_id": fed.org_c, "collaboration_id": fed.study},
    )
    assert r.status_code == 201
    # Not in a collaboration she does not administer.
    r = client.post(
        "/api/nodes",
        headers=coord,
        json={"organization_id": fed.org_c, "collaboration_id": fed.other, "name": "x"},
    )
    assert r.status_code == 404
    # Removing a member with a node is refused; the node must go first.
    url = f"/api/collaborations/{fed.study}/organizations/{fed.org_c}"
    assert client.delete(url, headers=coord).status_code == 409
    node_id = next(
        n for n in client.get("/api/nodes", headers=coord).json if n["organization_id"] == fed.org_c
    )["id"]
    assert client.delete(f"/api/nodes/{node_id}", headers=coord).status_code == 204
    assert client.delete(url, headers=coord).status_code == 204
    r = client.patch(f"/api/collaborations/{fed.study}", headers=coord, json={"name": "Study"})
    assert r.status_code == 200 and r.json["name"] == "Study"
    r = client.patch(f"/api/collaborations/{fed.study}", headers=alice, json={"name": "x"})
    assert r.status_code == 403


def test_organisation_admin_manages_her_users_and_their_roles(client, fed):
    w = fed.world
    admin_a = w.as_user("admin_a")
    r = client.post(
        "/api/users",
        headers=admin_a,
        json={"username": "bea", "password": "long enough", "organization_id": fed.org_a},
    )
    assert r.status_code == 201, r.json
    bea = r.json["id"]
    r = client.post(
        "/api/users",
        headers=admin_a,
        json={"username": "eve", "password": "long enough", "organization_id": fed.org_b},
    )
    assert r.status_code == 403
    names = {u["username"] for u in client.get("/api/users", headers=admin_a).json}
    assert names == {"root", "alice", "steward_a", "admin_a", "bea"}
    # Roles over her organisation (and its collaborations), to its users only.
    grant = {"name": "researcher", "organization_id": fed.org_a}
    r = client.post(f"/api/users/{bea}/roles", headers=admin_a, json=grant)
    assert r.status_code == 201, r.json
    assert client.post(f"/api/users/{bea}/roles", headers=admin_a, json=grant).status_code == 409
    r = client.post(f"/api/users/{bea}/roles", headers=admin_a, json={"name": "admin"})
    assert r.status_code == 403
    nobody = client.get("/api/auth/me", headers=w.as_user("nobody")).json["id"]
    r = client.post(f"/api/users/{nobody}/roles", headers=admin_a, json=grant)
    assert r.status_code == 403
    # bea now sees the study (Hospital A is a member) and may run tasks in it.
    bea_h = w.as_user("bea")
    assert [c["id"] for c in client.get("/api/collaborations", headers=bea_h).json] == [fed.study]
    role_id = client.get(f"/api/users/{bea}", headers=admin_a).json["roles"][0]["id"]
    assert client.delete(f"/api/users/{bea}/roles/{role_id}", headers=admin_a).status_code == 204
    assert client.get("/api/collaborations", headers=w.as_user("bea")).json == []
    # Users outside her organisation are not hers to see, edit or delete.
    assert client.get(f"/api/users/{nobody}", headers=admin_a).status_code == 404
    assert client.delete(f"/api/users/{bea}", headers=w.as_user("alice")).status_code == 404
    assert client.delete(f"/api/users/{bea}", headers=admin_a).status_code == 204
    assert w.count(User) == 7


def test_a_user_sees_and_edits_only_herself(client, fed):
    alice = fed.world.as_user("alice")
    users = client.get("/api/users", headers=alice).json
    assert [u["username"] for u in users] == ["alice"]
    me = users[0]["id"]
    r = client.patch(f"/api/users/{me}", headers=alice, json={"email": "alice@example.org"})
    assert r.status_code == 200 and r.json["email"] == "alice@example.org"
    r = client.patch(f"/api/users/{me}", headers=alice, json={"active": False})
    assert r.status_code == 403


def test_data_steward_roles_need_an_organisation(client, fed):
    root = fed.world.as_user("root")
    nobody = client.get("/api/auth/me", headers=fed.world.as_user("nobody")).json["id"]
    r = client.post(
        f"/api/users/{nobody}/roles",
        headers=root,
        json={"name": "data_steward", "collaboration_id": fed.study},
    )
    assert r.status_code == 400
    r = client.post(
        f"/api/users/{nobody}/roles",
        headers=root,
        json={"name": "data_steward", "organization_id": fed.org_c, "collaboration_id": fed.study},
    )
    assert r.status_code == 400  # C is not a member of the study
    assert fed.world.count(Role) == 6


def test_every_change_is_audited_in_its_collaboration(client, fed):
    coord = fed.world.as_user("coord")
    client.patch(f"/api/collaborations/{fed.study}", headers=coord, json={"description": "d"})
    events = client.get(
        "/api/audit", headers=coord, query_string={"action": "collaboration.update"}
    ).json
    assert len(events) == 1
    e = events[0]
    assert e["actor_name"] == "coord" and e["collaboration_id"] == fed.study
    assert e["detail"] == {"fields": ["description"]}
    # A researcher reads only her own actions; a steward reads her collaboration's.
    assert client.get("/api/audit", headers=fed.world.as_user("alice")).json == []
    steward_events = client.get("/api/audit", headers=fed.world.as_user("steward_a")).json
    assert [x["id"] for x in steward_events] == [e["id"]]
    assert fed.world.count(AuditEvent) == 1
