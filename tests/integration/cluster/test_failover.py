"""Failover under load, on real servers: the primary stopped, a replica
promoted (``pg_ctl promote``), 32 threads reading and writing through the
cluster meanwhile, and a second cluster over a libpq host list
(``host=a,b``, which gets ``target_session_attrs=read-write``) and a plain pool
over that host list writing too.

Checked: no acknowledged write is lost (every one is on the new primary);
no thread reads a row older than its own last acknowledged write; writes
resume on the new primary; the figures are printed (``pytest -s``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

import fastpool
from fastpool import TransactionOutcomeUnknown
from tests.fix_replicas import ReplicaSet

pytestmark = pytest.mark.slow

THREADS = 32


_INSERT = "INSERT INTO failover VALUES (%s, %s)"


class Load:
    """Each thread inserts (thread, seq) rows, and after each write reads its
    own highest seq back; what it saw is recorded."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.acked: dict[int, list[int]] = {}
        self.unknown = 0
        self.errors: Counter[str] = Counter()
        self.stale: list[tuple[int, int, Any]] = []
        self.reads = 0
        self.ok_times: list[float] = []
        self.last_ok: dict[int, float] = {}
        self.lock = threading.Lock()

    def run(self, cluster: fastpool.Cluster | fastpool.Pool, t: int) -> None:
        acked = self.acked.setdefault(t, [])
        seq = 0
        while not self.stop.is_set():
            seq += 1
            try:
                if seq % 5:
                    cluster.execute(_INSERT, (t, seq))
                else:  # some as transactions (run again if lost before COMMIT)
                    cluster.transaction(lambda conn, s=seq: conn.execute(_INSERT, (t, s)))
                acked.append(seq)
                with self.lock:
                    self.ok_times.append(time.monotonic())
                    self.last_ok[t] = self.ok_times[-1]
            except TransactionOutcomeUnknown:
                with self.lock:
                    self.unknown += 1
            except Exception as exc:
                with self.lock:
                    self.errors[f"write {type(exc).__name__}"] += 1
                time.sleep(0.01)
            try:
                got = cluster.fetchval("SELECT max(seq) FROM failover WHERE t = %s", (t,))
                with self.lock:
                    self.reads += 1
                if acked and (got is None or got < acked[-1]):
                    self.stale.append((t, acked[-1], got))
            except Exception as exc:
                with self.lock:
                    self.errors[f"read {type(exc).__name__}"] += 1
                time.sleep(0.01)


def test_failover_under_32_threads_loses_no_acknowledged_write(fresh_replicas: ReplicaSet):
    rs = fresh_replicas
    old, new, _other = rs.nodes
    cluster = fastpool.create_cluster(old.url, [new.url, rs.nodes[2].url], max_size=8,
                                      timeout=30, max_replica_lag=1.0, lag_interval=0.05)
    hosts = (f"postgresql://postgres@127.0.0.1:{old.port},127.0.0.1:{new.port}/postgres")
    single = fastpool.create_cluster(hosts, max_size=2, timeout=30, lag_interval=0.05)
    # A plain pool over the host list: libpq's target_session_attrs finds the new
    # primary for its new connections; the broken ones are retired as they fail.
    plain = fastpool.create_pool(hosts + "?target_session_attrs=read-write", max_size=2,
                                 timeout=30)
    load = Load()
    threads = [threading.Thread(target=load.run, args=(cluster, t)) for t in range(THREADS)]
    threads.append(threading.Thread(target=load.run, args=(single, THREADS)))
    threads.append(threading.Thread(target=load.run, args=(plain, THREADS + 1)))
    try:
        cluster.execute("CREATE TABLE failover (t int, seq int, PRIMARY KEY (t, seq))")
        rs.wait_replayed()
        for th in threads:
            th.start()
        time.sleep(1.5)
        before = len(load.ok_times)
        rs.stop(old)  # fast shutdown: the replicas get all of its WAL first
        stopped = time.monotonic()
        rs.promote(new)
        promoted = time.monotonic()
        deadline = promoted + 30
        while not [t for t in load.ok_times[before:] if t > promoted]:
            assert time.monotonic() < deadline, "no write succeeded after the failover"
            time.sleep(0.01)
        first = min(t for t in load.ok_times[before:] if t > stopped)
        time.sleep(1.5)
    finally:
        load.stop.set()
        for th in threads:
            th.join(60)
    try:
        stats = cluster.stats()
        assert stats["primary"] == cluster.name + "-1"
        assert stats["failovers"] == 1
        assert [n["role"] for n in stats["nodes"]] == ["down", "primary", "replica"]
        with rs.admin(new) as admin:
            rows = set(admin.execute("SELECT t, seq FROM failover").fetchall())
        acked = {(t, s) for t, seqs in load.acked.items() for s in seqs}
        lost = acked - rows
        assert not lost, f"{len(lost)} acknowledged writes lost: {sorted(lost)[:10]}"
        assert not load.stale, f"reads older than the reader's last write: {load.stale[:10]}"
        after = sum(1 for t in load.ok_times if t > promoted)
        # Every thread wrote after the promotion, the host-list writers too.
        assert after > 0 and all(load.last_ok[t] > promoted for t in range(THREADS + 2))
        print(f"\nfailover: {len(acked)} writes acknowledged ({after} after the promotion), "
              f"all on the new primary; {load.unknown} outcome unknown; {load.reads} reads, "
              f"0 older than the reader's last write; errors {dict(load.errors)}; "
              f"primary stopped (pg_ctl stop returned) -> promote returned "
              f"{promoted - stopped:.3f} s, "
              f"-> first write {first - stopped:.3f} s "
              f"(after the promotion {max(0.0, first - promoted):.3f} s); "
              f"transactions {stats['transactions']}")
    finally:
        cluster.close()
        single.close()
        plain.close()


def test_a_switchover_drains_the_read_only_old_primary_and_writes_follow(fresh_replicas):
    """The old primary stays up, fenced read-only (``default_transaction_read_only``:
    writes get SQLSTATE 25006 while ``SELECT 1`` still passes), and a replica is
    promoted: the cluster's writes move to it and the old primary's live
    connections are drained, not kept writing into 25006."""
    rs = fresh_replicas
    old, new, _other = rs.nodes
    with fastpool.create_cluster(old.url, [n.url for n in rs.replicas], min_size=4,
                                 max_size=4, alive_bypass=3600, lag_interval=0.05) as cluster:
        cluster.execute("CREATE TABLE switch (i int)")
        cluster.primary.wait()
        with rs.admin(old) as admin:
            admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            admin.execute("SELECT pg_reload_conf()")
        refused = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the fence reaches the pool's sessions
            try:
                cluster.execute("INSERT INTO switch VALUES (0)")
            except Exception as exc:
                assert getattr(exc, "sqlstate", None) == "25006", exc
                refused += 1
                break
        assert refused == 1
        _until_primary_ok_is(cluster, False)  # no read-write server now
        rs.wait_replayed()
        rs.promote(new)
        _until_primary_ok_is(cluster, True)
        for i in range(1, 101):
            cluster.execute("INSERT INTO switch VALUES (%s)", (i,))
        stats = cluster.stats()
        assert stats["primary"] == cluster.name + "-1" and stats["failovers"] == 1
        assert [n["role"] for n in stats["nodes"]] == ["read-only", "primary", "replica"]
        drained = stats["nodes"][0]["pool"].closed.get("drained", 0)
        assert drained >= 3, stats["nodes"][0]["pool"]  # its live connections went
        with rs.admin(new) as admin:
            assert admin.execute("SELECT count(*) FROM switch WHERE i > 0").fetchone()[0] == 100


def _until_primary_ok_is(cluster: fastpool.Cluster, ok: bool, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while cluster.stats()["primary_ok"] is not ok:
        assert time.monotonic() < deadline, f"primary_ok never became {ok}"
        time.sleep(0.01)
