"""PostgreSQL through psycopg 3, on the machine's real server.

The wire traffic is read with libpq's own protocol trace (PQtrace): a test
that says "no round trip" checks that the client sent no message at all.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import fastpool
from fastpool import ConfigError, ConnectError, ErrorKind, PoolTimeout
from fastpool.drivers import PostgresDriver, from_url
from tests.fix_db import (
    PG_SOCKET_DIR,
    free_port,
    hammer,
    need_driver,
    need_socket,
    pg_backend_pids,
    pg_terminate,
)

psycopg = need_driver("psycopg", "postgres")


@contextlib.contextmanager
def sent_messages(conn: Any) -> Iterator[list[str]]:
    """Collect the frontend messages libpq sends on ``conn`` inside the block
    (``["Query \\"ROLLBACK\\""]``...), from libpq's protocol trace."""
    messages: list[str] = []
    with tempfile.TemporaryFile() as f:
        conn.pgconn.trace(f.fileno())
        try:
            yield messages
        finally:
            conn.pgconn.untrace()
            f.seek(0)
            for line in f.read().decode(errors="replace").splitlines():
                fields = line.split("\t")
                if len(fields) >= 4 and fields[1] == "F":
                    messages.append(" ".join(f.strip() for f in fields[3:] if f.strip()))


def app_name() -> str:
    return f"fp-test-{uuid.uuid4().hex[:12]}"


# ---- configuration ----------------------------------------------------------

def test_url_options_reach_the_server_as_startup_parameters(make_pg_pool, pg_url):
    pool = make_pg_pool(f"{pg_url}?statement_timeout=2.5&lock_timeout=0.25"
                        "&idle_in_transaction_session_timeout=60&autocommit=true",
                        application_name="billing")
    with pool.connection() as conn:
        assert conn.autocommit is True
        show = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in
                ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
                 "application_name")}
    assert show == {"statement_timeout": "2500ms", "lock_timeout": "250ms",
                    "idle_in_transaction_session_timeout": "1min",
                    "application_name": "billing"}


def test_tuned_defaults_and_autocommit_off(make_pg_pool):
    pool = make_pg_pool()
    params = pool.driver.params
    assert params["fallback_application_name"] == "fastpool"
    assert params["connect_timeout"] == "10"
    assert (params["keepalives"], params["keepalives_idle"]) == ("1", "30")
    with pool.connection() as conn:
        assert conn.autocommit is False
        assert conn.execute("SHOW application_name").fetchone()[0] == "fastpool"


def test_user_options_are_appended_to_the_startup_options(make_pg_pool):
    pool = make_pg_pool(options="-c search_path=pg_catalog", statement_timeout=1)
    with pool.connection() as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == "pg_catalog"
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "1s"


def test_unix_socket_directory_and_host_list(make_pg_pool):
    need_socket(f"{PG_SOCKET_DIR}/.s.PGSQL.5432")
    sock = make_pg_pool(f"postgresql:///test?host={PG_SOCKET_DIR}&user=postgres")
    with sock.connection() as conn:
        assert conn.info.host == PG_SOCKET_DIR
    # libpq tries the hosts in order: the first refuses, the second answers.
    dead = free_port()
    multi = make_pg_pool(f"postgresql://postgres@127.0.0.1:{dead},127.0.0.1:5432/test")
    with multi.connection() as conn:
        assert conn.info.port == 5432


def test_create_pool_splits_pool_and_driver_options(pg_url):
    with fastpool.create_pool(pg_url, max_size=3, autocommit=True, sslmode="disable",
                              application_name="split") as pool:
        assert pool.max_size == 3
        assert pool.driver.autocommit is True
        assert pool.driver.params["sslmode"] == "disable"
        with pool.connection() as conn:
            assert conn.pgconn.ssl_in_use is False


@pytest.mark.parametrize(("options", "message"), [
    ({"max_sise": 3}, "unknown option 'max_sise'"),
    ({"statement_timeout": -1}, "statement_timeout must be a number of seconds"),
    ({"statement_timeout": "soon"}, "statement_timeout must be a number of seconds"),
    ({"autocommit": "maybe"}, "autocommit must be true or false"),
    ({"prepare_threshold": -2}, "prepare_threshold must be an int"),
    ({"probe": "always"}, "probe must be 'query' or 'local'"),
])
def test_bad_options_name_the_problem(pg_url, options, message):
    with pytest.raises(ConfigError, match=message):
        fastpool.create_pool(pg_url, **options)


def test_password_never_appears_in_reprs_errors_or_logs(pool_cls, caplog):
    secret = "s3cret-never-shown"
    driver = from_url(f"postgresql://no_such_role:{secret}@127.0.0.1:5432/test")
    pool = pool_cls(driver=driver, timeout=5)
    caplog.set_level(logging.DEBUG, logger="fastpool")
    try:
        with pytest.raises(ConnectError) as info:
            pool.acquire()
        texts = [repr(pool), repr(driver), driver.describe(), str(info.value),
                 str(info.value.__cause__), repr(pool.stats()), caplog.text]
        assert all(secret not in text for text in texts)
        assert "no_such_role" in str(info.value)  # the error still says what is wrong
        assert pool.classify(info.value.__cause__) is ErrorKind.AUTH
    finally:
        pool.close()


# ---- return-time reset, from libpq's local status ---------------------------

def test_idle_connection_goes_back_without_a_round_trip(make_pg_pool):
    pool = make_pg_pool(max_size=1, autocommit=True)
    conn = pool.acquire()
    conn.execute("SELECT 1").fetchall()
    with sent_messages(conn) as sent:
        pool.release(conn)
        assert pool.acquire() is conn
    pool.release(conn)
    assert sent == []


def test_open_transaction_is_rolled_back_on_release(make_pg_pool, pg_admin):
    pg_admin.execute("CREATE TABLE IF NOT EXISTS fp_reset (x int)")
    pg_admin.execute("TRUNCATE fp_reset")
    pool = make_pg_pool(max_size=1)
    conn = pool.acquire()
    conn.execute("INSERT INTO fp_reset VALUES (1)")
    with sent_messages(conn) as sent:
        pool.release(conn)
    assert sent == ['Query "ROLLBACK"']
    assert pg_admin.execute("SELECT count(*) FROM fp_reset").fetchone()[0] == 0
    with pool.connection() as again:  # the same backend, healthy and idle
        assert again is conn
        again.execute("INSERT INTO fp_reset VALUES (2)")
    assert pg_admin.execute("SELECT x FROM fp_reset").fetchall() == [(2,)]
    assert pool.stats().closed_total == 0


def test_failed_transaction_is_rolled_back_and_the_connection_kept(make_pg_pool):
    pool = make_pg_pool(max_size=1)
    with pytest.raises(psycopg.errors.DivisionByZero), pool.connection() as conn:
        conn.execute("SELECT 1/0")
    assert conn.pgconn.transaction_status == 0  # rolled back on return
    with pool.connection() as again:
        assert again is conn
        assert again.execute("SELECT 2").fetchone() == (2,)
    assert pool.stats().closed_total == 0


def test_connection_mid_copy_is_discarded_not_reused(make_pg_pool):
    pool = make_pg_pool(max_size=1)
    conn = pool.acquire()
    rows = conn.cursor().stream("SELECT generate_series(1, 100000)")
    next(rows)  # one row: the server is still streaming the rest
    assert conn.pgconn.transaction_status == 1  # PQTRANS_ACTIVE
    pool.release(conn)
    assert pool.stats().closed["reset"] == 1
    with pool.connection() as fresh:
        assert fresh is not conn
        assert fresh.execute("SELECT 1").fetchone() == (1,)
    rows.close()


# ---- probes ---------------------------------------------------------------------

def test_probe_after_the_bypass_window_is_an_empty_query(make_pg_pool):
    # 0: probe before every lend. min_size=0: nothing opens before the first
    # acquire, which then gets the connection opened for it, never probed (with
    # min_size=1 the worker's connection could reach the ring first on a busy
    # machine, and that lend was probed too: seen once in CI).
    pool = make_pg_pool(min_size=0, max_size=1, alive_bypass=0)
    conn = pool.acquire()
    pool.release(conn)
    with sent_messages(conn) as sent:
        assert pool.acquire() is conn
    pool.release(conn)
    assert sent == ['Query ""']
    assert pool.stats().probes == 1  # the first lend was a brand-new connection


def test_probe_notices_a_killed_idle_backend_locally(make_pg_pool, pg_admin):
    name = app_name()
    pool = make_pg_pool(max_size=1, alive_bypass=0, probe="local", application_name=name)
    pool.wait()
    pg_terminate(pg_admin, pg_backend_pids(pg_admin, name))
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.stats().closed["broken"] == 1


# ---- error classification, from real server errors --------------------------

def test_classify_query_errors_leave_the_connection_usable(make_pg_pool, pg_admin):
    pg_admin.execute("CREATE TABLE IF NOT EXISTS fp_unique (id int PRIMARY KEY)")
    pg_admin.execute("TRUNCATE fp_unique")
    pool = make_pg_pool(max_size=1)
    for sql in ("SELEC 1", "SELECT * FROM no_such_table", "INSERT INTO fp_unique VALUES (1), (1)"):
        with pytest.raises(psycopg.Error) as info, pool.connection() as conn:
            conn.execute(sql)
        assert pool.classify(info.value) is ErrorKind.QUERY, sql
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.stats().closed_total == 0


def test_classify_serialization_failure_and_deadlock_as_retryable(make_pg_pool, pg_admin):
    pg_admin.execute("CREATE TABLE IF NOT EXISTS fp_acct (id int PRIMARY KEY, n int)")
    pg_admin.execute("TRUNCATE fp_acct")
    pg_admin.execute("INSERT INTO fp_acct VALUES (1, 0), (2, 0)")
    pool = make_pg_pool(min_size=2, max_size=2)
    a, b = pool.acquire(), pool.acquire()
    try:
        # Serialization failure: both read, both write the same row.
        for conn in (a, b):
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SELECT n FROM fp_acct WHERE id = 1").fetchone()
        a.execute("UPDATE fp_acct SET n = n + 1 WHERE id = 1")
        a.commit()
        with pytest.raises(psycopg.Error) as info:
            b.execute("UPDATE fp_acct SET n = n + 1 WHERE id = 1")
        assert info.value.sqlstate == "40001"
        assert pool.classify(info.value) is ErrorKind.RETRYABLE
        b.rollback()

        # Deadlock: a locks 1 then 2, b locks 2 then 1.
        a.execute("UPDATE fp_acct SET n = n + 1 WHERE id = 1")
        b.execute("UPDATE fp_acct SET n = n + 1 WHERE id = 2")
        errors: list[BaseException] = []

        def second_lock(conn: Any, row: int) -> None:
            try:
                conn.execute("UPDATE fp_acct SET n = n + 1 WHERE id = %s", (row,))
            except psycopg.Error as exc:
                errors.append(exc)

        t = threading.Thread(target=second_lock, args=(a, 2))
        t.start()
        second_lock(b, 1)
        t.join(30)
        assert [e.sqlstate for e in errors] == ["40P01"]
        assert pool.classify(errors[0]) is ErrorKind.RETRYABLE
    finally:
        pool.release(a)
        pool.release(b)


def test_classify_lock_timeout_as_retryable(make_pg_pool, pg_admin):
    pg_admin.execute("CREATE TABLE IF NOT EXISTS fp_lock (id int PRIMARY KEY)")
    pool = make_pg_pool(max_size=1, lock_timeout=0.05)
    with pg_admin.transaction():
        pg_admin.execute("LOCK TABLE fp_lock IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(psycopg.Error) as info, pool.connection() as conn:
            conn.execute("SELECT * FROM fp_lock")
    assert info.value.sqlstate == "55P03"
    assert pool.classify(info.value) is ErrorKind.RETRYABLE


def test_classify_connect_errors(pg_url):
    port = free_port()
    cases = [
        (f"postgresql://postgres@127.0.0.1:{port}/test", ErrorKind.UNREACHABLE),
        ("postgresql://postgres@/test?host=/nonexistent-dir", ErrorKind.UNREACHABLE),
        ("postgresql://postgres@no-such-host.invalid/test", ErrorKind.UNREACHABLE),
        ("postgresql://no_such_role@127.0.0.1:5432/test", ErrorKind.AUTH),
        ("postgresql://postgres@127.0.0.1:5432/no_such_db", ErrorKind.CONFIG),
    ]
    for url, kind in cases:
        driver = from_url(url)
        with pytest.raises(psycopg.OperationalError) as info:
            driver.connect()
        assert driver.classify(info.value) is kind, (url, str(info.value))
    driver = from_url(pg_url)
    assert driver.classify(ValueError("not a database error")) is ErrorKind.OTHER


def test_classify_closed_connection_as_not_sent(make_pg_pool):
    pool = make_pg_pool(max_size=1)
    conn = pool.acquire()
    conn.close()
    with pytest.raises(psycopg.OperationalError) as info:
        conn.execute("SELECT 1")
    assert pool.classify(info.value) is ErrorKind.NOT_SENT
    pool.release(conn)  # a closed connection comes back: discarded
    assert pool.stats().closed["broken"] == 1


# ---- recovery ---------------------------------------------------------------

def test_killing_every_backend_idle_and_in_use(make_pg_pool, pg_admin):
    name = app_name()
    pool = make_pg_pool(min_size=4, max_size=4, application_name=name)
    pool.wait()
    held = [pool.acquire(), pool.acquire()]
    for conn in held:
        conn.execute("SELECT 1")  # in a transaction, as a borrower would be
    pids = pg_backend_pids(pg_admin, name)
    assert len(pids) == 4
    pg_terminate(pg_admin, pids)

    for conn in held:  # the borrowers see a clear connection-lost error...
        with pytest.raises(psycopg.OperationalError) as info:
            conn.execute("SELECT 1")
        assert pool.classify(info.value) is ErrorKind.CONNECTION_LOST
        pool.release(conn)  # ...and the pool discards them
    assert pool.stats().closed["broken"] == 2

    # The idle two were used moments ago, yet none is handed out dead: one lost
    # connection made the pool probe its idle siblings before lending them.
    conns = [pool.acquire(timeout=10) for _ in range(4)]
    try:
        for conn in conns:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        for conn in conns:
            pool.release(conn)
    pool.wait(10)  # refilled to min_size
    assert sorted(set(pg_backend_pids(pg_admin, name)) & set(pids)) == []
    assert pool.stats().open == 4


def test_no_caller_hangs_while_backends_are_killed(make_pg_pool, pg_admin):
    name = app_name()
    pool = make_pg_pool(min_size=2, max_size=2, application_name=name, timeout=3)
    pool.wait()
    stop = threading.Event()
    outcomes: list[object] = []

    def worker() -> None:
        hammer(pool, lambda conn: conn.execute("SELECT pg_sleep(0.002)"), stop, outcomes)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for _ in range(3):
        pg_terminate(pg_admin, pg_backend_pids(pg_admin, name))
    stop.set()
    for t in threads:
        t.join(15)
        assert not t.is_alive(), "a caller hung"
    assert "ok" in outcomes
    # A kill that lands while a block's COMMIT is in flight: outcome unknown.
    assert set(outcomes) <= {"ok", "timeout", "outcome_unknown", ErrorKind.CONNECTION_LOST}, \
        set(outcomes)
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_unreachable_server_at_start_fails_fast_without_a_retry_storm(pool_cls):
    port = free_port()
    pool = pool_cls(driver=from_url(f"postgresql://postgres@127.0.0.1:{port}/test"), timeout=30)
    try:
        with pytest.raises(ConnectError, match=f"port {port} failed: Connection refused"):
            pool.acquire()  # not a 30 s PoolTimeout: refused before any success
        with pytest.raises(ConnectError):
            pool.wait(30)
        pool.RECONNECT_BACKOFF = fastpool.ExponentialBackoff(base=0.1, cap=10.0, jitter=0.1)
        attempts = pool.stats().connect_errors
        threading.Event().wait(1.0)
        # Backoff 0.1, 0.2, 0.4, 0.8 s...: a handful of attempts per second, not hundreds.
        assert pool.stats().connect_errors - attempts <= 5
    finally:
        pool.close()


def test_unknown_role_fails_fast_with_a_clear_error(pool_cls):
    pool = pool_cls(driver=from_url("postgresql://no_such_role@127.0.0.1:5432/test"),
                    timeout=30)
    try:
        with pytest.raises(ConnectError, match='role "no_such_role" does not exist'):
            pool.acquire()
        assert pool.stats().connect_errors <= 3
    finally:
        pool.close()


# ---- found in review: encodings, precedence, environment, COPY, timeouts ------

def test_fastpool_options_leave_the_rest_of_the_query_string_as_written(make_pg_pool, pg_url):
    pool = make_pg_pool(f"{pg_url}?options=-c%20search_path%3Dpg_catalog&autocommit=on"
                        "&statement_timeout=1")
    with pool.connection() as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == "pg_catalog"
        assert conn.autocommit is True


def test_keywords_win_over_the_url(make_pg_pool, pg_url):
    pool = make_pg_pool(f"{pg_url}?statement_timeout=1&application_name=from-url",
                        statement_timeout=2, application_name="from-keyword")
    with pool.connection() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "2s"
        assert conn.execute("SHOW application_name").fetchone()[0] == "from-keyword"


def test_libpq_environment_variables_win_over_fastpool_defaults(make_pg_pool, monkeypatch):
    monkeypatch.setenv("PGAPPNAME", "from-env")
    monkeypatch.setenv("PGOPTIONS", "-c search_path=pg_catalog")
    pool = make_pg_pool(statement_timeout=3)
    with pool.connection() as conn:
        assert conn.execute("SHOW application_name").fetchone()[0] == "from-env"
        assert conn.execute("SHOW search_path").fetchone()[0] == "pg_catalog"
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "3s"


@pytest.mark.parametrize("direction", ["to", "from"])
def test_connection_left_mid_copy_is_discarded(make_pg_pool, pg_admin, direction):
    pg_admin.execute("CREATE TABLE IF NOT EXISTS fp_copy (x int)")
    pool = make_pg_pool(max_size=1)
    conn = pool.acquire()
    sql = ("COPY (SELECT generate_series(1, 100000)) TO STDOUT" if direction == "to"
           else "COPY fp_copy FROM STDIN")
    manager = conn.cursor().copy(sql)
    copy = manager.__enter__()
    if direction == "to":
        copy.read()
    else:
        copy.write_row((1,))
    assert conn.pgconn.transaction_status == 1  # PQTRANS_ACTIVE
    pool.release(conn)
    assert pool.stats().closed["reset"] == 1
    with contextlib.suppress(psycopg.Error):
        manager.__exit__(None, None, None)  # on a closed connection
    with pool.connection() as fresh:
        assert fresh.execute("SELECT 1").fetchone() == (1,)


def test_idle_in_transaction_timeout_is_a_lost_connection(make_pg_pool):
    pool = make_pg_pool(max_size=1, idle_in_transaction_session_timeout=0.1)
    conn = pool.acquire()
    conn.execute("SELECT 1")  # opens a transaction, then sits idle in it
    threading.Event().wait(0.5)
    with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout) as info:
        conn.execute("SELECT 1")
    assert pool.classify(info.value) is ErrorKind.CONNECTION_LOST
    pool.release(conn)
    assert pool.stats().closed["broken"] == 1


def test_too_many_connections_is_unavailable_not_a_fast_failure(pool_cls, pg_admin):
    pg_admin.execute("DROP ROLE IF EXISTS fp_limited")
    pg_admin.execute("CREATE ROLE fp_limited LOGIN CONNECTION LIMIT 0")
    pool = pool_cls(driver=from_url("postgresql://fp_limited@127.0.0.1:5432/test"),
                    timeout=0.5)
    try:
        with pytest.raises(PoolTimeout, match="too many connections") as info:
            pool.acquire()  # waits its timeout: the server may accept later
        assert pool.classify(info.value.__cause__) is ErrorKind.UNAVAILABLE
    finally:
        pool.close()
        pg_admin.execute("DROP ROLE fp_limited")


def test_probe_on_a_stalled_network_gives_up_at_the_callers_deadline(pool_cls, pg_proxy):
    driver = from_url(f"postgresql://postgres@127.0.0.1:{pg_proxy.port}/test",
                      connect_timeout=2)
    pool = pool_cls(driver=driver, min_size=1, max_size=1, alive_bypass=0)
    outcome: list[BaseException] = []
    try:
        pool.wait(5)
        pg_proxy.stall()  # the server's answers never arrive

        def borrow() -> None:
            try:
                pool.release(pool.acquire(timeout=1.0))
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=borrow)
        t.start()
        t.join(15)
        assert not t.is_alive(), "acquire hung on a probe past its timeout"
        assert len(outcome) == 1 and isinstance(outcome[0], PoolTimeout)
        assert pool.stats().closed["broken"] == 1  # the unanswered connection was dropped
    finally:
        pg_proxy.resume()
        pool.close()


SECRET = "S3CRETpw"


@pytest.mark.parametrize("url", [
    f"app:{SECRET}@db/orders",
    f"mysql://app:S3C/{SECRET}@db/x",
    f"mysql://app:S3C?{SECRET}@db/x",
    f"mysql:/root:{SECRET}@127.0.0.1/test",
    f"postgresql://127.0.0.1/test?password={SECRET}%zz&sslmode=disable",
    f"postgresql://app:{SECRET}@[::1",
    f"postgresql:/app:{SECRET}@db/x",
    f"postgresql://app:{SECRET}@127.0.0.1/test?no_such_param=1",
])
def test_malformed_urls_never_echo_the_password(url):
    with pytest.raises(ConfigError) as info:
        fastpool.create_pool(url)
    assert SECRET not in str(info.value) and "S3C" not in str(info.value)


def test_key_value_conninfo_errors_never_echo_the_password():
    with pytest.raises(ConfigError) as info:
        PostgresDriver(f"host=x password={SECRET} garbage")
    assert SECRET not in str(info.value)


# ---- server-side view ------------------------------------------------------------

def test_server_activity_shows_this_pools_sessions_even_when_exhausted(make_pg_pool):
    pool = make_pg_pool(min_size=2, max_size=2, timeout=0.2)
    pool.wait()
    held = [pool.acquire(), pool.acquire()]
    try:
        held[0].execute("SELECT 42")  # then idle in its transaction
        rows = {r["session_id"]: r for r in pool.server_activity()}
        assert set(rows) == {c.info.backend_pid for c in held}
        busy = rows[held[0].info.backend_pid]
        assert (busy["pool_state"], busy["state"], busy["query"]) == \
            ("in_use", "idle in transaction", "SELECT 42")
        assert busy["transaction_seconds"] >= 0
        assert rows[held[1].info.backend_pid]["state"] == "idle"
    finally:
        for conn in held:
            pool.release(conn)
    pool.release(pool.acquire())
    assert {r["pool_state"] for r in pool.server_activity()} == {"idle"}


def test_server_activity_copes_with_a_connection_its_borrower_closed(make_pg_pool):
    pool = make_pg_pool(min_size=2, max_size=2)
    pool.wait()
    a, b = pool.acquire(), pool.acquire()
    a.close()  # the borrower closed it; the pool still counts it in use
    try:
        rows = pool.server_activity()
        assert [r["session_id"] for r in rows] == [b.info.backend_pid]
    finally:
        pool.release(a)
        pool.release(b)
