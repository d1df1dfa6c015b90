"""Bulk loading: stream rows into a table the fastest way each database takes them.

>>> rows = ((i, f"name-{i}", i * 0.5) for i in range(1_000_000))   # any iterable
>>> bulk.copy_rows(pool, "items", ["id", "name", "score"], rows)
1000000
>>> bulk.copy_records(pool, "items", [{"id": 1, "name": "a", "score": 2.0}],
...                   on_conflict=("id",))                            # upsert
1

- **PostgreSQL**: ``COPY ... FROM STDIN`` in binary format, the column types
  read from the catalog and the rows encoded by a compiled encoder
  (``fastpool._bulkenc``) that writes what psycopg's binary dumpers would;
  values of types it has no fast path for go through psycopg's dumper for
  the column's type. Tables with a column psycopg cannot dump in binary (or
  ``pg_format="text"``, which the CLI uses for CSV strings) take text COPY,
  where the server parses each value.
- **MySQL / MariaDB**: multi-row ``INSERT`` statements, each under the
  server's ``max_allowed_packet`` (read from the server, or ``max_packet=``);
  the values become the literals mysqlclient's own ``executemany`` would send.
- **SQLite**: ``executemany`` in chunks.

Every load is one transaction: all rows or none. A row of the wrong width, a
record with a missing or extra key, or a value its column cannot take raises
``RowError`` (a ValueError) naming the row's index; a table or column that
does not exist raises the driver's own error. Either way nothing is loaded and
the connection goes back to the pool healthy. Rows are read from the iterable
chunk by chunk, so memory stays bounded however many there are.

With ``on_conflict=("id",)`` rows whose key exists update the other columns
(the last of several rows with one key wins): PostgreSQL copies into a
temporary staging table, then ``INSERT ... SELECT ... ON CONFLICT (id) DO
UPDATE``; MySQL uses ``ON DUPLICATE KEY UPDATE`` (on whichever unique key
conflicts); SQLite ``ON CONFLICT (id) DO UPDATE``.

Values are sent as the drivers send them: a naive datetime into a PostgreSQL
``timestamptz`` column is refused as psycopg refuses it (give it a tzinfo, or
use ``pg_format="text"``); MySQL gets an aware datetime's wall-clock time, and
a pool's custom mysqlclient ``conv`` encoders are not consulted for int,
float, str, bool, None, date and datetime values.
"""

from __future__ import annotations

import itertools
import operator
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from fastpool.errors import FastpoolError

if TYPE_CHECKING:
    from fastpool.pool import PoolPolicy

__all__ = ["DEFAULT_CHUNK_ROWS", "RowError", "copy_records", "copy_rows", "encoder_impl"]

#: Rows per chunk: one progress call, one MySQL statement at most, one
#: SQLite ``executemany``.
DEFAULT_CHUNK_ROWS = 10_000
#: Bytes of COPY data per write (psycopg hands libpq at most 128 KiB at once).
PG_CHUNK_BYTES = 128 * 1024
#: Upper bound of one MySQL INSERT statement, below ``max_allowed_packet``:
#: beyond ~1 MiB larger statements load no faster and cost memory.
MYSQL_MAX_STATEMENT = 1024 * 1024
_MYSQL_SLACK = 64  # the protocol's own header bytes, and a margin

Table = str | tuple[str, str]
Progress = Callable[[int], object]


class RowError(FastpoolError, ValueError):
    """A row or record that cannot be loaded: the wrong number of values, a
    missing or unexpected key, a value its column cannot take.

    ``index`` is its 0-based position in the input, ``column`` the column's
    name (None when the row as a whole is wrong). The load was rolled back.
    """

    def __init__(self, message: str, index: int, column: str | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.column = column


def encoder_impl() -> str:
    """``"compiled"`` or ``"python"``: which encoder loads run with."""
    return str(_encoders().__impl__)


def _encoders() -> ModuleType:
    """The compiled encoder, else its pure-Python twin (as FASTPOOL_IMPL says)."""
    impl = os.environ.get("FASTPOOL_IMPL", "").strip().lower()
    if impl not in ("python", "py"):
        try:
            from fastpool import _bulkenc

            return _bulkenc
        except ImportError as exc:
            if impl in ("c", "compiled", "cython"):
                raise ImportError("FASTPOOL_IMPL asks for compiled code, but "
                                  f"fastpool._bulkenc cannot be imported: {exc}") from exc
    from fastpool import _bulkenc_py

    return _bulkenc_py


# ---- validation -------------------------------------------------------------

def _name(what: str, name: object) -> str:
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"{what} must be a non-empty string without NUL, got {name!r}")
    return name


def _table(table: object) -> tuple[str, ...]:
    """``"t"`` or ``("schema", "t")`` as a tuple of names (each one identifier)."""
    if isinstance(table, tuple) and len(table) == 2:
        return (_name("table schema", table[0]), _name("table name", table[1]))
    if isinstance(table, str):
        return (_name("table", table),)
    raise ValueError(f"table must be a name or a (schema, name) tuple, got {table!r}")


def _columns(columns: object) -> list[str]:
    if isinstance(columns, (str, bytes)) or not isinstance(columns, Iterable):
        raise ValueError(f"columns must be a list of column names, got {columns!r}")
    names = [_name("a column name", c) for c in columns]
    if not names:
        raise ValueError("columns must name at least one column")
    dups = sorted({c for c in names if names.count(c) > 1})
    if dups:
        raise ValueError(f"columns are named more than once: {', '.join(dups)}")
    return names


def _conflict_keys(on_conflict: object, columns: list[str]) -> list[str]:
    if on_conflict is None:
        return []
    if isinstance(on_conflict, str):
        on_conflict = (on_conflict,)
    keys = _columns(on_conflict)
    missing = [k for k in keys if k not in columns]
    if missing:
        raise ValueError(f"on_conflict names {', '.join(map(repr, missing))}, which "
                         f"columns ({', '.join(columns)}) does not load")
    return keys


def _check_options(pg_format: object, progress: object, chunk_rows: object,
                   max_packet: object) -> None:
    if pg_format not in ("auto", "binary", "text"):
        raise ValueError(f"pg_format must be 'auto', 'binary' or 'text', got {pg_format!r}")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be callable or None, got {progress!r}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be an integer >= 1, got {chunk_rows!r}")
    if max_packet is not None and (isinstance(max_packet, bool)
                                   or not isinstance(max_packet, int) or max_packet < 1024):
        raise ValueError(f"max_packet must be None or an integer >= 1024, got {max_packet!r}")


class _ErrorFactory:
    """What the encoders call to build the error for a bad row (``col`` -1:
    the row as a whole); ``types`` names the columns' types where known."""

    def __init__(self, label: str, columns: list[str]) -> None:
        self.label = label
        self.columns = columns
        self.types: dict[str, str] = {}

    def __call__(self, index: int, col: int, problem: str,
                 cause: BaseException | None = None) -> RowError:
        if col < 0:
            return RowError(f"{self.label}[{index}] {problem} ({', '.join(self.columns)}); "
                            "nothing was loaded", index)
        name = self.columns[col]
        typ = f" ({self.types[name]})" if name in self.types else ""
        return RowError(f"{self.label}[{index}], column {name!r}{typ}: {problem}; "
                        "nothing was loaded", index, name)


# ---- public API ---------------------------------------------------------------

def copy_rows(pool: PoolPolicy, table: Table, columns: Sequence[str], rows: Iterable[Any], *,
              on_conflict: Sequence[str] | None = None, pg_format: str = "auto",
              progress: Progress | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
              max_packet: int | None = None) -> int:
    """Load ``rows`` (any iterable of tuples or lists, e.g. a generator) into
    ``table``'s ``columns`` in one transaction; returns the number of rows.

    ``table`` is a name, or a ``(schema, name)`` tuple; names are quoted as
    identifiers (never split on dots). ``on_conflict``: key columns for an
    upsert (see the module docstring). ``progress(rows_done)`` is called
    after each chunk of at most ``chunk_rows`` rows. ``pg_format``:
    PostgreSQL's COPY format, ``"auto"`` (binary unless a column's type has
    no binary dumper), ``"binary"`` or ``"text"`` (for rows of strings to be
    parsed by the server, like CSV fields). ``max_packet``: MySQL statement
    size limit instead of the server's ``max_allowed_packet``.

    Raises RowError for a bad row (nothing is loaded) and the driver's error
    for a table or column that does not exist.
    """
    names = _table(table)
    cols = _columns(columns)
    keys = _conflict_keys(on_conflict, cols)
    _check_options(pg_format, progress, chunk_rows, max_packet)
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Iterable):
        raise ValueError(f"rows must be an iterable of rows (tuples or lists), got "
                         f"{type(rows).__name__}")
    return _load(pool, names, cols, iter(rows), keys, pg_format, progress, chunk_rows,
                 max_packet, "rows")


def copy_records(pool: PoolPolicy, table: Table, records: Iterable[Mapping[str, Any]],
                 columns: Sequence[str] | None = None, *,
                 on_conflict: Sequence[str] | None = None, pg_format: str = "auto",
                 progress: Progress | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 max_packet: int | None = None) -> int:
    """Load ``records`` (dicts, or any mappings) like ``copy_rows``.

    ``columns`` defaults to the first record's keys. Every record must have
    exactly those keys: a missing or an extra one raises RowError naming the
    record's index, and nothing is loaded. With no records and no
    ``columns``, nothing is done and 0 is returned.
    """
    names = _table(table)
    _check_options(pg_format, progress, chunk_rows, max_packet)
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Iterable):
        raise ValueError(f"records must be an iterable of dicts, got {type(records).__name__}")
    it: Iterator[Any] = iter(records)
    if columns is None:
        first = next(it, _END)
        if first is _END:
            return 0
        if not isinstance(first, Mapping):
            raise RowError(f"records[0] is a {type(first).__name__}, not a dict", 0)
        columns = list(first)
        it = itertools.chain([first], it)
    cols = _columns(columns)
    keys = _conflict_keys(on_conflict, cols)
    return _load(pool, names, cols, _records_to_rows(it, cols), keys, pg_format, progress,
                 chunk_rows, max_packet, "records")


_END: Any = object()


def _records_to_rows(records: Iterator[Any], columns: list[str]) -> Iterator[tuple[Any, ...]]:
    get = operator.itemgetter(*columns)
    n = len(columns)
    for i, record in enumerate(records):
        try:
            values = get(record)
        except (KeyError, TypeError, IndexError):
            raise _record_error(i, record, columns) from None
        if len(record) != n:
            raise _record_error(i, record, columns)
        yield (values,) if n == 1 else values


def _record_error(i: int, record: Any, columns: list[str]) -> RowError:
    if not isinstance(record, Mapping):
        return RowError(f"records[{i}] is a {type(record).__name__}, not a dict; "
                        "nothing was loaded", i)
    missing = [c for c in columns if c not in record]
    extra = [k for k in record if k not in columns]
    problems = []
    if missing:
        problems.append(f"lacks {', '.join(map(repr, missing))}")
    if extra:
        problems.append(f"has unexpected key(s) {', '.join(map(repr, extra))}")
    return RowError(f"records[{i}] {' and '.join(problems)} (columns: {', '.join(columns)}); "
                    "nothing was loaded", i)


def _load(pool: PoolPolicy, table: tuple[str, ...], columns: list[str], rows: Iterator[Any],
          keys: list[str], pg_format: str, progress: Progress | None, chunk_rows: int,
          max_packet: int | None, label: str) -> int:
    error = _ErrorFactory(label, columns)
    with pool.connection() as conn:
        module = type(conn).__module__.split(".")[0]
        if module == "psycopg":
            return _copy_postgres(conn, table, columns, rows, keys, pg_format, progress,
                                  chunk_rows, error)
        if module == "MySQLdb":
            return _copy_mysql(conn, table, columns, rows, keys, progress, chunk_rows,
                               max_packet, error)
        if isinstance(conn, sqlite3.Connection):
            return _copy_sqlite(conn, table, columns, rows, keys, progress, chunk_rows, error)
        raise TypeError(f"bulk loads need a psycopg 3, mysqlclient or sqlite3 connection; "
                        f"this pool's connections are {type(conn).__module__}."
                        f"{type(conn).__qualname__}")


class _Reporter:
    """Calls ``progress(rows_done)`` when the count moved since the last call."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.reported = 0

    def __call__(self, done: int) -> None:
        if self.progress is not None and done > self.reported:
            self.reported = done
            self.progress(done)


# ---- PostgreSQL -----------------------------------------------------------------

_stage_ids = itertools.count(1)

# Built-in type oids (stable) -> encoder kinds; bpchar and varchar take text's
# binary format.
_PG_KINDS = {21: "INT2", 23: "INT4", 20: "INT8", 700: "FLOAT4", 701: "FLOAT8", 25: "TEXT",
             1043: "TEXT", 1042: "TEXT", 17: "BYTEA", 16: "BOOL", 1184: "TIMESTAMPTZ",
             1114: "TIMESTAMP", 1082: "DATE"}

# Domains count as their base type: binary COPY takes the base type's format.
_PG_COLUMNS_SQL = """
SELECT a.attname, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END::int8,
       format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"""


def _pg_plan(conn: Any, columns: list[str], oids: list[int | None], pg_format: str,
             ) -> tuple[bool, list[int], list[Any]]:
    """(binary?, encoder kinds, per-column fallbacks) for a COPY of ``columns``."""
    from psycopg import ProgrammingError, pq
    from psycopg.adapt import PyFormat, Transformer

    enc = _encoders()
    utf8 = conn.info.encoding == "utf-8"
    if pg_format != "text":
        kinds: list[int] = []
        fallbacks: list[Any] = []
        for name, oid in zip(columns, oids, strict=True):
            kind = getattr(enc, _PG_KINDS.get(oid or 0, "GENERIC"))
            if kind == enc.TEXT and not utf8:
                kind = enc.GENERIC  # psycopg encodes to the connection's encoding
            fallback = None
            if oid is not None:
                tx = Transformer(conn)
                try:
                    tx.set_dumper_types([oid], pq.Format.BINARY)
                    fallback = _binary_dumper(tx, PyFormat.BINARY)
                except ProgrammingError:  # psycopg has no binary dumper for this type
                    if kind == enc.GENERIC:
                        if pg_format == "binary":
                            raise ValueError(
                                f"column {name!r}: psycopg cannot dump its type (oid {oid}) "
                                "in binary; use pg_format='text' or 'auto'") from None
                        return _pg_plan(conn, columns, oids, "text")
            kinds.append(kind)
            fallbacks.append(fallback)
        return True, kinds, fallbacks
    # Text: str values as they are, anything else as psycopg's text dumper
    # for its Python type writes it; the server parses them.
    tx = Transformer(conn)

    def dump_text(value: Any) -> Any:
        return tx.get_dumper(value, PyFormat.TEXT).dump(value)

    kind = enc.TEXT if utf8 else enc.GENERIC
    return False, [kind] * len(columns), [dump_text] * len(columns)


def _binary_dumper(tx: Any, fmt: Any) -> Callable[[Any], Any]:
    formats = (fmt,)

    def dump(value: Any) -> Any:
        return tx.dump_sequence((value,), formats)[0]

    return dump


def _copy_postgres(conn: Any, table: tuple[str, ...], columns: list[str], rows: Iterator[Any],
                   keys: list[str], pg_format: str, progress: Progress | None,
                   chunk_rows: int, error: _ErrorFactory) -> int:
    from psycopg import sql
    from psycopg.rows import tuple_row

    target = sql.Identifier(*table)
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    report = _Reporter(progress)
    # A transaction block whatever the connection's autocommit setting; plain
    # tuples whatever row factory the pool's connections have.
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        # No rows for a table that does not exist: then COPY (or CREATE TABLE
        # AS) fails with the server's own error, before any row is read.
        found = {}
        for name, oid, type_name in cur.execute(_PG_COLUMNS_SQL, [target.as_string(conn)]):
            found[name] = oid
            error.types[name] = type_name
        binary, kinds, fallbacks = _pg_plan(conn, columns, [found.get(c) for c in columns],
                                            pg_format)
        dest = target
        if keys:
            dest = sql.Identifier(f"_fastpool_stage_{next(_stage_ids)}")
            cur.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS "
                                "SELECT {} FROM {} WITH NO DATA").format(dest, names, target))
        encoder = _encoders().Encoder(kinds, fallbacks, binary=binary, error=error)
        statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
            dest, names, sql.SQL(" (FORMAT BINARY)" if binary else ""))
        with cur.copy(statement) as copy:
            while not encoder.done:
                data = encoder.encode(rows, PG_CHUNK_BYTES, chunk_rows)
                if data:
                    copy.write(data)
                report(encoder.rows)
        if keys:
            cur.execute(_pg_upsert(target, dest, columns, keys))
            cur.execute(sql.SQL("DROP TABLE {}").format(dest))
    return int(encoder.rows)


def _pg_upsert(target: Any, stage: Any, columns: list[str], keys: list[str]) -> Any:
    """INSERT the staged rows, the last one of each key, updating existing rows."""
    from psycopg import sql

    def idents(names: list[str]) -> Any:
        return sql.SQL(", ").join(map(sql.Identifier, names))

    others = [c for c in columns if c not in keys]
    action = sql.SQL("UPDATE SET ") + sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others) \
        if others else sql.SQL("NOTHING")
    # A temp table filled by one COPY keeps insertion order in ctid. Rows
    # with a NULL in the key never conflict (NULLs are distinct for a unique
    # index), so they all go in, as on MySQL and SQLite; DISTINCT ON would
    # keep only one of them.
    any_null = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(k))
                                    for k in keys)
    return sql.SQL("INSERT INTO {target} ({cols}) "
                   "(SELECT DISTINCT ON ({keys}) {cols} FROM {stage} WHERE NOT ({any_null}) "
                   "ORDER BY {keys}, ctid DESC) "
                   "UNION ALL (SELECT {cols} FROM {stage} WHERE {any_null}) "
                   "ON CONFLICT ({keys}) DO {action}").format(
        target=target, cols=idents(columns), keys=idents(keys), stage=stage, action=action,
        any_null=any_null)


# ---- MySQL / MariaDB ------------------------------------------------------------

def _backquote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _copy_mysql(conn: Any, table: tuple[str, ...], columns: list[str], rows: Iterator[Any],
                keys: list[str], progress: Progress | None, chunk_rows: int,
                max_packet: int | None, error: _ErrorFactory) -> int:
    target = ".".join(map(_backquote, table))
    names = ", ".join(map(_backquote, columns))
    charset = conn.encoding
    report = _Reporter(progress)
    from MySQLdb.cursors import Cursor

    cur = conn.cursor(Cursor)  # plain tuples, whatever cursorclass the pool was given
    try:
        # The driver's own error for a table or column that does not exist,
        # before any row is read.
        cur.execute(f"SELECT {names} FROM {target} WHERE 1 = 0".encode(charset))
        cur.fetchall()
        if max_packet is None:
            cur.execute(b"SELECT @@max_allowed_packet")
            max_packet = int(cur.fetchone()[0])
        head = f"INSERT INTO {target} ({names}) VALUES ".encode(charset)
        tail = b""
        if keys:
            others = [c for c in columns if c not in keys] or keys[:1]  # k = VALUES(k): no-op
            tail = (" ON DUPLICATE KEY UPDATE " + ", ".join(
                f"{_backquote(c)} = VALUES({_backquote(c)})" for c in others)).encode(charset)
        budget = min(max_packet, MYSQL_MAX_STATEMENT) - len(head) - len(tail) - _MYSQL_SLACK
        if budget < 1:
            raise ValueError(f"max_packet {max_packet} is too small for the INSERT statement's "
                             f"own {len(head) + len(tail)} bytes")
        if conn.get_autocommit():
            cur.execute(b"START TRANSACTION")
        encoder = _encoders().ValuesEncoder(len(columns), conn.string_literal, conn.literal,
                                            charset, error=error)
        while not encoder.done:
            body = encoder.encode(rows, budget, chunk_rows)
            if body:
                statement = head + body + tail
                if len(statement) + _MYSQL_SLACK > max_packet:  # a single row, too long
                    raise error(encoder.rows - 1, -1, f"needs an INSERT of {len(statement)} "
                                f"bytes, over max_allowed_packet ({max_packet})", None)
                cur.execute(statement)
            report(encoder.rows)
        # Explicitly: a pool without a transaction-status reader cannot tell
        # that this connection has something to commit.
        conn.commit()
    finally:
        cur.close()
    return int(encoder.rows)


# ---- SQLite -----------------------------------------------------------------

def _doublequote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _copy_sqlite(conn: sqlite3.Connection, table: tuple[str, ...], columns: list[str],
                 rows: Iterator[Any], keys: list[str], progress: Progress | None,
                 chunk_rows: int, error: _ErrorFactory) -> int:
    target = ".".join(map(_doublequote, table))
    names = ", ".join(map(_doublequote, columns))
    # The driver's own error for a table or column that does not exist
    # (SQLite would read an unknown "name" in a SELECT as a string literal;
    # an INSERT's column list it checks).
    conn.execute(f"SELECT * FROM {target} LIMIT 0").fetchall()
    if not conn.in_transaction:
        conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {target} ({names}) SELECT {names} FROM {target} WHERE 0")
    statement = f"INSERT INTO {target} ({names}) VALUES ({', '.join('?' * len(columns))})"
    if keys:
        others = [c for c in columns if c not in keys]
        action = ("UPDATE SET " + ", ".join(f"{_doublequote(c)} = excluded.{_doublequote(c)}"
                                            for c in others)) if others else "NOTHING"
        statement += f" ON CONFLICT ({', '.join(map(_doublequote, keys))}) DO {action}"
    if not conn.in_transaction:
        conn.execute("BEGIN")
    n = len(columns)
    done = 0
    report = _Reporter(progress)
    while True:
        chunk = list(itertools.islice(rows, chunk_rows))
        if not chunk:
            break
        for i, row in enumerate(chunk):
            if (type(row) is not tuple and type(row) is not list) or len(row) != n:
                chunk[i] = _sqlite_row(row, done + i, n, error)
        conn.executemany(statement, chunk)
        done += len(chunk)
        report(done)
    conn.commit()
    return done


def _sqlite_row(row: Any, index: int, n: int, error: _ErrorFactory) -> Any:
    """A row that is not a tuple or list of the right width: converted, or refused."""
    if isinstance(row, (str, bytes, bytearray, Mapping)) or not hasattr(row, "__len__"):
        raise error(index, -1, f"is a {type(row).__name__}, not a tuple or list of values",
                    None)
    if len(row) != n:
        raise error(index, -1, f"has {len(row)} values, expected {n}", None)
    return tuple(row)
