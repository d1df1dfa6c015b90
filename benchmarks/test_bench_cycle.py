"""Uncontended acquire + release with no query: the pool's own overhead.

Every contender holds real PostgreSQL connections (psycopg 3) so the work
per cycle is the same; `deque` and `LifoQueue` are the floor a Python pool
stands on. Compare the medians as ratios (BENCHMARKS.md).
"""

from __future__ import annotations

import collections
import queue
import sqlite3

import psycopg
import pytest

import fastpool

pytestmark = pytest.mark.benchmark(group="cycle", min_rounds=20, warmup=True)

INNER = 1000  # cycles per timed round, so the timer's own cost is amortized


def run(benchmark, cycle):
    benchmark.extra_info["cycles_per_round"] = INNER
    benchmark.pedantic(cycle, rounds=50, iterations=1, warmup_rounds=3)


@pytest.fixture
def fast_pool(pg_dsn):
    pool = fastpool.Pool(connect=lambda: psycopg.connect(pg_dsn), min_size=1, max_size=1)
    pool.wait(10)
    yield pool
    pool.close()


def test_fastpool_acquire_release(benchmark, fast_pool):
    acquire, release = fast_pool.acquire, fast_pool.release

    def cycle():
        for _ in range(INNER):
            release(acquire())

    run(benchmark, cycle)
    assert fast_pool.stats().probes == 0


def test_fastpool_with_connection(benchmark, fast_pool):
    connection = fast_pool.connection

    def cycle():
        for _ in range(INNER):
            with connection():
                pass

    run(benchmark, cycle)


def test_fastpool_sqlite_acquire_release(benchmark, tmp_path):
    pool = fastpool.Pool(connect=lambda: sqlite3.connect(tmp_path / "b.db",
                                                         check_same_thread=False))
    pool.wait(10)
    acquire, release = pool.acquire, pool.release

    def cycle():
        for _ in range(INNER):
            release(acquire())

    run(benchmark, cycle)
    pool.close()


def test_psycopg_pool_getconn_putconn(benchmark, pg_dsn):
    psycopg_pool = pytest.importorskip("psycopg_pool")
    with psycopg_pool.ConnectionPool(pg_dsn, min_size=1, max_size=1, open=True) as pool:
        pool.wait()
        getconn, putconn = pool.getconn, pool.putconn

        def cycle():
            for _ in range(INNER):
                putconn(getconn())

        run(benchmark, cycle)


def test_psycopg_pool_with_connection(benchmark, pg_dsn):
    psycopg_pool = pytest.importorskip("psycopg_pool")
    with psycopg_pool.ConnectionPool(pg_dsn, min_size=1, max_size=1, open=True) as pool:
        pool.wait()
        connection = pool.connection

        def cycle():
            for _ in range(INNER):
                with connection():
                    pass

        run(benchmark, cycle)


def test_sqlalchemy_queuepool_connect_close(benchmark, pg_dsn):
    sa_pool = pytest.importorskip("sqlalchemy.pool")
    pool = sa_pool.QueuePool(lambda: psycopg.connect(pg_dsn), pool_size=1, max_overflow=0)

    def cycle():
        for _ in range(INNER):
            pool.connect().close()

    run(benchmark, cycle)
    pool.dispose()


def test_dbutils_pooleddb_connection_close(benchmark, pg_dsn):
    pooled_db = pytest.importorskip("dbutils.pooled_db")
    pool = pooled_db.PooledDB(psycopg, mincached=1, maxcached=1, maxconnections=1,
                              blocking=True, ping=0, conninfo=pg_dsn)

    def cycle():
        for _ in range(INNER):
            pool.connection().close()

    run(benchmark, cycle)
    pool.close()


def test_floor_deque_pop_append(benchmark):
    d = collections.deque([object()])
    pop, append = d.pop, d.append

    def cycle():
        for _ in range(INNER):
            append(pop())

    run(benchmark, cycle)


def test_floor_lifoqueue_get_put(benchmark):
    q: queue.LifoQueue[object] = queue.LifoQueue()
    q.put(object())
    get, put = q.get, q.put

    def cycle():
        for _ in range(INNER):
            put(get())

    run(benchmark, cycle)
