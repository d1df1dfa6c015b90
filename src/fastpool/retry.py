"""Transactions that run again when the database says "try again".

``run_transaction(pool, fn)`` borrows a connection, runs ``fn(conn)`` in a
transaction, commits and returns ``fn``'s value. When the transaction loses a
conflict with another one (serialization failure, deadlock, lock-wait
timeout), or its connection broke before COMMIT was sent, the whole
transaction is rolled back and run again, on a fresh connection if the old one
broke, after a backoff::

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

import dataclasses
import functools
import inspect
import logging
import math
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload

from fastpool.errors import (
    ConfigError,
    ErrorKind,
    TransactionAborted,
    TransactionOutcomeUnknown,
)

if TYPE_CHECKING:
    from fastpool.pool import PoolPolicy

__all__ = [
    "DEFAULT_BACKOFF",
    "ExponentialBackoff",
    "RetryStats",
    "TransactionAborted",
    "run_transaction",
    "transactional",
]

logger = logging.getLogger("fastpool")

P = ParamSpec("P")
R = TypeVar("R")

#: ``finished(conn, committed)``, called once per attempt before ``conn`` goes back.
Finished = Callable[[Any, bool], object]
Backoff = float | Callable[[int], float]


@dataclasses.dataclass(frozen=True)
class ExponentialBackoff:
    """Exponential backoff with full jitter: before retry ``n`` (1, 2, ...) wait
    a random time between 0 and ``min(cap, base * 2 ** (n - 1))`` seconds.

    Full jitter spreads out transactions that collided, so that they do not
    collide again in lockstep. The default waits up to 10 ms, 20 ms, 40 ms...
    and never more than 1 s::

        run_transaction(pool, fn, backoff=ExponentialBackoff(base=0.05, cap=2.0))
    """

    base: float = 0.01
    cap: float = 1.0

    def __post_init__(self) -> None:
        for name in ("base", "cap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 <= value < math.inf:
                raise ConfigError(f"ExponentialBackoff: {name} must be a finite number of "
                                  f"seconds >= 0, got {value!r}")
        if self.cap < self.base:
            raise ConfigError(f"ExponentialBackoff: cap ({self.cap!r}) must not be less than "
                              f"base ({self.base!r})")

    def __call__(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt - 1, 64))
        return random.uniform(0.0, ceiling)


DEFAULT_BACKOFF = ExponentialBackoff()


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

# Errors worth running the whole transaction again for. CONNECTION_LOST is
# only retried when it happened before COMMIT was sent: the server then rolled
# the transaction back with the session.
_RETRY_KINDS = frozenset({ErrorKind.RETRYABLE, ErrorKind.NOT_SENT, ErrorKind.CONNECTION_LOST})


# ---- transactions, per client library --------------------------------------

class _Tx:
    """Begin, commit and roll back on a DB-API connection that opens its
    transactions implicitly (the default for unknown clients)."""

    def begin(self, conn: Any) -> None:
        pass

    def commit(self, conn: Any) -> None:
        conn.commit()

    def rollback(self, conn: Any) -> None:
        conn.rollback()


class _PsycopgTx(_Tx):
    """psycopg 3. Without autocommit, psycopg sends BEGIN itself before the
    first statement (a ``SET TRANSACTION ISOLATION LEVEL ...`` first in ``fn``
    still applies); with autocommit, an explicit BEGIN, so that the
    connection's own setting never changes. commit() and rollback() act on the
    server's transaction status in both modes."""

    def begin(self, conn: Any) -> None:
        if conn.autocommit:
            conn.execute("BEGIN")

    def commit(self, conn: Any) -> None:
        if conn.pgconn.transaction_status == _PQTRANS_INERROR:
            raise TransactionAborted(
                "fn returned normally, but its transaction had failed (an error inside fn "
                "was caught and not re-raised): rolled back, nothing was committed")
        conn.commit()


_PQTRANS_INERROR = 3  # libpq's PQTRANS_INERROR


class _MySQLTx(_Tx):
    """mysqlclient: an explicit BEGIN, whatever the connection's autocommit."""

    def begin(self, conn: Any) -> None:
        conn.begin()


class _SQLiteTx(_Tx):
    """sqlite3: an explicit BEGIN (of the connection's isolation level:
    DEFERRED, IMMEDIATE or EXCLUSIVE), unless the module already opened one
    (Python 3.12's ``autocommit=False``). With 3.12's ``autocommit=True`` the
    module's commit() and rollback() do nothing: send the statements."""

    def begin(self, conn: Any) -> None:
        if not conn.in_transaction:
            conn.execute(f"BEGIN {conn.isolation_level or ''}")

    def commit(self, conn: Any) -> None:
        if getattr(conn, "autocommit", None) is True:
            if conn.in_transaction:
                conn.execute("COMMIT")
        else:
            conn.commit()

    def rollback(self, conn: Any) -> None:
        if getattr(conn, "autocommit", None) is True:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        else:
            conn.rollback()


_TXS: dict[type, _Tx] = {}


def _tx_for(conn: Any) -> _Tx:
    cls = type(conn)
    tx = _TXS.get(cls)
    if tx is None:
        package = cls.__module__.split(".")[0]
        if isinstance(conn, sqlite3.Connection):
            tx = _SQLiteTx()
        elif package == "psycopg" and hasattr(conn, "pgconn"):
            tx = _PsycopgTx()
        elif package == "MySQLdb":
            tx = _MySQLTx()
        else:
            tx = _Tx()
        _TXS[cls] = tx
    return tx


# ---- argument checks ----------------------------------------------------------

def _check_fn(fn: object) -> None:
    if not callable(fn):
        raise ConfigError(f"the transaction function must be callable, got {fn!r}")
    if inspect.iscoroutinefunction(fn):
        raise ConfigError(f"the transaction function must not be async, got {fn!r}: "
                          "fastpool's connections are blocking")


def _check_retries(retries: object) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be an integer >= 0, got {retries!r}")
    return retries


def _delay_function(backoff: object) -> Callable[[int], float]:
    """``backoff`` (seconds, or attempt -> seconds) as a function that checks its answer."""
    if isinstance(backoff, (int, float)) and not isinstance(backoff, bool):
        delay = float(backoff)
        if not 0 <= delay < math.inf:
            raise ConfigError(f"backoff must be a finite number of seconds >= 0 or a callable "
                              f"(retry number -> seconds), got {backoff!r}")
        return lambda attempt: delay
    if not callable(backoff):
        raise ConfigError(f"backoff must be a number of seconds or a callable "
                          f"(retry number -> seconds), got {backoff!r}")

    def checked(attempt: int) -> float:
        delay = backoff(attempt)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) \
                or not 0 <= delay < math.inf:
            raise ConfigError(f"backoff {backoff!r} returned {delay!r} for retry {attempt}: "
                              "expected a finite number of seconds >= 0")
        return float(delay)

    return checked


def _check_finished(finished: object) -> None:
    if finished is not None and not callable(finished):
        raise ConfigError(f"finished must be callable or None, got {finished!r}")


def _check_stats(stats: object) -> None:
    if stats is not None and not isinstance(stats, RetryStats):
        raise ConfigError(f"stats must be a RetryStats or None, got {stats!r}")


# ---- the loop -------------------------------------------------------------------

def run_transaction(pool: PoolPolicy, fn: Callable[[Any], R], *, retries: int = 3,
                    backoff: Backoff = DEFAULT_BACKOFF, finished: Finished | None = None,
                    stats: RetryStats | None = None) -> R:
    """Run ``fn(conn)`` in a transaction on a connection of ``pool``, commit,
    and return ``fn``'s value; run it again, up to ``retries`` more times, when
    the database says the transaction may succeed if tried again.

    Retried, after rolling back: serialization failures, deadlocks and
    lock-wait timeouts (``ErrorKind.RETRYABLE``, at any statement or at
    COMMIT), and a connection that broke before COMMIT was sent
    (``CONNECTION_LOST`` while ``fn`` ran, ``NOT_SENT``): the broken connection
    is discarded and the next attempt borrows another one. Before retry ``n``
    (1, 2, ...) the caller sleeps ``backoff(n)`` seconds, or ``backoff``
    seconds if it is a number; the default is exponential with full jitter
    (see ExponentialBackoff). When the last retry fails too, its error is
    raised, with a note saying how many attempts were made.

    Not retried: ``fn``'s own exceptions and query errors (rolled back and
    re-raised unchanged), ``PoolTimeout`` and other pool errors, and a
    connection lost while COMMIT was in flight: the transaction may or may not
    have been committed, so ``TransactionOutcomeUnknown`` is raised (chained to
    the driver's error) and ``fn`` is not run again.

    The transaction is explicit on every driver: psycopg sends BEGIN (on an
    autocommit connection too; its setting is left as it was), mysqlclient
    ``conn.begin()``, sqlite3 ``BEGIN`` of the connection's isolation level.
    ``fn`` can set the isolation level as its first statement
    (``SET TRANSACTION ISOLATION LEVEL SERIALIZABLE``).

    ``finished(conn, committed)``, if given, is called once per attempt while
    ``conn`` is still borrowed: ``True`` after COMMIT succeeded, and also when
    the outcome is unknown (it may have committed: a cache must invalidate);
    ``False`` after the rollback. Its exceptions are logged, not raised: the
    transaction's outcome does not change. ``stats`` (a RetryStats) counts
    attempts, retries, exhausted retries and unknown outcomes.

    The connection always goes back to the pool, or is discarded when it
    broke, even on KeyboardInterrupt.
    """
    _check_fn(fn)
    retries = _check_retries(retries)
    delay_for = _delay_function(backoff)
    _check_finished(finished)
    _check_stats(stats)
    return _run(pool, fn, retries, delay_for, finished, stats)


def _run(pool: PoolPolicy, fn: Callable[[Any], R], retries: int,
         delay_for: Callable[[int], float], finished: Finished | None,
         stats: RetryStats | None) -> R:
    attempt = 0
    while True:
        attempt += 1
        done, outcome = _attempt(pool, fn, finished, stats)
        if done:
            return outcome  # type: ignore[no-any-return]
        error: BaseException = outcome
        if attempt > retries:
            if stats is not None:
                stats._add("exhausted")
            if hasattr(error, "add_note"):  # Python 3.11+
                error.add_note(f"fastpool: the transaction failed {attempt} time(s) "
                               f"(retries={retries}); this is the last attempt's error")
            raise error
        try:
            delay = delay_for(attempt)
        except ConfigError as bad:  # a backoff callable's nonsense, with what it was for
            raise bad from error
        if stats is not None:
            stats._add("retries")
        logger.debug("fastpool: pool %r: transaction attempt %d failed (%s: %s); retrying "
                     "in %.3f s", getattr(pool, "name", pool), attempt,
                     type(error).__name__, error, delay)
        if delay > 0:
            time.sleep(delay)


_BEGIN, _RUN, _COMMIT = range(3)


def _attempt(pool: PoolPolicy, fn: Callable[[Any], Any], finished: Finished | None,
             stats: RetryStats | None) -> tuple[bool, Any]:
    """One transaction on one borrowed connection: ``(True, fn's value)`` once
    committed, ``(False, error)`` when it failed in a way worth retrying;
    anything else is raised. The connection goes back in every case."""
    conn = pool.acquire()
    try:
        if stats is not None:
            stats._add("attempts")
        tx = _tx_for(conn)
        stage = _BEGIN
        try:
            tx.begin(conn)
            stage = _RUN
            value = fn(conn)
            stage = _COMMIT
            tx.commit(conn)
        except Exception as exc:
            kind = pool.classify(exc)
            if stage == _COMMIT and kind is ErrorKind.CONNECTION_LOST:
                # COMMIT was sent and no answer came back: it may have been
                # applied. Running fn again could do the work twice.
                if stats is not None:
                    stats._add("outcome_unknown")
                _notify(finished, conn, True)
                raise TransactionOutcomeUnknown(
                    f"the connection was lost during COMMIT ({type(exc).__name__}: {exc}); "
                    "the transaction may or may not have been committed, so it was not "
                    "run again") from exc
            _rollback(tx, conn)
            _notify(finished, conn, False)
            if kind in _RETRY_KINDS:
                return False, exc
            raise
        except BaseException:
            # Interrupted (KeyboardInterrupt...): no round trip here; releasing
            # rolls back what is open, or discards a connection in mid-query.
            _notify(finished, conn, stage == _COMMIT)
            raise
        _notify(finished, conn, True)
        return True, value
    finally:
        pool.release(conn)


def _rollback(tx: _Tx, conn: Any) -> None:
    """Roll back; a broken connection cannot, and its server already did."""
    try:
        tx.rollback(conn)
    except Exception as exc:
        logger.debug("fastpool: rollback after a failed transaction attempt failed: %s", exc)


def _notify(finished: Finished | None, conn: Any, committed: bool) -> None:
    if finished is None:
        return
    try:
        finished(conn, committed)
    except Exception:
        logger.exception("fastpool: the transaction's finished callback %r failed", finished)


# ---- the decorator ----------------------------------------------------------------

@overload
def transactional(pool: PoolPolicy, fn: Callable[Concatenate[Any, P], R], /, *,
                  retries: int = ..., backoff: Backoff = ..., finished: Finished | None = ...,
                  stats: RetryStats | None = ...) -> Callable[P, R]: ...


@overload
def transactional(pool: PoolPolicy, fn: None = None, /, *, retries: int = ...,
                  backoff: Backoff = ..., finished: Finished | None = ...,
                  stats: RetryStats | None = ...,
                  ) -> Callable[[Callable[Concatenate[Any, P], R]], Callable[P, R]]: ...


def transactional(pool: PoolPolicy, fn: Callable[..., Any] | None = None, /, *,
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
    delay_for = _delay_function(backoff)
    _check_finished(finished)
    _check_stats(stats)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        _check_fn(func)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            return _run(pool, lambda conn: func(conn, *args, **kwargs), retries, delay_for,
                        finished, stats)

        return run

    return decorate if fn is None else decorate(fn)
