"""Instructions per pool cycle, counted by valgrind's callgrind.

Wall-clock times on a shared 2-vCPU machine swing by 2x between runs;
instruction counts do not. This runs the same loop three times under
callgrind (an empty loop, acquire+release, ``with pool.connection()``) and
prints the instructions each cycle adds over the empty loop:

    python3 benchmarks/instructions.py            # SQLite connections
    python3 benchmarks/instructions.py --pg DSN   # psycopg connections, and
                                                  # psycopg_pool for comparison
    python3 benchmarks/instructions.py --runs 3   # median of 3 runs per mode
    python3 benchmarks/instructions.py --async    # the asyncio pool: ``await
        pool.acquire()`` + ``await pool.release()`` and ``async with
        pool.connection()`` on aiosqlite (with --pg: psycopg AsyncConnection,
        and psycopg_pool's AsyncConnectionPool for comparison), each loop a
        coroutine run by asyncio (the empty loop too)

What is counted is the whole process, so everything that is not the loop is
kept still: a fixed hash seed, no garbage collection, and a maintenance timer
(fastpool's background worker) that does not fire during the run. What is
left varies by a few instructions per cycle between runs; compare medians.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

N = 100_000

CHILD = """
import gc, sys, sqlite3, fastpool
gc.disable()
mode, dsn, path = sys.argv[1], sys.argv[2], sys.argv[3]
if dsn:
    import psycopg
    connect = lambda: psycopg.connect(dsn)
else:
    connect = lambda: sqlite3.connect(path, check_same_thread=False)
if mode.startswith("psycopg_pool"):
    import psycopg_pool
    pool = psycopg_pool.ConnectionPool(dsn, min_size=1, max_size=1, open=True)
    pool.wait()
    pool.acquire, pool.release = pool.getconn, pool.putconn
    mode = mode.split(":")[1]
else:
    # The worker's rounds (every second by default) cost thousands of
    # instructions each and come at wall-clock times: not during the count.
    fastpool.Pool.MAINTENANCE_INTERVAL = 3600.0
    pool = fastpool.Pool(connect=connect, min_size=1, max_size=1)
    pool.wait(10)
def main(n):
    acquire, release, connection = pool.acquire, pool.release, pool.connection
    if mode == "cycle":
        for _ in range(n):
            release(acquire())
    elif mode == "with":
        for _ in range(n):
            with connection():
                pass
    else:
        for _ in range(n):
            pass
main(int(sys.argv[4]))
pool.close()
"""

ASYNC_CHILD = """
import asyncio, gc, sys, fastpool
gc.disable()
mode, dsn, path = sys.argv[1], sys.argv[2], sys.argv[3]
async def amain(n):
    if mode.startswith("psycopg_pool"):
        import psycopg_pool
        pool = psycopg_pool.AsyncConnectionPool(dsn, min_size=1, max_size=1, open=False)
        await pool.open(wait=True)
        acquire, release = pool.getconn, pool.putconn
        what = mode.split(":")[1]
    else:
        fastpool.AsyncPool.MAINTENANCE_INTERVAL = 3600.0
        if dsn:
            import psycopg
            pool = fastpool.AsyncPool(connect=lambda: psycopg.AsyncConnection.connect(dsn),
                                      min_size=1, max_size=1)
            await pool.wait(10)
        else:
            pool = await fastpool.create_async_pool("sqlite:///" + path, min_size=1,
                                                    max_size=1)
        acquire, release = pool.acquire, pool.release
        what = mode
    connection = pool.connection
    await release(await acquire())
    if what == "cycle":
        for _ in range(n):
            await release(await acquire())
    elif what == "with":
        for _ in range(n):
            async with connection():
                pass
    else:
        for _ in range(n):
            pass
    await pool.close()
asyncio.run(amain(int(sys.argv[4])))
"""


def count(mode: str, dsn: str, path: str, n: int, is_async: bool = False) -> int:
    # sys.executable as it is, not its realpath: a venv's python is a symlink to
    # the base interpreter, and only the venv's path finds the venv's packages.
    exe = sys.executable
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", exe, "-c",
         ASYNC_CHILD if is_async else CHILD,
         mode, dsn, path, str(n)], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"})
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if not match:
        raise SystemExit(f"no callgrind total in:\n{proc.stderr[-2000:]}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="", help="PostgreSQL DSN (default: SQLite)")
    parser.add_argument("--n", type=int, default=N, help=f"cycles per run (default {N})")
    parser.add_argument("--runs", type=int, default=1, help="runs per mode; prints the median")
    parser.add_argument("--async", dest="is_async", action="store_true",
                        help="the asyncio pool (aiosqlite, or psycopg AsyncConnection with --pg)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "i.db")

        def median(mode: str) -> float:
            return statistics.median(count(mode, args.pg, path, args.n, args.is_async)
                                     for _ in range(args.runs))

        base = median("empty")
        modes = ["cycle", "with"]
        if args.pg:
            modes += ["psycopg_pool:cycle", "psycopg_pool:with"]
        for mode in modes:
            extra = (median(mode) - base) / args.n
            who, _, what = mode.rpartition(":")
            label = (who or "fastpool") + (
                " getconn+putconn" if what == "cycle" and who else
                " acquire+release" if what == "cycle" else " with connection()")
            if args.is_async:
                label = "async " + label
            print(f"{label:34s} {extra:7.0f} instructions per cycle")


if __name__ == "__main__":
    main()
