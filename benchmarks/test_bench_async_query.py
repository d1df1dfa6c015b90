"""The asyncio query helpers' overhead: ``await pool.fetchval("SELECT 1")`` over
one asyncpg connection.

Group ``async-query-<loop>`` (``asyncio``, ``uvloop``), ``QUERIES`` statements
per timed round, the client and the connection's PostgreSQL backend pinned to
one CPU (``_common.pin``; ``FASTPOOL_BENCH_PIN=0`` turns it off), unix socket:

- ``raw``: asyncpg ``conn.fetchval("SELECT 1")`` on a dedicated connection;
- ``fastpool_fetchval``: ``await pool.fetchval("SELECT 1")`` (a pool of one
  connection: acquire, the helper's rules, statement, observer, release);
- ``fastpool_acquire_fetchval_release``: the same by hand
  (``await pool.acquire()``, ``conn.fetchval``, ``await pool.release(conn)``):
  what the pool cycle costs without the helper;
- ``asyncpg_pool_fetchval``: asyncpg's own ``pool.fetchval`` (its default
  reset query on release), and ``asyncpg_pool_fetchval_noop_reset`` with
  ``reset=`` a no-op coroutine.

Every pool contender is also paired (alternating order) with raw rounds on the
very connection it lends: extra_info ``paired_overhead_pct`` is the median of
(pool round / raw round) - 1, ``paired_overhead_ns`` the same in ns per
query, and ``paired_client_cpu_ns`` the client thread's CPU time per query
above raw (``time.thread_time``): the pool's own cost, which the scheduler's
placement of the server does not blur. Benchmarks are not tests: nothing here
asserts anything about time::

    flock /tmp/fp-servers.lock python3 -m pytest benchmarks/test_bench_async_query.py \\
        --benchmark-json=aq-1.json
    python3 benchmarks/test_bench_async_query.py aq-1.json aq-2.json
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import fastpool
from _common import CPU, PIN, pin, pinned_to_cpu

PG_URL = os.environ.get("FASTPOOL_PG_UNIX_URL",
                        "postgresql:///test?host=/var/run/postgresql&user=postgres")
ASYNCPG_URL = PG_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
QUERIES = 200
ROUNDS = int(os.environ.get("FASTPOOL_BENCH_ROUNDS", "40"))
PAIRS = int(os.environ.get("FASTPOOL_BENCH_PAIRS", "60"))
NAMES = ["raw", "fastpool_fetchval", "fastpool_acquire_fetchval_release",
         "asyncpg_pool_fetchval", "asyncpg_pool_fetchval_noop_reset"]


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: Any) -> Iterator[asyncio.AbstractEventLoop]:
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        lp = uvloop.new_event_loop()
    else:
        lp = asyncio.new_event_loop()
    lp.kind = request.param  # type: ignore[attr-defined]
    try:
        yield lp
    finally:
        lp.close()


@pytest.fixture(scope="module")
def asyncpg_mod() -> Any:
    asyncpg = pytest.importorskip("asyncpg")
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL!r}: {exc}")
    return asyncpg


async def _noop_reset(conn: Any) -> None:
    return None


async def _setup(name: str, asyncpg: Any) -> tuple[Callable[[], Awaitable[None]], Any,
                                                     Callable[[], Awaitable[None]]]:
    """(one timed round, the raw connection it uses, close)."""
    if name == "raw":
        conn = await asyncpg.connect(PG_URL)

        async def raw() -> None:
            for _ in range(QUERIES):
                await conn.fetchval("SELECT 1")

        return raw, conn, conn.close
    if name.startswith("fastpool"):
        pool = await fastpool.create_async_pool(ASYNCPG_URL, min_size=1, max_size=1,
                                                timeout=60)
        native = await pool.acquire()
        await pool.release(native)
        if name == "fastpool_fetchval":
            async def helper() -> None:
                for _ in range(QUERIES):
                    await pool.fetchval("SELECT 1")

            return helper, native, pool.close

        async def by_hand() -> None:
            for _ in range(QUERIES):
                conn = await pool.acquire()
                try:
                    await conn.fetchval("SELECT 1")
                finally:
                    await pool.release(conn)

        return by_hand, native, pool.close
    kwargs: dict[str, Any] = {"reset": _noop_reset} if name.endswith("noop_reset") else {}
    apool = await asyncpg.create_pool(PG_URL, min_size=1, max_size=1, **kwargs)
    proxy = await apool.acquire()
    native = proxy._con  # the connection behind asyncpg's proxy
    await apool.release(proxy)

    async def peer() -> None:
        for _ in range(QUERIES):
            await apool.fetchval("SELECT 1")

    return peer, native, apool.close


@pytest.mark.parametrize("name", NAMES)
def test_async_query_overhead(benchmark: Any, asyncpg_mod: Any, loop: Any, name: str) -> None:
    benchmark.group = f"async-query-{loop.kind}"
    benchmark.extra_info.update({"queries_per_round": QUERIES, "contender": name,
                                 "loop": loop.kind, "pinned_cpu": CPU if PIN else None})
    with pinned_to_cpu():
        body, native, close = loop.run_until_complete(_setup(name, asyncpg_mod))
        try:
            pid = loop.run_until_complete(native.fetchval("SELECT pg_backend_pid()"))
            pin(pid)

            async def raw() -> None:
                for _ in range(QUERIES):
                    await native.fetchval("SELECT 1")

            def timed(fn: Callable[[], Awaitable[None]]) -> tuple[float, float]:
                """(wall seconds, this thread's CPU seconds) of one round."""
                c0, t0 = time.thread_time(), time.perf_counter()
                loop.run_until_complete(fn())
                return time.perf_counter() - t0, time.thread_time() - c0

            slow = name == "asyncpg_pool_fetchval"  # a reset round trip per query
            benchmark.pedantic(lambda: loop.run_until_complete(body()),
                               rounds=ROUNDS // 4 if slow else ROUNDS, iterations=1,
                               warmup_rounds=5)
            if name != "raw":
                ratios, deltas, cpu = [], [], []
                for k in range(PAIRS // 4 if slow else PAIRS):
                    if k % 2:
                        t_raw, t_pool = timed(raw), timed(body)
                    else:
                        t_pool, t_raw = timed(body), timed(raw)
                    ratios.append(t_pool[0] / t_raw[0])
                    deltas.append((t_pool[0] - t_raw[0]) / QUERIES * 1e9)
                    cpu.append((t_pool[1] - t_raw[1]) / QUERIES * 1e9)
                benchmark.extra_info["paired_overhead_pct"] = round(
                    (statistics.median(ratios) - 1) * 100, 3)
                benchmark.extra_info["paired_overhead_ns"] = round(statistics.median(deltas))
                # The client's own CPU per query above raw: what the pool's code
                # costs, insensitive to where the scheduler puts the server.
                benchmark.extra_info["paired_client_cpu_ns"] = round(statistics.median(cpu))
        finally:
            loop.run_until_complete(close())


def report(paths: list[str]) -> None:
    """Print BENCHMARKS.md's table from pytest-benchmark JSON files."""
    rows: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        with open(path) as f:
            for b in json.load(f)["benchmarks"]:
                rows[b["group"]][b["extra_info"]["contender"]].append(b)
    for group in sorted(rows):
        print(f"\n{group}\n")
        print("| contender | µs per query (runs) | paired overhead vs raw, same connection "
              "(runs) | client CPU above raw, ns per query (runs) |")
        print("|---|---|---|---|")
        for name in NAMES:
            runs = rows[group].get(name, [])
            if not runs:
                continue
            us = [b["stats"]["median"] / QUERIES * 1e6 for b in runs]
            pct = [f"{b['extra_info']['paired_overhead_pct']:+.1f}% "
                   f"({b['extra_info']['paired_overhead_ns']:+} ns)"
                   for b in runs if "paired_overhead_pct" in b["extra_info"]]
            cpu = [f"{b['extra_info']['paired_client_cpu_ns']:+}" for b in runs
                   if "paired_client_cpu_ns" in b["extra_info"]]
            print(f"| {name} | {', '.join(f'{u:.1f}' for u in us)} | "
                  f"{'; '.join(pct) or '(reference)'} | {', '.join(cpu) or '-'} |")


if __name__ == "__main__":
    report(sys.argv[1:])
