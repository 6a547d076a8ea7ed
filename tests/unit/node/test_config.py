"""NodeConfig: defaults, validation messages naming the bad key, quick start."""

from pathlib import Path

import pytest
import yaml
from werkzeug.security import check_password_hash, generate_password_hash

from gateway.node.config import ConfigError, Limits, NodeConfig, ServerConfig

HASH = generate_password_hash("secret", method="scrypt")


def write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_only_data_dir_is_required(tmp_path):
    cfg = NodeConfig.from_file(write(tmp_path, {"data_dir": "data"}))
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.state_dir == tmp_path / "var"
    assert cfg.audit_path == tmp_path / "var" / "audit.log"
    assert cfg.limits == Limits()
    assert cfg.server == ServerConfig()
    assert cfg.server.threads == 64
    assert list(cfg.profiles) == ["default"]
    assert cfg.profiles["default"].packages is None
    assert cfg.users == {} and cfg.tokens is None and cfg.oidc is None


def test_missing_data_dir_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"data_dir: Missing data"):
        NodeConfig.from_file(write(tmp_path, {"state_dir": "x"}))


def test_unknown_keys_are_refused_with_their_path(tmp_path):
    doc = {
        "data_dir": "d",
        "limit": {},
        "users": {"alice": {"password_hash": HASH, "project": ["a"]}},
        "server": {"prot": 80},
    }
    with pytest.raises(ConfigError) as err:
        NodeConfig.from_file(write(tmp_path, doc))
    text = str(err.value)
    assert "limit: Unknown field" in text
    assert "users.alice.project: Unknown field" in text
    assert "server.prot: Unknown field" in text
    assert str(tmp_path / "node.yaml") in text


def test_full_config(tmp_path, monkeypatch):
    key = tmp_path / "pub.pem"
    key.write_text("-----BEGIN PUBLIC KEY-----\n")
    doc = {
        "data_dir": "/srv/data",
        "state_dir": "state",
        "sql_tables": [{"table": "p/f/t", "url": "sqlite:///x.db", "query": "select 1"}],
        "users": {
            "alice": {"password_hash": HASH, "projects": ["cohort1", "cohort2"]},
            "root": {"password_hash": HASH, "projects": "*"},
        },
        "tokens": {"issuer": "https://coord", "audience": "node-1", "public_key_file": "pub.pem"},
        "profiles": {
            "default": {"packages": ["dsBase"], "blacklist": ["dsBase::quantileMeanDS"]},
            "strict": {"options": {"nfilter.tab": 5, "datashield.privacyControlLevel": "banana"}},
        },
        "limits": {"max_sessions": 3, "idle_timeout": 60, "warm_workers": 0},
        "server": {"host": "0.0.0.0", "port": 9000, "threads": 16},
        "oidc": {"issuer_uri": "https://auth", "client_id": "armadillo"},
    }
    cfg = NodeConfig.from_file(write(tmp_path, doc))
    assert cfg.data_dir == Path("/srv/data")
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.sql_tables[0] == {"table": "p/f/t", "url": "sqlite:///x.db", "query": "select 1"}
    assert cfg.users["alice"].projects == frozenset({"cohort1", "cohort2"})
    assert cfg.users["root"].projects is None
    assert cfg.tokens.public_key_file == key and cfg.tokens.algorithms == ("RS256",)
    assert cfg.profiles["default"].packages == ("dsBase",)
    assert cfg.profiles["default"].blacklist == ("dsBase::quantileMeanDS",)
    assert cfg.profiles["strict"].packages is None
    assert cfg.profiles["strict"].options == {
        "nfilter.tab": "5",
        "datashield.privacyControlLevel": '"banana"',
    }
    assert cfg.limits.max_sessions == 3 and cfg.limits.command_timeout == 600
    assert cfg.server.port == 9000 and cfg.server.threads == 16
    assert cfg.oidc.client_id == "armadillo"
    assert cfg.tokens.verification_key() == key.read_bytes()


def test_option_values_cannot_be_r_code(tmp_path):
    doc = {"data_dir": "d", "profiles": {"p": {"options": {"x": 'system("touch /tmp/x")'}}}}
    cfg = NodeConfig.from_file(write(tmp_path, doc))
    assert cfg.profiles["p"].options["x"] == '"system(\\"touch /tmp/x\\")"'


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"users": {"bob": {"password_hash": "plaintext"}}}, "users.bob.password_hash"),
        ({"users": {"../x": {"password_hash": HASH}}}, "users.../x (name)"),
        ({"users": {"bob": {"password_hash": HASH, "projects": "all"}}}, "users.bob.projects"),
        ({"tokens": {"issuer": "i", "audience": "a"}}, "exactly one of"),
        (
            {"tokens": {"issuer": "i", "audience": "a", "secret_env": "K", "algorithms": ["none"]}},
            "tokens.algorithms",
        ),
        (
            {"tokens": {"issuer": "i", "audience": "a", "secret_env": "lower"}},
            "tokens.secret_env",
        ),
        ({"tokens": {"audience": "a", "secret_env": "K"}}, "tokens.issuer: Missing"),
        ({"limits": {"max_sessions": 0}}, "limits.max_sessions"),
        ({"server": {"port": "eighty"}}, "server.port: Not a valid integer"),
        ({"profiles": {}}, "at least one profile"),
        ({"profiles": {"bad name": {}}}, "profiles.bad name (name)"),
        ({"profiles": {"p": {"options": {"x": [1]}}}}, "not a scalar"),
        ({"oidc": {"issuer_uri": "x"}}, "oidc.client_id: Missing"),
        (
            {"sql_tables": [{"table": "p/f/t", "url": "u"}]},
            "sql_tables.0: Give exactly one of query",
        ),
        (
            {"sql_tables": [{"table": "p/f/t", "query": "q"}]},
            "sql_tables.0: Give exactly one of url",
        ),
        ({"sql_tables": [{"table": "t", "url": "u", "query": "q", "pw": 1}]}, "sql_tables.0.pw"),
    ],
)
def test_bad_values_name_their_key(tmp_path, doc, message):
    with pytest.raises(ConfigError) as err:
        NodeConfig.from_file(write(tmp_path, {"data_dir": "d", **doc}))
    assert message in str(err.value)


def test_not_a_mapping_and_bad_yaml(tmp_path):
    path = tmp_path / "n.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        NodeConfig.from_file(path)
    path.write_text("a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        NodeConfig.from_file(path)
    with pytest.raises(ConfigError, match="Cannot read"):
        NodeConfig.from_file(tmp_path / "missing.yaml")


def test_secret_comes_from_the_environment(tmp_path, monkeypatch):
    doc = {"data_dir": "d", "tokens": {"issuer": "i", "audience": "a", "secret_env": "DSG_KEY"}}
    cfg = NodeConfig.from_file(write(tmp_path, doc))
    assert cfg.tokens.algorithms == ("HS256",)
    monkeypatch.delenv("DSG_KEY", raising=False)
    with pytest.raises(ConfigError, match="DSG_KEY is not set"):
        cfg.tokens.verification_key()
    monkeypatch.setenv("DSG_KEY", "s3cr3t")
    assert cfg.tokens.verification_key() == "s3cr3t"


def test_quick_start(tmp_path, monkeypatch):
    monkeypatch.delenv("DSGATEWAY_ADMIN_PASSWORD", raising=False)
    cfg = NodeConfig.quick(tmp_path / "data", tmp_path / "state")
    assert list(cfg.users) == ["admin"] and cfg.users["admin"].projects is None
    assert len(cfg.quick_password) >= 12
    assert check_password_hash(cfg.users["admin"].password_hash, cfg.quick_password)
    assert list(cfg.profiles) == ["default"]
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.quick_password not in repr(cfg)

    monkeypatch.setenv("DSGATEWAY_ADMIN_PASSWORD", "from-env")
    cfg = NodeConfig.quick(tmp_path / "data", tmp_path / "state")
    assert cfg.quick_password == "from-env"
    assert check_password_hash(cfg.users["admin"].password_hash, "from-env")
