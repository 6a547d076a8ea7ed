"""Relay calls in flight: the meeting point of a researcher's waiting HTTP request and
the node agent's long poll.

A relay call is a DataSHIELD HTTP request (method, path, query, headers, body) bound for
one node. `call()` queues it and waits (bounded) for the agent's answer; the agent's
long poll (`take()`) receives queued calls; `respond()` hands an answer back to the
waiting request.

Calls are never stored in the database, on purpose: a relay call lives exactly as long
as the client's HTTP connection, so after a coordinator restart there is nobody left to
answer, and stored calls would only go stale. What must survive a restart lives
elsewhere: the R sessions (at the node, bound to the client's cookie) and the
authorisation (the token, the database). Two hubs with one interface (`make_hub`):
`RelayHub`, in this process's memory (the relay listener and the agents' relay polls
must then be served by the same process), and `RedisRelayHub`, through Redis (any
processes, any machines).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeLost", "RedisRelayHub", "RelayCall", "RelayHub", "make_hub"]


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

    def take(
        self, node_id: int, wait: float, limit: int, woken: Callable[[], bool] | None = None
    ) -> list[RelayCall]:
        """The node's queued calls (at most `limit`), waiting up to `wait` s for one.
        With `woken`, the wait also ends (with no calls) once `woken()` is true; it is
        asked again after every `poke` of this node."""
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
                    if left <= 0 or (woken is not None and woken()):
                        return []
                    cond.wait(left)
            finally:
                self._polling[node_id] -= 1
                self._last_poll[node_id] = time.monotonic()

    def poke(self, node_ids: Iterable[int]) -> None:
        """Have these nodes' waiting `take`s ask their `woken` again."""
        with self._lock:
            for node_id in node_ids:
                cond = self._conds.get(node_id)
                if cond is not None:
                    cond.notify_all()

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


class RedisRelayHub:
    """The same hub through Redis: the relay listener and the agents' relay polls may be
    served by different processes, on different machines (several API processes behind
    a load balancer). Keys (all expire):

    - `<prefix>:q:<node>`: the node's queue of calls (a list of JSON);
    - `<prefix>:c:<call>`: the node a waiting call is for (deleted by its one answer);
    - `<prefix>:a:<call>`: the answer, popped by the waiting listener;
    - `<prefix>:poll:<node>`: present while the node polls, and `grace` s after;
    - `<prefix>:w:<node>`: a wake-up for a `take` with `woken` (pushed by `poke` in a
      process where such a take waits, after its `woken()` has become true).

    Calls are still not kept beyond the caller's wait: if Redis or the listener goes,
    the caller's connection goes too.
    """

    def __init__(self, url: str, prefix: str = "dsgateway:relay", grace: float = 10.0):
        import redis

        self._redis = redis.Redis.from_url(url)
        self.prefix = prefix
        self.grace = grace
        # takes with `woken` waiting in this process, per node: only those are poked
        self._watching: dict[int, int] = defaultdict(int)
        self._watch_lock = threading.Lock()

    def _key(self, kind: str, ident: Any) -> str:
        return f"{self.prefix}:{kind}:{ident}"

    def connected(self, node_id: int) -> bool:
        return bool(self._redis.exists(self._key("poll", node_id)))

    def call(self, node_id: int, request: dict[str, Any], timeout: float) -> dict | None:
        call_id = secrets.token_hex(12)
        payload = json.dumps({"id": call_id, "request": request, "until": time.time() + timeout})
        queue, owner, answer_key = (
            self._key("q", node_id),
            self._key("c", call_id),
            self._key("a", call_id),
        )
        pipe = self._redis.pipeline()
        pipe.set(owner, node_id, ex=int(timeout) + 60)
        pipe.lpush(queue, payload)
        pipe.expire(queue, int(timeout) + 60)
        pipe.execute()
        end = time.monotonic() + timeout
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                got = self._redis.blpop([answer_key], timeout=max(0.01, min(left, 1.0)))
                if got is not None:
                    return json.loads(got[1])
                if not self.connected(node_id):
                    raise NodeLost(f"node {node_id} stopped polling")
        finally:
            pipe = self._redis.pipeline()
            pipe.delete(owner, answer_key)
            pipe.lrem(queue, 0, payload)  # never taken: nobody will answer
            pipe.execute()

    def take(
        self, node_id: int, wait: float, limit: int, woken: Callable[[], bool] | None = None
    ) -> list[RelayCall]:
        poll, queue = self._key("poll", node_id), self._key("q", node_id)
        wake = self._key("w", node_id)
        self._redis.set(poll, 1, ex=int(wait + self.grace) + 1)
        if woken is not None:
            with self._watch_lock:
                self._watching[node_id] += 1
        try:
            raw = []
            if wait <= 0:
                one = self._redis.rpop(queue)
                raw += [one] if one is not None else []
            end = time.monotonic() + wait
            keys = [queue] if woken is None else [queue, wake]
            while not raw:
                left = end - time.monotonic()
                if left <= 0 or (woken is not None and woken()):
                    break
                # (a timeout that rounds to 0 ms would block for ever)
                got = self._redis.brpop(keys, timeout=max(left, 0.01))
                if got is None:
                    break
                if got[0].decode() == queue:
                    raw.append(got[1])
                # else a wake-up: ask `woken` again (it may be another process's)
            if raw and limit > 1:
                raw += self._redis.rpop(queue, limit - 1) or []
            calls = []
            for item in raw:
                data = json.loads(item)
                if data["until"] < time.time() or not self._redis.exists(
                    self._key("c", data["id"])
                ):
                    continue  # its caller has given up
                calls.append(RelayCall(node_id, data["request"], id=data["id"]))
            return calls
        finally:
            if woken is not None:
                with self._watch_lock:
                    self._watching[node_id] -= 1
                    if self._watching[node_id] <= 0:
                        del self._watching[node_id]
            self._redis.set(poll, 1, ex=max(1, round(self.grace)))

    def poke(self, node_ids: Iterable[int]) -> None:
        """Wake this process's waiting `take`s (with `woken`) of these nodes: at most one
        wake-up is kept per node (it expires), and none for nodes nobody here waits for."""
        with self._watch_lock:
            ids = [n for n in node_ids if self._watching.get(n)]
        if not ids:
            return
        pipe = self._redis.pipeline()
        for node_id in ids:
            wake = self._key("w", node_id)
            pipe.delete(wake)
            pipe.rpush(wake, 1)
            pipe.expire(wake, 60)
        pipe.execute()

    def respond(self, node_id: int, call_id: str, response: dict[str, Any]) -> bool:
        owner = self._key("c", call_id)
        if self._redis.get(owner) != str(node_id).encode():
            return False
        if self._redis.delete(owner) != 1:
            return False  # answered already
        answer_key = self._key("a", call_id)
        pipe = self._redis.pipeline()
        pipe.rpush(answer_key, json.dumps(response))
        pipe.expire(answer_key, 60)
        pipe.execute()
        return True

    def pending(self, node_id: int) -> int:
        return int(self._redis.llen(self._key("q", node_id)))


def make_hub(settings: dict[str, Any]) -> RelayHub | RedisRelayHub:
    """RELAY_HUB: `local` (this process), `redis` (REDIS_URL, else the broker's), or
    `auto` (the default): redis when the Celery broker is Redis, as for the work
    notifier."""
    kind = settings.get("RELAY_HUB", "auto")
    grace = float(settings.get("RELAY_POLL_GRACE", 10))
    broker = str(settings.get("CELERY_BROKER_URL", ""))
    if kind == "auto":
        kind = "redis" if broker.startswith(("redis://", "rediss://")) else "local"
    if kind == "local":
        return RelayHub(grace=grace)
    if kind == "redis":
        url = settings.get("REDIS_URL") or broker
        if not str(url).startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("RELAY_HUB=redis needs REDIS_URL (redis://...)")
        prefix = f"{settings.get('CELERY_QUEUE', 'dsgateway')}:relay"
        return RedisRelayHub(str(url), prefix, grace=grace)
    raise ValueError(f"RELAY_HUB must be 'auto', 'local' or 'redis', not {kind!r}")
