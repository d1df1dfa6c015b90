"""Transactions that retry (fastpool.transaction), against the real servers.

Conflicts are real: deadlocks from two threads locking two rows in opposite
orders, serialization failures from concurrent REPEATABLE READ / SERIALIZABLE
transactions, lock-wait timeouts behind a blocker that holds a row lock.
Broken connections are real too: backends killed by the admin connection
while ``fn`` runs, and a TCP proxy that cuts the connection when the client
sends COMMIT. Every pool is checked for slot accounting at teardown
(make_pool), and every table (prefix ``fp_tx_``) is dropped.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from fastpool import ConfigError, ErrorKind, PoolTimeout, TransactionOutcomeUnknown
from fastpool.transaction import (
    ExponentialBackoff,
    RetryStats,
    TransactionAborted,
    run_transaction,
    transactional,
)
from tests.fix_db import DB_FIXTURES, Db, q
from tests.fix_proxy import COMMIT_MESSAGES, proxied


class Recorder:
    """A ``finished`` callback that records ``(conn, committed)``, whether the
    connection was still borrowed, and whether its transaction was over (as
    the pool's driver reads it locally) when it was called."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.calls: list[tuple[Any, bool]] = []
        self.in_use: list[int] = []
        self.ended: list[bool] = []

    def __call__(self, conn: Any, committed: bool) -> None:
        self.calls.append((conn, committed))
        self.in_use.append(self.pool.stats().in_use)
        self.ended.append(self.pool.adapter.in_transaction(conn) is False)


def run_threads(*targets: Callable[[], object]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a transaction thread hung"
    return errors


# ---- the basic contract, on every backend --------------------------------------

def test_commits_and_returns_what_fn_returns(db):
    pool = db.make(max_size=2)
    finished = Recorder(pool)
    stats = RetryStats()

    def fn(conn: Any) -> str:
        q(conn, f"INSERT INTO {db.table} VALUES (1, 10)")
        q(conn, f"INSERT INTO {db.table} VALUES (2, 20)")
        return "saved"

    assert run_transaction(pool, fn, finished=finished, stats=stats) == "saved"
    assert db.rows() == [(1, 10), (2, 20)]
    assert [committed for _, committed in finished.calls] == [True]
    assert finished.in_use == [1]  # called before the connection went back
    assert finished.ended == [True]  # after COMMIT
    assert stats.as_dict() == {"attempts": 1, "retries": 0, "exhausted": 0,
                               "outcome_unknown": 0}
    assert pool.stats().in_use == 0


def test_fn_error_rolls_back_and_is_raised_unchanged_without_retry(db):
    pool = db.make(max_size=2)
    finished = Recorder(pool)
    stats = RetryStats()
    calls = []
    boom = ValueError("no such customer")

    def fn(conn: Any) -> None:
        calls.append(1)
        q(conn, f"INSERT INTO {db.table} VALUES (1, 10)")
        raise boom

    with pytest.raises(ValueError) as info:
        run_transaction(pool, fn, finished=finished, stats=stats, backoff=0)
    assert info.value is boom
    assert not getattr(boom, "__notes__", None)
    assert calls == [1]
    assert db.rows() == []
    assert [committed for _, committed in finished.calls] == [False]
    assert finished.in_use == [1]
    assert finished.ended == [True]  # after the rollback
    assert stats.as_dict()["attempts"] == 1 and stats.retries == 0
    assert pool.stats().in_use == 0


def test_query_error_is_not_retried_and_undoes_the_whole_transaction(db):
    # MySQL keeps the transaction open after a duplicate key (only the
    # statement is undone): the first INSERT must still be rolled back.
    pool = db.make(max_size=2)
    db.insert((5, 0))
    calls = []

    def fn(conn: Any) -> None:
        calls.append(1)
        q(conn, f"INSERT INTO {db.table} VALUES (1, 10)")
        q(conn, f"INSERT INTO {db.table} VALUES (5, 50)")  # duplicate key

    with pytest.raises(Exception) as info:
        run_transaction(pool, fn, backoff=0)
    assert pool.classify(info.value) is ErrorKind.QUERY
    assert calls == [1]
    assert db.rows() == [(5, 0)]
    assert pool.stats().in_use == 0


def test_keyboard_interrupt_in_fn_gives_the_connection_back_and_rolls_back(db):
    pool = db.make(max_size=1)
    finished = Recorder(pool)
    calls = []

    def fn(conn: Any) -> None:
        calls.append(1)
        q(conn, f"INSERT INTO {db.table} VALUES (1, 10)")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_transaction(pool, fn, finished=finished, backoff=0)
    assert calls == [1]
    assert [committed for _, committed in finished.calls] == [False]
    assert pool.stats().in_use == 0
    assert db.rows() == []
    # The single connection is usable again.
    assert run_transaction(pool, lambda conn: q(conn, "SELECT 1")) == [(1,)]


# ---- conflicts: deadlocks, serialization failures, lock-wait timeouts ----------

def test_deadlock_victim_is_retried_and_both_transactions_commit_once(server_db):
    db = server_db
    pool = db.make(min_size=2, max_size=2)
    db.insert((1, 0), (2, 0))
    barrier = threading.Barrier(2, timeout=20)
    calls = {"a": 0, "b": 0}
    stats = RetryStats()

    def transaction(name: str, first: int, second: int, log_id: int) -> Callable[[], object]:
        def fn(conn: Any) -> None:
            calls[name] += 1
            if db.kind == "postgresql":
                q(conn, "SET LOCAL deadlock_timeout = '50ms'")  # detect it sooner than 1 s
            q(conn, f"UPDATE {db.table} SET n = n + 1 WHERE id = %s", (first,))
            if calls[name] == 1:
                barrier.wait()  # both hold their first row: the next updates deadlock
            q(conn, f"UPDATE {db.table} SET n = n + 1 WHERE id = %s", (second,))
            q(conn, f"INSERT INTO {db.table} VALUES (%s, 0)", (log_id,))

        return lambda: run_transaction(pool, fn, backoff=0.01, stats=stats)

    errors = run_threads(transaction("a", 1, 2, 10), transaction("b", 2, 1, 11))
    assert errors == []
    # Each committed exactly once: both counters moved by two, one log row each.
    assert db.rows() == [(1, 2), (2, 2), (10, 0), (11, 0)]
    assert sorted(calls.values()) == [1, 2]
    assert stats.as_dict() == {"attempts": 3, "retries": 1, "exhausted": 0,
                               "outcome_unknown": 0}


def test_repeatable_read_lost_update_is_retried_instead_of_lost(pg_db):
    db = pg_db
    pool = db.make(min_size=2, max_size=2)
    db.insert((1, 0))
    barrier = threading.Barrier(2, timeout=20)
    calls = {"a": 0, "b": 0}
    stats = RetryStats()

    def increment(name: str) -> Callable[[], object]:
        def fn(conn: Any) -> None:
            calls[name] += 1
            q(conn, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            (n,), = q(conn, f"SELECT n FROM {db.table} WHERE id = 1")
            if calls[name] == 1:
                barrier.wait()  # both read 0: the second writer gets 40001
            q(conn, f"UPDATE {db.table} SET n = %s WHERE id = 1", (n + 1,))

        return lambda: run_transaction(pool, fn, backoff=0.01, stats=stats)

    assert run_threads(increment("a"), increment("b")) == []
    assert db.rows() == [(1, 2)]  # no lost update
    assert sorted(calls.values()) == [1, 2]
    assert stats.retries == 1


def test_serializable_write_skew_is_retried_and_keeps_the_invariant(pg_db):
    # Two doctors on call; each goes off call only if someone else stays on.
    # Without SERIALIZABLE both would leave; the loser of the conflict (at
    # its UPDATE or at COMMIT) runs again, sees one doctor left, and stays.
    db = pg_db
    pool = db.make(min_size=2, max_size=2)
    db.insert((1, 1), (2, 1))
    barrier = threading.Barrier(2, timeout=20)
    calls = {1: 0, 2: 0}
    stats = RetryStats()

    def go_off_call(me: int) -> Callable[[], object]:
        def fn(conn: Any) -> None:
            calls[me] += 1
            q(conn, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            (on_call,), = q(conn, f"SELECT count(*) FROM {db.table} WHERE n = 1")
            if calls[me] == 1:
                barrier.wait()
            if on_call >= 2:
                q(conn, f"UPDATE {db.table} SET n = 0 WHERE id = %s", (me,))

        return lambda: run_transaction(pool, fn, backoff=0.01, stats=stats)

    assert run_threads(go_off_call(1), go_off_call(2)) == []
    assert sum(n for _, n in db.rows()) == 1
    assert stats.retries >= 1
    assert sum(calls.values()) == 2 + stats.retries


def _block_row(db: Db, url: str) -> Any:
    """A connection of its own holding a lock on row 1 until rolled back."""
    if db.kind == "postgresql":
        import psycopg

        blocker = psycopg.connect(url)
    else:
        from fastpool.drivers import from_url

        blocker = from_url(url).connect()
    q(blocker, f"SELECT n FROM {db.table} WHERE id = 1 FOR UPDATE")
    return blocker


def _lock_timeout(db: Db, conn: Any) -> None:
    if db.kind == "postgresql":
        q(conn, "SET LOCAL lock_timeout = '50ms'")
    else:
        q(conn, "SET SESSION innodb_lock_wait_timeout = 1")  # the minimum: 1 s


def test_lock_wait_timeout_is_rolled_back_and_retried_once_the_blocker_is_gone(
        server_db, request):
    db = server_db
    url = request.getfixturevalue("pg_url" if db.kind == "postgresql" else "mysql_url")
    pool = db.make(max_size=2)
    db.insert((1, 0))
    blocker = _block_row(db, url)
    retries_seen: list[int] = []
    calls = []
    stats = RetryStats()

    def release_blocker(retry: int) -> float:
        retries_seen.append(retry)
        blocker.rollback()
        return 0.0

    def fn(conn: Any) -> None:
        calls.append(1)
        _lock_timeout(db, conn)
        # Written before the statement that times out: MySQL's 1205 undoes
        # only that statement, so without a rollback this row would be
        # written twice (a duplicate key on the retry).
        q(conn, f"INSERT INTO {db.table} VALUES (10, 0)")
        q(conn, f"UPDATE {db.table} SET n = n + 1 WHERE id = 1")

    try:
        run_transaction(pool, fn, backoff=release_blocker, stats=stats)
    finally:
        blocker.close()
    assert calls == [1, 1]
    assert retries_seen == [1]
    assert db.rows() == [(1, 1), (10, 0)]
    assert stats.as_dict() == {"attempts": 2, "retries": 1, "exhausted": 0,
                               "outcome_unknown": 0}


def test_sqlite_busy_database_is_retried_once_the_writer_is_gone(make_pool, db_path, sqlite_db):
    db = sqlite_db
    pool = make_pool(url=f"sqlite:///{db_path}?timeout=0", max_size=2)
    pool.wait()  # opening a connection needs the lock too
    db.admin.execute("BEGIN IMMEDIATE")  # holds the write lock
    calls = []

    def release_writer(retry: int) -> float:
        db.admin.execute("ROLLBACK")
        return 0.0

    def fn(conn: Any) -> None:
        calls.append(1)
        q(conn, f"INSERT INTO {db.table} VALUES (1, 10)")

    run_transaction(pool, fn, backoff=release_writer)
    assert calls == [1, 1]
    assert db.rows() == [(1, 10)]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_retries_exhausted_raise_the_last_error_with_a_note(kind, request, make_pool, db_path):
    db: Db = request.getfixturevalue(DB_FIXTURES[kind])
    if kind == "postgresql":
        pool = db.make(max_size=2)
        db.insert((1, 0))
        blocker = _block_row(db, request.getfixturevalue("pg_url"))
        release = blocker.close
        statement = f"UPDATE {db.table} SET n = n + 1 WHERE id = 1"
    else:
        pool = make_pool(url=f"sqlite:///{db_path}?timeout=0", max_size=2)
        pool.wait()
        db.admin.execute("BEGIN IMMEDIATE")
        release = lambda: db.admin.execute("ROLLBACK")  # noqa: E731
        statement = f"INSERT INTO {db.table} VALUES (1, 10)"
    calls = []
    errors: list[BaseException] = []
    stats = RetryStats()
    finished = Recorder(pool)

    def fn(conn: Any) -> None:
        calls.append(1)
        if kind == "postgresql":
            q(conn, "SET LOCAL lock_timeout = '20ms'")
        try:
            q(conn, statement)
        except Exception as exc:
            errors.append(exc)
            raise

    try:
        with pytest.raises(Exception) as info:
            run_transaction(pool, fn, retries=2, backoff=0, stats=stats, finished=finished)
    finally:
        release()
    assert len(calls) == 3
    assert info.value is errors[-1]
    assert pool.classify(info.value) is ErrorKind.RETRYABLE
    if sys.version_info >= (3, 11):
        assert any("failed 3 time(s)" in note for note in info.value.__notes__)
    assert stats.as_dict() == {"attempts": 3, "retries": 2, "exhausted": 1,
                               "outcome_unknown": 0}
    assert [committed for _, committed in finished.calls] == [False, False, False]
    assert pool.stats().in_use == 0


# ---- broken connections ----------------------------------------------------------

def test_connection_killed_while_fn_runs_is_retried_on_a_fresh_one(server_db):
    db = server_db
    pool = db.make(max_size=2)
    db.insert((1, 0))
    sessions: list[int] = []
    finished = Recorder(pool)
    stats = RetryStats()

    def fn(conn: Any) -> None:
        sessions.append(db.session_id(conn))
        q(conn, f"INSERT INTO {db.table} VALUES (10, 0)")
        if len(sessions) == 1:
            db.kill(conn)  # the server rolls the open transaction back
        q(conn, f"UPDATE {db.table} SET n = n + 1 WHERE id = 1")

    run_transaction(pool, fn, backoff=0, finished=finished, stats=stats)
    assert len(sessions) == 2 and sessions[0] != sessions[1]
    assert db.rows() == [(1, 1), (10, 0)]  # committed once
    assert [committed for _, committed in finished.calls] == [False, True]
    assert stats.retries == 1
    assert pool.stats().closed_total == 1  # the killed one was discarded




@pytest.mark.parametrize("answered", [True, False], ids=["server-committed", "commit-lost"])
def test_connection_lost_during_commit_is_outcome_unknown_and_not_rerun(
        server_db, request, answered):
    db = server_db
    proxy, url = proxied(db.kind, request)
    pool = db.make(url, max_size=1)
    calls = []
    finished = Recorder(pool)
    stats = RetryStats()

    def fn(conn: Any) -> None:
        calls.append(1)
        q(conn, f"INSERT INTO {db.table} VALUES (10, 0)")

    proxy.cut_on(COMMIT_MESSAGES[db.kind], after_reply=answered)
    with pytest.raises(TransactionOutcomeUnknown) as info:
        run_transaction(pool, fn, backoff=0, finished=finished, stats=stats)
    assert proxy.cut_done.is_set()
    assert calls == [1]  # never run again: that could do the work twice
    assert pool.classify(info.value.__cause__) is ErrorKind.CONNECTION_LOST
    # The server did commit or did not: either way fn ran once.
    assert db.rows() == ([(10, 0)] if answered else [])
    assert [committed for _, committed in finished.calls] == [True]  # it may have
    assert stats.as_dict() == {"attempts": 1, "retries": 0, "exhausted": 0,
                               "outcome_unknown": 1}
    assert pool.stats().in_use == 0
    # The broken connection was discarded; the pool works on.
    assert run_transaction(pool, lambda conn: q(conn, "SELECT 1")) == [(1,)]


def test_autocommit_connections_get_a_real_transaction_and_keep_their_setting(db, db_path):
    if db.kind == "sqlite":
        pool = db.make(url=f"sqlite:///{db_path}?isolation_level=autocommit", max_size=1)
    else:
        pool = db.make(max_size=1, autocommit=True)

    def fn(conn: Any) -> None:
        q(conn, f"INSERT INTO {db.table} VALUES (1, 10)")
        q(conn, f"INSERT INTO {db.table} VALUES (1, 20)")  # duplicate key

    with pytest.raises(Exception) as info:
        run_transaction(pool, fn, backoff=0)
    assert pool.classify(info.value) is ErrorKind.QUERY
    assert db.rows() == []  # the first INSERT went with the second
    run_transaction(pool, lambda conn: q(conn, f"INSERT INTO {db.table} VALUES (2, 20)"))
    assert db.rows() == [(2, 20)]
    with pool.connection() as conn:
        if db.kind == "postgresql":
            assert conn.autocommit is True
        elif db.kind == "mysql":
            assert q(conn, "SELECT @@autocommit") == [(1,)]
        else:
            assert conn.isolation_level is None


# ---- PostgreSQL: errors at COMMIT, swallowed errors ----------------------------

def test_error_at_commit_is_rolled_back_and_raised_without_retry(pg_db):
    # A deferred foreign key is checked at COMMIT: a query error, not a lost
    # connection, so the outcome is known (rolled back) and not retried.
    db = pg_db
    child = f"{db.table}_child"
    q(db.admin, f"CREATE TABLE {child} (id INT PRIMARY KEY, parent INT REFERENCES "
                f"{db.table} (id) DEFERRABLE INITIALLY DEFERRED)")
    try:
        pool = db.make(max_size=1)
        calls = []
        finished = Recorder(pool)

        def fn(conn: Any) -> None:
            calls.append(1)
            q(conn, f"INSERT INTO {child} VALUES (1, 99)")  # no parent 99

        with pytest.raises(Exception) as info:
            run_transaction(pool, fn, backoff=0, finished=finished)
        assert info.value.sqlstate == "23503"
        assert calls == [1]
        assert [committed for _, committed in finished.calls] == [False]
        assert q(db.admin, f"SELECT count(*) FROM {child}") == [(0,)]
    finally:
        q(db.admin, f"DROP TABLE IF EXISTS {child}")


def test_error_swallowed_inside_fn_is_not_reported_as_committed(pg_db):
    # PostgreSQL answers COMMIT of a failed transaction with ROLLBACK and no
    # error: returning fn's value would claim work that was never saved.
    import psycopg

    db = pg_db
    pool = db.make(max_size=1)
    finished = Recorder(pool)

    def fn(conn: Any) -> str:
        q(conn, f"INSERT INTO {db.table} VALUES (1, 10)")
        with contextlib.suppress(psycopg.errors.DivisionByZero):
            q(conn, "SELECT 1 / 0")
        return "saved?"

    with pytest.raises(TransactionAborted):
        run_transaction(pool, fn, backoff=0, finished=finished)
    assert db.rows() == []
    assert [committed for _, committed in finished.calls] == [False]


# ---- the pool's deadline, the decorator, the callback, arguments --------------

def test_pool_timeout_is_the_callers_deadline_and_not_retried(sqlite_db):
    pool = sqlite_db.make(max_size=1, timeout=0.2)
    calls = []
    stats = RetryStats()
    held = pool.acquire()
    try:
        with pytest.raises(PoolTimeout):
            run_transaction(pool, lambda conn: calls.append(1), stats=stats, backoff=0)
    finally:
        pool.release(held)
    assert calls == []
    assert stats.attempts == 0 and stats.retries == 0


def test_transactional_passes_arguments_and_runs_in_a_transaction(sqlite_db):
    db = sqlite_db
    pool = db.make(max_size=2)
    stats = RetryStats()

    @transactional(pool, retries=1, backoff=0, stats=stats)
    def add(conn: Any, id_: int, n: int = 0) -> int:
        """Add a row."""
        q(conn, f"INSERT INTO {db.table} VALUES (%s, %s)", (id_, n))
        if n < 0:
            raise ValueError("negative")
        return id_

    def bare(conn: Any, id_: int) -> list[tuple[Any, ...]]:
        return q(conn, f"SELECT n FROM {db.table} WHERE id = %s", (id_,))

    read = transactional(pool, bare)
    assert add(1, n=5) == 1
    with pytest.raises(ValueError, match="negative"):
        add(2, n=-1)
    assert db.rows() == [(1, 5)]
    assert read(1) == [(5,)]
    assert (add.__name__, add.__doc__) == ("add", "Add a row.")
    assert stats.attempts == 2


def test_finished_callback_errors_do_not_change_the_outcome(sqlite_db, caplog):
    db = sqlite_db
    pool = db.make(max_size=1)

    def broken(conn: Any, committed: bool) -> None:
        raise RuntimeError("cache exploded")

    value = run_transaction(pool, lambda conn: q(conn, f"INSERT INTO {db.table} VALUES (1, 1)")
                            or "ok", finished=broken)
    assert value == "ok"
    assert db.rows() == [(1, 1)]
    assert "cache exploded" in caplog.text
    assert pool.stats().in_use == 0


@pytest.mark.parametrize("options, message", [
    ({"retries": -1}, "retries must be an integer >= 0"),
    ({"retries": True}, "retries must be an integer >= 0"),
    ({"retries": 1.5}, "retries must be an integer >= 0"),
    ({"backoff": -0.1}, "backoff must be a finite number of seconds >= 0"),
    ({"backoff": math.nan}, "backoff must be a finite number of seconds >= 0"),
    ({"backoff": math.inf}, "backoff must be a finite number of seconds >= 0"),
    ({"backoff": "fast"}, "backoff must be a number of seconds or a callable"),
    ({"backoff": True}, "backoff must be a number of seconds or a callable"),
    ({"finished": 42}, "finished must be callable or None"),
    ({"stats": {}}, "stats must be a RetryStats or None"),
])
def test_bad_options_are_refused_before_anything_runs(sqlite_db, options, message):
    pool = sqlite_db.make(max_size=1)
    calls = []
    with pytest.raises(ConfigError, match=message):
        run_transaction(pool, lambda conn: calls.append(1), **options)
    with pytest.raises(ConfigError, match=message):
        transactional(pool, **options)
    assert calls == []
    assert pool.stats().acquisitions == 0


def test_fn_must_be_a_plain_callable(sqlite_db):
    pool = sqlite_db.make(max_size=1)

    async def coro(conn: Any) -> None:
        pass

    with pytest.raises(ConfigError, match="must be callable"):
        run_transaction(pool, None)
    with pytest.raises(ConfigError, match="must not be async"):
        run_transaction(pool, coro)
    with pytest.raises(ConfigError, match="must not be async"):
        transactional(pool)(coro)


def test_a_backoff_callable_returning_nonsense_is_refused(make_pool, db_path, sqlite_db):
    db = sqlite_db
    pool = make_pool(url=f"sqlite:///{db_path}?timeout=0", max_size=1)
    pool.wait()
    db.admin.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ConfigError, match=r"returned -1 for retry 1") as info:
            run_transaction(pool, lambda conn: q(conn, f"INSERT INTO {db.table} VALUES (1, 1)"),
                            backoff=lambda retry: -1)
        assert pool.classify(info.value.__cause__) is ErrorKind.RETRYABLE
    finally:
        db.admin.execute("ROLLBACK")
    assert pool.stats().in_use == 0


def test_exponential_backoff_has_full_jitter_under_a_doubling_ceiling():
    backoff = ExponentialBackoff(base=0.01, cap=0.05)
    for retry, ceiling in [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.05), (100, 0.05)]:
        delays = [backoff(retry) for _ in range(500)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the range, not a constant
        assert min(delays) < ceiling / 2
    with pytest.raises(ConfigError, match="base must be a finite number"):
        ExponentialBackoff(base=-1)
    with pytest.raises(ConfigError, match=r"cap \(0.1\) must not be less than base"):
        ExponentialBackoff(base=1, cap=0.1)


def test_stats_reset(sqlite_db):
    stats = RetryStats()
    pool = sqlite_db.make(max_size=1)
    run_transaction(pool, lambda conn: None, stats=stats)
    assert stats.as_dict(reset=True)["attempts"] == 1
    assert stats.as_dict() == {"attempts": 0, "retries": 0, "exhausted": 0,
                               "outcome_unknown": 0}
