"""SQLite, the zero-setup default, under many threads."""

from __future__ import annotations

import threading

import pytest

import fastpool
from fastpool import ConfigError


def test_many_threads_write_through_a_small_pool_without_losing_rows(make_pool):
    pool = make_pool(min_size=2, max_size=4, timeout=30)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE events (thread INTEGER, n INTEGER, PRIMARY KEY (thread, n))")
    errors = []

    def writer(t):
        try:
            for n in range(100):
                with pool.connection() as conn:
                    conn.execute("INSERT INTO events VALUES (?, ?)", (t, n))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT thread) FROM events").fetchone() \
            == (1600, 16)
    s = pool.stats()
    assert s.acquisitions == 1602 and s.timeouts == 0 and s.open <= 4


def test_readers_and_writers_share_a_wal_database(make_pool):
    pool = make_pool(min_size=4, max_size=4, timeout=30)
    with pool.connection() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER)")
        conn.executemany("INSERT INTO kv VALUES (?, 0)", [(i,) for i in range(10)])
    stop = threading.Event()
    seen_sums = []

    def reader():
        while not stop.is_set():
            with pool.connection() as conn:
                seen_sums.append(conn.execute("SELECT sum(v) FROM kv").fetchone()[0])

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for r in readers:
        r.start()
    for _ in range(200):
        with pool.connection() as conn:
            conn.execute("UPDATE kv SET v = v + 1")  # one transaction: sums move by 10
    stop.set()
    for r in readers:
        r.join()
    assert seen_sums and all(s % 10 == 0 for s in seen_sums)  # never a torn update
    with pool.connection() as conn:
        assert conn.execute("SELECT sum(v) FROM kv").fetchone() == (2000,)


def test_memory_database_is_shared_by_every_pooled_connection(make_pool):
    pool = make_pool(url="sqlite:///:memory:", min_size=0, max_size=3)
    a = pool.acquire()
    a.execute("CREATE TABLE t (x)")
    a.execute("INSERT INTO t VALUES (1)")
    a.commit()
    b = pool.acquire()
    c = pool.acquire()
    try:
        assert b is not a and c is not a
        assert b.execute("SELECT x FROM t").fetchall() == [(1,)]
        assert c.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        for conn in (a, b, c):
            pool.release(conn)


def test_memory_database_survives_the_pool_shrinking_to_zero(make_pool):
    pool = make_pool(url="sqlite:///:memory:", min_size=0, max_size=2)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (42)")
    pool.drain()  # closes every pooled connection
    assert pool.stats().open == 0
    with pool.connection() as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]


def test_two_memory_pools_are_separate_databases():
    with fastpool.create_pool("sqlite:///:memory:") as p1, \
            fastpool.create_pool("sqlite:///:memory:") as p2:
        with p1.connection() as conn:
            conn.execute("CREATE TABLE only_in_p1 (x)")
        with p2.connection() as conn:
            tables = conn.execute("SELECT name FROM sqlite_master").fetchall()
        assert tables == []


def test_concurrent_writers_on_a_memory_database_wait_instead_of_failing(make_pool):
    pool = make_pool(url="sqlite:///:memory:?timeout=10", min_size=4, max_size=4, timeout=30)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE t (x)")

    def writer():
        for i in range(50):
            with pool.connection() as conn:
                conn.execute("INSERT INTO t VALUES (?)", (i,))

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (200,)


def test_url_options_reach_the_connection(make_pool, db_path):
    pool = make_pool(url=f"sqlite:///{db_path}?foreign_keys=on&synchronous=normal&timeout=2")
    with pool.connection() as conn:
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL


def test_isolation_journal_and_busy_timeout_options(make_pool, db_path):
    pool = make_pool(url=f"sqlite:///{db_path}?isolation_level=autocommit"
                         "&journal_mode=delete&timeout=2.5")
    with pool.connection() as conn:
        assert conn.isolation_level is None
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (2500,)
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        assert not conn.in_transaction  # autocommit: nothing left to commit


def test_absolute_and_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with fastpool.create_pool("sqlite:///rel.db") as pool, pool.connection() as conn:
        conn.execute("CREATE TABLE t (x)")
    assert (tmp_path / "rel.db").exists()
    absolute = tmp_path / "sub" / "abs.db"
    absolute.parent.mkdir()
    with fastpool.create_pool(f"sqlite:///{absolute}") as pool, pool.connection() as conn:
        conn.execute("CREATE TABLE t (x)")
    assert absolute.exists()


def test_sqlite_url_with_host_is_refused():
    with pytest.raises(ConfigError, match="no host"):
        fastpool.create_pool("sqlite://db.example/x.db")
