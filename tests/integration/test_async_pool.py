"""The asyncio pool's behaviour on real servers, over both cores.

Every test runs an event loop of its own (``run_pools``, tests/fix_pool.py):
pools are made inside it and checked (accounting) and closed when it ends.
The URL parameter picks the client: aiosqlite (the embedded default), psycopg
AsyncConnection and asyncpg on PostgreSQL, asyncmy on MariaDB.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from typing import Any

import pytest

import fastpool
from fastpool import (
    ConfigError,
    ConnectionAlreadyReleased,
    ForeignConnection,
    PoolClosed,
    PoolTimeout,
    TooManyWaiting,
    WrongEventLoop,
)
from tests.fix_db import MYSQL_URL, PG_URL

PG_ASYNCPG = PG_URL.replace("postgresql://", "postgresql+asyncpg://", 1)

CLIENTS = ["aiosqlite", "psycopg", "asyncpg", "asyncmy", "aiomysql"]


@pytest.fixture(params=CLIENTS)
def url(request: pytest.FixtureRequest, db_path: str) -> str:
    """A URL of each async client (servers are checked by their fixtures)."""
    if request.param == "aiosqlite":
        return f"sqlite:///{db_path}"
    if request.param in ("asyncmy", "aiomysql"):
        request.getfixturevalue("mysql_url")
        return MYSQL_URL if request.param == "asyncmy" else MYSQL_URL.replace(
            "mysql://", "mysql+aiomysql://", 1)
    request.getfixturevalue("pg_url")
    return PG_ASYNCPG if request.param == "asyncpg" else PG_URL


async def query(conn: Any, sql: str) -> Any:
    """Run ``sql`` on any of the four clients; the first value of the first row."""
    if hasattr(conn, "fetchval"):  # asyncpg
        return await conn.fetchval(sql)
    if hasattr(conn, "pgconn"):  # psycopg
        cur = await conn.execute(sql)
        row = await cur.fetchone()
        return None if row is None else row[0]
    if hasattr(conn, "_connection"):  # aiosqlite
        cur = await conn.execute(sql)
        row = await cur.fetchone()
        return None if row is None else row[0]
    async with conn.cursor() as cur:  # asyncmy
        await cur.execute(sql)
        row = await cur.fetchone()
        return None if row is None else row[0]


def in_transaction(pool: Any, conn: Any) -> bool:
    return bool(pool.adapter.in_transaction(conn))


async def open_transaction(conn: Any) -> None:
    """Leave a transaction open on ``conn`` (each client its own way)."""
    if hasattr(conn, "fetchval"):
        await conn.execute("BEGIN")
    elif hasattr(conn, "pgconn"):
        await conn.execute("SELECT 1")  # psycopg opens one implicitly
    elif hasattr(conn, "_connection"):
        await conn.execute("BEGIN")
    else:
        await conn.begin()


# ---- borrowing and returning -----------------------------------------------------

def test_acquire_release_and_the_connection_is_the_drivers_own(run_pools, url):
    async def body(make):
        pool = await make(url=url, min_size=1, max_size=2)
        await pool.wait(5)
        conn = await pool.acquire()
        assert type(conn).__module__.split(".")[0] in {"aiosqlite", "psycopg", "asyncpg",
                                                     "asyncmy", "aiomysql"}
        assert await query(conn, "SELECT 41 + 1") == 42
        await pool.release(conn)
        s = pool.stats()
        assert (s.acquisitions, s.releases, s.in_use) == (1, 1, 0)

    run_pools(body)


def test_a_transaction_left_open_is_rolled_back_before_the_next_borrower(run_pools, url):
    async def body(make):
        pool = await make(url=url, min_size=1, max_size=1)
        conn = await pool.acquire()
        await open_transaction(conn)
        assert in_transaction(pool, conn)
        await pool.release(conn)
        again = await pool.acquire()
        assert again is conn  # one connection: the same one, cleaned
        assert not in_transaction(pool, again)
        assert await query(again, "SELECT 7") == 7
        await pool.release(again)

    run_pools(body)


def test_connection_block_commits_on_success_and_rolls_back_on_error(run_pools, db_path):
    async def body(make):
        pool = await make(url=f"sqlite:///{db_path}", max_size=1)
        async with pool.connection() as conn:
            await conn.execute("CREATE TABLE t (x INTEGER)")
        async with pool.connection() as conn:
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(ZeroDivisionError):
            async with pool.connection() as conn:
                await conn.execute("BEGIN")
                await conn.execute("INSERT INTO t VALUES (2)")
                1 / 0  # noqa: B018
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT x FROM t ORDER BY x")
            assert [r[0] for r in await cur.fetchall()] == [1]

    run_pools(body)


def test_a_block_cancelled_mid_transaction_rolls_back(run_pools, pg_url):
    async def body(make):
        pool = await make(url=PG_ASYNCPG, max_size=1)
        async with pool.connection() as conn:
            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS t (x int)")
        started = asyncio.Event()

        async def writer():
            async with pool.connection() as conn:
                await conn.execute("BEGIN")
                await conn.execute("INSERT INTO t VALUES (1)")
                started.set()
                await asyncio.sleep(10)

        task = asyncio.create_task(writer())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with pool.connection() as conn:  # the same (only) connection, rolled back
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM t") == 0

    run_pools(body)


def test_double_release_and_foreign_connections_are_refused(run_pools, db_path):
    async def body(make):
        pool = await make(max_size=1)
        other = await make(max_size=1)
        conn = await pool.acquire()
        with pytest.raises(ForeignConnection):
            await other.release(conn)
        await pool.release(conn)
        with pytest.raises(ConnectionAlreadyReleased):
            await pool.release(conn)

    run_pools(body)


# ---- waiting: deadlines, FIFO, cancellation ------------------------------------------

def test_acquire_times_out_with_the_pools_state(run_pools):
    async def body(make):
        pool = await make(max_size=1, timeout=0.2)
        held = await pool.acquire()
        with pytest.raises(PoolTimeout, match="in use 1"):
            await pool.acquire()
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.05)
        assert pool.stats().timeouts == 2
        await pool.release(held)

    run_pools(body)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_each_waiter_times_out_at_its_own_deadline(run_pools, loop):
    # All waiters' deadlines share one loop timer, armed at the earliest: a
    # waiter queued behind a patient one, with a shorter timeout, must still
    # time out on time, and the patient one must keep waiting and be served.
    async def body(make):
        pool = await make(max_size=1, timeout=30)
        held = await pool.acquire()
        patient = asyncio.create_task(pool.acquire(timeout=30))
        await asyncio.sleep(0)
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.2)
        waited = time.monotonic() - t0
        assert 0.15 < waited < 10, waited  # at its deadline, not the patient one's
        shorter = [asyncio.create_task(pool.acquire(timeout=t)) for t in (0.3, 0.1, 0.2)]
        done = await asyncio.gather(*shorter, return_exceptions=True)
        assert all(isinstance(e, PoolTimeout) for e in done), done
        assert not patient.done()
        await pool.release(held)
        conn = await asyncio.wait_for(patient, 5)
        await pool.release(conn)
        assert pool.stats().timeouts == 4

    run_pools(body, loop=loop)


def test_waiters_are_served_first_come_first_served(run_pools):
    async def body(make):
        pool = await make(max_size=1)
        held = await pool.acquire()
        order: list[int] = []

        async def waiter(i: int) -> None:
            conn = await pool.acquire()
            order.append(i)
            await asyncio.sleep(0)
            await pool.release(conn)

        tasks = []
        for i in range(20):
            tasks.append(asyncio.create_task(waiter(i)))
            await asyncio.sleep(0)  # queued in this order
        assert pool.stats().waiting == 20
        await pool.release(held)
        # The releaser asks again at once: it queues behind the 20.
        again = asyncio.create_task(pool.acquire())
        await asyncio.gather(*tasks)
        await pool.release(await again)
        assert order == list(range(20))

    run_pools(body)


def test_a_task_cancelled_while_waiting_loses_no_connection(run_pools):
    async def body(make):
        pool = await make(max_size=1)
        held = await pool.acquire()
        waiting = [asyncio.create_task(pool.acquire()) for _ in range(5)]
        await asyncio.sleep(0.01)
        assert pool.stats().waiting == 5
        for task in waiting[:4]:
            task.cancel()
        await pool.release(held)  # handed to the first waiter (cancelled) ... or the last
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 4
        conn = results[4]
        assert not isinstance(conn, BaseException)
        await pool.release(conn)
        assert pool.stats().in_use == 0
        assert pool.stats().waiting == 0

    run_pools(body)


def test_a_connection_handed_to_a_task_that_is_then_cancelled_goes_to_the_next(run_pools):
    async def body(make):
        pool = await make(max_size=1)
        held = await pool.acquire()
        first = asyncio.create_task(pool.acquire())
        second = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.01)
        await pool.release(held)  # handed over to `first` (its future is done) ...
        first.cancel()  # ... which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await first
        conn = await asyncio.wait_for(second, 5)
        assert conn is held
        await pool.release(conn)

    run_pools(body)


def test_asyncio_timeout_around_acquire_loses_nothing(run_pools):
    async def body(make):
        pool = await make(max_size=2)
        a, b = await pool.acquire(), await pool.acquire()
        for _ in range(50):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.001):
                    await pool.acquire()
        await pool.release(a)
        await pool.release(b)
        s = pool.stats()
        assert (s.in_use, s.waiting, s.idle) == (0, 0, 2)

    if not hasattr(asyncio, "timeout"):
        pytest.skip("asyncio.timeout is Python 3.11+")
    run_pools(body)


def test_max_waiting_rejects_at_once(run_pools):
    async def body(make):
        pool = await make(max_size=1, max_waiting=1)
        held = await pool.acquire()
        queued = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.01)
        with pytest.raises(TooManyWaiting):
            await pool.acquire()
        await pool.release(held)
        await pool.release(await queued)

    run_pools(body)


# ---- the loop it belongs to ------------------------------------------------------------

def test_the_pool_belongs_to_its_loop(async_pool_cls, db_path):
    url = f"sqlite:///{db_path}"
    with pytest.raises(WrongEventLoop, match="running event loop"):
        async_pool_cls(driver=fastpool.drivers.from_url_async(url))

    async def make():
        return async_pool_cls(driver=fastpool.drivers.from_url_async(url), max_size=1)

    loop = asyncio.new_event_loop()
    try:
        pool = loop.run_until_complete(make())
        conn = loop.run_until_complete(pool.acquire())
        loop.run_until_complete(pool.release(conn))

        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                asyncio.run(pool.acquire())
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert len(errors) == 1 and isinstance(errors[0], WrongEventLoop), errors

        async def use_from_another_loop() -> None:
            await pool.acquire()

        other = asyncio.new_event_loop()
        try:
            with pytest.raises(WrongEventLoop):
                other.run_until_complete(use_from_another_loop())
        finally:
            other.close()
        # Still fine on its own loop.
        conn = loop.run_until_complete(pool.acquire())
        loop.run_until_complete(pool.release(conn))
        loop.run_until_complete(pool.close())
    finally:
        loop.close()


def test_a_pool_outlived_by_its_loop_is_refused_in_the_next(async_pool_cls, db_path):
    url = f"sqlite:///{db_path}"

    async def make():
        # min_size=0: no connection is left open when the loop goes away.
        return async_pool_cls(driver=fastpool.drivers.from_url_async(url), min_size=0,
                              max_size=1)

    pool = asyncio.run(make())  # asyncio.run ends: the loop and the pool's worker are gone

    async def again():
        await pool.acquire()

    with pytest.raises(WrongEventLoop):
        asyncio.run(again())


# ---- sizing, health, closing ------------------------------------------------------------

def test_wait_resize_drain_check(run_pools, url):
    async def body(make):
        pool = await make(url=url, min_size=2, max_size=4)
        await pool.wait(10)
        assert pool.stats().open >= 2
        await pool.resize(3, 5)
        assert (pool.min_size, pool.max_size) == (3, 5)
        await pool.wait(10)
        assert await pool.check() == 0
        before = pool.stats().opened
        await pool.drain()
        await pool.wait(10)
        assert pool.stats().opened >= before + 3  # replacements opened
        async with pool.connection() as conn:
            assert await query(conn, "SELECT 1") == 1

    run_pools(body)


def test_close_fails_waiters_and_refuses_new_callers(run_pools):
    async def body(make):
        pool = await make(max_size=1)
        held = await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.01)
        closing = asyncio.create_task(pool.close(timeout=2))
        with pytest.raises(PoolClosed):
            await waiter
        await pool.release(held)  # closed when returned
        await closing
        with pytest.raises(PoolClosed):
            await pool.acquire()
        assert pool.stats().open == 0

    run_pools(body)


def test_create_async_pool_awaited_and_as_a_context(pg_url, async_pool_cls):
    async def main():
        pool = await fastpool.create_async_pool(PG_ASYNCPG, min_size=2, max_size=3)
        try:
            assert isinstance(pool, fastpool.AsyncPool)
            assert pool.stats().open >= 2  # waited for min_size
        finally:
            await pool.close()
        async with fastpool.create_async_pool(PG_URL, max_size=2) as pool2, \
                pool2.connection() as conn:
            assert await query(conn, "SELECT 5") == 5
        assert pool2.closed

    asyncio.run(main())


def test_options_are_checked_like_the_sync_pools(db_path):
    async def main():
        url = f"sqlite:///{db_path}"
        for bad in ({"max_size": 0}, {"min_size": 3, "max_size": 2}, {"timeout": -1},
                    {"reuse": "random"}):
            with pytest.raises(ConfigError):
                await fastpool.create_async_pool(url, **bad)
        with pytest.raises(ConfigError, match="not a database URL"):
            await fastpool.create_async_pool("nonsense")
        with pytest.raises(ConfigError, match="AsyncPool"):
            await fastpool.create_async_pool(url, connect=lambda: None)

        def sync_factory():
            import sqlite3
            return sqlite3.connect(":memory:")

        pool = fastpool.AsyncPool(connect=sync_factory, max_size=1, timeout=1)
        try:
            with pytest.raises(fastpool.ConnectError, match="not an awaitable"):
                await pool.acquire()
        finally:
            await pool.close()

    asyncio.run(main())


def test_a_connection_factory_of_the_users(run_pools, pg_url):
    import asyncpg

    async def body(make):
        async def connect():
            return await asyncpg.connect(PG_URL)

        pool = await make(connect=connect, max_size=2)
        async with pool.connection() as conn:
            assert await conn.fetchval("SELECT 3") == 3
        assert pool.adapter.name == "asyncpg"

    run_pools(body)


def test_asyncpg_reset_modes(run_pools, pg_url):
    async def body(make):
        discard = await make(url=PG_ASYNCPG, max_size=1,
                             driver_options={"reset": "discard"})
        first = await discard.acquire()
        await discard.release(first)
        second = await discard.acquire()
        assert second is not first  # every return closes it
        await discard.release(second)
        assert discard.stats().closed["reset"] >= 2

        trusting = await make(url=PG_ASYNCPG, max_size=1, driver_options={"reset": "none"})
        conn = await trusting.acquire()
        await conn.execute("BEGIN")
        await trusting.release(conn)
        again = await trusting.acquire()
        assert again is conn and again.is_in_transaction()  # what "none" means
        await again.execute("ROLLBACK")
        await trusting.release(again)

    run_pools(body)


# ---- transactions, events, leaks, monitoring ------------------------------------------------

def test_transaction_commits_returns_and_reraises(run_pools, pg_url):
    async def body(make):
        pool = await make(url=PG_ASYNCPG, max_size=2)
        async with pool.connection() as conn:
            await conn.execute("DROP TABLE IF EXISTS fp_async_tx")
            await conn.execute("CREATE TABLE fp_async_tx (id int PRIMARY KEY)")

        async def insert(conn, i):
            await conn.execute("INSERT INTO fp_async_tx VALUES ($1)", i)
            return i

        assert await pool.transaction(functools.partial(insert, i=1)) == 1
        with pytest.raises(Exception, match="duplicate key"):
            await pool.transaction(functools.partial(insert, i=1))

        @pool.transactional
        async def add(conn, i):
            return await insert(conn, i)

        assert await add(2) == 2
        with pytest.raises(ConfigError, match="coroutine function"):
            await pool.transaction(lambda conn: insert(conn, 3))  # refused before it runs
        async with pool.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM fp_async_tx") == 2
            await conn.execute("DROP TABLE fp_async_tx")
        assert pool.query_stats()["transactions"]["attempts"] == 3  # the refused one never began

    run_pools(body)


def test_a_serialization_failure_is_retried(run_pools, pg_url):
    async def body(make):
        pool = await make(url=PG_ASYNCPG, max_size=3)
        async with pool.connection() as conn:
            await conn.execute("DROP TABLE IF EXISTS fp_async_ser")
            await conn.execute("CREATE TABLE fp_async_ser (id int PRIMARY KEY, n int)")
            await conn.execute("INSERT INTO fp_async_ser VALUES (1, 0)")
        gate = asyncio.Event()
        runs = 0

        async def bump(conn):
            nonlocal runs
            runs += 1
            await conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            n = await conn.fetchval("SELECT n FROM fp_async_ser WHERE id = 1")
            if runs <= 2:
                gate.set()
                await asyncio.sleep(0.2)  # let the other one commit first
            await conn.execute("UPDATE fp_async_ser SET n = $1 WHERE id = 1", n + 1)

        async def other():
            await gate.wait()
            await pool.transaction(bump)

        await asyncio.gather(pool.transaction(bump), other())
        async with pool.connection() as conn:
            assert await conn.fetchval("SELECT n FROM fp_async_ser WHERE id = 1") == 2
            await conn.execute("DROP TABLE fp_async_ser")
        assert pool.query_stats()["transactions"]["retries"] >= 1

    run_pools(body)


def test_acquire_and_release_events(run_pools):
    async def body(make):
        pool = await make(max_size=1)
        seen: list[tuple[str, float]] = []
        pool.on("acquire", lambda conn, waited: seen.append(("acquire", waited)))
        pool.on("release", lambda conn, held: seen.append(("release", held)))
        async with pool.connection():
            pass
        conn = await pool.acquire()
        await pool.release(conn)
        assert [name for name, _ in seen] == ["acquire", "release"] * 2

    run_pools(body)


def test_a_long_hold_is_reported_with_its_task_and_site(run_pools, caplog, fake_clock):
    async def body(make):
        pool = await make(max_size=1, leak_threshold=30.0)
        pool._set_clock(fake_clock)

        async def handler():
            return await pool.acquire()

        conn = await asyncio.create_task(handler(), name="request-handler-7")
        fake_clock.advance(31.0)
        with caplog.at_level(logging.WARNING, logger="fastpool"):
            pool._report_leaks()
        assert "possible leak" in caplog.text and "in handler" in caplog.text
        assert "request-handler-7" in caplog.text
        assert pool.holders()[0]["acquired_at"] is not None
        await pool.release(conn)

    run_pools(body)


def test_async_pools_show_in_the_registry_beside_sync_ones(run_pools, make_pool):
    from fastpool.pool import registry

    sync = make_pool(name="sync-one")

    async def body(make):
        pool = await make(name="async-one", max_size=1)
        names = {p.name for p in registry.pools()}
        assert {"sync-one", "async-one"} <= names
        assert pool.stats().name == "async-one"

    run_pools(body)
    assert sync.name == "sync-one"


def test_uvloop_runs_the_pool(run_pools, pg_url):
    async def body(make):
        pool = await make(url=PG_ASYNCPG, min_size=2, max_size=2)

        async def cycle():
            for _ in range(50):
                async with pool.connection() as conn:
                    assert await conn.fetchval("SELECT 1") == 1

        await asyncio.gather(*(cycle() for _ in range(20)))
        assert pool.stats().acquisitions == 1000

    run_pools(body, loop="uvloop")


def test_monitoring_shows_async_pools_beside_sync_ones(run_pools, make_pool, tmp_path):
    """The JSON endpoint, Prometheus, OpenTelemetry and `fastpool top` read an
    AsyncPool as they read a Pool (the endpoint is read from another thread,
    as a scraper would)."""
    pytest.importorskip("prometheus_client")
    pytest.importorskip("opentelemetry.sdk")
    import json

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from rich.console import Console

    from fastpool import monitoring
    from fastpool.monitoring import instrument_opentelemetry, top
    from tests.unit.monitoring.test_monitoring import get, scrape

    sync = make_pool(name="mon-sync")
    with sync.connection():
        pass
    server = monitoring.serve(port=0)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])

    async def body(make):
        pool = await make(name="mon-async", max_size=2, track_holders=True,
                          url=f"sqlite:///{tmp_path}/mon.db")
        stop = instrument_opentelemetry(pool, meter_provider=provider)
        for _ in range(3):
            async with pool.connection():
                pass
        held = await pool.acquire()
        try:
            status, _, raw = await asyncio.to_thread(get, f"{server.url}/debug/fastpool")
            pools = {p["name"]: p for p in json.loads(raw)["pools"]}
            assert status == 200 and {"mon-sync", "mon-async"} <= set(pools)
            assert pools["mon-async"]["stats"]["acquisitions"] == 4
            assert pools["mon-async"]["stats"]["in_use"] == 1
            (holder,) = pools["mon-async"]["holders"]
            assert holder["acquired_at"].startswith(f"{__file__}:")
            samples = await asyncio.to_thread(scrape, f"{server.url}/metrics")
            assert samples[("fastpool_acquisitions_total", (("pool", "mon-async"),))] == 4
            assert samples[("fastpool_acquisitions_total", (("pool", "mon-sync"),))] == 1
            snap = monitoring.snapshot()
            console = Console(record=True, width=120, force_terminal=False)
            console.print(top.render({**snap, "pools": [p for p in snap["pools"]
                                                        if p["name"] == "mon-async"]}))
            assert "mon-async" in console.export_text()
        finally:
            await pool.release(held)
        waits = [p for rm in reader.get_metrics_data().resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics
                 if m.name == "db.client.connection.wait_time" for p in m.data.data_points
                 if p.attributes["db.client.connection.pool.name"] == "mon-async"]
        assert sum(p.count for p in waits) == 4
        stop()

    try:
        run_pools(body)
    finally:
        server.close()


def test_a_forked_child_opens_its_own_connections(run_pools, pg_url):
    """Fork safety as in the sync pool: the child never touches the parent's
    connections (it runs its own event loop and opens new ones); the parent's
    keep working."""
    from tests.fix_pool import run_in_child

    async def body(make):
        pool = await make(url=PG_ASYNCPG, min_size=2, max_size=2)
        await pool.wait(10)
        parent_pids = set(pool._session_states())

        def child() -> list[int]:
            async def use() -> list[int]:
                pids = []
                for _ in range(3):
                    async with pool.connection() as conn:
                        pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
                await pool.close()
                return pids

            return asyncio.run(use())

        child_pids = run_in_child(child)
        assert child_pids and not set(child_pids) & parent_pids
        async with pool.connection() as conn:  # the parent's are untouched
            assert await conn.fetchval("SELECT pg_backend_pid()") in parent_pids

    run_pools(body)
