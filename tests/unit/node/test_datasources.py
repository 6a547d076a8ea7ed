"""TableCatalogue and read_arrow: names, path traversal, Parquet/CSV/SQLite/PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import sqlite3
import threading
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from gateway.node import datasources
from gateway.node.datasources import (
    TableCatalogue,
    TableRef,
    TableSource,
    opal_value_type,
    read_arrow,
)
from gateway.node.errors import BadRequest, GatewayError, NotFound
from gateway.node.exampledata import generate_example_data

PG_URL = os.environ.get("DSGATEWAY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    generate_example_data(root, seed=7, n=50)
    return root


@pytest.fixture
def catalogue(data_dir: Path) -> TableCatalogue:
    return TableCatalogue(data_dir, [])


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- names

BAD_NAMES = [
    "p/f/../../etc/passwd",
    "../f/t",
    "p/../t",
    "p/f/..",
    "p/f/.",
    "p/f/t/x",
    "p/f",
    "p",
    "",
    "/p/f/t",
    "p/f/t/",
    "p//t",
    "P/f/t",  # project names are lowercase
    "p_q/f/t",
    "-p/f/t".replace("-p", "p-"),  # must end in a letter or digit
    "a" * 57 + "/f/t",
    "p/f/t.parquet",
    "p/f/%2e%2e",
    "p/%2e%2e/t",
    "p/f/a\x00b",
    "p\\f\\t",
    "p/f\\..\\..\\x/t",
    "p/f/t\n",
    "p/f/t ",
    "p/f/ t",
    "p/f/tëst",  # \w is ASCII only, as in Java
    "p/f/t\u0660",  # Arabic-Indic digit zero: a Unicode \d
    "p/f/t;rm",
    "p/f/*",
    "p/f/~",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_before_any_file_system_access(catalogue, monkeypatch, name):
    def boom(*args, **kwargs):
        raise AssertionError(f"file system touched for {name!r}")

    for fn in ("realpath", "isfile", "exists", "lexists"):
        monkeypatch.setattr(os.path, fn, boom)
    monkeypatch.setattr(os, "scandir", boom)
    monkeypatch.setattr(os, "stat", boom)
    with pytest.raises(BadRequest, match="Invalid table name"):
        catalogue.resolve(name)
    with pytest.raises(BadRequest):
        TableRef.parse(name)


@pytest.mark.parametrize(
    "name",
    ["demo/cohort/patients", "a/b/c", "p-1/F_o-l:d/T:a-b_1", "0/0/0", "a" * 56 + "/f/t"],
)
def test_good_names_parse(name):
    ref = TableRef.parse(name)
    assert str(ref) == name


def test_hand_made_tableref_is_checked_too(catalogue):
    with pytest.raises(BadRequest):
        catalogue.resolve(TableRef("demo", "..", "patients"))


def test_bad_name_never_reads_outside(tmp_path, data_dir, catalogue):
    secret = tmp_path / "secret.csv"
    write_csv(secret, "password\nhunter2\n")
    for name in ["demo/cohort/../../secret", "demo/../../secret", "demo/cohort/..%2f..%2fsecret"]:
        with pytest.raises((BadRequest, NotFound)):
            catalogue.resolve(name)


# --------------------------------------------------------------------------- listing


def test_list_finds_parquet_and_csv_sorted(catalogue):
    assert [str(r) for r in catalogue.list()] == ["demo/cohort/labs", "demo/cohort/patients"]


def test_list_ignores_invalid_names_and_other_files(data_dir):
    write_csv(data_dir / "demo" / "cohort" / "bad name.csv", "a\n1\n")
    write_csv(data_dir / "demo" / "cohort" / "notes.txt", "a\n1\n")
    write_csv(data_dir / "demo" / "cohort" / "x.CSV", "a\n1\n")
    write_csv(data_dir / "demo" / "cohort" / ".hidden.csv", "a\n1\n")
    write_csv(data_dir / "Upper" / "f" / "t.csv", "a\n1\n")
    write_csv(data_dir / "demo" / "bad.folder" / "t.csv", "a\n1\n")
    write_csv(data_dir / "demo" / "top.csv", "a\n1\n")  # not in a folder
    (data_dir / "demo" / "cohort" / "dir.csv").mkdir()  # a directory, not a file
    write_csv(data_dir / "demo" / "Other_F-1:x" / "t-1:y_Z.csv", "a\n1\n")
    names = [str(r) for r in TableCatalogue(data_dir, []).list()]
    assert names == ["demo/Other_F-1:x/t-1:y_Z", "demo/cohort/labs", "demo/cohort/patients"]


def test_missing_data_dir_lists_nothing(tmp_path):
    cat = TableCatalogue(tmp_path / "nowhere", [])
    assert cat.list() == []
    with pytest.raises(NotFound):
        cat.resolve("demo/cohort/patients")


def test_resolve_gives_kind_and_real_path(catalogue, data_dir):
    src = catalogue.resolve("demo/cohort/patients")
    assert src == TableSource(
        TableRef("demo", "cohort", "patients"),
        "parquet",
        os.path.realpath(data_dir / "demo" / "cohort" / "patients.parquet"),
    )
    assert catalogue.resolve("demo/cohort/labs").kind == "csv"
    assert pickle.loads(pickle.dumps(src)) == src  # noqa: S301  # it travels to the worker
    assert catalogue.exists("demo/cohort/labs")
    assert not catalogue.exists("demo/cohort/nope")
    assert not catalogue.exists("demo/cohort/../x")


def test_unknown_table_is_not_found(catalogue):
    with pytest.raises(NotFound, match="demo/cohort/nope"):
        catalogue.resolve("demo/cohort/nope")
    with pytest.raises(NotFound):
        catalogue.resolve("other/cohort/patients")


def test_parquet_and_csv_with_one_name_are_ambiguous(data_dir):
    write_csv(data_dir / "demo" / "cohort" / "patients.csv", "a\n1\n")
    cat = TableCatalogue(data_dir, [])
    assert [str(r) for r in cat.list()].count("demo/cohort/patients") == 1
    with pytest.raises(BadRequest, match=r"ambiguous.*parquet file and a csv file"):
        cat.resolve("demo/cohort/patients")


def test_file_and_sql_with_one_name_are_ambiguous(data_dir, tmp_path):
    db = tmp_path / "x.db"
    sqlite3.connect(db).execute("CREATE TABLE t (a INTEGER)").connection.commit()
    cat = TableCatalogue(
        data_dir, [{"table": "demo/cohort/labs", "url": f"sqlite:///{db}", "sql_table": "t"}]
    )
    with pytest.raises(BadRequest, match="ambiguous"):
        cat.resolve("demo/cohort/labs")


# --------------------------------------------------------------------------- symlinks


def test_symlink_out_of_data_dir_is_refused(tmp_path, data_dir):
    secret = write_csv(tmp_path / "secret.csv", "password\nhunter2\n")
    os.symlink(secret, data_dir / "demo" / "cohort" / "leak.csv")
    outside = tmp_path / "outside"
    write_csv(outside / "f" / "t.csv", "a\n1\n")
    os.symlink(outside, data_dir / "evil")  # a whole project pointing outside
    os.symlink(tmp_path, data_dir / "demo" / "up")  # a folder pointing to the parent
    cat = TableCatalogue(data_dir, [])
    names = [str(r) for r in cat.list()]
    assert "demo/cohort/leak" not in names
    assert not any(n.startswith("evil/") or n.startswith("demo/up/") for n in names)
    for name in ["demo/cohort/leak", "evil/f/t", "demo/up/secret"]:
        with pytest.raises(NotFound):
            cat.resolve(name)


def test_symlink_inside_data_dir_is_followed(data_dir):
    os.symlink(
        data_dir / "demo" / "cohort" / "patients.parquet",
        data_dir / "demo" / "cohort" / "alias.parquet",
    )
    cat = TableCatalogue(data_dir, [])
    assert "demo/cohort/alias" in [str(r) for r in cat.list()]
    src = cat.resolve("demo/cohort/alias")
    assert src.location.endswith("patients.parquet")


def test_data_dir_itself_may_be_a_symlink(tmp_path, data_dir):
    link = tmp_path / "link"
    os.symlink(data_dir, link)
    cat = TableCatalogue(link, [])
    assert len(cat.list()) == 2
    assert read_arrow(cat.resolve("demo/cohort/labs"), ["id"]).num_rows == 50


# --------------------------------------------------------------------------- parquet


def test_parquet_reads_requested_variables_in_order(catalogue):
    src = catalogue.resolve("demo/cohort/patients")
    t = read_arrow(src, ["bmi", "sex", "age"])
    assert t.column_names == ["bmi", "sex", "age"]
    assert t.num_rows == 50
    assert t.schema.field("age").type == pa.float64()
    assert pa.types.is_dictionary(t.schema.field("sex").type)
    assert t.column("bmi").null_count >= 0


def test_parquet_all_variables(catalogue):
    t = read_arrow(catalogue.resolve("demo/cohort/patients"), None)
    assert t.column_names == [
        "id", "age", "sex", "height", "weight", "bmi", "smoker", "visits", "region",
        "enrolled", "outcome",
    ]  # fmt: skip
    assert read_arrow(catalogue.resolve("demo/cohort/patients"), []).column_names == (
        t.column_names
    )
    # types are kept; text comes dictionary-encoded, its values unchanged
    assert t.schema.field("visits").type == pa.int32()
    assert t.schema.field("smoker").type == pa.bool_()
    assert t.schema.field("enrolled").type == pa.date32()
    assert pa.types.is_dictionary(t.schema.field("region").type)
    plain = pq.read_table(catalogue.resolve("demo/cohort/patients").location)
    assert t.column("region").cast(pa.string()).equals(plain.column("region"))


def test_parquet_reads_only_the_requested_columns(catalogue, monkeypatch):
    seen = {}
    real_read = pq.read_table

    def spy(path, columns=None, **kw):
        seen["columns"] = columns
        return real_read(path, columns=columns, **kw)

    monkeypatch.setattr(datasources.pq, "read_table", spy)
    read_arrow(catalogue.resolve("demo/cohort/patients"), ["age"])
    assert seen["columns"] == ["age"]


def test_unknown_variable_is_named(catalogue):
    src = catalogue.resolve("demo/cohort/patients")
    with pytest.raises(BadRequest, match="no variable 'nope'"):
        read_arrow(src, ["age", "nope"])
    with pytest.raises(BadRequest, match="variables 'x', 'y'"):
        read_arrow(src, ["x", "age", "y"])
    with pytest.raises(BadRequest, match="'AGE'"):
        read_arrow(src, ["AGE"])  # names are case-sensitive


def test_repeated_variable_is_read_once(catalogue):
    t = read_arrow(catalogue.resolve("demo/cohort/patients"), ["age", "sex", "age"])
    assert t.column_names == ["age", "sex"]


def test_pandas_index_column_is_not_a_variable(data_dir):
    df = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}, index=[10, 20])
    path = data_dir / "demo" / "cohort" / "pd.parquet"
    df.to_parquet(path)
    assert "__index_level_0__" in pq.read_schema(path).names
    cat = TableCatalogue(data_dir, [])
    src = cat.resolve("demo/cohort/pd")
    assert read_arrow(src, None).column_names == ["a", "b"]
    assert [n for n, _ in cat.columns("demo/cohort/pd")] == ["a", "b"]
    with pytest.raises(BadRequest):
        read_arrow(src, ["__index_level_0__"])


def test_pandas_categorical_and_nullable_ints(data_dir):
    df = pd.DataFrame(
        {
            "cat": pd.Categorical(["b", None, "a"], categories=["b", "a", "unused"]),
            "n": pd.array([1, None, 3], dtype="Int64"),
            "f": [1.5, float("nan"), 3.0],
        }
    )
    df.to_parquet(data_dir / "demo" / "cohort" / "pdt.parquet", index=False)
    t = read_arrow(TableCatalogue(data_dir, []).resolve("demo/cohort/pdt"), None)
    assert t.column("n").to_pylist() == [1, None, 3]
    assert t.column("f").to_pylist()[1] is None  # pandas NaN is stored as null
    assert t.column("cat").to_pylist() == ["b", None, "a"]


def test_unreadable_file_fails_without_revealing_the_path(data_dir, caplog):
    path = data_dir / "demo" / "cohort" / "broken.parquet"
    path.write_bytes(b"not a parquet file at all")
    cat = TableCatalogue(data_dir, [])
    src = cat.resolve("demo/cohort/broken")
    with pytest.raises(GatewayError, match="'demo/cohort/broken' could not be read") as info:
        read_arrow(src, None)
    assert info.value.status == 500
    assert str(data_dir) not in info.value.message
    assert str(data_dir) in caplog.text  # the details are logged
    with pytest.raises(GatewayError, match="could not be read"):
        cat.columns("demo/cohort/broken")


def _decode_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("parquet-decode")]


def test_read_columns_streams_every_column_in_order(tmp_path):
    table = pa.table({f"c{i}": pa.array([i * 10 + r for r in range(7)]) for i in range(6)})
    (tmp_path / "p" / "f").mkdir(parents=True)
    pq.write_table(table, tmp_path / "p" / "f" / "t.parquet")
    src = TableCatalogue(tmp_path, []).resolve("p/f/t")
    stream = datasources.read_columns(src, ["c4", "c0", "c5", "c2"])
    assert stream.names == ["c4", "c0", "c5", "c2"] and stream.num_rows == 7
    got = [column.to_pylist() for column in stream.columns]
    assert got == [table.column(n).to_pylist() for n in ["c4", "c0", "c5", "c2"]]
    assert _decode_threads() == []  # the background reader is gone once the stream ends


def test_read_columns_stopped_early_leaves_no_reader_running(tmp_path):
    table = pa.table({f"c{i}": pa.array(range(1000)) for i in range(8)})
    (tmp_path / "p" / "f").mkdir(parents=True)
    pq.write_table(table, tmp_path / "p" / "f" / "t.parquet")
    stream = datasources.read_columns(TableCatalogue(tmp_path, []).resolve("p/f/t"))
    assert next(stream.columns).to_pylist() == list(range(1000))
    stream.columns.close()  # what a failed conversion does to the generator
    assert _decode_threads() == []


def test_read_columns_failure_names_the_table_not_the_file(tmp_path, monkeypatch, caplog):
    table = pa.table({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    (tmp_path / "p" / "f").mkdir(parents=True)
    pq.write_table(table, tmp_path / "p" / "f" / "t.parquet")
    stream = datasources.read_columns(TableCatalogue(tmp_path, []).resolve("p/f/t"))

    def broken(self, columns=None, **kwargs):
        raise OSError(f"disk error reading {tmp_path}")

    monkeypatch.setattr(pq.ParquetFile, "read", broken)
    with pytest.raises(GatewayError, match="'p/f/t' could not be read") as info:
        list(stream.columns)
    assert str(tmp_path) not in info.value.message
    assert _decode_threads() == []


def test_columns_parquet(catalogue):
    cols = dict(catalogue.columns("demo/cohort/patients"))
    assert cols["age"] == pa.float64()
    assert cols["visits"] == pa.int32()
    assert opal_value_type(cols["age"]) == "decimal"
    assert opal_value_type(cols["visits"]) == "integer"
    assert opal_value_type(cols["sex"]) == "text"
    assert opal_value_type(cols["region"]) == "text"
    assert opal_value_type(cols["smoker"]) == "boolean"
    assert opal_value_type(cols["enrolled"]) == "date"
    assert opal_value_type(pa.timestamp("us")) == "datetime"


# --------------------------------------------------------------------------- CSV

CSV_TEXT = (
    "i,s,x,b,d,e,q\n"
    '1,x,1.5,TRUE,2020-01-02,NA,"NA"\n'
    ',,NaN,F,2020-01-03,,""\n'
    '3,"",Inf,T,,NA,y\n'
    "-4,NA,-inf,FALSE,2020-01-05,,z\n"
)


def test_csv_types_and_missing_values(data_dir):
    write_csv(data_dir / "demo" / "cohort" / "t.csv", CSV_TEXT)
    t = read_arrow(TableCatalogue(data_dir, []).resolve("demo/cohort/t"), None)
    assert t.column_names == ["i", "s", "x", "b", "d", "e", "q"]
    assert t.schema.field("i").type == pa.int64()
    assert t.column("i").to_pylist() == [1, None, 3, -4]
    # text: "NA" (quoted or not) is missing, an empty field is the empty string (as R)
    assert t.column("s").to_pylist() == ["x", "", "", None]
    assert t.column("q").to_pylist() == [None, "", "y", "z"]
    x = t.column("x").to_pylist()
    assert x[0] == 1.5 and x[1] != x[1] and x[2] == float("inf") and x[3] == float("-inf")
    assert t.column("b").to_pylist() == [True, False, True, False]
    assert t.column("d").to_pylist() == [
        dt.date(2020, 1, 2),
        dt.date(2020, 1, 3),
        None,
        dt.date(2020, 1, 5),
    ]
    assert t.schema.field("e").type == pa.null()


def test_csv_variables_in_order_and_unknown(catalogue, monkeypatch):
    src = catalogue.resolve("demo/cohort/labs")
    t = read_arrow(src, ["lab", "glucose"])
    assert t.column_names == ["lab", "glucose"]
    assert t.schema.field("glucose").type == pa.float64()
    assert t.schema.field("lab").type == pa.string()
    with pytest.raises(BadRequest, match="'sugar'"):
        read_arrow(src, ["sugar"])


def test_csv_reads_only_requested_columns(catalogue, monkeypatch):
    seen = {}
    real = datasources.pacsv.read_csv

    def spy(path, convert_options=None, **kw):
        seen["include"] = list(convert_options.include_columns)
        return real(path, convert_options=convert_options, **kw)

    monkeypatch.setattr(datasources.pacsv, "read_csv", spy)
    read_arrow(catalogue.resolve("demo/cohort/labs"), ["ldl", "id"])
    assert seen["include"] == ["ldl", "id"]


def test_csv_duplicate_header_is_refused(data_dir):
    write_csv(data_dir / "demo" / "cohort" / "dup.csv", "a,b,a\n1,2,3\n")
    with pytest.raises(BadRequest, match="duplicate column names: a"):
        read_arrow(TableCatalogue(data_dir, []).resolve("demo/cohort/dup"), None)


def test_csv_not_utf8_is_refused(data_dir):
    path = data_dir / "demo" / "cohort" / "latin.csv"
    path.write_bytes(b"name\ncaf\xe9\n")
    with pytest.raises(BadRequest, match="not valid UTF-8"):
        read_arrow(TableCatalogue(data_dir, []).resolve("demo/cohort/latin"), None)


def test_columns_csv(catalogue):
    cols = catalogue.columns("demo/cohort/labs")
    assert [n for n, _ in cols] == ["id", "glucose", "cholesterol", "hdl", "ldl", "lab", "sampled"]
    assert dict(cols)["sampled"] == pa.date32()


# --------------------------------------------------------------------------- SQL (SQLite)


@pytest.fixture
def sqlite_db(tmp_path) -> str:
    db = tmp_path / "cohort.db"
    con = sqlite3.connect(db)
    con.executescript(
        """
        CREATE TABLE patients (id INTEGER, age REAL, sex TEXT, "we""ird name" TEXT,
                               smoker BOOLEAN, site INTEGER);
        INSERT INTO patients VALUES (1, 30.5, 'female', 'a', 1, 1),
                                    (2, NULL, 'male', NULL, 0, 1),
                                    (3, 71.0, NULL, 'c', NULL, 2);
        CREATE TABLE secrets (pw TEXT);
        INSERT INTO secrets VALUES ('hunter2');
        """
    )
    con.commit()
    con.close()
    return f"sqlite:///{db}"


@pytest.fixture
def sql_catalogue(data_dir, sqlite_db) -> TableCatalogue:
    return TableCatalogue(
        data_dir,
        [
            {"table": "sql/db/patients", "url": sqlite_db, "sql_table": "patients"},
            {
                "table": "sql/db/site1",
                "url": sqlite_db,
                "query": "SELECT id, age, sex FROM patients WHERE site = 1 ORDER BY id;",
            },
        ],
    )


def test_sql_tables_are_listed(sql_catalogue):
    names = [str(r) for r in sql_catalogue.list()]
    assert names == [
        "demo/cohort/labs",
        "demo/cohort/patients",
        "sql/db/patients",
        "sql/db/site1",
    ]
    src = sql_catalogue.resolve("sql/db/site1")
    assert src.kind == "sql"
    assert pickle.loads(pickle.dumps(src)) == src  # noqa: S301


def test_sqlite_table_read(sql_catalogue):
    src = sql_catalogue.resolve("sql/db/patients")
    t = read_arrow(src, None)
    assert t.column_names == ["id", "age", "sex", 'we"ird name', "smoker", "site"]
    assert t.column("id").to_pylist() == [1, 2, 3]
    assert t.column("age").to_pylist() == [30.5, None, 71.0]
    assert t.column("sex").to_pylist() == ["female", "male", None]
    t = read_arrow(src, ["sex", 'we"ird name', "id"])
    assert t.column_names == ["sex", 'we"ird name', "id"]
    assert t.column('we"ird name').to_pylist() == ["a", None, "c"]
    assert t.schema.field("id").type == pa.int64()


def test_sqlite_query_read(sql_catalogue):
    src = sql_catalogue.resolve("sql/db/site1")
    assert read_arrow(src, None).to_pydict() == {
        "id": [1, 2],
        "age": [30.5, None],
        "sex": ["female", "male"],
    }
    assert read_arrow(src, ["sex"]).to_pydict() == {"sex": ["female", "male"]}
    with pytest.raises(BadRequest, match="'site'"):
        read_arrow(src, ["site"])  # in the table, not in the query


INJECTIONS = [
    'age" FROM patients; DROP TABLE patients; --',
    "age FROM secrets --",
    "pw",
    "*",
    "age, sex",
    "1",
    "age) FROM secrets; --",
    "(SELECT pw FROM secrets)",
    "age\x00",
    '"age"',
    "patients.age",
]


@pytest.mark.parametrize("variable", INJECTIONS)
def test_sql_injection_in_variables_is_refused(sql_catalogue, sqlite_db, variable):
    for name in ["sql/db/patients", "sql/db/site1"]:
        with pytest.raises(BadRequest, match="has no variable"):
            read_arrow(sql_catalogue.resolve(name), ["id", variable])
    con = sqlite3.connect(sqlite_db.removeprefix("sqlite:///"))
    assert con.execute("SELECT count(*) FROM patients").fetchone() == (3,)
    con.close()


def test_sql_columns(sql_catalogue):
    cols = sql_catalogue.columns("sql/db/patients")
    assert [n for n, _ in cols] == ["id", "age", "sex", 'we"ird name', "smoker", "site"]
    assert dict(cols)["id"] == pa.int32()
    assert dict(cols)["age"] == pa.float64()
    assert dict(cols)["sex"] == pa.string()
    cols = sql_catalogue.columns("sql/db/site1")
    assert [n for n, _ in cols] == ["id", "age", "sex"]
    assert dict(cols)["id"] == pa.int64()


def test_sql_empty_result_and_big_result(tmp_path):
    db = tmp_path / "big.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (a INTEGER, b REAL, c TEXT)")
    rows = [
        (i, None if i < 60_000 else i / 2, None if i % 7 else f"v{i % 3}") for i in range(120_000)
    ]
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    con.commit()
    con.close()
    url = f"sqlite:///{db}"
    cat = TableCatalogue(
        tmp_path,
        [
            {"table": "p/f/all", "url": url, "sql_table": "t"},
            {"table": "p/f/none", "url": url, "query": "SELECT a, c FROM t WHERE a < 0"},
        ],
    )
    t = read_arrow(cat.resolve("p/f/all"), ["b", "c"])
    assert t.num_rows == 120_000
    assert t.schema.field("b").type == pa.float64()  # first partitions all NULL
    assert t.column("b").null_count == 60_000
    assert t.column("c").to_pylist()[:8] == ["v0", None, None, None, None, None, None, "v1"]
    empty = read_arrow(cat.resolve("p/f/none"), None)
    assert empty.num_rows == 0 and empty.column_names == ["a", "c"]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"table": "bad/../x", "url": "sqlite://", "query": "SELECT 1"}, "Invalid table name"),
        ({"table": "p/f/t", "query": "SELECT 1"}, "url"),
        ({"table": "p/f/t", "url": "sqlite://"}, "exactly one"),
        ({"table": "p/f/t", "url": "sqlite://", "query": "SELECT 1", "sql_table": "t"}, "one"),
        ({"table": "p/f/t", "url": "sqlite://", "query": "SELECT 1", "schema": "s"}, "schema"),
        ({"table": "p/f/t", "url": "sqlite://", "sql_table": ""}, "non-empty"),
        ({"table": "p/f/t", "url": "sqlite://", "sql_table": "t", "password": "x"}, "unknown"),
        ({"table": "p/f/t", "url": "nosuchdb://x", "sql_table": "t"}, "cannot use"),
        ("p/f/t", "mapping"),
    ],
)
def test_sql_config_errors(tmp_path, entry, message):
    with pytest.raises(ValueError, match=message):
        TableCatalogue(tmp_path, [entry])


def test_sql_url_from_environment_and_password_never_in_repr(tmp_path, sqlite_db, monkeypatch):
    monkeypatch.setenv("DSG_TEST_DB_URL", sqlite_db)
    cat = TableCatalogue(
        tmp_path, [{"table": "p/f/t", "url_env": "DSG_TEST_DB_URL", "sql_table": "patients"}]
    )
    assert read_arrow(cat.resolve("p/f/t"), ["id"]).num_rows == 3
    src = TableSource(TableRef("p", "f", "t"), "sql", "postgresql://u:s3cret@db/x", "SELECT 1")
    assert "s3cret" not in repr(src) and "***" in repr(src)
    assert "s3cret" not in str(src)
    monkeypatch.delenv("DSG_TEST_DB_URL")
    with pytest.raises(ValueError, match="DSG_TEST_DB_URL"):
        TableCatalogue(tmp_path, [{"table": "p/f/t", "url_env": "DSG_TEST_DB_URL", "query": "x"}])
    with pytest.raises(ValueError, match="exactly one of 'url' and 'url_env'"):
        TableCatalogue(
            tmp_path, [{"table": "p/f/t", "url": "sqlite://", "url_env": "X", "query": "x"}]
        )


def test_sql_config_duplicate(tmp_path):
    e = {"table": "p/f/t", "url": "sqlite://", "sql_table": "t"}
    with pytest.raises(ValueError, match="twice"):
        TableCatalogue(tmp_path, [e, dict(e)])


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_schema():
    pytest.importorskip("psycopg")
    try:
        engine = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
        with engine.connect() as c:
            c.execute(sa.text("SELECT 1"))
    except Exception as e:  # no server here: the SQLite tests cover the logic
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {e}")
    schema = f"dsg_test_{uuid.uuid4().hex[:8]}"
    with engine.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        c.execute(
            sa.text(
                f'CREATE TABLE "{schema}"."Patients" (id integer, age numeric(5,1), '
                'sex text, smoker boolean, enrolled date, "BMI" double precision, '
                "big bigint)"
            )
        )
        c.execute(
            sa.text(
                f'INSERT INTO "{schema}"."Patients" VALUES '  # noqa: S608
                "(1, 30.5, 'female', true, '2020-01-02', 22.5, 5000000000), "
                "(2, NULL, 'male', false, NULL, NULL, NULL), "
                "(3, 71.0, NULL, NULL, '2021-12-31', 30.25, 7)"
            )
        )
        c.execute(sa.text(f'CREATE TABLE "{schema}".secrets (pw text)'))
    yield schema
    with engine.begin() as c:
        c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def test_postgres_table_and_query(tmp_path, pg_schema):
    cat = TableCatalogue(
        tmp_path,
        [
            {
                "table": "pg/db/patients",
                "url": PG_URL,
                "sql_table": "Patients",
                "schema": pg_schema,
            },
            {
                "table": "pg/db/women",
                "url": PG_URL,
                "query": f'SELECT id, "BMI", sex FROM "{pg_schema}"."Patients" '  # noqa: S608
                "WHERE sex = 'female' OR sex IS NULL ORDER BY id",
            },
        ],
    )
    t = read_arrow(cat.resolve("pg/db/patients"), ["BMI", "age", "enrolled", "smoker", "big"])
    assert t.column_names == ["BMI", "age", "enrolled", "smoker", "big"]
    assert t.column("BMI").to_pylist() == [22.5, None, 30.25]
    assert [None if v is None else float(v) for v in t.column("age").to_pylist()] == [
        30.5,
        None,
        71.0,
    ]
    assert t.column("enrolled").to_pylist() == [dt.date(2020, 1, 2), None, dt.date(2021, 12, 31)]
    assert t.column("smoker").to_pylist() == [True, False, None]
    assert t.column("big").to_pylist() == [5_000_000_000, None, 7]
    assert read_arrow(cat.resolve("pg/db/women"), ["sex", "id"]).to_pydict() == {
        "sex": ["female", None],
        "id": [1, 3],
    }
    cols = dict(cat.columns("pg/db/patients"))
    assert cols["id"] == pa.int32() and cols["BMI"] == pa.float64() and cols["big"] == pa.int64()
    assert cols["enrolled"] == pa.date32() and cols["smoker"] == pa.bool_()
    assert [n for n, _ in cat.columns("pg/db/women")] == ["id", "BMI", "sex"]
    with pytest.raises(BadRequest, match="'bmi'"):
        read_arrow(cat.resolve("pg/db/patients"), ["bmi"])  # case matters


@pytest.mark.parametrize("variable", INJECTIONS)
def test_postgres_injection_is_refused(tmp_path, pg_schema, variable):
    cat = TableCatalogue(
        tmp_path,
        [{"table": "pg/db/patients", "url": PG_URL, "sql_table": "Patients", "schema": pg_schema}],
    )
    with pytest.raises(BadRequest, match="has no variable"):
        read_arrow(cat.resolve("pg/db/patients"), [variable])
    assert read_arrow(cat.resolve("pg/db/patients"), ["id"]).num_rows == 3
