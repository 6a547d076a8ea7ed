"""`dsgateway coordinator` commands: migrate, make the first admin, make a relay key."""

from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from gateway.coordinator.cli import coordinator
from gateway.coordinator.migrate import current_revision, head_revision


def run(args, tmp_path, **env):
    environ = {
        "DSGATEWAY_COORD_INSTANCE_PATH": str(tmp_path / "instance"),
        "DSGATEWAY_COORD_PASSWORD_HASH_METHOD": "scrypt:1024:8:1",
        **env,
    }
    return CliRunner().invoke(coordinator, args, env=environ, catch_exceptions=False)


def test_db_upgrade_then_create_admin_who_can_log_in(tmp_path):
    r = run(["db", "upgrade"], tmp_path)
    assert r.exit_code == 0, r.output
    url = f"sqlite:///{tmp_path / 'instance' / 'coordinator.db'}"
    assert current_revision(url) == head_revision()
    head = head_revision()
    assert f"current: {head}  head: {head}" in run(["db", "current"], tmp_path).output
    r = run(
        ["create-admin", "--username", "root"], tmp_path, DSGATEWAY_ADMIN_PASSWORD="s3cret-pass"
    )
    assert r.exit_code == 0, r.output
    again = run(["create-admin", "--username", "root"], tmp_path, DSGATEWAY_ADMIN_PASSWORD="x" * 9)
    assert again.exit_code != 0 and "exists" in again.output
    short = run(["create-admin", "--username", "r2"], tmp_path, DSGATEWAY_ADMIN_PASSWORD="short")
    assert short.exit_code != 0 and "password" in short.output

    from gateway.coordinator import create_app, db

    app = create_app({"INSTANCE_PATH": str(tmp_path / "instance")})
    try:
        client = app.test_client()
        tokens = client.post(
            "/api/auth/login", json={"username": "root", "password": "s3cret-pass"}
        ).json
        me = client.get(
            "/api/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        ).json
        assert [(r["name"], r["organization_id"], r["collaboration_id"]) for r in me["roles"]] == [
            ("admin", None, None)
        ]
    finally:
        db.engine(app).dispose()


def test_relay_key_writes_a_private_key_once(tmp_path):
    path = tmp_path / "relay.pem"
    r = run(["relay-key", str(path)], tmp_path)
    assert r.exit_code == 0 and "BEGIN PUBLIC KEY" in r.output
    assert path.stat().st_mode & 0o077 == 0
    serialization.load_pem_private_key(path.read_bytes(), None)
    assert run(["relay-key", str(path)], tmp_path).exit_code != 0


def test_worker_refuses_the_embedded_broker(tmp_path):
    r = run(["worker"], tmp_path)
    assert r.exit_code != 0 and "embedded" in r.output
