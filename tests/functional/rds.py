"""A small reader of R's serialize() output (XDR, versions 2 and 3), for tests that check
the values the gateway returns without starting R. It reads what DataSHIELD aggregates
return: NULL, logical/integer/double/character vectors, lists, attributes (names, class,
dim, ...), factors. A vector with names becomes a dict; other vectors become lists."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

NA_INTEGER = -(2**31)
NILVALUE, REFSXP, GLOBALENV, EMPTYENV, BASEENV = 254, 255, 253, 242, 241


@dataclass
class RVector:
    """A vector with its attributes (kept when they say more than names)."""

    values: list
    attributes: dict = field(default_factory=dict)

    @property
    def r_class(self) -> list[str]:
        return list(self.attributes.get("class", []))


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos, self.refs = data, 0, []

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def double(self) -> float:
        (value,) = struct.unpack_from(">d", self.data, self.pos)
        self.pos += 8
        return value

    def bytes(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def charsxp(self):
        flags = self.int()
        assert flags & 0xFF == 9, f"expected CHARSXP, got type {flags & 0xFF}"
        n = self.int()
        return None if n == -1 else self.bytes(n).decode("utf-8", "replace")

    def item(self):
        flags = self.int()
        kind = flags & 0xFF
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind in (NILVALUE, GLOBALENV, EMPTYENV, BASEENV):
            return None
        if kind == REFSXP:
            return self.refs[(flags >> 8) - 1]
        if kind == 1:  # SYMSXP
            name = self.charsxp()
            self.refs.append(name)
            return name
        if kind == 2:  # LISTSXP (pairlist): attributes and the like, as (tag, value) pairs
            out = []
            while kind == 2:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out.append((tag, self.item()))
                flags = self.int()
                kind, has_attr, has_tag = (
                    flags & 0xFF,
                    bool(flags & (1 << 9)),
                    bool(flags & (1 << 10)),
                )
            assert kind == NILVALUE
            return out
        if kind == 238:  # ALTREP: compact sequences and wrappers, as R writes them
            info = [v for _, v in self.item()]
            state = self.item()
            attributes = dict(self.item() or [])
            name = info[0]
            if name in ("compact_intseq", "compact_realseq"):
                n, start, step = (state.values if isinstance(state, RVector) else state)[:3]
                values = [start + i * step for i in range(int(n))]
                if name == "compact_intseq":
                    values = [int(v) for v in values]
            elif name.startswith("wrap_"):
                values = state[0] if isinstance(state, list) else state
                values = values.values if isinstance(values, RVector) else values
            else:
                raise ValueError(f"unsupported ALTREP class {name} in the test RDS reader")
            return _simplify(list(values), attributes)
        if kind == 10:  # LGLSXP
            values = [None if v == NA_INTEGER else bool(v) for v in self._ints()]
        elif kind == 13:  # INTSXP
            values = [None if v == NA_INTEGER else v for v in self._ints()]
        elif kind == 14:  # REALSXP
            n = self.int()
            values = [self.double() for _ in range(n)]
            values = [None if isinstance(v, float) and math.isnan(v) else v for v in values]
        elif kind == 16:  # STRSXP
            values = [self.charsxp() for _ in range(self.int())]
        elif kind == 19:  # VECSXP
            values = [self.item() for _ in range(self.int())]
        elif kind == 9:
            self.pos -= 4
            return self.charsxp()
        else:
            raise ValueError(f"unsupported R type {kind} in the test RDS reader")
        attributes = dict(self.item() or []) if has_attr else {}
        return _simplify(values, attributes)

    def _ints(self) -> list[int]:
        n = self.int()
        values = struct.unpack_from(f">{n}i", self.data, self.pos)
        self.pos += 4 * n
        return list(values)


def _simplify(values: list, attributes: dict):
    names = attributes.get("names")
    levels = attributes.get("levels")
    if levels is not None:  # a factor: its labels
        labels = levels.values if isinstance(levels, RVector) else levels
        values = [None if v is None else labels[v - 1] for v in values]
        return RVector(values, attributes)
    extra = {k: v for k, v in attributes.items() if k != "names"}
    if names is not None and not extra:
        keys = names.values if isinstance(names, RVector) else names
        return dict(zip(keys, values, strict=False))
    if extra:
        return RVector(values, attributes)
    return values


def unserialize(data: bytes):
    reader = _Reader(data)
    assert reader.bytes(2) == b"X\n", "not an XDR serialization"
    version = reader.int()
    reader.int()  # R version that wrote it
    reader.int()  # minimal R version to read it
    if version == 3:
        reader.bytes(reader.int())  # native encoding
    return reader.item()
