"""A cluster over a real MariaDB primary and a GTID replica (tests/fix_replicas.py):
routing (``@@port`` of the server that answered), the lag skip (the replica's
SQL thread stopped), and read-your-writes with the replica stopped behind the
write.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import fastpool
from fastpool import NoReplicaAvailable
from tests.fix_replicas import cluster_over, read_your_writes, until

_SERVED = "SELECT @@port, @@read_only"


@pytest.fixture
def cluster(mariadb_replicas) -> Iterator[fastpool.Cluster]:
    with cluster_over(mariadb_replicas) as c:
        yield c


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
    served = read_your_writes(cluster, "cluster_ryw", "@@port")
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
    until(lambda: not cluster._topo.usable, "the stopped replica skipped")
    assert cluster.stats()["nodes"][1]["lag"] > 0.3
    ms.resume(replica)
    ms.wait_replayed()
    until(lambda: len(cluster._topo.usable) == 1, "the replica usable again")
    assert cluster.fetchval("SELECT v FROM cluster_ryw WHERE k = 32",
                            route="replica_only", route_after=token) == 1000
