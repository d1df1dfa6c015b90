"""Health-check overhead: the share of pool time spent on liveness probes.

A pool probes a connection on borrow only when it sat idle longer than
``alive_bypass`` (default 0.5 s): PostgreSQL gets local checks (libpq status, a
peek at the socket) and then an empty query, MariaDB local checks and then
``ping()``. Each scenario runs a steady workload of threads doing::

    conn = pool.acquire(); SELECT 1 (cursor, execute, fetchone, close); pool.release(conn)
    sleep(uniform(0, SLEEP_MAX))

on ``create_pool(url, max_size=4, autocommit=True)`` (default ``min_size=1``):

- ``busy``: 8 threads, sleeps of 0-20 ms: every connection should be reused
  well within the bypass window (expect few or no probes);
- ``bursty``: 4 threads, sleeps of 0-1.5 s: many idle gaps > 0.5 s (probes);
- ``always``: ``bursty`` with ``alive_bypass=0``: a probe on every borrow, the
  worst case, which shows what a probe costs.

Each scenario warms up for ``FASTPOOL_BENCH_WARMUP`` seconds (default 2, in the
benchmark's untimed setup, so the pool grows to its working size), then resets
the pool's stats and measures for ``FASTPOOL_BENCH_SECONDS`` (default 10; the
one timed round). extra_info records the pool's ``probes``, ``probe_time`` and
``acquisitions``, probes per 1000 acquisitions, the mean probe cost and the
probe share two ways:

- ``probe_share_conn_time_pct``: probe_time / (window x mean open connections),
  the share of open connection-time (mean open = the core's open
  connection-seconds over the window);
- ``probe_share_caller_time_pct``: probe_time / the time callers spent in
  acquire + query + release, summed over threads and cycles (measured here
  with ``perf_counter_ns``; only cycles started inside the window count, and
  every one of them finishes before the final stats snapshot).

To tell what a probe costs from what the first round trip after an idle gap
costs anyway, the pool's ``_probe`` is wrapped (for this pool only) to time
each probe and to mark the cycle that probed; extra_info splits the query time
of probed and unprobed cycles (``query_after_probe_us``, ``query_unprobed_us``).

Nothing is pinned: the workload sleeps between queries and the scheduler places
the client threads and the server backends as it would in service (FACTS.md: a
round trip costs ~3x more across vCPUs than on one), so compare the probe's
cost with the query's in the same scenario rather than across runs. Nothing
here asserts anything about time.

Run::

    python3 -m pytest benchmarks/test_bench_health.py -s \\
        --benchmark-json=benchmarks/results/2026-11-26/health-1.json
    FASTPOOL_BENCH_SECONDS=1 FASTPOOL_BENCH_WARMUP=0.5 \\
        python3 -m pytest benchmarks/test_bench_health.py -s   # smoke run

URLs: ``FASTPOOL_PG_TCP_URL``, ``FASTPOOL_MYSQL_TCP_URL``; random sleeps are
seeded with ``FASTPOOL_BENCH_SEED`` (default 1).
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

import fastpool

SQL = "SELECT 1"
SECONDS = float(os.environ.get("FASTPOOL_BENCH_SECONDS", "10"))
WARMUP = float(os.environ.get("FASTPOOL_BENCH_WARMUP", str(min(2.0, SECONDS / 5))))
SEED = int(os.environ.get("FASTPOOL_BENCH_SEED", "1"))
PG_URL = os.environ.get("FASTPOOL_PG_TCP_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("FASTPOOL_MYSQL_TCP_URL", "mysql://root@127.0.0.1:3306/test")


@dataclass(frozen=True)
class Scenario:
    threads: int
    max_size: int
    sleep_max: float  # seconds; each thread sleeps uniform(0, sleep_max) between cycles
    alive_bypass: float | None  # None: the pool's default (0.5 s)


SCENARIOS = {
    "busy": Scenario(threads=8, max_size=4, sleep_max=0.020, alive_bypass=None),
    "bursty": Scenario(threads=4, max_size=4, sleep_max=1.5, alive_bypass=None),
    "always": Scenario(threads=4, max_size=4, sleep_max=1.5, alive_bypass=0.0),
}


def select_one(conn: Any) -> None:
    cur = conn.cursor()
    cur.execute(SQL)
    cur.fetchone()
    cur.close()


@dataclass
class Run:
    """One scenario's workload: its threads, their per-cycle timings and the probes."""

    pool: Any
    scenario: Scenario
    stop: threading.Event = field(default_factory=threading.Event)
    mark_ns: int = 1 << 62  # cycles started at or after this count (set when measuring)
    local: threading.local = field(default_factory=threading.local)
    # Per thread: (probed, acquire_ns, query_ns, release_ns) of each counted cycle.
    cycles: list[list[tuple[bool, int, int, int]]] = field(default_factory=list)
    probes: list[tuple[int, int]] = field(default_factory=list)  # (start_ns, duration_ns)
    errors: list[BaseException] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def wrap_probe(self) -> None:
        """Time each probe and mark the cycle that made it (this pool instance only)."""
        original = self.pool._probe
        local, probes = self.local, self.probes

        def probe(idx: int, timeout: float | None = None) -> bool:
            t0 = time.perf_counter_ns()
            try:
                return bool(original(idx, timeout))
            finally:
                local.probed = True
                probes.append((t0, time.perf_counter_ns() - t0))

        self.pool._probe = probe

    def worker(self, n: int) -> None:
        rng = random.Random(SEED * 1000 + n)
        mine = self.cycles[n]
        pool, local, clock = self.pool, self.local, time.perf_counter_ns
        try:
            while not self.stop.is_set():
                local.probed = False
                t0 = clock()
                conn = pool.acquire()
                t1 = clock()
                try:
                    select_one(conn)
                finally:
                    t2 = clock()
                    pool.release(conn)
                t3 = clock()
                if t0 >= self.mark_ns:
                    mine.append((local.probed, t1 - t0, t2 - t1, t3 - t2))
                self.stop.wait(rng.uniform(0.0, self.scenario.sleep_max))
        except BaseException as exc:  # reported by the main thread
            self.errors.append(exc)
            self.stop.set()

    def start(self) -> None:
        for n in range(self.scenario.threads):
            self.cycles.append([])
            t = threading.Thread(target=self.worker, args=(n,), name=f"health-{n}", daemon=True)
            self.threads.append(t)
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        if self.errors:
            raise self.errors[0]


def _open_conn_seconds(pool: Any, fallback: float) -> float:
    """Open connection-seconds since the last stats reset, from the core's raw counters."""
    try:
        return float(pool._snapshot(False)["open_ns"]) * 1e-9
    except (AttributeError, KeyError, TypeError):
        return fallback


def _us(ns: float) -> float:
    return round(ns / 1e3, 2)


def _pct(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return float(values[min(len(values) - 1, int(q * len(values)))])


def run_scenario(benchmark: Any, db: str, url: str, name: str) -> None:
    sc = SCENARIOS[name]
    options: dict[str, Any] = {"max_size": sc.max_size, "autocommit": True}
    if sc.alive_bypass is not None:
        options["alive_bypass"] = sc.alive_bypass
    pool = fastpool.create_pool(url, **options)
    run = Run(pool, sc)
    try:
        pool.wait(10)
        run.wrap_probe()

        def setup() -> None:
            run.start()
            time.sleep(WARMUP)
            pool.stats(reset=True)
            run.mark_ns = time.perf_counter_ns()

        def measure() -> None:
            run.stop.wait(SECONDS)
            run.finish()

        benchmark.group = f"health-{db}"
        benchmark.pedantic(measure, setup=setup, rounds=1, iterations=1)
        s = pool.stats()
        open_conn_s = _open_conn_seconds(pool, s.window * s.open)
    finally:
        run.stop.set()
        pool.close()

    cycles = [c for per_thread in run.cycles for c in per_thread]
    probe_ns = [d for start, d in run.probes if start >= run.mark_ns]
    acquire = sum(c[1] for c in cycles)
    query = [c[2] for c in cycles]
    release = sum(c[3] for c in cycles)
    caller_s = (acquire + sum(query) + release) * 1e-9
    after_probe = [c[2] for c in cycles if c[0]]
    unprobed = [c[2] for c in cycles if not c[0]]
    n = max(1, len(cycles))
    mean_probe_us = s.probe_time / s.probes * 1e6 if s.probes else 0.0
    mean_query_us = statistics.fmean(query) / 1e3 if query else 0.0
    info = {
        "db": db, "scenario": name, "threads": sc.threads, "max_size": sc.max_size,
        "sleep_max_ms": sc.sleep_max * 1e3,
        "alive_bypass": pool.alive_bypass, "seconds": SECONDS, "warmup_seconds": WARMUP,
        "pinned": False, "client_cpus": sorted(os.sched_getaffinity(0)),
        "acquisitions": s.acquisitions, "probes": s.probes,
        "probe_time_s": s.probe_time,
        "probes_per_1000_acquisitions": round(1000 * s.probes / max(1, s.acquisitions), 2),
        "mean_probe_us": round(mean_probe_us, 2),
        "probe_p50_us": _us(_pct(probe_ns, 0.50)), "probe_p99_us": _us(_pct(probe_ns, 0.99)),
        "probe_max_us": _us(max(probe_ns, default=0)),
        "window_s": s.window, "mean_open": round(open_conn_s / s.window, 3) if s.window else 0,
        "open_at_end": s.open, "opened": s.opened, "closed_total": s.closed_total,
        "waits": s.waits, "utilization": s.utilization,
        "caller_time_s": caller_s, "cycles_counted": len(cycles),
        "probe_share_conn_time_pct": 100 * s.probe_time / open_conn_s if open_conn_s else 0.0,
        "probe_share_caller_time_pct": 100 * s.probe_time / caller_s if caller_s else 0.0,
        "mean_cycle_us": _us((acquire + sum(query) + release) / n),
        "mean_acquire_us": _us(acquire / n), "mean_release_us": _us(release / n),
        "mean_query_us": round(mean_query_us, 2),
        "query_p50_us": _us(_pct(query, 0.50)),
        "probed_cycles": len(after_probe),
        "query_after_probe_us": _us(statistics.fmean(after_probe)) if after_probe else None,
        "query_unprobed_us": _us(statistics.fmean(unprobed)) if unprobed else None,
        "probe_over_query": round(mean_probe_us / mean_query_us, 2) if mean_query_us else None,
    }
    benchmark.extra_info.update(info)
    print(f"\nhealth-{db} {name}: {s.acquisitions} acquisitions, {s.probes} probes "
          f"({info['probes_per_1000_acquisitions']}/1000), mean probe {mean_probe_us:.1f} us, "
          f"mean query {mean_query_us:.1f} us; share of connection-time "
          f"{info['probe_share_conn_time_pct']:.5f}%, of caller time "
          f"{info['probe_share_caller_time_pct']:.3f}%")


@pytest.fixture(scope="module")
def pg_url() -> str:
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL!r}: {exc}")
    return PG_URL


@pytest.fixture(scope="module")
def mysql_url() -> str:
    pytest.importorskip("MySQLdb")
    try:
        pool = fastpool.create_pool(MYSQL_URL, max_size=1, autocommit=True)
        try:
            pool.wait(5)
        finally:
            pool.close()
    except Exception as exc:
        pytest.skip(f"MariaDB not reachable at {MYSQL_URL!r}: {exc}")
    return MYSQL_URL


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_pg_tcp(benchmark, pg_url, name):
    run_scenario(benchmark, "pg-tcp", pg_url, name)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_mysql_tcp(benchmark, mysql_url, name):
    run_scenario(benchmark, "mysql-tcp", mysql_url, name)
