"""Password login, access and refresh tokens, logout, and refused tokens."""

from datetime import timedelta

import jwt

from gateway.coordinator.models import AuditEvent, User
from tests.unit.coordinator.fixtures import PASSWORD


def login(client, username, password=PASSWORD):
    return client.post("/api/auth/login", json={"username": username, "password": password})


def test_login_gives_tokens_that_open_the_api(client, fed):
    r = login(client, "alice")
    assert r.status_code == 200, r.json
    body = r.json
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json["username"] == "alice"
    assert me.json["roles"] == [
        {
            "id": me.json["roles"][0]["id"],
            "name": "researcher",
            "organization_id": None,
            "collaboration_id": fed.study,
        }
    ]


def test_passwords_are_stored_with_scrypt(app, fed):
    from gateway.coordinator import db

    with app.app_context():
        user = db.session().query(User).filter_by(username="alice").one()
        assert user.password_hash.startswith("scrypt:")
        assert PASSWORD not in user.password_hash


def test_bad_password_and_unknown_user_get_the_same_401_and_are_audited(client, fed):
    wrong = login(client, "alice", "wrong password")
    unknown = login(client, "mallory", "whatever")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json == unknown.json == {"message": "Invalid username or password."}
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    events = fed.world.count(AuditEvent)
    assert events == 2


def test_inactive_user_cannot_log_in(client, fed, app):
    from gateway.coordinator import db

    with app.app_context():
        db.session().query(User).filter_by(username="alice").one().active = False
        db.session().commit()
    assert login(client, "alice").status_code == 401


def test_refresh_gives_new_tokens_and_logout_revokes_them(client, fed):
    tokens = login(client, "alice").json
    r = client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200
    new = r.json
    # An access token is not a refresh token and the other way round.
    bad = client.post("/api/auth/refresh", json={"refresh_token": tokens["access_token"]})
    assert bad.status_code == 401
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {tokens['refresh_token']}"})
    assert me.status_code == 401
    out = client.post(
        "/api/auth/logout", headers={"Authorization": f"Bearer {new['access_token']}"}
    )
    assert out.status_code == 204
    again = client.post("/api/auth/refresh", json={"refresh_token": new["refresh_token"]})
    assert again.status_code == 401


def test_expired_tampered_and_foreign_tokens_are_refused(client, fed, app):
    token = login(client, "alice").json["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    key = app.config["SECRET_KEY"]

    def call(tok):
        return client.get("/api/auth/me", headers={"Authorization": f"Bearer {tok}"})

    assert call(token).status_code == 200
    expired = dict(claims, exp=claims["iat"] - 60)
    assert call(jwt.encode(expired, key, algorithm="HS256")).status_code == 401
    other_key = jwt.encode(claims, "another-key-" + "y" * 32, algorithm="HS256")
    assert call(other_key).status_code == 401
    head, _payload, sig = token.split(".")
    forged = dict(claims, sub=str(int(claims["sub"]) - 1))
    forged_payload = jwt.utils.base64url_encode(jwt.api_jws.json.dumps(forged).encode()).decode()
    assert call(f"{head}.{forged_payload}.{sig}").status_code == 401
    assert call(jwt.encode(dict(claims, alg="none"), None, algorithm="none")).status_code == 401
    assert call("not-a-token").status_code == 401
    r = client.get("/api/auth/me", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert r.status_code == 401
    assert client.get("/api/auth/me").status_code == 401
    assert timedelta(seconds=claims["exp"] - claims["iat"]) == timedelta(minutes=15)


def test_password_change_needs_the_current_one_and_revokes_refresh_tokens(client, fed):
    tokens = login(client, "alice").json
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    me = client.get("/api/auth/me", headers=auth).json
    bad = client.patch(
        f"/api/users/{me['id']}",
        headers=auth,
        json={"password": "a new password", "current_password": "wrong"},
    )
    assert bad.status_code == 403
    ok = client.patch(
        f"/api/users/{me['id']}",
        headers=auth,
        json={"password": "a new password", "current_password": PASSWORD},
    )
    assert ok.status_code == 200
    assert client.post("/api/auth/refresh", json=tokens).status_code == 400  # unknown fields
    refresh = client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401
    assert login(client, "alice", "a new password").status_code == 200
