"""When a node's `last_seen` is written.

Every request with a node's API key shows the node is alive. An idle station comes
back once per long poll (up to LONG_POLL_MAX, 60 s); writing its time on each return
costs an UPDATE and a commit (a WAL sync on SQLite) per poll, which for 200 idle
stations was most of the coordinator's idle CPU. So:

- a node seen less than GRANULARITY (15 s) ago is not written again;
- a node seen recently (it is shown online, and will be for a while yet) has its new
  time queued here and written with the other queued nodes in one transaction, at most
  FLUSH_EVERY (10 s) later, by a daemon thread that runs only while there is something
  to write;
- a node not seen for longer (a new node, one coming back, or every node when
  NODE_OFFLINE_AFTER is short) is written at once, so it shows online at once.

"Recently" leaves room for the queue: a node queued at its last contact is written
within FLUSH_EVERY, so a node that keeps polling is never shown offline while it polls
(the database's time lags at most one poll plus FLUSH_EVERY behind, under
NODE_OFFLINE_AFTER). A queued time lost with the process (a crash) costs only that:
the node looks seen up to one poll earlier than it was.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from flask import Flask, current_app
from sqlalchemy import bindparam, update
from sqlalchemy.orm.attributes import set_committed_value

from gateway.coordinator import db
from gateway.coordinator.models import Node, utcnow

__all__ = ["FLUSH_EVERY", "GRANULARITY", "SeenQueue", "touch_node"]

log = logging.getLogger(__name__)

GRANULARITY = timedelta(seconds=15)
FLUSH_EVERY = 10.0  # seconds

_EXT = "dsgateway_seen_queue"
# On the table, not the ORM entity: one statement run for many rows (executemany), and
# no object in the session is touched.
_NODES = Node.__table__
_WRITE = (
    update(_NODES).where(_NODES.c.id == bindparam("node_id")).values(last_seen=bindparam("seen"))
)


class SeenQueue:
    """Nodes' times waiting to be written (the latest per node), and the thread that
    writes them."""

    def __init__(self, app: Flask, flush_every: float = FLUSH_EVERY):
        self.app, self.flush_every = app, flush_every
        self._pending: dict[int, datetime] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, node_id: int, seen: datetime) -> None:
        with self._cond:
            self._pending[node_id] = max(seen, self._pending.get(node_id, seen))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="dsgateway-last-seen", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def pending(self) -> dict[int, datetime]:
        with self._cond:
            return dict(self._pending)

    def flush(self) -> int:
        """Write what is queued now (one transaction); how many nodes."""
        with self._cond:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        rows = [{"node_id": node_id, "seen": seen} for node_id, seen in batch.items()]
        try:
            with db.session_scope(self.app) as s:
                s.execute(_WRITE, rows)
        except Exception:
            # Put them back (unless newer times came meanwhile) for the next turn.
            log.exception("could not write %d nodes' last_seen; will retry", len(rows))
            with self._cond:
                for node_id, seen in batch.items():
                    self._pending[node_id] = max(seen, self._pending.get(node_id, seen))
            return 0
        return len(rows)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self.flush()

    def _run(self) -> None:
        while True:
            with self._cond:
                # Sleep without a timeout while there is nothing to write.
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            # Gather a flush period's worth of contacts, then write them at once.
            with self._cond:
                self._cond.wait_for(lambda: self._closed, timeout=self.flush_every)
            self.flush()


def seen_queue(app: Flask | None = None) -> SeenQueue:
    app = app or current_app._get_current_object()
    queue = app.extensions.get(_EXT)
    if queue is None:
        queue = app.extensions.setdefault(_EXT, SeenQueue(app))
    return queue


def touch_node(node: Node, force: bool = False) -> None:
    """Record that the node was seen now. `force`: write it at once whatever its last
    time (the heartbeat, whose answer carries the time written).

    The node's row is never left dirty in the request's session: liveness is not part
    of what a request changes, and keeping the row locked for the length of a request
    would make two requests of one node wait on each other (and, with run rows locked
    in another order, deadlock)."""
    now = utcnow()
    last = node.last_seen
    if not force and last is not None and now - last <= GRANULARITY:
        return
    offline_after = timedelta(seconds=float(current_app.config["NODE_OFFLINE_AFTER"]))
    # The database's time may lag FLUSH_EVERY behind; queue only while that leaves the
    # node shown online until its queued time is written.
    queue_within = offline_after - timedelta(seconds=2 * FLUSH_EVERY)
    if not force and last is not None and now - last <= queue_within:
        seen_queue().add(node.id, now)
    else:
        s = db.session()
        s.execute(_WRITE, {"node_id": node.id, "seen": now})
        s.commit()
    set_committed_value(node, "last_seen", now)
