"""Serving the coordinator with waitress: the settings that matter for long polls (one
thread per waiting poll, a few connections per agent) in one place, used by
`dsgateway coordinator serve` and by the tests alike."""

from __future__ import annotations

import threading

from flask import Flask
from waitress.server import create_server

__all__ = ["BackgroundServer", "make_server"]


def make_server(app: Flask, host: str, port: int, threads: int | None = None):
    return create_server(
        app,
        host=host,
        port=port,
        threads=threads or int(app.config["THREADS"]),
        connection_limit=int(app.config["CONNECTION_LIMIT"]),
        ident="dsgateway-coordinator",
    )


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
