"""The asyncio pool takes back what a cancelled or finished task never released.

On aiosqlite, psycopg ``AsyncConnection``, asyncpg and asyncmy, over both
cores: a task cancelled while it holds a connection it never releases, or one
that finished without releasing, gives the connection back (rolled back,
counted, the waiting task served); a task still holding it, or a cursor
open on it, keeps it lent.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from fastpool.errors import PoolTimeout
from fastpool.pool.policy import PoolPolicy
from tests.integration.test_async_pool import in_transaction, open_transaction, url  # noqa: F401

pytestmark = pytest.mark.usefixtures("quick_reclaim")


@pytest.fixture
def quick_reclaim(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(PoolPolicy, "RECLAIM_AFTER", 0.05)
    monkeypatch.setattr(PoolPolicy, "MAINTENANCE_INTERVAL", 0.02)
    yield


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_a_task_cancelled_without_release_gives_its_connection_back(
        run_pools: Any, url: str, caplog: Any) -> None:  # noqa: F811
    async def body(make: Any) -> None:
        pool = await make(url=url, max_size=1, min_size=0)
        ready = asyncio.Event()

        async def handler() -> None:
            conn = await pool.acquire()
            await open_transaction(conn)
            ready.set()
            await asyncio.sleep(3600)  # cancelled here: never released

        task = asyncio.ensure_future(handler())
        await ready.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        del task
        with caplog.at_level(logging.WARNING, logger="fastpool"):
            conn = await pool.acquire(timeout=5.0)  # the only one: reclaimed, then lent
            try:
                assert pool.stats().reclaimed == 1
                assert not in_transaction(pool, conn)
            finally:
                await pool.release(conn)
            await until(lambda: "dropped without a release" in caplog.text)

    run_pools(body)


def test_a_task_that_finished_without_release_gives_it_back(
        run_pools: Any, url: str) -> None:  # noqa: F811
    async def body(make: Any) -> None:
        pool = await make(url=url, max_size=2, min_size=0)

        async def forgetful() -> None:
            await pool.acquire()

        for _ in range(5):  # more than max_size
            await asyncio.create_task(forgetful())
        await until(lambda: pool.stats().in_use == 0)
        assert pool.stats().reclaimed == 5

    run_pools(body)


@pytest.mark.parametrize("how", ["task", "cursor"])
def test_a_connection_a_task_still_uses_is_never_reclaimed(
        run_pools: Any, url: str, how: str) -> None:  # noqa: F811
    async def body(make: Any) -> None:
        pool = await make(url=url, max_size=1, min_size=0)
        go = asyncio.Event()
        ready = asyncio.Event()

        async def holder() -> None:
            conn = await pool.acquire()
            kept: Any = conn
            if how == "cursor":
                kept = await open_cursor(conn)
                del conn
            ready.set()
            await go.wait()
            del kept

        task = asyncio.ensure_future(holder())
        await ready.wait()
        with pytest.raises(PoolTimeout):  # many maintenance rounds see it held
            await pool.acquire(timeout=0.4)
        assert pool.stats().reclaimed == 0
        go.set()
        await task
        gc.collect()
        await until(lambda: pool.stats().reclaimed == 1)  # it was looking all along

    run_pools(body)


async def open_cursor(conn: Any) -> Any:
    """A cursor (or asyncpg's transaction) left open on ``conn``; it refers to it."""
    if hasattr(conn, "fetchval"):  # asyncpg: a transaction object holds its connection
        tr = conn.transaction()
        await tr.start()
        return tr
    if hasattr(conn, "pgconn") or hasattr(conn, "_connection"):  # psycopg, aiosqlite
        return await conn.execute("SELECT 1 UNION ALL SELECT 2")
    cur = conn.cursor()  # asyncmy
    await cur.execute("SELECT 1 UNION ALL SELECT 2")
    return cur


def test_close_takes_back_and_closes_what_a_cancelled_task_held(
        run_pools: Any, url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(PoolPolicy, "MAINTENANCE_INTERVAL", 30.0)  # close() must do it

    async def body(make: Any) -> None:
        pool = await make(url=url, max_size=1, min_size=0)
        ready = asyncio.Event()

        async def handler() -> None:
            await pool.acquire()
            ready.set()
            await asyncio.sleep(3600)

        task = asyncio.ensure_future(handler())
        await ready.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        del task
        await asyncio.sleep(0.1)  # lent longer than RECLAIM_AFTER
        await pool.close(timeout=5.0)
        s = pool.stats()
        assert (s.in_use, s.open, s.reclaimed) == (0, 0, 1)

    run_pools(body)
