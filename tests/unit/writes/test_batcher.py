"""The group-commit batcher over SQLite (no server): hand-off, grouping,
ordering, failure isolation, back-pressure, shutdown and statistics.

A "gate" (an SQLite function ``fp_gate(x)`` that blocks until the test opens
it) holds the flusher inside a transaction, so that the test decides exactly
which writes make up the next batch.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import weakref
from concurrent.futures import CancelledError
from typing import Any

import pytest

import fastpool
from fastpool import ConfigError, PoolClosed
from fastpool.writes.batch import Batcher, BatcherClosed, BatcherFull, BatchResult
from tests.fix_pool import run_in_child, wait_until

INSERT = "INSERT INTO fp_batch_t (id, v) VALUES (?, ?)"
GATE = "INSERT INTO fp_batch_t (id, v) VALUES (fp_gate(?), 'gate')"
GATE_ID = -1


class Gate:
    """``fp_gate(x)`` blocks the flusher that runs it until ``open()``."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, x: Any) -> Any:
        self.entered.set()
        self.opened.wait(30)
        return x

    def install(self, conn: sqlite3.Connection) -> None:
        conn.create_function("fp_gate", 1, self)

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def pool(make_pool: Any, gate: Gate, db_path: str) -> Any:
    pool = make_pool(max_size=3, configure=gate.install)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE fp_batch_t (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "id INTEGER UNIQUE, v TEXT)")
    return pool


@pytest.fixture
def batchers(gate: Gate) -> Any:
    """Batchers made by a test are closed at its end (even when it fails)."""
    made: list[Batcher] = []
    yield made
    gate.open()
    for b in made:
        b.close(timeout=10)


@pytest.fixture
def make_batcher(pool: Any, batchers: list[Batcher]) -> Any:
    def make(**options: Any) -> Batcher:
        b = Batcher(pool, **options)
        batchers.append(b)
        return b
    return make


def rows(pool: Any) -> list[tuple[int, str]]:
    """(id, v) of the committed rows in the order they were written, gate row excluded."""
    with pool.connection() as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT id, v FROM fp_batch_t WHERE id <> ? ORDER BY seq", (GATE_ID,))]


def hold_flusher(b: Batcher, gate: Gate) -> Any:
    """Park the (single) flusher inside a batch; returns the gate write's future."""
    future = b.submit(GATE, (GATE_ID,))
    assert gate.entered.wait(10)
    assert b.stats().queued == 0
    return future


def check_stats_add_up(b: Batcher) -> None:
    s = b.stats()
    assert s.submitted == s.committed + s.failed + s.cancelled + s.pending, s


# ---- configuration ------------------------------------------------------------

@pytest.mark.parametrize(("option", "value"), [
    ("max_batch", 0), ("max_batch", 2.5), ("max_batch", True),
    ("max_delay", -1), ("max_delay", float("nan")), ("max_delay", "5ms"),
    ("flushers", 0), ("max_pending", 0), ("on_full", "drop"),
    ("full_timeout", -0.5), ("key", 42), ("max_retries", -1), ("name", 7),
])
def test_bad_options_raise_config_error_naming_them(pool: Any, option: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=option):
        Batcher(pool, **{option: value})


def test_unknown_option_and_too_many_flushers_are_config_errors(pool: Any) -> None:
    with pytest.raises(ConfigError, match="max_batchsize"):
        Batcher(pool, max_batchsize=10)
    with pytest.raises(ConfigError, match=r"flushers \(4\).*max_size \(3\)"):
        Batcher(pool, flushers=4)
    with pytest.raises(ConfigError, match="pool"):
        Batcher(object())  # type: ignore[arg-type]


def test_bad_statement_or_parameters_are_refused_at_submit(make_batcher: Any) -> None:
    b = make_batcher()
    with pytest.raises(TypeError, match="sql must be a str"):
        b.submit(b"INSERT INTO fp_batch_t VALUES (1)")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="params must be a sequence or a mapping"):
        b.execute(INSERT, "12")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="params must be a sequence or a mapping"):
        b.submit(INSERT, 12)  # type: ignore[arg-type]
    assert b.stats().submitted == 0


# ---- results ----------------------------------------------------------------------

def test_execute_returns_rowcount_and_returning_row(make_batcher: Any, pool: Any) -> None:
    b = make_batcher()
    assert b.execute(INSERT, (1, "a")) == BatchResult(rowcount=1, row=None)
    assert b.execute("UPDATE fp_batch_t SET v = 'z' WHERE id > ?", (100,)).rowcount == 0
    res = b.execute("INSERT INTO fp_batch_t (id, v) VALUES (?, ?) RETURNING id, v", (2, "b"))
    assert (res.rowcount, tuple(res.row)) == (1, (2, "b"))
    assert b.execute("INSERT INTO fp_batch_t (id, v) VALUES (:id, :v)",
                     {"id": 3, "v": "c"}).rowcount == 1
    assert rows(pool) == [(1, "a"), (2, "b"), (3, "c")]


def test_a_lone_write_is_flushed_at_once_not_after_max_delay(make_batcher: Any) -> None:
    # max_delay is an upper bound for parallel batches, never a sleep: with a
    # 30 s max_delay a lone write still commits right away.
    b = make_batcher(max_delay=30.0)
    b.submit(INSERT, (1, "a")).result(timeout=10)
    s = b.stats()
    assert (s.batches, s.committed) == (1, 1)


# ---- batching ------------------------------------------------------------------------

def test_writes_queued_during_a_commit_go_in_the_next_batch_grouped_by_statement(
        make_batcher: Any, gate: Gate, pool: Any) -> None:
    b = make_batcher()
    held = hold_flusher(b, gate)
    upd = "UPDATE fp_batch_t SET v = v || '+' WHERE id = ?"
    futures = [b.submit(INSERT, (1, "a")), b.submit(upd, (1,)), b.submit(INSERT, (2, "b")),
               b.submit(upd, (2,)), b.submit(INSERT, (3, "c"))]
    gate.open()
    held.result(timeout=10)
    assert [f.result(timeout=10).rowcount for f in futures] == [1, 1, 1, 1, 1]
    s = b.stats()
    assert s.batches == 2 and s.batch_size_p99 == 5
    # One group per statement, in the order of its first write: all the
    # INSERTs (in submission order), then the UPDATEs.
    assert rows(pool) == [(1, "a+"), (2, "b+"), (3, "c")]


def test_max_batch_splits_a_long_queue(make_batcher: Any, gate: Gate, pool: Any) -> None:
    b = make_batcher(max_batch=10)
    held = hold_flusher(b, gate)
    futures = [b.submit(INSERT, (i, "x")) for i in range(25)]
    gate.open()
    held.result(timeout=10)
    for f in futures:
        f.result(timeout=10)
    s = b.stats()
    assert s.batches == 1 + 3  # the gate's, then 10 + 10 + 5
    assert s.batch_size_p99 == 10
    assert [i for i, _ in rows(pool)] == list(range(25))


def test_keys_order_each_statement_group(make_batcher: Any, gate: Gate, pool: Any) -> None:
    b = make_batcher(key=lambda params: params[0])
    held = hold_flusher(b, gate)
    ids = random.Random(5).sample(range(100), 40)
    futures = [b.submit(INSERT, (i, "x")) for i in ids]
    # submit()'s own key wins over the batcher's: this one sorts first.
    futures.append(b.submit(INSERT, (1000, "first"), key=-5))
    gate.open()
    held.result(timeout=10)
    for f in futures:
        f.result(timeout=10)
    assert [i for i, _ in rows(pool)] == [1000, *sorted(ids)]


def test_without_keys_submission_order_is_kept(make_batcher: Any, gate: Gate,
                                               pool: Any) -> None:
    b = make_batcher()
    held = hold_flusher(b, gate)
    ids = random.Random(6).sample(range(100), 40)
    futures = [b.submit(INSERT, (i, "x")) for i in ids]
    gate.open()
    held.result(timeout=10)
    for f in futures:
        f.result(timeout=10)
    assert [i for i, _ in rows(pool)] == ids


def test_concurrent_submitters_lose_and_duplicate_nothing(make_batcher: Any,
                                                          pool: Any) -> None:
    b = make_batcher(max_batch=64)
    per_thread = 60
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                if i % 2:
                    assert b.execute(INSERT, (t * per_thread + i, "e")).rowcount == 1
                else:
                    b.submit(INSERT, (t * per_thread + i, "s"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    b.flush(timeout=30)
    assert not errors
    ids = [i for i, _ in rows(pool)]
    assert sorted(ids) == list(range(32 * per_thread))
    s = b.stats()
    assert (s.submitted, s.committed, s.failed, s.pending) == (32 * per_thread,) * 2 + (0, 0)
    assert s.batches < 32 * per_thread  # writes were grouped
    assert s.latency_p99 >= s.latency_p50 > 0


# ---- failures ---------------------------------------------------------------------------

def test_a_poisoned_write_fails_alone(make_batcher: Any, gate: Gate, pool: Any) -> None:
    b = make_batcher()
    b.execute(INSERT, (7, "existing"))
    held = hold_flusher(b, gate)
    futures = {i: b.submit(INSERT, (i, "x")) for i in range(100) if i != 7}
    poisoned = b.submit(INSERT, (7, "duplicate"))
    futures.update({i: b.submit(INSERT, (i, "x")) for i in range(100, 150)})
    gate.open()
    held.result(timeout=10)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        poisoned.result(timeout=10)
    assert all(f.result(timeout=10).rowcount == 1 for f in futures.values())
    assert sorted(i for i, _ in rows(pool)) == sorted([7, *futures])
    s = b.stats()
    assert (s.failed, s.isolations) == (1, 1)
    check_stats_add_up(b)


def test_every_bad_write_gets_its_own_error(make_batcher: Any, gate: Gate) -> None:
    b = make_batcher()
    held = hold_flusher(b, gate)
    good = [b.submit(INSERT, (i, "x")) for i in range(10)]
    bad = [b.submit(INSERT, (i, "again")) for i in (2, 5)]
    typo = b.submit("INSERT INTO fp_batch_nope VALUES (?)", (1,))
    gate.open()
    held.result(timeout=10)
    assert all(f.result(timeout=10).rowcount == 1 for f in good)
    errors = [f.exception(timeout=10) for f in [*bad, typo]]
    assert all(isinstance(e, sqlite3.IntegrityError) for e in errors[:2])
    assert isinstance(errors[2], sqlite3.OperationalError) and "no such table" in str(errors[2])
    assert len({id(e) for e in errors}) == 3  # one exception object per caller


def test_a_write_failing_at_commit_is_found_by_bisection(make_pool: Any, db_path: str,
                                                          batchers: list[Batcher]) -> None:
    # A deferred foreign key is checked at COMMIT: the batch is split across
    # transactions until the bad write is alone.
    pool = make_pool(url=f"sqlite:///{db_path}?foreign_keys=on")
    with pool.connection() as conn:
        conn.execute("CREATE TABLE fp_batch_parent (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE fp_batch_child (id INTEGER PRIMARY KEY, parent INTEGER "
                     "REFERENCES fp_batch_parent (id) DEFERRABLE INITIALLY DEFERRED)")
        conn.execute("INSERT INTO fp_batch_parent VALUES (1)")
    b = Batcher(pool)
    batchers.append(b)
    ins = "INSERT INTO fp_batch_child VALUES (?, ?)"
    with pool.connection() as conn:
        # Hold the write lock: the first write's batch waits in the busy
        # handler while the other 19 queue up for the next one.
        conn.execute("BEGIN IMMEDIATE")
        futures = [b.submit(ins, (0, 1))]
        wait_until(lambda: b.stats().queued == 0)
        futures += [b.submit(ins, (i, 2 if i == 13 else 1)) for i in range(1, 20)]
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        futures[13].result(timeout=10)
    assert all(f.result(timeout=10).rowcount == 1 for i, f in enumerate(futures) if i != 13)
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM fp_batch_child").fetchone()[0] == 19


def test_conflicts_are_retried_with_backoff(make_pool: Any, db_path: str,
                                            batchers: list[Batcher],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # "database is locked" (ErrorKind.RETRYABLE): another connection holds the
    # write lock for a while; the busy timeout is short.
    monkeypatch.setattr(Batcher, "BACKOFF", fastpool.ExponentialBackoff(0.01, 0.05, 0.5))
    pool = make_pool(url=f"sqlite:///{db_path}?timeout=0.01")
    with pool.connection() as conn:
        conn.execute("CREATE TABLE fp_batch_t (seq INTEGER PRIMARY KEY, id INTEGER, v TEXT)")
    patient = Batcher(pool, max_retries=1000)
    impatient = Batcher(pool, max_retries=0)
    batchers += [patient, impatient]
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        waiting = patient.submit(INSERT, (1, "a"))
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            impatient.execute(INSERT, (2, "b"))
        wait_until(lambda: patient.stats().retries >= 2)
        assert not waiting.done()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert waiting.result(timeout=10).rowcount == 1
    s = patient.stats()
    assert s.conflicts >= 2 and s.retries >= 2 and (s.committed, s.failed) == (1, 0)
    s = impatient.stats()
    assert (s.conflicts, s.retries, s.failed) == (1, 0, 1)


def test_a_closed_pool_fails_the_writes(make_batcher: Any, pool: Any) -> None:
    b = make_batcher()
    pool.close()
    with pytest.raises(PoolClosed):
        b.execute(INSERT, (1, "a"))
    assert b.stats().failed == 1


# ---- back-pressure -------------------------------------------------------------------

def test_full_batcher_raises_at_once_in_raise_mode(make_batcher: Any, gate: Gate) -> None:
    b = make_batcher(max_pending=5, on_full="raise")
    held = hold_flusher(b, gate)
    futures = [b.submit(INSERT, (i, "x")) for i in range(4)]  # 5 pending with the gate's
    with pytest.raises(BatcherFull, match=r"5 writes pending \(max_pending=5\)"):
        b.submit(INSERT, (99, "x"))
    gate.open()
    held.result(timeout=10)
    for f in futures:
        f.result(timeout=10)
    b.submit(INSERT, (99, "x")).result(timeout=10)  # room again


def test_full_batcher_blocks_up_to_full_timeout(make_batcher: Any, gate: Gate) -> None:
    b = make_batcher(max_pending=3, on_full="block", full_timeout=0.2)
    held = hold_flusher(b, gate)
    b.submit(INSERT, (1, "x"))
    b.submit(INSERT, (2, "x"))
    with pytest.raises(BatcherFull, match=r"full for 0\.2 s \(full_timeout\)"):
        b.submit(INSERT, (3, "x"))
    gate.open()
    held.result(timeout=10)
    b.flush(timeout=10)
    s = b.stats()
    assert (s.submitted, s.committed) == (3, 3)


def test_a_blocked_submitter_proceeds_when_room_appears(make_batcher: Any, gate: Gate,
                                                        pool: Any) -> None:
    b = make_batcher(max_pending=3, on_full="block", full_timeout=30)
    held = hold_flusher(b, gate)
    b.submit(INSERT, (1, "x"))
    b.submit(INSERT, (2, "x"))
    got: list[Any] = []
    blocked = threading.Thread(target=lambda: got.append(b.execute(INSERT, (3, "x"))),
                               daemon=True)
    blocked.start()
    wait_until(lambda: b._engine.room_waiters == 1)
    assert b.stats().submitted == 3  # the blocked write is not accepted yet
    gate.open()
    blocked.join(10)
    assert not blocked.is_alive()
    assert got and got[0].rowcount == 1
    held.result(timeout=0)
    assert [i for i, _ in rows(pool)] == [1, 2, 3]


def test_close_wakes_a_submitter_blocked_on_a_full_batcher(make_batcher: Any,
                                                           gate: Gate) -> None:
    b = make_batcher(max_pending=1, full_timeout=None)
    held = hold_flusher(b, gate)
    outcome: list[BaseException] = []

    def submit() -> None:
        try:
            b.submit(INSERT, (1, "x"))
        except BaseException as exc:
            outcome.append(exc)

    blocked = threading.Thread(target=submit, daemon=True)
    blocked.start()
    wait_until(lambda: b._engine.room_waiters == 1)
    closer = threading.Thread(target=b.close, daemon=True)
    closer.start()
    blocked.join(10)
    assert outcome and isinstance(outcome[0], BatcherClosed)
    gate.open()
    closer.join(10)
    assert not closer.is_alive()
    assert held.result(timeout=1).rowcount == 1


# ---- flush, close, cancel -----------------------------------------------------------------

def test_flush_waits_for_everything_submitted_before_it(make_batcher: Any, gate: Gate,
                                                        pool: Any) -> None:
    b = make_batcher()
    held = hold_flusher(b, gate)
    futures = [b.submit(INSERT, (i, "x")) for i in range(10)]
    with pytest.raises(TimeoutError, match="flush timed out"):
        b.flush(timeout=0.1)
    gate.open()
    b.flush(timeout=10)
    assert held.done() and all(f.done() for f in futures)
    assert len(rows(pool)) == 10


def test_close_commits_everything_pending_then_refuses_writes(make_batcher: Any, gate: Gate,
                                                              pool: Any) -> None:
    b = make_batcher(max_batch=7)
    held = hold_flusher(b, gate)
    futures = [b.submit(INSERT, (i, "x")) for i in range(30)]
    closer = threading.Thread(target=b.close, daemon=True)
    closer.start()
    wait_until(lambda: b.closed)
    with pytest.raises(BatcherClosed):
        b.submit(INSERT, (100, "late"))
    gate.open()
    closer.join(10)
    assert not closer.is_alive()
    assert held.result(timeout=0).rowcount == 1
    assert all(f.result(timeout=0).rowcount == 1 for f in futures)
    assert len(rows(pool)) == 30
    assert not any(t.is_alive() for t in b._engine.threads)
    with pytest.raises(BatcherClosed, match="closed"):
        b.execute(INSERT, (101, "late"))
    b.close()  # again: harmless
    s = b.stats()
    assert (s.submitted, s.committed, s.pending) == (31, 31, 0)


def test_a_cancelled_future_is_not_written(make_batcher: Any, gate: Gate, pool: Any) -> None:
    b = make_batcher()
    held = hold_flusher(b, gate)
    keep = b.submit(INSERT, (1, "x"))
    dropped = b.submit(INSERT, (2, "x"))
    assert dropped.cancel()
    gate.open()
    held.result(timeout=10)
    assert keep.result(timeout=10).rowcount == 1
    with pytest.raises(CancelledError):
        dropped.result()
    b.flush()
    assert rows(pool) == [(1, "x")]
    s = b.stats()
    assert (s.committed, s.cancelled) == (2, 1)  # the gate write and `keep`
    check_stats_add_up(b)


def test_execute_in_a_done_callback_is_refused(make_batcher: Any, gate: Gate) -> None:
    gate_fn = gate
    b = make_batcher()
    seen: list[BaseException] = []

    def callback(_: Any) -> None:
        try:
            b.execute(INSERT, (2, "x"))
        except RuntimeError as exc:
            seen.append(exc)

    gate = b.submit(GATE, (GATE_ID,))  # the callback must run in the flusher
    future = b.submit(INSERT, (1, "x"))
    future.add_done_callback(callback)
    gate_fn.open()
    future.result(timeout=10)
    gate.result(timeout=10)
    wait_until(lambda: seen)
    assert "flusher thread" in str(seen[0])


def test_an_interrupted_execute_does_not_stall_its_batch(make_batcher: Any, gate: Gate,
                                                          pool: Any) -> None:
    """SIGINT in the main thread's execute(): it raises KeyboardInterrupt, its
    write still commits, and the other callers of its batch are all woken."""
    b = make_batcher()
    held = hold_flusher(b, gate)
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(b.execute(INSERT, (1, "x"))),
                             daemon=True)
    first.start()
    wait_until(lambda: b.stats().queued == 1)
    others = [threading.Thread(target=lambda i=i: results.append(b.execute(INSERT, (i, "x"))),
                               daemon=True) for i in (3, 4)]

    def interrupt_then_more() -> None:
        wait_until(lambda: b.stats().queued == 2)
        for t in others:
            t.start()
        wait_until(lambda: b.stats().queued == 4)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]

    helper = threading.Thread(target=interrupt_then_more, daemon=True)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        b.execute(INSERT, (2, "main"))
    helper.join(10)
    gate.open()
    for t in (first, *others):
        t.join(10)
        assert not t.is_alive()
    assert len(results) == 3
    b.flush(timeout=10)
    assert sorted(i for i, _ in rows(pool)) == [1, 2, 3, 4]
    # The main thread can wait again.
    assert b.execute(INSERT, (5, "x")).rowcount == 1
    held.result(timeout=0)


# ---- lifetime -------------------------------------------------------------------------

def test_an_abandoned_batcher_is_collected_and_flushes(pool: Any) -> None:
    b = Batcher(pool)
    futures = [b.submit(INSERT, (i, "x")) for i in range(50)]
    threads = list(b._engine.threads)
    ref = weakref.ref(b)
    del b
    gc.collect()
    assert ref() is None
    assert all(f.result(timeout=10).rowcount == 1 for f in futures)
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert len(rows(pool)) == 50


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_starts_empty_and_never_writes_the_parents_queue(
        make_pool: Any, batchers: list[Batcher]) -> None:
    pool = make_pool(min_size=1, max_size=1, timeout=30)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE fp_batch_t (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "id INTEGER UNIQUE, v TEXT)")
    b = Batcher(pool)
    batchers.append(b)
    held = pool.acquire()  # the flusher's batch waits for the only connection
    futures = [b.submit(INSERT, (0, "parent"))]
    wait_until(lambda: b.stats().queued == 0)
    futures += [b.submit(INSERT, (i, "parent")) for i in range(1, 10)]

    def child() -> Any:
        before = b.stats()
        result = b.submit(INSERT, (100, "child")).result(timeout=10)
        b.close(timeout=10)
        after = b.stats()
        return {"before": [before.submitted, before.pending], "rowcount": result.rowcount,
                "after": [after.submitted, after.committed, after.pending]}

    assert run_in_child(child) == {"before": [0, 0], "rowcount": 1, "after": [1, 1, 0]}
    pool.release(held)
    assert all(f.result(timeout=10).rowcount == 1 for f in futures)
    assert sorted(rows(pool)) == sorted([(i, "parent") for i in range(10)] + [(100, "child")])


@pytest.mark.parametrize("how", ["left open", "abandoned"])
def test_nothing_pending_is_dropped_at_interpreter_exit(tmp_path: Any, how: str) -> None:
    db = tmp_path / "exit.db"
    script = textwrap.dedent(f"""
        import fastpool
        from fastpool.writes.batch import Batcher
        pool = fastpool.create_pool("sqlite:///{db}")
        with pool.connection() as conn:
            conn.execute("CREATE TABLE fp_batch_t (id INTEGER PRIMARY KEY)")
        b = Batcher(pool, max_batch=10)
        # The flusher is parked in the busy handler while 500 writes queue up.
        blocker = pool.acquire()
        blocker.execute("BEGIN IMMEDIATE")
        for i in range(500):
            b.submit("INSERT INTO fp_batch_t VALUES (?)", (i,))
        blocker.rollback()
        pool.release(blocker)
        if {how!r} == "abandoned":
            del b
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONWARNINGS": "error"})
    assert proc.returncode == 0, proc.stderr
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM fp_batch_t").fetchone()[0] == 500
    finally:
        conn.close()


def test_stats_add_up_and_reset(make_batcher: Any) -> None:
    b = make_batcher()
    for i in range(20):
        b.execute(INSERT, (i, "x"))
    with pytest.raises(sqlite3.IntegrityError):
        b.execute(INSERT, (3, "dup"))
    s = b.stats()
    assert (s.submitted, s.committed, s.failed, s.pending, s.queued) == (21, 20, 1, 0, 0)
    assert s.batches == 21 and s.batch_size_mean == 1.0 and s.batch_size_p99 == 1
    assert 0 < s.latency_p50 <= s.latency_p99
    assert s.as_dict()["committed"] == 20
    b.stats(reset=True)
    s = b.stats()
    assert (s.submitted, s.committed, s.failed, s.batches, s.latency_p99) == (0, 0, 0, 0, 0.0)
    assert "pending=0" in repr(b)
