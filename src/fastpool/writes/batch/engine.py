"""The batcher's engine.

``EngineBase`` holds the rules, written once for threads and asyncio: which
writes a flusher takes and when (group commit, ``max_delay``, ``max_batch``),
and the flow that commits a batch (``batch_steps``, a ``fastpool.steps``
flow): grouping by statement, key order, one transaction through the
transaction runner's flow (``fastpool.transaction.attempt_steps``),
isolating or bisecting a failing write with savepoints, splitting the batch
across transactions for a COMMIT-time failure, retrying conflicts and
connections lost before COMMIT, ``TransactionOutcomeUnknown`` for one lost
during COMMIT, and the counters. Its I/O (``BatchIO``: the runner's acquire,
begin, commit, rollback, release, sleep; the dialect's ``run`` and
``command``) is performed by ``run`` in a flusher thread (``Engine``, here)
or by ``run_async`` in a flusher task (``AsyncEngine``, ``aio.py``). What is
left to each is its queue's wake-ups. Also the threads' interpreter-exit and
fork handling."""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from fastpool.errors import ConfigError, ErrorKind, separate_copy
from fastpool.options import integer, optional_seconds, parameters, seconds
from fastpool.sqltext.tables import access
from fastpool.steps import Steps, run
from fastpool.transaction import Attempt, Outcome, SourceIO, attempt_steps
from fastpool.writes.batch.dialects import (
    RELEASE,
    ROLLBACK_TO,
    SAVEPOINT,
    AsyncDialect,
    Dialect,
    dialect_for,
)
from fastpool.writes.batch.histogram import Counters, bucket_value, quantile, record
from fastpool.writes.batch.results import BatcherClosed, BatcherFull, BatchResult, BatchStats

if TYPE_CHECKING:
    from fastpool.source import ConnectionSource

__all__ = ["OPTIONS", "BatchIO", "Engine", "EngineBase", "Item", "check_options", "make_item",
           "thread_lock"]

logger = logging.getLogger("fastpool")

class Item:
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
        self.future: Any = None  # submit(): a concurrent or an asyncio Future
        self.result: BatchResult | None = None
        self.error: BaseException | None = None


_tls = threading.local()


def thread_lock() -> Any:
    """This thread's wake-up lock for ``execute`` (held while not waiting;
    the flusher releases it), or None in a flusher thread."""
    try:
        return _tls.lock
    except AttributeError:
        lock = _tls.lock = threading.Lock()
        lock.acquire()
        return lock


_ITEM_KINDS = frozenset({ErrorKind.QUERY, ErrorKind.OTHER, ErrorKind.CONFIG, ErrorKind.AUTH,
                         ErrorKind.UNREACHABLE})
_NEVER = 1 << 62


OPTIONS = ("max_batch", "max_delay", "flushers", "max_pending", "on_full", "full_timeout",
           "key", "max_retries", "name")
_names = iter(range(1, 1 << 62))


def check_options(owner: str, pool: ConnectionSource, *, max_batch: int, max_delay: float,
                  flushers: int, max_pending: int | None, on_full: str,
                  full_timeout: float | None, key: Callable[[Any], Any] | None,
                  max_retries: int, name: str | None, unknown: dict[str, object],
                  ) -> tuple[str, ConnectionSource, Callable[[Any], Any] | None, dict[str, Any]]:
    """A batcher's options checked (the same rules and errors for ``Batcher``
    and ``AsyncBatcher``): its name, its pool, its key function, and the
    engine's options."""
    if unknown:
        raise ConfigError(f"{owner}: unknown option(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(OPTIONS)}")
    if not all(callable(getattr(pool, m, None)) for m in ("acquire", "release", "classify")):
        raise ConfigError(f"{owner}: pool must be a connection source (a fastpool pool), "
                          f"got {pool!r}")
    max_batch = integer("max_batch", max_batch, 1, owner=owner)
    delay = seconds("max_delay", max_delay, owner=owner)
    assert delay is not None
    flushers = integer("flushers", flushers, 1, owner=owner)
    # An adaptive pool's max_size is its limit so far: the ceiling is what it may reach.
    ceiling = getattr(pool, "max_size_ceiling", None)
    pool_max, what = ((ceiling, "max_size_ceiling") if isinstance(ceiling, int)
                      else (getattr(pool, "max_size", None), "max_size"))
    if isinstance(pool_max, int) and flushers > pool_max:
        raise ConfigError(f"{owner}: flushers ({flushers}) must not exceed the pool's "
                          f"{what} ({pool_max}): each flusher holds a connection")
    if max_pending is not None:
        max_pending = integer("max_pending", max_pending, 1, owner=owner)
    if on_full not in ("block", "raise"):
        raise ConfigError(f"{owner}: on_full must be 'block' or 'raise', got {on_full!r}")
    full = optional_seconds("full_timeout", full_timeout, allow_zero=True, owner=owner)
    if key is not None and not callable(key):
        raise ConfigError(f"{owner}: key must be a callable or None, got {key!r}")
    max_retries = integer("max_retries", max_retries, 0, owner=owner)
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{owner}: name must be a string, got {name!r}")
    name = name or f"{getattr(pool, 'name', 'pool')}-batcher-{next(_names)}"
    return name, pool, key, dict(
        max_batch=max_batch, max_delay=delay, flushers=flushers, max_pending=max_pending,
        on_full=on_full, full_timeout=full, max_retries=max_retries, name=name)


def make_item(sql: str, params: Any, key: Any, key_fn: Callable[[Any], Any] | None) -> Item:
    """One write, its arguments checked; its key is ``key``, else ``key_fn(params)``."""
    if not isinstance(sql, str):
        raise TypeError(f"sql must be a str, got {type(sql).__name__} "
                        "(render psycopg.sql objects with .as_string(conn))")
    parameters(params, or_none=False)
    if key is None and key_fn is not None:
        key = key_fn(params)
    return Item(sql, params, key, time.monotonic_ns())


def _no_body(conn: Any) -> None:  # pragma: no cover - the flow runs its body inline
    raise AssertionError("the batcher's body runs inside its flow")


class BatchIO(SourceIO):
    """The I/O of the batcher's flow: the transaction runner's (``SourceIO``:
    acquire, begin, commit, rollback, release, sleep) and the dialect's
    (``run`` a statement group, ``command``). Blocking or coroutines, as the
    pool's client is."""

    __slots__ = ("engine",)

    def __init__(self, engine: EngineBase, sleep: Callable[[float], Any]) -> None:
        super().__init__(engine.pool, _no_body, sleep)
        self.engine = engine

    def run(self, conn: Any, sql: str, params: list[Any]) -> Any:
        return self.engine.get_dialect().run(conn, sql, params)

    def command(self, conn: Any, sql: str) -> Any:
        return self.engine.get_dialect().command(conn, sql)


def _with_body(steps: Steps[Attempt[Any]],
               body: Callable[[Any], Steps[Any]]) -> Steps[Attempt[Any]]:
    """The runner's flow (``attempt_steps``) with its ``("body", conn)``
    operation run inline as the flow ``body(conn)``: one flow, one runner."""
    try:
        op = next(steps)
        while True:
            try:
                if op[0] == "body":
                    result = yield from body(op[1])
                else:
                    result = yield op
            except GeneratorExit:
                raise
            except BaseException as exc:
                op = steps.throw(exc)
            else:
                op = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        steps.close()


class EngineBase:
    """The state and the rules both engines share (see the module
    documentation). ``lock`` guards the shared state: a real lock for
    threads, a no-op on an event loop (one thread)."""

    lock: Any

    def __init__(self, pool: ConnectionSource, *, max_batch: int, max_delay: float,
                 flushers: int, max_pending: int | None, on_full: str,
                 full_timeout: float | None, max_retries: int, name: str,
                 backoff: Callable[[int], float]) -> None:
        self.pool = pool
        self.name = name
        self.max_batch = max_batch
        self.max_delay_ns = int(max_delay * 1e9)
        self.max_pending = max_pending if max_pending is not None else _NEVER
        self.raise_when_full = on_full == "raise"
        self.full_timeout = full_timeout
        self.max_retries = max_retries
        #: Seconds to wait before retry n (1, 2, ...) of a batch.
        self.backoff = backoff
        self.dialect: Dialect | AsyncDialect | None = None
        self.flushers = flushers
        self.sort_warned = False
        self.closing = False
        self.seq = 0
        self._reset_state()

    def _reset_state(self) -> None:
        self.queue: deque[Item] = deque()
        self.pending = 0
        self.sleeping = 0        # flushers waiting for work
        self.room_waiters = 0
        self.flushing = 0        # flush()/close() calls waiting: no max_delay wait
        self.inflight: dict[int, int] = {}    # flusher -> lowest seq of its batch
        self.submitted = self.committed = self.failed = self.cancelled = self.batches = 0
        self.counters = [Counters(self.max_batch) for _ in range(self.flushers)]
        self.taken_at = [0] * self.flushers   # when each flusher took its batch (ns)

    def get_dialect(self) -> Any:
        dialect = self.dialect
        if dialect is None:
            dialect = self.dialect = dialect_for(self.pool.adapter)
        return dialect

    # ---- accepting writes (the lock held) ------------------------------------------

    def closed_error(self, waited: bool = False) -> BatcherClosed:
        if waited:
            return BatcherClosed(f"batcher {self.name!r} was closed while waiting for room")
        return BatcherClosed(f"batcher {self.name!r} is closed")

    def full_error(self, timed_out: bool = False) -> BatcherFull:
        state = f"{self.pending} writes pending (max_pending={self.max_pending})"
        if timed_out:
            return BatcherFull(f"batcher {self.name!r} stayed full for "
                               f"{self.full_timeout:g} s (full_timeout): {state}")
        return BatcherFull(f"batcher {self.name!r} is full: {state}, on_full='raise'")

    def room_steps(self, clock: Callable[[], float]) -> Steps[None]:
        """Back-pressure, for threads and tasks alike: wait (operation
        ``sleep_for_room``, at most the seconds left) while ``max_pending``
        writes are pending, or refuse (``on_full="raise"``, ``full_timeout``
        passed, the batcher closed meanwhile)."""
        if self.raise_when_full:
            raise self.full_error()
        deadline = None if self.full_timeout is None else clock() + self.full_timeout
        self.room_waiters += 1
        try:
            while self.pending >= self.max_pending and not self.closing:
                remaining = None if deadline is None else deadline - clock()
                if remaining is not None and remaining <= 0:
                    raise self.full_error(timed_out=True)
                yield ("sleep_for_room", remaining)
        finally:
            self.room_waiters -= 1
        if self.closing:
            raise self.closed_error(waited=True)

    def admit(self, item: Item) -> bool:
        """Queue ``item`` (room was checked); True if a sleeping flusher
        should be woken (the first write, or a full batch)."""
        self.seq += 1
        item.seq = self.seq
        q = self.queue
        q.append(item)
        self.pending += 1
        self.submitted += 1
        return bool(self.sleeping) and (len(q) == 1 or len(q) == self.max_batch)

    # ---- taking a batch (the lock held) ----------------------------------------------

    def wait_before_taking(self) -> int | None:
        """How long a flusher waits before taking a batch, in ns: 0 take now,
        None until woken, -1 never (closed and nothing queued).

        Group commit: an idle flusher starts at once; while another flusher's
        commit is in flight, a parallel batch starts only once the oldest
        write has waited ``max_delay`` (or a batch is full, or a flush or
        close is waiting)."""
        q = self.queue
        if q:
            if not self.inflight or len(q) >= self.max_batch or self.closing or self.flushing:
                return 0
            return max(0, q[0].t0 + self.max_delay_ns - time.monotonic_ns())
        return -1 if self.closing else None

    def cut(self, me: int) -> tuple[list[Item], bool]:
        """Take a batch off the queue for flusher ``me``; and whether another
        flusher should be woken (more than a batch was queued)."""
        q = self.queue
        if len(q) <= self.max_batch:
            batch = list(q)
            q.clear()
        else:
            batch = [q.popleft() for _ in range(self.max_batch)]
        self.inflight[me] = batch[0].seq
        self.batches += 1
        self.taken_at[me] = time.monotonic_ns()
        self.counters[me].sizes[len(batch)] += 1
        return batch, bool(q) and bool(self.sleeping)

    def unresolved_below(self, target: int) -> bool:
        """Is any write with seq <= target unresolved?"""
        if self.queue and self.queue[0].seq <= target:
            return True
        return any(low <= target for low in self.inflight.values())

    # ---- resolving a batch ------------------------------------------------------------

    def tally(self, me: int, batch: list[Item]) -> int:
        """Record the batch's time and the latencies of its committed writes
        (flusher ``me``'s own counters: no lock); their number."""
        now = time.monotonic_ns()
        counters = self.counters[me]
        counters.record_commit((now - self.taken_at[me]) // 1000)
        latency = counters.latency
        committed = 0
        for it in batch:
            if it.error is None and it.result is not None:
                committed += 1
                record(latency, (now - it.t0) // 1000)
        return committed

    def settle(self, me: int, batch: list[Item], committed: int, cancelled: int) -> None:
        """With the lock held: the batch is resolved; count it."""
        self.pending -= len(batch)
        self.committed += committed
        self.cancelled += cancelled
        self.failed += len(batch) - committed - cancelled
        del self.inflight[me]

    # ---- the flow of a batch ---------------------------------------------------------

    def batch_steps(self, me: int, live: list[Item]) -> Steps[None]:
        """Commit ``live`` (or fail its writes): every write gets a result or
        an error, even when the flow itself fails (a bug of ours, a
        cancellation), which is then re-raised."""
        try:
            # Writes invalidate the pool's result cache, before and after the commit.
            with self.pool.writing(self.tables_written({it.sql for it in live})):
                yield from self.commit_steps(me, live)
        except BaseException as exc:
            if isinstance(exc, Exception):
                logger.exception("fastpool: batcher %r failed to run a batch", self.name)
            for it in live:
                if it.error is None and it.result is None:
                    it.error = separate_copy(exc)
            raise

    def groups(self, items: list[Item]) -> list[tuple[str, list[Item]]]:
        """Writes grouped by statement (groups in order of their first write),
        each group in key order when keys were given, else in submission order."""
        by_sql: dict[str, list[Item]] = {}
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

    def tables_written(self, sqls: set[str]) -> Iterator[str]:
        """The tables these statements write (parsed only if the source's
        result cache asks: ``writing()`` iterates it lazily)."""
        try:
            dialect = self.pool.adapter.dialect
        except RuntimeError:  # a custom factory that has not connected yet
            dialect = None
        for sql in sqls:
            yield from access(sql, dialect).writes

    def body_steps(self, conn: Any, groups: list[tuple[str, list[Item]]],
                   careful: bool) -> Steps[None]:
        """The transaction's body: each statement group in one go, or (careful)
        under a savepoint, isolating the failing writes."""
        for sql, group in groups:
            if careful:
                yield from self.isolate_steps(conn, sql, group)
            else:
                results = yield ("run", conn, sql, [it.params for it in group])
                for it, res in zip(group, results, strict=True):
                    it.result = res

    def commit_steps(self, me: int, items: list[Item]) -> Steps[None]:
        """One transaction for ``items`` through the transaction runner's flow,
        retried, isolated or split as needed; sets each write's result or error."""
        counters = self.counters[me]
        groups = self.groups(items)
        careful = False
        retry = 0
        what = f"a batch of {len(items)} writes (batcher {self.name!r})"
        while True:
            for it in items:
                it.result = it.error = None
            try:
                done = yield from _with_body(
                    attempt_steps(self.pool, True, None, what, None),
                    functools.partial(self.body_steps, groups=groups, careful=careful))
            except Exception as exc:  # no connection: pool closed, timed out, cannot connect
                _fail(items, exc)
                return
            except BaseException:
                # Rolled back (the pool does it on release): no result stands.
                for it in items:
                    it.result = None
                raise
            try:
                if done.outcome is Outcome.COMMITTED:
                    return
                error = done.error
                assert error is not None
                if done.kind is ErrorKind.RETRYABLE:
                    counters.conflicts += 1
                if done.outcome is Outcome.UNKNOWN:
                    # Each write not already failed on its own gets its own copy.
                    for it in items:
                        if it.error is None:
                            it.error = separate_copy(error)
                        it.result = None
                    return
                if done.outcome is Outcome.RETRY:
                    retry += 1
                    if retry > self.max_retries:
                        _fail(items, error)
                        return
                    counters.retries += 1
                    yield ("sleep", self.backoff(retry))
                    continue
                # FAILED: a write's own error (or one the driver cannot place).
                if not careful and not done.at_commit:
                    careful = True
                    counters.isolations += 1
                    continue
                if len(items) > 1:
                    # Failed at COMMIT (a deferred constraint) or outside the
                    # savepoints: nothing was committed; find the bad write by
                    # bisecting across transactions.
                    mid = len(items) // 2
                    yield from self.commit_steps(me, items[:mid])
                    yield from self.commit_steps(me, items[mid:])
                    return
                _fail(items, error)
                return
            finally:
                # The attempt's error has a traceback through this frame (as
                # the caller of the body's frames, Python 3.12+): holding it
                # here past this round would make a cycle that keeps the
                # connection referenced until the cyclic collector runs.
                done = error = None  # type: ignore[assignment]

    def isolate_steps(self, conn: Any, sql: str, group: list[Item]) -> Steps[None]:
        """Run a statement group under a savepoint; on a write's error roll back
        to it and bisect, so only the failing writes get an error."""
        yield ("command", conn, SAVEPOINT)
        try:
            results = yield ("run", conn, sql, [it.params for it in group])
        except Exception as exc:
            if self.pool.classify(exc) not in _ITEM_KINDS:
                raise  # the transaction's problem (conflict, lost connection)
            yield ("command", conn, ROLLBACK_TO)
            yield ("command", conn, RELEASE)
            if len(group) == 1:
                group[0].error = exc
                return
            mid = len(group) // 2
            yield from self.isolate_steps(conn, sql, group[:mid])
            yield from self.isolate_steps(conn, sql, group[mid:])
            return
        yield ("command", conn, RELEASE)
        for it, res in zip(group, results, strict=True):
            it.result = res

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
        commit: list[int] = []
        retries = conflicts = isolations = 0
        for c in self.counters:
            for i, n in enumerate(c.sizes):
                sizes[i] += n
            _add_histogram(latency, c.latency)
            _add_histogram(commit, c.commit)
            retries += c.retries
            conflicts += c.conflicts
            isolations += c.isolations
            if reset:
                c.sizes = [0] * (self.max_batch + 1)
                c.latency = []
                c.commit = []
                c.retries = c.conflicts = c.isolations = 0
        taken = sum(sizes)
        mean = sum(i * n for i, n in enumerate(sizes)) / taken if taken else 0.0
        p50 = bucket_value(quantile(latency, 0.50)) / 1e6 if any(latency) else 0.0
        p99 = bucket_value(quantile(latency, 0.99)) / 1e6 if any(latency) else 0.0
        c50 = bucket_value(quantile(commit, 0.50)) / 1e6 if any(commit) else 0.0
        c99 = bucket_value(quantile(commit, 0.99)) / 1e6 if any(commit) else 0.0
        return BatchStats(
            submitted=counts[0], committed=counts[1], failed=counts[2], cancelled=counts[3],
            pending=counts[4], queued=counts[5], batches=counts[6], batch_size_mean=mean,
            batch_size_p99=quantile(sizes, 0.99), latency_p50=p50, latency_p99=p99,
            retries=retries, conflicts=conflicts, isolations=isolations, commit_p50=c50,
            commit_p99=c99)


class Engine(EngineBase):
    """The queue's wake-ups and the flusher threads. Flusher threads hold
    this, not the Batcher, so that an abandoned Batcher can be collected."""

    def __init__(self, pool: ConnectionSource, **options: Any) -> None:
        super().__init__(pool, **options)
        self.lock = threading.Lock()
        self._conditions()
        self.io = BatchIO(self, time.sleep)
        self.threads = self._start_threads()
        _engines.add(self)

    def _conditions(self) -> None:
        self.work = threading.Condition(self.lock)   # flushers wait for writes
        self.room = threading.Condition(self.lock)   # submitters wait for room
        self.done = threading.Condition(self.lock)   # flush()/close() wait for batches

    def _start_threads(self) -> list[threading.Thread]:
        threads = [] if self.closing else [
            threading.Thread(target=_flusher_main, args=(self, i), daemon=True,
                             name=f"fastpool-batch-{self.name}-{i}")
            for i in range(self.flushers)]
        for t in threads:
            t.start()
        return threads

    def reinit_after_fork(self) -> None:
        """In a forked child: the queued writes are the parent's (its flushers
        commit them); start empty, with new locks and new flushers."""
        self.lock = threading.Lock()  # may have been held by a parent's thread
        self._conditions()
        self._reset_state()
        self.threads = self._start_threads()

    # ---- submitting ---------------------------------------------------------

    def enqueue(self, item: Item) -> None:
        with self.lock:
            if self.closing:
                raise self.closed_error()
            if self.pending >= self.max_pending:
                if getattr(_tls, "flusher", False):
                    # A done-callback submitting from a flusher: waiting would
                    # stop the very thread that makes room.
                    raise BatcherFull(f"batcher {self.name!r} is full ({self.pending} writes "
                                      "pending) and a flusher thread cannot wait for room")
                run(self.room_steps(time.monotonic), self)
            if self.admit(item):
                self.work.notify()

    def sleep_for_room(self, remaining: float | None) -> None:
        """``room_steps``' wait, with the lock held: until a flush makes room."""
        self.room.wait(remaining)

    # ---- the flusher's side ---------------------------------------------------

    def take(self, me: int) -> list[Item] | None:
        """Wait for a batch to flush; None when closed and nothing is queued."""
        with self.lock:
            while True:
                wait = self.wait_before_taking()
                if wait == 0:
                    break
                if wait == -1:
                    return None
                self.sleeping += 1
                try:
                    self.work.wait(None if wait is None else wait / 1e9)
                finally:
                    self.sleeping -= 1
            batch, more = self.cut(me)
            if more:
                self.work.notify()  # more than a batch was queued: a second flusher may start
        return batch

    def flush_batch(self, me: int, batch: list[Item]) -> None:
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
                run(self.batch_steps(me, live), self.io)
        finally:
            self.finish(me, batch, cancelled)

    def finish(self, me: int, batch: list[Item], cancelled: int) -> None:
        """Count a resolved batch, then wake its callers.

        ``execute`` callers are woken as a chain: the flusher releases the
        first one, which releases the next as soon as it runs, and so on.
        Waking a whole batch at once would make its threads and the flusher
        fight for the GIL: each of the flusher's next I/O waits would then
        queue behind all of them.
        """
        committed = self.tally(me, batch)
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
                    future.set_result(it.result)
                else:
                    future.set_exception(it.error)
            except BaseException:
                logger.exception("fastpool: batcher %r: a done-callback failed", self.name)
            finally:
                # The future (the caller's) keeps the outcome now. The item,
                # still referred to from the frames in the error's traceback,
                # must keep neither the error nor the future: that cycle would
                # keep those frames, the connection among them, until the
                # cyclic collector ran, and a connection dropped meanwhile
                # could not be reclaimed (PoolPolicy._reclaim_steps).
                it.error = it.future = None
        with self.lock:
            self.settle(me, batch, committed, cancelled)
            if self.room_waiters:
                self.room.notify(len(batch))
            if self.flushing:
                self.done.notify_all()

    def abandon(self, item: Item) -> None:
        """An ``execute`` caller stopped waiting (interrupted): keep the wake-up
        chain going without it."""
        with self.lock:
            if not item.chained:
                item.abandoned = True  # finish() will leave it out of the chain
                return
            nxt, item.next_waiter = item.next_waiter, None
        if nxt is not None:
            nxt.release()

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


def _add_histogram(total: list[int], counts: list[int]) -> None:
    counts = list(counts)  # a flusher may be growing it
    if len(counts) > len(total):
        total.extend([0] * (len(counts) - len(total)))
    for i, n in enumerate(counts):
        total[i] += n


def _fail(items: list[Item], exc: BaseException) -> None:
    for it in items:
        it.result = None
        it.error = separate_copy(exc)


def _flusher_main(engine: Engine, me: int) -> None:
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


_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    """atexit: commit what every live batcher still has pending."""
    from fastpool.writes.batch import Batcher  # its EXIT_TIMEOUT, which tests may shorten

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
