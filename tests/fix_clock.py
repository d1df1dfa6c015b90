"""A clock that moves only when a test says so (registered as a plugin in conftest).

Tests of lifetime, idle time and TTLs advance it instead of sleeping::

    def test_expires(make_pool, fake_clock):
        pool = make_pool(min_size=0, max_lifetime=60)
        pool._set_clock(fake_clock)          # the core reads int nanoseconds
        ...
        fake_clock.advance(61)

    cache = ResultCache(clock=fake_clock.seconds)   # float seconds

It starts at the real monotonic reading, so that timestamps taken from the
real clock before it was installed still compare sensibly with its own.
"""

from __future__ import annotations

import time

import pytest


class FakeClock:
    """A monotonic clock that stands still until ``advance()``.

    Calling it returns int nanoseconds (what ``PoolCore._set_clock`` takes);
    ``seconds()`` returns float seconds (what ``ResultCache(clock=...)`` takes).
    Reading it from other threads (a pool's worker) is safe: one int attribute.
    """

    def __init__(self, start_ns: int | None = None) -> None:
        self.ns = time.monotonic_ns() if start_ns is None else int(start_ns)

    def __call__(self) -> int:
        return self.ns

    def seconds(self) -> float:
        return self.ns / 1e9

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (a monotonic clock never goes back)."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self.ns += round(seconds * 1e9)

    def __repr__(self) -> str:
        return f"<FakeClock {self.ns} ns>"


@pytest.fixture
def fake_clock() -> FakeClock:
    """A FakeClock starting now; install it with ``pool._set_clock(fake_clock)``."""
    return FakeClock()
