"""fastpool.sqlalchemy.FastPool against SQLAlchemy's QueuePool, in one run.

1. Contention: 64 threads on 4 PostgreSQL connections (``pool_size=4,
   max_overflow=0``), each looping ``with engine.connect() as c:
   c.exec_driver_sql("SELECT 1")`` for a fixed time. The two pools take turns
   (ROUNDS rounds each, interleaved) so that the machine's drift hits both;
   reported (test_bench_contention's ``drive``): cycles/s, fairness (max/min
   cycles per thread; inf when a thread completed none), the longest time a
   thread went without completing a cycle, and the ratio of the medians.
2. Overhead: Python function calls (``sys.setprofile`` "call" events, C calls
   not counted) per ``pool.connect()`` + ``close()`` and per
   ``engine.connect()`` + ``close()`` on reuse, and the time per cycle (best
   of 7 runs of 20,000 cycles, the pools taking turns, pinned to one CPU;
   SQLite file, no statement), for each pool.

Benchmarks are not tests: nothing here asserts a time. Run:
    python3 -m pytest benchmarks/test_bench_sqlalchemy_pool.py -s -p no:cacheprovider
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from _common import CPU, PIN, pinned_to_cpu
from test_bench_contention import drive

sqlalchemy = pytest.importorskip("sqlalchemy")
from sqlalchemy import create_engine  # noqa: E402
from sqlalchemy.pool import QueuePool  # noqa: E402

from fastpool.sqlalchemy import FastPool  # noqa: E402

PG_URL = os.environ.get("FASTPOOL_PG_SA_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ROUNDS = int(os.environ.get("FASTPOOL_BENCH_ROUNDS", "3"))
THREADS = 64
POOL_SIZE = 4
POOLS: dict[str, type[Any]] = {"QueuePool": QueuePool, "FastPool": FastPool}


def contend(poolclass: type[Any]) -> dict[str, float]:
    engine = create_engine(PG_URL, poolclass=poolclass, pool_size=POOL_SIZE, max_overflow=0,
                           pool_timeout=60)

    def cycle() -> None:
        with engine.connect() as c:
            c.exec_driver_sql("SELECT 1").scalar()

    try:
        result: dict[str, float] = drive(cycle, THREADS)  # test_bench_contention's loop
    finally:
        engine.dispose()
    return result


def test_64_threads_on_4_connections(pg_dsn: str) -> None:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in POOLS}
    for _ in range(ROUNDS):
        for name, cls in POOLS.items():
            r = contend(cls)
            runs[name].append(r)
            print(f"\n{name:9s} {r['cycles_per_s']:7.0f} cycles/s  fairness "
                  f"{r['fairness_max_over_min']:.2f}  min/max per thread "
                  f"{r['min_thread_cycles']}/{r['max_thread_cycles']}  longest gap "
                  f"{r['longest_gap_ms']:.0f} ms", end="")
    med = {name: statistics.median(r["cycles_per_s"] for r in rs) for name, rs in runs.items()}
    print(f"\nmedian cycles/s: QueuePool {med['QueuePool']:.0f}, FastPool {med['FastPool']:.0f}"
          f" ({med['FastPool'] / med['QueuePool']:.2f}x)")


def python_calls(cycle: Callable[[], None]) -> int:
    """Python function calls made by one ``cycle()`` (after a warm-up)."""
    cycle()
    calls = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(profile)
    try:
        cycle()
    finally:
        sys.setprofile(None)
    return calls - 1  # the profiled call of cycle itself


def best_us_per_cycle(cycles: dict[str, Callable[[], None]], n: int = 20_000,
                      runs: int = 7) -> dict[str, float]:
    """The best of ``runs`` timings of ``n`` cycles each, the contenders taking
    turns run by run (the machine's drift and neighbours hit them alike)."""
    best = dict.fromkeys(cycles, float("inf"))
    for _ in range(runs):
        for name, cycle in cycles.items():
            t0 = time.perf_counter()
            for _ in range(n):
                cycle()
            best[name] = min(best[name], (time.perf_counter() - t0) / n * 1e6)
    return best


def test_calls_and_time_per_checkout_checkin(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/bench.db"
    engines = {name: create_engine(url, poolclass=cls, pool_size=POOL_SIZE, max_overflow=0)
               for name, cls in POOLS.items()}
    pool_cycles: dict[str, Callable[[], None]] = {}
    engine_cycles: dict[str, Callable[[], None]] = {}
    for name, engine in engines.items():
        pool_cycles[name] = lambda pool=engine.pool: pool.connect().close()
        engine_cycles[name] = lambda engine=engine: engine.connect().close()
    with pinned_to_cpu():  # one thread, no server: pinned to CPU (FASTPOOL_BENCH_CPU)
        pool_us = best_us_per_cycle(pool_cycles)
        engine_us = best_us_per_cycle(engine_cycles)
    print(f"\npinned to CPU {CPU}: {PIN}", end="")
    print("\npool       pool.connect()+close(): calls   us    engine.connect()+close(): calls   us")
    for name in POOLS:
        print(f"{name:9s}  {python_calls(pool_cycles[name]):29d} {pool_us[name]:6.2f}"
              f"  {python_calls(engine_cycles[name]):31d} {engine_us[name]:6.2f}")
    for engine in engines.values():
        engine.dispose()
