"""The agent's end of a run's only path out: a unix socket that leads to the gateway.

The socket file is made in the run's own directory, which is mounted (read-only) into
the run's proxy container only. Each connection on it is relayed to the gateway's TCP
address, fixed when the forwarder is made: nothing a container sends can choose
another destination.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from gateway.agent.images.proxy_main import serve

__all__ = ["GatewayForwarder"]

_SUN_PATH_MAX = 107  # bytes of a socket path the kernel takes (108 with the NUL)


def _bind(listener: socket.socket, path: Path) -> None:
    """Bind to `path`, however deep the run directory is: a longer path than a socket
    address can hold is reached through the directory's /proc/self/fd link (Linux)."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        listener.bind(str(path))
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        listener.bind(f"/proc/self/fd/{fd}/{path.name}")
    finally:
        os.close(fd)


class GatewayForwarder:
    def __init__(self, socket_path: str | os.PathLike, gateway: tuple[str, int]):
        self.path = Path(socket_path)
        self.gateway = gateway
        self._stop = threading.Event()
        self._live: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def _connect(self) -> socket.socket:
        conn = socket.create_connection(self.gateway, timeout=10)
        conn.settimeout(None)  # a long DataSHIELD command may keep a request open
        return conn

    def start(self) -> GatewayForwarder:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _bind(listener, self.path)
            # The proxy runs as an unprivileged user of its own: it must be able to
            # connect. Only that container sees this directory.
            os.chmod(self.path, 0o666)  # noqa: S103
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._thread = threading.Thread(
            target=serve,
            args=(listener, self._connect, self._stop, self._live),
            name=f"forward-{self.path.parent.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        for conn in list(self._live):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
