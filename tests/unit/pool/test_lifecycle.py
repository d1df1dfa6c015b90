"""Sizing, lifetime, idle, health, drain, resize, reconnect and leaks."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import pytest

import fastpool
from fastpool import ConnectError, PoolTimeout
from tests.fix_pool import wait_until


def test_wait_opens_min_size_in_the_background(make_pool):
    pool = make_pool(min_size=3, max_size=5)
    pool.wait(timeout=5)
    s = pool.stats()
    assert (s.open, s.idle, s.opened) == (3, 3, 3)


def test_grows_on_demand_up_to_max_size_only(make_pool):
    pool = make_pool(min_size=0, max_size=3)
    conns = [pool.acquire() for _ in range(3)]
    assert len({id(c) for c in conns}) == 3
    with pytest.raises(PoolTimeout):
        pool.acquire(timeout=0.05)
    assert pool.stats().open == 3
    for c in conns:
        pool.release(c)


def test_max_lifetime_replaces_connections_on_return_and_on_a_timer(make_pool, fake_clock):
    pool = make_pool(min_size=1, max_size=1, max_lifetime=100)
    pool._set_clock(fake_clock)  # lifetimes pass without sleeping
    pool.LIFETIME_JITTER = 0.0
    first = pool.acquire()
    fake_clock.advance(150)
    pool.release(first)  # expired while in use: closed on return
    assert pool.stats().closed["lifetime"] == 1
    pool.wait(5)
    second = pool.acquire()
    assert second is not first
    pool.release(second)
    # Idle past its lifetime: the maintenance timer retires and replaces it.
    fake_clock.advance(150)
    pool._kick()  # wake the worker now rather than at its next tick
    wait_until(lambda: pool.stats().closed["lifetime"] >= 2)
    pool.wait(5)
    assert pool.stats().open == 1


def test_max_lifetime_is_jittered_so_connections_do_not_expire_together(make_pool):
    pool = make_pool(min_size=0, max_size=20, max_lifetime=100.0)
    conns = [pool.acquire() for _ in range(20)]
    try:
        infos = [pool._slot_info(pool._slot_of(c)) for c in conns]
        lives = [(i["deadline_ns"] - i["created_ns"]) / 1e9 for i in infos]
        assert all(100.0 * (1 - pool.LIFETIME_JITTER) <= life <= 100.0 for life in lives)
        assert len({round(life, 3) for life in lives}) > 10
    finally:
        for c in conns:
            pool.release(c)


def test_idle_connections_above_min_size_are_closed_after_max_idle(make_pool):
    pool = make_pool(min_size=1, max_size=4, max_idle=0.05)
    conns = [pool.acquire() for _ in range(4)]
    for c in conns:
        pool.release(c)
    assert pool.stats().opened == 4
    wait_until(lambda: pool.stats().open == 1)
    s = pool.stats()
    assert s.closed["idle"] == 3
    assert s.open == 1


def test_probe_after_idle_discards_a_broken_connection_transparently(make_pool):
    # min_size=0: the replacement is opened for the waiting caller and handed
    # to it directly (with min_size=1 the worker could shelve it first).
    pool = make_pool(min_size=0, max_size=1, alive_bypass=0)
    conn = pool.acquire()
    pool.release(conn)
    conn.close()  # broken behind the pool's back
    with pool.connection(timeout=5) as fresh:
        assert fresh is not conn
        assert fresh.execute("SELECT 1").fetchone() == (1,)
    s = pool.stats()
    assert s.closed["broken"] == 1
    assert s.probes == 1  # the replacement came straight from connect: no probe
    assert s.probe_time > 0
    for _ in range(3):  # alive_bypass=0: every borrow from the idle ring probes
        with pool.connection():
            pass
    assert pool.stats().probes == 4


def test_no_probe_within_the_bypass_window(make_pool):
    pool = make_pool(min_size=1, max_size=1, alive_bypass=60)
    for _ in range(10):
        with pool.connection():
            pass
    assert pool.stats().probes == 0


def test_drain_replaces_every_connection(make_pool):
    pool = make_pool(min_size=2, max_size=3)
    pool.wait(5)
    in_use = pool.acquire()
    idle = pool.acquire()
    pool.release(idle)
    pool.drain()
    assert pool.stats().closed["drained"] == 1  # the idle one, at once
    pool.release(in_use)  # the busy one, on return
    assert pool.stats().closed["drained"] == 2
    pool.wait(5)
    a, b = pool.acquire(), pool.acquire()
    assert not {id(a), id(b)} & {id(in_use), id(idle)}
    pool.release(a)
    pool.release(b)


def test_resize_shrinks_idle_now_and_busy_on_return(make_pool):
    pool = make_pool(min_size=0, max_size=4)
    conns = [pool.acquire() for _ in range(4)]
    pool.release(conns[0])
    pool.resize(0, 2)
    s = pool.stats()
    assert (s.open, s.in_use, s.closed["resize"]) == (3, 3, 1)  # the idle one, now
    pool.release(conns[1])  # busy when resized: closed on return
    s = pool.stats()
    assert (s.open, s.closed["resize"]) == (2, 2)
    pool.release(conns[2])  # within the new size: kept
    pool.release(conns[3])
    s = pool.stats()
    assert (s.open, s.idle, s.closed["resize"]) == (2, 2, 2)


def test_resize_grows_to_the_new_min_size(make_pool):
    pool = make_pool(min_size=0, max_size=2)
    pool.resize(4, 6)
    pool.wait(5)
    assert pool.stats().open == 4
    assert pool.max_size == 6


def test_check_discards_broken_idle_connections(make_pool):
    pool = make_pool(min_size=2, max_size=2)
    pool.wait(5)
    a, b = pool.acquire(), pool.acquire()
    pool.release(a)
    pool.release(b)
    a.close()
    assert pool.check() == 1
    assert pool.stats().closed["broken"] == 1
    pool.wait(5)
    assert pool.stats().open == 2


def test_reconnect_with_backoff_then_recover(pool_cls, counting_connect):
    class QuickRetry(pool_cls):
        RECONNECT_BACKOFF = fastpool.ExponentialBackoff(base=0.01, cap=10.0, jitter=0.1)

    counting_connect.fail_next = 3
    pool = QuickRetry(connect=counting_connect, min_size=1, max_size=1, timeout=5)
    try:
        pool.wait(5)
        assert counting_connect.attempts == 4
        # Each retry waited at least the (jittered) doubling delay: 10, 20, 40 ms.
        gaps = [b - a for a, b in zip(counting_connect.times, counting_connect.times[1:],
                                      strict=False)]
        for k, gap in enumerate(gaps):
            assert gap >= 0.9 * 0.01 * 2**k, gaps
        s = pool.stats()
        assert s.connect_errors == 3
        assert s.open == 1
    finally:
        pool.close()


def test_failing_connects_back_off_instead_of_storming(pool_cls, counting_connect):
    counting_connect.fail_next = 10**6
    failed = []
    pool = pool_cls(connect=counting_connect, min_size=1, max_size=4, timeout=0.5,
                    reconnect_timeout=0.2, reconnect_failed=failed.append)
    try:
        with pytest.raises(PoolTimeout) as info:
            pool.acquire()
        assert "connecting fails: OperationalError" in str(info.value)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        # 0.1, 0.2, 0.4 s ... backoff: a handful of attempts in half a second.
        assert 2 <= counting_connect.attempts <= 6
        wait_until(lambda: failed, timeout=5)
        assert failed[0] is pool
    finally:
        pool.close()


def test_unfixable_connect_error_fails_fast(pool_cls, tmp_path):
    import fastpool

    driver = fastpool.drivers.from_url(f"sqlite:///{tmp_path}/missing-dir/x.db")
    pool = pool_cls(driver=driver, min_size=1, max_size=2, timeout=30)
    try:
        # A ConnectError, not a PoolTimeout: it failed before its 30 s deadline.
        with pytest.raises(ConnectError, match="unable to open database file") as info:
            pool.acquire()
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        with pytest.raises(ConnectError):
            pool.wait(timeout=5)
        assert pool.stats().open == 0
    finally:
        pool.close()


def test_leak_warning_names_the_acquiring_code_once(make_pool, caplog):
    pool = make_pool(min_size=1, max_size=1, leak_threshold=0.05)
    caplog.set_level(logging.WARNING, logger="fastpool")
    conn = pool.acquire()  # this line must appear in the warning
    # The worker counts the leak, then logs it: wait for the record itself
    # (a loaded machine may pause the worker between the two).
    wait_until(lambda: any("possible leak" in r.getMessage() for r in caplog.records))
    time.sleep(0.1)  # a second round would warn again by now, were it to
    pool.release(conn)
    warnings = [r for r in caplog.records if "possible leak" in r.getMessage()]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "test_leak_warning_names_the_acquiring_code_once" in text
    assert "conn = pool.acquire()  # this line must appear" in text
    assert pool.stats().leaks == 1


def test_holders_report_where_connections_were_acquired(make_pool):
    pool = make_pool(min_size=1, max_size=1, leak_threshold=60)
    conn = pool.acquire()
    try:
        (holder,) = pool.holders()
        assert "test_holders_report_where_connections_were_acquired" in holder["acquired_at"]
        assert holder["held"] >= 0
    finally:
        pool.release(conn)
    assert pool.holders() == []


def test_waiter_takes_a_returned_connection_instead_of_waiting_for_a_slow_connect(
        pool_cls, db_path):
    opening = threading.Event()
    connecting = threading.Event()
    proceed = threading.Event()
    concurrent = []
    active = [0]

    def slow_connect():
        active[0] += 1
        concurrent.append(active[0])
        try:
            if opening.is_set():  # every connection after the first is slow
                connecting.set()
                proceed.wait(10)
            opening.set()
            return sqlite3.connect(db_path, check_same_thread=False)
        finally:
            active[0] -= 1

    pool = pool_cls(connect=slow_connect, min_size=1, max_size=3, timeout=10)
    try:
        pool.wait(5)
        held = pool.acquire()
        got = []
        waiter = threading.Thread(target=lambda: got.append(pool.acquire(timeout=10)))
        waiter.start()
        wait_until(lambda: pool.stats().waiting == 1)
        assert connecting.wait(5)  # the worker is now stuck in the slow connect
        pool.release(held)
        waiter.join(timeout=5)
        assert got == [held]  # served by the release, not by the connect
        pool.release(got[0])
    finally:
        proceed.set()
        pool.close()
    # One background worker: never two connects at the same time.
    assert max(concurrent) == 1


def test_interrupted_probe_retires_the_connection(pool_cls, db_path):
    import fastpool

    class InterruptingProbe(fastpool.SQLiteDriver):
        interrupt = False

        def probe(self, conn, timeout=None):
            if self.interrupt:
                raise KeyboardInterrupt
            super().probe(conn)

    driver = InterruptingProbe(db_path)
    pool = pool_cls(driver=driver, min_size=1, max_size=1, alive_bypass=0, timeout=5)
    try:
        pool.wait(5)
        driver.interrupt = True
        with pytest.raises(KeyboardInterrupt):
            pool.acquire()
        s = pool.stats()
        assert (s.in_use, s.closed["broken"]) == (0, 1)
        assert s.opened == s.closed_total + s.open  # nothing left half-checked
        driver.interrupt = False
        pool.wait(5)  # replaced
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def test_wait_times_out_with_the_pools_state_and_refuses_a_closed_pool(pool_cls, db_path):
    from fastpool import PoolClosed

    gate = threading.Event()

    def connect():
        gate.wait(10)
        return sqlite3.connect(db_path, check_same_thread=False)

    pool = pool_cls(connect=connect, min_size=2, max_size=2)
    try:
        with pytest.raises(PoolTimeout, match="open 0"):
            pool.wait(timeout=0.05)
    finally:
        gate.set()
        pool.close()
    with pytest.raises(PoolClosed):
        pool.wait(timeout=1)


def test_default_bypass_window_probes_only_connections_idle_longer(make_pool, fake_clock):
    pool = make_pool(min_size=1, max_size=1)  # alive_bypass defaults to 0.5 s
    pool._set_clock(fake_clock)
    pool.wait(5)
    for _ in range(3):
        with pool.connection():
            pass
        fake_clock.advance(0.4)  # idle 0.4 s each time: inside the window
    assert pool.stats().probes == 0
    fake_clock.advance(0.2)  # 0.6 s idle: probed before it is lent again
    with pool.connection():
        pass
    assert pool.stats().probes == 1


def test_close_warns_about_connections_still_in_use_and_closes_them_on_return(
        make_pool, caplog):
    pool = make_pool(min_size=2, max_size=2)
    pool.wait(5)
    held = pool.acquire()
    caplog.set_level(logging.WARNING, logger="fastpool")
    pool.close(timeout=0)
    assert any("1 connection(s) still in use" in r.getMessage() for r in caplog.records)
    assert pool.stats().closed["closed"] == 1  # the idle one
    pool.release(held)
    s = pool.stats()
    assert (s.open, s.closed["closed"]) == (0, 2)
