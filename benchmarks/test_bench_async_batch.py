"""Group commit on asyncio: 1,000 tasks writing single rows through
``await batcher.execute(...)`` (``AsyncPool.batcher()``), committed, on
PostgreSQL; the thread batcher with 32 threads in the same run as the baseline.

Contenders (group ``async-batch-postgresql``):

* ``sync_batcher_32_threads``: ``Batcher.execute()`` from 32 threads
  (test_bench_batch.py's ``batcher_execute``, one flusher, one connection);
* ``async_<client>_<loop>``: 1,000 tasks each looping ``await
  batcher.execute(INSERT, (id, 'x'))`` for ``DURATION`` seconds on an
  AsyncPool (asyncpg, psycopg ``AsyncConnection``) with the default batcher
  (one flusher task, ``max_batch`` 500), on asyncio and uvloop;
* ``async_<client>_<loop>_max_batch_150``: the same with ``max_batch=150``:
  smaller batches, each commit under 5 ms here, still above 50,000 writes/s.

extra_info: ``writes_per_s`` (committed), the caller-measured latency of each
write (call -> committed) p50/p99, and the batcher's ``commit_p50/p99``: the
time of one batch from taken by the flusher to resolved (BEGIN, the
multi-row INSERT, COMMIT, waking its callers). With 1,000 tasks always
waiting on a write, a write's latency is bounded below by Little's law
(1,000 / throughput: 10-20 ms at 50-100K/s), so the open-loop group
(``async-batch-open-postgresql``) also offers a fixed 50,000 writes/s (each
task writes 50 rows/s on a schedule) and reports the latency at that rate.

Benchmarks are not tests: nothing asserts anything about time. Run::

    flock /tmp/fp-servers.lock python3 -m pytest benchmarks/test_bench_async_batch.py \\
        --benchmark-json=abatch-1.json
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from test_bench_batch import (
    INSERT,
    TABLE,
    batcher_execute,
    pg_pool,
    run_batcher,
)

DURATION = float(os.environ.get("FASTPOOL_BENCH_DURATION", "3"))
TASKS = 1000
OPEN_RATE = 50_000.0
PG_URL = os.environ.get("FASTPOOL_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _url(client: str) -> str:
    return PG_URL.replace("postgresql://", "postgresql+asyncpg://", 1) \
        if client == "asyncpg" else PG_URL


def _sql(client: str) -> str:
    return INSERT.replace("%s, %s", "$1, $2") if client == "asyncpg" else INSERT


async def _drive(client: str, rate: float | None, max_batch: int) -> dict[str, Any]:
    from fastpool.pool.async_facade import create_async_pool

    async with create_async_pool(_url(client), min_size=2, max_size=2, timeout=60) as pool:
        conn = await pool.acquire()
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            await conn.execute(f"CREATE TABLE {TABLE} (id BIGINT PRIMARY KEY, v VARCHAR(20))")
            if client == "psycopg":
                await conn.commit()
        finally:
            await pool.release(conn)
        sql = _sql(client)
        loop = asyncio.get_running_loop()
        counts = [0] * TASKS
        latencies: list[list[float]] = [[] for _ in range(TASKS)]
        state = {"measuring": False, "stop": False}
        clock = time.perf_counter
        period = TASKS / rate if rate else 0.0

        async def task(t: int, execute: Callable[..., Any]) -> None:
            lat = latencies[t]
            n = 0
            nxt = loop.time() + period * t / TASKS
            while not state["stop"]:
                if period:
                    delay = nxt - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    nxt += period
                t0 = clock()
                await execute(sql, (t * 1_000_000_000 + n, "x"))
                n += 1
                if state["measuring"]:
                    lat.append(clock() - t0)
                    counts[t] += 1

        async with pool.batcher(max_batch=max_batch) as batcher:
            tasks = [loop.create_task(task(t, batcher.execute)) for t in range(TASKS)]
            await asyncio.sleep(0.5)  # warm up
            batcher.stats(reset=True)
            state["measuring"] = True
            t0 = clock()
            await asyncio.sleep(DURATION)
            state["measuring"] = False
            elapsed = clock() - t0
            s = batcher.stats()
            state["stop"] = True
            await asyncio.gather(*tasks)
        conn = await pool.acquire()
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            if client == "psycopg":
                await conn.commit()
        finally:
            await pool.release(conn)
    every = sorted(x for lat in latencies for x in lat)
    return {
        "tasks": TASKS,
        "offered_per_s": rate,
        "writes": sum(counts),
        "writes_per_s": sum(counts) / elapsed,
        "latency_p50_ms": every[len(every) // 2] * 1e3,
        "latency_p99_ms": every[int(len(every) * 0.99)] * 1e3,
        "commit_p50_ms": s.commit_p50 * 1e3,
        "commit_p99_ms": s.commit_p99 * 1e3,
        "batch_size_mean": s.batch_size_mean,
        "batches": s.batches,
    }


def _run(client: str, loop: str, rate: float | None, max_batch: int = 500) -> dict[str, Any]:
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run(_drive(client, rate, max_batch))  # type: ignore[no-any-return]
    return asyncio.run(_drive(client, rate, max_batch))


def _report(benchmark: Any, contender: str, result: dict[str, Any]) -> None:
    benchmark.extra_info.update(result, contender=contender)
    print(f"\n{contender:26s} {result['writes_per_s']:8.0f} writes/s  "
          f"p50 {result['latency_p50_ms']:6.2f} ms  p99 {result['latency_p99_ms']:6.2f} ms  "
          f"commit p99 {result.get('commit_p99_ms', float('nan')):5.2f} ms  "
          f"batch mean {result['batch_size_mean']:.0f}")


ASYNC = [f"async_{client}_{loop}" for client in ("asyncpg", "psycopg")
         for loop in ("asyncio", "uvloop")]
SMALL_BATCH = 150  # the batch that keeps one commit under 5 ms here (BENCHMARKS.md)


@pytest.mark.parametrize("contender", ["sync_batcher_32_threads", *ASYNC,
                                       *(f"{c}_max_batch_{SMALL_BATCH}" for c in ASYNC)])
def test_pg_async_batcher(benchmark: Any, pg_dsn: str, contender: str) -> None:
    benchmark.group = "async-batch-postgresql"
    if contender == "sync_batcher_32_threads":
        result = run_batcher(benchmark, pg_pool(pg_dsn, 2), batcher_execute)
    else:
        _, client, loop = contender.split("_")[:3]
        max_batch = SMALL_BATCH if contender.endswith(f"_max_batch_{SMALL_BATCH}") else 500
        pytest.importorskip(client)
        result = benchmark.pedantic(_run, args=(client, loop, None, max_batch), rounds=1,
                                    iterations=1)
        result["max_batch"] = max_batch
    _report(benchmark, contender, result)


@pytest.mark.parametrize("contender", ASYNC)
def test_pg_async_batcher_at_50k(benchmark: Any, pg_dsn: str, contender: str) -> None:
    benchmark.group = "async-batch-open-postgresql"
    _, client, loop = contender.split("_")
    pytest.importorskip(client)
    result = benchmark.pedantic(_run, args=(client, loop, OPEN_RATE), rounds=1, iterations=1)
    _report(benchmark, contender, result)

