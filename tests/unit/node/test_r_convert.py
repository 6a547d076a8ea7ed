"""arrow_to_r_dataframe, checked in R itself (rpy2 embeds R in this test process).

Most checks are R code run with stopifnot(): ``identical()`` against vectors R builds
itself (``factor()``, ``as.Date()``, ``read.csv()``), so "equal" means what R means.
"""

from __future__ import annotations

import datetime as dt
import decimal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

ri = pytest.importorskip("rpy2.rinterface")

from rpy2.rinterface_lib import embedded  # noqa: E402

from gateway.node.datasources import TableCatalogue, read_arrow  # noqa: E402
from gateway.node.errors import BadRequest  # noqa: E402
from gateway.node.exampledata import benchmark_table, generate_example_data  # noqa: E402

pytestmark = pytest.mark.r


@pytest.fixture(scope="module", autouse=True)
def r_ready():
    if not embedded.isready():
        ri.initr()
    yield


def convert(table: pa.Table, symbol: str = "df"):
    from gateway.node.r_convert import arrow_to_r_dataframe

    df = arrow_to_r_dataframe(table)
    ri.globalenv[symbol] = df
    return df


def check(*conditions: str) -> None:
    """Each condition is R code that must be TRUE (stopifnot reports which is not)."""
    for cond in conditions:
        ri.evalr(f"stopifnot({cond})")


# --------------------------------------------------------------------------- shape


def test_data_frame_shape_names_and_row_names():
    convert(pa.table({"a": [1.0, 2.0, 3.0], "b": pa.array([1, 2, 3], pa.int32())}))
    check(
        "is.data.frame(df)",
        'identical(class(df), "data.frame")',
        "identical(dim(df), c(3L, 2L))",
        'identical(names(df), c("a", "b"))',
        "identical(.row_names_info(df, 0L), c(NA_integer_, -3L))",  # compact
        "identical(df, data.frame(a = c(1, 2, 3), b = 1:3))",
        "identical(unserialize(serialize(df, NULL)), df)",
    )


def test_zero_rows():
    convert(
        pa.table(
            {
                "x": pa.array([], pa.float64()),
                "s": pa.array([], pa.string()),
                "i": pa.array([], pa.int64()),
                "b": pa.array([], pa.bool_()),
                "d": pa.array([], pa.date32()),
            }
        )
    )
    check(
        "identical(dim(df), c(0L, 5L))",
        "identical(df$x, numeric(0))",
        "identical(df$s, factor(character(0)))",
        "identical(df$i, integer(0))",
        "identical(df$b, logical(0))",
        "identical(df$d, as.Date(character(0)))",
        "identical(df, data.frame(x = numeric(0), s = factor(character(0)), "
        "i = integer(0), b = logical(0), d = as.Date(character(0))))",
    )


def test_zero_columns():
    convert(pa.table({"a": [1, 2, 3, 4, 5]}).select([]))
    check("is.data.frame(df)", "identical(dim(df), c(5L, 0L))")
    convert(pa.table({}))
    check("identical(dim(df), c(0L, 0L))", "identical(df, data.frame())")


# --------------------------------------------------------------------------- numbers


def test_doubles_keep_exact_values_na_and_nan():
    values = [1.5, None, float("nan"), -0.0, 1e300, 5e-324, float("inf"), 0.1 + 0.2]
    convert(pa.table({"x": pa.array(values, pa.float64())}))
    check(
        "identical(df$x, c(1.5, NA, NaN, -0, 1e300, 5e-324, Inf, 0.1 + 0.2))",
        "identical(df$x[2], NA_real_)",  # NA, not just any NaN
        "!is.nan(df$x[2])",
        "is.nan(df$x[3]) && !identical(df$x[3], NA_real_)",
        "identical(which(is.na(df$x)), c(2L, 3L))",
    )


def test_float32_and_decimal_become_double():
    convert(
        pa.table(
            {
                "f": pa.array([0.5, None, 3.25], pa.float32()),
                "d": pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("-7.5")]),
            }
        )
    )
    check("identical(df$f, c(0.5, NA, 3.25))", "identical(df$d, c(1.25, NA, -7.5))")


def test_integers_fit_or_become_double():
    int_min, int_max = -(2**31), 2**31 - 1
    convert(
        pa.table(
            {
                "i32": pa.array([1, None, int_max, -int_max], pa.int32()),
                "i64": pa.array([1, None, int_max, -int_max], pa.int64()),
                "big": pa.array([1, None, 2**40, 3], pa.int64()),
                "min32": pa.array([1, None, int_min, 3], pa.int32()),  # INT_MIN is R's NA
                "u64": pa.array([1, None, 2**63, 3], pa.uint64()),
                "i8": pa.array([-128, None, 127, 0], pa.int8()),
                "u32": pa.array([0, None, 2**32 - 1, 1], pa.uint32()),
                "nonull": pa.array([4, 3, 2, 1], pa.int64()),
            }
        )
    )
    check(
        "identical(df$i32, c(1L, NA, .Machine$integer.max, -.Machine$integer.max))",
        "identical(df$i64, df$i32)",
        "identical(df$big, c(1, NA, 2^40, 3))",
        "identical(df$min32, c(1, NA, -2^31, 3))",
        "identical(df$u64, c(1, NA, 2^63, 3))",
        "identical(df$i8, c(-128L, NA, 127L, 0L))",
        "identical(df$u32, c(0, NA, 2^32 - 1, 1))",
        "identical(df$nonull, 4:1)",
    )


def test_logical():
    convert(pa.table({"b": [True, None, False, True], "c": [False, False, True, True]}))
    check(
        "identical(df$b, c(TRUE, NA, FALSE, TRUE))",
        "identical(df$c, c(FALSE, FALSE, TRUE, TRUE))",
    )


def test_all_null_column_is_logical_na():
    convert(pa.table({"n": pa.array([None, None, None])}))
    check("identical(df$n, c(NA, NA, NA))")


# --------------------------------------------------------------------------- factors

TEXT = ["b", "B", "a", None, "A", "é", "e", "", "Z", "b", "zz", "10", "9", "_x", "a b"]


def _r_chars(values) -> str:
    def one(v):
        if v is None:
            return "NA"
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "c(" + ", ".join(one(v) for v in values) + ")"


def test_strings_become_factor_like_r_factor():
    convert(pa.table({"s": pa.array(TEXT), "l": pa.array(TEXT, pa.large_string())}))
    ref = f"factor({_r_chars(TEXT)})"
    check(
        "is.factor(df$s)",
        f"identical(df$s, {ref})",
        f"identical(levels(df$s), levels({ref}))",
        f"identical(df$l, {ref})",
        "identical(which(is.na(df$s)), 4L)",
        'all(Encoding(levels(df$s)) %in% c("unknown", "UTF-8"))',
        'identical(as.character(df$s[6]), "\\u00e9")',
    )


def test_dictionary_with_unused_and_null_entries_and_chunks():
    d1 = pa.DictionaryArray.from_arrays(
        pa.array([0, 2, None, 2], pa.int8()), pa.array(["x", "unused", "a"])
    )
    d2 = pa.DictionaryArray.from_arrays(pa.array([1, 0], pa.int8()), pa.array(["a", "m"]))
    col = pa.chunked_array([d1, d2])
    values = col.cast(pa.string()).to_pylist()
    assert values == ["x", "a", None, "a", "m", "a"]
    convert(pa.table({"f": col}))
    check(
        f"identical(df$f, factor({_r_chars(values)}))", 'identical(levels(df$f), c("a", "m", "x"))'
    )


def test_string_chunks_and_slices():
    arr = pa.array(["q", None, "p", "q", "r", "p", ""])
    col = pa.chunked_array([arr.slice(1, 3), arr.slice(4, 3), arr.slice(0, 1)])
    values = col.to_pylist()
    convert(pa.table({"s": col}))
    check(f"identical(df$s, factor({_r_chars(values)}))")


def test_many_distinct_strings():
    rng = np.random.default_rng(3)
    values = [f"id{i:05d}" for i in rng.permutation(20_000)]
    values[17] = None
    values[100] = "ünïcødé ✓"
    convert(pa.table({"s": values}))
    ri.globalenv["ref"] = ri.StrSexpVector([ri.NA_Character if v is None else v for v in values])
    check(
        "identical(df$s, factor(ref))",
        "nlevels(df$s) == 19999L",
    )


def test_nul_in_text_is_refused():
    from gateway.node.r_convert import arrow_to_r_dataframe

    with pytest.raises(BadRequest, match="NUL"):
        arrow_to_r_dataframe(pa.table({"s": ["a\x00b"]}))


def test_dictionary_null_slots_may_hold_any_index():
    # Arrow leaves a null slot's index unspecified: here 99 and -5, out of range.
    validity = np.packbits(np.array([1, 0, 1, 0, 1, 1, 0, 1], bool), bitorder="little")
    raw = np.array([0, 99, 1, -5, 2, 0, 7, 1], np.int32)
    indices = pa.Array.from_buffers(
        pa.int32(), 8, [pa.py_buffer(validity.tobytes()), pa.py_buffer(raw.tobytes())]
    )
    col = pa.DictionaryArray.from_arrays(indices, pa.array(["b", "a", "c", "unused"]))
    col.validate(full=True)
    convert(pa.table({"f": col}))
    check(
        'identical(df$f, factor(c("b", NA, "a", NA, "c", "b", NA, "a")))',
        'identical(levels(df$f), c("a", "b", "c"))',
    )


@pytest.mark.parametrize("index_type", [pa.int8(), pa.int16(), pa.uint8(), pa.int64()])
def test_dictionary_index_types(index_type):
    col = pa.DictionaryArray.from_arrays(
        pa.array([2, None, 0, 2, 1], index_type), pa.array(["z", None, "a"])
    )
    convert(pa.table({"f": col}))
    check('identical(df$f, factor(c("a", NA, "z", "a", NA)))')  # a null dictionary value: NA


def _r_literal(values, kind: str) -> str:
    """R code for a vector of ``values`` (None is NA) of one R type."""

    def one(v):
        if v is None:
            return "NA"
        if kind == "double":
            return "NaN" if v != v else repr(float(v))
        if kind == "integer":
            return f"{v}L"
        if kind == "logical":
            return "TRUE" if v else "FALSE"
        if kind == "date":
            return f'"{v.isoformat()}"'
        return '"' + v + '"'

    inner = "c(" + ", ".join(one(v) for v in values) + ")"
    wrap = {
        "double": "as.double({})",
        "integer": "as.integer({})",
        "logical": "as.logical({})",
        "date": "as.Date({})",
        "factor": "factor({})",
    }[kind]
    return wrap.format(inner)


def test_every_type_from_slices_at_bit_offsets():
    # Chunks that start inside a byte of the validity (and of a bool's value) bitmap,
    # as slices and row groups give them: every value must land in its own row.
    rng = np.random.default_rng(11)
    n = 41
    nulls = rng.random(n) < 0.25
    nulls[[0, 7, 8, 40]] = [True, True, False, True]
    words = np.array(["kiwi", "apple", "Fig", "date"])[rng.integers(0, 4, n)]
    base = {
        "dbl": (pa.array(rng.normal(size=n), mask=nulls), "double"),
        "f32": (pa.array(np.float32(rng.normal(size=n)), mask=nulls), "double"),
        "i32": (pa.array(rng.integers(-1000, 1000, n, dtype=np.int32), mask=nulls), "integer"),
        "i64": (pa.array(rng.integers(-(10**6), 10**6, n), mask=nulls), "integer"),
        "big": (pa.array(rng.integers(2**40, 2**41, n), mask=nulls), "double"),
        "u8": (pa.array(rng.integers(0, 255, n, dtype=np.uint8), mask=nulls), "integer"),
        "bool": (pa.array(rng.random(n) < 0.5, mask=nulls), "logical"),
        "date": (
            pa.array(rng.integers(-1000, 20000, n, dtype=np.int32), mask=nulls).cast(pa.date32()),
            "date",
        ),
        "text": (pa.array(words, mask=nulls), "factor"),
        "dict": (pa.array(words, mask=nulls).dictionary_encode(), "factor"),
    }
    cuts = [(3, 10), (13, 19), (0, 3), (32, 9)]  # offsets 3 and 13: inside a byte
    table = pa.table(
        {
            name: pa.chunked_array([arr.slice(o, m) for o, m in cuts], arr.type)
            for name, (arr, _) in base.items()
        }
    )
    convert(table)
    for name, (_, kind) in base.items():
        values = table.column(name).to_pylist()
        if kind == "factor":
            values = [None if v is None else str(v) for v in values]
        check(f"identical(df${name}, {_r_literal(values, kind)})")
    check(
        "is.integer(df$i32) && is.integer(df$i64) && is.double(df$big) && is.integer(df$u8)",
        "identical(which(is.na(df$dbl)), which(is.na(df$text)))",
        f"sum(is.na(df$bool)) == {sum(nulls[o : o + m].sum() for o, m in cuts)}L",
    )


# --------------------------------------------------------------------------- dates


def test_dates_and_timestamps():
    convert(
        pa.table(
            {
                "d": pa.array([dt.date(2020, 1, 2), None, dt.date(1969, 12, 31)]),
                "d64": pa.array([dt.date(2020, 1, 2), None, dt.date(1969, 12, 31)], pa.date64()),
                "ts": pa.array(
                    [dt.datetime(2020, 1, 2, 3, 4, 5), None, dt.datetime(1960, 1, 1)],
                    pa.timestamp("s"),
                ),
                "ts_ns": pa.array(
                    [dt.datetime(2020, 1, 2, 3, 4, 5), None, dt.datetime(1960, 1, 1)],
                    pa.timestamp("ns"),
                ),
                "tz": pa.array(
                    [
                        dt.datetime(2020, 1, 2, 4, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=1))),
                        None,
                        None,
                    ],
                    pa.timestamp("ms", tz="+01:00"),
                ),
                "ms": pa.array([1500, None, -250], pa.timestamp("ms")),
            }
        )
    )
    check(
        'identical(df$d, as.Date(c("2020-01-02", NA, "1969-12-31")))',
        "identical(df$d64, df$d)",
        'identical(df$ts, as.POSIXct(c("2020-01-02 03:04:05", NA, "1960-01-01 00:00:00"), '
        'tz = "UTC"))',
        "identical(df$ts_ns, df$ts)",
        'identical(df$tz, as.POSIXct(c("2020-01-02 03:04:05", NA, NA), tz = "UTC"))',
        'identical(unclass(df$ms), structure(c(1.5, NA, -0.25), tzone = "UTC"))',
        'identical(class(df$ts), c("POSIXct", "POSIXt"))',
    )


def test_time_of_day_becomes_text_factor():
    convert(pa.table({"t": pa.array([3723, None, 59], pa.time32("s"))}))
    check('identical(df$t, factor(c("01:02:03", NA, "00:00:59")))')


def test_unsupported_type_is_refused_naming_the_column():
    from gateway.node.r_convert import arrow_to_r_dataframe

    with pytest.raises(BadRequest, match="'blob'"):
        arrow_to_r_dataframe(pa.table({"ok": [1], "blob": pa.array([b"\x00\x01"])}))
    with pytest.raises(BadRequest, match="'nested'"):
        arrow_to_r_dataframe(pa.table({"nested": pa.array([{"a": 1}])}))


# --------------------------------------------------------------------------- against R's readers


def test_csv_equals_r_read_csv(tmp_path: Path):
    folder = tmp_path / "p" / "f"
    folder.mkdir(parents=True)
    (folder / "t.csv").write_text(
        "id,age,score,sex,flag,note\n"
        '1,30,1.5,"female",TRUE,"a, quoted"\n'
        "2,NA,NA,male,FALSE,\n"
        '3,45,-2.25e3,"",NA,"NA"\n'
        "4,,0.1,female,TRUE,Zürich\n"
        "5,2147483647,1e-10,NA,FALSE,b\n",
        encoding="utf-8",
    )
    src = TableCatalogue(tmp_path, []).resolve("p/f/t")
    convert(read_arrow(src, None))
    ri.globalenv["path"] = ri.StrSexpVector([src.location])
    check(
        'identical(df, read.csv(path, stringsAsFactors = TRUE, encoding = "UTF-8"))',
    )
    convert(read_arrow(src, ["note", "id"]))
    check('identical(df, read.csv(path, stringsAsFactors = TRUE)[c("note", "id")])')


def test_example_labs_csv_equals_r_read_csv(tmp_path: Path):
    generate_example_data(tmp_path, seed=5, n=300)
    cat = TableCatalogue(tmp_path, [])
    src = cat.resolve("demo/cohort/labs")
    convert(read_arrow(src, None))
    ri.globalenv["path"] = ri.StrSexpVector([src.location])
    ri.evalr("ref <- read.csv(path, stringsAsFactors = TRUE)")
    ri.evalr("ref$sampled <- as.Date(as.character(ref$sampled))")  # read.csv keeps text
    check(
        "identical(df, ref)",
        "nrow(df) == 300L && anyNA(df$cholesterol)",
    )


def test_example_patients_parquet(tmp_path: Path):
    generate_example_data(tmp_path, seed=5, n=400)
    cat = TableCatalogue(tmp_path, [])
    table = read_arrow(cat.resolve("demo/cohort/patients"), None)
    convert(table)
    # reference vectors built value by value, by another path (rpy2's from_iterable)
    for name in ("age", "bmi", "weight"):
        vals = table.column(name).to_pylist()
        ri.globalenv[f"ref_{name}"] = ri.FloatSexpVector(
            [ri.NA_Real if v is None else v for v in vals]
        )
    visits = table.column("visits").to_pylist()
    ri.globalenv["ref_visits"] = ri.IntSexpVector(
        [ri.NA_Integer if v is None else v for v in visits]
    )
    sex = table.column("sex").cast(pa.string()).to_pylist()
    region = table.column("region").cast(pa.string()).to_pylist()
    bmi_na = [i + 1 for i, v in enumerate(table.column("bmi").to_pylist()) if v is None]
    assert bmi_na, "the example data has missing bmi values"
    check(
        "identical(dim(df), c(400L, 11L))",
        'identical(names(df), c("id", "age", "sex", "height", "weight", "bmi", "smoker", '
        '"visits", "region", "enrolled", "outcome"))',
        "identical(df$age, ref_age)",
        "identical(df$bmi, ref_bmi)",
        "identical(df$weight, ref_weight)",
        "identical(df$visits, ref_visits)",
        "identical(df$id, 1:400)",
        f"identical(df$sex, factor({_r_chars(sex)}))",
        'identical(levels(df$sex), c("female", "male"))',
        f"identical(df$region, factor({_r_chars(region)}))",
        f"identical(which(is.na(df$bmi)), c({', '.join(f'{i}L' for i in bmi_na)}))",
        'inherits(df$enrolled, "Date") && is.logical(df$smoker) && is.integer(df$outcome)',
        "all(df$outcome %in% 0:1)",
    )
    # and R works with it as with any data.frame
    check(
        "is.numeric(coef(glm(outcome ~ age + bmi + smoker, family = binomial, data = df)))",
        "sum(table(df$sex)) == 400L",
        "nrow(df[df$sex == 'male', ]) == sum(df$sex == 'male')",
        "abs(mean(df$age) - " + repr(float(pc.mean(table.column("age")).as_py())) + ") < 1e-9",
    )


# --------------------------------------------------------------------------- big


@pytest.mark.slow
def test_one_million_rows():
    table = benchmark_table(rows=1_000_000, seed=2)
    t0 = time.perf_counter()
    convert(table)
    elapsed = time.perf_counter() - t0
    print(f"\n1,000,000 x 10 -> R data.frame in {elapsed:.3f} s")
    f1 = table.column("f1")
    counts = {d["values"]: d["counts"] for d in pc.value_counts(f1.drop_null()).to_pylist()}
    levels = sorted(counts)
    check(
        "identical(dim(df), c(1000000L, 10L))",
        f"sum(is.na(df$x1)) == {table.column('x1').null_count}L",
        f"sum(is.na(df$n1)) == {table.column('n1').null_count}L",
        f"sum(is.na(df$f1)) == {f1.null_count}L",
        f"sum(is.na(df$b1)) == {table.column('b1').null_count}L",
        f"identical(levels(df$f1), {_r_chars(levels)})",
        f"identical(as.vector(table(df$f1)), c({', '.join(f'{counts[k]}L' for k in levels)}))",
        f"sum(df$n2) == {pc.sum(table.column('n2')).as_py()}",
        f"isTRUE(all.equal(sum(df$x2), {pc.sum(table.column('x2')).as_py()!r}))",
        "is.integer(df$n1) && is.integer(df$n2) && is.logical(df$b1)",
        "nlevels(df$f3) == 200L && nlevels(df$f2) == 3L",
    )
    x = np.asarray(table.column("x4").to_numpy())
    got = np.frombuffer(ri.globalenv["df"][3].memoryview(), dtype=np.float64)
    assert np.array_equal(got, x)


# --------------------------------------------------------------------------- column streams


@pytest.mark.parametrize("table", ["demo/cohort/patients", "demo/cohort/labs"])
@pytest.mark.parametrize("variables", [None, ["sex", "id"]])
def test_column_stream_gives_the_same_data_frame(tmp_path: Path, table, variables):
    from gateway.node.datasources import read_columns
    from gateway.node.r_convert import columns_to_r_dataframe

    generate_example_data(tmp_path, seed=3, n=200)
    src = TableCatalogue(tmp_path, []).resolve(table)
    if variables and table.endswith("labs"):
        variables = ["lab", "id"]
    convert(read_arrow(src, variables), "whole")
    stream = read_columns(src, variables)
    ri.globalenv["streamed"] = columns_to_r_dataframe(stream.names, stream.columns, stream.num_rows)
    check("identical(whole, streamed)")


def test_column_stream_refuses_unknown_variables(tmp_path: Path):
    from gateway.node.datasources import read_columns

    generate_example_data(tmp_path, seed=3, n=20)
    src = TableCatalogue(tmp_path, []).resolve("demo/cohort/patients")
    with pytest.raises(BadRequest, match="nope"):
        read_columns(src, ["age", "nope"])
