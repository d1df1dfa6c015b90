"""psycopg_pool 3.3's pools on fastpool's core: switching is the import.

::

    from fastpool.compat.psycopg_pool import ConnectionPool   # was: from psycopg_pool import ...

    with ConnectionPool("dbname=app", min_size=4, max_size=10) as pool:
        with pool.connection() as conn:          # commit on success, roll back on error
            conn.execute("INSERT INTO t VALUES (1)")

``ConnectionPool``, ``NullConnectionPool``, ``AsyncConnectionPool`` and
``AsyncNullConnectionPool`` take psycopg_pool's constructor arguments with its
defaults, have its methods (``connection``, ``getconn``/``putconn``, ``open``,
``close``, ``wait``, ``resize``, ``check``, ``drain``, ``get_stats``/``pop_stats``,
the static ``check_connection``) and raise its exceptions: ``PoolTimeout``,
``PoolClosed`` and ``TooManyRequests`` here subclass psycopg_pool's own (when it
is installed; psycopg's ``OperationalError`` otherwise) *and* fastpool's
equivalents, so ``except psycopg_pool.PoolTimeout`` keeps working. Connections
are the ``connection_class``'s own objects, with psycopg's ``_pool`` contract: a
lent connection's ``_pool`` is its pool, so ``with conn`` does not close it and,
with ``close_returns=True``, ``conn.close()`` returns it.

Underneath is a ``fastpool.Pool`` (``fastpool.AsyncPool``): the compiled idle
ring, strict FIFO hand-off, and a return decided from libpq's local
transaction status, with no round trip for a clean connection. Option rules are
fastpool's (``fastpool.options``): a bad value is a ``ConfigError``, a
``ValueError`` as psycopg_pool's are.

Known differences (README, "Switching from psycopg_pool"): ``num_workers`` is
accepted and checked but fastpool has one worker (a thread, or a task), which
also opens a null pool's connections, one at a time; a connection idle longer
than fastpool's ``alive_bypass`` (0.5 s) is probed before it is lent; a request
fails at once with PoolTimeout when connecting fails in a way retrying cannot
fix; ``reconnect_failed`` is called every ``reconnect_timeout`` while connecting
keeps failing, and the pool keeps trying; ``close(timeout)`` also waits for
connections in use; the per-request INFO messages psycopg_pool logs on
``psycopg.pool`` are not logged (the pool's lifecycle, discarded connections and
connection errors are); options other than the sizes are checked when the pool
opens (for a pool made with ``open=False``, at ``open()``); ``pop_stats()`` also
resets the fastpool pool's own counters.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import threading
import time
import types
import warnings
import weakref
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psycopg
from psycopg.pq import TransactionStatus

from fastpool import errors as _fe
from fastpool.errors import ConfigError
from fastpool.options import MAX_POOL_SIZE, boolean, callable_or_none, integer
from fastpool.pool.async_facade import AsyncPool
from fastpool.pool.facade import Pool
from fastpool.steps import Steps, run, run_async

if TYPE_CHECKING:
    from psycopg_pool import PoolClosed as _OrigClosed
    from psycopg_pool import PoolTimeout as _OrigTimeout
    from psycopg_pool import TooManyRequests as _OrigTooMany
else:
    try:
        from psycopg_pool import PoolClosed as _OrigClosed
        from psycopg_pool import PoolTimeout as _OrigTimeout
        from psycopg_pool import TooManyRequests as _OrigTooMany
    except ImportError:  # psycopg_pool is not installed: psycopg's base, as its are
        _OrigClosed = _OrigTimeout = _OrigTooMany = psycopg.OperationalError

__all__ = [
    "AsyncConnectionPool",
    "AsyncNullConnectionPool",
    "ConnectionPool",
    "NullConnectionPool",
    "PoolClosed",
    "PoolTimeout",
    "TooManyRequests",
]

#: psycopg_pool's logger: applications configure this name.
logger = logging.getLogger("psycopg.pool")


# psycopg's class first: its Error.__init__ sets what its properties read, then
# hands the message on along the MRO (to fastpool's, and to TimeoutError's).
class PoolTimeout(_OrigTimeout, _fe.PoolTimeout):
    """No connection within the timeout (psycopg_pool's and fastpool's PoolTimeout)."""


class PoolClosed(_OrigClosed, _fe.PoolClosed):
    """The pool is closed, or not open yet (psycopg_pool's and fastpool's PoolClosed)."""


class TooManyRequests(_OrigTooMany, _fe.TooManyWaiting):
    """``max_waiting`` requests already wait (psycopg_pool's; fastpool's TooManyWaiting)."""


# fastpool fails a request at once when connecting fails in a way retrying
# cannot fix (ConnectError); psycopg_pool's callers expect PoolTimeout then.
_TRANSLATED: dict[type[BaseException], type[Exception]] = {
    _fe.PoolTimeout: PoolTimeout, _fe.PoolClosed: PoolClosed,
    _fe.TooManyWaiting: TooManyRequests, _fe.ConnectError: PoolTimeout}
_FP_ERRORS = (_fe.PoolTimeout, _fe.PoolClosed, _fe.TooManyWaiting, _fe.ConnectError)


def _translated(exc: BaseException) -> BaseException:
    """fastpool's exception as this module's class (psycopg_pool's), same message and cause."""
    cls = _TRANSLATED.get(type(exc))
    if cls is None:
        return exc  # already one of ours
    new = cls(str(exc))
    new.__cause__ = exc.__cause__
    new.__suppress_context__ = True
    return new


# Plain ints: libpq's status is an int, and comparing it with an IntEnum
# member costs more than the rest of a return.
_IDLE = int(TransactionStatus.IDLE)
_INTRANS = int(TransactionStatus.INTRANS)
_INERROR = int(TransactionStatus.INERROR)
_UNKNOWN = int(TransactionStatus.UNKNOWN)
_numbers = itertools.count(1)

CT = TypeVar("CT", bound="psycopg.Connection[Any]")
ACT = TypeVar("ACT", bound="psycopg.AsyncConnection[Any]")


class _NotOpen:
    """The pool before ``open()``: every request fails as psycopg_pool's does."""

    closed = True

    def __init__(self, name: str) -> None:
        self.name = name

    def _fail(self, *_args: Any) -> Any:
        raise PoolClosed(f"the pool {self.name!r} is not open yet")

    acquire = release = acquire_async = release_async = wait = _fail


class _Base:
    """What the four pools share: options, stats, the ``_pool`` checks."""

    _null = False
    _fp: Any
    #: The fastpool pool underneath (``Pool`` or ``AsyncPool``), and what runs
    #: this module's flows for it (``fastpool.steps.run`` or ``run_async``).
    _pool_class: Any = None
    _runner: Any = None

    def __init__(self, conninfo: Any, *, connection_class: Any, kwargs: Any,
                 min_size: int, max_size: int | None, configure: Any, check: Any,
                 reset: Any, name: str | None, close_returns: bool, timeout: float,
                 max_waiting: int, max_lifetime: float, max_idle: float,
                 reconnect_timeout: float, reconnect_failed: Any, num_workers: int) -> None:
        self.conninfo = conninfo
        self.kwargs = kwargs
        self.connection_class = connection_class
        self.name: str = name or f"psycopg-pool-{next(_numbers)}"
        self.close_returns = boolean("close_returns", close_returns)
        self.num_workers = integer("num_workers", num_workers, 1)
        self.timeout = timeout
        self.max_waiting = max_waiting
        self.max_lifetime = max_lifetime
        self.max_idle = max_idle
        self.reconnect_timeout = reconnect_timeout
        self._configure = callable_or_none("configure", configure)
        self._check = callable_or_none("check", check)
        self._reset = callable_or_none("reset", reset)
        self._reconnect_failed = callable_or_none("reconnect_failed", reconnect_failed)
        self._min_size, self._max_size = self._sizes_of(min_size, max_size)
        self._fp = _NotOpen(self.name)
        self._opened = False
        self._lock = threading.Lock()
        # Counted by this module (the core counts requests, waits and holds).
        self._conns_num = self._conns_ms = self._conns_errors = self._returns_bad = 0

    def _sizes_of(self, min_size: int, max_size: int | None) -> tuple[int, int]:
        """psycopg_pool's sizes as fastpool's (whose options module checks them)."""
        return min_size, min_size if max_size is None else max_size

    def _fp_options(self) -> dict[str, Any]:
        return {"min_size": self._min_size, "max_size": self._max_size,
                "timeout": self.timeout, "max_waiting": self.max_waiting,
                "max_lifetime": self.max_lifetime, "max_idle": self.max_idle,
                "reconnect_timeout": self.reconnect_timeout,
                "name": self.name}

    # ---- the psycopg_pool attributes -------------------------------------

    @property
    def min_size(self) -> int:
        return self._min_size

    @property
    def max_size(self) -> int:
        return self._max_size

    @property
    def closed(self) -> bool:
        """True before ``open()`` and after ``close()``."""
        return bool(self._fp.closed)

    def __repr__(self) -> str:
        return f"<{__name__}.{type(self).__name__} {self.name!r} at 0x{id(self):x}>"

    # ---- returns -----------------------------------------------------------

    def _take_back(self, conn: Any) -> bool:
        """A returned connection's checks and bookkeeping; True: the caller
        discards it (a null pool with no one waiting), else releases it."""
        if getattr(conn, "_pool", None) is not self:
            self._wrong_pool(conn)
        conn._pool = None
        status = conn.pgconn.transaction_status
        if status != _IDLE:
            if status == _UNKNOWN:
                self._returns_bad += 1
                logger.warning("discarding closed connection: %s", conn)
            elif status in (_INTRANS, _INERROR):
                logger.warning("rolling back returned connection: %s", conn)
        return self._null and not self._fp.closed and self._fp._sizes()[3] == 0

    def _wrong_pool(self, conn: Any) -> None:
        pool = getattr(conn, "_pool", None)
        where = (f"it comes from pool {pool.name!r}" if pool is not None
                 else "it doesn't come from any pool")
        raise ValueError(f"can't return connection to pool {self.name!r}, {where}: {conn}")

    def _discard(self, conn: Any, reason: str) -> None:
        """Close a lent connection and take it out of the pool (a failed
        check; a null pool's return with no one waiting)."""
        conn._pool = None  # its close must not come back here (close_returns)
        self._fp.discard(conn, reason)

    # ---- flows written once (fastpool.steps): run by a thread or awaited ------

    def _io(self, acquire: Callable[..., Any], putconn: Callable[..., Any],
            close: Callable[..., Any]) -> types.SimpleNamespace:
        """The operations of this module's flows (the thread pools' block, the
        asyncio pools' are coroutine functions, awaited by ``run_async``)."""
        return types.SimpleNamespace(acquire=acquire, putconn=putconn, close=close,
                                     check=self._check, wait=self._fp.wait)

    def _checked_steps(self, conn: Any, timeout: float | None) -> Steps[Any]:
        """Run the ``check`` callback on a lent connection; one failing it is
        discarded and another one tried, all within the caller's timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                yield ("check", conn)
                return conn
            except Exception as exc:
                logger.info("connection failed check: %s", exc)
                self._discard(conn, "broken")
            except BaseException:  # interrupted, cancelled: returned, not lost
                yield ("putconn", conn)
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PoolTimeout(f"no connection of pool {self.name!r} passed the check "
                                  "within the timeout")
            conn = yield ("acquire", remaining)
            conn._pool = self

    def _wait_steps(self, timeout: float) -> Steps[None]:
        """``wait()``: ``min_size`` connections open within ``timeout``, else the
        pool is closed and PoolTimeout raised."""
        logger.info("waiting for pool %r initialization", self.name)
        try:
            yield ("wait", timeout)
        except _FP_ERRORS as exc:
            if isinstance(exc, (_fe.PoolTimeout, _fe.ConnectError)):
                yield ("close",)
            raise _translated(exc) from exc.__cause__
        logger.info("pool %r is ready to use", self.name)

    # ---- opening -----------------------------------------------------------------

    def _open(self) -> None:
        """Make the fastpool pool (``_pool_class``) once; a closed pool stays closed."""
        with self._lock:
            if self._opened:
                if self._fp.closed:
                    raise PoolClosed("pool has already been opened/closed and cannot be reused")
                return
            options = self._fp_options()
            # Weak references: the pool's callbacks must not keep this object alive.
            ref = weakref.ref(self)
            for what, fn in (("configure", self._configure), ("reset", self._reset)):
                if fn is not None:
                    options[what] = functools.partial(_run_hook, ref, fn, what)
            if self._reconnect_failed is not None:
                options["reconnect_failed"] = lambda _fp: ref()._failed()  # type: ignore[union-attr]
            self._fp = self._pool_class(connect=lambda: ref()._connect_one(), **options)  # type: ignore[union-attr]
            self._opened = True
        logger.info("pool %r opened", self.name)

    def _connect_one(self) -> Any:
        raise NotImplementedError

    def _hook_steps(self, fn: Callable[[Any], object], conn: Any, what: str) -> Steps[None]:
        """The user's ``configure`` or ``reset`` callback, with the connection's
        ``_pool`` set meanwhile as psycopg_pool does (``with conn`` in it does
        not close it); a connection it leaves in a transaction is discarded."""
        conn._pool = self
        try:
            yield ("call", fn, conn)
        finally:
            conn._pool = None
        status = conn.pgconn.transaction_status
        if status != _IDLE:
            raise psycopg.ProgrammingError(
                f"connection left in status {TransactionStatus(status).name} by {what} "
                f"function {fn}: discarded")

    def _failed(self) -> None:
        """fastpool's reconnect_failed: the user's, with this pool (awaited as a task if async)."""
        assert self._reconnect_failed is not None
        outcome = self._reconnect_failed(self)
        if inspect.iscoroutine(outcome):
            self._fp._spawn(outcome)

    # ---- connecting --------------------------------------------------------

    def _connected(self, conn: Any, t0: float) -> Any:
        self._conns_num += 1
        self._conns_ms += int((time.monotonic() - t0) * 1000)
        conn._pool = None  # in the pool, not lent (and no ResourceWarning at exit)
        return conn

    def _connect_failed(self, exc: BaseException) -> None:
        self._conns_num += 1
        self._conns_errors += 1
        logger.warning("error connecting in %r: %s", self.name, exc)

    # ---- stats ---------------------------------------------------------------

    def get_stats(self) -> dict[str, int]:
        """psycopg_pool's stats: the pool's measures, and the counters that are not zero."""
        return self._stats(False)

    def pop_stats(self) -> dict[str, int]:
        """``get_stats()``, then the counters start again from zero."""
        return self._stats(True)

    def _stats(self, reset: bool) -> dict[str, int]:
        fp = self._fp
        counters: dict[str, int] = {}
        if isinstance(fp, _NotOpen):
            open_ = idle = waiting = 0
        else:
            raw = fp._snapshot(reset)
            c = raw["counters"]
            open_, idle, waiting = raw["open"], raw["idle"], raw["waiting"]
            errors = c["timeouts"] + c["rejected"]
            counters = {
                "requests_num": c["acquisitions"] + errors,
                "requests_queued": c["waits"],
                "requests_wait_ms": raw["wait"]["total"] // 1_000_000,
                "requests_errors": errors,
                "usage_ms": raw["hold"]["total"] // 1_000_000,
                "returns_bad": self._returns_bad,
                "connections_lost": max(raw["closed"]["broken"] - self._returns_bad, 0),
            }
        counters.update(connections_num=self._conns_num, connections_ms=self._conns_ms,
                        connections_errors=self._conns_errors)
        if reset:
            self._conns_num = self._conns_ms = self._conns_errors = self._returns_bad = 0
        stats = {k: v for k, v in counters.items() if v}
        stats.update(pool_min=self._min_size, pool_max=self._max_size, pool_size=open_,
                     pool_available=idle, requests_waiting=waiting)
        return stats


#: The I/O of the callback flows: call it (``run_async`` awaits a coroutine).
_CALLS = types.SimpleNamespace(call=lambda fn, *args: fn(*args))


def _run_hook(ref: weakref.ReferenceType[_Base], fn: Callable[[Any], object], what: str,
              conn: Any) -> Any:
    """fastpool's configure/reset hook: the pool's ``_hook_steps``, run or
    (asyncio) returned as a coroutine for fastpool to await."""
    pool = ref()
    assert pool is not None
    return pool._runner(pool._hook_steps(fn, conn, what), _CALLS)


def _resolve(value: Any, default: Any) -> Any:
    """A conninfo or kwargs argument: the value, or what its callable returns."""
    if callable(value):
        return value()
    return value or default


class _Lend(Generic[CT]):
    """``with pool.connection() as conn``: psycopg's ``with conn`` (commit on
    success; on an error fastpool's return rolls back), then ``putconn``."""

    __slots__ = ("conn", "pool", "timeout")

    def __init__(self, pool: ConnectionPool[CT], timeout: float | None) -> None:
        self.pool = pool
        self.timeout = timeout
        self.conn: CT | None = None

    def __enter__(self) -> CT:
        self.conn = conn = self.pool.getconn(self.timeout)
        return conn

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        conn, self.conn = self.conn, None
        assert conn is not None
        pool = self.pool
        idle = conn.pgconn.transaction_status == _IDLE
        if idle and conn._pool is pool and not pool._null:  # type: ignore[comparison-overlap]
            # The common case, inline: nothing to commit, nothing to log or count.
            conn._pool = None
            pool._fp.release(conn)
            return
        try:
            if et is None and conn.pgconn.transaction_status in (_INTRANS, _INERROR):
                conn.commit()
        finally:
            self.pool.putconn(conn)


class ConnectionPool(_Base, Generic[CT]):
    """psycopg_pool's ``ConnectionPool`` on fastpool's core (see the module)."""

    _fp: Pool
    _pool_class = Pool
    _runner = staticmethod(run)

    def __init__(
        self,
        conninfo: str | Callable[[], str] = "",
        *,
        connection_class: type[CT] = psycopg.Connection,  # type: ignore[assignment]
        kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        min_size: int = 4,
        max_size: int | None = None,
        open: bool | None = None,
        configure: Callable[[CT], object] | None = None,
        check: Callable[[CT], object] | None = None,
        reset: Callable[[CT], object] | None = None,
        name: str | None = None,
        close_returns: bool = False,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 60 * 60.0,
        max_idle: float = 10 * 60.0,
        reconnect_timeout: float = 5 * 60.0,
        reconnect_failed: Callable[[ConnectionPool[CT]], object] | None = None,
        num_workers: int = 3,
    ) -> None:
        super().__init__(
            conninfo, connection_class=connection_class, kwargs=kwargs, min_size=min_size,
            max_size=max_size, configure=configure, check=check, reset=reset, name=name,
            close_returns=close_returns, timeout=timeout, max_waiting=max_waiting,
            max_lifetime=max_lifetime, max_idle=max_idle, reconnect_timeout=reconnect_timeout,
            reconnect_failed=reconnect_failed, num_workers=num_workers)
        if open is None or boolean("open", open):
            self._open()
            if open is None:  # psycopg_pool warns once, at the first request
                self.getconn = self._implicit_getconn  # type: ignore[method-assign]

    # ---- lending ---------------------------------------------------------------

    def connection(self, timeout: float | None = None) -> _Lend[CT]:
        """A connection for a ``with`` block: committed at its end, rolled back
        on an error, then returned (a broken one is replaced)."""
        return _Lend(self, timeout)

    def getconn(self, timeout: float | None = None) -> CT:
        """A connection within ``timeout`` (default: the pool's) seconds, or
        PoolTimeout; give it back with ``putconn``."""
        try:
            conn: CT = self._fp.acquire(timeout)
            conn._pool = self  # type: ignore[assignment]
            if self._check is not None:
                conn = self._checked(conn, timeout)
        except _FP_ERRORS as exc:
            raise _translated(exc) from exc.__cause__
        return conn

    def _implicit_getconn(self, timeout: float | None = None) -> CT:
        self.__dict__.pop("getconn", None)
        warnings.warn(
            f"the default for the {type(self).__name__} 'open' parameter will become 'False' "
            f"in a future release. Please use open={{True|False}} explicitly, or use the pool "
            f"as context manager using: `with {type(self).__name__}(...) as pool: ...`",
            DeprecationWarning, stacklevel=2)
        return self.getconn(timeout)

    def _checked(self, conn: CT, timeout: float | None) -> CT:
        return run(self._checked_steps(conn, timeout), self._ops())  # type: ignore[no-any-return]

    def _ops(self) -> types.SimpleNamespace:
        return self._io(self._fp.acquire, self.putconn, self.close)

    def putconn(self, conn: CT) -> None:
        """Give back a connection from ``getconn``; ValueError if it is another pool's."""
        if self._take_back(conn):
            self._discard(conn, "idle")
        else:
            self._fp.release(conn)

    # ---- lifecycle ---------------------------------------------------------------

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Start connecting and serving; with ``wait``, block until ``min_size``
        connections are open (see ``wait``). A closed pool cannot be reopened."""
        self._open()
        if wait:
            self.wait(timeout)

    def _connect_one(self) -> CT:
        t0 = time.monotonic()
        try:
            conn = self.connection_class.connect(
                _resolve(self.conninfo, ""), **_resolve(self.kwargs, {}))
        except Exception as exc:
            self._connect_failed(exc)
            raise
        return self._connected(conn, t0)  # type: ignore[no-any-return]

    def wait(self, timeout: float = 30.0) -> None:
        """Block until ``min_size`` connections are open; if they are not within
        ``timeout`` seconds, close the pool and raise PoolTimeout."""
        run(self._wait_steps(timeout), self._ops())

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool: waiting and later requests get PoolClosed, idle
        connections close now, lent ones when returned (waited for up to
        ``timeout`` seconds)."""
        if self._fp.closed:
            return
        self._fp.close(timeout)
        logger.debug("pool %r closed", self.name)

    def __enter__(self) -> ConnectionPool[CT]:
        self.__dict__.pop("getconn", None)
        self.open()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- maintenance ---------------------------------------------------------------

    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change the pool's sizes while it runs."""
        min_size, max_size = self._sizes_of(min_size, max_size)
        logger.info("resizing %r to min_size=%s max_size=%s", self.name, min_size, max_size)
        if not isinstance(self._fp, _NotOpen):
            self._fp.resize(min_size, max_size)
        self._min_size, self._max_size = min_size, max_size

    def check(self) -> None:
        """Probe every idle connection now; broken ones are replaced."""
        if not isinstance(self._fp, _NotOpen):
            n = self._fp.check()
            if n:
                logger.warning("discarded %d broken connection(s) of pool %r", n, self.name)

    def drain(self) -> None:
        """Replace every connection: idle ones now, lent ones when returned."""
        if not isinstance(self._fp, _NotOpen):
            self._fp.drain()

    @staticmethod
    def check_connection(conn: CT) -> None:
        """Return quietly if ``conn`` answers an empty query, else raise (usable
        as the ``check`` callback)."""
        if conn.autocommit:  # the empty query opens no transaction
            conn.execute("")
            return
        conn.autocommit = True
        try:
            conn.execute("")
        finally:
            with contextlib.suppress(Exception):  # a broken connection raised already
                conn.autocommit = False


class NullConnectionPool(ConnectionPool[CT]):
    """psycopg_pool's ``NullConnectionPool``: no idle connection is kept; a
    connection returned goes to a waiting request (after its reset) or is
    closed. ``max_size`` None or 0: no limit."""

    _null = True

    def __init__(self, conninfo: str | Callable[[], str] = "", *, min_size: int = 0,
                 **options: Any) -> None:
        super().__init__(conninfo, min_size=min_size, **options)

    def _sizes_of(self, min_size: int, max_size: int | None) -> tuple[int, int]:
        if min_size != 0:
            raise ConfigError(f"null pools must have min_size = 0, got {min_size!r}")
        return 0, (max_size or MAX_POOL_SIZE)

    def check(self) -> None:
        """Nothing to check: a null pool keeps no idle connection."""


# ---- asyncio -------------------------------------------------------------------------


async def _aresolve(value: Any, default: Any) -> Any:
    """A conninfo or kwargs argument of an async pool: a value, or a (async) callable's."""
    if callable(value):
        value = value()
        if isinstance(value, Awaitable):
            value = await value
        return value
    return value or default


class _AsyncLend(Generic[ACT]):
    """``async with pool.connection() as conn`` (see ``_Lend``)."""

    __slots__ = ("conn", "pool", "timeout")

    def __init__(self, pool: AsyncConnectionPool[ACT], timeout: float | None) -> None:
        self.pool = pool
        self.timeout = timeout
        self.conn: ACT | None = None

    async def __aenter__(self) -> ACT:
        self.conn = conn = await self.pool.getconn(self.timeout)
        return conn

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        conn, self.conn = self.conn, None
        assert conn is not None
        pool = self.pool
        idle = conn.pgconn.transaction_status == _IDLE
        if idle and conn._pool is pool and not pool._null:  # type: ignore[comparison-overlap]
            conn._pool = None  # see _Lend.__exit__
            await pool._fp.release_async(conn)
            return
        try:
            if et is None and conn.pgconn.transaction_status in (_INTRANS, _INERROR):
                await conn.commit()
        finally:
            await pool.putconn(conn)


class AsyncConnectionPool(_Base, Generic[ACT]):
    """psycopg_pool's ``AsyncConnectionPool`` on fastpool's asyncio pool.

    As psycopg_pool 3.3 advises, make it with ``open=False`` and ``await
    pool.open()``, or ``async with AsyncConnectionPool(...) as pool``; callbacks
    (``configure``, ``check``, ``reset``, ``reconnect_failed``) are coroutines.
    """

    _fp: AsyncPool
    _pool_class = AsyncPool
    _runner = staticmethod(run_async)

    def __init__(
        self,
        conninfo: str | Callable[[], str | Awaitable[str]] = "",
        *,
        connection_class: type[ACT] = psycopg.AsyncConnection,  # type: ignore[assignment]
        kwargs: Mapping[str, Any] | Callable[[], Any] | None = None,
        min_size: int = 4,
        max_size: int | None = None,
        open: bool | None = None,
        configure: Callable[[ACT], Awaitable[object]] | None = None,
        check: Callable[[ACT], Awaitable[object]] | None = None,
        reset: Callable[[ACT], Awaitable[object]] | None = None,
        name: str | None = None,
        close_returns: bool = False,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 60 * 60.0,
        max_idle: float = 10 * 60.0,
        reconnect_timeout: float = 5 * 60.0,
        reconnect_failed: Callable[[AsyncConnectionPool[ACT]], Awaitable[object]] | None = None,
        num_workers: int = 3,
    ) -> None:
        super().__init__(
            conninfo, connection_class=connection_class, kwargs=kwargs, min_size=min_size,
            max_size=max_size, configure=configure, check=check, reset=reset, name=name,
            close_returns=close_returns, timeout=timeout, max_waiting=max_waiting,
            max_lifetime=max_lifetime, max_idle=max_idle, reconnect_timeout=reconnect_timeout,
            reconnect_failed=reconnect_failed, num_workers=num_workers)
        if open is None or boolean("open", open):
            self._open()
            if open:
                self._warn_open()
            else:  # implicit: psycopg_pool warns at the first request
                self.getconn = self._implicit_getconn  # type: ignore[method-assign]

    def _warn_open(self) -> None:
        warnings.warn(
            f"opening the async pool {type(self).__name__} in the constructor is deprecated "
            "and will not be supported anymore in a future release. Please use `await "
            f"pool.open()`, or use the pool as context manager using: `async with "
            f"{type(self).__name__}(...) as pool: `...", RuntimeWarning, stacklevel=3)

    # ---- lending ---------------------------------------------------------------

    def connection(self, timeout: float | None = None) -> _AsyncLend[ACT]:
        """A connection for an ``async with`` block (see ``ConnectionPool.connection``)."""
        return _AsyncLend(self, timeout)

    async def getconn(self, timeout: float | None = None) -> ACT:
        """``await pool.getconn()``: see ``ConnectionPool.getconn``."""
        try:
            conn: ACT = await self._fp.acquire_async(timeout)
            conn._pool = self  # type: ignore[assignment]
            if self._check is not None:
                conn = await self._checked(conn, timeout)
        except _FP_ERRORS as exc:
            raise _translated(exc) from exc.__cause__
        return conn

    async def _implicit_getconn(self, timeout: float | None = None) -> ACT:
        self.__dict__.pop("getconn", None)
        self._warn_open()
        return await self.getconn(timeout)

    async def _checked(self, conn: ACT, timeout: float | None) -> ACT:
        return await run_async(self._checked_steps(conn, timeout), self._ops())

    def _ops(self) -> types.SimpleNamespace:
        return self._io(self._fp.acquire_async, self.putconn, self.close)

    async def putconn(self, conn: ACT) -> None:
        """``await pool.putconn(conn)``: see ``ConnectionPool.putconn``."""
        if self._take_back(conn):
            self._discard(conn, "idle")
        else:
            await self._fp.release_async(conn)

    # ---- lifecycle ---------------------------------------------------------------

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Start connecting and serving (in the running event loop); see
        ``ConnectionPool.open``."""
        self._open()
        if wait:
            await self.wait(timeout)

    async def _connect_one(self) -> ACT:
        t0 = time.monotonic()
        try:
            conn = await self.connection_class.connect(
                await _aresolve(self.conninfo, ""), **(await _aresolve(self.kwargs, {})))
        except Exception as exc:
            self._connect_failed(exc)
            raise
        return self._connected(conn, t0)  # type: ignore[no-any-return]

    async def wait(self, timeout: float = 30.0) -> None:
        """See ``ConnectionPool.wait``."""
        await run_async(self._wait_steps(timeout), self._ops())

    async def close(self, timeout: float = 5.0) -> None:
        """See ``ConnectionPool.close``."""
        if self._fp.closed:
            return
        await self._fp.close(timeout)
        logger.debug("pool %r closed", self.name)

    async def __aenter__(self) -> AsyncConnectionPool[ACT]:
        self.__dict__.pop("getconn", None)
        await self.open()
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # ---- maintenance ---------------------------------------------------------------

    async def resize(self, min_size: int, max_size: int | None = None) -> None:
        """See ``ConnectionPool.resize``."""
        min_size, max_size = self._sizes_of(min_size, max_size)
        logger.info("resizing %r to min_size=%s max_size=%s", self.name, min_size, max_size)
        if not isinstance(self._fp, _NotOpen):
            await self._fp.resize(min_size, max_size)
        self._min_size, self._max_size = min_size, max_size

    async def check(self) -> None:
        """See ``ConnectionPool.check``."""
        if not isinstance(self._fp, _NotOpen):
            n = await self._fp.check()
            if n:
                logger.warning("discarded %d broken connection(s) of pool %r", n, self.name)

    async def drain(self) -> None:
        """See ``ConnectionPool.drain``."""
        if not isinstance(self._fp, _NotOpen):
            await self._fp.drain()

    @staticmethod
    async def check_connection(conn: ACT) -> None:
        """See ``ConnectionPool.check_connection``."""
        if conn.autocommit:
            await conn.execute("")
            return
        await conn.set_autocommit(True)
        try:
            await conn.execute("")
        finally:
            with contextlib.suppress(Exception):
                await conn.set_autocommit(False)


class AsyncNullConnectionPool(AsyncConnectionPool[ACT]):
    """psycopg_pool's ``AsyncNullConnectionPool`` (see ``NullConnectionPool``)."""

    _null = True

    def __init__(self, conninfo: str | Callable[[], Any] = "", *, min_size: int = 0,
                 **options: Any) -> None:
        super().__init__(conninfo, min_size=min_size, **options)

    _sizes_of = NullConnectionPool._sizes_of

    async def check(self) -> None:
        """Nothing to check: a null pool keeps no idle connection."""
