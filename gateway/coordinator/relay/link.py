"""The relay's side of the node link: the node's agent, authenticated by the node's API
key like the rest of `/api/node/*`, long-polls for relay calls and posts their answers.
A node receives only calls bound for it and can answer only those.

- `POST /node/relay/exchange`: the agent's usual request: the answers of the calls it
  has just handled, then (same request) a long poll for the next calls. A relayed call
  then costs one request on the node link instead of two. Sent with `work`, the same
  wait also ends when the node has work (`work: true` in the answer; watch.py), so an
  idle station holds this one long poll and no work poll.
- `GET /node/relay` and `POST /node/relay/responses`: the poll and the answers apart
  (older agents, and tools).

The exchange carries every relayed call, so its authentication is remembered: the
node an API key opens is looked up in the database (and its `last_seen` touched) at
most once per RELAY_AUTH_CACHE seconds (default 5) per key, like the relay tokens in
app.py. A key revoked or rotated stops working on the relay link within that time.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from types import SimpleNamespace

from flask import Blueprint, current_app, g, request

from gateway.coordinator import db
from gateway.coordinator.api.endpoint import endpoint
from gateway.coordinator.authz import authenticate_node, current_node
from gateway.coordinator.relay.schemas import (
    RelayExchangeIn,
    RelayExchangeOut,
    RelayPollOut,
    RelayPollQuery,
    RelayResponsesIn,
    RelayResponsesOut,
)
from gateway.coordinator.security import hash_api_key

__all__ = ["bp"]

bp = Blueprint("relay_link", __name__)


def hub():
    from gateway.coordinator.relay import hub_of

    return hub_of(current_app)


def watch_of(app):
    from gateway.coordinator.relay import watch_of

    return watch_of(app)


_KEYS = "dsgateway_relay_node_keys"  # app.extensions: key hash -> (until, node)
_keys_lock = threading.Lock()


def _authenticate() -> None:
    """authz.authenticate_node(), remembered for RELAY_AUTH_CACHE seconds per key;
    failures are never remembered."""
    key = request.headers.get("X-Api-Key") or ""
    digest = hash_api_key(key) if key else ""
    cache = current_app.extensions.setdefault(_KEYS, {})
    now = time.monotonic()
    hit = cache.get(digest) if digest else None
    if hit is not None and hit[0] > now:
        g.node = hit[1]
        return
    node = authenticate_node()  # 401 for a missing or unknown key
    db.commit()  # hold no transaction while waiting
    ttl = float(current_app.config.get("RELAY_AUTH_CACHE", 5))
    if digest and ttl > 0:
        known = SimpleNamespace(
            id=node.id,
            name=node.name,
            organization_id=node.organization_id,
            collaboration_id=node.collaboration_id,
        )
        with _keys_lock:
            if len(cache) > 10000:
                cache.clear()
            cache[digest] = (now + ttl, known)


def cached_node_auth(view):
    """Over `endpoint(auth="none", ...)`: the node's API key is checked first (401
    before 400, as endpoint() does), from the cache when it can."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        _authenticate()
        return view(*args, **kwargs)

    doc = view.openapi
    errors = tuple(sorted({*doc.errors, 401}))
    wrapper.openapi = dataclasses.replace(doc, auth="node", errors=errors)
    return wrapper


@bp.get("/node/relay")
@endpoint(
    auth="node",
    query=RelayPollQuery,
    response=RelayPollOut,
    summary="Long poll: relay calls (DataSHIELD HTTP requests) for this node's gateway",
)
def poll(query):
    node = current_node()
    db.commit()  # hold no transaction while waiting
    wait = min(float(query["wait"]), float(current_app.config["LONG_POLL_MAX"]))
    calls = hub().take(node.id, wait, query["limit"])
    return {"requests": [{**c.request, "id": c.id} for c in calls]}


@bp.post("/node/relay/responses")
@endpoint(
    auth="node",
    body=RelayResponsesIn,
    response=RelayResponsesOut,
    summary="Answers of this node's gateway to relay calls",
)
def responses(body):
    node = current_node()
    db.commit()
    return _deliver(node.id, body["responses"])


@bp.post("/node/relay/exchange")
@cached_node_auth
@endpoint(
    auth="none",
    body=RelayExchangeIn,
    response=RelayExchangeOut,
    summary="Answers to relay calls, then a long poll for the next ones, in one request",
)
def exchange(body):
    node = current_node()
    out = _deliver(node.id, body["responses"])
    wait = min(float(body["wait"]), float(current_app.config["LONG_POLL_MAX"]))
    watch = look = woken = None
    if body["work"] is not None:  # the agent wants to hear of work here
        watch = watch_of(current_app)
        look = watch.look(node.id, body["work"])
        if look.waiting:
            wait = 0  # say so at once
        woken = functools.partial(watch.moved, look)
    calls = []
    if body["limit"] > 0:
        calls = hub().take(node.id, wait, body["limit"], woken)
    out["requests"] = [{**c.request, "id": c.id} for c in calls]
    if watch is not None:
        out.update(watch.news(look))
    return out


def _deliver(node_id: int, items: list[dict]) -> dict:
    accepted, unknown = [], []
    for item in items:
        answer = {"status": item["status"], "headers": item["headers"], "body": item["body"]}
        (accepted if hub().respond(node_id, item["id"], answer) else unknown).append(item["id"])
    return {"accepted": accepted, "unknown": unknown}
