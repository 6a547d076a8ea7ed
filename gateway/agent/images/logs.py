"""A run's stdout and stderr, kept within a budget: the first half and the last half,
with a marker in between saying how much was cut (the start shows how the analysis set
out, the end why it stopped)."""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["LogCapture", "truncation_marker"]


def truncation_marker(cut: int, limit: int) -> str:
    return (
        f"\n[... dsgateway: {cut} bytes of output cut here; the node keeps the first and "
        f"last {limit // 2} bytes of a run's log ...]\n"
    )


class LogCapture:
    def __init__(self, limit: int):
        self.limit = limit
        self._head = bytearray()
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self.total = 0
        self._lock = threading.Lock()

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        half = self.limit // 2
        keep = self.limit - half  # of the tail
        with self._lock:
            self.total += len(chunk)
            room = half - len(self._head)
            if room > 0:
                self._head += chunk[:room]
                chunk = chunk[room:]
            if not chunk:
                return
            self._tail.append(bytes(chunk))
            self._tail_size += len(chunk)
            while self._tail and self._tail_size - len(self._tail[0]) >= keep:
                self._tail_size -= len(self._tail.popleft())

    def settle_tail(self, end: bytes, whole: bool) -> None:
        """Settle the log from the log driver's copy: `end` is the whole log (`whole`)
        or its last bytes.

        Docker's attach stream can lose what a container writes just before it exits;
        the log driver's file has it. With only the end, the head stays as streamed."""
        with self._lock:
            if whole:
                self._head = bytearray()
                self._tail.clear()
                self._tail_size = 0
                self.total = 0
            elif end:
                keep = self.limit - self.limit // 2
                self._tail = deque([bytes(end[-keep:])])
                self._tail_size = len(self._tail[0])
                self.total = max(self.total, len(self._head) + self._tail_size)
                return
        self.write(end)

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def text(self) -> str:
        with self._lock:
            head = bytes(self._head)
            tail = b"".join(self._tail)
            total = self.total
        if total <= self.limit:
            return (head + tail).decode("utf-8", "replace")
        tail = tail[-(self.limit - self.limit // 2) :]
        cut = total - len(head) - len(tail)
        return (
            head.decode("utf-8", "replace")
            + truncation_marker(cut, self.limit)
            + tail.decode("utf-8", "replace")
        )
