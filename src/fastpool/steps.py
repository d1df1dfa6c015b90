"""Rules written once, run by a thread or by asyncio.

A flow that decides things *and* does I/O (the transaction runner, the pool's
slow paths: probing, resetting, connecting, waiting) is written once, as a
generator that yields the I/O it needs as ``(operation, *args)`` and receives
the result (or has the operation's exception thrown into it)::

    def _release_steps(self, idx, commit):
        if commit:
            yield ("commit", conn)          # the I/O, by name
        ...
        return outcome                      # the flow's result

``run(steps, io)`` performs each operation by calling ``io.<operation>(*args)``;
``run_async(steps, io)`` awaits it. (A contended asyncio acquire does not run
its flow: the flow's rules are plain methods, which the asyncio policy calls
around the core's own await; see ARCHITECTURE.md.) The sync pool and the
asyncio pool differ only in their ``io`` objects, never in the rules (psycopg runs its libpq
protocol the same way: generators in ``psycopg.generators``, driven by
``wait`` or ``wait_async``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

__all__ = ["Steps", "run", "run_async"]

R = TypeVar("R")

#: A flow: yields ``(operation, *args)``, receives each operation's result, returns R.
Steps = Generator[tuple[Any, ...], Any, R]


def run(steps: Steps[R], io: Any) -> R:
    """Run ``steps`` to its end, performing each operation with ``io`` (blocking)."""
    try:
        op = next(steps)
        while True:
            try:
                result = getattr(io, op[0])(*op[1:])
            except BaseException as exc:
                op = steps.throw(exc)
            else:
                op = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        steps.close()


async def run_async(steps: Steps[R], io: Any) -> R:
    """Run ``steps`` to its end, awaiting each operation of ``io`` (a coroutine
    function, or a plain function whose result is used as it is)."""
    try:
        op = next(steps)
        while True:
            try:
                result = getattr(io, op[0])(*op[1:])
                if hasattr(result, "__await__"):  # inspect.isawaitable, in C
                    result = await result
            except BaseException as exc:
                op = steps.throw(exc)
            else:
                op = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        steps.close()
