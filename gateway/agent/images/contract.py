"""What goes into an image run and what comes out of it: the runner's data types.

The contract the image sees (docs/client-images.md):
- `/input` (read-only): `parameters.json` and the request's files (e.g. the script);
- `/output` (read-write, empty, size-limited): JSON, CSV and PNG files, nothing else;
- environment: `DSGATEWAY_URL` (the node's gateway: Armadillo API at `/`, Opal API at
  `/ws`), `DSGATEWAY_TOKEN` (a short-lived Bearer token of the researcher),
  `DSGATEWAY_PROFILE`, `DSGATEWAY_INPUT`, `DSGATEWAY_OUTPUT`,
  `DSGATEWAY_OUTPUT_LIMIT` (bytes), `DSGATEWAY_RUN_ID`; for a task that asked for the
  relay, `DSGATEWAY_RELAY_URL` and `DSGATEWAY_STATIONS` (JSON: each station the task
  names in `stations`, by default its target nodes: name, Armadillo and Opal address
  through the run's proxy, and relay token);
- exit code 0: the run completed (the output is checked, then disclosure-checked);
  anything else: it failed.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gateway.agent.images.disclosure import DisclosureRules

__all__ = [
    "FILE_NAME_PATTERN",
    "OutputFile",
    "RunLimits",
    "RunRequest",
    "RunResult",
    "RunStatus",
    "Station",
]

#: Names of input and output files: no paths, no hidden files.
FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
FILE_NAME = re.compile(FILE_NAME_PATTERN)
PARAMETERS_FILE = "parameters.json"


class RunStatus(str, Enum):
    PENDING = "pending"
    NOT_APPROVED = "not approved"
    PULLING = "pulling"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    KILLED = "killed"
    TIMED_OUT = "timed out"

    @property
    def final(self) -> bool:
        return self in _FINAL

    def __str__(self) -> str:
        return self.value


_FINAL = frozenset(
    {
        RunStatus.NOT_APPROVED,
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.KILLED,
        RunStatus.TIMED_OUT,
    }
)


@dataclass(frozen=True)
class RunLimits:
    """What one run may use. The node's settings; a request may only ask for less time."""

    memory_mb: int = 512  # RAM, swap excluded (and /tmp, /output count against it)
    cpus: float = 1.0
    pids: int = 256  # processes and threads
    wall_time: float = 600.0  # seconds from start to exit; then the container is killed
    tmp_mb: int = 64  # the tmpfs at /tmp
    output_bytes: int = 10 * 1024 * 1024  # all files in /output together
    output_files: int = 32
    log_bytes: int = 64 * 1024  # log kept: its first and last halves around a marker
    input_bytes: int = 4 * 1024 * 1024  # script + parameters

    def __post_init__(self) -> None:
        for name in ("memory_mb", "pids", "tmp_mb", "output_bytes", "output_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"RunLimits.{name} must be positive")
        if self.memory_mb < 16:
            raise ValueError("RunLimits.memory_mb must be at least 16")
        if not 0 < self.cpus <= 256 or not self.wall_time > 0:
            raise ValueError("RunLimits.cpus and wall_time must be positive")
        if self.log_bytes < 256:
            raise ValueError("RunLimits.log_bytes must be at least 256")


@dataclass(frozen=True)
class Station:
    """A station a multi-node run may open through the coordinator's relay."""

    name: str
    node_id: int
    token: str  # a relay token of the researcher for that node (and this collaboration)

    def to_env(self, relay_url: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "node_id": self.node_id,
            "url": relay_url,  # Armadillo face: the token names the node
            "opal_url": f"{relay_url}/nodes/{self.node_id}",
            "token": self.token,
        }


@dataclass(frozen=True)
class RunRequest:
    run_id: str  # unique per run; names the containers and network
    image: str  # as the researcher gave it: name[:tag][@sha256:...] or sha256:...
    digest: str | None = None  # the pinned digest, if `image` does not carry it
    collaboration: int | None = None
    user: str = ""  # the researcher (audit log)
    token: str = ""  # DSGATEWAY_TOKEN: a short-lived token for the local gateway
    profile: str = "default"
    files: Mapping[str, str | bytes] = field(default_factory=dict)  # put in /input
    parameters: Any = None  # /input/parameters.json
    timeout: float | None = None  # wall time asked for; at most the node's limit
    stations: tuple[Station, ...] = ()  # through the relay (the task asked for it)
    disclosure: DisclosureRules | None = None  # the coordinator's rules (the node adds its own)


@dataclass(frozen=True)
class OutputFile:
    name: str
    media_type: str  # application/json | text/csv | image/png
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a JSON file's value, a CSV's text, a PNG in base64."""
        if self.media_type == "application/json":
            content: Any = json.loads(self.data)
        elif self.media_type == "text/csv":
            content = self.data.decode("utf-8")
        else:
            content = base64.b64encode(self.data).decode("ascii")
        return {"name": self.name, "type": self.media_type, "size": self.size, "content": content}


@dataclass
class RunResult:
    run_id: str
    status: RunStatus
    reason: str = ""  # why it did not complete (or what completed)
    log: str = ""  # stdout and stderr, interleaved, cut with a marker when too long
    outputs: list[OutputFile] = field(default_factory=list)
    exit_code: int | None = None
    digest: str | None = None  # the approved digest the run was pinned to
    image_id: str | None = None  # the local image that ran
    timings: dict[str, float] = field(default_factory=dict)  # seconds
    blocked: bool = False  # refused by the disclosure check (the audit says so)

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.COMPLETED

    def output(self, name: str) -> OutputFile | None:
        return next((f for f in self.outputs if f.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status.value,
            "reason": self.reason,
            "log": self.log,
            "outputs": [f.to_dict() for f in self.outputs],
            "exit_code": self.exit_code,
            "digest": self.digest,
            "image_id": self.image_id,
            "blocked": self.blocked,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def check_file_name(name: str) -> str:
    if not isinstance(name, str) or not FILE_NAME.match(name) or ".." in name:
        raise ValueError(f"{name!r} is not an allowed file name ({FILE_NAME_PATTERN}).")
    return name
