"""``fastpool bench --compare``: the bench workload through the peers installed.

After fastpool's own run, the same workload (threads, duration, max_size,
query) runs through every peer pool that is installed and fits the URL:

- threads: SQLAlchemy's ``QueuePool`` (over the raw DB-API connect, no
  engine: ``pool_size=max_size, max_overflow=0``), DBUtils' ``PooledDB``
  (``maxconnections=max_size``, blocking) and, on PostgreSQL,
  ``psycopg_pool.ConnectionPool``;
- ``--async``: on PostgreSQL, asyncpg's pool (``asyncpg.create_pool``) and
  ``psycopg_pool.AsyncConnectionPool``.

QueuePool and PooledDB get their connections from fastpool's own driver for
the URL (``fastpool.drivers.from_url(url).connect``: the same connection
settings as fastpool's); psycopg_pool and asyncpg connect to the URL
themselves. Each peer runs through the bench's own harness (the same worker
loop, progress bar and fairness measure, ``fastpool.cli._bench_steps``); its
acquire waits are timed around each acquisition by the harness and summarised
with the estimator fastpool's stats use (``fastpool.pool.stats.percentile``
over a log2 histogram). A peer whose package is missing is listed as ``not
installed`` with its pip name; one that does not fit the URL as ``n/a``.

The peers are imported inside functions: none of them is a dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import dataclasses
import importlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastpool.cli import _bench_steps, _database_url, _TaskWorkload, _Workload
from fastpool.drivers import from_url
from fastpool.pool.stats import percentile
from fastpool.steps import run, run_async

__all__ = ["PEERS", "Peer", "format_compare", "run_compare"]


@dataclasses.dataclass(frozen=True)
class Peer:
    """A pool to compare with: its name, the module it needs (and the pip
    package that installs it), the servers it speaks to and its mode."""

    name: str
    module: str
    pip: str
    servers: frozenset[str]
    mode: str  # "threads" or "asyncio"


ANY = frozenset({"sqlite", "postgresql", "mysql"})
PG = frozenset({"postgresql"})
PEERS = [
    Peer("SQLAlchemy QueuePool", "sqlalchemy.pool", "SQLAlchemy", ANY, "threads"),
    Peer("DBUtils PooledDB", "dbutils.pooled_db", "DBUtils", ANY, "threads"),
    Peer("psycopg_pool ConnectionPool", "psycopg_pool", "psycopg-pool", PG, "threads"),
    Peer("asyncpg pool", "asyncpg", "asyncpg", PG, "asyncio"),
    Peer("psycopg_pool AsyncConnectionPool", "psycopg_pool", "psycopg-pool", PG, "asyncio"),
]


def server_of(url: str) -> str:
    """The server a URL names: sqlite, postgresql or mysql (fastpool's schemes)."""
    base = url.partition(":")[0].lower().partition("+")[0]
    if base in ("postgresql", "postgres"):
        return "postgresql"
    if base in ("mysql", "mariadb"):
        return "mysql"
    return "sqlite"


def libpq_url(url: str) -> str:
    """``url`` without a ``+client`` in its scheme, for psycopg_pool and asyncpg."""
    scheme, sep, rest = url.partition(":")
    return scheme.partition("+")[0] + sep + rest


# ---- the harness's view of a peer: what _bench_steps asks of a pool -------

@dataclasses.dataclass(frozen=True)
class _WaitStats:
    """The part of ``PoolStats`` the bench reads, from the harness's timings."""

    acquire_wait_p50: float
    acquire_wait_p99: float
    acquire_wait_max: float
    acquisitions: int
    utilization: None = None  # a peer does not say how long its connections were held

    def as_dict(self) -> dict[str, Any]:
        return {"acquisitions": self.acquisitions, "acquire_wait_p50": self.acquire_wait_p50,
                "acquire_wait_p99": self.acquire_wait_p99,
                "acquire_wait_max": self.acquire_wait_max}


def wait_stats(waits: list[float]) -> _WaitStats:
    """p50/p99/max of acquire waits (seconds), by fastpool's log2-histogram estimator."""
    ns = [int(w * 1e9) for w in waits]
    buckets = [0] * 65
    for v in ns:
        buckets[min(max(v, 0).bit_length(), 64)] += 1
    top = max(ns, default=0)
    return _WaitStats(percentile(buckets, 0.50, top) / 1e9, percentile(buckets, 0.99, top) / 1e9,
                      top / 1e9, len(ns))


class _Harnessed:
    """A peer pool as ``_bench_steps`` and the workloads see a fastpool pool:
    ``connection()`` (threads) or ``fetch()`` (asyncio), ``wait``, ``stats``,
    ``driver.describe()`` and ``is_async``; each acquisition's wait is timed."""

    def __init__(self, name: str, is_async: bool) -> None:
        self.name = name
        self.is_async = is_async
        self.waits: list[float] = []
        self.driver = self

    def describe(self) -> str:
        return self.name

    def stats(self, reset: bool = False) -> _WaitStats:
        snap = wait_stats(self.waits)
        if reset:
            self.waits = []
        return snap


class _Lease:
    """``with peer.connection() as conn``: ``lease()`` makes the peer's context
    manager; the time to enter it is the acquire wait."""

    __slots__ = ("cm", "lease", "waits")

    def __init__(self, lease: Callable[[], Any], waits: list[float]) -> None:
        self.lease = lease
        self.waits = waits

    def __enter__(self) -> Any:
        start = time.perf_counter()
        self.cm = self.lease()
        conn = self.cm.__enter__()
        self.waits.append(time.perf_counter() - start)
        return conn

    def __exit__(self, *exc: Any) -> Any:
        return self.cm.__exit__(*exc)


class _SyncPeer(_Harnessed):
    def __init__(self, name: str, lease: Callable[[], Any], warm: Callable[[float], None]
                 ) -> None:
        super().__init__(name, is_async=False)
        self.lease = lease
        self.warm = warm

    def connection(self) -> _Lease:
        return _Lease(self.lease, self.waits)

    def wait(self, timeout: float) -> None:
        self.warm(timeout)


class _AsyncPeer(_Harnessed):
    """``fetch(query)``: acquire (timed), run the query, release."""

    def __init__(self, name: str, lease: Callable[[], Any], fetch: Callable[[Any, str], Any],
                 warm: Callable[[float], Any]) -> None:
        super().__init__(name, is_async=True)
        self.lease = lease
        self.run_query = fetch
        self.warm = warm

    async def fetch(self, query: str) -> Any:
        start = time.perf_counter()
        cm = self.lease()
        conn = await cm.__aenter__()
        self.waits.append(time.perf_counter() - start)
        try:
            rows = await self.run_query(conn, query)
        except BaseException as exc:
            if not await cm.__aexit__(type(exc), exc, exc.__traceback__):
                raise
            return None
        await cm.__aexit__(None, None, None)
        return rows

    async def wait(self, timeout: float) -> None:
        await self.warm(timeout)


# ---- the peers ---------------------------------------------------------------

def _warm_by_borrowing(acquire: Callable[[], Any], size: int) -> Callable[[float], None]:
    """Open ``size`` connections before the clock starts: borrow them all, give them back."""
    def warm(timeout: float) -> None:
        held = [acquire() for _ in range(size)]
        for conn in held:
            conn.close()
    return warm


@contextlib.contextmanager
def _queuepool(url: str, args: argparse.Namespace) -> Iterator[_SyncPeer]:
    from sqlalchemy.pool import QueuePool

    driver = from_url(url)
    pool = QueuePool(driver.connect, pool_size=args.max_size, max_overflow=0, timeout=30)
    try:
        yield _SyncPeer("SQLAlchemy QueuePool", lambda: contextlib.closing(pool.connect()),
                        _warm_by_borrowing(pool.connect, args.max_size))
    finally:
        pool.dispose()
        driver.close_pool()


@contextlib.contextmanager
def _pooled_db(url: str, args: argparse.Namespace) -> Iterator[_SyncPeer]:
    from dbutils.pooled_db import PooledDB  # type: ignore[import-untyped]

    driver = from_url(url)
    size = args.max_size
    pool = PooledDB(driver.connect, mincached=size, maxcached=size,
                    maxconnections=size, blocking=True)
    try:
        yield _SyncPeer("DBUtils PooledDB", lambda: contextlib.closing(pool.connection()),
                        _warm_by_borrowing(pool.connection, size))
    finally:
        pool.close()
        driver.close_pool()


@contextlib.contextmanager
def _psycopg_pool(url: str, args: argparse.Namespace) -> Iterator[_SyncPeer]:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(libpq_url(url), min_size=args.max_size, max_size=args.max_size,
                        open=True, name="bench-compare") as pool:
        yield _SyncPeer("psycopg_pool ConnectionPool", pool.connection,
                        lambda timeout: pool.wait(timeout=timeout))


@contextlib.asynccontextmanager
async def _asyncpg_pool(url: str, args: argparse.Namespace) -> Any:
    import asyncpg  # type: ignore[import-untyped]

    pool = await asyncpg.create_pool(libpq_url(url), min_size=args.max_size,
                                     max_size=args.max_size)
    try:
        async def fetch(conn: Any, query: str) -> Any:
            return await conn.fetch(query)

        async def warm(timeout: float) -> None:
            pass  # create_pool opened min_size connections

        yield _AsyncPeer("asyncpg pool", pool.acquire, fetch, warm)
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def _psycopg_async_pool(url: str, args: argparse.Namespace) -> Any:
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(libpq_url(url), min_size=args.max_size,
                                   max_size=args.max_size, open=False,
                                   name="bench-compare") as pool:
        async def fetch(conn: Any, query: str) -> Any:
            cur = await conn.execute(query)
            return await cur.fetchall()

        async def warm(timeout: float) -> None:
            await pool.wait(timeout=timeout)

        yield _AsyncPeer("psycopg_pool AsyncConnectionPool", pool.connection, fetch, warm)


_OPEN: dict[str, Callable[[str, argparse.Namespace], Any]] = {
    "SQLAlchemy QueuePool": _queuepool,
    "DBUtils PooledDB": _pooled_db,
    "psycopg_pool ConnectionPool": _psycopg_pool,
    "asyncpg pool": _asyncpg_pool,
    "psycopg_pool AsyncConnectionPool": _psycopg_async_pool,
}


def _installed(peer: Peer) -> bool:
    try:
        importlib.import_module(peer.module)
    except ImportError:
        return False
    return True


def _run_peer(peer: Peer, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """One peer through the bench's harness: the bench's result dict for it."""
    opened = _OPEN[peer.name]
    if peer.mode == "threads":
        with opened(url, args) as pool:
            work = _Workload(pool, args.threads, args.query)
            result: dict[str, Any] = run(_bench_steps(args, pool, work), work)
            return result

    async def bench() -> dict[str, Any]:
        async with opened(url, args) as pool:
            work = _TaskWorkload(pool, args.threads, args.query)
            result: dict[str, Any] = await run_async(_bench_steps(args, pool, work), work)
            return result

    if args.uvloop:
        import uvloop

        return uvloop.run(bench())
    return asyncio.run(bench())


def _row(name: str, r: dict[str, Any], base: float) -> dict[str, Any]:
    return {"pool": name, "status": "ok", "throughput": r["throughput"], "cycles": r["cycles"],
            "acquire_wait_p50": r["acquire_wait_p50"],
            "acquire_wait_p99": r["acquire_wait_p99"], "fairness": r["fairness"],
            "ratio": r["throughput"] / base if base else None}


def run_compare(args: argparse.Namespace, fastpool_result: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparison's rows: fastpool's (from its own run), then each peer of
    the mode: measured, ``not installed`` (with ``install``), ``n/a`` or
    ``error`` (with ``error``)."""
    mode = "asyncio" if args.use_async else "threads"
    base = fastpool_result["throughput"]
    rows = [_row("fastpool", fastpool_result, base)]
    with _database_url(args.url, "bench-compare") as url:
        server = server_of(url)
        one = copy.copy(args)
        for peer in PEERS:
            if peer.mode != mode:
                continue
            if server not in peer.servers:
                rows.append({"pool": peer.name, "status": "n/a",
                             "note": f"n/a for this URL ({' / '.join(sorted(peer.servers))} "
                                     "only)"})
                continue
            if not _installed(peer):
                rows.append({"pool": peer.name, "status": "not installed",
                             "install": f"pip install {peer.pip}",
                             "note": f"not installed (pip install {peer.pip})"})
                continue
            if args.progress != "never" and not args.json:
                print(f"fastpool bench --compare: {peer.name}, {args.threads} "
                      f"{'tasks' if args.use_async else 'threads'}, {args.duration:g} s ...",
                      file=sys.stderr, flush=True)
            try:
                rows.append(_row(peer.name, _run_peer(peer, url, one), base))
            except Exception as exc:  # a peer's failure is its row, not the command's
                message = "; ".join(s.strip() for s in str(exc).splitlines() if s.strip())
                rows.append({"pool": peer.name, "status": "error",
                             "error": f"{type(exc).__name__}: {message or repr(exc)}",
                             "note": f"error: {type(exc).__name__}: {message or repr(exc)}"})
    return rows


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def format_compare(rows: list[dict[str, Any]], result: dict[str, Any]) -> str:
    """The comparison as one table: a row per pool, the notes of those not run."""
    head = ("pool", "cycles/s", "wait p50 ms", "wait p99 ms", "fairness", "vs fastpool")
    lines = [head]
    notes = []
    for r in rows:
        if r["status"] != "ok":
            notes.append((r["pool"], r["note"]))
            continue
        fair = "inf" if r["fairness"] is None else f"{r['fairness']:.2f}"
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append((r["pool"], f"{r['throughput']:,.0f}", _ms(r["acquire_wait_p50"]),
                      _ms(r["acquire_wait_p99"]), fair, ratio))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    widths[0] = max([widths[0], *(len(name) for name, _ in notes)])
    text = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
            for line in lines]
    text += [f"{name:<{widths[0]}}  {note}" for name, note in notes]
    rule = "-" * max(len(line) for line in text)
    unit = "tasks" if result["mode"] == "asyncio" else "threads"
    title = (f"fastpool bench --compare: {result['threads']} {unit}, max_size "
             f"{result['max_size']}, {result['query']!r}, {result['duration']:.1f} s per pool")
    note = ("fairness: max/min cycles per worker (1.00 = even, inf: a worker never got a "
            "connection); vs fastpool: throughput / fastpool's")
    return "\n".join([title, rule, text[0], rule, *text[1:], rule, note])
