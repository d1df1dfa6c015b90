"""The prepared-statement cache: per connection, LRU, deallocated on eviction.

PostgreSQL: psycopg already keeps, per connection, an LRU of the statements it
prepared (keyed by the SQL and the parameter types) and deallocates on the
server what it evicts. fastpool does not keep a second, competing cache: it
installs on each connection a counting subclass of psycopg's manager, sized
``statement_cache_size``, and runs the helpers' statements with
``prepare=True``. So a statement psycopg prepared on its own (after
``prepare_threshold`` executions) is reused, never prepared twice, and
fastpool's counters see every prepare, hit and eviction. New connections (after
a reconnect or ``drain()``) start empty and prepare lazily;
``invalidate_statements()`` bumps a generation and each connection drops its
statements (``DEALLOCATE ALL``, sent with its next statement) before its next
use. ``statement_cache_size=0`` turns every prepared statement off, psycopg's
automatic ones included (PgBouncer in transaction mode).

MySQL/MariaDB: mysqlclient speaks only the text protocol; SQL-level
``PREPARE``/``EXECUTE`` was measured slower for short statements (see
BENCHMARKS.md), so statements run as text. SQLite: the sqlite3 module keeps its
own per-connection statement cache (``cached_statements``).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from fastpool.errors import ConfigError

__all__ = ["StatementCache"]

_PREPARES, _HITS, _EVICTIONS, _INVALIDATIONS = range(4)

try:  # psycopg's per-connection manager of prepared statements
    from psycopg._preparing import Prepare as _Prepare
    from psycopg._preparing import PrepareManager as _PrepareManager
except ImportError:  # pragma: no cover - psycopg not installed
    _PrepareManager = object  # type: ignore[assignment,misc]
    _Prepare = None  # type: ignore[assignment,misc]


class _CountingManager(_PrepareManager):
    """psycopg's manager, counting what it does for fastpool's stats."""

    counts: list[int]
    generation: int

    def get(self, query: Any, prepare: bool | None = None) -> tuple[Any, bytes]:
        prep, name = super().get(query, prepare)
        if prep is _Prepare.YES:
            self.counts[_HITS] += 1
        elif prep is _Prepare.SHOULD:
            self.counts[_PREPARES] += 1
        return prep, name

    def _rotate(self) -> None:
        if len(self._names) > self.prepared_max:
            self.counts[_EVICTIONS] += 1
        super()._rotate()

    def clear(self) -> bool:
        if self._names:
            self.counts[_INVALIDATIONS] += len(self._names)
        return bool(super().clear())


def _deallocate_all(conn: Any, mgr: _CountingManager) -> None:
    """Forget every prepared statement of ``conn``, on the server too, now.

    Not through psycopg's ``clear()``: it sends DEALLOCATE ALL *after* the next
    statement, which would drop the statement that one just prepared.
    """
    mgr.counts[_INVALIDATIONS] += len(mgr._names)
    mgr._names.clear()
    mgr._counts.clear()
    mgr._to_flush.clear()
    if conn.pgconn.transaction_status == 0 and not conn.autocommit:  # idle: no BEGIN for this
        conn.autocommit = True
        try:
            conn.execute("DEALLOCATE ALL")
        finally:
            conn.autocommit = False
    else:
        conn.execute("DEALLOCATE ALL")


class StatementCache:
    """The pool's policy for prepared statements; the state lives on each connection."""

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ConfigError(f"statement_cache_size must be an int >= 0, got {size!r}")
        self.size = size
        self.generation = 0
        self._live: weakref.WeakSet[Any] = weakref.WeakSet()
        self._retired = [0, 0, 0, 0]
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def bind_pg(self, conn: Any) -> None:
        """Make ``conn``'s prepared statements follow this cache's size and generation.

        Cheap when nothing changed (one attribute read and a compare). The
        manager replaced keeps its statements: psycopg names them by a counter
        that must not restart.
        """
        mgr = conn._prepared
        if type(mgr) is _CountingManager and mgr.generation == self.generation:
            return
        if type(mgr) is not _CountingManager:
            new = _CountingManager()
            new.__dict__.update(mgr.__dict__)
            counts = new.counts = [0, 0, 0, 0]
            new.generation = self.generation
            conn._prepared = new
            with self._lock:
                self._live.add(new)
            weakref.finalize(new, self._retire, counts)
            mgr = new
            if self.size:
                new.prepared_max = self.size
            else:
                new.prepare_threshold = None
        if mgr.generation != self.generation:
            mgr.generation = self.generation
            _deallocate_all(conn, mgr)

    def forget(self, conn: Any) -> None:
        """Drop ``conn``'s statements (one whose plan went stale): re-prepared on next use."""
        mgr = getattr(conn, "_prepared", None)
        if type(mgr) is _CountingManager:
            _deallocate_all(conn, mgr)

    def invalidate(self) -> None:
        """Every connection drops its prepared statements before its next use."""
        self.generation += 1

    def _retire(self, counts: list[int]) -> None:
        with self._lock:
            for i, n in enumerate(counts):
                self._retired[i] += n

    def stats(self) -> dict[str, Any]:
        """prepares, hits, misses, evictions, invalidations, reuse_rate, cached."""
        with self._lock:
            totals = list(self._retired)
            cached = 0
            for mgr in list(self._live):
                for i, n in enumerate(mgr.counts):
                    totals[i] += n
                cached += len(mgr._names)
        prepares, hits, evictions, invalidations = totals
        used = prepares + hits
        return {
            "size": self.size,
            "prepares": prepares,
            "hits": hits,
            "misses": prepares,
            "evictions": evictions,
            "invalidations": invalidations,
            "reuse_rate": hits / used if used else None,
            "cached": cached,
        }
