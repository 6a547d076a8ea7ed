"""Framing for the Unix sockets between the web process, the zygote and the workers.

Both ends are our own processes on the same machine, so messages are pickled; each is
sent as an 8-byte big-endian length followed by the payload.
"""

import pickle
import socket
import struct

_HEADER = struct.Struct(">Q")


class ChannelClosed(EOFError):
    """The other end of the socket went away (its process exited or was killed)."""


def send_msg(sock: socket.socket, obj, fds: list[int] | None = None) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data = _HEADER.pack(len(payload)) + payload
    if fds:
        # The descriptors ride with the first byte; the rest follows as a plain stream.
        socket.send_fds(sock, [data[:1]], fds)
        data = data[1:]
    sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int, first: bytes = b"") -> bytes:
    chunks = [first]
    got = len(first)
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ChannelClosed("connection closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_msg(sock: socket.socket, with_fds: bool = False):
    """Receive one message; with `with_fds`, return `(obj, fds)`."""
    fds: list[int] = []
    first = b""
    if with_fds:
        first, fds, _flags, _addr = socket.recv_fds(sock, 1, 4)
        if not first:
            raise ChannelClosed("connection closed")
    header = _recv_exact(sock, _HEADER.size, first)
    (size,) = _HEADER.unpack(header)
    obj = pickle.loads(_recv_exact(sock, size))  # noqa: S301 - both ends are our own processes
    return (obj, fds) if with_fds else obj
