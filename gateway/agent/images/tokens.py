"""Where an image run's short-lived gateway token (DSGATEWAY_TOKEN) comes from.

The gateway accepts Bearer JWTs signed with the key its `tokens` settings name
(docs/configuration.md): the coordinator's relay key. Two sources:
- `ItemTokenSource` (`tokens_from: coordinator`): the coordinator put a relay token for
  the run's researcher and this node in the work item (`gateway_token`, signed with the
  relay key the gateway already verifies relayed calls with: works with RS256 keys,
  where the node cannot sign; it expires with the task's deadline or RELAY_TOKEN_TTL,
  whichever is first, and names the projects the coordinator lets the collaboration
  read at this node);
- `JwtTokenMinter`: the node signs one itself, when it holds the signing key (an HS256
  secret shared with the coordinator, the embedded one-machine set-up, and the tests).
Either way the token names the researcher (`sub`), the projects the node's policy lets
runs read (`projects`), and expires with the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt

__all__ = ["ItemTokenSource", "JwtTokenMinter", "TokenSource", "TokenUnavailable"]

#: Seconds a token outlives the run's wall-time limit (clock skew, the last request).
TOKEN_MARGIN = 60


class TokenUnavailable(Exception):
    """No token can be had for this run; the run fails with this message."""


class TokenSource:
    def token_for(
        self,
        *,
        user: str,
        projects: Iterable[str],
        ttl: float,
        run_id: str,
        item: Mapping[str, Any] | None = None,
    ) -> str:
        raise NotImplementedError


class ItemTokenSource(TokenSource):
    """The token the coordinator sent with the work item (`item[field]`)."""

    def __init__(self, field: str = "gateway_token"):
        self.field = field

    def token_for(self, *, user, projects, ttl, run_id, item=None) -> str:
        token = (item or {}).get(self.field)
        if not isinstance(token, str) or not token:
            raise TokenUnavailable(
                f"The work item carries no gateway token ({self.field}): this node takes "
                f"its run tokens from the coordinator (images.tokens_from: coordinator), "
                f"and the coordinator sent none (it has no relay signing key: "
                f"RELAY_PRIVATE_KEY_FILE or RELAY_SECRET). The run cannot reach the gateway."
            )
        return token


class JwtTokenMinter(TokenSource):
    def __init__(self, key: str | bytes, *, issuer: str, audience: str, algorithm: str = "HS256"):
        self.key = key
        self.issuer = issuer
        self.audience = audience
        self.algorithm = algorithm

    @classmethod
    def for_gateway(cls, tokens) -> JwtTokenMinter:
        """A minter for a gateway whose `tokens` settings (`TokenConfig`) use an HS256
        secret from the environment."""
        if tokens is None or not tokens.secret_env:
            raise TokenUnavailable(
                "The gateway verifies tokens with a public key, so this node cannot sign "
                "run tokens: have the coordinator send them (ItemTokenSource)."
            )
        secret = os.environ.get(tokens.secret_env, "")
        if not secret:
            raise TokenUnavailable(f"The token secret ${tokens.secret_env} is not set.")
        algorithm = tokens.algorithms[0] if tokens.algorithms else "HS256"
        return cls(secret, issuer=tokens.issuer, audience=tokens.audience, algorithm=algorithm)

    def token_for(self, *, user, projects, ttl, run_id, item=None) -> str:
        now = int(time.time())
        claims = {
            "sub": user,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + int(ttl) + TOKEN_MARGIN,
            "projects": sorted(projects),
            "jti": f"image-run-{run_id}",
        }
        return jwt.encode(claims, self.key, algorithm=self.algorithm)
