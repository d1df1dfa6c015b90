"""Pool overhead over a raw connection, per `SELECT 1`, through the real drivers.

Every contender runs the same query per cycle on one connection (autocommit
everywhere, so no contender owes the server a COMMIT or ROLLBACK)::

    cur = conn.cursor(); cur.execute("SELECT 1"); cur.fetchone(); cur.close()

``raw`` runs it on one connection held all along; each pool contender wraps
it in its own acquire -> query -> release. The overhead over raw,
``(contender - raw) / raw``, is what a pool costs per query. A timed round is
``QUERIES`` cycles, so the timer's own cost is amortized (extra_info
``queries_per_round``); ``python3 benchmarks/report.py`` turns medians into
microseconds per query, the overhead in percent and ratios to fastpool.

Scenarios (one pytest-benchmark group each):

- ``drivers-pg-unix``, ``drivers-pg-tcp``: PostgreSQL through psycopg 3 over the
  unix socket and over TCP to 127.0.0.1: raw psycopg, fastpool
  (``create_pool(url, min_size=1, max_size=1, autocommit=True)``;
  acquire/release and ``with pool.connection()``), psycopg_pool (getconn/putconn
  and ``with pool.connection()``), SQLAlchemy QueuePool (``connect()`` ...
  ``close()``, default reset-on-return: it calls ``rollback()``, which psycopg
  skips locally on an idle connection) and DBUtils PooledDB (default settings:
  ``ping=1`` finds no ``ping()`` on psycopg connections and switches itself off,
  ``reset=True`` calls ``rollback()``, skipped locally again).
- ``drivers-mysql-unix``: MariaDB through mysqlclient over the unix socket: raw
  MySQLdb, fastpool (both forms), SQLAlchemy QueuePool (its default
  reset-on-return ROLLBACK is a round trip on MySQLdb) and DBUtils PooledDB
  (default settings: ``ping(False)`` on every checkout and ROLLBACK on every
  return, two round trips; mysqlclient's DeprecationWarning for that argument
  is ignored, as it is outside pytest: see test_mysql_unix).

Pinning (FACTS.md: a round trip costs 3x more when the scheduler puts the
client and the server on different vCPUs, and it flips within seconds): the
client process and, for each contender, the server side of the connection it
uses are pinned to one CPU (``FASTPOOL_BENCH_CPU``, default 1) with
``sched_setaffinity``, the equivalent of ``taskset``: the PostgreSQL backend
found with ``SELECT pg_backend_pid()`` (``taskset -pc 1 <pid>``) and every
mariadbd thread (``taskset -apc 1 $(pidof mariadbd)``). mariadbd's threads get
their original affinity back when the module ends. ``FASTPOOL_BENCH_PIN=0``
turns pinning off (then compare ratios only, and expect noise).

A 1% overhead is a fraction of a microsecond, less than what separates two
runs of the same loop minutes apart or on two server backends, so each pool
contender is also measured pairwise (extra_info ``paired_overhead_pct``):
``PAIRS`` of its rounds alternate, ABBA, with raw rounds run on the very
connection it lends (idle in its pool meanwhile); the median of the per-pair
ratios is drift-free and backend-free.

Round trips: after timing, each contender runs ``ROUND_TRIP_CYCLES`` more
cycles while the server side's context switches (voluntary + involuntary,
``/proc/<pid>[/task/<tid>]/status``) are counted; pinned to one CPU the server
switches away exactly once per request it answers, so the count per cycle is
the number of server round trips (extra_info ``server_round_trips_per_query``;
1.00 is the query alone; unpinned it may undercount). For fastpool, extra_info
also records the pool's probes and closes and how many cycles left the
compiled fast path.

Run (benchmarks are not tests: nothing here asserts anything about time)::

    python3 -m pytest benchmarks/test_bench_drivers.py --benchmark-json=drivers-1.json
    python3 benchmarks/report.py drivers-1.json drivers-2.json drivers-3.json

URLs: ``FASTPOOL_PG_UNIX_URL``, ``FASTPOOL_PG_TCP_URL``, ``FASTPOOL_MYSQL_URL``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import fastpool
from _common import CPU, PIN, MariaDBPins, mariadbd_pid, mysql_kwargs, pin, pinned_to_cpu, switches

SQL = "SELECT 1"
QUERIES = 200  # cycles per timed round
ROUNDS = 100
WARMUP_ROUNDS = 5  # also past psycopg's prepare_threshold (5): every contender runs prepared
PAIRS = 100  # interleaved rounds of contender and raw on the contender's own connection
ROUND_TRIP_CYCLES = 1000

PG_URLS = {
    "unix": os.environ.get("FASTPOOL_PG_UNIX_URL",
                           "postgresql:///test?host=/var/run/postgresql&user=postgres"),
    "tcp": os.environ.get("FASTPOOL_PG_TCP_URL", "postgresql://postgres@127.0.0.1:5432/test"),
}
MYSQL_URL = os.environ.get("FASTPOOL_MYSQL_URL",
                           "mysql://root@/test?unix_socket=/run/mysqld/mysqld.sock")


def select_one(conn: Any) -> None:
    """The work of one cycle, the same for every contender (DB-API only)."""
    cur = conn.cursor()
    cur.execute(SQL)
    cur.fetchone()
    cur.close()


# ---- pinning and round-trip counting -------------------------------------


@pytest.fixture(scope="module", autouse=True)
def pinned_client() -> Iterator[None]:
    with pinned_to_cpu():
        yield


@pytest.fixture(scope="module")
def mariadbd() -> Iterator[MariaDBPins]:
    """Pinning of mariadbd (``taskset -apc``), undone when the module ends."""
    pins = MariaDBPins()
    try:
        yield pins
    finally:
        pins.restore()


# ---- contenders -----------------------------------------------------------


@dataclass
class Contender:
    cycle: Callable[[], None]  # QUERIES cycles
    native: Any  # the driver connection the contender's cycles use
    close: Callable[[], None]
    pool: Any = None  # a fastpool pool, for its stats


def _loop_raw(conn: Any) -> Callable[[], None]:
    def cycle() -> None:
        for _ in range(QUERIES):
            select_one(conn)

    return cycle


def _loop_acquire_release(acquire: Callable[[], Any],
                          release: Callable[[Any], object]) -> Callable[[], None]:
    def cycle() -> None:
        for _ in range(QUERIES):
            conn = acquire()
            try:
                select_one(conn)
            finally:
                release(conn)

    return cycle


def _loop_with(connection: Callable[[], Any]) -> Callable[[], None]:
    def cycle() -> None:
        for _ in range(QUERIES):
            with connection() as conn:
                select_one(conn)

    return cycle


def _loop_connect_close(connect: Callable[[], Any]) -> Callable[[], None]:
    """SQLAlchemy's ``pool.connect()`` and DBUtils' ``pool.connection()``: close() returns."""
    def cycle() -> None:
        for _ in range(QUERIES):
            conn = connect()
            try:
                select_one(conn)
            finally:
                conn.close()

    return cycle


def _fastpool(url: str, form: str) -> Contender:
    pool = fastpool.create_pool(url, min_size=1, max_size=1, autocommit=True)
    pool.wait(10)
    native = pool.acquire()
    pool.release(native)
    if form == "with":
        cycle = _loop_with(pool.connection)
    else:
        cycle = _loop_acquire_release(pool.acquire, pool.release)
    return Contender(cycle, native, pool.close, pool=pool)


def _pg_kwargs(url: str) -> dict[str, Any]:
    return {"conninfo": url, "autocommit": True}


def pg_raw(url: str) -> Contender:
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    return Contender(_loop_raw(conn), conn, conn.close)


def pg_fastpool_acquire_release(url: str) -> Contender:
    return _fastpool(url, "acquire_release")


def pg_fastpool_with(url: str) -> Contender:
    return _fastpool(url, "with")


def _psycopg_pool(url: str) -> Any:
    psycopg_pool = pytest.importorskip("psycopg_pool")
    pool = psycopg_pool.ConnectionPool(url, min_size=1, max_size=1,
                                       kwargs={"autocommit": True}, open=True)
    pool.wait()
    return pool


def pg_psycopg_pool_getconn(url: str) -> Contender:
    pool = _psycopg_pool(url)
    native = pool.getconn()
    pool.putconn(native)
    return Contender(_loop_acquire_release(pool.getconn, pool.putconn), native, pool.close)


def pg_psycopg_pool_with(url: str) -> Contender:
    pool = _psycopg_pool(url)
    native = pool.getconn()
    pool.putconn(native)
    return Contender(_loop_with(pool.connection), native, pool.close)


def _sqlalchemy(creator: Callable[[], Any]) -> Contender:
    sa_pool = pytest.importorskip("sqlalchemy.pool")
    # Defaults otherwise: reset_on_return="rollback", pre_ping=False.
    pool = sa_pool.QueuePool(creator, pool_size=1, max_overflow=0)
    fairy = pool.connect()
    native = fairy.dbapi_connection
    fairy.close()
    return Contender(_loop_connect_close(pool.connect), native, pool.dispose)


def _dbutils(creator: Any, **kwargs: Any) -> Contender:
    pooled_db = pytest.importorskip("dbutils.pooled_db")
    pool = pooled_db.PooledDB(creator, **kwargs)  # default settings: ping=1, reset=True
    conn = pool.connection()
    native = conn._con._con  # PooledDedicatedDBConnection -> SteadyDBConnection -> driver's
    conn.close()
    return Contender(_loop_connect_close(pool.connection), native, pool.close)


def pg_sqlalchemy_queuepool(url: str) -> Contender:
    import psycopg

    return _sqlalchemy(lambda: psycopg.connect(url, autocommit=True))


def pg_dbutils_pooleddb(url: str) -> Contender:
    import psycopg

    return _dbutils(psycopg, **_pg_kwargs(url))


def my_raw(url: str) -> Contender:
    import MySQLdb

    conn = MySQLdb.connect(**mysql_kwargs(url))
    return Contender(_loop_raw(conn), conn, conn.close)


def my_fastpool_acquire_release(url: str) -> Contender:
    return _fastpool(url, "acquire_release")


def my_fastpool_with(url: str) -> Contender:
    return _fastpool(url, "with")


def my_sqlalchemy_queuepool(url: str) -> Contender:
    import MySQLdb

    kwargs = mysql_kwargs(url)
    return _sqlalchemy(lambda: MySQLdb.connect(**kwargs))


def my_dbutils_pooleddb(url: str) -> Contender:
    import MySQLdb

    return _dbutils(MySQLdb, **mysql_kwargs(url))


PG_CONTENDERS = {
    "raw": pg_raw,
    "fastpool_acquire_release": pg_fastpool_acquire_release,
    "fastpool_with": pg_fastpool_with,
    "psycopg_pool_getconn": pg_psycopg_pool_getconn,
    "psycopg_pool_with": pg_psycopg_pool_with,
    "sqlalchemy_queuepool": pg_sqlalchemy_queuepool,
    "dbutils_pooleddb": pg_dbutils_pooleddb,
}
MYSQL_CONTENDERS = {
    "raw": my_raw,
    "fastpool_acquire_release": my_fastpool_acquire_release,
    "fastpool_with": my_fastpool_with,
    "sqlalchemy_queuepool": my_sqlalchemy_queuepool,
    "dbutils_pooleddb": my_dbutils_pooleddb,
}


# ---- the benchmark --------------------------------------------------------


def _count_slow_paths(pool: Any) -> dict[str, int]:
    """Count the cycles that leave the compiled fast path (the core calls these)."""
    counts = {"acquire_slow": 0, "release_slow": 0}

    def wrap(name: str) -> None:
        original = getattr(pool, f"_{name}")

        def counted(*args: Any) -> Any:
            counts[name] += 1
            return original(*args)

        setattr(pool, f"_{name}", counted)

    wrap("acquire_slow")
    wrap("release_slow")
    return counts


def _timed(cycle: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    cycle()
    return time.perf_counter() - t0


def paired_overhead(contender: Contender) -> tuple[float, float]:
    """Overhead over raw measured pairwise on the same connection, in percent.

    Rounds of the contender alternate (ABBA) with raw rounds run directly on
    the very connection the contender lends (idle in its pool meanwhile), so
    neither drift nor a different server backend counts against either. Returns
    (median of the per-pair overheads, raw microseconds per query).
    """
    raw = _loop_raw(contender.native)
    ratios, raws = [], []
    for k in range(PAIRS):
        if k % 2:
            t_raw = _timed(raw)
            t_pool = _timed(contender.cycle)
        else:
            t_pool = _timed(contender.cycle)
            t_raw = _timed(raw)
        ratios.append(t_pool / t_raw)
        raws.append(t_raw)
    return (statistics.median(ratios) - 1) * 100, statistics.median(raws) / QUERIES * 1e6


def measure(benchmark: Any, group: str, name: str, contender: Contender,
            server_status: str) -> None:
    """Time ``contender``; then its paired overhead over raw, its server round trips
    and (fastpool) how often it left the compiled fast path."""
    benchmark.group = group
    benchmark.extra_info.update({
        "queries_per_round": QUERIES, "contender": name, "pinned_cpu": CPU if PIN else None})
    try:
        benchmark.pedantic(contender.cycle, rounds=ROUNDS, iterations=1,
                           warmup_rounds=WARMUP_ROUNDS)
        if name != "raw":
            pct, raw_us = paired_overhead(contender)
            benchmark.extra_info["paired_overhead_pct"] = round(pct, 3)
            benchmark.extra_info["paired_raw_us_per_query"] = round(raw_us, 3)
        pool = contender.pool
        slow = _count_slow_paths(pool) if pool is not None else None
        n = max(1, ROUND_TRIP_CYCLES // QUERIES)
        before = switches(server_status)
        for _ in range(n):
            contender.cycle()
        trips = (switches(server_status) - before) / (n * QUERIES)
        benchmark.extra_info["server_round_trips_per_query"] = round(trips, 2)
        if pool is not None:
            assert slow is not None
            for attr in ("_acquire_slow", "_release_slow"):
                pool.__dict__.pop(attr, None)
            s = pool.stats()
            benchmark.extra_info.update({
                "fastpool_slow_paths_per_query": (slow["acquire_slow"] + slow["release_slow"])
                / (n * QUERIES),
                "fastpool_probes": s.probes, "fastpool_opened": s.opened,
                "fastpool_closed": dict(s.closed), "fastpool_acquisitions": s.acquisitions})
        print(f"\n{group} {name}: {trips:.2f} server round trips per query")
    finally:
        contender.close()


@pytest.fixture(scope="module")
def pg_urls() -> dict[str, str]:
    psycopg = pytest.importorskip("psycopg")
    for where, url in PG_URLS.items():
        try:
            psycopg.connect(url, connect_timeout=3).close()
        except psycopg.OperationalError as exc:
            pytest.skip(f"PostgreSQL ({where}) not reachable at {url!r}: {exc}")
    return PG_URLS


@pytest.fixture(scope="module")
def mysql_url() -> str:
    MySQLdb = pytest.importorskip("MySQLdb")
    try:
        MySQLdb.connect(**mysql_kwargs(MYSQL_URL)).close()
    except MySQLdb.OperationalError as exc:
        pytest.skip(f"MariaDB not reachable at {MYSQL_URL!r}: {exc}")
    return MYSQL_URL


def _pg(benchmark: Any, url: str, where: str, name: str) -> None:
    contender = PG_CONTENDERS[name](url)
    pid = contender.native.execute("SELECT pg_backend_pid()").fetchone()[0]
    pin(pid)
    benchmark.extra_info["server_pid"] = pid
    measure(benchmark, f"drivers-pg-{where}", name, contender, f"/proc/{pid}/status")


@pytest.mark.parametrize("name", list(PG_CONTENDERS))
def test_pg_unix(benchmark, pg_urls, name):
    _pg(benchmark, pg_urls["unix"], "unix", name)


@pytest.mark.parametrize("name", list(PG_CONTENDERS))
def test_pg_tcp(benchmark, pg_urls, name):
    _pg(benchmark, pg_urls["tcp"], "tcp", name)


# DBUtils calls ping(False) (mysqlclient: "The reconnect parameter of ping() is
# deprecated"); under the project's filterwarnings=error the warning would be
# an exception, which DBUtils takes for a dead connection and reconnects on
# every checkout. Outside pytest the warning is ignored; do the same here.
@pytest.mark.filterwarnings("ignore:The reconnect parameter of ping:DeprecationWarning")
@pytest.mark.parametrize("name", list(MYSQL_CONTENDERS))
def test_mysql_unix(benchmark, mysql_url, mariadbd, name):
    if mariadbd_pid() is None:
        pytest.skip("mariadbd is not a local process: cannot pin it or count its round trips")
    contender = MYSQL_CONTENDERS[name](mysql_url)
    cur = contender.native.cursor()
    cur.execute("SELECT TID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
    tid = cur.fetchone()[0]
    cur.close()
    pid = mariadbd.pin()  # the whole server: its threads hand work to each other
    benchmark.extra_info["server_pid"] = pid
    measure(benchmark, "drivers-mysql-unix", name, contender, f"/proc/{pid}/task/{tid}/status")
