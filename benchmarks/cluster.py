"""Primary and replicas (BENCHMARKS.md "Read replicas and failover"), on a
throwaway primary with two streaming replicas (tests/fix_replicas.py):

    flock -s /tmp/fp-quiet.lock python3 benchmarks/cluster.py [--failovers 5]

1. Routing: ``cluster._pick`` alone (ns), and ``cluster.fetchval("SELECT 1")``
   of a one-replica cluster against ``fetchval`` on that replica's own pool,
   interleaved rounds.
2. Read-your-writes: a write through the cluster (statement + the WAL
   position) against the same write on the primary's pool; a read's pick with
   a write token in its context against one without.
3. Read throughput: 8 threads of ``SELECT 1`` on the two replicas against the
   primary alone.
4. ``--mariadb``: the write cost of read-your-writes on a MariaDB pair.
5. Failover: from ``pg_ctl stop`` of the primary returned to the first write
   acknowledged by the promoted replica, one writer thread, median of N runs
   (a fresh set each).
6. ``--async``: ``AsyncCluster`` on asyncpg and psycopg: a routed read of a
   one-replica cluster against ``fetchval`` on that replica's own AsyncPool,
   and a write through the cluster (+ the position) against the same write on
   the primary's pool, interleaved rounds (pinned as 1 and 2).

1 and 2 pinned: the client and the three postmasters (so every backend they
fork) on one CPU (``FASTPOOL_BENCH_CPU``, default 1; ``FASTPOOL_BENCH_PIN=0``
turns it off); 3 and 4 unpinned. Contenders interleaved, medians of rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.fix_replicas import (
    ReplicaSet,
    start_mariadb_set,
    start_replica_set,
    stop_mariadb_set,
    stop_replica_set,
)

import fastpool
from _common import CPU, PIN, pinned_to_cpu


def per_call_ns(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n


def interleaved(contenders: dict[str, Callable[[], object]], n: int,
                rounds: int) -> dict[str, float]:
    """Median per-call µs of each contender over ``rounds`` interleaved rounds."""
    got: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            got[name].append(per_call_ns(fn, n) / 1000)
    return {k: statistics.median(v) for k, v in got.items()}


def throughput(fn: Callable[[], object], threads: int, seconds: float) -> float:
    stop = threading.Event()
    counts = [0] * threads

    def run(i: int) -> None:
        while not stop.is_set():
            fn()
            counts[i] += 1

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    return sum(counts) / seconds


def pin_servers(rs: ReplicaSet, cpus: set[int]) -> None:
    """Pin each postmaster (the backends it forks from now on inherit it)."""
    for node in rs.nodes:
        with open(os.path.join(node.datadir, "postmaster.pid")) as f:
            os.sched_setaffinity(int(f.readline()), cpus)


def routing(rs: ReplicaSet) -> None:
    urls = [n.url for n in rs.replicas]
    everywhere = os.sched_getaffinity(0)
    if PIN:
        pin_servers(rs, {CPU})
    with pinned_to_cpu():
        latency(rs, urls)
    pin_servers(rs, everywhere)
    with fastpool.create_cluster(rs.primary.url, urls, max_size=8, min_size=8) as c:
        time.sleep(0.5)
        rates: dict[str, list[float]] = {"2 replicas": [], "primary alone": []}
        for _ in range(3):
            rates["2 replicas"].append(throughput(lambda: c.fetchval("SELECT 1"), 8, 3.0))
            rates["primary alone"].append(throughput(
                lambda: c.fetchval("SELECT 1", route="primary"), 8, 3.0))
        r = {k: statistics.median(v) for k, v in rates.items()}
        print(f"read throughput, 8 threads: 2 replicas {r['2 replicas']:.0f}/s, primary "
              f"alone {r['primary alone']:.0f}/s, ratio {r['2 replicas'] / r['primary alone']:.2f}")


def latency(rs: ReplicaSet, urls: list[str]) -> None:
    with fastpool.create_cluster(rs.primary.url, urls, max_size=8, min_size=8) as c, \
            fastpool.create_cluster(rs.primary.url, urls[:1], max_size=8, min_size=8) as one:
        time.sleep(0.5)
        assert len(c._topo.usable) == 2
        pick = statistics.median(per_call_ns(lambda: c._pick("replica", None), 200_000)
                                 for _ in range(5))
        c._written.set(1)  # a write token every replica has replayed
        pick_ryw = statistics.median(per_call_ns(lambda: c._pick("replica", None), 200_000)
                                     for _ in range(5))
        # A token beyond the slowest candidate's position: the candidates are filtered.
        view, c._topo.replica_view = c._topo.replica_view, (c._topo.replica_view[0], 0)
        pick_filter = statistics.median(per_call_ns(lambda: c._pick("replica", None), 200_000)
                                        for _ in range(5))
        c._topo.replica_view = view
        c._written.set(0)
        empty = statistics.median(per_call_ns(lambda: None, 200_000) for _ in range(5))
        # The same replica's pool, called directly and through the cluster's routing.
        pool = one.replicas[0]
        q = interleaved({"pool.fetchval": lambda: pool.fetchval("SELECT 1"),
                         "cluster.fetchval (1 replica)": lambda: one.fetchval("SELECT 1")},
                        3000, 9)
        print(f"pick (2 usable replicas, each less {empty:.0f} ns of the timing loop's call): "
              f"{pick - empty:.0f} ns; with a write token both replayed: "
              f"{pick_ryw - empty:.0f} ns; with one they must be filtered for: "
              f"{pick_filter - empty:.0f} ns")
        pick -= empty
        for k, v in q.items():
            print(f"  {k}: {v:.2f} us per query")
        base = q["pool.fetchval"]
        print(f"  pick / pool round trip: {pick / 1000 / base:.2%}; measured difference "
              f"(1 replica) {(q['cluster.fetchval (1 replica)'] - base) / base:+.2%}")

        write_cost(c, "PostgreSQL", "")


def write_cost(c: fastpool.Cluster, server: str, engine: str) -> None:
    """A one-row UPDATE on the primary's pool against the same through the
    cluster (which asks the position after it), interleaved."""
    c.execute("DROP TABLE IF EXISTS bench_ryw")
    c.execute(f"CREATE TABLE bench_ryw (k int PRIMARY KEY, v int){engine}")
    c.execute("INSERT INTO bench_ryw VALUES (1, 0)")
    sql = "UPDATE bench_ryw SET v = v + 1 WHERE k = 1"
    w = interleaved({"primary pool.execute": lambda: c.primary.execute(sql),
                     "cluster.execute (+ position)": lambda: c.execute(sql)}, 1000, 7)
    for k, v in w.items():
        print(f"  {server} {k}: {v:.2f} us per write")
    print(f"  {server} read-your-writes per write: "
          f"{w['cluster.execute (+ position)'] - w['primary pool.execute']:+.2f} us")


def mariadb_writes() -> None:
    """Read-your-writes on MariaDB: a write through the cluster (+ @@gtid_binlog_pos)
    against the same write on the primary's pool, unpinned, interleaved."""
    ms = start_mariadb_set()
    try:
        with fastpool.create_cluster(ms.primary.url, [n.url for n in ms.replicas],
                                     max_size=4) as c:
            write_cost(c, "MariaDB", " ENGINE=InnoDB")
    finally:
        stop_mariadb_set(ms)


def async_costs(rs: ReplicaSet) -> None:
    """AsyncCluster: what routing and read-your-writes add on an event loop."""
    import asyncio

    async def per_call_us(fn: Callable[[], object], n: int) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await fn()  # type: ignore[misc]
        return (time.perf_counter_ns() - t0) / n / 1000

    async def rounds(contenders: dict[str, Callable[[], object]], n: int,
                     k: int) -> dict[str, float]:
        got: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(k):
            for name, fn in contenders.items():
                got[name].append(await per_call_us(fn, n))
        return {name: statistics.median(v) for name, v in got.items()}

    async def one(scheme: str) -> None:
        def url(node: object) -> str:
            return scheme + node.url.partition("://")[2]  # type: ignore[attr-defined]

        mark = "$1" if "asyncpg" in scheme else "%s"
        async with fastpool.create_async_cluster(url(rs.primary), [url(rs.replicas[0])],
                                                 max_size=4, min_size=4) as c:
            await asyncio.sleep(0.5)
            pool = c.replicas[0]
            q = await rounds({"pool.fetchval": lambda: pool.fetchval("SELECT 1"),
                              "cluster.fetchval (1 replica)": lambda: c.fetchval("SELECT 1")},
                             2000, 9)
            base = q["pool.fetchval"]
            for name, v in q.items():
                print(f"  async {scheme} {name}: {v:.2f} us per query")
            print(f"  async {scheme} routing: "
                  f"{(q['cluster.fetchval (1 replica)'] - base) / base:+.2%} per query")
            await c.execute("DROP TABLE IF EXISTS bench_aryw")
            await c.execute("CREATE TABLE bench_aryw (k int PRIMARY KEY, v int)")
            await c.execute("INSERT INTO bench_aryw VALUES (1, 0)")
            sql = f"UPDATE bench_aryw SET v = v + 1 WHERE k = {mark}"
            w = await rounds({"primary pool.execute": lambda: c.primary.execute(sql, (1,)),
                              "cluster.execute (+ position)": lambda: c.execute(sql, (1,))},
                             500, 7)
            for name, v in w.items():
                print(f"  async {scheme} {name}: {v:.2f} us per write")
            print(f"  async {scheme} read-your-writes per write: "
                  f"{w['cluster.execute (+ position)'] - w['primary pool.execute']:+.2f} us")

    everywhere = os.sched_getaffinity(0)
    if PIN:
        pin_servers(rs, {CPU})
    with pinned_to_cpu():
        for scheme in ("postgresql+asyncpg://", "postgresql://"):
            asyncio.run(one(scheme))
    pin_servers(rs, everywhere)


def failover_once() -> float:
    rs = start_replica_set()
    try:
        old, new = rs.nodes[0], rs.nodes[1]
        c = fastpool.create_cluster(old.url, [n.url for n in rs.replicas], max_size=4,
                                    timeout=30, lag_interval=0.05)
        ok: list[float] = []
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    c.execute("INSERT INTO bench_fo VALUES (%s)", (i,))
                    ok.append(time.monotonic())
                except Exception:
                    time.sleep(0.001)

        c.execute("CREATE TABLE bench_fo (i int)")
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.5)
        rs.stop(old)
        stopped = time.monotonic()
        rs.promote(new)
        while not ok or ok[-1] <= stopped:
            time.sleep(0.001)
        stop.set()
        t.join()
        c.close()
        return min(x for x in ok if x > stopped) - stopped
    finally:
        stop_replica_set(rs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--failovers", type=int, default=5)
    ap.add_argument("--mariadb", action="store_true", help="also MariaDB's write cost")
    ap.add_argument("--async", dest="aio", action="store_true",
                    help="only the AsyncCluster's routing and write costs")
    args = ap.parse_args()
    if args.mariadb:
        mariadb_writes()
    rs = start_replica_set()
    try:
        if args.aio:
            async_costs(rs)
            return
        routing(rs)
    finally:
        stop_replica_set(rs)
    times = [failover_once() for _ in range(args.failovers)]
    if times:
        print(f"failover (primary stopped -> first write on the promoted replica): median "
              f"{statistics.median(times):.3f} s of {len(times)}: "
              + ", ".join(f"{x:.3f}" for x in times))


if __name__ == "__main__":
    main()
