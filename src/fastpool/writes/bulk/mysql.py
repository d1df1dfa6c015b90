"""Bulk loads into MySQL/MariaDB: multi-row INSERTs below max_allowed_packet.

``load_steps`` is the one flow (``fastpool.steps``); its I/O is mysqlclient's
(blocking) or asyncmy's / aiomysql's (awaited).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

from fastpool.errors import ConfigError
from fastpool.steps import Steps
from fastpool.writes.bulk.common import (
    MYSQL_MAX_STATEMENT,
    MYSQL_SLACK,
    Job,
    RowError,
    encoders,
)

__all__ = ["io_for", "load_steps"]


def _backquote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def load_steps(job: Job) -> Steps[int]:
    """Load ``job`` into MySQL/MariaDB; returns the number of rows."""
    target = ".".join(map(_backquote, job.table))
    names = ", ".join(map(_backquote, job.columns))
    feed, chunk_rows, error, max_packet = job.feed, job.chunk_rows, job.error, job.max_packet
    try:
        # The driver's own error for a table or column that does not exist,
        # before any row is read.
        yield ("query", f"SELECT {names} FROM {target} WHERE 1 = 0")
        if max_packet is None:
            max_packet = int((yield ("query", "SELECT @@max_allowed_packet"))[0][0])
        charset, string_literal, literal = yield ("mysql_codec",)
        head = f"INSERT INTO {target} ({names}) VALUES ".encode(charset)
        tail = b""
        if job.keys:
            others = [c for c in job.columns if c not in job.keys] or job.keys[:1]  # no-op
            tail = (" ON DUPLICATE KEY UPDATE " + ", ".join(
                f"{_backquote(c)} = VALUES({_backquote(c)})" for c in others)).encode(charset)
        budget = min(max_packet, MYSQL_MAX_STATEMENT) - len(head) - len(tail) - MYSQL_SLACK
        if budget < 1:
            raise ConfigError(f"max_packet {max_packet} is too small for the INSERT statement's "
                              f"own {len(head) + len(tail)} bytes")
        encoder = encoders().ValuesEncoder(len(job.columns), string_literal, literal, charset,
                                            error=error)
        while not encoder.done:
            if feed.empty:
                yield ("refill", feed)
                continue
            first = encoder.rows  # the statement's first row, in the caller's count
            body = encoder.encode(feed.it, budget, feed.room(chunk_rows))
            if body:
                statement = head + body + tail
                if len(statement) + MYSQL_SLACK > max_packet:  # a single row, too long
                    raise error(encoder.rows - 1, -1, f"needs an INSERT of {len(statement)} "
                                f"bytes, over max_allowed_packet ({max_packet})", None)
                try:
                    yield ("query", statement)
                except Exception as exc:
                    row_error = _value_error(exc, first, job)
                    if row_error is None:
                        raise
                    try:
                        raise row_error from exc
                    finally:
                        row_error = None  # no cycle through this frame (ARCHITECTURE.md)
            job.report(encoder.rows)
    finally:
        yield ("close",)
    return int(encoder.rows)


#: The server's errors about one value of one row (out of range, incorrect
#: value for the type, data too long or truncated, incorrect date): their
#: message ends with the column and "at row N", N counting from 1 within the
#: one multi-row INSERT that failed.
_VALUE_ERRORS = frozenset({1264, 1265, 1292, 1366, 1367, 1406})
_AT_ROW = re.compile(r"column (?:`[^`]*`\.)*[`']?([^`'\s]+)[`']? at row (\d+)$")


def _value_error(exc: BaseException, first: int, job: Job) -> RowError | None:
    """``exc``, a client's error for the INSERT whose first row was the
    caller's row ``first``, as the RowError of the row and column it names;
    None when it names none."""
    args = exc.args
    if len(args) < 2 or args[0] not in _VALUE_ERRORS:
        return None
    message = str(args[1])
    found = _AT_ROW.search(message)
    if found is None or found.group(1) not in job.columns:
        return None
    index = first + int(found.group(2)) - 1
    problem = message[:found.start(2)].removesuffix(" at row ")
    return job.error(index, job.columns.index(found.group(1)), problem, exc)


class _MySQLdbIO:
    """mysqlclient (blocking)."""

    def __init__(self, conn: Any) -> None:
        from MySQLdb.cursors import Cursor

        self.conn = conn
        self.cur = conn.cursor(Cursor)  # plain tuples, whatever cursorclass the pool has

    def query(self, statement: str | bytes) -> Any:
        if isinstance(statement, str):
            statement = statement.encode(self.conn.encoding)
        self.cur.execute(statement)
        return self.cur.fetchall()

    def mysql_codec(self) -> tuple[str, Callable[[bytes], bytes], Callable[[Any], bytes]]:
        return self.conn.encoding, self.conn.string_literal, self.conn.literal

    def refill(self, feed: Any) -> Any:
        return feed.refill()

    def close(self) -> None:
        self.cur.close()


class _PyMySQLIO:
    """asyncmy and aiomysql (PyMySQL's API, awaited)."""

    def __init__(self, conn: Any, library: str) -> None:
        self.conn = conn
        self.library = library
        self.cur: Any = None

    async def query(self, statement: str | bytes) -> Any:
        if self.cur is None:
            # Plain tuples, whatever cursor class the pool's connections default
            # to; aiomysql's cursor() is awaited.
            cur = self.conn.cursor(importlib.import_module(f"{self.library}.cursors").Cursor)
            self.cur = await cur if inspect.isawaitable(cur) else cur
        await self.cur.execute(statement)
        rows = self.cur.fetchall()  # aiomysql's buffered cursor answers at once
        return await rows if inspect.isawaitable(rows) else rows

    def mysql_codec(self) -> tuple[str, Callable[[bytes], bytes], Callable[[Any], bytes]]:
        conn = self.conn
        charset = conn._encoding if hasattr(conn, "_encoding") else conn.encoding
        escape = conn.escape_string

        def string_literal(raw: bytes) -> bytes:
            return b"'" + bytes(escape(raw.decode(charset)).encode(charset)) + b"'"

        def literal(value: Any) -> bytes:
            text = conn.literal(value)
            return text if isinstance(text, bytes) else \
                str(text).encode(charset, "surrogateescape")

        return charset, string_literal, literal

    def refill(self, feed: Any) -> Any:
        return feed.refill()

    async def close(self) -> None:
        if self.cur is not None:
            await self.cur.close()


def io_for(client: Any, conn: Any) -> Any:
    """The I/O of ``load_steps`` for ``conn``, a connection of ``client``."""
    if not client.is_async:
        return _MySQLdbIO(conn)
    return _PyMySQLIO(conn, client.name)
