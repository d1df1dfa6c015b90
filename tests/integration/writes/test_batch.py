"""The group-commit batcher on the real servers (PostgreSQL, MariaDB) and SQLite.

To decide which writes share a batch, a test parks the flusher: a "locker"
connection holds a row lock (SQLite: the write lock), the batcher's first
write waits on it, and whatever is submitted meanwhile forms the next batch.
Faults are real: unique violations, row locks, deadlocks between two
batchers' transactions, lock-wait timeouts, backends terminated while a
statement waits or during COMMIT.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastpool import ErrorKind, TransactionOutcomeUnknown
from fastpool.writes.batch import Batcher, BatcherClosed, BatcherFull, BatchResult
from tests.fix_db import mysql_kill, mysql_query, pg_terminate
from tests.fix_pool import wait_until

ROWS = "CREATE TABLE fp_batch_rows (id BIGINT PRIMARY KEY, v VARCHAR(40))"
GATE = "CREATE TABLE fp_batch_gate (id INT PRIMARY KEY, n INT)"
INSERT = "INSERT INTO fp_batch_rows (id, v) VALUES (%s, %s)"
TOUCH_GATE = "UPDATE fp_batch_gate SET n = n + 1 WHERE id = 1"


class Backend:
    """One database for the batcher tests: pools, a locker and an admin connection."""

    def __init__(self, name: str, make: Callable[..., Any], connect: Callable[[], Any],
                 ph: str) -> None:
        self.name = name
        self.make = make
        self.ph = ph
        self.admin = connect()
        self.locker = connect()
        self.lock_depth = 0

    def sql(self, text: str) -> str:
        return text.replace("%s", self.ph)

    def query(self, text: str, params: Any = ()) -> list[tuple[Any, ...]]:
        cur = self.admin.cursor()
        try:
            cur.execute(self.sql(text), params)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        finally:
            cur.close()

    def run(self, conn: Any, text: str) -> None:
        cur = conn.cursor()
        try:
            cur.execute(text)
        finally:
            cur.close()

    @contextlib.contextmanager
    def gate_locked(self) -> Iterator[None]:
        """Hold the gate row's lock (SQLite: the database's write lock)."""
        if self.name == "sqlite":
            self.run(self.locker, "BEGIN IMMEDIATE")
        else:
            self.run(self.locker, "BEGIN")
            self.run(self.locker, TOUCH_GATE)
        try:
            yield
        finally:
            self.run(self.locker, "ROLLBACK")

    def ids(self) -> list[int]:
        return [r[0] for r in self.query("SELECT id FROM fp_batch_rows ORDER BY id")]

    def close(self) -> None:
        for conn in (self.locker, self.admin):
            with contextlib.suppress(Exception):
                self.run(conn, "ROLLBACK")
        for table in ("fp_batch_rows", "fp_batch_gate", "fp_batch_dl"):
            with contextlib.suppress(Exception):
                self.run(self.admin, f"DROP TABLE IF EXISTS {table}")
        self.locker.close()
        self.admin.close()


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def backend(request: pytest.FixtureRequest, make_pool: Any, db_path: str) -> Iterator[Backend]:
    if request.param == "postgresql":
        import psycopg

        url = request.getfixturevalue("pg_url")
        make_pg = request.getfixturevalue("make_pg_pool")
        b = Backend("postgresql", make_pg,
                    lambda: psycopg.connect(url, autocommit=True), "%s")
    elif request.param == "mariadb":
        from fastpool.drivers import from_url

        url = request.getfixturevalue("mysql_url")
        make_my = request.getfixturevalue("make_mysql_pool")
        b = Backend("mariadb", make_my,
                    lambda: from_url(url, autocommit=True).connect(), "%s")
    else:
        b = Backend("sqlite", lambda **kw: make_pool(url=f"sqlite:///{db_path}", **kw),
                    lambda: sqlite3.connect(db_path, isolation_level=None,
                                            check_same_thread=False), "?")
    for table in ("fp_batch_rows", "fp_batch_gate"):
        b.run(b.admin, f"DROP TABLE IF EXISTS {table}")
    b.run(b.admin, ROWS)
    b.run(b.admin, GATE)
    b.run(b.admin, "INSERT INTO fp_batch_gate VALUES (1, 0)")
    yield b
    b.close()


@pytest.fixture
def batchers() -> Iterator[list[Batcher]]:
    made: list[Batcher] = []
    yield made
    for batcher in made:
        batcher.close(timeout=30)


def make_batcher(backend: Backend, batchers: list[Batcher], pool: Any = None,
                 **options: Any) -> Batcher:
    batcher = Batcher(pool if pool is not None else backend.make(max_size=4), **options)
    batchers.append(batcher)
    return batcher


def park(batcher: Batcher, backend: Backend) -> Any:
    """Inside ``gate_locked()``: send the flusher into a batch that waits on the
    lock; returns that write's future. Writes submitted next share a batch."""
    future = batcher.submit(backend.sql(TOUCH_GATE))
    wait_until(lambda: batcher.stats().queued == 0)
    return future


def stats_add_up(batcher: Batcher) -> None:
    s = batcher.stats()
    assert s.submitted == s.committed + s.failed + s.cancelled + s.pending, s


# ---- every backend ---------------------------------------------------------------

def test_no_write_is_lost_or_duplicated_under_32_submitters(backend: Backend,
                                                            batchers: list[Batcher]) -> None:
    batcher = make_batcher(backend, batchers, max_batch=100)
    per_thread = 50
    failures: list[BaseException] = []
    insert = backend.sql(INSERT)

    def work(t: int) -> None:
        futures = []
        try:
            for i in range(per_thread):
                key = t * per_thread + i
                if i % 3:
                    assert batcher.execute(insert, (key, f"t{t}")).rowcount == 1
                else:
                    futures.append(batcher.submit(insert, (key, f"t{t}")))
            for f in futures:
                assert f.result(timeout=60).rowcount == 1
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:3]
    assert backend.ids() == list(range(32 * per_thread))
    s = batcher.stats()
    assert (s.submitted, s.committed, s.failed, s.pending) == (1600, 1600, 0, 0)
    assert s.batches < 1600 and s.batch_size_mean > 1  # grouped
    stats_add_up(batcher)


@pytest.mark.parametrize("form", ["plain", "returning"])
def test_a_poisoned_write_fails_only_its_caller(backend: Backend, batchers: list[Batcher],
                                                form: str) -> None:
    if form == "returning" and backend.name == "mariadb":
        version = backend.query("SELECT VERSION()")[0][0]
        if "MariaDB" not in version:
            pytest.skip("INSERT ... RETURNING needs MariaDB")
    batcher = make_batcher(backend, batchers)
    sql = backend.sql(INSERT + (" RETURNING id, v" if form == "returning" else ""))
    batcher.execute(sql, (500, "existing"))
    with backend.gate_locked():
        parked = park(batcher, backend)
        good = {i: batcher.submit(sql, (i, f"v{i}")) for i in range(200) if i != 77}
        poisoned = batcher.submit(sql, (500, "duplicate"))
        good.update({i: batcher.submit(sql, (i, f"v{i}")) for i in range(1000, 1100)})
    assert parked.result(timeout=30).rowcount == 1
    error = poisoned.exception(timeout=30)
    assert error is not None and batcher.pool.classify(error) is ErrorKind.QUERY
    assert "500" in str(error) or "Duplicate" in str(error) or "UNIQUE" in str(error)
    for i, f in good.items():
        result = f.result(timeout=30)
        assert result.rowcount == 1
        if form == "returning":
            assert tuple(result.row) == (i, f"v{i}")
    assert backend.ids() == sorted([500, *good])
    s = batcher.stats()
    assert (s.failed, s.isolations, s.batch_size_p99) == (1, 1, 300)
    stats_add_up(batcher)


def test_close_commits_everything_pending_then_refuses(backend: Backend,
                                                       batchers: list[Batcher]) -> None:
    batcher = make_batcher(backend, batchers, max_batch=50)
    insert = backend.sql(INSERT)
    with backend.gate_locked():
        parked = park(batcher, backend)
        futures = [batcher.submit(insert, (i, "x")) for i in range(300)]
        closer = threading.Thread(target=batcher.close, daemon=True)
        closer.start()
        wait_until(lambda: batcher.closed)
        with pytest.raises(BatcherClosed):
            batcher.submit(insert, (999, "late"))
        assert closer.is_alive()  # waiting for the pending writes
    closer.join(30)
    assert not closer.is_alive()
    assert parked.done() and all(f.result(timeout=0).rowcount == 1 for f in futures)
    assert backend.ids() == list(range(300))
    with pytest.raises(BatcherClosed):
        batcher.execute(insert, (1000, "late"))
    s = batcher.stats()
    assert (s.submitted, s.committed, s.pending) == (301, 301, 0)


def test_back_pressure_raises_or_blocks_while_the_flusher_waits_on_a_lock(
        backend: Backend, batchers: list[Batcher]) -> None:
    pool = backend.make(max_size=4)
    refusing = make_batcher(backend, batchers, pool, max_pending=10, on_full="raise")
    blocking = make_batcher(backend, batchers, pool, max_pending=10, full_timeout=0.2)
    waiting = make_batcher(backend, batchers, pool, max_pending=10, full_timeout=60)
    insert = backend.sql(INSERT)
    with backend.gate_locked():
        parked = [park(b, backend) for b in (refusing, blocking, waiting)]
        futures = []
        for n, b in enumerate((refusing, blocking, waiting)):
            futures += [b.submit(insert, (n * 100 + i, "x")) for i in range(9)]
        with pytest.raises(BatcherFull, match="on_full='raise'"):
            refusing.submit(insert, (90, "x"))
        with pytest.raises(BatcherFull, match="full_timeout"):
            blocking.submit(insert, (190, "x"))
        late: list[Any] = []
        blocked = threading.Thread(
            target=lambda: late.append(waiting.execute(insert, (290, "x"))), daemon=True)
        blocked.start()
        wait_until(lambda: waiting._engine.room_waiters == 1)
        assert not late
    blocked.join(30)
    assert late == [BatchResult(1)]
    assert all(f.result(timeout=30).rowcount == 1 for f in parked + futures)
    assert len(backend.ids()) == 28
    for b in (refusing, blocking, waiting):
        stats_add_up(b)


def test_a_second_flusher_takes_writes_that_waited_max_delay(backend: Backend,
                                                             batchers: list[Batcher]) -> None:
    """One flusher is stuck behind a row lock: with two flushers, a write
    queued meanwhile is committed by the other one once it has waited
    max_delay, without waiting for the stuck batch."""
    if backend.name == "sqlite":
        pytest.skip("SQLite commits one write transaction at a time")
    batcher = make_batcher(backend, batchers, flushers=2, max_delay=0.05)
    insert = backend.sql(INSERT)
    with backend.gate_locked():
        stuck = park(batcher, backend)
        assert batcher.execute(insert, (1, "x")).rowcount == 1
        assert not stuck.done()
        assert backend.ids() == [1]
    assert stuck.result(timeout=30).rowcount == 1
    s = batcher.stats()
    assert (s.batches, s.committed) == (2, 2)


# ---- conflicts -------------------------------------------------------------------------

DEADLOCK_SQL = {
    # The sleep comes before the row's lock for one row and after the previous
    # row's: two transactions locking the same rows in opposite orders meet.
    "postgresql": "UPDATE fp_batch_dl SET n = n + 1 WHERE id = %s AND pg_sleep(0.2) IS NOT NULL",
    "mariadb": "UPDATE fp_batch_dl SET n = n + 1 WHERE id = %s AND SLEEP(0.2) = 0",
}
PARK_SQL = {"postgresql": "SELECT pg_sleep(%s)", "mariadb": "SELECT SLEEP(%s)"}


@pytest.mark.parametrize("ordered", [False, True], ids=["submission-order", "key-order"])
def test_conflicting_batches_deadlock_and_retry_unless_ordered_by_key(
        backend: Backend, batchers: list[Batcher], ordered: bool) -> None:
    """Two batchers update rows 1 and 2 at once, in opposite submission orders:
    a real deadlock, retried; with keys both lock in key order: no deadlock."""
    if backend.name == "sqlite":
        pytest.skip("SQLite has no row locks: writers queue on the database lock")
    backend.run(backend.admin, "DROP TABLE IF EXISTS fp_batch_dl")
    backend.run(backend.admin, "CREATE TABLE fp_batch_dl (id INT PRIMARY KEY, n INT)")
    backend.run(backend.admin, "INSERT INTO fp_batch_dl VALUES (1, 0), (2, 0)")
    options = {"options": "-c deadlock_timeout=50"} if backend.name == "postgresql" else {}
    pool = backend.make(max_size=4, **options)
    first, second = (make_batcher(backend, batchers, pool) for _ in range(2))
    # Park both flushers for 0.3 s so that each next batch holds both updates.
    parked = [b.submit(PARK_SQL[backend.name], (0.3,)) for b in (first, second)]
    wait_until(lambda: first.stats().queued == second.stats().queued == 0)
    sql = DEADLOCK_SQL[backend.name]
    futures = []
    for batcher, ids in ((first, (1, 2)), (second, (2, 1))):
        for i in ids:
            futures.append(batcher.submit(sql, (i,), key=i if ordered else None))
    assert all(f.result(timeout=60).rowcount == 1 for f in futures)
    for f in parked:
        f.result(timeout=0)
    assert backend.query("SELECT id, n FROM fp_batch_dl ORDER BY id") == [(1, 2), (2, 2)]
    conflicts = first.stats().conflicts + second.stats().conflicts
    retries = first.stats().retries + second.stats().retries
    if ordered:
        assert conflicts == 0
    else:
        assert conflicts >= 1 and retries >= 1


def test_a_lock_wait_timeout_rolls_back_the_whole_batch_before_retrying(
        backend: Backend, batchers: list[Batcher]) -> None:
    """MariaDB's 1205 undoes only the statement: the batch's earlier writes
    must be rolled back too, or the retry would write them twice."""
    if backend.name != "mariadb":
        pytest.skip("the statement-only rollback of error 1205 is MySQL's")
    pool = backend.make(max_size=4, init_command="SET SESSION innodb_lock_wait_timeout=1")
    batcher = make_batcher(backend, batchers, pool)
    insert = backend.sql(INSERT)
    with backend.gate_locked():
        parked = batcher.submit(PARK_SQL["mariadb"], (0.2,))
        wait_until(lambda: batcher.stats().queued == 0)
        inserts = [batcher.submit(insert, (i, "x")) for i in range(20)]
        touch = batcher.submit(TOUCH_GATE)  # waits on the lock: 1205 after 1 s
        wait_until(lambda: batcher.stats().conflicts >= 1, timeout=30)
    assert touch.result(timeout=30).rowcount == 1
    assert all(f.result(timeout=30).rowcount == 1 for f in inserts)
    parked.result(timeout=0)
    assert backend.ids() == list(range(20))
    assert batcher.stats().failed == 0


# ---- lost connections ---------------------------------------------------------------------

def test_a_connection_lost_while_waiting_is_retried_on_a_fresh_one(
        backend: Backend, batchers: list[Batcher]) -> None:
    if backend.name == "sqlite":
        pytest.skip("an SQLite connection cannot be killed from outside")
    app = f"fp-batch-{uuid.uuid4().hex[:10]}"
    options = {"application_name": app} if backend.name == "postgresql" else {}
    batcher = make_batcher(backend, batchers, backend.make(max_size=4, **options))
    insert = backend.sql(INSERT)
    with backend.gate_locked():
        futures = [batcher.submit(backend.sql(TOUCH_GATE))]
        futures += [batcher.submit(insert, (i, "x")) for i in range(10)]
        if backend.name == "postgresql":
            find = ("SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                    "AND wait_event_type = 'Lock'")
            wait_until(lambda: backend.query(find, (app,)), timeout=10)
            pg_terminate(backend.admin, [r[0] for r in backend.query(find, (app,))])
        else:
            find = ("SELECT id FROM information_schema.processlist "
                    "WHERE info LIKE 'UPDATE fp_batch_gate%' AND id <> CONNECTION_ID()")
            wait_until(lambda: mysql_query(backend.admin, find), timeout=10)
            mysql_kill(backend.admin, [r[0] for r in mysql_query(backend.admin, find)])
        wait_until(lambda: batcher.stats().retries >= 1, timeout=10)
    assert all(f.result(timeout=30).rowcount == 1 for f in futures)
    assert backend.ids() == list(range(10))
    assert backend.query("SELECT n FROM fp_batch_gate") == [(1,)]  # once, not twice
    s = batcher.stats()
    assert (s.failed, s.committed) == (0, 11) and s.retries >= 1


def test_a_connection_lost_during_commit_is_not_retried(pg_admin: Any, make_pg_pool: Any,
                                                        batchers: list[Batcher]) -> None:
    """The backend dies while committing (a deferred trigger terminates it): the
    writes may or may not be committed; callers get TransactionOutcomeUnknown
    and nothing is run again."""
    pg_admin.execute("DROP TABLE IF EXISTS fp_batch_rows")
    pg_admin.execute(ROWS)
    pg_admin.execute("""CREATE OR REPLACE FUNCTION fp_batch_die() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid());
        PERFORM pg_sleep(5); RETURN NULL; END $$""")
    pg_admin.execute("""CREATE CONSTRAINT TRIGGER fp_batch_die_at_commit AFTER INSERT
        ON fp_batch_rows DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
        WHEN (NEW.v = 'die') EXECUTE FUNCTION fp_batch_die()""")
    try:
        pool = make_pg_pool(max_size=2)
        batcher = Batcher(pool)
        batchers.append(batcher)
        with pool.connection() as conn:  # park the flusher behind a row lock
            conn.execute("INSERT INTO fp_batch_rows VALUES (0, 'lock')")
            futures = [batcher.submit(INSERT, (0, "parked"))]
            wait_until(lambda: batcher.stats().queued == 0)
            futures += [batcher.submit(INSERT, (i, "die" if i == 5 else "x"))
                        for i in range(1, 10)]
        first = futures[0].exception(timeout=30)
        assert first is not None  # the row lock's holder committed id 0 first
        for f in futures[1:]:
            error = f.exception(timeout=30)
            assert isinstance(error, TransactionOutcomeUnknown), error
            assert pool.classify(error.__cause__) is ErrorKind.CONNECTION_LOST
        s = batcher.stats()
        assert (s.retries, s.failed) == (0, 10)
        assert pg_admin.execute("SELECT count(*) FROM fp_batch_rows").fetchone()[0] == 1
        # The batcher goes on with a fresh connection.
        assert batcher.execute(INSERT, (20, "after")).rowcount == 1
    finally:
        pg_admin.execute("DROP TABLE IF EXISTS fp_batch_rows")
        pg_admin.execute("DROP FUNCTION IF EXISTS fp_batch_die()")


# ---- per-driver results -----------------------------------------------------------------

def test_postgres_results_are_exact_per_write(pg_admin: Any, make_pg_pool: Any,
                                              batchers: list[Batcher]) -> None:
    pg_admin.execute("DROP TABLE IF EXISTS fp_batch_rows")
    pg_admin.execute(ROWS)
    try:
        batcher = Batcher(make_pg_pool(max_size=2))
        batchers.append(batcher)
        with pg_admin.transaction():
            pg_admin.execute("LOCK TABLE fp_batch_rows IN EXCLUSIVE MODE")
            futures = [batcher.submit(INSERT, (1, "parked"))]
            wait_until(lambda: batcher.stats().queued == 0)
            futures += [
                batcher.submit("INSERT INTO fp_batch_rows VALUES (%s, %s) ON CONFLICT DO NOTHING",
                               (i, "x")) for i in (1, 2, 3)]
            futures += [batcher.submit("UPDATE fp_batch_rows SET v = %s WHERE id > %s",
                                       ("u", i)) for i in (0, 2, 9)]
            futures += [batcher.submit("INSERT INTO fp_batch_rows VALUES (%s, %s) RETURNING id",
                                       (i, "r")) for i in (7, 8)]
        got = [f.result(timeout=30) for f in futures]
        assert [r.rowcount for r in got] == [1, 0, 1, 1, 3, 1, 0, 1, 1]
        assert [r.row for r in got[-2:]] == [(7,), (8,)]
    finally:
        pg_admin.execute("DROP TABLE IF EXISTS fp_batch_rows")


def test_mariadb_multirow_inserts_report_what_the_total_allows(
        mysql_admin: Any, make_mysql_pool: Any, batchers: list[Batcher]) -> None:
    mysql_query(mysql_admin, "DROP TABLE IF EXISTS fp_batch_rows")
    mysql_query(mysql_admin, ROWS)
    try:
        batcher = Batcher(make_mysql_pool(max_size=2))
        batchers.append(batcher)
        mysql_query(mysql_admin, "LOCK TABLES fp_batch_rows WRITE")
        try:
            futures = [batcher.submit(INSERT, (100, "parked"))]
            wait_until(lambda: batcher.stats().queued == 0)
            plain = [batcher.submit(INSERT, (i, "x")) for i in (1, 2, 3)]
            upsert = [batcher.submit(INSERT + " ON DUPLICATE KEY UPDATE v = 'dup'", (i, "y"))
                      for i in (3, 4)]
            # Distinct values: MySQL counts changed rows, not matched ones.
            update = [batcher.submit("UPDATE fp_batch_rows SET v = %s WHERE id >= %s",
                                     (f"u{i}", i)) for i in (0, 50, 200)]
        finally:
            mysql_query(mysql_admin, "UNLOCK TABLES")
        assert futures[0].result(timeout=30).rowcount == 1
        assert [f.result(timeout=30).rowcount for f in plain] == [1, 1, 1]
        assert [f.result(timeout=30).rowcount for f in upsert] == [-1, -1]  # total 3: 2+1
        assert [f.result(timeout=30).rowcount for f in update] == [5, 1, 0]
    finally:
        mysql_query(mysql_admin, "DROP TABLE IF EXISTS fp_batch_rows")
