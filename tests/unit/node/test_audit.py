"""AuditLog: one JSON object per line, appended, never rewritten."""

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from gateway.node.audit import AuditLog


def test_record_fields_and_order(tmp_path):
    log = AuditLog(tmp_path / "state" / "audit.log")
    entry = log.record(
        user="alice",
        session="s1",
        face="armadillo",
        action="execute",
        expression="meanDS(D$age)",
        outcome="returned",
        status=200,
        bytes=123,
        message=None,
        table="p/f/t",
    )
    log.close()
    lines = (tmp_path / "state" / "audit.log").read_text().splitlines()
    assert len(lines) == 1
    stored = json.loads(lines[0])
    assert stored == entry
    assert list(stored)[:9] == [
        "time",
        "user",
        "session",
        "face",
        "action",
        "expression",
        "outcome",
        "status",
        "bytes",
    ]
    assert "message" not in stored  # None values are left out
    assert stored["table"] == "p/f/t"
    when = datetime.fromisoformat(stored["time"].replace("Z", "+00:00"))
    assert when.tzinfo is not None and abs(datetime.now(UTC) - when) < timedelta(seconds=5)


def test_outcome_is_checked(tmp_path):
    with pytest.raises(ValueError, match="outcome"):
        AuditLog(tmp_path / "a.log").record(action="x", outcome="maybe")


def test_appends_and_never_rewrites(tmp_path):
    path = tmp_path / "audit.log"
    first = AuditLog(path)
    first.record(action="a", outcome="ok")
    first.close()
    before = path.read_bytes()
    second = AuditLog(path)
    second.record(action="b", outcome="failed", message="line1\nline2 \u00e9")
    second.close()
    after = path.read_bytes()
    assert after.startswith(before)
    assert [e["action"] for e in AuditLog(path).read()] == ["a", "b"]
    assert AuditLog(path).read(action="b")[0]["message"] == "line1\nline2 \u00e9"


def test_opened_append_only(tmp_path):
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.record(action="a", outcome="ok")
    flags = int(open(f"/proc/self/fdinfo/{log._fd}").read().split("flags:")[1].split()[0], 8)
    assert flags & os.O_APPEND
    log.close()


def test_concurrent_writers_do_not_interleave(tmp_path):
    path = tmp_path / "audit.log"
    logs = [AuditLog(path), AuditLog(path)]  # two handles, like two processes
    big = "x" * 5000

    def write(n):
        for i in range(200):
            logs[n % 2].record(action="w", outcome="ok", user=f"u{n}", message=f"{i}{big}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 1200
    assert all(json.loads(line)["message"].endswith(big) for line in lines)


def test_read_filters(tmp_path):
    log = AuditLog(tmp_path / "audit.log")
    log.record(user="alice", action="execute", outcome="returned")
    log.record(user="bob", action="execute", outcome="refused", session="s2")
    time.sleep(0.01)
    cut = datetime.now(UTC)
    time.sleep(0.01)
    log.record(user="alice", action="load-table", outcome="failed")
    assert len(log.read()) == 3
    assert [e["action"] for e in log.read(user="alice")] == ["execute", "load-table"]
    assert [e["user"] for e in log.read(outcome="refused")] == ["bob"]
    assert [e["user"] for e in log.read(session="s2")] == ["bob"]
    assert [e["action"] for e in log.read(since=cut)] == ["load-table"]
    assert log.read(since="2999-01-01") == []
    assert len(log.read(since="2000-01-01")) == 3


def test_read_missing_file_and_torn_line(tmp_path):
    assert AuditLog(tmp_path / "none.log").read() == []
    path = tmp_path / "audit.log"
    path.write_text('{"action": "a", "outcome": "ok"}\n{"action": "b", "outc')
    assert [e["action"] for e in AuditLog(path).read()] == ["a"]


def test_long_text_is_clipped(tmp_path):
    log = AuditLog(tmp_path / "audit.log")
    entry = log.record(action="x", outcome="refused", expression="a" * 50_000)
    assert len(entry["expression"]) < 21_000
    assert entry["expression"].endswith("[30000 more characters]")
