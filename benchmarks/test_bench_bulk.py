"""Bulk loads: ``fastpool.writes.bulk`` against the best a user would write by hand.

PostgreSQL (group ``bulk-pg``): ``PG_ROWS`` (1,000,000) rows of (bigint, text,
double precision, timestamptz) from a generator into an UNLOGGED table,
TRUNCATEd before every round, over TCP to 127.0.0.1:

- ``generate``: only iterating the generator (every contender pays it);
- ``fastpool``: ``bulk.copy_rows(pool, ...)`` (compiled encoder, binary COPY);
- ``fastpool_python``: the same with its pure-Python twin encoder
  (``FASTPOOL_IMPL=python``);
- ``psycopg_binary``: ``cur.copy("COPY ... (FORMAT BINARY)")``, ``set_types``
  and ``write_row`` per row, in a transaction;
- ``psycopg_text``: the same in text format (no ``set_types`` needed);
- ``asyncpg``: ``conn.copy_records_to_table(table, records=generator)``.

MariaDB (group ``bulk-mysql``): ``MYSQL_ROWS`` (200,000, to keep runs short)
rows of the same shape (a naive datetime: MySQL's DATETIME has no time zone)
into an InnoDB table: ``fastpool``, ``fastpool_python``, mysqlclient's
``executemany`` (it rewrites the INSERT into multi-row statements of up to
64 KiB) and ``multirow_2000``, hand-made multi-row INSERTs of 2,000 rows
built with ``conn.literal``.

The machine is noisy (2 vCPUs shared by the client and the server, which both
work during a load; their speed drifts by 2x within minutes), so besides one
pytest-benchmark entry per contender, ``test_*_interleaved`` runs the main
contenders round-robin, rotating the order each round, and records in
extra_info each one's median time and the median over rounds of the per-round
ratio of fastpool's throughput to its own (``t_contender / t_fastpool``: above
1 fastpool is faster): that ratio is the number to quote. Nothing is pinned: a
load keeps the client and the server busy at once.

``test_*_memory`` runs each contender once in a fresh subprocess (after a
small warm-up load) and records the growth of its peak RSS (VmHWM in
/proc/self/status), so that one contender cannot pollute another's number.

Run under the benchmark lock (benchmarks are not tests; nothing asserts time)::

    flock /tmp/fastpool-bench.lock python3 -m pytest benchmarks/test_bench_bulk.py \\
        --benchmark-json=bulk-1.json
    python3 benchmarks/test_bench_bulk.py bulk-1.json        # the tables of BENCHMARKS.md
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import pytest

PG_URL = os.environ.get("FASTPOOL_PG_TCP_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("FASTPOOL_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
PG_ROWS = int(os.environ.get("FASTPOOL_BENCH_PG_ROWS", "1000000"))
MYSQL_ROWS = int(os.environ.get("FASTPOOL_BENCH_MYSQL_ROWS", "200000"))
ROUNDS = 3  # per contender, standalone
INTERLEAVED_ROUNDS = 5
TABLE = "fp_bulk_bench"
COLUMNS = ["id", "name", "score", "at"]
PG_TYPES = ["int8", "text", "float8", "timestamptz"]
SECOND = dt.timedelta(seconds=1)


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


def pg_rows(n: int) -> Iterator[tuple[Any, ...]]:
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    for i in range(n):
        yield (i, f"name-{i}", i * 0.25, base + i * SECOND)


def mysql_rows(n: int) -> Iterator[tuple[Any, ...]]:
    base = dt.datetime(2024, 1, 1)
    for i in range(n):
        yield (i, f"name-{i}", i * 0.25, base + i * SECOND)


@contextlib.contextmanager
def impl(name: str) -> Iterator[None]:
    """FASTPOOL_IMPL for the encoder (read at each load)."""
    old = os.environ.get("FASTPOOL_IMPL")
    os.environ["FASTPOOL_IMPL"] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ["FASTPOOL_IMPL"]
        else:
            os.environ["FASTPOOL_IMPL"] = old


def _with_table(execute: Callable[[str], Any], close_admin: Callable[[], Any], ddl: str,
                make: Callable[[], C]) -> Iterator[C]:
    """The body of a contenders fixture: (re)create TABLE with ``ddl`` through
    ``execute``, yield ``make()``; then close it, drop TABLE, ``close_admin()``."""
    execute(f"DROP TABLE IF EXISTS {TABLE}")
    execute(ddl)
    contenders = make()
    try:
        yield contenders
    finally:
        contenders.close()
        execute(f"DROP TABLE IF EXISTS {TABLE}")
        close_admin()


def _standalone(benchmark: Any, group: str, contenders: Any, contender: str) -> None:
    """One pytest-benchmark entry: ``contender`` loads ``contenders.n`` rows into
    the TRUNCATEd table, ROUNDS times; then check they all arrived."""
    benchmark.group = group
    benchmark.extra_info.update(contender=contender, rows=contenders.n)
    benchmark.pedantic(getattr(contenders, contender), setup=contenders.truncate, rounds=ROUNDS,
                       iterations=1)
    if contender != "generate":
        assert contenders.count() == contenders.n


# ---- PostgreSQL -------------------------------------------------------------------


class PgContenders:
    """One connection per contender, opened once; each method loads ``n`` rows."""

    def __init__(self, n: int) -> None:
        import asyncpg
        import psycopg

        import fastpool

        self.n = n
        self.admin = psycopg.connect(PG_URL, autocommit=True)
        self.conn = psycopg.connect(PG_URL)
        self.pool = fastpool.create_pool(PG_URL, min_size=1, max_size=1)
        self.pool.wait()
        self.loop = asyncio.new_event_loop()
        self.apg = self.loop.run_until_complete(asyncpg.connect(PG_URL))

    def close(self) -> None:
        self.loop.run_until_complete(self.apg.close())
        self.loop.close()
        self.pool.close()
        self.conn.close()
        self.admin.close()

    def truncate(self) -> None:
        self.admin.execute(f"TRUNCATE {TABLE}")

    def count(self) -> int:
        return int(self.admin.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])

    def generate(self) -> None:
        for _ in pg_rows(self.n):
            pass

    def fastpool(self) -> None:
        from fastpool.writes import bulk

        with impl("c"):
            bulk.copy_rows(self.pool, TABLE, COLUMNS, pg_rows(self.n))

    def fastpool_python(self) -> None:
        from fastpool.writes import bulk

        with impl("python"):
            bulk.copy_rows(self.pool, TABLE, COLUMNS, pg_rows(self.n))

    def psycopg_binary(self) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur, cur.copy(
                f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(PG_TYPES)
            for row in pg_rows(self.n):
                copy.write_row(row)

    def psycopg_text(self) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur, cur.copy(
                f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in pg_rows(self.n):
                copy.write_row(row)

    def asyncpg(self) -> None:
        self.loop.run_until_complete(
            self.apg.copy_records_to_table(TABLE, records=pg_rows(self.n), columns=COLUMNS))


PG_CONTENDERS = ["generate", "fastpool", "fastpool_python", "psycopg_binary", "psycopg_text",
                 "asyncpg"]
PG_INTERLEAVED = ["fastpool", "psycopg_binary", "asyncpg", "psycopg_text"]


@pytest.fixture(scope="module")
def pg() -> Iterator[PgContenders]:
    psycopg = pytest.importorskip("psycopg")
    pytest.importorskip("asyncpg")
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL!r}: {exc}")
    yield from _with_table(admin.execute, admin.close,
                           f"CREATE UNLOGGED TABLE {TABLE} (id bigint, name text, "
                           "score double precision, at timestamptz)",
                           lambda: PgContenders(PG_ROWS))


@pytest.mark.parametrize("contender", PG_CONTENDERS)
def test_pg(benchmark: Any, pg: PgContenders, contender: str) -> None:
    _standalone(benchmark, "bulk-pg", pg, contender)


def _interleave(benchmark: Any, contenders: Any, names: list[str], rounds: int) -> None:
    """Run ``names`` round-robin (rotating who goes first) and record each
    one's median seconds and the median over rounds of fastpool's throughput
    relative to it (``t_contender / t_fastpool``)."""
    times: dict[str, list[float]] = defaultdict(list)
    turn = [0]

    def one_round() -> None:
        k = turn[0] % len(names)
        turn[0] += 1
        for name in names[k:] + names[:k]:
            contenders.truncate()
            t0 = time.perf_counter()
            getattr(contenders, name)()
            times[name].append(time.perf_counter() - t0)

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    rows = contenders.n
    benchmark.extra_info["rows"] = rows
    benchmark.extra_info["median_s"] = {k: statistics.median(v) for k, v in times.items()}
    benchmark.extra_info["rows_per_s"] = {k: rows / statistics.median(v)
                                          for k, v in times.items()}
    benchmark.extra_info["fastpool_speedup"] = {
        k: statistics.median(t / f for f, t in zip(times["fastpool"], v, strict=True))
        for k, v in times.items()}


def test_pg_interleaved(benchmark: Any, pg: PgContenders) -> None:
    benchmark.group = "bulk-pg-interleaved"
    _interleave(benchmark, pg, PG_INTERLEAVED, INTERLEAVED_ROUNDS)


# ---- MariaDB ----------------------------------------------------------------------


class MySQLContenders:
    def __init__(self, n: int) -> None:
        import fastpool
        from fastpool.drivers import from_url

        self.n = n
        driver = from_url(MYSQL_URL)
        self.admin = from_url(MYSQL_URL, autocommit=True).connect()
        self.conn = driver.connect()
        self.pool = fastpool.create_pool(MYSQL_URL, min_size=1, max_size=1)
        self.pool.wait()

    def close(self) -> None:
        self.pool.close()
        self.conn.close()
        self.admin.close()

    def _run(self, sql: str) -> Any:
        cur = self.admin.cursor()
        cur.execute(sql)
        rows = cur.fetchall()
        cur.close()
        return rows

    def truncate(self) -> None:
        self._run(f"TRUNCATE {TABLE}")

    def count(self) -> int:
        return int(self._run(f"SELECT count(*) FROM {TABLE}")[0][0])

    def generate(self) -> None:
        for _ in mysql_rows(self.n):
            pass

    def fastpool(self) -> None:
        from fastpool.writes import bulk

        with impl("c"):
            bulk.copy_rows(self.pool, TABLE, COLUMNS, mysql_rows(self.n))

    def fastpool_python(self) -> None:
        from fastpool.writes import bulk

        with impl("python"):
            bulk.copy_rows(self.pool, TABLE, COLUMNS, mysql_rows(self.n))

    def executemany(self) -> None:
        cur = self.conn.cursor()
        cur.executemany(f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES (%s, %s, %s, %s)",
                        mysql_rows(self.n))
        cur.close()
        self.conn.commit()

    def multirow_2000(self) -> None:
        cur = self.conn.cursor()
        head = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ".encode()
        literal = self.conn.literal
        chunk: list[bytes] = []
        for row in mysql_rows(self.n):
            chunk.append(literal(row))
            if len(chunk) == 2000:
                cur.execute(head + b",".join(chunk))
                chunk = []
        if chunk:
            cur.execute(head + b",".join(chunk))
        cur.close()
        self.conn.commit()


MYSQL_CONTENDERS = ["generate", "fastpool", "fastpool_python", "executemany", "multirow_2000"]
MYSQL_INTERLEAVED = ["fastpool", "executemany", "multirow_2000"]


@pytest.fixture(scope="module")
def my() -> Iterator[MySQLContenders]:
    mysqldb = pytest.importorskip("MySQLdb")
    from fastpool.drivers import from_url

    try:
        admin = from_url(MYSQL_URL, autocommit=True).connect()
    except mysqldb.OperationalError as exc:
        pytest.skip(f"MariaDB not reachable at {MYSQL_URL!r}: {exc}")
    yield from _with_table(admin.cursor().execute, admin.close,
                           f"CREATE TABLE {TABLE} (id bigint, name text, score double, "
                           "at datetime(6)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                           lambda: MySQLContenders(MYSQL_ROWS))


@pytest.mark.parametrize("contender", MYSQL_CONTENDERS)
def test_mysql(benchmark: Any, my: MySQLContenders, contender: str) -> None:
    _standalone(benchmark, "bulk-mysql", my, contender)


def test_mysql_interleaved(benchmark: Any, my: MySQLContenders) -> None:
    benchmark.group = "bulk-mysql-interleaved"
    _interleave(benchmark, my, MYSQL_INTERLEAVED, INTERLEAVED_ROUNDS)


# ---- memory -----------------------------------------------------------------------

WARMUP_ROWS = 20_000


def _hwm_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def measure_memory(kind: str, contender: str) -> dict[str, int]:
    """In a fresh process: warm up with a small load, then the full one; the
    growth of the peak RSS over the full load, in kB."""
    cls: Any = PgContenders if kind == "pg" else MySQLContenders
    rows = PG_ROWS if kind == "pg" else MYSQL_ROWS
    contenders = cls(WARMUP_ROWS)
    try:
        contenders.truncate()
        getattr(contenders, contender)()
        contenders.truncate()
        contenders.n = rows
        before = _hwm_kb()
        getattr(contenders, contender)()
        growth = _hwm_kb() - before
        loaded = contenders.count()
        contenders.truncate()
    finally:
        contenders.close()
    return {"growth_kb": growth, "rows": loaded}


def _memory(benchmark: Any, kind: str, contenders: list[str]) -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = {}

    def run_all() -> None:
        for name in contenders:
            code = ("import json, sys; sys.path.insert(0, 'benchmarks'); "
                    "import test_bench_bulk as b; "
                    f"print(json.dumps(b.measure_memory({kind!r}, {name!r})))")
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  cwd=root, timeout=600, check=True)
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    benchmark.extra_info["peak_rss_growth_kb"] = {k: v["growth_kb"] for k, v in results.items()}
    benchmark.extra_info["rows"] = {k: v["rows"] for k, v in results.items()}


def test_pg_memory(benchmark: Any, pg: PgContenders) -> None:
    benchmark.group = "bulk-pg-memory"
    _memory(benchmark, "pg", [c for c in PG_CONTENDERS if c not in ("generate",)])


def test_mysql_memory(benchmark: Any, my: MySQLContenders) -> None:
    benchmark.group = "bulk-mysql-memory"
    _memory(benchmark, "mysql", [c for c in MYSQL_CONTENDERS if c not in ("generate",)])


# ---- report -----------------------------------------------------------------------


def report(paths: list[str]) -> None:
    """Print the BENCHMARKS.md tables from pytest-benchmark JSON files (medians
    over the files where there are several)."""
    standalone: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    interleaved: dict[str, list[dict[str, Any]]] = defaultdict(list)
    memory: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        with open(path) as f:
            run = json.load(f)
        for b in run["benchmarks"]:
            group, extra = b["group"], b.get("extra_info", {})
            if group in ("bulk-pg", "bulk-mysql"):
                standalone[group][extra["contender"]].append(b["stats"]["median"])
            elif group.endswith("-interleaved"):
                interleaved[group].append(extra)
            elif group.endswith("-memory"):
                for name, kb in extra["peak_rss_growth_kb"].items():
                    memory[group][name].append(kb)
    for group, contenders in sorted(standalone.items()):
        rows = PG_ROWS if group == "bulk-pg" else MYSQL_ROWS
        fast = statistics.median(contenders["fastpool"])
        print(f"\n{group} (standalone rounds, {rows:,} rows):\n")
        print("| contender | median s | rows/s | fastpool's throughput / contender's |")
        print("|---|---:|---:|---:|")
        for name, times in sorted(contenders.items(), key=lambda kv: statistics.median(kv[1])):
            med = statistics.median(times)
            print(f"| {name} | {med:.3f} | {rows / med:,.0f} | {med / fast:.2f} |")
    for group, runs in sorted(interleaved.items()):
        print(f"\n{group} ({INTERLEAVED_ROUNDS} interleaved rounds x {len(runs)} run(s), "
              f"{runs[0]['rows']:,} rows):\n")
        print("| contender | median s | rows/s | fastpool's throughput / contender's "
              "(median of per-round ratios) |")
        print("|---|---:|---:|---:|")
        names = sorted(runs[0]["median_s"], key=runs[0]["median_s"].__getitem__)
        for name in names:
            med = statistics.median(r["median_s"][name] for r in runs)
            ratio = statistics.median(r["fastpool_speedup"][name] for r in runs)
            print(f"| {name} | {med:.3f} | {runs[0]['rows'] / med:,.0f} | {ratio:.2f} |")
    for group, contenders in sorted(memory.items()):
        print(f"\n{group} (peak RSS growth over the load, fresh process each):\n")
        print("| contender | MB |")
        print("|---|---:|")
        for name, kbs in contenders.items():
            print(f"| {name} | {statistics.median(kbs) / 1024:.1f} |")


if __name__ == "__main__":
    report(sys.argv[1:])
