"""Async bulk loads: ``await pool.copy_rows(...)`` on an AsyncPool against
asyncpg's ``copy_records_to_table`` and fastpool's sync loader, same run.

PostgreSQL (group ``async-bulk-pg``): ``PG_ROWS`` (1,000,000) rows of (bigint,
text, double precision, timestamptz) from a generator into an UNLOGGED table,
TRUNCATEd before every round, over TCP to 127.0.0.1 (the rows and the table of
``test_bench_bulk.py``):

- ``generate``: only iterating the generator (every contender pays it);
- ``fastpool_asyncpg``: ``await pool.copy_rows(...)`` on a
  ``postgresql+asyncpg://`` AsyncPool (compiled encoder -> asyncpg's binary
  ``copy_to_table``);
- ``fastpool_psycopg_async``: the same on a ``postgresql://`` AsyncPool
  (psycopg ``AsyncConnection``, ``async with cur.copy(...)``);
- ``fastpool_asyncpg_aiter``: ``fastpool_asyncpg`` with the rows from an async
  generator (read ``chunk_rows`` at a time);
- ``asyncpg``: ``conn.copy_records_to_table(table, records=generator)``;
- ``fastpool_sync``: ``bulk.copy_rows`` on a sync Pool (psycopg).

The machine is noisy (2 vCPUs shared by client and server), so
``test_async_pg_interleaved`` runs the contenders round-robin, rotating who
goes first, and records each one's median rows/s and the median over rounds
of the per-round ratio ``t_contender / t_fastpool_asyncpg`` (above 1:
fastpool on asyncpg is faster): that ratio is the number to quote.
``test_async_pg_memory`` runs each contender once in a fresh process after a
small warm-up and records the growth of its peak RSS (VmHWM).

Run under the benchmark lock (benchmarks are not tests; nothing asserts time)::

    flock /tmp/fastpool-bench.lock python3 -m pytest benchmarks/test_bench_async_bulk.py \\
        --benchmark-json=async-bulk-1.json
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_bench_bulk import (
    COLUMNS,
    PG_ROWS,
    PG_URL,
    TABLE,
    WARMUP_ROWS,
    _hwm_kb,
    _interleave,
    _standalone,
    _with_table,
    impl,
    pg_rows,
)

ASYNCPG_URL = PG_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
INTERLEAVED_ROUNDS = 3


async def apg_rows(n: int) -> AsyncIterator[tuple[Any, ...]]:
    for row in pg_rows(n):
        yield row


class AsyncPgContenders:
    """One pool or connection per contender, opened once on one event loop;
    each method loads ``n`` rows."""

    def __init__(self, n: int) -> None:
        import asyncpg
        import psycopg

        import fastpool
        from fastpool.pool.async_facade import create_async_pool

        self.n = n
        self.admin = psycopg.connect(PG_URL, autocommit=True)
        self.loop = asyncio.new_event_loop()
        run = self.loop.run_until_complete
        self.apool = run(self._open(create_async_pool(ASYNCPG_URL, min_size=1, max_size=1)))
        self.ppool = run(self._open(create_async_pool(PG_URL, min_size=1, max_size=1)))
        self.apg = run(asyncpg.connect(PG_URL))
        self.pool = fastpool.create_pool(PG_URL, min_size=1, max_size=1)
        self.pool.wait()

    @staticmethod
    async def _open(opening: Any) -> Any:
        return await opening

    def close(self) -> None:
        run = self.loop.run_until_complete
        run(self.apg.close())
        run(self.apool.close())
        run(self.ppool.close())
        self.loop.close()
        self.pool.close()
        self.admin.close()

    def truncate(self) -> None:
        self.admin.execute(f"TRUNCATE {TABLE}")

    def count(self) -> int:
        return int(self.admin.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])

    def generate(self) -> None:
        for _ in pg_rows(self.n):
            pass

    def fastpool_asyncpg(self) -> None:
        with impl("c"):
            self.loop.run_until_complete(
                self.apool.copy_rows(TABLE, COLUMNS, pg_rows(self.n)))

    def fastpool_asyncpg_aiter(self) -> None:
        with impl("c"):
            self.loop.run_until_complete(
                self.apool.copy_rows(TABLE, COLUMNS, apg_rows(self.n)))

    def fastpool_psycopg_async(self) -> None:
        with impl("c"):
            self.loop.run_until_complete(
                self.ppool.copy_rows(TABLE, COLUMNS, pg_rows(self.n)))

    def asyncpg(self) -> None:
        self.loop.run_until_complete(
            self.apg.copy_records_to_table(TABLE, records=pg_rows(self.n), columns=COLUMNS))

    def fastpool_sync(self) -> None:
        from fastpool.writes import bulk

        with impl("c"):
            bulk.copy_rows(self.pool, TABLE, COLUMNS, pg_rows(self.n))


CONTENDERS = ["generate", "fastpool_asyncpg", "fastpool_psycopg_async", "fastpool_asyncpg_aiter",
              "asyncpg", "fastpool_sync"]
INTERLEAVED = ["fastpool_asyncpg", "fastpool_psycopg_async", "fastpool_asyncpg_aiter",
               "asyncpg", "fastpool_sync"]


@pytest.fixture(scope="module")
def apg() -> Iterator[AsyncPgContenders]:
    psycopg = pytest.importorskip("psycopg")
    pytest.importorskip("asyncpg")
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL!r}: {exc}")
    yield from _with_table(admin.execute, admin.close,
                           f"CREATE UNLOGGED TABLE {TABLE} (id bigint, name text, "
                           "score double precision, at timestamptz)",
                           lambda: AsyncPgContenders(PG_ROWS))


@pytest.mark.parametrize("contender", CONTENDERS)
def test_async_pg(benchmark: Any, apg: AsyncPgContenders, contender: str) -> None:
    _standalone(benchmark, "async-bulk-pg", apg, contender)


def test_async_pg_interleaved(benchmark: Any, apg: AsyncPgContenders) -> None:
    benchmark.group = "async-bulk-pg-interleaved"
    # _interleave's ratios are relative to "fastpool": here fastpool_asyncpg.
    names = ["fastpool" if n == "fastpool_asyncpg" else n for n in INTERLEAVED]
    _interleave(benchmark, _Renamed(apg), names, INTERLEAVED_ROUNDS)
    for key in ("median_s", "rows_per_s", "fastpool_speedup"):
        info = benchmark.extra_info[key]
        info["fastpool_asyncpg"] = info.pop("fastpool")


class _Renamed:
    """The contenders, with ``fastpool`` an alias of ``fastpool_asyncpg``."""

    def __init__(self, contenders: AsyncPgContenders) -> None:
        self._c = contenders
        self.n = contenders.n
        self.fastpool = contenders.fastpool_asyncpg

    def __getattr__(self, name: str) -> Any:
        return getattr(self._c, name)


def measure_memory(contender: str) -> dict[str, int]:
    """In a fresh process: a small warm-up load, then the full one; the growth
    of the peak RSS over the full load, in kB."""
    contenders = AsyncPgContenders(WARMUP_ROWS)
    try:
        contenders.truncate()
        getattr(contenders, contender)()
        contenders.truncate()
        contenders.n = PG_ROWS
        before = _hwm_kb()
        getattr(contenders, contender)()
        growth = _hwm_kb() - before
        loaded = contenders.count()
        contenders.truncate()
    finally:
        contenders.close()
    return {"growth_kb": growth, "rows": loaded}


def test_async_pg_memory(benchmark: Any, apg: AsyncPgContenders) -> None:
    benchmark.group = "async-bulk-pg-memory"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = {}

    def run_all() -> None:
        for name in INTERLEAVED:
            code = ("import json, sys; sys.path.insert(0, 'benchmarks'); "
                    "import test_bench_async_bulk as b; "
                    f"print(json.dumps(b.measure_memory({name!r})))")
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  cwd=root, timeout=600, check=True)
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    benchmark.extra_info["peak_rss_growth_kb"] = {k: v["growth_kb"] for k, v in results.items()}
    benchmark.extra_info["rows"] = {k: v["rows"] for k, v in results.items()}
