"""How a waiting long poll learns that its node has new work.

`WorkNotifier` is the interface: `version(node_id)` before looking for work, then
`wait(node_id, version, timeout)` returns as soon as `notify` was called for that node
after the version was read (so a notification between the look and the wait is never
lost). Two implementations:

- `LocalWorkNotifier`: a condition variable; enough when dispatch runs in the same
  process as the API (the embedded default).
- `RedisWorkNotifier`: Redis pub/sub; dispatch in a Celery worker on another machine
  wakes the poll in whichever API process holds it. Pub/sub may drop a message while a
  connection is re-made, so polls also look again every `recheck` seconds, and every
  node counts as notified once the listener has subscribed again after losing Redis.

Listeners (`add_listener`) hear of every wake-up after the versions have moved: the
relay hub uses this to end an agent's relay exchange that watches for work
(gateway/coordinator/relay/watch.py), so an idle agent holds one long poll, not two.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["LocalWorkNotifier", "RedisWorkNotifier", "WorkNotifier", "make_notifier"]

log = logging.getLogger(__name__)


class WorkNotifier:
    recheck: float = 30.0
    # True when every notify reaches every wait (one process): a poll that timed out
    # need not look for work again.
    exact: bool = False

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._versions: dict[int, int] = defaultdict(int)
        self._listeners: list[Callable[[list[int]], None]] = []
        # Versions are this object's own counters: the epoch tells one process's (or
        # one life's) versions from another's when an agent hands one back.
        self.epoch = secrets.token_hex(4)

    def add_listener(self, listener: Callable[[list[int]], None]) -> None:
        """`listener(node_ids)` after every wake-up of these nodes (outside the lock)."""
        self._listeners.append(listener)

    def listen(self) -> None:
        """Be ready to hear notifications from elsewhere (a no-op in one process)."""

    def version(self, node_id: int) -> int:
        with self._cond:
            return self._versions[node_id]

    def wait(self, node_id: int, version: int, timeout: float) -> bool:
        """True if notified, False on timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._versions[node_id] == version:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _wake(self, node_ids: Iterable[int] | None) -> None:
        """Move these nodes' versions (None: every node's), then tell the listeners."""
        with self._cond:
            ids = list(self._versions) if node_ids is None else list(node_ids)
            for node_id in ids:
                self._versions[node_id] += 1
            self._cond.notify_all()
        for listener in self._listeners:  # not under the lock: they take their own
            try:
                listener(ids)
            except Exception:  # a listener's fault must not lose the notification
                log.exception("work notifier listener failed")

    def notify(self, node_ids: Iterable[int]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalWorkNotifier(WorkNotifier):
    recheck = 60.0
    exact = True

    def notify(self, node_ids: Iterable[int]) -> None:
        self._wake(node_ids)


class RedisWorkNotifier(WorkNotifier):
    recheck = 15.0

    def __init__(self, url: str, channel: str = "dsgateway:work"):
        super().__init__()
        self._channel = channel
        import redis

        self._redis = redis.Redis.from_url(url)
        self._url = url
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()

    def _ensure_listener(self) -> None:
        # Started on first wait, so worker processes (which only notify) never subscribe.
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._listen, name="dsgateway-work-notify", daemon=True
                )
                self._thread.start()

    def listen(self) -> None:
        """Started, and subscribed (waiting a little the first time): a notification
        published before the subscription would reach nobody here."""
        if self._thread is None:
            self._ensure_listener()
            self._subscribed.wait(2.0)

    def _listen(self) -> None:
        backoff = 0.5
        lost = False
        while not self._stop.is_set():
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                backoff = 0.5
                self._subscribed.set()
                if lost:  # messages published meanwhile are gone: everyone looks again
                    lost = False
                    self._wake(None)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        ids = [int(x) for x in message["data"].split(b",") if x.strip()]
                        self._wake(ids)
            except Exception as err:  # Redis away: wait and subscribe again
                log.warning("work notifier lost Redis (%s); retrying", err)
                lost = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def wait(self, node_id: int, version: int, timeout: float) -> bool:
        self._ensure_listener()
        return super().wait(node_id, version, timeout)

    def notify(self, node_ids: Iterable[int]) -> None:
        ids = list(node_ids)
        self._wake(ids)  # polls held by this very process
        try:
            self._redis.publish(self._channel, ",".join(str(i) for i in ids))
        except Exception as err:  # polls look again within `recheck` seconds anyway
            log.warning("could not publish work notification: %s", err)

    def close(self) -> None:
        self._stop.set()


def make_notifier(settings: dict[str, Any]) -> WorkNotifier:
    kind = settings.get("WORK_NOTIFIER", "auto")
    if kind == "auto":
        broker = str(settings.get("CELERY_BROKER_URL", ""))
        kind = "redis" if broker.startswith(("redis://", "rediss://")) else "local"
    if kind == "local":
        return LocalWorkNotifier()
    if kind == "redis":
        url = settings.get("REDIS_URL") or settings.get("CELERY_BROKER_URL")
        if not url or not str(url).startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("WORK_NOTIFIER=redis needs REDIS_URL (redis://...)")
        return RedisWorkNotifier(url, f"{settings.get('CELERY_QUEUE', 'dsgateway')}:work")
    raise ValueError(f"WORK_NOTIFIER must be 'auto', 'local' or 'redis', not {kind!r}")
