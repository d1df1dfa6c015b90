"""A cached read that failed or was cancelled leaves no reference cycle behind.

The result cache shares a read in flight: its leader's outcome reaches the
callers that wait on it. When the leader fails (a SQL error) or is cancelled,
its exception's traceback holds the frames the exception passed through, and
one of them the connection the read ran on. If anything the cache keeps (the
flight, a frame holding the flight) is in that traceback's reach, the frames
form a cycle that only Python's cyclic collector frees: until it runs (in a
service with a steady heap, rarely), the connection stays referenced, and once
a later borrower drops it without a release, the pool's reclaim (which goes by
references) cannot take it back. Found by the soak (benchmarks/soak.py): a
connection dropped by a cancelled task stayed lent for minutes.

Every test runs with the cyclic collector off, as a service between its rare
full collections: a connection dropped after serving such a read must still be
reclaimed by reference counting alone.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from fastpool.pool.policy import PoolPolicy
from tests.fix_db import Db
from tests.fix_pool import wait_until
from tests.integration.test_async_pool import url  # noqa: F401

MISSING = "SELECT * FROM fastpool_no_such_table_cyc"


@pytest.fixture(autouse=True)
def no_cyclic_collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(PoolPolicy, "RECLAIM_AFTER", 0.05)
    monkeypatch.setattr(PoolPolicy, "MAINTENANCE_INTERVAL", 0.02)
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def reclaims_a_dropped_connection(pool: Any) -> None:
    """A task drops a connection without a release: the pool takes it back
    by reference counting alone (the collector is off)."""
    async def forgetful() -> None:
        await pool.acquire()  # never released

    await asyncio.ensure_future(forgetful())
    deadline = asyncio.get_running_loop().time() + 5.0
    while pool.stats().in_use and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert pool.stats().in_use == 0, "the dropped connection was never reclaimed"
    assert pool.stats().reclaimed == 1


def slow_sql(kind: str) -> str:
    """A read that takes about half a second on each server."""
    if kind == "sqlite":
        return ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                "WHERE x < 4000000) SELECT count(*) FROM c")
    if kind == "mysql":
        return "SELECT SLEEP(0.5)"
    return "SELECT pg_sleep(0.5)"


def test_a_failed_cached_read_does_not_keep_its_connection_referenced(db: Db) -> None:
    pool = db.make(max_size=1, min_size=0, result_cache_entries=10)
    for _ in range(3):
        with pytest.raises(Exception, match="fastpool_no_such_table_cyc"):
            pool.fetch(MISSING, cache_ttl=5.0)
    pool.acquire()  # the only connection, dropped at once without a release
    wait_until(lambda: pool.stats().in_use == 0)
    assert pool.stats().reclaimed == 1
    assert pool.fetchval("SELECT 1") == 1


def test_followers_of_a_failed_cached_read_keep_nothing_referenced(db: Db) -> None:
    pool = db.make(max_size=2, min_size=0, result_cache_entries=10)
    errors: list[str] = []
    # A read that fails after a while, so that the others join it as followers.
    failing = f"{slow_sql(db.kind)} UNION ALL SELECT count(*) FROM fastpool_no_such_table_cyc"
    if db.kind == "sqlite":  # SQLite checks names before it runs; abs() overflows at run time
        failing = slow_sql(db.kind).replace(
            "count(*)", "abs(count(*) * 0 - 9223372036854775807 - 1)")

    def read() -> None:
        try:
            pool.fetch(failing, cache_ttl=5.0)
        except Exception as exc:
            errors.append(type(exc).__name__)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4, errors
    assert pool.query_stats()["results"]["single_flight_waits"] >= 1  # followers there were
    for _ in range(2):
        pool.acquire()  # both connections dropped without a release
    wait_until(lambda: pool.stats().in_use == 0)
    assert pool.stats().reclaimed == 2


@pytest.mark.parametrize("leader", ["failed", "cancelled"])
def test_an_async_cached_read_that_failed_or_was_cancelled_keeps_nothing_referenced(
        run_pools: Any, url: str, leader: str) -> None:  # noqa: F811
    kind = ("sqlite" if url.startswith("sqlite") else
            "mysql" if url.startswith("mysql") else "postgresql")

    async def body(make: Any) -> None:
        pool = await make(url=url, max_size=1, min_size=0, result_cache_entries=10)
        sql = MISSING if leader == "failed" else slow_sql(kind)
        first = asyncio.ensure_future(pool.fetch(sql, cache_ttl=5.0))
        await asyncio.sleep(0)  # the leader is in flight
        followers = [asyncio.ensure_future(pool.fetch(sql, cache_ttl=5.0)) for _ in range(3)]
        if leader == "cancelled":
            await asyncio.sleep(0.1)
            first.cancel()
            for f in followers[1:]:
                f.cancel()
        outcomes = await asyncio.gather(first, *followers, return_exceptions=True)
        if leader == "failed":
            assert all(isinstance(o, Exception) for o in outcomes), outcomes
        else:
            assert isinstance(outcomes[0], asyncio.CancelledError)
            assert not isinstance(outcomes[1], BaseException), outcomes  # it ran it again
        del first, followers, outcomes

        await reclaims_a_dropped_connection(pool)
        assert await pool.fetchval("SELECT 1") == 1

    run_pools(body)


@pytest.mark.parametrize("outcome", ["fails", "succeeds"])
def test_a_borrower_cancelled_during_an_aiosqlite_statement_keeps_nothing_referenced(
        run_pools: Any, db_path: str, outcome: str) -> None:
    """aiosqlite runs each statement on its own thread and hands back the
    outcome: a borrower cancelled while its statement runs there never takes
    that outcome, and an error kept there (its traceback holding the thread's
    frames, one of them the connection's bound method) must not keep the
    connection referenced either."""
    sql = slow_sql("sqlite")
    if outcome == "fails":
        sql = sql.replace("count(*)", "abs(count(*) * 0 - 9223372036854775807 - 1)")

    async def body(make: Any) -> None:
        pool = await make(url=f"sqlite:///{db_path}", max_size=1, min_size=0)

        async def borrower() -> None:
            async with pool.connection() as conn:
                await conn.execute_fetchall(sql)  # aiosqlite's own helper

        task = asyncio.ensure_future(borrower())
        await asyncio.sleep(0.1)  # the statement runs on aiosqlite's thread
        task.cancel()
        (result,) = await asyncio.gather(task, return_exceptions=True)
        assert isinstance(result, asyncio.CancelledError)
        del task, result
        assert await pool.fetchval("SELECT 1") == 1  # waits out the cancelled statement

        await reclaims_a_dropped_connection(pool)

    run_pools(body)
