"""What may leave the node from /output, the log budget, and the run contract's types."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib

import pytest

from gateway.agent.images.contract import OutputFile, RunLimits, RunResult, RunStatus
from gateway.agent.images.logs import LogCapture
from gateway.agent.images.outputs import OutputRefused, read_outputs


def png(width=1, height=1) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"".join(b"\0" + b"\0" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def archive(members, root="hold", chunk=1000):
    """A tar stream as Docker's get_archive gives it, cut into chunks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(root)
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, kind, data in members:
            info = tarfile.TarInfo(f"{root}/{name}")
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = data
                tar.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
    data = buf.getvalue()
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def test_json_csv_png_pass():
    files = read_outputs(
        archive(
            [
                ("result.json", "file", b'{"mean": 53.2, "n": [1, 2]}'),
                ("table.csv", "file", b"a,b\n1,2\n"),
                ("plot.png", "file", png()),
            ]
        ),
        max_bytes=10_000,
        max_files=5,
    )
    assert [(f.name, f.media_type) for f in files] == [
        ("plot.png", "image/png"),
        ("result.json", "application/json"),
        ("table.csv", "text/csv"),
    ]
    as_dicts = {f.name: f.to_dict() for f in files}
    assert as_dicts["result.json"]["content"] == {"mean": 53.2, "n": [1, 2]}
    assert as_dicts["table.csv"]["content"] == "a,b\n1,2\n"
    assert json.dumps(as_dicts)  # everything is JSON-ready


def test_empty_output_is_fine():
    assert read_outputs(archive([]), 100, 1) == []


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("data.rds", "file", b"X\n")], "are .json, .csv or .png"),
        ([("result.txt", "file", b"hi")], "are .json, .csv or .png"),
        ([(".hidden.json", "file", b"{}")], "are .json, .csv or .png"),
        ([("bad.json", "file", b"{nope")], "not valid JSON"),
        ([("nan.json", "file", b'{"x": NaN}')], "not valid JSON"),
        ([("bin.csv", "file", b"a,b\n\x00\x01")], "NUL bytes"),
        ([("latin.csv", "file", "é".encode("latin-1"))], "not UTF-8"),
        ([("fake.png", "file", b"\x89PNG\r\n\x1a\nnot really")], "not a PNG"),
        ([("sub", "dir", b"")], "only regular files"),
        ([("sub/x.json", "file", b"{}")], "directly in /output"),
        ([("link.json", "symlink", "/etc/passwd")], "only regular files"),
        ([("pipe.json", "fifo", b"")], "only regular files"),
    ],
)
def test_refused(members, message):
    with pytest.raises(OutputRefused, match=message):
        read_outputs(archive(members), max_bytes=10_000, max_files=5)


def test_size_and_count_limits():
    big = b"[" + b"1," * 3000 + b"1]"
    with pytest.raises(OutputRefused, match="larger than the limit of 5000 bytes"):
        read_outputs(archive([("big.json", "file", big)]), max_bytes=5000, max_files=5)
    many = [(f"r{i}.json", "file", b"{}") for i in range(4)]
    with pytest.raises(OutputRefused, match="More than 3 output files"):
        read_outputs(archive(many), max_bytes=5000, max_files=3)
    assert len(read_outputs(archive(many), max_bytes=5000, max_files=4)) == 4


def test_a_stream_larger_than_any_allowed_output_is_not_read_to_its_end():
    consumed = []

    def counted(chunks):
        for c in chunks:
            consumed.append(len(c))
            yield c

    stream = archive([("big.json", "file", b"1" * 5_000_000)], chunk=65536)
    with pytest.raises(OutputRefused, match="larger than the limit"):
        read_outputs(counted(stream), max_bytes=1000, max_files=1)
    assert sum(consumed) <= 2 * 65536

    garbage = (b"\xff" * 65536 for _ in range(10_000))  # 640 MiB that is not a tar
    with pytest.raises(OutputRefused):
        read_outputs(garbage, max_bytes=1000, max_files=1)


# ---------------------------------------------------------------- logs


def test_log_within_budget_is_kept_whole():
    cap = LogCapture(100)
    for part in (b"a" * 30, b"b" * 30, b"c" * 40):
        cap.write(part)
    assert cap.text() == "a" * 30 + "b" * 30 + "c" * 40
    assert not cap.truncated


def test_long_log_keeps_head_and_tail_with_a_marker():
    cap = LogCapture(1000)
    cap.write(b"START\n")
    for i in range(10_000):
        cap.write(f"line {i}\n".encode())
    cap.write(b"the real error\n")
    text = cap.text()
    assert cap.truncated
    assert text.startswith("START\nline 0\n")
    assert text.endswith("line 9999\nthe real error\n")
    assert "bytes of output cut here" in text
    head, rest = text.split("\n[... dsgateway: ", 1)
    cut, tail = rest.split(" ...]\n", 1)
    assert len(head.encode()) == 500 and len(tail.encode()) == 500
    assert int(cut.split(" ")[0]) == cap.total - 1000


def test_log_with_odd_budget_and_tiny_chunks_loses_nothing_within_budget():
    cap = LogCapture(257)
    data = "".join(chr(65 + i % 26) for i in range(257))
    for ch in data:
        cap.write(ch.encode())
    assert cap.text() == data and not cap.truncated
    cap.write(b"!")
    assert cap.truncated and cap.text().endswith(data[-128:] + "!")


# ---------------------------------------------------------------- contract


def test_statuses_and_result_json():
    assert RunStatus.TIMED_OUT.value == "timed out" and RunStatus.TIMED_OUT.final
    assert not RunStatus.RUNNING.final
    result = RunResult(
        "7",
        RunStatus.COMPLETED,
        outputs=[OutputFile("p.png", "image/png", png())],
        timings={"total": 1.23456},
    )
    data = result.to_dict()
    assert data["status"] == "completed" and data["timings"] == {"total": 1.235}
    assert data["outputs"][0]["content"].startswith("iVBOR")  # base64 of a PNG


@pytest.mark.parametrize(
    "kw", [{"memory_mb": 8}, {"cpus": 0}, {"wall_time": 0}, {"pids": 0}, {"log_bytes": 10}]
)
def test_limits_are_checked(kw):
    with pytest.raises(ValueError):
        RunLimits(**kw)


def test_settle_with_the_whole_log_replaces_what_the_stream_missed():
    capture = LogCapture(1000)
    capture.write(b"first\nmiddle\n")  # the attach stream lost "last\n"
    capture.settle_tail(b"first\nmiddle\nlast\n", whole=True)
    assert capture.text() == "first\nmiddle\nlast\n"


def test_settle_with_the_end_keeps_the_streamed_head():
    capture = LogCapture(100)
    capture.write(b"HEAD" + b"x" * 300)
    capture.settle_tail(b"y" * 60 + b"THE END", whole=False)
    text = capture.text()
    assert text.startswith("HEAD")
    assert text.endswith("THE END")
    assert "cut here" in text
