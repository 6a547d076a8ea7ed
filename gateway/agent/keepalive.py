"""One keep-alive HTTP(S) connection to one origin, for one thread, on `http.client`.

The relay carries every DataSHIELD call of a researcher over two hops the agent makes
(the coordinator's node link and the local gateway); `requests` costs about a
millisecond of Python per call on its own, which would be most of the relay's added
time. This is the little the relay needs: a persistent connection, re-opened when the
server has closed it, a timeout per request, TLS verified against the same CA bundle
`requests` uses, and the proxy from the environment (HTTPS through CONNECT).
"""

from __future__ import annotations

import http.client
import os
import select
import ssl
import urllib.request
from urllib.parse import urlsplit

__all__ = ["KeepAlive"]


def _tls_context() -> ssl.SSLContext:
    cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    if not cafile:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:  # pragma: no cover - certifi comes with requests
            cafile = None
    return ssl.create_default_context(cafile=cafile)


class KeepAlive:
    """`request()` -> (status, [(name, value), ...], body). Not thread-safe: one per
    thread. Network faults raise OSError / http.client.HTTPException."""

    def __init__(self, base_url: str, *, timeout: float = 30, proxies: bool = True):
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.prefix = parts.path
        self.timeout = timeout
        self.proxy = None
        if proxies and not urllib.request.proxy_bypass(self.host):
            proxy = urllib.request.getproxies().get(self.scheme)
            if proxy:
                self.proxy = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        self._context = _tls_context() if self.scheme == "https" else None
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.proxy is not None:
            host, port = self.proxy.hostname, self.proxy.port or 80
            if self.scheme == "https":
                conn = http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=self._context
                )
                conn.set_tunnel(self.host, self.port)
                return conn
            return http.client.HTTPConnection(host, port, timeout=self.timeout)
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self._context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _usable(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and conn.sock is not None:
            # A kept connection the server has closed meanwhile reads as ready (EOF):
            # open a new one rather than send a request nobody will read.
            poller = select.poll()  # not select(): no limit on descriptor numbers
            poller.register(conn.sock, select.POLLIN)
            if poller.poll(0):
                conn.close()
                conn = None
        if conn is None:
            conn = self._conn = self._connect()
        return conn

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = self._usable()
        target = self.prefix + path
        if self.proxy is not None and self.scheme == "http":
            target = f"http://{self.host}:{self.port}{target}"
        try:
            conn.timeout = timeout or self.timeout
            if conn.sock is not None:
                conn.sock.settimeout(conn.timeout)
            conn.request(method, target, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            if response.will_close:
                conn.close()
            return response.status, response.getheaders(), data
        except BaseException:
            conn.close()  # half a request or answer: never reuse this connection
            self._conn = None
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
