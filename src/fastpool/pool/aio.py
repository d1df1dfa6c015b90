"""The asyncio pool's policy: the sync pool's rules, run on an event loop.

``AsyncPolicy`` is ``PoolPolicy`` with other I/O: every flow that decides and
does I/O (acquire's slow path, probing, resetting on return, opening
connections, ``check``) is the same generator (``fastpool.steps``), run by
``run_async`` with ``LoopIO`` instead of by ``run`` with ``ThreadIO``. A
contended acquire is the one exception, for speed: ``_acquire_slow`` queues the
caller with the flow's own plain methods and the compiled core awaits the
waiter's future (see ``_acquire_slow``). What is the loop's own is here and
only here:

* a waiter is a future on the pool's loop, woken by the compiled core's
  hand-off (strict FIFO: a task that just released cannot take the connection
  ahead of one that has waited longer);
* connections are opened by one background task per pool;
* a return that needs I/O (rollback, commit, the user's reset) runs as a task
  of its own, shielded from the caller's cancellation: a task cancelled (or
  timed out) while waiting, while a connection is handed over, inside
  ``async with pool.connection()`` or while releasing never loses a slot;
* the pool belongs to the loop it was created on; another loop or thread gets
  ``WrongEventLoop``.

The fast path is the compiled core's, as for threads: ``await pool.acquire()``
pops the idle ring in C; only what needs waiting or I/O leaves it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from heapq import heappop, heappush
from typing import Any

from fastpool import _core
from fastpool.drivers import AsyncCallableDriver, AsyncDriver
from fastpool.errors import ConfigError, WrongEventLoop
from fastpool.options import seconds
from fastpool.pool import leaks
from fastpool.pool.policy import PoolPolicy
from fastpool.steps import run_async

__all__ = ["AsyncPolicy", "HookedAsyncContext", "LoopIO"]


logger = logging.getLogger("fastpool")

_get_running_loop = asyncio._get_running_loop
_get_ident = threading.get_ident


class LoopIO:
    """The asyncio pool's I/O for its flows (``fastpool.steps``): coroutines of
    the async driver, and waits on futures of the pool's loop. Holds the
    driver and the loop, not the pool."""

    __slots__ = ("deadlines", "driver", "loop", "seq", "timer", "timer_at")

    def __init__(self, driver: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.driver = driver
        self.loop = loop
        # Every waiter's deadline, in one heap with one loop timer armed at
        # the earliest: a timer per wait would cost a TimerHandle, its cancel
        # and Python-level heap compares in the loop's own timer heap (where
        # the driver's timers would then sit among a thousand waiters').
        self.deadlines: list[tuple[float, int, asyncio.Future[bool]]] = []
        self.seq = itertools.count()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    def token(self) -> tuple[Callable[[], object], asyncio.Future[bool]]:
        """A waiter's wake-up and the future ``wait`` awaits."""
        fut: asyncio.Future[bool] = self.loop.create_future()
        # Called by the core's hand-off, on the loop's thread; all in C (no
        # Python frame per hand-off). On a future already done (the deadline
        # or a cancellation came first) it raises InvalidStateError, which the
        # core ignores: the waiter finds the slot through _cancel_wait.
        return functools.partial(fut.set_result, True), fut

    def wait(self, fut: asyncio.Future[bool], timeout: float) -> Any:
        """``fut`` to await: True once woken, False at the deadline (a waiter
        woken and expired at once keeps True: the hand-off came first)."""
        if fut.done():
            return fut.result()
        when = self.loop.time() + timeout
        heap = self.deadlines
        while heap and heap[0][2].done():  # woken or cancelled: forget
            heappop(heap)
        heappush(heap, (when, next(self.seq), fut))
        if self.timer is None or when < self.timer_at:
            self._arm(when)
        return fut

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(when, self._expire_due)
        self.timer_at = when

    def _expire_due(self) -> None:
        """The timer: wake every waiter whose deadline has come with False."""
        self.timer = None
        now = self.loop.time()
        heap = self.deadlines
        while heap:
            when, _, fut = heap[0]
            if not fut.done():
                if when > now:
                    self._arm(when)
                    return
                fut.set_result(False)
            heappop(heap)

    def probe(self, conn: Any, timeout: float) -> Coroutine[Any, Any, None]:
        return self.driver.probe(conn, timeout)  # type: ignore[no-any-return]

    def commit(self, conn: Any) -> Coroutine[Any, Any, None]:
        return self.driver.commit(conn)  # type: ignore[no-any-return]

    def reset(self, conn: Any) -> Coroutine[Any, Any, bool]:
        return self.driver.reset(conn)  # type: ignore[no-any-return]

    def connect(self) -> Coroutine[Any, Any, Any]:
        return self.driver.connect()  # type: ignore[no-any-return]

    def call(self, fn: Callable[..., object], *args: Any) -> object:
        return fn(*args)  # a coroutine is awaited by run_async


class _LoopSignal:
    """What the worker task shares with its pool without keeping it alive."""

    def __init__(self) -> None:
        self.kicked = False
        self.stopping = False
        self.wake: asyncio.Future[None] | None = None  # the worker sleeps on it
        self.watchers: list[asyncio.Future[None]] = []  # wait() and close() sleep on these

    def kick(self) -> None:
        self.kicked = True
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def notify(self) -> None:
        watchers, self.watchers = self.watchers, []
        for fut in watchers:
            if not fut.done():
                fut.set_result(None)


async def _worker_main(ref: weakref.ReferenceType[AsyncPolicy], signal: _LoopSignal) -> None:
    try:
        await _work(ref, signal)
    except asyncio.CancelledError:
        # The loop is shutting down (asyncio.run cancels every task at its
        # end): a later call from another loop must be refused, not served.
        pool = ref()
        if pool is not None and not signal.stopping:
            pool._set_owner(0)
            pool._abandon_idle()
        raise


async def _work(ref: weakref.ReferenceType[AsyncPolicy], signal: _LoopSignal) -> None:
    loop = asyncio.get_running_loop()
    while True:
        pool = ref()
        if pool is None or signal.stopping:
            return
        try:
            delay = await run_async(pool._maintain_steps(), pool._io)
        except Exception:
            logger.exception("fastpool: pool maintenance failed; retrying")
            delay = 1.0
        del pool  # the worker must not keep an abandoned pool alive
        if not signal.kicked and not signal.stopping:
            wake = signal.wake = loop.create_future()
            handle = loop.call_later(delay, _expire_none, wake)
            try:
                await wake
            finally:
                handle.cancel()
                signal.wake = None
        signal.kicked = False


def _expire_none(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _NoWorker:
    """The worker of a forked child's pool until its first call."""

    @staticmethod
    def done() -> bool:
        return True


_NO_WORKER = _NoWorker()


class AsyncPolicy(PoolPolicy):
    """``PoolPolicy`` on an event loop (see the module documentation)."""

    is_async = True
    _driver: Any  # an AsyncDriver: its I/O methods are coroutines
    _worker: Any  # an asyncio.Task

    def __init__(self, connect: Callable[[], Any] | None = None, *,
                 driver: Any = None, **options: Any) -> None:
        loop = _get_running_loop()
        if loop is None:
            raise WrongEventLoop(
                "an AsyncPool must be created inside a running event loop (in a coroutine, "
                "e.g. your application's startup): it belongs to that loop")
        self._loop = loop
        self._forked = False
        self._tasks: set[asyncio.Task[Any]] = set()
        if (connect is None) == (driver is None):
            raise ConfigError("give exactly one of connect (an async factory) or driver")
        if driver is None:
            driver = AsyncCallableDriver(connect)  # type: ignore[arg-type]
        elif not isinstance(driver, AsyncDriver):
            raise ConfigError(f"driver must be a fastpool AsyncDriver, got {driver!r}; "
                              "for a sync driver use fastpool.Pool")
        super().__init__(driver=driver, **options)
        self._set_owner(_get_ident(), self._loop)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The public names are the core's compiled coroutines (the fast path
        # in C; slow paths come back here through _acquire_later,
        # _release_later and _off_loop). Found once per class, for whichever
        # core (compiled or twin) the class is built on.
        for klass in cls.__mro__:
            if "_set_policy" in vars(klass):
                cls.acquire = klass.acquire_async  # type: ignore[attr-defined, method-assign]
                cls.release = klass.release_async  # type: ignore[attr-defined, method-assign]
                cls.connection = klass.connection_async  # type: ignore[attr-defined, method-assign]
                break

    # ---- the loop's I/O ----------------------------------------------------

    def _make_io(self, driver: Any) -> Any:
        return LoopIO(driver, self._loop)

    def _start_worker(self) -> None:
        self._signal = _LoopSignal()  # type: ignore[assignment]
        self._worker = self._spawn(
            _worker_main(weakref.ref(self), self._signal))  # type: ignore[arg-type]

    def _kick(self) -> None:
        self._signal.kick()  # type: ignore[attr-defined]

    def _notify(self) -> None:
        self._signal.notify()  # type: ignore[attr-defined]

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task of the pool's, awaited by ``close()``; its failure is logged."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the awaiting caller (if any) got it

    def _close_connection(self, conn: Any) -> None:
        try:
            self._spawn(self._close_async(conn))
        except RuntimeError:  # the loop is closed: nothing can run the close
            logger.debug("fastpool: pool %r: the event loop is closed; dropping a connection",
                         self.name)

    async def _close_async(self, conn: Any) -> None:
        try:
            await self._driver.close(conn)
        except Exception as exc:
            logger.debug("fastpool: pool %r: error closing a connection: %s", self.name, exc)

    async def _changed(self, timeout: float) -> None:
        """Sleep until the pool's state changes (``_notify``) or ``timeout``."""
        fut: asyncio.Future[None] = self._loop.create_future()
        self._signal.watchers.append(fut)  # type: ignore[attr-defined]
        handle = self._loop.call_later(max(timeout, 0.0), _expire_none, fut)
        try:
            await fut
        finally:
            handle.cancel()

    def _off_loop(self) -> None:
        """Called by the core when the caller's thread is not the owner's, or
        the owner's loop is not running. Go on if the caller is on the pool's
        own loop (its worker is restarted if the loop lost it), or is a forked
        child's first call (the pool moves to the child's loop); otherwise
        raise WrongEventLoop."""
        loop = _get_running_loop()
        if loop is not None and (self._forked or loop is self._loop):
            self._forked = False
            if loop is not self._loop:
                self._loop = loop
                self._io = self._make_io(self._driver)
            self._set_owner(_get_ident(), loop)
            if self._worker.done() and not self._is_closed:
                self._start_worker()
            return
        raise WrongEventLoop(
            f"pool {self.name!r} belongs to the event loop it was created on "
            f"({self._loop!r}); it was used from another loop or thread")

    def _abandon_idle(self) -> None:
        """The pool's loop is shutting down with the pool open: close its idle
        connections without awaiting (a client's thread or socket would
        otherwise outlive the loop, e.g. aiosqlite's, keeping the process
        from exiting). Connections in use are their borrowers'."""
        client = self._driver.client
        for idx, _verdict in self._take_idle(everything=True):
            conn = self._discard(idx, _core.REASON_CLOSED)
            try:
                client.abandon(conn)
            except Exception as exc:
                logger.debug("fastpool: pool %r: closing a connection without its loop "
                             "failed: %s", self.name, exc)

    def _here(self) -> None:
        """The owner check of the methods that are not the core's hot path."""
        if self._forked or _get_running_loop() is not self._loop:
            self._off_loop()

    # ---- the core's callbacks ----------------------------------------------

    def _acquire_slow(self, timeout: float | None, idx: int) -> Any:
        # Cannot wait here (the core's call is synchronous). The common case,
        # nothing popped to check: queue the caller by the flow's own rules
        # and hand the core the waiter, whose future acquire_async awaits
        # itself before calling _after_wait (or _abandon_wait): no flow, no
        # runner, on the path every contended acquire takes. Otherwise the
        # flow (a generator), which the core awaits through _acquire_later.
        # Neither is ever a connection.
        if idx >= 0 or self._pid != os.getpid():
            return self._acquire_steps(timeout, idx)
        start = time.monotonic_ns()
        deadline, t = self._acquire_limits(timeout, start)
        queued = self._enqueue(start, deadline, t)
        if type(queued) is int:  # a slot was idle after all: the flow checks it out
            return self._acquire_steps(timeout, queued)
        try:  # what the core awaits: the wait's awaitable (or its result, if decided)
            queued.token = self._io.wait(queued.token,
                                         max(deadline - time.monotonic_ns(), 0) / 1e9)
        except BaseException:
            self._abandon_wait(queued)
            raise
        return queued

    def _acquire_later(self, steps: Any) -> Coroutine[Any, Any, Any]:
        # A plain function returning the flow's coroutine: one coroutine
        # fewer for every wait to resume through.
        if _get_running_loop() is not self._loop and self._pid == os.getpid():
            steps.close()  # not started: nothing to undo but the slot it owns
            self._off_loop()
        return run_async(steps, self._io)

    def _release_slow(self, idx: int, commit: bool) -> None:
        # The rollback (or commit, or reset) runs as a task of its own, so a
        # caller cancelled while it runs does not leave the slot half-returned.
        self._set_later(self._spawn(run_async(self._release_steps(idx, commit), self._io)))

    async def _release_later(self, task: asyncio.Task[None]) -> None:
        await asyncio.shield(task)

    async def _return_within(self, conn: Any, limit: float) -> bool:  # type: ignore[override]
        """``PoolPolicy._return_within`` on the loop: the release (the core's
        coroutine) runs as a task of the pool's; past ``limit`` seconds the
        connection is interrupted (``leaks.interrupt``: its socket shut down,
        or the client's ``abandon``), and the worker waits ``limit`` more for
        the failed rollback to discard it, then goes on without it."""
        sock = leaks.socket_of(conn)
        try:
            release: Any = type(self).release  # the core's release_async
            returning = self._spawn(release(self, conn))
            done, _ = await asyncio.wait({returning}, timeout=limit)
            if done:
                returning.result()  # what the release raised, for the round to log
                return False
            leaks.interrupt(sock, conn, self._driver.client.abandon)
            await asyncio.wait({returning}, timeout=limit)
            return True
        finally:
            if sock is not None:
                sock.close()

    def _give_back(self, conn: Any) -> None:
        self._release_ended(conn, False)
        self._set_later(None)  # a task was spawned if needed: it runs on its own

    def _capture_holder(self) -> object:
        task = asyncio.current_task(self._loop)
        if task is None:
            return leaks.capture_stack()
        return leaks.capture_task_stack(task.get_name())

    def _reinit_after_fork(self, pid: int) -> list[Any]:
        """In a forked child (at fork time, no loop runs yet): forget the
        parent's connections and tasks; the child's first call binds the pool
        to the child's loop and starts its worker there (``_off_loop``)."""
        orphans = self._after_fork(pid)
        self._lock = threading.Lock()
        self._tasks = set()
        self._signal = _LoopSignal()  # type: ignore[assignment]
        self._worker = _NO_WORKER
        self._forked = True
        self._set_owner(0)
        return orphans

    # ---- public API ----------------------------------------------------------

    async def wait(self, timeout: float = 30.0) -> None:  # type: ignore[override]
        """Wait until ``min_size`` connections are open (see ``Pool.wait``)."""
        self._here()
        t = seconds("timeout", timeout)
        deadline = time.monotonic() + t
        self._kick()
        while not self._ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout_error(t)
            await self._changed(remaining)

    async def resize(self, min_size: int, max_size: int | None = None) -> None:  # type: ignore[override]
        """Change the pool's size; extra connections close as they become idle."""
        self._here()
        PoolPolicy.resize(self, min_size, max_size)

    async def drain(self) -> None:  # type: ignore[override]
        """Replace every connection (see ``Pool.drain``)."""
        self._here()
        PoolPolicy.drain(self)

    async def check(self) -> int:  # type: ignore[override]
        """Probe every idle connection now; returns how many were discarded."""
        self._here()
        return await run_async(self._check_steps(), self._io)

    async def close(self, timeout: float = 5.0) -> None:  # type: ignore[override]
        """Close the pool (see ``Pool.close``): waiters get PoolClosed, idle
        connections close now, those in use when returned; waits up to
        ``timeout`` seconds for them and for the pool's tasks."""
        self._here()
        t = seconds("timeout", timeout)
        deadline = time.monotonic() + t
        first = self._begin_close()
        worker = self._worker
        if worker is not asyncio.current_task(self._loop) and not worker.done():
            await asyncio.wait([worker], timeout=t)
        self._close_idle()
        while self._sizes()[2] and time.monotonic() < deadline:
            # A connection dropped without a release never comes back: take it (closed).
            await run_async(self._reclaim_steps(), self._io)
            if self._sizes()[2]:
                await self._changed(min(deadline - time.monotonic(), self._tick))
        self._close_idle()  # anything a racing check() or release put back meanwhile
        pending = [task for task in self._tasks if task is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending, timeout=max(deadline - time.monotonic(), 0.0))
        self._end_close(first)
        await self._driver.close_pool()

    async def __aenter__(self) -> AsyncPolicy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __enter__(self) -> Any:
        raise TypeError("use `async with` for an AsyncPool")

    def __exit__(self, *exc: object) -> None:  # pragma: no cover - __enter__ refuses
        raise TypeError("use `async with` for an AsyncPool")

    async def server_activity(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """This pool's sessions as the server sees them (see ``Pool.server_activity``)."""
        self._here()
        states = self._session_states()
        rows: list[dict[str, Any]] = await self._driver.server_activity(sorted(states))
        for row in rows:
            row["pool_state"] = states.get(row["session_id"])
        return rows

    # ---- events: acquire/release callbacks need Python around the calls -----

    def _install_hooks(self) -> None:
        if not self._hooks.hot():
            for name in ("acquire", "release", "connection"):
                self.__dict__.pop(name, None)
            return
        ref = weakref.ref(self)
        cls = type(self)

        async def acquire(timeout: float | None = None) -> Any:
            pool = ref()
            assert pool is not None
            t0 = time.monotonic_ns()
            conn = await cls.acquire(pool, timeout)
            try:
                pool._hooks.emit("acquire", conn, (time.monotonic_ns() - t0) / 1e9)
            except BaseException:
                pool._give_back(conn)
                raise
            return conn

        async def release(conn: Any, commit: bool = False) -> None:
            pool = ref()
            assert pool is not None
            lent_ns = pool._lent_at(conn)
            try:
                await pool._release_async(conn, commit)
            finally:  # released (or retired) even if a commit or the reset failed
                pool._emit_release(conn, lent_ns)

        def connection(timeout: float | None = None) -> HookedAsyncContext:
            pool = ref()
            assert pool is not None
            return HookedAsyncContext(acquire, release, timeout)

        self.acquire = acquire  # type: ignore[method-assign]
        self.release = release  # type: ignore[method-assign, assignment]
        self.connection = connection  # type: ignore[method-assign, assignment]


class HookedAsyncContext:
    """``async with pool.connection()`` while acquire/release callbacks are on."""

    __slots__ = ("_acquire", "_release", "conn", "timeout")

    def __init__(self, acquire: Callable[..., Any], release: Callable[..., Any],
                 timeout: float | None) -> None:
        self._acquire = acquire
        self._release = release
        self.timeout = timeout
        self.conn: Any = None

    async def __aenter__(self) -> Any:
        if self.conn is not None:
            raise RuntimeError("this pool.connection() context is already entered")
        self.conn = await self._acquire(self.timeout)
        return self.conn

    async def __aexit__(self, et: object, ev: object, tb: object) -> bool:
        conn, self.conn = self.conn, None
        if conn is not None:
            await self._release(conn, et is None)
        return False
