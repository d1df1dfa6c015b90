"""Group commit: many threads' small writes, committed together.

A ``Batcher`` queues writes from any number of threads; flusher threads take
what is queued, run it in one transaction (the writes of each distinct
statement together: one multi-row ``INSERT`` where the statement allows it,
else one pipelined ``executemany``) and commit once. Each caller gets its own
outcome::

    batcher = Batcher(pool, max_batch=500, max_delay=0.005)     # or pool.batcher(...)
    result = batcher.execute("INSERT INTO events (id, body) VALUES (%s, %s)", (7, "hi"))
    result.rowcount                                  # 1, once committed
    future = batcher.submit("UPDATE counters SET n = n + 1 WHERE id = %s", (3,), key=3)
    batcher.flush()                                  # everything submitted so far is done
    batcher.close()                                  # flushes what is pending, then stops

Group commit: an idle flusher starts a transaction at once (a lone write waits
about one commit); writes that arrive while a commit is in flight go in the
next batch. ``max_delay`` bounds how long a write may sit queued while all
flushers are busy: past it (or at ``max_batch`` queued writes) another idle
flusher, if any, starts a batch in parallel. It is not a sleep per batch.

Failures are the caller's alone. A write that fails (a constraint violation,
a bad parameter) fails only its own caller, with the driver's exception: the
batch is rolled back and run again with a savepoint around each statement
group, bisecting a failing group down to the bad write. Deadlocks,
serialization failures and lock timeouts (``ErrorKind.RETRYABLE``) roll back
and run the whole batch again after a jittered backoff, up to ``max_retries``
times; so does a connection lost before COMMIT was sent (the server rolled
back), on a fresh connection. A connection lost during COMMIT leaves the
outcome unknown: those callers get ``TransactionOutcomeUnknown`` (driver error
as ``__cause__``), and nothing is written twice.

Deadlocks between concurrent batches: give each write a ``key`` (the primary
key it locks; ``submit(..., key=k)`` or ``Batcher(key=callable)``) and the
writes of each statement group are run in key order, so that concurrent
batches lock rows in the same order. Without keys, submission order is kept
within a statement group. Groups run in the order of their first write: a
write that must follow another statement's write should wait for it
(``execute`` or ``future.result()``) before being submitted.

Results (``BatchResult(rowcount, row)``), per driver:

* PostgreSQL (psycopg): a plain ``INSERT ... VALUES (%s, ...)`` (no
  ``ON CONFLICT``, no ``RETURNING``, positional parameters) runs as one
  multi-row ``INSERT``: one round trip, and each write's rowcount is 1. Other
  statements run as ``executemany(..., returning=True)`` (one pipeline, but a
  socket wait per write): the exact rowcount of each write and its first
  ``RETURNING`` row.
* MariaDB/MySQL (mysqlclient): an ``INSERT``/``REPLACE ... VALUES`` with more
  than one write runs as one multi-row statement, which reports only a total:
  each write's rowcount is then 1 (or 0) when the total says so for a plain
  ``INSERT`` / ``INSERT IGNORE``, else -1 (unknown). Other statements, and
  statements with ``RETURNING`` (MariaDB 10.5+), run one ``execute`` per write
  in the same transaction: exact rowcount and row.
* SQLite: one ``execute`` per write (in-process, cheap): exact rowcount and row.

Nothing is dropped at shutdown: ``close()`` commits what is pending; at
interpreter exit every open batcher is closed (waiting up to
``Batcher.EXIT_TIMEOUT`` seconds); a batcher that is garbage-collected without
``close()`` flushes in the background and its threads end. In a forked child
a batcher starts empty, with its own flushers (the writes queued before the
fork are the parent's to commit) and counters from zero.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import logging
import math
import os
import random
import re
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from fastpool.errors import ConfigError, ErrorKind, FastpoolError, TransactionOutcomeUnknown

if TYPE_CHECKING:
    from fastpool.pool import PoolPolicy

__all__ = ["BatchResult", "BatchStats", "Batcher", "BatcherClosed", "BatcherFull"]

logger = logging.getLogger("fastpool")


class BatcherClosed(FastpoolError):
    """The batcher was closed: it accepts no more writes."""


class BatcherFull(FastpoolError):
    """``max_pending`` writes are already pending: ``submit`` was refused
    (``on_full="raise"``) or waited ``full_timeout`` seconds in vain."""


class BatchResult(NamedTuple):
    """The outcome of one committed write."""

    #: Rows the write affected; -1 when the driver cannot tell per write
    #: (a MySQL multi-row ``INSERT ... ON DUPLICATE KEY UPDATE``, ``REPLACE``).
    rowcount: int
    #: The first row the write returned (``RETURNING``), else None.
    row: Any = None


@dataclass(frozen=True)
class BatchStats:
    """A snapshot of a batcher's counters (``batcher.stats()``).

    ``submitted == committed + failed + cancelled + pending`` always holds.
    """

    #: Writes accepted by ``submit``/``execute``.
    submitted: int
    #: Writes committed.
    committed: int
    #: Writes whose caller got an error (its own, or the batch's).
    failed: int
    #: Futures cancelled before their batch started (never written).
    cancelled: int
    #: Writes not resolved yet: queued or in a transaction now.
    pending: int
    #: Of ``pending``, those still queued (not taken by a flusher yet).
    queued: int
    #: Batches taken by the flushers.
    batches: int
    batch_size_mean: float
    batch_size_p99: int
    #: Seconds from submit to commit, over committed writes (within ~7%).
    latency_p50: float
    latency_p99: float
    #: Transactions run again (conflict, lost connection before COMMIT).
    retries: int
    #: Conflicts seen (deadlock, serialization failure, lock timeout).
    conflicts: int
    #: Batches run again with savepoints because a write in them failed.
    isolations: int

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a plain dict (for logs and exporters)."""
        return asdict(self)


# ---- driver dialects ----------------------------------------------------------

_SAVEPOINT = "SAVEPOINT fastpool_batch"
_ROLLBACK_TO = "ROLLBACK TO SAVEPOINT fastpool_batch"
_RELEASE = "RELEASE SAVEPOINT fastpool_batch"


class _Dialect:
    """How one client library runs a statement group and a transaction.
    The default: any DB-API connection, one ``execute`` per write."""

    def begin(self, conn: Any) -> None:
        """Open a transaction if the connection would otherwise autocommit."""

    def command(self, conn: Any, sql: str) -> None:
        cur = conn.cursor()
        try:
            cur.execute(sql)
        finally:
            cur.close()

    def run(self, conn: Any, sql: str, params: list[Any]) -> list[BatchResult]:
        cur = conn.cursor()
        try:
            out = []
            for p in params:
                cur.execute(sql, p)
                row = None
                if cur.description is not None:
                    rows = cur.fetchall()
                    row = rows[0] if rows else None
                out.append(BatchResult(cur.rowcount, row))
            return out
        finally:
            cur.close()


class _SQLite(_Dialect):
    def begin(self, conn: Any) -> None:
        # Explicitly: a SAVEPOINT outside a transaction would start one that
        # its RELEASE commits, splitting the batch. IMMEDIATE: a batch writes,
        # and taking the write lock up front waits in the busy handler instead
        # of failing a deferred transaction's lock upgrade.
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")


# A plain INSERT of one row of bare %s placeholders, with nothing after VALUES
# (no ON CONFLICT, no RETURNING): the shape that becomes one multi-row INSERT.
_PG_INSERT_VALUES = re.compile(
    r"\s*(INSERT\s+INTO\s.+?\bVALUES\s*)(\(\s*%s\s*(?:,\s*%s\s*)*\))\s*;?\s*\Z",
    re.IGNORECASE | re.DOTALL)


class _Postgres(_Dialect):
    #: The protocol's limit on parameters per statement.
    MAX_PARAMS = 65535
    #: Multi-row statement texts kept, per (statement, row count).
    TEXT_CACHE = 256

    def __init__(self, conn: Any) -> None:
        self._plans: dict[str, tuple[str, str, int] | None] = {}
        self._texts: dict[tuple[str, int], str] = {}
        # RawCursor (psycopg 3.2+) takes PostgreSQL's own $n placeholders and
        # parses nothing: psycopg re-parses a %s query of more than 50
        # parameters on every execute, which cost 4.5 us per row of a
        # 250-row INSERT (0.8 us with $n).
        import psycopg

        self._raw_cursor: Any = getattr(psycopg, "RawCursor", None)

    def begin(self, conn: Any) -> None:
        if conn.autocommit:
            conn.execute("BEGIN")

    def command(self, conn: Any, sql: str) -> None:
        conn.execute(sql)

    def _multirow_plan(self, sql: str) -> tuple[str, str, int] | None:
        """(head, one row's placeholders, their count) for a plain INSERT."""
        try:
            return self._plans[sql]
        except KeyError:
            pass
        m = _PG_INSERT_VALUES.match(sql)
        plan = None
        if m is not None and "%s" not in m.group(1):
            plan = (m.group(1), m.group(2), m.group(2).count("%s"))
        if len(self._plans) < 1000:
            self._plans[sql] = plan
        return plan

    def run(self, conn: Any, sql: str, params: list[Any]) -> list[BatchResult]:
        plan = self._multirow_plan(sql) if len(params) > 1 else None
        if plan is not None and all(type(p) in (tuple, list) and len(p) == plan[2]
                                    for p in params):
            return self._run_multirow(conn, sql, plan, params)
        cur = conn.cursor()
        try:
            # returning=True keeps one result per write: its own rowcount.
            # psycopg pipelines these, but waits on the socket once per write.
            cur.executemany(sql, params, returning=True)
            out: list[BatchResult] = []
            if cur.description is None:
                append = out.append
                while True:
                    append(BatchResult(cur.rowcount))
                    if not cur.nextset():
                        break
            else:
                while True:
                    out.append(BatchResult(cur.rowcount, cur.fetchone()))
                    if not cur.nextset():
                        break
            return out
        finally:
            cur.close()

    def _text(self, sql: str, plan: tuple[str, str, int], rows: int) -> tuple[str, bool]:
        """The INSERT of ``rows`` rows, and whether it uses $n placeholders."""
        head, row, width = plan
        raw = self._raw_cursor is not None and "%" not in head
        text = self._texts.get((sql, rows)) if raw else None
        if text is not None:
            return text, True
        if not raw:
            return head + ",".join([row] * rows), False
        parts = row.split("%s")
        text = head + ",".join(
            "".join(part + (f"${r * width + i + 1}" if i < width else "")
                    for i, part in enumerate(parts))
            for r in range(rows))
        if len(self._texts) >= self.TEXT_CACHE:
            self._texts.clear()
        self._texts[(sql, rows)] = text
        return text, True

    def _run_multirow(self, conn: Any, sql: str, plan: tuple[str, str, int],
                      params: list[Any]) -> list[BatchResult]:
        """One INSERT ... VALUES (...), (...) per MAX_PARAMS parameters: one
        round trip instead of a wait per write. Each write inserts its one
        row or the statement fails, so each rowcount is 1."""
        per_statement = max(1, self.MAX_PARAMS // plan[2])
        total = 0
        for start in range(0, len(params), per_statement):
            chunk = params[start:start + per_statement]
            text, raw = self._text(sql, plan, len(chunk))
            cur = self._raw_cursor(conn) if raw else conn.cursor()
            try:
                cur.execute(text, [value for p in chunk for value in p])
                total += cur.rowcount
            finally:
                cur.close()
        n = len(params)
        return [BatchResult(1 if total == n else 0 if total == 0 else -1)] * n


class _MySQL(_Dialect):
    def __init__(self) -> None:
        from MySQLdb.cursors import RE_INSERT_VALUES

        self._multirow = RE_INSERT_VALUES
        self._plans: dict[str, int] = {}

    def begin(self, conn: Any) -> None:
        if conn.get_autocommit():
            conn.begin()

    def _plan(self, sql: str) -> int:
        """0: one execute per write; 1: multi-row INSERT/INSERT IGNORE (each
        write affects 0 or 1 row); 2: other multi-row (REPLACE, ON DUPLICATE)."""
        plan = self._plans.get(sql)
        if plan is None:
            upper = sql.upper()
            if not self._multirow.match(sql) or "RETURNING" in upper:
                plan = 0
            elif upper.lstrip().startswith("INSERT") and "ON DUPLICATE" not in upper:
                plan = 1
            else:
                plan = 2
            if len(self._plans) < 1000:
                self._plans[sql] = plan
        return plan

    def run(self, conn: Any, sql: str, params: list[Any]) -> list[BatchResult]:
        plan = self._plan(sql) if len(params) > 1 else 0
        if plan == 0:
            return super().run(conn, sql, params)
        cur = conn.cursor()
        try:
            cur.executemany(sql, params)
            total = cur.rowcount
        finally:
            cur.close()
        n = len(params)
        each = -1
        if total == 0:
            each = 0
        elif plan == 1 and total == n:
            each = 1
        return [BatchResult(each)] * n


def _dialect_for(conn: Any) -> _Dialect:
    package = type(conn).__module__.split(".")[0]
    if package == "psycopg":
        return _Postgres(conn)
    if package == "MySQLdb":
        return _MySQL()
    if isinstance(conn, sqlite3.Connection):
        return _SQLite()
    return _Dialect()


# ---- items, waiting, statistics ----------------------------------------------

class _Item:
    """One submitted write and, once its batch is done, its outcome."""

    __slots__ = ("abandoned", "chained", "error", "future", "key", "next_waiter", "params",
                 "result", "seq", "sql", "t0", "waiter")

    def __init__(self, sql: str, params: Any, key: Any, t0: int) -> None:
        self.sql = sql
        self.params = params
        self.key = key
        self.t0 = t0
        self.seq = 0
        self.waiter: Any = None          # execute(): the caller's lock
        self.next_waiter: Any = None     # the lock this caller releases once woken
        self.chained = False             # in its batch's wake-up chain
        self.abandoned = False           # its caller stopped waiting (interrupted)
        self.future: Future[BatchResult] | None = None
        self.result: BatchResult | None = None
        self.error: BaseException | None = None


_tls = threading.local()


def _thread_lock() -> Any:
    """This thread's wake-up lock for ``execute`` (held while not waiting;
    the flusher releases it), or None in a flusher thread."""
    try:
        return _tls.lock
    except AttributeError:
        lock = _tls.lock = threading.Lock()
        lock.acquire()
        return lock


# Latency histogram: exact below 16 us, then 8 buckets per power of two.
_EXACT = 16


def _bucket(us: int) -> int:
    if us < _EXACT:
        return us
    shift = us.bit_length() - 4
    return _EXACT + (shift - 1) * 8 + ((us >> shift) & 7)


def _bucket_value(idx: int) -> float:
    if idx < _EXACT:
        return float(idx)
    shift = (idx - _EXACT) // 8 + 1
    return ((8 + (idx - _EXACT) % 8) << shift) + (1 << shift) / 2


def _quantile(counts: Sequence[int], q: float) -> int:
    """Index of the q-quantile in a histogram of counts (0 when empty)."""
    total = sum(counts)
    if not total:
        return 0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for idx, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return idx
    return len(counts) - 1


class _Counters:
    """One flusher's counters: only its thread writes them."""

    def __init__(self, max_batch: int) -> None:
        self.sizes = [0] * (max_batch + 1)
        self.latency: list[int] = []
        self.retries = 0
        self.conflicts = 0
        self.isolations = 0

    def record_latency(self, us: int) -> None:
        idx = _bucket(us)
        lat = self.latency
        if idx >= len(lat):
            lat.extend([0] * (idx + 1 - len(lat)))
        lat[idx] += 1


# ---- validation ---------------------------------------------------------------

def _int_option(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"Batcher: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def _seconds_option(name: str, value: object, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 <= value < math.inf:
        need = "a finite number of seconds >= 0" + (" or None" if allow_none else "")
        raise ConfigError(f"Batcher: {name} must be {need}, got {value!r}")
    return float(value)


# ---- the engine: state shared with the flusher threads -------------------------

_ITEM_KINDS = frozenset({ErrorKind.QUERY, ErrorKind.OTHER, ErrorKind.CONFIG, ErrorKind.AUTH,
                         ErrorKind.UNREACHABLE})
_RECONNECT_KINDS = frozenset({ErrorKind.CONNECTION_LOST, ErrorKind.NOT_SENT,
                              ErrorKind.UNAVAILABLE})
_NEVER = 1 << 62


class _Engine:
    """The queue, the flushers and their counters. Flusher threads hold this,
    not the Batcher, so that an abandoned Batcher can be collected."""

    def __init__(self, pool: Any, *, max_batch: int, max_delay: float, flushers: int,
                 max_pending: int | None, on_full: str, full_timeout: float | None,
                 max_retries: int, name: str, backoff: tuple[float, float]) -> None:
        self.pool = pool
        self.name = name
        self.max_batch = max_batch
        self.max_delay_ns = int(max_delay * 1e9)
        self.max_pending = max_pending if max_pending is not None else _NEVER
        self.raise_when_full = on_full == "raise"
        self.full_timeout = full_timeout
        self.max_retries = max_retries
        self.backoff_initial, self.backoff_max = backoff
        self.dialect: _Dialect | None = None

        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)   # flushers wait for writes
        self.room = threading.Condition(self.lock)   # submitters wait for room
        self.done = threading.Condition(self.lock)   # flush()/close() wait for batches
        self.queue: deque[_Item] = deque()
        self.seq = 0
        self.pending = 0
        self.sleeping = 0        # flushers waiting in take()
        self.room_waiters = 0
        self.flushing = 0        # flush()/close() calls waiting: no max_delay wait
        self.closing = False
        self.inflight: dict[int, int] = {}    # flusher -> lowest seq of its batch
        self.submitted = self.committed = self.failed = self.cancelled = self.batches = 0
        self.counters = [_Counters(max_batch) for _ in range(flushers)]
        self.sort_warned = False
        self.threads = [
            threading.Thread(target=_flusher_main, args=(self, i), daemon=True,
                             name=f"fastpool-batch-{name}-{i}")
            for i in range(flushers)]
        for t in self.threads:
            t.start()
        _engines.add(self)

    def reinit_after_fork(self) -> None:
        """In a forked child: the queued writes are the parent's (its flushers
        commit them); start empty, with new locks and new flushers."""
        self.lock = threading.Lock()  # may have been held by a parent's thread
        self.work = threading.Condition(self.lock)
        self.room = threading.Condition(self.lock)
        self.done = threading.Condition(self.lock)
        self.queue = deque()
        self.pending = self.sleeping = self.room_waiters = self.flushing = 0
        self.inflight = {}
        self.submitted = self.committed = self.failed = self.cancelled = self.batches = 0
        n = len(self.threads)
        self.counters = [_Counters(self.max_batch) for _ in range(n)]
        self.threads = [] if self.closing else [
            threading.Thread(target=_flusher_main, args=(self, i), daemon=True,
                             name=f"fastpool-batch-{self.name}-{i}")
            for i in range(n)]
        for t in self.threads:
            t.start()

    # ---- submitting ---------------------------------------------------------

    def enqueue(self, item: _Item) -> None:
        with self.lock:
            if self.closing:
                raise BatcherClosed(f"batcher {self.name!r} is closed")
            if self.pending >= self.max_pending:
                if getattr(_tls, "flusher", False):
                    # A done-callback submitting from a flusher: waiting would
                    # stop the very thread that makes room.
                    raise BatcherFull(f"batcher {self.name!r} is full ({self.pending} writes "
                                      "pending) and a flusher thread cannot wait for room")
                self._wait_for_room()
            self.seq += 1
            item.seq = self.seq
            q = self.queue
            q.append(item)
            self.pending += 1
            self.submitted += 1
            if self.sleeping and (len(q) == 1 or len(q) == self.max_batch):
                self.work.notify()

    def _wait_for_room(self) -> None:
        """With the lock held: wait (or refuse) while ``max_pending`` are pending."""
        state = f"{self.pending} writes pending (max_pending={self.max_pending})"
        if self.raise_when_full:
            raise BatcherFull(f"batcher {self.name!r} is full: {state}, on_full='raise'")
        deadline = None if self.full_timeout is None else time.monotonic() + self.full_timeout
        self.room_waiters += 1
        try:
            while self.pending >= self.max_pending and not self.closing:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise BatcherFull(f"batcher {self.name!r} stayed full for "
                                      f"{self.full_timeout:g} s (full_timeout): {state}")
                self.room.wait(remaining)
        finally:
            self.room_waiters -= 1
        if self.closing:
            raise BatcherClosed(f"batcher {self.name!r} was closed while waiting for room")

    # ---- the flusher's side ---------------------------------------------------

    def take(self, me: int) -> list[_Item] | None:
        """Wait for a batch to flush; None when closed and nothing is queued."""
        with self.lock:
            q = self.queue
            while True:
                if q:
                    if not self.inflight or len(q) >= self.max_batch or self.closing \
                            or self.flushing:
                        break
                    # Another flusher's commit is in flight: start a parallel
                    # batch only once the oldest write has waited max_delay.
                    wait = q[0].t0 + self.max_delay_ns - time.monotonic_ns()
                    if wait <= 0:
                        break
                    timeout: float | None = wait / 1e9
                elif self.closing:
                    return None
                else:
                    timeout = None
                self.sleeping += 1
                try:
                    self.work.wait(timeout)
                finally:
                    self.sleeping -= 1
            if len(q) <= self.max_batch:
                batch = list(q)
                q.clear()
            else:
                batch = [q.popleft() for _ in range(self.max_batch)]
            self.inflight[me] = batch[0].seq
            self.batches += 1
            if q and self.sleeping:
                self.work.notify()  # more than a batch was queued: a second flusher may start
        self.counters[me].sizes[len(batch)] += 1
        return batch

    def finish(self, me: int, batch: list[_Item], cancelled: int) -> None:
        """Count a resolved batch, then wake its callers.

        ``execute`` callers are woken as a chain: the flusher releases the
        first one, which releases the next as soon as it runs, and so on.
        Waking a whole batch at once would make its threads and the flusher
        fight for the GIL: each of the flusher's next I/O waits would then
        queue behind all of them.
        """
        now = time.monotonic_ns()
        counters = self.counters[me]
        committed = 0
        for it in batch:
            if it.error is None and it.result is not None:
                committed += 1
                counters.record_latency((now - it.t0) // 1000)
        first = None
        with self.lock:
            prev = None
            for it in batch:
                if it.waiter is not None and not it.abandoned:
                    it.chained = True
                    if prev is None:
                        first = it.waiter
                    else:
                        prev.next_waiter = it.waiter
                    prev = it
        if first is not None:
            first.release()
        # Every future is resolved before flush() can see the batch done, and
        # a done-callback that raises (even a BaseException) stops none of them.
        for it in batch:
            future = it.future
            if future is None:
                continue  # not running: cancelled
            try:
                if it.error is None:
                    future.set_result(it.result)  # type: ignore[arg-type]
                else:
                    future.set_exception(it.error)
            except BaseException:
                logger.exception("fastpool: batcher %r: a done-callback failed", self.name)
        with self.lock:
            self.pending -= len(batch)
            self.committed += committed
            self.cancelled += cancelled
            self.failed += len(batch) - committed - cancelled
            del self.inflight[me]
            if self.room_waiters:
                self.room.notify(len(batch))
            if self.flushing:
                self.done.notify_all()

    def abandon(self, item: _Item) -> None:
        """An ``execute`` caller stopped waiting (interrupted): keep the wake-up
        chain going without it."""
        with self.lock:
            if not item.chained:
                item.abandoned = True  # finish() will leave it out of the chain
                return
            nxt, item.next_waiter = item.next_waiter, None
        if nxt is not None:
            nxt.release()

    def unresolved_below(self, target: int) -> bool:
        """With the lock held: is any write with seq <= target unresolved?"""
        if self.queue and self.queue[0].seq <= target:
            return True
        return any(low <= target for low in self.inflight.values())

    # ---- flush / close ----------------------------------------------------------

    def wait_resolved(self, target: int, timeout: float | None, what: str) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            self.flushing += 1
            if self.sleeping:
                self.work.notify_all()
            try:
                while self.unresolved_below(target):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(
                            f"batcher {self.name!r}: {what} timed out after {timeout:g} s "
                            f"with {self.pending} writes pending")
                    self.done.wait(remaining)
            finally:
                self.flushing -= 1

    def close(self, timeout: float | None) -> None:
        with self.lock:
            self.closing = True
            target = self.seq
            self.work.notify_all()
            self.room.notify_all()
        me = threading.current_thread()
        if me in self.threads:
            return  # closed from a done-callback: the flusher drains on its way out
        self.wait_resolved(target, timeout, "close")
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self.threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def close_soon(self) -> None:
        """The Batcher was garbage-collected: flush in the background, then stop."""
        with self.lock:
            self.closing = True
            self.work.notify_all()
            self.room.notify_all()

    # ---- running a batch ----------------------------------------------------------

    def flush_batch(self, me: int, batch: list[_Item]) -> None:
        """Commit ``batch`` (or fail its writes); always resolves every write."""
        cancelled = 0
        live = []
        for it in batch:
            if it.future is not None and not it.future.set_running_or_notify_cancel():
                it.future = None  # cancelled: nothing to resolve
                cancelled += 1
            else:
                live.append(it)
        try:
            if live:
                # Writes invalidate the pool's result cache, before and after the commit.
                with self.pool._queries.writing_statements({it.sql for it in live}):
                    self.commit_items(me, live)
        except BaseException as exc:  # a bug of ours: never leave a caller hanging
            logger.exception("fastpool: batcher %r failed to run a batch", self.name)
            for it in live:
                if it.error is None and it.result is None:
                    it.error = _copy_error(exc)
            raise
        finally:
            self.finish(me, batch, cancelled)

    def groups(self, items: list[_Item]) -> list[tuple[str, list[_Item]]]:
        """Writes grouped by statement (groups in order of their first write),
        each group in key order when keys were given, else in submission order."""
        by_sql: dict[str, list[_Item]] = {}
        keyed = False
        for it in items:
            group = by_sql.get(it.sql)
            if group is None:
                by_sql[it.sql] = [it]
            else:
                group.append(it)
            if it.key is not None:
                keyed = True
        if keyed:
            for sql, group in by_sql.items():
                if any(it.key is None for it in group):
                    continue  # partly keyed: submission order (an unkeyed write has no place)
                try:  # stable: writes of the same key keep their order
                    by_sql[sql] = sorted(group, key=lambda it: it.key)
                except TypeError as exc:
                    if not self.sort_warned:
                        self.sort_warned = True
                        logger.warning("fastpool: batcher %r: keys cannot be ordered (%s); "
                                       "keeping submission order", self.name, exc)
        return list(by_sql.items())

    def commit_items(self, me: int, items: list[_Item]) -> None:
        """One transaction for ``items``, retried, isolated or split as needed;
        sets each write's result or error."""
        counters = self.counters[me]
        groups = self.groups(items)
        careful = False
        attempt = 0
        while True:
            for it in items:
                it.result = it.error = None
            try:
                conn = self.pool.acquire()
            except Exception as exc:  # pool closed, timed out, cannot connect
                _fail(items, exc)
                return
            at_commit = False
            error: Exception | None = None
            try:
                dialect = self.dialect
                if dialect is None:
                    dialect = self.dialect = _dialect_for(conn)
                dialect.begin(conn)
                for sql, group in groups:
                    if careful:
                        self.isolate(dialect, conn, sql, group)
                    else:
                        results = dialect.run(conn, sql, [it.params for it in group])
                        for it, res in zip(group, results, strict=True):
                            it.result = res
                at_commit = True
                conn.commit()
            except Exception as exc:
                error = exc
                _rollback(conn)  # MySQL's 1205 undid only the statement
            except BaseException:
                # Rolled back (the pool does it on release): no result stands.
                for it in items:
                    it.result = None
                raise
            finally:
                self.pool.release(conn)
            if error is None:
                return
            kind = self.pool.classify(error)
            if kind is ErrorKind.RETRYABLE:
                counters.conflicts += 1
            if kind is ErrorKind.CONNECTION_LOST and at_commit:
                for it in items:
                    if it.error is None:
                        lost = TransactionOutcomeUnknown(
                            f"batcher {self.name!r}: the connection was lost during COMMIT of "
                            f"a batch of {len(items)} writes: they may or may not be committed")
                        lost.__cause__ = error
                        it.error = lost
                    it.result = None
                return
            if kind is ErrorKind.RETRYABLE or kind in _RECONNECT_KINDS:
                attempt += 1
                if attempt > self.max_retries:
                    _fail(items, error)
                    return
                counters.retries += 1
                time.sleep(self.backoff(attempt))
                continue
            # A write's own error (or one the driver cannot place).
            if not careful and not at_commit:
                careful = True
                counters.isolations += 1
                continue
            if len(items) > 1:
                # Failed at COMMIT (a deferred constraint) or outside the
                # savepoints: nothing was committed; find the bad write by
                # bisecting across transactions.
                mid = len(items) // 2
                self.commit_items(me, items[:mid])
                self.commit_items(me, items[mid:])
                return
            _fail(items, error)
            return

    def isolate(self, dialect: _Dialect, conn: Any, sql: str, group: list[_Item]) -> None:
        """Run a statement group under a savepoint; on a write's error roll back
        to it and bisect, so only the failing writes get an error."""
        dialect.command(conn, _SAVEPOINT)
        try:
            results = dialect.run(conn, sql, [it.params for it in group])
        except Exception as exc:
            if self.pool.classify(exc) not in _ITEM_KINDS:
                raise  # the transaction's problem (conflict, lost connection)
            dialect.command(conn, _ROLLBACK_TO)
            dialect.command(conn, _RELEASE)
            if len(group) == 1:
                group[0].error = exc
                return
            mid = len(group) // 2
            self.isolate(dialect, conn, sql, group[:mid])
            self.isolate(dialect, conn, sql, group[mid:])
            return
        dialect.command(conn, _RELEASE)
        for it, res in zip(group, results, strict=True):
            it.result = res

    def backoff(self, attempt: int) -> float:
        """Jittered exponential backoff before retry ``attempt`` (1, 2, ...)."""
        base = min(self.backoff_max, self.backoff_initial * 2.0 ** (attempt - 1))
        return base * random.uniform(0.5, 1.5)

    # ---- statistics -----------------------------------------------------------------

    def stats(self, reset: bool) -> BatchStats:
        with self.lock:
            counts = (self.submitted, self.committed, self.failed, self.cancelled,
                      self.pending, len(self.queue), self.batches)
            if reset:
                self.submitted = self.pending  # what is pending is still to be counted
                self.committed = self.failed = self.cancelled = 0
                self.batches = 0
        sizes = [0] * (self.max_batch + 1)
        latency: list[int] = []
        retries = conflicts = isolations = 0
        for c in self.counters:
            for i, n in enumerate(c.sizes):
                sizes[i] += n
            lat = list(c.latency)
            if len(lat) > len(latency):
                latency.extend([0] * (len(lat) - len(latency)))
            for i, n in enumerate(lat):
                latency[i] += n
            retries += c.retries
            conflicts += c.conflicts
            isolations += c.isolations
            if reset:
                c.sizes = [0] * (self.max_batch + 1)
                c.latency = []
                c.retries = c.conflicts = c.isolations = 0
        taken = sum(sizes)
        mean = sum(i * n for i, n in enumerate(sizes)) / taken if taken else 0.0
        p50 = _bucket_value(_quantile(latency, 0.50)) / 1e6 if any(latency) else 0.0
        p99 = _bucket_value(_quantile(latency, 0.99)) / 1e6 if any(latency) else 0.0
        return BatchStats(
            submitted=counts[0], committed=counts[1], failed=counts[2], cancelled=counts[3],
            pending=counts[4], queued=counts[5], batches=counts[6], batch_size_mean=mean,
            batch_size_p99=_quantile(sizes, 0.99), latency_p50=p50, latency_p99=p99,
            retries=retries, conflicts=conflicts, isolations=isolations)


def _copy_error(exc: BaseException) -> BaseException:
    """A separate instance of ``exc`` per caller (each raise grows a traceback)."""
    try:
        dup = copy.copy(exc)
    except Exception:
        return exc
    dup.__cause__ = exc.__cause__
    dup.__traceback__ = exc.__traceback__
    return dup


def _fail(items: list[_Item], exc: BaseException) -> None:
    for it in items:
        it.result = None
        it.error = _copy_error(exc)


def _rollback(conn: Any) -> None:
    """Roll back after an error; a broken connection is the pool's to discard."""
    with contextlib.suppress(Exception):
        conn.rollback()


def _flusher_main(engine: _Engine, me: int) -> None:
    _tls.lock = None  # execute() from a flusher (a done-callback) would wait on itself
    _tls.flusher = True
    while True:
        batch = engine.take(me)
        if batch is None:
            return
        try:
            engine.flush_batch(me, batch)
        except BaseException:  # logged; each write of the batch got an error
            # The thread lives on: it is the only one that commits this
            # flusher's share of the writes.
            continue


_engines: weakref.WeakSet[_Engine] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    """atexit: commit what every live batcher still has pending."""
    for engine in list(_engines):
        try:
            engine.close(Batcher.EXIT_TIMEOUT)
        except Exception as exc:
            logger.error("fastpool: batcher %r: writes still pending at exit: %s",
                         engine.name, exc)


atexit.register(_close_all_at_exit)


def _after_fork_in_child() -> None:
    for engine in list(_engines):
        engine.reinit_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---- the public object ------------------------------------------------------------

_OPTIONS = ("max_batch", "max_delay", "flushers", "max_pending", "on_full", "full_timeout",
            "key", "max_retries", "name")
_names = iter(range(1, 1 << 62))


class Batcher:
    """Group commit over a pool: ``execute``/``submit`` from many threads,
    committed together by flusher threads (see the module documentation).

    Options:

    * ``max_batch`` (500): most writes in one transaction.
    * ``max_delay`` (0.005 s): longest a write waits queued while every flusher
      is busy before an idle one starts a parallel batch (with ``flushers`` > 1).
    * ``flushers`` (1): flusher threads, each using one pool connection per batch.
    * ``max_pending`` (10000, or None: unbounded): writes queued or in flight
      beyond which ``submit`` waits (``on_full="block"``, up to
      ``full_timeout`` seconds, default 30, None: forever) or raises
      ``BatcherFull`` at once (``on_full="raise"``).
    * ``key``: a callable ``key(params)`` giving each write's lock key (its
      primary key); writes of a statement are run in key order. ``submit``'s
      own ``key=`` wins.
    * ``max_retries`` (5): times a batch is run again after a conflict or a
      lost connection before its writes fail with that error.

    >>> with pool.batcher(max_batch=200) as batcher:
    ...     batcher.execute("INSERT INTO t (id) VALUES (%s)", (1,))
    BatchResult(rowcount=1, row=None)
    """

    #: Retry backoff: the first retry waits about BACKOFF_INITIAL seconds
    #: (jittered x0.5..1.5), each next one twice as long, up to BACKOFF_MAX.
    BACKOFF_INITIAL = 0.005
    BACKOFF_MAX = 0.5
    #: Longest the interpreter-exit hook waits for a batcher's pending writes.
    EXIT_TIMEOUT = 60.0

    def __init__(self, pool: PoolPolicy, *, max_batch: int = 500, max_delay: float = 0.005,
                 flushers: int = 1, max_pending: int | None = 10_000, on_full: str = "block",
                 full_timeout: float | None = 30.0, key: Callable[[Any], Any] | None = None,
                 max_retries: int = 5, name: str | None = None, **unknown: object) -> None:
        if unknown:
            raise ConfigError(f"Batcher: unknown option(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(_OPTIONS)}")
        if not all(callable(getattr(pool, m, None)) for m in ("acquire", "release", "classify")):
            raise ConfigError(f"Batcher: pool must be a fastpool pool, got {pool!r}")
        max_batch = _int_option("max_batch", max_batch, 1)
        delay = _seconds_option("max_delay", max_delay)
        assert delay is not None
        flushers = _int_option("flushers", flushers, 1)
        pool_max = getattr(pool, "max_size", None)
        if isinstance(pool_max, int) and flushers > pool_max:
            raise ConfigError(f"Batcher: flushers ({flushers}) must not exceed the pool's "
                              f"max_size ({pool_max}): each flusher holds a connection")
        if max_pending is not None:
            max_pending = _int_option("max_pending", max_pending, 1)
        if on_full not in ("block", "raise"):
            raise ConfigError(f"Batcher: on_full must be 'block' or 'raise', got {on_full!r}")
        full = _seconds_option("full_timeout", full_timeout, allow_none=True)
        if key is not None and not callable(key):
            raise ConfigError(f"Batcher: key must be a callable or None, got {key!r}")
        max_retries = _int_option("max_retries", max_retries, 0)
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"Batcher: name must be a string, got {name!r}")
        self.name = name or f"{getattr(pool, 'name', 'pool')}-batcher-{next(_names)}"
        self.pool = pool
        self._key = key
        self._engine = _Engine(
            pool, max_batch=max_batch, max_delay=delay, flushers=flushers,
            max_pending=max_pending, on_full=on_full, full_timeout=full,
            max_retries=max_retries, name=self.name,
            backoff=(self.BACKOFF_INITIAL, self.BACKOFF_MAX))
        # Collected without close(): the flushers commit what is queued and stop.
        self._finalizer = weakref.finalize(self, self._engine.close_soon)
        self._finalizer.atexit = False  # the module's exit hook waits instead

    def _item(self, sql: str, params: Any, key: Any) -> _Item:
        if not isinstance(sql, str):
            raise TypeError(f"sql must be a str, got {type(sql).__name__} "
                            "(render psycopg.sql objects with .as_string(conn))")
        tp = type(params)
        if tp is not tuple and tp is not list and tp is not dict and (
                isinstance(params, (str, bytes))
                or not isinstance(params, (Sequence, Mapping))):
            raise TypeError(f"params must be a sequence or a mapping of parameters, "
                            f"got {type(params).__name__}")
        if key is None and self._key is not None:
            key = self._key(params)
        return _Item(sql, params, key, time.monotonic_ns())

    def submit(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = (), *,
               key: Any = None) -> Future[BatchResult]:
        """Queue one write; its Future gets the BatchResult once committed, or
        the write's own error (the driver's exception, BatcherFull...).

        Cancelling the Future before its batch starts leaves it unwritten.
        Raises BatcherClosed after ``close()`` and BatcherFull when full.
        """
        item = self._item(sql, params, key)
        future: Future[BatchResult] = Future()
        item.future = future
        self._engine.enqueue(item)
        return future

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = (), *,
                key: Any = None) -> BatchResult:
        """Queue one write and wait until it is committed: return its
        BatchResult, or raise its own error (the driver's exception,
        TransactionOutcomeUnknown...). Interrupting the wait does not withdraw
        the write."""
        item = self._item(sql, params, key)
        lock = _thread_lock()
        if lock is None:
            raise RuntimeError("execute() cannot wait in a batcher's flusher thread "
                               "(e.g. in a Future's done-callback): use submit()")
        item.waiter = lock
        self._engine.enqueue(item)
        try:
            lock.acquire()
            nxt = item.next_waiter  # wake the next caller of the batch first
            if nxt is not None:
                item.next_waiter = None
                nxt.release()
        except BaseException:
            # Interrupted: pass the wake-up on if it reached us; the flusher
            # may still release this lock, so this thread takes a fresh one.
            self._engine.abandon(item)
            del _tls.lock
            raise
        if item.error is not None:
            error, item.error = item.error, None
            raise error
        assert item.result is not None
        return item.result

    def flush(self, timeout: float | None = None) -> None:
        """Block until every write submitted before this call is committed or
        failed; TimeoutError after ``timeout`` seconds (the writes go on)."""
        engine = self._engine
        with engine.lock:
            target = engine.seq
        if threading.current_thread() in engine.threads:
            raise RuntimeError("flush() cannot wait in a batcher's flusher thread")
        engine.wait_resolved(target, _seconds_option("timeout", timeout, allow_none=True),
                             "flush")

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting writes, commit every pending one, stop the flushers.

        Submitting afterwards raises BatcherClosed. Closing again is harmless.
        TimeoutError after ``timeout`` seconds (the flushers finish the work).
        """
        self._engine.close(_seconds_option("timeout", timeout, allow_none=True))

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._engine.closing

    def stats(self, reset: bool = False) -> BatchStats:
        """A snapshot of the counters; ``reset`` starts them again from zero."""
        return self._engine.stats(reset)

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        e = self._engine
        state = "closed" if e.closing else "open"
        return (f"<Batcher {self.name!r} {state}: pending={e.pending} queued={len(e.queue)} "
                f"flushers={len(e.threads)} max_batch={e.max_batch}>")
