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

psycopg's ``AsyncConnection`` is served the same way (``bind_pg_async``).
asyncpg keeps its own per-connection LRU (``conn._stmt_cache``), which the
helpers use as it is (``conn.fetch/fetchrow/fetchval/execute/executemany``);
asyncpg has no counters, so fastpool swaps in a subclass that counts a
``get`` returning a statement as a hit and a ``put`` (after a prepare) as a
miss, at one extra Python call per statement (``bind_asyncpg``). Statements
asyncpg does not cache (longer than its ``max_cacheable_statement_size``) are
not counted. asyncmy and aiomysql run the text protocol (asyncmy's own
statement cache is off by default and is not turned on).

MariaDB: mysqlclient speaks only the text protocol, but SQL-level prepared
statements are faster (BENCHMARKS.md: 8% on a primary-key lookup, 11% on a
join): each statement is prepared once per connection (``PREPARE fp_N FROM
'... ? ...'``, the driver's ``%s`` placeholders turned into ``?``) and run as
``EXECUTE fp_N USING <literals>`` (MariaDB takes literals in USING: one round
trip), in a per-connection LRU whose evictions are deallocated on the server.
Statements MariaDB cannot prepare, or a server out of ``max_prepared_stmt_count``,
fall back to the text protocol. MySQL (8 needs user variables: two statements,
measured slower than text) runs statements as text. SQLite: the sqlite3 module
keeps its own per-connection statement cache (``cached_statements``).
"""

from __future__ import annotations

import re
import threading
import weakref
from collections import OrderedDict
from typing import Any, NamedTuple

from fastpool.options import integer

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

    @property
    def cached(self) -> int:
        return len(self._names)

    def _rotate(self) -> None:
        if len(self._names) > self.prepared_max:
            self.counts[_EVICTIONS] += 1
        super()._rotate()

    def clear(self) -> bool:
        if self._names:
            self.counts[_INVALIDATIONS] += len(self._names)
        return bool(super().clear())


def _forget_pg(mgr: _CountingManager) -> None:
    """Forget every statement psycopg prepared, locally (DEALLOCATE ALL follows)."""
    mgr.counts[_INVALIDATIONS] += len(mgr._names)
    mgr._names.clear()
    mgr._counts.clear()
    mgr._to_flush.clear()


def _deallocate_all(conn: Any, mgr: _CountingManager) -> None:
    """Forget every prepared statement of ``conn``, on the server too, now.

    Not through psycopg's ``clear()``: it sends DEALLOCATE ALL *after* the next
    statement, which would drop the statement that one just prepared.
    """
    _forget_pg(mgr)
    if conn.pgconn.transaction_status == 0 and not conn.autocommit:  # idle: no BEGIN for this
        conn.autocommit = True
        try:
            conn.execute("DEALLOCATE ALL")
        finally:
            conn.autocommit = False
    else:
        conn.execute("DEALLOCATE ALL")


try:  # asyncpg's per-connection statement cache
    from asyncpg.connection import (  # type: ignore[import-untyped]
        _StatementCache as _AsyncpgBase,
    )
except ImportError:  # pragma: no cover - asyncpg not installed
    _AsyncpgBase = object


class _AsyncpgCache(_AsyncpgBase):  # type: ignore[misc]
    """asyncpg's statement cache, counting for fastpool's stats (see
    ``StatementCache.bind_asyncpg``). One extra Python call per statement."""

    __slots__ = ("__weakref__", "counts", "generation")

    counts: list[int]
    generation: int

    def get(self, query: Any, *, promote: bool = True) -> Any:
        stmt = super().get(query, promote=promote)
        if stmt is not None and promote:  # promote=False: asyncpg's own has()
            self.counts[_HITS] += 1
        return stmt

    def put(self, query: Any, statement: Any) -> None:
        if self._max_size:
            self.counts[_PREPARES] += 1
        super().put(query, statement)

    def _maybe_cleanup(self) -> None:
        before = len(self._entries)
        super()._maybe_cleanup()
        self.counts[_EVICTIONS] += before - len(self._entries)

    def _on_entry_expired(self, entry: Any) -> None:
        if self._entries.get(entry._query) is entry:
            self.counts[_EVICTIONS] += 1
        super()._on_entry_expired(entry)

    @property
    def cached(self) -> int:
        return len(self._entries)


class _MySQLText(NamedTuple):
    """A mysqlclient statement turned into MariaDB PREPARE text."""

    text: str          # with ? placeholders
    names: tuple[str, ...] | None  # %(name)s order, or None for positional %s
    nparams: int       # number of placeholders


_MYSQL_PARAM = re.compile(r"%\((\w+)\)s|%s|%%")
# MariaDB's "not supported in the prepared statement protocol" and
# "can't create more than max_prepared_stmt_count statements".
_MYSQL_UNPREPARABLE = frozenset({1295, 1461})
_UNPREPARABLE_MAX = 1024


def mysql_prepare_text(sql: str) -> _MySQLText | None:
    """``sql`` (mysqlclient's ``%s`` / ``%(name)s`` style, ``%%`` for %) as
    PREPARE text, or None when it cannot be turned into one safely (a ``?``
    already in it, or both placeholder styles)."""
    if "?" in sql:
        return None
    names: list[str] = []
    positional = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal positional
        if m.group(0) == "%%":
            return "%"
        if m.group(1) is not None:
            names.append(m.group(1))
        else:
            positional += 1
        return "?"

    text = _MYSQL_PARAM.sub(sub, sql)
    if names and positional:
        return None
    return _MySQLText(text, tuple(names) if names else None, len(names) or positional)


_MISMATCH: Any = object()


def _mysql_args(conv: _MySQLText, params: Any) -> Any:
    """The EXECUTE arguments for ``params``, or _MISMATCH when they do not fit."""
    if conv.names is not None:
        if not isinstance(params, dict):
            return _MISMATCH
        try:
            return tuple(params[n] for n in conv.names)
        except KeyError:
            return _MISMATCH
    if isinstance(params, dict) or not isinstance(params, (tuple, list)):
        return _MISMATCH
    if len(params) != conv.nparams:
        return _MISMATCH
    return params if conv.nparams else None


class _MySQLStatements:
    """One MariaDB connection's prepared statements, LRU by SQL text."""

    def __init__(self, generation: int) -> None:
        self._names: OrderedDict[str, tuple[str, _MySQLText, str]] = OrderedDict()
        self.counts = [0, 0, 0, 0]
        self.generation = generation
        self.next_id = 0
        self.unpreparable: set[str] = set()

    @property
    def cached(self) -> int:
        return len(self._names)


class StatementCache:
    """The pool's policy for prepared statements; the state lives on each connection."""

    def __init__(self, size: int) -> None:
        self.size = integer("statement_cache_size", size, 0)
        self.generation = 0
        self._live: weakref.WeakSet[Any] = weakref.WeakSet()
        self._retired = [0, 0, 0, 0]
        # Re-entrant: a finalizer (_retire) may run while this thread holds it.
        self._lock = threading.RLock()

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
        stale = self._rebind_pg(conn, mgr)
        if stale is not None:
            _deallocate_all(conn, stale)

    async def bind_pg_async(self, conn: Any) -> None:
        """``bind_pg`` for a psycopg ``AsyncConnection``. Its caller has the
        connection in autocommit (a standalone statement) or in the caller's
        own transaction, so DEALLOCATE ALL opens no transaction of its own."""
        mgr = conn._prepared
        if type(mgr) is _CountingManager and mgr.generation == self.generation:
            return
        stale = self._rebind_pg(conn, mgr)
        if stale is not None:
            _forget_pg(stale)
            await conn.execute("DEALLOCATE ALL")

    def _rebind_pg(self, conn: Any, mgr: Any) -> _CountingManager | None:
        """The local part of ``bind_pg``: install the counting manager and
        size it; returns it when its statements must be deallocated (a new
        generation), else None."""
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
        # Not inside a failed transaction (status 3, INERROR): the server would
        # refuse DEALLOCATE there; the statement about to run fails anyway, and
        # the next use after the rollback drops them.
        if mgr.generation != self.generation and conn.pgconn.transaction_status != 3:
            mgr.generation = self.generation
            return mgr  # type: ignore[no-any-return]
        return None

    # ---- asyncpg: its own statement cache, counted ------------------------------

    def bind_asyncpg(self, conn: Any) -> None:
        """Make ``conn``'s asyncpg statement cache count its hits and follow
        this cache's size and generation (no I/O: asyncpg closes the
        statements it drops before its next statement).

        asyncpg keeps its own per-connection LRU (``conn._stmt_cache``) and has
        no counters; fastpool swaps in a subclass of it that counts what it
        does (``get`` returning a statement is a hit, ``put`` after a prepare
        a miss; entries dropped for size or lifetime are evictions). A
        connection opened with asyncpg's ``statement_cache_size=0`` keeps its
        cache off; ``statement_cache_size=0`` on the pool turns it off.
        """
        cache = conn._stmt_cache
        if type(cache) is _AsyncpgCache:
            if cache.generation != self.generation:
                cache.generation = self.generation
                cache.counts[_INVALIDATIONS] += len(cache)
                cache.clear()
            return
        new = _AsyncpgCache(loop=cache._loop, max_size=cache._max_size,
                            on_remove=cache._on_remove, max_lifetime=cache._max_lifetime)
        for entry in cache._entries.values():
            entry._cache = new
        new._entries = cache._entries
        counts = new.counts = [0, 0, 0, 0]
        new.generation = self.generation
        conn._stmt_cache = new
        with self._lock:
            self._live.add(new)
        weakref.finalize(new, self._retire, counts)
        if not self.size:
            conn._stmt_cache_enabled = False
        if conn._stmt_cache_enabled:
            new.set_max_size(self.size)

    def execute_mysql(self, conn: Any, cur: Any, sql: str, params: Any, suffix: str = "") -> None:
        """Run ``sql`` on a mysqlclient cursor as a prepared statement (MariaDB),
        or as text where that is not possible. ``suffix`` (e.g. ``"\n;COMMIT"``)
        is sent in the same packet."""
        if params is None:  # mysqlclient does no %-processing then: nothing to bind
            cur.execute(sql + suffix)
            return
        st = conn.__dict__.get("_fastpool_statements")
        if st is None or st.generation != self.generation:
            st = self._bind_mysql(conn, cur, st)
        if st is False:
            cur.execute(sql + suffix, params)
            return
        entry = st._names.get(sql)
        if entry is None:
            entry = self._prepare_mysql(st, cur, sql)
            if entry is None:
                cur.execute(sql + suffix, params)
                return
        else:
            st._names.move_to_end(sql)
            st.counts[_HITS] += 1
        _, conv, execute = entry
        args = _mysql_args(conv, params)
        if args is _MISMATCH:
            cur.execute(sql, params)  # the driver raises its own error
        else:
            cur.execute(execute + suffix, args)

    def _prepare_mysql(self, st: _MySQLStatements, cur: Any,
                       sql: str) -> tuple[str, _MySQLText, str] | None:
        if sql in st.unpreparable:
            return None
        conv = mysql_prepare_text(sql)
        if conv is None:
            return None
        name = f"fp_{st.next_id}"
        st.next_id += 1
        try:
            cur.execute(f"PREPARE {name} FROM %s", (conv.text,))
        except Exception as exc:
            if getattr(exc, "args", (None,))[0] in _MYSQL_UNPREPARABLE:
                if len(st.unpreparable) < _UNPREPARABLE_MAX:
                    st.unpreparable.add(sql)
                return None
            raise
        st.counts[_PREPARES] += 1
        marks = ", ".join(["%s"] * conv.nparams)
        execute = f"EXECUTE {name} USING {marks}" if conv.nparams else f"EXECUTE {name}"
        entry = st._names[sql] = (name, conv, execute)
        if len(st._names) > self.size:
            _, (old, _, _) = st._names.popitem(last=False)
            cur.execute(f"DEALLOCATE PREPARE {old}")
            st.counts[_EVICTIONS] += 1
        return entry

    def _bind_mysql(self, conn: Any, cur: Any, st: Any) -> Any:
        if st is None:
            if "mariadb" not in conn.get_server_info().lower():
                conn.__dict__["_fastpool_statements"] = False  # MySQL: text protocol
                return False
            st = _MySQLStatements(self.generation)
            conn.__dict__["_fastpool_statements"] = st
            with self._lock:
                self._live.add(st)
            weakref.finalize(st, self._retire, st.counts)
            return st
        if st is False:
            return st
        st.generation = self.generation
        st.counts[_INVALIDATIONS] += len(st._names)
        while st._names:
            _, (name, _, _) = st._names.popitem()
            cur.execute(f"DEALLOCATE PREPARE {name}")
        return st

    def forget(self, conn: Any) -> None:
        """Drop ``conn``'s statements (one whose plan went stale): re-prepared on next use."""
        mgr = getattr(conn, "_prepared", None)
        if type(mgr) is _CountingManager:
            _deallocate_all(conn, mgr)

    async def forget_async(self, conn: Any) -> None:
        """``forget`` for an idle asyncio connection (psycopg's or asyncpg's)."""
        cache = getattr(conn, "_stmt_cache", None)
        if type(cache) is _AsyncpgCache:
            cache.counts[_INVALIDATIONS] += len(cache)
            cache.clear()  # asyncpg closes them before its next statement
            return
        mgr = getattr(conn, "_prepared", None)
        if type(mgr) is _CountingManager:
            _forget_pg(mgr)
            was = conn._autocommit  # idle: no BEGIN for this (see _deallocate_all)
            conn._autocommit = True
            try:
                await conn.execute("DEALLOCATE ALL")
            finally:
                conn._autocommit = was

    def invalidate(self) -> None:
        """Every connection drops its prepared statements before its next use."""
        with self._lock:
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
                cached += mgr.cached
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
