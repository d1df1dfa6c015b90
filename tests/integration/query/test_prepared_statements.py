"""Prepared statements in the query helpers on PostgreSQL: SQL the driver runs
unprepared (a multi-statement script), and a connection interrupted while the
helpers drop stale statements goes back to the pool.

Each test comes from a bug found in review. Tables are named ``fp_rv_*``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import fastpool.query.statements
from tests.fix_db import drop_tables, two_tables


def test_pg_execute_runs_a_multi_statement_script(make_pg_pool: Callable[..., Any]) -> None:
    """README: the SQL is the driver's own. psycopg runs a parameterless script of
    several statements; the helpers force prepare=True and PostgreSQL refuses
    ("cannot insert multiple commands into a prepared statement")."""
    pool = make_pg_pool(max_size=2)
    two_tables(pool, "%s")
    try:
        with pool.connection() as conn:   # what psycopg itself does with this SQL
            conn.execute("UPDATE fp_rv_a SET n = 1; UPDATE fp_rv_b SET n = 1")
        pool.execute("UPDATE fp_rv_a SET n = 2; UPDATE fp_rv_b SET n = 2")   # fails
        assert pool.fetchval("SELECT sum(n) FROM fp_rv_b") == 4
    finally:
        drop_tables(pool, "fp_rv_a", "fp_rv_b")


def test_connection_goes_back_when_interrupted_while_dropping_stale_statements(
        make_pg_pool: Callable[..., Any], pg_admin: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """_standalone calls _may_retry (which sends DEALLOCATE ALL on a stale plan)
    inside its `except Exception` block before pool.release(conn): anything raised
    there (a Ctrl-C during that round trip, a broken connection) skips the release
    and the connection stays checked out for ever. The interrupt is injected right
    after the real DEALLOCATE ALL ran on the server."""
    pool = make_pg_pool(min_size=1, max_size=1)
    pg_admin.execute("DROP TABLE IF EXISTS fp_rv_ddl")
    pg_admin.execute("CREATE TABLE fp_rv_ddl (a int)")
    real = fastpool.query.statements._deallocate_all

    def interrupted(conn: Any, mgr: Any) -> None:
        real(conn, mgr)
        raise KeyboardInterrupt

    try:
        assert pool.fetch("SELECT * FROM fp_rv_ddl") == []   # prepared on the connection
        pg_admin.execute("DROP TABLE fp_rv_ddl")
        pg_admin.execute("CREATE TABLE fp_rv_ddl (a int, b text)")
        monkeypatch.setattr(fastpool.query.statements, "_deallocate_all", interrupted)
        with pytest.raises(KeyboardInterrupt):
            pool.fetch("SELECT * FROM fp_rv_ddl")          # stale plan -> forget()
        monkeypatch.undo()
        assert pool.stats().in_use == 0                    # fails: 1, leaked
    finally:
        monkeypatch.undo()
        pg_admin.execute("DROP TABLE IF EXISTS fp_rv_ddl")
