"""Serving the coordinator with waitress: the settings that matter for long polls (one
thread per waiting poll, a few connections per agent) in one place, used by
`dsgateway coordinator serve` and by the tests alike."""

from __future__ import annotations

import threading

from flask import Flask
from waitress.server import create_server

__all__ = ["BackgroundServer", "make_server"]


def make_server(app: Flask, host: str, port: int, threads: int | None = None):
    limit = int(app.config["CONNECTION_LIMIT"])
    _allow_open_files(limit)
    return create_server(
        app,
        host=host,
        port=port,
        threads=threads or int(app.config["THREADS"]),
        connection_limit=limit,
        ident="dsgateway-coordinator",
        # waitress' loop uses select() unless told otherwise, and select() cannot watch
        # a descriptor numbered 1024 or more: with a few hundred connected agents the
        # loop would stop with "filedescriptor out of range". poll() has no such limit.
        asyncore_use_poll=True,
    )


def _allow_open_files(connections: int) -> None:
    """Raise the process's soft limit on open files (often 1024) towards the hard one,
    so CONNECTION_LIMIT connections (plus the database's, the logs', R's) can be
    accepted; a lower hard limit is left as the operator set it."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 512
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class BackgroundServer:
    """The app on host:port (0: a free one) in a daemon thread. `stop()` closes the
    listener and every open connection, as a process exit would; `start()` again
    serves on the same port."""

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0, threads=None):
        self.app, self.host, self.threads = app, host, threads
        self._server = make_server(app, host, port, threads)
        self.port = self._server.effective_port
        self.url = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> BackgroundServer:
        if self._server is None:
            self._server = make_server(self.app, self.host, self.port, self.threads)
        self._thread = threading.Thread(target=self._run, name="coordinator-http", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._server.run()
        except OSError:
            pass  # closed under our feet by stop()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for channel in list(self._server._map.values()):
            channel.close()
        self._server.task_dispatcher.shutdown(timeout=1)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
