"""R values (`gateway.client.robject`) as the Python values the Opal face's JSON gives.

`to_python(obj)` turns a tree read by `gateway.client.rds.unserialize` into the Python
values the Opal face's JSON gives (what `datashield-opal` hands to its callers), so that
code written against one driver gets the same inputs through the other:

- R tries ``jsonlite::toJSON(x, auto_unbox = TRUE, null = "null", na = "null")``:
  length-1 vectors become scalars, longer ones lists; ``NA``, ``NaN`` and infinities
  ``None``; factors their labels; dates ``"YYYY-MM-DD"``; matrices lists of rows (arrays
  nested the same way); named lists dicts (a missing name becomes the element's 1-based
  position, repeated names are made unique as ``make.unique()`` does); unnamed lists
  lists; data frames a list of row dicts (with ``"_row"`` when the row names are text);
  raw vectors a base64 string; an empty named list at the top ``None``.
- Where toJSON fails (objects of classes it does not know, e.g. ``table``,
  ``histogram``, ``family``, ``htest``, ``formula``; environments, calls, symbols), the
  node writes ``jsonlite::serializeJSON(x)`` and the client decodes it as
  `algorithms._rvalues.decode` does: named lists as dicts, data frames as row dicts,
  factors as labels, arrays of two or more dimensions as nested lists, length-1 vectors
  (without a dim) as scalars, NA as None, NaN and infinities as floats, and every
  function, environment or language object as None.

One deliberate difference: numbers keep all their bits (JSON carries 15 significant
digits), and R doubles stay Python floats where the JSON would give an int for a
number R prints without a decimal point. A function inside an object toJSON can write
(it would write the deparsed source) is None here.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import struct
from typing import Any

from gateway.client.robject import REnvironment, RObject

__all__ = ["to_python"]

_ATOMIC = {"logical", "integer", "double", "complex", "character", "raw"}


class _NoJSON(Exception):
    """jsonlite::toJSON would stop on this value."""


# classes with a jsonlite asJSON method (jsonlite 1.8), and S4 parents of common S3 classes
_JSON_METHODS = {
    "array",
    "AsIs",
    "blob",
    "character",
    "complex",
    "data.frame",
    "Date",
    "factor",
    "function",
    "hms",
    "integer64",
    "ITime",
    "json",
    "list",
    "logical",
    "matrix",
    "NULL",
    "numeric",
    "pairlist",
    "POSIXt",
    "raw",
    "scalar",
    "sf",
    "sfc",
    "ts",
}
_PARENT_METHOD = {
    "integer": "numeric",
    "double": "numeric",
    "ordered": "factor",
    "POSIXct": "POSIXt",
    "POSIXlt": "POSIXt",
}
_IMPLICIT_METHOD = {
    "logical": "logical",
    "integer": "numeric",
    "double": "numeric",
    "character": "character",
    "complex": "complex",
    "raw": "raw",
    "list": "list",
    "pairlist": "pairlist",
    "closure": "function",
    "builtin": "function",
    "special": "function",
}


def to_python(obj: Any) -> Any:
    """The Python value the Opal face's JSON would give for this R value (see the module
    documentation), with numbers at full precision."""
    try:
        value = _json(obj, unbox=True)
    except _NoJSON:
        return _decoded(obj)
    return None if value == {} else value


def _method(obj: Any) -> str:
    if obj is None:
        return "NULL"
    if isinstance(obj, REnvironment) or not isinstance(obj, RObject) or obj.type == "S4":
        raise _NoJSON
    classes = obj.r_class
    if classes:
        for cls in classes:  # asJSON's ANY method drops unknown leading classes
            method = cls if cls in _JSON_METHODS else _PARENT_METHOD.get(cls)
            if method:
                return method
        raise _NoJSON
    dim = obj.attr("dim")
    if dim is not None and obj.type in _ATOMIC:
        return "matrix" if len(dim) == 2 else "array"
    method = _IMPLICIT_METHOD.get(obj.type)
    if method is None:
        raise _NoJSON
    return method


def _json(obj: Any, unbox: bool) -> Any:
    method = _method(obj)
    if method == "NULL":
        return None
    if method in ("numeric", "logical", "character", "ts", "hms", "blob", "ITime"):
        return _unboxed([_json_scalar(obj, v) for v in obj.value], unbox)
    if method == "complex":
        raise _NoJSON  # jsonlite stops on complex numbers with digits = NA
    if method == "integer64":
        return _unboxed([_int64(v) for v in obj.value], unbox)
    if method == "factor":
        return _unboxed(_labels(obj), unbox)
    if method == "Date":
        return _unboxed([_date(v) for v in obj.value], unbox)
    if method == "POSIXt":
        return _unboxed([_datetime(v, obj.attr("tzone")) for v in obj.value], unbox)
    if method in ("matrix", "array"):
        flat = [_json_scalar(obj, v) for v in obj.value]
        dims = [int(d) for d in obj.attr("dim") or [len(flat)]]
        return flat if len(dims) < 2 else _nest(flat, dims)
    if method in ("list", "pairlist", "sf", "sfc"):
        items = obj.value if obj.type == "list" else [v for _, v in obj.value or []]
        if obj.type == "pairlist":
            names = [t or "" for t, _ in obj.value or []]
            names = names if any(names) else None
        else:
            names = obj.names
        values = [_json(v, unbox=True) for v in items]
        if names is None:
            return values
        return dict(zip(_clean_names(names), values, strict=False))
    if method == "data.frame":
        return _json_rows(obj)
    if method == "AsIs":
        plain = RObject(obj.type, obj.value, dict(obj.attributes))
        plain.attributes["class"] = RObject(
            "character", [c for c in obj.r_class if c != "AsIs"] or None
        )
        if not plain.attributes["class"].value:
            del plain.attributes["class"]
        return _json(plain, unbox=False)
    if method == "scalar":
        return _json(RObject(obj.type, obj.value), unbox=True)
    if method == "json":
        text = "".join(v for v in obj.value if v is not None)
        return json.loads(text) if text else None
    if method == "raw":
        return base64.b64encode(bytes(obj.value)).decode("ascii")
    if method == "function":
        return None  # jsonlite would write the deparsed source
    raise _NoJSON


def _unboxed(values: list, unbox: bool) -> Any:
    return values[0] if unbox and len(values) == 1 else values


def _json_scalar(obj: RObject, v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None  # na = "null": NaN and infinities too
    return v


def _int64(v: Any) -> int | None:
    if v is None:
        return None
    (n,) = struct.unpack(">q", struct.pack(">d", v))
    return None if n == -(2**63) else n


def _labels(obj: RObject) -> list:
    levels = obj.attr("levels") or []
    out = []
    for v in obj.value:
        if v is None or not isinstance(v, int | float) or not 1 <= int(v) <= len(levels):
            out.append(None)
        else:
            out.append(levels[int(v) - 1])
    return out


_EPOCH = datetime.date(1970, 1, 1)


def _date(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return (_EPOCH + datetime.timedelta(days=math.floor(v))).isoformat()


def _datetime(v: Any, tzone: list | None) -> str | None:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    tz: datetime.tzinfo = datetime.timezone.utc
    if tzone and tzone[0]:
        try:
            from zoneinfo import ZoneInfo

            tz = ZoneInfo(tzone[0])
        except Exception:  # an unknown zone: UTC rather than a failure
            tz = datetime.timezone.utc
    moment = datetime.datetime.fromtimestamp(math.floor(v), tz)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _nest(flat: list, dims: list[int]) -> list:
    """Column-major R elements as nested lists indexed [i][j][k]... (jsonlite's arrays)."""
    strides = [1]
    for d in dims[:-1]:
        strides.append(strides[-1] * d)

    def build(level: int, offset: int) -> list:
        if level == len(dims) - 1:
            return [flat[offset + i * strides[level]] for i in range(dims[level])]
        return [build(level + 1, offset + i * strides[level]) for i in range(dims[level])]

    return build(0, 0)


def _clean_names(names: list) -> list[str]:
    """jsonlite's names: a missing name is the element's position, then make.unique()."""
    filled = [str(i + 1) if n is None or n == "" else n for i, n in enumerate(names)]
    seen: set[str] = set()
    counters: dict[str, int] = {}
    out = []
    for name in filled:
        if name not in seen:
            seen.add(name)
            out.append(name)
            continue
        k = counters.get(name, 0)
        while True:
            k += 1
            candidate = f"{name}.{k}"
            if candidate not in seen:
                break
        counters[name] = k
        seen.add(candidate)
        out.append(candidate)
    return out


def _nrow(obj: RObject) -> int:
    row_names = obj.attr("row.names") or []
    if len(row_names) == 2 and row_names[0] is None and isinstance(row_names[1], int):
        return abs(row_names[1])  # R's compact form c(NA, -n) of 1:n
    return len(row_names)


def _json_rows(frame: RObject) -> list[dict]:
    n = _nrow(frame)
    names = _clean_names(frame.names or [])
    columns = []
    for column in frame.value:
        if (
            isinstance(column, RObject)
            and column.type == "list"
            and "data.frame" not in (column.r_class)
        ):
            columns.append([_json(v, unbox=True) for v in column.value])
        elif isinstance(column, RObject) and "data.frame" in column.r_class:
            columns.append(_json_rows(column))
        else:
            values = _json(column, unbox=False)
            dim = column.attr("dim") if isinstance(column, RObject) else None
            if dim is not None and len(dim) == 2 and not column.r_class:
                values = _nest(
                    [_json_scalar(column, v) for v in column.value], [int(d) for d in dim]
                )
            columns.append(values)
    row_names = frame.attr("row.names")
    text_names = (
        row_names
        if isinstance(frame.attributes.get("row.names"), RObject)
        and frame.attributes["row.names"].type == "character"
        else None
    )
    rows = []
    for i in range(n):
        row = {
            name: (col[i] if i < len(col) else None)
            for name, col in zip(names, columns, strict=False)
        }
        if text_names is not None:
            row["_row"] = text_names[i]
        rows.append(row)
    return rows


# ---- the serializeJSON path, decoded as algorithms._rvalues.decode does


def _decoded(obj: Any) -> Any:
    if not isinstance(obj, RObject) or isinstance(obj, REnvironment):
        return None
    if obj.type == "list":
        items = [_decoded(v) for v in obj.value]
        classes = _as_list(_decoded_attr(obj, "class"))
        names = _as_list(_decoded_attr(obj, "names"))
        if "data.frame" in classes and names:
            return [
                dict(zip(names, row, strict=True))
                for row in zip(*map(_as_list, items), strict=True)
            ]
        if names and len(names) == len(items):
            return dict(zip(names, items, strict=True))
        return items
    if obj.type not in _ATOMIC:
        return None
    items = list(obj.value)
    levels = _as_list(_decoded_attr(obj, "levels"))
    if "factor" in _as_list(_decoded_attr(obj, "class")) and levels:
        items = [None if v is None else levels[int(v) - 1] for v in items]
    dim = _as_list(_decoded_attr(obj, "dim"))
    if len(dim) >= 2:
        return _nest(items, [int(d) for d in dim])
    if len(items) == 1 and not dim:
        return items[0]
    return items


def _decoded_attr(obj: RObject, name: str) -> Any:
    return _decoded(obj.attributes.get(name))


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
