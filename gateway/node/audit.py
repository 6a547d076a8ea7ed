"""The node's audit trail: one JSON object per line, only ever appended.

The file is opened with O_APPEND and each record is written with a single write()
under a lock, so lines never interleave (even with another process appending) and
nothing already written is touched. Reading is for tests and the CLI.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["OUTCOMES", "AuditLog"]

# returned: a value left the node; refused: the request was not allowed (credentials,
# expression check, permissions); failed: it was allowed but went wrong; blocked: a
# disclosure control stopped it; ok: done, nothing but a status was returned.
OUTCOMES = frozenset({"returned", "refused", "failed", "blocked", "ok"})
FIELDS = (
    "time",
    "user",
    "session",
    "face",
    "action",
    "expression",
    "outcome",
    "status",
    "bytes",
    "message",
)
MAX_TEXT = 20_000  # characters kept of an expression or message; the rest is cut


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + f"... [{len(value) - MAX_TEXT} more characters]"
    return value


class AuditLog:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        return self._fd

    def record(self, *, action: str, outcome: str, **fields: Any) -> dict:
        """Append one record; `fields` beyond FIELDS are kept as given (e.g. `table`)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {outcome!r}")
        entry = {"time": _now(), "action": action, "outcome": outcome}
        entry.update({k: _clip(v) for k, v in fields.items() if v is not None})
        ordered = {k: entry[k] for k in FIELDS if k in entry}
        ordered.update({k: v for k, v in entry.items() if k not in ordered})
        line = (json.dumps(ordered, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            fd = self._open()
            view = memoryview(line)
            while view:  # a regular file takes it in one write; loop only for safety
                written = os.write(fd, view)
                view = view[written:]
        return ordered

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -------------------------------------------------------- reading

    def __iter__(self) -> Iterator[dict]:
        try:
            handle = self.path.open(encoding="utf-8")
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                line = line.strip()
                if line:
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        # A line cut by a crash mid-write; skip it, keep the rest.
                        continue

    def read(
        self,
        user: str | None = None,
        outcome: str | None = None,
        since: datetime | str | None = None,
        action: str | None = None,
        session: str | None = None,
    ) -> list[dict]:
        """Records matching every filter given, oldest first. `since` is inclusive."""
        if isinstance(since, datetime):
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
            since = since.astimezone(UTC).isoformat(timespec="milliseconds")
            since = since.replace("+00:00", "Z")
        out = []
        for entry in self:
            if user is not None and entry.get("user") != user:
                continue
            if outcome is not None and entry.get("outcome") != outcome:
                continue
            if action is not None and entry.get("action") != action:
                continue
            if session is not None and entry.get("session") != session:
                continue
            if since is not None and str(entry.get("time", "")) < since:
                continue
            out.append(entry)
        return out
