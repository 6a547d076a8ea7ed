"""A byte relay from listening socket to one fixed destination, and nothing else.

It runs twice per image run (docs/client-images.md, "How the container reaches the
gateway"):
- inside the run's proxy container (passed as `python3 -c`, Python's standard library
  only): TCP on the run's internal network -> the run's unix socket;
- in the agent (`forwarder.GatewayForwarder` imports `serve`): that unix socket -> the
  gateway's TCP address (or the coordinator's relay listener).
It never parses what it carries and cannot be told another destination. A run that may
use the relay has a second pair: its own port, its own socket, its own destination.

    python3 proxy_main.py LISTEN_HOST:PORT UNIX_SOCKET_PATH [LISTEN_HOST:PORT UNIX_SOCKET_PATH]
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable

MAX_CONNECTIONS = 64
CHUNK = 64 * 1024


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def relay(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until both directions are done, then close both."""
    back = threading.Thread(target=_pump, args=(b, a), daemon=True)
    back.start()
    _pump(a, b)
    back.join()
    a.close()
    b.close()


def serve(
    listener: socket.socket,
    connect: Callable[[], socket.socket],
    stop: threading.Event,
    live: set | None = None,
) -> None:
    """Accept until `listener` is closed or `stop` is set; relay each connection to a
    fresh `connect()`. `live` (optional) collects open sockets so a caller can close them."""
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    live = set() if live is None else live
    lock = threading.Lock()

    def handle(client: socket.socket) -> None:
        try:
            try:
                upstream = connect()
            except OSError:
                client.close()
                return
            with lock:
                live.update((client, upstream))
            relay(client, upstream)
            with lock:
                live.difference_update((client, upstream))
        finally:
            slots.release()

    while not stop.is_set():
        try:
            client, _ = listener.accept()
        except OSError:
            break  # closed under us: stopping
        if stop.is_set():
            client.close()
            break
        if not slots.acquire(blocking=False):
            client.close()  # too many at once: refuse rather than pile up threads
            continue
        threading.Thread(target=handle, args=(client,), daemon=True).start()


def _unix_connector(target: str) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(target)
        except OSError:
            s.close()
            raise
        return s

    return connect


def main(argv: list[str]) -> int:
    if not argv or len(argv) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    pairs = list(zip(argv[0::2], argv[1::2], strict=True))
    # Every listener is bound before "ready" is printed: the node starts the analysis
    # only then, so its first connection never finds a port closed.
    listeners = []
    for listen, target in pairs:
        host, _, port = listen.rpartition(":")
        listener = socket.create_server((host, int(port)), backlog=MAX_CONNECTIONS)
        listeners.append((listener, _unix_connector(target)))
    stop = threading.Event()
    threads = [
        threading.Thread(target=serve, args=(listener, connect, stop), daemon=True)
        for listener, connect in listeners
    ]
    for thread in threads:
        thread.start()
    shown = ", ".join(f"{listen} -> {target}" for listen, target in pairs)
    print(f"dsgateway proxy: {shown}: ready", flush=True)
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
