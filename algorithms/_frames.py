"""Result frames: one row per node, then the combined row."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from algorithms._calls import COMBINED

__all__ = ["by_node", "select"]

TYPES = ("both", "split", "combined")


def by_node(rows: Mapping[str, Mapping], combined: Mapping | None, columns=None) -> pd.DataFrame:
    """A frame indexed by node name (index name ``node``), with the combined row last."""
    data = dict(rows)
    if combined is not None:
        data[COMBINED] = combined
    frame = pd.DataFrame.from_dict(data, orient="index")
    if columns is not None:
        frame = frame.reindex(columns=list(columns))
    frame.index.name = "node"
    return frame


def select(frame: pd.DataFrame, type: str) -> pd.DataFrame:
    """Rows for ``type``: "both" (nodes and combined), "split" (nodes), "combined"."""
    if type not in TYPES:
        raise ValueError(f"type must be one of {', '.join(TYPES)}, not {type!r}")
    if type == "split":
        return frame.drop(index=COMBINED, errors="ignore")
    if type == "combined":
        return frame.loc[[COMBINED]]
    return frame
