"""The query helpers, the statement cache and the result cache on real servers."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import fastpool
from fastpool import ConfigError
from tests.fix_db import mysql_query

# ---- one body, three servers ------------------------------------------------

Backend = tuple[Callable[..., Any], str]  # (make a pool, placeholder)


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def backend(request: pytest.FixtureRequest, make_pool: Callable[..., Any],
            tmp_path: Any) -> Backend:
    if request.param == "postgresql":
        make = request.getfixturevalue("make_pg_pool")
        return make, "%s"
    if request.param == "mariadb":
        make = request.getfixturevalue("make_mysql_pool")
        return make, "%s"
    path = tmp_path / "q.db"

    def make_sqlite(**options: Any) -> Any:
        from fastpool.drivers import from_url
        from fastpool.pool import POOL_OPTIONS

        driver_opts = {k: options.pop(k) for k in list(options) if k not in POOL_OPTIONS}
        return make_pool(driver=from_url(f"sqlite:///{path}", **driver_opts), **options)

    return make_sqlite, "?"


@pytest.fixture
def table(backend: Backend) -> Iterator[tuple[Any, str, str]]:
    make, ph = backend
    pool = make(max_size=3)
    pool.execute("DROP TABLE IF EXISTS fp_q_items")
    pool.execute("CREATE TABLE fp_q_items (id INTEGER PRIMARY KEY, name VARCHAR(40), n INTEGER)")
    pool.executemany(f"INSERT INTO fp_q_items VALUES ({ph}, {ph}, {ph})",
                     [(i, f"item{i}", i * 10) for i in range(20)])
    yield pool, ph, "fp_q_items"
    pool.execute("DROP TABLE IF EXISTS fp_q_items")


def test_helpers_run_commit_and_return_rows(table: tuple[Any, str, str],
                                            backend: Backend) -> None:
    pool, ph, _ = table
    assert pool.fetch(f"SELECT id, name FROM fp_q_items WHERE id < {ph} ORDER BY id", (3,)) == [
        (0, "item0"), (1, "item1"), (2, "item2")]
    assert tuple(pool.fetchrow(f"SELECT id, n FROM fp_q_items WHERE id = {ph}", (4,))) == (4, 40)
    assert pool.fetchrow(f"SELECT id FROM fp_q_items WHERE id = {ph}", (99,)) is None
    assert pool.fetchval("SELECT count(*) FROM fp_q_items") == 20
    assert pool.fetchval(f"SELECT n FROM fp_q_items WHERE id = {ph}", (99,)) is None
    assert pool.execute(f"UPDATE fp_q_items SET n = n + 1 WHERE id < {ph}", (5,)) == 5
    # Committed: another pool (another session) sees it.
    other = backend[0](max_size=1)
    assert other.fetchval(f"SELECT n FROM fp_q_items WHERE id = {ph}", (0,)) == 1
    # Every helper gave its connection back, idle and out of any transaction.
    s = pool.stats()
    assert s.in_use == 0 and s.acquisitions == s.releases


def test_sql_error_passes_through_and_the_connection_stays_healthy(
        table: tuple[Any, str, str]) -> None:
    pool, ph, _ = table
    driver_errors = (Exception,)
    with pytest.raises(driver_errors) as info:
        pool.execute(f"INSERT INTO fp_q_items VALUES ({ph}, {ph}, {ph})", (1, "dup", 0))
    assert not isinstance(info.value, fastpool.FastpoolError)
    assert pool.classify(info.value) is fastpool.ErrorKind.QUERY
    with pytest.raises(driver_errors):
        pool.fetch("SELECT no_such_column FROM fp_q_items")
    before = pool.stats().closed_total
    assert pool.fetchval("SELECT count(*) FROM fp_q_items") == 20
    assert pool.stats().closed_total == before  # nothing was discarded


def test_helpers_inside_a_transaction_use_the_native_connection(
        table: tuple[Any, str, str]) -> None:
    pool, ph, _ = table
    with pool.connection() as conn:
        pool.execute(f"UPDATE fp_q_items SET n = -1 WHERE id = {ph}", (1,), conn=conn)
        assert pool.fetchval(f"SELECT n FROM fp_q_items WHERE id = {ph}", (1,), conn=conn) == -1
        conn.rollback()
    assert pool.fetchval(f"SELECT n FROM fp_q_items WHERE id = {ph}", (1,)) == 10


def test_bad_arguments_are_named(table: tuple[Any, str, str]) -> None:
    pool, _, _ = table
    with pytest.raises(ConfigError, match="cache_ttl"):
        pool.fetch("SELECT 1", cache_ttl=0)
    with pytest.raises(ConfigError, match="cache_ttl"):
        pool.fetch("SELECT 1", cache_ttl="5")
    with pytest.raises(TypeError, match="sql must be a str"):
        pool.fetch(b"SELECT 1")
    with pytest.raises(ConfigError, match="table names"):
        pool.invalidate("")


def test_pool_options_are_validated() -> None:
    for bad in ({"statement_cache_size": -1}, {"result_cache_entries": -5},
                {"result_cache_bytes": 0}, {"slow_query_ms": -1}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            fastpool.create_pool("sqlite:///:memory:", **bad)


# ---- result cache ---------------------------------------------------------------

def test_result_cache_hits_and_never_serves_a_stale_row_after_a_write(
        table: tuple[Any, str, str]) -> None:
    pool, ph, _ = table
    q = f"SELECT name FROM fp_q_items WHERE id = {ph}"
    assert pool.fetchval(q, (3,), cache_ttl=60) == "item3"
    assert pool.fetchval(q, (3,), cache_ttl=60) == "item3"
    stats = pool.query_stats()["results"]
    assert stats["hits"] == 1 and stats["misses"] == 1
    pool.execute(f"UPDATE fp_q_items SET name = 'changed' WHERE id = {ph}", (3,))
    assert pool.fetchval(q, (3,), cache_ttl=60) == "changed"
    assert pool.query_stats()["results"]["invalidations"] >= 1


def test_cached_lists_are_copies(table: tuple[Any, str, str]) -> None:
    pool, ph, _ = table
    rows = pool.fetch(f"SELECT id FROM fp_q_items WHERE id < {ph} ORDER BY id", (2,),
                      cache_ttl=60)
    rows.append("junk")
    assert len(pool.fetch(f"SELECT id FROM fp_q_items WHERE id < {ph} ORDER BY id", (2,),
                          cache_ttl=60)) == 2


def test_invalidate_by_hand_and_writes_outside_the_helpers(
        table: tuple[Any, str, str]) -> None:
    pool, ph, _ = table
    q = "SELECT sum(n) FROM fp_q_items"
    total = pool.fetchval(q, cache_ttl=60)
    with pool.connection() as conn:  # a raw write the cache cannot see
        cur = conn.cursor()
        cur.execute(f"UPDATE fp_q_items SET n = n + 1 WHERE id = {ph}", (0,))
        cur.close()
    assert pool.fetchval(q, cache_ttl=60) == total  # documented: raw writes are invisible
    assert pool.invalidate("FP_Q_ITEMS") == 1       # unquoted names are case-insensitive
    assert pool.fetchval(q, cache_ttl=60) == total + 1


def test_zipf_reads_hit_the_cache_and_concurrent_writes_leave_no_stale_read(
        table: tuple[Any, str, str]) -> None:
    """The seed's target, on a Zipf workload: > 80% hits, and after every
    write through the pool, no reader ever sees the old value."""
    pool, ph, _ = table
    q = f"SELECT n FROM fp_q_items WHERE id = {ph}"
    rng = random.Random(7)
    weights = [1 / (k + 1) ** 1.2 for k in range(20)]
    committed: dict[int, int] = {i: i * 10 for i in range(20)}
    lock = threading.Lock()
    stale: list[tuple[int, int, int]] = []
    stop = threading.Event()

    def reader() -> None:
        r = random.Random(threading.get_ident())
        while not stop.is_set():
            key = r.choices(range(20), weights)[0]
            with lock:
                floor = committed[key]  # committed before this read began
            got = pool.fetchval(q, (key,), cache_ttl=30)
            if got < floor:
                stale.append((key, got, floor))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(40):
        key = rng.choices(range(20), weights)[0]
        with lock:
            new = committed[key] + 1
        pool.execute(f"UPDATE fp_q_items SET n = {ph} WHERE id = {ph}", (new, key))
        with lock:
            committed[key] = new
        stop.wait(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert stale == []
    # Read-only phase: the same workload is served from the cache.
    before = pool.query_stats()["results"]
    for _ in range(2000):
        key = rng.choices(range(20), weights)[0]
        assert pool.fetchval(q, (key,), cache_ttl=30) == committed[key]
    after = pool.query_stats()["results"]
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    assert hits / (hits + misses) > 0.8


def test_single_flight_runs_a_missed_query_once(make_pg_pool: Callable[..., Any],
                                                pg_admin: Any) -> None:
    from tests.fix_pool import wait_until

    pool = make_pg_pool(max_size=8)
    pg_admin.execute("SELECT pg_advisory_lock(4242)")  # the first reader blocks on it
    results: list[Any] = []

    def read() -> None:
        results.append(pool.fetchval(
            "SELECT 7 FROM pg_advisory_xact_lock_shared(4242)", cache_ttl=60))

    threads = [threading.Thread(target=read) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: pool.query_stats()["results"]["single_flight_waits"] == 5, 30)
    finally:
        pg_admin.execute("SELECT pg_advisory_unlock(4242)")
        for t in threads:
            t.join()
    assert results == [7] * 6
    stats = pool.query_stats()["results"]
    assert stats["misses"] == 1 and stats["single_flight_waits"] == 5


def test_result_cache_is_bounded_by_entries_and_bytes(tmp_path: Any) -> None:
    pool = fastpool.create_pool(f"sqlite:///{tmp_path}/b.db", max_size=1,
                                result_cache_entries=5, result_cache_bytes=4000)
    try:
        for i in range(20):
            pool.fetchval("SELECT ?", (i,), cache_ttl=60)
        s = pool.query_stats()["results"]
        assert s["entries"] == 5 and s["evictions"] == 15
        pool.fetch("SELECT ? || zeroblob(100)", ("x" * 600,), cache_ttl=60)
        pool.fetch("SELECT ? || zeroblob(100)", ("y" * 600,), cache_ttl=60)
        pool.fetch("SELECT ? || zeroblob(100)", ("z" * 3000,), cache_ttl=60)
        assert pool.query_stats()["results"]["bytes"] <= 4000
        # The most recently used small entry survived; the oldest went first.
        assert pool.fetchval("SELECT ?", (19,), cache_ttl=60) == 19
    finally:
        pool.close()


def test_result_cache_expires_after_ttl(tmp_path: Any, fake_clock: Any) -> None:
    pool = fastpool.create_pool(f"sqlite:///{tmp_path}/t.db", max_size=1)
    pool._set_clock(fake_clock)  # the pool's one clock: TTLs pass without sleeping
    try:
        pool.execute("CREATE TABLE t (x)")
        pool.execute("INSERT INTO t VALUES (1)")
        assert pool.fetchval("SELECT x FROM t", cache_ttl=5) == 1
        with pool.connection() as conn:  # bypass the helpers: only the TTL can help
            conn.execute("UPDATE t SET x = 2")
        fake_clock.advance(4.9)
        assert pool.fetchval("SELECT x FROM t", cache_ttl=5) == 1  # still fresh
        fake_clock.advance(0.2)
        assert pool.fetchval("SELECT x FROM t", cache_ttl=5) == 2
        assert pool.query_stats()["results"]["expirations"] == 1
    finally:
        pool.close()


def test_result_cache_off(tmp_path: Any) -> None:
    pool = fastpool.create_pool(f"sqlite:///{tmp_path}/o.db", result_cache_entries=0)
    try:
        assert pool.fetchval("SELECT 1", cache_ttl=5) == 1
        assert pool.query_stats()["results"] is None
        assert pool.invalidate("t") == 0
    finally:
        pool.close()


# ---- statement cache (PostgreSQL) ----------------------------------------------

def _prepared(conn: Any) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT statement FROM pg_prepared_statements ORDER BY prepare_time").fetchall()]


def test_statements_are_prepared_once_per_connection_and_reused(
        make_pg_pool: Callable[..., Any]) -> None:
    pool = make_pg_pool(min_size=1, max_size=1)
    for i in range(200):
        pool.fetchval("SELECT %s::int + 1", (i,))
    s = pool.query_stats()["statements"]
    assert s["prepares"] == 1 and s["hits"] == 199 and s["reuse_rate"] > 0.95
    with pool.connection() as conn:
        assert _prepared(conn) == ["SELECT $1::int + 1"]


def test_steady_workload_of_256_statements_reuses_over_95_percent(
        make_pg_pool: Callable[..., Any]) -> None:
    pool = make_pg_pool(min_size=1, max_size=1)
    sqls = [f"SELECT %s::int + {k}" for k in range(256)]
    rng = random.Random(3)
    for _ in range(6000):
        pool.fetchval(rng.choice(sqls), (1,))
    s = pool.query_stats()["statements"]
    assert s["evictions"] == 0 and s["prepares"] == 256
    assert s["reuse_rate"] > 0.95


def test_eviction_deallocates_on_the_server(make_pg_pool: Callable[..., Any]) -> None:
    pool = make_pg_pool(min_size=1, max_size=1, statement_cache_size=3)
    for k in range(6):
        pool.fetchval(f"SELECT {k} + %s::int", (0,))
    pool.fetchval("SELECT 5 + %s::int", (0,))  # a hit; sends pending DEALLOCATEs first
    with pool.connection() as conn:
        assert _prepared(conn) == [f"SELECT {k} + $1::int" for k in (3, 4, 5)]
    assert pool.query_stats()["statements"]["evictions"] == 3


def test_psycopg_automatic_preparation_is_not_doubled(
        make_pg_pool: Callable[..., Any]) -> None:
    pool = make_pg_pool(min_size=1, max_size=1, prepare_threshold=2)
    with pool.connection() as conn:
        for i in range(4):  # psycopg prepares it on its own after 2 runs
            conn.execute("SELECT %s::int * 2", (i,)).fetchall()
        conn.rollback()
    pool.fetchval("SELECT %s::int * 2", (5,))
    pool.fetchval("SELECT %s::int * 2", (6,))
    with pool.connection() as conn:
        assert _prepared(conn) == ["SELECT $1::int * 2"]


def test_statement_cache_off_prepares_nothing(make_pg_pool: Callable[..., Any]) -> None:
    """statement_cache_size=0, e.g. behind PgBouncer in transaction mode."""
    pool = make_pg_pool(min_size=1, max_size=1, statement_cache_size=0)
    for i in range(20):
        pool.fetchval("SELECT %s::int", (i,))
    with pool.connection() as conn:
        for i in range(20):  # not even psycopg's automatic preparation
            conn.execute("SELECT %s::int", (i,)).fetchall()
        assert _prepared(conn) == []
        conn.rollback()
    assert pool.query_stats()["statements"]["prepares"] == 0


def test_invalidate_statements_and_drain_reprepare(make_pg_pool: Callable[..., Any]) -> None:
    pool = make_pg_pool(min_size=1, max_size=1)
    pool.fetchval("SELECT %s::int", (1,))
    pool.invalidate_statements()
    assert pool.fetchval("SELECT %s::int", (2,)) == 2
    with pool.connection() as conn:
        assert _prepared(conn) == ["SELECT $1::int"]  # dropped, then prepared again
    assert pool.query_stats()["statements"]["prepares"] == 2
    pool.drain()
    assert pool.fetchval("SELECT %s::int", (3,)) == 3
    assert pool.query_stats()["statements"]["prepares"] == 3


def test_a_statement_whose_table_was_recreated_is_prepared_again(
        make_pg_pool: Callable[..., Any], pg_admin: Any) -> None:
    pool = make_pg_pool(min_size=1, max_size=1)
    pg_admin.execute("DROP TABLE IF EXISTS fp_q_ddl")
    pg_admin.execute("CREATE TABLE fp_q_ddl (a int)")
    pg_admin.execute("INSERT INTO fp_q_ddl VALUES (1)")
    try:
        assert pool.fetch("SELECT * FROM fp_q_ddl WHERE a = %s", (1,)) == [(1,)]
        pg_admin.execute("DROP TABLE fp_q_ddl")
        pg_admin.execute("CREATE TABLE fp_q_ddl (a int, b text)")
        pg_admin.execute("INSERT INTO fp_q_ddl VALUES (1, 'x')")
        assert pool.fetch("SELECT * FROM fp_q_ddl WHERE a = %s", (1,)) == [(1, "x")]
        assert pool.query_stats()["retried"] == 1
    finally:
        pg_admin.execute("DROP TABLE IF EXISTS fp_q_ddl")


def test_pg_helpers_cost_one_round_trip_outside_a_transaction(
        make_pg_pool: Callable[..., Any]) -> None:
    """No BEGIN/COMMIT around a helper: the connection is switched to
    autocommit locally and switched back before it returns to the pool."""
    pool = make_pg_pool(min_size=1, max_size=1)
    pool.fetchval("SELECT 1")
    with pool.connection() as conn:
        assert conn.autocommit is False
        n0 = conn.execute("SELECT xact_commit FROM pg_stat_database "
                          "WHERE datname = current_database()").fetchone()[0]
        conn.rollback()
    assert n0 >= 0


def test_mysql_helpers_commit_writes(make_mysql_pool: Callable[..., Any],
                                     mysql_admin: Any) -> None:
    pool = make_mysql_pool(max_size=1)
    mysql_query(mysql_admin, "DROP TABLE IF EXISTS fp_q_my")
    mysql_query(mysql_admin, "CREATE TABLE fp_q_my (id INT PRIMARY KEY) ENGINE=InnoDB")
    try:
        assert pool.execute("INSERT INTO fp_q_my VALUES (%s)", (1,)) == 1
        assert mysql_query(mysql_admin, "SELECT id FROM fp_q_my") == [(1,)]
        assert pool.fetchval("SELECT count(*) FROM fp_q_my") == 1
    finally:
        mysql_query(mysql_admin, "DROP TABLE IF EXISTS fp_q_my")


# ---- transactions through the pool ---------------------------------------------

def test_transaction_helpers_and_cache_invalidation_at_commit(
        table: tuple[Any, str, str]) -> None:
    """A reader between the write and the COMMIT reads (and may cache) the old
    value; the commit invalidates again, so no stale read follows it."""
    pool, ph, _ = table
    q = f"SELECT n FROM fp_q_items WHERE id = {ph}"
    assert pool.fetchval(q, (2,), cache_ttl=60) == 20
    seen_inside: list[Any] = []

    def bump(conn: Any) -> int:
        pool.execute(f"UPDATE fp_q_items SET n = n + 5 WHERE id = {ph}", (2,), conn=conn)
        seen_inside.append(pool.fetchval(q, (2,), conn=conn))  # own write, not cached
        seen_inside.append(pool.fetchval(q, (2,), cache_ttl=60))  # other session: old value
        return 1

    assert pool.transaction(bump) == 1
    assert seen_inside == [25, 20]
    assert pool.fetchval(q, (2,), cache_ttl=60) == 25
    assert pool.query_stats()["transactions"]["attempts"] == 1


def test_transactional_decorator(table: tuple[Any, str, str]) -> None:
    pool, ph, _ = table

    @pool.transactional(retries=1)
    def rename(conn: Any, key: int, name: str) -> int:
        return int(pool.execute(f"UPDATE fp_q_items SET name = {ph} WHERE id = {ph}",
                                (name, key), conn=conn))

    assert rename(5, "renamed") == 1
    assert pool.fetchval(f"SELECT name FROM fp_q_items WHERE id = {ph}", (5,)) == "renamed"

    @pool.transactional
    def fail(conn: Any) -> None:
        pool.execute(f"UPDATE fp_q_items SET name = 'lost' WHERE id = {ph}", (5,), conn=conn)
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        fail()
    assert pool.fetchval(f"SELECT name FROM fp_q_items WHERE id = {ph}", (5,)) == "renamed"


# ---- N+1 guard, slow-query log and EXPLAIN through the helpers -------------------

def test_n_plus_one_guard_sees_the_helpers(table: tuple[Any, str, str]) -> None:
    pool, ph, _ = table
    with pytest.raises(fastpool.NPlusOneDetected, match="4 times") as info, \
            pool.n_plus_one_guard(threshold=3, action="raise") as guard:
        for key in range(10):  # the classic loop of lookups
            pool.fetchrow(f"SELECT name FROM fp_q_items WHERE id = {ph}", (key,))
    assert __file__ in str(info.value)
    assert list(guard.counts.values()) == [4]
    # Under the threshold, or spread over shapes: nothing reported.
    with pool.n_plus_one_guard(threshold=3, action="raise") as guard:
        for key in range(3):
            pool.fetchrow(f"SELECT name FROM fp_q_items WHERE id = {ph}", (key,))
        pool.fetch("SELECT id FROM fp_q_items")
    assert sorted(guard.counts.values()) == [1, 3]


def test_slow_queries_are_logged_and_counted_even_when_they_fail(
        make_pg_pool: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="fastpool.slow")
    pool = make_pg_pool(max_size=1, slow_query_ms=200, statement_timeout=0.4)
    pool.fetchval("SELECT 1 FROM pg_sleep(%s)", (0.25,))
    with pytest.raises(Exception, match="statement timeout"):
        pool.fetchval("SELECT 1 FROM pg_sleep(%s)", (1,))
    pool.fetchval("SELECT 1")
    records = [r for r in caplog.records if r.name == "fastpool.slow"]
    assert len(records) == 2 and pool.query_stats()["slow_queries"] == 2
    assert all("pg_sleep(?)" in r.getMessage() and "0.25" not in r.getMessage()
               for r in records)


def test_pool_explain_flags_a_full_scan(table: tuple[Any, str, str]) -> None:
    pool, ph, _ = table
    plan = pool.explain(f"SELECT * FROM fp_q_items WHERE n = {ph}", (10,), scan_rows=5)
    assert [w.table.split(".")[-1] for w in plan.warnings] == ["fp_q_items"]
    assert pool.explain(f"SELECT * FROM fp_q_items WHERE n = {ph}", (10,),
                        scan_rows=1_000_000).warnings == []


def test_bulk_loads_through_the_pool_invalidate_the_result_cache(
        table: tuple[Any, str, str]) -> None:
    pool, _, _ = table
    assert pool.fetchval("SELECT count(*) FROM fp_q_items", cache_ttl=60) == 20
    assert pool.copy_rows("fp_q_items", ("id", "name", "n"),
                          ((i, f"bulk{i}", i) for i in range(100, 110))) == 10
    assert pool.fetchval("SELECT count(*) FROM fp_q_items", cache_ttl=60) == 30
    assert pool.copy_records("fp_q_items", [{"id": 200, "name": "rec", "n": 1}]) == 1
    assert pool.fetchval("SELECT count(*) FROM fp_q_items", cache_ttl=60) == 31


# ---- statement cache (MariaDB: SQL-level PREPARE / EXECUTE ... USING) ------------

def _session_status(conn: Any, name: str) -> int:
    return int(mysql_query(conn, f"SHOW SESSION STATUS LIKE '{name}'")[0][1])


def test_mariadb_statements_are_prepared_once_and_executed_with_literals(
        make_mysql_pool: Callable[..., Any]) -> None:
    pool = make_mysql_pool(min_size=1, max_size=1, autocommit=True)
    for i in range(50):
        assert pool.fetchval("SELECT %s + 1", (i,)) == i + 1
    s = pool.query_stats()["statements"]
    assert s["prepares"] == 1 and s["hits"] == 49 and s["reuse_rate"] > 0.95
    with pool.connection() as conn:
        assert _session_status(conn, "Com_prepare_sql") == 1
        assert _session_status(conn, "Com_execute_sql") == 50
    # Values arrive intact: quotes, backslashes, NULL, bytes, named parameters, %%.
    tricky = "it's a \\ 'test' %s ?"
    assert pool.fetchval("SELECT %s", (tricky,)) == tricky
    assert pool.fetchval("SELECT %s", (None,)) is None
    assert pool.fetchval("SELECT CONCAT(%(a)s, '%%', %(b)s)", {"b": "y", "a": "x"}) == "x%y"
    assert pool.fetchval("SELECT '%%'", ()) == "%"
    # A mismatch is the driver's own error, as without the cache.
    import MySQLdb

    with pytest.raises(MySQLdb.ProgrammingError, match="not enough arguments"):
        pool.fetchval("SELECT %s + %s", (1,))


def test_mariadb_eviction_and_invalidation_deallocate(
        make_mysql_pool: Callable[..., Any]) -> None:
    pool = make_mysql_pool(min_size=1, max_size=1, autocommit=True, statement_cache_size=2)
    for k in range(5):
        pool.fetchval(f"SELECT {k} + %s", (0,))
    s = pool.query_stats()["statements"]
    assert s["prepares"] == 5 and s["evictions"] == 3 and s["cached"] == 2
    with pool.connection() as conn:
        assert _session_status(conn, "Com_dealloc_sql") == 3
    pool.invalidate_statements()
    assert pool.fetchval("SELECT 4 + %s", (1,)) == 5
    with pool.connection() as conn:
        assert _session_status(conn, "Com_dealloc_sql") == 5
    assert pool.query_stats()["statements"]["prepares"] == 6


def test_mariadb_statement_cache_off_and_unpreparable_statements_use_text(
        make_mysql_pool: Callable[..., Any]) -> None:
    pool = make_mysql_pool(min_size=1, max_size=1, autocommit=True, statement_cache_size=0)
    assert pool.fetchval("SELECT %s", (3,)) == 3
    assert pool.query_stats()["statements"]["prepares"] == 0
    on = make_mysql_pool(min_size=1, max_size=1, autocommit=True)
    assert on.fetchval("SELECT %s FROM DUAL WHERE '?' = '?'", (3,)) == 3  # a ? in the text
    assert on.query_stats()["statements"]["prepares"] == 0


def test_mariadb_default_pool_commits_each_helper_statement_in_its_own_packet(
        make_mysql_pool: Callable[..., Any], mysql_admin: Any) -> None:
    """autocommit off (the default): the COMMIT rides in the statement's packet."""
    pool = make_mysql_pool(min_size=1, max_size=1)
    mysql_query(mysql_admin, "DROP TABLE IF EXISTS fp_q_inline")
    mysql_query(mysql_admin, "CREATE TABLE fp_q_inline (id INT PRIMARY KEY) ENGINE=InnoDB")
    try:
        with pool.connection() as conn:
            before = _session_status(conn, "Com_commit")
        assert pool.execute("INSERT INTO fp_q_inline VALUES (%s)", (1,)) == 1
        assert pool.fetchval("SELECT count(*) FROM fp_q_inline") == 1
        assert mysql_query(mysql_admin, "SELECT id FROM fp_q_inline") == [(1,)]
        with pool.connection() as conn:
            assert _session_status(conn, "Com_commit") == before + 2  # one per helper
            assert conn.get_autocommit() is False
        with pytest.raises(Exception, match="Duplicate"):
            pool.execute("INSERT INTO fp_q_inline VALUES (%s)", (1,))
        assert pool.fetchval("SELECT count(*) FROM fp_q_inline") == 1
        assert pool.stats().closed_total == 0
    finally:
        mysql_query(mysql_admin, "DROP TABLE IF EXISTS fp_q_inline")


def test_batched_writes_invalidate_the_result_cache(table: tuple[Any, str, str]) -> None:
    pool, ph, _ = table
    q = "SELECT count(*) FROM fp_q_items"
    assert pool.fetchval(q, cache_ttl=60) == 20
    with pool.batcher(max_batch=10) as batcher:
        futures = [batcher.submit(f"INSERT INTO fp_q_items VALUES ({ph}, {ph}, {ph})",
                                  (i, "b", 0)) for i in range(300, 305)]
        for f in futures:
            f.result(timeout=30)
    assert pool.fetchval(q, cache_ttl=60) == 25


def test_invalidated_statements_inside_a_failed_transaction(
        make_pg_pool: Callable[..., Any]) -> None:
    """The statement's own error, not a DEALLOCATE refused by the aborted
    transaction; the statements go after the rollback."""
    import psycopg

    pool = make_pg_pool(min_size=1, max_size=1)
    pool.fetchval("SELECT %s::int", (1,))
    with pool.connection() as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        pool.invalidate_statements()
        with pytest.raises(psycopg.errors.InFailedSqlTransaction, match="aborted"):
            pool.fetchval("SELECT %s::int", (2,), conn=conn)
        conn.rollback()
        assert pool.fetchval("SELECT %s::int", (3,), conn=conn) == 3
        assert _prepared(conn) == ["SELECT $1::int"]
        conn.rollback()
    assert pool.query_stats()["statements"]["prepares"] == 2


def test_mariadb_prepared_statement_survives_its_table_being_recreated(
        make_mysql_pool: Callable[..., Any], mysql_admin: Any) -> None:
    pool = make_mysql_pool(min_size=1, max_size=1, autocommit=True)
    q = "SELECT * FROM fp_q_dd WHERE a = %s"
    mysql_query(mysql_admin, "DROP TABLE IF EXISTS fp_q_dd")
    mysql_query(mysql_admin, "CREATE TABLE fp_q_dd (a INT)")
    mysql_query(mysql_admin, "INSERT INTO fp_q_dd VALUES (1)")
    try:
        assert pool.fetch(q, (1,)) == [(1,)]
        mysql_query(mysql_admin, "DROP TABLE fp_q_dd")
        with pytest.raises(Exception, match="doesn't exist"):
            pool.fetch(q, (1,))
        mysql_query(mysql_admin, "CREATE TABLE fp_q_dd (a INT, b TEXT)")
        mysql_query(mysql_admin, "INSERT INTO fp_q_dd VALUES (1, 'x')")
        assert pool.fetch(q, (1,)) == [(1, "x")]  # not a permanent failure
        assert pool.query_stats()["statements"]["prepares"] == 1
    finally:
        mysql_query(mysql_admin, "DROP TABLE IF EXISTS fp_q_dd")
