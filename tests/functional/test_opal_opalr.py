"""The Opal face driven the way R's opalr (under DSOpal) drives Opal, in two respects
found by running the real DSOpal 1.5.0 + opalr 3.5.2 against the gateway:

- credentials only on the login check `GET /ws/system/subject-profile/_current`, then
  every call with nothing but the `opalsid` cookie that answer set (without it every
  call after the login was a 401 and DSOpal reported the tables "not accessible");
- a table is assigned with `PUT .../symbol/{S}`, Content-Type `application/x-opal` and
  the table's name as the body (it was evaluated as R code: "object not found")."""

import base64
import time

import pytest
import requests

from tests.functional.conftest import make_token
from tests.functional.rds import unserialize

pytestmark = [pytest.mark.r]


def opalr_login(gateway, headers) -> requests.Session:
    """A requests.Session keeps cookies as opalr's curl handle does."""
    http = requests.Session()
    r = http.get(f"{gateway.url}/ws/system/subject-profile/_current", headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return http


def basic_opal_auth(user: str, password: str) -> dict:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"X-Opal-Auth {encoded}"}


def test_calls_after_the_login_check_need_only_the_cookie(gateway):
    http = opalr_login(gateway, basic_opal_auth("alice", "alice-pw"))
    sid = http.cookies.get("opalsid")
    assert sid and len(sid) >= 40
    url = f"{gateway.url}/ws"
    # what DSOpal does next, each call with the cookie alone
    table = http.get(f"{url}/datasource/demo/table/cohort.patients", timeout=60)
    assert table.status_code == 200 and table.json()["name"] == "cohort.patients"
    created = http.post(f"{url}/datashield/sessions", params={"wait": "true"}, timeout=60)
    assert created.status_code == 201 and created.json()["user"] == "alice"
    base = f"{url}/datashield/session/{created.json()['id']}"
    r = http.put(f"{base}/symbol/D/table/demo.cohort.patients", params={"async": "false"})
    assert r.status_code in (200, 201), r.text
    r = http.post(
        f"{base}/aggregate",
        params={"async": "false"},
        data='dimDS("D")',
        headers={"Content-Type": "application/x-rscript", "Accept": "application/octet-stream"},
        timeout=60,
    )
    assert r.status_code == 200 and unserialize(r.content)[:2] == [500, 11]
    assert http.delete(base, timeout=60).status_code == 200

    # opalr's logout names the session id; afterwards the cookie opens nothing
    assert http.delete(f"{url}/auth/session/{sid}", timeout=60).status_code == 200
    r = requests.get(f"{url}/datasources", cookies={"opalsid": sid}, timeout=60)
    assert r.status_code == 401 and r.json()["status"] == "Unauthorized"


def test_a_cookie_is_only_as_good_as_its_login(gateway):
    url = f"{gateway.url}/ws"
    # a made-up cookie, and none at all
    r = requests.get(f"{url}/datasources", cookies={"opalsid": "x" * 43}, timeout=60)
    assert r.status_code == 401 and "log in again" in r.json()["message"]
    assert requests.get(f"{url}/datasources", timeout=60).status_code == 401
    # a failed login sets no cookie
    http = requests.Session()
    r = http.get(
        f"{url}/system/subject-profile/_current",
        headers=basic_opal_auth("alice", "wrong"),
        timeout=60,
    )
    assert r.status_code == 401 and "opalsid" not in http.cookies
    # the cookie keeps the login's rights: bob's projects, not alice's
    bob = opalr_login(gateway, basic_opal_auth("bob", "bob-pw"))
    alice = opalr_login(gateway, basic_opal_auth("alice", "alice-pw"))
    bob_tables = bob.get(f"{url}/datasources", timeout=60).json()
    alice_tables = alice.get(f"{url}/datasources", timeout=60).json()
    with_headers = requests.get(
        f"{url}/datasources", headers=basic_opal_auth("bob", "bob-pw"), timeout=60
    ).json()
    assert bob_tables == with_headers
    assert bob_tables != alice_tables


def test_a_token_login_cookie_ends_with_the_token(gateway):
    token = make_token("dave", ["demo"])
    http = opalr_login(gateway, {"X-Opal-Auth": token})
    r = http.get(f"{gateway.url}/ws/datasources", timeout=60)
    assert r.status_code == 200 and [d["name"] for d in r.json()] == ["demo"]
    # already expired, but within the signature check's 30 s leeway: the login check
    # passes, the cookie it sets must not open anything
    stale = make_token("dave", ["demo"], exp=int(time.time()) - 5)
    http = opalr_login(gateway, {"X-Opal-Auth": stale})
    assert http.cookies.get("opalsid")
    r = http.get(f"{gateway.url}/ws/datasources", timeout=60)
    assert r.status_code == 401


def _session(http, url) -> str:
    created = http.post(f"{url}/datashield/sessions", params={"wait": "true"}, timeout=60)
    assert created.status_code == 201
    return f"{url}/datashield/session/{created.json()['id']}"


def _aggregate(http, base, expression):
    r = http.post(
        f"{base}/aggregate",
        params={"async": "false"},
        data=expression,
        headers={"Content-Type": "application/x-rscript", "Accept": "application/octet-stream"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return unserialize(r.content)


def test_dsopal_assigns_a_table_by_name_in_the_body(gateway):
    http = opalr_login(gateway, basic_opal_auth("alice", "alice-pw"))
    url = f"{gateway.url}/ws"
    base = _session(http, url)
    as_opal = {"Content-Type": "application/x-opal"}
    # what DSOpal's datashield.assign.table sends (async, then the command is polled)
    r = http.put(
        f"{base}/symbol/D",
        params={"missings": "false", "async": "true"},
        data="demo.cohort.patients",
        headers=as_opal,
        timeout=60,
    )
    assert r.status_code == 201 and r.text
    cmd = http.get(f"{base}/command/{r.text}", params={"wait": "true"}, timeout=60).json()
    assert cmd["status"] == "COMPLETED"
    assert _aggregate(http, base, 'dimDS("D")')[:2] == [500, 11]
    # with DSOpal's variable filter, synchronously
    r = http.put(
        f"{base}/symbol/S",
        params={"missings": "false", "variables": "name().any('age','sex')", "async": "false"},
        data="demo.cohort.patients",
        headers=as_opal,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    assert sorted(_aggregate(http, base, 'colnamesDS("S")')) == ["age", "sex"]
    # a table alice may not read, and none at all: Opal's 404
    for name in ("other.cohort.patients", "demo.cohort.nosuch"):
        r = http.put(f"{base}/symbol/X", data=name, headers=as_opal, timeout=60)
        assert r.status_code == 404, r.text
        assert r.json()["status"] == "NotFound"
    # the same body as R code (application/x-rscript) is still an expression
    r = http.put(
        f"{base}/symbol/E",
        params={"async": "false"},
        data="demo.cohort.patients",
        headers={"Content-Type": "application/x-rscript"},
        timeout=60,
    )
    assert r.status_code == 400
    assert sorted(http.get(f"{base}/symbols", timeout=60).json()) == ["D", "S"]
