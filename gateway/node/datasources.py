"""Which tables a node serves, and reading them as Arrow tables.

Tables are named ``project/folder/table`` like Armadillo's. They come from two places:

* files in the data directory, laid out like Armadillo's storage:
  ``<data_dir>/<project>/<folder>/<table>.parquet`` or ``<table>.csv``;
* SQL queries or tables listed in the node configuration (``sql_tables``).

A name is checked against Armadillo's regular expressions before any file-system
access, and a file's real path (symbolic links resolved) must stay inside the data
directory, so no name can read outside it. A name that has more than one source (both
``t.parquet`` and ``t.csv``, or a file and a configured SQL table) is refused as
ambiguous rather than one of them silently winning.

``read_arrow`` runs in the session's worker process. See docs/data.md for the data
steward's view (formats, types, missing values).
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from gateway.node.errors import BadRequest, GatewayError, NotFound

__all__ = [
    "FOLDER_RE",
    "PROJECT_RE",
    "TABLE_RE",
    "ColumnStream",
    "TableCatalogue",
    "TableRef",
    "TableSource",
    "opal_value_type",
    "read_arrow",
    "read_columns",
]

log = logging.getLogger(__name__)

# Armadillo's rules (MolgenisArmadillo: project names, and the table regex
# ^([a-z0-9-]{0,55}[a-z0-9])/([\w-:]+)/([\w-:]+)$ with Java's ASCII \w). Always used
# with fullmatch: "$" would also match before a trailing newline.
PROJECT_RE = re.compile(r"[a-z0-9-]{0,55}[a-z0-9]", re.ASCII)
FOLDER_RE = re.compile(r"[\w\-:]+", re.ASCII)
TABLE_RE = FOLDER_RE

#: File extension -> TableSource.kind, in the order they are looked for.
FILE_KINDS = {".parquet": "parquet", ".csv": "csv"}

# CSV reading, as close to R's read.csv as Arrow allows: "NA" and empty fields are
# missing in numeric, logical and date columns; in text columns only "NA" is missing
# (quoted or not) and an empty field is the empty string. Logical words as R's.
_CSV_NULLS = ["NA", ""]
_CSV_TRUE = ["TRUE", "True", "true", "T"]
_CSV_FALSE = ["FALSE", "False", "false", "F"]
_CSV_SCHEMA_BLOCK = 1 << 20  # columns(): types inferred from the first MiB

_READ_AHEAD = 1  # read_columns: decoded Parquet columns waiting beyond the one in use
_SAMPLE_ROWS = 1000  # columns() of a SQL query: types inferred from this many rows
_MAX_NAME_IN_MESSAGE = 200


@dataclass(frozen=True)
class TableRef:
    project: str
    folder: str
    table: str

    def __str__(self) -> str:
        return f"{self.project}/{self.folder}/{self.table}"

    @classmethod
    def parse(cls, name: str) -> TableRef:
        """``"p/f/t"`` -> TableRef; ``BadRequest`` unless it matches Armadillo's regex."""
        if not isinstance(name, str):
            raise BadRequest("A table name must be text of the form project/folder/table")
        parts = name.split("/")
        if (
            len(parts) != 3
            or not PROJECT_RE.fullmatch(parts[0])
            or not FOLDER_RE.fullmatch(parts[1])
            or not TABLE_RE.fullmatch(parts[2])
        ):
            raise BadRequest(
                f"Invalid table name '{_shorten(name)}': expected project/folder/table, the "
                "project of lowercase letters, digits and '-', folder and table of "
                "letters, digits, '_', '-' and ':'"
            )
        return cls(*parts)


@dataclass(frozen=True)
class TableSource:
    """Where a table's data is: picklable, so the web process can hand it to a worker.

    ``kind`` is ``parquet`` or ``csv`` (``location`` is the file's real path) or ``sql``
    (``location`` is the SQLAlchemy URL and ``query`` the SELECT that yields the table).
    """

    ref: TableRef
    kind: str
    location: str
    query: str | None = None

    def __repr__(self) -> str:
        # A database URL may hold a password: never let it reach a log.
        location = _hide_password(self.location) if self.kind == "sql" else self.location
        return (
            f"TableSource(ref={self.ref!r}, kind={self.kind!r}, location={location!r}, "
            f"query={self.query!r})"
        )


@dataclass(frozen=True)
class _SqlTable:
    source: TableSource
    sql_table: str | None
    schema: str | None


class TableCatalogue:
    """The tables of one node: files under ``data_dir`` and configured SQL tables.

    ``sql_tables`` entries: ``{"table": "p/f/t", "url": <SQLAlchemy URL>, "query":
    "SELECT ..."}`` or ``{"table": ..., "url": ..., "sql_table": "name"}`` (optionally
    with ``"schema"``). Instead of ``url``, ``url_env`` names an environment variable
    holding the URL, so a password need not be written in the configuration file. A bad
    entry raises ``ValueError`` here, at start-up.
    """

    def __init__(self, data_dir: Path | str, sql_tables: Sequence[Mapping[str, Any]] = ()):
        self.data_dir = Path(data_dir)
        self._root = os.path.realpath(self.data_dir)
        self._sql: dict[TableRef, _SqlTable] = {}
        for i, entry in enumerate(sql_tables or ()):
            table = _sql_entry(i, entry)
            if table.source.ref in self._sql:
                raise ValueError(f"sql_tables: table {table.source.ref} is listed twice")
            self._sql[table.source.ref] = table

    # ------------------------------------------------------------------ listing

    def list(self) -> list[TableRef]:
        """Every table, sorted by name. Names with two sources are listed (once) and
        logged; loading them is refused until the data steward removes one."""
        found: dict[TableRef, int] = {}
        for ref in self._file_refs():
            found[ref] = found.get(ref, 0) + 1
        for ref in self._sql:
            found[ref] = found.get(ref, 0) + 1
        for ref, count in found.items():
            if count > 1:
                log.warning("table %s has %d sources and cannot be loaded", ref, count)
        return sorted(found, key=str)

    def _file_refs(self) -> Iterable[TableRef]:
        for project in _subdirs(self._root):
            if not PROJECT_RE.fullmatch(project):
                continue
            project_dir = os.path.join(self._root, project)
            if not self._inside(project_dir):
                continue
            for folder in _subdirs(project_dir):
                if not FOLDER_RE.fullmatch(folder):
                    continue
                folder_dir = os.path.join(project_dir, folder)
                if not self._inside(folder_dir):
                    continue
                try:
                    entries = list(os.scandir(folder_dir))
                except OSError:
                    continue
                for entry in entries:
                    stem, ext = os.path.splitext(entry.name)
                    if ext not in FILE_KINDS or not TABLE_RE.fullmatch(stem):
                        continue
                    if self._inside(entry.path) and os.path.isfile(entry.path):
                        yield TableRef(project, folder, stem)

    # ------------------------------------------------------------------ resolving

    def resolve(self, name: str | TableRef) -> TableSource:
        """``"p/f/t"`` -> its TableSource. ``BadRequest`` for a malformed or ambiguous
        name, ``NotFound`` if no such table exists."""
        ref = name if isinstance(name, TableRef) else TableRef.parse(name)
        if isinstance(name, TableRef):
            TableRef.parse(str(ref))  # a hand-made TableRef is checked all the same
        sources = self._file_sources(ref)
        if ref in self._sql:
            sources.append(self._sql[ref].source)
        if not sources:
            raise NotFound(f"Table '{ref}' not found")
        if len(sources) > 1:
            raise BadRequest(
                f"Table '{ref}' is ambiguous: it exists as "
                + " and ".join(_describe(s) for s in sources)
                + "; the data steward must remove all but one"
            )
        return sources[0]

    def exists(self, name: str | TableRef) -> bool:
        """True if ``name`` is a valid, unambiguous table name that exists."""
        try:
            self.resolve(name)
        except (BadRequest, NotFound):
            return False
        return True

    def _file_sources(self, ref: TableRef) -> list[TableSource]:
        # ref's parts matched the regexes: no separators, no dots, so the joined path
        # cannot leave data_dir lexically; realpath + _inside catches symbolic links.
        sources = []
        for ext, kind in FILE_KINDS.items():
            path = os.path.join(self._root, ref.project, ref.folder, ref.table + ext)
            real = os.path.realpath(path)
            if not self._inside(real):
                if os.path.lexists(path):
                    log.warning("table %s: %s points outside the data directory", ref, path)
                continue
            if os.path.isfile(real):
                sources.append(TableSource(ref, kind, real))
        return sources

    def _inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return os.path.commonpath([self._root, real]) == self._root and real != self._root

    # ------------------------------------------------------------------ columns

    def columns(self, name: str | TableRef) -> list[tuple[str, pa.DataType]]:
        """The table's variables and their Arrow types, cheaply: the Parquet schema, a
        CSV's header and first MiB, a SQL table's reflected columns (or, for a query,
        types inferred from its first rows). ``opal_value_type`` names them for Opal."""
        source = self.resolve(name)
        with _reading(source):
            return self._columns(source)

    def _columns(self, source: TableSource) -> list[tuple[str, pa.DataType]]:
        if source.kind == "parquet":
            schema = pq.read_schema(source.location)
            return [(f.name, f.type) for f in schema if not _pandas_index(f.name)]
        if source.kind == "csv":
            reader = pacsv.open_csv(
                source.location,
                read_options=pacsv.ReadOptions(block_size=_CSV_SCHEMA_BLOCK),
                convert_options=_csv_convert_options(None),
            )
            try:
                return [(f.name, f.type) for f in reader.schema]
            finally:
                reader.close()
        sql = self._sql[source.ref]
        if sql.sql_table is not None:
            return _sql_reflect(source, sql.sql_table, sql.schema)
        sample = _read_sql(source, None, limit=_SAMPLE_ROWS)
        return [(f.name, f.type) for f in sample.schema]


# --------------------------------------------------------------------------- reading


def read_arrow(source: TableSource, variables: Sequence[str] | None = None) -> pa.Table:
    """The table's data with only ``variables`` (all if None or empty), in that order.

    Unknown variables raise ``BadRequest`` naming them; a variable listed twice is read
    once. Numbers keep their types; text stays text (Parquet text columns are read
    dictionary-encoded, which is faster and which r_convert turns into factors).
    """
    wanted = _dedupe(variables)
    readers = {"parquet": _read_parquet, "csv": _read_csv, "sql": _read_sql}
    if source.kind not in readers:
        raise ValueError(f"unknown table source kind {source.kind!r}")
    with _reading(source):
        return readers[source.kind](source, wanted)


@dataclass(frozen=True)
class ColumnStream:
    """A table's columns handed out one at a time (see `read_columns`)."""

    names: list[str]
    num_rows: int
    columns: Iterator[pa.ChunkedArray]


def read_columns(source: TableSource, variables: Sequence[str] | None = None) -> ColumnStream:
    """Like `read_arrow`, but Parquet columns are decoded one at a time as the stream is
    consumed. A load into R then holds a few Arrow columns at a time instead of the whole
    table, so a fresh session process touches (and page-faults) about half the memory.

    One background thread decodes the next column while the consumer converts the
    current one (Arrow decodes without holding the GIL), so decoding and conversion
    overlap on two cores; at most `_READ_AHEAD` decoded columns wait their turn.
    """
    wanted = _dedupe(variables)
    if source.kind != "parquet":
        table = read_arrow(source, wanted)
        return ColumnStream(list(table.column_names), table.num_rows, iter(table.columns))
    with _reading(source):
        schema = pq.read_schema(source.location)
        names = [n for n in schema.names if not _pandas_index(n)]
        _check_unique(source, names)
        columns = _select(source, names, wanted)
        text = [n for n in columns if _is_text(schema.field(n).type)]
        parquet = pq.ParquetFile(source.location, read_dictionary=text or None)
        num_rows = parquet.metadata.num_rows

    def read_one(name: str) -> pa.ChunkedArray:
        with _reading(source):
            return parquet.read(columns=[name]).column(0)

    def decode() -> Iterator[pa.ChunkedArray]:
        # The thread is started only here, in the session's worker during a load, never
        # in the zygote (a fork must not inherit threads).
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-decode")
        try:
            pending = deque(pool.submit(read_one, n) for n in columns[: _READ_AHEAD + 1])
            queued = len(pending)
            while pending:
                column = pending.popleft().result()
                if queued < len(columns):
                    pending.append(pool.submit(read_one, columns[queued]))
                    queued += 1
                yield column
                del column
        finally:
            # A consumer that stops early (a column R cannot hold) leaves nothing running.
            pool.shutdown(wait=True, cancel_futures=True)

    return ColumnStream(columns, num_rows, decode())


@contextmanager
def _reading(source: TableSource) -> Iterator[None]:
    """A failure to read a table's data (a corrupt file, a database error) becomes a
    GatewayError (500) whose message names the table but not the file path, SQL or
    database address, which stay in the node's log."""
    try:
        yield
    except GatewayError:
        raise
    except Exception as e:
        log.exception("reading table %s (%r) failed", source.ref, source)
        raise GatewayError(
            f"Table '{source.ref}' could not be read ({type(e).__name__}); "
            "the node's log has the details"
        ) from None


def _read_parquet(source: TableSource, wanted: list[str] | None) -> pa.Table:
    schema = pq.read_schema(source.location)  # the footer only
    names = [n for n in schema.names if not _pandas_index(n)]
    _check_unique(source, names)
    columns = _select(source, names, wanted)
    text = [n for n in columns if _is_text(schema.field(n).type)]
    table = pq.read_table(source.location, columns=columns, read_dictionary=text or None)
    return table.select(columns)


def _read_csv(source: TableSource, wanted: list[str] | None) -> pa.Table:
    header = _csv_header(source.location)
    _check_unique(source, header)
    columns = _select(source, header, wanted)
    table = pacsv.read_csv(source.location, convert_options=_csv_convert_options(columns))
    return _csv_text_na(source, table.select(columns))


def _csv_convert_options(include: list[str] | None) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        null_values=_CSV_NULLS,
        strings_can_be_null=False,  # "NA" in text columns: _csv_text_na
        true_values=_CSV_TRUE,
        false_values=_CSV_FALSE,
        include_columns=include or [],
    )


def _csv_header(path: str) -> list[str]:
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 16),
        convert_options=_csv_convert_options(None),
    )
    try:
        return list(reader.schema.names)
    finally:
        reader.close()


def _csv_text_na(source: TableSource, table: pa.Table) -> pa.Table:
    for i, field in enumerate(table.schema):
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            raise BadRequest(f"Table '{source.ref}': column '{field.name}' is not valid UTF-8 text")
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            col = table.column(i)
            is_na = pc.equal(col, "NA")
            if pc.any(is_na).as_py():
                col = pc.if_else(is_na, pa.scalar(None, field.type), col)
                table = table.set_column(i, field.name, col)
    return table


# --------------------------------------------------------------------------- SQL


def _sql_entry(i: int, entry: Mapping[str, Any]) -> _SqlTable:
    where = f"sql_tables[{i}]"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a mapping with table, url and query or sql_table")
    unknown = set(entry) - {"table", "url", "url_env", "query", "sql_table", "schema"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        ref = TableRef.parse(entry.get("table"))
    except BadRequest as e:
        raise ValueError(f"{where}: {e.message}") from None
    url, url_env = entry.get("url"), entry.get("url_env")
    if (url is None) == (url_env is None):
        raise ValueError(f"{where} ({ref}): give exactly one of 'url' and 'url_env'")
    if url_env is not None:
        if not isinstance(url_env, str) or not os.environ.get(url_env):
            raise ValueError(
                f"{where} ({ref}): environment variable {url_env!r} (url_env) is not set"
            )
        url = os.environ[url_env]
    if not isinstance(url, str) or not url:
        raise ValueError(f"{where} ({ref}): 'url' must be a SQLAlchemy database URL")
    query, sql_table, schema = entry.get("query"), entry.get("sql_table"), entry.get("schema")
    if (query is None) == (sql_table is None):
        raise ValueError(f"{where} ({ref}): give exactly one of 'query' and 'sql_table'")
    if schema is not None and sql_table is None:
        raise ValueError(f"{where} ({ref}): 'schema' goes with 'sql_table' only")
    for key, value in (("query", query), ("sql_table", sql_table), ("schema", schema)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"{where} ({ref}): '{key}' must be non-empty text")
    try:
        dialect = make_url(url).get_dialect()()
    except Exception as e:
        raise ValueError(f"{where} ({ref}): cannot use database URL: {e}") from None
    if sql_table is not None:
        # The name comes from the configuration; quoted by the database's own rules.
        stmt = sa.select(sa.literal_column("*")).select_from(sa.table(sql_table, schema=schema))
        query = str(stmt.compile(dialect=dialect))
    else:
        query = query.strip().rstrip(";").strip()
    return _SqlTable(TableSource(ref, "sql", url, query), sql_table, schema)


def _read_sql(source: TableSource, wanted: list[str] | None, limit: int | None = None) -> pa.Table:
    """Run the source's query; select ``wanted`` columns (checked against the query's
    real columns, then quoted by SQLAlchemy: no request text is ever put into SQL)."""
    engine = sa.create_engine(source.location, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if wanted is None and limit is None:
                stmt = sa.text(source.query)
            else:
                probe = sa.select(sa.literal_column("*")).select_from(
                    sa.text(source.query).columns().subquery("q")
                )
                names = list(conn.execute(probe.limit(0)).keys())
                _check_unique(source, names)
                columns = _select(source, names, wanted)
                sub = sa.text(source.query).columns(*[sa.column(n) for n in names]).subquery("q")
                stmt = sa.select(*[sub.c[n] for n in columns])
                if limit is not None:
                    stmt = stmt.limit(limit)
            result = conn.execution_options(stream_results=True).execute(stmt)
            names = list(result.keys())
            _check_unique(source, names)
            chunks: list[list[pa.Array]] = [[] for _ in names]
            for part in result.partitions(50_000):
                for i, values in enumerate(zip(*part, strict=True)):
                    chunks[i].append(_py_to_arrow(values))
    finally:
        engine.dispose()
    return pa.table([_combine(c) for c in chunks], names=names)


def _py_to_arrow(values: Sequence[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        # Types Arrow does not know (UUID, JSON, intervals...): as text.
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _combine(arrays: list[pa.Array]) -> pa.ChunkedArray:
    """One column from its per-partition arrays, whose inferred types may differ (a
    partition of only NULLs is null-typed; ints then floats)."""
    types = {a.type for a in arrays if not pa.types.is_null(a.type)}
    if not types:
        return (
            pa.chunked_array(arrays, type=pa.null()) if arrays else pa.chunked_array([], pa.null())
        )
    if len(types) == 1:
        target = types.pop()
    elif all(
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) for t in types
    ):
        target = pa.float64()
    else:
        target = pa.string()
    return pa.chunked_array([a if a.type == target else a.cast(target) for a in arrays], target)


def _sql_reflect(
    source: TableSource, sql_table: str, schema: str | None
) -> list[tuple[str, pa.DataType]]:
    engine = sa.create_engine(source.location, poolclass=sa.pool.NullPool)
    try:
        cols = sa.inspect(engine).get_columns(sql_table, schema=schema)
    finally:
        engine.dispose()
    return [(c["name"], _sql_type_to_arrow(c["type"])) for c in cols]


def _sql_type_to_arrow(t: Any) -> pa.DataType:
    checks = [
        (sa.Boolean, pa.bool_()),
        (sa.BigInteger, pa.int64()),
        (sa.SmallInteger, pa.int16()),
        (sa.Integer, pa.int32()),
        (sa.Float, pa.float64()),
        (sa.Numeric, pa.float64()),
        (sa.DateTime, pa.timestamp("us")),
        (sa.Date, pa.date32()),
        (sa.String, pa.string()),
    ]
    for cls, arrow in checks:
        if isinstance(t, cls):
            return arrow
    return pa.string()


# --------------------------------------------------------------------------- helpers


def opal_value_type(t: pa.DataType) -> str:
    """An Arrow type as Opal names value types (text, integer, decimal, ...)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "datetime"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    return "text"


def _dedupe(variables: Sequence[str] | None) -> list[str] | None:
    if not variables:
        return None
    if isinstance(variables, str):
        raise TypeError("variables must be a list of names, not one string")
    seen: dict[str, None] = {}
    for v in variables:
        if not isinstance(v, str):
            raise BadRequest("Variable names must be text")
        seen.setdefault(v, None)
    return list(seen)


def _select(source: TableSource, names: Sequence[str], wanted: list[str] | None) -> list[str]:
    if wanted is None:
        return list(names)
    known = set(names)
    unknown = [v for v in wanted if v not in known]
    if unknown:
        listed = ", ".join(f"'{_shorten(v)}'" for v in unknown[:20])
        more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        word = "variable" if len(unknown) == 1 else "variables"
        raise BadRequest(f"Table '{source.ref}' has no {word} {listed}{more}")
    return wanted


def _check_unique(source: TableSource, names: Sequence[str]) -> None:
    if len(set(names)) != len(names):
        dups = sorted({n for n in names if names.count(n) > 1})
        raise BadRequest(f"Table '{source.ref}' has duplicate column names: {', '.join(dups)}")


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _pandas_index(name: str) -> bool:
    # pandas writes a non-default index as columns named __index_level_0__ ...
    return re.fullmatch(r"__index_level_\d+__", name) is not None


def _subdirs(path: str) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir())
    except OSError:
        return []


def _hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database URL>"


def _describe(source: TableSource) -> str:
    if source.kind == "sql":
        return "a configured SQL table"
    return f"a {source.kind} file"


def _shorten(text: str) -> str:
    text = str(text)
    return text if len(text) <= _MAX_NAME_IN_MESSAGE else text[:_MAX_NAME_IN_MESSAGE] + "..."
