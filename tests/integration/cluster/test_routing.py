"""A cluster over a real primary and two streaming replicas (tests/fix_replicas.py):
which node serves each read, the lag skip, and read-your-writes.

The node that served a read is asked in the read itself (``inet_server_port()``,
``pg_is_in_recovery()``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import fastpool
from fastpool import ConfigError, NoReplicaAvailable
from tests.fix_replicas import ReplicaSet, cluster_over, read_your_writes, until

_SERVED = "SELECT inet_server_port(), pg_is_in_recovery()"


@pytest.fixture
def cluster(replicas) -> Iterator[fastpool.Cluster]:
    with cluster_over(replicas) as c:
        yield c


def _table(c: fastpool.Cluster, replicas: ReplicaSet, name: str) -> str:
    c.execute(f"DROP TABLE IF EXISTS {name}")
    c.execute(f"CREATE TABLE {name} (k int PRIMARY KEY, v int NOT NULL)")
    replicas.wait_replayed()
    return name


def test_reads_go_to_both_replicas_and_writes_to_the_primary(cluster, replicas):
    ports = Counter(tuple(cluster.fetchrow(_SERVED)) for _ in range(200))
    assert set(ports) == {(n.port, True) for n in replicas.replicas}, ports
    assert min(ports.values()) >= 40, ports  # two choices spread the load
    assert cluster.fetchrow(_SERVED, route="primary") == (replicas.primary.port, False)
    anywhere = {cluster.fetchrow(_SERVED, route="any")[0] for _ in range(100)}
    assert anywhere <= {n.port for n in replicas.nodes}
    reader = cluster.replica()
    assert reader.fetchval("SELECT pg_is_in_recovery()") is True
    with reader.connection() as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    # A write goes to the primary (a replica would refuse it: 25006).
    _table(cluster, replicas, "cluster_route")
    assert cluster.execute("INSERT INTO cluster_route VALUES (1, 1), (2, 2)") == 2
    assert cluster.transaction(
        lambda conn: conn.execute("SELECT inet_server_port()").fetchone()[0]) \
        == replicas.primary.port
    with cluster.connection() as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)


def test_stats_name_each_node_its_role_lag_and_pool(cluster, replicas):
    stats = cluster.stats()
    assert stats["primary"] == cluster.primary.name
    roles = [(n["role"], n["usable"]) for n in stats["nodes"]]
    assert roles == [("primary", False), ("replica", True), ("replica", True)]
    assert all(n["lag"] >= 0 for n in stats["nodes"])
    assert all(isinstance(n["pool"], fastpool.PoolStats) for n in stats["nodes"])
    assert str(replicas.replicas[0].port) in stats["nodes"][1]["where"]


def test_a_bad_route_or_token_is_a_config_error(cluster):
    with pytest.raises(ConfigError, match="route must be one of"):
        cluster.fetch("SELECT 1", route="replicas")
    with pytest.raises(ConfigError, match="write token"):
        cluster.fetch("SELECT 1", route_after="yesterday")
    with pytest.raises(ConfigError, match="replicas must be a list"):
        fastpool.create_cluster("postgresql://x/y", "postgresql://z/y")


def test_a_replica_behind_by_more_than_max_replica_lag_gets_no_reads(cluster, replicas):
    cluster._topo.max_replica_lag = cluster.max_replica_lag = 0.3
    paused, other = replicas.replicas
    _table(cluster, replicas, "cluster_lag")
    replicas.pause(paused)
    cluster.execute("INSERT INTO cluster_lag VALUES (1, 1)")  # the primary moves on
    until(lambda: [n.port for n in replicas.replicas if any(
        s["usable"] and s["where"].endswith(f":{n.port} dbname=postgres user=postgres")
        for s in cluster.stats()["nodes"])] == [other.port], "the paused replica skipped")
    lag = cluster.stats()["nodes"][1]["lag"]
    assert lag > 0.3
    served = Counter(cluster.fetchrow(_SERVED)[0] for _ in range(200))
    assert served == {other.port: 200}
    with pytest.raises(NoReplicaAvailable, match="lag"):
        replicas.pause(other)
        cluster.execute("INSERT INTO cluster_lag VALUES (2, 2)")
        until(lambda: not cluster._topo.usable, "both replicas skipped")
        cluster.fetch("SELECT 1", route="replica_only")
    # With no usable replica, route="replica" reads from the primary.
    assert cluster.fetchrow(_SERVED) == (replicas.primary.port, False)
    replicas.resume(paused)
    replicas.resume(other)
    until(lambda: len(cluster._topo.usable) == 2, "both replicas usable again")
    assert {cluster.fetchrow(_SERVED)[0] for _ in range(100)} == {
        n.port for n in replicas.replicas}


def test_read_your_writes_with_a_replica_paused_behind_the_write(cluster, replicas):
    paused, _other = replicas.replicas
    _table(cluster, replicas, "cluster_ryw")
    cluster.executemany("INSERT INTO cluster_ryw VALUES (%s, 0)", [(k,) for k in range(33)])
    replicas.wait_replayed()
    replicas.pause(paused)  # usable by lag (max 60 s): only read-your-writes protects
    served = read_your_writes(cluster, "cluster_ryw", "inet_server_port()", each=40)
    assert paused.port not in served, served
    # Caught up again: a context's reads go back to the replicas.
    replicas.resume(paused)
    replicas.wait_replayed()
    time.sleep(0.2)
    assert {cluster.fetchrow(_SERVED)[1] for _ in range(50)} == {True}


def test_a_write_token_carries_read_your_writes_to_another_context(cluster, replicas):
    paused, other = replicas.replicas
    with replicas.admin(replicas.primary) as admin:  # not through the cluster: no token here
        admin.execute("DROP TABLE IF EXISTS cluster_token")
        admin.execute("CREATE TABLE cluster_token (k int PRIMARY KEY, v int NOT NULL)")
        admin.execute("INSERT INTO cluster_token VALUES (1, 0)")
    replicas.wait_replayed()
    replicas.pause(paused)
    replicas.pause(other)
    tokens: list[str | None] = []

    def writer(i: int) -> None:  # another thread: another context, as another process
        cluster.execute("UPDATE cluster_token SET v = %s WHERE k = 1", (i,))
        tokens.append(cluster.last_write_token())

    for i in range(1, 101):
        t = threading.Thread(target=writer, args=(i,))
        t.start()
        t.join()
        token = tokens[-1]
        assert token is not None
        assert cluster.last_write_token() is None  # this context wrote nothing
        assert cluster.fetchval("SELECT v FROM cluster_token WHERE k = 1",
                                route_after=token) == i
        with cluster.reads_after(token):
            assert cluster.fetchval("SELECT v FROM cluster_token WHERE k = 1") == i
            with pytest.raises(NoReplicaAvailable, match="replayed"):
                cluster.fetchval("SELECT 1", route="replica_only")
    # Without the token this context may read a paused replica's older value.
    assert cluster.fetchval("SELECT v FROM cluster_token WHERE k = 1") == 0


def test_a_read_that_loses_its_replica_connection_runs_again_elsewhere(replicas):
    # alive_bypass: the killed connections are lent without a probe, so the read meets it.
    with fastpool.create_cluster(replicas.primary.url, [n.url for n in replicas.replicas],
                                 min_size=2, max_size=2, alive_bypass=3600) as c:
        until(lambda: len(c._topo.usable) == 2, "both replicas usable")
        for pool in c.replicas:
            pool.wait()
        pids = [row["session_id"] for row in c.replicas[0].server_activity()]
        with replicas.admin(replicas.replicas[0]) as admin:  # the pool's, not the monitor's
            killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM "
                                   "unnest(%s::int[]) AS pid", (pids,)).fetchone()[0]
        assert killed == 2
        # Every read succeeds: a lost replica read runs once more on another node.
        assert [c.fetchval("SELECT 1") for _ in range(20)] == [1] * 20
        broken = sum(s["pool"].closed.get("broken", 0) for s in c.stats()["nodes"])
        assert broken >= 1


def test_failed_cluster_reads_and_writes_leave_no_frame_of_ours_in_a_cycle(cluster):
    # The rule of tests/integration/test_failures_leave_no_cycles.py, on a cluster's paths.
    import gc

    from tests.integration.test_failures_leave_no_cycles import failed, frames_in_cycles

    gc.collect()
    gc.disable()
    try:
        failed(lambda: cluster.fetch("SELECT * FROM fastpool_no_such_table_nc"))
        failed(lambda: cluster.fetch("SELECT 1", route="replica_only", route_after="FFFFFFFF/0"))
        failed(lambda: cluster.execute("SELECT * FROM fastpool_no_such_table_nc"))
        failed(lambda: cluster.transaction(
            lambda conn: conn.execute("SELECT * FROM fastpool_no_such_table_nc")))
        assert frames_in_cycles() == []
    finally:
        gc.enable()


def _fence(replicas: ReplicaSet, on: bool) -> None:
    """The primary read-only while it stays up (default_transaction_read_only)."""
    with replicas.admin(replicas.primary) as admin:
        admin.execute(f"ALTER SYSTEM SET default_transaction_read_only = {'on' if on else 'off'}")
        admin.execute("SELECT pg_reload_conf()")


@pytest.mark.parametrize("kind", ["sync", "asyncio"])
def test_a_host_list_pool_never_keeps_connections_to_a_server_fenced_read_only(replicas, kind):
    """A plain pool over a libpq host list with target_session_attrs=read-write:
    once its server turns read-only while up, a borrowed connection fails its
    probe (the server reported it) and a write refused with 25006 drains the
    pool: no connection to the read-only server is lent again, and writes
    resume as soon as a read-write server is there."""
    hosts = ",".join(f"127.0.0.1:{n.port}" for n in replicas.nodes[:2])  # primary, a replica
    url = f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"
    with replicas.admin(replicas.primary) as admin:
        admin.execute("DROP TABLE IF EXISTS fenced")
        admin.execute("CREATE TABLE fenced (n int)")

    def check_sync() -> None:
        with fastpool.create_pool(url, min_size=2, max_size=2, timeout=2,
                                  alive_bypass=3600) as pool:
            pool.wait()
            pool.execute("INSERT INTO fenced VALUES (1)")
            generation = pool.stats().generation
            _fence(replicas, True)
            try:
                # No probe (alive_bypass): a write meets the read-only server once
                # its backend has taken the reload (SIGHUP is asynchronous)...
                deadline = time.monotonic() + 10
                while True:
                    try:
                        pool.execute("INSERT INTO fenced VALUES (2)")
                    except Exception as exc:
                        assert "read-only" in str(exc), exc
                        break
                    assert time.monotonic() < deadline, "the reload never reached the backend"
                    time.sleep(0.05)
                assert pool.stats().generation > generation  # ...and the pool drained
                # No read-write host now: a borrower cannot get a connection at
                # all (never one to the read-only server).
                with pytest.raises((fastpool.PoolTimeout, fastpool.ConnectError)):
                    pool.execute("INSERT INTO fenced VALUES (3)")
            finally:
                _fence(replicas, False)
            until(lambda: _writes(pool), "writes back once the server is read-write")

    def _writes(pool: Any) -> bool:
        try:
            pool.execute("INSERT INTO fenced VALUES (4)")
            return True
        except Exception:
            return False

    async def check_async() -> None:
        async with fastpool.create_async_pool(url, min_size=1, max_size=1, timeout=2,
                                              alive_bypass=0) as pool:
            await pool.execute("INSERT INTO fenced VALUES (1)")
            _fence(replicas, True)
            try:
                # The probe on each borrow (alive_bypass=0) sees the server
                # read-only once its backend has taken the reload (SIGHUP is
                # asynchronous: until then the write may still go through, or
                # be refused if the reload lands between probe and write).
                deadline = time.monotonic() + 10
                while True:
                    try:
                        await pool.execute("INSERT INTO fenced VALUES (2)")
                    except (fastpool.PoolTimeout, fastpool.ConnectError):
                        break  # the connection replaced, and no read-write host
                    except Exception as exc:
                        assert "read-only" in str(exc), exc
                    assert time.monotonic() < deadline, "never seen read-only"
                    await asyncio.sleep(0.05)
                assert pool.stats().closed.get("broken", 0) + \
                    pool.stats().closed.get("drained", 0) >= 1
            finally:
                _fence(replicas, False)
            deadline = time.monotonic() + 15
            while True:
                try:
                    await pool.execute("INSERT INTO fenced VALUES (4)")
                    break
                except Exception:
                    assert time.monotonic() < deadline, "writes never came back"
                    await asyncio.sleep(0.1)

    if kind == "sync":
        check_sync()
    else:
        asyncio.run(check_async())


def test_a_write_inside_reads_after_still_counts_after_the_block(cluster, replicas):
    _table(cluster, replicas, "cluster_within")
    before = cluster.last_write_token()  # the table's creation
    assert before is not None
    with cluster.reads_after("0/1"):  # another process's (old) write
        cluster.execute("INSERT INTO cluster_within VALUES (1, 1)")
    # This context's own write outlives the block: its reads still see it.
    token = cluster.last_write_token()
    assert token is not None
    assert cluster._server.parse(token) > cluster._server.parse(before)
    replicas.pause(replicas.replicas[0])
    replicas.pause(replicas.replicas[1])
    with replicas.admin(replicas.primary) as admin:
        admin.execute("UPDATE cluster_within SET v = 2")  # not through the cluster
    with cluster.reads_after(token):
        cluster.execute("UPDATE cluster_within SET v = 3")
    assert cluster.fetchval("SELECT v FROM cluster_within WHERE k = 1") == 3
