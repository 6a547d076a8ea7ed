"""Means, variances, quantiles and summaries over all nodes.

Each function returns a pandas DataFrame with one row per node and a last row
``combined`` (select with ``type="split"`` or ``type="combined"``). Combined means and
variances are exact: they are computed from the nodes' sums and counts, as the pooled
data would give them. Combined quantiles are not: no DataSHIELD function releases what
pooled quantiles need, so, as dsBaseClient's ``ds.quantileMean`` does, they are the
nodes' quantiles averaged with weights equal to the nodes' numbers of valid values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from algorithms import _calls
from algorithms import _rexpr as rx
from algorithms import _rvalues as rv
from algorithms._frames import by_node, select
from algorithms.errors import NodeError
from algorithms.objects import classes, dim, length
from algorithms.tables import table

__all__ = ["QUANTILES", "mean", "quantile_mean", "summary", "var"]

#: The quantiles quantileMeanDS returns, in order (then the mean).
QUANTILES = ("5%", "10%", "25%", "50%", "75%", "90%", "95%")

_NUMERIC_CLASSES = {"numeric", "integer", "double"}


def _counts(value) -> dict:
    return {
        "n_missing": rv.integer(value["Nmissing"]),
        "n_valid": rv.integer(value["Nvalid"]),
        "n_total": rv.integer(value["Ntotal"]),
    }


def mean(session, x: str, *, type: str = "both", nodes: Sequence[str] | None = None):
    """Mean of a numeric variable on each node (``meanDS``) and over all nodes.

    Columns ``mean``, ``n_missing``, ``n_valid``, ``n_total``. The combined mean is the
    nodes' means weighted by their numbers of valid values, i.e. the pooled mean.
    ``type``: ``"both"`` (default), ``"split"`` (nodes only), ``"combined"``.

    >>> mean(session, "D$age")                                  # doctest: +SKIP
                   mean  n_missing  n_valid  n_total
    node
    node1     53.400200          0      400      400
    node2     54.120000          0      500      500
    node3     53.871667          0      600      600
    combined  53.818133          0     1500     1500
    """
    answers = _calls.aggregate(session, rx.call("meanDS", rx.name(x)), nodes)
    rows = {n: {"mean": rv.number(v["EstimatedMean"]), **_counts(v)} for n, v in answers.items()}
    n = sum(r["n_valid"] for r in rows.values())
    total = sum(r["mean"] * r["n_valid"] for r in rows.values() if r["n_valid"] > 0)
    combined = {
        "mean": total / n if n else math.nan,
        **{k: sum(r[k] for r in rows.values()) for k in ("n_missing", "n_valid", "n_total")},
    }
    return select(by_node(rows, combined, ["mean", "n_missing", "n_valid", "n_total"]), type)


def _variance(total: float, squares: float, n: int) -> float:
    if n < 2:
        return math.nan
    return (squares - total * total / n) / (n - 1)


def var(session, x: str, *, type: str = "both", nodes: Sequence[str] | None = None):
    """Sample variance (denominator n - 1) of a numeric variable on each node (``varDS``)
    and over all nodes, from the nodes' sums and sums of squares: the pooled variance.

    Columns ``var``, ``mean``, ``n_missing``, ``n_valid``, ``n_total``.

    >>> var(session, "D$bmi", type="combined")                  # doctest: +SKIP
                    var       mean  n_missing  n_valid  n_total
    node
    combined  20.873411  26.612473         74     1426     1500
    """
    answers = _calls.aggregate(session, rx.call("varDS", rx.name(x)), nodes)
    sums = {}
    rows = {}
    for node, v in answers.items():
        counts = _counts(v)
        s, ss = rv.number(v["Sum"]), rv.number(v["SumOfSquares"])
        sums[node] = (s, ss)
        n = counts["n_valid"]
        rows[node] = {"var": _variance(s, ss, n), "mean": s / n if n else math.nan, **counts}
    n = sum(r["n_valid"] for r in rows.values())
    s = sum(t[0] for t in sums.values())
    ss = sum(t[1] for t in sums.values())
    combined = {
        "var": _variance(s, ss, n),
        "mean": s / n if n else math.nan,
        **{k: sum(r[k] for r in rows.values()) for k in ("n_missing", "n_valid", "n_total")},
    }
    return select(by_node(rows, combined, ["var", "mean", "n_missing", "n_valid", "n_total"]), type)


def quantile_mean(session, x: str, *, type: str = "both", nodes: Sequence[str] | None = None):
    """The 5, 10, 25, 50, 75, 90 and 95% quantiles and the mean of a numeric variable on
    each node (``quantileMeanDS``), and combined.

    Combined: the nodes' values weighted by their numbers of valid values (``lengthDS``
    minus ``numNaDS``), as ``ds.quantileMean`` does. The combined ``Mean`` is exactly the
    pooled mean; the combined quantiles are an approximation of the pooled ones. A node
    with fewer than ``nfilter.tab`` values answers NA and is refused (`NodeError`).

    >>> quantile_mean(session, "D$age").loc["combined"]          # doctest: +SKIP
    5%       21.9
    10%      25.4
    ...
    Mean     53.8
    """
    return select(_quantile_mean(session, rx.name(x), nodes), type)


def _quantile_mean(session, v: str, nodes, valid: dict[str, int] | None = None) -> pd.DataFrame:
    answers = _calls.aggregate(session, rx.call("quantileMeanDS", v), nodes)
    if valid is None:
        lengths = _calls.aggregate(session, rx.call("lengthDS", rx.string(v)), nodes)
        missing = _calls.aggregate(session, rx.call("numNaDS", v), nodes)
        valid = {n: rv.integer(lengths[n]) - rv.integer(missing[n]) for n in answers}
    columns = [*QUANTILES, "Mean"]
    rows, weights, invalid = {}, {}, {}
    for node, value in answers.items():
        values = rv.numbers(value)
        if values.size != len(columns):
            invalid[node] = "too few values to release quantiles (fewer than nfilter.tab)"
            continue
        rows[node] = dict(zip(columns, values.tolist(), strict=True))
        weights[node] = valid[node]
    if invalid:
        raise NodeError(invalid, "quantileMeanDS")
    w = np.array([weights[n] for n in rows], dtype=float)
    matrix = np.array([[rows[n][c] for c in columns] for n in rows])
    combined = dict(zip(columns, (w @ matrix / w.sum()).tolist(), strict=True))
    frame = by_node(rows, combined, columns)
    frame["n_valid"] = [*w.astype(int).tolist(), int(w.sum())]
    return frame


def summary(session, x: str, *, nodes: Sequence[str] | None = None) -> pd.DataFrame:
    """A summary of a server-side object on each node and combined, by its class.

    - numeric/integer: ``class``, ``length``, ``n_valid``, ``n_missing``, ``mean``,
      ``sd`` (exact when combined), the quantiles (combined: weighted, approximate);
    - factor, character, logical: ``class``, ``length`` and the count of every level
      (and ``<NA>``), from `table`;
    - data.frame/matrix: ``class``, ``rows``, ``columns``.

    >>> summary(session, "D$bmi")[["length", "mean", "sd", "50%"]]   # doctest: +SKIP
              length       mean        sd     50%
    node
    node1        400  26.584350  4.573421  26.265
    ...
    combined    1500  26.612473  4.568743  26.340
    """
    cls = classes(session, x, nodes=nodes)
    kinds = {node: c for node, c in cls.items()}
    first = next(iter(kinds.values()))
    label = {node: " ".join(c) for node, c in kinds.items()}
    if any(c in ("data.frame", "matrix") for c in first):
        frame = dim(session, x, nodes=nodes)
    elif any(c in _NUMERIC_CLASSES for c in first):
        v = var(session, x, nodes=nodes)
        # varDS already counted the valid values that weight the quantiles
        valid = {n: int(c) for n, c in v["n_valid"].drop(index=_calls.COMBINED).items()}
        q = _quantile_mean(session, rx.name(x), nodes, valid)
        frame = pd.DataFrame(
            {
                "length": v["n_total"],
                "n_valid": v["n_valid"],
                "n_missing": v["n_missing"],
                "mean": v["mean"],
                "sd": np.sqrt(v["var"]),
            }
        )
        frame = frame.join(q[list(QUANTILES)])
    else:
        counts = table(session, x, nodes=nodes)
        per = {node: t["count"] for node, t in counts.per_node.items()}
        per[_calls.COMBINED] = counts.combined["count"]
        frame = pd.DataFrame(per).T.fillna(0).astype(np.int64)
        frame.insert(0, "length", length(session, x, nodes=nodes)["length"])
        frame.columns.name = None
    frame.insert(0, "class", [*label.values(), label[next(iter(label))]])
    frame.index.name = "node"
    return frame
