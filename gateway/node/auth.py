"""Who is calling: users from the config file (password) or from a JWT (token).

Design: passwords are for people at the station; tokens are how the federation's
coordinator hands a researcher access. The coordinator signs a short-lived JWT whose
`sub` is the user name and whose `projects` claim lists the projects she may read at
this node; the node only verifies it (issuer, audience, expiry, signature) and keeps no
user list for token users.

Every failure answers with the same message, so a caller cannot tell an unknown user
from a wrong password, and passwords are checked in constant time (an unknown user is
checked against a dummy hash, so it costs as long as a known one).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import jwt
from werkzeug.security import check_password_hash, generate_password_hash

from gateway.node.config import NAME_PATTERN, ConfigError, NodeConfig
from gateway.node.errors import Unauthorized

__all__ = ["BAD_CREDENTIALS", "Authenticator", "User"]

BAD_CREDENTIALS = "Invalid username or password."
BAD_TOKEN = "Invalid or expired token."  # noqa: S105 (a message, not a secret)
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class User:
    name: str
    projects: frozenset[str] | None = None  # None: every project of this node
    via: str = "password"  # "password" or "token": for the audit log
    # A token's `exp` (epoch seconds): a login cookie issued on it must not outlive it.
    expires: float | None = field(default=None, compare=False)

    def can_read(self, project: str) -> bool:
        return self.projects is None or project in self.projects


class _VerifiedCache:
    """Remembers recently verified passwords for a few minutes.

    Clients send the password on every request (the Opal clients do), and scrypt costs
    tens of milliseconds by design. The cache key is an HMAC under a per-process random
    key, so the plain password is never kept and the cache is useless outside it.
    """

    def __init__(self, ttl: float = 300.0, size: int = 1024):
        self._key = secrets.token_bytes(32)
        self._ttl = ttl
        self._size = size
        self._items: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def _digest(self, user: str, password: str, password_hash: str) -> bytes:
        material = "\0".join((user, password, password_hash)).encode()
        return hmac.new(self._key, material, hashlib.sha256).digest()

    def hit(self, user: str, password: str, password_hash: str) -> bool:
        digest = self._digest(user, password, password_hash)
        with self._lock:
            expiry = self._items.get(digest)
            if expiry is None or expiry < time.monotonic():
                self._items.pop(digest, None)
                return False
            return True

    def add(self, user: str, password: str, password_hash: str) -> None:
        digest = self._digest(user, password, password_hash)
        with self._lock:
            self._items[digest] = time.monotonic() + self._ttl
            self._items.move_to_end(digest)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class Authenticator:
    def __init__(self, config: NodeConfig):
        self._users = config.users
        self._tokens = config.tokens
        self._cache = _VerifiedCache()
        # Checked when the user is unknown, so that path costs as much as a real check.
        self._dummy_hash = generate_password_hash(secrets.token_hex(16), method="scrypt")

    @property
    def tokens_enabled(self) -> bool:
        return self._tokens is not None

    # -------------------------------------------------------- password

    def from_basic(self, user: str, password: str) -> User:
        entry = self._users.get(user)
        stored = entry.password_hash if entry else self._dummy_hash
        if entry and self._cache.hit(user, password, stored):
            return User(entry.name, entry.projects, "password")
        ok = check_password_hash(stored, password)
        if not (ok and entry):
            raise Unauthorized(BAD_CREDENTIALS)
        self._cache.add(user, password, stored)
        return User(entry.name, entry.projects, "password")

    def from_basic_header(self, encoded: str) -> User:
        """`encoded` is the base64 part of `Basic <b64>` or `X-Opal-Auth <b64>`."""
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise Unauthorized(BAD_CREDENTIALS) from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise Unauthorized(BAD_CREDENTIALS)
        return self.from_basic(user, password)

    # -------------------------------------------------------- token

    def from_bearer(self, token: str) -> User:
        cfg = self._tokens
        if cfg is None:
            raise Unauthorized("Token authentication is not enabled on this node.")
        try:
            key = cfg.verification_key()
        except (ConfigError, OSError):
            # The operator's problem, not the caller's: say no more than "invalid".
            raise Unauthorized(BAD_TOKEN) from None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(cfg.algorithms),
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=30,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError:
            raise Unauthorized(BAD_TOKEN) from None
        name = claims.get("sub")
        projects = claims.get("projects", [])
        if not isinstance(name, str) or not _NAME.match(name):
            raise Unauthorized(BAD_TOKEN)
        if not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
            raise Unauthorized(BAD_TOKEN)
        return User(name, frozenset(projects), "token", expires=float(claims["exp"]))

    # -------------------------------------------------------- headers

    def from_authorization(self, value: str) -> User:
        """An `Authorization` header: `Basic`, `Bearer` or Opal's `X-Opal-Auth <b64>`."""
        scheme, _, credentials = value.strip().partition(" ")
        scheme = scheme.lower()
        if scheme in ("basic", "x-opal-auth") and credentials:
            return self.from_basic_header(credentials)
        if scheme == "bearer" and credentials:
            return self.from_bearer(credentials.strip())
        raise Unauthorized("Unsupported Authorization header: use Basic or Bearer.")
