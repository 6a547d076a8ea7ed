"""One coordinator login, a `datashield.DSSession` over the nodes of a collaboration
through the coordinator's relay (docs/relay.md, "Python: one login").

    from gateway.client import CoordinatorClient

    c = CoordinatorClient("https://coordinator.example.org")
    c.login("alice", "...")
    session = c.datashield_session(study_id, "https://relay.example.org")  # opened
    session.assign_table("D", "demo/cohort/patients")
    import algorithms
    algorithms.glm(session, "y ~ x", family="binomial", data="D")

For each node (all of the collaboration's, or those named) the coordinator issues a
node-scoped relay token (`POST /api/auth/relay-token`); each login of the session is
our `ArmadilloDriver` on the relay listener with that token, named after the node.
Relay tokens are short-lived (RELAY_TOKEN_TTL, an hour by default): the connections
made here ask the coordinator for a new one when theirs is within `margin` seconds of
expiry (the coordinator login itself is refreshed by `CoordinatorClient`), so a long
analysis does not end with 401s. The R session at the node is bound to its cookie, not
to the token, so a renewed token carries on in the same session.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.client.armadillo import ArmadilloConnection, ArmadilloDriver
from gateway.client.errors import CoordinatorError

if TYPE_CHECKING:  # pragma: no cover
    from datashield import DSSession
    from datashield.interface import DSLoginInfo

    from gateway.client.coordinator import CoordinatorClient

__all__ = ["RelayArmadilloDriver", "RelayTokens", "relay_logins", "relay_session"]

DRIVER = "gateway.client.relay.RelayArmadilloDriver"
# An initial token -> where its renewals come from (the driver is named by a string in
# DSLoginInfo, so this is how a connection finds its token source).
_SOURCES: dict[str, tuple[RelayTokens, int]] = {}
_sources_lock = threading.Lock()


class RelayTokens:
    """Relay tokens of one collaboration's nodes from one coordinator login, each kept
    until `margin` seconds before it expires."""

    def __init__(self, client: CoordinatorClient, collaboration_id: int, margin: float = 60):
        self.client = client
        self.collaboration_id = collaboration_id
        self.margin = margin
        self._tokens: dict[int, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def token(self, node_id: int) -> str:
        with self._lock:
            held = self._tokens.get(node_id)
            if held is not None and time.monotonic() < held[1] - self.margin:
                return held[0]
            issued = self.client.relay_token(self.collaboration_id, node_id)
            until = time.monotonic() + float(issued["expires_in"])
            self._tokens[node_id] = (issued["token"], until)
            return issued["token"]


class RelayConnection(ArmadilloConnection):
    """An `ArmadilloConnection` whose bearer token is renewed from its `RelayTokens`."""

    def __init__(self, name: str, url: str, *, tokens: RelayTokens, node_id: int, **kw):
        self._tokens, self._node_id = tokens, node_id
        super().__init__(name, url, token=tokens.token(node_id), **kw)

    def _request(self, method: str, path: str, **kw):
        if not self.closed:
            token = self._tokens.token(self._node_id)
            if token != self.token:
                self.token = token
                self._http.headers["Authorization"] = f"Bearer {token}"
        return super()._request(method, path, **kw)


class RelayArmadilloDriver(ArmadilloDriver):
    """``driver=DRIVER`` for logins made by `relay_logins` (their token names its
    source); any other token is used as a plain Armadillo bearer token."""

    @classmethod
    def new_connection(cls, args: DSLoginInfo, restore: str | None = None):
        with _sources_lock:
            source = _SOURCES.get(args.token or "")
        if source is None:
            return super().new_connection(args, restore)
        tokens, node_id = source
        return RelayConnection(
            args.name,
            args.url,
            tokens=tokens,
            node_id=node_id,
            profile=args.profile,
            restore=restore,
        )


def relay_logins(
    client: CoordinatorClient,
    collaboration_id: int,
    relay_url: str,
    nodes: Sequence[int | str] | None = None,
    *,
    profile: str = "default",
    margin: float = 60,
) -> list[DSLoginInfo]:
    """`DSLoginInfo`s (one per node, named after it) for `datashield.DSSession`: every
    node of the collaboration, or those in `nodes` (ids or names)."""
    from datashield import DSLoginBuilder

    if not relay_url.startswith(("http://", "https://")):
        raise ValueError(f"the relay URL must start with http:// or https://, not {relay_url!r}")
    known = client.nodes(collaboration_id)
    chosen = known
    if nodes is not None:
        by_key = {n["id"]: n for n in known} | {n["name"]: n for n in known}
        missing = [n for n in nodes if n not in by_key]
        if missing:
            raise CoordinatorError(
                f"Not nodes of collaboration {collaboration_id}: {missing}.", status=None
            )
        chosen = [by_key[n] for n in dict.fromkeys(nodes)]
    if not chosen:
        raise CoordinatorError(f"Collaboration {collaboration_id} has no nodes.", status=None)
    tokens = RelayTokens(client, collaboration_id, margin)
    builder = DSLoginBuilder()
    url = relay_url.rstrip("/")
    for node in chosen:
        token = tokens.token(node["id"])
        with _sources_lock:
            _SOURCES[token] = (tokens, node["id"])
        builder.add(node["name"], url, token=token, profile=profile, driver=DRIVER)
    return builder.build()


def relay_session(
    client: CoordinatorClient,
    collaboration_id: int,
    relay_url: str,
    nodes: Sequence[int | str] | None = None,
    *,
    profile: str = "default",
    margin: float = 60,
) -> DSSession:
    """An opened `datashield.DSSession` over the nodes, through the relay."""
    from datashield import DSSession

    session = DSSession(
        relay_logins(client, collaboration_id, relay_url, nodes, profile=profile, margin=margin)
    )
    session.open()
    return session
