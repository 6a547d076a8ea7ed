"""Correlation and covariance matrices over all nodes (``corDS``, ``covDS``).

The nodes return sums, sums of products and counts; adding them up over the nodes
gives exactly the pooled matrices (``casewise``: rows complete in every variable;
``pairwise``: each pair over the rows where both are present, as pandas' ``DataFrame.cov``
and R's ``use="pairwise.complete.obs"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from algorithms import _calls
from algorithms import _rexpr as rx
from algorithms import _rvalues as rv
from algorithms.errors import NodeError
from algorithms.objects import colnames

__all__ = ["Correlation", "Covariance", "cor", "cov"]

_USE = {"casewise": "casewise.complete", "pairwise": "pairwise.complete"}


@dataclass(frozen=True)
class Correlation:
    """``combined``: the pooled correlation matrix (DataFrame, variables x variables);
    ``per_node``: each node's; ``n`` / ``n_per_node``: the complete rows used."""

    combined: pd.DataFrame
    per_node: dict[str, pd.DataFrame]
    n: int
    n_per_node: dict[str, int]


@dataclass(frozen=True)
class Covariance:
    """``combined``: the pooled covariance matrix (denominator n - 1); ``per_node``:
    each node's; ``n`` / ``n_per_node``: rows used (casewise), or a DataFrame of the
    rows used for each pair (pairwise)."""

    combined: pd.DataFrame
    per_node: dict[str, pd.DataFrame]
    n: int | pd.DataFrame
    n_per_node: dict[str, int | pd.DataFrame]
    use: str


def _names(session, x: str, y: str | None, nodes) -> tuple[list[str], list[str]]:
    """The variable labels, and the arguments naming x and y for the server."""
    args = [rx.string(rx.name(x, "x"))]
    if y is not None:
        args.append(rx.string(rx.name(y, "y")))
        return [x, y], args
    names = colnames(session, x, nodes=nodes)
    first = next(iter(names.values()))
    if any(n != first for n in names.values()):
        raise ValueError(f"{x} has other columns on some nodes: {names}")
    return first, args


def _cor_from(sp, s, ss, n) -> np.ndarray:
    cov = (sp - np.outer(s, s) / n) / (n - 1)
    var = (ss - s * s / n) / (n - 1)
    return cov / np.sqrt(np.outer(var, var))


def cor(session, x: str, y: str | None = None, *, nodes: Sequence[str] | None = None):
    """Pearson correlations of two variables, or of all columns of a data frame, over
    the rows complete in all of them (``corDS``).

    >>> r = cor(session, "D$age", "D$bmi")                      # doctest: +SKIP
    >>> r.combined                                              # doctest: +SKIP
              D$age     D$bmi
    D$age  1.000000  0.101523
    D$bmi  0.101523  1.000000
    """
    labels, args = _names(session, x, y, nodes)
    p = len(labels)
    answers = _calls.aggregate(session, rx.call("corDS", *args), nodes)
    parts = {}
    for node, value in answers.items():
        sp = rv.matrix(value["sums.of.products"], p, p)
        s = rv.matrix(value["sums"], p, p)[:, 0]
        ss = rv.matrix(value["sums.of.squares"], p, p)[:, 0]
        n = rv.numbers(value["complete.counts"])[0]
        parts[node] = (sp, s, ss, n)

    def frame(m):
        return pd.DataFrame(m, index=labels, columns=labels)

    per_node = {node: frame(_cor_from(*part)) for node, part in parts.items()}
    total = [sum(part[i] for part in parts.values()) for i in range(4)]
    return Correlation(
        frame(_cor_from(*total)),
        per_node,
        int(total[3]),
        {node: int(part[3]) for node, part in parts.items()},
    )


def cov(
    session,
    x: str,
    y: str | None = None,
    *,
    use: str = "casewise",
    nodes: Sequence[str] | None = None,
):
    """Covariances of two variables, or of all columns of a data frame (``covDS``).

    ``use="casewise"``: over the rows complete in every variable; ``"pairwise"``: each
    pair over the rows where both are present.

    >>> cov(session, "D", use="pairwise").combined.loc["age", "bmi"]   # doctest: +SKIP
    8.77
    """
    if use not in _USE:
        raise ValueError(f"use must be 'casewise' or 'pairwise', not {use!r}")
    labels, args = _names(session, x, y, nodes)
    p = len(labels)
    if y is None:
        args.append(rx.NULL)
    answers = _calls.aggregate(session, rx.call("covDS", *args, rx.string(_USE[use])), nodes)
    errors = {
        node: rv.text(value.get("errorMessage"))
        for node, value in answers.items()
        if rv.text(value.get("errorMessage")) not in (None, "NA")
    }
    if errors:
        raise NodeError(errors, "covDS")
    parts = {}
    for node, value in answers.items():
        sp = rv.matrix(value["sums.of.products"], p, p)
        counts = rv.matrix(value["complete.counts"], p, p)
        if use == "casewise":
            sums = rv.numbers(value["sums"])
            sums = np.repeat(sums.reshape(p, 1), p, axis=1)  # sums[i, j] = sum of x_i
        else:
            sums = rv.matrix(value["sums"], p, p)  # sums[i, j] = sum of x_i where x_j present
        parts[node] = (sp, sums, counts)

    def covariance(sp, sums, counts) -> np.ndarray:
        return (sp - sums * sums.T / counts) / (counts - 1)

    def frame(m):
        return pd.DataFrame(m, index=labels, columns=labels)

    def rows_used(counts):
        return int(counts[0, 0]) if use == "casewise" else frame(counts.astype(np.int64))

    per_node = {node: frame(covariance(*part)) for node, part in parts.items()}
    total = [sum(part[i] for part in parts.values()) for i in range(3)]
    return Covariance(
        frame(covariance(*total)),
        per_node,
        rows_used(total[2]),
        {node: rows_used(part[2]) for node, part in parts.items()},
        use,
    )
