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

On an asyncio pool the same loads are awaited (``await pool.copy_rows(...)``,
``copy_rows_async`` here), with the same rules, written once: each server's
load is one flow (``fastpool.steps``) whose I/O is the blocking client's or
the asyncio client's: asyncpg's ``copy_to_table`` and psycopg's
``AsyncConnection`` COPY take the same compiled encoder's chunks, asyncmy and
aiomysql the same multi-row INSERTs, aiosqlite the same chunks. The rows may
then also be an async iterable (read a chunk at a time). Cancelling the task
rolls the load back.

Values are sent as the drivers send them: a naive datetime into a PostgreSQL
``timestamptz`` column is refused as psycopg refuses it (give it a tzinfo, or
use ``pg_format="text"``); MySQL gets an aware datetime's wall-clock time, and
a pool's custom mysqlclient ``conv`` encoders are not consulted for int,
float, str, bool, None, date and datetime values.
"""

from __future__ import annotations

import importlib
import itertools
import operator
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastpool.errors import ConfigError, UnsupportedClient
from fastpool.options import callable_or_none, choice, integer
from fastpool.steps import Steps, run, run_async
from fastpool.transaction import Outcome, SourceIO, attempt_steps
from fastpool.writes.bulk.common import (
    DEFAULT_CHUNK_ROWS,
    Feed,
    Job,
    Progress,
    RowError,
    encoder_impl,
)

if TYPE_CHECKING:
    from fastpool.source import ConnectionSource

__all__ = ["DEFAULT_CHUNK_ROWS", "RowError", "copy_records", "copy_records_async", "copy_rows",
           "copy_rows_async", "encoder_impl"]

Table = str | tuple[str, str]


# ---- validation -------------------------------------------------------------

def _name(what: str, name: object) -> str:
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConfigError(f"{what} must be a non-empty string without NUL, got {name!r}")
    return name


def _table(table: object) -> tuple[str, ...]:
    """``"t"`` or ``("schema", "t")`` as a tuple of names (each one identifier)."""
    if isinstance(table, tuple) and len(table) == 2:
        return (_name("table schema", table[0]), _name("table name", table[1]))
    if isinstance(table, str):
        return (_name("table", table),)
    raise ConfigError(f"table must be a name or a (schema, name) tuple, got {table!r}")


def _columns(columns: object) -> list[str]:
    if isinstance(columns, (str, bytes)) or not isinstance(columns, Iterable):
        raise ConfigError(f"columns must be a list of column names, got {columns!r}")
    names = [_name("a column name", c) for c in columns]
    if not names:
        raise ConfigError("columns must name at least one column")
    dups = sorted({c for c in names if names.count(c) > 1})
    if dups:
        raise ConfigError(f"columns are named more than once: {', '.join(dups)}")
    return names


def _conflict_keys(on_conflict: object, columns: list[str]) -> list[str]:
    if on_conflict is None:
        return []
    if isinstance(on_conflict, str):
        on_conflict = (on_conflict,)
    keys = _columns(on_conflict)
    missing = [k for k in keys if k not in columns]
    if missing:
        raise ConfigError(f"on_conflict names {', '.join(map(repr, missing))}, which "
                         f"columns ({', '.join(columns)}) does not load")
    return keys


def _check_options(pg_format: object, progress: object, chunk_rows: object,
                   max_packet: object) -> None:
    choice("pg_format", pg_format, ("auto", "binary", "text"))
    callable_or_none("progress", progress)
    integer("chunk_rows", chunk_rows, 1)
    if max_packet is not None:
        integer("max_packet (None: the server's max_allowed_packet)", max_packet, 1024)


def _iterable(values: object, what: str, allow_async: bool) -> Any:
    """``values``' iterator (sync), or its async iterator (``allow_async``)."""
    if allow_async and isinstance(values, AsyncIterable):
        return values.__aiter__()
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        kinds = "an iterable or async iterable" if allow_async else "an iterable"
        items = "dicts" if what == "records" else "rows (tuples or lists)"
        raise ConfigError(f"{what} must be {kinds} of {items}, got {type(values).__name__}")
    return iter(values)


# ---- public API ---------------------------------------------------------------

def copy_rows(source: ConnectionSource, table: Table, columns: Sequence[str],
              rows: Iterable[Any], *,
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
    job = _rows_job(table, columns, rows, False, on_conflict, pg_format, progress, chunk_rows,
                    max_packet)
    return run(_load_steps(source, job), SourceIO(source, _body(source, job, run)))


async def copy_rows_async(source: ConnectionSource, table: Table, columns: Sequence[str],
                          rows: Iterable[Any] | AsyncIterable[Any], *,
                          on_conflict: Sequence[str] | None = None, pg_format: str = "auto",
                          progress: Progress | None = None,
                          chunk_rows: int = DEFAULT_CHUNK_ROWS,
                          max_packet: int | None = None) -> int:
    """``copy_rows`` on an asyncio pool (``await pool.copy_rows(...)``): the
    same options and rules; ``rows`` may also be an async iterable, read
    ``chunk_rows`` rows at a time."""
    job = _rows_job(table, columns, rows, True, on_conflict, pg_format, progress, chunk_rows,
                    max_packet)
    return await run_async(_load_steps(source, job),
                           SourceIO(source, _body(source, job, run_async)))


def copy_records(source: ConnectionSource, table: Table, records: Iterable[Mapping[str, Any]],
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
    it: Iterator[Any] = _iterable(records, "records", False)
    if columns is None:
        first = next(it, _END)
        if first is _END:
            return 0
        columns = _first_record_keys(first)
        it = itertools.chain([first], it)
    job = _records_job(names, columns, it, on_conflict, pg_format, progress, chunk_rows,
                       max_packet)
    return run(_load_steps(source, job), SourceIO(source, _body(source, job, run)))


async def copy_records_async(source: ConnectionSource, table: Table,
                             records: Iterable[Mapping[str, Any]]
                             | AsyncIterable[Mapping[str, Any]],
                             columns: Sequence[str] | None = None, *,
                             on_conflict: Sequence[str] | None = None, pg_format: str = "auto",
                             progress: Progress | None = None,
                             chunk_rows: int = DEFAULT_CHUNK_ROWS,
                             max_packet: int | None = None) -> int:
    """``copy_records`` on an asyncio pool (``await pool.copy_records(...)``);
    ``records`` may also be an async iterable."""
    names = _table(table)
    _check_options(pg_format, progress, chunk_rows, max_packet)
    it: Any = _iterable(records, "records", True)
    if columns is None:
        first = (next(it, _END) if isinstance(it, Iterator)
                 else await anext(it, _END))
        if first is _END:
            return 0
        columns = _first_record_keys(first)
        it = itertools.chain([first], it) if isinstance(it, Iterator) else _achain(first, it)
    job = _records_job(names, columns, it, on_conflict, pg_format, progress, chunk_rows,
                       max_packet)
    return await run_async(_load_steps(source, job),
                           SourceIO(source, _body(source, job, run_async)))


_END: Any = object()


async def _achain(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item


def _rows_job(table: object, columns: object, rows: object, allow_async: bool,
              on_conflict: object, pg_format: str, progress: Progress | None, chunk_rows: int,
              max_packet: int | None) -> Job:
    names = _table(table)
    cols = _columns(columns)
    keys = _conflict_keys(on_conflict, cols)
    _check_options(pg_format, progress, chunk_rows, max_packet)
    feed = Feed(_iterable(rows, "rows", allow_async), chunk_rows)
    return Job(names, cols, feed, keys, pg_format, progress, chunk_rows, max_packet, "rows")


def _first_record_keys(first: Any) -> list[str]:
    if not isinstance(first, Mapping):
        raise RowError(f"records[0] is a {type(first).__name__}, not a dict", 0)
    return list(first)


def _records_job(table: tuple[str, ...], columns: Sequence[str], records: Any,
                 on_conflict: object, pg_format: str, progress: Progress | None,
                 chunk_rows: int, max_packet: int | None) -> Job:
    cols = _columns(columns)
    keys = _conflict_keys(on_conflict, cols)
    if isinstance(records, Iterator):
        feed = Feed(_records_to_rows(records, cols))
    else:  # an async source: each batch converted as it is read
        feed = Feed(records, chunk_rows,
                    lambda batch, start: list(_records_to_rows(iter(batch), cols, start)))
    return Job(table, cols, feed, keys, pg_format, progress, chunk_rows, max_packet,
               "records")


def _records_to_rows(records: Iterator[Any], columns: list[str],
                     start: int = 0) -> Iterator[tuple[Any, ...]]:
    get = operator.itemgetter(*columns)
    n = len(columns)
    for i, record in enumerate(records, start):
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


# ---- the load: one flow, blocking or awaited ---------------------------------------

#: The per-server flows (``load_steps``) and their I/O (``io_for``), by ``adapter.kind``.
_SERVERS = {"postgresql": "fastpool.writes.bulk.postgres",
            "mysql": "fastpool.writes.bulk.mysql",
            "sqlite": "fastpool.writes.bulk.sqlite"}


def _body(source: ConnectionSource, job: Job, runner: Any) -> Any:
    """The transaction's body: the server's flow on the borrowed connection,
    run by ``runner`` (``run``, or ``run_async`` whose coroutine the runner awaits)."""
    def body(conn: Any) -> Any:
        client = source.adapter
        client.require("bulk loads", "copy_rows/copy_records")
        module = _SERVERS.get(client.kind)
        if module is None:
            raise UnsupportedClient(f"copy_rows/copy_records: no bulk loader for {client.kind} "
                                    f"({client.name}) connections")
        server = importlib.import_module(module)
        return runner(server.load_steps(job), server.io_for(client, conn))
    return body


def _load_steps(source: ConnectionSource, job: Job) -> Steps[int]:
    """One transaction through the runner's flow (write: SQLite takes its
    write lock at BEGIN); the table's cached results are dropped before and
    after. Never run again: the rows may be a generator, consumed by the attempt."""
    with source.writing([job.table[-1]]):
        done = yield from attempt_steps(source, True, None,
                                        f"a bulk load into {'.'.join(job.table)}", None)
    if done.outcome is not Outcome.COMMITTED:
        error = done.error
        assert error is not None
        try:
            raise error
        finally:
            done = error = None  # type: ignore[assignment]  # no cycle (see _run_steps)
    return int(done.value)
