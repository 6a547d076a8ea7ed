"""The relay's own session cookie on the Opal face, for R's opalr (DSOpal).

opalr sends its credentials (here: the relay token, as `X-Opal-Auth`) only on its login
check and then relies on Opal's session cookie, which its curl handle keeps. The relay
routes and authorises each call by its relay token, so a call that carries only a cookie
must still yield that token:

- On an Opal call authorised by a relay token, the relay sets `dsg_relay`: the token,
  sealed with AES-256-GCM under a key derived from the coordinator's SECRET_KEY (HKDF),
  with the node's id as associated data. Path `/nodes/<id>/ws` (the client sends it to
  that node's prefix only), HttpOnly, SameSite=Strict, Secure over https, Max-Age up to
  the token's `exp` and no further.
- A later Opal call without a token but with that cookie is opened back into the token,
  which then goes through exactly the same checks as a token sent in a header
  (signature, issuer, expiry, audience, node, collaboration, user, membership) and is
  sent on to the node as `Authorization: Bearer` (the node's agent and gateway check
  it again). A cookie that does not open (tampered, another node's, another relay's)
  is refused with 401.
- Nothing is kept at the relay: the token travels with the client, sealed, so relay
  processes that share SECRET_KEY accept each other's cookies and a restart loses no
  session; a leaked cookie is no bearer token anywhere else.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["COOKIE", "CookieSealer", "cookie_path"]

COOKIE = "dsg_relay"  # not opalsid: that one is the node gateway's, passed through
_INFO = b"dsgateway relay session cookie v1"
_NONCE = 12
MAX_COOKIE = 3800  # browsers and curl keep cookies up to ~4096 bytes


def cookie_path(node_id: int) -> str:
    """The path the cookie is sent to: this node's Opal prefix only (RFC 6265 path
    matching: `/nodes/1/ws` never matches `/nodes/12/ws`)."""
    return f"/nodes/{node_id}/ws"


class CookieSealer:
    def __init__(self, secret_key: str | bytes):
        if not secret_key:
            raise ValueError("The relay's session cookie needs the coordinator's SECRET_KEY.")
        material = secret_key.encode() if isinstance(secret_key, str) else secret_key
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(material)
        self._aead = AESGCM(key)

    @staticmethod
    def _bound_to(node_id: int) -> bytes:
        return f"node:{node_id}".encode()

    def seal(self, token: str, node_id: int) -> str | None:
        """The cookie's value for `token` at `node_id`; None when it would be too long for
        a cookie (the client then keeps sending the token itself)."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, token.encode("utf-8"), self._bound_to(node_id))
        value = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return value if len(value) <= MAX_COOKIE else None

    def open(self, value: str, node_id: int) -> str | None:
        """The token sealed in `value` for `node_id`, or None if it is not one of ours,
        was altered, or was sealed for another node."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) <= _NONCE + 16:
            return None
        try:
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], self._bound_to(node_id))
        except InvalidTag:
            return None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            return None
