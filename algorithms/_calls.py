"""Fanning one server call out to every node of a `datashield.DSSession`.

Calls go through the standard DataSHIELD connection interface (`DSConnection.aggregate`
and `.assign_expr`, any driver), one thread per node so the nodes work at the same
time. Synchronous calls are asked for (Opal answers them in one HTTP round trip);
a driver that only works asynchronously gets its result polled with a short backoff.
Failures from every node are collected and raised together as one `NodeError`.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from algorithms._rvalues import decode
from algorithms.errors import NodeError

__all__ = ["COMBINED", "aggregate", "assign", "connections", "node_message", "remove"]

#: The row (or key) that holds the result over all nodes together.
COMBINED = "combined"

_POLL_FIRST = 0.002
_POLL_MAX = 0.1

# Wrappers that drivers and R put around the node's own message.
_PREFIXES = [
    re.compile(r"^Command \S+ failed on \S+?:\s*"),  # datashield-opal, async
    re.compile(r"^Error\s*:\s*"),  # R's try(): "Error : msg"
    re.compile(r"^Error in .+? : ", re.S),  # R: "Error in f(x) : msg" (f may be pkg::f)
]


def connections(session, nodes: Sequence[str] | None = None) -> list:
    """The session's open connections (those named in ``nodes``, in session order)."""
    if not getattr(session, "conns", None):
        raise ValueError("the DataSHIELD session has no open connection: call session.open()")
    session.sessions()  # start the R sessions if needed (the standard API waits for them)
    conns = list(session.conns)
    if nodes is not None:
        wanted = list(nodes)
        known = {c.get_name() for c in conns}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ValueError(f"no open connection named {', '.join(map(repr, unknown))}")
        conns = [c for c in conns if c.get_name() in set(wanted)]
    if not conns:
        raise ValueError("no node selected")
    if any(c.get_name() == COMBINED for c in conns):
        raise ValueError(f"a node named {COMBINED!r} would clash with the combined result")
    return conns


def node_message(error: BaseException) -> str:
    """The node's own message out of a driver's exception."""
    message = None
    get_error = getattr(error, "get_error", None)
    if callable(get_error):
        try:
            detail = get_error()
        except Exception:  # a driver's helper must not hide the real error
            detail = None
        if isinstance(detail, dict):
            message = detail.get("message") or None
            if message is None and detail.get("arguments"):
                message = "; ".join(str(a) for a in detail["arguments"])
    if not message:
        message = str(error) or type(error).__name__
    message = message.strip()
    for prefix in _PREFIXES:
        message = prefix.sub("", message, count=1)
    return message.strip()


def _wait(result) -> Any:
    delay = _POLL_FIRST
    while not result.is_completed():
        time.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)
    return result.fetch()


def _fan_out(conns: list, work: Callable[[Any], Any], label: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}

    def run(conn):
        try:
            return True, work(conn)
        except Exception as error:  # every node's failure is reported, not just the first
            return False, node_message(error)

    if len(conns) == 1:
        outcomes = [run(conns[0])]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(conns)) as pool:
            outcomes = list(pool.map(run, conns))
    for conn, (ok, value) in zip(conns, outcomes, strict=True):
        if ok:
            results[conn.get_name()] = value
        else:
            failures[conn.get_name()] = value
    if failures:
        raise NodeError(failures, label)
    return results


def _label(expr: str) -> str:
    return expr.split("(", 1)[0].strip() or expr[:40]


def aggregate(
    session, expr: str | dict[str, str], nodes: Sequence[str] | None = None
) -> dict[str, Any]:
    """{node: JSON-decoded value} of an aggregate expression on every selected node.

    ``expr`` may be a dict {node: expression} when nodes need different arguments.
    """
    conns = connections(session, nodes)

    def work(conn):
        text = expr[conn.get_name()] if isinstance(expr, dict) else expr
        return decode(_wait(conn.aggregate(text, asynchronous=False)))

    first = next(iter(expr.values())) if isinstance(expr, dict) else expr
    return _fan_out(conns, work, _label(first))


def assign(session, symbol: str, expr: str, nodes: Sequence[str] | None = None) -> None:
    """Assign the value of ``expr`` to ``symbol`` on every selected node."""
    conns = connections(session, nodes)
    _fan_out(
        conns, lambda conn: _wait(conn.assign_expr(symbol, expr, asynchronous=False)), _label(expr)
    )


def remove(session, symbol: str, nodes: Sequence[str] | None = None) -> None:
    """Remove ``symbol`` from every selected node (missing symbols are ignored)."""
    conns = connections(session, nodes)
    _fan_out(conns, lambda conn: conn.rm_symbol(symbol), "rm")
