"""R's serialize() format, read in pure Python.

`unserialize(data)` reads the bytes of R's ``serialize(value, NULL)`` (XDR, format
versions 2 and 3, optionally gzip-compressed as ``saveRDS`` writes them) into a faithful
tree of `RObject` values: every R type a DataSHIELD answer can contain, attributes
included (names, dim, dimnames, class, levels, row.names, ...), closures, environments,
language objects and byte code (read, so that a list holding R functions, such as a glm
``family``, can be read around them), and the ALTREP forms R writes (compact sequences,
wrappers, deferred strings). R's ``NULL`` is `None`; in vectors, ``NA`` is `None`.

`to_python(obj)` turns that tree into the Python values the Opal face's JSON gives
(what `datashield-opal` hands to its callers), so that code written against one driver
gets the same inputs through the other:

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

`loads(data)` is ``to_python(unserialize(data))``.
"""

from __future__ import annotations

import array
import base64
import datetime
import gzip
import json
import math
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

from gateway.client.errors import RDSError

__all__ = ["REnvironment", "RObject", "loads", "to_python", "unserialize"]

NA_INTEGER = -(2**31)
_NA_REAL_LOW_WORD = 1954  # R's NA_real_ is a NaN whose low 32 bits are 1954
_INT = struct.Struct(">i")
_DOUBLE = struct.Struct(">d")
_LITTLE = sys.byteorder == "little"

# SEXPTYPE codes (R's Rinternals.h) and serialize.c's pseudo-types
_NAMES = {
    0: "NULL",
    1: "symbol",
    2: "pairlist",
    3: "closure",
    4: "environment",
    5: "promise",
    6: "language",
    7: "special",
    8: "builtin",
    9: "char",
    10: "logical",
    13: "integer",
    14: "double",
    15: "complex",
    16: "character",
    17: "...",
    19: "list",
    20: "expression",
    21: "bytecode",
    22: "externalptr",
    23: "weakref",
    24: "raw",
    25: "S4",
}
_ATOMIC = {"logical", "integer", "double", "complex", "character", "raw"}
REFSXP, NILVALUE, GLOBALENV, UNBOUNDVALUE, MISSINGARG, BASENAMESPACE = 255, 254, 253, 252, 251, 250
NAMESPACESXP, PACKAGESXP, PERSISTSXP, CLASSREFSXP, GENERICREFSXP = 249, 248, 247, 246, 245
BCREPDEF, BCREPREF, EMPTYENV, BASEENV, ATTRLANGSXP, ATTRLISTSXP, ALTREP = (
    244,
    243,
    242,
    241,
    240,
    239,
    238,
)
_HAS_ATTR, _HAS_TAG = 1 << 9, 1 << 10
_LATIN1, _UTF8 = 1 << 2, 1 << 3


@dataclass(eq=False, repr=False)
class RObject:
    """One R value.

    ``type`` is R's ``typeof()`` (``"logical"``, ``"integer"``, ``"double"``,
    ``"complex"``, ``"character"``, ``"raw"``, ``"list"``, ``"expression"``,
    ``"symbol"``, ``"pairlist"``, ``"language"``, ``"closure"``, ``"builtin"``,
    ``"special"``, ``"bytecode"``, ``"promise"``, ``"externalptr"``, ``"weakref"``,
    ``"S4"``). ``value``: for vectors a list of elements (NA is None; a double NaN is
    ``math.nan``); for a symbol its name; for a pairlist or call a list of
    ``(tag, value)`` pairs; for a closure ``{"formals", "body", "env"}``.
    ``attributes`` maps attribute names to values (RObject or None).
    """

    type: str
    value: Any = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def attr(self, name: str) -> list | None:
        """The elements of an attribute that is a vector (e.g. ``"names"``), or None."""
        value = self.attributes.get(name)
        return value.value if isinstance(value, RObject) else None

    @property
    def r_class(self) -> list[str]:
        """The class attribute (empty when the object has none: implicit classes)."""
        return [c for c in (self.attr("class") or []) if c is not None]

    @property
    def names(self) -> list | None:
        return self.attr("names")

    def __len__(self) -> int:
        return len(self.value) if isinstance(self.value, list) else 1

    def __repr__(self) -> str:
        shown = self.value
        if isinstance(shown, list) and len(shown) > 6:
            shown = [*shown[:6], "..."]
        attrs = f", attributes={sorted(self.attributes)}" if self.attributes else ""
        return f"RObject({self.type!r}, {shown!r}{attrs})"


@dataclass(eq=False, repr=False)
class REnvironment(RObject):
    """An environment: ``kind`` is ``"global"``, ``"base"``, ``"empty"``,
    ``"namespace"`` or ``"package"`` (known by ``name``, not written out), or
    ``"local"`` (its variables in ``value``, a dict, and its enclosing environment)."""

    kind: str = "local"
    name: str | None = None
    enclos: Any = None
    locked: bool = False

    def __repr__(self) -> str:
        return f"REnvironment({self.kind!r}{', ' + repr(self.name) if self.name else ''})"


_GLOBAL = REnvironment("environment", kind="global", name="R_GlobalEnv")
_BASE = REnvironment("environment", kind="base", name="base")
_EMPTY = REnvironment("environment", kind="empty", name="R_EmptyEnv")
_BASE_NAMESPACE = REnvironment("environment", kind="namespace", name="base")
_MISSING_ARG = RObject("symbol", "")
_UNBOUND = RObject("symbol", "<unbound>")
_SPECIAL = {
    GLOBALENV: _GLOBAL,
    BASEENV: _BASE,
    EMPTYENV: _EMPTY,
    BASENAMESPACE: _BASE_NAMESPACE,
    MISSINGARG: _MISSING_ARG,
    UNBOUNDVALUE: _UNBOUND,
}


class _Reader:
    """serialize.c's ReadItem, one item at a time."""

    def __init__(self, data: bytes, pos: int):
        self.data = data
        self.pos = pos
        self.refs: list[Any] = []
        self.native_encoding = "utf-8"

    # -- primitives
    def int(self, _unpack=_INT.unpack_from) -> int:
        pos = self.pos
        self.pos = pos + 4
        return _unpack(self.data, pos)[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:  # a long vector: two more ints
            upper, lower = self.int() & 0xFFFFFFFF, self.int() & 0xFFFFFFFF
            return (upper << 32) + lower
        if n < -1:
            raise RDSError(f"negative vector length {n}")
        return n

    def bytes(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise RDSError("the serialization ends in the middle of a value")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def _numbers(self, code: str, size: int, n: int) -> list:
        buf = array.array(code)
        buf.frombytes(self.bytes(size * n))
        if _LITTLE:
            buf.byteswap()
        return buf.tolist()

    # -- items
    def item(self) -> Any:
        flags = self.int()
        kind = flags & 0xFF
        if kind == NILVALUE:
            return None
        if kind == REFSXP:
            index = flags >> 8
            if index == 0:
                index = self.int()
            try:
                return self.refs[index - 1]
            except IndexError:
                raise RDSError(f"reference {index} to an object not read yet") from None
        if kind in _SPECIAL:
            return _SPECIAL[kind]
        if kind == 1:  # symbol
            name = self.item()
            symbol = RObject("symbol", name if isinstance(name, str) else "")
            self.refs.append(symbol)
            return symbol
        if kind in (NAMESPACESXP, PACKAGESXP, PERSISTSXP):
            names = self.string_vector()
            env = REnvironment(
                "environment",
                kind={NAMESPACESXP: "namespace", PACKAGESXP: "package"}.get(kind, "persistent"),
                name=names[0] if names else None,
            )
            self.refs.append(env)
            return env
        if kind == 4:  # environment
            env = REnvironment("environment", kind="local", locked=bool(self.int()))
            self.refs.append(env)  # registered before its contents, which may refer to it
            env.enclos = self.item()
            frame = self.item()
            table = self.item()
            attributes = self.item()
            variables: dict[str, Any] = {}
            for pairs in (frame, *(table.value if isinstance(table, RObject) else [])):
                if isinstance(pairs, RObject) and pairs.type == "pairlist":
                    variables.update({tag: v for tag, v in pairs.value if tag is not None})
            env.value = variables
            env.attributes = _attributes(attributes)
            return env
        if kind == 2 or kind == 17:  # pairlist, ...
            return self.pairlist(flags)
        if kind in (6, 3, 5):  # language, closure, promise
            attributes = self.item() if flags & _HAS_ATTR else None
            tag = self.item() if flags & _HAS_TAG else None
            car = self.item()
            cdr = self.item()
            if kind == 6:
                rest = cdr.value if isinstance(cdr, RObject) and cdr.type == "pairlist" else []
                obj = RObject("language", [(None, car), *rest])
            elif kind == 3:
                obj = RObject("closure", {"formals": car, "body": cdr, "env": tag})
            else:
                obj = RObject("promise", {"value": car, "expression": cdr, "env": tag})
            obj.attributes = _attributes(attributes)
            return obj
        if kind == ALTREP:
            return self.altrep()
        return self.vector_like(flags, kind)

    def pairlist(self, flags: int) -> RObject:
        items: list[tuple[str | None, Any]] = []
        attributes = None
        first = True
        while True:
            attr = self.item() if flags & _HAS_ATTR else None
            if first:
                attributes, first = attr, False
            tag = self.item() if flags & _HAS_TAG else None
            items.append((tag.value if isinstance(tag, RObject) else None, self.item()))
            flags = self.int()
            kind = flags & 0xFF
            if kind == NILVALUE:
                break
            if kind not in (2, 17):  # a dotted pair: the last CDR is not a pairlist
                self.pos -= 4
                items.append((None, self.item()))
                break
        return RObject("pairlist", items, _attributes(attributes))

    def string_vector(self) -> list:
        if self.int() != 0:
            raise RDSError("unexpected non-zero marker before a string vector")
        return [self.item() for _ in range(self.int())]

    def charsxp(self, flags: int) -> str | None:
        n = self.int()
        if n == -1:
            return None
        raw = self.bytes(n)
        levels = flags >> 12
        if levels & _LATIN1:
            return raw.decode("latin-1")
        try:
            return raw.decode("utf-8" if levels & _UTF8 else self.native_encoding)
        except (UnicodeDecodeError, LookupError):
            return raw.decode("latin-1")

    def vector_like(self, flags: int, kind: int) -> Any:
        name = _NAMES.get(kind)
        if kind == 9:
            value = self.charsxp(flags)
            if flags & _HAS_ATTR:
                self.item()  # old writers put the CHARSXP cache here; R ignores it
            return value
        if kind in (10, 13):
            ints = self._numbers("i", 4, self.length())
            if kind == 10:
                value = [None if v == NA_INTEGER else bool(v) for v in ints]
            else:
                value = [None if v == NA_INTEGER else v for v in ints]
        elif kind == 14:
            value = _doubles(self.bytes(8 * self.length()))
        elif kind == 15:
            parts = _doubles(self.bytes(16 * self.length()))
            value = [
                None if re is None or im is None else complex(re, im)
                for re, im in zip(parts[0::2], parts[1::2], strict=True)
            ]
        elif kind == 16:
            n = self.length()
            value = []
            for _ in range(n):
                element_flags = self.int()
                if element_flags & 0xFF != 9:
                    raise RDSError("a character vector holds something other than strings")
                value.append(self.charsxp(element_flags))
        elif kind in (19, 20):
            value = [self.item() for _ in range(self.length())]
        elif kind == 24:
            value = list(self.bytes(self.length()))
        elif kind == 21:
            value = self.bytecode()
        elif kind == 22:  # external pointer: only its protected value and tag are written
            obj = RObject("externalptr")
            self.refs.append(obj)
            obj.value = {"protected": self.item(), "tag": self.item()}
            if flags & _HAS_ATTR:
                obj.attributes = _attributes(self.item())
            return obj
        elif kind == 23:
            obj = RObject("weakref")
            self.refs.append(obj)
            if flags & _HAS_ATTR:
                obj.attributes = _attributes(self.item())
            return obj
        elif kind in (7, 8):
            value = self.bytes(self.int()).decode("latin-1")
        elif kind == 25:
            value = None
        elif kind in (CLASSREFSXP, GENERICREFSXP):
            raise RDSError("this serialization holds a class reference, which R cannot read")
        else:
            raise RDSError(f"unknown R type code {kind} in the serialization")
        obj = RObject(name, value)
        if flags & _HAS_ATTR:
            obj.attributes = _attributes(self.item())
        return obj

    # -- byte code (serialize.c ReadBC, ReadBC1, ReadBCConsts, ReadBCLang)
    def bytecode(self) -> dict:
        reps: list[Any] = [None] * self.int()
        return self.bytecode1(reps)

    def bytecode1(self, reps: list) -> dict:
        code = self.item()
        consts = []
        for _ in range(self.int()):
            kind = self.int()
            if kind == 21:
                consts.append(self.bytecode1(reps))
            elif kind in (6, 2, BCREPDEF, BCREPREF, ATTRLANGSXP, ATTRLISTSXP):
                consts.append(self.bytecode_lang(kind, reps))
            else:
                consts.append(self.item())
        return {"code": code, "consts": consts}

    def bytecode_lang(self, kind: int, reps: list) -> Any:
        if kind == BCREPREF:
            return reps[self.int()]
        if kind not in (BCREPDEF, 6, 2, ATTRLANGSXP, ATTRLISTSXP):
            return self.item()
        pos = -1
        if kind == BCREPDEF:
            pos = self.int()
            kind = self.int()
        has_attr = kind in (ATTRLANGSXP, ATTRLISTSXP)
        kind = {ATTRLANGSXP: 6, ATTRLISTSXP: 2}.get(kind, kind)
        cell = RObject("language" if kind == 6 else "pairlist", [])
        if pos >= 0:
            reps[pos] = cell
        if has_attr:
            cell.attributes = _attributes(self.item())
        tag = self.item()
        car = self.bytecode_lang(self.int(), reps)
        cdr = self.bytecode_lang(self.int(), reps)
        rest = cdr.value if isinstance(cdr, RObject) and isinstance(cdr.value, list) else []
        cell.value = [(tag.value if isinstance(tag, RObject) else None, car), *rest]
        return cell

    # -- ALTREP: the compact forms R writes for sequences, wrappers and deferred strings
    def altrep(self) -> Any:
        info = self.item()
        state = self.item()
        attributes = _attributes(self.item())
        parts = [v for _, v in info.value] if isinstance(info, RObject) else []
        cls = parts[0].value if parts and isinstance(parts[0], RObject) else None
        if cls in ("compact_intseq", "compact_realseq"):
            n, start, step = state.value[:3]
            if cls == "compact_intseq":
                obj = RObject("integer", [int(start) + i * int(step) for i in range(int(n))])
            else:
                obj = RObject("double", [start + i * step for i in range(int(n))])
        elif isinstance(cls, str) and cls.startswith("wrap_"):
            wrapped = state.value[0][1] if state.type == "pairlist" else state.value[0]
            obj = RObject(wrapped.type, list(wrapped.value), dict(wrapped.attributes))
        elif cls == "deferred_string":
            source = state.value[0][1] if state.type == "pairlist" else state.value[0]
            strings = [_r_string(v) for v in source.value]
            obj = RObject("character", strings)
        else:
            raise RDSError(f"R wrote an ALTREP object of class {cls!r}, which this reader lacks")
        obj.attributes.update(attributes)
        return obj


def _doubles(raw: bytes) -> list:
    values = array.array("d")
    values.frombytes(raw)
    if _LITTLE:
        values.byteswap()
    out = values.tolist()
    for i, v in enumerate(out):
        if v != v:  # NaN: R's NA is the NaN whose low word is 1954
            (bits,) = struct.unpack_from(">Q", raw, 8 * i)
            out[i] = None if bits & 0xFFFFFFFF == _NA_REAL_LOW_WORD else math.nan
    return out


def _attributes(pairs: Any) -> dict[str, Any]:
    if not isinstance(pairs, RObject) or pairs.type != "pairlist":
        return {}
    return {tag: value for tag, value in pairs.value if tag is not None}


def _r_string(value: Any) -> str | None:
    """as.character() of one number (for deferred strings)."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Inf" if value > 0 else "-Inf"
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.15g}"
    return str(value)


def unserialize(data: bytes | bytearray | memoryview) -> Any:
    """The R value in the bytes of ``serialize(value, NULL)`` (or of ``saveRDS``)."""
    data = bytes(data)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise RDSError(f"corrupt gzip stream: {error}") from error
    if data[:2] != b"X\n":
        if data[:2] in (b"A\n", b"B\n"):
            raise RDSError("only R's default XDR serialization is read, not ascii/native")
        raise RDSError("not an R serialization (it does not start with 'X\\n')")
    reader = _Reader(data, 2)
    try:
        version = reader.int()
        reader.int()  # the R version that wrote it
        reader.int()  # the R version needed to read it
        if version == 3:
            encoding = reader.bytes(reader.int()).decode("ascii", "replace")
            reader.native_encoding = {"UTF-8": "utf-8", "latin1": "latin-1"}.get(encoding, encoding)
        elif version != 2:
            raise RDSError(f"serialization format version {version} (2 and 3 are read)")
        return reader.item()
    except RDSError:
        raise
    except (struct.error, IndexError, ValueError, TypeError, AttributeError) as error:
        raise RDSError(f"corrupt or truncated serialization: {error}") from error
    except RecursionError as error:
        raise RDSError("the serialized value is nested too deeply") from error


def loads(data: bytes | bytearray | memoryview) -> Any:
    """``to_python(unserialize(data))``."""
    return to_python(unserialize(data))


# ---------------------------------------------------------------- to Python values


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
