"""Types of fastpool's compiled core (and of its pure-Python twin, _core_py)."""

from collections.abc import Callable
from typing import Any, Final, Literal

__impl__: str

ENQUEUED: Final[int]
REJECTED: Final[int]
POOL_CLOSED: Final[int]
MAX_TIMEOUT: Final[float]

OK: Final[int]
PROBE: Final[int]
EXPIRED: Final[int]
STALE: Final[int]
FORKED: Final[int]
CLOSED: Final[int]
OVERSIZE: Final[int]
DIRTY: Final[int]
SLOW: Final[int]
IDLE_TOO_LONG: Final[int]

CLOSE_REASONS: Final[tuple[str, ...]]
REASON_LIFETIME: Final[int]
REASON_IDLE: Final[int]
REASON_BROKEN: Final[int]
REASON_RESET: Final[int]
REASON_FORK: Final[int]
REASON_DRAINED: Final[int]
REASON_CLOSED: Final[int]
REASON_RESIZE: Final[int]

COUNTER_NAMES: Final[tuple[str, ...]]
C_ACQUIRED: Final[int]
C_RELEASED: Final[int]
C_WAITS: Final[int]
C_TIMEOUTS: Final[int]
C_REJECTED: Final[int]
C_OPENED: Final[int]
C_PROBES: Final[int]
C_PROBE_NS: Final[int]
C_LEAKS: Final[int]
C_HANDOFFS: Final[int]
C_DIRTY_ON_LEND: Final[int]

WAITER_STATES: Final[tuple[str, ...]]
SLOT_STATES: Final[tuple[str, ...]]

class Waiter:
    """One caller queued for a connection; ``wakeup()`` is called once its fate is decided."""

    @property
    def state(self) -> int: ...
    @property
    def idx(self) -> int: ...
    @property
    def enqueued_ns(self) -> int: ...
    error: BaseException | None
    holder: object
    token: Any  # the policy's: what its caller waits on
    limits: Any  # the policy's: the caller's deadline and timeout
    def __init__(self, wakeup: Callable[[], object]) -> None: ...
    @property
    def state_name(self) -> str: ...

class ConnectionContext:
    """``with pool.connection() as conn``: commit on success, roll back on error."""

    def __enter__(self) -> Any: ...
    def __exit__(self, et: object, ev: object, tb: object) -> Literal[False]: ...

class AsyncConnectionContext:
    """``async with pool.connection() as conn`` of an asyncio pool."""

    async def __aenter__(self) -> Any: ...
    async def __aexit__(self, et: object, ev: object, tb: object) -> Literal[False]: ...

class PoolCore:
    """The mechanism of a pool: idle ring, waiters, slot numbers, counters."""

    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
    # The hot path.
    def acquire(self, timeout: float | None = None) -> Any:
        """Borrow a connection; wait up to ``timeout`` seconds (default: the pool's)."""
    def release(self, conn: Any) -> None:
        """Give back a connection obtained from ``acquire()``."""
    def connection(self, timeout: float | None = None) -> ConnectionContext:
        """A context manager lending a connection: commit on success, roll back on error."""
    # The asyncio front end (fastpool.pool.aio): compiled coroutines; the
    # policy provides _off_loop, _acquire_later and _release_later, and for a
    # queued Waiter (from _acquire_slow) _after_wait and _abandon_wait.
    async def acquire_async(self, timeout: float | None = None) -> Any: ...
    async def release_async(self, conn: Any) -> None: ...
    async def _release_async(self, conn: Any, commit: bool) -> None: ...
    def connection_async(self, timeout: float | None = None) -> AsyncConnectionContext: ...
    def _set_owner(self, thread: int, loop: Any = None) -> None: ...
    def _set_later(self, later: Any) -> None: ...
    def _release_ended(self, conn: Any, commit: bool) -> None:
        """Give back ``conn`` at the end of a block: ``commit`` when it ended
        without an exception (an open transaction is then committed)."""
    # Provided by the pool's policy: the core calls them when a decision needs
    # more than comparing numbers. The policy class is combined with the core
    # (``class Pool(PoolPolicy, PoolCore)``) and overrides them; the compiled
    # core declares them cpdef, so its C code calls the override.
    def _acquire_slow(self, timeout: float | None, idx: int) -> Any:
        """Lend a connection when the fast path could not; return it.

        ``idx`` is a slot the core popped (now CHECKING) but could not vouch
        for (needs a probe, expired, older generation, another process, pool
        over ``max_open``, its client's status reads a transaction open): the
        policy owns it and must lend it (``_lend_checked``), put it back
        (``_putback``) or retire it (``_discard``). ``idx`` is -1 when no idle
        slot was at hand, the pool is closed, or ``timeout`` is not a number
        of seconds in [0, MAX_TIMEOUT] (the core passes it on unchecked; the
        policy raises).
        Default: NotImplementedError.
        """
    def _release_slow(self, idx: int, commit: bool) -> None:
        """Take back a RELEASING slot the core cannot simply shelve (open
        transaction, expired, pool closed/resized/drained, or every return goes
        through the policy): commit if ``commit`` (a ``with`` block ended
        without an exception) or roll back, reset, then ``_putback`` or
        ``_discard``. Default: NotImplementedError.
        """
    def _release_unknown(self, conn: Any) -> None:
        """``conn`` was released to this pool but is not one it has lent:
        raise the error (or ignore a connection inherited over a fork).
        Default: NotImplementedError.
        """
    def _capture_holder(self) -> object:
        """Where the caller acquires from, stored opaquely with the lend when
        holders are tracked (leak reports). Default: None.
        """
    # The clock.
    def _now_ns(self) -> int:
        """The core's clock now (int ns): stamp connections with it (``_add``'s
        ``created_ns``, ``deadline_ns``) so they compare with the core's readings."""
    def _set_clock(self, clock: Callable[[], int] | None) -> None:
        """Read time from ``clock()`` (int ns, never going back) instead of
        CLOCK_MONOTONIC; None restores it. Timestamps already held move by the
        difference between the two readings, so what is under way carries over.
        For tests of lifetime, idle and leak limits that must not sleep."""
    # For the policy. (The compiled core's ``_release`` is C only: a policy
    # gives a connection back with ``type(self).release(self, conn)``.)
    def _set_policy(self, *, lifo: bool, bypass_ns: int, max_open: int, status_attr: str | None,
                    idle_status: Any, always_slow_release: bool, track_holders: bool) -> None: ...
    def _new_waiter(self, wakeup: Callable[[], object]) -> Waiter: ...
    def _pop_or_wait(self, waiter: Waiter, max_waiting: int) -> int: ...
    def _cancel_wait(self, waiter: Waiter) -> int: ...
    def _fail_waiters(self, error: BaseException) -> int: ...
    def _add(self, conn: Any, status_src: Any, created_ns: int, deadline_ns: int) -> int: ...
    def _verdict(self, idx: int) -> int: ...
    def _lend_checked(self, idx: int, wait_ns: int, holder: object = None) -> Any: ...
    def _putback(self, idx: int) -> Any: ...
    def _discard(self, idx: int, reason: int) -> Any: ...
    def _slot_info(self, idx: int) -> dict[str, int]: ...
    def _conn_at(self, idx: int) -> Any: ...
    def _holder_at(self, idx: int) -> object: ...
    def _slot_of(self, conn: Any) -> int: ...
    def _suspect_idle(self) -> int: ...
    def _take_idle(self, max_idle_ns: int = -1, min_keep: int = 0,
                   everything: bool = False) -> list[tuple[int, int]]: ...
    def _close_core(self) -> int: ...
    def _bump_generation(self) -> int: ...
    def _after_fork(self, pid: int) -> list[Any]: ...
    def _leaks(self, threshold_ns: int) -> list[tuple[Any, int, object]]: ...
    def _holders(self) -> list[tuple[Any, int, object]]: ...
    def _open_slots(self) -> list[tuple[Any, int]]: ...
    def _count(self, counter: int, amount: int = 1) -> None: ...
    def _sizes(self) -> tuple[int, int, int, int]: ...
    def _snapshot(self, reset: bool = False) -> dict[str, Any]: ...
    @property
    def _is_closed(self) -> bool: ...
    @property
    def _pid(self) -> int: ...
