"""Work news on the relay exchange: an idle station holds one long poll, not two.

An agent that also relays (every `dsgateway node run` station) already holds a relay
exchange open all the time. Sent with `work` (its last `work_seen`, or "" at first),
that same exchange also ends as soon as the node has work, and answers `work: true`;
the agent then fetches it with a work poll that does not wait (`GET /api/node/work?
wait=0`). So an idle station costs the coordinator one request per poll period
instead of two (each also a connection waitress' loop looks at on every turn), and
`GET /api/node/work` long polls keep working as before for agents that do not relay.

Nothing may be missed between the agent's last work poll and the exchange's wait:

- `work_seen` is the node's work-notification version in this process (with the
  notifier's epoch, so another process's or an earlier life's is never mistaken for
  it). The exchange reads the version first; if the agent's `work_seen` is another,
  something may have been dispatched since the agent last heard, and the database
  says whether runs are waiting (one indexed query). The same version then bounds
  the wait: any later dispatch moves it (dispatch notifies after its commit), which
  ends the wait through the hub's `poke` (a notifier listener).
- A notifier that may lose a notification (Redis pub/sub, while reconnecting) gets
  the database check at most every `recheck` seconds per node even when the version
  matches, so a lost one is found within one poll period.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from gateway.coordinator import db
from gateway.coordinator.models import utcnow
from gateway.coordinator.notify import WorkNotifier
from gateway.coordinator.runs import PENDING_RUNS_OF_NODE

__all__ = ["Look", "WorkWatch"]

# Runs a work poll of this node would claim now: one is enough to know.
_WORK_WAITING = PENDING_RUNS_OF_NODE.limit(1)


@dataclass(frozen=True)
class Look:
    node_id: int
    version: int  # the node's notification version when the exchange began
    waiting: bool  # the database showed runs waiting


class WorkWatch:
    def __init__(self, notifier: WorkNotifier):
        self.notifier = notifier
        self._checked: dict[int, float] = {}  # node -> when the database was last asked
        self._lock = threading.Lock()

    def _token(self, version: int) -> str:
        return f"{self.notifier.epoch}:{version}"

    def look(self, node_id: int, seen: str) -> Look:
        """Where this node's work stands as an exchange begins; `seen` is the agent's
        last `work_seen`."""
        self.notifier.listen()
        version = self.notifier.version(node_id)
        now = time.monotonic()
        with self._lock:
            stale = (
                not self.notifier.exact
                and now - self._checked.get(node_id, 0.0) > self.notifier.recheck
            )
        if seen == self._token(version) and not stale:
            return Look(node_id, version, False)
        s = db.session()
        waiting = s.execute(_WORK_WAITING, {"node_id": node_id, "now": utcnow()}).first()
        db.commit()  # hold no transaction while the exchange waits
        with self._lock:
            self._checked[node_id] = now
        return Look(node_id, version, waiting is not None)

    def moved(self, look: Look) -> bool:
        """Whether the node has been notified of work since `look`."""
        return self.notifier.version(look.node_id) != look.version

    def news(self, look: Look) -> dict:
        """The exchange's answer about work: whether to fetch it, and the version the
        agent sends back next time. Everything dispatched up to that version was
        committed before it moved, so the agent's next work poll finds it."""
        version = self.notifier.version(look.node_id)
        return {"work": look.waiting or version != look.version, "work_seen": self._token(version)}
