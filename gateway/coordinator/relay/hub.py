"""Relay calls in flight: the meeting point of a researcher's waiting HTTP request and
the node agent's long poll.

A relay call is a DataSHIELD HTTP request (method, path, query, headers, body) bound for
one node. `call()` queues it and waits (bounded) for the agent's answer; the agent's
long poll (`take()`) receives queued calls; `respond()` hands an answer back to the
waiting request.

Everything is in this process's memory, on purpose: a relay call lives exactly as long
as the client's HTTP connection to this process, so after a coordinator restart there
is nobody left to answer, and storing calls in the database would only leave stale
rows. What must survive a restart lives elsewhere: the R sessions (at the node, bound
to the client's cookie) and the authorisation (the token, the database). The price is
that the relay listener and the agents' relay polls must be served by the same process
(see docs/relay.md).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeLost", "RelayCall", "RelayHub"]


class NodeLost(Exception):
    """The node's agent stopped polling while the call was waiting for its answer."""


@dataclass
class RelayCall:
    node_id: int
    request: dict[str, Any]
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    done: threading.Event = field(default_factory=threading.Event)
    response: dict[str, Any] | None = None


class RelayHub:
    """Per-node queues of relay calls, with long-poll wake-ups.

    A node counts as connected for the relay while one of its agent's polls is waiting
    here, or one ended less than `grace` seconds ago (the agent is between two polls).
    """

    def __init__(self, grace: float = 10.0):
        self.grace = grace
        self._lock = threading.Lock()
        self._conds: dict[int, threading.Condition] = {}
        self._queues: dict[int, deque[RelayCall]] = defaultdict(deque)
        self._calls: dict[str, RelayCall] = {}
        self._polling: dict[int, int] = defaultdict(int)
        self._last_poll: dict[int, float] = {}

    def _cond(self, node_id: int) -> threading.Condition:
        cond = self._conds.get(node_id)
        if cond is None:
            cond = self._conds.setdefault(node_id, threading.Condition(self._lock))
        return cond

    def connected(self, node_id: int) -> bool:
        with self._lock:
            if self._polling[node_id] > 0:
                return True
            last = self._last_poll.get(node_id)
        return last is not None and time.monotonic() - last < self.grace

    def call(self, node_id: int, request: dict[str, Any], timeout: float) -> dict | None:
        """Queue the request for the node and wait for its answer; None on timeout.
        NodeLost if the node's agent stops polling meanwhile (it died, or lost the
        link): the caller need not wait out the whole timeout for an answer that will
        never come."""
        call = RelayCall(node_id, request)
        with self._lock:
            self._calls[call.id] = call
            self._queues[node_id].append(call)
            self._cond(node_id).notify_all()
        end = time.monotonic() + timeout
        answered = False
        while not answered:
            left = end - time.monotonic()
            if left <= 0:
                break
            answered = call.done.wait(min(left, 1.0))
            if not answered and not self.connected(node_id) and not call.done.is_set():
                self._forget(call)
                raise NodeLost(f"node {node_id} stopped polling")
        self._forget(call)
        return call.response if answered else None

    def _forget(self, call: RelayCall) -> None:
        node_id = call.node_id
        with self._lock:
            self._calls.pop(call.id, None)
            try:
                self._queues[node_id].remove(call)  # never taken: nobody will answer
            except ValueError:
                pass

    def take(self, node_id: int, wait: float, limit: int) -> list[RelayCall]:
        """The node's queued calls (at most `limit`), waiting up to `wait` s for one."""
        end = time.monotonic() + wait
        cond = self._cond(node_id)
        with self._lock:
            self._polling[node_id] += 1
            try:
                while True:
                    queue = self._queues[node_id]
                    if queue:
                        return [queue.popleft() for _ in range(min(limit, len(queue)))]
                    left = end - time.monotonic()
                    if left <= 0:
                        return []
                    cond.wait(left)
            finally:
                self._polling[node_id] -= 1
                self._last_poll[node_id] = time.monotonic()

    def respond(self, node_id: int, call_id: str, response: dict[str, Any]) -> bool:
        """Hand the node's answer to the waiting request. False if no request of this
        node waits for it (it timed out, or the id is another node's)."""
        with self._lock:
            call = self._calls.get(call_id)
            if call is None or call.node_id != node_id or call.done.is_set():
                return False
            call.response = response
            call.done.set()
            return True

    def pending(self, node_id: int) -> int:
        with self._lock:
            return len(self._queues[node_id])
