"""The central audit of relayed calls, written by a thread of its own, in batches.

Writing each call's `relay.call` event in the request's thread costs a database commit
(on SQLite an fsync) per call, and the client's next call on the same connection waits
for it (the server handles one request per connection at a time). Here the request
thread only queues the event; one writer commits whatever has queued up meanwhile in
one transaction. Events are written within moments, in order; refusals are still
written before the refusal is answered (app.py), so a refused caller is always on
record. `flush()` waits until every event queued so far is written.

What a `relay.call` records besides method, path, status and time (`call_detail`):
the DataSHIELD expression of the calls that carry one in their body (Armadillo's
`POST /execute` and `POST /symbols/<symbol>`, Opal's `POST .../aggregate` and
`PUT .../symbol/<symbol>`), cut to `EXPRESSION_LIMIT` characters and marked as cut, and
`bytes`, the size of the answer's body that left the station. No other request body is
ever recorded: a login's or any other call's body may hold secrets.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from types import SimpleNamespace
from typing import Any

from flask import Flask

from gateway.coordinator import audit, db

__all__ = ["EXPRESSION_LIMIT", "CallAuditor", "call_detail", "expression_of", "relayed_outcome"]

log = logging.getLogger(__name__)
_BATCH = 200

# The station's gateway says each answer's audit outcome in this header
# (gateway.node.audit_outcomes.OUTCOME_HEADER); the relay does not pass it on.
OUTCOME_HEADER = "x-dsgateway-outcome"
# The station's word -> the coordinator's: a value returned is "ok" here.
_STATION_OUTCOMES = {"returned": "ok", "ok": "ok", "refused": "refused", "blocked": "blocked"}


# The calls whose body is a DataSHIELD expression, per face: (method, whole path).
# Anything else (a login's profile, a workspace...) is never read for the record.
_EXPRESSION_CALLS = {
    "armadillo": [
        ("POST", re.compile(r"/execute")),
        ("POST", re.compile(r"/symbols/[^/]+")),
    ],
    "opal": [
        ("POST", re.compile(r"/ws/datashield/session/[^/]+/aggregate")),
        ("PUT", re.compile(r"/ws/datashield/session/[^/]+/symbol/[^/]+")),
    ],
}
EXPRESSION_LIMIT = 2000  # characters kept of an expression in the central record


def expression_of(face: str, method: str, path: str, body: bytes) -> dict[str, Any]:
    """The audit fields of a call's expression: {"expression": ...} for the calls that
    carry one (cut to EXPRESSION_LIMIT characters, the cut said in the text and by
    `expression_cut`: the whole length), else {} whatever the body holds."""
    calls = _EXPRESSION_CALLS.get(face, [])
    if not any(method == m and pattern.fullmatch(path) for m, pattern in calls):
        return {}
    # The station refuses what is not UTF-8; the record still shows what was sent.
    text = body.decode("utf-8", errors="replace")
    if len(text) <= EXPRESSION_LIMIT:
        return {"expression": text}
    return {
        "expression": f"{text[:EXPRESSION_LIMIT]}… [cut: {len(text)} characters in all]",
        "expression_cut": len(text),
    }


def call_detail(
    face: str, method: str, path: str, body: bytes, answer_body: bytes | None
) -> dict[str, Any]:
    """A relayed call's audit detail beyond method, path and status: its expression (if
    it carries one) and `bytes`, the length of the answer body (none: no answer came)."""
    detail = expression_of(face, method, path, body)
    if answer_body is not None:
        detail["bytes"] = len(answer_body)
    return detail


def relayed_outcome(status: int, headers) -> str:
    """A relayed call's outcome: the station's own (refused by its whitelist, blocked
    by a disclosure filter...) when it says one we know, else from the status alone. An
    unknown or missing word never makes a failed call look fine."""
    said = next((v for k, v in headers or [] if k.lower() == OUTCOME_HEADER), None)
    fallback = "ok" if status < 400 else "failed"
    outcome = _STATION_OUTCOMES.get((said or "").strip().lower())
    if outcome is None or (outcome == "ok" and status >= 400):
        return fallback
    return outcome


class CallAuditor:
    def __init__(self, app: Flask):
        self.app = app
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="relay-audit", daemon=True)
        self._thread.start()

    def put(self, grant: Any, detail: dict, outcome: str) -> None:
        self._queue.put((grant, detail, outcome))

    def flush(self, timeout: float = 30) -> bool:
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < _BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [i for i in items if not isinstance(i, threading.Event)]
            if events:
                try:
                    self._write(events)
                except Exception:  # the answers are gone already; say so in the log
                    log.exception("could not audit %d relay calls", len(events))
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()

    def _write(self, events: list[tuple]) -> None:
        with self.app.app_context():
            for grant, detail, outcome in events:
                target = SimpleNamespace(id=grant.node_id, collaboration_id=grant.collaboration_id)
                audit.record(
                    "relay.call",
                    target,
                    outcome=outcome,
                    target_type="node",
                    actor_type="user",
                    actor_id=grant.user_id,
                    actor_name=grant.user_name,
                    organization_id=grant.organization_id,
                    detail=detail,
                )
            db.commit()
