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
import inspect
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from fastpool.errors import PoolTimeout
from fastpool.pool.aio import LoopIO
from fastpool.pool.policy import PoolPolicy
from fastpool.steps import run_async
from tests.fix_proxy import proxied
from tests.integration.test_async_pool import (  # noqa: F401
    in_transaction,
    open_transaction,
    query,
    url,
)
from tests.integration.test_leak_reclaim import LendLog, record_reclaims

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
    cur = conn.cursor()  # asyncmy; aiomysql's is awaited
    if inspect.isawaitable(cur):
        cur = await cur
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


# ---- one round at a time, and never a connection lent twice ------------------------------

async def stop_worker(pool: Any) -> None:
    """End the pool's worker task: from here on only the test's own rounds
    (``run_async(pool._reclaim_steps(), pool._io)``) reclaim."""
    pool._signal.stopping = True
    pool._kick()
    await asyncio.wait_for(pool._worker, 10)


async def server_session(conn: Any) -> int:
    """The server's id of ``conn``'s session, asked of the server (aiosqlite:
    the connection object is the session)."""
    if hasattr(conn, "_connection"):  # aiosqlite
        return id(conn)
    if hasattr(conn, "fetchval") or hasattr(conn, "pgconn"):  # asyncpg, psycopg
        return int(await query(conn, "SELECT pg_backend_pid()"))
    return int(await query(conn, "SELECT CONNECTION_ID()"))  # asyncmy


class GatedLoopIO(LoopIO):
    """The pool's own I/O, except that a waiter woken by a hand-off does not
    run on until ``gate`` opens: a task the loop has not resumed yet, which
    holds no reference to the connection it was handed."""

    def __init__(self, driver: Any, loop: asyncio.AbstractEventLoop,
                 gate: asyncio.Event) -> None:
        super().__init__(driver, loop)
        self.gate = gate

    def wait(self, fut: Any, timeout: float) -> Any:
        woken = super().wait(fut, timeout)

        async def gated() -> Any:
            result = (await woken) if hasattr(woken, "__await__") else woken
            await asyncio.wait_for(self.gate.wait(), 30)
            return result

        return gated()


def test_a_connection_handed_to_a_waiter_during_a_round_is_never_reclaimed(
        run_pools: Any, url: str) -> None:  # noqa: F811
    """The race fixed in d174c3d, on an event loop: while the round returns the
    dropped connection, the holder releases and the connection goes to a
    waiting task that has not resumed yet; the round must leave it lent.
    Without both checks of d174c3d every run fails (one session, two holders)."""
    async def body(make: Any) -> None:
        log = LendLog()
        state: dict[str, Any] = {"held": [], "dropped": None}
        pool: Any = None

        async def reset(conn: Any) -> None:  # runs on every return; acts on the dropped one's
            if id(conn) == state["dropped"] and state["held"]:
                log.returned("holder", state["held_session"])
                await pool.release(state["held"].pop())  # handed to the waiter, mid-round

        pool = await make(url=url, max_size=2, min_size=2, reset=reset)
        await pool.wait(timeout=10)
        await stop_worker(pool)
        gate = asyncio.Event()
        pool._io = GatedLoopIO(pool._driver, pool._loop, gate)
        reclaimed = record_reclaims(pool)
        first, second = await pool.acquire(), await pool.acquire()
        if pool._slot_of(first) > pool._slot_of(second):
            first, second = second, first  # the round looks at slots in order
        state["held_session"] = await server_session(second)
        log.lent("holder", state["held_session"])
        state["held"].append(second)
        del second
        dropped = await server_session(first)
        log.lent("dropper", dropped)
        await open_transaction(first)
        state["dropped"] = id(first)
        log.returned("dropper", dropped)  # it lets go: only the pool has it now
        del first

        took, done = asyncio.Event(), asyncio.Event()
        errors: list[Exception] = []
        answers: list[Any] = []

        async def waiter() -> None:
            conn = await pool.acquire(timeout=30)
            session = await server_session(conn)
            log.lent("waiter", session)
            answers.append(await query(conn, "SELECT 1"))  # a working connection
            took.set()
            await asyncio.wait_for(done.wait(), 30)
            log.returned("waiter", session)
            try:
                await pool.release(conn)
            except Exception as exc:  # already released by another borrower, say
                errors.append(exc)

        task = asyncio.ensure_future(waiter())
        await until(lambda: pool._sizes()[3] == 1)  # queued
        await asyncio.sleep(0.1)  # both lent longer than RECLAIM_AFTER: both are candidates
        await run_async(pool._reclaim_steps(), pool._io)
        assert state["held"] == [], "the holder's release did not happen during the round"
        gate.set()
        await asyncio.wait_for(took.wait(), 10)
        mine = []
        for _ in range(2):  # whatever the pool has to lend now
            try:
                conn = await pool.acquire(timeout=0.3)
            except PoolTimeout:
                break
            mine.append((conn, await server_session(conn)))
            log.lent("main", mine[-1][1])
            conn = None
        for conn, session in mine:
            log.returned("main", session)
            await pool.release(conn)
        conn = mine = None
        done.set()
        await asyncio.wait_for(task, 10)
        assert log.overlaps() == []
        assert errors == []
        assert answers == [1]
        assert reclaimed == [state["dropped"]]  # the dropped one only, once
        assert pool.stats().reclaimed == 1
        assert pool.stats().in_use == 0

    run_pools(body)


@pytest.mark.parametrize("client", ["psycopg", "asyncpg", "asyncmy"])
def test_a_reclaimed_connection_whose_rollback_gets_no_answer_is_discarded(
        run_pools: Any, client: str, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    """The server stops answering (a TCP proxy that stalls) while the worker
    task returns a dropped connection: after RESET_TIMEOUT the connection is
    interrupted (its socket shut down; asyncpg's and asyncmy's, which show no
    socket, abandoned), the rollback fails and it is discarded; the worker
    goes on."""
    monkeypatch.setattr(PoolPolicy, "RESET_TIMEOUT", 0.5, raising=False)
    proxy, target = proxied("mysql" if client == "asyncmy" else "postgresql", request)
    if client == "asyncpg":
        target = target.replace("postgresql://", "postgresql+asyncpg://", 1)

    async def body(make: Any) -> None:
        pool = await make(url=target, max_size=1, min_size=0)

        async def handler() -> None:
            conn = await pool.acquire()
            await open_transaction(conn)  # its return sends a ROLLBACK
            proxy.stall()  # and the server's answers stop coming

        await handler()  # returned without a release
        with caplog.at_level(logging.WARNING, logger="fastpool"):
            # (the warning comes once the return is over, maybe after the counts)
            await until(lambda: "RESET_TIMEOUT" in caplog.text, timeout=20)
        s = pool.stats()
        assert (s.reclaimed, s.open, s.in_use) == (1, 0, 0)
        proxy.resume()
        conn = await pool.acquire(timeout=10)  # the worker is free: it opens a new one
        assert await query(conn, "SELECT 1") == 1
        await pool.release(conn)

    run_pools(body)
