"""Pure-Python twin of ``fastpool._core`` with the same API and semantics.

Loaded with ``FASTPOOL_IMPL=python`` (or when the compiled core cannot be
imported). The compiled core is atomic because it never lets go of the GIL in
the middle of a state change; Python code can be interrupted anywhere, so every
state change here happens under ``self._mutex``. Nothing that may call back
into the pool's policy runs while the mutex is held; a waiter's ``wakeup`` is
called under it (a lock release or a thread-safe call, never the pool).
It is for portability and debugging: unlike the compiled core, an
asynchronous exception (KeyboardInterrupt) can land in the middle of one of
its state changes.
"""

from __future__ import annotations

import contextlib
import operator
import os
import threading
from collections.abc import Callable
from time import monotonic_ns
from types import GeneratorType
from typing import Any, Literal, SupportsIndex

from fastpool.errors import ConfigError, ConnectionAlreadyReleased

__impl__ = "python"

FREE, IDLE, IN_USE, CHECKING, RELEASING = range(5)
W_NEW, W_WAITING, W_GIVEN, W_CANCELLED, W_CLOSED, W_FAILED = range(6)
WAITER_STATES = ("new", "waiting", "given", "cancelled", "closed", "failed")
SLOT_STATES = ("free", "idle", "in_use", "checking", "releasing")

ENQUEUED = -1
REJECTED = -2
POOL_CLOSED = -3
MAX_TIMEOUT = 1e9

OK = 0
PROBE = 1
EXPIRED = 2
STALE = 3
FORKED = 4
CLOSED = 5
OVERSIZE = 6
DIRTY = 7
SLOW = 8
IDLE_TOO_LONG = 9

CLOSE_REASONS = ("lifetime", "idle", "broken", "reset", "fork", "drained",
                 "closed", "resize")
REASON_LIFETIME = 0
REASON_IDLE = 1
REASON_BROKEN = 2
REASON_RESET = 3
REASON_FORK = 4
REASON_DRAINED = 5
REASON_CLOSED = 6
REASON_RESIZE = 7

COUNTER_NAMES = ("acquisitions", "releases", "waits", "timeouts", "rejected",
                 "opened", "probes", "probe_ns", "leaks", "handoffs", "dirty_on_lend")
C_ACQUIRED = 0
C_RELEASED = 1
C_WAITS = 2
C_TIMEOUTS = 3
C_REJECTED = 4
C_OPENED = 5
C_PROBES = 6
C_PROBE_NS = 7
C_LEAKS = 8
C_HANDOFFS = 9
C_DIRTY_ON_LEND = 10

N_BUCKETS = 64
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def _blank_hist() -> dict[str, Any]:
    return {"buckets": [0] * N_BUCKETS, "count": 0, "total": 0, "max": 0}


def _hist_add(h: dict[str, Any], value: int) -> None:
    v = value if value > 0 else 0
    h["buckets"][v.bit_length() & 63] += 1
    h["count"] += 1
    h["total"] += v
    if v > h["max"]:
        h["max"] = v


def _shifted(t: int, shift: int) -> int:
    """``t + shift`` within int64, saturating, as in the compiled core."""
    return min(max(t + shift, _INT64_MIN), _INT64_MAX)


def _int64_clock(clock: Callable[[], SupportsIndex]) -> Callable[[], int]:
    """``clock`` checked as the compiled core converts it: an int (``__index__``)
    that fits in int64."""
    def read() -> int:
        value = operator.index(clock())
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise OverflowError(f"clock reading {value} does not fit in int64")
        return value
    return read


class _Slot:
    __slots__ = ("acquired_ns", "created_ns", "deadline_ns", "generation", "last_used_ns",
                 "leak_reported", "pid", "state")

    def __init__(self) -> None:
        self.state = FREE
        self.leak_reported = False
        self.pid = 0
        self.generation = 0
        self.created_ns = 0
        self.last_used_ns = 0
        self.acquired_ns = 0
        self.deadline_ns = 0


class Waiter:
    """One caller queued for a connection (see the compiled core's docstring)."""

    def __init__(self, wakeup: Callable[[], object]) -> None:
        self.wakeup = wakeup
        self.state = W_NEW
        self.idx = -1
        self.enqueued_ns = 0
        self.error: BaseException | None = None
        self.holder: object = None
        self.token: Any = None  # the policy's: what its caller waits on
        self.limits: Any = None  # the policy's: the caller's deadline and timeout
        self.prev: Waiter | None = None
        self.next: Waiter | None = None

    @property
    def state_name(self) -> str:
        return WAITER_STATES[self.state]


_ENTERING = object()


class ConnectionContext:
    """``with pool.connection() as conn``: commit on success, roll back on error."""

    __slots__ = ("conn", "pool", "timeout")

    def __init__(self, pool: PoolCore, timeout: float | None) -> None:
        self.pool = pool
        self.timeout = timeout
        self.conn: Any = None

    def __enter__(self) -> Any:
        if self.conn is not None:
            raise RuntimeError("this pool.connection() context is already entered")
        self.conn = _ENTERING
        try:
            self.conn = self.pool._acquire(self.timeout)
        except BaseException:
            self.conn = None
            raise
        return self.conn

    def __exit__(self, et: object, ev: object, tb: object) -> Literal[False]:
        conn = self.conn
        if conn is not None and conn is not _ENTERING:
            self.conn = None
            self.pool._release(conn, et is None)
        return False


class AsyncConnectionContext:
    """``async with pool.connection() as conn`` of an asyncio pool: commit on
    success, roll back on an exception or a cancellation."""

    __slots__ = ("conn", "pool", "timeout")

    def __init__(self, pool: PoolCore, timeout: float | None) -> None:
        self.pool = pool
        self.timeout = timeout
        self.conn: Any = None

    async def __aenter__(self) -> Any:
        if self.conn is not None:
            raise RuntimeError("this pool.connection() context is already entered")
        self.conn = _ENTERING
        try:
            self.conn = await self.pool.acquire_async(self.timeout)
        except BaseException:
            self.conn = None
            raise
        return self.conn

    async def __aexit__(self, et: object, ev: object, tb: object) -> Literal[False]:
        conn = self.conn
        if conn is not None and conn is not _ENTERING:
            self.conn = None
            # A block ended by an exception returns through the policy (see
            # the compiled core).
            await self.pool._release_async(conn, et is None, et is not None)
        return False


class PoolCore:
    """The pure-Python mechanism of a pool. Subclassed by the pool's policy."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._owner_thread = 0
        self._owner_loop: Any = None
        self._later: Any = None
        self._mutex = threading.Lock()
        self._slots: list[_Slot] = []
        self._ring: list[int] = []  # idle slot indices, oldest first
        self._lifo = True
        self._closed = False
        self._always_slow_release = False
        self._track_holders = False
        self._n_open = 0
        self._n_in_use = 0
        self._n_waiting = 0
        self._max_open = 0
        self._pid_ = os.getpid()
        self._gen = 1
        self._bypass_ns = 0
        self._conns: list[Any] = []
        self._status_srcs: list[Any] = []
        self._holders_: list[Any] = []
        self._index: dict[Any, int] = {}
        self._status_attr: str | None = None
        self._idle_status: Any = None
        self._wait_head: Waiter | None = None
        self._wait_tail: Waiter | None = None
        self._counters = [0] * len(COUNTER_NAMES)
        self._closed_by = [0] * len(CLOSE_REASONS)
        self._wait_hist = _blank_hist()
        self._hold_hist = _blank_hist()
        self._busy_ns = 0
        self._open_ns = 0
        self._core_clock: Callable[[], int] = monotonic_ns
        now = monotonic_ns()
        self._open_mark_ns = now
        self._window_start_ns = now

    # ---- hot path -------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> Any:
        """Borrow a connection; wait up to ``timeout`` seconds (default: the pool's)."""
        return self._acquire(timeout)

    def _acquire(self, timeout: float | None) -> Any:
        idx = -1
        if timeout is not None and not (
                type(timeout) in (float, int) and 0 <= timeout <= MAX_TIMEOUT):
            return self._acquire_slow(timeout, -1)
        usable = False
        now = self._core_clock()  # before any change: an injected clock may raise
        with self._mutex:
            if self._ring and not self._closed:
                idx = self._ring_pop()
                s = self._slots[idx]
                s.state = CHECKING
                # The client's status last, as in the compiled core: a
                # transaction opened while it sat idle (a stale reference's
                # write) sends it to the policy.
                usable = (s.generation == self._gen and s.pid == self._pid_
                          and now < s.deadline_ns and now - s.last_used_ns <= self._bypass_ns
                          and self._n_open <= self._max_open
                          and (self._status_attr is None or self._status_idle(idx)))
                if usable and not self._track_holders:
                    return self._lend(idx, now, 0)
        if usable:
            return self._lend_with_holder(idx, now)
        return self._acquire_slow(timeout, idx)

    def _lend_with_holder(self, idx: int, now: int) -> Any:
        # As in the compiled core: capture first, so an interrupted capture
        # puts the slot back instead of lending it to nobody.
        try:
            holder = self._capture_holder()
        except BaseException:
            with self._mutex:
                self._put(idx, now)
            raise
        with self._mutex:
            conn = self._lend(idx, now, 0)
            self._holders_[idx] = holder
            return conn

    def release(self, conn: Any) -> None:
        """Give back a connection obtained from ``acquire()``."""
        self._release(conn, False)

    # ---- the asyncio front end's hot path (see the compiled core) ---------

    async def acquire_async(self, timeout: float | None = None) -> Any:
        """``await pool.acquire()``: a slow path comes back from the policy's
        ``_acquire_slow`` as a queued Waiter, whose token is awaited here and
        its end decided by the policy's ``_after_wait`` (``_abandon_wait`` when
        interrupted), or as a flow (a generator) to await."""
        if self._off_owner():
            self._off_loop()
        conn = self._acquire(timeout)
        if type(conn) is Waiter:
            waiter = conn
            try:
                woken = waiter.token  # an awaitable, or the wait's result
                if type(woken) is not bool:
                    woken = await woken
                conn = self._after_wait(waiter, woken)
            except BaseException:
                self._abandon_wait(waiter)  # nothing left to undo if _after_wait raised
                raise
            return conn
        if type(conn) is GeneratorType:
            conn = await self._acquire_later(conn)
        return conn

    async def release_async(self, conn: Any) -> None:
        """``await pool.release(conn)``."""
        await self._release_async(conn, False)

    async def _release_async(self, conn: Any, commit: bool, slow: bool = False) -> None:
        if self._off_owner():
            self._off_loop()
        self._release(conn, commit, slow)
        later = self._later
        if later is not None:
            self._later = None
            await self._release_later(later)

    def connection_async(self, timeout: float | None = None) -> AsyncConnectionContext:
        """``async with pool.connection() as conn`` of an asyncio pool."""
        return AsyncConnectionContext(self, timeout)

    def _set_owner(self, thread: int, loop: Any = None) -> None:
        """The thread whose event loop ``loop`` owns the pool (0: none)."""
        self._owner_thread = thread
        self._owner_loop = loop

    def _off_owner(self) -> bool:
        if self._owner_thread != threading.get_ident():
            return True
        return self._owner_loop is not None and not self._owner_loop.is_running()

    def _set_later(self, later: Any) -> None:
        """What ``release_async`` must await once the core is done."""
        self._later = later

    def _off_loop(self) -> None:
        raise NotImplementedError("_off_loop must be provided by the asyncio pool's policy")

    async def _acquire_later(self, steps: Any) -> Any:
        raise NotImplementedError("_acquire_later must be provided by the asyncio pool's policy")

    def _after_wait(self, waiter: Waiter, woken: bool) -> Any:
        raise NotImplementedError("_after_wait must be provided by the pool's policy")

    def _abandon_wait(self, waiter: Waiter) -> None:
        raise NotImplementedError("_abandon_wait must be provided by the pool's policy")

    async def _release_later(self, later: Any) -> None:
        raise NotImplementedError("_release_later must be provided by the asyncio pool's policy")

    def _release_ended(self, conn: Any, commit: bool) -> None:
        """Give back ``conn`` at the end of a block: ``commit`` when it ended
        without an exception (an open transaction is then committed, as by
        ``with pool.connection()``). For front ends other than ``with``."""
        self._release(conn, commit)

    def connection(self, timeout: float | None = None) -> ConnectionContext:
        """A context manager lending a connection: commit on success, roll back on error."""
        return ConnectionContext(self, timeout)

    def _release(self, conn: Any, commit: bool, slow: bool = False) -> None:
        now = self._core_clock()  # before any change, as in _acquire
        with self._mutex:
            idx = self._slot_index(conn)
            if idx >= 0 and self._conns[idx] is not conn:
                idx = -1  # equal to one of ours but not the same object
            if idx >= 0:
                s = self._slots[idx]
                if s.state != IN_USE:
                    raise ConnectionAlreadyReleased(
                        f"connection {conn!r} was already released to this pool")
                s.state = RELEASING
                clean = not slow and self._clean(idx, now)
                if clean:
                    self._end_hold(idx, now)
                    self._put(idx, now)
        if idx < 0:
            self._release_unknown(conn)
        elif not clean:
            self._release_slow(idx, commit)

    # ---- the policy's side ----------------------------------------------
    # Provided by the policy class combined with this one (a mixin listed
    # before PoolCore); see the compiled core for what each must do.

    def _acquire_slow(self, timeout: float | None, idx: int) -> Any:
        """Lend a connection when the fast path could not (``idx``: a CHECKING
        slot the policy now owns, or -1)."""
        raise NotImplementedError("_acquire_slow must be provided by the pool's policy")

    def _release_slow(self, idx: int, commit: bool) -> None:
        """Take back a RELEASING slot the core cannot simply shelve."""
        raise NotImplementedError("_release_slow must be provided by the pool's policy")

    def _release_unknown(self, conn: Any) -> None:
        """``conn`` was released to this pool but is not one it has lent."""
        raise NotImplementedError("_release_unknown must be provided by the pool's policy")

    def _capture_holder(self) -> object:
        """Where the caller acquires from (leak reports); nothing by default."""
        return None

    # ---- the clock --------------------------------------------------------

    def _now_ns(self) -> int:
        """The core's clock now, in nanoseconds (see the compiled core)."""
        return self._core_clock()

    def _set_clock(self, clock: Callable[[], int] | None) -> None:
        """Read time from ``clock()`` (int ns), or the monotonic clock with None;
        every timestamp held moves so that what is under way carries over."""
        if clock is not None and not callable(clock):
            raise TypeError("clock must be None or a callable returning int nanoseconds, "
                            f"not {clock!r}")
        read = monotonic_ns if clock is None else _int64_clock(clock)
        old_now = self._core_clock()
        shift = read() - old_now
        if not _INT64_MIN <= shift <= _INT64_MAX:
            raise OverflowError("the clocks are too far apart")
        with self._mutex:
            for s in self._slots:
                if s.state != FREE:
                    s.created_ns = _shifted(s.created_ns, shift)
                    s.last_used_ns = _shifted(s.last_used_ns, shift)
                    s.acquired_ns = _shifted(s.acquired_ns, shift)
                    s.deadline_ns = _shifted(s.deadline_ns, shift)
            w = self._wait_head
            while w is not None:
                w.enqueued_ns = _shifted(w.enqueued_ns, shift)
                w = w.next
            self._open_mark_ns = _shifted(self._open_mark_ns, shift)
            self._window_start_ns = _shifted(self._window_start_ns, shift)
            self._core_clock = read

    def _slot_index(self, conn: Any) -> int:
        try:
            return self._index.get(conn, -1)
        except TypeError:  # unhashable: certainly not ours
            return -1

    def _lend(self, idx: int, now: int, wait_ns: int) -> Any:
        s = self._slots[idx]
        s.state = IN_USE
        s.acquired_ns = now
        s.leak_reported = False
        self._n_in_use += 1
        self._counters[C_ACQUIRED] += 1
        _hist_add(self._wait_hist, wait_ns)
        return self._conns[idx]

    def _clean(self, idx: int, now: int) -> bool:
        s = self._slots[idx]
        if self._always_slow_release or not self._status_idle(idx):
            return False
        return not (self._closed or s.generation != self._gen or s.pid != self._pid_
                    or now >= s.deadline_ns or self._n_open > self._max_open)

    def _status_idle(self, idx: int) -> bool:
        src = self._status_srcs[idx]
        if src is None or self._status_attr is None:
            return False
        try:
            status = getattr(src, self._status_attr)
            return bool(status is self._idle_status or status == self._idle_status)
        except Exception:
            return False

    def _end_hold(self, idx: int, now: int) -> None:
        s = self._slots[idx]
        start = s.acquired_ns
        _hist_add(self._hold_hist, now - start)
        start = max(start, self._window_start_ns)
        self._busy_ns += now - start
        self._n_in_use -= 1
        self._counters[C_RELEASED] += 1
        s.last_used_ns = now

    def _put(self, idx: int, now: int) -> None:
        w = self._pop_waiter()
        s = self._slots[idx]
        if w is None:
            s.state = IDLE
            self._ring.append(idx)
            return
        self._holders_[idx] = w.holder
        self._n_waiting -= 1
        self._counters[C_HANDOFFS] += 1
        self._lend(idx, now, now - w.enqueued_ns)
        w.idx = idx
        w.state = W_GIVEN
        with contextlib.suppress(BaseException):  # see the compiled core
            w.wakeup()

    def _ring_pop(self) -> int:
        return self._ring.pop() if self._lifo else self._ring.pop(0)

    def _mark_open(self, now: int, delta: int) -> None:
        self._open_ns += self._n_open * (now - self._open_mark_ns)
        self._open_mark_ns = now
        self._n_open += delta

    # ---- waiters --------------------------------------------------------

    def _pop_waiter(self) -> Waiter | None:
        w = self._wait_head
        if w is not None:
            self._unlink(w)
        return w

    def _unlink(self, w: Waiter) -> None:
        if w.prev is None:
            self._wait_head = w.next
        else:
            w.prev.next = w.next
        if w.next is None:
            self._wait_tail = w.prev
        else:
            w.next.prev = w.prev
        w.prev = None
        w.next = None

    def _new_waiter(self, wakeup: Callable[[], object]) -> Waiter:
        return Waiter(wakeup)

    def _pop_or_wait(self, waiter: Waiter, max_waiting: int) -> int:
        if not isinstance(waiter, Waiter):
            raise TypeError(f"waiter must be a Waiter, not {type(waiter).__name__}")
        now = self._core_clock()
        with self._mutex:
            if self._closed:
                return POOL_CLOSED
            if self._ring:
                idx = self._ring_pop()
                self._slots[idx].state = CHECKING
                return idx
            if max_waiting > 0 and self._n_waiting >= max_waiting:
                self._counters[C_REJECTED] += 1
                return REJECTED
            if waiter.state != W_NEW:
                raise ValueError("a Waiter can be queued only once")
            waiter.state = W_WAITING
            waiter.enqueued_ns = now
            waiter.prev = self._wait_tail
            if self._wait_tail is None:
                self._wait_head = waiter
            else:
                self._wait_tail.next = waiter
            self._wait_tail = waiter
            self._n_waiting += 1
            self._counters[C_WAITS] += 1
            return ENQUEUED

    def _cancel_wait(self, waiter: Waiter) -> int:
        if not isinstance(waiter, Waiter):
            raise TypeError(f"waiter must be a Waiter, not {type(waiter).__name__}")
        with self._mutex:
            if waiter.state == W_WAITING:
                self._unlink(waiter)
                waiter.state = W_CANCELLED
                self._n_waiting -= 1
                return ENQUEUED
            if waiter.state == W_GIVEN:
                return waiter.idx
            return REJECTED

    def _fail_waiters(self, error: BaseException) -> int:
        return self._wake_all(W_FAILED, error)

    def _wake_all(self, state: int, error: BaseException | None) -> int:
        n = 0
        with self._mutex:
            while True:
                w = self._pop_waiter()
                if w is None:
                    return n
                self._n_waiting -= 1
                w.state = state
                w.error = error
                n += 1
                with contextlib.suppress(BaseException):
                    w.wakeup()

    # ---- slots, for the policy ------------------------------------------

    def _set_policy(self, *, lifo: bool, bypass_ns: int, max_open: int, status_attr: str | None,
                    idle_status: Any, always_slow_release: bool, track_holders: bool) -> None:
        if max_open < 1:
            raise ConfigError("max_open must be at least 1")
        with self._mutex:
            if self._ring and lifo != self._lifo:
                raise ValueError("cannot change the reuse order of a non-empty ring")
            self._lifo = lifo
            self._bypass_ns = bypass_ns
            self._max_open = max_open
            self._status_attr = status_attr
            self._idle_status = idle_status
            self._always_slow_release = always_slow_release or status_attr is None
            self._track_holders = track_holders

    def _add(self, conn: Any, status_src: Any, created_ns: int, deadline_ns: int) -> int:
        now = self._core_clock()
        with self._mutex:
            if self._closed:
                return -1
            if conn in self._index:
                raise ValueError(f"connection {conn!r} is already in this pool")
            free = [i for i, slot in enumerate(self._slots) if slot.state == FREE]
            if free:
                idx = free[0]
            else:
                idx = len(self._slots)
                self._slots.append(_Slot())
                self._conns.append(None)
                self._status_srcs.append(None)
                self._holders_.append(None)
            s = self._slots[idx]
            s.state = CHECKING
            s.pid = self._pid_
            s.generation = self._gen
            s.created_ns = created_ns
            s.last_used_ns = now
            s.deadline_ns = deadline_ns
            s.leak_reported = False
            self._conns[idx] = conn
            self._status_srcs[idx] = status_src
            self._holders_[idx] = None
            self._index[conn] = idx
            self._mark_open(now, 1)
            self._counters[C_OPENED] += 1
            self._put(idx, now)
            return idx

    def _check_idx(self, idx: int) -> None:
        if idx < 0 or idx >= len(self._slots):
            raise IndexError(f"no slot {idx} in this pool")

    def _verdict(self, idx: int) -> int:
        self._check_idx(idx)
        now = self._core_clock()
        with self._mutex:
            s = self._slots[idx]
            if self._closed:
                return CLOSED
            if s.pid != self._pid_:
                return FORKED
            if s.generation != self._gen:
                return STALE
            if now >= s.deadline_ns:
                return EXPIRED
            if self._n_open > self._max_open:
                return OVERSIZE
            if s.state == RELEASING:
                if not self._status_idle(idx):
                    return DIRTY
                if self._always_slow_release:
                    return SLOW
                return OK
            # CHECKING: a transaction opened while it sat idle comes first.
            if self._status_attr is not None and not self._status_idle(idx):
                return DIRTY
            if now - s.last_used_ns > self._bypass_ns:
                return PROBE
            return OK

    def _lend_checked(self, idx: int, wait_ns: int, holder: object = None) -> Any:
        self._check_idx(idx)
        now = self._core_clock()
        with self._mutex:
            if self._slots[idx].state != CHECKING:
                raise ValueError(f"slot {idx} is not being checked")
            conn = self._lend(idx, now, wait_ns)
            self._holders_[idx] = holder
            return conn

    def _putback(self, idx: int) -> Any:
        self._check_idx(idx)
        now = self._core_clock()
        with self._mutex:
            state = self._slots[idx].state
            if state not in (RELEASING, CHECKING):
                raise ValueError(f"slot {idx} is neither being checked nor released")
            if self._closed:
                return self._discard_locked(idx, REASON_CLOSED, now)
            if state == RELEASING:
                self._end_hold(idx, now)
            else:
                self._slots[idx].last_used_ns = now
            self._put(idx, now)
            return None

    def _discard(self, idx: int, reason: int) -> Any:
        self._check_idx(idx)
        if not 0 <= reason < len(CLOSE_REASONS):
            raise ValueError(f"no close reason {reason}")
        now = self._core_clock()
        with self._mutex:
            return self._discard_locked(idx, reason, now)

    def _discard_locked(self, idx: int, reason: int, now: int) -> Any:
        s = self._slots[idx]
        if s.state in (IN_USE, RELEASING):
            self._end_hold(idx, now)
        elif s.state != CHECKING:
            raise ValueError(f"slot {idx} cannot be discarded in its state")
        conn = self._conns[idx]
        self._index.pop(conn, None)
        self._conns[idx] = None
        self._status_srcs[idx] = None
        self._holders_[idx] = None
        s.state = FREE
        self._closed_by[reason] += 1
        self._mark_open(now, -1)
        return conn

    def _slot_info(self, idx: int) -> dict[str, int]:
        self._check_idx(idx)
        s = self._slots[idx]
        return {"state": s.state, "pid": s.pid, "generation": s.generation,
                "created_ns": s.created_ns, "last_used_ns": s.last_used_ns,
                "acquired_ns": s.acquired_ns, "deadline_ns": s.deadline_ns}

    def _conn_at(self, idx: int) -> Any:
        self._check_idx(idx)
        return self._conns[idx]

    def _holder_at(self, idx: int) -> object:
        """What ``_capture_holder`` recorded at the slot's last lend, or None."""
        self._check_idx(idx)
        return self._holders_[idx]

    def _slot_of(self, conn: Any) -> int:
        return self._slot_index(conn)

    def _suspect_idle(self) -> int:
        now = self._core_clock()
        with self._mutex:
            if self._bypass_ns < 0:
                return 0
            before = now - self._bypass_ns - 1
            for idx in self._ring:
                s = self._slots[idx]
                s.last_used_ns = min(s.last_used_ns, before)
            return len(self._ring)

    def _take_idle(self, max_idle_ns: int = -1, min_keep: int = 0,
                   everything: bool = False) -> list[tuple[int, int]]:
        now = self._core_clock()
        with self._mutex:
            open_after = self._n_open
            taken: list[tuple[int, int]] = []
            kept: list[int] = []
            for idx in self._ring:
                s = self._slots[idx]
                verdict = OK
                if s.pid != self._pid_:
                    verdict = FORKED
                elif s.generation != self._gen:
                    verdict = STALE
                elif now >= s.deadline_ns:
                    verdict = EXPIRED
                elif open_after > self._max_open:
                    verdict = OVERSIZE
                elif (max_idle_ns >= 0 and now - s.last_used_ns > max_idle_ns
                      and open_after > min_keep):
                    verdict = IDLE_TOO_LONG
                if everything or verdict != OK:
                    s.state = CHECKING
                    taken.append((idx, verdict))
                    if verdict != OK:
                        open_after -= 1
                else:
                    kept.append(idx)
            self._ring = kept
            return taken

    def _close_core(self) -> int:
        with self._mutex:
            self._closed = True
        return self._wake_all(W_CLOSED, None)

    def _bump_generation(self) -> int:
        with self._mutex:
            self._gen += 1
            return self._gen

    def _after_fork(self, pid: int) -> list[Any]:
        # The mutex may have been held by a thread that does not exist in the child.
        self._mutex = threading.Lock()
        now = self._core_clock()
        orphans = [c for c in self._conns if c is not None]
        self._closed_by[REASON_FORK] += self._n_open
        self._counters[C_RELEASED] += self._n_in_use
        for i, s in enumerate(self._slots):
            s.state = FREE
            self._conns[i] = None
            self._status_srcs[i] = None
            self._holders_[i] = None
        self._index.clear()
        self._ring = []
        self._n_in_use = 0
        self._mark_open(now, -self._n_open)
        self._wait_head = None
        self._wait_tail = None
        self._n_waiting = 0
        self._pid_ = pid
        return orphans

    def _leaks(self, threshold_ns: int) -> list[tuple[Any, int, Any]]:
        now = self._core_clock()
        with self._mutex:
            found = []
            for idx, s in enumerate(self._slots):
                if s.state == IN_USE and not s.leak_reported and now - s.acquired_ns > threshold_ns:
                    s.leak_reported = True
                    self._counters[C_LEAKS] += 1
                    found.append((self._conns[idx], now - s.acquired_ns, self._holders_[idx]))
            return found

    def _holders(self) -> list[tuple[Any, int, Any]]:
        now = self._core_clock()
        with self._mutex:
            return [(self._conns[i], now - s.acquired_ns, self._holders_[i])
                    for i, s in enumerate(self._slots) if s.state == IN_USE]

    def _open_slots(self) -> list[tuple[Any, int]]:
        with self._mutex:
            return [(self._conns[i], s.state) for i, s in enumerate(self._slots)
                    if s.state != FREE]

    def _count(self, counter: int, amount: int = 1) -> None:
        if not 0 <= counter < len(COUNTER_NAMES):
            raise ValueError(f"no counter {counter}")
        with self._mutex:
            self._counters[counter] += amount

    def _sizes(self) -> tuple[int, int, int, int]:
        return (self._n_open, len(self._ring), self._n_in_use, self._n_waiting)

    @property
    def _is_closed(self) -> bool:
        return self._closed

    @property
    def _pid(self) -> int:
        return self._pid_

    def _snapshot(self, reset: bool = False) -> dict[str, Any]:
        now = self._core_clock()
        with self._mutex:
            busy = self._busy_ns
            for s in self._slots:
                if s.state in (IN_USE, RELEASING):
                    busy += now - max(s.acquired_ns, self._window_start_ns)
            self._mark_open(now, 0)
            snap = {
                "counters": dict(zip(COUNTER_NAMES, self._counters, strict=True)),
                "closed": dict(zip(CLOSE_REASONS, self._closed_by, strict=True)),
                "wait": {**self._wait_hist, "buckets": list(self._wait_hist["buckets"])},
                "hold": {**self._hold_hist, "buckets": list(self._hold_hist["buckets"])},
                "busy_ns": busy,
                "open_ns": self._open_ns,
                "window_ns": now - self._window_start_ns,
                "open": self._n_open,
                "idle": len(self._ring),
                "in_use": self._n_in_use,
                "waiting": self._n_waiting,
                "generation": self._gen,
            }
            if reset:
                self._counters = [0] * len(COUNTER_NAMES)
                self._closed_by = [0] * len(CLOSE_REASONS)
                self._wait_hist = _blank_hist()
                self._hold_hist = _blank_hist()
                self._busy_ns = 0
                self._open_ns = 0
                self._window_start_ns = now
            return snap

