"""Bulk loads into PostgreSQL: binary (or text) COPY through the encoder,
upserts through a staging table.

``load_steps`` is the one flow (``fastpool.steps``): it reads the columns'
types, plans the encoding, stages an upsert, and yields the COPY data chunk
by chunk. Its I/O differs per client: psycopg (``with cur.copy(...)``),
psycopg's AsyncConnection (``async with cur.copy(...)``) and asyncpg
(``copy_to_table(..., source=<the chunks>, format='binary')``, the chunks
already starting with the PGCOPY header the encoder writes).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from typing import Any

from fastpool.errors import ConfigError
from fastpool.steps import Steps
from fastpool.writes.bulk.common import (
    PG_CHUNK_BYTES,
    Feed,
    Job,
    RowError,
    async_chunks,
    encoders,
)

__all__ = ["io_for", "load_steps"]

_stage_ids = itertools.count(1)

# Built-in type oids (stable) -> encoder kinds; bpchar and varchar take text's
# binary format.
_PG_KINDS = {21: "INT2", 23: "INT4", 20: "INT8", 700: "FLOAT4", 701: "FLOAT8", 25: "TEXT",
             1043: "TEXT", 1042: "TEXT", 17: "BYTEA", 16: "BOOL", 1184: "TIMESTAMPTZ",
             1114: "TIMESTAMP", 1082: "DATE"}

# Domains count as their base type: binary COPY takes the base type's format.
# {param}: the client's placeholder.
_PG_COLUMNS_SQL = """
SELECT a.attname, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END::int8,
       format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass({param}) AND a.attnum > 0 AND NOT a.attisdropped"""


def _ident(*names: str) -> str:
    """A (schema-qualified) identifier, quoted as libpq's PQescapeIdentifier does."""
    return ".".join('"' + name.replace('"', '""') + '"' for name in names)


def _idents(names: list[str]) -> str:
    return ", ".join(map(_ident, names))


# ---- the flow -------------------------------------------------------------------

def load_steps(job: Job) -> Steps[int]:
    """Load ``job`` into PostgreSQL; returns the number of rows."""
    target = _ident(*job.table)
    names = _idents(job.columns)
    try:
        found = {}
        for name, oid, type_name in (yield ("pg_columns", target)):
            found[name] = oid
            job.error.types[name] = type_name
        if any(c not in found for c in job.columns):
            # The server's own error (no such table, no such column), before
            # any row is read: every client raises it here, whatever COPY does.
            yield ("execute", f"SELECT {names} FROM {target} LIMIT 0")
        context, utf8 = yield ("pg_context",)
        binary, kinds, fallbacks = _pg_plan(context, utf8, job.columns,
                                            [found.get(c) for c in job.columns], job.pg_format)
        dest = job.table
        if job.keys:
            dest = (f"_fastpool_stage_{next(_stage_ids)}",)
            yield ("execute", f"CREATE TEMP TABLE {_ident(*dest)} ON COMMIT DROP AS "
                              f"SELECT {names} FROM {target} WITH NO DATA")
        encoder = encoders().Encoder(kinds, fallbacks, binary=binary, error=job.error)
        statement = (f"COPY {_ident(*dest)} ({names}) FROM STDIN"
                     + (" (FORMAT BINARY)" if binary else ""))
        try:
            yield ("copy", statement, dest, job.columns, binary, _chunks(encoder, job),
                   job.feed)
        except Exception as exc:
            row_error = _copy_error(exc, job)
            if row_error is None:
                raise
            try:
                raise row_error from exc
            finally:
                row_error = None  # no cycle through this frame (ARCHITECTURE.md)
        if job.keys:
            yield ("execute", _pg_upsert(target, _ident(*dest), job.columns, job.keys))
            yield ("execute", f"DROP TABLE {_ident(*dest)}")
    finally:
        yield ("close",)
    return int(encoder.rows)


#: Where the server says a COPY failed: 'COPY t, line 2501, column n: "abc"'
#: (the error's CONTEXT; lines count the rows from 1, in binary COPY too).
_COPY_CONTEXT = re.compile(r"^COPY [^\n]*?, line (\d+)(?:, column ([^:\n]+))?", re.MULTILINE)


def _copy_error(exc: BaseException, job: Job) -> RowError | None:
    """A server's data or integrity error (SQLSTATE class 22 or 23) about
    one row of the COPY, as that row's RowError; None for any other error.
    psycopg has the context in ``diag``, asyncpg on the exception."""
    sqlstate = getattr(exc, "sqlstate", None)
    if not isinstance(sqlstate, str) or sqlstate[:2] not in ("22", "23"):
        return None
    context = getattr(getattr(exc, "diag", None), "context", None) or \
        getattr(exc, "context", None)
    found = _COPY_CONTEXT.search(context) if isinstance(context, str) else None
    if found is None:
        return None
    column = found.group(2)
    col = job.columns.index(column) if column in job.columns else -1
    problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return job.error(int(found.group(1)) - 1, col, problem, exc)


def _chunks(encoder: Any, job: Job) -> Iterator[bytes | None]:
    """The COPY data, chunk by chunk (the first starts with the binary header,
    the last ends with the trailer); ``None`` asks for ``job.feed.refill()``."""
    feed, chunk_rows, report = job.feed, job.chunk_rows, job.report
    while not encoder.done:
        if feed.empty:
            yield None
            continue
        data = encoder.encode(feed.it, PG_CHUNK_BYTES, feed.room(chunk_rows))
        if data:
            yield data
        report(encoder.rows)


def _pg_plan(context: Any, utf8: bool, columns: list[str], oids: list[int | None],
             pg_format: str) -> tuple[bool, list[int], list[Any]]:
    """(binary?, encoder kinds, per-column fallbacks) for a COPY of ``columns``.

    The fallbacks are psycopg's dumpers (``context``: the psycopg connection,
    or None for another client, whose connections speak UTF-8)."""
    enc = encoders()
    try:
        from psycopg import ProgrammingError, pq
        from psycopg.adapt import PyFormat, Transformer
    except ImportError:  # asyncpg without psycopg: the encoder's own types only
        return _plan_without_psycopg(enc, columns, oids, pg_format)
    if pg_format != "text":
        kinds: list[int] = []
        fallbacks: list[Any] = []
        for name, oid in zip(columns, oids, strict=True):
            kind = getattr(enc, _PG_KINDS.get(oid or 0, "GENERIC"))
            if kind == enc.TEXT and not utf8:
                kind = enc.GENERIC  # psycopg encodes to the connection's encoding
            fallback = None
            if oid is not None:
                tx = Transformer(context)
                try:
                    tx.set_dumper_types([oid], pq.Format.BINARY)
                    fallback = _binary_dumper(tx, PyFormat.BINARY)
                except ProgrammingError:  # psycopg has no binary dumper for this type
                    if kind == enc.GENERIC:
                        if pg_format == "binary":
                            raise ConfigError(
                                f"column {name!r}: psycopg cannot dump its type (oid {oid}) "
                                "in binary; use pg_format='text' or 'auto'") from None
                        return _pg_plan(context, utf8, columns, oids, "text")
            kinds.append(kind)
            fallbacks.append(fallback)
        return True, kinds, fallbacks
    # Text: str values as they are, anything else as psycopg's text dumper
    # for its Python type writes it; the server parses them.
    tx = Transformer(context)

    def dump_text(value: Any) -> Any:
        return tx.get_dumper(value, PyFormat.TEXT).dump(value)

    kind = enc.TEXT if utf8 else enc.GENERIC
    return False, [kind] * len(columns), [dump_text] * len(columns)


def _plan_without_psycopg(enc: Any, columns: list[str], oids: list[int | None],
                          pg_format: str) -> tuple[bool, list[int], list[Any]]:
    kinds = [getattr(enc, _PG_KINDS.get(oid or 0, "GENERIC")) for oid in oids]
    other = [c for c, k in zip(columns, kinds, strict=True) if k == enc.GENERIC]
    if pg_format == "text" or other:
        why = "text COPY" if pg_format == "text" else f"column(s) {', '.join(other)}"
        raise ConfigError(f"{why}: loading these values needs psycopg's dumpers "
                          "(pip install 'fastpool[postgres]')")
    return True, kinds, [None] * len(columns)


def _binary_dumper(tx: Any, fmt: Any) -> Callable[[Any], Any]:
    formats = (fmt,)

    def dump(value: Any) -> Any:
        return tx.dump_sequence((value,), formats)[0]

    return dump


def _pg_upsert(target: str, stage: str, columns: list[str], keys: list[str]) -> str:
    """INSERT the staged rows, the last one of each key, updating existing rows."""
    others = [c for c in columns if c not in keys]
    action = ("UPDATE SET " + ", ".join(f"{_ident(c)} = EXCLUDED.{_ident(c)}" for c in others)
              if others else "NOTHING")
    # A temp table filled by one COPY keeps insertion order in ctid. Rows
    # with a NULL in the key never conflict (NULLs are distinct for a unique
    # index), so they all go in, as on MySQL and SQLite; DISTINCT ON would
    # keep only one of them.
    any_null = " OR ".join(f"{_ident(k)} IS NULL" for k in keys)
    cols, key_list = _idents(columns), _idents(keys)
    return (f"INSERT INTO {target} ({cols}) "
            f"(SELECT DISTINCT ON ({key_list}) {cols} FROM {stage} WHERE NOT ({any_null}) "
            f"ORDER BY {key_list}, ctid DESC) "
            f"UNION ALL (SELECT {cols} FROM {stage} WHERE {any_null}) "
            f"ON CONFLICT ({key_list}) DO {action}")


# ---- the I/O, per client ------------------------------------------------------------

class _PsycopgIO:
    """psycopg 3 (blocking)."""

    def __init__(self, conn: Any) -> None:
        from psycopg.rows import tuple_row

        self.conn = conn
        # Plain tuples whatever row factory the pool's connections have.
        self.cur = conn.cursor(row_factory=tuple_row)

    def pg_columns(self, target: str) -> list[Any]:
        return list(self.cur.execute(_PG_COLUMNS_SQL.format(param="%s"), [target]).fetchall())

    def pg_context(self) -> tuple[Any, bool]:
        return self.conn, self.conn.info.encoding == "utf-8"

    def execute(self, statement: str) -> None:
        self.cur.execute(statement)

    def copy(self, statement: str, dest: tuple[str, ...], columns: list[str], binary: bool,
             chunks: Iterator[bytes | None], feed: Feed) -> None:
        with self.cur.copy(statement) as copy:
            for data in chunks:  # a sync feed never asks for a refill
                copy.write(data)

    def close(self) -> None:
        self.cur.close()


class _AsyncPsycopgIO(_PsycopgIO):
    """psycopg 3 ``AsyncConnection``: the same operations, awaited."""

    async def pg_columns(self, target: str) -> list[Any]:  # type: ignore[override]
        await self.cur.execute(_PG_COLUMNS_SQL.format(param="%s"), [target])
        return await self.cur.fetchall()  # type: ignore[no-any-return]

    async def execute(self, statement: str) -> None:  # type: ignore[override]
        await self.cur.execute(statement)

    async def copy(self, statement: str, dest: tuple[str, ...],  # type: ignore[override]
                   columns: list[str], binary: bool, chunks: Iterator[bytes | None],
                   feed: Feed) -> None:
        async with self.cur.copy(statement) as copy:
            async for data in async_chunks(chunks, feed):
                await copy.write(data)

    async def close(self) -> None:  # type: ignore[override]
        await self.cur.close()


class _AsyncpgIO:
    """asyncpg: its binary copy-in takes the encoder's chunks as they are."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def pg_columns(self, target: str) -> list[Any]:
        return [tuple(r) for r in await self.conn.fetch(_PG_COLUMNS_SQL.format(param="$1"),
                                                        target)]

    def pg_context(self) -> tuple[Any, bool]:
        return None, True  # asyncpg's client_encoding is always UTF8

    async def execute(self, statement: str) -> None:
        await self.conn.execute(statement)

    async def copy(self, statement: str, dest: tuple[str, ...], columns: list[str],
                   binary: bool, chunks: Iterator[bytes | None], feed: Feed) -> None:
        # A plain bytes source would be taken for a file name: memoryviews.
        async def source() -> Any:
            async for data in async_chunks(chunks, feed):
                yield memoryview(data)

        await self.conn.copy_to_table(
            dest[-1], schema_name=dest[0] if len(dest) == 2 else None, columns=columns,
            format="binary" if binary else "text", source=source())

    def close(self) -> None:
        pass


def io_for(client: Any, conn: Any) -> Any:
    """The I/O of ``load_steps`` for ``conn``, a connection of ``client``."""
    if not client.is_async:
        return _PsycopgIO(conn)
    if client.name == "asyncpg":
        return _AsyncpgIO(conn)
    return _AsyncPsycopgIO(conn)
