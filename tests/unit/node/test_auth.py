"""Authenticator: passwords, JWTs, header forms; failures say nothing about who exists."""

import base64
import hashlib
import hmac
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.security import generate_password_hash

from gateway.node.auth import BAD_CREDENTIALS, BAD_TOKEN, Authenticator, User
from gateway.node.config import NodeConfig
from gateway.node.errors import Unauthorized

SECRET = "a-test-secret-of-at-least-32-bytes!!"


@pytest.fixture(scope="module")
def hashes():
    return {
        "alice": generate_password_hash("wonderland", method="scrypt"),
        "root": generate_password_hash("toor", method="scrypt"),
    }


@pytest.fixture
def auth(tmp_path, monkeypatch, hashes):
    monkeypatch.setenv("DSG_TEST_SECRET", SECRET)
    cfg = NodeConfig.from_dict(
        {
            "data_dir": str(tmp_path),
            "users": {
                "alice": {"password_hash": hashes["alice"], "projects": ["cohort1"]},
                "root": {"password_hash": hashes["root"], "projects": "*"},
            },
            "tokens": {"issuer": "coord", "audience": "node-1", "secret_env": "DSG_TEST_SECRET"},
        }
    )
    return Authenticator(cfg)


def token(**overrides):
    claims = {
        "sub": "bob",
        "iss": "coord",
        "aud": "node-1",
        "exp": int(time.time()) + 300,
        "projects": ["cohort2"],
    }
    claims.update(overrides)
    key = claims.pop("_key", SECRET)
    alg = claims.pop("_alg", "HS256")
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=alg)


def test_user_can_read():
    assert User("a", None).can_read("anything")
    assert User("a", frozenset({"p"})).can_read("p")
    assert not User("a", frozenset({"p"})).can_read("q")
    assert not User("a", frozenset()).can_read("p")


def test_password(auth):
    alice = auth.from_basic("alice", "wonderland")
    assert alice == User("alice", frozenset({"cohort1"}), "password")
    assert auth.from_basic("root", "toor").projects is None
    # the second time comes from the cache, same answer
    assert auth.from_basic("alice", "wonderland") == alice


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("alice", "wrong"),
        ("nobody", "wonderland"),
        ("", ""),
        ("alice", ""),
        ("ALICE", "wonderland"),
    ],
)
def test_bad_password_same_message(auth, user, password):
    with pytest.raises(Unauthorized) as err:
        auth.from_basic(user, password)
    assert err.value.message == BAD_CREDENTIALS
    assert err.value.status == 401


def test_unknown_user_costs_a_hash_check(auth):
    start = time.perf_counter()
    for _ in range(3):
        with pytest.raises(Unauthorized):
            auth.from_basic("nobody", "x")
    unknown = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(3):
        with pytest.raises(Unauthorized):
            auth.from_basic("alice", "x")
    known = time.perf_counter() - start
    assert unknown > known / 4  # same order of magnitude: scrypt ran in both cases


def b64(text):
    return base64.b64encode(text.encode()).decode()


def test_header_forms(auth):
    assert auth.from_authorization("Basic " + b64("alice:wonderland")).name == "alice"
    assert auth.from_authorization("X-Opal-Auth " + b64("alice:wonderland")).name == "alice"
    assert auth.from_authorization("Bearer " + token()).name == "bob"
    for bad in ["Basic", "Basic !!!", "Basic " + b64("nocolon"), "Digest abc", "", "Bearer "]:
        with pytest.raises(Unauthorized):
            auth.from_authorization(bad)


def test_password_with_colon(tmp_path):
    cfg = NodeConfig.from_dict(
        {
            "data_dir": str(tmp_path),
            "users": {"carol": {"password_hash": generate_password_hash("a:b:c")}},
        }
    )
    assert Authenticator(cfg).from_authorization("Basic " + b64("carol:a:b:c")).name == "carol"


def test_bearer(auth):
    bob = auth.from_bearer(token())
    assert bob == User("bob", frozenset({"cohort2"}), "token")
    assert bob.can_read("cohort2") and not bob.can_read("cohort1")
    assert auth.from_bearer(token(projects=None)).projects == frozenset()


@pytest.mark.parametrize(
    "bad",
    [
        {"exp": int(time.time()) - 3600},
        {"exp": None},
        {"iss": "someone-else"},
        {"iss": None},
        {"aud": "node-2"},
        {"aud": None},
        {"sub": None},
        {"sub": "../../etc"},
        {"sub": 42},
        {"projects": "cohort1"},
        {"projects": [1, 2]},
        {"_key": "another-secret-of-at-least-32-bytes!"},
    ],
)
def test_bad_tokens(auth, bad):
    with pytest.raises(Unauthorized) as err:
        auth.from_bearer(token(**bad))
    assert err.value.message == BAD_TOKEN


def test_unsigned_and_garbage_tokens(auth):
    unsigned = jwt.encode(
        {"sub": "bob", "iss": "coord", "aud": "node-1", "exp": int(time.time()) + 60},
        None,
        algorithm="none",
    )
    for bad in [unsigned, "abc", "a.b.c", token() + "x"]:
        with pytest.raises(Unauthorized, match="Invalid or expired token"):
            auth.from_bearer(bad)


def test_tokens_disabled(tmp_path):
    auth = Authenticator(NodeConfig.from_dict({"data_dir": str(tmp_path)}))
    assert not auth.tokens_enabled
    with pytest.raises(Unauthorized, match="not enabled"):
        auth.from_bearer(token())


def test_rsa_tokens_and_algorithm_confusion(tmp_path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "pub.pem").write_bytes(public_pem)
    cfg = NodeConfig.from_dict(
        {
            "data_dir": str(tmp_path),
            "tokens": {"issuer": "coord", "audience": "node-1", "public_key_file": "pub.pem"},
        },
        base_dir=tmp_path,
    )
    auth = Authenticator(cfg)
    assert auth.from_bearer(token(_key=private, _alg="RS256")).name == "bob"

    # HS256 signed with the public key as the secret: the classic confusion attack
    def part(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = (
        part(b'{"alg":"HS256","typ":"JWT"}')
        + b"."
        + part(b'{"sub":"bob","iss":"coord","aud":"node-1","exp":9999999999}')
    )
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + part(signature)).decode()
    with pytest.raises(Unauthorized):
        auth.from_bearer(forged)
