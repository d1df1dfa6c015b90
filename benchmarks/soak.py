"""Soak: a mixed workload for a set time against PostgreSQL, MariaDB and SQLite,
recording once a minute what would grow if anything leaked.

    python benchmarks/soak.py --minutes 3            # CI
    python benchmarks/soak.py --minutes 30 --json soak.json

On each backend, at once: a sync pool (threads running query helpers,
``with pool.connection()`` blocks and ``pool.transaction``; a batcher fed by
several threads; small bulk loads; result-cache reads; acquires with random
short timeouts; a periodic ``drain()``; a borrower that drops a connection
without releasing it every few seconds) and an asyncio pool (tasks doing the
same kinds of work, random ``asyncio.wait_for`` timeouts that cancel them
mid-statement, tasks cancelled while holding a connection they never release).

Recorded every ``--every`` seconds (60): the process's RSS, open file
descriptors and threads; the servers' sessions of this run
(``pg_stat_activity`` by application_name, the MariaDB process list by
database); each pool's open and in-use connections. At the end it prints the
least-squares slope of each (after the first sample: pools fill up in the
first minute) and passes when none grows beyond a noise allowance.

Correctness, also checked at the end:

* every write acknowledged (helper returned, transaction committed, batcher
  result, bulk load count) is in the table, and nothing beyond the writes whose
  outcome is unknown (cancelled or failed in flight);
* no connection was lent to two borrowers at once: each borrower asks the
  server for its session id (``pg_backend_pid()``, ``CONNECTION_ID()``; the
  connection object for SQLite) and registers it while it holds it;
* once the workload stops, the dropped connections come back (``reclaimed``),
  nothing is in use, and closing the pools leaves no server session behind.

Exit status 0 on pass, 1 on fail. DSNs: FASTPOOL_PG_DSN, FASTPOOL_MYSQL_DSN
(the tests' defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from typing import Any

import fastpool
from fastpool.errors import PoolClosed, PoolTimeout, TooManyWaiting
from fastpool.pool.policy import PoolPolicy

PG_URL = os.environ.get("FASTPOOL_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("FASTPOOL_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
# Names of this run's own: two soaks at once (a CI run beside a long one) must not
# share a table or count each other's sessions.
RUN = f"{os.getpid()}"
APP = f"fastpool-soak-{RUN}"
MYSQL_DB = f"fastpool_soak_{RUN}"
TABLE = f"fp_soak_rows_{RUN}"
POOL_SIZE = 4
NOT_STARTED = (PoolTimeout, TooManyWaiting)  # nothing was sent: not written

logger = logging.getLogger("fastpool.soak")
_ids = itertools.count(1)


def _mysql_url(db: str) -> str:
    base, _, _ = MYSQL_URL.rpartition("/")
    return f"{base}/{db}"


class Backend:
    """One database: its pools, what was written, who holds which session."""

    def __init__(self, kind: str, url: str, async_url: str, ph: str,
                 pool_options: dict[str, Any]) -> None:
        self.kind = kind
        self.url = url
        self.async_url = async_url
        self.ph = ph
        self.pool_options = pool_options
        self.pool: Any = None
        self.apool: Any = None
        self.lock = threading.Lock()
        self.acked = 0
        self.unknown = 0
        self.ops = 0
        self.errors: dict[str, int] = {}
        self.holders: dict[Any, str] = {}
        self.violations: list[str] = []
        self.reclaimed = 0

    def insert_sql(self, n: int = 1) -> str:
        one = f"({self.ph}, {self.ph}, {self.ph})"
        return f"INSERT INTO {TABLE} (id, kind, n) VALUES " + ", ".join([one] * n)

    def ack(self, n: int) -> None:
        with self.lock:
            self.acked += n

    def failed(self, exc: BaseException, writes: int) -> None:
        """A write that raised: not written if nothing was sent, else unknown."""
        name = type(exc).__name__
        with self.lock:
            self.errors[name] = self.errors.get(name, 0) + 1
            if not isinstance(exc, NOT_STARTED):
                self.unknown += writes

    def session_sql(self) -> str | None:
        return {"postgresql": "SELECT pg_backend_pid()",
                "mysql": "SELECT CONNECTION_ID()"}.get(self.kind)

    def hold(self, session: Any, who: str) -> None:
        with self.lock:
            other = self.holders.get(session)
            if other is not None:
                self.violations.append(f"session {session} lent to {who} while {other} "
                                       "held it")
            self.holders[session] = who

    def let_go(self, session: Any) -> None:
        with self.lock:
            self.holders.pop(session, None)


# ---- the sync workload ---------------------------------------------------------

def _session(b: Backend, conn: Any) -> Any:
    sql = b.session_sql()
    if sql is None:
        return ("sqlite", id(conn))
    return b.pool.fetchval(sql, conn=conn)


def _checked_block(b: Backend, who: str) -> None:
    """``with pool.connection()``: register the session, read, write, commit."""
    with b.pool.connection(timeout=2.0) as conn:
        sid = _session(b, conn)
        b.hold(sid, who)
        try:
            b.pool.fetchval(f"SELECT count(*) FROM {TABLE} WHERE id < {b.ph}", (10,), conn=conn)
            b.pool.execute(b.insert_sql(), (next(_ids), "block", 1), conn=conn)
        finally:
            b.let_go(sid)
    b.ack(1)


def _transaction(b: Backend, who: str) -> None:
    ids = (next(_ids), next(_ids))

    def work(conn: Any) -> None:
        sid = _session(b, conn)
        b.hold(sid, who)
        try:
            b.pool.execute(b.insert_sql(2), (ids[0], "tx", 2, ids[1], "tx", 2), conn=conn)
        finally:
            b.let_go(sid)

    b.pool.transaction(work)
    b.ack(2)


def _helper_write(b: Backend, who: str) -> None:
    b.ack(b.pool.execute(b.insert_sql(), (next(_ids), "helper", 1)))


def _cached_read(b: Backend, who: str) -> None:
    key = random.randrange(20)
    b.pool.fetch(f"SELECT {b.ph} AS k, count(*) FROM {TABLE} WHERE id < 100",
                 (key,), cache_ttl=2.0)


def _short_acquire(b: Backend, who: str) -> None:
    """An acquire with a random short timeout (often a PoolTimeout)."""
    conn = b.pool.acquire(timeout=random.choice((0.0005, 0.002, 0.01)))
    try:
        sid = _session(b, conn)
        b.hold(sid, who)
        b.let_go(sid)
    finally:
        b.pool.release(conn)


SYNC_OPS: list[tuple[Callable[[Backend, str], None], int, int]] = [
    # (operation, weight, writes it makes)
    (_checked_block, 3, 1),
    (_transaction, 2, 2),
    (_helper_write, 3, 1),
    (_cached_read, 4, 0),
    (_short_acquire, 1, 0),
]


def worker(b: Backend, stop: threading.Event, who: str) -> None:
    ops = [op for op in SYNC_OPS for _ in range(op[1])]
    while not stop.is_set():
        fn, _, writes = random.choice(ops)
        try:
            fn(b, who)
        except (PoolClosed, fastpool.errors.ConnectError):
            return
        except Exception as exc:
            b.failed(exc, writes)
        with b.lock:
            b.ops += 1
        time.sleep(random.uniform(0.0, 0.004))


def batch_writer(b: Backend, batcher: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            result = batcher.execute(b.insert_sql(), (next(_ids), "batch", 1))
            b.ack(result.rowcount)
        except Exception as exc:
            b.failed(exc, 1)
        time.sleep(random.uniform(0.0, 0.004))


def bulk_loader(b: Backend, stop: threading.Event) -> None:
    while not stop.wait(random.uniform(1.0, 3.0)):
        rows = [(next(_ids), "bulk", 50) for _ in range(50)]
        try:
            b.ack(b.pool.copy_rows(TABLE, ["id", "kind", "n"], rows))
        except Exception as exc:
            b.failed(exc, 50)


def leaker(b: Backend, stop: threading.Event) -> None:
    """Every few seconds a borrower that returns without releasing."""
    while not stop.wait(random.uniform(2.0, 8.0)):
        try:
            conn = b.pool.acquire(timeout=2.0)
        except Exception as exc:
            b.failed(exc, 0)
            continue
        try:
            sid = _session(b, conn)
            b.hold(sid, "leaker")
            b.let_go(sid)  # it lets go of the connection, without a release()
        except Exception as exc:
            b.failed(exc, 0)
        del conn


def drainer(b: Backend, stop: threading.Event) -> None:
    while not stop.wait(random.uniform(15.0, 30.0)):
        b.pool.drain()


# ---- the asyncio workload -------------------------------------------------------

async def _a_session(b: Backend, conn: Any) -> Any:
    sql = b.session_sql()
    if sql is None:
        return ("aiosqlite", id(conn))
    return await b.apool.fetchval(sql, conn=conn)


async def _a_block(b: Backend, who: str) -> None:
    async with b.apool.connection(timeout=2.0) as conn:
        sid = await _a_session(b, conn)
        b.hold(sid, who)
        try:
            await b.apool.execute(b.insert_sql(), (next(_ids), "ablock", 1), conn=conn)
        finally:
            b.let_go(sid)
    b.ack(1)


async def _a_helper(b: Backend, who: str) -> None:
    b.ack(await b.apool.execute(b.insert_sql(), (next(_ids), "ahelper", 1)))


async def _a_read(b: Backend, who: str) -> None:
    await b.apool.fetch(f"SELECT {b.ph} AS k, count(*) FROM {TABLE} WHERE id < 100",
                        (random.randrange(20),), cache_ttl=2.0)


ASYNC_OPS = [(_a_block, 1), (_a_helper, 1), (_a_read, 0)]


async def a_worker(b: Backend, stop: threading.Event, who: str) -> None:
    while not stop.is_set():
        fn, writes = random.choice(ASYNC_OPS)
        # Now and then a timeout short enough to cancel the work mid-statement.
        limit = random.choice((0.002, 0.02)) if random.random() < 0.15 else 5.0
        try:
            await asyncio.wait_for(fn(b, who), limit)
        except (PoolClosed, fastpool.errors.ConnectError):
            return
        except Exception as exc:  # TimeoutError included: cancelled in flight
            b.failed(exc, writes)
        with b.lock:
            b.ops += 1
        await asyncio.sleep(random.uniform(0.0, 0.004))


async def a_leaker(b: Backend, stop: threading.Event) -> None:
    """Tasks cancelled while holding a connection they never release."""
    async def victim(ready: asyncio.Event) -> None:
        conn = await b.apool.acquire(timeout=2.0)
        sid = await _a_session(b, conn)
        b.hold(sid, "a-leaker")
        b.let_go(sid)
        ready.set()
        await asyncio.sleep(3600)

    while not stop.is_set():
        await asyncio.sleep(random.uniform(2.0, 8.0))
        ready = asyncio.Event()
        task = asyncio.ensure_future(victim(ready))
        try:
            await asyncio.wait_for(ready.wait(), 3.0)
        except Exception as exc:
            b.failed(exc, 0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        del task


async def a_drainer(b: Backend, stop: threading.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(random.uniform(15.0, 30.0))
        if not stop.is_set():
            await b.apool.drain()


def async_main(backends: list[Backend], stop: threading.Event,
               started: threading.Event, failure: list[BaseException]) -> None:
    async def main() -> None:
        try:
            for b in backends:
                b.apool = await fastpool.create_async_pool(
                    b.async_url, max_size=POOL_SIZE, min_size=POOL_SIZE, timeout=2.0,
                    result_cache_entries=200, name=f"soak-{b.kind}-async",
                    track_holders=True, **b.pool_options)
        except BaseException as exc:
            failure.append(exc)
            started.set()
            raise
        started.set()
        tasks = []
        for b in backends:
            tasks += [asyncio.ensure_future(a_worker(b, stop, f"{b.kind}-task-{i}"))
                      for i in range(6)]
            tasks.append(asyncio.ensure_future(a_leaker(b, stop)))
            tasks.append(asyncio.ensure_future(a_drainer(b, stop)))
        while not stop.is_set():
            await asyncio.sleep(0.2)
        await asyncio.gather(*tasks, return_exceptions=True)
        await _settle([b.apool for b in backends])
        for b in backends:
            check_pool(b.apool, b)
            await b.apool.close()

    asyncio.run(main())


# ---- recording ---------------------------------------------------------------------

def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def os_threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return threading.active_count()


class Sessions:
    """Counts the servers' sessions of this run, on connections of its own."""

    def __init__(self, kinds: set[str]) -> None:
        self.kinds = kinds
        self.conns: dict[str, Any] = {}

    def _connect(self, kind: str) -> Any:
        if kind == "postgresql":
            import psycopg
            return psycopg.connect(PG_URL, autocommit=True,
                                   application_name="fastpool-soak-admin")
        return fastpool.drivers.from_url(MYSQL_URL, autocommit=True).connect()

    def _count(self, kind: str) -> int:
        conn = self.conns.get(kind)
        if conn is None:
            conn = self.conns[kind] = self._connect(kind)
        cur = conn.cursor()
        try:
            if kind == "postgresql":
                cur.execute("SELECT count(*) FROM pg_stat_activity "
                            "WHERE application_name = %s", (APP,))
            else:
                cur.execute("SELECT count(*) FROM information_schema.processlist "
                            "WHERE db = %s", (MYSQL_DB,))
            return int(cur.fetchone()[0])
        finally:
            cur.close()

    def count(self) -> dict[str, int]:
        """Sessions per server; a server that went away (restarted by someone
        else) is asked again on a new connection, and left out if still down."""
        out = {}
        for kind in sorted(self.kinds & {"postgresql", "mysql"}):
            for _ in range(2):
                try:
                    out[kind] = self._count(kind)
                    break
                except Exception as exc:
                    print(f"  ({kind} sessions not read: {type(exc).__name__}: {exc})",
                          flush=True)
                    with contextlib.suppress(Exception):
                        self.conns.pop(kind).close()
        return out

    def close(self) -> None:
        for conn in self.conns.values():
            with contextlib.suppress(Exception):
                conn.close()


def sample(t0: float, backends: list[Backend], sessions: Sessions) -> dict[str, Any]:
    row: dict[str, Any] = {"minute": round((time.monotonic() - t0) / 60, 2),
                           "rss_mb": round(rss_mb(), 1),
                           "fds": len(os.listdir("/proc/self/fd")),
                           "threads": os_threads()}
    for kind, n in sessions.count().items():
        row[f"{kind}.sessions"] = n
    for b in backends:
        for label, pool in (("sync", b.pool), ("async", b.apool)):
            if pool is not None:
                s = pool.stats()
                row[f"{b.kind}.{label}.open"] = s.open
                row[f"{b.kind}.{label}.in_use"] = s.in_use
    return row


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per minute)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


#: Growth over the run (slope x minutes) allowed as noise, per metric.
ALLOWED = {"rss_mb": 12.0, "fds": 4, "threads": 3, "sessions": 3, "open": 2}


def allowance(metric: str) -> float | None:
    """What growth is noise for ``metric``; None: not judged (in_use moves)."""
    last = metric.rsplit(".", 1)[-1]
    return ALLOWED.get(last)


# ---- the run -------------------------------------------------------------------------

def _settle(pools: list[Any]) -> Any:
    """Wait until what was dropped has been reclaimed (a coroutine for async pools).

    First a full collection, as Python's cyclic collector would run sooner or
    later: a connection dropped by its last borrower but still referred to
    from garbage in a reference cycle (an exception's traceback kept alive by
    a cycle, e.g. through ``asyncio.wait_for``'s task on Python 3.11, holding
    the frames of an earlier borrower) can only be reclaimed once that garbage
    is freed (see the README's "Leaks")."""
    import gc
    gc.collect()
    wait = (PoolPolicy.RECLAIM_AFTER or 0) + 3 * PoolPolicy.MAINTENANCE_INTERVAL + 2

    async def later() -> None:
        deadline = time.monotonic() + wait
        while any(p.stats().in_use for p in pools) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    if pools and pools[0].is_async:
        return later()
    deadline = time.monotonic() + wait
    while any(p.stats().in_use for p in pools) and time.monotonic() < deadline:
        time.sleep(0.1)
    return None


def check_pool(pool: Any, b: Backend) -> None:
    s = pool.stats()
    if s.in_use:
        b.violations.append(f"{pool.name}: {s.in_use} connection(s) still in use at the end: "
                            f"{_who_holds(pool)}")
    if s.acquisitions != s.releases + s.in_use or s.opened != s.closed_total + s.open:
        b.violations.append(f"{pool.name}: accounting off: {s}")
    b.reclaimed += s.reclaimed


def _who_holds(pool: Any) -> list[str]:
    """What refers to the connections still lent (to tell a real holder from a miss)."""
    import gc
    out = []
    conn = None
    for conn, held, site in pool._holders():
        refs = []
        for r in gc.get_referrers(conn):
            if isinstance(r, types.FrameType):
                # Which function holds it, and whether that frame is a live
                # coroutine's (suspended) or kept by a traceback.
                owners = sorted({type(o).__name__ for o in gc.get_referrers(r)
                                 if not isinstance(o, (list, dict))})
                refs.append(f"frame {r.f_code.co_name} "
                            f"({os.path.basename(r.f_code.co_filename)}:{r.f_lineno}) "
                            f"of {owners}")
            else:
                refs.append(type(r).__name__)
        out.append(f"{conn!r} held {held / 1e9:.1f} s, acquired at {site!r}, referrers {refs}")
        frames = {id(r) for r in gc.get_referrers(conn) if isinstance(r, types.FrameType)}
        errors = [o for o in gc.get_objects() if isinstance(o, BaseException)]
        for exc in errors:
            tb = exc.__traceback__
            while tb is not None:
                if id(tb.tb_frame) in frames:
                    holders = [type(h).__name__ for h in gc.get_referrers(exc)
                               if h is not errors and h is not sys._getframe()]
                    out.append(f"  in the traceback of {exc!r} (context {exc.__context__!r}), "
                               f"held by {holders}")
                    break
                tb = tb.tb_next
    del conn
    out.append(f"gc.collect() freed {gc.collect()} objects; "
               f"still lent and referenced: {[sys.getrefcount(c) for c, _, _ in pool._holders()]}")
    return out


def make_backends(kinds: list[str], tmp: str) -> list[Backend]:
    out = []
    for kind in kinds:
        if kind == "postgresql":
            out.append(Backend(kind, PG_URL, PG_URL, "%s", {"application_name": APP}))
        elif kind == "mysql":
            url = _mysql_url(MYSQL_DB)
            out.append(Backend(kind, url, url, "%s", {}))
        else:
            url = f"sqlite:///{tmp}/soak.db"
            out.append(Backend(kind, url, url, "?", {}))
    return out


def _mysql_admin(sql: str) -> None:
    """One statement on a connection of its own to MariaDB's server (no database)."""
    admin = fastpool.drivers.from_url(MYSQL_URL, autocommit=True).connect()
    try:
        cur = admin.cursor()
        cur.execute(sql)
        cur.close()
    finally:
        admin.close()


def prepare(backends: list[Backend]) -> None:
    """A fresh table (and the MariaDB database) for the run."""
    for b in backends:
        if b.kind == "mysql":
            _mysql_admin(f"CREATE DATABASE IF NOT EXISTS {MYSQL_DB}")
        with fastpool.create_pool(b.url, max_size=1) as pool:
            pool.execute(f"DROP TABLE IF EXISTS {TABLE}")
            engine = " ENGINE=InnoDB" if b.kind == "mysql" else ""
            pool.execute(f"CREATE TABLE {TABLE} (id BIGINT PRIMARY KEY, kind VARCHAR(16), "
                         f"n INT){engine}")


def count_rows(b: Backend) -> int:
    with fastpool.create_pool(b.url, max_size=1) as pool:
        return int(pool.fetchval(f"SELECT count(*) FROM {TABLE}"))


def clean_up(backends: list[Backend]) -> None:
    """Drop this run's table (and MariaDB database)."""
    for b in backends:
        with contextlib.suppress(Exception):
            if b.kind == "mysql":
                _mysql_admin(f"DROP DATABASE IF EXISTS {MYSQL_DB}")
            else:
                with fastpool.create_pool(b.url, max_size=1) as pool:
                    pool.execute(f"DROP TABLE IF EXISTS {TABLE}")


def run(minutes: float, every: float, kinds: list[str]) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="fastpool-soak-")
    backends = make_backends(kinds, tmp)
    prepare(backends)
    sessions = Sessions(set(kinds))
    stop = threading.Event()
    threads: list[threading.Thread] = []
    batchers = []
    for b in backends:
        b.pool = fastpool.create_pool(b.url, max_size=POOL_SIZE, min_size=POOL_SIZE,
                                      timeout=2.0,
                                      result_cache_entries=200, name=f"soak-{b.kind}",
                                      **b.pool_options)
        batcher = b.pool.batcher(max_batch=100, max_delay=0.005)
        batchers.append(batcher)
        targets: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
            (worker, (b, stop, f"{b.kind}-thread-{i}")) for i in range(4)]
        targets += [(batch_writer, (b, batcher, stop)) for _ in range(3)]
        targets += [(bulk_loader, (b, stop)), (leaker, (b, stop)), (drainer, (b, stop))]
        threads += [threading.Thread(target=fn, args=args, name=f"soak-{fn.__name__}",
                                     daemon=True) for fn, args in targets]
    started = threading.Event()
    failure: list[BaseException] = []
    loop_thread = threading.Thread(target=async_main, args=(backends, stop, started, failure),
                                   name="soak-asyncio", daemon=True)
    loop_thread.start()
    started.wait(60)
    if failure:
        raise failure[0]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    samples = [sample(t0, backends, sessions)]
    print(_row_text(samples[-1]), flush=True)
    end = t0 + minutes * 60
    while time.monotonic() < end:
        time.sleep(min(every, max(end - time.monotonic(), 0)))
        samples.append(sample(t0, backends, sessions))
        print(_row_text(samples[-1]), flush=True)

    stop.set()
    for t in threads:
        t.join(30)
    for batcher in batchers:
        batcher.close()
    loop_thread.join(60)
    _settle([b.pool for b in backends])
    for b in backends:
        check_pool(b.pool, b)
    final = sample(t0, backends, sessions)
    for b in backends:
        b.pool.close()
    time.sleep(0.5)
    after_close = sessions.count()
    sessions.close()
    try:
        return report(minutes, samples, final, after_close, backends)
    finally:
        clean_up(backends)


def _row_text(row: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v}" for k, v in row.items())


def report(minutes: float, samples: list[dict[str, Any]], final: dict[str, Any],
           after_close: dict[str, int], backends: list[Backend]) -> dict[str, Any]:
    failures: list[str] = []
    slopes = {}
    judged = samples[1:] if len(samples) > 2 else samples
    for metric in samples[0]:
        if metric == "minute":
            continue
        points = [(s["minute"], float(s[metric])) for s in judged if metric in s]
        per_min = slope(points)
        growth = per_min * max(minutes - judged[0]["minute"], 0.0)
        allowed = allowance(metric)
        slopes[metric] = {"per_minute": round(per_min, 3), "growth": round(growth, 2),
                          "allowed": allowed}
        if allowed is not None and growth > allowed:
            failures.append(f"{metric} grows {per_min:+.3f}/min ({growth:+.1f} over the run; "
                            f"noise allowance {allowed})")
    correctness = {}
    for b in backends:
        present = count_rows(b)
        ok = b.acked <= present <= b.acked + b.unknown
        correctness[b.kind] = {"ops": b.ops, "acked_writes": b.acked,
                               "unknown_writes": b.unknown, "rows_present": present,
                               "errors": dict(sorted(b.errors.items())),
                               "reclaimed": b.reclaimed,
                               "lent_twice": len([v for v in b.violations if "lent to" in v])}
        if not ok:
            failures.append(f"{b.kind}: {b.acked} writes acknowledged, {b.unknown} unknown, "
                            f"but {present} rows present")
        failures += [f"{b.kind}: {v}" for v in b.violations]
        if not b.reclaimed:
            failures.append(f"{b.kind}: no dropped connection was reclaimed")
    for kind, n in after_close.items():
        if n:
            failures.append(f"{kind}: {n} server session(s) left after the pools closed")
    result = {"minutes": minutes, "python": sys.version.split()[0],
              "core": fastpool._core.__impl__, "fastpool": os.path.dirname(fastpool.__file__),
              "samples": samples, "final": final,
              "slopes": slopes, "sessions_after_close": after_close,
              "correctness": correctness, "failures": failures, "passed": not failures}
    print("\nslopes (per minute; growth over the run vs the noise allowance):")
    for metric, s in slopes.items():
        print(f"  {metric:28s} {s['per_minute']:+9.3f}/min  growth {s['growth']:+8.2f}"
              f"  allowed {s['allowed']}")
    print("\ncorrectness:")
    for kind, c in correctness.items():
        print(f"  {kind:10s} {json.dumps(c)}")
    print(f"  sessions after close: {after_close}")
    print("\nPASS" if not failures else "\nFAIL:\n  " + "\n  ".join(failures))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--every", type=float, default=60.0,
                        help="seconds between samples (default 60)")
    parser.add_argument("--backends", default="postgresql,mysql,sqlite")
    parser.add_argument("--json", help="write the samples, slopes and verdict here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s: %(message)s")
    result = run(args.minutes, args.every, args.backends.split(","))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
