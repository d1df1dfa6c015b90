"""The query layer: prepared statements, statement reuse, MySQL PREPARE, the result cache.

Each scenario is one pytest-benchmark group; each contender runs ``QUERIES``
statements per timed round (``ZIPF_QUERIES`` in the result-cache group) on one
connection (``min_size=max_size=1`` for every pool), so
``python3 benchmarks/report.py`` prints microseconds per query, and
``python3 benchmarks/test_bench_query.py run-*.json`` prints the tables of
BENCHMARKS.md with the ratios and cache statistics below.

Scenarios (tables ``fp_qb_customers`` 10K rows, ``fp_qb_products`` 10K,
``fp_qb_orders`` 100K with an index on ``(customer_id, created_at)``; created
at the start of the module on both servers, dropped at its end):

- ``query-pg-join``, ``query-pg-pk``: PostgreSQL over the unix socket, a
  3-table join with filters and ``ORDER BY ... LIMIT 5`` (``JOIN``; a few
  hundred µs of planning, tens of µs of execution) and a primary-key lookup
  (``PK``). Contenders: raw psycopg ``conn.execute(sql, params, prepare=True)``
  (``raw``) and ``prepare=False`` (``raw_unprepared``); fastpool ``pool.fetch``
  with the statement cache (default 256), the same on an ``autocommit=True``
  pool (no local autocommit switch per call) and with
  ``statement_cache_size=0``; psycopg_pool ``with pool.connection()`` +
  ``conn.execute`` (autocommit connections, psycopg prepares by itself after
  5 executions); asyncpg ``pool.fetch`` (its release runs asyncpg's reset
  query) and ``conn.fetch`` on one connection, with their event loop in this
  process.
- ``query-pg-reuse``: fastpool ``pool.fetch`` cycling through 256 distinct
  statements (PK lookups differing by a literal) with the default cache of
  256, and through 300 of them, in order (the LRU's worst case: every
  execution misses) and in uniformly random order; each also with
  ``statement_cache_size=0``. extra_info records ``query_stats()``'s statement
  counters over the timed rounds (``steady_*``) and over the whole run.
  ``raw`` is raw psycopg, unprepared, cycling through the 256 statements; the
  group's reference rounds are the PK group's (one statement: see pg_reference).
- ``query-mysql-pk``, ``query-mysql-join``: MariaDB through mysqlclient over
  the unix socket, the same statements: the text protocol
  (``cursor.execute(sql, params)``, ``raw``); SQL-level ``PREPARE`` once,
  then ``EXECUTE s USING %s, ...`` (literals in USING, one statement, MariaDB
  only); ``SET @a = %s, ...`` then ``EXECUTE s USING @a, ...`` as two
  statements (two round trips; what MySQL 8 needs) and as one multi-statement
  query (one round trip, two results); fastpool ``pool.fetch`` (text) with the
  driver's default ``autocommit=False`` and with ``autocommit=True``.
- ``query-result-cache``: ``pool.fetchval(VAL, (key,))`` over a Zipf(1.1)
  stream of 10K keys (``ZIPF_QUERIES`` per round, the same seeded stream for
  every contender): raw psycopg (prepared), fastpool uncached, fastpool with
  ``cache_ttl=5`` (a fresh pool: its cache starts empty, extra_info records
  the hit rate over the timed rounds and over the whole run), and one key
  served from the cache every time (the cost of a hit).

Method. The client and the server side of every connection are pinned to one
CPU (``FASTPOOL_BENCH_CPU``, default 1; ``FASTPOOL_BENCH_PIN=0`` turns it off):
the PostgreSQL backends and all mariadbd threads, restored at the end, as in
test_bench_drivers.py (FACTS.md: a round trip costs ~3x more when the
scheduler splits client and server, and it flips within seconds). The machine
is shared and drifts by up to 2x within minutes, so every timed round of a
contender is interleaved with a round of its group's *reference* (the group's
``raw`` work, or the PK group's for ``query-pg-reuse``, on a dedicated
connection of its own, run in pytest-benchmark's untimed setup just before;
the MySQL groups get ``MYSQL_ROUNDS`` rounds): extra_info
``paired_overhead_pct`` is the median over the rounds of contender /
reference - 1, and ratios between two contenders of a group are ratios of
their paired ratios, free of drift. The
fastpool contenders also get ``paired_same_conn_overhead_pct``: ``PAIRS``
rounds alternating (ABBA) with the same statements run raw (autocommit,
``prepare=True`` unless the cache is off; ``cursor.execute`` on MySQL) on the
very connection the pool lends, idle in the pool meanwhile: what the helper
costs over the driver. Server round trips per query are counted from the
server side's context switches, as in test_bench_drivers.py.

Run (benchmarks are not tests: nothing here asserts anything about time; one
benchmark at a time on this machine; PostgreSQL ~90 s, MariaDB ~60 s)::

    flock /tmp/fastpool-bench.lock python3 -m pytest benchmarks/test_bench_query.py \\
        -k "not mysql" --benchmark-json=query-pg-1.json
    flock /tmp/fastpool-bench.lock python3 -m pytest benchmarks/test_bench_query.py \\
        -k mysql --benchmark-json=query-mysql-1.json
    python3 benchmarks/test_bench_query.py query-pg-*.json query-mysql-*.json

URLs: ``FASTPOOL_PG_UNIX_URL``, ``FASTPOOL_MYSQL_URL``; ``FASTPOOL_BENCH_ROUNDS``
(default 60) timed rounds per contender; ``FASTPOOL_BENCH_SEED`` (default 1).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import fastpool

# Pinning, round-trip counting and MySQLdb arguments, shared with the driver benchmarks
# (pytest puts benchmarks/ on sys.path; so does running this file).
from _common import CPU, PIN, MariaDBPins, mariadbd_pid, mysql_kwargs, pin, pinned_to_cpu, switches

PG_URL = os.environ.get("FASTPOOL_PG_UNIX_URL",
                        "postgresql:///test?host=/var/run/postgresql&user=postgres")
MYSQL_URL = os.environ.get("FASTPOOL_MYSQL_URL",
                           "mysql://root@/test?unix_socket=/run/mysqld/mysqld.sock")
QUERIES = 100  # statements per timed round
ROUNDS = int(os.environ.get("FASTPOOL_BENCH_ROUNDS", "60"))
MYSQL_ROUNDS = 2 * ROUNDS  # the question there is a few percent either way
# Past psycopg's prepare_threshold (5) and PostgreSQL's 5 custom plans before
# it settles on a generic plan: every prepared contender runs its steady state.
WARMUP_ROUNDS = 6
PAIRS = 40  # ABBA rounds of a fastpool contender and raw on its own connection
ROUND_TRIP_QUERIES = 500
SEED = int(os.environ.get("FASTPOOL_BENCH_SEED", "1"))

CUSTOMERS = 10_000
JOIN = """SELECT o.id, o.created_at, o.amount, c.name, p.title
FROM fp_qb_orders o
JOIN fp_qb_customers c ON c.id = o.customer_id
JOIN fp_qb_products p ON p.id = o.product_id
WHERE o.customer_id = %s AND o.status <> %s AND p.category <> %s AND c.tier >= %s
ORDER BY o.created_at DESC LIMIT 5"""
PK = "SELECT name, region FROM fp_qb_customers WHERE id = %s"
VAL = "SELECT name FROM fp_qb_customers WHERE id = %s"
# The same 100 customers every round (a permutation of the ids: 7919 is prime).
_IDS = [1 + (i * 7919) % CUSTOMERS for i in range(QUERIES)]
JOIN_ROUND = [(JOIN, (c, 4, 49, 0)) for c in _IDS]
PK_ROUND = [(PK, (c,)) for c in _IDS]

ZIPF_KEYS = CUSTOMERS
ZIPF_S = 1.1
ZIPF_QUERIES = 1000  # per timed round
CACHE_TTL = 5.0

Round = list[tuple[str, Any]]  # one round's statements and their parameters

# ---- tables ---------------------------------------------------------------

_PG_TABLES = [
    "CREATE TABLE fp_qb_customers (id int PRIMARY KEY, name text NOT NULL,"
    " region int NOT NULL, tier int NOT NULL)",
    "INSERT INTO fp_qb_customers SELECT i, 'customer ' || i, i % 20, i % 4"
    " FROM generate_series(1, 10000) i",
    "CREATE TABLE fp_qb_products (id int PRIMARY KEY, title text NOT NULL,"
    " category int NOT NULL, price numeric(10, 2) NOT NULL)",
    "INSERT INTO fp_qb_products SELECT i, 'product ' || i, i % 50, (i % 997) / 10.0"
    " FROM generate_series(1, 10000) i",
    "CREATE TABLE fp_qb_orders (id int PRIMARY KEY, customer_id int NOT NULL,"
    " product_id int NOT NULL, status int NOT NULL, amount numeric(10, 2) NOT NULL,"
    " created_at timestamptz NOT NULL)",
    # 10 orders per customer, of 10 products and all 5 statuses.
    "INSERT INTO fp_qb_orders SELECT i, 1 + (i * 7919) % 10000,"
    " 1 + (i * 7907 + (i / 10000) * 4391) % 10000, (i / 10000) % 5, (i % 9973) / 100.0,"
    " timestamptz '2026-01-01' + i * interval '1 minute' FROM generate_series(1, 100000) i",
    "CREATE INDEX fp_qb_orders_customer_created ON fp_qb_orders (customer_id, created_at)",
    "ANALYZE fp_qb_customers, fp_qb_products, fp_qb_orders",
]
_MYSQL_TABLES = [
    "CREATE TABLE fp_qb_customers (id int PRIMARY KEY, name varchar(40) NOT NULL,"
    " region int NOT NULL, tier int NOT NULL) ENGINE=InnoDB",
    "INSERT INTO fp_qb_customers SELECT seq, CONCAT('customer ', seq), seq % 20, seq % 4"
    " FROM seq_1_to_10000",
    "CREATE TABLE fp_qb_products (id int PRIMARY KEY, title varchar(40) NOT NULL,"
    " category int NOT NULL, price decimal(10, 2) NOT NULL) ENGINE=InnoDB",
    "INSERT INTO fp_qb_products SELECT seq, CONCAT('product ', seq), seq % 50,"
    " (seq % 997) / 10.0 FROM seq_1_to_10000",
    "CREATE TABLE fp_qb_orders (id int PRIMARY KEY, customer_id int NOT NULL,"
    " product_id int NOT NULL, status int NOT NULL, amount decimal(10, 2) NOT NULL,"
    " created_at datetime NOT NULL, KEY fp_qb_orders_customer_created (customer_id, created_at))"
    " ENGINE=InnoDB",
    "INSERT INTO fp_qb_orders SELECT seq, 1 + (seq * 7919) % 10000,"
    " 1 + (seq * 7907 + (seq DIV 10000) * 4391) % 10000, (seq DIV 10000) % 5,"
    " (seq % 9973) / 100.0, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL seq MINUTE"
    " FROM seq_1_to_100000",
    "ANALYZE TABLE fp_qb_customers, fp_qb_products, fp_qb_orders",
]
_DROP = "DROP TABLE IF EXISTS fp_qb_orders, fp_qb_customers, fp_qb_products"


# ---- pinning, timing, pairing ---------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def pinned_client() -> Iterator[None]:
    with pinned_to_cpu():
        yield


def _timed(work: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


@dataclass
class Contender:
    """One way of running a group's statements, on one connection."""

    cycle: Callable[[], object]  # one timed round
    close: Callable[[], None]
    server: str | None = None  # /proc status file of the server side of its connection
    same_conn: Callable[[], float] | None = None  # times one raw round on its own connection
    stats: Callable[[], dict[str, Any]] | None = None  # a fastpool pool's query_stats
    extra: Callable[[], dict[str, Any]] | None = None  # more extra_info, after timing


def measure(benchmark: Any, group: str, name: str, contender: Contender,
            reference: Callable[[], object], queries: int = QUERIES,
            rounds: int = ROUNDS) -> None:
    """Time ``contender``'s rounds, each right after a round of ``reference``;
    then its same-connection overhead, statistics and server round trips."""
    benchmark.group = group
    extra = benchmark.extra_info
    extra.update({"contender": name, "queries_per_round": queries,
                  "pinned_cpu": CPU if PIN else None})
    refs: list[float] = []
    stats_before: list[dict[str, Any]] = []

    def setup() -> None:
        if len(refs) == WARMUP_ROUNDS and contender.stats is not None:
            stats_before.append(contender.stats())
        refs.append(_timed(reference))

    try:
        benchmark.pedantic(contender.cycle, setup=setup, rounds=rounds,
                           warmup_rounds=WARMUP_ROUNDS, iterations=1)
        data = benchmark.stats.stats.data if benchmark.stats is not None else []
        if data:
            timed_refs = refs[-len(data):]
            ratios = [x / r for x, r in zip(data, timed_refs, strict=True)]
            q1, ratio, q3 = statistics.quantiles(ratios, n=4)
            extra["paired_overhead_pct"] = round((ratio - 1) * 100, 3)
            extra["paired_ratio_quartiles"] = [round(q1, 4), round(ratio, 4), round(q3, 4)]
            extra["paired_reference_us_per_query"] = round(
                statistics.median(timed_refs) / queries * 1e6, 3)
        if contender.stats is not None:
            after = contender.stats()
            extra["query_stats"] = after
            if stats_before:
                extra["steady"] = _delta(stats_before[0], after)
        if contender.extra is not None:
            extra.update(contender.extra())
        if contender.same_conn is not None:
            extra["paired_same_conn_overhead_pct"] = round(_same_conn_overhead(contender), 3)
        if contender.server is not None:
            n = max(1, ROUND_TRIP_QUERIES // queries)
            before = switches(contender.server)
            for _ in range(n):
                contender.cycle()
            trips = (switches(contender.server) - before) / (n * queries)
            extra["server_round_trips_per_query"] = round(trips, 2)
            print(f"\n{group} {name}: {trips:.2f} server round trips per query")
    finally:
        contender.close()


def _same_conn_overhead(contender: Contender) -> float:
    """Median over ABBA pairs of (contender round / raw round on its connection) - 1, in %."""
    assert contender.same_conn is not None
    ratios = []
    for k in range(PAIRS):
        if k % 2:
            t_raw = contender.same_conn()
            t = _timed(contender.cycle)
        else:
            t = _timed(contender.cycle)
            t_raw = contender.same_conn()
        ratios.append(t / t_raw)
    return (statistics.median(ratios) - 1) * 100


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Statement and result cache counters over the timed rounds only."""
    out: dict[str, Any] = {}
    s0, s1 = before["statements"], after["statements"]
    prepares = s1["prepares"] - s0["prepares"]
    hits = s1["hits"] - s0["hits"]
    out["statements"] = {"prepares": prepares, "hits": hits,
                         "evictions": s1["evictions"] - s0["evictions"],
                         "reuse_rate": hits / (prepares + hits) if prepares + hits else None}
    r0, r1 = before["results"], after["results"]
    if r0 is not None and r1 is not None:
        rhits, rmisses = r1["hits"] - r0["hits"], r1["misses"] - r0["misses"]
        out["results"] = {"hits": rhits, "misses": rmisses,
                          "expirations": r1["expirations"] - r0["expirations"],
                          "hit_rate": rhits / (rhits + rmisses) if rhits + rmisses else None}
    return out


# ---- PostgreSQL contenders --------------------------------------------------


def _fixed(round_: Round) -> Callable[[], Round]:
    return lambda: round_


def _psycopg_loop(conn: Any, next_round: Callable[[], Round],
                  prepare: bool | None) -> Callable[[], None]:
    def cycle() -> None:
        execute = conn.execute
        for sql, params in next_round():
            execute(sql, params, prepare=prepare).fetchall()

    return cycle


def _pg_status(pid: int) -> str:
    pin(pid)
    return f"/proc/{pid}/status"


def _pg_raw(next_round: Callable[[], Round], prepare: bool) -> Contender:
    import psycopg

    conn = psycopg.connect(PG_URL, autocommit=True)
    return Contender(_psycopg_loop(conn, next_round, prepare), conn.close,
                     server=_pg_status(conn.info.backend_pid))


def _same_conn_psycopg(native: Any, next_round: Callable[[], Round],
                       prepare: bool) -> Callable[[], float]:
    """Time one raw round on a pool's own (idle) psycopg connection, autocommit
    as the helpers run, the pool's setting restored after."""
    loop = _psycopg_loop(native, next_round, prepare)

    def timed() -> float:
        before = native.autocommit
        native.autocommit = True
        try:
            return _timed(loop)
        finally:
            native.autocommit = before

    return timed


def _fastpool_pg(next_round: Callable[[], Round], **options: Any) -> Contender:
    pool = fastpool.create_pool(PG_URL, min_size=1, max_size=1, **options)
    pool.wait(10)
    native = pool.acquire()
    pool.release(native)

    def cycle() -> None:
        fetch = pool.fetch
        for sql, params in next_round():
            fetch(sql, params)

    prepare = options.get("statement_cache_size", 1) > 0
    return Contender(cycle, pool.close, server=_pg_status(native.info.backend_pid),
                     same_conn=_same_conn_psycopg(native, next_round, prepare),
                     stats=pool.query_stats)


def _psycopg_pool(next_round: Callable[[], Round]) -> Contender:
    psycopg_pool = pytest.importorskip("psycopg_pool")
    pool = psycopg_pool.ConnectionPool(PG_URL, min_size=1, max_size=1,
                                       kwargs={"autocommit": True}, open=True)
    pool.wait()
    native = pool.getconn()
    pool.putconn(native)

    def cycle() -> None:
        connection = pool.connection
        for sql, params in next_round():
            with connection() as conn:
                conn.execute(sql, params).fetchall()

    return Contender(cycle, pool.close, server=_pg_status(native.info.backend_pid))


def _dollars(sql: str) -> str:
    """psycopg's ``%s`` placeholders as asyncpg's ``$1, $2...``."""
    n = itertools.count(1)
    return re.sub("%s", lambda _: f"${next(n)}", sql)


def _asyncpg(round_: Round, form: str) -> Contender:
    asyncpg = pytest.importorskip("asyncpg")
    statements = [(_dollars(sql), params) for sql, params in round_]

    async def start() -> tuple[Any, int]:
        if form == "conn":
            conn = await asyncpg.connect(PG_URL)
            return conn, conn.get_server_pid()
        pool = await asyncpg.create_pool(PG_URL, min_size=1, max_size=1)  # binds the loop
        async with pool.acquire() as conn:
            return pool, conn.get_server_pid()

    loop = asyncio.new_event_loop()
    try:
        target, pid = loop.run_until_complete(start())
    except BaseException:
        loop.close()
        raise
    closing = target.close

    async def many() -> None:
        fetch = target.fetch
        for sql, params in statements:
            await fetch(sql, *params)

    def cycle() -> None:
        loop.run_until_complete(many())

    def close() -> None:
        try:
            loop.run_until_complete(closing())
        finally:
            loop.close()

    return Contender(cycle, close, server=_pg_status(pid))


def pg_contenders(round_: Round) -> dict[str, Callable[[], Contender]]:
    fixed = _fixed(round_)
    return {
        "raw": lambda: _pg_raw(fixed, True),
        "raw_unprepared": lambda: _pg_raw(fixed, False),
        "fastpool_fetch": lambda: _fastpool_pg(fixed),
        "fastpool_fetch_autocommit": lambda: _fastpool_pg(fixed, autocommit=True),
        "fastpool_fetch_nocache": lambda: _fastpool_pg(fixed, statement_cache_size=0),
        "psycopg_pool": lambda: _psycopg_pool(fixed),
        "asyncpg_pool_fetch": lambda: _asyncpg(round_, "pool"),
        "asyncpg_conn_fetch": lambda: _asyncpg(round_, "conn"),
    }


PG_NAMES = list(pg_contenders(PK_ROUND))


# ---- statement reuse ----------------------------------------------------------


def _variants(n: int) -> list[str]:
    """``n`` distinct statements of one shape (a PK lookup), as an application has."""
    return [f"SELECT name, region, {k} AS variant FROM fp_qb_customers WHERE id = %s"
            for k in range(n)]


def _schedule(n: int, order: str) -> Callable[[], Round]:
    """Rounds cycling through ``n`` statements, in order or uniformly at random."""
    sqls = _variants(n)
    if order == "cyclic":
        picks: Iterator[int] = itertools.cycle(range(n))
    else:
        rng = random.Random(SEED)
        picks = itertools.cycle([rng.randrange(n) for _ in range(100_000)])
    ids = itertools.cycle(_IDS)

    def next_round() -> Round:
        return [(sqls[next(picks)], (next(ids),)) for _ in range(QUERIES)]

    return next_round


REUSE: dict[str, Callable[[], Contender]] = {
    "raw": lambda: _pg_raw(_schedule(256, "cyclic"), False),
    "stmts256_cache256": lambda: _fastpool_pg(_schedule(256, "cyclic")),
    "stmts256_nocache": lambda: _fastpool_pg(_schedule(256, "cyclic"), statement_cache_size=0),
    "stmts300_cyclic_cache256": lambda: _fastpool_pg(_schedule(300, "cyclic")),
    "stmts300_random_cache256": lambda: _fastpool_pg(_schedule(300, "random")),
    "stmts300_nocache": lambda: _fastpool_pg(_schedule(300, "cyclic"), statement_cache_size=0),
}


# ---- MySQL/MariaDB contenders -----------------------------------------------


def _mysql_tid(conn: Any) -> int:
    """The OS thread of mariadbd serving ``conn`` (one per connection)."""
    cur = conn.cursor()
    cur.execute("SELECT TID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
    tid = int(cur.fetchone()[0])
    cur.close()
    conn.rollback()  # leave no transaction open on an autocommit=False connection
    return tid


def _mysql_loop(conn: Any, statements: list[tuple[str, Any]], results: int = 1
                ) -> Callable[[], None]:
    """Cursor, execute, fetch, close per statement; ``results``: the one to fetch."""
    def cycle() -> None:
        for sql, params in statements:
            cur = conn.cursor()
            cur.execute(sql, params)
            for _ in range(results - 1):
                cur.nextset()
            cur.fetchall()
            cur.close()

    return cycle


def _mysql_two(conn: Any, statements: list[tuple[str, str, Any]]) -> Callable[[], None]:
    """SET the user variables, then EXECUTE: two statements, two round trips."""
    def cycle() -> None:
        for set_sql, execute_sql, params in statements:
            cur = conn.cursor()
            cur.execute(set_sql, params)
            cur.execute(execute_sql)
            cur.fetchall()
            cur.close()

    return cycle


def _mysql_raw_conn(server_pid: int) -> tuple[Any, str]:
    import MySQLdb

    conn = MySQLdb.connect(**mysql_kwargs(MYSQL_URL))
    return conn, f"/proc/{server_pid}/task/{_mysql_tid(conn)}/status"


def _mysql_variant(round_: Round, form: str, server_pid: int) -> Contender:
    conn, server = _mysql_raw_conn(server_pid)
    sql = round_[0][0]
    nparams = len(round_[0][1])
    name = "fp_qb_stmt"
    if form != "text":
        cur = conn.cursor()
        cur.execute(f"PREPARE {name} FROM %s", (sql.replace("%s", "?"),))
        cur.close()
    variables = ", ".join(f"@fp_qb_{i}" for i in range(nparams))
    setting = "SET " + ", ".join(f"@fp_qb_{i} = %s" for i in range(nparams))
    if form == "text":
        cycle = _mysql_loop(conn, round_)
    elif form == "execute_using_literals":
        using = f"EXECUTE {name} USING " + ", ".join(["%s"] * nparams)
        cycle = _mysql_loop(conn, [(using, p) for _, p in round_])
    elif form == "set_then_execute":
        execute = f"EXECUTE {name} USING {variables}"
        cycle = _mysql_two(conn, [(setting, execute, p) for _, p in round_])
    else:  # "set_execute_multi": one query of two statements, one round trip
        both = f"{setting}; EXECUTE {name} USING {variables}"
        cycle = _mysql_loop(conn, [(both, p) for _, p in round_], results=2)
    return Contender(cycle, conn.close, server=server)


def _fastpool_mysql(round_: Round, server_pid: int, **options: Any) -> Contender:
    pool = fastpool.create_pool(MYSQL_URL, min_size=1, max_size=1, **options)
    pool.wait(10)
    native = pool.acquire()
    try:
        server = f"/proc/{server_pid}/task/{_mysql_tid(native)}/status"
    finally:
        pool.release(native)
    raw = _mysql_loop(native, round_)

    def same_conn() -> float:
        native.autocommit(True)  # a round trip, untimed; as a raw autocommit connection runs
        try:
            return _timed(raw)
        finally:
            native.autocommit(pool.driver.autocommit)

    def cycle() -> None:
        fetch = pool.fetch
        for sql, params in round_:
            fetch(sql, params)

    return Contender(cycle, pool.close, server=server, same_conn=same_conn,
                     stats=pool.query_stats)


def mysql_contenders(round_: Round, pid: int) -> dict[str, Callable[[], Contender]]:
    return {
        "raw": lambda: _mysql_variant(round_, "text", pid),
        "execute_using_literals": lambda: _mysql_variant(round_, "execute_using_literals", pid),
        "set_then_execute": lambda: _mysql_variant(round_, "set_then_execute", pid),
        "set_execute_multi": lambda: _mysql_variant(round_, "set_execute_multi", pid),
        "fastpool_fetch": lambda: _fastpool_mysql(round_, pid),
        "fastpool_fetch_autocommit": lambda: _fastpool_mysql(round_, pid, autocommit=True),
    }


MYSQL_NAMES = list(mysql_contenders(PK_ROUND, 0))


# ---- result cache ---------------------------------------------------------------


def zipf_keys(seed: int = SEED) -> Iterator[int]:
    """An endless, seeded Zipf(ZIPF_S) stream of customer ids (rank r -> a spread-out id)."""
    rng = random.Random(seed)
    cum = list(itertools.accumulate(r ** -ZIPF_S for r in range(1, ZIPF_KEYS + 1)))
    while True:
        for rank in rng.choices(range(ZIPF_KEYS), cum_weights=cum, k=10_000):
            yield 1 + (rank * 7919) % ZIPF_KEYS


def _zipf_rounds(seed: int = SEED) -> Callable[[], list[int]]:
    keys = zipf_keys(seed)
    return lambda: list(itertools.islice(keys, ZIPF_QUERIES))


def _cache_raw() -> Contender:
    import psycopg

    conn = psycopg.connect(PG_URL, autocommit=True)
    next_keys = _zipf_rounds()

    def cycle() -> None:
        execute = conn.execute
        for key in next_keys():
            execute(VAL, (key,), prepare=True).fetchone()

    return Contender(cycle, conn.close, server=_pg_status(conn.info.backend_pid))


def _cache_fastpool(mode: str) -> Contender:
    pool = fastpool.create_pool(PG_URL, min_size=1, max_size=1)
    pool.wait(10)
    native = pool.acquire()
    pool.release(native)
    next_keys = _zipf_rounds()
    hot = [_IDS[0]] * ZIPF_QUERIES
    started: list[float] = []

    def cycle() -> None:
        fetchval = pool.fetchval
        if mode == "uncached":
            for key in next_keys():
                fetchval(VAL, (key,))
        elif mode == "zipf":
            if not started:
                started.append(time.monotonic())
            for key in next_keys():
                fetchval(VAL, (key,), cache_ttl=CACHE_TTL)
        else:  # "hit": the same key every time, served from the cache after its first call
            for key in hot:
                fetchval(VAL, (key,), cache_ttl=60.0)

    def extra() -> dict[str, Any]:
        """How many Zipf requests, over how long, the whole-run hit rate covers."""
        if not started:
            return {}
        results = pool.query_stats()["results"]
        return {"zipf_requests": results["hits"] + results["misses"],
                "zipf_seconds": round(time.monotonic() - started[0], 2)}

    return Contender(cycle, pool.close, server=_pg_status(native.info.backend_pid),
                     stats=pool.query_stats, extra=extra)


CACHE: dict[str, Callable[[], Contender]] = {
    "raw": _cache_raw,
    "fastpool_fetchval": lambda: _cache_fastpool("uncached"),
    "fastpool_fetchval_cache_ttl5_zipf": lambda: _cache_fastpool("zipf"),
    "fastpool_fetchval_cache_hit": lambda: _cache_fastpool("hit"),
}


# ---- fixtures and tests -------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_tables() -> Iterator[None]:
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL!r}: {exc}")
    with conn:
        conn.execute(_DROP)
        for sql in _PG_TABLES:
            conn.execute(sql)
        yield
        conn.execute(_DROP)


@pytest.fixture(scope="module")
def pg_reference(pg_tables: None) -> Iterator[dict[str, Callable[[], object]]]:
    """One raw connection whose rounds every PostgreSQL group's contenders alternate with."""
    import psycopg

    conn = psycopg.connect(PG_URL, autocommit=True)
    pin(conn.info.backend_pid)
    keys = _zipf_rounds(SEED + 1)  # not the contenders' keys, in the same order

    def zipf_round() -> None:
        for key in keys():
            conn.execute(VAL, (key,), prepare=True).fetchone()

    yield {
        "query-pg-join": _psycopg_loop(conn, _fixed(JOIN_ROUND), True),
        "query-pg-pk": _psycopg_loop(conn, _fixed(PK_ROUND), True),
        # Not the contenders' statements: psycopg converts each SQL text through one
        # process-wide LRU of 128 entries, which a reference running the same texts just
        # before would warm for the contender (it made raw look 15% faster than itself).
        "query-pg-reuse": _psycopg_loop(conn, _fixed(PK_ROUND), True),
        "query-result-cache": zipf_round,
    }
    conn.close()


@pytest.mark.parametrize("name", PG_NAMES)
def test_pg_join(benchmark, pg_reference, name):
    measure(benchmark, "query-pg-join", name, pg_contenders(JOIN_ROUND)[name](),
            pg_reference["query-pg-join"])


@pytest.mark.parametrize("name", PG_NAMES)
def test_pg_pk(benchmark, pg_reference, name):
    measure(benchmark, "query-pg-pk", name, pg_contenders(PK_ROUND)[name](),
            pg_reference["query-pg-pk"])


@pytest.mark.parametrize("name", list(REUSE))
def test_pg_reuse(benchmark, pg_reference, name):
    measure(benchmark, "query-pg-reuse", name, REUSE[name](), pg_reference["query-pg-reuse"])


@pytest.mark.parametrize("name", list(CACHE))
def test_result_cache(benchmark, pg_reference, name):
    measure(benchmark, "query-result-cache", name, CACHE[name](),
            pg_reference["query-result-cache"], queries=ZIPF_QUERIES)


@pytest.fixture(scope="module")
def mysql() -> Iterator[tuple[int, dict[str, Callable[[], object]]]]:
    """Tables on MariaDB, mariadbd pinned (restored at the end), the reference rounds."""
    MySQLdb = pytest.importorskip("MySQLdb")
    try:
        conn = MySQLdb.connect(**mysql_kwargs(MYSQL_URL))
    except MySQLdb.OperationalError as exc:
        pytest.skip(f"MariaDB not reachable at {MYSQL_URL!r}: {exc}")
    pid = mariadbd_pid()
    if pid is None:
        conn.close()
        pytest.skip("mariadbd is not a local process: cannot pin it or count its round trips")
    pins = MariaDBPins()
    cur = conn.cursor()
    try:
        cur.execute(_DROP)
        for sql in _MYSQL_TABLES:
            cur.execute(sql)
            cur.fetchall()
        pins.pin()
        yield pid, {"query-mysql-pk": _mysql_loop(conn, PK_ROUND),
                    "query-mysql-join": _mysql_loop(conn, JOIN_ROUND)}
    finally:
        pins.restore()
        cur.execute(_DROP)
        cur.close()
        conn.close()


@pytest.mark.parametrize("name", MYSQL_NAMES)
def test_mysql_pk(benchmark, mysql, name):
    pid, reference = mysql
    measure(benchmark, "query-mysql-pk", name, mysql_contenders(PK_ROUND, pid)[name](),
            reference["query-mysql-pk"], rounds=MYSQL_ROUNDS)


@pytest.mark.parametrize("name", MYSQL_NAMES)
def test_mysql_join(benchmark, mysql, name):
    pid, reference = mysql
    measure(benchmark, "query-mysql-join", name, mysql_contenders(JOIN_ROUND, pid)[name](),
            reference["query-mysql-join"], rounds=MYSQL_ROUNDS)


# ---- report ---------------------------------------------------------------------------


def report(paths: list[str]) -> None:
    """Print this module's tables from one or more runs' JSON (medians over the runs)."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    rows: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for b in run["benchmarks"]:
            if b["group"].startswith("query-"):
                e = b["extra_info"]
                rows[b["group"]][e["contender"]].append(
                    {**e, "us": b["stats"]["median"] / e["queries_per_round"] * 1e6,
                     "timed_queries": b["stats"]["rounds"] * e["queries_per_round"]})
    print(f"{len(runs)} run(s): " + ", ".join(r["datetime"][:16] for r in runs))

    def med(values: list[dict[str, Any]], *keys: str) -> float | None:
        found = []
        for v in values:
            for key in keys[:-1]:
                v = v.get(key) or {}
            if v.get(keys[-1]) is not None:
                found.append(v[keys[-1]])
        return statistics.median(found) if found else None

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for group in sorted(rows):
        contenders = rows[group]
        ratio = {n: 1 + (med(v, "paired_overhead_pct") or 0) / 100 for n, v in contenders.items()}
        print(f"\n{group}:\n")
        print("| contender | µs per query | paired ratio to raw (runs) | same-connection overhead "
              "| server round trips per query | statement reuse (timed / whole run) "
              "| evictions per query | result-cache hit rate (timed / whole run) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name in sorted(contenders, key=ratio.__getitem__):
            v = contenders[name]
            runs_ = ", ".join(f"{1 + x['paired_overhead_pct'] / 100:.3f}" for x in v
                              if "paired_overhead_pct" in x)
            same = med(v, "paired_same_conn_overhead_pct")
            reuse = med(v, "steady", "statements", "reuse_rate")
            reuse_all = med(v, "query_stats", "statements", "reuse_rate")
            reuses = "-" if reuse is None else f"{reuse:.1%} / {fmt(reuse_all, '.1%')}"
            evictions = med(v, "steady", "statements", "evictions")
            timed = med(v, "timed_queries")
            per_query = None if evictions is None or not timed else evictions / timed
            hit = med(v, "steady", "results", "hit_rate")
            hit_all = med(v, "query_stats", "results", "hit_rate")
            hits = "-" if hit is None else f"{hit:.1%} / {fmt(hit_all, '.1%')}"
            print(f"| {name} | {fmt(med(v, 'us'), ',.2f')} | {ratio[name]:.3f} ({runs_}) | "
                  f"{'-' if same is None else f'{same:+.1f}%'} | "
                  f"{fmt(med(v, 'server_round_trips_per_query'), '.2f')} | {reuses} | "
                  f"{fmt(per_query, '.2f')} | {hits} |")
            if "zipf_requests" in v[0]:
                print(f"|  | ({med(v, 'zipf_requests'):,.0f} Zipf requests in "
                      f"{med(v, 'zipf_seconds'):.1f} s, cache_ttl={CACHE_TTL:g}) | | | | | | |")


if __name__ == "__main__":
    report(sys.argv[1:])
