"""JSON Web Tokens the coordinator issues.

- Access tokens (short-lived) and refresh tokens (long-lived, `gen` = the user's
  token generation, so a password change or logout revokes them all): HS256 with
  `SECRET_KEY`, audience `<TOKEN_ISSUER>/api`. Only the coordinator reads them.
- Relay tokens: what a node's gateway accepts as `Authorization: Bearer` (see
  gateway/node/auth.py): `iss` = `RELAY_ISSUER`, `aud` = the node's audience, `sub` = the
  user name, `projects` = the projects of that node the collaboration may read, `exp`.
  They also name the collaboration and node (`collaboration`, `node`) so the relay can
  check that a token is used only for the node it was made for. Signed with the private
  key in `RELAY_PRIVATE_KEY_FILE` (RS256 unless `RELAY_ALGORITHM` says otherwise; nodes
  hold the public key) or, on one machine, the HS256 secret `RELAY_SECRET`.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from gateway.coordinator.errors import CoordinatorError, Unauthorized
from gateway.coordinator.models import Node, User, utcnow

__all__ = [
    "RelayKey",
    "TokenService",
    "ensure_secret_key",
]

BAD_TOKEN = "Invalid or expired token."  # noqa: S105 (a message)
_ALGORITHM = "HS256"


def ensure_secret_key(instance_path: str) -> str:
    """A random signing key kept in the instance folder (mode 0600), made on first use:
    the embedded default needs no configuration and survives restarts."""
    path = Path(instance_path) / "secret_key"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(key, encoding="utf-8")
    return key


@dataclass(frozen=True)
class RelayKey:
    """The key relay tokens are signed with, and what a node must be told to verify them."""

    algorithm: str
    signing_key: Any
    public_pem: str | None  # None for HS256 (the node shares the secret instead)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> RelayKey | None:
        key_file = settings.get("RELAY_PRIVATE_KEY_FILE")
        secret = settings.get("RELAY_SECRET")
        if key_file and secret:
            raise ValueError("Set one of RELAY_PRIVATE_KEY_FILE and RELAY_SECRET, not both.")
        if secret:
            algorithm = settings.get("RELAY_ALGORITHM") or "HS256"
            if not algorithm.startswith("HS"):
                raise ValueError("RELAY_SECRET signs with HS256/HS384/HS512 only.")
            return cls(algorithm, str(secret), None)
        if not key_file:
            return None
        private = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        algorithm = settings.get("RELAY_ALGORITHM") or "RS256"
        if algorithm.startswith("HS"):
            raise ValueError("A private key file signs with RS*, PS* or ES* algorithms.")
        return cls(algorithm, private, public.decode("ascii"))


class TokenService:
    def __init__(self, settings: dict[str, Any]):
        self._key = settings["SECRET_KEY"]
        self._issuer = settings["TOKEN_ISSUER"]
        self._audience = f"{self._issuer}/api"
        self.access_ttl = int(settings["ACCESS_TOKEN_TTL"])
        self.refresh_ttl = int(settings["REFRESH_TOKEN_TTL"])
        self.relay_issuer = settings["RELAY_ISSUER"]
        self.relay_ttl = int(settings["RELAY_TOKEN_TTL"])
        self.relay_key = RelayKey.from_settings(settings)

    # ------------------------------------------------------ access and refresh

    def _encode(self, user: User, kind: str, ttl: int, **extra: Any) -> str:
        now = utcnow()
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user.id),
            "name": user.username,
            "type": kind,
            "iat": now,
            "exp": now + timedelta(seconds=ttl),
            "jti": uuid.uuid4().hex,
            **extra,
        }
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def access_token(self, user: User) -> str:
        return self._encode(user, "access", self.access_ttl)

    def refresh_token(self, user: User) -> str:
        return self._encode(user, "refresh", self.refresh_ttl, gen=user.token_generation)

    def decode(self, token: str, kind: str) -> dict[str, Any]:
        """The claims of a valid token of this kind; Unauthorized otherwise."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=5,
                options={"require": ["exp", "iss", "aud", "sub", "type"]},
            )
        except jwt.PyJWTError:
            raise Unauthorized(BAD_TOKEN) from None
        if claims.get("type") != kind or not str(claims.get("sub", "")).isdigit():
            raise Unauthorized(BAD_TOKEN)
        return claims

    # ------------------------------------------------------ relay

    def relay_token(self, user: User, node: Node, expires_at: datetime | None = None) -> str:
        """A relay token of `user` for `node` (and its collaboration). `expires_at`: an
        earlier end than RELAY_TOKEN_TTL, e.g. an image task's deadline."""
        if self.relay_key is None:
            raise CoordinatorError(
                "Relay tokens are not configured: set RELAY_PRIVATE_KEY_FILE or RELAY_SECRET."
            )
        now = utcnow()
        exp = now + timedelta(seconds=self.relay_ttl)
        if expires_at is not None:
            exp = min(exp, expires_at)
        claims = {
            "iss": self.relay_issuer,
            "aud": node.audience,
            "sub": user.username,
            "projects": sorted(node.projects or []),
            "collaboration": node.collaboration_id,
            "node": node.id,
            "iat": now,
            "exp": exp,
            "jti": uuid.uuid4().hex,
        }
        key = self.relay_key
        return jwt.encode(claims, key.signing_key, algorithm=key.algorithm)
