"""The pool: sizing, lifetime, health and hand-off policy over the compiled core.

The core (``fastpool._core``) lends and takes back connections in compiled code
as long as nothing needs deciding: an idle connection of the current
generation, used recently, within its lifetime, whose driver reports no open
transaction. Everything else comes here: waiting with a deadline, probing a
connection that sat idle, replacing broken or expired ones, rolling back what
a borrower left open, growing and shrinking, leak reports, fork handling.

A background worker thread per pool opens connections (one at a time, with
exponential backoff and jitter on failure) and enforces lifetime and idle
limits on a timer. A caller that has to wait queues in FIFO order and takes
whichever connection frees first, a returned one or a new one: it never blocks
on a slow connect.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fastpool import _core
from fastpool.backoff import Backoff, ExponentialBackoff, delay_function
from fastpool.drivers import CallableDriver, Driver
from fastpool.drivers.base import DriverBase
from fastpool.drivers.client import Client
from fastpool.errors import (
    ConfigError,
    ConnectError,
    ConnectionAlreadyReleased,
    ErrorKind,
    ForeignConnection,
    PoolClosed,
    PoolTimeout,
    TooManyWaiting,
)
from fastpool.options import (
    MAX_POOL_SIZE,
    boolean,
    callable_or_none,
    choice,
    integer,
    mapping_or_none,
    optional_seconds,
    seconds,
)
from fastpool.pool import fork as _fork
from fastpool.pool import guard as _guard
from fastpool.pool import leaks
from fastpool.pool import registry as _registry
from fastpool.pool.events import EVENTS, HookedContext, Hooks
from fastpool.pool.stats import PoolStats
from fastpool.steps import Steps, run
from fastpool.transaction import outcome_unknown

__all__ = ["PoolPolicy"]

logger = logging.getLogger("fastpool")

if TYPE_CHECKING:
    # The policy is a mixin: ``Pool`` puts it before a core (the compiled one
    # or its pure-Python twin), whose methods it calls and whose declared
    # callbacks (_acquire_slow, _release_slow, _release_unknown,
    # _capture_holder; see _core.pyi) it provides.
    from fastpool._core import PoolCore as _Core
else:
    _Core = object

_NEVER_NS = 1 << 62
_pool_numbers = iter(range(1, 1 << 62))


class _Default(float):
    """A default number that an explicit argument of the same value is not."""


#: ``leak_threshold``'s default (seconds): no normal request holds a connection
#: for five minutes. Reaching it logs a warning; unlike an explicit
#: ``leak_threshold``, the default does not turn on ``track_holders``.
DEFAULT_LEAK_THRESHOLD: float = _Default(300.0)


class _Signal:
    """What the worker thread shares with its pool without keeping it alive."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.kicked = False
        self.stopping = False


class ThreadIO:
    """The sync pool's I/O for its flows (``fastpool.steps``): blocking calls
    on the calling thread (a borrower's, or the worker's). Holds the driver,
    not the pool, so an abandoned pool is still freed by reference counting."""

    __slots__ = ("driver",)

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    def token(self) -> tuple[Callable[[], object], Any]:
        """A waiter's wake-up and what ``wait`` waits on: a locked lock."""
        lock = threading.Lock()
        lock.acquire()
        return lock.release, lock

    def wait(self, lock: Any, timeout: float) -> bool:
        return bool(lock.acquire(timeout=timeout))

    def probe(self, conn: Any, timeout: float) -> None:
        self.driver.probe(conn, timeout)

    def commit(self, conn: Any) -> None:
        self.driver.commit(conn)

    def reset(self, conn: Any) -> bool:
        return self.driver.reset(conn)

    def connect(self) -> Any:
        return self.driver.connect()

    def call(self, fn: Callable[..., object], *args: Any) -> object:
        return fn(*args)


def _worker_main(ref: weakref.ReferenceType[PoolPolicy], signal: _Signal) -> None:
    while True:
        pool = ref()
        if pool is None or signal.stopping:
            return
        try:
            delay = pool._maintain()
        except Exception:
            logger.exception("fastpool: pool maintenance failed; retrying")
            delay = 1.0
        del pool  # the worker must not keep an abandoned pool alive
        with signal.cond:
            if not signal.kicked and not signal.stopping:
                signal.cond.wait(delay)
            signal.kicked = False


class PoolPolicy(_Core):
    """The Python policy of a pool: sizing, lifetime, health and hand-off.

    Combined with a core class (and the features) to make ``Pool``; kept
    apart from it so that the same policy runs over the compiled core and
    over its pure-Python twin.
    """

    #: Its connections block (``fastpool.AsyncPool``'s are asyncio's).
    is_async = False

    #: Reconnect backoff: the first retry waits about 0.1 s, each next one
    #: twice as long up to 10 s, less up to 10% at random. A class attribute,
    #: so that tests and users can shorten it (any ExponentialBackoff).
    RECONNECT_BACKOFF: Backoff = ExponentialBackoff(base=0.1, cap=10.0, jitter=0.1)
    #: Max lifetime is shortened by up to this fraction, at random per
    #: connection, so that connections opened together do not expire together.
    LIFETIME_JITTER = 0.1
    #: Upper bound of the maintenance timer (lifetime, idle and leak checks).
    MAINTENANCE_INTERVAL = 1.0
    #: Longest a liveness probe may take (and never past the caller's deadline).
    PROBE_TIMEOUT = 5.0
    #: A connection lent this long (seconds) is checked by the worker for a
    #: borrower that dropped it without a release; such a connection is taken
    #: back (see ``_reclaim_steps``). None turns reclaiming off.
    RECLAIM_AFTER: float | None = 1.0
    #: Longest the return of a reclaimed connection (its rollback, the user's
    #: reset) may keep the worker: past it the connection's socket is shut
    #: down (``leaks.interrupt``), the rollback fails and the connection is
    #: discarded. A server that stopped answering must not stall the worker.
    RESET_TIMEOUT = 5.0

    def __init__(
        self,
        connect: Callable[[], Any] | None = None,
        *,
        driver: Driver | None = None,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float | None = 3600.0,
        max_idle: float | None = 600.0,
        alive_bypass: float = 0.5,
        reuse: str = "lifo",
        configure: Callable[[Any], object] | None = None,
        reset: Callable[[Any], object] | None = None,
        reconnect_timeout: float = 300.0,
        reconnect_failed: Callable[[Any], object] | None = None,
        leak_threshold: float | None = DEFAULT_LEAK_THRESHOLD,
        track_holders: bool = False,
        hooks: Mapping[str, Callable[..., object]] | None = None,
        name: str | None = None,
        guard: bool = False,
    ) -> None:
        super().__init__()
        #: Borrowers get a proxy that refuses use after its release (see
        #: ``fastpool.pool.guard``): the pool becomes an instance of its
        #: class's guarded subclass, whose acquire/release/connection wrap.
        self.guard = boolean("guard", guard)
        if self.guard and not getattr(type(self), "guarded", False):
            self.__class__ = _guard.guarded(type(self))
        if (connect is None) == (driver is None):
            raise ConfigError("give exactly one of connect (a callable) or driver")
        if driver is None:
            driver = CallableDriver(connect)  # type: ignore[arg-type]
        elif not isinstance(driver, DriverBase):
            raise ConfigError(f"driver must be a fastpool Driver, got {driver!r}")
        self._driver = driver
        self._io: Any = self._make_io(driver)
        self.min_size = integer("min_size", min_size, 0, maximum=MAX_POOL_SIZE)
        self.max_size = integer("max_size", max_size, 1, maximum=MAX_POOL_SIZE)
        if self.min_size > self.max_size:
            raise ConfigError(f"min_size ({min_size}) must not exceed max_size ({max_size})")
        self.timeout = seconds("timeout", timeout)
        self.max_waiting = integer("max_waiting", max_waiting, 0)
        self.max_lifetime = optional_seconds("max_lifetime", max_lifetime)
        self.max_idle = optional_seconds("max_idle", max_idle)
        self.alive_bypass = seconds("alive_bypass", alive_bypass)
        self.reuse = choice("reuse", reuse, ("lifo", "fifo"))
        self._configure = callable_or_none("configure", configure)
        self._reset = callable_or_none("reset", reset)
        self.reconnect_timeout = seconds("reconnect_timeout", reconnect_timeout)
        self._reconnect_failed = callable_or_none("reconnect_failed", reconnect_failed)
        explicit_leaks = type(leak_threshold) is not _Default
        self.leak_threshold = optional_seconds("leak_threshold", leak_threshold)
        self.track_holders = (boolean("track_holders", track_holders)
                              or (explicit_leaks and self.leak_threshold is not None))
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"name must be a string, got {name!r}")
        self.name = name or f"pool-{next(_pool_numbers)}"
        self._hooks = Hooks(self.name)

        self._failures = 0
        self._failing_since = 0.0
        self._connect_errors = 0
        self._reclaimed = 0
        # Waiters between a hand-off and taking the connection (see _reclaim_steps).
        self._handoffs: set[Any] = set()
        # The lends (slot, lend time) a reclaim round is returning: another
        # round at once (close()'s beside a worker not joined yet) skips them.
        self._reclaiming: set[tuple[int, int]] = set()
        # Lent slots whose deep check found a holder: slot -> (lend, next deep check
        # on the core's clock, checks so far, the reference count then); see
        # _reclaim_steps.
        self._deep_checks: dict[int, tuple[int, int, int, int]] = {}
        self._last_connect_error: BaseException | None = None
        self._fatal_error: ConnectError | None = None
        self._ever_connected = False
        self._retry_at = 0.0
        self._read_only_drained_at = -1.0  # the last drain for a 25006 (see classify)
        self._closing = False
        self._lock = threading.Lock()
        self._apply_policy()
        for event, fn in mapping_or_none(
                "hooks", hooks, f"event name ({', '.join(EVENTS)}) to callable").items():
            self.on(event, fn)
        _fork.register(self)
        _registry.add(self)
        self._start_worker()

    # ---- configuration --------------------------------------------------

    def _make_io(self, driver: Driver) -> Any:
        """What performs the I/O of this pool's flows (see ``fastpool.steps``)."""
        return ThreadIO(driver)

    def _apply_policy(self) -> None:
        d = self._driver
        self._status_spec = (d.status_attr, d.idle_status)
        # A driver's reset mode (asyncpg's ``reset=`` option): "rollback"
        # decides from the local status; "discard" closes every returned
        # connection; "none" trusts the borrower (the status always reads idle).
        self._reset_mode = getattr(d, "reset_mode", "rollback")
        self._trusted = types.SimpleNamespace(**{d.status_attr: d.idle_status}) \
            if self._reset_mode == "none" and d.status_attr else None
        self._set_policy(
            lifo=self.reuse == "lifo",
            # 0 means "always probe": no idle time is <= -1 ns.
            bypass_ns=int(self.alive_bypass * 1e9) if self.alive_bypass else -1,
            max_open=self.max_size,
            status_attr=d.status_attr,
            idle_status=d.idle_status,
            always_slow_release=self._reset is not None or self._reset_mode == "discard",
            track_holders=self.track_holders,
        )
        limits = [self.MAINTENANCE_INTERVAL]
        if self.max_idle is not None:
            limits.append(self.max_idle / 2)
        if self.max_lifetime is not None:
            limits.append(self.max_lifetime / 4)
        if self.leak_threshold is not None:
            limits.append(self.leak_threshold / 2)
        self._tick = max(0.005, min(limits))

    def _start_worker(self) -> None:
        self._signal = _Signal()
        self._worker = threading.Thread(
            target=_worker_main, args=(weakref.ref(self), self._signal),
            name=f"fastpool-{self.name}", daemon=True)
        self._worker.start()

    def _kick(self) -> None:
        """Wake the worker: a caller is waiting or a connection went away."""
        with self._signal.cond:
            self._signal.kicked = True
            self._signal.cond.notify_all()

    def _notify(self) -> None:
        """Wake whoever waits for the pool's state to change (``wait``, ``close``)."""
        with self._signal.cond:
            self._signal.cond.notify_all()

    # ---- acquire, slow path ---------------------------------------------

    def _acquire_slow(self, timeout: float | None, idx: int) -> Any:
        """Called by the core when its fast path could not lend a connection.

        ``idx`` is a slot the core popped but could not vouch for (it needs a
        probe, expired, or belongs to an older generation), or -1.
        """
        return run(self._acquire_steps(timeout, idx), self._io)

    def _acquire_steps(self, timeout: float | None, idx: int) -> Steps[Any]:
        """The slow path of acquire, for threads and asyncio alike (see
        ``fastpool.steps``): check the popped slot, else queue and wait.
        Its rules are the plain methods it calls (``_acquire_limits``,
        ``_enqueue``, ``_after_wait``, ``_abandon_wait``), which the asyncio
        core's direct wait calls too (``AsyncPolicy._acquire_slow``)."""
        if self._pid != os.getpid():
            _fork._orphans.extend(self._reinit_after_fork(os.getpid()))
            idx = -1
        start = time.monotonic_ns()
        if idx >= 0:  # the core only passes a slot when the timeout was valid
            t = self.timeout if timeout is None else float(timeout)
            conn = yield from self._check_out_steps(idx, start, start + int(t * 1e9))
            if conn is not None:
                return conn
        deadline, t = self._acquire_limits(timeout, start)
        while True:
            queued = self._enqueue(start, deadline, t)
            if type(queued) is int:  # a slot was idle after all: check it out
                conn = yield from self._check_out_steps(queued, start, deadline)
                if conn is not None:
                    return conn
                continue
            try:
                woken = yield ("wait", queued.token,
                               max(deadline - time.monotonic_ns(), 0) / 1e9)
                return self._after_wait(queued, woken)
            except BaseException:
                # Interrupted, cancelled, or the wait's own error (then this
                # finds nothing left to undo): never leave a connection handed
                # over and not taken.
                self._abandon_wait(queued)
                raise

    def _acquire_limits(self, timeout: float | None, start: int) -> tuple[int, float]:
        """The caller's deadline (monotonic ns) and timeout (s); a closed pool
        or a bad timeout raises."""
        if self._is_closed:
            raise PoolClosed(f"pool {self.name!r} is closed")
        t = self.timeout if timeout is None else seconds("timeout", timeout)
        return start + int(t * 1e9), t

    def _enqueue(self, start: int, deadline: int, t: float) -> Any:
        """Queue the caller (FIFO) for a hand-off: its waiter (``token`` to wait
        on, ``limits`` its deadline and timeout), or a slot popped after all."""
        if time.monotonic_ns() > deadline and self._sizes()[1] == 0:
            # Probing broken connections used up the caller's time.
            self._count(_core.C_TIMEOUTS)
            self._hooks.emit("timeout", (time.monotonic_ns() - start) / 1e9)
            raise self._timeout_error(t)
        wakeup, token = self._io.token()  # no I/O: a lock, or a future of the loop
        waiter = self._new_waiter(wakeup)
        waiter.token = token
        waiter.limits = (deadline, t)
        if self.track_holders:  # recorded by the core at hand-off, with no gap
            waiter.holder = self._capture_holder()
        self._handoffs.add(waiter)
        try:
            idx = self._pop_or_wait(waiter, self.max_waiting)
            if idx != _core.ENQUEUED:
                self._handoffs.discard(waiter)
                if idx >= 0:
                    return idx
                if idx == _core.POOL_CLOSED:
                    raise PoolClosed(f"pool {self.name!r} is closed")
                raise TooManyWaiting(
                    f"pool {self.name!r}: {self.max_waiting} callers are already waiting "
                    f"(max_waiting={self.max_waiting}); {self._state_text()}")
            if self._fatal_error is not None and self._sizes()[0] == 0 \
                    and time.monotonic() < self._retry_at:
                # Connecting fails in a way retrying will not fix, and nothing
                # is open to be returned: fail now rather than at the deadline.
                raise self._fatal_copy()
            if self._sizes()[0] < self.max_size:
                self._kick()  # the pool may grow; at max size only a release helps
        except BaseException:
            self._abandon_wait(waiter)
            raise
        return waiter

    def _after_wait(self, waiter: Any, woken: bool) -> Any:
        """The end of a wait: the connection handed over, or the error. Its
        callers call ``_abandon_wait`` if it raises (or is interrupted)."""
        try:
            if not woken:
                deadline, t = waiter.limits
                state = self._state_text()  # as at the deadline, this caller included
                if self._cancel_wait(waiter) == _core.ENQUEUED:
                    self._count(_core.C_TIMEOUTS)
                    self._hooks.emit("timeout", t - (deadline - time.monotonic_ns()) / 1e9)
                    raise self._timeout_error(t, state)
            outcome = waiter.state_name
            if outcome == "given":
                return self._conn_at(waiter.idx)
            if outcome == "closed":
                raise PoolClosed(f"pool {self.name!r} was closed while waiting")
            error = waiter.error
            raise ConnectError(str(error)) from (error.__cause__ if error else None)
        finally:
            self._handoffs.discard(waiter)

    def _abandon_wait(self, waiter: Any) -> None:
        """Interrupted, cancelled or failing: leave the queue, and give back a
        connection handed over in the meantime (nothing to do for a waiter
        whose wait already ended: ``_cancel_wait`` finds it done)."""
        try:
            got = self._cancel_wait(waiter)
            if got >= 0:  # a connection was handed over at the last moment: give it back
                self._give_back(self._conn_at(got))
        finally:
            self._handoffs.discard(waiter)

    def _give_back(self, conn: Any) -> None:
        """Return a connection from inside the policy (not the caller's release)."""
        type(self).release(self, conn)

    def _check_out_steps(self, idx: int, start_ns: int, deadline_ns: int) -> Steps[Any]:
        """Lend a popped (CHECKING) slot if it is usable, else retire it, or
        roll it back and shelve it (``_dirty_on_lend``); None then."""
        owned = [True]
        try:
            verdict = self._verdict(idx)
            if verdict == _core.DIRTY:
                if self._stray_transaction(idx):
                    yield from self._dirty_on_lend(idx, owned)
                    return None
                verdict = _core.PROBE  # its status cannot be read (closed, broken)
            if verdict == _core.PROBE:
                alive = yield from self._probe_steps(
                    idx, (deadline_ns - time.monotonic_ns()) / 1e9)
                if not alive:
                    owned[0] = False
                    self._retire(idx, _core.REASON_BROKEN)
                    return None
            elif verdict != _core.OK:
                owned[0] = False
                self._retire(idx, _REASONS[verdict])
                return None
            holder = self._capture_holder() if self.track_holders else None
            owned[0] = False
            return self._lend_checked(idx, time.monotonic_ns() - start_ns, holder)
        except BaseException:
            if owned[0]:  # interrupted while checking: its state is unknown
                owned[0] = False
                self._retire(idx, _core.REASON_BROKEN)
            raise

    def _stray_transaction(self, idx: int) -> bool:
        """Does the idle connection of slot ``idx`` read as having a transaction
        open (not merely a status that cannot be read: closed, or lost)?"""
        conn = self._conn_at(idx)
        try:
            return bool(self.adapter.in_transaction(conn)) and not self._driver.is_lost(conn)
        except Exception:
            return False

    def _dirty_on_lend(self, idx: int, owned: list[bool]) -> Steps[None]:
        """A connection about to be lent has a transaction open: it was written
        through a stale reference after its release (the status read then was
        idle). Never lend it as is: the rule of a dirty return
        (``_reset_and_shelve``: roll back, or discard when that fails or the
        client reports it lost) puts it back in service or retires it; the
        caller goes on to the next connection. Counted in
        ``stats().dirty_on_lend``, with a warning naming where its previous
        borrower acquired it."""
        conn = self._conn_at(idx)
        holder = self._holder_at(idx)  # the previous borrower's, recorded at its lend
        self._count(_core.C_DIRTY_ON_LEND)
        yield from self._reset_and_shelve(idx, conn, owned)
        fate = "rolled back" if self._slot_of(conn) >= 0 else "discarded"
        logger.warning(
            "fastpool: pool %r: connection %s had a transaction open when it was about to "
            "be lent (a write through a reference kept after its release?); %s, never lent "
            "as is (stats().dirty_on_lend). Its previous borrower %s", self.name, repr(conn),
            fate, self._site_text(holder))

    def _probe(self, idx: int, timeout: float | None = None) -> bool:
        """Probe a CHECKING slot's connection (see ``_probe_steps``)."""
        return run(self._probe_steps(idx, timeout), self._io)

    def _probe_steps(self, idx: int, timeout: float | None = None) -> Steps[bool]:
        """Probe a CHECKING slot's connection within ``timeout`` (at most
        PROBE_TIMEOUT) seconds; counted and timed. A probe that runs out of time
        fails: the connection is replaced."""
        limit = self.PROBE_TIMEOUT if timeout is None else min(self.PROBE_TIMEOUT, timeout)
        t0 = time.monotonic_ns()
        try:
            yield ("probe", self._conn_at(idx), max(limit, 0.001))
            return True
        except Exception as exc:
            logger.info("fastpool: pool %r discards a broken connection: %s", self.name, exc)
            return False
        finally:
            self._count(_core.C_PROBES)
            self._count(_core.C_PROBE_NS, time.monotonic_ns() - t0)

    def _capture_holder(self) -> object:
        return leaks.capture_stack()

    def _state_text(self) -> str:
        open_, idle, in_use, waiting = self._sizes()
        return (f"open {open_}, in use {in_use}, idle {idle}, waiting {waiting}, "
                f"max_size {self.max_size}")

    def _timeout_error(self, t: float, state: str | None = None) -> PoolTimeout:
        msg = (f"no connection available from pool {self.name!r} within {t:g} s "
               f"({state or self._state_text()})")
        err = self._last_connect_error
        if err is not None and self._failures:
            msg += f"; connecting fails: {type(err).__name__}: {self._driver.redact(str(err))}"
        msg += self._leak_text()
        exc = PoolTimeout(msg)
        exc.__cause__ = err if self._failures else None
        return exc

    def _leak_text(self) -> str:
        """For a PoolTimeout: the connections held past ``leak_threshold``, if any."""
        if self.leak_threshold is None:
            return ""
        limit = int(self.leak_threshold * 1e9)
        old = sorted(((held, holder) for _conn, held, holder in self._holders()
                      if held >= limit), key=lambda h: -h[0])
        if not old:
            return ""
        held, holder = old[0]
        site = leaks.acquire_site(holder)
        where = (f"the longest ({held / 1e9:.0f} s) acquired at {site}" if site else
                 f"the longest {held / 1e9:.0f} s; track_holders=True records where "
                 "they are acquired")
        return (f"; {len(old)} connection(s) held longer than leak_threshold "
                f"({self.leak_threshold:g} s), {where}: possibly leaked (not released), "
                "see pool.holders()")

    def _fatal_copy(self) -> ConnectError:
        assert self._fatal_error is not None
        exc = ConnectError(str(self._fatal_error))
        exc.__cause__ = self._fatal_error.__cause__
        return exc

    # ---- release, slow path ---------------------------------------------

    def _release_slow(self, idx: int, commit: bool) -> None:
        """Called by the core for a returning connection it cannot simply shelve."""
        run(self._release_steps(idx, commit), self._io)

    def _release_steps(self, idx: int, commit: bool) -> Steps[None]:
        """Take back a RELEASING slot: commit or roll back, reset, shelve or retire.

        The slot is RELEASING and this flow owns it until it is shelved or
        retired; whatever escapes before then (a failed commit, an interrupt
        or a cancellation in a rollback or a reset callback), the slot is
        retired, never left half-released.
        """
        conn = self._conn_at(idx)
        owned = [True]
        try:
            verdict = self._verdict(idx)
            if verdict not in (_core.OK, _core.DIRTY, _core.SLOW):
                owned[0] = False
                self._retire(idx, _REASONS[verdict])
                return
            if verdict == _core.DIRTY and commit:
                try:
                    yield ("commit", conn)
                except Exception as exc:
                    yield from self._reset_and_shelve(idx, conn, owned)  # roll back what failed
                    if self._driver.classify(exc) is ErrorKind.CONNECTION_LOST:
                        # The transaction runner's rule, for `with pool.connection()`.
                        raise outcome_unknown(
                            exc, "the `with pool.connection()` block's transaction") from exc
                    raise
            yield from self._reset_and_shelve(idx, conn, owned)
        except BaseException:
            if owned[0]:
                owned[0] = False
                self._retire(idx, _core.REASON_RESET)
            raise

    def _reset_and_shelve(self, idx: int, conn: Any, owned: list[bool]) -> Steps[None]:
        """Roll back what is open, run the user's reset, and shelve or retire."""
        if self._reset_mode == "discard":
            owned[0] = False
            self._retire(idx, _core.REASON_RESET)
            return
        if self._driver.is_lost(conn):  # its client knows it is broken: never shelved
            owned[0] = False
            self._retire(idx, _core.REASON_BROKEN)
            self._lost_one()
            return
        if self._verdict(idx) == _core.DIRTY and not (yield ("reset", conn)):
            owned[0] = False
            if self._driver.is_lost(conn):
                self._retire(idx, _core.REASON_BROKEN)
                self._lost_one()
            else:
                self._retire(idx, _core.REASON_RESET)
            return
        if self._reset is not None:
            try:
                yield ("call", self._reset, conn)
            except Exception:
                logger.warning("fastpool: pool %r: reset callback failed; discarding the "
                               "connection", self.name, exc_info=True)
                owned[0] = False
                self._retire(idx, _core.REASON_RESET)
                return
        verdict = self._verdict(idx)
        owned[0] = False
        if verdict == _core.DIRTY and self._status_spec[0] is None:
            # The driver has no transaction status to read: its successful
            # reset is all there is to trust.
            verdict = _core.SLOW
        if verdict == _core.DIRTY:
            logger.warning("fastpool: pool %r: connection still in a transaction after reset; "
                           "discarding it", self.name)
            self._retire(idx, _core.REASON_RESET)
        elif verdict in (_core.OK, _core.SLOW, _core.PROBE):
            # PROBE: a checked-out slot idle past alive_bypass, whose rollback
            # has just answered; shelving it counts as its use.
            self._shelve(idx)
        else:
            self._retire(idx, _REASONS[verdict])

    def _shelve(self, idx: int) -> None:
        """Put a checked or released slot back in service (the core refuses once closed)."""
        refused = self._putback(idx)
        if refused is not None:
            self._close_connection(refused)
            if self._hooks.has("close"):
                self._hooks.emit("close", refused, "closed")
            self._notify()

    def _lost_one(self) -> None:
        """A borrower's connection broke (killed backend, server restart, network):
        its idle siblings may be just as dead, so each is probed before its next
        lend instead of being trusted for the rest of the bypass window."""
        n = self._suspect_idle()
        logger.info("fastpool: pool %r: a returned connection was broken; probing the %d "
                    "idle ones before reuse", self.name, n)

    def _release_unknown(self, conn: Any) -> None:
        if _fork.is_orphan(conn):
            return  # inherited from the parent process: never touched in the child
        raise ForeignConnection(
            f"connection {conn!r} was not handed out by pool {self.name!r} "
            "(released to the wrong pool, or already discarded)")

    def _retire(self, idx: int, reason: int) -> None:
        """Take a slot out of service for good and close its connection."""
        conn = self._discard(idx, reason)
        try:
            if reason == _core.REASON_FORK:
                _fork._orphans.append(conn)
            else:
                self._close_connection(conn)
            if self._hooks.has("close"):
                self._hooks.emit("close", conn, _core.CLOSE_REASONS[reason])
        finally:
            if self._is_closed:
                self._notify()
            else:
                self._kick()

    def _settle(self, taken: list[tuple[int, int]], handle: Callable[[int, int], object],
                abandon_reason: int) -> None:
        """Handle slots taken out of the ring one by one; if that is interrupted,
        retire the one being handled (if still ours) and those not reached yet,
        instead of leaving them CHECKING forever."""
        for i, (idx, verdict) in enumerate(taken):
            try:
                handle(idx, verdict)
            except BaseException:
                self._abandon(taken, i, abandon_reason)
                raise

    def _abandon(self, taken: list[tuple[int, int]], i: int, reason: int) -> None:
        """Retire ``taken[i]`` (if still CHECKING, so ours) and the rest after it."""
        idx = taken[i][0]
        rest = [j for j, _ in taken[i + 1:]]
        if self._slot_info(idx)["state"] == _CHECKING:
            rest.insert(0, idx)
        for j in rest:
            self._retire(j, reason)

    def _close_connection(self, conn: Any) -> None:
        try:
            self._driver.close(conn)
        except Exception as exc:
            logger.debug("fastpool: pool %r: error closing a connection: %s", self.name, exc)

    # ---- the worker's side ----------------------------------------------

    def _maintain(self) -> float:
        """One round of background work; returns seconds until the next one."""
        return run(self._maintain_steps(), self._io)

    def _maintain_steps(self) -> Steps[float]:
        """One round of background work (the worker thread's, or the asyncio
        pool's task); returns seconds until the next one."""
        if self._is_closed:
            return self._tick
        self._reap()
        if self.leak_threshold is not None:
            self._report_leaks()
        yield from self._reclaim_steps()
        if self._failures and time.monotonic() < self._retry_at:
            # Backing off: callers that wait meanwhile do not hurry it up.
            return min(self._backoff(), self._tick)
        while self._wants_connection():
            if not (yield from self._open_one()):
                return self._backoff()
        return self._tick

    def _wants_connection(self) -> bool:
        open_, idle, _, waiting = self._sizes()
        if self._is_closed or open_ >= self.max_size:
            return False
        return open_ < self.min_size or (waiting > 0 and idle == 0)

    def _open_one(self) -> Steps[bool]:
        try:
            conn = yield ("connect",)
        except Exception as exc:
            self._connect_failed(exc)
            return False
        created = self._now_ns()  # the core's clock: lifetimes are measured on it
        try:
            if self._configure is not None:
                yield ("call", self._configure, conn)
            if self._status_spec != (self._driver.status_attr, self._driver.idle_status):
                self._apply_policy()  # a custom factory revealed its connection type
            if self.max_lifetime is None:
                deadline = _NEVER_NS
            else:
                life = self.max_lifetime * (1.0 - self.LIFETIME_JITTER * random.random())
                deadline = created + int(life * 1e9)
            source = self._trusted or self._driver.status_source(conn)
            added = self._add(conn, source, created, deadline)
        except Exception as exc:
            self._close_connection(conn)
            self._connect_failed(exc)
            return False
        except BaseException:
            self._close_connection(conn)
            raise
        if added < 0:
            self._close_connection(conn)  # the pool closed while we were connecting
            return False
        self._failures = 0
        self._fatal_error = None
        self._ever_connected = True
        self._notify()
        if self._hooks.has("connect"):
            self._hooks.emit("connect", conn)
        return True

    def _connect_failed(self, exc: BaseException) -> None:
        self._connect_errors += 1
        self._last_connect_error = exc
        self._failures += 1
        now = time.monotonic()
        if self._failures == 1:
            self._failing_since = now
        self._retry_at = now + delay_function(
            self.RECONNECT_BACKOFF, name="RECONNECT_BACKOFF")(self._failures)
        where = self._driver.describe()
        message = self._driver.redact(str(exc))
        if self._is_fatal(exc):
            err = ConnectError(f"pool {self.name!r} cannot connect to {where}: "
                               f"{type(exc).__name__}: {message}")
            err.__cause__ = exc
            self._fatal_error = err
            logger.error("fastpool: %s", err)
            if self._sizes()[0] == 0:
                # Nothing open that could be returned to them: fail them now.
                self._fail_waiters(err)
            self._notify()
            return
        logger.warning("fastpool: pool %r: connecting to %s failed (attempt %d): %s: %s",
                       self.name, where, self._failures, type(exc).__name__, message)
        if now - self._failing_since >= self.reconnect_timeout:
            self._failing_since = now
            if self._reconnect_failed is not None:
                try:
                    self._reconnect_failed(self)
                except Exception:
                    logger.exception("fastpool: reconnect_failed callback failed")

    def _is_fatal(self, exc: BaseException) -> bool:
        """Fail callers fast instead of letting them wait out their timeout?

        Errors retrying cannot fix (wrong password, no such database). Nothing
        listening at the address counts only until the pool has connected
        once: after that it is a server restarting, which callers can wait for.
        """
        if not self._driver.is_fatal(exc):
            return False
        return not (self._ever_connected
                    and self._driver.classify(exc) is ErrorKind.UNREACHABLE)

    def _backoff(self) -> float:
        return max(0.0, self._retry_at - time.monotonic())

    def _reap(self) -> None:
        max_idle = -1 if self.max_idle is None else int(self.max_idle * 1e9)
        self._settle(self._take_idle(max_idle, self.min_size),
                     lambda idx, verdict: self._retire(idx, _REASONS[verdict]),
                     _core.REASON_BROKEN)

    def _report_leaks(self) -> None:
        assert self.leak_threshold is not None
        for conn, held_ns, holder in self._leaks(int(self.leak_threshold * 1e9)):
            logger.warning(
                "fastpool: pool %r: connection %s held for %.1f s (leak_threshold %g s); "
                "possible leak, %s",
                # repr: a log record a handler keeps must not keep the connection
                self.name, repr(conn), held_ns / 1e9, self.leak_threshold, self._site_text(holder))

    def _site_text(self, holder: object) -> str:
        """Where a connection was acquired, for a warning, or how to find out."""
        if self.track_holders and holder is not None:
            return "acquired at:\n" + leaks.format_stack(holder)
        return ("acquired at an unknown place (track_holders=True records where each "
                "connection is acquired)")

    # ---- reclaiming connections dropped without a release ---------------

    def _reclaim_steps(self) -> Steps[None]:
        """Take back lent connections whose borrowers let go of them without a
        release (returned early, an exception path that skipped it, a task
        cancelled or abandoned): rolled back (or discarded when that fails or
        its state is unknown) and returned to the pool, counted in
        ``stats().reclaimed``, with a warning naming the acquire site.

        Nothing is added to acquire or release: this worker looks at
        connections lent longer than RECLAIM_AFTER and counts their references
        (``_let_go``). A borrower holding the connection, a cursor or result
        open on it, or another thread's reference keeps it lent.
        """
        if self.RECLAIM_AFTER is None:
            return
        grace = int(self.RECLAIM_AFTER * 1e9)
        candidates = [(self._slot_of(conn), holder) for conn, held, holder in self._holders()
                      if held >= grace]
        # A waiter that was handed a slot but has not taken its connection yet
        # holds no reference to it: never a candidate.
        pending = {w.idx for w in list(self._handoffs) if w.state_name == "given"}
        checks, self._deep_checks = self._deep_checks, {}
        now = self._now_ns()
        for idx, holder in candidates:
            if idx < 0 or idx in pending:
                continue
            info = self._slot_info(idx)
            if info["state"] != _IN_USE:
                continue
            lent = info["acquired_ns"]
            if self._now_ns() - lent < grace:
                # Lent again since the round began (released by its borrower
                # and handed to a waiter meanwhile): a new lend, not a candidate.
                continue
            # The count against the pool's own references is cheap and runs every
            # round. The look into the connection's own objects (needed only
            # when it refers to itself: sqlite3, PyMySQL, aiosqlite) runs when
            # the count changed since the last look (a borrower let go), else
            # backs off for a connection found held, from RECLAIM_AFTER to 30 s.
            seen_lent, due, n, last = checks.get(idx, (lent, 0, 0, -1))
            if seen_lent != lent:
                due, n, last = 0, 0, -1
            try:
                let_go, count, looked = self._let_go(idx, lent, now >= due, last)
            except Exception as exc:  # never stop the worker's round for this
                logger.debug("fastpool: pool %r: reference check failed: %s", self.name, exc)
                let_go, count, looked = False, -1, True
            if not let_go:
                if looked:
                    due, n = now + min(grace << min(n, 30), 30 * 10**9), n + 1
                self._deep_checks[idx] = (lent, due, n, count)
                continue
            if any(w.idx == idx and w.state_name == "given" for w in list(self._handoffs)):
                # Handed to a waiter that has not taken it yet (it holds no
                # reference until it does): in use, whatever the count says.
                continue
            with self._lock:  # one round returns a lend, once
                if (idx, lent) in self._reclaiming:
                    continue
                self._reclaiming.add((idx, lent))
            try:
                info = self._slot_info(idx)
                if info["state"] != _IN_USE or info["acquired_ns"] != lent:
                    continue  # another round returned it meanwhile
                yield from self._return_reclaimed(idx, lent, now, holder)
            finally:
                with self._lock:
                    self._reclaiming.discard((idx, lent))

    def _return_reclaimed(self, idx: int, lent: int, now: int, holder: object) -> Steps[None]:
        """Return the lend of slot ``idx`` that ``_reclaim_steps`` found let go of."""
        conn = self._conn_at(idx)
        held_s = (now - lent) / 1e9
        try:
            dirty = self._driver.client.in_transaction(conn)  # type: ignore[union-attr]
        except Exception:
            dirty = None
        with self._lock:  # close()'s round may run beside the worker's
            self._reclaimed += 1
        try:
            # The core's own release (its coroutine for the asyncio pool): a
            # rollback and the decisions of any other return, within RESET_TIMEOUT.
            if (yield ("call", self._return_within, conn, self.RESET_TIMEOUT)):
                logger.warning(
                    "fastpool: pool %r: the return of reclaimed connection %s took longer than "
                    "%g s (RESET_TIMEOUT): interrupted to be discarded (its socket shut down, "
                    "or the connection abandoned)", self.name,
                    repr(conn), self.RESET_TIMEOUT)
                # In case the rollback was done and only the user's reset was
                # slow: the idle ones are probed before their next lend.
                self._suspect_idle()
        except Exception as exc:
            logger.warning("fastpool: pool %r: returning a reclaimed connection failed: "
                           "%s: %s", self.name, type(exc).__name__, exc)
        self._emit_release(conn, lent)
        if self._slot_of(conn) < 0:
            fate = "closed (the pool is closed or drained, it expired, or its state " \
                   "could not be restored)"
        elif dirty:
            fate = "rolled back and returned to the pool"
        else:
            fate = "returned to the pool"
        logger.warning(
            "fastpool: pool %r: connection %s was dropped without a release after "
            "%.1f s; reclaimed: %s. Release every connection (or use `with "
            "pool.connection()`); %s", self.name, repr(conn), held_s, fate,
            self._site_text(holder))

    def _return_within(self, conn: Any, limit: float) -> bool:
        """Release ``conn`` (the core's release); if that takes longer than
        ``limit`` seconds, interrupt it (``leaks.interrupt``: the rollback
        fails, the return discards the connection). True if it took that long."""
        fired = threading.Event()
        sock = leaks.socket_of(conn)

        def interrupt() -> None:
            fired.set()
            leaks.interrupt(sock, conn)

        timer = threading.Timer(limit, interrupt)
        timer.daemon = True
        timer.start()
        try:
            type(self).release(self, conn)
        finally:
            timer.cancel()
            timer.join()  # an interrupt under way ends before the socket is let go of
            if sock is not None:
                sock.close()
        return fired.is_set()

    def _let_go(self, idx: int, acquired_ns: int, deep: bool = True,
                last: int = -1) -> tuple[bool, int, bool]:
        """Has every borrower of the lent slot ``idx`` let go of its connection?

        The connection's reference count, less this frame's own, is compared
        with the pool's references: the core's list of connections and its
        index (2), and the status source the core reads (the connection itself,
        the same object each time, or a new one per call whose references are
        measured). Any excess must be explained by the connection's private
        objects (``leaks.private_refs``; when ``deep`` or the count is not
        ``last``). A reference nothing explains is a borrower's: the
        connection stays lent. Returns (let go?, the count, looked deep?).
        """
        conn = self._conn_at(idx)
        others = sys.getrefcount(conn) - leaks.LOCAL_REFS
        own = 2
        credit: dict[int, int] = {}
        if others > own:
            try:
                before = sys.getrefcount(conn)
                src = self._trusted or self._driver.status_source(conn)
                added = sys.getrefcount(conn) - before
                again = self._trusted or self._driver.status_source(conn)
            except Exception:
                return False, others, True  # cannot account for it: leave it lent
            if src is conn:
                own += 1
            elif again is src:
                credit[id(src)] = 1  # the very object the core holds
            else:
                own += added  # a new one per call holds what the core's holds
            src = again = None
        looked = False
        if others < own:
            return False, others, looked
        if others > own:
            if not deep and others == last:
                return False, others, looked
            looked = True
            if others - own != leaks.private_refs(conn, credit):
                return False, others, looked
        # Nothing changed meanwhile: the same lend, and the same count.
        info = self._slot_info(idx)
        return (info["state"] == _IN_USE and info["acquired_ns"] == acquired_ns
                and sys.getrefcount(conn) - leaks.LOCAL_REFS == others), others, looked

    # ---- fork -----------------------------------------------------------

    def _reinit_after_fork(self, pid: int) -> list[Any]:
        """In a forked child: forget the parent's connections, restart the worker."""
        orphans = self._after_fork(pid)
        self._lock = threading.Lock()
        if not self._is_closed:
            self._start_worker()
        else:
            self._signal = _Signal()
        return orphans

    # ---- public API -----------------------------------------------------

    def wait(self, timeout: float = 30.0) -> None:
        """Block until ``min_size`` connections are open.

        Raises PoolTimeout if they are not within ``timeout`` seconds, and
        ConnectError at once if connecting fails in a way retrying cannot fix.
        """
        t = seconds("timeout", timeout)
        deadline = time.monotonic() + t
        self._kick()
        with self._signal.cond:
            while not self._ready():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout_error(t)
                self._signal.cond.wait(remaining)

    def _ready(self) -> bool:
        """``wait()``'s question: are ``min_size`` connections open? Raises
        PoolClosed, or the connect error retrying cannot fix."""
        if self._is_closed:
            raise PoolClosed(f"pool {self.name!r} is closed")
        if self._sizes()[0] >= self.min_size:
            return True
        if self._fatal_error is not None:
            raise self._fatal_copy()
        return False

    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change the pool's size; extra connections close as they become idle."""
        new_min = integer("min_size", min_size, 0, maximum=MAX_POOL_SIZE)
        new_max = self.max_size if max_size is None else integer("max_size", max_size, 1,
                                                                  maximum=MAX_POOL_SIZE)
        if new_min > new_max:
            raise ConfigError(f"min_size ({new_min}) must not exceed max_size ({new_max})")
        self.min_size, self.max_size = new_min, new_max
        self._apply_policy()
        self._reap()
        self._kick()

    def discard(self, conn: Any, reason: str = "broken") -> None:
        """Close a connection this pool lent, instead of returning it (its
        borrower found it unusable, or wants no idle connection kept); the pool
        opens a replacement as its sizes need. ``reason`` is its ``stats().closed``
        key. A connection the pool did not lend, or lent no more, is refused as
        ``release`` refuses it."""
        why = _core.CLOSE_REASONS.index(choice("reason", reason, _core.CLOSE_REASONS))
        idx = self._slot_of(conn)
        if idx < 0 or self._conn_at(idx) is not conn:
            self._release_unknown(conn)  # ForeignConnection
            return
        if self._slot_info(idx)["state"] != _IN_USE:
            raise ConnectionAlreadyReleased(
                f"connection {conn!r} is not in use in pool {self.name!r}")
        self._retire(idx, why)

    def drain(self) -> None:
        """Replace every connection, without a new pool (e.g. after a failover).

        Idle connections close now; those in use close when they come back;
        replacements open in the background up to ``min_size``.
        """
        self._bump_generation()
        self._reap()
        self._kick()

    def check(self) -> int:
        """Probe every idle connection now; returns how many were discarded."""
        return run(self._check_steps(), self._io)

    def _check_steps(self) -> Steps[int]:
        discarded = 0
        taken = self._take_idle(everything=True)
        for i, (idx, verdict) in enumerate(taken):
            try:
                if verdict == _core.OK and (yield from self._probe_steps(idx)):
                    self._shelve(idx)
                    continue
                self._retire(idx, _REASONS.get(verdict, _core.REASON_BROKEN))
                discarded += 1
            except BaseException:
                self._abandon(taken, i, _core.REASON_BROKEN)
                raise
        return discarded

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool.

        Waiters get PoolClosed, idle connections close now, and connections in
        use close when returned; this waits up to ``timeout`` seconds for them
        and for the background worker. Closing again is harmless (and waits
        again).
        """
        t = seconds("timeout", timeout)
        first = self._begin_close()
        # Every call (not only the first) waits up to `timeout` for the worker
        # and for connections in use, so a later close() can finish the job.
        if self._worker is not threading.current_thread():
            self._worker.join(t)
        self._close_idle()
        deadline = time.monotonic() + t
        while self._sizes()[2] and time.monotonic() < deadline:
            # A connection dropped without a release never comes back: take it (closed).
            run(self._reclaim_steps(), self._io)
            with self._signal.cond:
                if self._sizes()[2]:
                    self._signal.cond.wait(max(min(deadline - time.monotonic(), self._tick), 0))
        self._close_idle()  # anything a racing check() or release put back meanwhile
        self._end_close(first)
        self._driver.close_pool()

    def _begin_close(self) -> bool:
        """Close the core (waiters get PoolClosed) and stop the worker, once;
        True for the first call."""
        with self._lock:
            first = not self._closing
            self._closing = True
        if first:
            self._close_core()
            self._signal.stopping = True
            self._kick()
            self._notify()
        return first

    def _end_close(self, first: bool) -> None:
        in_use = self._sizes()[2]
        if in_use and first:
            logger.warning("fastpool: pool %r closed with %d connection(s) still in use; "
                           "they will be closed when returned", self.name, in_use)

    def _close_idle(self) -> None:
        self._settle(self._take_idle(everything=True),
                     lambda idx, _verdict: self._retire(idx, _core.REASON_CLOSED),
                     _core.REASON_CLOSED)

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return bool(self._is_closed)

    @property
    def driver(self) -> Driver:
        return self._driver

    @property
    def adapter(self) -> Client:
        """The client adapter of this pool's connections (see
        ``fastpool.drivers.client``); for ``Pool(connect=...)`` known once the
        first connection has been opened."""
        client = self._driver.client
        if client is None:
            raise RuntimeError(f"pool {self.name!r}: its client is not known until a "
                               "connection has been opened")
        return client

    # ---- events ------------------------------------------------------------

    def on(self, event: str, fn: Callable[..., object]) -> Callable[..., object]:
        """Call ``fn`` on ``event`` (connect, acquire, release, close, timeout);
        returns ``fn``, so it works as a decorator. See ``fastpool.pool.events``."""
        self._hooks.add(event, fn)
        self._install_hooks()
        return fn

    def off(self, event: str, fn: Callable[..., object]) -> None:
        """Stop calling ``fn`` on ``event``."""
        self._hooks.remove(event, fn)
        self._install_hooks()

    def _install_hooks(self) -> None:
        """Acquire/release callbacks need Python around the compiled calls: put
        wrappers on this instance (they shadow the class's methods), or take
        them away when the last such callback goes."""
        if not self._hooks.hot():
            for name in ("acquire", "release", "connection"):
                self.__dict__.pop(name, None)
            return
        # Closures over a weak reference: bound methods stored on the instance
        # would make a cycle that keeps an abandoned pool (and its worker and
        # connections) alive until the next garbage collection.
        ref = weakref.ref(self)
        cls = type(self)

        def acquire(timeout: float | None = None) -> Any:
            return cls._hooked_acquire(ref(), timeout)  # type: ignore[arg-type]

        def release(conn: Any) -> None:
            cls._hooked_release(ref(), conn)  # type: ignore[arg-type]

        def connection(timeout: float | None = None) -> Any:
            pool = ref()
            return HookedContext(pool._hooks, cls.connection(pool, timeout))  # type: ignore[union-attr, arg-type]

        self.acquire = acquire  # type: ignore[method-assign]
        self.release = release  # type: ignore[method-assign]
        self.connection = connection  # type: ignore[method-assign]

    def _hooked_acquire(self, timeout: float | None = None) -> Any:
        t0 = time.monotonic_ns()
        conn = type(self).acquire(self, timeout)
        try:
            self._hooks.emit("acquire", conn, (time.monotonic_ns() - t0) / 1e9)
        except BaseException:  # interrupted in a callback: the caller never gets it
            type(self).release(self, conn)
            raise
        return conn

    def _hooked_release(self, conn: Any) -> None:
        lent_ns = self._lent_at(conn)
        try:
            type(self).release(self, conn)
        finally:  # released (or retired) even if a commit or the reset failed
            self._emit_release(conn, lent_ns)

    def _lent_at(self, conn: Any) -> int | None:
        """When ``conn`` was lent, if it is this pool's and in use (for the release event)."""
        idx = self._slot_of(conn)
        info = self._slot_info(idx) if idx >= 0 else None
        if info is None or info["state"] != _IN_USE or self._conn_at(idx) is not conn:
            return None
        return info["acquired_ns"]

    def _emit_release(self, conn: Any, lent_ns: int | None) -> None:
        if lent_ns is not None:
            self._hooks.emit("release", conn, (self._now_ns() - lent_ns) / 1e9)

    def classify(self, exc: BaseException) -> ErrorKind:
        """What the driver's exception ``exc`` means (lost connection, retryable
        transaction, the caller's query error...); see ``fastpool.ErrorKind``.

        A statement refused because the server is read-only (SQLSTATE 25006)
        on a pool that connects to the read-write host only (a libpq host
        list with ``target_session_attrs=read-write``) drains the pool, at
        most once a second: the primary moved, and new connections find it."""
        if (getattr(exc, "sqlstate", None) == "25006"
                and getattr(self._driver, "read_write_only", False)):
            now = time.monotonic()
            if now - self._read_only_drained_at >= 1.0:
                self._read_only_drained_at = now
                logger.warning("fastpool: pool %r: the server refused a write as read-only "
                               "(25006); replacing every connection (target_session_attrs="
                               "read-write finds the new primary)", self.name)
                PoolPolicy.drain(self)
        return self._driver.classify(exc)

    def stats(self, reset: bool = False) -> PoolStats:
        """A snapshot of gauges, counters and latency percentiles (see PoolStats).

        With ``reset`` the counters and histograms start again from zero.
        """
        raw = self._snapshot(reset)
        with self._lock:
            errors, reclaimed = self._connect_errors, self._reclaimed
            if reset:
                self._connect_errors = self._reclaimed = 0
        return PoolStats.from_snapshot(raw, name=self.name, min_size=self.min_size,
                                       max_size=self.max_size, connect_errors=errors,
                                       reclaimed=reclaimed)

    def server_activity(self) -> list[dict[str, Any]]:
        """This pool's sessions as the server sees them: one dict per open
        connection with the server's ``state``, current ``query``, timings
        (pg_stat_activity / the MySQL process list) and ``pool_state``
        (``idle`` or ``in_use`` here). Uses a connection of its own, so it
        answers while the pool is exhausted. NotImplementedError for SQLite."""
        states = self._session_states()
        rows = self._driver.server_activity(sorted(states))
        for row in rows:
            row["pool_state"] = states.get(row["session_id"])
        return rows

    def _session_states(self) -> dict[int, str]:
        """Server session id -> ``idle``/``in_use`` of this pool's connections."""
        states = {}
        for conn, state in self._open_slots():
            try:  # recorded at connect: nothing is asked of connections in use
                sid = self._driver.session_id(conn)
            except Exception:
                sid = None
            if sid is not None:
                states[sid] = _core.SLOT_STATES[state]
        return states

    def holders(self) -> list[dict[str, Any]]:
        """The connections in use now: how long held, where acquired (if
        tracked), and ``past_leak_threshold``: held longer than ``leak_threshold``."""
        limit = _NEVER_NS if self.leak_threshold is None else int(self.leak_threshold * 1e9)
        return [{"connection": repr(conn), "held": held_ns / 1e9,
                 "acquired_at": leaks.acquire_site(holder),
                 "past_leak_threshold": held_ns >= limit}
                for conn, held_ns, holder in self._holders()]

    def __enter__(self) -> PoolPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        open_, idle, in_use, waiting = self._sizes()
        state = "closed" if self._is_closed else "open"
        return (f"<{type(self).__name__} {self.name!r} {self._driver.describe()} {state}: "
                f"open={open_} idle={idle} in_use={in_use} waiting={waiting} "
                f"max_size={self.max_size}>")


_CHECKING = _core.SLOT_STATES.index("checking")
_IN_USE = _core.SLOT_STATES.index("in_use")

_REASONS = {
    _core.EXPIRED: _core.REASON_LIFETIME,
    _core.STALE: _core.REASON_DRAINED,
    _core.FORKED: _core.REASON_FORK,
    _core.CLOSED: _core.REASON_CLOSED,
    _core.OVERSIZE: _core.REASON_RESIZE,
    _core.IDLE_TOO_LONG: _core.REASON_IDLE,
}
