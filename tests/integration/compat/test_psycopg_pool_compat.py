"""fastpool.compat.psycopg_pool against psycopg_pool 3.3's documented
behaviour, on the real PostgreSQL: the constructor and its defaults, the
connection's ``_pool`` contract, returns (dirty, broken, foreign), ``check``
callbacks, the exceptions, stats, the lifecycle, null pools; threads and
asyncio. Each pool's sessions carry an application_name of their own, so the
server's view (pg_stat_activity) tells which backends the pool holds.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import fastpool.errors
from fastpool.compat import psycopg_pool as compat
from fastpool.compat.psycopg_pool import (
    AsyncConnectionPool,
    AsyncNullConnectionPool,
    ConnectionPool,
    NullConnectionPool,
    PoolClosed,
    PoolTimeout,
    TooManyRequests,
)
from tests.fix_db import free_port, need_driver, pg_backend_pids, pg_terminate


@pytest.fixture
def app() -> str:
    """An application_name for this test's pools (to find their backends)."""
    return f"fp-compat-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def table(pg_admin: Any) -> Iterator[str]:
    name = f"compat_{uuid.uuid4().hex[:10]}"
    pg_admin.execute(f"CREATE TABLE {name} (x int)")
    yield name
    pg_admin.execute(f"DROP TABLE {name}")


@pytest.fixture
def make(pg_url: str, app: str) -> Iterator[Callable[..., Any]]:
    """``make(cls=ConnectionPool, **options)``: a pool of this test's sessions
    (open, so that a test's failure still closes it)."""
    pools: list[Any] = []

    def build(cls: type[Any] = ConnectionPool, **options: Any) -> Any:
        options.setdefault("kwargs", {"application_name": app})
        options.setdefault("open", True)
        options.setdefault("timeout", 5.0)
        pool = cls(pg_url, **options)
        pools.append(pool)
        return pool

    yield build
    for pool in pools:
        pool.close()


def backend_pid(conn: Any) -> int:
    return int(conn.info.backend_pid)


# ---- the constructor ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["ConnectionPool", "NullConnectionPool", "AsyncConnectionPool",
                                  "AsyncNullConnectionPool"])
def test_the_constructor_takes_psycopg_pools_arguments_with_its_defaults(name: str) -> None:
    psycopg_pool = need_driver("psycopg_pool", "bench")
    ours = inspect.signature(getattr(compat, name))
    theirs = inspect.signature(getattr(psycopg_pool, name))
    mine = {p.name: p.default for p in ours.parameters.values()}
    if "options" in mine:  # the null pools pass the rest on to their base
        base = "AsyncConnectionPool" if name.startswith("Async") else "ConnectionPool"
        mine = {**{p.name: p.default for p in inspect.signature(
            getattr(compat, base)).parameters.values()}, **mine}
        del mine["options"]
    assert mine == {p.name: p.default for p in theirs.parameters.values()}


def test_bad_options_are_value_errors_naming_the_option(pg_url: str) -> None:
    with pytest.raises(ValueError, match="max_size"):
        ConnectionPool(pg_url, min_size=4, max_size=2, open=True)
    with pytest.raises(ValueError, match="num_workers"):
        ConnectionPool(pg_url, num_workers=0, open=False)
    with pytest.raises(ValueError, match="timeout"):
        ConnectionPool(pg_url, timeout=-1, open=True)
    with pytest.raises(ValueError, match="min_size = 0"):
        NullConnectionPool(pg_url, min_size=1, open=False)
    with pytest.raises(fastpool.errors.ConfigError, match="close_returns"):
        ConnectionPool(pg_url, close_returns=1, open=False)  # type: ignore[arg-type]


# ---- lending and returning ---------------------------------------------------------


def test_connection_block_commits_on_success_and_rolls_back_on_error(
        make: Callable[..., Any], table: str, pg_admin: Any) -> None:
    pool = make(min_size=1)
    with pool.connection() as conn:
        conn.execute(f"INSERT INTO {table} VALUES (1)")
    with pytest.raises(ZeroDivisionError), pool.connection() as conn:
        conn.execute(f"INSERT INTO {table} VALUES (2)")
        1 / 0  # noqa: B018
    assert pg_admin.execute(f"SELECT x FROM {table}").fetchall() == [(1,)]
    with pool.connection() as conn:  # the rolled-back one is idle and usable
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_lent_connection_knows_its_pool_and_with_conn_does_not_close_it(
        make: Callable[..., Any], table: str, pg_admin: Any) -> None:
    pool = make(min_size=1, max_size=1)
    conn = pool.getconn()
    assert conn._pool is pool
    with conn:  # psycopg's own block: commits, and leaves a pooled connection open
        conn.execute(f"INSERT INTO {table} VALUES (1)")
    assert not conn.closed
    assert pg_admin.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)
    pool.putconn(conn)
    assert conn._pool is None  # idle in the pool: no reference back to it
    with pool.connection() as again:
        assert again is conn


def test_close_returns_makes_close_give_the_connection_back(make: Callable[..., Any]) -> None:
    pool = make(min_size=1, max_size=1, close_returns=True)
    conn = pool.getconn()
    pid = backend_pid(conn)
    conn.close()
    assert not conn.closed
    assert pool.get_stats()["pool_available"] == 1
    with pool.connection() as again:
        assert again is conn and backend_pid(again) == pid


def test_without_close_returns_close_closes_and_the_return_is_replaced(
        make: Callable[..., Any], pg_admin: Any, app: str) -> None:
    pool = make(min_size=2, max_size=2)
    pool.wait()
    conn = pool.getconn()
    conn.close()
    assert conn.closed
    pool.putconn(conn)
    assert pool.pop_stats()["returns_bad"] == 1
    pool.wait()  # a replacement is opened
    with pool.connection() as c1, pool.connection() as c2:
        assert conn not in (c1, c2)
        assert not c1.closed and not c2.closed
    assert len(pg_backend_pids(pg_admin, app)) == 2


def test_a_broken_connection_returned_is_replaced(
        make: Callable[..., Any], pg_admin: Any, app: str) -> None:
    pool = make(min_size=1, max_size=1)
    conn = pool.getconn()
    pg_terminate(pg_admin, [backend_pid(conn)])
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    pool.putconn(conn)
    with pool.connection() as fresh:
        assert fresh is not conn
        assert fresh.execute("SELECT 1").fetchone() == (1,)


def test_a_dirty_return_is_rolled_back_with_a_warning_on_psycopg_pool_logger(
        make: Callable[..., Any], table: str, pg_admin: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    pool = make(min_size=1, max_size=1)
    conn = pool.getconn()
    conn.execute(f"INSERT INTO {table} VALUES (1)")
    with caplog.at_level(logging.WARNING, logger="psycopg.pool"):
        pool.putconn(conn)
    assert any(r.name == "psycopg.pool" and "rolling back" in r.getMessage()
               for r in caplog.records)
    assert pg_admin.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    with pool.connection() as again:
        assert again is conn
        assert again.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_connection_returned_to_the_wrong_pool_is_a_value_error(
        make: Callable[..., Any], pg_url: str) -> None:
    one, other = make(min_size=1, name="one"), make(min_size=1, name="other")
    conn = one.getconn()
    with pytest.raises(ValueError, match="it comes from pool 'one'"):
        other.putconn(conn)
    one.putconn(conn)
    with pytest.raises(ValueError, match="doesn't come from any pool"):
        one.putconn(conn)  # twice
    with psycopg.connect(pg_url) as plain, pytest.raises(ValueError):
        one.putconn(plain)


def test_the_class_is_subscriptable_and_lends_the_connection_class(
        make: Callable[..., Any]) -> None:
    class MyConnection(psycopg.Connection[Any]):
        pass

    pool = make(ConnectionPool[MyConnection], min_size=1, connection_class=MyConnection)
    with pool.connection() as conn:
        assert type(conn) is MyConnection


def test_conninfo_and_kwargs_may_be_callables(pg_url: str, app: str, pg_admin: Any) -> None:
    calls: list[str] = []

    def conninfo() -> str:
        calls.append("conninfo")
        return pg_url

    def kwargs() -> dict[str, Any]:
        calls.append("kwargs")
        return {"application_name": app}

    with ConnectionPool(conninfo, kwargs=kwargs, min_size=1, open=True) as pool:
        pool.wait()
        with pool.connection() as conn:
            assert backend_pid(conn) in pg_backend_pids(pg_admin, app)
    assert calls[:2] == ["conninfo", "kwargs"]


# ---- callbacks -------------------------------------------------------------------------


def test_configure_runs_once_per_connection_and_reset_on_every_return(
        make: Callable[..., Any]) -> None:
    configured: list[int] = []
    resets: list[int] = []

    def configure(conn: Any) -> None:
        conn.execute("SET statement_timeout = '7s'")
        conn.commit()
        configured.append(backend_pid(conn))

    def reset(conn: Any) -> None:
        conn.execute("RESET search_path")
        conn.commit()  # a reset must leave the connection idle
        resets.append(backend_pid(conn))

    pool = make(min_size=1, max_size=1, configure=configure, reset=reset)
    for _ in range(3):
        with pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)
            conn.execute("SET search_path = nowhere")
    with pool.connection() as conn:
        assert conn.execute("SHOW search_path").fetchone() != ("nowhere",)
    assert configured == [backend_pid(conn)]
    assert resets == [backend_pid(conn)] * 4


def test_with_conn_in_configure_and_reset_does_not_close_the_connection(
        make: Callable[..., Any]) -> None:
    """The callbacks see the connection as the pool's (``_pool`` set), as psycopg_pool's do:
    psycopg's ``with conn`` commits and leaves it open."""
    seen: list[tuple[str, bool]] = []

    def configure(conn: Any) -> None:
        with conn:
            conn.execute("SET application_name = 'configured'")
        seen.append(("configure", conn._pool is pool))

    def reset(conn: Any) -> None:
        with conn:
            conn.execute("RESET search_path")
        seen.append(("reset", conn._pool is pool))

    pool = make(min_size=1, max_size=1, configure=configure, reset=reset)
    for _ in range(2):
        with pool.connection() as conn:
            assert conn.execute("SHOW application_name").fetchone() == ("configured",)
    assert not conn.closed and conn._pool is None
    assert seen == [("configure", True), ("reset", True), ("reset", True)]


async def _async_hooks(pg_url: str, app: str) -> list[str]:
    seen: list[str] = []

    async def configure(conn: Any) -> None:
        async with conn:
            await conn.execute("SET application_name = 'configured'")
        seen.append(f"configure {conn._pool is pool}")

    async def reset(conn: Any) -> None:
        async with conn:
            await conn.execute("RESET search_path")
        seen.append(f"reset {conn._pool is pool}")

    pool = AsyncConnectionPool(pg_url, kwargs={"application_name": app}, min_size=1,
                               max_size=1, configure=configure, reset=reset, open=False)
    async with pool:
        for _ in range(2):
            async with pool.connection() as conn:
                cur = await conn.execute("SHOW application_name")
                seen.append(str((await cur.fetchone())[0]))
    return seen


def test_async_with_conn_in_configure_and_reset_does_not_close_the_connection(
        pg_url: str, app: str) -> None:
    assert run(_async_hooks(pg_url, app)) == [
        "configure True", "configured", "reset True", "configured", "reset True"]


def test_a_configure_leaving_a_transaction_open_discards_the_connection(
        make: Callable[..., Any]) -> None:
    def configure(conn: Any) -> None:
        conn.execute("SELECT 1")  # opens a transaction, never committed

    pool = make(min_size=1, max_size=1, configure=configure, timeout=0.5)
    with pytest.raises(PoolTimeout):
        pool.getconn()
    assert pool.get_stats()["connections_num"] >= 1
    assert pool.get_stats()["pool_available"] == 0


def test_connections_failing_check_are_discarded_within_the_callers_timeout(
        make: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    failing: set[int] = set()

    def check(conn: Any) -> None:
        if backend_pid(conn) in failing:
            raise psycopg.OperationalError("check failed")

    pool = make(min_size=3, max_size=3, check=check)
    pool.wait()
    held = [pool.getconn() for _ in range(3)]
    failing.update(backend_pid(c) for c in held[:2])
    good = backend_pid(held[2])
    for conn in held:
        pool.putconn(conn)
    with caplog.at_level(logging.INFO, logger="psycopg.pool"):
        # All three at once: whichever order they come in, the two failing ones
        # are discarded and the requests get the good one and replacements.
        again = [pool.getconn() for _ in range(3)]
    assert not failing & {backend_pid(c) for c in again}
    for conn in again:
        pool.putconn(conn)
    assert any("failed check" in r.getMessage() for r in caplog.records)
    assert pool.get_stats()["connections_lost"] == 2
    pool.wait()
    assert pool.get_stats()["pool_size"] == 3  # replaced
    assert good not in failing


def test_a_check_that_always_fails_ends_in_pool_timeout(make: Callable[..., Any]) -> None:
    def check(conn: Any) -> None:
        raise psycopg.OperationalError("never good")

    pool = make(min_size=1, max_size=1, check=check)
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.5)
    assert pool.get_stats()["requests_waiting"] == 0


def test_check_connection_is_usable_as_the_check_callback(
        make: Callable[..., Any], pg_admin: Any) -> None:
    pool = make(min_size=1, max_size=1, check=ConnectionPool.check_connection)
    with pool.connection() as conn:
        assert conn.autocommit is False
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        pid = backend_pid(conn)
    pg_terminate(pg_admin, [pid])
    with pool.connection() as conn:  # the killed one failed the check and was replaced
        assert backend_pid(conn) != pid
    closed = psycopg.connect(pool.conninfo)
    closed.close()
    with pytest.raises(psycopg.OperationalError):
        ConnectionPool.check_connection(closed)


# ---- exceptions -----------------------------------------------------------------------


def test_exceptions_are_psycopg_pools_and_fastpools(make: Callable[..., Any]) -> None:
    psycopg_pool = need_driver("psycopg_pool", "bench")
    pool = make(min_size=1, max_size=1, max_waiting=1)
    held = pool.getconn()
    with pytest.raises(psycopg_pool.PoolTimeout) as info:
        pool.getconn(timeout=0.1)
    assert isinstance(info.value, PoolTimeout)
    assert isinstance(info.value, fastpool.errors.PoolTimeout)
    assert "max_size 1" in str(info.value)  # fastpool's message: the pool's state

    waiter = threading.Thread(target=lambda: pool.putconn(pool.getconn(timeout=5)))
    waiter.start()
    while pool.get_stats()["requests_waiting"] < 1:
        threading.Event().wait(0.01)
    with pytest.raises(psycopg_pool.TooManyRequests) as too_many:
        pool.getconn()
    assert isinstance(too_many.value, (TooManyRequests, fastpool.errors.TooManyWaiting))
    pool.putconn(held)
    waiter.join()
    pool.close()
    with pytest.raises(psycopg_pool.PoolClosed) as closed:
        pool.getconn()
    assert isinstance(closed.value, fastpool.errors.PoolClosed)


# ---- lifecycle -------------------------------------------------------------------------


def test_open_false_then_open_wait_and_no_reopening(pg_url: str, app: str) -> None:
    pool = ConnectionPool(pg_url, kwargs={"application_name": app}, min_size=2, open=False)
    assert pool.closed
    with pytest.raises(PoolClosed, match="not open yet"):
        pool.getconn()
    with pytest.raises(PoolClosed, match="not open yet"):
        pool.wait(1)
    assert pool.get_stats()["pool_size"] == 0
    pool.open(wait=True, timeout=10)
    assert not pool.closed
    assert pool.get_stats()["pool_available"] == 2
    pool.open()  # again: harmless
    pool.close()
    assert pool.closed
    with pytest.raises(PoolClosed, match="cannot be reused"):
        pool.open()


def test_an_implicitly_opened_pool_warns_at_its_first_request(pg_url: str) -> None:
    pool = ConnectionPool(pg_url, min_size=1)
    try:
        with pytest.warns(DeprecationWarning, match="'open' parameter"):
            pool.putconn(pool.getconn())
        pool.putconn(pool.getconn())  # once
    finally:
        pool.close()
    with ConnectionPool(pg_url, min_size=1) as pool:  # a with block is explicit
        pool.putconn(pool.getconn())


def test_wait_times_out_closes_the_pool_and_raises_pool_timeout() -> None:
    pool = ConnectionPool(f"host=127.0.0.1 port={free_port()} user=nobody dbname=none "
                          "connect_timeout=1", min_size=1, open=True, reconnect_timeout=1)
    with pytest.raises(PoolTimeout):
        pool.wait(timeout=0.5)
    assert pool.closed


def test_close_fails_waiting_and_later_requests(make: Callable[..., Any]) -> None:
    pool = make(min_size=1, max_size=1)
    held = pool.getconn()
    errors: list[BaseException] = []

    def wait_for_one() -> None:
        try:
            pool.getconn(timeout=10)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_for_one)
    waiter.start()
    while pool.get_stats()["requests_waiting"] < 1:
        threading.Event().wait(0.01)
    closer = threading.Thread(target=pool.close, kwargs={"timeout": 10})
    closer.start()
    waiter.join()
    assert len(errors) == 1 and isinstance(errors[0], PoolClosed)
    pool.putconn(held)  # a return to a closed pool closes the connection
    closer.join()
    assert held.closed


def test_resize_drain_and_check(make: Callable[..., Any], pg_admin: Any, app: str) -> None:
    pool = make(min_size=1, max_size=1)
    pool.wait()
    pool.resize(3)
    assert (pool.min_size, pool.max_size) == (3, 3)
    pool.wait()
    before = set(pg_backend_pids(pg_admin, app))
    assert len(before) == 3
    pool.drain()
    pool.wait()
    with pool.connection() as conn:
        assert backend_pid(conn) not in before
    victim = pg_backend_pids(pg_admin, app)[0]
    pg_terminate(pg_admin, [victim])
    pool.check()
    assert pool.get_stats()["connections_lost"] >= 1
    pool.wait()
    assert victim not in pg_backend_pids(pg_admin, app)
    with pytest.raises(ValueError):
        pool.resize(4, 2)


def test_max_lifetime_replaces_old_connections_and_max_idle_shrinks_to_min_size(
        make: Callable[..., Any]) -> None:
    pool = make(min_size=1, max_size=3, max_lifetime=0.3, max_idle=0.3)
    with pool.connection() as conn:
        first = backend_pid(conn)
    deadline = time.monotonic() + 10
    while True:  # a connection past its lifetime is not lent again
        with pool.connection() as conn:
            if backend_pid(conn) != first:
                break
        assert time.monotonic() < deadline, "a connection outlived max_lifetime"
        time.sleep(0.05)
    held = [pool.getconn() for _ in range(3)]
    for conn in held:
        pool.putconn(conn)
    assert pool.get_stats()["pool_size"] == 3
    while pool.get_stats()["pool_size"] > 1:  # the extra ones close once idle
        assert time.monotonic() < deadline, "idle connections above min_size stayed open"
        time.sleep(0.05)


def test_async_resize_drain_and_check(pg_url: str, app: str, pg_admin: Any) -> None:
    async def main() -> None:
        async with AsyncConnectionPool(pg_url, kwargs={"application_name": app}, min_size=1,
                                       open=False) as pool:
            await pool.wait()
            await pool.resize(2, 3)
            assert (pool.min_size, pool.max_size) == (2, 3)
            await pool.wait()
            before = set(pg_backend_pids(pg_admin, app))
            assert len(before) == 2
            await pool.drain()
            await pool.wait()
            async with pool.connection() as conn:
                assert conn.info.backend_pid not in before
            await pool.check()
            assert pool.get_stats()["pool_size"] == 2

    run(main())


def test_reconnect_failed_is_called_with_the_pool() -> None:
    called = threading.Event()
    seen: list[Any] = []

    def failed(pool: Any) -> None:
        seen.append(pool)
        called.set()

    def conninfo() -> str:  # e.g. the secrets service is down: retried, not fatal
        raise RuntimeError("no credentials yet")

    with ConnectionPool(conninfo, min_size=1, open=True, reconnect_timeout=0.2,
                        reconnect_failed=failed) as pool:
        assert called.wait(10)
        assert seen[0] is pool
        assert pool.get_stats()["connections_errors"] >= 1


# ---- stats --------------------------------------------------------------------------


def test_stats_have_psycopg_pools_keys_and_pop_resets_the_counters(
        make: Callable[..., Any]) -> None:
    pool = make(min_size=2, max_size=2)
    pool.wait()
    a, b = pool.getconn(), pool.getconn()
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.05)
    pool.putconn(a)
    pool.putconn(b)
    stats = pool.pop_stats()
    assert {k: stats[k] for k in ("pool_min", "pool_max", "pool_size", "pool_available",
                                  "requests_waiting")} == {
        "pool_min": 2, "pool_max": 2, "pool_size": 2, "pool_available": 2,
        "requests_waiting": 0}
    assert stats["requests_num"] == 3
    assert stats["requests_errors"] == 1
    assert stats["requests_queued"] >= 1
    assert stats["connections_num"] == 2
    assert set(stats) <= {
        "pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting",
        "requests_num", "requests_queued", "requests_wait_ms", "requests_errors", "usage_ms",
        "returns_bad", "connections_num", "connections_ms", "connections_errors",
        "connections_lost"}
    after = pool.get_stats()
    assert "requests_num" not in after and "connections_num" not in after
    assert after["pool_size"] == 2


# ---- null pools ------------------------------------------------------------------------


def test_a_null_pool_keeps_no_idle_connection(
        make: Callable[..., Any], pg_admin: Any, app: str) -> None:
    pool = make(NullConnectionPool)
    assert (pool.min_size, pool.max_size) == (0, compat.MAX_POOL_SIZE)
    for _ in range(2):
        with pool.connection() as conn:
            assert pg_backend_pids(pg_admin, app) == [backend_pid(conn)]
        stats = pool.get_stats()
        assert stats["pool_available"] == 0 and stats["pool_size"] == 0
        assert conn.closed
    pool.check()  # nothing to check


def test_a_null_pool_hands_the_returned_connection_to_a_waiter_after_reset(
        make: Callable[..., Any]) -> None:
    resets: list[int] = []
    pool = make(NullConnectionPool, max_size=1,
                reset=lambda conn: resets.append(backend_pid(conn)))
    held = pool.getconn()
    pid = backend_pid(held)
    got: list[int] = []
    waiter = threading.Thread(
        target=lambda: got.append(backend_pid(conn := pool.getconn())) or pool.putconn(conn))
    waiter.start()
    while pool.get_stats()["requests_waiting"] < 1:
        threading.Event().wait(0.01)
    pool.putconn(held)
    waiter.join()
    assert got == [pid]
    assert resets == [pid]  # the waiter's return found no one waiting: closed, not reset
    assert pool.get_stats()["pool_size"] == 0


# ---- asyncio -----------------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_async_pool_lends_commits_rolls_back_and_keeps_the_pool_contract(
        pg_url: str, app: str, table: str, pg_admin: Any) -> None:
    async def main() -> None:
        async with AsyncConnectionPool(pg_url, kwargs={"application_name": app}, min_size=1,
                                       max_size=1, open=False, close_returns=True) as pool:
            async with pool.connection() as conn:
                assert conn._pool is pool
                await conn.execute(f"INSERT INTO {table} VALUES (1)")
            with pytest.raises(ZeroDivisionError):
                async with pool.connection() as conn:
                    await conn.execute(f"INSERT INTO {table} VALUES (2)")
                    1 / 0  # noqa: B018
            got = await pool.getconn()
            assert got is conn
            async with got:  # psycopg's own block leaves it open
                pass
            await got.close()  # close_returns
            assert not got.closed and got._pool is None
            assert pool.get_stats()["pool_available"] == 1
        assert pool.closed

    run(main())
    assert pg_admin.execute(f"SELECT x FROM {table}").fetchall() == [(1,)]


def test_async_pool_timeout_wrong_pool_and_closed(pg_url: str, app: str) -> None:
    psycopg_pool = need_driver("psycopg_pool", "bench")

    async def main() -> None:
        pool = AsyncConnectionPool(pg_url, kwargs={"application_name": app}, min_size=1,
                                   open=False)
        with pytest.raises(PoolClosed, match="not open yet"):
            await pool.getconn()
        await pool.open(wait=True)
        held = await pool.getconn()
        with pytest.raises(psycopg_pool.PoolTimeout):
            await pool.getconn(timeout=0.05)
        other = AsyncConnectionPool(pg_url, min_size=1, open=False, name="other")
        await other.open()
        with pytest.raises(ValueError, match="can't return connection to pool 'other'"):
            await other.putconn(held)
        await other.close()
        await pool.putconn(held)
        await pool.close()
        with pytest.raises(psycopg_pool.PoolClosed):
            await pool.getconn()

    run(main())


def test_async_check_discards_failing_connections_and_broken_returns_are_replaced(
        pg_url: str, app: str, pg_admin: Any) -> None:
    async def main() -> None:
        failing: set[int] = set()

        async def check(conn: Any) -> None:
            if conn.info.backend_pid in failing:
                raise psycopg.OperationalError("check failed")
            await AsyncConnectionPool.check_connection(conn)

        async with AsyncConnectionPool(pg_url, kwargs={"application_name": app}, min_size=2,
                                       check=check, open=False) as pool:
            await pool.wait()
            a, b = await pool.getconn(), await pool.getconn()
            failing.add(a.info.backend_pid)
            await pool.putconn(a)
            await pool.putconn(b)
            both = [await pool.getconn(), await pool.getconn()]
            assert not failing & {c.info.backend_pid for c in both}
            for conn in both:
                await pool.putconn(conn)
            assert pool.get_stats()["connections_lost"] == 1
            conn = await pool.getconn()
            pg_terminate(pg_admin, [conn.info.backend_pid])
            with pytest.raises(psycopg.OperationalError):
                await conn.execute("SELECT 1")
            await pool.putconn(conn)
            await pool.wait()
            async with pool.connection() as fresh:
                assert fresh is not conn
                await fresh.execute("SELECT 1")

    run(main())


def test_async_configure_and_reset_are_awaited(pg_url: str, app: str) -> None:
    async def main() -> None:
        events: list[str] = []

        async def configure(conn: Any) -> None:
            await conn.set_autocommit(True)
            events.append("configure")

        async def reset(conn: Any) -> None:
            events.append("reset")

        pool = AsyncConnectionPool(pg_url, kwargs={"application_name": app}, min_size=1,
                                   configure=configure, reset=reset, open=False)
        async with pool, pool.connection() as conn:
            assert conn.autocommit
        assert events == ["configure", "reset"]

    run(main())


def test_async_pool_opened_in_the_constructor_warns(pg_url: str) -> None:
    async def main() -> None:
        with pytest.warns(RuntimeWarning, match="in the constructor is deprecated"):
            pool = AsyncConnectionPool(pg_url, min_size=1, open=True)
        await pool.close()

    run(main())


def test_async_null_pool_hands_over_or_closes(pg_url: str, app: str, pg_admin: Any) -> None:
    async def main() -> None:
        async with AsyncNullConnectionPool(pg_url, kwargs={"application_name": app},
                                           max_size=1, open=False) as pool:
            held = await pool.getconn()
            pid = held.info.backend_pid
            waiter = asyncio.create_task(pool.getconn())
            while pool.get_stats()["requests_waiting"] < 1:
                await asyncio.sleep(0.01)
            await pool.putconn(held)
            second = await waiter
            assert second is held and second.info.backend_pid == pid
            await pool.putconn(second)
            for _ in range(100):  # closing is a task of the pool's
                if second.closed:
                    break
                await asyncio.sleep(0.01)
            assert second.closed
            assert pool.get_stats()["pool_size"] == 0

    run(main())
    assert pg_backend_pids(pg_admin, app) == []


# ---- the example program, as written for psycopg_pool and switched ----------------------

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_the_example_differs_from_its_psycopg_pool_original_only_in_the_import() -> None:
    def code(name: str) -> list[str]:
        return (EXAMPLES / name).read_text().split('"""', 2)[2].splitlines()  # after the docstring

    original, switched = code("psycopg_pool_app.py"), code("psycopg_pool_app_fastpool.py")
    differ = [(a, b) for a, b in zip(original, switched, strict=True) if a != b]
    assert differ == [("from psycopg_pool import ConnectionPool",
                       "from fastpool.compat.psycopg_pool import ConnectionPool")]


def test_the_example_runs_the_same_on_psycopg_pool_and_on_fastpool(pg_url: str) -> None:
    need_driver("psycopg_pool", "bench")
    outputs = []
    for name in ("psycopg_pool_app.py", "psycopg_pool_app_fastpool.py"):
        done = subprocess.run(
            [sys.executable, "-W", "error", str(EXAMPLES / name), pg_url],
            capture_output=True, text=True, timeout=240,
            env={**os.environ, "BANK_TRANSFERS": "20",
                 "BANK_SUFFIX": f"_{uuid.uuid4().hex[:8]}"})
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout.splitlines())
    assert outputs[0] == outputs[1]
    assert outputs[1] == [
        "transfers attempted: 320 (each moved or refused: True)",
        "ledger rows match the transfers moved: True",
        "total balance: 50000 (opened with 50000)",
        "accounts disagreeing with the ledger: 0"]


def test_without_psycopg_pool_the_exceptions_are_psycopgs_and_fastpools() -> None:
    code = (
        "import sys; sys.modules['psycopg_pool'] = None\n"  # as if not installed
        "import psycopg, fastpool.errors as fe\n"
        "from fastpool.compat import psycopg_pool as c\n"
        "pairs = [(c.PoolTimeout, fe.PoolTimeout), (c.PoolClosed, fe.PoolClosed),\n"
        "         (c.TooManyRequests, fe.TooManyWaiting)]\n"
        "assert all(issubclass(ours, (psycopg.OperationalError)) and issubclass(ours, theirs)\n"
        "           for ours, theirs in pairs)\n"
        "e = c.PoolTimeout('late'); assert str(e) == 'late' and e.pgconn is None\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
