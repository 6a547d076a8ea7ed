"""Reading R values as the DataSHIELD Python drivers deliver them: JSON-decoded.

Opal-style servers serialise results with jsonlite (``auto_unbox=TRUE``, ``NA`` as
``null``): a length-1 vector may arrive as a scalar or a one-element list, a matrix as
a list of rows, a named vector as a plain list or as an object. These helpers accept
every such spelling and return numpy/Python values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["decode", "integer", "matrix", "number", "numbers", "scalar", "strings", "text"]

_ATOMIC = {"logical", "integer", "double", "character", "complex", "raw"}
_R_TYPES = _ATOMIC | {
    "NULL",
    "list",
    "closure",
    "builtin",
    "special",
    "environment",
    "symbol",
    "language",
    "expression",
    "S4",
    "externalptr",
    "pairlist",
}
_SPECIAL_NUMBERS = {"NA": None, "NaN": math.nan, "Inf": math.inf, "-Inf": -math.inf}


def _is_serialized(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("type"), str)
        and value["type"] in _R_TYPES
        and set(value) <= {"type", "attributes", "value"}
        and ("value" in value or value["type"] == "NULL")
    )


def decode(value: Any) -> Any:
    """R values written by jsonlite's ``serializeJSON`` (what Opal falls back to for
    objects plain JSON cannot hold: tables, lists holding functions) turned into the
    shapes ``toJSON`` gives: named lists as dicts, matrices as lists of rows, factors as
    their labels, length-1 vectors unboxed, NA as None, functions and environments as
    None. Plain JSON passes through unchanged."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, Mapping) and not _is_serialized(value):
        return {k: decode(v) for k, v in value.items()}
    if not isinstance(value, Mapping):
        return value
    kind = value["type"]
    attributes = {k: decode(v) for k, v in (value.get("attributes") or {}).items()}
    raw = value.get("value")
    if kind == "list":
        items = [decode(v) for v in raw or []]
        cls = _as_list(attributes.get("class"))
        names = _as_list(attributes.get("names"))
        if "data.frame" in cls and names:
            return [
                dict(zip(names, row, strict=True))
                for row in zip(*map(_as_list, items), strict=True)
            ]
        if names and len(names) == len(items):
            return dict(zip(names, items, strict=True))
        return items
    if kind not in _ATOMIC:
        return None
    items = [
        _SPECIAL_NUMBERS.get(v, v) if isinstance(v, str) and kind != "character" else v
        for v in raw or []
    ]
    levels = _as_list(attributes.get("levels"))
    if "factor" in _as_list(attributes.get("class")) and levels:
        items = [None if v is None else levels[int(v) - 1] for v in items]
    dim = _as_list(attributes.get("dim"))
    if len(dim) >= 2:
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array.reshape([int(d) for d in dim], order="F").tolist()
    if len(items) == 1 and not dim:
        return items[0]
    return items


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def scalar(value: Any) -> Any:
    """The single element of a length-1 vector (given as a scalar or a 1-element list)."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, Mapping) and len(value) == 1:
        return scalar(next(iter(value.values())))
    return value


def number(value: Any) -> float:
    """A length-1 numeric vector as a float; R's NA (null) is NaN."""
    value = scalar(value)
    if value is None:
        return math.nan
    if isinstance(value, str):
        return float(value) if value not in ("NA", "NaN") else math.nan
    if isinstance(value, list | Mapping):
        raise ValueError(f"expected one number, got {value!r:.100}")
    return float(value)


def integer(value: Any) -> int:
    """A length-1 count as an int (NA is not a count: ValueError)."""
    x = number(value)
    if math.isnan(x):
        raise ValueError("expected a count, got NA")
    return round(x)


def _flat(value: Any) -> list:
    if value is None:
        return [None]
    if isinstance(value, Mapping):
        value = list(value.values())
    if not isinstance(value, list):
        return [value]
    out: list = []
    for item in value:
        if isinstance(item, list | Mapping):
            out.extend(_flat(item))
        else:
            out.append(item)
    return out


def numbers(value: Any) -> np.ndarray:
    """A numeric vector (any nesting flattened in order) as a float array; null -> NaN."""
    return np.array([math.nan if v is None else float(v) for v in _flat(value)], dtype=float)


def matrix(value: Any, nrow: int | None = None, ncol: int | None = None) -> np.ndarray:
    """An R matrix as a 2-D float array.

    jsonlite writes matrices as a list of rows; a 1 x 1 matrix may have been unboxed to
    a scalar and a one-row matrix to a plain list, so give ``nrow``/``ncol`` when known.
    """
    if isinstance(value, list) and value and all(isinstance(r, list) for r in value):
        rows = [[math.nan if v is None else float(v) for v in _flat(r)] for r in value]
        out = np.array(rows, dtype=float)
    else:
        flat = numbers(value)
        if nrow is None and ncol is None:
            out = flat.reshape(1, -1)
        else:
            rows = nrow if nrow is not None else flat.size // ncol
            out = flat.reshape(rows, -1)
    if (nrow is not None and out.shape[0] != nrow) or (ncol is not None and out.shape[1] != ncol):
        raise ValueError(f"expected a {nrow} x {ncol} matrix, got shape {out.shape}")
    return out


def strings(value: Any) -> list[str]:
    """A character vector as a list of str (NA as None)."""
    if value is None:
        return []
    return [None if v is None else str(v) for v in _flat(value)]


def text(value: Any) -> str | None:
    """A length-1 character vector (or NA/NULL -> None)."""
    value = scalar(value)
    if value is None or isinstance(value, list | Mapping):
        return None
    return str(value)
