"""The data steward's say on client images at this node: which image digests may run,
for which collaborations, decided by whom, when and why.

    policy = ImagePolicy.in_state_dir(state_dir, audit=audit_log)
    policy.approve("sha256:...", by="steward", reason="reviewed v1.2", collaborations=[3])
    policy.check("registry.org/team/analysis:1.2@sha256:...", None, collaboration=3)
        -> Decision(allowed=True, reason="approved by steward at ...: reviewed v1.2")
    policy.revoke("sha256:...", by="steward", reason="superseded")

Decisions are by digest only, and fail closed: a reference without a digest, a digest
that differs from the one in the reference, a digest nobody approved, a rejected or
revoked digest, a collaboration the approval does not cover, or any error reading the
store: all refused, each with a reason a researcher can act on.

Why SQLite (through SQLAlchemy 2) rather than a JSON-lines file: the steward's CLI and
the running agent are different processes, and a revocation must stop the next run at
once. Every `check` is a fresh read of committed state (WAL mode: readers never wait for
the writer), a decision and its history row are written in one transaction, and
per-digest rules are rows, not a file to re-parse on each check. The history table is
append-only, and each change is also written to the node's audit log when one is given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.agent.images.models import (
    STATES,
    ImageApproval,
    ImageEvent,
    ImageRequest,
    configure_engine,
    ensure_schema,
)
from gateway.agent.images.references import InvalidReference, check_digest, parse_reference

__all__ = ["Approval", "ApprovalEvent", "Decision", "ImagePolicy", "PolicyError"]

STORE_FILE = "images.db"


class PolicyError(ValueError):
    """A steward's request that cannot be done (bad digest, no reason, nothing to revoke)."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    digest: str | None = None  # the digest decided on (None if there was none)
    # Refused because the steward has not decided on this digest yet (a request for
    # approval is worth recording), not because of a decision or a bad reference.
    undecided: bool = False

    def __bool__(self) -> bool:  # `if policy.check(...)` means what it says
        return self.allowed


@dataclass(frozen=True)
class Approval:
    """The current word on one digest."""

    digest: str
    state: str  # approved | rejected | revoked
    reason: str
    decided_by: str
    decided_at: datetime
    image: str | None = None
    collaborations: frozenset[int] | None = None  # None: any collaboration

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, e.g. to mirror to the coordinator."""
        return {
            "digest": self.digest,
            "state": self.state,
            "reason": self.reason,
            "decided_by": self.decided_by,
            "decided_at": _iso(self.decided_at),
            "image": self.image,
            "collaborations": None if self.collaborations is None else sorted(self.collaborations),
        }


@dataclass(frozen=True)
class ApprovalEvent:
    id: int
    at: datetime
    digest: str
    action: str  # approve | reject | revoke | restrict
    actor: str
    reason: str
    image: str | None
    collaborations: frozenset[int] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _iso(self.at),
            "digest": self.digest,
            "action": self.action,
            "actor": self.actor,
            "reason": self.reason,
            "image": self.image,
            "collaborations": None if self.collaborations is None else sorted(self.collaborations),
        }


def _utc(value: datetime) -> datetime:
    # SQLite gives naive datetimes back; everything stored is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime) -> str:
    return _utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _frozen(values: list[int] | None) -> frozenset[int] | None:
    return None if values is None else frozenset(values)


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(f"{what} is required.")
    if len(value) > limit:
        raise PolicyError(f"{what} is longer than {limit} characters.")
    return value.strip()


def _collaborations(values: Iterable[int] | None) -> list[int] | None:
    if values is None:
        return None
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PolicyError(f"Collaborations are ids (integers), not {value!r}.")
        out.append(value)
    return sorted(set(out))


class ImagePolicy:
    def __init__(self, url: str, audit: Any = None):
        """`url`: an SQLAlchemy URL (`sqlite:////var/lib/dsgateway/images.db`).
        `audit`: the node's `AuditLog` (anything with `record(action=, outcome=, ...)`)."""
        self.engine = create_engine(url)
        configure_engine(self.engine)
        ensure_schema(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.audit = audit

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike, audit: Any = None) -> ImagePolicy:
        path = Path(state_dir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{path / STORE_FILE}", audit)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ the steward's word

    def approve(
        self,
        digest: str,
        *,
        by: str,
        reason: str,
        image: str | None = None,
        collaborations: Iterable[int] | None = None,
    ) -> Approval:
        """Approve `digest` (for the given collaborations only, or any when None)."""
        return self._decide("approve", "approved", digest, by, reason, image, collaborations)

    def reject(self, digest: str, *, by: str, reason: str, image: str | None = None) -> Approval:
        return self._decide("reject", "rejected", digest, by, reason, image, None)

    def revoke(self, digest: str, *, by: str, reason: str) -> Approval:
        """Withdraw an approval: from now on no new run of `digest` starts here."""
        with self._sessions.begin() as db:
            row = db.get(ImageApproval, self._digest(digest))
            if row is None or row.state != "approved":
                raise PolicyError(f"{digest} is not approved at this node: nothing to revoke.")
        return self._decide("revoke", "revoked", digest, by, reason, None, None)

    def restrict(
        self, digest: str, collaborations: Iterable[int] | None, *, by: str, reason: str
    ) -> Approval:
        """Change the collaborations an approved digest may run for (None: any)."""
        digest = self._digest(digest)
        with self._sessions.begin() as db:
            row = db.get(ImageApproval, digest)
            if row is None or row.state != "approved":
                raise PolicyError(f"{digest} is not approved at this node.")
            image = row.image
        return self._decide("restrict", "approved", digest, by, reason, image, collaborations)

    def _digest(self, digest: str) -> str:
        try:
            return check_digest(digest)
        except InvalidReference as err:
            raise PolicyError(str(err)) from None

    def _decide(self, action, state, digest, by, reason, image, collaborations) -> Approval:
        assert state in STATES
        digest = self._digest(digest)
        by = _text(by, "Who decides", 128)
        reason = _text(reason, "A reason", 4000)
        if image is not None:
            image = _text(image, "The image reference", 512)
        collabs = _collaborations(collaborations)
        now = datetime.now(UTC)
        with self._sessions.begin() as db:
            row = db.get(ImageApproval, digest)
            if row is None:
                row = ImageApproval(digest=digest)
                db.add(row)
            if image is None:
                image = row.image
            row.state, row.reason, row.decided_by, row.decided_at = state, reason, by, now
            row.image = image
            row.collaborations = collabs if state == "approved" else None
            db.add(
                ImageEvent(
                    at=now,
                    digest=digest,
                    action=action,
                    actor=by,
                    reason=reason,
                    image=image,
                    collaborations=collabs,
                )
            )
            approval = self._approval(row)
        self._audit(
            action=f"image_{action}",
            outcome="ok",
            user=by,
            digest=digest,
            image=image,
            message=reason,
            collaborations=collabs,
        )
        return approval

    # ------------------------------------------------------------ reading

    @staticmethod
    def _approval(row: ImageApproval) -> Approval:
        return Approval(
            digest=row.digest,
            state=row.state,
            reason=row.reason,
            decided_by=row.decided_by,
            decided_at=_utc(row.decided_at),
            image=row.image,
            collaborations=_frozen(row.collaborations),
        )

    def get(self, digest: str) -> Approval | None:
        with Session(self.engine) as db:
            row = db.get(ImageApproval, self._digest(digest))
            return None if row is None else self._approval(row)

    def approvals(self, state: str | None = None) -> list[Approval]:
        query = select(ImageApproval).order_by(ImageApproval.decided_at)
        if state is not None:
            if state not in STATES:
                raise PolicyError(f"state must be one of {list(STATES)}")
            query = query.where(ImageApproval.state == state)
        with Session(self.engine) as db:
            return [self._approval(row) for row in db.scalars(query)]

    def history(self, digest: str | None = None) -> list[ApprovalEvent]:
        query = select(ImageEvent).order_by(ImageEvent.id)
        if digest is not None:
            query = query.where(ImageEvent.digest == self._digest(digest))
        with Session(self.engine) as db:
            return [
                ApprovalEvent(
                    id=e.id,
                    at=_utc(e.at),
                    digest=e.digest,
                    action=e.action,
                    actor=e.actor,
                    reason=e.reason,
                    image=e.image,
                    collaborations=_frozen(e.collaborations),
                )
                for e in db.scalars(query)
            ]

    # ------------------------------------------------------------ requests for approval

    def request(
        self,
        digest: str,
        *,
        by: str,
        image: str | None = None,
        collaboration: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> bool:
        """Record that a run of `by` asked for `digest`, on which the steward has not
        decided (the steward sees it in `requests()`, the coordinator in the mirror).
        False when there is a decision already (nothing recorded)."""
        digest = self._digest(digest)
        now = datetime.now(UTC)
        with self._sessions.begin() as db:
            if db.get(ImageApproval, digest) is not None:
                return False
            row = db.get(ImageRequest, digest) or ImageRequest(digest=digest)
            row.image = image[:512] if image else None
            row.requested_by = (by or "")[:128]
            row.requested_at = now
            row.collaboration = collaboration
            row.labels = {str(k)[:128]: str(v)[:1000] for k, v in (labels or {}).items()}
            db.add(row)
        self._audit(
            action="image_request",
            outcome="ok",
            user=by or None,
            digest=digest,
            image=image,
            collaboration=collaboration,
        )
        return True

    def requests(self) -> list[dict[str, Any]]:
        """Every digest a run asked for, with who asked last (decided ones included:
        the mirror shows who asked for an approved image too)."""
        with Session(self.engine) as db:
            rows = db.scalars(select(ImageRequest).order_by(ImageRequest.requested_at))
            return [
                {
                    "digest": r.digest,
                    "image": r.image,
                    "requested_by": r.requested_by,
                    "requested_at": _iso(r.requested_at),
                    "collaboration": r.collaboration,
                    "labels": dict(r.labels or {}),
                }
                for r in rows
            ]

    def version(self) -> tuple:
        """Changes whenever a decision or a request is written (cheap: for polling)."""
        with Session(self.engine) as db:
            events = db.scalar(select(func.max(ImageEvent.id)))
            asked = db.scalar(select(func.max(ImageRequest.requested_at)))
            count = db.scalar(select(func.count()).select_from(ImageRequest))
        return (events, str(asked), count)

    # ------------------------------------------------------------ the check

    def check(
        self, image: str, digest: str | None = None, collaboration: int | None = None
    ) -> Decision:
        """May `image` (pinned by the digest in it, or by `digest`) run here for
        `collaboration`? Never raises: any doubt is a refusal with its reason."""
        try:
            return self._check(image, digest, collaboration)
        except Exception as err:  # a broken store must refuse, never allow
            return Decision(False, f"Not approved: the approval store failed ({err}).")

    def _check(self, image: str, digest: str | None, collaboration: int | None) -> Decision:
        try:
            ref = parse_reference(image)
            if digest is not None:
                check_digest(digest)
        except InvalidReference as err:
            return Decision(False, f"Not approved: {err}")
        if ref.digest and digest and ref.digest != digest:
            return Decision(
                False,
                f"Not approved: the reference {image} names digest {ref.digest} but the "
                f"run is pinned to {digest}; they must be the same.",
            )
        digest = digest or ref.digest
        if digest is None:
            return Decision(
                False,
                f"Not approved: {image} has no digest. Runs are pinned by digest (a tag "
                f"can change what it points to): give {image}@sha256:<digest>.",
            )
        with Session(self.engine) as db:
            row = db.get(ImageApproval, digest)
            found = None if row is None else self._approval(row)
        if found is None:
            return Decision(
                False,
                f"Not approved: image {digest} has not been approved by this node's data steward.",
                digest,
                undecided=True,
            )
        when = _iso(found.decided_at)
        if found.state == "rejected":
            return Decision(
                False,
                f"Not approved: image {digest} was rejected by {found.decided_by} at "
                f"{when}: {found.reason}",
                digest,
            )
        if found.state == "revoked":
            return Decision(
                False,
                f"Not approved: the approval of image {digest} was revoked by "
                f"{found.decided_by} at {when}: {found.reason}",
                digest,
            )
        if found.collaborations is not None and collaboration not in found.collaborations:
            return Decision(
                False,
                f"Not approved: image {digest} is approved at this node for collaborations "
                f"{sorted(found.collaborations)} only, not for "
                f"{'this run' if collaboration is None else collaboration}.",
                digest,
            )
        return Decision(True, f"Approved by {found.decided_by} at {when}: {found.reason}", digest)

    # ------------------------------------------------------------ audit

    def _audit(self, **fields: Any) -> None:
        if self.audit is not None:
            self.audit.record(**fields)
