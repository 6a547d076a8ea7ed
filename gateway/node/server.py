"""Serving the gateway with waitress: in the foreground (the CLI) or in a background
thread (the demo and the tests, which talk to it over real HTTP on loopback)."""

from __future__ import annotations

import threading

import waitress
from flask import Flask
from waitress import wasyncore
from waitress.server import create_server

__all__ = ["BackgroundServer", "serve_forever"]


def _options(app: Flask, threads: int) -> dict:
    cfg = app.extensions["dsgateway"].config
    return {
        "threads": threads or cfg.server.threads,
        # Flask refuses bodies over max_body with a clear message; waitress only
        # guards against absurd ones.
        "max_request_body_size": max(cfg.server.max_body * 4, 1 << 20),
        "ident": "dsgateway",
        "channel_timeout": 3600,  # /lastresult may wait for a long command
        # select() (waitress' default) cannot watch descriptors numbered 1024 or more,
        # which a gateway with many sessions (a socket to each R process) may reach.
        "asyncore_use_poll": True,
    }


def serve_forever(app: Flask, host: str, port: int, threads: int = 0) -> None:
    waitress.serve(app, host=host, port=port, **_options(app, threads))


class BackgroundServer:
    """The app on host:port (0: any free port) in a daemon thread; `url` says where."""

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0, threads: int = 0):
        self.app = app
        self._server = create_server(app, host=host, port=port, **_options(app, threads))
        self.host = host
        self.port = self._server.effective_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._run, name="dsgateway-http", daemon=True)

    def _run(self) -> None:
        try:
            self._server.run()
        except (OSError, ValueError):
            pass  # its sockets were closed under it by stop()

    def start(self) -> BackgroundServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        # Let running requests finish, then close every socket: the loop ends by itself.
        self._server.task_dispatcher.shutdown(timeout=5)
        wasyncore.close_all(self._server._map)
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
