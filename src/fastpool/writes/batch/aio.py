"""Group commit on asyncio: ``AsyncBatcher`` (``pool.batcher()`` of an
``AsyncPool``).

Tasks queue writes; flusher *tasks* (no threads) commit them together by the
same rules as the thread batcher, written once in ``EngineBase``
(``engine.py``): the flow that commits a batch is run by ``run_async`` on the
pool's asyncio client, whose statement runner is the client's asyncio
dialect (``dialects.py``). Only the queue's wake-ups are this module's::

    batcher = pool.batcher(max_batch=500)            # options: the Batcher's
    result = await batcher.execute("INSERT INTO events (id, body) VALUES ($1, $2)",
                                   (7, "hi"))        # the client's placeholders
    future = batcher.submit("UPDATE counters SET n = n + 1 WHERE id = $1", (3,), key=3)
    await batcher.flush()                            # all submitted so far is done
    await batcher.close()                            # flushes, then stops

Each write gets its own outcome: ``BatchResult`` or its own error (the
driver's exception, ``TransactionOutcomeUnknown``...), as with ``Batcher``.

Cancellation. Cancelling ``await batcher.execute(...)`` (or the future of
``submit``) before its batch starts withdraws the write: it is never written
and counts as ``cancelled``. Once its batch has started the write goes on;
the cancelled caller just does not hear of it, and the batch's other writes
are unaffected (it counts as committed or failed, as it turned out).

Back-pressure. With ``max_pending`` writes pending, ``await execute()``
waits for room (``on_full="block"``, up to ``full_timeout``) or raises
``BatcherFull`` (``on_full="raise"``); ``submit()`` cannot wait (it is not a
coroutine), so it raises ``BatcherFull`` in both modes.

A batcher belongs to the event loop of its first write (the pool's); using
it from another loop raises ``WrongEventLoop``. ``close()`` commits what is
pending. A batcher garbage-collected without ``close()`` flushes in the
background and its tasks end; at interpreter exit nothing can run on a
stopped loop, so close it (``async with pool.batcher() as b``). If the event
loop cancels a flusher task while its batch runs (loop shutdown), that
batch's writes get ``TransactionOutcomeUnknown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastpool.backoff import delay_function
from fastpool.errors import TransactionOutcomeUnknown, WrongEventLoop
from fastpool.options import optional_seconds
from fastpool.steps import run_async
from fastpool.writes.batch.engine import BatchIO, EngineBase, Item, check_options, make_item
from fastpool.writes.batch.results import BatchResult, BatchStats

if TYPE_CHECKING:
    from fastpool.source import ConnectionSource

__all__ = ["AsyncBatcher", "AsyncEngine"]

logger = logging.getLogger("fastpool")


def _wake(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(True)


def _wake_one(waiters: deque[asyncio.Future[bool]], n: int = 1) -> None:
    """Wake up to ``n`` of ``waiters`` (oldest first), skipping those done."""
    while n and waiters:
        fut = waiters.popleft()
        if not fut.done():
            fut.set_result(True)
            n -= 1


def _wake_all(waiters: deque[asyncio.Future[bool]]) -> None:
    while waiters:
        _wake(waiters.popleft())


class AsyncEngine(EngineBase):
    """The queue's wake-ups on an event loop (futures) and the flusher tasks.
    One thread: ``lock`` is a no-op. The tasks hold this, not the batcher."""

    lock = contextlib.nullcontext()

    def __init__(self, pool: ConnectionSource, **options: Any) -> None:
        super().__init__(pool, **options)
        self.io = BatchIO(self, asyncio.sleep)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.work: deque[asyncio.Future[bool]] = deque()   # flushers waiting for writes
        self.room: deque[asyncio.Future[bool]] = deque()   # execute() waiting for room
        self.done: deque[asyncio.Future[bool]] = deque()   # flush()/close() waiting

    def bind(self) -> asyncio.AbstractEventLoop:
        """The running loop, which must be this batcher's; the flusher tasks
        start with the first write."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            if self.loop is not None:
                raise WrongEventLoop(f"batcher {self.name!r} belongs to another event loop "
                                     f"({self.loop!r}); it was used from {loop!r}")
            self.loop = loop
            self.tasks = [loop.create_task(self._flusher(i), name=f"fastpool-batch-{self.name}-{i}")
                          for i in range(self.flushers)]
        return loop

    # ---- submitting ---------------------------------------------------------

    def enqueue(self, item: Item, loop: asyncio.AbstractEventLoop) -> asyncio.Future[BatchResult]:
        """Queue ``item`` with a new future (room was checked by the caller or
        is refused here)."""
        if self.closing:
            raise self.closed_error()
        if self.pending >= self.max_pending:
            raise self.full_error()
        fut: asyncio.Future[BatchResult] = loop.create_future()
        item.future = fut
        if self.admit(item):
            _wake_one(self.work)
        return fut

    async def wait_for_room(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait (or refuse) while ``max_pending`` writes are pending (``room_steps``)."""
        await run_async(self.room_steps(loop.time), self)

    def sleep_for_room(self, remaining: float | None) -> Any:
        """``room_steps``' wait: until a flush makes room."""
        assert self.loop is not None
        return self._sleep_on(self.loop, self.room, remaining)

    @staticmethod
    async def _sleep_on(loop: asyncio.AbstractEventLoop, waiters: deque[asyncio.Future[bool]],
                        timeout: float | None) -> None:
        """Wait until woken through ``waiters`` or ``timeout`` seconds passed."""
        fut: asyncio.Future[bool] = loop.create_future()
        waiters.append(fut)
        handle = None if timeout is None else loop.call_later(timeout, _wake, fut)
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()
            if not fut.done():  # cancelled: stop being a waiter
                fut.cancel()
                with contextlib.suppress(ValueError):
                    waiters.remove(fut)

    # ---- the flusher tasks ------------------------------------------------------

    async def _flusher(self, me: int) -> None:
        while True:
            batch = await self.take(me)
            if batch is None:
                return
            try:
                await self.flush_batch(me, batch)
            except asyncio.CancelledError:
                raise
            except BaseException:  # logged; each write of the batch got an error
                continue

    async def take(self, me: int) -> list[Item] | None:
        """Wait for a batch to flush; None when closed and nothing is queued."""
        loop = self.loop
        assert loop is not None
        while True:
            wait = self.wait_before_taking()
            if wait == 0:
                break
            if wait == -1:
                return None
            self.sleeping += 1
            try:
                await self._sleep_on(loop, self.work, None if wait is None else wait / 1e9)
            finally:
                self.sleeping -= 1
        batch, more = self.cut(me)
        if more:
            _wake_one(self.work)  # more than a batch was queued: a second flusher may start
        return batch

    async def flush_batch(self, me: int, batch: list[Item]) -> None:
        """Commit ``batch`` (or fail its writes); always resolves every write."""
        cancelled = 0
        live = []
        for it in batch:
            if it.future.cancelled():
                it.future = None  # withdrawn before its batch started: never written
                cancelled += 1
            else:
                live.append(it)
        try:
            if live:
                await run_async(self.batch_steps(me, live), self.io)
        finally:
            self.finish(me, batch, cancelled)

    def finish(self, me: int, batch: list[Item], cancelled: int) -> None:
        """Count a resolved batch, resolve its futures, wake who waits for room
        or for the batch."""
        committed = self.tally(me, batch)
        for it in batch:
            fut = it.future
            if fut is None or fut.done():
                continue  # withdrawn, or its caller was cancelled after the start
            # The future keeps the outcome; the item neither (see engine.py).
            error, it.error, it.future = it.error, None, None
            if error is None:
                fut.set_result(it.result)
            elif isinstance(error, Exception):
                fut.set_exception(error)
            else:  # the loop cancelled the flusher mid-batch
                lost = TransactionOutcomeUnknown(
                    f"batcher {self.name!r}: the event loop cancelled the flusher task while "
                    f"this write's batch ran ({type(error).__name__}); it may or may not have "
                    "been committed")
                lost.__cause__ = error
                fut.set_exception(lost)
        self.settle(me, batch, committed, cancelled)
        if self.room:
            _wake_one(self.room, len(batch))
        if self.done:
            _wake_all(self.done)

    # ---- flush / close ----------------------------------------------------------

    async def wait_resolved(self, target: int, timeout: float | None, what: str) -> None:
        loop = self.bind()
        deadline = None if timeout is None else loop.time() + timeout
        self.flushing += 1
        _wake_all(self.work)  # no max_delay wait while someone flushes
        try:
            while self.unresolved_below(target):
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"batcher {self.name!r}: {what} timed out after {timeout:g} s "
                        f"with {self.pending} writes pending")
                await self._sleep_on(loop, self.done, remaining)
        finally:
            self.flushing -= 1

    async def close(self, timeout: float | None) -> None:
        self.closing = True
        if self.loop is None:
            return  # never used: no tasks
        target = self.seq
        _wake_all(self.work)
        _wake_all(self.room)
        if any(t is asyncio.current_task() for t in self.tasks):
            return  # closed from a done-callback's task: the flusher drains on its way out
        start = self.loop.time()
        await self.wait_resolved(target, timeout, "close")
        remaining = None if timeout is None else max(0.0, timeout - (self.loop.time() - start))
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=remaining)

    def close_soon(self) -> None:
        """The batcher was garbage-collected: flush in the background, then stop
        (from any thread)."""
        loop = self.loop
        if loop is None:
            self.closing = True
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs any more
            loop.call_soon_threadsafe(self._close_now)

    def _close_now(self) -> None:
        self.closing = True
        _wake_all(self.work)
        _wake_all(self.room)


class AsyncBatcher:
    """Group commit over an asyncio pool: ``await execute``/``submit`` from
    many tasks, committed together by flusher tasks (see the module
    documentation). The options, their defaults and their errors are
    ``Batcher``'s; statements use the client's placeholders (asyncpg ``$1``,
    psycopg and asyncmy ``%s``, aiosqlite ``?``)."""

    #: Retry backoff (see ``Batcher.BACKOFF``); waits are ``asyncio.sleep``.
    BACKOFF: Callable[[int], float] | None = None

    def __init__(self, pool: ConnectionSource, *, max_batch: int = 500, max_delay: float = 0.005,
                 flushers: int = 1, max_pending: int | None = 10_000, on_full: str = "block",
                 full_timeout: float | None = 30.0, key: Callable[[Any], Any] | None = None,
                 max_retries: int = 5, name: str | None = None, **unknown: object) -> None:
        from fastpool.writes.batch import Batcher

        self.name, self.pool, self._key, options = check_options(
            "AsyncBatcher", pool, max_batch=max_batch, max_delay=max_delay, flushers=flushers,
            max_pending=max_pending, on_full=on_full, full_timeout=full_timeout, key=key,
            max_retries=max_retries, name=name, unknown=unknown)
        backoff = self.BACKOFF if self.BACKOFF is not None else Batcher.BACKOFF
        self._engine = AsyncEngine(
            pool, backoff=delay_function(backoff, name="AsyncBatcher.BACKOFF"), **options)
        self._finalizer = weakref.finalize(self, self._engine.close_soon)
        self._finalizer.atexit = False

    def submit(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = (), *,
               key: Any = None) -> asyncio.Future[BatchResult]:
        """Queue one write; its asyncio future gets the BatchResult once
        committed, or the write's own error. Cancelling the future before its
        batch starts leaves the write unwritten. Raises BatcherClosed after
        ``close()`` and BatcherFull when ``max_pending`` writes are pending
        (``submit`` cannot wait for room; ``await execute()`` can)."""
        engine = self._engine
        return engine.enqueue(make_item(sql, params, key, self._key), engine.bind())

    async def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = (), *,
                      key: Any = None) -> BatchResult:
        """Queue one write and wait until it is committed: its BatchResult, or
        its own error. Cancelled before its batch starts, the write is
        withdrawn (never written); after, it goes on with its batch."""
        engine = self._engine
        item = make_item(sql, params, key, self._key)
        loop = engine.bind()
        if engine.pending >= engine.max_pending and not engine.closing:
            await engine.wait_for_room(loop)
        return await engine.enqueue(item, loop)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every write submitted before this call is committed or
        failed; TimeoutError after ``timeout`` seconds (the writes go on)."""
        limit = optional_seconds("timeout", timeout, allow_zero=True, owner="AsyncBatcher")
        await self._engine.wait_resolved(self._engine.seq, limit, "flush")

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting writes, commit every pending one, stop the flusher
        tasks. Submitting afterwards raises BatcherClosed; closing again is
        harmless. TimeoutError after ``timeout`` seconds (the tasks go on)."""
        await self._engine.close(
            optional_seconds("timeout", timeout, allow_zero=True, owner="AsyncBatcher"))

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._engine.closing

    def stats(self, reset: bool = False) -> BatchStats:
        """A snapshot of the counters; ``reset`` starts them again from zero."""
        return self._engine.stats(reset)

    async def __aenter__(self) -> AsyncBatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        e = self._engine
        state = "closed" if e.closing else "open"
        return (f"<AsyncBatcher {self.name!r} {state}: pending={e.pending} "
                f"queued={len(e.queue)} flushers={e.flushers} max_batch={e.max_batch}>")

