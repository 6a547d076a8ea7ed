"""Arrow table -> R data.frame, inside a worker's embedded R (rpy2).

Every column is written straight into the R vector that will hold it: R allocates the
vector, numpy copies (or casts, or for factors gathers) Arrow's buffers into it, and
missing values are patched in place from Arrow's validity bitmap. No intermediate copy
is made, because in a freshly forked session every new page costs a page fault, which
on these machines costs more than the copy itself. The only Python-level work is per
column (and per chunk), never per value. How Arrow types become R types:

==========================================  ===============================================
Arrow                                        R
==========================================  ===============================================
float16/32/64, decimal                       double
int8/16, uint8/16, int32                     integer
int64, uint32, uint64                        integer if every value fits R's integer range
                                             (-2^31+1 .. 2^31-1), else double (exact up to
                                             2^53, rounded beyond)
bool                                         logical
string, large_string, dictionary<string>     factor; levels sorted as ``factor()`` sorts
                                             them in this R (its collation), unused
                                             dictionary entries dropped
dictionary<other>                            decoded, then as its value type
date32, date64                               Date (double days since 1970-01-01)
timestamp (any unit, with or without tz)     POSIXct (double seconds, ``tzone = "UTC"``;
                                             naive timestamps are read as UTC)
time32, time64                               factor of "HH:MM:SS" text (R has no
                                             time-of-day type)
null                                         logical, all NA
==========================================  ===============================================

An Arrow null becomes R's ``NA`` of the column's type: ``NA_real_`` (the NaN with
payload 1954), ``NA_integer_`` / logical ``NA`` (INT_MIN) or a factor code ``NA``. A
floating NaN that is not null stays ``NaN``. Any other Arrow type is refused with a
``BadRequest`` naming the column.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import rpy2.rinterface as ri
from rpy2.rinterface_lib import memorymanagement, openrlib
from rpy2.rinterface_lib.conversion import _cdata_res_to_rinterface

from gateway.node.errors import BadRequest

__all__ = ["NA_INTEGER", "NA_REAL", "arrow_to_r_dataframe", "columns_to_r_dataframe"]

NA_INTEGER = -(2**31)
_NA_REAL_BITS = 0x7FF00000000007A2
#: R's NA_real_: a NaN whose low word is 1954. Kept as a numpy scalar so its payload is
#: never touched by a float conversion.
NA_REAL = np.array([_NA_REAL_BITS], dtype=np.uint64).view(np.float64)[0]
_INT_MAX = 2**31 - 1

# R code used by the conversion. It is evaluated with the base environment as its
# enclosure, so nothing a session assigns in the global environment can shadow it.
_R_FACTOR_LEVELS = """
function(raw, starts, ends) {
    s <- base::rawToChar(raw)
    base::Encoding(s) <- "bytes"            # byte positions: substring is O(1) per piece
    x <- base::substring(s, starts, ends)
    base::Encoding(x) <- "UTF-8"
    f <- base::factor(x)                    # exactly R's own level order (collation)
    base::list(base::levels(f), base::as.integer(f))
}
"""

_r_funcs: dict[str, ri.SexpClosure] = {}


def _r_function(name: str, code: str) -> ri.SexpClosure:
    fun = _r_funcs.get(name)
    if fun is None:
        fun = ri.evalr(code, envir=ri.baseenv)
        _r_funcs[name] = fun
    return fun


def arrow_to_r_dataframe(table: pa.Table) -> ri.ListSexpVector:
    """Return an R ``data.frame`` holding ``table``'s columns in order (see module doc)."""
    return columns_to_r_dataframe(list(table.column_names), iter(table.columns), table.num_rows)


def columns_to_r_dataframe(
    names: list[str], columns: Iterator[pa.ChunkedArray], n: int
) -> ri.ListSexpVector:
    """The same from columns handed out one at a time (`datasources.read_columns`): each
    Arrow column can be freed as soon as R has its copy."""
    converted = []
    for name in names:
        column = next(columns)
        if len(column) != n:
            raise BadRequest(f"Column '{name}' has {len(column)} rows, the table {n}")
        converted.append(_column(name, column, n))
        del column
    df = ri.ListSexpVector(converted)
    df.do_slot_assign("names", ri.StrSexpVector(list(names)))
    # Compact row names c(NA_integer_, -n), as R's .set_row_names(n) makes them.
    rownames = [NA_INTEGER, -n] if n > 0 else []
    df.do_slot_assign("row.names", _int_vector(np.array(rownames, dtype=np.int32)))
    df.rclass = ri.StrSexpVector(["data.frame"])  # setAttrib: also sets the object bit
    return df


# --------------------------------------------------------------------------- columns


def _column(name: str, col: pa.ChunkedArray, n: int) -> ri.Sexp:
    t = col.type
    if pa.types.is_dictionary(t):
        if _is_string_type(t.value_type):
            return _factor(col, n)
        return _column(name, col.cast(t.value_type), n)
    if _is_string_type(t):
        return _factor(col, n)
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return _double(col.cast(pa.float64(), safe=False) if t != pa.float64() else col)
    if pa.types.is_integer(t):
        return _integer(col)
    if pa.types.is_boolean(t):
        return _logical(col)
    if pa.types.is_date32(t):
        return _with_class(_double(col), ["Date"])  # int32 days, cast as they are copied
    if pa.types.is_date64(t):
        days = pc.divide(col.cast(pa.int64()).cast(pa.float64(), safe=False), 86_400_000.0)
        return _with_class(_double(pc.floor(days)), ["Date"])
    if pa.types.is_timestamp(t):
        per_second = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[t.unit]
        seconds = col.cast(pa.int64()).cast(pa.float64(), safe=False)
        if per_second != 1.0:
            seconds = pc.divide(seconds, per_second)
        vec = _with_class(_double(seconds), ["POSIXct", "POSIXt"])
        vec.do_slot_assign("tzone", ri.StrSexpVector(["UTC"]))
        return vec
    if pa.types.is_time(t):
        # R has no time-of-day type: "HH:MM:SS[.fff]" text, as read.csv would keep it.
        return _factor(col.cast(pa.string()), n)
    if pa.types.is_null(t):
        return _new_vector(ri.BoolSexpVector, np.int32, n, lambda out: out.fill(NA_INTEGER))
    raise BadRequest(f"Column '{name}' has type {t}, which cannot be given to R")


def _is_string_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or _is_string_view(t)


def _is_string_view(t: pa.DataType) -> bool:
    check = getattr(pa.types, "is_string_view", None)
    return bool(check and check(t))


# --------------------------------------------------------------------------- R vectors


@_cdata_res_to_rinterface
def _new_vector(cls, dtype: type, n: int, fill) -> ri.Sexp:
    """An R vector of ``cls``'s type and length ``n`` whose data ``fill(out)`` writes,
    ``out`` being a numpy view of R's own memory (as rpy2's ``from_memoryview`` does,
    minus its copy from a Python buffer). ``fill`` runs numpy and Arrow code only, never
    R, and ``out`` must not outlive this call: the vector is protected only inside it."""
    with memorymanagement.rmemory() as rmemory:
        vec = rmemory.protect(openrlib.rlib.Rf_allocVector(cls._R_TYPE, n))
        if n:
            itemsize = np.dtype(dtype).itemsize
            out = np.frombuffer(openrlib.ffi.buffer(cls._R_GET_PTR(vec), n * itemsize), dtype)
            fill(out)
    return vec


def _int_vector(arr: np.ndarray) -> ri.IntSexpVector:
    return ri.IntSexpVector.from_memoryview(memoryview(np.ascontiguousarray(arr, np.int32)))


def _chunk_values(chunk: pa.Array, dtype: type) -> np.ndarray:
    """A fixed-width chunk's values buffer as numpy, without a copy. Slots that are null
    hold unspecified values: the caller overwrites them (see `_null_mask`)."""
    count = chunk.offset + len(chunk)
    return np.frombuffer(chunk.buffers()[1], dtype=dtype, count=count)[chunk.offset :]


def _bits(buffer: pa.Buffer, offset: int, length: int) -> np.ndarray:
    """An Arrow bitmap (least significant bit first) as one uint8 0/1 per value."""
    bits = np.unpackbits(np.frombuffer(buffer, np.uint8), count=offset + length, bitorder="little")
    return bits[offset:]


def _null_mask(chunk: pa.Array) -> np.ndarray | None:
    """True where the chunk's value is null; None if it has no nulls."""
    if not chunk.null_count:
        return None
    return _bits(chunk.buffers()[0], chunk.offset, len(chunk)) == 0


def _fill_fixed(col: pa.ChunkedArray, out: np.ndarray, src: np.dtype, na) -> None:
    """Copy (casting as numpy does) every chunk's values into ``out``, then write ``na``
    over the null slots; ``na`` is applied to ``out`` seen as integers of its width, so
    a NaN's payload (R's NA_real_) is written bit for bit."""
    pos = 0
    for chunk in col.chunks:
        m = len(chunk)
        if m:
            dest = out[pos : pos + m]
            if pa.types.is_boolean(chunk.type):
                np.copyto(dest, _bits(chunk.buffers()[1], chunk.offset, m), casting="unsafe")
            else:
                np.copyto(dest, _chunk_values(chunk, src), casting="unsafe")
            mask = _null_mask(chunk)
            if mask is not None:
                np.putmask(dest.view(f"i{dest.itemsize}"), mask, na)
        pos += m


def _double(col: pa.ChunkedArray) -> ri.FloatSexpVector:
    """float64 (or an integer or date32 column, cast by numpy as it is copied) -> double."""
    src = np.dtype(col.type.to_pandas_dtype()) if not pa.types.is_date32(col.type) else np.int32
    na = np.array([_NA_REAL_BITS], np.uint64).view(np.int64)[0]

    def fill(out):
        _fill_fixed(col, out, src, na)

    return _new_vector(ri.FloatSexpVector, np.float64, len(col), fill)


def _integer(col: pa.ChunkedArray) -> ri.Sexp:
    t = col.type
    small = t in (pa.int8(), pa.int16(), pa.uint8(), pa.uint16())
    if not small and len(col) - col.null_count > 0:
        mm = pc.min_max(col)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        if lo <= NA_INTEGER or hi > _INT_MAX:
            # Does not fit R's integer (INT_MIN is R's NA): double, like read.csv does.
            return _double(col)
    src = np.dtype(t.to_pandas_dtype())
    return _new_vector(
        ri.IntSexpVector, np.int32, len(col), lambda out: _fill_fixed(col, out, src, NA_INTEGER)
    )


def _logical(col: pa.ChunkedArray) -> ri.BoolSexpVector:
    # R's logical is a C int: TRUE 1, FALSE 0, NA INT_MIN; Arrow's values are bits.
    return _new_vector(
        ri.BoolSexpVector, np.int32, len(col), lambda out: _fill_fixed(col, out, None, NA_INTEGER)
    )


def _with_class(vec: ri.Sexp, classes: list[str]) -> ri.Sexp:
    vec.rclass = ri.StrSexpVector(classes)
    return vec


def _factor(col: pa.ChunkedArray, n: int) -> ri.IntSexpVector:
    """Strings -> R factor, as ``factor(x)`` would make it from the same values.

    Arrow dictionary-encodes the column (hashing in C++; Parquet text is read already
    encoded); R gets only the distinct values that occur, orders them with its own
    ``factor()`` (so the level order follows R's collation exactly) and returns, for
    each, its level number. numpy then gathers every row's level number by its
    dictionary index straight into the R vector.
    """
    if col.num_chunks == 0 or n == 0:
        return _factor_vector(_int_vector(np.empty(0, np.int32)), ri.StrSexpVector([]))
    if pa.types.is_dictionary(col.type):
        enc = col.unify_dictionaries() if col.num_chunks > 1 else col
        may_have_unused = True  # a stored dictionary may list values no row has
    else:
        if _is_string_view(col.type):
            col = col.cast(pa.large_string())
        enc = pc.dictionary_encode(col).unify_dictionaries()
        may_have_unused = enc.num_chunks > 1  # unify keeps one chunk's values in all
    dictionary = enc.chunk(0).dictionary
    k = len(dictionary)
    # Each chunk's dictionary indices (numpy views of Arrow's buffer) and null mask.
    parts = []
    for chunk in enc.chunks:
        if len(chunk):
            indices = chunk.indices
            idx = _chunk_values(indices, np.dtype(indices.type.to_pandas_dtype()))
            parts.append((idx, _null_mask(indices)))
    used = np.ones(k, dtype=bool)
    if may_have_unused:
        used[:] = False
        for idx, mask in parts:
            used[idx if mask is None else idx[~mask]] = True  # a null's index is unspecified
    if dictionary.null_count:
        used &= ~dictionary.is_null().to_numpy(zero_copy_only=False)
    values = dictionary if used.all() else dictionary.filter(pa.array(used))

    levels, codes_of_values = _r_levels(values)
    code_map = np.full(k, NA_INTEGER, dtype=np.int32)  # unused or null entries: never read
    code_map[np.flatnonzero(used)] = codes_of_values

    def fill(out):
        pos = 0
        for idx, mask in parts:
            dest = out[pos : pos + len(idx)]
            # "clip": a null slot's index is unspecified; it is overwritten just below.
            np.take(code_map, idx, out=dest, mode="clip")
            if mask is not None:
                np.putmask(dest, mask, NA_INTEGER)
            pos += len(idx)

    return _factor_vector(_new_vector(ri.IntSexpVector, np.int32, n, fill), levels)


def _factor_vector(vec: ri.IntSexpVector, levels: ri.Sexp) -> ri.IntSexpVector:
    vec.do_slot_assign("levels", levels)
    vec.rclass = ri.StrSexpVector(["factor"])
    return vec


def _r_levels(values: pa.Array) -> tuple[ri.Sexp, np.ndarray]:
    """Distinct strings -> (R's ``levels(factor(values))``, level number of each value).

    The strings travel as one raw byte buffer plus start/end byte positions, which R
    cuts with ``substring``: a per-string Python loop (``StrSexpVector``) costs seconds
    for a million distinct values.
    """
    if not pa.types.is_large_string(values.type):
        values = values.cast(pa.large_string())
    m = len(values)
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64, count=values.offset + m + 1)
    offsets = offsets[values.offset :]
    first, last = int(offsets[0]), int(offsets[-1])
    if last - first >= _INT_MAX:
        raise BadRequest("A text column's distinct values exceed 2 GB, too large for R")
    raw = np.frombuffer(buffers[2], dtype=np.uint8)[first:last] if last > first else None
    if raw is None:
        raw = np.empty(0, dtype=np.uint8)
    elif not raw.all():
        raise BadRequest("A text value contains a NUL character, which R cannot hold")
    rel = (offsets - first).astype(np.int32)
    fun = _r_function("levels", _R_FACTOR_LEVELS)
    res = fun(
        ri.ByteSexpVector.from_memoryview(memoryview(raw)),
        _int_vector(rel[:-1] + 1),  # R positions are 1-based and inclusive
        _int_vector(np.ascontiguousarray(rel[1:])),
    )
    codes = np.array(np.frombuffer(res[1].memoryview(), dtype=np.int32, count=m))
    return res[0], codes
