"""The asyncio batcher (``pool.batcher()`` of an AsyncPool) on the real servers:
PostgreSQL through psycopg's AsyncConnection and asyncpg, MariaDB through
asyncmy, SQLite through aiosqlite; every test on both cores.

To decide which writes share a batch, a test parks the flusher: a "locker"
connection (a blocking one, from the test) holds a row lock (SQLite: the
write lock), the batcher's first write waits on it, and whatever is
submitted meanwhile forms the next batch. Tests are plain functions running
an event loop (``run_pools``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from fastpool import ConfigError, ErrorKind
from fastpool.writes.batch import BatcherClosed, BatcherFull, BatchResult
from fastpool.writes.batch.aio import AsyncBatcher
from tests.fix_db import MYSQL_URL, PG_URL, need_driver

ROWS = "fp_abatch_rows"
GATE = "fp_abatch_gate"
TOUCH_GATE = f"UPDATE {GATE} SET n = n + 1 WHERE id = %s"

#: client -> (module, extra, server, URL or None for the test's SQLite file)
CLIENTS = {
    "psycopg": ("psycopg", "postgres", "postgresql", PG_URL),
    "asyncpg": ("asyncpg", "asyncpg", "postgresql", PG_URL.replace("postgresql://",
                                                                   "postgresql+asyncpg://", 1)),
    "asyncmy": ("asyncmy", "mysql", "mysql", MYSQL_URL),
    "aiosqlite": ("aiosqlite", "sqlite", "sqlite", None),
}


class Backend:
    """One database: its URL, its placeholders, and blocking admin and locker
    connections for setting up, checking and parking."""

    def __init__(self, client: str, db_path: str) -> None:
        module, extra, self.server, url = CLIENTS[client]
        need_driver(module, extra)
        self.client = client
        self.url = url or f"sqlite:///{db_path}"
        if self.server == "postgresql":
            psycopg = need_driver("psycopg", "postgres")
            try:
                self.admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
                self.locker = psycopg.connect(PG_URL, autocommit=True)
            except psycopg.OperationalError as exc:
                pytest.skip(f"PostgreSQL not reachable: {exc}")
        elif self.server == "mysql":
            need_driver("MySQLdb", "mysql")
            from fastpool.drivers import from_url

            try:
                self.admin = from_url(MYSQL_URL, autocommit=True).connect()
                self.locker = from_url(MYSQL_URL, autocommit=True).connect()
            except Exception as exc:
                pytest.skip(f"MariaDB not reachable: {exc}")
        else:
            self.admin = sqlite3.connect(db_path, isolation_level=None, timeout=10)
            self.locker = sqlite3.connect(db_path, isolation_level=None, timeout=10)
        self.exec(f"DROP TABLE IF EXISTS {ROWS}")
        self.exec(f"DROP TABLE IF EXISTS {GATE}")
        self.exec(f"CREATE TABLE {ROWS} (id BIGINT PRIMARY KEY, v VARCHAR(40))")
        self.exec(f"CREATE TABLE {GATE} (id INT PRIMARY KEY, n INT)")
        self.exec(f"INSERT INTO {GATE} (id, n) VALUES (1, 0)")

    def sql(self, text: str) -> str:
        """``text`` with the client's placeholders instead of ``%s``."""
        if self.client == "aiosqlite":
            return text.replace("%s", "?")
        if self.client == "asyncpg":
            parts = text.split("%s")
            return "".join(p + (f"${i + 1}" if i < len(parts) - 1 else "")
                           for i, p in enumerate(parts))
        return text

    def exec(self, text: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Run ``text`` (``%s`` placeholders) on the admin connection."""
        cur = self.admin.cursor()
        try:
            cur.execute(text.replace("%s", "?") if self.server == "sqlite" else text, params)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        finally:
            cur.close()

    def ids(self) -> list[int]:
        return [r[0] for r in self.exec(f"SELECT id FROM {ROWS} ORDER BY id")]

    def lock(self) -> None:
        """Hold the gate row (SQLite: the database's write lock)."""
        if self.server == "sqlite":
            self.locker.execute("BEGIN IMMEDIATE")
            return
        cur = self.locker.cursor()
        cur.execute("BEGIN")
        cur.execute(f"SELECT n FROM {GATE} WHERE id = 1 FOR UPDATE")
        cur.fetchall()
        cur.close()

    def unlock(self) -> None:
        if self.server == "sqlite":
            self.locker.execute("ROLLBACK")
        else:
            self.locker.rollback()

    def close(self) -> None:
        for conn in (self.locker, self.admin):
            with contextlib.suppress(Exception):
                conn.close()


@pytest.fixture(params=list(CLIENTS))
def backend(request: pytest.FixtureRequest, db_path: str) -> Iterator[Backend]:
    b = Backend(str(request.param), db_path)
    try:
        yield b
    finally:
        try:
            b.exec(f"DROP TABLE IF EXISTS {ROWS}")
            b.exec(f"DROP TABLE IF EXISTS {GATE}")
        finally:
            b.close()


Body = Callable[[Any, Backend], Awaitable[Any]]


@pytest.fixture
def run(run_pools: Callable[..., Any], backend: Backend) -> Callable[[Body], Any]:
    """``run(body)``: ``await body(pool, backend)`` with an AsyncPool of the
    parametrized core on the backend."""

    def runner(body: Body, **options: Any) -> Any:
        async def main(make: Callable[..., Any]) -> Any:
            options.setdefault("max_size", 4)
            pool = await make(url=backend.url, **options)
            return await body(pool, backend)

        return run_pools(main)

    return runner


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait (on the loop) until ``predicate()`` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


def adds_up(batcher: AsyncBatcher) -> None:
    s = batcher.stats()
    assert s.submitted == s.committed + s.failed + s.cancelled + s.pending, s


async def parked(batcher: AsyncBatcher, b: Backend) -> asyncio.Task[BatchResult]:
    """Lock the gate and start a write that waits on it: the flusher is busy
    with that batch until ``b.unlock()``."""
    b.lock()
    gate = asyncio.ensure_future(batcher.execute(b.sql(TOUCH_GATE), (1,)))
    await until(lambda: batcher.stats().queued == 0 and batcher.stats().pending == 1)
    await asyncio.sleep(0.05)  # its statement is now waiting on the lock
    return gate


def insert(b: Backend) -> str:
    return b.sql(f"INSERT INTO {ROWS} (id, v) VALUES (%s, %s)")


# ---- group commit and results --------------------------------------------------

def test_many_tasks_share_few_transactions(run: Callable[[Body], Any]) -> None:
    async def body(pool: Any, b: Backend) -> None:
        async with pool.batcher() as batcher:
            results = await asyncio.gather(
                *[batcher.execute(insert(b), (i, f"v{i}")) for i in range(300)])
            assert results == [BatchResult(1)] * 300
            s = batcher.stats()
            assert s.committed == 300 and s.failed == 0
            assert s.batches <= 5, s  # group commit: not one transaction per write
            adds_up(batcher)
        assert b.ids() == list(range(300))

    run(body)


def test_each_write_gets_its_own_rowcount_and_returned_row(run: Callable[[Body], Any]) -> None:
    async def body(pool: Any, b: Backend) -> None:
        b.exec(f"INSERT INTO {ROWS} (id, v) VALUES (1, 'a'), (2, 'a'), (3, 'b')")
        update = b.sql(f"UPDATE {ROWS} SET v = %s WHERE v = %s")
        async with pool.batcher() as batcher:
            got = await asyncio.gather(batcher.execute(update, ("x", "a")),
                                       batcher.execute(update, ("y", "none")),
                                       batcher.execute(update, ("z", "b")))
            assert [r.rowcount for r in got] == [2, 0, 1]
            if b.server != "mysql":  # MariaDB's RETURNING is INSERT/DELETE only
                ret = b.sql(f"INSERT INTO {ROWS} (id, v) VALUES (%s, %s) RETURNING id")
                rows = await asyncio.gather(*[batcher.execute(ret, (10 + i, "r"))
                                              for i in range(3)])
                assert [(r.rowcount, tuple(r.row)) for r in rows] == [
                    (1, (10,)), (1, (11,)), (1, (12,))]

    run(body)


# ---- failures are the caller's ---------------------------------------------------

def test_a_bad_write_fails_only_its_caller(run: Callable[[Body], Any]) -> None:
    async def body(pool: Any, b: Backend) -> None:
        b.exec(f"INSERT INTO {ROWS} (id, v) VALUES (5, 'old')")
        async with pool.batcher() as batcher:
            gate = await parked(batcher, b)
            tasks = [asyncio.ensure_future(batcher.execute(insert(b), (i, "x")))
                     for i in range(10)]  # id 5 exists
            bad_sql = asyncio.ensure_future(batcher.execute(
                b.sql(f"INSERT INTO {ROWS} (id, nope) VALUES (%s, %s)"), (100, "x")))
            dup = asyncio.ensure_future(batcher.execute(insert(b), (7, "again")))
            await asyncio.sleep(0.05)
            b.unlock()
            assert (await gate).rowcount == 1
            results = await asyncio.gather(*tasks, bad_sql, dup, return_exceptions=True)
            errors = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
            # id 5 (existing row), the unknown column, and the second write of id 7
            assert sorted(errors) == [5, 10, 11], results
            for exc in errors.values():
                assert pool.classify(exc) is ErrorKind.QUERY, exc
            assert all(results[i] == BatchResult(1) for i in range(10) if i != 5)
            s = batcher.stats()
            assert (s.failed, s.isolations) == (3, 1), s
            adds_up(batcher)
        assert b.ids() == list(range(10))
        assert b.exec(f"SELECT v FROM {ROWS} WHERE id = 5") == [("old",)]

    run(body)


# ---- cancellation ------------------------------------------------------------------

def test_cancelled_before_its_batch_starts_is_never_written(run: Callable[[Body], Any]) -> None:
    async def body(pool: Any, b: Backend) -> None:
        async with pool.batcher() as batcher:
            gate = await parked(batcher, b)
            keep = asyncio.ensure_future(batcher.execute(insert(b), (1, "keep")))
            drop = asyncio.ensure_future(batcher.execute(insert(b), (2, "drop")))
            fut = batcher.submit(insert(b), (3, "drop too"))
            await asyncio.sleep(0.01)
            drop.cancel()
            fut.cancel()
            b.unlock()
            await gate
            assert await keep == BatchResult(1)
            with pytest.raises(asyncio.CancelledError):
                await drop
            await batcher.flush()
            s = batcher.stats()
            assert (s.committed, s.cancelled, s.failed, s.pending) == (2, 2, 0, 0), s
            adds_up(batcher)
        assert b.ids() == [1]

    run(body)


def test_cancelled_while_its_batch_runs_leaves_the_others_alone(
        run: Callable[[Body], Any]) -> None:
    async def body(pool: Any, b: Backend) -> None:
        async with pool.batcher() as batcher:
            b.lock()
            # The gate write and the rows share the batch that parks on the lock.
            gate = asyncio.ensure_future(batcher.execute(b.sql(TOUCH_GATE), (1,)))
            tasks = [asyncio.ensure_future(batcher.execute(insert(b), (i, "x")))
                     for i in range(5)]
            await until(lambda: batcher.stats().queued == 0 and batcher.stats().pending == 6)
            await asyncio.sleep(0.05)
            tasks[2].cancel()
            b.unlock()
            assert (await gate).rowcount == 1
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert isinstance(results[2], asyncio.CancelledError)
            assert [results[i] for i in (0, 1, 3, 4)] == [BatchResult(1)] * 4
            await batcher.flush()
            s = batcher.stats()
            # Its batch had started: it was written, and counts as committed.
            assert (s.committed, s.cancelled, s.failed) == (6, 0, 0), s
            adds_up(batcher)
        assert b.ids() == [0, 1, 2, 3, 4]

    run(body)


# ---- closing and back-pressure ---------------------------------------------------------

def test_close_commits_what_is_pending_then_refuses(run: Callable[[Body], Any]) -> None:
    async def body(pool: Any, b: Backend) -> None:
        batcher = pool.batcher()
        futures = [batcher.submit(insert(b), (i, "x")) for i in range(50)]
        await batcher.close()
        assert batcher.closed
        assert all(f.done() and f.result() == BatchResult(1) for f in futures)
        with pytest.raises(BatcherClosed):
            batcher.submit(insert(b), (99, "late"))
        with pytest.raises(BatcherClosed):
            await batcher.execute(insert(b), (99, "late"))
        await batcher.close()  # again: harmless
        adds_up(batcher)
        assert b.ids() == list(range(50))

    run(body)


def test_full_raises_or_waits_for_room(run: Callable[[Body], Any]) -> None:
    async def body(pool: Any, b: Backend) -> None:
        async with pool.batcher(max_pending=2, on_full="raise") as batcher:
            gate = await parked(batcher, b)
            first = asyncio.ensure_future(batcher.execute(insert(b), (1, "x")))
            await asyncio.sleep(0)
            with pytest.raises(BatcherFull):
                await batcher.execute(insert(b), (2, "x"))
            with pytest.raises(BatcherFull):
                batcher.submit(insert(b), (2, "x"))
            b.unlock()
            await gate
            assert await first == BatchResult(1)
        async with pool.batcher(max_pending=2, full_timeout=0.2) as batcher:
            gate = await parked(batcher, b)
            second = asyncio.ensure_future(batcher.execute(insert(b), (2, "x")))
            await asyncio.sleep(0)
            with pytest.raises(BatcherFull, match="full_timeout"):
                await batcher.execute(insert(b), (3, "x"))  # waits 0.2 s in vain
            with pytest.raises(BatcherFull):
                batcher.submit(insert(b), (3, "x"))  # submit cannot wait
            waiting = asyncio.ensure_future(batcher.execute(insert(b), (4, "x")))
            await asyncio.sleep(0.01)
            assert not waiting.done()
            b.unlock()  # room: the waiting write goes in
            assert await asyncio.gather(gate, second, waiting) == [BatchResult(1)] * 3
            adds_up(batcher)
        assert b.ids() == [1, 2, 4]

    run(body, max_size=2)


def test_options_and_errors_are_the_sync_batchers(run: Callable[[Body], Any]) -> None:
    async def body(pool: Any, b: Backend) -> None:
        for bad in ({"flushers": 0}, {"max_batch": 0}, {"on_full": "drop"},
                    {"flushers": 3}, {"max_pending": 0}, {"bogus": 1}):
            with pytest.raises(ConfigError):
                pool.batcher(**bad)
        batcher = pool.batcher()
        with pytest.raises(TypeError):
            batcher.submit(insert(b), "not params")
        await batcher.close()

    run(body, max_size=2)
