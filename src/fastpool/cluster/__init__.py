"""A primary and its read replicas: routing, read-your-writes and failover.

::

    cluster = fastpool.create_cluster(
        primary="postgresql://db1/app", replicas=["postgresql://db2/app",
        "postgresql://db3/app"], max_size=10, max_replica_lag=5.0)
    cluster.execute("INSERT INTO t VALUES (%s)", (1,))   # the primary
    cluster.fetch("SELECT * FROM t")                    # a replica that has the insert

    # asyncio: the same API awaited, over one AsyncPool per server
    async with fastpool.create_async_cluster(primary=..., replicas=[...]) as cluster:
        await cluster.execute("INSERT INTO t VALUES (%s)", (1,))
        await cluster.fetch("SELECT * FROM t")

PostgreSQL (streaming replication, psycopg) and MariaDB (GTID replication,
mysqlclient; replicas are the servers with ``read_only`` on): what is asked of
each is in ``servers.py``; positions below are WAL positions on PostgreSQL
and GTID sequence numbers on MariaDB.

One ``Pool`` per server (the same pool options for each); ``AsyncCluster``
(``fastpool.cluster.aio``) has one ``AsyncPool`` per server, with any asyncio
client (psycopg, asyncpg, asyncmy, aiomysql), and the same rules
(``routing.py``) and the same monitor thread (``topology.py``), which asks
the servers on blocking connections of its own (psycopg, mysqlclient) and
hands pool work (drain on a role change) to the pools' event loop. Writes, transactions
and ``cluster.connection()`` go to the primary. ``fetch``/``fetchrow``/
``fetchval`` take ``route``:

* ``"replica"`` (the default): the less loaded of two usable replicas picked at
  random (power of two choices on the pools' in-use + waiting counts); a
  replica is usable when it is up and its replay lag is within
  ``max_replica_lag`` seconds. None usable: the primary.
* ``"replica_only"``: the same, but ``NoReplicaAvailable`` instead of the primary.
* ``"primary"``; ``"any"``: the usable replicas and the primary alike.

**Read-your-writes.** After a write through the cluster commits, the primary's
position (``pg_current_wal_insert_lsn()``; MariaDB's ``@@gtid_binlog_pos``),
asked on the same connection right after the statement or the COMMIT (one
round trip more per write), is kept in a context variable: the thread's, or
the asyncio task's. Until the monitor thread has seen a replica replay that far, that context's
reads go to the primary; no read waits and no read pays a round trip for it.
So right after a write a context reads from the primary for about one
``lag_interval`` plus the replicas' replay time. The position is also a token
(``cluster.last_write_token()``, text such as ``'0/3000148'``) that another
process passes back as ``route_after=token`` or ``with cluster.reads_after(token):``
(e.g. from a session cookie). Writes made another way (``cluster.primary``'s
own helpers, a batcher, a bulk load) are covered by ``cluster.note_write()``.

**Failover.** The monitor thread (``fastpool.cluster.topology``) notices the
primary gone or read-only (and a write failing that way, or a broken
connection in any node's pool, wakes it at once), asks every server its role
with ``target_session_attrs=read-write`` semantics, and makes the first
read-write one the primary; the pools of the nodes whose role changed are
drained. A write waiting for a connection of the old primary moves to the new
one as soon as it is known, so writes resume within one monitor round of the
promotion. In-flight work gets the usual outcomes: a statement lost in flight
raises the driver's error; ``transaction`` runs again what was lost before
COMMIT and raises ``TransactionOutcomeUnknown`` for a lost COMMIT. A primary
URL with a libpq host list (``host=a,b``) gets
``target_session_attrs=read-write`` unless it says otherwise, and its pool is
drained when the server behind it changes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from fastpool.backoff import Backoff
from fastpool.cluster.routing import ClusterBase, PrimarySourceBase
from fastpool.cluster.servers import server_for
from fastpool.cluster.topology import PRIMARY, REPLICA, Node, Topology
from fastpool.options import seconds
from fastpool.pool import Pool, create_pool
from fastpool.query.helpers import EXEC, FETCH, MANY, ROW, VAL
from fastpool.transaction import DEFAULT_BACKOFF, run_transaction

__all__ = ["AsyncCluster", "AsyncReplicaReader", "Cluster", "ReplicaReader",
           "create_async_cluster", "create_cluster"]

R = TypeVar("R")

logger = logging.getLogger("fastpool")


class _PrimarySource(PrimarySourceBase):
    """The primary's connections for threads (see ``PrimarySourceBase``)."""

    def acquire(self, timeout: float | None = None) -> Any:
        topo = self._cluster._topo
        deadline = None
        while True:
            node = topo.primary
            pool = node.pool
            if deadline is None:
                deadline = self._deadline(pool, timeout)
            try:
                conn = pool.acquire(max(deadline - time.monotonic(), 0.0))
            except Exception as exc:
                if self._try_again(exc, node, deadline):
                    continue
                raise
            self._lent[id(conn)] = pool
            return conn

    def release(self, conn: Any) -> None:
        pool = self._lent.pop(id(conn), None) or self._cluster._topo.primary.pool
        try:
            if self._record:
                self._cluster._wrote(conn)  # type: ignore[attr-defined]
        finally:
            pool.release(conn)

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Any]:
        conn = self.acquire(timeout)
        try:
            yield conn
        finally:
            self.release(conn)


class Cluster(ClusterBase):
    """A primary and its read replicas (see the module documentation).

    ``cluster.primary`` is the primary's ``Pool`` now (it changes on failover);
    ``cluster.replica()`` a reader over the replicas; ``stats()`` each node's
    role, lag and pool statistics. Close it (or use ``with``).
    """

    def __init__(self, primary: str, replicas: Sequence[str] = (), *,
                 max_replica_lag: float = 5.0, lag_interval: float = 0.1,
                 name: str | None = None, **pool_options: Any) -> None:
        super().__init__(primary, replicas, max_replica_lag=max_replica_lag,
                         lag_interval=lag_interval, name=name, pool_options=pool_options,
                         what="create_cluster")
        self._writer = _PrimarySource(self, record=True)
        self._reader = _PrimarySource(self, record=False)
        nodes: list[Node] = []
        try:
            for i, url in enumerate(self.urls):
                pool = create_pool(url, **self._node_options(i, pool_options))
                nodes.append(Node(f"{self.name}-{i}", pool, PRIMARY if i == 0 else REPLICA))
            self._server = server_for(nodes[0].monitor.client)
            self._check_kinds(nodes)
            self._topo = Topology(nodes, max_replica_lag=self.max_replica_lag,
                                  interval=self.lag_interval, name=self.name,
                                  primary_source=self._reader, server=self._server)
        except BaseException:
            for node in nodes:
                node.pool.close(0)
            raise

    # ---- the nodes -------------------------------------------------------------

    @property
    def primary(self) -> Pool:
        """The primary's pool now (another one after a failover)."""
        pool: Pool = self._topo.primary.pool
        return pool

    @property
    def replicas(self) -> list[Pool]:
        """The pools of the servers that are replicas now (usable or not)."""
        return self._replica_pools()

    def replica(self) -> ReplicaReader:
        """A pool-like reader over the replicas (``route="replica"``)."""
        return ReplicaReader(self)

    # ---- writes: the primary ---------------------------------------------------

    def execute(self, sql: str, params: Any = None, *, conn: Any = None) -> int:
        """Run one statement on the primary (committed on its own, or on
        ``conn`` of a ``cluster.transaction``); returns rows affected."""
        if conn is not None:
            return int(self._writer.pool_of(conn).execute(sql, params, conn=conn))
        call = self._topo.primary.pool._queries.call
        return int(call(self._writer, EXEC, sql, params, None, None))

    def executemany(self, sql: str, params_seq: Iterable[Any], *, conn: Any = None) -> int:
        """``execute`` for each parameter set, in one transaction on the primary."""
        if conn is not None:
            return int(self._writer.pool_of(conn).executemany(sql, params_seq, conn=conn))
        call = self._topo.primary.pool._queries.call
        return int(call(self._writer, MANY, sql, params_seq, None, None))

    def transaction(self, fn: Callable[[Any], R], *, retries: int = 3,
                    backoff: Backoff = DEFAULT_BACKOFF) -> R:
        """``pool.transaction`` on the primary (followed across a failover:
        an attempt lost before COMMIT runs again on the new primary)."""
        return run_transaction(self._writer, fn, retries=retries, backoff=backoff,
                               finished=self._writer.finished, stats=self.retry_stats)

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Any]:
        """A primary connection (``with``: committed on success, rolled back on
        an error); its writes count for read-your-writes."""
        with self._topo.primary.pool.connection(timeout) as conn:
            yield conn
        self.note_write()

    # ---- reads: routed ------------------------------------------------------------

    def fetch(self, sql: str, params: Any = None, *, route: str = "replica",
              route_after: str | None = None) -> list[Any]:
        """All rows of a query, from the node ``route`` picks (see the module
        documentation); ``route_after``: a write token that node must have replayed."""
        node = self._pick(route, route_after)
        try:
            rows: list[Any] = node.call(node.source, FETCH, sql, params, None, None)
            return rows
        except Exception as exc:
            again: list[Any] = self._read_again(exc, node, FETCH, sql, params, route,
                                                route_after)
            return again

    def fetchrow(self, sql: str, params: Any = None, *, route: str = "replica",
                 route_after: str | None = None) -> Any:
        """The first row of a query, or None (routed as ``fetch``)."""
        node = self._pick(route, route_after)
        try:
            return node.call(node.source, ROW, sql, params, None, None)
        except Exception as exc:
            return self._read_again(exc, node, ROW, sql, params, route, route_after)

    def fetchval(self, sql: str, params: Any = None, *, route: str = "replica",
                 route_after: str | None = None) -> Any:
        """The first column of the first row, or None (routed as ``fetch``)."""
        node = self._pick(route, route_after)
        try:
            return node.call(node.source, VAL, sql, params, None, None)
        except Exception as exc:
            return self._read_again(exc, node, VAL, sql, params, route, route_after)

    def _read_again(self, exc: Exception, node: Node, kind: str, sql: str, params: Any,
                    route: str, route_after: str | None) -> Any:
        """A read failed: once more elsewhere if ``_read_elsewhere`` says so."""
        other = self._read_elsewhere(exc, node, route, route_after)
        if other is None:
            try:
                raise exc
            finally:
                exc = None  # type: ignore[assignment]  # no cycle through this frame
        return other.call(other.source, kind, sql, params, None, None)

    # ---- read-your-writes --------------------------------------------------------

    def _wrote(self, conn: Any) -> None:
        """After a write on ``conn`` (still lent): the primary's position, asked
        on the same connection without a transaction of its own."""
        lsn = None
        try:
            lsn = self._server.position_after_write(conn, self._topo.primary.pool.adapter)
        except Exception as exc:
            logger.debug("fastpool: cluster %r: no position after a write: %s", self.name,
                         str(exc))  # the text: a kept record must not keep the frames
        self._wrote_at(lsn)

    def note_write(self) -> str:
        """Count a write made without the cluster's helpers (``cluster.primary``'s
        own, a batcher, a bulk load) for this context's read-your-writes: asks
        the primary's WAL position now. Returns the token."""
        self._writer.release(self._writer.acquire())  # the release records it
        return self._token_now()

    # ---- the rest -----------------------------------------------------------------

    def rediscover(self, timeout: float = 5.0) -> None:
        """Ask every server its role now (the monitor does it on its own when
        the primary fails); waits up to ``timeout`` for the round."""
        topo = self._topo
        self._ask_roles()
        deadline = time.monotonic() + seconds("timeout", timeout)
        while topo._rediscover and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the monitor and close every node's pool."""
        self._topo.close(seconds("timeout", timeout))

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReplicaReader:
    """``cluster.replica()``: the cluster's reads, routed to replicas (falling
    back to the primary when none is usable, as ``route="replica"``)."""

    def __init__(self, cluster: Cluster, route: str = "replica") -> None:
        self._cluster = cluster
        self._route = route

    def fetch(self, sql: str, params: Any = None) -> list[Any]:
        return self._cluster.fetch(sql, params, route=self._route)

    def fetchrow(self, sql: str, params: Any = None) -> Any:
        return self._cluster.fetchrow(sql, params, route=self._route)

    def fetchval(self, sql: str, params: Any = None) -> Any:
        return self._cluster.fetchval(sql, params, route=self._route)

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Any]:
        """A connection of the replica a read would go to now."""
        node = self._cluster._pick(self._route, None)
        with node.source.connection(timeout) as conn:
            yield conn


def create_cluster(primary: str, replicas: Sequence[str] = (), **options: Any) -> Cluster:
    """A ``Cluster`` over a primary URL and replica URLs; ``options`` are
    ``max_replica_lag`` (seconds, default 5), ``lag_interval`` (the monitor's
    period, default 0.1 s), ``name``, and any ``create_pool`` option, used for
    every node's pool."""
    return Cluster(primary, replicas, **options)


from fastpool.cluster.aio import (  # noqa: E402  (it builds on this module's rules)
    AsyncCluster,
    AsyncReplicaReader,
    create_async_cluster,
)
