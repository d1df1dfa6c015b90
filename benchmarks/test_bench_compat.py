"""fastpool.compat.psycopg_pool.ConnectionPool against psycopg_pool's own, in one run.

64 threads on 4 PostgreSQL connections, each looping ``with pool.connection()
as conn: SELECT 1`` (autocommit) for a fixed duration (``drive`` of
test_bench_contention: cycles/s, fairness max/min cycles per thread, the
longest gap). The two pools are built from the same code, the import being the
only difference, and fastpool's own ``Pool`` beside them (what the adapter
costs), in alternating rounds so that a noisy machine slows
both alike; the last test reports the medians and their ratio (extra_info,
BENCHMARKS.md). Unpinned: 64 threads and the server share the machine.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

import psycopg
import pytest

import fastpool
from fastpool.compat import psycopg_pool as compat
from test_bench_contention import POOL_SIZE, drive

THREADS = 64
ROUNDS = int(os.environ.get("FASTPOOL_BENCH_ROUNDS", "3"))


def make(module: Any, dsn: str) -> tuple[Any, Any]:
    """The same program for both: only ``module`` (the import) differs."""
    pool = module.ConnectionPool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, timeout=60,
                                 kwargs={"autocommit": True}, open=True)
    pool.wait()

    def cycle() -> None:
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchone()

    return cycle, pool.close


def make_fastpool(dsn: str) -> tuple[Any, Any]:
    """fastpool's own Pool, for what the adapter costs over it."""
    pool = fastpool.Pool(connect=lambda: psycopg.connect(dsn, autocommit=True),
                         min_size=POOL_SIZE, max_size=POOL_SIZE, timeout=60)
    pool.wait()

    def cycle() -> None:
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchone()

    return cycle, pool.close


def contenders() -> dict[str, Any]:
    psycopg_pool = pytest.importorskip("psycopg_pool")
    return {"compat": compat, "psycopg_pool": psycopg_pool, "fastpool": None}


def run_once(module: Any, dsn: str) -> dict[str, Any]:
    cycle, close = make(module, dsn) if module is not None else make_fastpool(dsn)
    try:
        return drive(cycle, THREADS)
    finally:
        close()


@pytest.mark.parametrize("contender", ["compat", "psycopg_pool", "fastpool"])
def test_compat_contention(benchmark: Any, pg_dsn: str, contender: str) -> None:
    """One row per pool (pytest-benchmark's table)."""
    benchmark.group = f"compat-{THREADS}-threads-{POOL_SIZE}-conns"
    module = contenders()[contender]
    result = benchmark.pedantic(run_once, args=(module, pg_dsn), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(f"\n{contender:14s} {result['cycles_per_s']:9.0f} cycles/s  "
          f"fairness {result['fairness_max_over_min']:.2f}")


def test_compat_vs_psycopg_pool_interleaved(benchmark: Any, pg_dsn: str) -> None:
    """ROUNDS alternating rounds of each; the medians and the ratio."""
    benchmark.group = f"compat-{THREADS}-threads-{POOL_SIZE}-conns-ratio"
    mods = contenders()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in mods}

    names = list(mods)

    def rounds() -> None:
        for i in range(ROUNDS):  # the order rotates: none always runs first
            for name in names[i % len(names):] + names[:i % len(names)]:
                runs[name].append(run_once(mods[name], pg_dsn))

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    med = {name: {key: statistics.median(r[key] for r in rs)
                  for key in ("cycles_per_s", "fairness_max_over_min", "longest_gap_ms")}
           for name, rs in runs.items()}
    ratio = med["compat"]["cycles_per_s"] / med["psycopg_pool"]["cycles_per_s"]
    # Each round's own ratios too: the machine's speed drifts between rounds.
    per_round = {other: statistics.median(
        c["cycles_per_s"] / o["cycles_per_s"]
        for c, o in zip(runs["compat"], runs[other], strict=True))
        for other in ("psycopg_pool", "fastpool")}
    benchmark.extra_info.update({"medians": med, "throughput_ratio": ratio, "rounds": ROUNDS,
                                 "median_round_ratio": per_round, "runs": runs})
    for name, m in med.items():
        print(f"\n{name:14s} {m['cycles_per_s']:9.0f} cycles/s  fairness "
              f"{m['fairness_max_over_min']:.2f}  longest gap {m['longest_gap_ms']:.1f} ms")
    print(f"compat / psycopg_pool throughput: {ratio:.2f}x (median of rounds' ratios "
          f"{per_round['psycopg_pool']:.2f}x); compat / fastpool: "
          f"{med['compat']['cycles_per_s'] / med['fastpool']['cycles_per_s']:.2f}x "
          f"({per_round['fastpool']:.2f}x)")


@pytest.mark.parametrize("form", ["with", "getconn"])
@pytest.mark.parametrize("contender", ["compat", "psycopg_pool"])
def test_compat_uncontended_cycle(benchmark: Any, pg_dsn: str, contender: str,
                                  form: str) -> None:
    """One connection, one thread, no query: what a cycle of the pool costs
    (``with pool.connection()``, or ``getconn`` + ``putconn``)."""
    benchmark.group = f"compat-uncontended-{form}"
    module = contenders()[contender]
    pool = module.ConnectionPool(pg_dsn, min_size=1, max_size=1, kwargs={"autocommit": True},
                                 open=True)
    pool.wait()

    def with_block() -> None:
        with pool.connection():
            pass

    def get_put() -> None:
        pool.putconn(pool.getconn())

    try:
        benchmark.pedantic(with_block if form == "with" else get_put, rounds=2000,
                           iterations=20, warmup_rounds=100)
    finally:
        pool.close()
