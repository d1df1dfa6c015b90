"""Bulk loads into MySQL/MariaDB: multi-row INSERTs below max_allowed_packet."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastpool.errors import ConfigError
from fastpool.writes.bulk.common import (
    MYSQL_MAX_STATEMENT,
    MYSQL_SLACK,
    ErrorFactory,
    Progress,
    Reporter,
    encoders,
)


def _backquote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def copy_mysql(conn: Any, table: tuple[str, ...], columns: list[str], rows: Iterator[Any],
                keys: list[str], progress: Progress | None, chunk_rows: int,
                max_packet: int | None, error: ErrorFactory) -> int:
    target = ".".join(map(_backquote, table))
    names = ", ".join(map(_backquote, columns))
    charset = conn.encoding
    report = Reporter(progress)
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
        budget = min(max_packet, MYSQL_MAX_STATEMENT) - len(head) - len(tail) - MYSQL_SLACK
        if budget < 1:
            raise ConfigError(f"max_packet {max_packet} is too small for the INSERT statement's "
                             f"own {len(head) + len(tail)} bytes")
        encoder = encoders().ValuesEncoder(len(columns), conn.string_literal, conn.literal,
                                            charset, error=error)
        while not encoder.done:
            body = encoder.encode(rows, budget, chunk_rows)
            if body:
                statement = head + body + tail
                if len(statement) + MYSQL_SLACK > max_packet:  # a single row, too long
                    raise error(encoder.rows - 1, -1, f"needs an INSERT of {len(statement)} "
                                f"bytes, over max_allowed_packet ({max_packet})", None)
                cur.execute(statement)
            report(encoder.rows)
    finally:
        cur.close()
    return int(encoder.rows)
