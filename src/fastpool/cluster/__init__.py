"""A primary and its read replicas: routing, read-your-writes and failover.

::

    cluster = fastpool.create_cluster(
        primary="postgresql://db1/app", replicas=["postgresql://db2/app",
        "postgresql://db3/app"], max_size=10, max_replica_lag=5.0)
    cluster.execute("INSERT INTO t VALUES (%s)", (1,))   # the primary
    cluster.fetch("SELECT * FROM t")                    # a replica that has the insert

PostgreSQL (streaming replication, psycopg) and MariaDB (GTID replication,
mysqlclient; replicas are the servers with ``read_only`` on): what is asked of
each is in ``servers.py``; positions below are WAL positions on PostgreSQL
and GTID sequence numbers on MariaDB.

One ``Pool`` per server (the same pool options for each). Writes, transactions
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
import contextvars
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from fastpool.backoff import Backoff
from fastpool.cluster.servers import server_for
from fastpool.cluster.topology import EVERYTHING, PRIMARY, REPLICA, Node, Topology
from fastpool.errors import (
    ConfigError,
    ConnectError,
    ErrorKind,
    NoReplicaAvailable,
    PoolClosed,
)
from fastpool.options import seconds
from fastpool.pool import Pool, create_pool
from fastpool.query.helpers import EXEC, FETCH, MANY, ROW, VAL
from fastpool.transaction import DEFAULT_BACKOFF, RetryStats, run_transaction

__all__ = ["Cluster", "ReplicaReader", "create_cluster"]

R = TypeVar("R")

logger = logging.getLogger("fastpool")

_ROUTES = ("replica", "replica_only", "primary", "any")
_cluster_numbers = itertools.count(1)
_random = random.random



class _PrimarySource:
    """The connection source of the cluster's writes and primary reads (see
    ``fastpool.source``): the current primary's pool, followed across a
    failover. ``record``: after each use, the primary's WAL position goes into
    the caller's context (read-your-writes)."""

    is_async = False

    def __init__(self, cluster: Cluster, record: bool) -> None:
        self._cluster = cluster
        self._record = record
        self._lent: dict[int, Pool] = {}
        self.name = f"{cluster.name}-primary"

    @property
    def adapter(self) -> Any:
        return self._cluster._topo.primary.pool.adapter

    def acquire(self, timeout: float | None = None) -> Any:
        topo = self._cluster._topo
        deadline = None
        while True:
            node = topo.primary
            pool = node.pool
            if deadline is None:
                deadline = time.monotonic() + (pool.timeout if timeout is None
                                               else seconds("timeout", timeout))
            try:
                conn = pool.acquire(max(deadline - time.monotonic(), 0.0))
            except Exception as exc:
                # The primary moved while this caller waited (its pool's waiters
                # were failed with ConnectError): try the new one.
                if (isinstance(exc, (ConnectError, PoolClosed)) and topo.primary is not node
                        and time.monotonic() < deadline):
                    continue
                topo.failed(exc, None)  # a timeout or connect error: look at the roles
                raise
            self._lent[id(conn)] = pool
            return conn

    def release(self, conn: Any) -> None:
        pool = self._lent.pop(id(conn), None) or self._cluster._topo.primary.pool
        try:
            if self._record:
                self._cluster._wrote(conn)
        finally:
            pool.release(conn)

    def pool_of(self, conn: Any) -> Pool:
        return self._lent.get(id(conn)) or self._cluster._topo.primary.pool

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Any]:
        conn = self.acquire(timeout)
        try:
            yield conn
        finally:
            self.release(conn)

    def classify(self, exc: BaseException) -> ErrorKind:
        kind = self._cluster._topo.primary.pool.classify(exc)
        self._cluster._topo.failed(exc, kind)
        return kind

    def writing(self, tables: Iterable[str]) -> contextlib.AbstractContextManager[None]:
        return self._cluster._topo.primary.pool.writing(tables)

    def finished(self, conn: Any, committed: bool) -> None:
        """The transaction runner's callback: the query layer of the pool that lent ``conn``."""
        self.pool_of(conn)._queries.finished(conn, committed)


class Cluster:
    """A primary and its read replicas (see the module documentation).

    ``cluster.primary`` is the primary's ``Pool`` now (it changes on failover);
    ``cluster.replica()`` a reader over the replicas; ``stats()`` each node's
    role, lag and pool statistics. Close it (or use ``with``).
    """

    def __init__(self, primary: str, replicas: Sequence[str] = (), *,
                 max_replica_lag: float = 5.0, lag_interval: float = 0.1,
                 name: str | None = None, **pool_options: Any) -> None:
        if isinstance(replicas, str) or not all(isinstance(u, str) for u in replicas):
            raise ConfigError(f"replicas must be a list of URLs, got {replicas!r}")
        if not isinstance(primary, str):
            raise ConfigError(f"primary must be a URL, got {primary!r}")
        self.max_replica_lag = seconds("max_replica_lag", max_replica_lag)
        self.lag_interval = seconds("lag_interval", lag_interval, allow_zero=False)
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"name must be a string, got {name!r}")
        for key in ("name", "connect", "driver"):
            if key in pool_options:
                raise ConfigError(f"create_cluster takes URLs and pool options, not {key}=")
        self.name = name or f"cluster-{next(_cluster_numbers)}"
        # The write token of this context (a WAL position; 0: none yet).
        self._written: contextvars.ContextVar[int] = contextvars.ContextVar(
            f"fastpool.cluster.{self.name}", default=0)
        self.retry_stats = RetryStats()
        self._writer = _PrimarySource(self, record=True)
        self._reader = _PrimarySource(self, record=False)
        nodes: list[Node] = []
        try:
            for i, url in enumerate([primary, *replicas]):
                options = dict(pool_options)
                if i == 0:
                    _read_write(url, options)
                pool = create_pool(url, name=f"{self.name}-{i}", **options)
                role = PRIMARY if i == 0 else REPLICA
                nodes.append(Node(f"{self.name}-{i}", pool, role))
                server = server_for(pool.driver.client)
                if server.kind != nodes[0].pool.driver.client.kind:  # type: ignore[union-attr]
                    raise ConfigError(f"create_cluster: {pool.driver.describe()} is not the "
                                      "same kind of server as the primary")
            self._server = server_for(nodes[0].pool.driver.client)
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
        return self._topo.primary.pool

    @property
    def replicas(self) -> list[Pool]:
        """The pools of the servers that are replicas now (usable or not)."""
        return [n.pool for n in self._topo.nodes if n.role == REPLICA]

    def replica(self) -> ReplicaReader:
        """A pool-like reader over the replicas (``route="replica"``)."""
        return ReplicaReader(self)

    # ---- writes: the primary ---------------------------------------------------

    def execute(self, sql: str, params: Any = None, *, conn: Any = None) -> int:
        """Run one statement on the primary (committed on its own, or on
        ``conn`` of a ``cluster.transaction``); returns rows affected."""
        if conn is not None:
            return self._writer.pool_of(conn).execute(sql, params, conn=conn)
        call = self._topo.primary.pool._queries.call
        return int(call(self._writer, EXEC, sql, params, None, None))

    def executemany(self, sql: str, params_seq: Iterable[Any], *, conn: Any = None) -> int:
        """``execute`` for each parameter set, in one transaction on the primary."""
        if conn is not None:
            return self._writer.pool_of(conn).executemany(sql, params_seq, conn=conn)
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

    def _pick(self, route: str, route_after: str | None) -> Node:
        """The node a read goes to: among the route's candidates that have
        replayed this context's last write, the less loaded of two at random."""
        topo = self._topo
        if route == "replica" or route == "replica_only":
            nodes, floor = topo.replica_view
        elif route == "any":
            nodes, floor = topo.any_view
        elif route == "primary":
            return topo.primary
        else:
            raise ConfigError(f"route must be one of {', '.join(map(repr, _ROUTES))}, "
                              f"got {route!r}")
        need = self._written.get()
        if route_after is not None:
            need = max(need, self._server.parse(route_after))
        if need > floor:  # not every candidate has replayed it: only those that have
            if need >= EVERYTHING:
                need = self._resolve(need)
            nodes = [n for n in nodes if n.replay_lsn >= need]  # type: ignore[assignment]
        n = len(nodes)
        if n == 2:
            first = _random() < 0.5
            a = nodes[first]
            sa = a.sizes()  # (open, idle, in use, waiting)
            if not (sa[2] or sa[3]):
                return a  # nothing in use there: none is less loaded
            b = nodes[not first]
            sb = b.sizes()
            return a if sa[2] + sa[3] <= sb[2] + sb[3] else b
        if n == 1:
            return nodes[0]
        if n == 0:
            if route == "replica_only":
                raise self._no_replica(need)
            return topo.primary
        i = int(_random() * n)
        a, b = nodes[i], nodes[(i + 1 + int(_random() * (n - 1))) % n]
        sa, sb = a.sizes(), b.sizes()
        return a if sa[2] + sa[3] <= sb[2] + sb[3] else b

    def _no_replica(self, need: int) -> NoReplicaAvailable:
        nodes = [n for n in self._topo.nodes if n.role == REPLICA]
        states = ", ".join(
            f"{n.name}: " + ("down" if not n.up else
                             f"lag {n.lag:.3f} s > max_replica_lag {self.max_replica_lag:g}"
                             if n.lag > self.max_replica_lag else
                             f"replayed {self._server.format(n.replay_lsn)} < "
                             f"{self._server.format(need)}")
            for n in nodes) or "no replicas"
        return NoReplicaAvailable(f"cluster {self.name!r}: no replica can serve this read "
                                  f"(route='replica_only'): {states}")

    def _read_again(self, exc: Exception, node: Node, kind: str, sql: str, params: Any,
                    route: str, route_after: str | None) -> Any:
        """A read failed. On a replica that lost its connection (or could not
        lend one), run it once more elsewhere: a replica cannot have written
        anything, so running it again is safe. Anything else is the caller's."""
        if node.role != REPLICA or not (
                isinstance(exc, (ConnectError, PoolClosed))
                or node.pool.classify(exc) in (ErrorKind.CONNECTION_LOST, ErrorKind.NOT_SENT,
                                               ErrorKind.UNREACHABLE, ErrorKind.UNAVAILABLE)):
            raise exc
        self._topo.suspect(node)
        other = self._pick(route, route_after)
        return other.call(other.source, kind, sql, params, None, None)

    # ---- read-your-writes --------------------------------------------------------

    def _wrote(self, conn: Any) -> None:
        """After a write on ``conn`` (still lent): the primary's WAL position
        into this context, asked on the same connection without a transaction
        of its own. A connection that cannot answer (broken after its COMMIT,
        or the write failed) leaves a pending mark instead: this context reads
        from the primary until the monitor samples the primary again."""
        try:
            lsn = self._server.position_after_write(conn, self._topo.primary.pool.adapter)
            if lsn is not None:
                self._remember(lsn)
                return
        except Exception as exc:
            logger.debug("fastpool: cluster %r: no position after a write: %s", self.name, exc)
        self._written.set(EVERYTHING + time.monotonic_ns())

    def _remember(self, lsn: int) -> None:
        last = self._written.get()
        if lsn > last or last >= EVERYTHING:  # a pending mark: this write is later
            self._written.set(lsn)

    def _resolve(self, need: int) -> int:
        """A pending mark (EVERYTHING + a monotonic time in ns, see ``_wrote``):
        the primary's position as sampled after that time, or EVERYTHING (the
        primary only) until there is one."""
        clock = self._topo.clock
        if clock.sampled_at * 1e9 > need - EVERYTHING and clock.latest:
            self._written.set(clock.latest)
            return clock.latest
        return EVERYTHING

    def note_write(self) -> str:
        """Count a write made without the cluster's helpers (``cluster.primary``'s
        own, a batcher, a bulk load) for this context's read-your-writes: asks
        the primary's WAL position now. Returns the token."""
        self._writer.release(self._writer.acquire())  # the release records it
        return self.last_write_token() or self._server.format(self._topo.clock.latest)

    def last_write_token(self) -> str | None:
        """This context's last write through the cluster, as a token for another
        process (``route_after=``, ``reads_after``); None before any write."""
        lsn = self._written.get()
        if lsn >= EVERYTHING:
            lsn = self._resolve(lsn)
        return self._server.format(lsn) if 0 < lsn < EVERYTHING else None

    @contextlib.contextmanager
    def reads_after(self, token: str | None) -> Iterator[None]:
        """Within the block, this context reads only from nodes that have
        replayed ``token`` (another process's write; None: no constraint)."""
        lsn = 0 if token is None else self._server.parse(token)
        reset = self._written.set(max(lsn, self._written.get()))
        try:
            yield
        finally:
            self._written.reset(reset)

    # ---- the rest -----------------------------------------------------------------

    def rediscover(self, timeout: float = 5.0) -> None:
        """Ask every server its role now (the monitor does it on its own when
        the primary fails); waits up to ``timeout`` for the round."""
        topo = self._topo
        topo._rediscover = True
        topo._wake.set()
        deadline = time.monotonic() + seconds("timeout", timeout)
        while topo._rediscover and time.monotonic() < deadline:
            time.sleep(0.01)

    def stats(self) -> dict[str, Any]:
        """The cluster's state: the primary's name, failovers so far, and per
        node its role, whether it is up and usable for reads, its lag (s), the
        WAL position it replayed, and its pool's ``stats()``."""
        topo = self._topo
        return {"name": self.name, "primary": topo.primary.name,
                "primary_ok": topo.primary_ok, "failovers": topo.failovers,
                "last_failover": topo.last_failover, "max_replica_lag": self.max_replica_lag,
                "transactions": self.retry_stats.as_dict(), "nodes": topo.describe()}

    def close(self, timeout: float = 5.0) -> None:
        """Stop the monitor and close every node's pool."""
        self._topo.close(seconds("timeout", timeout))

    @property
    def closed(self) -> bool:
        return self._topo._closed

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        topo = self._topo
        return (f"<Cluster {self.name!r} primary={topo.primary.name} "
                f"replicas={sum(n.role == REPLICA for n in topo.nodes)} "
                f"usable={len(topo.usable)} failovers={topo.failovers}>")


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


def _read_write(url: str, options: dict[str, Any]) -> None:
    """A primary URL with a libpq host list connects to the read-write host:
    ``target_session_attrs=read-write`` unless the URL or options say otherwise."""
    if "target_session_attrs" in options or "target_session_attrs" in url:
        return
    netloc = url.partition("://")[2].partition("/")[0].rpartition("@")[2]
    if "," in netloc or ("host=" in url and "," in url.partition("host=")[2].split("&")[0]):
        options["target_session_attrs"] = "read-write"


def create_cluster(primary: str, replicas: Sequence[str] = (), **options: Any) -> Cluster:
    """A ``Cluster`` over a primary URL and replica URLs; ``options`` are
    ``max_replica_lag`` (seconds, default 5), ``lag_interval`` (the monitor's
    period, default 0.1 s), ``name``, and any ``create_pool`` option, used for
    every node's pool."""
    return Cluster(primary, replicas, **options)
