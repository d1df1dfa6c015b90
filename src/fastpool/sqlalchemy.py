"""SQLAlchemy pool classes whose queueing is fastpool's compiled core.

Switching from SQLAlchemy's QueuePool is one argument::

    from sqlalchemy import create_engine
    from fastpool.sqlalchemy import FastPool

    engine = create_engine(url, poolclass=FastPool, pool_size=4, max_overflow=0)

and for ``create_async_engine``, ``poolclass=AsyncFastPool`` (in place of
AsyncAdaptedQueuePool).

Everything but the queue is SQLAlchemy's own: ``FastPool`` is a
``sqlalchemy.pool.Pool`` whose ``_ConnectionRecord`` objects connect, recycle,
pre-ping, reset on return, fire the pool events and get invalidated exactly as
under QueuePool, which it mirrors option for option (``pool_size``,
``max_overflow``, ``timeout``, ``use_lifo``, ``status()``, ``size()``,
``checkedin()``, ``checkedout()``, ``overflow()``, ``timeout()``, ``dispose()``,
``recreate()``; a caller that waits too long gets ``sqlalchemy.exc.TimeoutError``).

What changes is where the records wait: in the idle ring of fastpool's core
(``fastpool._core.PoolCore``), not in a ``queue.Queue``. Checking a record out
and in is one call into compiled code each, and a record returned while callers
wait goes straight to the oldest of them (FIFO hand-off). Under QueuePool the
thread that returns a connection takes it again at once while the woken waiter
finds the queue empty, so at 64 threads on 4 connections most threads starve;
here every thread gets its turn.

Differences from QueuePool, all on purpose:

- ``dispose()`` closes the idle connections as QueuePool's does, but the counts
  keep the connections still checked out (QueuePool forgets them, so its
  ``checkedout()`` reads 0 and then goes negative as they come back).
- A new connection goes to the oldest waiting caller: the caller that opens it
  queues too, before connecting, and takes whichever connection frees first.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc
from sqlalchemy.pool import ConnectionPoolEntry, Pool
from sqlalchemy.pool.base import _AsyncConnDialect

try:
    from sqlalchemy.util.concurrency import await_
except ImportError:  # SQLAlchemy 2.0 names it await_only
    from sqlalchemy.util.concurrency import await_only as await_

from fastpool import _core
from fastpool.options import MAX_POOL_SIZE, boolean, integer, seconds

if TYPE_CHECKING:
    # A mixin before a core class (the compiled one or its pure-Python twin),
    # as fastpool.pool.policy.PoolPolicy is: the core calls the callbacks
    # below (_acquire_slow, _release_slow, _release_unknown).
    from fastpool._core import PoolCore as _Core
else:
    _Core = object

__all__ = ["AsyncFastPool", "FastPool"]

#: A record's deadline in the core: SQLAlchemy recycles on its own clock.
_NEVER_NS = 1 << 62


class _Returned:
    """The status every returned record reports to the core: clean.

    SQLAlchemy has reset the connection (``reset_on_return``) before the
    record comes back, so the core may shelve it without asking Python.
    """

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = True


_CLEAN = _Returned()


class _ThreadWait:
    """How a thread waits for a hand-off: on a locked lock the core releases."""

    @staticmethod
    def token() -> tuple[Callable[[], object], Any]:
        lock = threading.Lock()
        lock.acquire()
        return lock.release, lock

    @staticmethod
    def wait(lock: Any, timeout: float) -> bool:
        return bool(lock.acquire(timeout=timeout))


class _GreenletWait:
    """How an AsyncEngine's caller waits: SQLAlchemy runs the pool inside a
    greenlet of the event loop, which ``await_`` suspends on a future of that
    loop; the core resolves it (``set_result`` of a future already cancelled
    by the deadline fails, and the core ignores that: see _wait_or_open)."""

    @staticmethod
    def token() -> tuple[Callable[[], object], Any]:
        fut = asyncio.get_running_loop().create_future()
        return functools.partial(fut.set_result, True), fut

    @staticmethod
    def wait(fut: Any, timeout: float) -> bool:
        try:
            await_(asyncio.wait_for(fut, timeout))
        except asyncio.TimeoutError:
            return False
        return True


class _RecordPolicy(_Core):
    """The core's callbacks for a ring of SQLAlchemy connection records.

    Lives on the ring, not on the pool: the pool binds the ring's compiled
    ``acquire``/``release`` as its ``_do_get``/``_do_return_conn``, so a
    checkout that finds an idle record runs no Python here at all.
    """

    lock: threading.Lock
    pool_size: int
    limit: int  # most records open at once; -1: no limit
    timeout: float
    opening: int  # records being connected right now (counted as open)
    waits: type[_ThreadWait] | type[_GreenletWait]
    owner: weakref.ReferenceType[FastPool]

    def _configure(self, owner: FastPool, pool_size: int, limit: int, timeout: float,
                   use_lifo: bool, waits: type[_ThreadWait] | type[_GreenletWait]) -> None:
        self.lock = threading.Lock()
        self.pool_size = pool_size
        self.limit = limit
        self.timeout = timeout
        self.opening = 0
        self.waits = waits
        self.owner = weakref.ref(owner)
        # Records never need a probe (pre_ping is SQLAlchemy's), never expire
        # here (recycle is SQLAlchemy's) and come back clean (SQLAlchemy reset
        # them). max_open is pool_size: while overflow records are open, the
        # core asks _acquire_slow / _release_slow, which apply QueuePool's
        # rule (an overflow record returned to a full queue is closed).
        self._set_policy(lifo=use_lifo, bypass_ns=_NEVER_NS, max_open=max(pool_size, 1),
                         status_attr="state", idle_status=True, always_slow_release=False,
                         track_holders=False)

    # ---- the core's callbacks -------------------------------------------

    def _acquire_slow(self, timeout: float | None, idx: int) -> Any:
        if idx >= 0:
            # Popped while overflow records are open (the only reason the
            # core hands an idle record here): QueuePool lends it as well.
            return self._lend_checked(idx, 0)
        return self._wait_or_open()

    def _release_slow(self, idx: int, commit: bool) -> None:
        # Only while more than pool_size records are open. Under the lock
        # that _reserve takes: a caller that queued and found no room to
        # open one is seen here as waiting, and gets this record.
        with self.lock:
            _, idle, _, waiting = self._sizes()
            if waiting or not self.pool_size or idle < self.pool_size:
                self._putback(idx)
                return
            record = self._discard(idx, _core.REASON_RESIZE)
        record.close()  # QueuePool's rule: the queue is full, close the overflow

    def _release_unknown(self, conn: Any) -> None:
        raise exc.InvalidRequestError(
            f"{conn!r} was returned to a pool that did not check it out")

    # ---- waiting and opening ----------------------------------------------

    def _wait_or_open(self) -> Any:
        """Queue (FIFO), open a record if there is room, wait for a hand-off.

        The caller queues before connecting, so a record it opens goes to the
        oldest caller waiting (maybe itself), and a record returned meanwhile
        can be handed to it.
        """
        start = time.monotonic()
        waits = self.waits
        wakeup, token = waits.token()
        waiter = self._new_waiter(wakeup)
        idx = self._pop_or_wait(waiter, 0)
        if idx >= 0:  # one came back since the fast path looked
            return self._lend_checked(idx, 0)
        try:
            if self._reserve():
                self._open_one()
            woken = waits.wait(token, max(start + self.timeout - time.monotonic(), 0.0))
            if not woken and self._cancel_wait(waiter) == _core.ENQUEUED:
                raise self._timeout_error()
        except BaseException:
            # Timed out, interrupted, cancelled or failed to connect: leave the
            # queue, and give back a record handed over in the meantime.
            got = self._cancel_wait(waiter)
            if got >= 0:
                type(self).release(self, self._conn_at(got))
            raise
        return self._conn_at(waiter.idx)

    def _reserve(self) -> bool:
        """Count one more record being opened, if the limit allows."""
        with self.lock:
            if self.limit >= 0 and self._sizes()[0] + self.opening >= self.limit:
                return False
            self.opening += 1
            return True

    def _open_one(self) -> None:
        owner = self.owner()
        try:
            if owner is None:
                raise exc.InvalidRequestError("the pool of this ring is gone")
            record = owner._create_connection()  # connects; fires connect events
            now = self._now_ns()
            self._add(record, _CLEAN, now, _NEVER_NS)  # to the oldest waiter
        finally:
            with self.lock:
                self.opening -= 1

    def _timeout_error(self) -> exc.TimeoutError:
        open_, _, _, _ = self._sizes()
        overflow = open_ + self.opening - self.pool_size if self.pool_size else 0
        return exc.TimeoutError(
            f"FastPool limit of size {self.pool_size} overflow {overflow} reached, "
            f"connection timed out, timeout {self.timeout:0.2f}", code="3o7r")


class _RecordRing(_RecordPolicy, _core.PoolCore):
    """The ring of records over the core fastpool loaded (compiled or twin)."""


class FastPool(Pool):
    """A QueuePool whose queue is fastpool's compiled ring (FIFO hand-off).

    >>> engine = create_engine(url, poolclass=FastPool, pool_size=4, max_overflow=0,
    ...                        pool_timeout=10, pool_pre_ping=True)

    Takes QueuePool's arguments with its defaults: ``pool_size`` (5; 0: no
    limit), ``max_overflow`` (10; -1: no limit), ``timeout`` (30 s),
    ``use_lifo`` (False), and Pool's (``recycle``, ``pre_ping``,
    ``reset_on_return``, ``echo``, ``logging_name``, ``events``, ``dialect``).
    A bad value raises ``fastpool.ConfigError`` (a ValueError) naming it.
    """

    _is_asyncio = False
    _waits: type[_ThreadWait] | type[_GreenletWait] = _ThreadWait
    #: The ring class (a test swaps in one over the pure-Python core).
    _ring_class: type[_RecordRing] = _RecordRing

    def __init__(self, creator: Any, pool_size: int = 5, max_overflow: int = 10,
                 timeout: float = 30.0, use_lifo: bool = False, **kw: Any) -> None:
        name = type(self).__name__
        pool_size = integer("pool_size", pool_size, 0, owner=name, maximum=MAX_POOL_SIZE)
        max_overflow = integer("max_overflow", max_overflow, -1, owner=name,
                               maximum=MAX_POOL_SIZE)
        wait = seconds("timeout", timeout, owner=name)
        use_lifo = boolean("use_lifo", use_lifo, owner=name)
        Pool.__init__(self, creator, **kw)
        # As QueuePool: pool_size 0 means no limit at all.
        self._max_overflow = -1 if pool_size == 0 else max_overflow
        self._pool_size = pool_size
        self._timeout = timeout  # as given: timeout() returns it, as QueuePool's does
        self._use_lifo = use_lifo
        limit = -1 if self._max_overflow == -1 else pool_size + self._max_overflow
        ring = self._ring_class()
        ring._configure(self, pool_size, limit, wait, use_lifo, self._waits)
        self._ring = ring
        # The core's compiled methods themselves: no Python frame of ours
        # between SQLAlchemy and the ring on a checkout or a checkin.
        self._do_get = ring.acquire  # type: ignore[method-assign]
        self._do_return_conn = ring.release  # type: ignore[method-assign,assignment]

    def _do_get(self) -> ConnectionPoolEntry:  # replaced per instance (see __init__)
        record: ConnectionPoolEntry = self._ring.acquire()
        return record

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:  # likewise
        self._ring.release(record)

    def recreate(self) -> FastPool:
        self.logger.info("Pool recreating")
        return self.__class__(
            self._creator,
            pool_size=self._pool_size,
            max_overflow=self._max_overflow,
            pre_ping=self._pre_ping,
            use_lifo=self._use_lifo,
            timeout=self._timeout,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            _dispatch=self.dispatch,
            dialect=self._dialect,
        )

    def dispose(self) -> None:
        """Close every idle connection (those checked out are left alone)."""
        ring = self._ring
        with ring.lock:
            taken = ring._take_idle(everything=True)
            records = [ring._discard(idx, _core.REASON_CLOSED) for idx, _ in taken]
        if self._use_lifo:  # in the order they would have been lent, as QueuePool
            records.reverse()
        for record in records:
            record.close()
        self.logger.info("Pool disposed. %s", self.status())

    def status(self) -> str:
        return (f"Pool size: {self.size()}  Connections in pool: {self.checkedin()} "
                f"Current Overflow: {self.overflow()} "
                f"Current Checked out connections: {self.checkedout()}")

    def size(self) -> int:
        return self._pool_size

    def timeout(self) -> float:
        return self._timeout

    def checkedin(self) -> int:
        return int(self._ring._sizes()[1])

    def overflow(self) -> int:
        if not self._pool_size:
            return 0
        return int(self._ring._sizes()[0]) + self._ring.opening - self._pool_size

    def checkedout(self) -> int:
        open_, idle, _, _ = self._ring._sizes()
        return int(open_) + self._ring.opening - int(idle)


class AsyncFastPool(FastPool):
    """FastPool for ``create_async_engine`` (in place of AsyncAdaptedQueuePool).

    >>> engine = create_async_engine(url, poolclass=AsyncFastPool, pool_size=4)

    A caller that must wait suspends on a future of its event loop (SQLAlchemy
    runs the pool in a greenlet of the loop); nothing is bound to a loop, so an
    engine made at import time works in whichever loop uses it.
    """

    _is_asyncio = True
    _dialect = _AsyncConnDialect()
    _waits = _GreenletWait
