"""Who is the primary, which replicas are usable, and how far behind they are.

One background thread per cluster (``_monitor_main``) runs ``Topology.tick``
every ``lag_interval`` seconds, on a connection of its own per server (never
one of the pools': it answers while a pool is exhausted and costs no
borrower anything): one short query each (``servers.py``): its role and replication position
(PostgreSQL: ``pg_is_in_recovery()`` and the WAL position; MariaDB:
``read_only`` and the GTID), and who answers.

* **Lag**: the primary's positions go into a ``LagClock``; each replica's lag
  is read off it. A replica down, or lagging more than ``max_replica_lag``,
  leaves ``usable`` (the tuple the readers choose from) until the next tick
  says otherwise.
* **Roles**: the primary unreachable or in recovery, or a replica out of
  recovery (promoted), or a write that failed as if the primary were gone or
  read-only (``failed``), or a broken connection closed by any node's pool
  (its ``close`` event) makes the next round re-discover roles: every server
  is asked, the current primary first, then the others in the order given,
  and the first that is not in recovery is the primary (libpq's
  ``target_session_attrs=read-write`` rule, keeping the current one while it
  still qualifies). While none qualifies, every round asks again.
* **Drain**: a node whose role changed, or whose server changed under the same
  URL (a libpq host list that now reaches another host, or a restart), has
  its pool drained (``Pool.drain``: a generation bump; idle connections close
  now, lent ones when they come back). A new primary also fails the callers
  still queued on the old primary's pool, so they try again on the new one
  at once instead of waiting out their timeout.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from fastpool.backoff import ExponentialBackoff
from fastpool.cluster.lsn import LagClock
from fastpool.cluster.servers import MariaDBServer, PostgresServer, Seen
from fastpool.errors import ConnectError, ErrorKind, PoolTimeout, TransactionOutcomeUnknown
from fastpool.pool import Pool
from fastpool.pool.policy import PoolPolicy

if TYPE_CHECKING:
    from fastpool.drivers.base import Driver
    from fastpool.pool.async_facade import AsyncPool

__all__ = ["DOWN", "PRIMARY", "READ_ONLY", "REPLICA", "Node", "Topology"]

logger = logging.getLogger("fastpool")

PRIMARY, REPLICA, DOWN = "primary", "replica", "down"
#: Up, not in recovery, but read-only (fenced: default_transaction_read_only):
#: neither written to nor read from (its data no longer moves).
READ_ONLY = "read-only"

#: Above any WAL position: the primary has replayed every write.
EVERYTHING = 1 << 64

#: What a failed write means for the roles: the primary may be gone.
_GONE = frozenset({ErrorKind.CONNECTION_LOST, ErrorKind.NOT_SENT, ErrorKind.UNREACHABLE,
                   ErrorKind.UNAVAILABLE})
#: SQLSTATE read_only_sql_transaction: the server is read-only now.
_READ_ONLY_SQLSTATE = "25006"


class Node:
    """One server of a cluster: its pool, its role and what the monitor last saw."""

    __slots__ = ("__weakref__", "call", "conn", "failures", "identity", "lag", "loop",
                 "monitor", "name", "pool", "replay_lsn", "retry_at", "role", "sizes",
                 "source", "up")

    def __init__(self, name: str, pool: Pool | AsyncPool, role: str,
                 monitor: Driver | None = None) -> None:
        self.name = name
        self.pool: Any = pool  # a Pool, or an AsyncPool of an AsyncCluster
        self.role = role
        #: A replica takes reads once the monitor has seen it answer in recovery.
        self.up = role == PRIMARY
        #: The blocking driver the monitor thread connects with: the pool's own,
        #: or for an AsyncPool one of the same URL (psycopg, mysqlclient).
        self.monitor: Driver = monitor if monitor is not None else pool.driver
        #: An AsyncPool's event loop: the monitor hands its pool work there.
        self.loop = pool._loop if pool.is_async else None  # type: ignore[union-attr]
        self.lag = 0.0
        self.replay_lsn = EVERYTHING if role == PRIMARY else 0
        # The reader's fast path: the pool's query layer, and the pool's core
        # sizes (open, idle, in use, waiting) for the least-loaded choice.
        self.call: Any = pool._queries.call_async if pool.is_async else pool._queries.call
        self.sizes = pool._sizes
        self.source: Any = pool  # the primary reads through the cluster's primary source
        self.conn: Any = None  # the monitor's own connection
        self.identity: tuple[Any, ...] | None = None
        self.failures = 0
        self.retry_at = 0.0

    def drain(self) -> None:
        """Replace the pool's connections (``Pool.drain``), from any thread."""
        self._in_pool(PoolPolicy.drain, self.pool)

    def fail_waiters(self, error: BaseException) -> None:
        """Fail the callers queued on the pool with ``error``, from any thread."""
        self._in_pool(self.pool._fail_waiters, error)

    def _in_pool(self, fn: Any, *args: Any) -> None:
        if self.loop is None:
            fn(*args)
            return
        try:  # an AsyncPool is its loop's alone: the work runs there, soon
            self.loop.call_soon_threadsafe(self._unless_closed, fn, *args)
        except RuntimeError:  # the loop is closed: so is the pool
            logger.debug("fastpool: %s: its event loop is closed", self.name)

    def _unless_closed(self, fn: Any, *args: Any) -> None:
        if not self.pool.closed:  # closed meanwhile (the cluster's close): nothing to do
            fn(*args)

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.role} up={self.up} lag={self.lag:.3f}>"


class Topology:
    """The cluster's nodes and roles, kept current by the monitor thread."""

    #: A node the monitor cannot reach is asked again after this backoff.
    RETRY_BACKOFF = ExponentialBackoff(base=0.1, cap=2.0, jitter=0.1)

    def __init__(self, nodes: list[Node], *, max_replica_lag: float, interval: float,
                 name: str, primary_source: Any,
                 server: PostgresServer | MariaDBServer) -> None:
        self.nodes = nodes
        self.server = server
        self.name = name
        self.max_replica_lag = max_replica_lag
        self.interval = interval
        self.primary = nodes[0]
        self._primary_source = primary_source
        self.primary.source = primary_source
        self.clock = LagClock()
        #: The replicas a read may go to now (replayed within max_replica_lag, up).
        self.usable: tuple[Node, ...] = ()
        #: What the readers read in one load: (candidates, the lowest WAL
        #: position they have all replayed), for route "replica" and for "any"
        #: (``usable`` and the primary).
        self.replica_view: tuple[tuple[Node, ...], int] = ((), EVERYTHING)
        self.any_view: tuple[tuple[Node, ...], int] = ((self.primary,), EVERYTHING)
        self.primary_ok = True
        self.failovers = 0
        self.last_failover: float | None = None
        self._rediscover = False
        self._changed = threading.Condition()
        self._wake = threading.Event()
        self._publish()
        self._stop = False
        self._closed = False
        ref = weakref.ref(self)

        def on_close(conn: Any, reason: str) -> None:
            topo = ref()
            if reason == "broken" and topo is not None:
                topo._wake.set()  # the next round checks the roles now, not in a tick

        for node in nodes:
            node.pool.on("close", on_close)
        self._thread = threading.Thread(target=_monitor_main, args=(ref, self._wake),
                                        name=f"fastpool-cluster-{name}", daemon=True)
        self._thread.start()

    # ---- what the cluster's callers tell the monitor --------------------------

    def failed(self, exc: BaseException, kind: ErrorKind | None) -> None:
        """A write (or a primary read) failed with ``exc``: if it looks like the
        primary is gone or read-only, re-discover roles in the next round, now."""
        if (kind in _GONE or getattr(exc, "sqlstate", None) == _READ_ONLY_SQLSTATE
                or isinstance(exc, (ConnectError, PoolTimeout, TransactionOutcomeUnknown))):
            self._rediscover = True
            self._wake.set()

    def suspect(self, node: Node) -> None:
        """A read lost its connection to ``node``: no more reads go there until
        the monitor sees it answer again."""
        if node.role == REPLICA:
            node.up = False
            self._publish()
        self._wake.set()

    def wait_for_primary_change(self, seen: Node, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a primary other than ``seen``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.primary is not seen or self._closed,
                                          timeout)

    # ---- the monitor's round ---------------------------------------------------

    def tick(self) -> float:
        """One round: observe every server, update lag and usable replicas,
        re-discover roles if needed; returns seconds until the next round."""
        if self._closed:
            return self.interval
        primary = self.primary
        seen = self._observe(primary, force=self._rediscover or not self.primary_ok)
        if self._stop:  # closing meanwhile: "no answer" means nothing now
            return self.interval
        if seen is None or not seen.writable or self._rediscover or not self.primary_ok:
            self._discover(primary, seen)
        else:
            self.clock.sample(seen.at, seen.lsn)
            self._same_server(primary, seen)
        for node in self.nodes:
            if node is self.primary:
                continue
            seen = self._observe(node, force=False)
            if seen is None:
                continue
            if seen.writable:  # promoted (or a second primary): ask everyone
                self._rediscover = True
                self._wake.set()
                continue
            if not seen.in_recovery:
                node.role = READ_ONLY
                continue
            self._same_server(node, seen)
            node.role, node.up = REPLICA, True
            node.replay_lsn = seen.lsn
            node.lag = self.clock.lag(seen.lsn, time.monotonic())
        self._publish()
        return self.interval

    def _publish(self) -> None:
        """Recompute the tuples the readers choose from (replaced, never mutated)."""
        limit = self.max_replica_lag
        usable = tuple(n for n in self.nodes if n.role == REPLICA and n.up and n.lag <= limit)
        floor = min((n.replay_lsn for n in usable), default=EVERYTHING)
        self.usable = usable
        self.replica_view = (usable, floor)
        self.any_view = ((*usable, self.primary), floor)

    def _discover(self, current: Node, seen_current: Seen | None) -> None:
        """Ask every server its role; the first read-write one (the current
        primary first) is the primary."""
        if self._stop:  # closing: no role changes from what closing cut short
            return
        order = [current, *(n for n in self.nodes if n is not current)]
        was_primary = current.role == PRIMARY
        found = None
        for node in order:
            seen = seen_current if node is current else self._observe(node, force=True)
            if seen is None:
                if self._stop:
                    return
                node.up = False
                continue
            self._same_server(node, seen)
            node.up = True
            if seen.writable and found is None:
                found = node
                self.clock.sample(seen.at, seen.lsn)
            elif not seen.writable:
                if node.role == PRIMARY and node is not current:
                    node.drain()
                node.role = REPLICA if seen.in_recovery else READ_ONLY
                node.replay_lsn = seen.lsn
                node.lag = self.clock.lag(seen.lsn, time.monotonic())
        self._rediscover = found is None
        self.primary_ok = found is not None
        if found is None:
            if was_primary:
                logger.warning("fastpool: cluster %r: primary %s does not answer as the "
                               "primary; looking for one among %d servers", self.name,
                               current.name, len(self.nodes))
            if current.role == PRIMARY:
                current.role = DOWN  # unreachable (one that answered has its role by now)
            return
        if found is not current or current.role != PRIMARY:
            self._promote(current, found)

    def _promote(self, old: Node, new: Node) -> None:
        """``new`` is the primary now: re-point the writers and readers, drain
        both nodes' pools, and fail the callers queued on the old primary's
        pool (they see the new primary when they try again)."""
        if self._stop:  # closing: the pools are being closed, leave them be
            return
        new.role = PRIMARY
        new.up = True
        new.lag = 0.0
        new.replay_lsn = EVERYTHING
        new.source = self._primary_source
        with self._changed:
            self.primary = new
            self._changed.notify_all()
        new.drain()  # its connections were opened to a replica
        if old is not new:
            if not old.up:  # one that answered in recovery is a replica already
                old.role, old.replay_lsn = DOWN, 0
            old.source = old.pool
            old.drain()
            old.fail_waiters(ConnectError(
                f"cluster {self.name!r}: the primary moved from {old.name} to {new.name}"))
            self.failovers += 1
            self.last_failover = time.time()
            logger.warning("fastpool: cluster %r: %s is the primary now (was %s)", self.name,
                           new.name, old.name)
        self._publish()

    def _same_server(self, node: Node, seen: Seen) -> None:
        """Drain a node whose URL reaches another server (a host list that
        moved, or a restart) than the one its connections were opened to."""
        if node.identity is not None and seen.identity != node.identity:
            logger.warning("fastpool: cluster %r: %s answers from another server now "
                           "(%s, was %s); draining its pool", self.name, node.name,
                           seen.identity, node.identity)
            node.drain()
        node.identity = seen.identity

    def _observe(self, node: Node, force: bool) -> Seen | None:
        """Ask ``node``'s server its role and WAL position on the monitor's
        connection (opened, or opened again, as needed); None if it cannot."""
        if self._stop:  # closing: open nothing more
            return None
        now = time.monotonic()
        if node.conn is None:
            if not force and now < node.retry_at:
                return None
            try:
                node.conn = self.server.connect(node.monitor)
            except Exception as exc:
                self._unreachable(node, exc, now)
                return None
        try:
            sent = time.monotonic()
            seen = self.server.observe(node.conn)
            seen.at = sent
        except Exception as exc:
            self._drop(node)
            self._unreachable(node, exc, now)
            return None
        node.failures = 0
        return seen

    def _unreachable(self, node: Node, exc: BaseException, now: float) -> None:
        node.failures += 1
        node.retry_at = now + self.RETRY_BACKOFF(node.failures)
        if node.up:
            logger.warning("fastpool: cluster %r: %s does not answer: %s: %s", self.name,
                           node.name, type(exc).__name__, node.monitor.redact(str(exc)))
        node.up = False

    def _drop(self, node: Node) -> None:
        conn, node.conn = node.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:
                logger.debug("fastpool: cluster %r: closing a monitor connection: %s",
                             self.name, exc)

    # ---- reporting and closing -------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        usable = set(map(id, self.usable))
        return [{"name": n.name, "where": n.pool.driver.describe(), "role": n.role,
                 "up": n.up, "lag": 0.0 if n.role == PRIMARY else n.lag,
                 "replayed": None if n.role != REPLICA else self.server.format(n.replay_lsn),
                 "usable": id(n) in usable, "pool": n.pool.stats()} for n in self.nodes]

    def close(self, timeout: float) -> None:
        """Stop the monitor, then close every node's (blocking) pool."""
        self.stop(timeout)
        for node in self.nodes:
            node.pool.close(timeout)

    def stop(self, timeout: float) -> None:
        """Stop the monitor thread and close its connections (the pools stay
        open). A thread still in a round after ``timeout`` (a connect to a
        server that does not answer) closes its own connections as it ends:
        never closed from here while it may use them."""
        self._closed = True
        self._stop = True
        self._wake.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.drop_all()

    def drop_all(self) -> None:
        for node in self.nodes:
            self._drop(node)


def _monitor_main(ref: weakref.ReferenceType[Topology], wake: threading.Event) -> None:
    while True:
        topo = ref()
        if topo is None:
            return
        if topo._stop:
            topo.drop_all()
            return
        try:
            delay = topo.tick()
        except Exception:
            logger.exception("fastpool: cluster monitor round failed; retrying")
            delay = 1.0
        del topo  # the thread must not keep an abandoned cluster alive
        wake.wait(delay)
        wake.clear()
