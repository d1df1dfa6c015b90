"""Review reproductions for the asyncio front end (each fails on a real bug)."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Callable
from typing import Any

import pytest

from fastpool import ConfigError
from fastpool.drivers import from_url_async


def _asyncpg(pg_url: str) -> str:
    pytest.importorskip("asyncpg")
    return pg_url.replace("postgresql://", "postgresql+asyncpg://", 1)


def test_asyncpg_cancelled_mid_query_is_not_lent_in_a_transaction(
        run_pools: Callable[..., Any], pg_url: str) -> None:
    """A block cancelled while asyncpg is still running its statement (here
    ``BEGIN; SELECT pg_sleep``) must not be shelved as idle: asyncpg reads
    is_in_transaction() False until the cancelled query's ReadyForQuery."""
    url = _asyncpg(pg_url)

    async def body(make: Callable[..., Any]) -> None:
        pool = await make(driver=from_url_async(url), min_size=1, max_size=1)

        async def victim() -> None:
            async with pool.connection() as conn:
                await conn.execute("BEGIN; SELECT pg_sleep(0.3)")

        task = asyncio.ensure_future(victim())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with pool.connection() as conn:
            assert await conn.fetchval("SELECT 7") == 7  # InFailedSQLTransactionError today
            assert not conn.is_in_transaction()

    run_pools(body)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is Python 3.11+")
def test_asyncpg_writes_after_a_timed_out_transaction_are_not_lost(
        run_pools: Callable[..., Any], pg_url: str) -> None:
    """``asyncio.timeout`` around ``pool.transaction`` landing while BEGIN is in
    flight shelves the connection as idle; BEGIN then completes, the next
    borrower's autocommit INSERT runs inside it and is rolled back on release."""
    url = _asyncpg(pg_url)
    rng = random.Random(12)

    async def body(make: Callable[..., Any]) -> tuple[int, int]:
        pool = await make(driver=from_url_async(url), min_size=1, max_size=1)
        await pool.execute("DROP TABLE IF EXISTS review_lost")
        await pool.execute("CREATE TABLE review_lost (n int)")

        async def fn(conn: Any) -> None:
            await conn.execute("SELECT 1")

        written = 0
        for i in range(1500):
            try:
                async with asyncio.timeout(rng.uniform(0, 0.0006)):
                    await pool.transaction(fn)
            except TimeoutError:
                pass
            await pool.execute("INSERT INTO review_lost VALUES ($1)", (i,))
            written += 1
        stored = await pool.fetchval("SELECT count(*) FROM review_lost")
        await pool.execute("DROP TABLE review_lost")
        return written, stored

    written, stored = run_pools(body)
    assert stored == written, f"{written - stored} of {written} committed INSERTs were lost"


def test_transactional_refuses_a_plain_function_like_the_sync_pool_refuses_async(
        run_pools: Callable[..., Any]) -> None:
    """Pool refuses ``async def`` at decoration; AsyncPool accepts a plain
    ``def`` and only fails after running its body inside a transaction."""
    ran: list[int] = []

    async def body(make: Callable[..., Any]) -> None:
        pool = await make(min_size=1, max_size=1)

        def plain(conn: Any, x: int) -> None:
            ran.append(x)

        with pytest.raises(ConfigError):
            pool.transactional(plain)
        with pytest.raises(ConfigError):
            await pool.transaction(lambda conn: ran.append(0))
        assert ran == [], "the plain function's body ran before it was refused"

    run_pools(body)
