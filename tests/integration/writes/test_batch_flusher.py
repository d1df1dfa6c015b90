"""The group-commit batcher's flusher on PostgreSQL and SQLite: a BaseException
while it runs a batch (what it reports, and that it survives), flush() waiting
for the futures it covers, and the order of keyed and unkeyed writes.

Each test comes from a bug found in review.

Tables are named ``fp_wr_*`` and dropped at the end of each test. To make two
writes share a batch, a test holds the only connection of a one-connection
pool: the flusher takes the first write and waits in ``acquire()``, and the
writes submitted meanwhile form the next batch.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from fastpool.writes.batch import Batcher
from tests.fix_pool import wait_until

ROWS = "CREATE TABLE fp_wr_rows (id BIGINT PRIMARY KEY, v VARCHAR(40))"
INSERT = "INSERT INTO fp_wr_rows (id, v) VALUES (%s, %s)"
INSERT_OTHER_ORDER = "INSERT INTO fp_wr_rows (v, id) VALUES (%s, %s)"


class Db:
    """A pool of one connection and an admin connection for one backend."""

    def __init__(self, name: str, pool: Any, admin: Any, ph: str) -> None:
        self.name = name
        self.pool = pool
        self.admin = admin
        self.ph = ph

    def sql(self, text: str) -> str:
        return text.replace("%s", self.ph)

    def query(self, text: str, params: Any = ()) -> list[tuple[Any, ...]]:
        cur = self.admin.cursor()
        try:
            cur.execute(self.sql(text), params)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        finally:
            cur.close()

    def ids(self) -> list[int]:
        return [r[0] for r in self.query("SELECT id FROM fp_wr_rows ORDER BY id")]


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request: pytest.FixtureRequest, make_pool: Any, db_path: str) -> Iterator[Db]:
    if request.param == "postgresql":
        import psycopg

        url = request.getfixturevalue("pg_url")
        pool = request.getfixturevalue("make_pg_pool")(max_size=1, timeout=30.0)
        d = Db("postgresql", pool, psycopg.connect(url, autocommit=True), "%s")
    else:
        pool = make_pool(url=f"sqlite:///{db_path}", max_size=1, timeout=30.0)
        d = Db("sqlite", pool, sqlite3.connect(db_path, isolation_level=None,
                                               check_same_thread=False), "?")
    d.query("DROP TABLE IF EXISTS fp_wr_rows")
    d.query(ROWS)
    yield d
    with contextlib.suppress(Exception):
        d.query("DROP TABLE IF EXISTS fp_wr_rows")
    d.admin.close()


@pytest.fixture
def batchers() -> Iterator[list[Batcher]]:
    made: list[Batcher] = []
    yield made
    for b in made:
        with contextlib.suppress(TimeoutError):
            b.close(timeout=5)  # a dead flusher would make close() wait forever


@contextlib.contextmanager
def flusher_parked(batcher: Batcher, db: Db) -> Iterator[None]:
    """Hold the pool's only connection while a first write is taken: the
    writes submitted inside the block form the flusher's next batch."""
    conn = db.pool.acquire()
    try:
        parked = batcher.submit(db.sql(INSERT), (-1, "parked"))
        wait_until(lambda: batcher.stats().queued == 0)
        yield
    finally:
        db.pool.release(conn)
    assert parked.result(timeout=30).rowcount == 1


class Poison(BaseException):
    """Not an Exception: what a param's adaptation (or anything the flusher
    calls) might raise, e.g. a SystemExit or a gevent Timeout."""


class PoisonedParams(Sequence[Any]):
    """Two parameters whose adaptation raises Poison."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: Any) -> Any:
        raise Poison("poisoned parameter")


def _poisoned_batch(db: Db, batchers: list[Batcher]) -> tuple[Batcher, Any, Any]:
    batcher = Batcher(db.pool, flushers=1, max_retries=0)
    batchers.append(batcher)
    with flusher_parked(batcher, db):
        good = batcher.submit(db.sql(INSERT), (1, "good"))                  # group 1
        bad = batcher.submit(db.sql(INSERT_OTHER_ORDER), PoisonedParams())  # group 2
    assert isinstance(bad.exception(timeout=30), Poison)
    return batcher, good, bad


def test_a_write_rolled_back_by_a_base_exception_is_not_reported_committed(
        db: Db, batchers: list[Batcher]) -> None:
    # batch.py:688-694 (flush_batch) keeps the result that dialect.run set for
    # the first group, though the transaction was never committed (the pool
    # rolled it back on release).
    batcher, good, _ = _poisoned_batch(db, batchers)
    error = good.exception(timeout=30)
    committed = 1 in db.ids()
    assert committed == (error is None), (
        f"write 1 reported {'an error' if error else good.result()} but "
        f"{'is' if committed else 'is not'} in the table")
    s = batcher.stats()
    assert s.committed == len(db.ids()), s


def test_the_flusher_survives_a_base_exception_and_later_writes_commit(
        db: Db, batchers: list[Batcher]) -> None:
    # batch.py:939 (_flusher_main) suppresses only Exception: the flusher
    # thread dies and every later write hangs (and close() never returns).
    batcher, _, _ = _poisoned_batch(db, batchers)
    later = batcher.submit(db.sql(INSERT), (2, "later"))
    assert later.result(timeout=10).rowcount == 1
    assert 2 in db.ids()


def test_flush_returns_only_once_every_future_it_covers_is_resolved(
        db: Db, batchers: list[Batcher]) -> None:
    # batch.py:631-650 (finish): inflight is cleared and flush() woken before
    # the batch's futures are resolved; a done-callback that takes a moment
    # (logging, a metric) lets flush() return with futures still pending.
    batcher = Batcher(db.pool, flushers=1)
    batchers.append(batcher)
    slow = threading.Event()
    with flusher_parked(batcher, db):
        first = batcher.submit(db.sql(INSERT), (1, "a"))
        first.add_done_callback(lambda f: slow.wait(3))
        second = batcher.submit(db.sql(INSERT), (2, "b"))
    try:
        batcher.flush(timeout=30)
        assert first.done() and second.done(), \
            "flush() returned while futures it covers are unresolved"
    finally:
        slow.set()
    assert second.result(timeout=30).rowcount == 1


def test_an_unkeyed_write_after_a_keyed_one_keeps_its_place(
        db: Db, batchers: list[Batcher]) -> None:
    # Key ordering sorted unkeyed writes before keyed ones of the same
    # statement: the later write ran first and the earlier value won.
    db.query("INSERT INTO fp_wr_rows (id, v) VALUES (1, 'start')")
    batcher = Batcher(db.pool, flushers=1)
    batchers.append(batcher)
    update = db.sql("UPDATE fp_wr_rows SET v = %s WHERE id = %s")
    with flusher_parked(batcher, db):
        first = batcher.submit(update, ("keyed", 1), key=1)
        second = batcher.submit(update, ("unkeyed, later", 1))
    assert first.result(timeout=30).rowcount == 1
    assert second.result(timeout=30).rowcount == 1
    assert db.query("SELECT v FROM fp_wr_rows WHERE id = 1") == [("unkeyed, later",)]
