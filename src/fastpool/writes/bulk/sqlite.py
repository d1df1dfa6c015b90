"""Bulk loads into SQLite: executemany in chunks."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

from fastpool.writes.bulk.common import (
    ErrorFactory,
    Progress,
    Reporter,
)


def _doublequote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def copy_sqlite(conn: sqlite3.Connection, table: tuple[str, ...], columns: list[str],
                 rows: Iterator[Any], keys: list[str], progress: Progress | None,
                 chunk_rows: int, error: ErrorFactory) -> int:
    target = ".".join(map(_doublequote, table))
    names = ", ".join(map(_doublequote, columns))
    # The driver's own error for a table or column that does not exist
    # (SQLite would read an unknown "name" in a SELECT as a string literal;
    # an INSERT's column list it checks).
    conn.execute(f"SELECT * FROM {target} LIMIT 0").fetchall()
    conn.execute(f"INSERT INTO {target} ({names}) SELECT {names} FROM {target} WHERE 0")
    statement = f"INSERT INTO {target} ({names}) VALUES ({', '.join('?' * len(columns))})"
    if keys:
        others = [c for c in columns if c not in keys]
        action = ("UPDATE SET " + ", ".join(f"{_doublequote(c)} = excluded.{_doublequote(c)}"
                                            for c in others)) if others else "NOTHING"
        statement += f" ON CONFLICT ({', '.join(map(_doublequote, keys))}) DO {action}"
    n = len(columns)
    done = 0
    report = Reporter(progress)
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
    return done


def _sqlite_row(row: Any, index: int, n: int, error: ErrorFactory) -> Any:
    """A row that is not a tuple or list of the right width: converted, or refused."""
    if isinstance(row, (str, bytes, bytearray, Mapping)) or not hasattr(row, "__len__"):
        raise error(index, -1, f"is a {type(row).__name__}, not a tuple or list of values",
                    None)
    if len(row) != n:
        raise error(index, -1, f"has {len(row)} values, expected {n}", None)
    return tuple(row)
