"""The injectable clock: lifetime, idle time and TTLs tested without sleeping.

The core reads CLOCK_MONOTONIC unless ``_set_clock(clock)`` gives it another
clock (int nanoseconds); ``_now_ns()`` is what the policy stamps connections
with. ``fake_clock`` (tests/fix_clock.py) stands still until advanced.
"""

from __future__ import annotations

import sqlite3
import time
from types import ModuleType
from typing import Any

import pytest

import fastpool
from fastpool.query.results import ResultCache, cache_key
from tests.fix_clock import FakeClock
from tests.fix_pool import wait_until

HOUR_NS = 3600 * 10**9


# ---- the core alone ------------------------------------------------------------


class SlowPathPolicy:
    """Records the slots the core could not vouch for (and leaves them CHECKING)."""

    def _acquire_slow(self, timeout: float | None, idx: int) -> Any:
        self.slow.append(idx)  # type: ignore[attr-defined]
        return None


def bare_core(core: ModuleType, conn: sqlite3.Connection, *, lifetime_s: float) -> Any:
    pool = type("Pool", (SlowPathPolicy, core.PoolCore), {})()
    pool.slow = []
    pool._set_policy(lifo=True, bypass_ns=HOUR_NS, max_open=1, status_attr="in_transaction",
                     idle_status=False, always_slow_release=False, track_holders=False)
    now = pool._now_ns()
    pool._add(conn, conn, now, now + int(lifetime_s * 1e9))
    return pool


def test_the_core_reads_the_injected_clock_and_the_monotonic_one_again(core):
    pool = core.PoolCore()
    assert abs(pool._now_ns() - time.monotonic_ns()) < 10**9  # CLOCK_MONOTONIC by default
    clock = FakeClock(start_ns=5 * 10**9)
    pool._set_clock(clock)
    assert pool._now_ns() == 5 * 10**9
    clock.advance(1.25)
    assert pool._now_ns() == 6_250_000_000
    pool._set_clock(None)
    assert abs(pool._now_ns() - time.monotonic_ns()) < 10**9


def test_past_its_lifetime_a_connection_leaves_the_fast_path_without_sleeping(core, connect):
    conn = connect()
    pool = bare_core(core, conn, lifetime_s=60)
    clock = FakeClock(start_ns=pool._now_ns())
    pool._set_clock(clock)
    clock.advance(59)
    assert pool.acquire() is conn  # within its lifetime: lent by the core itself
    pool.release(conn)
    clock.advance(2)
    assert pool.acquire() is None  # the policy is asked ...
    idx = pool.slow[-1]
    assert idx >= 0 and pool._verdict(idx) == core.EXPIRED  # ... about an expired slot
    pool._discard(idx, core.REASON_LIFETIME)


def test_idle_time_is_measured_on_the_injected_clock(core, connect):
    conn = connect()
    pool = bare_core(core, conn, lifetime_s=3600)
    clock = FakeClock(start_ns=pool._now_ns())
    pool._set_clock(clock)
    clock.advance(29)
    assert pool._take_idle(max_idle_ns=30 * 10**9) == []
    clock.advance(2)
    [(idx, verdict)] = pool._take_idle(max_idle_ns=30 * 10**9)
    assert verdict == core.IDLE_TOO_LONG
    pool._discard(idx, core.REASON_IDLE)


def test_switching_clocks_keeps_what_is_under_way(core, connect):
    conn = connect()
    pool = bare_core(core, conn, lifetime_s=60)  # stamped on the monotonic clock
    clock = FakeClock(start_ns=0)  # a clock far from the monotonic one
    pool._set_clock(clock)
    info = pool._slot_info(0)
    assert 59 * 10**9 < info["deadline_ns"] - pool._now_ns() <= 60 * 10**9
    assert 0 <= pool._now_ns() - info["last_used_ns"] < 10**9
    clock.advance(59)
    assert pool.acquire() is conn
    pool.release(conn)
    pool._set_clock(None)  # and back: the remaining second of lifetime carries over
    remaining = pool._slot_info(0)["deadline_ns"] - pool._now_ns()
    assert 0 < remaining <= 10**9


class BreakableClock(FakeClock):
    broken = False

    def __call__(self) -> int:
        if self.broken:
            raise RuntimeError("the clock broke")
        return self.ns


def test_a_clock_that_fails_loses_no_connection(core, connect):
    conn = connect()
    pool = bare_core(core, conn, lifetime_s=60)
    clock = BreakableClock(start_ns=pool._now_ns())
    pool._set_clock(clock)
    clock.broken = True
    with pytest.raises(RuntimeError, match="the clock broke"):
        pool.acquire()
    assert pool._sizes() == (1, 1, 0, 0)  # still idle: open, idle, in use, waiting
    clock.broken = False
    assert pool.acquire() is conn
    clock.broken = True
    with pytest.raises(RuntimeError, match="the clock broke"):
        pool.release(conn)
    assert pool._sizes() == (1, 0, 1, 0)  # still lent: the caller may release it again
    clock.broken = False
    pool.release(conn)
    assert pool._sizes() == (1, 1, 0, 0)


@pytest.mark.parametrize("bad", ["monotonic", 10**9])
def test_a_clock_must_be_callable(core, bad):
    with pytest.raises(TypeError, match="clock must be None or a callable"):
        core.PoolCore()._set_clock(bad)


@pytest.mark.parametrize(("reading", "error"), [(1.5, TypeError), ("1", TypeError),
                                                (1 << 63, OverflowError)])
def test_a_clock_must_return_int_nanoseconds(core, reading, error):
    pool = core.PoolCore()
    with pytest.raises(error):
        pool._set_clock(lambda: reading)
    assert abs(pool._now_ns() - time.monotonic_ns()) < 10**9  # refused: unchanged


# ---- whole pools ------------------------------------------------------------------


@pytest.fixture
def pool_cls(pool_cls: type[Any]) -> type[Any]:
    """fix_pool's pool classes (both cores) with a 10 ms maintenance timer, so
    the worker's lifetime and idle checks come at once."""
    return type(f"Quick{pool_cls.__name__}", (pool_cls,), {"MAINTENANCE_INTERVAL": 0.01})


def test_the_policy_stamps_connections_with_the_core_clock(make_pool):
    clock = FakeClock(start_ns=10**15)  # days away from the monotonic clock
    pool = make_pool(min_size=0, max_size=1, max_lifetime=60)
    pool._set_clock(clock)
    conn = pool.acquire()
    try:
        info = pool._slot_info(pool._slot_of(conn))
        assert info["created_ns"] == 10**15
        assert 10**15 + 54 * 10**9 <= info["deadline_ns"] <= 10**15 + 60 * 10**9  # jittered
    finally:
        pool.release(conn)


def test_a_connection_past_max_lifetime_is_replaced_on_acquire(make_pool, fake_clock):
    pool = make_pool(min_size=0, max_size=1, max_lifetime=60)
    pool._set_clock(fake_clock)
    first = pool.acquire()
    pool.release(first)
    fake_clock.advance(30)
    with pool.connection() as conn:
        assert conn is first
    fake_clock.advance(31)
    second = pool.acquire()
    try:
        assert second is not first
        assert pool.stats().closed["lifetime"] == 1
    finally:
        pool.release(second)


def test_a_connection_that_expires_while_in_use_is_closed_on_return(make_pool, fake_clock):
    pool = make_pool(min_size=0, max_size=1, max_lifetime=60)
    pool._set_clock(fake_clock)
    conn = pool.acquire()
    fake_clock.advance(61)
    pool.release(conn)
    assert pool.stats().closed["lifetime"] == 1
    assert pool.stats().open == 0


def test_an_idle_connection_past_max_lifetime_is_retired_by_the_worker(make_pool, fake_clock):
    pool = make_pool(min_size=1, max_size=1, max_lifetime=60)
    pool._set_clock(fake_clock)
    pool.wait(5)
    fake_clock.advance(61)
    wait_until(lambda: pool.stats().closed["lifetime"] == 1)
    pool.wait(5)  # and replaced, up to min_size
    assert pool.stats().opened == 2


def test_idle_connections_past_max_idle_are_retired_down_to_min_size(make_pool, fake_clock):
    pool = make_pool(min_size=1, max_size=3, max_idle=600)
    pool._set_clock(fake_clock)
    conns = [pool.acquire() for _ in range(3)]
    for conn in conns:
        pool.release(conn)
    fake_clock.advance(599)
    time.sleep(0.1)  # some 10 ms maintenance rounds: none may retire anything yet
    assert pool.stats().closed["idle"] == 0
    fake_clock.advance(2)
    wait_until(lambda: pool.stats().closed["idle"] == 2)
    s = pool.stats()
    assert (s.open, s.idle) == (1, 1)


# ---- the result cache ------------------------------------------------------------


def test_result_cache_entries_expire_on_the_injected_clock(connect, fake_clock):
    conn = connect()
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    cache = ResultCache(clock=fake_clock.seconds)
    key = cache_key("all", "SELECT count(*) FROM t", None)

    def fetch() -> Any:
        return cache.get_or_run(key, 5.0, frozenset({"t"}),
                                lambda: conn.execute("SELECT count(*) FROM t").fetchall())

    assert fetch() == [(0,)]
    conn.execute("INSERT INTO t VALUES (1)")  # behind the cache's back
    conn.commit()
    fake_clock.advance(4.9)
    assert fetch() == [(0,)]  # still cached
    fake_clock.advance(0.2)
    assert fetch() == [(1,)]  # expired: read again
    assert cache.stats()["expirations"] == 1


def test_result_cache_clock_must_be_callable():
    with pytest.raises(fastpool.ConfigError, match="clock must be callable"):
        ResultCache(clock=5.0)  # type: ignore[arg-type]


def test_switching_the_result_cache_clock_keeps_each_entry_time_left(connect):
    conn = connect()
    cache = ResultCache()  # time.monotonic
    key = cache_key("all", "SELECT 1", None)
    reads: list[int] = []

    def fetch() -> Any:
        return cache.get_or_run(key, 60.0, frozenset(),
                                lambda: reads.append(1) or conn.execute("SELECT 1").fetchall())

    fetch()
    clock = FakeClock(start_ns=0)  # far from the monotonic clock
    cache.set_clock(clock.seconds)
    clock.advance(59)
    fetch()
    assert len(reads) == 1  # about a minute was left: still cached
    clock.advance(2)
    fetch()
    assert len(reads) == 2
