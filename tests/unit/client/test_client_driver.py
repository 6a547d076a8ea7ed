"""gateway.client.ArmadilloDriver over HTTP against a scripted fake Armadillo server (no
R): the requests must be the ones DSMolgenisArmadillo sends (raw-body select-profile
without Content-Type, Basic credentials only at login, Bearer on every call, the
session cookie, async=TRUE, text/plain expressions, /lastcommand polling, /lastresult
as octet-stream), and every failure must surface as the right `ArmadilloError`."""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
from dataclasses import dataclass, field

import pytest
from datashield import DSLoginBuilder, DSSession
from datashield.interface import DSError
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

import gateway.client as client
from algorithms._calls import node_message


def _xdr(*ints: int) -> bytes:
    return struct.pack(f">{len(ints)}i", *ints)


def rds_named_ints(names: list[str], values: list[int]) -> bytes:
    """serialize(c(a = 1L, ...)) written by hand; as a list: list(a = 1L, ...)."""
    out = b"X\n" + _xdr(2, 0x040300, 0x020300)
    out += _xdr(19 | (1 << 9), len(values))
    for v in values:
        out += _xdr(13, 1, v)
    out += _xdr(2 | (1 << 10), 1 | 0) + _xdr(9 | (64 << 12), 5) + b"names"
    out += _xdr(16, len(names))
    for name in names:
        out += _xdr(9 | (64 << 12), len(name)) + name.encode()
    return out + _xdr(254)


@dataclass
class FakeArmadillo:
    """Records every request; answers from `script` (path -> callable(request) ->
    Response) or with the defaults of a happy server."""

    requests: list[dict] = field(default_factory=list)
    script: dict = field(default_factory=dict)
    status: str = "COMPLETED"
    result: bytes = b""
    message: str = ""
    url: str = ""

    def __call__(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "args": dict(request.args),
                "headers": dict(request.headers),
                "body": body,
                "cookie": request.cookies.get("JSESSIONID"),
            }
        )
        handler = self.script.get((request.method, request.path))
        response = handler(request) if handler else self.default(request)
        return response(environ, start_response)

    def default(self, request) -> Response:
        path = request.path
        if path == "/select-profile":
            if request.data.decode() == "missing":
                return Response(json.dumps({"message": "Profile: missing not found"}), 404)
            response = Response(status=204)
            response.set_cookie("JSESSIONID", "cookie-1", path="/")
            return response
        if path in ("/execute", "/load-table") or path.startswith("/symbols/"):
            if request.method == "DELETE":
                return Response(status=200)
            return Response(status=201, headers={"Location": "/lastcommand"})
        if path == "/lastcommand":
            body = {"id": "1", "expression": "x", "withResult": True, "status": self.status}
            if self.status == "FAILED":
                body["message"] = self.message
            return Response(json.dumps(body), mimetype="application/json")
        if path == "/lastresult":
            if self.status == "FAILED" or not self.result:
                return Response(json.dumps({"message": "none"}), 404)
            return Response(self.result, mimetype="application/octet-stream")
        if path == "/methods/aggregate":
            return Response(
                json.dumps(
                    [
                        {
                            "name": "meanDS",
                            "function": "dsBase::meanDS",
                            "package": "dsBase",
                            "version": "6.3.3",
                        }
                    ]
                ),
                mimetype="application/json",
            )
        if path == "/tables":
            return Response(json.dumps(["demo/cohort/patients"]), mimetype="application/json")
        if path == "/symbols":
            return Response(json.dumps(["D"]), mimetype="application/json")
        return Response(status=200)

    def paths(self) -> list[str]:
        return [f"{r['method']} {r['path']}" for r in self.requests]


@pytest.fixture
def fake():
    server_app = FakeArmadillo()
    server = make_server("127.0.0.1", 0, server_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    server_app.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield server_app
    finally:
        server.shutdown()


def test_basic_login_then_cookie_only(fake):
    conn = client.ArmadilloConnection("n1", fake.url, user="alice", password="pw")
    login = fake.requests[0]
    assert (login["method"], login["path"]) == ("POST", "/select-profile")
    assert login["body"] == b"default"  # raw body
    assert "Content-Type" not in login["headers"]
    expected = "Basic " + base64.b64encode(b"alice:pw").decode()
    assert login["headers"]["Authorization"] == expected

    fake.result = rds_named_ints(["a", "b"], [1, 2])
    value = conn.aggregate("meanDS(D$age)", asynchronous=False).fetch()
    assert value == {"a": 1, "b": 2}
    execute, result = fake.requests[1], fake.requests[2]
    assert (execute["method"], execute["path"], execute["args"]) == (
        "POST",
        "/execute",
        {"async": "TRUE"},
    )
    assert execute["body"] == b"meanDS(D$age)"
    assert execute["headers"]["Content-Type"].startswith("text/plain")
    assert (result["method"], result["path"]) == ("GET", "/lastresult")
    assert result["headers"]["Accept"] == "application/octet-stream"
    for later in fake.requests[1:]:
        assert "Authorization" not in later["headers"]  # the cookie alone
        assert later["cookie"] == "cookie-1"
    conn.disconnect()
    assert fake.paths()[-1] == "POST /logout"
    with pytest.raises(client.ArmadilloError, match="closed"):
        conn.list_symbols()


def test_token_is_sent_on_every_call(fake):
    conn = client.ArmadilloConnection("n1", fake.url, token="jwt-123", profile="")
    assert fake.requests[0]["body"] == b"default"
    conn.list_symbols()
    conn.assign_expr("x", "c(1, 2)", asynchronous=False)
    for request in fake.requests:
        assert request["headers"]["Authorization"] == "Bearer jwt-123"
    assign = fake.requests[2]
    assert (assign["path"], assign["args"], assign["body"]) == (
        "/symbols/x",
        {"async": "TRUE"},
        b"c(1, 2)",
    )


def test_asynchronous_results_poll_lastcommand(fake):
    conn = client.ArmadilloConnection("n1", fake.url, user="alice", password="pw")
    fake.status = "IN_PROGRESS"
    fake.result = rds_named_ints(["n"], [7])
    result = conn.aggregate("dimDS('D')")
    assert not result.is_completed()
    fake.status = "COMPLETED"
    assert result.is_completed()
    assert result.fetch() == {"n": 7}
    assert result.fetch() == {"n": 7}  # kept: no second request
    assert fake.paths().count("GET /lastresult") == 1
    assert result.fetch_r().names == ["n"]
    # a new command makes an older, unfetched result unreadable
    stale = conn.aggregate("dimDS('D')")
    conn.aggregate("dimDS('D')")
    with pytest.raises(client.ArmadilloError, match="another command"):
        stale.is_completed()


def test_failed_command_raises_the_nodes_message(fake):
    conn = client.ArmadilloConnection("n1", fake.url, user="alice", password="pw")
    fake.status = "FAILED"
    inner = "Error in dsBase::meanDS(D$x) : FAILED: Nvalid less than nfilter.tab"
    fake.message = "Error evaluating: " + json.dumps(
        {"status": "400", "key": "REvaluationRuntimeException", "message": inner}
    )
    with pytest.raises(client.CommandFailed) as caught:
        conn.aggregate("meanDS(D$x)", asynchronous=False)
    error = caught.value
    assert error.message == inner
    assert error.node == "n1"
    assert error.get_error()["message"] == inner
    assert isinstance(error, DSError)
    assert node_message(error) == "FAILED: Nvalid less than nfilter.tab"
    # an assignment that failed, fetched later
    result = conn.assign_expr("y", "log(D$x)")
    with pytest.raises(client.CommandFailed):
        result.fetch()


def test_assign_table_names_and_variables(fake):
    conn = client.ArmadilloConnection("n1", fake.url, user="alice", password="pw")
    conn.assign_table("D", "demo.cohort.patients", variables=["age", "sex"], asynchronous=False)
    load = next(r for r in fake.requests if r["path"] == "/load-table")
    assert load["args"] == {
        "table": "demo/cohort/patients",
        "symbol": "D",
        "variables": "age,sex",
        "async": "TRUE",
    }
    assert load["body"] == b""
    conn.assign_table("E", "demo.patients", asynchronous=False)  # project.table: looked up
    assert [r for r in fake.requests if r["path"] == "/load-table"][-1]["args"][
        "table"
    ] == "demo/cohort/patients"
    with pytest.raises(client.NotFound):
        conn.assign_table("F", "demo.nothing")
    assert conn.has_table("demo/cohort/patients")
    assert conn.list_tables() == ["demo/cohort/patients"]
    with pytest.raises(client.UnsupportedOperation):
        conn.list_table_variables("demo/cohort/patients")


def test_error_statuses_map_to_the_exception_tree(fake):
    fake.script[("POST", "/select-profile")] = lambda r: Response(
        json.dumps({"message": "bad credentials"}), 401
    )
    with pytest.raises(client.AuthenticationError) as caught:
        client.ArmadilloConnection("n1", fake.url, user="alice", password="wrong")
    assert caught.value.status == 401 and caught.value.is_client_error()
    del fake.script[("POST", "/select-profile")]

    with pytest.raises(client.NotFound, match="Profile not found: 'missing'"):
        client.ArmadilloConnection("n1", fake.url, user="alice", password="pw", profile="missing")

    conn = client.ArmadilloConnection("n1", fake.url, user="alice", password="pw")
    fake.script[("POST", "/execute")] = lambda r: Response(
        json.dumps({"message": "No such DataSHIELD 'AGGREGATE' method with name: foo"}), 400
    )
    with pytest.raises(client.BadRequest) as caught:
        conn.aggregate("foo(D)")
    assert str(caught.value) == "Bad request: No such DataSHIELD 'AGGREGATE' method with name: foo"
    # the server's own words, as the other drivers give them
    assert caught.value.get_error()["message"] == (
        "No such DataSHIELD 'AGGREGATE' method with name: foo"
    )
    assert node_message(caught.value) == "No such DataSHIELD 'AGGREGATE' method with name: foo"
    fake.script[("POST", "/execute")] = lambda r: Response("boom", 500)
    with pytest.raises(client.ServerError) as caught:
        conn.aggregate("meanDS(D$x)")
    assert caught.value.is_server_error() and "boom" in str(caught.value)
    fake.script[("GET", "/symbols")] = lambda r: Response("no", 403)
    with pytest.raises(client.AccessDenied):
        conn.list_symbols()
    fake.script[("GET", "/symbols")] = lambda r: Response("not json", 200)
    with pytest.raises(client.ProtocolError):
        conn.list_symbols()
    fake.script[("POST", "/execute")] = lambda r: Response(status=201)
    fake.script[("GET", "/lastresult")] = lambda r: Response(b"X\n\0\0", 200)
    with pytest.raises(client.RDSError):
        conn.aggregate("meanDS(D$x)", asynchronous=False)


def test_unreachable_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(client.ConnectionFailed):
        client.ArmadilloConnection("n1", f"http://127.0.0.1:{port}", user="a", password="b")
    with pytest.raises(ValueError, match="http"):
        client.ArmadilloConnection("n1", "ftp://x", user="a", password="b")
    with pytest.raises(ValueError, match="password"):
        client.ArmadilloConnection("n1", "http://x", user="a")


def test_driver_by_name_in_a_datashield_session(fake):
    fake.result = rds_named_ints(["a"], [3])
    logins = (
        DSLoginBuilder()
        .add("n1", fake.url, user="alice", password="pw", driver="gateway.client.ArmadilloDriver")
        .add("n2", fake.url, token="t", driver="gateway.client.ArmadilloDriver")
        .build()
    )
    session = DSSession(logins)
    session.open(restore="ws1")
    try:
        assert fake.paths().count("POST /load-workspace") == 2
        restore = next(r for r in fake.requests if r["path"] == "/load-workspace")
        assert restore["args"] == {"id": "ws1"}
        assert session.aggregate("meanDS(D$x)") == {"n1": {"a": 3}, "n2": {"a": 3}}
        assert session.ls() == {"n1": ["D"], "n2": ["D"]}
        assert set(session.sessions()) == {"n1", "n2"}
        methods = session.methods()["n1"]
        assert methods == [
            {
                "name": "meanDS",
                "class": "func",
                "value": "dsBase::meanDS",
                "pkg": "dsBase",
                "version": "6.3.3",
            }
        ]
    finally:
        session.close()
    assert fake.paths().count("POST /logout") == 2
