"""The query result cache: TTL + LRU, bounded by entries and bytes, single flight.

Opt-in per call (``pool.fetch(sql, params, cache_ttl=5.0)``). Entries are
keyed by the kind of fetch, the SQL and the parameters (with their types, so
``1`` and ``True`` are different keys). Each entry remembers the tables its
statement reads (``fastpool.sqltext.tables``); a write through the pool's helpers
invalidates the entries of the tables it touches.

No stale read after a write through the pool: the writer calls
``begin_write(tables)`` before it runs and ``end_write(tables)`` after its
commit, and each bumps the tables' versions and drops their entries and
in-flight reads. A read notes the versions when it starts and stores its
result only if none changed meanwhile, so a read that overlapped a write is
returned to its caller (it was concurrent with the write) but never cached.

Concurrent misses for one key run the query once: the first caller runs it
and the others wait for its result (or its exception): threads on an event,
asyncio tasks (``get_or_run_async``) on a future of the loop. Both flavours
follow the same rules (``_cached``, ``_join``, ``_land``, ``_crash``,
``_followed``); only the waiting differs.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastpool.errors import separate_copy
from fastpool.options import MAX_INT64, callable_or_none, integer
from fastpool.sqltext.tables import ANY

__all__ = ["ResultCache"]

_MISS: Any = object()
#: A flight's error when its leader was interrupted (cancelled, KeyboardInterrupt).
_INTERRUPTED: Any = object()
#: ``_followed``: the leader was interrupted; run the read again.
_RERUN: Any = object()


class _Entry:
    __slots__ = ("expires", "nbytes", "tables", "value")

    def __init__(self, value: Any, expires: float, nbytes: int, tables: frozenset[str]) -> None:
        self.value = value
        self.expires = expires
        self.nbytes = nbytes
        self.tables = tables


class _Flight:
    """One in-flight read that later callers for the same key wait on: on a
    threading.Event (threads), or on a future of the leader's event loop (tasks)."""

    __slots__ = ("done", "error", "future", "tables", "value")

    def __init__(self, tables: frozenset[str], loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is None:
            self.done: threading.Event | None = threading.Event()
            self.future: asyncio.Future[None] | None = None
        else:
            self.done = None
            self.future = loop.create_future()
        self.value: Any = None
        self.error: BaseException | None = None
        self.tables = tables

    def finish(self) -> None:
        """Wake the followers (on the leader's thread or loop)."""
        if self.done is not None:
            self.done.set()
        elif self.future is not None and not self.future.done():
            self.future.set_result(None)


def _sizeof(value: Any) -> int:
    """Approximate bytes held by a fetched result (rows of scalars)."""
    size = sys.getsizeof(value)
    if isinstance(value, (list, tuple)):
        for row in value:
            size += sys.getsizeof(row)
            if isinstance(row, (tuple, list)):
                size += sum(sys.getsizeof(v) for v in row)
            elif isinstance(row, dict):
                size += sum(sys.getsizeof(v) for v in row.values())
    return size


def fold_names(tables: Iterable[str]) -> frozenset[str]:
    """Names as given and lowercased (unquoted SQL names are case-insensitive)."""
    return frozenset(n for t in tables for n in (t, t.lower()))


def cache_key(kind: str, sql: str, params: Any) -> tuple[Any, ...] | None:
    """A hashable key for the call, or None when the parameters are not hashable."""
    if params is None:
        typed: Any = None
    elif isinstance(params, dict):
        typed = tuple(sorted((k, type(v), v) for k, v in params.items()))
    elif isinstance(params, (list, tuple)):
        typed = tuple((type(v), v) for v in params)
    else:
        return None
    key = (kind, sql, typed)
    try:
        hash(key)
    except TypeError:
        return None
    return key


class ResultCache:
    """TTL + LRU cache of fetched results, bounded by ``max_entries`` and ``max_bytes``.

    ``clock`` returns the time in seconds that TTLs count in (default
    ``time.monotonic``); a test passes a fake one to expire entries without
    sleeping::

        cache = ResultCache(clock=fake_clock.seconds)
    """

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        integer("result_cache_entries", max_entries, 1)
        integer("result_cache_bytes", max_bytes, 1, maximum=MAX_INT64)
        callable_or_none("clock", clock, owner="ResultCache")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[Any, _Entry] = OrderedDict()
        self._by_table: dict[str, set[Any]] = {}
        self._flights: dict[Any, _Flight] = {}
        self._versions: dict[str, int] = {}
        self._writes = 0
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.invalidations = 0
        self.expirations = 0
        self.waits = 0
        #: Calls with ``cache_ttl=`` that skipped the cache: run with ``conn=``,
        #: inside the caller's transaction (see ``QueryLayer.call``).
        self.bypassed = 0

    # ---- reads ----------------------------------------------------------

    def set_clock(self, clock: Callable[[], float] | None) -> None:
        """Count TTLs on ``clock`` (float seconds) from now on; None: time.monotonic.

        Cached entries keep the time they had left (as the pool core's
        timestamps do when its clock changes).
        """
        new = callable_or_none("clock", clock, owner="ResultCache") or time.monotonic
        shift = new() - self._clock()
        with self._lock:
            for entry in self._entries.values():
                entry.expires += shift
            self._clock = new

    def get_or_run(self, key: Any, ttl: float, tables: frozenset[str],
                   run: Callable[[], Any]) -> Any:
        """The cached value for ``key``, or ``run()``'s, cached for ``ttl`` seconds."""
        now = self._clock()
        with self._lock:
            value = self._cached(key, now)
            if value is not _MISS:
                return value
            flight, versions = self._join(key, tables, None)
        try:
            if versions is None:  # another caller runs it: wait for its result
                flight.done.wait()  # type: ignore[union-attr]
                value = self._followed(flight)
                return run() if value is _RERUN else value
            try:
                value = run()
            except BaseException as exc:
                self._crash(key, flight, exc)
                raise
            self._land(key, flight, versions, value, now + ttl, tables)
            return value
        finally:
            flight = None  # type: ignore[assignment]  # see _followed

    async def get_or_run_async(self, key: Any, ttl: float, tables: frozenset[str],
                               run: Callable[[], Awaitable[Any]]) -> Any:
        """``get_or_run`` for tasks: ``await run()``; the tasks that miss the
        same key while it runs wait for its result on a future of the running
        loop (never blocking the loop)."""
        now = self._clock()
        with self._lock:
            value = self._cached(key, now)
            if value is not _MISS:
                return value
            flight, versions = self._join(key, tables, asyncio.get_running_loop())
        try:
            if versions is None:
                # shield: a follower cancelled while waiting must not cancel the
                # future the other followers wait on.
                await asyncio.shield(flight.future)  # type: ignore[arg-type]
                value = self._followed(flight)
                return await run() if value is _RERUN else value
            try:
                value = await run()
            except BaseException as exc:
                self._crash(key, flight, exc)
                raise
            self._land(key, flight, versions, value, now + ttl, tables)
            return value
        finally:
            flight = None  # type: ignore[assignment]  # see _followed

    # The rules both get_or_run flavours follow (the lock held where said).

    def _cached(self, key: Any, now: float) -> Any:
        """A live entry's value (a hit), or _MISS; drops an expired one. Lock held."""
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires > now:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry.value
            self._drop(key)
            self.expirations += 1
        return _MISS

    def _join(self, key: Any, tables: frozenset[str], loop: asyncio.AbstractEventLoop | None,
              ) -> tuple[_Flight, tuple[int, ...] | None]:
        """Follow the read of ``key`` in flight, or lead a new one: (flight,
        None) to follow, (flight, the tables' versions) to lead. ``loop``:
        the leader's event loop, whose future the followers await. Lock held."""
        flight = self._flights.get(key)
        if flight is not None:
            self.hits += 1
            self.waits += 1
            return flight, None
        self.misses += 1
        flight = self._flights[key] = _Flight(tables, loop)
        return flight, self._snapshot(tables)

    @staticmethod
    def _followed(flight: _Flight) -> Any:
        """After the leader's flight ended: its value; ``_RERUN`` to run the
        read again (the leader was interrupted: a KeyboardInterrupt or a
        cancellation is not this caller's error); raises the leader's error.

        No frame that the error passes through may keep the flight (which
        holds the error): the error's traceback keeps those frames, and the
        cycle would keep everything they refer to, the connection the read
        ran on included, until the cyclic collector runs (in a steady
        service, rarely), so a connection later dropped without a release
        could not be reclaimed. Hence the ``finally: flight = None`` here and
        in ``get_or_run``/``get_or_run_async``.
        """
        error = flight.error
        if error is None:
            return flight.value
        if error is _INTERRUPTED:
            return _RERUN
        try:
            raise separate_copy(error)  # each follower its own (its raise grows it)
        finally:
            flight = error = None  # type: ignore[assignment]

    def _crash(self, key: Any, flight: _Flight, exc: BaseException) -> None:
        """The leader's read failed: its followers get ``exc``, or run the
        read again if it was interrupted (the interruption is kept nowhere)."""
        flight.error = exc if isinstance(exc, Exception) else _INTERRUPTED
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.finish()

    def _land(self, key: Any, flight: _Flight, versions: tuple[int, ...], value: Any,
              expires: float, tables: frozenset[str]) -> None:
        """The leader's read returned ``value``: stored unless a write to its
        tables began or ended meanwhile; its followers get it."""
        flight.value = value
        try:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
                if versions == self._snapshot(tables):
                    self._store(key, value, expires, tables)
        finally:  # whatever storing did, the followers must not wait forever
            flight.finish()

    def _snapshot(self, tables: frozenset[str]) -> tuple[int, ...]:
        if not tables or ANY in tables:  # unknown tables: any write at all makes it stale
            return (self._writes,)
        v = self._versions
        return (v.get(ANY, 0), *(v.get(t, 0) for t in tables))

    def _store(self, key: Any, value: Any, expires: float, tables: frozenset[str]) -> None:
        nbytes = _sizeof(value)
        if nbytes > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = _Entry(value, expires, nbytes, tables)
        self.bytes += nbytes
        for table in tables or (ANY,):
            self._by_table.setdefault(table, set()).add(key)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.evictions += 1

    def _drop(self, key: Any) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.nbytes
        for table in entry.tables or (ANY,):
            keys = self._by_table.get(table)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_table[table]

    # ---- writes ---------------------------------------------------------

    def invalidate(self, tables: Iterable[str]) -> int:
        """Drop the cached results of ``tables`` (``"*"``: all); returns how many.

        Names are matched as given and lowercased (unquoted SQL names are
        case-insensitive).
        """
        return self.bump(fold_names(tables))

    def bump(self, tables: frozenset[str]) -> int:
        """A write to ``tables`` starts or ended: new versions, entries and flights dropped."""
        with self._lock:
            self._writes += 1
            versions = self._versions
            for t in tables:
                versions[t] = versions.get(t, 0) + 1
            if not self._entries and not self._flights:
                return 0
            if ANY in tables:
                doomed: Iterable[Any] = list(self._entries)
                self._flights.clear()
            else:
                by_table = self._by_table
                doomed = {k for t in (*tables, ANY) for k in by_table.get(t, ())}
                if self._flights:
                    for key in [k for k, f in self._flights.items()
                                if not f.tables or ANY in f.tables
                                or not f.tables.isdisjoint(tables)]:
                        del self._flights[key]
            dropped = 0
            for key in doomed:
                if key in self._entries:
                    self._drop(key)
                    dropped += 1
            self.invalidations += dropped
            return dropped

    begin_write = bump
    end_write = bump

    def clear(self) -> None:
        """Drop every entry."""
        self.invalidate((ANY,))

    def stats(self) -> dict[str, Any]:
        """Counters and sizes: hits, misses, hit_rate, evictions, invalidations, bytes..."""
        with self._lock:
            looked = self.hits + self.misses
            return {
                "hits": self.hits,
                "misses": self.misses,
                "hit_rate": self.hits / looked if looked else None,
                "single_flight_waits": self.waits,
                "bypassed": self.bypassed,
                "evictions": self.evictions,
                "expirations": self.expirations,
                "invalidations": self.invalidations,
                "entries": len(self._entries),
                "bytes": self.bytes,
                "max_entries": self.max_entries,
                "max_bytes": self.max_bytes,
            }
