"""``SELECT 1`` through PgBouncer in transaction mode: fastpool against
psycopg_pool, in one run (BENCHMARKS.md "Behind PgBouncer"):

    flock -s /tmp/fp-quiet.lock python3 benchmarks/pgbouncer.py [--rounds 15]

A PgBouncer (tests/fix_pgbouncer.py: Debian's, a generated config on a free
port, ``pool_mode = transaction``, 4 server connections) in front of the local
PostgreSQL. Every contender's connections are autocommit with psycopg's
auto-prepare off (what transaction mode requires):

1. One thread, one client connection per pool: fastpool ``create_pool(url,
   pgbouncer="transaction")`` with ``with pool.connection()`` and with
   ``pool.fetchval``; psycopg_pool ``ConnectionPool`` with ``with
   pool.connection()``. Each pool contender is measured *paired*: its rounds
   alternate (ABBA) with rounds of the same query run raw on the very
   connection it lends (taken out once for the round), so a connection's luck
   (which backend, which CPU) is the same on both sides; the median per-pair
   ratio is its overhead. Rounds of ``--queries`` queries, ``--rounds`` pairs;
   the pools' rounds interleaved. The client,
   PgBouncer and its server connections' backends (SHOW SERVERS, after the
   warm-up) pinned to one CPU (``FASTPOOL_BENCH_CPU``, default 1;
   ``FASTPOOL_BENCH_PIN=0`` turns it off): every contender goes through the
   same PgBouncer and backends.
2. 16 threads on 8 client connections to PgBouncer's 4 server connections,
   ``with pool.connection()``, unpinned: queries per second of each pool,
   interleaved runs of ``--seconds`` each, the median of three.

Writes the numbers as JSON (``--json``); asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.fix_pgbouncer import PgBouncer

import fastpool
from _common import CPU, PIN, pin
from cluster import throughput  # queries per second of fn on N threads

PG_URL = os.environ.get("FASTPOOL_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SQL = "SELECT 1"


def per_query_us(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n / 1000


def paired(contenders: dict[str, tuple[Callable[[], object], Callable[[int], float]]],
           n: int, rounds: int) -> dict[str, dict[str, float]]:
    """Each contender: (one pooled query, ``raw(n)``: n raw queries on the
    connection the pool lends, µs per query). ABBA pairs, interleaved."""
    pooled: dict[str, list[float]] = {k: [] for k in contenders}
    raw: dict[str, list[float]] = {k: [] for k in contenders}
    for i in range(rounds):
        for name, (fn, raw_on_its_conn) in contenders.items():
            if i % 2:
                pooled[name].append(per_query_us(fn, n))
                raw[name].append(raw_on_its_conn(n))
            else:
                raw[name].append(raw_on_its_conn(n))
                pooled[name].append(per_query_us(fn, n))
    return {k: {"pooled_us": statistics.median(pooled[k]), "raw_us": statistics.median(raw[k]),
                "paired_overhead_pct": 100 * (statistics.median(
                    p / r for p, r in zip(pooled[k], raw[k], strict=True)) - 1)}
            for k in contenders}


def main() -> None:
    import psycopg
    import psycopg_pool

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--json")
    args = ap.parse_args()

    bouncer = PgBouncer(PG_URL, mode="transaction", pool_size=4)
    bouncer.start()
    out: dict[str, Any] = {"pgbouncer": bouncer.admin("SHOW VERSION")[0]["version"],
                           "psycopg": psycopg.__version__,
                           "psycopg_pool": psycopg_pool.__version__,
                           "pinned": PIN, "cpu": CPU}
    kwargs = {"autocommit": True, "prepare_threshold": None}
    try:
        # ---- 1. one thread, one connection -----------------------------------
        if PIN:
            assert bouncer.proc is not None
            pin(bouncer.proc.pid)
            pin(os.getpid())
        fp = fastpool.create_pool(bouncer.url, pgbouncer="transaction", autocommit=True,
                                  min_size=1, max_size=1)
        pp = psycopg_pool.ConnectionPool(bouncer.url, min_size=1, max_size=1, kwargs=kwargs,
                                         open=True)
        pp.wait()

        def fp_raw(n: int) -> float:
            conn = fp.acquire()
            try:
                return per_query_us(lambda: conn.execute(SQL).fetchone(), n)
            finally:
                fp.release(conn)

        def pp_raw(n: int) -> float:
            conn = pp.getconn()
            try:
                return per_query_us(lambda: conn.execute(SQL).fetchone(), n)
            finally:
                pp.putconn(conn)

        def fp_with() -> None:
            with fp.connection() as c:
                c.execute(SQL).fetchone()

        def fp_fetchval() -> None:
            fp.fetchval(SQL)

        def pp_with() -> None:
            with pp.connection() as c:
                c.execute(SQL).fetchone()

        contenders = {"fastpool with pool.connection()": (fp_with, fp_raw),
                      "fastpool pool.fetchval": (fp_fetchval, fp_raw),
                      "psycopg_pool with pool.connection()": (pp_with, pp_raw)}
        for fn, raw_on in contenders.values():  # warm up
            per_query_us(fn, 200)
            raw_on(200)
        backends = sorted({r["remote_pid"] for r in bouncer.admin("SHOW SERVERS")})
        for pid in backends:
            pin(pid)
        out["backends_pinned"] = backends if PIN else []
        single = paired(contenders, args.queries, args.rounds)
        out["single"] = single
        fp.close()
        pp.close()

        # ---- 2. 16 threads, 8 client connections, 4 server connections ----------
        if PIN:
            all_cpus = set(range(os.cpu_count() or 1))
            assert bouncer.proc is not None
            for pid in [os.getpid(), bouncer.proc.pid, *backends]:
                os.sched_setaffinity(pid, all_cpus)
        fp = fastpool.create_pool(bouncer.url, pgbouncer="transaction", autocommit=True,
                                  min_size=8, max_size=8)
        pp = psycopg_pool.ConnectionPool(bouncer.url, min_size=8, max_size=8, kwargs=kwargs,
                                         open=True)
        pp.wait()
        fp.fetchval(SQL)

        def fp_many() -> None:
            with fp.connection() as c:
                c.execute(SQL).fetchone()

        def pp_many() -> None:
            with pp.connection() as c:
                c.execute(SQL).fetchone()

        rates: dict[str, list[float]] = {"fastpool": [], "psycopg_pool": []}
        for _ in range(3):
            rates["fastpool"].append(throughput(fp_many, 16, args.seconds))
            rates["psycopg_pool"].append(throughput(pp_many, 16, args.seconds))
        out["threads16_qps"] = {k: statistics.median(v) for k, v in rates.items()}
        out["threads16_runs"] = rates
        fp.close()
        pp.close()
    finally:
        bouncer.remove()

    base = single["fastpool with pool.connection()"]["pooled_us"]
    print(f"PgBouncer {out['pgbouncer']}, transaction mode, 4 server connections; "
          f"pinned={PIN}")
    print("| contender | µs per SELECT 1 | raw on its connection | paired overhead | "
          "/ fastpool with |")
    print("|---|---:|---:|---:|---:|")
    for name, r in single.items():
        print(f"| {name} | {r['pooled_us']:.1f} | {r['raw_us']:.1f} | "
              f"{r['paired_overhead_pct']:+.1f}% | {r['pooled_us'] / base:.2f} |")
    q = out["threads16_qps"]
    print(f"16 threads, 8 client connections: fastpool {q['fastpool']:.0f}/s, psycopg_pool "
          f"{q['psycopg_pool']:.0f}/s, ratio {q['fastpool'] / q['psycopg_pool']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
