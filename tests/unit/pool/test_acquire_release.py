"""Borrowing and returning: the basic contract users rely on."""

from __future__ import annotations

import sqlite3
import threading

import pytest

import fastpool
from fastpool import ConnectionAlreadyReleased, ForeignConnection, PoolClosed


def test_acquire_returns_the_drivers_own_connection(make_pool):
    pool = make_pool(min_size=1, max_size=2)
    conn = pool.acquire()
    try:
        assert type(conn) is sqlite3.Connection
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
    finally:
        pool.release(conn)


def test_lifo_reuses_the_most_recently_returned_connection(make_pool):
    pool = make_pool(min_size=0, max_size=2)
    a = pool.acquire()
    b = pool.acquire()
    pool.release(a)
    pool.release(b)
    assert pool.acquire() is b
    assert pool.acquire() is a
    pool.release(a)
    pool.release(b)


def test_fifo_reuses_the_least_recently_returned_connection(make_pool):
    pool = make_pool(min_size=0, max_size=2, reuse="fifo")
    a = pool.acquire()
    b = pool.acquire()
    pool.release(a)
    pool.release(b)
    first = pool.acquire()
    assert first is a
    pool.release(first)


def test_double_release_is_refused(make_pool):
    pool = make_pool()
    conn = pool.acquire()
    pool.release(conn)
    with pytest.raises(ConnectionAlreadyReleased, match="already released"):
        pool.release(conn)
    # The refused call changed nothing: the connection is still lendable once.
    again = pool.acquire()
    assert again is conn
    pool.release(again)


def test_foreign_connection_is_refused(make_pool, db_path):
    pool = make_pool()
    other = make_pool()
    theirs = other.acquire()
    raw = sqlite3.connect(db_path)
    try:
        with pytest.raises(ForeignConnection, match="not handed out by pool"):
            pool.release(theirs)
        with pytest.raises(ForeignConnection):
            pool.release(raw)
        with pytest.raises(ForeignConnection):
            pool.release(object())
        with pytest.raises(ForeignConnection):
            pool.release([])  # unhashable
    finally:
        other.release(theirs)
        raw.close()


def test_connection_context_commits_on_success(make_pool):
    pool = make_pool(max_size=2)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    with pool.connection() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.in_transaction
    # Seen from a different connection, so it was committed, not just kept open.
    a = pool.acquire()
    b = pool.acquire()
    try:
        assert a.execute("SELECT count(*) FROM t").fetchone() == (1,)
        assert b.execute("SELECT count(*) FROM t").fetchone() == (1,)
    finally:
        pool.release(a)
        pool.release(b)


def test_connection_context_rolls_back_on_exception(make_pool):
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(ZeroDivisionError), pool.connection() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        1 / 0  # noqa: B018
    with pool.connection() as conn:
        assert not conn.in_transaction
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_release_rolls_back_an_open_transaction(make_pool):
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    conn = pool.acquire()
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction
    pool.release(conn)
    again = pool.acquire()
    assert again is conn  # reset, not discarded
    assert not again.in_transaction
    assert again.execute("SELECT count(*) FROM t").fetchone() == (0,)
    pool.release(again)


def test_connection_closed_by_the_user_is_discarded_on_release(make_pool):
    pool = make_pool(min_size=0, max_size=1)
    conn = pool.acquire()
    conn.close()
    pool.release(conn)
    s = pool.stats()
    assert s.open == 0
    assert s.closed["reset"] == 1
    with pool.connection() as fresh:
        assert fresh is not conn
        assert fresh.execute("SELECT 1").fetchone() == (1,)


def test_reset_callback_runs_on_every_return(make_pool):
    seen = []
    pool = make_pool(max_size=1, reset=seen.append)
    for _ in range(3):
        with pool.connection():
            pass
    assert len(seen) == 3


def test_failing_reset_callback_discards_the_connection(make_pool):
    def reset(conn):
        raise RuntimeError("cannot reset")

    pool = make_pool(min_size=0, max_size=1, reset=reset)
    conn = pool.acquire()
    pool.release(conn)
    assert pool.stats().closed["reset"] == 1
    assert pool.stats().open == 0


def test_configure_runs_once_per_new_connection(make_pool):
    configured = []

    def configure(conn):
        conn.execute("PRAGMA user_version = 7")
        configured.append(conn)

    pool = make_pool(min_size=0, max_size=2, configure=configure)
    a = pool.acquire()
    b = pool.acquire()
    pool.release(a)
    pool.release(b)
    with pool.connection() as c:
        assert c.execute("PRAGMA user_version").fetchone() == (7,)
    assert len(configured) == 2


def test_custom_connect_factory(pool_cls, counting_connect):
    pool = pool_cls(connect=counting_connect, min_size=0, max_size=2, timeout=5)
    try:
        with pool.connection() as conn:
            assert conn in counting_connect.opened
        assert counting_connect.attempts == 1
    finally:
        pool.close()


def test_closed_pool_refuses_acquire(make_pool):
    pool = make_pool()
    pool.close()
    with pytest.raises(PoolClosed, match="closed"):
        pool.acquire()
    with pytest.raises(PoolClosed):
        pool.connection().__enter__()
    pool.close()  # twice is harmless


def test_connection_returned_after_close_is_closed(make_pool):
    pool = make_pool(max_size=1)
    conn = pool.acquire()
    closer = threading.Thread(target=pool.close, kwargs={"timeout": 5.0})
    closer.start()
    pool.release(conn)
    closer.join()
    assert pool.stats().open == 0
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")


def test_pool_is_a_context_manager(pool_cls, db_path):
    driver = fastpool.drivers.from_url(f"sqlite:///{db_path}")
    with pool_cls(driver=driver) as pool, pool.connection() as conn:
        conn.execute("SELECT 1")
    assert pool.closed


def test_create_pool_from_url(db_path):
    with fastpool.create_pool(f"sqlite:///{db_path}", max_size=3, name="orders") as pool:
        assert pool.name == "orders"
        assert pool.max_size == 3
        assert "orders" in repr(pool)
        with pool.connection() as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_connection_context_works_with_exit_stack_and_explicit_calls(make_pool):
    import contextlib

    pool = make_pool(max_size=1)
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(pool.connection())
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert pool.stats().in_use == 1
    assert pool.stats().in_use == 0
    cm = pool.connection()
    conn = cm.__enter__()
    assert pool.stats().in_use == 1
    with pytest.raises(RuntimeError, match="already entered"):
        cm.__enter__()
    assert cm.__exit__(None, None, None) is False
    assert pool.stats().in_use == 0
    # A context object can be used again once it has exited.
    with cm as again:
        assert again is conn


def test_connection_context_does_not_swallow_exceptions(make_pool):
    pool = make_pool(max_size=1)
    with pytest.raises(KeyError), pool.connection():
        raise KeyError("boom")
    assert pool.stats().in_use == 0


def test_failed_commit_on_exit_raises_and_rolls_back(make_pool, db_path):
    """A commit that fails on leaving the block raises, and the slot is settled."""
    import sqlite3 as sq

    pool = make_pool(url=f"sqlite:///{db_path}?foreign_keys=on", max_size=1)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE child (pid INTEGER REFERENCES parent(id) "
                     "DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(sq.IntegrityError), pool.connection() as conn:
        conn.execute("INSERT INTO child VALUES (42)")  # checked only at COMMIT
    s = pool.stats()
    assert s.in_use == 0
    with pool.connection() as conn:
        assert not conn.in_transaction
        assert conn.execute("SELECT count(*) FROM child").fetchone() == (0,)


def test_interrupted_reset_callback_settles_the_slot(make_pool):
    def reset(conn):
        raise KeyboardInterrupt

    pool = make_pool(min_size=0, max_size=1, reset=reset)
    conn = pool.acquire()
    with pytest.raises(KeyboardInterrupt):
        pool.release(conn)
    s = pool.stats()
    assert (s.in_use, s.open, s.closed["reset"]) == (0, 0, 1)


def test_failing_configure_counts_as_a_connect_error_and_is_retried(pool_cls, db_path):
    calls = []

    def configure(conn):
        calls.append(conn)
        if len(calls) == 1:
            raise sqlite3.OperationalError("setup failed (injected)")

    class QuickRetry(pool_cls):
        RECONNECT_BACKOFF = fastpool.ExponentialBackoff(base=0.01, cap=10.0, jitter=0.1)

    pool = QuickRetry(driver=fastpool.drivers.from_url(f"sqlite:///{db_path}"),
                      configure=configure, min_size=1, max_size=1)
    try:
        pool.wait(5)
        s = pool.stats()
        assert s.connect_errors == 1 and s.opened == 1 and s.open == 1
        with pytest.raises(sqlite3.ProgrammingError):
            calls[0].execute("SELECT 1")  # the failed one was closed
    finally:
        pool.close()
