"""MariaDB through mysqlclient, on the machine's real server.

Round trips are counted by the server itself: the session status counters
``Com_rollback`` and ``Questions`` of the pooled connection.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import pytest

import fastpool
from fastpool import ConfigError, ConnectError, ErrorKind, PoolTimeout
from fastpool.drivers import _mysqlstatus_py, from_url
from tests.fix_db import (
    MYSQL_SOCKET,
    free_port,
    hammer,
    mysql_kill,
    mysql_query,
    need_driver,
    need_socket,
)

MySQLdb = need_driver("MySQLdb", "mysql")


def session_counter(conn: Any, name: str) -> int:
    """A session status counter; reading it costs the one query it counts."""
    return int(mysql_query(conn, f"SHOW SESSION STATUS LIKE '{name}'")[0][1])


@pytest.fixture
def innodb_table(mysql_admin: Any) -> str:
    mysql_query(mysql_admin, "CREATE TABLE IF NOT EXISTS fp_rows "
                             "(id INT PRIMARY KEY, n INT) ENGINE=InnoDB")
    mysql_query(mysql_admin, "DELETE FROM fp_rows")
    mysql_query(mysql_admin, "INSERT INTO fp_rows VALUES (1, 0), (2, 0)")
    return "fp_rows"


# ---- configuration ----------------------------------------------------------

def test_url_and_options_reach_the_connection(make_mysql_pool, mysql_url):
    pool = make_mysql_pool(f"{mysql_url}?init_command=SET%20@fp_init%3D42&connect_timeout=5",
                           sql_mode="ANSI_QUOTES", autocommit=True)
    with pool.connection() as conn:
        rows = mysql_query(conn, "SELECT @fp_init, @@character_set_client, @@autocommit, "
                                 "@@sql_mode")
        assert rows == [(42, "utf8mb4", 1, "ANSI_QUOTES")]
        assert mysql_query(conn, "SELECT CAST(%s AS CHAR)", ("🐘",)) == [("🐘",)]


def test_unix_socket_and_mariadb_scheme(make_mysql_pool):
    need_socket(MYSQL_SOCKET)
    pool = make_mysql_pool(f"mariadb://root@/test?unix_socket={MYSQL_SOCKET}")
    with pool.connection() as conn:
        assert "socket" in conn.get_host_info().lower()
        assert mysql_query(conn, "SELECT DATABASE()") == [("test",)]


@pytest.mark.parametrize(("url", "options", "message"), [
    ("mysql://root@127.0.0.1/test?max_sise=3", {}, "unknown URL option 'max_sise'"),
    ("mysql://root@127.0.0.1/test", {"pool_size": 3}, "unknown option 'pool_size'"),
    ("mysql://root@127.0.0.1:99999/test", {}, "invalid URL"),
    ("mysql://root@127.0.0.1/test", {"connect_timeout": "soon"}, "connect_timeout must be"),
    ("mysql://root@127.0.0.1/test", {"autocommit": "maybe"}, "autocommit must be true"),
    ("mysql://root@127.0.0.1/test", {"probe": "always"}, "probe must be 'ping' or 'local'"),
])
def test_bad_options_name_the_problem(url, options, message):
    with pytest.raises(ConfigError, match=message):
        fastpool.create_pool(url, **options)


def test_wrong_password_fails_fast_without_showing_it(pool_cls, mysql_url, caplog):
    secret = "wr0ng-pa55word"
    driver = from_url(mysql_url.replace("root@", f"root:{secret}@"))
    caplog.set_level(logging.DEBUG, logger="fastpool")
    pool = pool_cls(driver=driver, timeout=30)
    try:
        with pytest.raises(ConnectError, match="Access denied for user 'root'") as info:
            pool.acquire()  # fails at once, not after the 30 s timeout
        assert pool.classify(info.value.__cause__) is ErrorKind.AUTH
        assert pool.stats().connect_errors <= 3
        texts = [repr(pool), repr(driver), str(info.value), caplog.text, repr(pool.stats())]
        assert all(secret not in text for text in texts)
    finally:
        pool.close()


def test_unreachable_port_fails_fast_without_a_retry_storm(pool_cls):
    port = free_port()
    pool = pool_cls(driver=from_url(f"mysql://root@127.0.0.1:{port}/test"), timeout=30)
    try:
        with pytest.raises(ConnectError, match="Can't connect to server"):
            pool.acquire()
        before = pool.stats().connect_errors
        threading.Event().wait(1.0)
        assert pool.stats().connect_errors - before <= 5
    finally:
        pool.close()


# ---- return-time reset -------------------------------------------------------

def test_idle_connection_goes_back_without_a_rollback(make_mysql_pool, innodb_table):
    pool = make_mysql_pool(max_size=1)
    with pool.connection() as conn:
        rollbacks = session_counter(conn, "Com_rollback")
    for _ in range(20):
        conn = pool.acquire()
        mysql_query(conn, "SELECT 1")  # no table: no transaction opened
        pool.release(conn)
    with pool.connection() as conn:
        assert session_counter(conn, "Com_rollback") == rollbacks


def test_open_transaction_is_rolled_back_once_on_release(make_mysql_pool, innodb_table,
                                                         mysql_admin):
    pool = make_mysql_pool(max_size=1)
    conn = pool.acquire()
    rollbacks = session_counter(conn, "Com_rollback")
    mysql_query(conn, f"UPDATE {innodb_table} SET n = 99 WHERE id = 1")
    pool.release(conn)  # not committed: rolled back
    assert mysql_query(mysql_admin, f"SELECT n FROM {innodb_table} WHERE id = 1") == [(0,)]
    with pool.connection() as again:
        assert again is conn
        assert session_counter(again, "Com_rollback") == rollbacks + 1
        mysql_query(again, f"UPDATE {innodb_table} SET n = 7 WHERE id = 1")
    # `with` committed on success
    assert mysql_query(mysql_admin, f"SELECT n FROM {innodb_table} WHERE id = 1") == [(7,)]
    assert pool.stats().closed_total == 0


def test_without_the_status_reader_every_return_rolls_back(make_mysql_pool, monkeypatch):
    from fastpool.drivers import mysql as mysql_driver

    monkeypatch.setattr(mysql_driver, "_status_module", lambda: _NoReader)
    pool = make_mysql_pool(max_size=1)
    assert pool.driver.status_attr is None
    with pool.connection() as conn:
        rollbacks = session_counter(conn, "Com_rollback")
    conn = pool.acquire()
    pool.release(conn)
    with pool.connection() as conn:
        assert session_counter(conn, "Com_rollback") == rollbacks + 2


class _NoReader:
    """Stands for a mysqlclient built on Oracle's libmysqlclient: no mariadb_get_info."""

    @staticmethod
    def bind(library: str) -> bool:
        return False


def test_compiled_and_ctypes_status_readers_agree(mysql_url, innodb_table):
    try:
        from fastpool import _mysqlstatus as compiled
    except ImportError:
        pytest.skip("compiled _mysqlstatus not built")
    import MySQLdb._mysql as native

    assert compiled.bind(native.__file__) and _mysqlstatus_py.bind(native.__file__)
    conn = from_url(mysql_url).connect()
    readers = [compiled.ServerStatus(conn), _mysqlstatus_py.ServerStatus(conn)]

    def states() -> list[int]:
        return [r.trans for r in readers]

    assert states() == [0, 0]
    mysql_query(conn, f"SELECT * FROM {innodb_table}")
    assert states() == [1, 1]  # a read of an InnoDB table opens a transaction
    conn.rollback()
    assert states() == [0, 0]
    assert readers[0].socket == readers[1].socket >= 0
    conn.close()
    assert states() == [2, 2]  # broken: the client has no socket


# ---- probes -------------------------------------------------------------------

@pytest.mark.parametrize("probe", ["ping", "local"])
def test_probe_discards_a_killed_idle_connection(make_mysql_pool, mysql_admin, probe):
    pool = make_mysql_pool(max_size=1, alive_bypass=0, probe=probe)
    with pool.connection() as conn:
        cid = conn.thread_id()
    mysql_kill(mysql_admin, [cid])
    with pool.connection() as conn:
        assert conn.thread_id() != cid
        assert mysql_query(conn, "SELECT 1") == [(1,)]
    assert pool.stats().closed["broken"] == 1


# ---- error classification ------------------------------------------------------

def test_classify_query_errors_leave_the_connection_usable(make_mysql_pool, innodb_table):
    pool = make_mysql_pool(max_size=1)
    for sql in ("SELEC 1", "SELECT * FROM no_such_table",
                f"INSERT INTO {innodb_table} VALUES (1, 1)"):
        with pytest.raises(MySQLdb.Error) as info, pool.connection() as conn:
            mysql_query(conn, sql)
        assert pool.classify(info.value) is ErrorKind.QUERY, sql
    with pool.connection() as conn:
        assert mysql_query(conn, "SELECT 1") == [(1,)]
    assert pool.stats().closed_total == 0


def test_classify_deadlock_and_lock_wait_timeout_as_retryable(make_mysql_pool, innodb_table):
    pool = make_mysql_pool(min_size=2, max_size=2, init_command="SET innodb_lock_wait_timeout=1")
    a, b = pool.acquire(), pool.acquire()
    try:
        mysql_query(a, f"UPDATE {innodb_table} SET n = n + 1 WHERE id = 1")
        with pytest.raises(MySQLdb.OperationalError) as info:
            mysql_query(b, f"UPDATE {innodb_table} SET n = n + 1 WHERE id = 1")
        assert info.value.args[0] == 1205
        assert pool.classify(info.value) is ErrorKind.RETRYABLE
        b.rollback()

        mysql_query(b, f"UPDATE {innodb_table} SET n = n + 1 WHERE id = 2")
        errors: list[BaseException] = []

        def second_lock(conn: Any, row: int) -> None:
            try:
                mysql_query(conn, f"UPDATE {innodb_table} SET n = n + 1 WHERE id = %s", (row,))
            except MySQLdb.Error as exc:
                errors.append(exc)

        t = threading.Thread(target=second_lock, args=(a, 2))
        t.start()
        threading.Event().wait(0.2)  # let a queue behind b's lock first
        second_lock(b, 1)
        t.join(30)
        assert [e.args[0] for e in errors] == [1213]
        assert pool.classify(errors[0]) is ErrorKind.RETRYABLE
    finally:
        pool.release(a)
        pool.release(b)


def test_classify_connect_errors(mysql_url):
    port = free_port()
    cases = [
        (f"mysql://root@127.0.0.1:{port}/test", ErrorKind.UNREACHABLE),
        ("mysql://root@/test?unix_socket=/nonexistent.sock", ErrorKind.UNREACHABLE),
        (mysql_url.replace("root@", "root:bad@"), ErrorKind.AUTH),
        (mysql_url.rsplit("/", 1)[0] + "/no_such_db", ErrorKind.CONFIG),
    ]
    for url, kind in cases:
        driver = from_url(url)
        with pytest.raises(MySQLdb.OperationalError) as info:
            driver.connect()
        assert driver.classify(info.value) is kind, (url, info.value.args)


def test_classify_closed_connection_as_not_sent(make_mysql_pool):
    pool = make_mysql_pool(max_size=1)
    conn = pool.acquire()
    conn.close()
    with pytest.raises(MySQLdb.Error) as info:
        mysql_query(conn, "SELECT 1")
    assert pool.classify(info.value) is ErrorKind.NOT_SENT
    pool.release(conn)
    assert pool.stats().closed["broken"] == 1


# ---- recovery ---------------------------------------------------------------------

def test_killing_every_connection_idle_and_in_use(make_mysql_pool, mysql_admin):
    pool = make_mysql_pool(min_size=4, max_size=4)
    pool.wait()
    conns = [pool.acquire() for _ in range(4)]
    ids = [c.thread_id() for c in conns]
    for c in conns[2:]:
        pool.release(c)  # two idle, two held
    held = conns[:2]
    mysql_kill(mysql_admin, ids)

    for conn in held:
        with pytest.raises(MySQLdb.OperationalError) as info:
            mysql_query(conn, "SELECT 1")
        assert info.value.args[0] in (2006, 2013)
        assert pool.classify(info.value) is ErrorKind.CONNECTION_LOST
        pool.release(conn)
    assert pool.stats().closed["broken"] == 2

    fresh = [pool.acquire(timeout=10) for _ in range(4)]
    try:
        for conn in fresh:
            assert mysql_query(conn, "SELECT 1") == [(1,)]
            assert conn.thread_id() not in ids
    finally:
        for conn in fresh:
            pool.release(conn)
    pool.wait(10)
    assert pool.stats().open == 4


def test_no_caller_hangs_while_connections_are_killed(make_mysql_pool, mysql_admin):
    pool = make_mysql_pool(min_size=2, max_size=2, timeout=3)
    pool.wait()
    stop = threading.Event()
    outcomes: list[object] = []
    ids: set[int] = set()
    lock = threading.Lock()

    def work(conn: Any) -> None:
        with lock:
            ids.add(conn.thread_id())
        mysql_query(conn, "SELECT SLEEP(0.002)")

    def worker() -> None:
        hammer(pool, work, stop, outcomes)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for _ in range(3):
        threading.Event().wait(0.1)
        with lock:
            victims = sorted(ids)
            ids.clear()
        for cid in victims:
            with contextlib.suppress(MySQLdb.OperationalError):  # already gone
                mysql_query(mysql_admin, f"KILL {cid}")
    stop.set()
    for t in threads:
        t.join(15)
        assert not t.is_alive(), "a caller hung"
    assert "ok" in outcomes
    # A kill that lands while a block's COMMIT is in flight: outcome unknown.
    assert set(outcomes) <= {"ok", "timeout", "outcome_unknown", ErrorKind.CONNECTION_LOST}, \
        set(outcomes)
    with pool.connection() as conn:
        assert mysql_query(conn, "SELECT 1") == [(1,)]


def test_factory_made_mysqlclient_connections_are_pooled_like_the_url_driver(pool_cls,
                                                                              mysql_url):
    driver = from_url(mysql_url)
    pool = pool_cls(connect=driver.connect, max_size=1, timeout=5)
    try:
        with pool.connection() as conn:
            rollbacks = session_counter(conn, "Com_rollback")
        for _ in range(5):
            conn2 = pool.acquire()
            pool.release(conn2)
        assert conn2 is conn  # kept, not discarded
        assert pool.driver.status_attr == "trans"  # detected: no rollback per return
        with pool.connection() as again:
            assert session_counter(again, "Com_rollback") == rollbacks
        with pytest.raises(MySQLdb.Error) as info, pool.connection() as again:
            mysql_query(again, "SELEC 1")
        assert pool.classify(info.value) is ErrorKind.QUERY
    finally:
        pool.close()


# ---- found in review ----------------------------------------------------------

@pytest.mark.parametrize("rows", [100000, 2])
def test_connection_with_an_unread_result_is_not_reused(make_mysql_pool, rows):
    from fastpool.drivers.mysql import status_reader

    reader = status_reader()
    if reader is None or not reader.SEES_UNREAD_RESULTS:
        pytest.skip("the status reader was built without mysql.h")
    pool = make_mysql_pool(max_size=1, autocommit=True)
    conn = pool.acquire()
    import MySQLdb.cursors

    cur = conn.cursor(MySQLdb.cursors.SSCursor)
    cur.execute(f"SELECT seq FROM seq_1_to_{rows}")
    cur.fetchone()  # the rest is left unread: the connection is out of sync
    pool.release(conn)
    assert pool.stats().closed["reset"] == 1
    with pool.connection() as fresh:
        assert mysql_query(fresh, "SELECT 1") == [(1,)]


def test_per_user_connection_limit_is_unavailable_not_a_fast_failure(pool_cls, mysql_admin,
                                                                   mysql_url):
    mysql_query(mysql_admin, "DROP USER IF EXISTS 'fp_lim'@'%'")
    mysql_query(mysql_admin, "CREATE USER 'fp_lim'@'%' WITH MAX_USER_CONNECTIONS 1")
    mysql_query(mysql_admin, "GRANT USAGE ON *.* TO 'fp_lim'@'%'")
    url = mysql_url.replace("root@", "fp_lim@").rsplit("/", 1)[0] + "/"
    holder = from_url(url).connect()  # uses the user's only connection
    pool = pool_cls(driver=from_url(url), timeout=0.5)
    try:
        with pytest.raises(PoolTimeout, match="max_user_connections") as info:
            pool.acquire()  # waits its timeout: a connection may free up
        assert pool.classify(info.value.__cause__) is ErrorKind.UNAVAILABLE
    finally:
        pool.close()
        holder.close()
        mysql_query(mysql_admin, "DROP USER 'fp_lim'@'%'")


def test_server_activity_shows_this_pools_sessions(make_mysql_pool):
    pool = make_mysql_pool(min_size=2, max_size=2)
    pool.wait()
    held = pool.acquire()
    cid = held.thread_id()
    def sleeper() -> None:
        with contextlib.suppress(MySQLdb.OperationalError):  # 1317 when we KILL QUERY it
            mysql_query(held, "SELECT SLEEP(5)")

    t = threading.Thread(target=sleeper)
    t.start()  # held is busy in that thread from now on: the pool must not touch it
    try:
        running = None
        for _ in range(200):
            rows = {r["session_id"]: r for r in pool.server_activity()}
            running = rows.get(cid)
            if running and running["query"]:
                break
            threading.Event().wait(0.01)
        assert running is not None
        assert (running["pool_state"], running["query"]) == ("in_use", "SELECT SLEEP(5)")
        assert len(rows) == 2
        assert [r["pool_state"] for r in rows.values()].count("idle") == 1
    finally:
        with pool.connection() as spare:  # the idle one still works meanwhile
            mysql_query(spare, f"KILL QUERY {cid}")
        t.join(10)
        pool.release(held)


def test_sqlite_has_no_server_activity(make_pool):
    with pytest.raises(NotImplementedError, match="no server-side session view"):
        make_pool().server_activity()
