"""What may leave the node from a run's /output: a few JSON, CSV or PNG files, checked.

The files arrive as the tar stream Docker gives for a directory (`get_archive`). Every
member is checked while reading, so a hostile archive costs at most the limit:
- regular files directly in the output directory only (no subdirectories, links,
  devices or pipes), named like `result.json`;
- at most `max_files` files and `max_bytes` bytes in all;
- `.json`: UTF-8 JSON (no NaN/Infinity); `.csv`: UTF-8 text without NUL bytes that the
  csv module reads; `.png`: a PNG signature, an IHDR chunk first, an IEND chunk last.
Anything else refuses the whole output with the reason (nothing leaves in part).
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath

from gateway.agent.images.contract import FILE_NAME, OutputFile

__all__ = ["MEDIA_TYPES", "OutputRefused", "read_outputs"]

MEDIA_TYPES = {".json": "application/json", ".csv": "text/csv", ".png": "image/png"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TAR_SLACK = 64 * 1024  # headers and padding around the files' bytes


class OutputRefused(Exception):
    """The run's output may not leave the node; the message says why."""


class _ChunkReader(io.RawIOBase):
    """A file over an iterator of byte chunks that refuses to read past `budget` bytes."""

    def __init__(self, chunks: Iterable[bytes], budget: int, limit_text: str):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""
        self._budget = budget
        self._limit_text = limit_text
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        self.consumed += n
        if self.consumed > self._budget:
            raise OutputRefused(f"The output is larger than the limit of {self._limit_text}.")
        return n


def _check_content(name: str, suffix: str, data: bytes) -> None:
    if suffix == ".json":
        try:
            json.loads(data.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError) as err:
            raise OutputRefused(f"{name} is not valid JSON: {err}") from None
    elif suffix == ".csv":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise OutputRefused(f"{name} is not UTF-8 text: {err}") from None
        if "\0" in text:
            raise OutputRefused(f"{name} holds NUL bytes: not a CSV file.")
        try:
            for _ in csv.reader(io.StringIO(text, newline="")):
                pass
        except csv.Error as err:
            raise OutputRefused(f"{name} is not a CSV file: {err}") from None
    elif suffix == ".png":
        if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR" or data[-8:-4] != b"IEND":
            raise OutputRefused(f"{name} is not a PNG image.")


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _size_text(n: int) -> str:
    return f"{n} bytes" if n < 1024 * 1024 else f"{n / (1024 * 1024):g} MiB ({n} bytes)"


def read_outputs(chunks: Iterable[bytes], max_bytes: int, max_files: int) -> list[OutputFile]:
    """The checked files of a tar stream of the output directory, or OutputRefused."""
    limit_text = _size_text(max_bytes)
    reader = _ChunkReader(chunks, max_bytes + max_files * 1024 + _TAR_SLACK, limit_text)
    files: list[OutputFile] = []
    total = 0
    root: str | None = None
    try:
        with tarfile.open(fileobj=io.BufferedReader(reader), mode="r|") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if root is None and member.isdir() and len(path.parts) == 1:
                    root = path.parts[0]  # the output directory itself
                    continue
                shown = "/".join(path.parts[1:]) or member.name
                if len(path.parts) != 2 or path.parts[0] != root:
                    raise OutputRefused(
                        f"{shown}: only files directly in /output may leave the node."
                    )
                if not member.isfile():
                    raise OutputRefused(
                        f"{shown}: only regular files may leave the node (no directories, "
                        f"links or devices)."
                    )
                name = path.parts[1]
                suffix = PurePosixPath(name).suffix.lower()
                if not FILE_NAME.match(name) or suffix not in MEDIA_TYPES:
                    raise OutputRefused(
                        f"{name}: output files are .json, .csv or .png files named with "
                        f"letters, digits, '.', '_' and '-'."
                    )
                if len(files) >= max_files:
                    raise OutputRefused(f"More than {max_files} output files.")
                total += member.size
                if total > max_bytes:
                    raise OutputRefused(f"The output is larger than the limit of {limit_text}.")
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                _check_content(name, suffix, data)
                files.append(OutputFile(name, MEDIA_TYPES[suffix], data))
    except tarfile.TarError as err:
        raise OutputRefused(f"The output could not be read: {err}") from None
    return sorted(files, key=lambda f: f.name)
