"""Interruptions and races found in review: no slot is ever stranded or lost."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

import fastpool
from fastpool import PoolClosed, PoolTimeout
from tests.fix_pool import wait_until


class ControlledProbe(fastpool.SQLiteDriver):
    """SQLite, with a probe that tests can interrupt, block or break."""

    def __init__(self, path):
        super().__init__(path)
        self.mode = "ok"
        self.entered = threading.Event()
        self.proceed = threading.Event()

    def probe(self, conn, timeout=None):
        if self.mode == "interrupt":
            raise KeyboardInterrupt
        if self.mode in ("block", "block-then-fail"):
            self.entered.set()
            self.proceed.wait(10)
            if self.mode == "block-then-fail":
                raise sqlite3.OperationalError("broken (injected)")
        super().probe(conn)


def slot_states(pool):
    return [pool._slot_info(i)["state"] for i in range(pool.max_size)]


def test_interrupted_check_strands_no_slot(pool_cls, db_path):
    driver = ControlledProbe(db_path)
    pool = pool_cls(driver=driver, min_size=3, max_size=3)
    try:
        pool.wait(5)
        driver.mode = "interrupt"
        with pytest.raises(KeyboardInterrupt):
            pool.check()
        s = pool.stats()
        assert s.in_use == 0 and s.opened == s.closed_total + s.open
        checking = fastpool._core.SLOT_STATES.index("checking")
        assert checking not in slot_states(pool)
    finally:
        pool.close()
    assert pool.stats().open == 0


def test_close_during_a_slow_check_leaves_nothing_open(pool_cls, db_path):
    driver = ControlledProbe(db_path)
    pool = pool_cls(driver=driver, min_size=2, max_size=2)
    pool.wait(5)
    conns = [pool.acquire(), pool.acquire()]
    for c in conns:
        pool.release(c)
    driver.mode = "block"
    checker = threading.Thread(target=pool.check)
    checker.start()
    assert driver.entered.wait(5)
    closer = threading.Thread(target=pool.close, kwargs={"timeout": 0.2})
    closer.start()
    wait_until(lambda: pool.closed)
    driver.proceed.set()  # the probes succeed, but the pool is closed now
    checker.join(5)
    closer.join(5)
    pool.close()
    s = pool.stats()
    assert (s.open, s.idle) == (0, 0), s
    for c in conns:
        with pytest.raises(sqlite3.ProgrammingError):
            c.execute("SELECT 1")


def test_caller_waiting_when_the_pool_closes_gets_pool_closed_not_a_timeout(pool_cls, db_path):
    driver = ControlledProbe(db_path)
    pool = pool_cls(driver=driver, min_size=1, max_size=1, alive_bypass=0)
    pool.wait(5)
    driver.mode = "block-then-fail"
    outcome = []

    def borrow():
        try:
            pool.acquire(timeout=30)
        except Exception as exc:
            outcome.append(type(exc))

    t = threading.Thread(target=borrow)
    t.start()
    assert driver.entered.wait(5)
    pool.close(timeout=0)
    driver.proceed.set()
    t.join(10)
    assert outcome == [PoolClosed]  # not a PoolTimeout after waiting out its deadline


def test_waiting_callers_do_not_defeat_the_reconnect_backoff(pool_cls, counting_connect):
    class SlowRetry(pool_cls):
        RECONNECT_BACKOFF = fastpool.ExponentialBackoff(base=60.0, cap=60.0, jitter=0.1)

    counting_connect.fail_next = 10**6
    pool = SlowRetry(connect=counting_connect, min_size=0, max_size=2, timeout=0.01)
    try:
        with pytest.raises(PoolTimeout):
            pool.acquire()
        wait_until(lambda: counting_connect.attempts == 1)
        for _ in range(30):
            with pytest.raises(PoolTimeout):
                pool.acquire()
        assert counting_connect.attempts == 1  # the next try is 60 s away, callers or not
    finally:
        pool.close()


def test_unfixable_connect_error_does_not_fail_waiters_while_connections_are_open(
        pool_cls, db_path, tmp_path):
    class BreaksAfterFirst(fastpool.SQLiteDriver):
        def connect(self):
            if getattr(self, "opened", False):
                return sqlite3.connect(str(tmp_path / "missing" / "x.db"))  # real failure
            self.opened = True
            return super().connect()

    pool = pool_cls(driver=BreaksAfterFirst(db_path), min_size=1, max_size=2, timeout=5)
    try:
        pool.wait(5)
        held = pool.acquire()
        got = []
        waiter = threading.Thread(target=lambda: got.append(pool.acquire(timeout=5)))
        waiter.start()
        wait_until(lambda: pool.stats().connect_errors >= 1)
        time.sleep(0.05)
        pool.release(held)  # the waiter is served by this, not failed by the connect error
        waiter.join(5)
        assert got == [held]
        pool.release(held)
    finally:
        pool.close()


def test_misuse_of_internals_raises_instead_of_crashing(make_pool):
    pool = make_pool()
    with pytest.raises(TypeError), fastpool._core.ConnectionContext():
        pass
    with pytest.raises(IndexError):
        pool._conn_at(5000)
    with pytest.raises(IndexError):
        pool._verdict(-1)
    with pytest.raises(ValueError, match="no counter"):
        pool._count(40, 7)
    with pytest.raises(TypeError):
        pool._pop_or_wait(None, 0)


def test_one_context_object_cannot_be_entered_by_two_threads(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    held = pool.acquire()
    cm = pool.connection(timeout=5)
    errors = []
    t = threading.Thread(target=lambda: errors.append(cm.__enter__()))
    t.start()
    wait_until(lambda: pool.stats().waiting == 1)
    with pytest.raises(RuntimeError, match="already entered"):
        cm.__enter__()
    pool.release(held)
    t.join(5)
    assert errors == [held]
    cm.__exit__(None, None, None)
    assert pool.stats().in_use == 0


def test_huge_timeouts_are_refused_consistently(make_pool):
    pool = make_pool()
    for bad in (float("inf"), 1e10):
        with pytest.raises(fastpool.ConfigError, match="at most"):
            pool.acquire(timeout=bad)
