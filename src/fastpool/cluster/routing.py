"""What ``Cluster`` and ``AsyncCluster`` share: the options, the read routing,
read-your-writes and the primary connection source's rules.

No I/O here: the two front ends (``fastpool.cluster`` for threads,
``fastpool.cluster.aio`` for asyncio) do their own borrowing and their own
round trips, and call these rules, so that each rule exists once.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from fastpool.cluster.servers import MariaDBServer, PostgresServer
from fastpool.cluster.topology import EVERYTHING, REPLICA, Node, Topology
from fastpool.errors import (
    ConfigError,
    ConnectError,
    ErrorKind,
    NoReplicaAvailable,
    PoolClosed,
)
from fastpool.options import seconds
from fastpool.transaction import RetryStats

__all__ = ["ClusterBase", "PrimarySourceBase", "read_write"]

logger = logging.getLogger("fastpool")

ROUTES = ("replica", "replica_only", "primary", "any")
#: A replica read that failed this way runs once more on another node: a
#: replica cannot have written anything, so running it again is safe.
_READ_AGAIN = (ErrorKind.CONNECTION_LOST, ErrorKind.NOT_SENT, ErrorKind.UNREACHABLE,
               ErrorKind.UNAVAILABLE)
_cluster_numbers = itertools.count(1)
_random = random.random


class PrimarySourceBase:
    """The connection source of the cluster's writes and primary reads (see
    ``fastpool.source``): the current primary's pool, followed across a
    failover. ``record``: after each use, the primary's position goes into
    the caller's context (read-your-writes). The front ends add ``acquire``
    and ``release``."""

    is_async = False

    def __init__(self, cluster: ClusterBase, record: bool) -> None:
        self._cluster = cluster
        self._record = record
        self._lent: dict[int, Any] = {}
        self.name = f"{cluster.name}-primary"

    @property
    def adapter(self) -> Any:
        return self._cluster._topo.primary.pool.adapter

    def _deadline(self, pool: Any, timeout: float | None) -> float:
        return time.monotonic() + (pool.timeout if timeout is None
                                   else seconds("timeout", timeout))

    def _try_again(self, exc: BaseException, node: Node, deadline: float) -> bool:
        """Borrowing from ``node`` (the primary when the caller started) failed
        with ``exc``: True if the primary moved meanwhile (its pool's waiters
        were failed with ConnectError) and there is time to try the new one;
        otherwise the monitor is told to look at the roles."""
        topo = self._cluster._topo
        if (isinstance(exc, (ConnectError, PoolClosed)) and topo.primary is not node
                and time.monotonic() < deadline):
            return True
        topo.failed(exc, None)  # a timeout or connect error: look at the roles
        return False

    def pool_of(self, conn: Any) -> Any:
        return self._lent.get(id(conn)) or self._cluster._topo.primary.pool

    def classify(self, exc: BaseException) -> ErrorKind:
        kind: ErrorKind = self._cluster._topo.primary.pool.classify(exc)
        self._cluster._topo.failed(exc, kind)
        return kind

    def writing(self, tables: Iterable[str]) -> contextlib.AbstractContextManager[None]:
        return self._cluster._topo.primary.pool.writing(tables)  # type: ignore[no-any-return]

    def finished(self, conn: Any, committed: bool) -> None:
        """The transaction runner's callback: the query layer of the pool that lent ``conn``."""
        self.pool_of(conn)._queries.finished(conn, committed)


class ClusterBase:
    """The state and rules of a cluster (see ``fastpool.cluster``), whatever
    its pools: the options, the routing of reads, read-your-writes, stats."""

    _topo: Topology
    _server: PostgresServer | MariaDBServer

    def __init__(self, primary: str, replicas: Sequence[str], *, max_replica_lag: float,
                 lag_interval: float, name: str | None, pool_options: dict[str, Any],
                 what: str) -> None:
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
                raise ConfigError(f"{what} takes URLs and pool options, not {key}=")
        self.name = name or f"cluster-{next(_cluster_numbers)}"
        self.urls = [primary, *replicas]
        # The write token of this context (a position; 0: none yet).
        self._written: contextvars.ContextVar[int] = contextvars.ContextVar(
            f"fastpool.cluster.{self.name}", default=0)
        # Another process's write this context must see (``reads_after``): apart
        # from this context's own writes, which the block must not drop.
        self._floor: contextvars.ContextVar[int] = contextvars.ContextVar(
            f"fastpool.cluster.{self.name}.floor", default=0)
        self.retry_stats = RetryStats()

    def _node_options(self, i: int, pool_options: dict[str, Any]) -> dict[str, Any]:
        """Node ``i``'s pool options: the cluster's, its name, and for the
        primary the read-write host of a libpq host list."""
        options = dict(pool_options)
        if i == 0:
            read_write(self.urls[0], options)
        options["name"] = f"{self.name}-{i}"
        return options

    def _check_kinds(self, nodes: list[Node]) -> None:
        """Every node the same server and the same client as the primary: a
        statement (its placeholders) must run on whichever node a read picks."""
        first = nodes[0].pool.driver.client
        for node in nodes[1:]:
            client = node.pool.driver.client
            if client.kind != first.kind:
                raise ConfigError(f"{self._what}: {node.pool.driver.describe()} is not the "
                                  "same kind of server as the primary")
            if client.name != first.name:
                raise ConfigError(f"{self._what}: every node must use the same client: the "
                                  f"primary's is {first.name}, {node.pool.driver.describe()}'s "
                                  f"{client.name}")

    _what = "create_cluster"

    # ---- the nodes -------------------------------------------------------------

    def _replica_pools(self) -> list[Any]:
        return [n.pool for n in self._topo.nodes if n.role == REPLICA]

    # ---- reads: routed ------------------------------------------------------------

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
            raise ConfigError(f"route must be one of {', '.join(map(repr, ROUTES))}, "
                              f"got {route!r}")
        need = self._written.get()
        floor_ = self._floor.get()
        if floor_ > need:
            need = floor_
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

    def _read_elsewhere(self, exc: Exception, node: Node, route: str,
                        route_after: str | None) -> Node | None:
        """A read on ``node`` failed with ``exc``. On a replica that lost its
        connection (or could not lend one): the node to run it once more on
        (the failed one gets no reads until the monitor sees it answer).
        Anything else is the caller's: None."""
        if node.role != REPLICA or not (
                isinstance(exc, (ConnectError, PoolClosed))
                or node.pool.classify(exc) in _READ_AGAIN):
            return None
        self._topo.suspect(node)
        return self._pick(route, route_after)

    # ---- read-your-writes --------------------------------------------------------

    def _wrote_at(self, lsn: int | None) -> None:
        """After a write: its position into this context; None (the connection
        could not tell: broken after its COMMIT, or the write failed) leaves a
        pending mark: this context reads from the primary until the monitor
        samples the primary again."""
        if lsn is not None:
            self._remember(lsn)
        else:
            self._written.set(EVERYTHING + time.monotonic_ns())

    def _remember(self, lsn: int) -> None:
        last = self._written.get()
        if lsn > last or last >= EVERYTHING:  # a pending mark: this write is later
            self._written.set(lsn)

    def _resolve(self, need: int) -> int:
        """A pending mark (EVERYTHING + a monotonic time in ns, see ``_wrote_at``):
        the primary's position as sampled after that time, or EVERYTHING (the
        primary only) until there is one."""
        clock = self._topo.clock
        if clock.sampled_at * 1e9 > need - EVERYTHING and clock.latest:
            self._written.set(clock.latest)
            return clock.latest
        return EVERYTHING

    def _token_now(self) -> str:
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
        """Within the block, this context (thread or task) reads only from
        nodes that have replayed ``token`` (another process's write; None: no
        constraint)."""
        lsn = 0 if token is None else self._server.parse(token)
        reset = self._floor.set(max(lsn, self._floor.get()))
        try:
            yield
        finally:
            self._floor.reset(reset)

    # ---- the rest -----------------------------------------------------------------

    def _ask_roles(self) -> None:
        topo = self._topo
        topo._rediscover = True
        topo._wake.set()

    def stats(self) -> dict[str, Any]:
        """The cluster's state: the primary's name, failovers so far, and per
        node its role, whether it is up and usable for reads, its lag (s), the
        position it replayed, and its pool's ``stats()``."""
        topo = self._topo
        return {"name": self.name, "primary": topo.primary.name,
                "primary_ok": topo.primary_ok, "failovers": topo.failovers,
                "last_failover": topo.last_failover, "max_replica_lag": self.max_replica_lag,
                "transactions": self.retry_stats.as_dict(), "nodes": topo.describe()}

    @property
    def closed(self) -> bool:
        return self._topo._closed

    def __repr__(self) -> str:
        topo = self._topo
        return (f"<{type(self).__name__} {self.name!r} primary={topo.primary.name} "
                f"replicas={sum(n.role == REPLICA for n in topo.nodes)} "
                f"usable={len(topo.usable)} failovers={topo.failovers}>")


def read_write(url: str, options: dict[str, Any]) -> None:
    """A primary URL with a libpq host list connects to the read-write host:
    ``target_session_attrs=read-write`` unless the URL or options say otherwise."""
    if "target_session_attrs" in options or "target_session_attrs" in url:
        return
    netloc = url.partition("://")[2].partition("/")[0].rpartition("@")[2]
    if "," in netloc or ("host=" in url and "," in url.partition("host=")[2].split("&")[0]):
        options["target_session_attrs"] = "read-write"
