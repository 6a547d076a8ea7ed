"""The relay's Opal face driven as R's opalr drives Opal: the relay token only on the
login check, then nothing but cookies. The relay sets its own session cookie
(gateway/coordinator/relay/cookie.py: the token, sealed, for one node's prefix), and a
call with only that cookie is checked exactly as one with the token.

Real parts: a coordinator (API and relay listener on ports of their own), two node
agents' relay loops and the session's real gateway (R) behind both nodes. The opalr-like
client is a requests.Session, which keeps and sends cookies by path as opalr's curl
handle does. With DSGATEWAY_REAL_R_LIB (test_real_r_clients.py), also the real
DSI + DSOpal + opalr + dsBaseClient through the relay (test_relay_dsopal.R)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pandas as pd
import pytest
import requests

from gateway.agent.config import Policy
from gateway.coordinator import db
from gateway.coordinator.relay.app import (
    _node_cookie_path,
    _without_relay_cookie,
)
from gateway.coordinator.relay.cookie import COOKIE, CookieSealer
from tests.functional.conftest import AUDIENCE, TOKEN_SECRET
from tests.functional.rds import unserialize
from tests.functional.rscript import run_r_script
from tests.functional.stack import relay_token, relay_world, remove_roles

pytestmark = [pytest.mark.slow, pytest.mark.r]

SECRET_KEY = "relay-cookie-tests-" + "k" * 40
R_SCRIPT = Path(__file__).with_name("test_relay_dsopal.R")
RSCRIPT = {"Content-Type": "application/x-rscript", "Accept": "application/octet-stream"}


@pytest.fixture(scope="module")
def relay(tmp_path_factory, gateway):
    def federation(world):
        orgs = [world.org(f"Hospital {c}") for c in "AB"]
        world.study = world.collaboration("study", *orgs)
        world.node_a = world.node("node-a", orgs[0], world.study)
        world.node_b = world.node("node-b", orgs[1], world.study)
        world.user("alice", orgs[0], ("researcher", None, world.study))
        world.user("bob", orgs[0], ("researcher", None, world.study))
        return {"node-a": Policy(), "node-b": Policy()}

    tmp = tmp_path_factory.mktemp("relay-cookie")
    with relay_world(tmp, SECRET_KEY, gateway.url, federation) as world:
        yield world


def base_of(world, node_id: int) -> str:
    return f"{world.listener.url}/nodes/{node_id}/ws"


def opalr_login(world, node_id: int, token: str) -> tuple[requests.Session, requests.Response]:
    """opalr's login check: the token as X-Opal-Auth, once; the session keeps the cookies."""
    http = requests.Session()
    r = http.get(
        f"{base_of(world, node_id)}/system/subject-profile/_current",
        headers={"X-Opal-Auth": token},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return http, r


def set_cookies(response: requests.Response) -> dict[str, str]:
    """name -> the whole Set-Cookie line, of each cookie the answer set."""
    lines = response.raw.headers.getlist("Set-Cookie")
    return {line.split("=", 1)[0]: line for line in lines}


def sealed(token: str, node_id: int) -> str:
    return CookieSealer(SECRET_KEY).seal(token, node_id)


def test_opalr_calls_with_only_the_cookie_after_a_token_login(relay, gateway):
    token = relay_token(relay, relay.node_a)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    before = time.time()
    http, login = opalr_login(relay, relay.node_a, token)
    assert login.json()["principal"] == "alice"
    cookies = set_cookies(login)
    ours = cookies[COOKIE]
    assert f"Path=/nodes/{relay.node_a}/ws" in ours
    assert "HttpOnly" in ours and "SameSite=Strict" in ours
    assert "Secure" not in ours  # served over plain http here
    max_age = int(ours.split("Max-Age=")[1].split(";")[0])
    assert 0 < max_age <= exp - before  # never beyond the token's expiry
    assert token not in ours  # sealed, not the token itself
    # the node gateway's own cookie comes through, under the node's prefix
    assert f"Path=/nodes/{relay.node_a}/ws" in cookies["opalsid"]
    sid = http.cookies.get("opalsid")

    # What DSOpal does next, each call with the cookies alone (no credentials at all).
    url = base_of(relay, relay.node_a)
    table = http.get(f"{url}/datasource/demo/table/cohort.patients", timeout=60)
    assert table.status_code == 200 and table.json()["name"] == "cohort.patients"
    assert COOKIE not in set_cookies(table)  # set once, not on every call
    created = http.post(f"{url}/datashield/sessions", params={"wait": "true"}, timeout=60)
    assert created.status_code == 201 and created.json()["user"] == "alice"
    session = f"{url}/datashield/session/{created.json()['id']}"
    r = http.put(
        f"{session}/symbol/D",
        params={"async": "false"},
        data="demo.cohort.patients",
        headers={"Content-Type": "application/x-opal"},
        timeout=60,
    )
    assert r.status_code in (200, 201), r.text
    r = http.post(
        f"{session}/aggregate", params={"async": "false"}, data="meanDS(D$age)", headers=RSCRIPT
    )
    assert r.status_code == 200, r.text
    pooled = pd.read_parquet(gateway.data_dir / "demo" / "cohort" / "patients.parquet")
    assert unserialize(r.content)["EstimatedMean"] == pytest.approx(pooled["age"].mean())
    r = http.post(
        f"{session}/aggregate", params={"async": "false"}, data='dimDS("D")', headers=RSCRIPT
    )
    assert unserialize(r.content)[:2] == list(pooled.shape)
    assert http.delete(session, timeout=60).status_code == 200

    # opalr's logout (its session id in the path) ends both cookies
    out = http.delete(f"{url}/auth/session/{sid}", timeout=60)
    assert out.status_code == 200, out.text
    cleared = set_cookies(out)[COOKIE]
    assert f"Path=/nodes/{relay.node_a}/ws" in cleared and "Max-Age=0" in cleared
    assert COOKIE not in http.cookies
    r = http.get(f"{url}/datasources", timeout=60)
    assert r.status_code == 401 and r.json()["message"].startswith("Send a relay token")


def test_a_cookie_is_not_sent_to_nor_accepted_at_another_node(relay):
    token = relay_token(relay, relay.node_a)
    http, _ = opalr_login(relay, relay.node_a, token)
    value = http.cookies.get(COOKIE)
    # the client does not send it to node b's prefix (its Path) ...
    r = http.get(f"{base_of(relay, relay.node_b)}/datasources", timeout=60)
    assert r.status_code == 401 and r.json()["message"].startswith("Send a relay token")
    # ... and sent there all the same, it opens nothing (sealed for node a)
    r = requests.get(
        f"{base_of(relay, relay.node_b)}/datasources", cookies={COOKIE: value}, timeout=60
    )
    assert r.status_code == 401
    assert r.json()["message"] == "Invalid relay session cookie: log in again with the relay token."
    # while at node a it still does
    r = requests.get(
        f"{base_of(relay, relay.node_a)}/datasources", cookies={COOKIE: value}, timeout=60
    )
    assert r.status_code == 200, r.text


def test_altered_expired_and_foreign_cookies_are_refused(relay):
    token = relay_token(relay, relay.node_a)
    _, login = opalr_login(relay, relay.node_a, token)
    good = requests.utils.dict_from_cookiejar(login.cookies)[COOKIE]
    url = f"{base_of(relay, relay.node_a)}/datasources"
    claims = jwt.decode(token, TOKEN_SECRET, algorithms=["HS256"], audience=AUDIENCE)
    expired = jwt.encode({**claims, "exp": int(time.time()) - 60}, TOKEN_SECRET, "HS256")
    flipped = good[:20] + ("A" if good[20] != "A" else "B") + good[21:]
    cases = {
        "tampered": (flipped, 401, "Invalid relay session cookie"),
        "truncated": (good[:-4], 401, "Invalid relay session cookie"),
        "not ours": ("x" * 60, 401, "Invalid relay session cookie"),
        "another relay's key": (
            CookieSealer("another-secret-key").seal(token, relay.node_a),
            401,
            "Invalid relay session cookie",
        ),
        "an expired token's": (sealed(expired, relay.node_a), 401, "has expired"),
        "a token of node b, sealed for a": (
            sealed(relay_token(relay, relay.node_b), relay.node_a),
            403,
            "This relay token is for another node.",
        ),
        "a forged token's": (
            sealed(jwt.encode(claims, "not-the-relay-key-0123456789abcdef", "HS256"), relay.node_a),
            401,
            "Invalid relay token.",
        ),
    }
    for what, (value, status, text) in cases.items():
        r = requests.get(url, cookies={COOKIE: value}, timeout=60)
        assert r.status_code == status, (what, r.text)
        assert text in r.json()["message"], (what, r.json())
        # a refused cookie is cleared
        assert "Max-Age=0" in set_cookies(r)[COOKIE], what
    assert requests.get(url, cookies={COOKIE: good}, timeout=60).status_code == 200
    with relay.app.app_context():
        from gateway.coordinator.models import AuditEvent

        refused = db.session().query(AuditEvent).filter_by(action="relay.refused").all()
        assert any("Invalid relay session cookie" in e.detail["message"] for e in refused)


def test_a_cookie_stops_working_when_its_user_leaves_the_collaboration(relay):
    token = relay_token(relay, relay.node_a, "bob")
    http, _ = opalr_login(relay, relay.node_a, token)
    url = f"{base_of(relay, relay.node_a)}/datasources"
    assert http.get(url, timeout=60).status_code == 200
    remove_roles(relay, "bob")
    r = http.get(url, timeout=60)
    assert r.status_code == 403 and "no longer a researcher" in r.json()["message"]


def test_a_header_token_wins_and_renews_the_cookie(relay):
    """A client that sends the token on every call (Python's datashield-opal) gets the
    cookie once; a renewed token replaces it."""
    first = relay_token(relay, relay.node_a)
    http, _ = opalr_login(relay, relay.node_a, first)
    url = f"{base_of(relay, relay.node_a)}/datasources"
    again = http.get(url, headers={"Authorization": f"Bearer {first}"}, timeout=60)
    assert again.status_code == 200 and COOKIE not in set_cookies(again)
    renewed = relay_token(relay, relay.node_a)
    r = http.get(url, headers={"Authorization": f"Bearer {renewed}"}, timeout=60)
    assert r.status_code == 200 and COOKIE in set_cookies(r)
    value = http.cookies.get(COOKIE)
    assert CookieSealer(SECRET_KEY).open(value, relay.node_a) == renewed
    # the Armadillo face takes no cookie: its clients send the token on every call
    r = requests.get(f"{relay.listener.url}/tables", cookies={COOKIE: value}, timeout=60)
    assert r.status_code == 401


def test_what_goes_to_the_node_and_back():
    assert _without_relay_cookie(f"opalsid=abc; {COOKIE}=sealed; other=1") == "opalsid=abc; other=1"
    assert _without_relay_cookie(f"{COOKIE}=sealed") == ""
    assert (
        _node_cookie_path("opalsid=abc; HttpOnly; Path=/; SameSite=Lax", 7)
        == "opalsid=abc; HttpOnly; Path=/nodes/7/ws; SameSite=Lax"
    )
    assert _node_cookie_path("x=1; path=/ws/files", 7) == "x=1; Path=/nodes/7/ws/files"
    assert _node_cookie_path("x=1; Path=/elsewhere", 7) == "x=1; Path=/elsewhere"


def test_a_sealed_cookie_opens_only_for_its_node_and_key():
    sealer = CookieSealer(SECRET_KEY)
    value = sealer.seal("a.token.value", 3)
    assert sealer.open(value, 3) == "a.token.value"
    assert sealer.open(value, 4) is None
    assert CookieSealer(SECRET_KEY + "x").open(value, 3) is None
    assert sealer.open("", 3) is None and sealer.open("%%%", 3) is None
    assert sealer.seal("t" * 5000, 3) is None  # too long for a cookie: none is set
    with pytest.raises(ValueError, match="SECRET_KEY"):
        CookieSealer("")


# ---------------------------------------------------------------- the real R clients

REAL_LIB_ENV = "DSGATEWAY_REAL_R_LIB"


def test_dsopal_through_the_relay_equals_pooled_r(relay, gateway, tmp_path, monkeypatch):
    """OPT-IN (DSGATEWAY_REAL_R_LIB, see test_real_r_clients.py): DSI + DSOpal (opalr)
    + dsBaseClient log in to both nodes through the relay with relay tokens; ds.*
    numbers equal plain R on the pooled rows (the table twice: both nodes serve it)."""
    from tests.functional.test_real_r_clients import REAL_LIB

    if REAL_LIB is None:
        pytest.skip(f"opt-in: set {REAL_LIB_ENV} to an R library with the real DataSHIELD clients")
    monkeypatch.setenv("R_LIBS", REAL_LIB)
    table = gateway.data_dir / "demo" / "cohort" / "patients.parquet"
    pooled = tmp_path / "patients.csv"
    pd.read_parquet(table).to_csv(pooled, index=False, na_rep="NA")
    env = {
        # opalr refuses plain http to any host but "localhost"
        "DSG_RELAY": relay.listener.url.replace("127.0.0.1", "localhost"),
        "DSG_NODE_A": str(relay.node_a),
        "DSG_NODE_B": str(relay.node_b),
        "DSG_TOKEN_A": relay_token(relay, relay.node_a),
        "DSG_TOKEN_B": relay_token(relay, relay.node_b),
        "DSG_TABLE": "demo.cohort.patients",
        "DSG_POOLED": str(pooled),
    }
    run_r_script(R_SCRIPT, env, min_passed=8, timeout=600)
