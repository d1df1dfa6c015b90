"""Bulk loads (fastpool.writes.bulk) that must not lose rows or pass bad
columns: a PostgreSQL upsert with NULL keys keeps every row, and an SQLite
load names a column that does not exist even when there are no rows.

Each test comes from a bug found in review. Tables are named ``fp_wr_*`` and
dropped at the end of each test.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from fastpool.writes import bulk


def test_pg_upsert_keeps_every_row_whose_key_is_null(make_pg_pool: Callable[..., Any],
                                                     pg_admin: Any) -> None:
    # bulk.py:431 (_pg_upsert): SELECT DISTINCT ON (keys) treats NULL keys as
    # equal and keeps one row of them, while ON CONFLICT never conflicts on a
    # NULL (MariaDB and SQLite insert them all). Rows vanish, yet the load
    # returns the count of every row.
    pool = make_pg_pool()
    pg_admin.execute("DROP TABLE IF EXISTS fp_wr_u")
    pg_admin.execute("CREATE TABLE fp_wr_u (id INT PRIMARY KEY, email TEXT UNIQUE, v INT)")
    try:
        rows = [(1, None, 10), (2, None, 20), (3, "a@x", 30)]
        n = bulk.copy_rows(pool, "fp_wr_u", ["id", "email", "v"], rows, on_conflict=("email",))
        assert n == 3
        got = pg_admin.execute("SELECT id, email, v FROM fp_wr_u ORDER BY id").fetchall()
        assert got == rows
    finally:
        pg_admin.execute("DROP TABLE IF EXISTS fp_wr_u")


def test_sqlite_load_names_a_column_that_does_not_exist_even_with_no_rows(
        make_pool: Callable[..., Any], db_path: str) -> None:
    # bulk.py:504 (_copy_sqlite): SQLite reads a double-quoted name that is no
    # column as a string literal, so the check passes; with no rows the load
    # "succeeds" (PostgreSQL and MariaDB raise the driver's error).
    pool = make_pool(url=f"sqlite:///{db_path}")
    admin = sqlite3.connect(db_path, isolation_level=None)
    try:
        admin.execute("CREATE TABLE fp_wr_s (id INTEGER PRIMARY KEY, v TEXT)")
        with pytest.raises(sqlite3.OperationalError, match="no_such_column"):
            bulk.copy_rows(pool, "fp_wr_s", ["id", "no_such_column"], [])
    finally:
        admin.execute("DROP TABLE IF EXISTS fp_wr_s")
        admin.close()
