"""One transaction runner, one client layer: the rules that had drifted apart
between ``pool.transaction`` and the batcher, each tested once, through both,
on the real servers.

* An unavailable server (PostgreSQL 57P03, MariaDB 1040) is retried by both.
* SQLite opens transactions by one rule: the connection's isolation level,
  and a transaction known to write (a batch) takes the write lock up front.
* sqlite3's ``autocommit=True`` (Python 3.12+): a batch is really committed.
* ``fastpool.writes.bulk.copy_rows(pool, ...)`` invalidates the result cache
  like ``pool.copy_rows``.
* A client fastpool does not know gets one error, from every feature.
"""

from __future__ import annotations

import sqlite3
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import fastpool
from fastpool import ConnectError, UnsupportedClient
from fastpool.writes import bulk
from tests.fix_db import Db, q
from tests.fix_proxy import COMMIT_MESSAGES, proxied

# ---- UNAVAILABLE is retried by transactions and batches alike ------------------------


@pytest.fixture
def flaky(server_db: Db) -> Iterator[str]:
    """A SQL function that fails like a server taking no work now
    (PostgreSQL 57P03 cannot_connect_now, MariaDB 1040 too many connections)
    the first time it is called, and returns 1 afterwards. It counts calls
    with a sequence, which a rollback does not undo."""
    name = f"fp_flaky_{uuid.uuid4().hex[:8]}"
    admin = server_db.admin
    if server_db.kind == "postgresql":
        q(admin, f"CREATE SEQUENCE {name}_seq")
        q(admin, f"""CREATE FUNCTION {name}() RETURNS int LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('{name}_seq') = 1 THEN
                    RAISE EXCEPTION 'the database system is starting up (injected)'
                        USING ERRCODE = '57P03';
                END IF;
                RETURN 1;
            END $$""")
    else:
        q(admin, f"CREATE SEQUENCE {name}_seq")
        q(admin, f"""CREATE FUNCTION {name}() RETURNS INT NOT DETERMINISTIC
            BEGIN
                IF NEXTVAL({name}_seq) = 1 THEN
                    SIGNAL SQLSTATE '08004'
                        SET MYSQL_ERRNO = 1040, MESSAGE_TEXT = 'Too many connections (injected)';
                END IF;
                RETURN 1;
            END""")
    try:
        yield name
    finally:
        q(admin, f"DROP FUNCTION IF EXISTS {name}")
        q(admin, f"DROP SEQUENCE IF EXISTS {name}_seq")


def test_the_flaky_function_raises_what_the_client_calls_unavailable(server_db, flaky):
    pool = server_db.make(max_size=1)
    with pytest.raises(Exception) as info:
        pool.fetchval(f"SELECT {flaky}()")
    assert pool.classify(info.value) is fastpool.ErrorKind.UNAVAILABLE


def test_a_transaction_is_run_again_when_the_server_was_unavailable(server_db, flaky):
    pool = server_db.make(max_size=2)
    calls = []

    def work(conn):
        calls.append(1)
        q(conn, f"INSERT INTO {server_db.table} VALUES (1, {flaky}())")
        return "done"

    assert pool.transaction(work, backoff=0) == "done"
    assert len(calls) == 2
    assert server_db.rows() == [(1, 1)]
    assert pool.query_stats()["transactions"]["retries"] == 1


def test_a_batch_is_run_again_when_the_server_was_unavailable(server_db, flaky):
    pool = server_db.make(max_size=2)
    with pool.batcher() as batcher:
        result = batcher.execute(f"INSERT INTO {server_db.table} VALUES (%s, {flaky}())", (7,))
        assert result.rowcount == 1
        assert batcher.stats().retries == 1
    assert server_db.rows() == [(7, 1)]


# ---- SQLite: one rule for BEGIN ----------------------------------------------------------


def _locked_out(path: str, statement: str) -> int:
    """1 if another connection cannot run ``statement`` on ``path`` now (a
    SELECT: an EXCLUSIVE lock is held; BEGIN IMMEDIATE: the write lock is)."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute(statement).fetchall()
        if other.in_transaction:
            other.execute("ROLLBACK")
        return 0
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return 1
    finally:
        other.close()


def _reader_is_locked_out(path: str) -> int:
    return _locked_out(path, "SELECT count(*) FROM sqlite_master")


def _writer_is_locked_out(path: str) -> int:
    return _locked_out(path, "BEGIN IMMEDIATE")


@pytest.fixture
def exclusive_pool(make_pool, db_path):
    """A rollback-journal SQLite pool whose transactions are EXCLUSIVE; its
    connections know SQL functions that look at the locks from outside."""

    def configure(conn):
        conn.create_function("fp_reader_locked_out", 0, lambda: _reader_is_locked_out(db_path))

    pool = make_pool(url=f"sqlite:///{db_path}?isolation_level=exclusive&journal_mode=delete",
                     configure=configure, max_size=1)
    pool.execute("CREATE TABLE fp_tx_begin (id INTEGER PRIMARY KEY, locked INTEGER)")
    return pool


def test_sqlite_transactions_begin_with_the_connections_isolation_level(exclusive_pool):
    assert exclusive_pool.transaction(
        lambda conn: conn.execute("SELECT fp_reader_locked_out()").fetchone()[0]) == 1


def test_sqlite_batches_begin_with_the_connections_isolation_level(exclusive_pool):
    """EXCLUSIVE was configured: a batch may not weaken it to IMMEDIATE."""
    with exclusive_pool.batcher() as batcher:
        batcher.execute("INSERT INTO fp_tx_begin VALUES (?, fp_reader_locked_out())", (1,))
    assert exclusive_pool.fetch("SELECT id, locked FROM fp_tx_begin") == [(1, 1)]


def test_a_sqlite_batch_takes_the_write_lock_at_begin_and_a_transaction_when_it_writes(
        make_pool, db_path):
    """Deferred (the default): a batch writes, so it begins IMMEDIATE and
    waits in the busy handler rather than failing a lock upgrade; a
    transaction that has not written yet holds no write lock."""

    def configure(conn):
        conn.create_function("fp_writer_locked_out", 0, lambda: _writer_is_locked_out(db_path))

    pool = make_pool(url=f"sqlite:///{db_path}", configure=configure, max_size=1)
    pool.execute("CREATE TABLE fp_tx_lock (id INTEGER PRIMARY KEY, locked INTEGER)")
    assert pool.transaction(
        lambda conn: conn.execute("SELECT fp_writer_locked_out()").fetchone()[0]) == 0
    with pool.batcher() as batcher:
        batcher.execute("INSERT INTO fp_tx_lock VALUES (?, fp_writer_locked_out())", (1,))
    assert pool.fetch("SELECT id, locked FROM fp_tx_lock") == [(1, 1)]


# ---- sqlite3 autocommit=True (Python 3.12+) ------------------------------------------------


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sqlite3's autocommit is Python 3.12+")
def test_batches_on_sqlite_autocommit_connections_are_really_committed(make_pool, db_path):
    """With autocommit=True, sqlite3's commit() does nothing: a batch that
    relied on it left its explicit transaction open, and the pool rolled it
    back on release, after telling the caller it was committed."""
    setup = sqlite3.connect(db_path)
    setup.execute("CREATE TABLE fp_tx_auto (id INTEGER PRIMARY KEY)")
    setup.commit()
    setup.close()
    pool = make_pool(connect=lambda: sqlite3.connect(db_path, autocommit=True,
                                                     check_same_thread=False), max_size=2)
    with pool.batcher() as batcher:
        assert batcher.execute("INSERT INTO fp_tx_auto VALUES (?)", (1,)).rowcount == 1
    pool.transaction(lambda conn: conn.execute("INSERT INTO fp_tx_auto VALUES (2)"))
    check = sqlite3.connect(db_path)
    try:
        assert check.execute("SELECT id FROM fp_tx_auto ORDER BY id").fetchall() == [(1,), (2,)]
    finally:
        check.close()


# ---- the result cache sees every bulk load -----------------------------------------------


def test_copy_rows_as_a_function_invalidates_the_result_cache(make_pool, db_path):
    pool = make_pool(url=f"sqlite:///{db_path}", max_size=2)
    pool.execute("CREATE TABLE fp_tx_load (id INTEGER PRIMARY KEY)")
    assert pool.fetchval("SELECT count(*) FROM fp_tx_load", cache_ttl=60) == 0
    assert bulk.copy_rows(pool, "fp_tx_load", ["id"], [(1,), (2,)]) == 2
    assert pool.fetchval("SELECT count(*) FROM fp_tx_load", cache_ttl=60) == 2
    bulk.copy_records(pool, "fp_tx_load", [{"id": 3}])
    assert pool.fetchval("SELECT count(*) FROM fp_tx_load", cache_ttl=60) == 3


# ---- a client fastpool does not know --------------------------------------------------------


class OtherClientConnection:
    """A DB-API connection of a client library fastpool has no adapter for
    (here a thin one over a real SQLite database)."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False)

    def cursor(self) -> Any:
        return self._conn.cursor()

    def commit(self) -> None:
        self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()

    def close(self) -> None:
        self._conn.close()


def test_an_unknown_dbapi_client_gets_one_error_naming_it_from_each_feature(make_pool, db_path):
    pool = make_pool(connect=lambda: OtherClientConnection(db_path), max_size=2)
    pool.execute("CREATE TABLE fp_tx_other (id INTEGER PRIMARY KEY)")
    pool.transaction(lambda conn: conn.cursor().execute("INSERT INTO fp_tx_other VALUES (1)"))
    assert pool.fetch("SELECT id FROM fp_tx_other") == [(1,)]
    with pool.batcher() as batcher:
        assert batcher.execute("INSERT INTO fp_tx_other VALUES (?)", (2,)).rowcount == 1
    for feature, call in [("explain", lambda: pool.explain("SELECT 1")),
                          ("bulk loads", lambda: pool.copy_rows("fp_tx_other", ["id"], [(3,)]))]:
        with pytest.raises(UnsupportedClient) as info:
            call()
        message = str(info.value)
        assert feature in message and "OtherClientConnection" in message, message
    assert pool.fetchval("SELECT count(*) FROM fp_tx_other") == 2


def test_a_factory_returning_no_connection_fails_fast_naming_what_it_returned(make_pool):
    pool = make_pool(connect=lambda: object(), min_size=0, max_size=1, timeout=10)
    with pytest.raises(ConnectError, match=r"builtins\.object objects are not DB-API"):
        pool.acquire()


def test_a_factory_switching_client_libraries_is_refused(make_pool, db_path):
    made = []

    def connect():
        made.append(1)
        if len(made) == 1:
            return sqlite3.connect(db_path, check_same_thread=False)
        return OtherClientConnection(db_path)

    pool = make_pool(connect=connect, min_size=1, max_size=2, timeout=10)
    pool.wait(5)
    held = pool.acquire()
    try:
        # One connection is open (it could come back): the caller waits out
        # its timeout, told why no new one could be opened.
        with pytest.raises(fastpool.PoolTimeout,
                           match="OtherClientConnection connection, but this pool's "
                                 "connections are sqlite3 connections"):
            pool.acquire(timeout=1)
    finally:
        pool.release(held)


# ---- bulk loads go through the runner too ------------------------------------------------

def test_a_bulk_load_whose_commit_is_lost_is_outcome_unknown(server_db, request):
    """Cut by a TCP proxy as COMMIT goes out: all rows or none, and the caller
    told it cannot know which (the same rule as pool.transaction's)."""
    db = server_db
    proxy, url = proxied(db.kind, request)
    pool = db.make(url, max_size=1)
    proxy.cut_on(COMMIT_MESSAGES[db.kind], after_reply=False)
    with pytest.raises(fastpool.TransactionOutcomeUnknown) as info:
        pool.copy_rows(db.table, ["id", "n"], ((i, i) for i in range(100)))
    assert pool.classify(info.value.__cause__) is fastpool.ErrorKind.CONNECTION_LOST
    assert db.rows() == []  # the COMMIT never reached the server
    assert pool.copy_rows(db.table, ["id", "n"], [(1, 1)]) == 1  # the pool works on


def test_a_sqlite_bulk_load_begins_like_a_batch(exclusive_pool):
    """EXCLUSIVE configured: the load's transaction is EXCLUSIVE too."""
    def rows():
        yield (1, _reader_is_locked_out(exclusive_pool.driver.database))

    exclusive_pool.copy_rows("fp_tx_begin", ["id", "locked"], rows())
    assert exclusive_pool.fetch("SELECT id, locked FROM fp_tx_begin") == [(1, 1)]


# ---- MySQL/MariaDB: BEGIN only where the connection would autocommit ------------------------


def test_mysql_transactions_can_choose_their_isolation_level_first(mysql_db):
    """No BEGIN is sent on a connection outside autocommit: the first statement
    opens the transaction, so SET TRANSACTION ISOLATION LEVEL still applies
    (after an explicit BEGIN MariaDB refuses it with error 1568). Seen from
    outside: a SERIALIZABLE read locks the row it read against a writer."""
    mysql_db.insert((1, 0))
    pool = mysql_db.make(max_size=1)
    q(mysql_db.admin, "SET SESSION innodb_lock_wait_timeout = 1")

    def fn(conn):
        q(conn, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        q(conn, f"SELECT n FROM {mysql_db.table} WHERE id = 1")
        try:
            q(mysql_db.admin, f"UPDATE {mysql_db.table} SET n = n + 1 WHERE id = 1")
        except Exception as exc:
            return exc.args[0]  # 1205: the read's shared lock held the writer off
        return "the writer was not blocked"

    assert pool.transaction(fn) == 1205


# ---- sqlite3's autocommit=True, on every Python ------------------------------------------


class AutocommitConnection(sqlite3.Connection):
    """What Python 3.12's ``sqlite3.connect(..., autocommit=True)`` does, on any
    Python: the module opens no transaction, and commit() and rollback() do
    nothing (COMMIT and ROLLBACK must be sent as statements)."""

    autocommit = True

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


def test_batches_and_loads_on_autocommit_style_sqlite_connections_are_committed(
        make_pool, db_path):
    setup = sqlite3.connect(db_path)
    setup.execute("CREATE TABLE fp_tx_auto2 (id INTEGER PRIMARY KEY)")
    setup.commit()
    setup.close()
    pool = make_pool(connect=lambda: sqlite3.connect(
        db_path, isolation_level=None, check_same_thread=False, factory=AutocommitConnection),
        max_size=2)
    with pool.batcher() as batcher:
        assert batcher.execute("INSERT INTO fp_tx_auto2 VALUES (?)", (1,)).rowcount == 1
    pool.transaction(lambda conn: conn.execute("INSERT INTO fp_tx_auto2 VALUES (2)"))
    pool.copy_rows("fp_tx_auto2", ["id"], [(3,)])
    check = sqlite3.connect(db_path)
    try:
        assert check.execute("SELECT id FROM fp_tx_auto2 ORDER BY id").fetchall() == [
            (1,), (2,), (3,)]
    finally:
        check.close()


class YetAnotherClientConnection(OtherClientConnection):
    """A second client library fastpool does not know."""


def test_a_factory_switching_between_unknown_client_libraries_is_refused(make_pool, db_path):
    made = []

    def connect():
        made.append(1)
        cls = OtherClientConnection if len(made) == 1 else YetAnotherClientConnection
        return cls(db_path)

    pool = make_pool(connect=connect, min_size=1, max_size=2, timeout=10)
    pool.wait(5)
    held = pool.acquire()
    try:
        with pytest.raises(fastpool.PoolTimeout, match="YetAnotherClientConnection connection, "
                                                       "but this pool's connections are"):
            pool.acquire(timeout=1)
    finally:
        pool.release(held)


def test_a_with_block_whose_commit_is_lost_is_outcome_unknown(server_db, request):
    """``with pool.connection()`` commits on success: a connection lost while
    that COMMIT is in flight gets the runner's rule too, not a bare driver
    error that reads like a failure."""
    db = server_db
    proxy, url = proxied(db.kind, request)
    pool = db.make(url, max_size=1)
    proxy.cut_on(COMMIT_MESSAGES[db.kind], after_reply=False)
    with pytest.raises(fastpool.TransactionOutcomeUnknown,
                       match=r"with pool\.connection\(\)") as info, pool.connection() as conn:
        q(conn, f"INSERT INTO {db.table} VALUES (1, 1)")
    assert pool.classify(info.value.__cause__) is fastpool.ErrorKind.CONNECTION_LOST
    assert db.rows() == []  # the COMMIT never reached the server
    assert pool.stats().in_use == 0
    with pool.connection() as conn:  # the broken connection was replaced
        assert q(conn, "SELECT 1") == [(1,)]
