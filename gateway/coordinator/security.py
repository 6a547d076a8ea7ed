"""Secrets at rest: user passwords (a slow KDF) and node API keys (random, hashed).

Passwords use werkzeug's scrypt (memory-hard; the method string, with its cost, is
stored in the hash, so raising the cost later keeps old hashes valid). An unknown user
is checked against a dummy hash, so a login costs the same whether the name exists.

API keys are 32 random bytes: too much entropy to guess, so they are stored as SHA-256
(a KDF would only slow every agent request) and found by that hash.
"""

from __future__ import annotations

import hashlib
import secrets
from functools import lru_cache

from werkzeug.security import check_password_hash, generate_password_hash

__all__ = [
    "API_KEY_PREFIX_LEN",
    "check_password",
    "hash_api_key",
    "hash_password",
    "new_api_key",
]

API_KEY_PREFIX_LEN = 8


def hash_password(password: str, method: str = "scrypt") -> str:
    return generate_password_hash(password, method=method)


@lru_cache(maxsize=8)
def _dummy_hash(method: str) -> str:
    return generate_password_hash(secrets.token_hex(16), method=method)


def check_password(stored: str | None, password: str, method: str = "scrypt") -> bool:
    """Constant-cost check: with no stored hash, a dummy one is checked and False returned."""
    if stored is None:
        check_password_hash(_dummy_hash(method), password)
        return False
    return check_password_hash(stored, password)


def new_api_key() -> str:
    return "dsg_" + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
