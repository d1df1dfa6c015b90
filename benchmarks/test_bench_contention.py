"""Many threads, few connections: throughput, fairness and starvation.

Each contender runs N threads for a fixed duration; each thread loops
acquire -> SELECT 1 -> release on PostgreSQL (autocommit, so no pool has to
commit or roll back). Reported in extra_info: cycles/s, fairness (max/min
cycles per thread) and the longest time any thread went without completing a
cycle while the others were cycling. The timing columns of pytest-benchmark
are just the fixed duration here; read extra_info (BENCHMARKS.md).
"""

from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest

import fastpool

DURATION = float(os.environ.get("FASTPOOL_BENCH_DURATION", "3"))
POOL_SIZE = 4


def drive(cycle, threads):
    counts = [0] * threads
    gaps = [0.0] * threads
    stop = threading.Event()
    barrier = threading.Barrier(threads + 1)
    errors = []

    def work(i):
        barrier.wait()
        last = time.perf_counter()
        gap = 0.0
        n = 0
        try:
            while not stop.is_set():
                cycle()
                n += 1
                now = time.perf_counter()
                gap = max(gap, now - last)
                last = now
        except Exception as exc:  # pragma: no cover - reported
            errors.append(exc)
        counts[i] = n
        gaps[i] = gap

    ts = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(DURATION)
    stop.set()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    assert not errors, errors[:3]
    return {
        "threads": threads,
        "pool_size": POOL_SIZE,
        "cycles_per_s": sum(counts) / elapsed,
        "fairness_max_over_min": (max(counts) / min(counts)) if min(counts) else float("inf"),
        "min_thread_cycles": min(counts),
        "max_thread_cycles": max(counts),
        "longest_gap_ms": max(gaps) * 1e3,
    }


def connect(dsn):
    return psycopg.connect(dsn, autocommit=True)


def select_one(conn):
    cur = conn.execute("SELECT 1")
    cur.fetchone()


def make_fastpool(dsn):
    pool = fastpool.Pool(connect=lambda: connect(dsn), min_size=POOL_SIZE, max_size=POOL_SIZE,
                         timeout=60)
    pool.wait(30)

    def cycle():
        with pool.connection() as conn:
            select_one(conn)

    return cycle, pool.close


def make_psycopg_pool(dsn):
    psycopg_pool = pytest.importorskip("psycopg_pool")
    pool = psycopg_pool.ConnectionPool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, timeout=60,
                                       kwargs={"autocommit": True}, open=True)
    pool.wait()

    def cycle():
        with pool.connection() as conn:
            select_one(conn)

    return cycle, pool.close


def make_sqlalchemy(dsn):
    sa_pool = pytest.importorskip("sqlalchemy.pool")
    pool = sa_pool.QueuePool(lambda: connect(dsn), pool_size=POOL_SIZE, max_overflow=0,
                             timeout=60)

    def cycle():
        conn = pool.connect()
        try:
            select_one(conn.dbapi_connection)
        finally:
            conn.close()

    return cycle, pool.dispose


def make_dbutils(dsn):
    pooled_db = pytest.importorskip("dbutils.pooled_db")
    pool = pooled_db.PooledDB(psycopg, mincached=POOL_SIZE, maxcached=POOL_SIZE,
                              maxconnections=POOL_SIZE, blocking=True, ping=0,
                              conninfo=dsn, autocommit=True)

    def cycle():
        conn = pool.connection()
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.fetchone()
        finally:
            conn.close()

    return cycle, pool.close


CONTENDERS = {
    "fastpool": make_fastpool,
    "psycopg_pool": make_psycopg_pool,
    "sqlalchemy_queuepool": make_sqlalchemy,
    "dbutils_pooleddb": make_dbutils,
}


@pytest.mark.parametrize("threads", [4, 64])
@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_contention(benchmark, pg_dsn, contender, threads):
    benchmark.group = f"contention-{threads}-threads-{POOL_SIZE}-conns"
    cycle, close = CONTENDERS[contender](pg_dsn)
    try:
        result = benchmark.pedantic(drive, args=(cycle, threads), rounds=1, iterations=1)
    finally:
        close()
    benchmark.extra_info.update(result)
    print(f"\n{contender:22s} {threads:3d} threads: {result['cycles_per_s']:9.0f} cycles/s  "
          f"fairness {result['fairness_max_over_min']:.2f}  "
          f"longest gap {result['longest_gap_ms']:.1f} ms")
