"""A cluster over a real MariaDB primary and a GTID replica (tests/fix_replicas.py):
routing (``@@port`` of the server that answered), the lag skip (the replica's
SQL thread stopped), and read-your-writes with the replica stopped behind the
write.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import fastpool
from fastpool import NoReplicaAvailable
from tests.fix_replicas import MariaDBSet

_SERVED = "SELECT @@port, @@read_only"


@pytest.fixture
def cluster(mariadb_replicas: MariaDBSet) -> Iterator[fastpool.Cluster]:
    ms = mariadb_replicas
    c = fastpool.create_cluster(ms.primary.url, [n.url for n in ms.replicas], max_size=4,
                                max_replica_lag=60.0, lag_interval=0.05)
    try:
        _until(lambda: len(c._topo.usable) == 1, "the replica usable")
        yield c
    finally:
        c.close()
        for node in ms.replicas:
            ms.resume(node)


def _until(cond: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.01)


def test_mariadb_reads_go_to_the_replica_and_writes_to_the_primary(cluster, mariadb_replicas):
    ms = mariadb_replicas
    replica = ms.replicas[0]
    assert {tuple(cluster.fetchrow(_SERVED)) for _ in range(50)} == {(replica.port, 1)}
    assert tuple(cluster.fetchrow(_SERVED, route="primary")) == (ms.primary.port, 0)
    cluster.execute("DROP TABLE IF EXISTS cluster_route")
    cluster.execute("CREATE TABLE cluster_route (k int PRIMARY KEY, v int) ENGINE=InnoDB")
    assert cluster.execute("INSERT INTO cluster_route VALUES (1, 1), (2, 2)") == 2
    assert cluster.last_write_token() is not None
    stats = cluster.stats()
    assert [n["role"] for n in stats["nodes"]] == ["primary", "replica"]


def test_mariadb_lag_skip_and_read_your_writes(cluster, mariadb_replicas):
    ms = mariadb_replicas
    replica = ms.replicas[0]
    cluster.execute("DROP TABLE IF EXISTS cluster_ryw")
    cluster.execute("CREATE TABLE cluster_ryw (k int PRIMARY KEY, v int NOT NULL) ENGINE=InnoDB")
    cluster.executemany("INSERT INTO cluster_ryw VALUES (%s, 0)", [(k,) for k in range(33)])
    ms.wait_replayed()
    ms.pause(replica)  # usable by lag (max 60 s): only read-your-writes protects
    served: Counter[int] = Counter()

    def loop(key: int, n: int) -> None:
        for i in range(1, n + 1):
            cluster.execute("UPDATE cluster_ryw SET v = %s WHERE k = %s", (i, key))
            v, port = cluster.fetchrow("SELECT v, @@port FROM cluster_ryw WHERE k = %s", (key,))
            assert v == i, f"key {key}: wrote {i}, read {v} from port {port}"
            served[port] += 1

    loop(32, 1000)
    errors: list[BaseException] = []

    def worker(key: int) -> None:
        try:
            loop(key, 30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert replica.port not in served
    # This context's last write, and its token in another context: the replica
    # has not applied it, so a replica-only read has nowhere to go.
    token = cluster.last_write_token()
    with pytest.raises(NoReplicaAvailable, match="replayed"):
        cluster.fetchval("SELECT 1", route="replica_only")
    elsewhere: list[BaseException] = []

    def other_context() -> None:
        try:
            cluster.fetchval("SELECT 1", route="replica_only", route_after=token)
        except NoReplicaAvailable as exc:
            elsewhere.append(exc)

    t = threading.Thread(target=other_context)
    t.start()
    t.join()
    assert len(elsewhere) == 1
    # The lag skip: the stopped replica falls behind by more than max_replica_lag.
    cluster._topo.max_replica_lag = cluster.max_replica_lag = 0.3
    _until(lambda: not cluster._topo.usable, "the stopped replica skipped")
    assert cluster.stats()["nodes"][1]["lag"] > 0.3
    ms.resume(replica)
    ms.wait_replayed()
    _until(lambda: len(cluster._topo.usable) == 1, "the replica usable again")
    assert cluster.fetchval("SELECT v FROM cluster_ryw WHERE k = 32",
                            route="replica_only", route_after=token) == 1000
