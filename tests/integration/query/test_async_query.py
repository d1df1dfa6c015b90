"""The query helpers on an asyncio pool (``await pool.execute / executemany /
fetch / fetchrow / fetchval``, ``await pool.explain``), the result cache, the
statement cache, the N+1 guard and the slow-query log, on the real PostgreSQL
(psycopg's AsyncConnection and asyncpg), MariaDB (asyncmy) and SQLite
(aiosqlite), on both cores (``run_pools``). Tables are named ``fp_aq_*``.
Tests are plain functions running the event loop themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import fastpool
from fastpool.query.observe import NPlusOneDetected
from tests.fix_db import MYSQL_URL, PG_URL, need_driver

Make = Callable[..., Awaitable[Any]]
Run = Callable[..., Any]

CLIENTS = {
    "psycopg": ("psycopg", "postgres"),
    "asyncpg": ("asyncpg", "asyncpg"),
    "asyncmy": ("asyncmy", "mysql"),
    "aiosqlite": ("aiosqlite", "sqlite"),
}


class Client:
    """One asyncio client library: its URL and its placeholders."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.server = {"psycopg": "postgresql", "asyncpg": "postgresql",
                       "asyncmy": "mysql"}.get(name, "sqlite")

    def ph(self, i: int = 1) -> str:
        return {"asyncpg": f"${i}", "aiosqlite": "?"}.get(self.name, "%s")

    async def pool(self, make: Make, **options: Any) -> Any:
        return await make(url=self.url, **options)

    async def table(self, pool: Any, name: str = "fp_aq_items", rows: int = 20) -> str:
        await pool.execute(f"DROP TABLE IF EXISTS {name}")
        await pool.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name VARCHAR(40), "
                           "n INTEGER)")
        p1, p2, p3 = self.ph(1), self.ph(2), self.ph(3)
        await pool.executemany(f"INSERT INTO {name} VALUES ({p1}, {p2}, {p3})",
                               [(i, f"item{i}", i * 10) for i in range(rows)])
        return name


@pytest.fixture(params=list(CLIENTS))
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Client:
    module, extra = CLIENTS[request.param]
    need_driver(module, extra)
    name = str(request.param)
    if name in ("psycopg", "asyncpg"):
        request.getfixturevalue("pg_url")  # skips (or fails under CI) without the server
        url = PG_URL if name == "psycopg" else PG_URL.replace(
            "postgresql://", "postgresql+asyncpg://", 1)
    elif name == "asyncmy":
        request.getfixturevalue("mysql_url")
        url = MYSQL_URL
    else:
        url = f"sqlite:///{tmp_path / 'aq.db'}"
    return Client(name, url)


def rows(result: Any) -> list[tuple[Any, ...]]:
    """asyncpg's Records (and any row type) as tuples."""
    return [tuple(r) for r in result]


# ---- the helpers ----------------------------------------------------------------------

def test_helpers_return_rows_and_commit(client: Client, run_pools: Run) -> None:
    async def body(make: Make) -> None:
        pool = await client.pool(make, max_size=3)
        t = await client.table(pool)
        ph = client.ph
        try:
            assert rows(await pool.fetch(f"SELECT id, name FROM {t} WHERE id < {ph()} "
                                         "ORDER BY id", (3,))) == [
                (0, "item0"), (1, "item1"), (2, "item2")]
            assert tuple(await pool.fetchrow(f"SELECT id, n FROM {t} WHERE id = {ph()}",
                                             (4,))) == (4, 40)
            assert await pool.fetchrow(f"SELECT id FROM {t} WHERE id = {ph()}", (99,)) is None
            assert await pool.fetchval(f"SELECT count(*) FROM {t}") == 20
            assert await pool.fetchval(f"SELECT n FROM {t} WHERE id = {ph()}", (99,)) is None
            assert await pool.execute(f"UPDATE {t} SET n = n + 1 WHERE id < {ph()}", (5,)) == 5
            # executemany: rows affected (asyncpg does not report them: -1)
            many = await pool.executemany(f"UPDATE {t} SET n = 0 WHERE id = {ph()}",
                                          [(10,), (11,)])
            assert many == (-1 if client.name == "asyncpg" else 2)
            # Committed: another pool (another session) sees it.
            other = await client.pool(make, max_size=1)
            assert await other.fetchval(f"SELECT n FROM {t} WHERE id = {ph()}", (0,)) == 1
            assert await other.fetchval(f"SELECT n FROM {t} WHERE id = {ph()}", (11,)) == 0
            s = pool.stats()
            assert s.in_use == 0 and s.acquisitions == s.releases
        finally:
            await pool.execute(f"DROP TABLE IF EXISTS {t}")

    run_pools(body)


def test_sql_errors_pass_through_as_the_drivers_and_the_pool_stays_healthy(
        client: Client, run_pools: Run) -> None:
    async def body(make: Make) -> None:
        pool = await client.pool(make, max_size=1)
        t = await client.table(pool, rows=2)
        try:
            with pytest.raises(Exception) as info:
                await pool.execute(f"INSERT INTO {t} VALUES ({client.ph(1)}, {client.ph(2)}, "
                                   f"{client.ph(3)})", (1, "dup", 0))
            assert not isinstance(info.value, fastpool.FastpoolError)
            assert pool.classify(info.value) is fastpool.ErrorKind.QUERY
            assert await pool.fetchval(f"SELECT count(*) FROM {t}") == 2
            assert pool.stats().in_use == 0
        finally:
            await pool.execute(f"DROP TABLE IF EXISTS {t}")

    run_pools(body)


def test_conn_runs_inside_the_callers_transaction(client: Client, run_pools: Run) -> None:
    async def body(make: Make) -> None:
        pool = await client.pool(make, max_size=3)
        other = await client.pool(make, max_size=1)
        t = await client.table(pool, rows=3)
        ph = client.ph
        try:
            async def move(conn: Any) -> Any:
                await pool.execute(f"UPDATE {t} SET n = n - 5 WHERE id = {ph()}", (1,), conn=conn)
                await pool.execute(f"UPDATE {t} SET n = n + 5 WHERE id = {ph()}", (2,), conn=conn)
                mine = await pool.fetchval(f"SELECT n FROM {t} WHERE id = {ph()}", (1,),
                                           conn=conn)
                row = await pool.fetchrow(f"SELECT n FROM {t} WHERE id = {ph()}", (2,),
                                          conn=conn)
                listed = await pool.fetch(f"SELECT n FROM {t} ORDER BY id", conn=conn)
                if client.server != "sqlite":  # SQLite: the writer locks out other sessions
                    # Not committed yet: another session still sees the old values.
                    assert await other.fetchval(f"SELECT n FROM {t} WHERE id = {ph()}",
                                                (1,)) == 10
                return mine, tuple(row), rows(listed)

            assert await pool.transaction(move) == (5, (25,), [(0,), (5,), (25,)])
            assert await other.fetchval(f"SELECT n FROM {t} WHERE id = {ph()}", (1,)) == 5

            async def fails(conn: Any) -> None:
                await pool.execute(f"UPDATE {t} SET n = 99", conn=conn)
                raise LookupError("the caller's own error")

            with pytest.raises(LookupError):
                await pool.transaction(fails)
            assert await other.fetchval(f"SELECT max(n) FROM {t}") == 25  # rolled back
        finally:
            await pool.execute(f"DROP TABLE IF EXISTS {t}")

    run_pools(body)


# ---- the result cache ------------------------------------------------------------------

def test_result_cache_hits_and_a_write_through_the_helpers_invalidates(
        client: Client, run_pools: Run) -> None:
    async def body(make: Make) -> None:
        pool = await client.pool(make, max_size=2)
        t = await client.table(pool, rows=3)
        ph = client.ph
        read = f"SELECT n FROM {t} WHERE id = {ph()}"
        try:
            assert await pool.fetchval(read, (1,), cache_ttl=60) == 10
            for _ in range(5):
                assert await pool.fetchval(read, (1,), cache_ttl=60) == 10
            assert rows(await pool.fetch(f"SELECT id FROM {t} ORDER BY id", cache_ttl=60)) == [
                (0,), (1,), (2,)]
            stats = pool.query_stats()["results"]
            assert (stats["hits"], stats["misses"]) == (5, 2)
            # A write through the helpers drops the table's entries.
            assert await pool.execute(f"UPDATE {t} SET n = 11 WHERE id = {ph()}", (1,)) == 1
            assert await pool.fetchval(read, (1,), cache_ttl=60) == 11

            # A write with conn=: the table is read around the cache until that
            # transaction ends, then cached again.
            async def write(conn: Any) -> None:
                await pool.execute(f"UPDATE {t} SET n = 12 WHERE id = {ph()}", (1,), conn=conn)
                assert await pool.fetchval(read, (1,), conn=conn) == 12

            await pool.transaction(write)
            assert await pool.fetchval(read, (1,), cache_ttl=60) == 12
            assert pool.invalidate(t) == 1
            assert await pool.fetchval(read, (1,), cache_ttl=60) == 12
        finally:
            await pool.execute(f"DROP TABLE IF EXISTS {t}")

    run_pools(body)


def test_single_flight_50_tasks_missing_one_key_run_it_once(
        client: Client, run_pools: Run) -> None:
    async def body(make: Make) -> None:
        pool = await client.pool(make, max_size=4)
        if client.server == "sqlite":
            counter = "SELECT count(*) FROM sqlite_master"   # no side effect to count
        else:
            await pool.execute("DROP SEQUENCE IF EXISTS fp_aq_seq")
            await pool.execute("CREATE SEQUENCE fp_aq_seq")
            counter = ("SELECT nextval('fp_aq_seq')" if client.server == "postgresql"
                       else "SELECT NEXTVAL(fp_aq_seq)")
        try:
            got = await asyncio.gather(*(pool.fetchval(counter, cache_ttl=60)
                                         for _ in range(50)))
            assert len(set(got)) == 1
            stats = pool.query_stats()["results"]
            assert (stats["misses"], stats["single_flight_waits"]) == (1, 49)
            if client.server != "sqlite":
                assert got[0] == 1  # the one query that reached the server
                assert await pool.fetchval(counter) == 2  # uncached: the second
        finally:
            if client.server != "sqlite":
                await pool.execute("DROP SEQUENCE IF EXISTS fp_aq_seq")

    run_pools(body)


def test_single_flight_followers_get_the_leaders_error_and_a_cancelled_follower_harms_none(
        client: Client, run_pools: Run) -> None:
    async def body(make: Make) -> None:
        pool = await client.pool(make, max_size=2)
        bad = "SELECT * FROM fp_aq_missing_table"
        results = await asyncio.gather(*(pool.fetch(bad, cache_ttl=60) for _ in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, Exception) and not isinstance(r, fastpool.FastpoolError)
                   for r in results)
        assert pool.query_stats()["results"]["misses"] == 1
        # Each caller its own instance, the leader's type and text: one caller's
        # raise (its traceback, its notes) never shows in another's.
        assert len({id(r) for r in results}) == 5
        assert {(type(r), str(r)) for r in results} == {(type(results[0]), str(results[0]))}
        # A follower cancelled while it waits does not cancel the others' wait.
        query = "SELECT 42"
        tasks = [asyncio.ensure_future(pool.fetchval(query, cache_ttl=60)) for _ in range(4)]
        await asyncio.sleep(0)   # all four started: one leads, three follow
        tasks[1].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[1], asyncio.CancelledError)
        assert [done[0], done[2], done[3]] == [42, 42, 42]
        assert pool.stats().in_use == 0

    run_pools(body)


# ---- the statement cache ---------------------------------------------------------------

def test_statement_reuse_is_counted(client: Client, run_pools: Run) -> None:
    if client.server != "postgresql":
        pytest.skip("asyncmy and aiosqlite keep no counted statement cache")

    async def body(make: Make) -> None:
        pool = await client.pool(make, min_size=1, max_size=1)
        cast = "$1::int" if client.name == "asyncpg" else "%s::int"
        for i in range(5):
            assert await pool.fetchval(f"SELECT {cast} + 1", (i,)) == i + 1
        st = pool.query_stats()["statements"]
        assert (st["prepares"], st["hits"], st["cached"]) == (1, 4, 1)
        assert st["reuse_rate"] == pytest.approx(0.8)
        pool.invalidate_statements()   # every connection drops them before its next use
        assert await pool.fetchval(f"SELECT {cast} + 1", (7,)) == 8
        st = pool.query_stats()["statements"]
        assert (st["prepares"], st["invalidations"]) == (2, 1)

    run_pools(body)


def test_a_statement_whose_table_was_recreated_runs_again(
        client: Client, run_pools: Run, request: pytest.FixtureRequest) -> None:
    if client.server != "postgresql":
        pytest.skip("stale plans of prepared statements: PostgreSQL")
    admin = request.getfixturevalue("pg_admin")

    async def body(make: Make) -> None:
        pool = await client.pool(make, min_size=1, max_size=1)
        admin.execute("DROP TABLE IF EXISTS fp_aq_ddl")
        admin.execute("CREATE TABLE fp_aq_ddl (a int)")
        admin.execute("INSERT INTO fp_aq_ddl VALUES (1)")
        ph = client.ph()
        try:
            assert rows(await pool.fetch(f"SELECT * FROM fp_aq_ddl WHERE a = {ph}", (1,))) == [
                (1,)]
            admin.execute("DROP TABLE fp_aq_ddl")
            admin.execute("CREATE TABLE fp_aq_ddl (a int, b text)")
            admin.execute("INSERT INTO fp_aq_ddl VALUES (1, 'x')")
            assert rows(await pool.fetch(f"SELECT * FROM fp_aq_ddl WHERE a = {ph}", (1,))) == [
                (1, "x")]
            # psycopg: the shared retry rule ran it again once; asyncpg re-prepares
            # a stale statement itself outside a transaction.
            assert pool.query_stats()["retried"] == (1 if client.name == "psycopg" else 0)
        finally:
            admin.execute("DROP TABLE IF EXISTS fp_aq_ddl")

    run_pools(body)


def test_a_killed_idle_connection_nothing_sent_runs_on_another(
        client: Client, run_pools: Run, request: pytest.FixtureRequest) -> None:
    """asyncpg notices the server closed an idle connection: the pool's check
    on lend (issue 20) reads it as unusable and retires it before anything is
    sent, so the statement runs on a new connection at once, with no retry
    (before that check, asyncpg refused to send and the retry rule, NOT_SENT,
    ran it again)."""
    if client.name != "asyncpg":
        pytest.skip("asyncpg knows locally that a killed idle connection is closed")
    admin = request.getfixturevalue("pg_admin")

    async def body(make: Make) -> None:
        pool = await client.pool(make, min_size=1, max_size=2, alive_bypass=3600)
        async with pool.connection() as conn:
            pid = conn.get_server_pid()
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(500):
            if conn.is_closed():
                break
            await asyncio.sleep(0.01)
        assert conn.is_closed()
        assert await pool.fetchval("SELECT pg_backend_pid()") != pid
        assert pool.query_stats()["retried"] == 0
        stats = pool.stats()
        assert stats.closed_total == 1  # the killed one, retired at lend
        assert stats.in_use == 0

    run_pools(body)


# ---- N+1 guard and slow-query log --------------------------------------------------------

def test_n_plus_one_guard_sees_its_tasks_statements_only(client: Client,
                                                        run_pools: Run) -> None:
    async def body(make: Make) -> None:
        pool = await client.pool(make, max_size=3)
        t = await client.table(pool, rows=6)
        by_id = f"SELECT name FROM {t} WHERE id = {client.ph()}"
        try:
            @pool.n_plus_one_guard(threshold=3, action="raise")
            async def handler() -> None:
                ids = [r[0] for r in await pool.fetch(f"SELECT id FROM {t} ORDER BY id")]
                for i in ids:
                    await pool.fetchval(by_id, (i,))

            async def elsewhere() -> None:  # another task, outside any guard
                for i in range(6):
                    await pool.fetchval(by_id, (i,))

            with pytest.raises(NPlusOneDetected) as info:
                await asyncio.gather(handler(), elsewhere())
            assert info.value.count == 4 and info.value.threshold == 3
            assert "test_async_query.py" in info.value.site and "handler" in info.value.site

            # Tasks started inside a guard's scope inherit it (contextvars).
            with pool.n_plus_one_guard(threshold=10, action="log") as guard:
                await asyncio.gather(*(pool.fetchval(by_id, (i,)) for i in range(6)))
            await elsewhere()
            assert list(guard.counts.values()) == [6]
            assert guard.report() == []
        finally:
            await pool.execute(f"DROP TABLE IF EXISTS {t}")

    run_pools(body)


def test_slow_queries_are_logged_with_the_call_site(client: Client, run_pools: Run,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    slow = {"postgresql": "SELECT pg_sleep(0.6)", "mysql": "SELECT SLEEP(0.6)"}.get(
        client.server, "SELECT 1")
    threshold = 0 if client.server == "sqlite" else 300  # SQLite has no sleep: every one

    async def body(make: Make) -> None:
        pool = await client.pool(make, max_size=1, slow_query_ms=threshold)
        with caplog.at_level(logging.WARNING, logger="fastpool.slow"):
            await pool.fetchval(slow)
        (record,) = [r for r in caplog.records if r.name == "fastpool.slow"]
        assert "test_async_query.py" in record.fastpool_site and "body" in record.fastpool_site
        assert pool.query_stats()["slow_queries"] == 1

    run_pools(body)


# ---- explain -----------------------------------------------------------------------------

def test_explain_flags_a_seq_scan_and_analyze_changes_nothing(client: Client,
                                                              run_pools: Run) -> None:
    async def body(make: Make) -> None:
        pool = await client.pool(make, max_size=1)
        t = await client.table(pool, "fp_aq_scan", rows=3000)
        ph = client.ph()
        try:
            plan = await pool.explain(f"SELECT * FROM {t} WHERE n = {ph}", (50,), scan_rows=1000)
            assert plan.database == client.server and not plan.analyzed
            (finding,) = plan.warnings
            assert finding.table.endswith(t) and finding.rows > 1000
            assert not (await pool.explain(f"SELECT * FROM {t} WHERE id = {ph}", (5,))).warnings
            if client.server == "sqlite":
                with pytest.raises(NotImplementedError):
                    await pool.explain(f"DELETE FROM {t}", analyze=True)
            else:
                plan = await pool.explain(f"DELETE FROM {t} WHERE n < {ph}", (500,),
                                          analyze=True)
                assert plan.analyzed
                assert await pool.fetchval(f"SELECT count(*) FROM {t}") == 3000
            assert pool.stats().in_use == 0
        finally:
            await pool.execute(f"DROP TABLE IF EXISTS {t}")

    run_pools(body)
