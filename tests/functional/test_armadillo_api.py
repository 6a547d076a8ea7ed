"""The Armadillo face over real HTTP and real R: every endpoint, its status codes and the
JSON shapes DSMolgenisArmadillo reads."""

import re
import time

import pytest

from tests.functional.conftest import Armadillo, http_get, make_token
from tests.functional.rds import unserialize

pytestmark = [pytest.mark.r, pytest.mark.slow]

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
TABLE = "demo/cohort/patients"


# ---------------------------------------------------------------- login and info


def test_actuator_info_needs_no_login(gateway):
    r = http_get(f"{gateway.url}/actuator/info")
    assert r.status_code == 200
    assert r.json()["build"]["name"] == "dsgateway"
    assert "auth" not in r.json()  # no oidc configured
    assert http_get(f"{gateway.url}/actuator/health").json() == {"status": "UP"}


def test_select_profile_raw_body_without_content_type(gateway):
    client = Armadillo(gateway.url, "alice")
    # exactly what httr sends: a raw body and no Content-Type
    r = client.http.post(
        f"{gateway.url}/select-profile",
        data=b"default",
        auth=("alice", "alice-pw"),
        headers={"Content-Type": ""},
    )
    assert r.status_code == 204 and r.content == b""
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("JSESSIONID=")
    assert "HttpOnly" in cookie and "Path=/" in cookie and "SameSite=Lax" in cookie
    assert client.symbols() == []
    client.post("/logout")


def test_select_profile_form_content_type_is_not_form_parsed(gateway):
    client = Armadillo(gateway.url, "alice")
    r = client.http.post(
        f"{gateway.url}/select-profile",
        data=b"faults",
        auth=("alice", "alice-pw"),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 204
    assert client.get("/profiles").json() == {
        "available": ["default", "faults"],
        "current": "faults",
    }
    client.post("/logout")


def test_empty_profile_means_default_and_unknown_is_404(gateway):
    client = Armadillo(gateway.url, "alice")
    assert client.login("").status_code == 204
    assert client.get("/profiles").json()["current"] == "default"
    r = client.login("nosuch")
    assert r.status_code == 404
    assert r.json()["message"] == "Profile: nosuch not found"
    client.post("/logout")


def test_each_login_is_a_fresh_session_and_closes_the_previous(gateway, armadillo):
    armadillo.load_table("D", TABLE)
    old_cookie = armadillo.http.cookies["JSESSIONID"]
    assert armadillo.login().status_code == 204
    assert armadillo.http.cookies["JSESSIONID"] != old_cookie
    assert armadillo.symbols() == []
    # the old cookie no longer leads anywhere
    stale = http_get(f"{gateway.url}/symbols", cookies={"JSESSIONID": old_cookie})
    assert stale.status_code == 401


def test_wrong_password_and_no_credentials(gateway):
    r = Armadillo(gateway.url, "alice").login(password="nope")
    assert r.status_code == 401
    assert r.json()["message"] == "Invalid username or password."
    r = http_get(f"{gateway.url}/tables")
    assert r.status_code == 401 and r.json()["message"] == "Authentication required."


def test_unknown_user_gets_the_same_answer(gateway):
    known = Armadillo(gateway.url, "alice").login(password="nope")
    unknown = Armadillo(gateway.url, "mallory").login(password="nope")
    assert known.status_code == unknown.status_code == 401
    assert known.json()["message"] == unknown.json()["message"]


def test_logout_ends_the_session(gateway):
    client = Armadillo(gateway.url, "alice")
    client.login()
    r = client.post("/logout")
    assert r.status_code == 200
    assert client.get("/symbols").status_code == 401


def test_error_body_is_spring_shaped(armadillo):
    r = armadillo.post("/execute", data="nosuchDS(D)", headers={"Content-Type": "text/plain"})
    assert r.status_code == 400
    body = r.json()
    assert set(body) >= {"timestamp", "status", "error", "message", "path"}
    assert body["status"] == 400 and body["error"] == "Bad Request" and body["path"] == "/execute"
    assert body["message"] == "No such DataSHIELD 'AGGREGATE' method with name: nosuchDS"


# ---------------------------------------------------------------- tables


def test_tables_lists_only_readable_projects(gateway):
    alice = Armadillo(gateway.url, "alice")
    alice.login()
    assert alice.get("/tables").json() == ["demo/cohort/labs", "demo/cohort/patients"]
    carol = Armadillo(gateway.url, "carol")
    carol.login()
    assert set(carol.get("/tables").json()) == {
        "demo/cohort/labs",
        "demo/cohort/patients",
        "other/archive/patients",
        "other/cohort/patients",
    }
    for c in (alice, carol):
        c.post("/logout")


def test_head_table(armadillo):
    assert armadillo.head(f"/tables/{TABLE}").status_code == 200
    assert armadillo.head("/tables/demo/cohort/nosuch").status_code == 404
    assert armadillo.head("/tables/other/cohort/patients").status_code == 404  # not hers
    assert armadillo.head("/tables/BAD/cohort/patients").status_code == 404


def test_load_table_async_and_lastcommand_shape(armadillo):
    r = armadillo.post("/load-table", params={"table": TABLE, "symbol": "D", "async": "TRUE"})
    assert r.status_code == 201 and r.content == b""
    assert r.headers["Location"] == "/lastcommand"
    cmd = armadillo.wait()
    assert set(cmd) == {
        "id",
        "expression",
        "withResult",
        "status",
        "createDate",
        "startDate",
        "endDate",
    }
    assert cmd["status"] == "COMPLETED" and cmd["withResult"] is False
    for key in ("createDate", "startDate", "endDate"):
        assert ISO_UTC.match(cmd[key]), cmd[key]
    assert cmd["createDate"] <= cmd["startDate"] <= cmd["endDate"]
    assert armadillo.symbols() == ["D"]
    # an assignment has no value
    assert armadillo.get("/lastresult").status_code == 404


def test_load_table_percent_encoded_and_variables(armadillo):
    r = armadillo.post(
        "/load-table?table=demo%2Fcohort%2Fpatients&symbol=S&async=TRUE&variables=age%2Csex"
    )
    assert r.status_code == 201
    assert armadillo.wait()["status"] == "COMPLETED"
    assert sorted(armadillo.execute('colnamesDS("S")')) == ["age", "sex"]


def test_load_table_sync(armadillo):
    r = armadillo.post("/load-table", params={"table": TABLE, "symbol": "D", "async": "FALSE"})
    assert r.status_code == 200
    assert armadillo.symbols() == ["D"]
    r = armadillo.post("/load-table", params={"table": TABLE, "symbol": "X"})  # default sync
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"table": "demo/cohort/nosuch", "symbol": "D"}, 404, "has no object 'cohort/nosuch'"),
        ({"table": "other/cohort/patients", "symbol": "D"}, 404, "has no object"),
        ({"table": "demo/cohort", "symbol": "D"}, 400, "Invalid table name"),
        ({"table": TABLE, "symbol": "_D"}, 400, "Invalid symbol"),
        ({"table": TABLE}, 400, "Missing symbol"),
        ({"table": TABLE, "symbol": "D", "async": "maybe"}, 400, "TRUE or FALSE"),
        ({"table": TABLE, "symbol": "D", "variables": "age;sex"}, 400, "Invalid variables"),
        ({"table": TABLE, "symbol": "D", "variables": "nosuchcolumn"}, 400, "nosuchcolumn"),
    ],
)
def test_load_table_errors(armadillo, params, status, message):
    r = armadillo.post("/load-table", params=params)
    assert r.status_code == status, r.text
    assert message in r.json()["message"]


def test_resources(armadillo):
    assert armadillo.get("/resources").json() == []
    assert armadillo.head("/resources/demo/folder/res").status_code == 404
    r = armadillo.post(
        "/load-resource", params={"resource": "demo/folder/res", "symbol": "R", "async": "TRUE"}
    )
    assert r.status_code == 404 and "no resources" in r.json()["message"]


# ---------------------------------------------------------------- commands


def test_execute_async_and_lastresult(armadillo):
    armadillo.load_table("D", TABLE)
    r = armadillo.post(
        "/execute",
        params={"async": "TRUE"},
        data="meanDS(D$age)",
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 201 and r.headers["Location"] == "/lastcommand"
    result = armadillo.get("/lastresult", headers={"Accept": "application/octet-stream"})
    assert result.status_code == 200
    assert result.headers["Content-Type"] == "application/octet-stream"
    value = unserialize(result.content)
    assert value["ValidityMessage"] == ["VALID ANALYSIS"] and value["Nvalid"] == [500]
    cmd = armadillo.get("/lastcommand").json()
    assert cmd["status"] == "COMPLETED" and cmd["withResult"] is True
    assert cmd["expression"] == "meanDS(D$age)"
    assert "message" not in cmd


def test_execute_sync_returns_the_bytes(armadillo):
    armadillo.load_table("D", TABLE)
    r = armadillo.post(
        "/execute",
        params={"async": "FALSE"},
        data='dimDS("D")',
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/octet-stream"
    assert unserialize(r.content)[:2] == [500, 11]
    # and it is still the last command, for the client's /lastresult
    again = armadillo.get("/lastresult")
    assert again.status_code == 200 and again.content == r.content


def test_execute_sync_failure_is_500_with_the_message(armadillo):
    r = armadillo.post(
        "/execute",
        params={"async": "FALSE"},
        data="meanDS(nosuch)",
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 500
    assert "nosuch" in r.json()["message"]


def test_bad_expressions_are_refused_at_once(armadillo):
    for body, message in [
        ("nosuchDS(D)", "No such DataSHIELD 'AGGREGATE' method with name: nosuchDS"),
        ("meanDS(D$age[1])", "Error parsing expression"),
        ("D", "Error parsing expression"),
    ]:
        r = armadillo.post(
            "/execute", params={"async": "TRUE"}, data=body, headers={"Content-Type": "text/plain"}
        )
        assert r.status_code == 400, body
        assert message in r.json()["message"], r.json()
    # a refused expression does not become the last command
    assert armadillo.get("/lastcommand").status_code == 404
    r = armadillo.post(
        "/symbols/x",
        params={"async": "TRUE"},
        data="meanDS(D$age)",
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 400
    assert "No such DataSHIELD 'ASSIGN' method with name: meanDS" in r.json()["message"]


def test_failed_command_message_format(armadillo):
    body = armadillo.execute("meanDS(nosuch)")
    assert body["status"] == "FAILED"
    message = body["message"]
    assert message.startswith(
        'Error evaluating: {"status":"400","key":"REvaluationRuntimeException"'
    )
    # the client's parse: the first "{" to the last "}"
    import json

    inner = json.loads(message[message.index("{") : message.rindex("}") + 1])
    assert "nosuch" in inner["message"]
    assert set(body) >= {"id", "expression", "withResult", "status", "createDate", "endDate"}
    assert armadillo.get("/lastresult").status_code == 404


def test_assign_symbol_list_and_delete(armadillo):
    armadillo.load_table("D", TABLE)
    cmd = armadillo.assign("age2", "as.numeric(D$age)")
    assert cmd["status"] == "COMPLETED" and cmd["withResult"] is False
    assert sorted(armadillo.symbols()) == ["D", "age2"]
    assert armadillo.execute('lengthDS("age2")') == [500]
    sync = armadillo.post(
        "/symbols/age3",
        params={"async": "FALSE"},
        data="as.numeric(D$age)",
        headers={"Content-Type": "text/plain"},
    )
    assert sync.status_code == 200
    assert armadillo.delete("/symbols/age2").status_code == 200
    assert armadillo.delete("/symbols/age2").status_code == 200  # gone already: fine
    assert sorted(armadillo.symbols()) == ["D", "age3"]
    assert armadillo.delete("/symbols/_bad").status_code == 400


def test_lastcommand_never_blocks(gateway):
    client = Armadillo(gateway.url, "alice")
    client.login("faults")
    r = client.post(
        "/execute",
        params={"async": "TRUE"},
        data="sleepDS(3)",
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 201
    start = time.monotonic()
    cmd = client.get("/lastcommand").json()
    assert time.monotonic() - start < 1
    assert cmd["status"] in ("PENDING", "IN_PROGRESS")
    result = client.get("/lastresult")  # this one waits
    assert result.status_code == 200 and unserialize(result.content) == [3.0]
    assert time.monotonic() - start > 2
    client.post("/logout")


def test_no_command_yet(armadillo):
    assert armadillo.get("/lastcommand").status_code == 404
    assert armadillo.get("/lastresult").status_code == 404


# ---------------------------------------------------------------- configuration


def test_methods(armadillo):
    aggregate = armadillo.get("/methods/aggregate").json()
    assign = armadillo.get("/methods/assign").json()
    mean = next(m for m in aggregate if m["name"] == "meanDS")
    assert mean == {
        "name": "meanDS",
        "function": "dsGatewayBase::meanDS",
        "package": "dsGatewayBase",
        "version": mean["version"],
    }
    assert any(m["name"] == "as.numeric" and m["function"] == "base::as.numeric" for m in assign)
    assert not any(m["package"] == "dsTestFaults" for m in aggregate)  # not in default
    assert armadillo.get("/methods/nosuch").status_code == 404


def test_packages_and_profiles(armadillo):
    packages = armadillo.get("/packages").json()
    assert [p["name"] for p in packages] == ["dsGatewayBase"]
    assert {"name", "version", "aggregateMethods", "assignMethods"} <= set(packages[0])
    assert armadillo.get("/profiles").json() == {
        "available": ["default", "faults"],
        "current": "default",
    }


# ---------------------------------------------------------------- workspaces


def test_workspaces(gateway, armadillo):
    armadillo.load_table("D", TABLE)
    armadillo.assign("age2", "as.numeric(D$age)")
    r = armadillo.post("/workspaces/api-test_1:a")
    assert r.status_code == 201
    listed = armadillo.get("/workspaces").json()
    entry = next(w for w in listed if w["name"] == "api-test_1:a")
    assert entry["size"] > 0 and ISO_UTC.match(entry["lastModified"])

    fresh = Armadillo(gateway.url, "alice")
    fresh.login()
    assert fresh.symbols() == []
    assert fresh.post("/load-workspace", params={"id": "api-test_1:a"}).status_code == 200
    assert sorted(fresh.symbols()) == ["D", "age2"]
    assert fresh.execute('lengthDS("age2")') == [500]
    assert fresh.post("/load-workspace", params={"id": "nosuch"}).status_code == 404
    assert fresh.post("/load-workspace", params={"id": "../x"}).status_code == 400
    assert fresh.post("/workspaces/bad%20name").status_code == 400

    # bob has his own (empty) list and cannot load alice's
    bob = Armadillo(gateway.url, "bob")
    bob.login()
    assert all(w["name"] != "api-test_1:a" for w in bob.get("/workspaces").json())
    assert bob.post("/load-workspace", params={"id": "api-test_1:a"}).status_code == 404
    assert bob.delete("/workspaces/api-test_1:a").status_code == 200  # a no-op for him
    assert any(w["name"] == "api-test_1:a" for w in armadillo.get("/workspaces").json())

    assert armadillo.delete("/workspaces/api-test_1:a").status_code == 200
    assert all(w["name"] != "api-test_1:a" for w in armadillo.get("/workspaces").json())
    for c in (fresh, bob):
        c.post("/logout")


# ---------------------------------------------------------------- tokens


def test_bearer_token_on_every_call(gateway):
    token = make_token("dave", ["demo"])
    client = Armadillo(gateway.url, token=token)
    assert client.login().status_code == 204
    assert client.get("/tables").json() == ["demo/cohort/labs", "demo/cohort/patients"]
    client.load_table("D", TABLE)
    assert client.execute('classDS("D$sex")') == ["factor"]
    # another user's token with this session's cookie is refused
    other = make_token("erin", ["demo"])
    r = http_get(
        f"{gateway.url}/symbols",
        cookies={"JSESSIONID": client.http.cookies["JSESSIONID"]},
        headers={"Authorization": f"Bearer {other}"},
    )
    assert r.status_code == 401 and "another login" in r.json()["message"]
    client.post("/logout")


def test_bearer_without_session_cookie(gateway):
    r = http_get(
        f"{gateway.url}/symbols",
        headers={"Authorization": f"Bearer {make_token()}"},
    )
    assert r.status_code == 401 and "select a profile first" in r.json()["message"]
    r = http_get(f"{gateway.url}/tables", headers={"Authorization": f"Bearer {make_token()}"})
    assert r.status_code == 200


def test_audit_records_every_call(gateway, armadillo):
    armadillo.load_table("D", TABLE)
    armadillo.execute("meanDS(D$age)")
    armadillo.post("/execute", data="nosuchDS(D)", headers={"Content-Type": "text/plain"})
    entries = gateway.audit(user="alice")
    actions = [(e["action"], e["outcome"]) for e in entries]
    assert ("lastresult", "returned") in actions
    assert ("execute", "refused") in actions
    refused = [e for e in entries if e["action"] == "execute" and e["outcome"] == "refused"]
    assert refused[-1]["expression"] == "nosuchDS(D)"
    assert refused[-1]["status"] == 400 and refused[-1]["face"] == "armadillo"
    returned = [e for e in entries if e["action"] == "lastresult"][-1]
    assert returned["bytes"] > 0 and returned["expression"] == "meanDS(D$age)"
