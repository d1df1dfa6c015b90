"""Bulk loads into MySQL/MariaDB: multi-row INSERTs below max_allowed_packet.

``load_steps`` is the one flow (``fastpool.steps``); its I/O is mysqlclient's
(blocking) or asyncmy's / aiomysql's (awaited).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from fastpool.errors import ConfigError
from fastpool.steps import Steps
from fastpool.writes.bulk.common import (
    MYSQL_MAX_STATEMENT,
    MYSQL_SLACK,
    Job,
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
            body = encoder.encode(feed.it, budget, feed.room(chunk_rows))
            if body:
                statement = head + body + tail
                if len(statement) + MYSQL_SLACK > max_packet:  # a single row, too long
                    raise error(encoder.rows - 1, -1, f"needs an INSERT of {len(statement)} "
                                f"bytes, over max_allowed_packet ({max_packet})", None)
                yield ("query", statement)
            job.report(encoder.rows)
    finally:
        yield ("close",)
    return int(encoder.rows)


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
