"""``AsyncCluster``: a primary and its read replicas for asyncio code.

::

    async with fastpool.create_async_cluster(
            primary="postgresql+asyncpg://db1/app",
            replicas=["postgresql+asyncpg://db2/app"], max_size=10) as cluster:
        await cluster.execute("INSERT INTO t VALUES ($1)", (1,))  # the primary
        rows = await cluster.fetch("SELECT * FROM t")            # a replica that has it

One ``AsyncPool`` per server, with any asyncio client its URL names
(psycopg, asyncpg, asyncmy, aiomysql). The API is ``Cluster``'s, awaited, and
so are its rules, which live once in ``routing.py`` (routes, the less loaded
of two replicas, the lag skip, read-your-writes in the task's context, a
replica read run again elsewhere) and ``topology.py`` (roles, lag, failover).
The monitor is the same thread as a ``Cluster``'s: it asks each server its
role and position on a blocking connection of its own, through psycopg
(PostgreSQL) or mysqlclient (MariaDB), so it keeps answering while the event
loop is busy, and it hands pool work (a drain on a role change, failing the
tasks queued on an old primary) to the pools' event loop.

Create it inside a running event loop: ``await create_async_cluster(...)`` or
``async with create_async_cluster(...) as cluster``; ``await cluster.close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Sequence,
)
from typing import Any, TypeVar

from fastpool.backoff import Backoff
from fastpool.cluster.routing import ClusterBase, PrimarySourceBase
from fastpool.cluster.servers import server_for
from fastpool.cluster.topology import PRIMARY, REPLICA, Node, Topology
from fastpool.drivers import _parse, from_url
from fastpool.drivers.base import Driver, redact_url
from fastpool.errors import ConfigError, ConnectError, UnsupportedClient
from fastpool.options import seconds
from fastpool.pool.async_facade import ASYNC_POOL_OPTIONS, AsyncPool, create_async_pool
from fastpool.query.helpers import EXEC, FETCH, MANY, ROW, VAL
from fastpool.transaction import DEFAULT_BACKOFF, run_transaction_async

__all__ = ["AsyncCluster", "AsyncReplicaReader", "create_async_cluster"]

R = TypeVar("R")

logger = logging.getLogger("fastpool")


class _AsyncPrimarySource(PrimarySourceBase):
    """The primary's connections for tasks (see ``PrimarySourceBase``)."""

    is_async = True

    async def acquire(self, timeout: float | None = None) -> Any:
        topo = self._cluster._topo
        deadline = None
        while True:
            node = topo.primary
            pool = node.pool
            if deadline is None:
                deadline = self._deadline(pool, timeout)
            try:
                conn = await pool.acquire(max(deadline - time.monotonic(), 0.0))
            except Exception as exc:
                if self._try_again(exc, node, deadline):
                    continue
                raise
            self._lent[id(conn)] = pool
            return conn

    async def release(self, conn: Any) -> None:
        pool = self._lent.pop(id(conn), None) or self._cluster._topo.primary.pool
        try:
            if self._record:
                await self._cluster._wrote(conn)  # type: ignore[attr-defined]
        finally:
            await pool.release(conn)

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        conn = await self.acquire(timeout)
        try:
            yield conn
        finally:
            await self.release(conn)


class AsyncCluster(ClusterBase):
    """A primary and its read replicas over AsyncPools (see the module
    documentation and ``Cluster``, whose methods these are, awaited)."""

    _what = "create_async_cluster"

    def __init__(self, primary: str, replicas: Sequence[str] = (), *,
                 max_replica_lag: float = 5.0, lag_interval: float = 0.1,
                 name: str | None = None, **pool_options: Any) -> None:
        super().__init__(primary, replicas, max_replica_lag=max_replica_lag,
                         lag_interval=lag_interval, name=name, pool_options=pool_options,
                         what="create_async_cluster")
        wait = pool_options.pop("wait", True)
        if not isinstance(wait, bool):
            raise ConfigError(f"wait must be True or False, got {wait!r}")
        self._wait = wait
        monitor_options = pool_options.pop("monitor_options", None)
        if monitor_options is not None and not isinstance(monitor_options, dict):
            raise ConfigError(f"monitor_options must be a dict of the blocking driver's "
                              f"options, got {monitor_options!r}")
        self._monitor_options = monitor_options
        self._pool_options = pool_options
        for url in self.urls:  # before anything connects: only servers that replicate
            if _parse(url)[0] not in ("postgresql", "mysql"):
                raise UnsupportedClient(
                    f"create_async_cluster supports PostgreSQL and MariaDB servers; got "
                    f"{redact_url(url)!r}")
        self._writer = _AsyncPrimarySource(self, record=True)
        self._reader = _AsyncPrimarySource(self, record=False)
        self._opened = False

    async def open(self) -> AsyncCluster:
        """Open every node's pool and start the monitor (``create_async_cluster``
        does it); raises why a node cannot be reached or is misconfigured."""
        if self._opened:
            return self
        nodes: list[Node] = []
        try:
            loop = asyncio.get_running_loop()
            for i, url in enumerate(self.urls):
                options = self._node_options(i, self._pool_options)
                monitor = _monitor_driver(url, options, self._monitor_options)
                if i == 0:  # the monitor must reach the primary: say why not, now
                    await loop.run_in_executor(None, _check_monitor, monitor)
                # Only the primary is waited for (``wait``): a replica down at
                # start is the monitor's to notice, as with Cluster.
                pool = await create_async_pool(url, wait=self._wait and i == 0, **options)
                nodes.append(Node(options["name"], pool, PRIMARY if i == 0 else REPLICA,
                                  monitor))
            self._server = server_for(nodes[0].monitor.client)
            self._check_kinds(nodes)
            self._topo = Topology(nodes, max_replica_lag=self.max_replica_lag,
                                  interval=self.lag_interval, name=self.name,
                                  primary_source=self._reader, server=self._server)
        except BaseException:
            for node in nodes:  # closed for real: an unclosed connection warns (3.13)
                await node.pool.close(2.0)
            raise
        self._opened = True
        return self

    # ---- the nodes -------------------------------------------------------------

    @property
    def primary(self) -> AsyncPool:
        """The primary's pool now (another one after a failover)."""
        pool: AsyncPool = self._topo.primary.pool
        return pool

    @property
    def replicas(self) -> list[AsyncPool]:
        """The pools of the servers that are replicas now (usable or not)."""
        return self._replica_pools()

    def replica(self) -> AsyncReplicaReader:
        """A pool-like reader over the replicas (``route="replica"``)."""
        return AsyncReplicaReader(self)

    # ---- writes: the primary ---------------------------------------------------

    def execute(self, sql: str, params: Any = None, *,
                conn: Any = None) -> Coroutine[Any, Any, int]:
        """``await cluster.execute(sql, params)`` on the primary (committed on
        its own, or on ``conn`` of a ``cluster.transaction``); rows affected."""
        if conn is not None:
            return self._writer.pool_of(conn).execute(sql, params, conn=conn)  # type: ignore[no-any-return]
        call = self._topo.primary.pool._queries.call_async
        return call(self._writer, EXEC, sql, params, None, None)  # type: ignore[no-any-return]

    def executemany(self, sql: str, params_seq: Iterable[Any], *,
                    conn: Any = None) -> Coroutine[Any, Any, int]:
        """``execute`` for each parameter set, in one transaction on the primary."""
        if conn is not None:
            return self._writer.pool_of(conn).executemany(  # type: ignore[no-any-return]
                sql, params_seq, conn=conn)
        call = self._topo.primary.pool._queries.call_async
        return call(self._writer, MANY, sql, params_seq, None, None)  # type: ignore[no-any-return]

    async def transaction(self, fn: Callable[[Any], Awaitable[R]], *, retries: int = 3,
                          backoff: Backoff = DEFAULT_BACKOFF) -> R:
        """``await pool.transaction(fn)`` on the primary (followed across a
        failover: an attempt lost before COMMIT runs again on the new primary)."""
        return await run_transaction_async(self._writer, fn,  # type: ignore[arg-type]
                                           retries=retries, backoff=backoff,
                                           finished=self._writer.finished,
                                           stats=self.retry_stats)

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        """A primary connection (``async with``: committed on success, rolled
        back on an error); its writes count for read-your-writes."""
        async with self._topo.primary.pool.connection(timeout) as conn:
            yield conn
        await self.note_write()

    # ---- reads: routed ------------------------------------------------------------

    def fetch(self, sql: str, params: Any = None, *, route: str = "replica",
              route_after: str | None = None) -> Coroutine[Any, Any, list[Any]]:
        """All rows of a query, from the node ``route`` picks (see
        ``fastpool.cluster``); ``route_after``: a write token that node must
        have replayed."""
        return self._read(FETCH, sql, params, route, route_after)

    def fetchrow(self, sql: str, params: Any = None, *, route: str = "replica",
                 route_after: str | None = None) -> Coroutine[Any, Any, Any]:
        """The first row of a query, or None (routed as ``fetch``)."""
        return self._read(ROW, sql, params, route, route_after)

    def fetchval(self, sql: str, params: Any = None, *, route: str = "replica",
                 route_after: str | None = None) -> Coroutine[Any, Any, Any]:
        """The first column of the first row, or None (routed as ``fetch``)."""
        return self._read(VAL, sql, params, route, route_after)

    async def _read(self, kind: str, sql: str, params: Any, route: str,
                    route_after: str | None) -> Any:
        node = self._pick(route, route_after)
        try:
            return await node.call(node.source, kind, sql, params, None, None)
        except Exception as exc:
            other = self._read_elsewhere(exc, node, route, route_after)
            if other is None:
                raise
        return await other.call(other.source, kind, sql, params, None, None)

    # ---- read-your-writes --------------------------------------------------------

    async def _wrote(self, conn: Any) -> None:
        """After a write on ``conn`` (still lent): the primary's position, asked
        on the same connection outside any transaction."""
        lsn = None
        try:
            lsn = await self._server.position_after_write_async(
                conn, self._topo.primary.pool.adapter)
        except Exception as exc:
            logger.debug("fastpool: cluster %r: no position after a write: %s", self.name,
                         str(exc))  # the text: a kept record must not keep the frames
        self._wrote_at(lsn)

    async def note_write(self) -> str:
        """``Cluster.note_write``: count a write made another way (the
        primary's own helpers, a batcher, a bulk load) for this task's
        read-your-writes; returns the token."""
        await self._writer.release(await self._writer.acquire())  # the release records it
        return self._token_now()

    # ---- the rest -----------------------------------------------------------------

    async def rediscover(self, timeout: float = 5.0) -> None:
        """Ask every server its role now; waits up to ``timeout`` for the round."""
        self._ask_roles()
        deadline = time.monotonic() + seconds("timeout", timeout)
        while self._topo._rediscover and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the monitor (waited for off the event loop) and close every
        node's pool."""
        t = seconds("timeout", timeout)
        if not self._opened:
            return
        await asyncio.get_running_loop().run_in_executor(None, self._topo.stop, t)
        for node in self._topo.nodes:
            await node.pool.close(t)

    async def __aenter__(self) -> AsyncCluster:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __await__(self) -> Generator[Any, None, AsyncCluster]:
        return self.open().__await__()


class AsyncReplicaReader:
    """``cluster.replica()``: the cluster's reads, routed to replicas (falling
    back to the primary when none is usable, as ``route="replica"``)."""

    def __init__(self, cluster: AsyncCluster, route: str = "replica") -> None:
        self._cluster = cluster
        self._route = route

    def fetch(self, sql: str, params: Any = None) -> Coroutine[Any, Any, list[Any]]:
        return self._cluster.fetch(sql, params, route=self._route)

    def fetchrow(self, sql: str, params: Any = None) -> Coroutine[Any, Any, Any]:
        return self._cluster.fetchrow(sql, params, route=self._route)

    def fetchval(self, sql: str, params: Any = None) -> Coroutine[Any, Any, Any]:
        return self._cluster.fetchval(sql, params, route=self._route)

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        """A connection of the replica a read would go to now."""
        node = self._cluster._pick(self._route, None)
        async with node.source.connection(timeout) as conn:
            yield conn


#: For asyncpg, asyncmy and aiomysql: the options the monitor's blocking driver
#: takes from the pool options (where to connect, as whom, and the profile),
#: under the blocking driver's name; the rest (statement caches, SSL contexts,
#: cursor classes...) is the asyncio client's own: ``monitor_options=`` gives
#: the monitor's driver what it needs instead. psycopg's asyncio driver takes
#: the blocking driver's options: all of them go, but the row and cursor
#: factories (the monitor reads plain tuples).
_MONITOR_SHARED = {
    "postgresql": {"host": "host", "hostaddr": "hostaddr", "port": "port", "user": "user",
                   "password": "password", "passfile": "passfile", "dbname": "dbname",
                   "database": "dbname", "connect_timeout": "connect_timeout",
                   "target_session_attrs": "target_session_attrs",
                   "application_name": "application_name", "pgbouncer": "pgbouncer"},
    "mysql": {"host": "host", "port": "port", "user": "user", "password": "password",
              "passwd": "password", "database": "database", "db": "database",
              "unix_socket": "unix_socket", "charset": "charset",
              "connect_timeout": "connect_timeout"},
}
_NOT_FOR_THE_MONITOR = frozenset({"row_factory", "cursor_factory", "name", "driver"})


def _monitor_driver(url: str, options: dict[str, Any],
                    monitor_options: dict[str, Any] | None) -> Driver:
    """The blocking driver the monitor thread asks ``url``'s server with: the
    same server, through psycopg or mysqlclient (see ``_MONITOR_SHARED``)."""
    server, client, plain, _rest, query = _parse(url)
    own = {k: v for k, v in options.items()
           if k not in ASYNC_POOL_OPTIONS and k not in _NOT_FOR_THE_MONITOR}
    if server == "postgresql" and client in (None, "psycopg"):
        base, given = plain, own
    else:
        # The asyncio client's URL parameters and options are its own; the
        # shared ones are carried over under the blocking driver's names.
        base = plain.partition("?")[0]
        shared = _MONITOR_SHARED.get(server, {})
        merged = {**query, **own}
        given = {shared[k]: v for k, v in merged.items() if k in shared}
        if "ssl" in merged and not monitor_options:
            raise ConfigError(f"create_async_cluster: ssl= is {client or 'the client'}'s own "
                              "option; the cluster's monitor connects through the blocking "
                              "driver and needs its own: monitor_options={'sslmode': ...} "
                              "(psycopg) or {'ssl': {...}} (mysqlclient)")
    try:
        return from_url(base, **{**given, **(monitor_options or {})})
    except Exception as exc:
        raise ConfigError(f"create_async_cluster: the cluster's monitor asks each server its "
                          f"role on a blocking connection of its own (psycopg for PostgreSQL, "
                          f"mysqlclient for MariaDB: pip install 'fastpool[mysql]'; its "
                          f"options: monitor_options=, used for every node), and cannot for "
                          f"this URL: {exc}") from exc


def _check_monitor(driver: Driver) -> None:
    """Connect once as the monitor will (in an executor: it blocks)."""
    try:
        driver.connect().close()
    except Exception as exc:
        raise ConnectError(f"create_async_cluster: the cluster's monitor cannot connect to "
                           f"the primary at {driver.describe()} through its blocking driver "
                           f"({type(exc).__name__}: {driver.redact(str(exc))}); its options "
                           f"are the URL's and monitor_options=") from None


def create_async_cluster(primary: str, replicas: Sequence[str] = (),
                         **options: Any) -> AsyncCluster:
    """An ``AsyncCluster`` over a primary URL and replica URLs (their schemes
    name the asyncio client, as ``create_async_pool``'s): ``await`` it, or use
    it as ``async with``. ``options`` are ``create_cluster``'s (``max_replica_lag``,
    ``lag_interval``, ``name``) and any ``create_async_pool`` option, used for
    every node's pool. Bad options raise here, before anything connects."""
    return AsyncCluster(primary, replicas, **options)
