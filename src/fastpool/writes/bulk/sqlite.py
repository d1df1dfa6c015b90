"""Bulk loads into SQLite: executemany in chunks.

``load_steps`` is the one flow (``fastpool.steps``); its I/O is sqlite3's
(blocking) or aiosqlite's (awaited).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from fastpool.steps import Steps
from fastpool.writes.bulk.common import ErrorFactory, Job

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
        yield ("executemany", statement, chunk)
        done += len(chunk)
        job.report(done)
    return done


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

    def execute(self, statement: str) -> None:
        self.conn.execute(statement).fetchall()

    def executemany(self, statement: str, rows: list[Any]) -> None:
        self.conn.executemany(statement, rows)

    def refill(self, feed: Any) -> Any:
        return feed.refill()


class _AiosqliteIO(_SQLiteIO):
    """aiosqlite: the same calls, run on its thread and awaited."""

    async def execute(self, statement: str) -> None:  # type: ignore[override]
        await self.conn.execute_fetchall(statement)

    async def executemany(self, statement: str,  # type: ignore[override]
                          rows: list[Any]) -> None:
        await self.conn.executemany(statement, rows)


def io_for(client: Any, conn: Any) -> Any:
    """The I/O of ``load_steps`` for ``conn``, a connection of ``client``."""
    return _AiosqliteIO(conn) if client.is_async else _SQLiteIO(conn)
