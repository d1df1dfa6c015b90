"""A batched write that failed leaves no reference cycle holding a connection.

A write the server refuses (here a duplicate key) is isolated by the batcher
under a savepoint; its error's traceback holds the frames it passed through,
the flusher's among them, which hold the batch's items and the connection.
If the item kept the error or its future (which keeps the error), or the
caller's frame kept the error it raised, those frames would form a cycle that
only Python's cyclic collector frees: until it runs, a connection later dropped
without a release could not be reclaimed (the pool's reclaim goes by
references). Found in review. Every test runs with the cyclic collector off.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tests.fix_db import Db
from tests.integration.query.test_result_cache_leaves_no_cycles import (  # noqa: F401
    no_cyclic_collector,  # autouse: the collector off, reclaiming quick
    reclaims_a_dropped_connection,
)
from tests.integration.test_async_pool import url  # noqa: F401


def reclaimed_after_a_drop(pool: Any) -> int:
    pool.acquire()  # the only connection, dropped at once without a release
    deadline = time.monotonic() + 5.0
    while pool.stats().in_use and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.stats().in_use == 0, "the dropped connection was never reclaimed"
    return int(pool.stats().reclaimed)


@pytest.mark.parametrize("how", ["execute", "submit"])
def test_a_failed_batched_write_keeps_nothing_referenced(db: Db, how: str) -> None:
    pool = db.make(max_size=1, min_size=0)
    mark = "?" if db.kind == "sqlite" else "%s"
    sql = f"INSERT INTO {db.table} (id, n) VALUES ({mark}, {mark})"
    with pool.batcher(max_batch=10, max_delay=0.05) as batcher:
        if how == "execute":
            batcher.execute(sql, (1, 1))
            with pytest.raises(Exception) as caught:
                batcher.execute(sql, (1, 2))  # a duplicate key
            del caught
        else:
            futures = [batcher.submit(sql, (i % 2, i)) for i in range(4)]
            outcomes = [f.exception(timeout=10) for f in futures]
            assert [e is None for e in outcomes] == [True, True, False, False]
            del futures, outcomes
    assert reclaimed_after_a_drop(pool) == 1


@pytest.mark.parametrize("how", ["execute", "submit"])
def test_a_failed_asyncio_batched_write_keeps_nothing_referenced(
        run_pools: Any, url: str, how: str) -> None:  # noqa: F811
    kind = ("sqlite" if url.startswith("sqlite") else
            "mysql" if url.startswith("mysql") else "postgresql")
    mark = {"sqlite": "?", "mysql": "%s"}.get(kind, "$1" if "asyncpg" in url else "%s")
    table = f"fp_batch_cyc_{uuid.uuid4().hex[:8]}"

    async def body(make: Any) -> None:
        pool = await make(url=url, max_size=1, min_size=0)
        await pool.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
        sql = f"INSERT INTO {table} (id) VALUES ({mark})"
        async with pool.batcher(max_batch=10, max_delay=0.05) as batcher:
            if how == "execute":
                await batcher.execute(sql, (1,))
                try:
                    await batcher.execute(sql, (1,))  # a duplicate key
                except Exception:
                    pass
                else:
                    raise AssertionError("the duplicate was accepted")
            else:
                futures = [batcher.submit(sql, (i % 2,)) for i in range(4)]
                outcomes = await asyncio.gather(*futures, return_exceptions=True)
                assert [isinstance(o, Exception) for o in outcomes] == [False, False, True, True]
                del futures, outcomes

        await reclaims_a_dropped_connection(pool)
        await pool.execute(f"DROP TABLE {table}")

    run_pools(body)
