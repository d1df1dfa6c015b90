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

import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from fastpool.backoff import ExponentialBackoff, delay_function
from fastpool.options import optional_seconds
from fastpool.writes.batch.engine import Engine, check_options, make_item, thread_lock
from fastpool.writes.batch.engine import _tls as engine_tls
from fastpool.writes.batch.results import BatcherClosed, BatcherFull, BatchResult, BatchStats

if TYPE_CHECKING:
    from fastpool.source import ConnectionSource

__all__ = ["BatchResult", "BatchStats", "Batcher", "BatcherClosed", "BatcherFull"]


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

    #: Retry backoff: before retry n a batch waits between half and all of
    #: min(0.5 s, 5 ms * 2 ** (n - 1)). A class attribute, so that tests and
    #: users can change it (any ExponentialBackoff, or callable n -> seconds).
    BACKOFF: Callable[[int], float] = ExponentialBackoff(base=0.005, cap=0.5, jitter=0.5)
    #: Longest the interpreter-exit hook waits for a batcher's pending writes.
    EXIT_TIMEOUT = 60.0

    def __init__(self, pool: ConnectionSource, *, max_batch: int = 500, max_delay: float = 0.005,
                 flushers: int = 1, max_pending: int | None = 10_000, on_full: str = "block",
                 full_timeout: float | None = 30.0, key: Callable[[Any], Any] | None = None,
                 max_retries: int = 5, name: str | None = None, **unknown: object) -> None:
        self.name, self.pool, self._key, options = check_options(
            "Batcher", pool, max_batch=max_batch, max_delay=max_delay, flushers=flushers,
            max_pending=max_pending, on_full=on_full, full_timeout=full_timeout, key=key,
            max_retries=max_retries, name=name, unknown=unknown)
        self._engine = Engine(
            pool, backoff=delay_function(self.BACKOFF, name="Batcher.BACKOFF"), **options)
        # Collected without close(): the flushers commit what is queued and stop.
        self._finalizer = weakref.finalize(self, self._engine.close_soon)
        self._finalizer.atexit = False  # the module's exit hook waits instead

    def submit(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = (), *,
               key: Any = None) -> Future[BatchResult]:
        """Queue one write; its Future gets the BatchResult once committed, or
        the write's own error (the driver's exception, BatcherFull...).

        Cancelling the Future before its batch starts leaves it unwritten.
        Raises BatcherClosed after ``close()`` and BatcherFull when full.
        """
        item = make_item(sql, params, key, self._key)
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
        item = make_item(sql, params, key, self._key)
        lock = thread_lock()
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
            del engine_tls.lock
            raise
        if item.error is not None:
            error, item.error = item.error, None
            try:
                raise error
            finally:
                # This frame, kept by the error's traceback, must not keep the
                # error: that cycle would keep every frame it passed through
                # (the flusher's, holding the connection) until the cyclic
                # collector ran, and a connection dropped meanwhile could not
                # be reclaimed (see PoolPolicy._reclaim_steps).
                error = item = None  # type: ignore[assignment]
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
        limit = optional_seconds("timeout", timeout, allow_zero=True, owner="Batcher")
        engine.wait_resolved(target, limit, "flush")

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting writes, commit every pending one, stop the flushers.

        Submitting afterwards raises BatcherClosed. Closing again is harmless.
        TimeoutError after ``timeout`` seconds (the flushers finish the work).
        """
        self._engine.close(optional_seconds("timeout", timeout, allow_zero=True, owner="Batcher"))

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
