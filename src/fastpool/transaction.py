"""The one transaction runner, and transactions that run again when the
database says "try again".

``attempt(source, body)`` is the runner every transactional feature uses
(``pool.transaction``, the batcher, bulk loads): it borrows a connection, begins, runs
``body(conn)``, commits, and classifies what happened into one of four
outcomes, each rule written once, here:

* ``COMMITTED``: COMMIT succeeded.
* ``RETRY``: rolled back, and worth running again: a conflict with another
  transaction (serialization failure, deadlock, lock-wait timeout), a server
  that takes no work now (``UNAVAILABLE``), or a connection that broke before
  COMMIT was sent (``CONNECTION_LOST``/``NOT_SENT``: the server rolled back
  with the session; the broken connection is discarded on release).
* ``UNKNOWN``: the connection was lost *during* COMMIT: it may or may not have
  been applied. Never run again; ``TransactionOutcomeUnknown`` (chained to the
  driver's error) is the caller's.
* ``FAILED``: anything else (the body's own exception, a query error), rolled
  back; the caller decides (re-raise, or isolate a bad write).

Begin, commit and rollback are the client adapter's (``source.adapter``), so
each client's transaction rules (psycopg's autocommit, sqlite3's isolation
levels and Python 3.12's ``autocommit=True``) also exist once.

``run_transaction(pool, fn)`` (``pool.transaction(fn)``) runs ``fn(conn)``
through it, again after a backoff on RETRY, and returns ``fn``'s value::

    def transfer(conn):
        conn.execute("UPDATE account SET balance = balance - 10 WHERE id = 1")
        conn.execute("UPDATE account SET balance = balance + 10 WHERE id = 2")

    run_transaction(pool, transfer, retries=5)

    @transactional(pool)
    def add_order(conn, customer, total):
        ...
    add_order(42, 9.99)          # conn is passed by the decorator

``fn`` may therefore run more than once: it must not have side effects
outside the transaction (send no mail, touch no other database), must not
commit or roll back itself, and should start from what it reads inside the
transaction. What is never retried: ``fn``'s own exceptions and query errors
(rolled back and re-raised unchanged), ``PoolTimeout`` (the caller's deadline)
and a connection lost *during* COMMIT, whose outcome is unknown:
``TransactionOutcomeUnknown`` is raised, chained to the driver's error.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from fastpool.backoff import Backoff, ExponentialBackoff, delay_function
from fastpool.errors import (
    ConfigError,
    ErrorKind,
    TransactionAborted,
    TransactionOutcomeUnknown,
)
from fastpool.options import callable_or_none, integer
from fastpool.source import ConnectionSource
from fastpool.steps import Steps, run, run_async

__all__ = [
    "DEFAULT_BACKOFF",
    "RETRY_KINDS",
    "Attempt",
    "ExponentialBackoff",
    "Outcome",
    "RetryStats",
    "SourceIO",
    "TransactionAborted",
    "attempt",
    "attempt_async",
    "outcome_unknown",
    "run_transaction",
    "run_transaction_async",
    "transactional",
]

logger = logging.getLogger("fastpool")

P = ParamSpec("P")
R = TypeVar("R")

#: ``finished(conn, committed)``, called once per attempt before ``conn`` goes back.
Finished = Callable[[Any, bool], object]

#: Up to 10 ms, 20 ms, 40 ms... never more than 1 s, full jitter.
DEFAULT_BACKOFF = ExponentialBackoff(base=0.01, cap=1.0, jitter=1.0)

#: Errors worth running the whole transaction again for. CONNECTION_LOST only
#: counts when it happened before COMMIT was sent: the server then rolled the
#: transaction back with the session (during COMMIT it is UNKNOWN).
RETRY_KINDS = frozenset({ErrorKind.RETRYABLE, ErrorKind.NOT_SENT, ErrorKind.CONNECTION_LOST,
                         ErrorKind.UNAVAILABLE})


# ---- the runner ------------------------------------------------------------------

class Outcome(enum.Enum):
    """How one transaction attempt ended (see the module documentation)."""

    COMMITTED = "committed"
    RETRY = "retry"
    UNKNOWN = "unknown"
    FAILED = "failed"


class Attempt(Generic[R]):
    """The result of ``attempt()``: ``outcome``; ``value`` (the body's return
    value) once COMMITTED; otherwise ``error`` (for UNKNOWN a
    ``TransactionOutcomeUnknown`` chained to the driver's error), its ``kind``,
    and ``at_commit`` (it failed at COMMIT, not in the body)."""

    __slots__ = ("at_commit", "error", "kind", "outcome", "value")

    def __init__(self, outcome: Outcome, value: Any = None, error: Exception | None = None,
                 kind: ErrorKind | None = None, at_commit: bool = False) -> None:
        self.outcome = outcome
        self.value: R = value
        self.error = error
        self.kind = kind
        self.at_commit = at_commit

    def __repr__(self) -> str:
        return f"<Attempt {self.outcome.value} kind={self.kind} error={self.error!r}>"


_BEGIN, _RUN, _COMMIT = range(3)


class SourceIO:
    """The I/O of the runner's flows: the source's acquire/release, the
    adapter's begin/commit/rollback, the body and the backoff's sleep. The
    same object serves threads and asyncio: with an asyncio pool each of these
    returns a coroutine, which ``run_async`` awaits."""

    __slots__ = ("acquire", "body", "release", "sleep", "source")

    def __init__(self, source: ConnectionSource, body: Callable[[Any], Any],
                 sleep: Callable[[float], Any] = time.sleep) -> None:
        self.source = source
        self.body = body
        self.acquire = source.acquire
        self.release = source.release
        self.sleep = sleep

    def begin(self, conn: Any, write: bool) -> Any:
        return self.source.adapter.begin(conn, write=write)

    def commit(self, conn: Any) -> Any:
        return self.source.adapter.commit(conn)

    def rollback(self, conn: Any) -> Any:
        return self.source.adapter.rollback(conn)


def attempt(source: ConnectionSource, body: Callable[[Any], R], *, write: bool = False,
            finished: Finished | None = None, what: str = "the transaction",
            started: Callable[[], object] | None = None) -> Attempt[R]:
    """One transaction on one connection borrowed from ``source``: begin, run
    ``body(conn)``, commit, classify (see the module documentation).

    ``write``: the transaction is known to write (SQLite takes its write lock
    at BEGIN). ``finished(conn, committed)`` is called once while ``conn`` is
    still borrowed: True after COMMIT and when the outcome is unknown (it may
    have committed), False after a rollback; its exceptions are logged.
    ``what`` names the work in the TransactionOutcomeUnknown message;
    ``started()`` is called once a connection was borrowed (for counters).

    The pool's errors (PoolTimeout, PoolClosed...) from borrowing propagate.
    A BaseException (KeyboardInterrupt, cancellation) propagates too; the
    connection goes back in every case, and releasing rolls back what is open
    (or discards a connection in mid-query).
    """
    return run(attempt_steps(source, write, finished, what, started), SourceIO(source, body))


async def attempt_async(source: ConnectionSource, body: Callable[[Any], Awaitable[R]], *,
                        write: bool = False, finished: Finished | None = None,
                        what: str = "the transaction",
                        started: Callable[[], object] | None = None) -> Attempt[R]:
    """``attempt`` on an asyncio pool: ``body(conn)`` is awaited."""
    return await run_async(attempt_steps(source, write, finished, what, started),
                           SourceIO(source, body))


def attempt_steps(source: ConnectionSource, write: bool, finished: Finished | None, what: str,
                  started: Callable[[], object] | None) -> Steps[Attempt[Any]]:
    """The runner's one flow (see ``attempt``); its I/O is ``SourceIO``'s."""
    conn = yield ("acquire",)
    try:
        if started is not None:
            started()
        source.adapter.require("transactions", what)
        stage = _BEGIN
        try:
            yield ("begin", conn, write)
            stage = _RUN
            value = yield ("body", conn)
            stage = _COMMIT
            yield ("commit", conn)
        except Exception as exc:
            kind = source.classify(exc)
            if stage == _COMMIT and kind is ErrorKind.CONNECTION_LOST:
                # COMMIT was sent and no answer came back: it may have been
                # applied. Running the work again could do it twice.
                _notify(finished, conn, True)
                return Attempt(Outcome.UNKNOWN, error=outcome_unknown(exc, what), kind=kind,
                               at_commit=True)
            try:
                yield ("rollback", conn)
            except Exception as failed:  # a broken connection cannot; its server did
                logger.debug("fastpool: rollback after a failed transaction attempt failed: "
                             "%s", failed)
            _notify(finished, conn, False)
            outcome = Outcome.RETRY if kind in RETRY_KINDS else Outcome.FAILED
            return Attempt(outcome, error=exc, kind=kind, at_commit=stage == _COMMIT)
        except BaseException:
            _notify(finished, conn, stage == _COMMIT)
            raise
        _notify(finished, conn, True)
        return Attempt(Outcome.COMMITTED, value)
    finally:
        yield ("release", conn)


def outcome_unknown(exc: BaseException, what: str) -> TransactionOutcomeUnknown:
    """The error for a connection lost while COMMIT of ``what`` was in flight
    (``exc``, the driver's, is its cause): the one wording of the one rule."""
    lost = TransactionOutcomeUnknown(
        f"the connection was lost during COMMIT of {what} ({type(exc).__name__}: {exc}); it "
        "may or may not have been committed, so fastpool did not run it again")
    lost.__cause__ = exc
    return lost


def _notify(finished: Finished | None, conn: Any, committed: bool) -> None:
    if finished is None:
        return
    try:
        finished(conn, committed)
    except Exception:
        logger.exception("fastpool: the transaction's finished callback %r failed", finished)


# ---- run_transaction: the runner, retried ------------------------------------------

class RetryStats:
    """Counters of the transactions run through one pool (thread-safe).

    ``attempts``: transactions started (first runs and retries); ``retries``:
    attempts that ran the transaction again; ``exhausted``: transactions that still
    failed with a retryable error after their last retry; ``outcome_unknown``:
    connections lost during COMMIT (``TransactionOutcomeUnknown``).
    """

    __slots__ = ("_lock", "attempts", "exhausted", "outcome_unknown", "retries")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.attempts = 0
        self.retries = 0
        self.exhausted = 0
        self.outcome_unknown = 0

    def _add(self, name: str) -> None:
        with self._lock:  # += on an attribute is not atomic across threads
            setattr(self, name, getattr(self, name) + 1)

    def count_attempt(self) -> None:
        """A transaction attempt got its connection and starts."""
        self._add("attempts")

    def as_dict(self, reset: bool = False) -> dict[str, int]:
        """The counters by name; with ``reset`` they start again from zero."""
        with self._lock:
            values = {name: getattr(self, name) for name in _COUNTERS}
            if reset:
                for name in _COUNTERS:
                    setattr(self, name, 0)
        return values

    def __repr__(self) -> str:
        return f"<RetryStats {self.as_dict()}>"


_COUNTERS = ("attempts", "retries", "exhausted", "outcome_unknown")


# ---- argument checks ----------------------------------------------------------

def _check_fn(fn: object, is_async: bool = False) -> None:
    if not callable(fn):
        raise ConfigError(f"the transaction function must be callable, got {fn!r}")
    coroutine = (inspect.iscoroutinefunction(fn)
                 or inspect.iscoroutinefunction(getattr(fn, "__call__", None)))  # noqa: B004
    if coroutine and not is_async:
        raise ConfigError(f"the transaction function must not be async, got {fn!r}: "
                          "this pool's connections are blocking (use fastpool.AsyncPool)")
    if is_async and not coroutine:
        raise ConfigError(f"the transaction function of an asyncio pool must be a coroutine "
                          f"function (async def), got {fn!r}; pass arguments with "
                          "functools.partial(fn, ...)")


def _check_retries(retries: object) -> int:
    return integer("retries", retries, 0)


def _check_finished(finished: object) -> None:
    callable_or_none("finished", finished)


def _check_stats(stats: object) -> None:
    if stats is not None and not isinstance(stats, RetryStats):
        raise ConfigError(f"stats must be a RetryStats or None, got {stats!r}")


def run_transaction(source: ConnectionSource, fn: Callable[[Any], R], *, retries: int = 3,
                    backoff: Backoff = DEFAULT_BACKOFF, finished: Finished | None = None,
                    stats: RetryStats | None = None) -> R:
    """Run ``fn(conn)`` in a transaction on a connection of ``source`` (a
    pool), commit, and return ``fn``'s value; run it again, up to ``retries``
    more times, when the outcome is RETRY (see the module documentation).

    Before retry ``n`` (1, 2, ...) the caller sleeps ``backoff(n)`` seconds, or
    ``backoff`` seconds if it is a number; the default is exponential with
    full jitter (``fastpool.ExponentialBackoff``). When the last retry fails
    too, its error is raised, with a note saying how many attempts were made.
    A FAILED attempt's error is re-raised unchanged; an UNKNOWN one raises
    ``TransactionOutcomeUnknown``.

    The transaction is explicit on every client (see the client adapters):
    psycopg sends BEGIN (on an autocommit connection too; its setting is left
    as it was), mysqlclient BEGIN on an autocommit connection, sqlite3
    ``BEGIN`` of the connection's isolation level. ``fn`` can set the
    isolation level as its first statement (``SET TRANSACTION ISOLATION LEVEL
    SERIALIZABLE``) where the server allows it.

    ``finished`` and ``stats`` (a RetryStats: attempts, retries, exhausted
    retries, unknown outcomes) are optional observers.
    """
    _check_fn(fn)
    retries = _check_retries(retries)
    delay_for = delay_function(backoff)
    _check_finished(finished)
    _check_stats(stats)
    value: R = run(_run_steps(source, retries, delay_for, finished, stats), SourceIO(source, fn))
    return value


async def run_transaction_async(source: ConnectionSource, fn: Callable[[Any], Awaitable[R]], *,
                                retries: int = 3, backoff: Backoff = DEFAULT_BACKOFF,
                                finished: Finished | None = None,
                                stats: RetryStats | None = None) -> R:
    """``run_transaction`` on an asyncio pool: ``await fn(conn)``, the same
    retry table and backoff (an ``asyncio.sleep``); the same options."""
    _check_fn(fn, is_async=True)
    retries = _check_retries(retries)
    delay_for = delay_function(backoff)
    _check_finished(finished)
    _check_stats(stats)
    value: R = await run_async(_run_steps(source, retries, delay_for, finished, stats),
                               SourceIO(source, fn, asyncio.sleep))
    return value


def _run_steps(source: ConnectionSource, retries: int, delay_for: Callable[[int], float],
               finished: Finished | None, stats: RetryStats | None) -> Steps[Any]:
    """Attempts until one commits, fails, or the retries run out (see run_transaction)."""
    n = 0
    while True:
        n += 1
        result = yield from attempt_steps(
            source, False, finished, "the transaction",
            None if stats is None else stats.count_attempt)
        if result.outcome is Outcome.COMMITTED:
            return result.value
        try:
            error = result.error
            assert error is not None
            if result.outcome is Outcome.UNKNOWN:
                if stats is not None:
                    stats._add("outcome_unknown")
                raise error
            if result.outcome is Outcome.FAILED:
                raise error
            if n > retries:
                if stats is not None:
                    stats._add("exhausted")
                if hasattr(error, "add_note"):  # Python 3.11+
                    error.add_note(f"fastpool: the transaction failed {n} time(s) "
                                   f"(retries={retries}); this is the last attempt's error")
                raise error
            try:
                delay = delay_for(n)
            except ConfigError as bad:  # a backoff callable's nonsense, with what it was for
                raise bad from error
            if stats is not None:
                stats._add("retries")
            logger.debug("fastpool: pool %r: transaction attempt %d failed (%s: %s); retrying "
                         "in %.3f s", getattr(source, "name", source), n,
                         type(error).__name__, error, delay)
        finally:
            # Raised or not, this frame keeps neither the attempt nor its error:
            # the error's traceback keeps this frame, and the cycle would keep
            # the frames it passed through (with the connection) until the
            # cyclic collector runs (see ARCHITECTURE.md, reference cycles).
            result = error = None  # type: ignore[assignment]
        if delay > 0:
            yield ("sleep", delay)


# ---- the decorator ----------------------------------------------------------------

@overload
def transactional(source: ConnectionSource, fn: Callable[Concatenate[Any, P], R], /, *,
                  retries: int = ..., backoff: Backoff = ..., finished: Finished | None = ...,
                  stats: RetryStats | None = ...) -> Callable[P, R]: ...


@overload
def transactional(source: ConnectionSource, fn: None = None, /, *, retries: int = ...,
                  backoff: Backoff = ..., finished: Finished | None = ...,
                  stats: RetryStats | None = ...,
                  ) -> Callable[[Callable[Concatenate[Any, P], R]], Callable[P, R]]: ...


def transactional(source: ConnectionSource, fn: Callable[..., Any] | None = None, /, *,
                  retries: int = 3, backoff: Backoff = DEFAULT_BACKOFF,
                  finished: Finished | None = None, stats: RetryStats | None = None) -> Any:
    """Decorate ``fn(conn, *args, **kwargs)`` so that calling it with
    ``(*args, **kwargs)`` runs it through ``run_transaction`` (same options,
    checked when decorating)::

        @transactional(pool, retries=5)
        def move(conn, src, dst, amount): ...

        move(1, 2, 10)
    """
    retries = _check_retries(retries)
    delay_for = delay_function(backoff)
    _check_finished(finished)
    _check_stats(stats)

    is_async = bool(getattr(source, "is_async", False))

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        _check_fn(func, is_async)
        if is_async:
            @functools.wraps(func)
            async def run_async_(*args: Any, **kwargs: Any) -> Any:
                return await run_async(_run_steps(source, retries, delay_for, finished, stats),
                                       SourceIO(source, lambda conn: func(conn, *args, **kwargs),
                                                 asyncio.sleep))
            return run_async_

        @functools.wraps(func)
        def run_(*args: Any, **kwargs: Any) -> Any:
            return run(_run_steps(source, retries, delay_for, finished, stats),
                       SourceIO(source, lambda conn: func(conn, *args, **kwargs)))

        return run_

    return decorate if fn is None else decorate(fn)
