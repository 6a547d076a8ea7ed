"""kombu's in-memory transport, woken by its messages instead of polled.

kombu's virtual transports have no way to wait on a queue: `Transport.drain_events`
checks the queues and, finding them empty, sleeps `polling_interval` and checks again,
until the caller's timeout (Celery's worker loop for a non-asynchronous transport,
`synloop`, drains with a 2 s timeout, over and over). At the 50 ms the embedded
coordinator needs for a prompt dispatch, an idle coordinator woke 20 times a second for
nothing.

Here every message put on a queue (a publish, a fanout, a message given back by a
channel that closed) counts up and notifies a process-wide condition, and
`drain_events` waits on that condition between checks. The count is read before each
check, so a message put between the check and the wait is not missed: the wait returns
at once. Idle, the worker wakes only when Celery's loop timeout ends its drain; a
queued task is taken as soon as it is put.

The queues stay those of kombu's memory transport (its state is process-wide), so this
transport and a plain `memory://` one see the same messages; only puts made through
this one wake its waiters. Any wait is at most `RECHECK` seconds, after which the
queues are checked again even without a signal. If waiting fails at all, the transport
falls back to kombu's own polling for good.

Used for the embedded coordinator only (celery_app.py sets it as `broker_transport`
for a `memory://` broker URL); the Redis mode does not touch it.
"""

from __future__ import annotations

import logging
import threading
from time import monotonic
from typing import Any

from kombu.transport import memory
from kombu.transport.virtual.base import Empty

__all__ = ["RECHECK", "Channel", "Transport"]

log = logging.getLogger(__name__)

#: The longest wait without checking the queues again (a message that arrived without
#: a signal, e.g. through a plain memory:// connection, is still taken within this).
RECHECK = 2.0


class _Arrivals:
    """A count of messages put, and a condition notified with each."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0
        self.broken = False  # set if waiting failed: every drain polls from then on

    def signal(self) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Wait until a message has been put since the count was `seen`, or `timeout`."""
        with self._cond:
            if self.count == seen:
                self._cond.wait(timeout)


ARRIVALS = _Arrivals()


def _signal() -> None:
    # The message is already queued: a failed signal must not fail the publish, but the
    # waiters could sleep through it, so they poll from now on.
    try:
        ARRIVALS.signal()
    except Exception:
        ARRIVALS.broken = True
        log.exception("could not signal a queued message; the worker polls from now on")


class Channel(memory.Channel):
    """kombu's in-memory channel (the same process-wide queues) that signals its puts."""

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        super()._put(queue, message, **kwargs)
        _signal()

    def _put_fanout(self, exchange: str, message: Any, routing_key: str, **kwargs: Any) -> None:
        super()._put_fanout(exchange, message, routing_key, **kwargs)
        _signal()


class Transport(memory.Transport):
    """kombu's in-memory transport whose `drain_events` waits for a put between checks."""

    Channel = Channel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.checks = 0  # times the queues were looked at (what polling multiplies)

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        if ARRIVALS.broken:
            return super().drain_events(connection, timeout=timeout)
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            seen = ARRIVALS.count  # before the check: a put after it ends the wait
            self.checks += 1
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            wait = RECHECK if deadline is None else min(RECHECK, deadline - monotonic())
            if wait <= 0:
                raise TimeoutError()  # socket.timeout, what kombu and Celery catch
            try:
                ARRIVALS.wait(seen, wait)
            except Exception:
                ARRIVALS.broken = True
                log.exception("waiting for messages failed; the worker polls from now on")
                left = None if deadline is None else max(deadline - monotonic(), 0.001)
                return super().drain_events(connection, timeout=left)
