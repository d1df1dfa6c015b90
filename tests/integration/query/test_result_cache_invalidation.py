"""The result cache on the real servers: a write invalidates every table it
writes, however the statement spells that table (multi-table UPDATE, MySQL
modifiers, SQLite's UPDATE OR, CTEs named like tables, quoted names), and a
write on a connection of the pool invalidates again when it commits.

Each test comes from a bug found in review. Tables are named ``fp_rv_*``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.fix_db import drop_tables, mysql_query, two_tables

# ---- the tables a write names ----------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "UPDATE fp_rv_a JOIN fp_rv_b ON fp_rv_a.id = fp_rv_b.id SET fp_rv_b.n = 7",
    "UPDATE fp_rv_a, fp_rv_b SET fp_rv_b.n = 7 WHERE fp_rv_a.id = fp_rv_b.id",
])
def test_mysql_multi_table_update_invalidates_every_written_table(
        make_mysql_pool: Callable[..., Any], sql: str) -> None:
    """README: "INSERT/REPLACE/UPDATE (multi-table too)". The parser names only the
    first table of a MySQL multi-table UPDATE, so a cached read of the second one
    (the one written) stays stale after the write."""
    pool = make_mysql_pool(max_size=2)
    two_tables(pool, "%s")
    try:
        q = "SELECT n FROM fp_rv_b WHERE id = 1"
        assert pool.fetchval(q, cache_ttl=60) == 0
        assert pool.execute(sql) == 2
        assert pool.fetchval(q) == 7                   # committed
        assert pool.fetchval(q, cache_ttl=60) == 7     # fails: 0, a stale read
    finally:
        drop_tables(pool, "fp_rv_a", "fp_rv_b")


@pytest.mark.parametrize("sql", [
    "UPDATE LOW_PRIORITY fp_rv_a SET n = 7",
    "DELETE QUICK FROM fp_rv_a WHERE id = 1",
    "DELETE LOW_PRIORITY FROM fp_rv_a WHERE id = 1",
])
def test_mysql_statement_modifiers_are_not_table_names(
        make_mysql_pool: Callable[..., Any], sql: str) -> None:
    """sqlglot reads LOW_PRIORITY / QUICK as the table name: the write invalidates
    a table called "low_priority" or "quick", never fp_rv_a."""
    pool = make_mysql_pool(max_size=2)
    two_tables(pool, "%s")
    try:
        q = "SELECT sum(n) + count(*) FROM fp_rv_a"
        before = pool.fetchval(q, cache_ttl=60)
        pool.execute(sql)
        fresh = pool.fetchval(q)
        assert fresh != before
        assert pool.fetchval(q, cache_ttl=60) == fresh   # fails: the old value
    finally:
        drop_tables(pool, "fp_rv_a", "fp_rv_b")


@pytest.mark.parametrize("sql", [
    "UPDATE OR REPLACE fp_rv_a SET n = 7",
    "UPDATE OR IGNORE fp_rv_a SET n = 7",
])
def test_sqlite_update_or_conflict_clause_invalidates_its_table(
        make_pool: Callable[..., Any], sql: str) -> None:
    """SQLite's UPDATE OR <conflict> is parsed with target table "or"."""
    pool = make_pool(max_size=2)
    two_tables(pool, "?")
    try:
        q = "SELECT n FROM fp_rv_a WHERE id = 1"
        assert pool.fetchval(q, cache_ttl=60) == 0
        pool.execute(sql)
        assert pool.fetchval(q) == 7
        assert pool.fetchval(q, cache_ttl=60) == 7       # fails: 0
    finally:
        drop_tables(pool, "fp_rv_a", "fp_rv_b")


def test_cte_named_like_a_table_does_not_hide_that_table(
        make_pg_pool: Callable[..., Any]) -> None:
    """CTE names are collected over the whole statement and removed from the
    reads and the writes, although the CTE's own body (and a DELETE target)
    refers to the real table of that name."""
    pool = make_pg_pool(max_size=2)
    two_tables(pool, "%s")
    try:
        # Read side: a CTE that filters a table into the same name (common style).
        q = ("WITH fp_rv_a AS (SELECT * FROM fp_rv_a WHERE n >= 0) "
             "SELECT count(*) FROM fp_rv_a JOIN fp_rv_b USING (id)")
        assert pool.fetchval(q, cache_ttl=60) == 2
        assert pool.execute("DELETE FROM fp_rv_a WHERE id = %s", (1,)) == 1
        assert pool.fetchval(q) == 1
        assert pool.fetchval(q, cache_ttl=60) == 1       # fails: 2
        # Write side: the DELETE's target is the real table, not the CTE.
        q2 = "SELECT count(*) FROM fp_rv_a"
        assert pool.fetchval(q2, cache_ttl=60) == 1
        assert pool.execute("WITH fp_rv_a AS (SELECT 1) DELETE FROM fp_rv_a") == 1
        assert pool.fetchval(q2, cache_ttl=60) == 0
    finally:
        drop_tables(pool, "fp_rv_a", "fp_rv_b")


def test_mysql_quoted_and_unquoted_spellings_of_one_table(
        make_mysql_pool: Callable[..., Any]) -> None:
    """MariaDB (lower_case_table_names=0): `fp_rv_Mixed` and fp_rv_Mixed are the
    same table, but the cache keys them "fp_rv_Mixed" and "fp_rv_mixed"."""
    pool = make_mysql_pool(max_size=2)
    pool.execute("DROP TABLE IF EXISTS fp_rv_Mixed")
    pool.execute("CREATE TABLE fp_rv_Mixed (id INTEGER PRIMARY KEY, n INTEGER)")
    pool.execute("INSERT INTO fp_rv_Mixed VALUES (1, 0)")
    try:
        q = "SELECT n FROM `fp_rv_Mixed` WHERE id = 1"   # e.g. an ORM that quotes
        assert pool.fetchval(q, cache_ttl=60) == 0
        pool.execute("UPDATE fp_rv_Mixed SET n = 7 WHERE id = 1")
        assert pool.fetchval(q, cache_ttl=60) == 7       # fails: 0
    finally:
        pool.execute("DROP TABLE IF EXISTS fp_rv_Mixed")


def test_sqlite_quoted_and_unquoted_spellings_of_one_table(
        make_pool: Callable[..., Any]) -> None:
    """SQLite names are case-insensitive even when quoted: "Fp_Rv_A" is fp_rv_a."""
    pool = make_pool(max_size=2)
    two_tables(pool, "?")
    try:
        q = 'SELECT n FROM "fp_rv_a" WHERE id = 1'
        assert pool.fetchval(q, cache_ttl=60) == 0
        pool.execute('UPDATE "Fp_Rv_A" SET n = 7 WHERE id = 1')
        assert pool.fetchval(q) == 7
        assert pool.fetchval(q, cache_ttl=60) == 7       # fails: 0
    finally:
        drop_tables(pool, "fp_rv_a", "fp_rv_b")


# ---- writes on a connection of the pool ------------------------------------------------


def test_write_with_conn_of_pool_connection_is_invalidated_after_commit(
        make_pg_pool: Callable[..., Any]) -> None:
    """execute(conn=...) bumps the versions before the write, but the second bump
    happens only in pool.transaction's finished() callback. Under
    `with pool.connection() as conn` (a transaction by the pool's own API) a read
    between the write and the COMMIT is cached and outlives the commit."""
    pool = make_pg_pool(max_size=2)
    two_tables(pool, "%s")
    try:
        q = "SELECT n FROM fp_rv_a WHERE id = 1"
        with pool.connection() as conn:
            pool.execute("UPDATE fp_rv_a SET n = 7 WHERE id = 1", conn=conn)
            assert pool.fetchval(q, cache_ttl=60) == 0   # other session: old, concurrent
        assert pool.fetchval(q) == 7                     # committed
        assert pool.fetchval(q, cache_ttl=60) == 7       # fails: 0 for 60 s
    finally:
        drop_tables(pool, "fp_rv_a", "fp_rv_b")


def test_a_pools_first_statement_is_read_in_its_servers_dialect(
        make_mysql_pool: Callable[..., Any], mysql_admin: Any) -> None:
    """The very first statement of a pool already names its tables as MariaDB
    reads them (a backquoted name with a space), so the write invalidates."""
    mysql_query(mysql_admin, "DROP TABLE IF EXISTS `fp rv first`")
    mysql_query(mysql_admin, "CREATE TABLE `fp rv first` (n INT)")
    mysql_query(mysql_admin, "INSERT INTO `fp rv first` VALUES (0)")
    try:
        pool = make_mysql_pool(max_size=1)
        pool.execute("UPDATE `fp rv first` SET n = n + 1")  # the pool's first statement
        assert pool.fetchval("SELECT n FROM `fp rv first`", cache_ttl=60) == 1
        pool.execute("UPDATE `fp rv first` SET n = n + 1")
        assert pool.fetchval("SELECT n FROM `fp rv first`", cache_ttl=60) == 2
    finally:
        mysql_query(mysql_admin, "DROP TABLE IF EXISTS `fp rv first`")
