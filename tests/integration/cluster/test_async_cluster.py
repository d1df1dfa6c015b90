"""``AsyncCluster`` over real servers: a PostgreSQL primary with two streaming
replicas, through psycopg's AsyncConnection and asyncpg, and a MariaDB
primary with a GTID replica, through asyncmy and aiomysql (tests/fix_replicas.py).

The same checks as the thread cluster's (test_routing.py, test_mariadb.py):
which node served each read (asked in the read itself), the lag skip,
read-your-writes in each task's own context with a replica paused behind the
write, tokens across tasks, a lost replica read run again elsewhere, and a
failover: the primary stopped and a replica promoted while tasks write.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import fastpool
from fastpool import ConfigError, NoReplicaAvailable
from tests.fix_replicas import MariaDBSet, ReplicaSet

PG_CLIENTS = {"psycopg": "postgresql://", "asyncpg": "postgresql+asyncpg://"}
MARIADB_CLIENTS = {"asyncmy": "mysql+asyncmy://", "aiomysql": "mysql+aiomysql://"}


def _urls(servers: ReplicaSet | MariaDBSet, scheme: str) -> tuple[str, list[str]]:
    def url(node: Any) -> str:
        return scheme + node.url.partition("://")[2]
    return url(servers.primary), [url(n) for n in servers.replicas]


async def until(cond: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.01)


def run(servers: ReplicaSet | MariaDBSet, scheme: str,
        body: Callable[[fastpool.AsyncCluster], Awaitable[None]], *, resume: bool = True,
        **options: Any) -> None:
    """``await body(cluster)`` over a new AsyncCluster whose replicas are usable;
    closed, and every replica's replay resumed, at the end."""
    primary, replicas = _urls(servers, scheme)

    async def main() -> None:
        async with fastpool.create_async_cluster(
                primary, replicas, **{"max_size": 4, "max_replica_lag": 60.0,
                                      "lag_interval": 0.05, **options}) as cluster:
            await until(lambda: len(cluster._topo.usable) == len(servers.replicas),
                        "every replica usable")
            await body(cluster)
        assert cluster.closed
        assert all(n.pool.closed for n in cluster._topo.nodes)
        # The monitor has stopped and closed its own connections.
        assert not cluster._topo._thread.is_alive()
        assert all(n.conn is None for n in cluster._topo.nodes)

    try:
        asyncio.run(main())
    finally:
        for node in servers.replicas if resume else ():
            servers.resume(node)  # type: ignore[arg-type]


def _mark(scheme: str) -> str:
    return "$1" if "asyncpg" in scheme else "%s"


async def read_your_writes(cluster: fastpool.AsyncCluster, table: str, port_sql: str,
                           scheme: str, in_a_row: int = 300, tasks: int = 32,
                           each: int = 20) -> Counter[int]:
    """``tests.fix_replicas.read_your_writes`` for tasks: each task its own
    context and key; every read must see the task's own last write."""
    served: Counter[int] = Counter()
    m1, m2 = ("$1", "$2") if "asyncpg" in scheme else ("%s", "%s")

    async def loop(key: int, n: int) -> None:
        for i in range(1, n + 1):
            await cluster.execute(f"UPDATE {table} SET v = {m1} WHERE k = {m2}", (i, key))
            v, port = await cluster.fetchrow(
                f"SELECT v, {port_sql} FROM {table} WHERE k = {m1}", (key,))
            assert v == i, f"key {key}: wrote {i}, read {v} from port {port}"
            served[port] += 1

    await loop(tasks, in_a_row)
    await asyncio.gather(*(loop(key, each) for key in range(tasks)))
    assert sum(served.values()) == in_a_row + tasks * each
    return served


# ---- PostgreSQL -------------------------------------------------------------------

_SERVED = "SELECT inet_server_port(), pg_is_in_recovery()"


@pytest.fixture(params=sorted(PG_CLIENTS))
def pg_scheme(request: pytest.FixtureRequest) -> str:
    return PG_CLIENTS[request.param]


def test_async_reads_go_to_both_replicas_and_writes_to_the_primary(replicas, pg_scheme):
    m = _mark(pg_scheme)

    async def body(cluster: fastpool.AsyncCluster) -> None:
        ports = Counter([tuple(await cluster.fetchrow(_SERVED)) for _ in range(200)])
        assert set(ports) == {(n.port, True) for n in replicas.replicas}, ports
        assert min(ports.values()) >= 40, ports
        assert tuple(await cluster.fetchrow(_SERVED, route="primary")) == (
            replicas.primary.port, False)
        anywhere = {(await cluster.fetchrow(_SERVED, route="any"))[0] for _ in range(60)}
        assert anywhere <= {n.port for n in replicas.nodes}
        reader = cluster.replica()
        assert await reader.fetchval("SELECT pg_is_in_recovery()") is True
        async with reader.connection() as conn:
            assert isinstance(conn, type(await _own_connection(cluster)))
        await cluster.execute("DROP TABLE IF EXISTS acluster_route")
        await cluster.execute("CREATE TABLE acluster_route (k int PRIMARY KEY, v int)")
        assert await cluster.execute(f"INSERT INTO acluster_route VALUES ({m}, 1)", (1,)) == 1
        assert await cluster.executemany(f"INSERT INTO acluster_route VALUES ({m}, 2)",
                                         [(2,), (3,)]) in (2, -1)  # asyncpg: -1

        async def on_primary(conn: Any) -> Any:
            await cluster.execute(f"INSERT INTO acluster_route VALUES ({m}, 4)", (4,),
                                  conn=conn)
            return await cluster.primary.fetchrow(_SERVED, conn=conn)

        assert tuple(await cluster.transaction(on_primary)) == (replicas.primary.port, False)
        async with cluster.connection() as conn:
            assert tuple(await cluster.primary.fetchrow(_SERVED, conn=conn)) == (
                replicas.primary.port, False)
        assert await cluster.fetchval("SELECT count(*) FROM acluster_route",
                                      route="primary") == 4
        stats = cluster.stats()
        assert stats["primary"] == cluster.primary.name
        assert [(n["role"], n["usable"]) for n in stats["nodes"]] == [
            ("primary", False), ("replica", True), ("replica", True)]
        assert all(isinstance(n["pool"], fastpool.PoolStats) for n in stats["nodes"])
        assert repr(cluster).startswith("<AsyncCluster ")

    run(replicas, pg_scheme, body)


async def _own_connection(cluster: fastpool.AsyncCluster) -> Any:
    """The driver's own connection class, as the primary's pool lends it."""
    conn = await cluster.primary.acquire()
    await cluster.primary.release(conn)
    return conn


def test_async_read_your_writes_and_tokens_with_a_replica_paused(replicas, pg_scheme):
    paused, other = replicas.replicas
    m = _mark(pg_scheme)

    async def body(cluster: fastpool.AsyncCluster) -> None:
        await cluster.execute("DROP TABLE IF EXISTS acluster_ryw")
        await cluster.execute("CREATE TABLE acluster_ryw (k int PRIMARY KEY, v int NOT NULL)")
        await cluster.executemany(f"INSERT INTO acluster_ryw VALUES ({m}, 0)",
                                  [(k,) for k in range(33)])
        replicas.wait_replayed()
        replicas.pause(paused)  # usable by lag (max 60 s): only read-your-writes protects
        served = await read_your_writes(cluster, "acluster_ryw", "inet_server_port()",
                                        pg_scheme)
        assert paused.port not in served, served
        # A token from another task carries it; without one a task may read old data.
        replicas.pause(other)

        async def writer() -> str | None:
            await cluster.execute("UPDATE acluster_ryw SET v = 7 WHERE k = 0")
            return cluster.last_write_token()

        def elsewhere(coro: Any) -> Any:  # a task in a context of its own (another process)
            return contextvars.Context().run(asyncio.ensure_future, coro)

        token = await elsewhere(writer())
        assert token is not None
        assert await elsewhere(_token_of(cluster)) is None  # that context wrote nothing
        # Without the token another context reads the paused replicas' old value...
        assert await elsewhere(cluster.fetchval(  # 0 or 20, as of each pause
            "SELECT v FROM acluster_ryw WHERE k = 0", route="replica_only")) != 7
        # ...with it, the primary's (no replica has replayed the write).
        assert await elsewhere(cluster.fetchval(
            "SELECT v FROM acluster_ryw WHERE k = 0", route_after=token)) == 7

        async def within() -> None:
            with cluster.reads_after(token):
                assert await cluster.fetchval("SELECT v FROM acluster_ryw WHERE k = 0") == 7
                with pytest.raises(NoReplicaAvailable, match="replayed"):
                    await cluster.fetchval("SELECT 1", route="replica_only")

        await elsewhere(within())
        # A write made around the cluster's helpers counts once noted.
        async with cluster.primary.connection() as conn:
            await cluster.primary.execute("UPDATE acluster_ryw SET v = 8 WHERE k = 0",
                                          conn=conn)

        async def noted() -> tuple[str, Any]:
            token = await cluster.note_write()
            return token, await cluster.fetchval("SELECT v FROM acluster_ryw WHERE k = 0")

        noted_token, seen = await elsewhere(noted())
        assert seen == 8 and noted_token
        # Caught up again: this task's reads go back to the replicas.
        for node in replicas.replicas:
            replicas.resume(node)
        replicas.wait_replayed()
        deadline = time.monotonic() + 10
        while not (await cluster.fetchrow(_SERVED))[1]:
            assert time.monotonic() < deadline, "reads never went back to a replica"
            await asyncio.sleep(0.02)

    run(replicas, pg_scheme, body)


async def _token_of(cluster: fastpool.AsyncCluster) -> str | None:
    return cluster.last_write_token()


def test_async_bad_routes_tokens_and_mixed_clients(replicas):
    async def body(cluster: fastpool.AsyncCluster) -> None:
        with pytest.raises(ConfigError, match="route must be one of"):
            await cluster.fetch("SELECT 1", route="replicas")
        with pytest.raises(ConfigError, match="write token"):
            await cluster.fetch("SELECT 1", route_after="yesterday")
        await cluster.rediscover()
        assert cluster.stats()["failovers"] == 0
        assert cluster.stats()["primary"] == cluster.primary.name

    run(replicas, "postgresql://", body)
    primary, others = _urls(replicas, "postgresql+asyncpg://")

    async def mixed() -> None:
        await fastpool.create_async_cluster(primary, [others[0].replace(
            "postgresql+asyncpg://", "postgresql://")])

    with pytest.raises(ConfigError, match="same client"):
        asyncio.run(mixed())


def test_async_lag_skip_and_no_replica(replicas, pg_scheme):
    async def body(cluster: fastpool.AsyncCluster) -> None:
        cluster._topo.max_replica_lag = cluster.max_replica_lag = 0.3
        for node in replicas.replicas:
            replicas.pause(node)
        await cluster.execute("DROP TABLE IF EXISTS acluster_lag")
        await cluster.execute("CREATE TABLE acluster_lag (k int)")  # the primary moves on
        await until(lambda: not cluster._topo.usable, "both replicas skipped")
        with pytest.raises(NoReplicaAvailable, match="lag"):
            await cluster.fetch("SELECT 1", route="replica_only")
        assert tuple(await cluster.fetchrow(_SERVED)) == (replicas.primary.port, False)
        for node in replicas.replicas:
            replicas.resume(node)
        await until(lambda: len(cluster._topo.usable) == 2, "both replicas usable again")
        assert {(await cluster.fetchrow(_SERVED))[0] for _ in range(60)} == {
            n.port for n in replicas.replicas}

    run(replicas, pg_scheme, body)


def test_an_async_read_that_loses_its_replica_connection_runs_again_elsewhere(replicas):
    async def body(cluster: fastpool.AsyncCluster) -> None:
        for pool in cluster.replicas:
            await pool.wait()
        pids = [row["session_id"] for row in await cluster.replicas[0].server_activity()]
        with replicas.admin(replicas.replicas[0]) as admin:  # the pool's, not the monitor's
            killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM "
                                   "unnest(%s::int[]) AS pid", (pids,)).fetchone()[0]
        assert killed == 2
        assert [await cluster.fetchval("SELECT 1") for _ in range(20)] == [1] * 20
        broken = sum(s["pool"].closed.get("broken", 0) for s in cluster.stats()["nodes"])
        assert broken >= 1

    # alive_bypass: the killed connections are lent without a probe, so the read meets it.
    run(replicas, "postgresql://", body, min_size=2, max_size=2, alive_bypass=3600)


@pytest.mark.slow
def test_async_failover_moves_writes_to_the_promoted_replica(fresh_replicas, pg_scheme):
    rs = fresh_replicas
    m = _mark(pg_scheme)
    old, new = rs.primary, rs.replicas[0]
    acked: list[int] = []
    unknown: list[int] = []
    errors: Counter[str] = Counter()

    async def body(cluster: fastpool.AsyncCluster) -> None:
        await cluster.execute("CREATE TABLE afailover (n int PRIMARY KEY)")
        stop = asyncio.Event()

        async def writer(t: int) -> None:
            n = t
            while not stop.is_set():
                n += 8
                try:
                    if n % 5:
                        await cluster.execute(f"INSERT INTO afailover VALUES ({m})", (n,))
                    else:  # some as transactions (run again if lost before COMMIT)
                        async def insert(conn: Any, n: int = n) -> None:
                            await cluster.execute(f"INSERT INTO afailover VALUES ({m})", (n,),
                                                  conn=conn)
                        await cluster.transaction(insert)
                    acked.append(n)
                except fastpool.TransactionOutcomeUnknown:
                    unknown.append(n)  # may or may not be there: not counted as acked
                except Exception as exc:  # lost connections while the primary is gone
                    errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.05)

        tasks = [asyncio.ensure_future(writer(t)) for t in range(8)]
        await asyncio.sleep(0.5)
        rs.wait_replayed()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, rs.stop, old)
        await loop.run_in_executor(None, rs.promote, new)
        t0 = time.monotonic()
        await until(lambda: cluster.primary.name.endswith("-1"), "the promoted replica "
                    "is the primary", timeout=30)
        before = len(acked)
        await until(lambda: len(acked) > before + 20, "writes resumed", timeout=30)
        resumed = time.monotonic() - t0
        stop.set()
        await asyncio.gather(*tasks)
        stats = cluster.stats()
        assert stats["failovers"] == 1
        assert [n["role"] for n in stats["nodes"]][:2] == ["down", "primary"]
        # The drains went through the pools' loop: the promoted node's
        # connections (opened to a replica) were replaced.
        assert stats["nodes"][1]["pool"].closed.get("drained", 0) >= 1, stats["nodes"][1]
        on_new = {r[0] for r in await cluster.fetch("SELECT n FROM afailover",
                                                    route="primary")}
        lost = set(acked) - on_new
        assert not lost, f"acknowledged writes missing on the new primary: {sorted(lost)[:10]}"
        print(f"async failover ({pg_scheme}): {len(acked)} writes acknowledged, none lost, "
              f"{len(unknown)} unknown; writes back {resumed:.2f} s after the promotion; "
              f"errors meanwhile: {dict(errors)}")

    run(rs, pg_scheme, body, resume=False)  # the promoted one replays nothing


def test_a_replica_down_at_start_gets_no_reads_and_the_cluster_opens(replicas):
    from tests.fix_db import free_port

    primary, _ = _urls(replicas, "postgresql+asyncpg://")
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres"

    async def main() -> None:
        async with fastpool.create_async_cluster(primary, [nowhere], lag_interval=0.05,
                                                 connect_timeout=1) as cluster:
            for _ in range(20):
                assert tuple(await cluster.fetchrow(_SERVED)) == (replicas.primary.port,
                                                                  False)
                await asyncio.sleep(0.01)
            await until(lambda: cluster.stats()["nodes"][1]["up"] is False,
                        "the replica seen down")
            assert cluster.stats()["nodes"][1]["usable"] is False
            with pytest.raises(NoReplicaAvailable, match="down"):
                await cluster.fetch("SELECT 1", route="replica_only")

    asyncio.run(main())


def test_async_cluster_bad_input_is_named_before_anything_connects():
    with pytest.raises(ConfigError, match="replicas must be a list"):
        fastpool.create_async_cluster("postgresql://x/y", "postgresql://z/y")
    with pytest.raises(ConfigError, match="not driver="):
        fastpool.create_async_cluster("postgresql://x/y", [], driver="asyncpg")
    with pytest.raises(ConfigError, match="max_replica_lag"):
        fastpool.create_async_cluster("postgresql://x/y", [], max_replica_lag=-1)
    with pytest.raises(ConfigError, match="wait must be"):
        fastpool.create_async_cluster("postgresql://x/y", [], wait="no")
    with pytest.raises(ConfigError, match="monitor_options must be"):
        fastpool.create_async_cluster("postgresql://x/y", [], monitor_options="x")

    async def unreachable() -> None:
        await fastpool.create_async_cluster("postgresql://postgres@127.0.0.1:1/postgres", [])

    with pytest.raises(fastpool.ConnectError, match="monitor cannot connect to the primary"):
        asyncio.run(unreachable())

    with pytest.raises(fastpool.UnsupportedClient, match="PostgreSQL and MariaDB"):
        fastpool.create_async_cluster("sqlite:///:memory:", [])


# ---- MariaDB ----------------------------------------------------------------------

@pytest.fixture(params=sorted(MARIADB_CLIENTS))
def mariadb_scheme(request: pytest.FixtureRequest) -> str:
    return MARIADB_CLIENTS[request.param]


def test_async_mariadb_routing_lag_skip_and_read_your_writes(mariadb_replicas, mariadb_scheme):
    ms = mariadb_replicas
    replica = ms.replicas[0]
    table = f"acluster_ryw_{uuid.uuid4().hex[:8]}"

    async def body(cluster: fastpool.AsyncCluster) -> None:
        served = {tuple(await cluster.fetchrow("SELECT @@port, @@read_only"))
                  for _ in range(30)}
        assert served == {(replica.port, 1)}
        # A new name: aiomysql turns DROP TABLE IF EXISTS's note into a warning.
        await cluster.execute(f"CREATE TABLE {table} (k int PRIMARY KEY, v int NOT NULL) "
                              "ENGINE=InnoDB")
        await cluster.executemany(f"INSERT INTO {table} VALUES (%s, 0)",
                                  [(k,) for k in range(33)])
        ms.wait_replayed()
        ms.pause(replica)
        served_by = await read_your_writes(cluster, table, "@@port", mariadb_scheme)
        assert replica.port not in served_by
        token = cluster.last_write_token()
        with pytest.raises(NoReplicaAvailable, match="replayed"):
            await cluster.fetchval("SELECT 1", route="replica_only")
        cluster._topo.max_replica_lag = cluster.max_replica_lag = 0.3
        await until(lambda: not cluster._topo.usable, "the stopped replica skipped")
        ms.resume(replica)
        ms.wait_replayed()
        await until(lambda: len(cluster._topo.usable) == 1, "the replica usable again")
        assert await cluster.fetchval(f"SELECT v FROM {table} WHERE k = 32",
                                      route="replica_only", route_after=token) == 300

    run(ms, mariadb_scheme, body)


def test_failed_async_cluster_reads_and_writes_leave_no_frame_of_ours_in_a_cycle(replicas):
    import gc

    from tests.integration.test_failures_leave_no_cycles import failed_async, frames_in_cycles

    async def body(cluster: fastpool.AsyncCluster) -> None:
        async def in_transaction(conn: Any) -> None:
            await cluster.execute("SELECT * FROM fastpool_no_such_table_nc", conn=conn)

        gc.collect()
        gc.disable()
        try:
            await failed_async(lambda: cluster.fetch("SELECT * FROM fastpool_no_such_table_nc"))
            await failed_async(lambda: cluster.fetch("SELECT 1", route="replica_only",
                                                     route_after="FFFFFFFF/0"))
            await failed_async(lambda: cluster.execute("SELECT * FROM fastpool_no_such_table_nc"))
            await failed_async(lambda: cluster.transaction(in_transaction))
            assert frames_in_cycles() == []
        finally:
            gc.enable()

    run(replicas, "postgresql+asyncpg://", body)
