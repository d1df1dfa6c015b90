"""explain() on the machine's real PostgreSQL, MariaDB and SQLite; and the
slow-query log on a real slow PostgreSQL statement.

Each backend gets a 5,000-row table without an index on ``k``: a lookup by
``k`` is a full scan worth a warning until the index exists.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

import pytest

from fastpool import ConfigError
from fastpool.query.explain import AnalyzeRefused, Plan, ScanFinding, explain
from fastpool.query.observe import QueryObserver
from tests.fix_db import mysql_query

ROWS = 5000


def assert_one_scan_of(plan: Plan, table: str) -> ScanFinding:
    (finding,) = plan.warnings
    assert finding.table == table
    # An estimate (PostgreSQL's planner guesses rows per page of a table it
    # never analyzed), above the default scan_rows of 1,000.
    assert 1000 < finding.rows < 10 * ROWS
    assert table in finding.message and f"{finding.rows:,} rows" in finding.message
    assert str(finding) in str(plan)
    return finding


# ---- PostgreSQL -------------------------------------------------------------------

@pytest.fixture
def pg_table(pg_admin: Any) -> Any:
    pg_admin.execute("DROP TABLE IF EXISTS fp_obs_scan")
    pg_admin.execute("CREATE TABLE fp_obs_scan (id int PRIMARY KEY, k int NOT NULL, note text)")
    pg_admin.execute("INSERT INTO fp_obs_scan SELECT g, g, 'n' || g "
                     f"FROM generate_series(1, {ROWS}) g")
    yield "fp_obs_scan"
    pg_admin.execute("DROP TABLE IF EXISTS fp_obs_scan")


def pg_count(admin: Any) -> int:
    return int(admin.execute("SELECT count(*) FROM fp_obs_scan").fetchone()[0])


def test_pg_flags_a_seq_scan_of_a_big_table_until_the_lookup_has_an_index(
        make_pg_pool, pg_admin, pg_table):
    pool = make_pg_pool(max_size=1)
    plan = explain(pool, "SELECT * FROM fp_obs_scan WHERE k = %s", (42,))
    assert (plan.database, plan.analyzed) == ("postgresql", False)
    assert plan.plan[0]["Plan"]["Node Type"] == "Seq Scan"  # the parsed JSON
    assert plan.text.startswith("Seq Scan on public.fp_obs_scan")
    finding = assert_one_scan_of(plan, "public.fp_obs_scan")
    assert "Filter: (fp_obs_scan.k = " in plan.text and "fp_obs_scan.k = " in finding.message

    pg_admin.execute("CREATE INDEX fp_obs_scan_k ON fp_obs_scan (k)")
    pg_admin.execute("ANALYZE fp_obs_scan")
    plan = explain(pool, "SELECT * FROM fp_obs_scan WHERE k = %s", (42,))
    assert plan.warnings == []
    assert "fp_obs_scan_k" in plan.text


def test_pg_tables_under_scan_rows_are_not_flagged(make_pg_pool, pg_table):
    pool = make_pg_pool(max_size=1)
    assert explain(pool, "SELECT * FROM fp_obs_scan", scan_rows=100_000).warnings == []
    assert len(explain(pool, "SELECT * FROM fp_obs_scan", scan_rows=100).warnings) == 1


@pytest.mark.parametrize("autocommit", [False, True])
def test_pg_explain_analyze_of_a_delete_leaves_the_rows_in_place(
        make_pg_pool, pg_admin, pg_table, autocommit):
    pool = make_pg_pool(max_size=1, autocommit=autocommit)
    plan = explain(pool, "DELETE FROM fp_obs_scan WHERE k > %s", (10,), analyze=True)
    assert plan.analyzed
    delete = plan.plan[0]["Plan"]
    assert delete["Operation"] == "Delete"
    assert delete["Plans"][0]["Actual Rows"] == ROWS - 10  # it did run...
    assert "actual time=" in plan.text and "Execution Time" in plan.text
    assert_one_scan_of(plan, "public.fp_obs_scan")
    assert pg_count(pg_admin) == ROWS  # ...and was rolled back
    with pool.connection() as conn:  # the pooled connection is idle again
        assert conn.pgconn.transaction_status == 0
        assert conn.execute("SELECT count(*) FROM fp_obs_scan").fetchone()[0] == ROWS


def test_pg_sql_errors_pass_through_and_the_connection_stays_in_the_pool(
        make_pg_pool, pg_table):
    import psycopg

    pool = make_pg_pool(max_size=1)
    with pytest.raises(psycopg.errors.UndefinedTable):
        explain(pool, "SELECT * FROM fp_obs_missing")
    with pytest.raises(psycopg.errors.DivisionByZero):
        explain(pool, "SELECT k / 0 FROM fp_obs_scan", analyze=True)
    assert explain(pool, "SELECT 1").warnings == []
    stats = pool.stats()
    assert (stats.opened, stats.closed_total) == (1, 0)  # one connection, never discarded


def test_pg_explain_ignores_the_pools_row_factory(make_pg_pool, pg_table):
    from psycopg.rows import dict_row

    pool = make_pg_pool(max_size=1, row_factory=dict_row)
    assert_one_scan_of(explain(pool, "SELECT * FROM fp_obs_scan WHERE note = %s", ("n7",)),
                       "public.fp_obs_scan")


def test_pg_slow_query_is_logged_without_its_parameter_values(make_pg_pool, caplog):
    caplog.set_level(logging.WARNING, logger="fastpool.slow")
    pool = make_pg_pool(max_size=1, name="fp_obs_slow")
    observer = QueryObserver(pool.name, slow_query_ms=10)
    sql = "SELECT pg_sleep(0.05), %s::text"
    start = time.perf_counter_ns()
    with pool.connection() as conn:
        conn.execute(sql, ("hunter2-secret",)).fetchall()
    observer.observe(sql, 1, time.perf_counter_ns() - start)
    (record,) = [r for r in caplog.records if r.name == "fastpool.slow"]
    message = record.getMessage()
    assert "SELECT pg_sleep(?), ?::text" in message
    assert "'fp_obs_slow'" in message and "1 parameter" in message
    assert f"{__file__}:" in message and "in test_pg_slow_query_is_logged" in message
    assert "hunter2" not in message
    assert observer.slow_queries == 1


# ---- MariaDB ----------------------------------------------------------------------

@pytest.fixture
def mysql_table(mysql_admin: Any) -> Any:
    tables = ("fp_obs_scan", "fp_obs_myisam")
    for table, engine in zip(tables, ("InnoDB", "MyISAM"), strict=True):
        mysql_query(mysql_admin, f"DROP TABLE IF EXISTS {table}")
        mysql_query(mysql_admin, f"CREATE TABLE {table} (id INT PRIMARY KEY, k INT NOT NULL, "
                                 f"note VARCHAR(20)) ENGINE={engine}")
        mysql_query(mysql_admin, f"INSERT INTO {table} SELECT seq, seq, CONCAT('n', seq) "
                                 f"FROM seq_1_to_{ROWS}")
    yield "fp_obs_scan"
    for table in tables:
        mysql_query(mysql_admin, f"DROP TABLE IF EXISTS {table}")


def mysql_count(admin: Any, table: str = "fp_obs_scan") -> int:
    return int(mysql_query(admin, f"SELECT count(*) FROM {table}")[0][0])


def test_mariadb_flags_a_full_scan_of_a_big_table_until_the_lookup_has_an_index(
        make_mysql_pool, mysql_admin, mysql_table):
    pool = make_mysql_pool(max_size=1)
    plan = explain(pool, "SELECT * FROM fp_obs_scan AS s WHERE k = %s", (42,))
    assert (plan.database, plan.analyzed) == ("mysql", False)
    assert "access_type=ALL" in plan.text
    finding = assert_one_scan_of(plan, "fp_obs_scan")
    assert "(as s)" in finding.message and "k = 42" in finding.message

    mysql_query(mysql_admin, "CREATE INDEX fp_obs_scan_k ON fp_obs_scan (k)")
    plan = explain(pool, "SELECT * FROM fp_obs_scan AS s WHERE k = %s", (42,))
    assert plan.warnings == []
    assert "key=fp_obs_scan_k" in plan.text


@pytest.mark.parametrize("autocommit", [False, True])
def test_mariadb_explain_analyze_of_a_delete_leaves_the_rows_in_place(
        make_mysql_pool, mysql_admin, mysql_table, autocommit):
    pool = make_mysql_pool(max_size=1, autocommit=autocommit)
    plan = explain(pool, "DELETE FROM fp_obs_scan WHERE k > %s", (10,), analyze=True)
    assert plan.analyzed
    table = plan.plan["query_block"]["table"]
    assert table["r_rows"] == ROWS  # it did run...
    assert_one_scan_of(plan, "fp_obs_scan")
    assert mysql_count(mysql_admin) == ROWS  # ...and was rolled back


def test_mariadb_refuses_to_analyze_a_write_it_could_not_roll_back(
        make_mysql_pool, mysql_admin, mysql_table):
    pool = make_mysql_pool(max_size=1)
    with pytest.raises(AnalyzeRefused, match="fp_obs_myisam uses the MyISAM engine"):
        explain(pool, "DELETE FROM fp_obs_myisam WHERE k > %s", (10,), analyze=True)
    assert mysql_count(mysql_admin, "fp_obs_myisam") == ROWS
    # Without analyze nothing runs: allowed; reads may be analyzed.
    assert_one_scan_of(explain(pool, "DELETE FROM fp_obs_myisam WHERE k > %s", (10,)),
                       "fp_obs_myisam")
    plan = explain(pool, "SELECT count(*) FROM fp_obs_myisam WHERE note = 'x'", analyze=True)
    assert plan.analyzed and mysql_count(mysql_admin, "fp_obs_myisam") == ROWS


def test_mariadb_sql_errors_pass_through_and_the_connection_stays_in_the_pool(
        make_mysql_pool, mysql_table):
    import MySQLdb

    pool = make_mysql_pool(max_size=1)
    with pytest.raises(MySQLdb.ProgrammingError) as info:
        explain(pool, "SELECT * FROM fp_obs_missing")
    assert info.value.args[0] == 1146  # no such table
    with pytest.raises(MySQLdb.OperationalError, match="Unknown column"):
        explain(pool, "DELETE FROM fp_obs_scan WHERE nope = 1", analyze=True)
    assert len(explain(pool, "SELECT * FROM fp_obs_scan WHERE note = 'x'").warnings) == 1
    stats = pool.stats()
    assert (stats.opened, stats.closed_total) == (1, 0)


# ---- SQLite -----------------------------------------------------------------------

@pytest.fixture
def sqlite_pool(make_pool: Any) -> Any:
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE fp_obs_scan (id INTEGER PRIMARY KEY, k INT, note TEXT)")
        conn.executemany("INSERT INTO fp_obs_scan VALUES (?, ?, ?)",
                         [(i, i, f"n{i}") for i in range(1, ROWS + 1)])
    return pool


def test_sqlite_flags_a_full_scan_until_the_lookup_has_an_index(sqlite_pool):
    plan = explain(sqlite_pool, "SELECT * FROM fp_obs_scan WHERE k = ?", (42,))
    assert (plan.database, plan.analyzed) == ("sqlite", False)
    assert plan.text.splitlines()[0] == "QUERY PLAN" and "SCAN fp_obs_scan" in plan.text
    finding = assert_one_scan_of(plan, "fp_obs_scan")
    assert finding.rows == ROWS  # counted
    with sqlite_pool.connection() as conn:
        conn.execute("CREATE INDEX fp_obs_scan_k ON fp_obs_scan (k)")
    plan = explain(sqlite_pool, "SELECT * FROM fp_obs_scan AS s WHERE k = ?", (42,))
    assert plan.warnings == [] and "fp_obs_scan_k" in plan.text
    assert explain(sqlite_pool, "SELECT * FROM fp_obs_scan", scan_rows=ROWS).warnings == []


def test_sqlite_has_no_analyze_and_its_errors_pass_through(sqlite_pool):
    with pytest.raises(NotImplementedError, match="SQLite has no EXPLAIN ANALYZE"):
        explain(sqlite_pool, "DELETE FROM fp_obs_scan", analyze=True)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        explain(sqlite_pool, "SELECT * FROM fp_obs_missing")
    with sqlite_pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM fp_obs_scan").fetchone()[0] == ROWS
    assert sqlite_pool.stats().closed_total == 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sql": ""}, "sql must be a non-empty string"),
    ({"sql": None}, "sql must be a non-empty string"),
    ({"scan_rows": -1}, "scan_rows must be an integer >= 0"),
    ({"scan_rows": 1.5}, "scan_rows must be an integer >= 0"),
    ({"analyze": "yes"}, "analyze must be True or False"),
])
def test_bad_arguments_are_config_errors(sqlite_pool, kwargs, message):
    args = {"sql": "SELECT 1", **kwargs}
    with pytest.raises(ConfigError, match=message):
        explain(sqlite_pool, args.pop("sql"), **args)
