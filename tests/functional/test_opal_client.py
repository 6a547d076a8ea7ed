"""The Opal face driven by the real, unchanged Python clients: `datashield` (DSSession)
with the `datashield-opal` driver (over obiba-opal), against a real gateway."""

import pytest
import requests
from datashield import DSLoginBuilder, DSSession
from datashield.interface import DSError

from tests.functional.conftest import http_get, make_token
from tests.functional.rds import unserialize

pytestmark = [pytest.mark.r, pytest.mark.slow]


def open_session(gateway, user="alice", password=None, token=None, profile="default"):
    builder = DSLoginBuilder()
    if token:
        builder.add("node1", gateway.url, token=token, profile=profile)
    else:
        builder.add("node1", gateway.url, user, password or f"{user}-pw", profile=profile)
    session = DSSession(builder.build())
    session.open()
    return session


@pytest.fixture
def ds(gateway):
    session = open_session(gateway)
    yield session
    session.close()


def test_login_and_listing(ds):
    assert ds.tables() == {"node1": ["demo.cohort.labs", "demo.cohort.patients"]}
    assert ds.profiles() == {"node1": {"available": ["default", "faults"], "current": "default"}}
    assert ds.resources() == {"node1": []}
    conn = ds.conns[0]
    assert conn.has_table("demo.patients")  # the short name, unique in its project
    assert conn.has_table("demo.cohort.patients") is False  # the client keeps "demo.cohort"
    assert not conn.has_table("demo.nosuch")
    variables = ds.variables("demo.patients")["node1"]
    assert [v["name"] for v in variables][:3] == ["id", "age", "sex"]
    types = {v["name"]: v["valueType"] for v in variables}
    assert types["age"] == "decimal" and types["id"] == "integer" and types["smoker"] == "boolean"


def test_wrong_password_fails_to_open(gateway):
    with pytest.raises(DSError, match="Failed to authenticate"):
        open_session(gateway, password="wrong")


def test_assign_aggregate_symbols(ds):
    ds.assign_table("D", "demo.cohort.patients")
    ds.assign_table("S", "demo.patients", variables=["age", "sex"])
    assert sorted(ds.ls()["node1"]) == ["D", "S"]
    mean = ds.aggregate("meanDS(D$age)")["node1"]
    assert mean["Nvalid"] == 500 and mean["ValidityMessage"] == "VALID ANALYSIS"
    assert isinstance(mean["EstimatedMean"], float)
    assert ds.aggregate('dimDS("D")')["node1"][:2] == [500, 11]
    assert sorted(ds.aggregate('colnamesDS("S")')["node1"]) == ["age", "sex"]
    assert ds.aggregate('classDS("D$sex")') == {"node1": "factor"}
    sync = ds.aggregate("meanDS(D$age)", asynchronous=False)["node1"]
    assert sync == mean

    ds.assign_expr("age2", "as.numeric(D$age)")
    assert ds.aggregate('lengthDS("age2")') == {"node1": 500}
    ds.assign_expr("age3", "as.numeric(D$age)", asynchronous=False)
    assert sorted(ds.ls()["node1"]) == ["D", "S", "age2", "age3"]
    ds.rm("age2")
    ds.rm("nosuch")  # Opal ignores a missing symbol
    assert sorted(ds.ls()["node1"]) == ["D", "S", "age3"]


def test_methods_and_packages(ds):
    methods = ds.methods("aggregate")["node1"]
    mean = next(m for m in methods if m["name"] == "meanDS")
    assert mean["class"] == "func" and mean["value"] == "dsGatewayBase::meanDS"
    assert mean["pkg"] == "dsGatewayBase"
    assign = ds.methods("assign")["node1"]
    assert any(m["name"] == "as.numeric" for m in assign)
    assert [p["pkg"] for p in ds.packages()["node1"]] == ["dsGatewayBase"]


def test_refused_expression_is_surfaced(ds):
    ds.assign_table("D", "demo.cohort.patients")
    with pytest.raises(DSError):
        ds.aggregate("nosuchDS(D)")
    error = ds.get_errors()["node1"]
    assert error.is_client_error()
    assert error.get_error()["status"] == "DataShieldParseError"
    assert error.get_error()["arguments"] == [
        "No such DataSHIELD 'AGGREGATE' method with name: nosuchDS"
    ]
    with pytest.raises(DSError):
        ds.assign_expr("x", "meanDS(D$age)")
    assert "ASSIGN" in ds.get_errors()["node1"].get_error()["message"]
    with pytest.raises(DSError):
        ds.aggregate("meanDS(D$age[1])")
    assert "parsing" in ds.get_errors()["node1"].get_error()["message"]


def test_r_error_is_surfaced(ds):
    with pytest.raises(DSError):
        ds.aggregate("meanDS(nosuch)")
    assert "nosuch" in str(ds.get_errors()["node1"])
    with pytest.raises(DSError):
        ds.aggregate("meanDS(nosuch)", asynchronous=False)
    error = ds.get_errors()["node1"].get_error()
    assert error["status"] == "RServerRuntimeError" and "nosuch" in error["arguments"][0]


def test_unreadable_and_unknown_tables(gateway, ds):
    with pytest.raises(DSError):
        ds.assign_table("D", "other.cohort.patients")  # alice cannot read "other"
    assert ds.get_errors()["node1"].get_error()["code"] == 404
    with pytest.raises(DSError):
        ds.assign_table("D", "demo.nosuch")
    bob = open_session(gateway, "bob")
    try:
        with pytest.raises(DSError):
            bob.assign_table("D", "other.patients")  # in two folders: ambiguous
        assert "ambiguous" in bob.get_errors()["node1"].get_error()["message"]
        bob.assign_table("D", "other.archive.patients")
        assert bob.aggregate('dimDS("D")')["node1"][0] == 500
    finally:
        bob.close()


def test_workspaces(gateway, ds):
    ds.assign_table("D", "demo.cohort.patients")
    ds.workspace_save("py-ws")
    names = [w["name"] for w in ds.workspaces()["node1"]]
    assert "node1:py-ws" in names
    entry = next(w for w in ds.workspaces()["node1"] if w["name"] == "node1:py-ws")
    assert entry["user"] == "alice" and entry["context"] == "DataSHIELD" and entry["size"] > 0

    other = open_session(gateway)
    try:
        assert other.ls()["node1"] == []
        other.workspace_restore("py-ws")
        assert other.ls()["node1"] == ["D"]
        assert other.aggregate('dimDS("D")')["node1"][0] == 500
    finally:
        other.close()
    ds.workspace_rm("py-ws")
    assert "node1:py-ws" not in [w["name"] for w in ds.workspaces()["node1"]]


def test_token_login(gateway):
    session = open_session(gateway, token=make_token("dave", ["demo"]))
    try:
        assert session.tables() == {"node1": ["demo.cohort.labs", "demo.cohort.patients"]}
        session.assign_table("D", "demo.cohort.patients")
        assert session.aggregate('classDS("D$sex")') == {"node1": "factor"}
    finally:
        session.close()
    with pytest.raises(DSError):
        open_session(gateway, token=make_token("dave", ["demo"], secret="x" * 40))


def test_profile_choice(gateway):
    session = open_session(gateway, profile="faults")
    try:
        assert session.aggregate("pidDS()")["node1"] > 0
    finally:
        session.close()
    plain = open_session(gateway)
    try:
        with pytest.raises(DSError):
            plain.aggregate("pidDS()")
    finally:
        plain.close()


def test_session_resources_directly(gateway):
    """What opalr (R DSOpal) asks for and the Python client does not."""
    auth = ("alice", "alice-pw")
    url = f"{gateway.url}/ws"
    created = requests.post(f"{url}/datashield/sessions", auth=auth, timeout=60)
    assert created.status_code == 201
    assert created.headers["X-Opal-Version"]
    session = created.json()
    assert session["state"] == "RUNNING" and session["context"] == "DataSHIELD"
    assert session["user"] == "alice" and session["profile"] == "default"
    sid = session["id"]
    assert created.headers["Location"].endswith(f"/ws/datashield/session/{sid}")
    base = f"{url}/datashield/session/{sid}"

    r = requests.put(
        f"{base}/symbol/D/table/demo.cohort.patients",
        params={"async": "true"},
        auth=auth,
        timeout=60,
    )
    assert r.status_code == 201 and r.text  # the command id
    cmd = http_get(f"{base}/command/{r.text}", params={"wait": "true"}, auth=auth).json()
    assert cmd["status"] == "COMPLETED" and cmd["withResult"] is False
    assert {"id", "script", "status", "createDate", "withResult", "endDate"} <= set(cmd)

    # DSOpal asks for binary results and symbols
    r = requests.post(
        f"{base}/aggregate",
        params={"async": "true"},
        data='dimDS("D")',
        auth=auth,
        headers={"Content-Type": "application/x-rscript", "Accept": "application/octet-stream"},
        timeout=60,
    )
    assert r.status_code == 200
    rid = r.text
    result = http_get(
        f"{base}/command/{rid}/result",
        params={"wait": "true"},
        auth=auth,
        headers={"Accept": "application/octet-stream"},
    )
    assert result.headers["Content-Type"] == "application/octet-stream"
    assert unserialize(result.content)[:2] == [500, 11]
    symbols = http_get(f"{base}/symbols", auth=auth, headers={"Accept": "application/octet-stream"})
    assert unserialize(symbols.content) == ["D"]
    assert http_get(f"{base}/symbols", auth=auth).json() == ["D"]
    # reading a symbol's value is not DataSHIELD
    assert http_get(f"{base}/symbol/D", auth=auth).status_code == 403
    commands = http_get(f"{base}/commands", auth=auth).json()
    assert all("status" in c for c in commands)
    # opalr's Authorization form
    import base64

    opalr = {"Authorization": "X-Opal-Auth " + base64.b64encode(b"alice:alice-pw").decode()}
    assert http_get(f"{base}", headers=opalr).json()["id"] == sid
    assert http_get(f"{url}/datashield/sessions", auth=auth).json()[0]["id"]
    assert requests.delete(base, auth=auth, timeout=60).status_code == 200
    assert http_get(base, auth=auth).status_code == 404


def test_opal_error_shape_for_opalr(gateway):
    r = http_get(f"{gateway.url}/ws/datasource/demo/table/nosuch", auth=("alice", "alice-pw"))
    assert r.status_code == 404
    assert r.json()["code"] == 404 and r.json()["status"] == "NotFound"
    assert r.json()["arguments"] == ["No such table 'demo.nosuch'"]
    r = http_get(f"{gateway.url}/ws/datasources")
    assert r.status_code == 401 and r.json()["status"] == "Unauthorized"
    profiles = http_get(f"{gateway.url}/ws/datashield/profiles", auth=("alice", "alice-pw")).json()
    assert profiles[0] == {
        "name": "default",
        "cluster": "default",
        "enabled": True,
        "restrictedAccess": False,
        "rParser": "v2",
    }
    subject = http_get(
        f"{gateway.url}/ws/system/subject-profile/_current", auth=("alice", "alice-pw")
    ).json()
    assert subject["principal"] == "alice"
