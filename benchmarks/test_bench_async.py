"""The asyncio pool (``fastpool.AsyncPool``) against the asyncio peers.

Three groups per event loop (``asyncio`` and ``uvloop``; the loop is the last
part of each group's name):

- ``async-cycle-<loop>``: uncontended ``await pool.acquire()`` + ``await
  pool.release()`` and ``async with pool.connection()`` with no query, one
  connection, ``CYCLES`` cycles per timed round, the client pinned to one CPU.
  fastpool on psycopg ``AsyncConnection`` and on asyncpg; psycopg_pool's
  ``AsyncConnectionPool`` (getconn/putconn and ``async with``); asyncpg's pool
  with its default reset query on release and with ``reset=`` a no-op
  coroutine; an ``asyncio.LifoQueue`` get/put floor.
- ``async-load-<loop>``: ``TASKS`` tasks on ``POOL_SIZE`` connections, each
  looping acquire -> ``SELECT 1`` -> release for ``DURATION`` seconds (unix
  socket, autocommit: no pool owes the server a COMMIT); extra_info has
  cycles/s, fairness (max/min cycles per task), the longest acquire wait and
  the longest gap between two cycles of one task. Not pinned: the server needs
  the other CPU. ``no_pool_*_ceiling``: one task per connection, no pool, the
  machine's ceiling; ``littles_law_mean_wait_ms`` = (TASKS - POOL_SIZE) / its
  throughput, the least mean acquire wait any pool can give 1,000 tasks here.
- ``async-load-paired-<loop>``: the same load, fastpool and its peers in
  turns (``PAIRED_ROUNDS`` rounds each, who goes first rotating): the median
  of the per-round ratios, the number to quote on a machine whose rate drifts.
- ``async-overhead-<loop>``: ``SELECT 1`` (``conn.fetchval``) on one asyncpg
  connection: raw, and each pool's acquire -> fetchval -> release; the client
  and the connection's PostgreSQL backend pinned to one CPU; every pool
  contender also paired (ABBA) with raw rounds on the very connection it lends
  (extra_info ``paired_overhead_pct``), as in test_bench_drivers.py.

Benchmarks are not tests: nothing here asserts anything about time. Run and
print the tables (medians over the runs, ratios of medians)::

    flock /tmp/fp-servers.lock python3 -m pytest benchmarks/test_bench_async.py \\
        --benchmark-json=async-1.json
    python3 benchmarks/test_bench_async.py async-1.json async-2.json async-3.json

URLs: ``FASTPOOL_PG_UNIX_URL`` (psycopg form; the asyncpg one is derived).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import fastpool
from _common import CPU, PIN, pin, pinned_to_cpu

PG_URL = os.environ.get("FASTPOOL_PG_UNIX_URL",
                        "postgresql:///test?host=/var/run/postgresql&user=postgres")
ASYNCPG_URL = PG_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
LOOPS = ["asyncio", "uvloop"]

CYCLES = 1000  # cycles per timed round (cycle group)
CYCLE_ROUNDS = 50
TASKS = 1000
POOL_SIZE = 10
DURATION = float(os.environ.get("FASTPOOL_BENCH_DURATION", "3"))
QUERIES = 200  # queries per timed round (overhead group)
OVERHEAD_ROUNDS = 60
PAIRS = 60


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


@pytest.fixture(params=LOOPS)
def loop(request: Any) -> Iterator[asyncio.AbstractEventLoop]:
    lp = new_loop(request.param)
    lp.kind = request.param  # type: ignore[attr-defined]
    try:
        yield lp
    finally:
        lp.run_until_complete(lp.shutdown_asyncgens())
        lp.close()


@pytest.fixture(scope="module")
def pg_url() -> str:
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL!r}: {exc}")
    return PG_URL


@dataclass
class Contender:
    """What a benchmark drives: ``acquire``/``release`` (or ``connection``, an
    async context manager factory), ``query`` (one statement on a lent
    connection), ``close``; ``native`` is a connection the pool lends."""

    close: Callable[[], Awaitable[Any]]
    acquire: Callable[[], Awaitable[Any]] | None = None
    release: Callable[[Any], Awaitable[Any]] | None = None
    connection: Callable[[], Any] | None = None
    query: Callable[[Any], Awaitable[Any]] | None = None
    native: Any = None
    pool: Any = None


async def _psycopg_select(conn: Any) -> None:
    cur = await conn.execute("SELECT 1")
    await cur.fetchone()


async def _asyncpg_select(conn: Any) -> None:
    await conn.fetchval("SELECT 1")


async def _noop_reset(conn: Any) -> None:
    return None


async def _fastpool(url: str, form: str, size: int, **options: Any) -> Contender:
    pool = await fastpool.create_async_pool(url, min_size=size, max_size=size, timeout=60,
                                            **options)
    native = await pool.acquire()
    await pool.release(native)
    query = _asyncpg_select if "asyncpg" in url else _psycopg_select
    if form == "with":
        return Contender(pool.close, connection=pool.connection, query=query, native=native,
                         pool=pool)
    return Contender(pool.close, pool.acquire, pool.release, query=query, native=native,
                     pool=pool)


async def _psycopg_pool(url: str, form: str, size: int) -> Contender:
    psycopg_pool = pytest.importorskip("psycopg_pool")
    pool = psycopg_pool.AsyncConnectionPool(url, min_size=size, max_size=size, timeout=60,
                                            kwargs={"autocommit": True}, open=False)
    await pool.open(wait=True)
    native = await pool.getconn()
    await pool.putconn(native)
    if form == "with":
        return Contender(pool.close, connection=pool.connection, query=_psycopg_select,
                         native=native)
    return Contender(pool.close, pool.getconn, pool.putconn, query=_psycopg_select,
                     native=native)


async def _asyncpg_pool(url: str, reset: str, size: int) -> Contender:
    asyncpg = pytest.importorskip("asyncpg")
    kwargs: dict[str, Any] = {"reset": _noop_reset} if reset == "noop" else {}
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size, **kwargs)
    proxy = await pool.acquire()
    # asyncpg lends a proxy; the raw connection behind it is the one to pair with.
    raw = proxy._con
    await pool.release(proxy)
    return Contender(pool.close, pool.acquire, pool.release, query=_asyncpg_select,
                     native=raw)


async def _no_pool(url: str) -> Contender:
    """``POOL_SIZE`` connections, each its own task's: no pool, no waiting.
    Its throughput is this machine's ceiling for the load group."""
    if "asyncpg" in url:
        asyncpg = pytest.importorskip("asyncpg")
        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conns = [await asyncpg.connect(dsn) for _ in range(POOL_SIZE)]
        query = _asyncpg_select
    else:
        psycopg = pytest.importorskip("psycopg")
        conns = [await psycopg.AsyncConnection.connect(url, autocommit=True)
                 for _ in range(POOL_SIZE)]
        query = _psycopg_select

    async def close() -> None:
        for conn in conns:
            await conn.close()

    return Contender(close, query=query, native=conns)


async def _lifoqueue() -> Contender:
    q: asyncio.LifoQueue[object] = asyncio.LifoQueue()
    q.put_nowait(object())

    async def close() -> None:
        return None

    return Contender(close, q.get, q.put)


def cycle_contenders(url: str) -> dict[str, Callable[[], Awaitable[Contender]]]:
    apg = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    return {
        "fastpool_psycopg_acquire_release": lambda: _fastpool(url, "cycle", 1),
        "fastpool_psycopg_with": lambda: _fastpool(url, "with", 1),
        "psycopg_pool_getconn_putconn": lambda: _psycopg_pool(url, "cycle", 1),
        "psycopg_pool_with": lambda: _psycopg_pool(url, "with", 1),
        "fastpool_asyncpg_acquire_release": lambda: _fastpool(apg, "cycle", 1),
        "fastpool_asyncpg_with": lambda: _fastpool(apg, "with", 1),
        "asyncpg_pool_default_reset": lambda: _asyncpg_pool(apg, "default", 1),
        "asyncpg_pool_noop_reset": lambda: _asyncpg_pool(apg, "noop", 1),
        "floor_asyncio_lifoqueue": _lifoqueue,
    }


CYCLE_NAMES = list(cycle_contenders(PG_URL))


# ---- uncontended cycle -----------------------------------------------------------

def _cycle_loop(c: Contender) -> Callable[[], Awaitable[None]]:
    if c.connection is not None:
        connection = c.connection

        async def with_cycles() -> None:
            for _ in range(CYCLES):
                async with connection():
                    pass

        return with_cycles
    acquire, release = c.acquire, c.release
    assert acquire is not None and release is not None

    async def cycles() -> None:
        for _ in range(CYCLES):
            await release(await acquire())

    return cycles


@pytest.mark.parametrize("name", CYCLE_NAMES)
def test_cycle(benchmark: Any, pg_url: str, loop: Any, name: str) -> None:
    benchmark.group = f"async-cycle-{loop.kind}"
    benchmark.extra_info.update({"cycles_per_round": CYCLES, "contender": name,
                                 "loop": loop.kind, "pinned_cpu": CPU if PIN else None})
    with pinned_to_cpu():
        c = loop.run_until_complete(cycle_contenders(pg_url)[name]())
        body = _cycle_loop(c)
        slow = (CYCLE_ROUNDS // 5) if name == "asyncpg_pool_default_reset" else CYCLE_ROUNDS
        try:
            benchmark.pedantic(lambda: loop.run_until_complete(body()), rounds=slow,
                               iterations=1, warmup_rounds=3)
            if c.pool is not None:
                s = c.pool.stats()
                benchmark.extra_info.update({"fastpool_probes": s.probes,
                                             "fastpool_opened": s.opened})
        finally:
            loop.run_until_complete(c.close())


# ---- 1,000 tasks on 10 connections -----------------------------------------------

def load_contenders(url: str) -> dict[str, Callable[[], Awaitable[Contender]]]:
    apg = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    return {
        "fastpool_psycopg": lambda: _fastpool(url, "with", POOL_SIZE, autocommit=True),
        "psycopg_pool": lambda: _psycopg_pool(url, "with", POOL_SIZE),
        "fastpool_asyncpg": lambda: _fastpool(apg, "cycle", POOL_SIZE),
        "asyncpg_pool_default_reset": lambda: _asyncpg_pool(apg, "default", POOL_SIZE),
        "asyncpg_pool_noop_reset": lambda: _asyncpg_pool(apg, "noop", POOL_SIZE),
        "no_pool_psycopg_ceiling": lambda: _no_pool(url),
        "no_pool_asyncpg_ceiling": lambda: _no_pool(apg),
    }


LOAD_NAMES = list(load_contenders(PG_URL))


async def drive(c: Contender, tasks: int, duration: float) -> dict[str, Any]:
    """``tasks`` tasks cycling on ``c`` for ``duration`` s: throughput, fairness, waits.
    A contender without a pool (``native`` is its connections) runs one task per
    connection instead: the ceiling, and from it Little's law's floor for the
    mean acquire wait of ``tasks`` tasks on that many connections."""
    if c.acquire is None and c.connection is None:
        return await _drive_no_pool(c, tasks, duration)
    counts = [0] * tasks
    gaps = [0.0] * tasks
    waits = [0.0] * tasks
    stop = False
    start = asyncio.Event()
    query = c.query
    assert query is not None
    clock = time.perf_counter

    async def work(i: int) -> None:
        await start.wait()
        n = 0
        gap = wait = 0.0
        last = clock()
        if c.connection is not None:
            connection = c.connection
            while not stop:
                t0 = clock()
                async with connection() as conn:
                    wait = max(wait, clock() - t0)
                    await query(conn)
                n += 1
                now = clock()
                gap = max(gap, now - last)
                last = now
        else:
            acquire, release = c.acquire, c.release
            assert acquire is not None and release is not None
            while not stop:
                t0 = clock()
                conn = await acquire()
                wait = max(wait, clock() - t0)
                try:
                    await query(conn)
                finally:
                    await release(conn)
                n += 1
                now = clock()
                gap = max(gap, now - last)
                last = now
        counts[i], gaps[i], waits[i] = n, gap, wait

    workers = [asyncio.ensure_future(work(i)) for i in range(tasks)]
    await asyncio.sleep(0)  # every task waits on the event: they start together
    start.set()
    t0 = clock()
    await asyncio.sleep(duration)
    stop = True
    await asyncio.gather(*workers)
    elapsed = clock() - t0
    return {
        "tasks": tasks, "pool_size": POOL_SIZE,
        "cycles_per_s": sum(counts) / elapsed,
        "fairness_max_over_min": (max(counts) / min(counts)) if min(counts) else float("inf"),
        "min_task_cycles": min(counts), "max_task_cycles": max(counts),
        "longest_acquire_wait_ms": max(waits) * 1e3,
        "longest_gap_ms": max(gaps) * 1e3,
    }


async def _drive_no_pool(c: Contender, tasks: int, duration: float) -> dict[str, Any]:
    query = c.query
    assert query is not None
    stop = False
    counts = [0] * len(c.native)

    async def work(i: int, conn: Any) -> None:
        n = 0
        while not stop:
            await query(conn)
            n += 1
        counts[i] = n

    workers = [asyncio.ensure_future(work(i, conn)) for i, conn in enumerate(c.native)]
    t0 = time.perf_counter()
    await asyncio.sleep(duration)
    stop = True
    await asyncio.gather(*workers)
    rate = sum(counts) / (time.perf_counter() - t0)
    # Every task waits, on average, while the (tasks - connections) tasks
    # queued ahead of it are served: no pool, fair or not, can do better.
    return {"tasks": len(c.native), "pool_size": POOL_SIZE, "cycles_per_s": rate,
            "fairness_max_over_min": max(counts) / min(counts) if min(counts) else float("inf"),
            "min_task_cycles": min(counts), "max_task_cycles": max(counts),
            "longest_acquire_wait_ms": 0.0, "longest_gap_ms": 0.0,
            "littles_law_mean_wait_ms": (tasks - POOL_SIZE) / rate * 1e3}


@pytest.mark.parametrize("name", LOAD_NAMES)
def test_load(benchmark: Any, pg_url: str, loop: Any, name: str) -> None:
    benchmark.group = f"async-load-{loop.kind}"
    c = loop.run_until_complete(load_contenders(pg_url)[name]())
    try:
        result = benchmark.pedantic(lambda: loop.run_until_complete(drive(c, TASKS, DURATION)),
                                    rounds=1, iterations=1)
    finally:
        loop.run_until_complete(c.close())
    benchmark.extra_info.update({"contender": name, "loop": loop.kind, **result})
    print(f"\n{loop.kind:8s} {name:28s} {result['cycles_per_s']:9.0f} cycles/s  fairness "
          f"{result['fairness_max_over_min']:.2f}  max wait "
          f"{result['longest_acquire_wait_ms']:.1f} ms  longest gap "
          f"{result['longest_gap_ms']:.1f} ms")


PAIRED = {  # fastpool contender -> the peers it is paired with, round by round
    "fastpool_psycopg": ["psycopg_pool"],
    "fastpool_asyncpg": ["asyncpg_pool_noop_reset", "asyncpg_pool_default_reset"],
}
PAIRED_ROUNDS = int(os.environ.get("FASTPOOL_BENCH_PAIRED_ROUNDS", "6"))


@pytest.mark.parametrize("name", list(PAIRED))
def test_load_paired(benchmark: Any, pg_url: str, loop: Any, name: str) -> None:
    """The load group's ratios, paired: fastpool and its peers run in turns,
    ``PAIRED_ROUNDS`` rounds each, who goes first rotating, every pool open
    throughout; each round's ratio is fastpool's rate over the peer's in the
    same turn, and the median of those is the number to quote (a single 3 s
    round per contender moved 1.2-2.4x between runs on a quiet machine)."""
    benchmark.group = f"async-load-paired-{loop.kind}"
    makers = load_contenders(pg_url)
    order = [name, *PAIRED[name]]
    pools = {n: loop.run_until_complete(makers[n]()) for n in order}
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in order}
    try:
        def turns() -> None:
            for r in range(PAIRED_ROUNDS):
                k = r % len(order)
                for n in order[k:] + order[:k]:
                    results[n].append(loop.run_until_complete(drive(pools[n], TASKS, DURATION)))

        benchmark.pedantic(turns, rounds=1, iterations=1)
    finally:
        for c in pools.values():
            loop.run_until_complete(c.close())
    med = statistics.median
    info: dict[str, Any] = {"contender": name, "loop": loop.kind, "rounds": PAIRED_ROUNDS}
    for n in order:
        rs = results[n]
        info[n] = {key: med(r[key] for r in rs) for key in (
            "cycles_per_s", "fairness_max_over_min", "longest_acquire_wait_ms", "longest_gap_ms")}
        info[n]["max_longest_acquire_wait_ms"] = max(r["longest_acquire_wait_ms"] for r in rs)
        if n != name:
            ratios = [a["cycles_per_s"] / b["cycles_per_s"]
                      for a, b in zip(results[name], rs, strict=True)]
            info[n]["fastpool_over_peer_per_round"] = [round(x, 3) for x in ratios]
            info[n]["fastpool_over_peer_median"] = med(ratios)
    benchmark.extra_info.update(info)
    for n in order:
        row = info[n]
        ratio = f"  fastpool ÷ it {row['fastpool_over_peer_median']:.2f} (rounds " \
            f"{', '.join(f'{x:.2f}' for x in row['fastpool_over_peer_per_round'])})" \
            if n != name else ""
        print(f"\n{loop.kind:8s} {n:28s} {row['cycles_per_s']:9.0f} cycles/s  fairness "
              f"{row['fairness_max_over_min']:.2f}  wait median/max "
              f"{row['longest_acquire_wait_ms']:.0f}/{row['max_longest_acquire_wait_ms']:.0f} ms"
              f"{ratio}")


# ---- pool overhead over one asyncpg connection -----------------------------------

def overhead_contenders(url: str) -> dict[str, Callable[[], Awaitable[Contender]]]:
    apg = url.replace("postgresql://", "postgresql+asyncpg://", 1)

    async def raw() -> Contender:
        asyncpg = pytest.importorskip("asyncpg")
        conn = await asyncpg.connect(url)
        return Contender(conn.close, query=_asyncpg_select, native=conn)

    return {
        "raw": raw,
        "fastpool_acquire_release": lambda: _fastpool(apg, "cycle", 1),
        "fastpool_with": lambda: _fastpool(apg, "with", 1),
        "asyncpg_pool_noop_reset": lambda: _asyncpg_pool(apg, "noop", 1),
        "asyncpg_pool_default_reset": lambda: _asyncpg_pool(apg, "default", 1),
    }


OVERHEAD_NAMES = list(overhead_contenders(PG_URL))


def _query_loop(c: Contender) -> Callable[[], Awaitable[None]]:
    if c.acquire is None and c.connection is None:
        conn = c.native

        async def raw() -> None:
            for _ in range(QUERIES):
                await conn.fetchval("SELECT 1")

        return raw
    if c.connection is not None:
        connection = c.connection

        async def with_queries() -> None:
            for _ in range(QUERIES):
                async with connection() as conn:
                    await conn.fetchval("SELECT 1")

        return with_queries
    acquire, release = c.acquire, c.release
    assert acquire is not None and release is not None

    async def queries() -> None:
        for _ in range(QUERIES):
            conn = await acquire()
            try:
                await conn.fetchval("SELECT 1")
            finally:
                await release(conn)

    return queries


@pytest.mark.parametrize("name", OVERHEAD_NAMES)
def test_overhead(benchmark: Any, pg_url: str, loop: Any, name: str) -> None:
    benchmark.group = f"async-overhead-{loop.kind}"
    benchmark.extra_info.update({"queries_per_round": QUERIES, "contender": name,
                                 "loop": loop.kind, "pinned_cpu": CPU if PIN else None})
    with pinned_to_cpu():
        c = loop.run_until_complete(overhead_contenders(pg_url)[name]())
        try:
            pid = loop.run_until_complete(c.native.fetchval("SELECT pg_backend_pid()"))
            pin(pid)
            benchmark.extra_info["server_pid"] = pid
            body = _query_loop(c)

            def timed_round(fn: Callable[[], Awaitable[None]]) -> float:
                t0 = time.perf_counter()
                loop.run_until_complete(fn())
                return time.perf_counter() - t0

            rounds = OVERHEAD_ROUNDS // 4 if name == "asyncpg_pool_default_reset" \
                else OVERHEAD_ROUNDS
            benchmark.pedantic(lambda: loop.run_until_complete(body()), rounds=rounds,
                               iterations=1, warmup_rounds=5)
            if name != "raw":
                raw = _query_loop(Contender(c.close, query=_asyncpg_select, native=c.native))
                ratios = []
                for k in range(PAIRS if rounds == OVERHEAD_ROUNDS else PAIRS // 4):
                    if k % 2:
                        t_raw = timed_round(raw)
                        t_pool = timed_round(body)
                    else:
                        t_pool = timed_round(body)
                        t_raw = timed_round(raw)
                    ratios.append(t_pool / t_raw)
                benchmark.extra_info["paired_overhead_pct"] = round(
                    (statistics.median(ratios) - 1) * 100, 3)
            if c.pool is not None:
                s = c.pool.stats()
                benchmark.extra_info.update({"fastpool_probes": s.probes,
                                             "fastpool_opened": s.opened})
        finally:
            loop.run_until_complete(c.close())


# ---- report ------------------------------------------------------------------------

def report(paths: list[str]) -> None:
    """Print the tables of BENCHMARKS.md from pytest-benchmark JSON files."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    per: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for b in run["benchmarks"]:
            if b["group"].startswith("async-"):
                per[b["group"]][b["extra_info"]["contender"]].append(b)
    med = statistics.median
    for group in sorted(per):
        rows = per[group]
        print(f"\n{group} ({len(runs)} run(s)):\n")
        if group.startswith("async-cycle"):
            ns = {n: med(b["stats"]["median"] / CYCLES * 1e9 for b in bs)
                  for n, bs in rows.items()}
            base = {"psycopg": ns.get("fastpool_psycopg_acquire_release"),
                    "asyncpg": ns.get("fastpool_asyncpg_acquire_release")}
            print("| contender | ns per cycle | ÷ fastpool psycopg acquire/release | "
                  "÷ fastpool asyncpg acquire/release |")
            print("|---|---:|---:|---:|")
            for n in sorted(ns, key=ns.__getitem__):
                cols = [f"{ns[n] / b:.2f}" if b else "-" for b in base.values()]
                print(f"| {n} | {ns[n]:,.0f} | {cols[0]} | {cols[1]} |")
        elif group.startswith("async-load-paired"):
            print("| fastpool ÷ peer | cycles/s (fastpool / peer) | median of per-round ratios "
                  "(runs) | fairness | longest acquire wait ms, median (max) |")
            print("|---|---:|---:|---:|---:|")
            for fast, bs in rows.items():
                for peer in PAIRED[fast]:
                    got = [b["extra_info"] for b in bs if peer in b["extra_info"]]
                    if not got:
                        continue
                    ratios = [g[peer]["fastpool_over_peer_median"] for g in got]
                    f_rate = med(g[fast]["cycles_per_s"] for g in got)
                    p_rate = med(g[peer]["cycles_per_s"] for g in got)
                    fair = " / ".join(f"{med(g[n]['fairness_max_over_min'] for g in got):.2f}"
                                      for n in (fast, peer))
                    wait = " / ".join(
                        f"{med(g[n]['longest_acquire_wait_ms'] for g in got):.0f} "
                        f"({max(g[n]['max_longest_acquire_wait_ms'] for g in got):.0f})"
                        for n in (fast, peer))
                    print(f"| {fast} ÷ {peer} | {f_rate:,.0f} / {p_rate:,.0f} | "
                          f"**{med(ratios):.2f}** ({', '.join(f'{r:.2f}' for r in ratios)}) | "
                          f"{fair} | {wait} |")
        elif group.startswith("async-load"):
            def m(n: str, key: str, rows: dict[str, list[dict[str, Any]]] = rows) -> float:
                return med(b["extra_info"][key] for b in rows[n])

            fp = {"psycopg": m("fastpool_psycopg", "cycles_per_s") if "fastpool_psycopg"
                  in rows else None,
                  "asyncpg": m("fastpool_asyncpg", "cycles_per_s") if "fastpool_asyncpg"
                  in rows else None}
            print("| contender | cycles/s | fastpool (same driver) ÷ contender | fairness "
                  "(max/min) | longest acquire wait ms | longest gap ms |")
            print("|---|---:|---:|---:|---:|---:|")
            for n in rows:
                rate = m(n, "cycles_per_s")
                ref = fp["asyncpg" if "asyncpg" in n else "psycopg"]
                ratio = f"{ref / rate:.2f}" if ref else "-"
                if "littles_law_mean_wait_ms" in rows[n][0]["extra_info"]:
                    print(f"| {n} (one task per connection) | {rate:,.0f} | {ratio} | - | "
                          f"≥ {m(n, 'littles_law_mean_wait_ms'):.1f} mean for {TASKS:,} "
                          "tasks (Little's law) | - |")
                    continue
                print(f"| {n} | {rate:,.0f} | {ratio} | "
                      f"{m(n, 'fairness_max_over_min'):.2f} | "
                      f"{m(n, 'longest_acquire_wait_ms'):.1f} | {m(n, 'longest_gap_ms'):.1f} |")
        else:
            us = {n: med(b["stats"]["median"] / QUERIES * 1e6 for b in bs)
                  for n, bs in rows.items()}
            print("| contender | µs per query | paired overhead vs raw (runs) | "
                  "contender ÷ fastpool acquire/release |")
            print("|---|---:|---:|---:|")
            fast = us.get("fastpool_acquire_release")
            for n in sorted(us, key=us.__getitem__):
                pcts = [b["extra_info"]["paired_overhead_pct"] for b in rows[n]
                        if "paired_overhead_pct" in b["extra_info"]]
                paired = (f"{med(pcts):+.2f}% ({', '.join(f'{p:+.2f}' for p in pcts)})"
                          if pcts else "-")
                ratio = f"{us[n] / fast:.2f}" if fast else "-"
                print(f"| {n} | {us[n]:.2f} | {paired} | {ratio} |")


if __name__ == "__main__":
    report(sys.argv[1:])
