"""Instructions per contended cycle of the asyncio pools (callgrind): 1,000
tasks on 10 PostgreSQL connections, each task looping acquire -> ``SELECT 1``
-> release, as in test_bench_async.py's load group. Counts the client
process only (the server runs outside valgrind); stable where wall-clock
throughput on this 2-vCPU machine is not.

Each contender runs twice in a child under ``valgrind --tool=callgrind``, with
K1 and K2 cycles per task; (I(K2) - I(K1)) / (1,000 x (K2 - K1)) is the
cost of one cycle, start-up and connecting cancelled out. Contenders:

* ``no_pool``: one task per connection, no pool: the driver's own cost;
* ``plain_fifo``: the least a strict-FIFO pool can do in Python (a deque of
  idle connections, a deque of waiter futures, release hands the connection
  to the oldest waiter);
* ``fastpool``: ``await pool.acquire()`` / ``await pool.release()``;
* ``psycopg_pool`` (psycopg) or ``asyncpg_pool_noop_reset`` (asyncpg: its pool
  with ``reset=`` a no-op coroutine; the default reset adds a round trip).

Run (needs valgrind; a few minutes)::

    python3 benchmarks/instructions_contended.py [--asyncpg] [--uvloop] [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

TASKS = 1000
SIZE = 10
K1, K2 = 2, 6
URL = os.environ.get("FASTPOOL_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def _select(conn: Any, asyncpg: bool) -> None:
    if asyncpg:
        await conn.fetchval("SELECT 1")
    else:
        cur = await conn.execute("SELECT 1")
        await cur.fetchone()


async def _connect(url: str, asyncpg: bool) -> Any:
    if asyncpg:
        import asyncpg as apg
        return await apg.connect(url)
    import psycopg
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def _open(name: str, url: str, asyncpg: bool) -> tuple[Any, Any, Any]:
    """(acquire, release, close) of contender ``name``."""
    if name == "fastpool":
        import fastpool
        pool_url = url.replace("postgresql://", "postgresql+asyncpg://", 1) if asyncpg else url
        options = {} if asyncpg else {"autocommit": True}
        pool = await fastpool.create_async_pool(pool_url, min_size=SIZE, max_size=SIZE,
                                                timeout=600, **options)
        return pool.acquire, pool.release, pool.close
    if name == "psycopg_pool":
        import psycopg_pool
        ppool = psycopg_pool.AsyncConnectionPool(url, min_size=SIZE, max_size=SIZE, timeout=600,
                                                 kwargs={"autocommit": True}, open=False)
        await ppool.open(wait=True)
        return ppool.getconn, ppool.putconn, ppool.close
    if name == "asyncpg_pool_noop_reset":
        import asyncpg as apg

        async def noop(conn: Any) -> None:
            return None

        apool = await apg.create_pool(url, min_size=SIZE, max_size=SIZE, reset=noop)
        return apool.acquire, apool.release, apool.close
    assert name == "plain_fifo"
    idle = collections.deque([await _connect(url, asyncpg) for _ in range(SIZE)])
    waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
    loop = asyncio.get_running_loop()

    async def acquire() -> Any:
        if idle:
            return idle.popleft()
        fut = loop.create_future()
        waiters.append(fut)
        return await fut

    async def release(conn: Any) -> None:
        if waiters:
            waiters.popleft().set_result(conn)
        else:
            idle.append(conn)

    async def close() -> None:
        for conn in idle:
            await conn.close()

    return acquire, release, close


async def child(name: str, cycles: int, url: str, asyncpg: bool) -> None:
    """The measured workload: ``cycles`` cycles per task of ``TASKS`` tasks."""
    if name == "no_pool":
        conns = [await _connect(url, asyncpg) for _ in range(SIZE)]
        gc.disable()

        async def own(conn: Any) -> None:
            for _ in range(cycles * TASKS // SIZE):
                await _select(conn, asyncpg)

        await asyncio.gather(*(own(c) for c in conns))
        for c in conns:
            await c.close()
        return
    acquire, release, close = await _open(name, url, asyncpg)

    async def work() -> None:
        for _ in range(cycles):
            conn = await acquire()
            try:
                await _select(conn, asyncpg)
            finally:
                await release(conn)

    gc.disable()
    await asyncio.gather(*(work() for _ in range(TASKS)))
    await close()


def instructions(name: str, cycles: int, args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
               sys.executable, __file__, "--child", name, "--cycles", str(cycles),
               "--url", args.url]
        cmd += ["--asyncpg"] if args.asyncpg else []
        cmd += ["--uvloop"] if args.uvloop else []
        out = subprocess.run(cmd, capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": "0"})
    if out.returncode != 0:
        raise SystemExit(f"{name}: the child failed:\n{out.stderr[-3000:]}")
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"{name}: no instruction count in valgrind's output")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asyncpg", action="store_true", help="asyncpg (default: psycopg)")
    parser.add_argument("--uvloop", action="store_true", help="uvloop (default: asyncio)")
    parser.add_argument("--url", default=URL, help="PostgreSQL URL (postgresql://...)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cycles", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run = child(args.child, args.cycles, args.url, args.asyncpg)
        if args.uvloop:
            import uvloop
            uvloop.run(run)
        else:
            asyncio.run(run)
        return
    peer = "asyncpg_pool_noop_reset" if args.asyncpg else "psycopg_pool"
    names = ["no_pool", "plain_fifo", "fastpool", peer]
    costs = {}
    for name in names:
        low, high = instructions(name, K1, args), instructions(name, K2, args)
        costs[name] = (high - low) / (TASKS * (K2 - K1))
    base = costs["no_pool"]
    driver = "asyncpg" if args.asyncpg else "psycopg AsyncConnection"
    print(f"{driver}, {'uvloop' if args.uvloop else 'asyncio'}: instructions per cycle, "
          f"{TASKS:,} tasks on {SIZE} connections")
    print("| contender | instructions per cycle | over no pool | "
          f"{peer} ÷ contender |")
    print("|---|---:|---:|---:|")
    for name in names:
        print(f"| {name} | {costs[name]:,.0f} | {costs[name] - base:+,.0f} | "
              f"{costs[peer] / costs[name]:.2f} |")


if __name__ == "__main__":
    main()
