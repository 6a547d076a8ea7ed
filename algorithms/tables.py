"""Contingency tables over all nodes (``asFactorDS1`` for the levels, then ``tableDS``).

Each node refuses a table in which a non-zero count (NA cells aside) is below its
``nfilter.tab``: the node returns dsBase's ``Failed: ...`` message instead of counts,
and `table` raises it as a `NodeError` naming the node. The combined table is the sum
of the nodes' tables, so its cells are also 0 or at least ``nfilter.tab``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from algorithms import _calls
from algorithms import _rexpr as rx
from algorithms import _rvalues as rv
from algorithms.errors import NodeError

__all__ = ["NA_LABEL", "Table", "levels", "table"]

#: The label of the row/column that counts missing values (as R prints it).
NA_LABEL = "<NA>"

_NUMERIC = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_USE_NA = ("always", "no")


@dataclass(frozen=True)
class Table:
    """A 1-D or 2-D table.

    ``combined``: counts over all nodes, a DataFrame (1-D: index = levels, one column
    ``count``; 2-D: index = levels of the row variable, columns = levels of the column
    variable). ``per_node``: the same for each node. ``variables``: the variable names.
    With ``use_na="always"`` the last row (and column) ``<NA>`` counts missing values.
    """

    variables: tuple[str, ...]
    combined: pd.DataFrame
    per_node: dict[str, pd.DataFrame]


def levels(session, x: str, *, nodes: Sequence[str] | None = None) -> dict[str, list[str]]:
    """The levels ``factor(x)`` has on each node (``asFactorDS1``): ``{node: [levels]}``.

    A node refuses when there are too many levels (``nfilter.levels.max``,
    ``nfilter.levels.density``).

    >>> levels(session, "D$sex")                                # doctest: +SKIP
    {'node1': ['female', 'male'], 'node2': ['female', 'male'], 'node3': ['female', 'male']}
    """
    answers = _calls.aggregate(session, rx.call("asFactorDS1", rx.string(rx.name(x))), nodes)
    return {node: rv.strings(value) for node, value in answers.items()}


def _union(per_node: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    seen = set()
    for lv in per_node.values():
        for level in lv:
            if level not in seen:
                seen.add(level)
                out.append(level)
    if out and all(_NUMERIC.fullmatch(v) for v in out):
        out.sort(key=float)  # as factor() orders a numeric variable's levels
    return out


def _transmittable(values: list[str]) -> bool:
    try:
        rx.string_list(values)
    except ValueError:
        return False
    return True


def table(
    session,
    rvar: str,
    cvar: str | None = None,
    *,
    use_na: str = "always",
    nodes: Sequence[str] | None = None,
) -> Table:
    """Counts of one variable, or of two crossed, on each node and over all nodes.

    The levels of all nodes are sent to every node, so every node's table has the same
    rows and columns (a level missing on a node counts 0 there). ``use_na="always"``
    (dsBase's default) adds the ``<NA>`` row/column; ``"no"`` leaves it out.

    >>> t = table(session, "D$sex", "D$region")                 # doctest: +SKIP
    >>> t.combined                                              # doctest: +SKIP
    region  centre  east  north  south  west  <NA>
    sex
    female     160   152    141    167   149     0
    male       144   151    150    141   145     0
    <NA>         0     0      0      0     0     0
    """
    if use_na not in _USE_NA:
        raise ValueError(f"use_na must be 'always' or 'no', not {use_na!r}")
    variables = [rx.name(rvar, "rvar")] + ([rx.name(cvar, "cvar")] if cvar else [])
    node_levels = {v: levels(session, v, nodes=nodes) for v in variables}
    shared = {v: _union(node_levels[v]) for v in variables}
    sendable = {v: _transmittable(shared[v]) for v in variables}

    def levels_arg(v: str | None) -> str:
        if v is None or not sendable[v] or not shared[v]:
            return rx.NULL  # the node then uses its own levels (what asFactorDS1 said)
        return rx.string_list(shared[v], f"a level of {v}")

    expr = rx.call(
        "tableDS",
        rx.named("rvar.transmit", rx.string(rvar)),
        rx.named("cvar.transmit", rx.string(cvar) if cvar else rx.NULL),
        rx.named("stvar.transmit", rx.NULL),
        rx.named("rvar.all.unique.levels.transmit", levels_arg(rvar)),
        rx.named("cvar.all.unique.levels.transmit", levels_arg(cvar)),
        rx.named("stvar.all.unique.levels.transmit", rx.NULL),
        rx.named("exclude.transmit", rx.NULL),
        rx.named("useNA.transmit", rx.string(use_na)),
        rx.named("force.nfilter.transmit", rx.NULL),
    )
    answers = _calls.aggregate(session, expr, nodes)
    refused = {
        node: value
        for node, value in answers.items()
        if isinstance(rv.scalar(value), str) or (isinstance(value, list) and not value)
    }
    if refused:
        raise NodeError({n: rv.text(v) or "empty table" for n, v in refused.items()}, "tableDS")

    per_node = {}
    for node, value in answers.items():
        labels = []
        for v in variables:
            lv = shared[v] if sendable[v] else node_levels[v][node]
            labels.append(list(lv) + ([NA_LABEL] if use_na == "always" else []))
        per_node[node] = _frame(value, labels, variables)
    combined = _sum(per_node.values(), variables)
    return Table(tuple(variables), combined, per_node)


def _frame(value, labels: list[list[str]], variables: list[str]) -> pd.DataFrame:
    if len(labels) == 1:
        counts = rv.numbers(value)
        if counts.size != len(labels[0]):
            raise ValueError(f"tableDS returned {counts.size} counts for {len(labels[0])} levels")
        frame = pd.DataFrame({"count": counts.astype(np.int64)}, index=labels[0])
    else:
        counts = rv.matrix(value, len(labels[0]), len(labels[1]))
        frame = pd.DataFrame(counts.astype(np.int64), index=labels[0], columns=labels[1])
        frame.columns.name = variables[1].split("$")[-1]
    frame.index.name = variables[0].split("$")[-1]
    return frame


def _sum(frames, variables: list[str]) -> pd.DataFrame:
    frames = list(frames)
    total = frames[0]
    for frame in frames[1:]:
        # nodes that had to use their own levels may differ: align by label
        total = total.add(frame, fill_value=0)
    if len(frames) > 1:
        total = total.astype(np.int64)
        total = _na_last(total)
    total.index.name = variables[0].split("$")[-1]
    if len(variables) > 1:
        total.columns.name = variables[1].split("$")[-1]
    return total


def _na_last(frame: pd.DataFrame) -> pd.DataFrame:
    def order(labels):
        return [x for x in labels if x != NA_LABEL] + [x for x in labels if x == NA_LABEL]

    if frame.shape[1] > 1 or frame.columns[0] != "count":
        frame = frame.reindex(columns=order(frame.columns))
    return frame.reindex(index=order(frame.index))
