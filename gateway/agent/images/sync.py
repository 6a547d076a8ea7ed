"""The node's image approvals, kept in step with the coordinator (docs/client-images.md).

The node's store is the authority; the coordinator holds a mirror so researchers see
where an image may run. `ApprovalSync` (one thread per agent):
- pushes the whole store (`PUT /api/node/images`) when the agent starts and whenever it
  changed (a steward's CLI command, a run asking for an undecided digest, a decision
  from the coordinator), looking every `interval` seconds or at once when nudged;
- takes the decisions stewards queued at the coordinator, applies each to the store if
  this node accepts decisions from the coordinator (else refuses it, saying why),
  reports the outcome, and pushes the store again.
Every decision taken or refused is in the node's audit log (`image_approve` ... with
the steward's name "via coordinator", or `image_decision` refused).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from gateway.agent.images.policy import ImagePolicy, PolicyError
from gateway.agent.link import CoordinatorLink, LinkError

__all__ = ["ApprovalSync"]

log = logging.getLogger(__name__)

REFUSED_BY_CONFIG = (
    "This node does not take image decisions from the coordinator "
    "(images.coordinator_decisions is false): ask its data steward to decide at the node."
)


class ApprovalSync:
    def __init__(
        self,
        link: CoordinatorLink,
        policy: ImagePolicy,
        *,
        accept_decisions: bool = True,
        interval: float = 10.0,
        audit: Any = None,
    ):
        self.link = link
        self.policy = policy
        self.accept_decisions = accept_decisions
        self.interval = interval
        self.audit = audit
        self._pushed: tuple | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ApprovalSync:
        self._thread = threading.Thread(target=self._loop, name="image-sync", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def nudge(self) -> None:
        """Look now (the store may have changed)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except LinkError as err:  # the coordinator is away: the next look pushes all
                log.info("image approvals not synchronised: %s", err)
                self._pushed = None
            except Exception:  # a bug must not end the thread
                log.exception("image approval sync failed")
                self._pushed = None
            self._wake.wait(self.interval)
            self._wake.clear()

    def sync_once(self) -> None:
        decisions = self.link._call("GET", "/node/images/decisions")["decisions"]
        for decision in decisions:
            self._take(decision)
        version = self.policy.version()
        if version != self._pushed:
            self.push()
            self._pushed = version

    def push(self) -> dict:
        body = {
            "approvals": [a.to_dict() for a in self.policy.approvals()],
            "requests": self.policy.requests(),
        }
        return self.link._call("PUT", "/node/images", json=body)

    def _take(self, decision: dict) -> None:
        digest, what = decision["digest"], decision["decision"]
        by = f"{decision['requested_by']} (via coordinator)"
        if not self.accept_decisions:
            status, message = "refused", REFUSED_BY_CONFIG
        else:
            try:
                if what == "approve":
                    self.policy.approve(
                        digest,
                        by=by,
                        reason=decision["reason"],
                        image=decision.get("image"),
                        collaborations=decision.get("collaborations"),
                    )
                elif what == "reject":
                    self.policy.reject(
                        digest, by=by, reason=decision["reason"], image=decision.get("image")
                    )
                else:
                    self.policy.revoke(digest, by=by, reason=decision["reason"])
                status, message = "applied", ""
            except PolicyError as err:
                status, message = "refused", str(err)
        if status == "refused" and self.audit is not None:
            self.audit.record(
                action="image_decision",
                outcome="refused",
                user=by,
                digest=digest,
                decision=what,
                message=message,
            )
        self.link._call(
            "POST",
            f"/node/images/decisions/{decision['id']}",
            json={"status": status, "message": message},
        )
        log.info("image decision %s (%s %s): %s", decision["id"], what, digest, status)
