"""Bulk loads into SQLite: executemany in chunks.

``load_steps`` is the one flow (``fastpool.steps``); its I/O is sqlite3's
(blocking) or aiosqlite's (awaited).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Mapping
from typing import Any

from fastpool.steps import Steps
from fastpool.writes.bulk.common import ErrorFactory, Job, RowError

__all__ = ["io_for", "load_steps"]


def _doublequote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def load_steps(job: Job) -> Steps[int]:
    """Load ``job`` into SQLite; returns the number of rows."""
    target = ".".join(map(_doublequote, job.table))
    names = ", ".join(map(_doublequote, job.columns))
    # The driver's own error for a table or column that does not exist
    # (SQLite would read an unknown "name" in a SELECT as a string literal;
    # an INSERT's column list it checks).
    yield ("execute", f"SELECT * FROM {target} LIMIT 0")
    yield ("execute", f"INSERT INTO {target} ({names}) SELECT {names} FROM {target} WHERE 0")
    statement = f"INSERT INTO {target} ({names}) VALUES ({', '.join('?' * len(job.columns))})"
    if job.keys:
        others = [c for c in job.columns if c not in job.keys]
        action = ("UPDATE SET " + ", ".join(f"{_doublequote(c)} = excluded.{_doublequote(c)}"
                                            for c in others)) if others else "NOTHING"
        statement += f" ON CONFLICT ({', '.join(map(_doublequote, job.keys))}) DO {action}"
    n = len(job.columns)
    feed = job.feed
    done = 0
    while True:
        if feed.empty:
            yield ("refill", feed)
        chunk = list(itertools.islice(feed.it, feed.room(job.chunk_rows)))
        if not chunk:
            if feed.more:
                continue
            break
        for i, row in enumerate(chunk):
            if (type(row) is not tuple and type(row) is not list) or len(row) != n:
                chunk[i] = _sqlite_row(row, done + i, n, job.error)
        # A savepoint per chunk (two statements per up to chunk_rows rows):
        # a chunk that fails is undone alone and replayed row by row, to find
        # the row and column sqlite3's error does not name.
        yield ("execute", _SAVEPOINT)
        try:
            yield ("executemany", statement, chunk)
        except (OverflowError, sqlite3.IntegrityError) as exc:
            yield ("execute", _ROLLBACK_TO)
            row_error = yield from _find_row(job, target, statement, chunk, done, exc)
            if row_error is None:
                raise
            try:
                raise row_error from row_error.__cause__
            finally:
                row_error = None  # no cycle through this frame (ARCHITECTURE.md)
        yield ("execute", _RELEASE)
        done += len(chunk)
        job.report(done)
    return done


_SAVEPOINT = "SAVEPOINT fastpool_bulk_chunk"
_ROLLBACK_TO = "ROLLBACK TO fastpool_bulk_chunk"
_RELEASE = "RELEASE fastpool_bulk_chunk"
#: sqlite3's errors about one value: an int beyond 64 bits (OverflowError), a
#: non-integer for a rowid ("datatype mismatch"), a STRICT table's "cannot
#: store TEXT value in INT column t.c", "NOT NULL constraint failed: t.c".
_VALUE_MESSAGES = ("datatype mismatch", "cannot store", "NOT NULL constraint failed")
_INT64 = (-2**63, 2**63 - 1)


def _find_row(job: Job, target: str, statement: str, chunk: list[Any], done: int,
              exc: BaseException) -> Steps[RowError | None]:
    """The RowError for the value ``exc`` was about, in the caller's count
    (``chunk`` starts at row ``done``), or None when it was not about one
    value. The chunk is replayed row by row inside its (rolled back) savepoint
    until a row fails alike; that is rolled back too."""
    if not isinstance(exc, OverflowError) and not any(m in str(exc) for m in _VALUE_MESSAGES):
        return None
    for i, row in enumerate(chunk):
        try:
            yield ("executemany", statement, [row])
        except (OverflowError, sqlite3.IntegrityError) as again:
            yield ("execute", _ROLLBACK_TO)
            if type(again) is not type(exc) or str(again) != str(exc):
                return None
            col = yield from _column_of(job, target, row, again)
            return job.error(done + i, col, str(again), again)
    yield ("execute", _ROLLBACK_TO)
    return None


def _column_of(job: Job, target: str, row: Any, exc: BaseException) -> Steps[int]:
    """Which of ``row``'s values ``exc`` is about (-1: cannot tell)."""
    if isinstance(exc, OverflowError):
        return next((c for c, v in enumerate(row) if type(v) is int
                     and not _INT64[0] <= v <= _INT64[1]), -1)
    named = str(exc).rpartition(".")[2]  # "... column t.c", "... failed: t.c"
    if named in job.columns and "." in str(exc):
        return job.columns.index(named)
    # "datatype mismatch": a value that is no integer for the rowid (the
    # INTEGER PRIMARY KEY column).
    info = yield ("execute", f"PRAGMA table_info({target})")
    keys = [name for _, name, typ, _, _, pk in info if pk and str(typ).upper() == "INTEGER"]
    if len(keys) == 1 and keys[0] in job.columns:
        return job.columns.index(keys[0])
    return -1


def _sqlite_row(row: Any, index: int, n: int, error: ErrorFactory) -> Any:
    """A row that is not a tuple or list of the right width: converted, or refused."""
    if isinstance(row, (str, bytes, bytearray, Mapping)) or not hasattr(row, "__len__"):
        raise error(index, -1, f"is a {type(row).__name__}, not a tuple or list of values",
                    None)
    if len(row) != n:
        raise error(index, -1, f"has {len(row)} values, expected {n}", None)
    return tuple(row)


class _SQLiteIO:
    """sqlite3 (blocking)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, statement: str) -> list[Any]:
        return self.conn.execute(statement).fetchall()  # type: ignore[no-any-return]

    def executemany(self, statement: str, rows: list[Any]) -> None:
        self.conn.executemany(statement, rows)

    def refill(self, feed: Any) -> Any:
        return feed.refill()


class _AiosqliteIO(_SQLiteIO):
    """aiosqlite: the same calls, run on its thread and awaited."""

    async def execute(self, statement: str) -> list[Any]:  # type: ignore[override]
        return list(await self.conn.execute_fetchall(statement))

    async def executemany(self, statement: str,  # type: ignore[override]
                          rows: list[Any]) -> None:
        await self.conn.executemany(statement, rows)


def io_for(client: Any, conn: Any) -> Any:
    """The I/O of ``load_steps`` for ``conn``, a connection of ``client``."""
    return _AiosqliteIO(conn) if client.is_async else _SQLiteIO(conn)
