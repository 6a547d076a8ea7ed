"""What the server-side objects are: dimensions, column names, lengths, classes, and the
nodes' disclosure settings."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from algorithms import _calls
from algorithms import _rexpr as rx
from algorithms import _rvalues as rv
from algorithms._frames import by_node, select

__all__ = ["classes", "colnames", "dim", "disclosure_settings", "length"]


def dim(session, x: str, *, type: str = "both", nodes: Sequence[str] | None = None):
    """Rows and columns of a data frame (or matrix) on each node, and over all nodes.

    Calls ``dimDS("x")``. The combined row adds up the rows; its column count is the
    nodes' common one (NaN if they differ).

    >>> dim(session, "D")                                       # doctest: +SKIP
              rows  columns
    node
    node1      400       11
    node2      500       11
    node3      600       11
    combined  1500       11
    """
    answers = _calls.aggregate(session, rx.call("dimDS", rx.string(rx.name(x))), nodes)
    rows = {}
    for node, value in answers.items():
        d = rv.numbers(value)
        rows[node] = {"rows": int(d[0]), "columns": int(d[1]) if d.size > 1 else 1}
    cols = {r["columns"] for r in rows.values()}
    combined = {
        "rows": sum(r["rows"] for r in rows.values()),
        "columns": cols.pop() if len(cols) == 1 else float("nan"),
    }
    return select(by_node(rows, combined, ["rows", "columns"]), type)


def colnames(session, x: str, *, nodes: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Column names of a data frame on each node: ``{node: [names]}`` (``colnamesDS``).

    >>> colnames(session, "D")["node1"][:3]                     # doctest: +SKIP
    ['id', 'age', 'sex']
    """
    answers = _calls.aggregate(session, rx.call("colnamesDS", rx.string(rx.name(x))), nodes)
    return {node: rv.strings(value) for node, value in answers.items()}


def length(session, x: str, *, type: str = "both", nodes: Sequence[str] | None = None):
    """Length of a vector on each node and in total (``lengthDS``); a frame with column
    ``length``.

    >>> length(session, "D$age").loc["combined", "length"]      # doctest: +SKIP
    1500
    """
    answers = _calls.aggregate(session, rx.call("lengthDS", rx.string(rx.name(x))), nodes)
    rows = {node: {"length": rv.integer(v)} for node, v in answers.items()}
    combined = {"length": sum(r["length"] for r in rows.values())}
    return select(by_node(rows, combined), type)


def classes(session, x: str, *, nodes: Sequence[str] | None = None) -> dict[str, list[str]]:
    """The R class(es) of an object on each node: ``{node: ["numeric"]}`` (``classDS``).

    >>> classes(session, "D$sex")                               # doctest: +SKIP
    {'node1': ['factor'], 'node2': ['factor'], 'node3': ['factor']}
    """
    answers = _calls.aggregate(session, rx.call("classDS", rx.string(rx.name(x))), nodes)
    return {node: rv.strings(value) for node, value in answers.items()}


def disclosure_settings(session, *, nodes: Sequence[str] | None = None) -> pd.DataFrame:
    """Each node's disclosure filters (``listDisclosureSettingsDS()``): one row per node,
    one column per setting (``nfilter.tab``, ``nfilter.subset``, ``nfilter.glm``, ...).

    >>> disclosure_settings(session)["nfilter.tab"]             # doctest: +SKIP
    node
    node1    3
    node2    3
    node3    3
    Name: nfilter.tab, dtype: int64
    """
    answers = _calls.aggregate(session, rx.call("listDisclosureSettingsDS"), nodes)
    rows = {node: {k: rv.scalar(v) for k, v in value.items()} for node, value in answers.items()}
    return by_node(rows, None)
