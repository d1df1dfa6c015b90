"""Connections dropped without a release come back; connections in use never do.

On PostgreSQL (psycopg), MariaDB (mysqlclient) and SQLite, over both cores: the
pool's worker takes back a lent connection once nothing but the pool refers to
it (rolled back, counted in ``stats().reclaimed``, a warning naming where it
was acquired), and never one that a borrower, a cursor or another thread
still holds. The default ``leak_threshold`` warns, marks ``holders()`` and
explains a ``PoolTimeout``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastpool.errors import PoolTimeout
from fastpool.pool.policy import DEFAULT_LEAK_THRESHOLD, PoolPolicy, ThreadIO
from fastpool.steps import run
from tests.fix_db import Db, q
from tests.fix_pool import wait_until
from tests.fix_proxy import proxied


@pytest.fixture(autouse=True)
def quick_reclaim(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Check lent connections after 50 ms, every 20 ms (instead of 1 s and 1 s)."""
    monkeypatch.setattr(PoolPolicy, "RECLAIM_AFTER", 0.05)
    monkeypatch.setattr(PoolPolicy, "MAINTENANCE_INTERVAL", 0.02)
    yield


def ph(db: Db) -> str:
    return "?" if db.kind == "sqlite" else "%s"


def begin(db: Db, conn: Any) -> None:
    """Open a transaction on ``conn`` with an uncommitted row in it."""
    if db.kind == "mysql":
        q(conn, "BEGIN")
    elif db.kind == "sqlite" and not conn.in_transaction:
        conn.execute("BEGIN")
    q(conn, f"INSERT INTO {db.table} VALUES ({ph(db)}, {ph(db)})", (1, 1))


def drop_without_release(pool: Any, db: Db) -> None:
    """A request handler that returns early: acquires, writes, never releases."""
    conn = pool.acquire()
    begin(db, conn)


def test_a_dropped_connection_is_rolled_back_and_lent_again(db: Db, caplog: Any) -> None:
    pool = db.make(max_size=1, min_size=0)
    with caplog.at_level(logging.WARNING, logger="fastpool"):
        drop_without_release(pool, db)
        conn = pool.acquire(timeout=5.0)  # the only connection: reclaimed, then lent
        try:
            assert pool.stats().reclaimed == 1
            assert not pool.adapter.in_transaction(conn)
        finally:
            pool.release(conn)
        # Logged by the worker once the connection is back (maybe after this caller got it).
        wait_until(lambda: "dropped without a release" in caplog.text)
    assert db.rows() == []  # the dropped borrower's write was rolled back
    (record,) = [r for r in caplog.records if "dropped without a release" in r.getMessage()]
    text = record.getMessage()
    assert "rolled back and returned to the pool" in text
    assert "track_holders=True" in text  # how to learn where it was acquired


def test_the_warning_names_the_acquire_site_when_holders_are_tracked(
        db: Db, caplog: Any) -> None:
    pool = db.make(max_size=1, min_size=0, track_holders=True)
    with caplog.at_level(logging.WARNING, logger="fastpool"):
        drop_without_release(pool, db)
        wait_until(lambda: "dropped without a release" in caplog.text)
    (record,) = [r for r in caplog.records if "dropped without a release" in r.getMessage()]
    assert "in drop_without_release" in record.getMessage()
    assert "conn = pool.acquire()" in record.getMessage()


def test_an_exception_path_that_skips_release_loses_nothing(db: Db) -> None:
    pool = db.make(max_size=2, min_size=0)

    def handler() -> None:
        conn = pool.acquire()
        begin(db, conn)
        raise ValueError("bad request")  # release() never runs

    for _ in range(5):  # more than max_size: each one comes back
        with contextlib.suppress(ValueError):  # handled: the handler's frame is freed
            handler()
    wait_until(lambda: pool.stats().in_use == 0)
    assert pool.stats().reclaimed == 5
    assert db.rows() == []


class _Holder:
    """Keeps a connection (or something on it) until told to let go."""

    def __init__(self, pool: Any, how: str) -> None:
        self.conn: Any = pool.acquire()
        self.cursor: Any = None
        self.thread: threading.Thread | None = None
        self.done = threading.Event()
        if how == "cursor":
            # A cursor with a result still open on it; the borrower keeps only that.
            self.cursor = self.conn.cursor()
            self.cursor.execute("SELECT 1 UNION ALL SELECT 2")
            self.cursor.fetchone()
            self.conn = None
        elif how == "thread":
            # Another thread has it (blocked in the middle of its work).
            conn, self.conn = self.conn, None
            self.thread = threading.Thread(target=self._hold, args=(conn,), daemon=True)
            del conn
            self.thread.start()

    def _hold(self, conn: Any) -> None:
        self.done.wait(30)

    def let_go(self) -> None:
        self.conn = self.cursor = None
        if self.thread is not None:
            self.done.set()
            self.thread.join()


@pytest.mark.parametrize("how", ["borrower", "cursor", "thread"])
def test_a_connection_still_in_use_is_never_reclaimed(db: Db, how: str) -> None:
    pool = db.make(max_size=1, min_size=0)
    holder = _Holder(pool, how)
    # Many maintenance rounds (20 ms each) see it lent and held.
    with pytest.raises(PoolTimeout):
        pool.acquire(timeout=0.4)
    assert pool.stats().reclaimed == 0
    assert pool.stats().in_use == 1
    # Once nothing holds it, the same worker takes it back: it was looking.
    holder.let_go()
    gc.collect()
    wait_until(lambda: pool.stats().reclaimed == 1)
    conn = pool.acquire(timeout=5.0)
    pool.release(conn)


def test_reclaiming_can_be_turned_off(make_pool: Callable[..., Any],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PoolPolicy, "RECLAIM_AFTER", None)
    pool = make_pool(max_size=1, min_size=0)
    pool.acquire()
    with pytest.raises(PoolTimeout):
        pool.acquire(timeout=0.2)
    assert pool.stats().reclaimed == 0
    (conn,) = [c for c, _, _ in pool._holders()]
    pool.release(conn)


# ---- the default leak threshold ------------------------------------------------------

def test_leaks_are_reported_by_default_without_tracking_holders(
        make_pool: Callable[..., Any]) -> None:
    pool = make_pool()
    assert pool.leak_threshold == DEFAULT_LEAK_THRESHOLD == 300.0
    assert pool.track_holders is False  # the default costs no stack capture per acquire
    explicit = make_pool(leak_threshold=300.0)
    assert explicit.track_holders is True  # as before: an explicit threshold tracks
    off = make_pool(leak_threshold=None)
    assert off.leak_threshold is None and off.track_holders is False


def test_a_long_hold_is_logged_once_with_how_to_find_its_site(
        make_pool: Callable[..., Any], fake_clock: Any, caplog: Any) -> None:
    pool = make_pool(max_size=1, min_size=0)
    pool._set_clock(fake_clock)
    conn = pool.acquire()
    fake_clock.advance(DEFAULT_LEAK_THRESHOLD + 1)
    with caplog.at_level(logging.WARNING, logger="fastpool"):
        # The worker counts the leak, then logs it: wait for the record.
        wait_until(lambda: "possible leak" in caplog.text)
        pool._report_leaks()  # again: nothing more
    assert pool.stats().leaks == 1
    (record,) = [r for r in caplog.records if "possible leak" in r.getMessage()]
    assert "held for 301.0 s (leak_threshold 300 s)" in record.getMessage()
    assert "track_holders=True" in record.getMessage()
    assert [h["past_leak_threshold"] for h in pool.holders()] == [True]
    pool.release(conn)


def test_a_pool_timeout_says_connections_are_held_past_the_threshold(
        make_pool: Callable[..., Any], fake_clock: Any) -> None:
    pool = make_pool(max_size=2, min_size=0, leak_threshold=60.0)
    pool._set_clock(fake_clock)

    def forgetful_handler() -> Any:
        return pool.acquire()

    old = forgetful_handler()
    fake_clock.advance(61)
    young = pool.acquire()
    assert [h["past_leak_threshold"] for h in sorted(pool.holders(),
                                                      key=lambda h: -h["held"])] == [True, False]
    with pytest.raises(PoolTimeout) as info:
        pool.acquire(timeout=0.05)
    message = str(info.value)
    assert "1 connection(s) held longer than leak_threshold (60 s)" in message
    assert "in forgetful_handler" in message and "possibly leaked" in message
    pool.release(old)
    pool.release(young)


def test_a_pool_timeout_without_old_holders_does_not_mention_leaks(
        make_pool: Callable[..., Any]) -> None:
    pool = make_pool(max_size=1, min_size=0)
    conn = pool.acquire()
    with pytest.raises(PoolTimeout) as info:
        pool.acquire(timeout=0.05)
    assert "leak" not in str(info.value)
    pool.release(conn)


def test_close_takes_back_and_closes_what_was_dropped(
        db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PoolPolicy, "MAINTENANCE_INTERVAL", 30.0)  # close() must do it
    pool = db.make(max_size=1, min_size=0)
    drop_without_release(pool, db)
    time.sleep(0.1)  # lent longer than RECLAIM_AFTER
    pool.close(timeout=5.0)  # does not wait out its timeout for a connection nobody holds
    s = pool.stats()
    assert (s.in_use, s.open, s.reclaimed) == (0, 0, 1)
    assert db.rows() == []


# ---- one round at a time, and never a connection lent twice ------------------------------

def stop_worker(pool: Any) -> None:
    """End the pool's worker thread: from here on only the test's own rounds
    (``run(pool._reclaim_steps(), pool._io)``) reclaim, at the steps it picks."""
    pool._signal.stopping = True
    pool._kick()
    pool._worker.join(10)
    assert not pool._worker.is_alive()


def server_session(db: Db, conn: Any) -> int:
    """The server's id of ``conn``'s session, asked of the server (sqlite3: the
    connection object is the session)."""
    if db.kind == "postgresql":
        return int(q(conn, "SELECT pg_backend_pid()")[0][0])
    if db.kind == "mysql":
        return int(q(conn, "SELECT CONNECTION_ID()")[0][0])
    return id(conn)


class LendLog:
    """Each borrower logs a session when it has it and before it gives it back;
    ``overlaps()`` lists every session logged as lent to two borrowers at once."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()

    def lent(self, who: str, session: int) -> None:
        with self._lock:
            self.events.append(("lent", who, session))

    def returned(self, who: str, session: int) -> None:
        with self._lock:
            self.events.append(("returned", who, session))

    def overlaps(self) -> list[tuple[int, str, str]]:
        holder: dict[int, str] = {}
        found = []
        for what, who, session in self.events:
            if what == "lent":
                if session in holder:
                    found.append((session, holder[session], who))
                holder[session] = who
            elif holder.get(session) == who:
                del holder[session]
        return found


class GatedIO(ThreadIO):
    """The pool's own I/O, except that a waiter woken by a hand-off does not
    run on until ``gate`` opens: a thread the scheduler has not run yet, which
    holds no reference to the connection it was handed."""

    __slots__ = ("gate",)

    def __init__(self, driver: Any, gate: threading.Event) -> None:
        super().__init__(driver)
        self.gate = gate

    def wait(self, lock: Any, timeout: float) -> bool:
        woken = super().wait(lock, timeout)
        assert self.gate.wait(30), "the gate never opened"
        return woken


def record_reclaims(pool: Any) -> list[int]:
    """The ids of the connections the pool's rounds return as reclaimed, in
    order (``_return_reclaimed`` wrapped on the instance, through a weak
    reference: no cycle keeps the pool)."""
    returned: list[int] = []
    ref, return_reclaimed = weakref.ref(pool), type(pool)._return_reclaimed

    def recording(idx: int, *rest: Any) -> Any:
        this = ref()
        assert this is not None  # the round runs on the pool
        returned.append(id(this._conn_at(idx)))
        return (yield from return_reclaimed(this, idx, *rest))

    pool._return_reclaimed = recording
    return returned


def test_a_connection_handed_to_a_waiter_during_a_round_is_never_reclaimed(db: Db) -> None:
    """The race fixed in d174c3d: a round begins with the holder's connection
    among its candidates; while it returns the dropped one, the holder
    releases and the connection goes to a waiter that has not taken it yet
    (no reference to it anywhere but the pool's). The round must leave it lent:
    reclaiming it would put it back in the ring while the waiter has it.
    Without both checks of d174c3d (the fresh clock, the handoffs re-read)
    every run fails: the waiter and the next borrower get the same session."""
    log = LendLog()
    state: dict[str, Any] = {"held": [], "dropped": None}
    pool: Any = None

    def reset(conn: Any) -> None:  # runs on every return; acts on the dropped one's
        if id(conn) == state["dropped"] and state["held"]:
            log.returned("holder", state["held_session"])
            pool.release(state["held"].pop())  # handed to the waiter, mid-round

    pool = db.make(max_size=2, min_size=2, reset=reset)
    pool.wait(timeout=10)
    stop_worker(pool)
    gate = threading.Event()
    pool._io = GatedIO(pool._driver, gate)
    reclaimed = record_reclaims(pool)
    first, second = pool.acquire(), pool.acquire()
    if pool._slot_of(first) > pool._slot_of(second):
        first, second = second, first  # the round looks at slots in order: the dropped one first
    state["held_session"] = server_session(db, second)
    log.lent("holder", state["held_session"])
    state["held"].append(second)
    del second
    dropped = server_session(db, first)
    log.lent("dropper", dropped)
    begin(db, first)
    state["dropped"] = id(first)
    log.returned("dropper", dropped)  # it lets go: only the pool has it now
    del first

    took, done = threading.Event(), threading.Event()
    errors: list[Exception] = []
    answers: list[Any] = []

    def waiter() -> None:
        conn = pool.acquire(timeout=30)
        session = server_session(db, conn)
        log.lent("waiter", session)
        answers.append(q(conn, "SELECT 1"))  # a working connection
        took.set()
        done.wait(30)
        log.returned("waiter", session)
        try:
            pool.release(conn)
        except Exception as exc:  # already released by another borrower, say
            errors.append(exc)

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    wait_until(lambda: pool._sizes()[3] == 1)  # queued
    time.sleep(0.1)  # both lent longer than RECLAIM_AFTER: both are the round's candidates
    run(pool._reclaim_steps(), pool._io)
    assert state["held"] == [], "the holder's release did not happen during the round"
    gate.set()
    assert took.wait(10)
    mine = []
    for _ in range(2):  # whatever the pool has to lend now
        try:
            conn = pool.acquire(timeout=0.3)
        except PoolTimeout:
            break
        mine.append((conn, server_session(db, conn)))
        log.lent("main", mine[-1][1])
        conn = None
    for conn, session in mine:
        log.returned("main", session)
        pool.release(conn)
    conn = mine = None
    done.set()
    thread.join(10)
    assert log.overlaps() == []
    assert errors == []
    assert [list(map(tuple, a)) for a in answers] == [[(1,)]]
    assert reclaimed == [state["dropped"]]  # the dropped one only, once
    assert pool.stats().reclaimed == 1
    assert pool.stats().in_use == 0
    assert db.rows() == []


def test_close_beside_a_round_under_way_returns_a_dropped_connection_once(
        db: Db, caplog: Any) -> None:
    """close() runs a round of its own while the worker's may be under way (it
    waits for the worker only up to its timeout). Here close() runs in the
    worker's round between its decision that a connection was let go of and
    its return of it, where a thread switch can put it: the connection is
    returned, counted and closed once."""
    pool = db.make(max_size=1, min_size=1)
    pool.wait(timeout=10)
    stop_worker(pool)
    drop_without_release(pool, db)
    time.sleep(0.1)  # lent longer than RECLAIM_AFTER
    let_go = pool._let_go

    def close_in_the_window(*args: Any) -> Any:
        found = let_go(*args)
        if found[0] and not pool.closed:
            pool.close(timeout=0.5)  # its round, then the worker's goes on
        return found

    pool._let_go = close_in_the_window
    with caplog.at_level(logging.WARNING, logger="fastpool"):
        run(pool._reclaim_steps(), pool._io)  # the worker's round
    del pool._let_go
    s = pool.stats()
    assert (s.reclaimed, s.in_use, s.open) == (1, 0, 0)
    assert s.closed_total == s.opened == 1
    assert caplog.text.count("dropped without a release") == 1
    assert "returning a reclaimed connection failed" not in caplog.text
    assert db.rows() == []


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_reclaimed_connection_whose_rollback_gets_no_answer_is_discarded(
        kind: str, make_pool: Callable[..., Any], request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    """The server stops answering (a TCP proxy that stalls: the ROLLBACK goes
    out, nothing comes back) while the worker returns a dropped connection:
    after RESET_TIMEOUT its socket is shut down, the rollback fails, the
    connection is discarded, and the worker goes on (it opens the next one)."""
    from fastpool.drivers import from_url

    monkeypatch.setattr(PoolPolicy, "RESET_TIMEOUT", 0.5, raising=False)
    proxy, url = proxied(kind, request)
    pool = make_pool(driver=from_url(url), max_size=1, min_size=0)
    conn = pool.acquire()
    if kind == "mysql":
        q(conn, "BEGIN")
    q(conn, "SELECT 1")  # a transaction open: its return sends a ROLLBACK
    assert pool.adapter.in_transaction(conn)
    proxy.stall()
    del conn
    with caplog.at_level(logging.WARNING, logger="fastpool"):
        # (the warning comes once the return is over, maybe after the counts)
        wait_until(lambda: "RESET_TIMEOUT" in caplog.text, timeout=20)
    s = pool.stats()
    assert (s.reclaimed, s.open, s.in_use) == (1, 0, 0)
    proxy.resume()
    conn = pool.acquire(timeout=10)  # the worker is free: it opens a new one
    assert q(conn, "SELECT 1") == [(1,)]
    pool.release(conn)
