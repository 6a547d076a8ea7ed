"""Row and column subsets of a server-side data frame (``dataFrameSubsetDS1`` to check,
then ``dataFrameSubsetDS2`` to make it).

Each node refuses a subset with fewer than ``nfilter.subset`` rows
(``Subset to be created is too small (<nfilter.subset)``), raised here as a
`NodeError` naming the node; no node creates anything until all have agreed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pandas as pd

from algorithms import _calls
from algorithms import _rexpr as rx
from algorithms import _rvalues as rv
from algorithms.objects import colnames, dim

__all__ = ["OPERATORS", "subset"]

#: dsBase's operator numbers.
OPERATORS = {"==": 1, "!=": 2, "<": 3, "<=": 4, ">": 5, ">=": 6}


def _columns(session, df: str, cols, nodes) -> str:
    if cols is None:
        return rx.NULL
    cols = list(cols)
    if any(isinstance(c, str) for c in cols):
        names = colnames(session, df, nodes=nodes)
        positions = {}
        for node, node_names in names.items():
            try:
                positions[node] = [
                    node_names.index(c) + 1 if isinstance(c, str) else int(c) for c in cols
                ]
            except ValueError as error:
                raise ValueError(f"{df} on node {node!r} has no column {error}") from None
        first = next(iter(positions.values()))
        if any(pos != first for pos in positions.values()):
            raise ValueError(f"the columns {cols} are at different positions on the nodes")
        cols = first
    return rx.number_list(int(c) for c in cols)


def subset(
    session,
    df: str,
    new: str,
    variable: str | None = None,
    operator: str = "==",
    value: float | str | None = None,
    *,
    keep_na: bool = False,
    keep_cols: Sequence[int | str] | None = None,
    rm_cols: Sequence[int | str] | None = None,
    nodes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Create ``new`` on every node: the rows of data frame ``df`` where
    ``variable <operator> value`` holds (``value``: a number, or the name of another
    server-side variable), and the columns ``keep_cols`` (or all but ``rm_cols``;
    1-based positions or names). Without ``variable`` every row is kept. Rows where the
    comparison is NA are dropped unless ``keep_na``. Returns the dimensions of ``new``
    (as `dim`).

    >>> subset(session, "D", "old", "D$age", ">=", 65)          # doctest: +SKIP
              rows  columns
    node
    node1      120       11
    node2      152       11
    node3      171       11
    combined   443       11
    """
    rx.name(df, "df")
    target = rx.name(new, "new")
    if keep_cols is not None and rm_cols is not None:
        raise ValueError("give keep_cols or rm_cols, not both")
    if variable is None:
        v1 = v2 = rx.string("ONES")
        op = rx.number(1)
    else:
        if operator not in OPERATORS:
            raise ValueError(f"operator must be one of {' '.join(OPERATORS)}, not {operator!r}")
        if value is None:
            raise ValueError("a value to compare the variable with is needed")
        v1 = rx.string(rx.name(variable, "variable"))
        if isinstance(value, str):
            v2 = rx.string(rx.name(value, "value"))
        else:
            v2 = rx.string(rx.number(value), "value")
        op = rx.number(OPERATORS[operator])
    args = [
        rx.string(df),
        v1,
        v2,
        op,
        _columns(session, df, keep_cols, nodes),
        _columns(session, df, rm_cols, nodes),
        rx.logical(keep_na),
    ]
    checks = _calls.aggregate(session, rx.call("dataFrameSubsetDS1", *args), nodes)
    for node, answer in checks.items():
        lines = rv.strings(answer)
        if len(lines) > 1:  # dsBase's warning about a subset almost as large as the data
            warnings.warn(f"node {node!r}: {' '.join(lines)}", stacklevel=2)
    _calls.assign(session, target, rx.call("dataFrameSubsetDS2", *args), nodes)
    return dim(session, target, nodes=nodes)
