"""A wait for a hand-off interrupted at its edges (a signal's KeyboardInterrupt
lands at any Python call) never loses the connection, never leaves a phantom
waiter in the queue, and never grows the pool's record of hand-offs.

The interruption is raised by a trace function at the call of a given policy
method, which is where CPython delivers a pending signal. Both front ends,
both cores (threads: ``make_pool``; asyncio: ``run_pools``)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.fix_pool import wait_until


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt (which pytest itself would catch)."""


def interrupt_at(name: str, when: Callable[[Any], bool] = lambda frame: True) -> Any:
    """A trace function raising Interrupt at the first call of ``name`` (a
    function's name) for which ``when(frame)`` holds."""

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code.co_name == name and when(frame):
            sys.settrace(None)
            raise Interrupt(f"interrupted at {name}")
        return None

    return tracer


def at_the_deadline(frame: Any) -> bool:
    """In ``_after_wait`` of a wait that timed out (``woken`` False)."""
    caller = frame.f_back
    return caller is not None and caller.f_code.co_name == "_after_wait" \
        and caller.f_locals.get("woken") is False


def settled(pool: Any, idle: int, in_use: int) -> None:
    s = pool.stats()
    assert (s.idle, s.in_use, s.waiting) == (idle, in_use, 0), s
    assert len(pool._handoffs) == 0, [w.state_name for w in pool._handoffs]


def test_interrupted_as_the_handed_connection_is_taken_gives_it_back(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    held = pool.acquire()
    got: list[Any] = []

    def waiter() -> None:
        sys.settrace(interrupt_at("_after_wait"))
        try:
            got.append(pool.acquire(timeout=10))
        except Interrupt as exc:
            got.append(exc)
        finally:
            sys.settrace(None)

    t = threading.Thread(target=waiter)
    t.start()
    wait_until(lambda: pool.stats().waiting == 1)
    pool.release(held)  # handed to the waiter, which is interrupted before taking it
    t.join()
    assert isinstance(got[0], Interrupt)
    settled(pool, idle=1, in_use=0)
    assert pool.acquire(timeout=0) is held
    pool.release(held)


def test_interrupted_at_the_deadline_leaves_the_queue(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    held = pool.acquire()
    sys.settrace(interrupt_at("_state_text", at_the_deadline))
    try:
        try:
            pool.acquire(timeout=0.05)
        except Interrupt:
            pass
        else:  # pragma: no cover - the trace function always fires
            raise AssertionError("the wait was not interrupted")
    finally:
        sys.settrace(None)
    settled(pool, idle=0, in_use=1)
    pool.release(held)  # to the ring, not to a phantom waiter
    settled(pool, idle=1, in_use=0)


class FailingClock:
    """The pool's clock, failing once armed on its second read: the core's fast
    path reads it first, then the queueing (``_pop_or_wait``) reads it."""

    def __init__(self) -> None:
        self.reads = 0
        self.armed = False

    def __call__(self) -> int:
        self.reads += 1
        if self.armed and self.reads == 2:
            raise RuntimeError("the injected clock failed")
        return time.monotonic_ns()


def test_a_failure_while_queueing_leaves_no_record(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    held = pool.acquire()
    clock = FailingClock()
    pool._set_clock(clock)
    for _ in range(5):
        clock.reads, clock.armed = 0, True
        try:
            pool.acquire(timeout=0.2)
        except RuntimeError:
            pass
        else:  # pragma: no cover
            raise AssertionError("the clock did not fail")
    clock.armed = False
    settled(pool, idle=0, in_use=1)
    pool.release(held)
    settled(pool, idle=1, in_use=0)


def test_async_interrupted_as_the_handed_connection_is_taken_gives_it_back(run_pools):
    async def body(make: Any) -> None:
        pool = await make(min_size=1, max_size=1)
        held = await pool.acquire()

        async def waiter() -> Any:
            sys.settrace(interrupt_at("_after_wait"))
            try:
                return await pool.acquire(timeout=10)
            except Interrupt as exc:
                return exc
            finally:
                sys.settrace(None)

        task = asyncio.ensure_future(waiter())
        while pool.stats().waiting != 1:
            await asyncio.sleep(0.005)
        await pool.release(held)  # handed over; the waiter is interrupted as it resumes
        assert isinstance(await task, Interrupt)
        settled(pool, idle=1, in_use=0)
        assert await pool.acquire(timeout=0) is held
        await pool.release(held)

    run_pools(body)


def test_async_interrupted_at_the_deadline_leaves_the_queue(run_pools):
    async def body(make: Any) -> None:
        pool = await make(min_size=1, max_size=1)
        held = await pool.acquire()
        sys.settrace(interrupt_at("_state_text", at_the_deadline))
        try:
            try:
                await pool.acquire(timeout=0.05)
            except Interrupt:
                pass
            else:  # pragma: no cover
                raise AssertionError("the wait was not interrupted")
        finally:
            sys.settrace(None)
        settled(pool, idle=0, in_use=1)
        await pool.release(held)
        settled(pool, idle=1, in_use=0)

    run_pools(body)


def test_async_a_failure_while_queueing_leaves_no_record(run_pools):
    async def body(make: Any) -> None:
        pool = await make(min_size=1, max_size=1)
        held = await pool.acquire()
        clock = FailingClock()
        pool._set_clock(clock)
        for _ in range(5):
            clock.reads, clock.armed = 0, True
            try:
                await pool.acquire(timeout=0.2)
            except RuntimeError:
                pass
            else:  # pragma: no cover
                raise AssertionError("the clock did not fail")
        clock.armed = False
        settled(pool, idle=0, in_use=1)
        await pool.release(held)
        settled(pool, idle=1, in_use=0)

    run_pools(body)
