"""Histograms over all nodes (``histogramDS1`` for the range, ``histogramDS2`` for the
counts), and a matplotlib plot of the result.

Methods, as in dsBase: ``"smallCellsRule"`` (the node zeroes bins holding 1 to
``nfilter.tab - 1`` values and says how many it zeroed; needs the site option
``datashield.seed`` for the blurred range), ``"deterministic"`` (values replaced by the
centroids of their ``k`` nearest neighbours), ``"probabilistic"`` (values plus normal
noise of variance ``noise * var(x)``). With the small-cells rule the combined counts are
the pooled counts wherever no node had a small bin.
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

__all__ = ["METHODS", "Histogram", "histogram", "plot_histogram"]

METHODS = {"smallCellsRule": 1, "deterministic": 2, "probabilistic": 3}


@dataclass(frozen=True)
class Histogram:
    """Bins ``breaks[i] < x <= breaks[i+1]`` (the first bin closed on both sides, as R's
    ``hist``). ``counts``/``density``: combined; ``per_node``: each node's counts;
    ``invalid_cells``: how many small bins each node zeroed."""

    variable: str
    breaks: np.ndarray
    counts: np.ndarray
    density: np.ndarray
    mids: np.ndarray
    per_node: dict[str, np.ndarray]
    invalid_cells: dict[str, int]
    method: str

    def to_frame(self) -> pd.DataFrame:
        """One row per bin: ``lower``, ``upper``, ``mid``, each node's count, ``combined``,
        ``density``."""
        frame = pd.DataFrame(
            {"lower": self.breaks[:-1], "upper": self.breaks[1:], "mid": self.mids}
        )
        for node, counts in self.per_node.items():
            frame[node] = counts
        frame[_calls.COMBINED] = self.counts
        frame["density"] = self.density
        return frame

    def plot(self, ax=None, **bar_options):
        """Draw the combined histogram; see `plot_histogram`."""
        return plot_histogram(self, ax=ax, **bar_options)


def histogram(
    session,
    x: str,
    num_breaks: int = 10,
    *,
    method: str = "smallCellsRule",
    k: int = 3,
    noise: float = 0.25,
    range: tuple[float, float] | None = None,
    nodes: Sequence[str] | None = None,
) -> Histogram:
    """Counts of a numeric variable in ``num_breaks`` equal bins, on each node and combined.

    The bins span the nodes' (blurred) ranges from ``histogramDS1``, unless ``range``
    gives them. A node refuses more bins than ``nfilter.levels.density`` times its
    number of values, ``k`` outside ``[nfilter.kNN, n - nfilter.kNN]`` or ``noise``
    below ``nfilter.noise``.

    >>> h = histogram(session, "D$age", 8)                      # doctest: +SKIP
    >>> h.counts                                                # doctest: +SKIP
    array([ 74, 179, 207, 190, 201, 215, 211, 223])
    >>> h.plot()                                                # doctest: +SKIP
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if isinstance(num_breaks, bool) or not isinstance(num_breaks, int) or num_breaks < 1:
        raise ValueError("num_breaks must be a positive whole number")
    v = rx.name(x)
    m = METHODS[method]
    if range is None:
        answers = _calls.aggregate(
            session,
            rx.call("histogramDS1", v, rx.number(m), rx.number(k), rx.number(noise)),
            nodes,
        )
        bad = {n: a for n, a in answers.items() if isinstance(rv.scalar(a), str)}
        if bad:
            raise NodeError({n: rv.text(a) for n, a in bad.items()}, "histogramDS1")
        ranges = np.array([rv.numbers(a)[:2] for a in answers.values()])
        lo, hi = float(np.nanmin(ranges[:, 0])), float(np.nanmax(ranges[:, 1]))
    else:
        lo, hi = (float(r) for r in range)
    if not lo < hi:
        raise ValueError(f"empty range [{lo}, {hi}]")
    expr = rx.call(
        "histogramDS2",
        v,
        rx.number(num_breaks),
        rx.number(lo),
        rx.number(hi),
        rx.number(m),
        rx.number(k),
        rx.number(noise),
    )
    answers = _calls.aggregate(session, expr, nodes)
    per_node, invalid, breaks = {}, {}, None
    for node, value in answers.items():
        if not isinstance(value, dict) or "histobject" not in value:
            raise NodeError({node: rv.text(value) or "no histogram returned"}, "histogramDS2")
        h = value["histobject"]
        node_breaks = rv.numbers(h["breaks"])
        if breaks is None:
            breaks = node_breaks
        elif node_breaks.shape != breaks.shape or not np.array_equal(node_breaks, breaks):
            raise ValueError(f"node {node!r} used other breaks than the first node")
        per_node[node] = rv.numbers(h["counts"]).astype(np.int64)
        invalid[node] = rv.integer(value.get("invalidcells", 0))
    counts = np.sum(list(per_node.values()), axis=0)
    widths = np.diff(breaks)
    total = counts.sum()
    density = counts / (total * widths) if total else np.zeros_like(widths)
    mids = (breaks[:-1] + breaks[1:]) / 2
    return Histogram(x, breaks, counts, density, mids, per_node, invalid, method)


def plot_histogram(h: Histogram, ax=None, density: bool = False, **bar_options):
    """Draw a `Histogram`'s combined counts (or density) as bars on a matplotlib ``ax``
    (a new figure's axes if none); returns the axes. matplotlib is imported only here:
    ``pip install matplotlib`` to plot.

    >>> ax = plot_histogram(histogram(session, "D$age"))        # doctest: +SKIP
    >>> ax.figure.savefig("age.png")                            # doctest: +SKIP
    """
    if ax is None:
        try:
            import matplotlib.pyplot as plt
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("plotting needs matplotlib: pip install matplotlib") from error
        _, ax = plt.subplots()
    heights = h.density if density else h.counts
    options = {"align": "edge", "edgecolor": "black", **bar_options}
    ax.bar(h.breaks[:-1], heights, width=np.diff(h.breaks), **options)
    ax.set_xlabel(h.variable)
    ax.set_ylabel("density" if density else "count")
    ax.set_title(f"Histogram of {h.variable} ({h.method})")
    return ax
