"""``pool.discard(conn)``: a lent connection closed instead of returned, over
both cores, sync on SQLite and asyncio on aiosqlite (fastpool.compat's check
callbacks and null pools use it)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from fastpool.errors import ConfigError, ConnectionAlreadyReleased, ForeignConnection


def test_a_discarded_connection_is_closed_counted_and_replaced(
        make_pool: Callable[..., Any]) -> None:
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.acquire()
    pool.discard(conn)
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        conn.execute("SELECT 1")
    stats = pool.stats()
    assert stats.closed["broken"] == 1 and stats.in_use == 0
    with pool.connection() as fresh:  # the pool opens a replacement
        assert fresh is not conn
        assert fresh.execute("SELECT 1").fetchone() == (1,)
    other = pool.acquire()
    pool.discard(other, reason="idle")
    assert pool.stats().closed["idle"] == 1


def test_discard_refuses_what_the_pool_did_not_lend(make_pool: Callable[..., Any],
                                                    db_path: str) -> None:
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.acquire()
    with pytest.raises(ConfigError, match="reason"):
        pool.discard(conn, reason="tired")
    pool.release(conn)
    with pytest.raises(ConnectionAlreadyReleased):
        pool.discard(conn)  # idle in the pool now
    stranger = sqlite3.connect(db_path)
    try:
        with pytest.raises(ForeignConnection):
            pool.discard(stranger)
    finally:
        stranger.close()
    lent = pool.acquire()
    pool.discard(lent)
    with pytest.raises(ForeignConnection):
        pool.release(lent)  # no longer the pool's


def test_an_asyncio_pool_discards_too(run_pools: Callable[..., Any]) -> None:
    async def body(make: Callable[..., Any]) -> None:
        pool = await make(min_size=1, max_size=1)
        conn = await pool.acquire()
        pool.discard(conn)
        async with pool.connection() as fresh:
            assert fresh is not conn
        for _ in range(100):  # the close is a task of the pool's
            if pool.stats().closed["broken"] == 1:
                break
            await asyncio.sleep(0.01)
        assert pool.stats().closed["broken"] == 1

    run_pools(body)
