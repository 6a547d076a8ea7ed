"""R's serialize() format, read in pure Python.

`unserialize(data)` reads the bytes of R's ``serialize(value, NULL)`` (XDR, format
versions 2 and 3, optionally gzip-compressed as ``saveRDS`` writes them) into a faithful
tree of `RObject` values: every R type a DataSHIELD answer can contain, attributes
included (names, dim, dimnames, class, levels, row.names, ...), closures, environments,
language objects and byte code (read, so that a list holding R functions, such as a glm
``family``, can be read around them), and the ALTREP forms R writes (compact sequences,
wrappers, deferred strings). R's ``NULL`` is `None`; in vectors, ``NA`` is `None`.

`to_python(obj)` turns that tree into the Python values the Opal face's JSON gives (see
`gateway.client.rjson`, which it lives in); `loads(data)` is
``to_python(unserialize(data))``. The model, `RObject` and `REnvironment`, lives in
`gateway.client.robject`; all three are importable from here.
"""

from __future__ import annotations

import array
import gzip
import math
import struct
import sys
from typing import Any

from gateway.client.errors import RDSError
from gateway.client.rjson import to_python
from gateway.client.robject import REnvironment, RObject

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
