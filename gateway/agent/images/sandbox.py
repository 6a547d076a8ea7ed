r"""The Docker side of one image run: what is made for it, and how all of it goes away.

Per run (names `dsg-<node>-<run>-<random>...`, labels `dsgateway.node`/`dsgateway.run`):

```
  analysis container ──TCP──> proxy container ──unix socket──> agent ──TCP──> gateway
  (the approved image)  "gateway:8080"  (python3, proxy_main)   (forwarder)   127.0.0.1
        \____ internal bridge network, no address on the host ____/
```

- an internal bridge network (`internal=True`, `inhibit_ipv4`: the host has no address
  on it, so nothing on the machine is reachable from it; containers get no IPv6);
- a proxy container on that network only (alias `gateway`), relaying TCP to a unix
  socket mounted from the run's directory, which the agent's forwarder relays to the
  gateway: the one way out, and it leads to the gateway only; for a run that asked
  for the relay (multi-node scripts), a second pair: alias `relay`, its own port and
  socket, relayed by a second forwarder to the coordinator's relay listener, fixed by
  the node's configuration (nothing else of the coordinator: not its API);
- an output volume: a tmpfs of `output_bytes` (plus slack) and `output_files` inodes,
  mounted rw at /output in the analysis container and read-only in the proxy, which
  keeps it alive after the analysis exits so the node can read it (`get_archive`);
  the kernel enforces the size, and nothing lands on the node's disk;
- the analysis container: read-only root, tmpfs /tmp, /input read-only (a bind mount
  of the run's input files, never the data directory), non-root user, every capability
  dropped, no-new-privileges, pids/memory (no swap)/CPU limits, Docker's init as PID 1.

`Sandbox.remove()` removes containers, network, volume, socket and directory, each
step on its own so one failure does not leave the rest behind; `remove_leftovers`
finds what a crashed agent left by its labels.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from docker.errors import APIError, NotFound
from docker.types import LogConfig, Mount, Ulimit

from gateway.agent.images import proxy_main
from gateway.agent.images.contract import RunLimits
from gateway.agent.images.forwarder import GatewayForwarder

__all__ = ["Sandbox", "SandboxError", "container_user", "remove_leftovers"]

log = logging.getLogger(__name__)

LABEL_NODE = "dsgateway.node"
LABEL_RUN = "dsgateway.run"
LABEL_ROLE = "dsgateway.role"
CONTAINER_TMP = "/tmp"  # noqa: S108 (a tmpfs of its own inside the container)
HOLD = "/hold"  # where the proxy keeps the output volume mounted
SOCKET_DIR = "/run/dsgateway"
SOCKET_NAME = "gateway.sock"
RELAY_SOCKET_NAME = "relay.sock"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")
_PROXY_SOURCE = Path(proxy_main.__file__).read_text(encoding="utf-8")


class SandboxError(Exception):
    """The run's environment could not be made; the message says what failed."""


def _safe(text: str, limit: int) -> str:
    return _UNSAFE.sub("-", text).strip("-.")[:limit] or "x"


def container_user(configured: str | None) -> tuple[int, int]:
    """The uid:gid runs use: the configured one, else the agent's own unless that is
    root, else 10001:10001. Never root."""
    if configured:
        uid_text, _, gid_text = configured.partition(":")
        uid, gid = int(uid_text), int(gid_text or uid_text)
    elif os.geteuid() != 0:
        uid, gid = os.geteuid(), os.getegid()
    else:
        uid, gid = 10001, 10001
    if uid == 0 or gid == 0:
        raise ValueError("Image runs never run as root (uid or gid 0).")
    return uid, gid


@dataclass
class Sandbox:
    docker: object  # docker.DockerClient
    node: str
    run_id: str
    work_dir: Path
    limits: RunLimits
    user: tuple[int, int]
    proxy_image: str
    gateway: tuple[str, int]
    proxy_port: int = 8080
    relay: tuple[str, int] | None = None  # the coordinator's relay listener, if this run may
    relay_port: int = 8081
    alias: str = "gateway"
    relay_alias: str = "relay"
    name: str = ""
    directory: Path | None = None
    forwarder: GatewayForwarder | None = None
    relay_forwarder: GatewayForwarder | None = None
    problems: list[str] = field(default_factory=list)  # what remove() could not remove

    def __post_init__(self) -> None:
        self.name = f"dsg-{_safe(self.node, 20)}-{_safe(self.run_id, 40)}-{secrets.token_hex(3)}"

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL_NODE: self.node, LABEL_RUN: self.run_id}

    @property
    def analysis_name(self) -> str:
        return f"{self.name}-analysis"

    @property
    def proxy_name(self) -> str:
        return f"{self.name}-proxy"

    @property
    def volume_name(self) -> str:
        return f"{self.name}-output"

    @property
    def url(self) -> str:
        return f"http://{self.alias}:{self.proxy_port}"

    @property
    def relay_url(self) -> str | None:
        return f"http://{self.relay_alias}:{self.relay_port}" if self.relay else None

    # ------------------------------------------------------------ making

    def write_input(self, files: dict[str, bytes]) -> None:
        """The run's directory: input/ (its files, world-readable: the container user
        is not the agent) and sock/ (the forwarder's socket)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.directory = self.work_dir / self.name
        self.directory.mkdir(mode=0o700)
        inputs = self.directory / "input"
        inputs.mkdir(mode=0o755)
        for name, data in files.items():
            path = inputs / name
            path.write_bytes(data)
            path.chmod(0o644)
        (self.directory / "sock").mkdir(mode=0o755)

    def start_forwarder(self) -> None:
        assert self.directory is not None
        self.forwarder = GatewayForwarder(self.directory / "sock" / SOCKET_NAME, self.gateway)
        self.forwarder.start()
        if self.relay is not None:
            self.relay_forwarder = GatewayForwarder(
                self.directory / "sock" / RELAY_SOCKET_NAME, self.relay
            )
            self.relay_forwarder.start()

    def create_network_and_volume(self) -> None:
        self.docker.networks.create(
            self.name,
            driver="bridge",
            internal=True,
            labels=self.labels,
            options={
                # No address for the host on this bridge: the containers on it reach
                # each other and nothing else on the machine.
                "com.docker.network.bridge.inhibit_ipv4": "true",
            },
            enable_ipv6=False,
        )
        uid, gid = self.user
        size = self.limits.output_bytes + self.limits.output_files * 4096 + 65536
        self.docker.volumes.create(
            self.volume_name,
            driver="local",
            driver_opts={
                "type": "tmpfs",
                "device": "tmpfs",
                "o": f"size={size},nr_inodes={self.limits.output_files + 8},"
                f"uid={uid},gid={gid},mode=0700,nosuid,nodev,noexec",
            },
            labels=self.labels,
        )

    def _hardening(self) -> dict:
        return {
            "user": f"{self.user[0]}:{self.user[1]}",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "ipc_mode": "private",
            "labels": self.labels,
            "network": self.name,
            "log_config": LogConfig(
                type="json-file",
                config={"max-size": str(max(self.limits.log_bytes * 16, 1 << 20)), "max-file": "2"},
            ),
            "detach": True,
        }

    def start_proxy(self):
        assert self.directory is not None
        kw = self._hardening()
        kw["labels"] = {**self.labels, LABEL_ROLE: "proxy"}
        pairs = [f"0.0.0.0:{self.proxy_port}", f"{SOCKET_DIR}/{SOCKET_NAME}"]
        aliases = [self.alias]
        if self.relay is not None:
            pairs += [f"0.0.0.0:{self.relay_port}", f"{SOCKET_DIR}/{RELAY_SOCKET_NAME}"]
            aliases.append(self.relay_alias)
        proxy = self.docker.containers.create(
            self.proxy_image,
            ["python3", "-c", _PROXY_SOURCE, *pairs],
            name=self.proxy_name,
            networking_config={self.name: self.docker.api.create_endpoint_config(aliases=aliases)},
            mounts=[
                Mount(SOCKET_DIR, str(self.directory / "sock"), type="bind", read_only=True),
                Mount(HOLD, self.volume_name, type="volume", read_only=True),
            ],
            environment={"PYTHONDONTWRITEBYTECODE": "1"},
            mem_limit="64m",
            memswap_limit="64m",
            pids_limit=proxy_main.MAX_CONNECTIONS * 2 * len(aliases) + 16,
            nano_cpus=500_000_000,
            **kw,
        )
        proxy.start()
        return proxy

    def wait_proxy_ready(self, proxy, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while time.monotonic() < deadline:
            if b": ready" in proxy.logs():
                return
            proxy.reload()
            if proxy.status not in ("created", "running"):
                raise SandboxError(
                    f"The gateway proxy stopped ({proxy.status}): "
                    f"{proxy.logs(tail=20).decode('utf-8', 'replace')}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        raise SandboxError(f"The gateway proxy did not start within {timeout:g} s.")

    def create_analysis(self, image_id: str, environment: dict[str, str]):
        assert self.directory is not None
        lim = self.limits
        kw = self._hardening()
        kw["labels"] = {**self.labels, LABEL_ROLE: "analysis"}
        return self.docker.containers.create(
            image_id,
            name=self.analysis_name,
            hostname="dsgateway-run",
            environment=environment,
            mounts=[
                Mount("/input", str(self.directory / "input"), type="bind", read_only=True),
                Mount("/output", self.volume_name, type="volume"),
            ],
            tmpfs={CONTAINER_TMP: f"rw,nosuid,nodev,size={lim.tmp_mb}m,mode=1777"},
            shm_size="16m",
            mem_limit=f"{lim.memory_mb}m",
            memswap_limit=f"{lim.memory_mb}m",  # the same: no swap
            pids_limit=lim.pids,
            nano_cpus=int(lim.cpus * 1e9),
            ulimits=[Ulimit(name="nofile", soft=1024, hard=1024)],
            oom_score_adj=500,  # under pressure the machine sacrifices the run first
            init=True,
            **kw,
        )

    # ------------------------------------------------------------ removing

    def remove(self) -> None:
        """Remove everything of this run; never raises (problems are kept in `problems`)."""
        for name in (self.analysis_name, self.proxy_name):
            self._try(
                f"container {name}",
                lambda n=name: self.docker.containers.get(n).remove(force=True, v=False),
            )
        # The bridge can stay busy for a moment after its last container went.
        self._try(
            f"network {self.name}", lambda: self.docker.networks.get(self.name).remove(), retries=5
        )
        self._try(
            f"volume {self.volume_name}",
            lambda: self.docker.volumes.get(self.volume_name).remove(force=True),
            retries=5,
        )
        if self.forwarder is not None:
            self._try("the gateway forwarder", self.forwarder.stop)
        if self.relay_forwarder is not None:
            self._try("the relay forwarder", self.relay_forwarder.stop)
        if self.directory is not None:
            directory = self.directory
            self._try(f"directory {directory}", lambda: _rmtree(directory))

    def _try(self, what: str, action, retries: int = 1) -> None:
        for attempt in range(retries):
            try:
                action()
                return
            except NotFound:
                return
            except (APIError, OSError) as err:
                if attempt + 1 == retries:
                    log.error("could not remove %s: %s", what, err)
                    self.problems.append(f"{what}: {err}")
                else:
                    time.sleep(0.1 * (attempt + 1))


def _rmtree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def remove_leftovers(docker, node: str) -> int:
    """Remove containers, networks and volumes of `node`'s runs (an agent that crashed
    mid-run leaves them); the number of things removed."""
    removed = 0
    label = f"{LABEL_NODE}={node}"
    for container in docker.containers.list(all=True, filters={"label": label}):
        try:
            container.remove(force=True)
            removed += 1
        except NotFound:
            pass
    for network in docker.networks.list(filters={"label": label}):
        try:
            network.remove()
            removed += 1
        except NotFound:
            pass
    for volume in docker.volumes.list(filters={"label": label}):
        try:
            volume.remove(force=True)
            removed += 1
        except NotFound:
            pass
    return removed
