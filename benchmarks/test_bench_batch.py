"""Group commit: single-row writes from 32 threads, committed.

Each contender runs 32 threads for a fixed duration; every thread writes one
row at a time and waits until it is committed:

* ``batcher_execute``: ``Batcher.execute()`` (one flusher, one connection);
* ``batcher_submit16``: each thread submits 16 writes, then waits for them
  (``Batcher.submit()``: the throughput a caller gets without blocking per write);
* ``psycopg_pool_autocommit`` / ``fastpool_autocommit`` / ``dbutils_autocommit``:
  each thread borrows a connection and runs its own autocommit INSERT (the
  pool has one connection per thread: their best configuration here).

Reported in extra_info: committed writes/s, and the latency of each write
(call -> committed, measured by the caller) p50/p99 in ms. The timing
columns of pytest-benchmark are just the fixed duration: read extra_info.

The deadlock group runs upserts of 64 hot keys from 32 threads through a
batcher with 4 flushers (concurrent, conflicting batches), with and without
key ordering, and reports deadlocks per transaction.

Run under the shared lock, e.g.::

    flock /tmp/fastpool-bench.lock python3 -m pytest benchmarks/test_bench_batch.py \\
        --benchmark-json=batch-1.json
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import fastpool
from fastpool.drivers import PostgresDriver, from_url
from fastpool.writes.batch import Batcher

DURATION = float(os.environ.get("FASTPOOL_BENCH_DURATION", "3"))
THREADS = 32
MYSQL_URL = os.environ.get("FASTPOOL_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
TABLE = "fp_batch_bench"
INSERT = f"INSERT INTO {TABLE} (id, v) VALUES (%s, %s)"


def drive(write: Callable[[int, int], int], threads: int = THREADS) -> dict[str, Any]:
    """Run ``write(thread, n)`` (which writes and waits for ``k`` writes,
    returning k) in a loop on each thread for DURATION seconds."""
    counts = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = threading.Event()
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        lat = latencies[t]
        n = 0
        barrier.wait()
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                k = write(t, n)
                dt = time.perf_counter() - t0
                lat.extend([dt] * k)  # each write waited at most this long
                n += k
        except BaseException as exc:  # reported below
            errors.append(exc)
        counts[t] = n

    workers = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(DURATION)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    assert not errors, errors[:3]
    every = sorted(x for lat in latencies for x in lat)
    return {
        "threads": threads,
        "writes": sum(counts),
        "writes_per_s": sum(counts) / elapsed,
        "latency_p50_ms": every[len(every) // 2] * 1e3,
        "latency_p99_ms": every[int(len(every) * 0.99)] * 1e3,
        "latency_max_ms": every[-1] * 1e3,
    }


def key_of(t: int, n: int) -> int:
    return t * 1_000_000_000 + n


# ---- PostgreSQL and MariaDB set-up ------------------------------------------------

@pytest.fixture(scope="module")
def mysql_url() -> str:
    pytest.importorskip("MySQLdb")
    try:
        from_url(MYSQL_URL).connect().close()
    except Exception as exc:
        pytest.skip(f"MariaDB not reachable at {MYSQL_URL!r}: {exc}")
    return MYSQL_URL


def fresh_table(pool: Any, ddl: str = f"CREATE TABLE {TABLE} (id BIGINT PRIMARY KEY, "
                                        "v VARCHAR(20))") -> None:
    with pool.connection() as conn:
        cur = conn.cursor()
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(ddl)
        cur.close()


def drop_table(pool: Any) -> None:
    with pool.connection() as conn:
        cur = conn.cursor()
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.close()


def pg_pool(dsn: str, size: int, autocommit: bool = False) -> fastpool.Pool:
    pool = fastpool.Pool(driver=PostgresDriver(dsn, autocommit=autocommit), min_size=size,
                         max_size=size, timeout=60)
    pool.wait(30)
    return pool


def mysql_pool(url: str, size: int, autocommit: bool = False) -> fastpool.Pool:
    pool = fastpool.Pool(driver=from_url(url, autocommit=autocommit), min_size=size,
                         max_size=size, timeout=60)
    pool.wait(30)
    return pool


def batcher_execute(pool: Any) -> tuple[Callable[[int, int], int], Batcher]:
    batcher = Batcher(pool)

    def write(t: int, n: int) -> int:
        batcher.execute(INSERT, (key_of(t, n), "x"))
        return 1

    return write, batcher


def batcher_submit16(pool: Any) -> tuple[Callable[[int, int], int], Batcher]:
    batcher = Batcher(pool)

    def write(t: int, n: int) -> int:
        futures = [batcher.submit(INSERT, (key_of(t, n + i), "x")) for i in range(16)]
        for f in futures:
            f.result()
        return 16

    return write, batcher


def autocommit_insert(pool_connection: Callable[[], Any]) -> Callable[[int, int], int]:
    def write(t: int, n: int) -> int:
        with pool_connection() as conn:
            cur = conn.cursor()
            cur.execute(INSERT, (key_of(t, n), "x"))
            cur.close()
        return 1

    return write


def run_batcher(benchmark: Any, pool: Any, make: Callable[[Any], Any]) -> dict[str, Any]:
    fresh_table(pool)
    write, batcher = make(pool)
    try:
        result = benchmark.pedantic(drive, args=(write,), rounds=1, iterations=1)
        batcher.flush()
        s = batcher.stats()
        result.update(batch_size_mean=s.batch_size_mean, batch_size_p99=s.batch_size_p99,
                      batches=s.batches, stats_latency_p99_ms=s.latency_p99 * 1e3)
    finally:
        batcher.close()
        drop_table(pool)
        pool.close()
    return result


def run_autocommit(benchmark: Any, pool: Any, connection: Callable[[], Any] | None = None,
                   admin: Any = None) -> dict[str, Any]:
    """Drive ``autocommit_insert`` through ``connection`` (``pool.connection`` by
    default) on a fresh table that ``admin`` (``pool`` by default) makes and
    drops; close ``pool`` (and ``admin``) at the end."""
    owner = pool if admin is None else admin
    fresh_table(owner)
    try:
        return benchmark.pedantic(drive, args=(autocommit_insert(connection or pool.connection),),
                                  rounds=1, iterations=1)
    finally:
        if admin is None:
            drop_table(pool)
            pool.close()
        else:
            pool.close()
            drop_table(admin)
            admin.close()


BATCHERS = {"batcher_execute": batcher_execute, "batcher_submit16": batcher_submit16}


def report(benchmark: Any, contender: str, result: dict[str, Any]) -> None:
    benchmark.extra_info.update(result, contender=contender)
    print(f"\n{contender:26s} {result['writes_per_s']:8.0f} writes/s  "
          f"p50 {result['latency_p50_ms']:6.2f} ms  p99 {result['latency_p99_ms']:6.2f} ms"
          + (f"  batch mean {result['batch_size_mean']:.1f}" if "batch_size_mean" in result
             else ""))


PG_CONTENDERS = ["batcher_execute", "batcher_submit16", "fastpool_autocommit",
                 "psycopg_pool_autocommit"]


@pytest.mark.parametrize("contender", PG_CONTENDERS)
def test_pg_single_row_writes(benchmark: Any, pg_dsn: str, contender: str) -> None:
    benchmark.group = f"batch-insert-postgresql-{THREADS}-threads"
    if contender in BATCHERS:
        result = run_batcher(benchmark, pg_pool(pg_dsn, 2), BATCHERS[contender])
    elif contender == "fastpool_autocommit":
        result = run_autocommit(benchmark, pg_pool(pg_dsn, THREADS, autocommit=True))
    else:
        psycopg_pool = pytest.importorskip("psycopg_pool")
        pool = psycopg_pool.ConnectionPool(pg_dsn, min_size=THREADS, max_size=THREADS,
                                           timeout=60, kwargs={"autocommit": True}, open=True)
        pool.wait()
        result = run_autocommit(benchmark, pool)
    report(benchmark, contender, result)


MYSQL_CONTENDERS = ["batcher_execute", "batcher_submit16", "fastpool_autocommit",
                    "dbutils_autocommit"]


@pytest.mark.parametrize("contender", MYSQL_CONTENDERS)
def test_mysql_single_row_writes(benchmark: Any, mysql_url: str, contender: str) -> None:
    benchmark.group = f"batch-insert-mariadb-{THREADS}-threads"
    if contender in BATCHERS:
        result = run_batcher(benchmark, mysql_pool(mysql_url, 2), BATCHERS[contender])
    elif contender == "fastpool_autocommit":
        result = run_autocommit(benchmark, mysql_pool(mysql_url, THREADS, autocommit=True))
    else:
        pooled_db = pytest.importorskip("dbutils.pooled_db")
        import MySQLdb

        params = from_url(mysql_url, autocommit=True).params
        pool = pooled_db.PooledDB(MySQLdb, mincached=THREADS, maxcached=THREADS,
                                  maxconnections=THREADS, blocking=True, ping=0, **params)

        def connection() -> Any:
            conn = pool.connection()

            class Borrowed:
                def __enter__(self) -> Any:
                    return conn

                def __exit__(self, *exc: object) -> None:
                    conn.close()

            return Borrowed()

        result = run_autocommit(benchmark, pool, connection, admin=mysql_pool(mysql_url, 1))
    report(benchmark, contender, result)


# ---- deadlocks between concurrent batches -----------------------------------------------

HOT_KEYS = 64
UPSERT = {
    "postgresql": f"INSERT INTO {TABLE} (id, n) VALUES (%s, 1) "
                  f"ON CONFLICT (id) DO UPDATE SET n = {TABLE}.n + 1",
    "mariadb": f"INSERT INTO {TABLE} (id, n) VALUES (%s, 1) ON DUPLICATE KEY UPDATE n = n + 1",
}


@pytest.mark.parametrize("ordered", [False, True], ids=["submission-order", "key-order"])
@pytest.mark.parametrize("db", ["postgresql", "mariadb"])
def test_deadlocks_between_concurrent_batches(benchmark: Any, request: pytest.FixtureRequest,
                                              db: str, ordered: bool) -> None:
    """32 threads upsert random keys among 64 hot rows through 4 flushers."""
    benchmark.group = f"batch-deadlocks-{db}"
    if db == "postgresql":
        dsn = request.getfixturevalue("pg_dsn")
        # A deadlock costs deadlock_timeout (1 s by default) before detection.
        pool = fastpool.Pool(driver=PostgresDriver(dsn, options="-c deadlock_timeout=100"),
                             min_size=4, max_size=4, timeout=60)
    else:
        pool = mysql_pool(request.getfixturevalue("mysql_url"), 4)
    fresh_table(pool, f"CREATE TABLE {TABLE} (id BIGINT PRIMARY KEY, n BIGINT)")
    batcher = Batcher(pool, flushers=4, max_delay=0.0005, max_retries=50,
                      key=(lambda params: params[0]) if ordered else None)
    sql = UPSERT[db]
    rngs = [random.Random(t) for t in range(THREADS)]

    def write(t: int, n: int) -> int:
        batcher.execute(sql, (rngs[t].randrange(HOT_KEYS),))
        return 1

    try:
        result = benchmark.pedantic(drive, args=(write,), rounds=1, iterations=1)
        batcher.flush()
        s = batcher.stats()
        with pool.connection() as conn:
            cur = conn.cursor()
            cur.execute(f"SELECT sum(n) FROM {TABLE}")
            total = int(cur.fetchone()[0])
            cur.close()
        assert total == s.committed  # every committed upsert counted exactly once
        result.update(batches=s.batches, deadlocks=s.conflicts, retries=s.retries,
                      failed=s.failed, batch_size_mean=s.batch_size_mean,
                      deadlocks_per_batch=s.conflicts / max(s.batches, 1))
    finally:
        batcher.close()
        drop_table(pool)
        pool.close()
    benchmark.extra_info.update(result, contender="key-order" if ordered else "submission-order")
    print(f"\n{db} {'key order' if ordered else 'submission order':16s} "
          f"{result['writes_per_s']:8.0f} writes/s  {result['batches']} batches, "
          f"{result['deadlocks']} deadlocks ({100 * result['deadlocks_per_batch']:.3f}%), "
          f"p99 {result['latency_p99_ms']:.1f} ms")
