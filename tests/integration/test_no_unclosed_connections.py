"""No unclosed connection of the pool's own making.

Every connection a pool lets go of must be closed by the pool: the one whose
``configure`` failed, the ones that expired (lifetime, idle), the broken ones
(found by a probe at lend, by ``check()``, or on return), the drained ones, the
ones above a smaller size, and, at ``close()``, the idle ones at once and the
lent ones when they come back. Python 3.13's sqlite3 and psycopg (any version)
emit a ``ResourceWarning`` for a connection collected without ``close()``;
mysqlclient emits none, so each connection's own closed state is checked too.

The pool's every opened connection is recorded (from ``configure``, which sees
them all, the ones whose ``configure`` fails included). After each step, the
recorded connections that are still open must be exactly as many as the pool
says it has open, and at the end none. Then the records are dropped and
garbage collected with ResourceWarning an error: a connection the pool dropped
unclosed would warn there (Python 3.13, psycopg).
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fix_db import mysql_kill, pg_terminate
from tests.fix_pool import wait_until

DRIVERS = ["sqlite", "postgresql", "mysql"]
#: Python 3.13 is the first whose sqlite3 warns about an unclosed connection.
SQLITE_WARNS = sys.version_info >= (3, 13)


class Backend:
    """A driver under test: how to make its pools, and how to break one of its
    connections from outside or tell whether it was closed."""

    def __init__(self, name: str, make: Callable[..., Any], admin: Any) -> None:
        self.name, self.make, self.admin = name, make, admin

    def connect_raw(self, pool: Any) -> Any:
        """A connection of the pool's driver, outside the pool."""
        return pool.driver.connect()

    def is_open(self, conn: Any) -> bool:
        """Not closed by anyone (a connection broken by the server still counts
        as open until its owner closes it)."""
        if isinstance(conn, sqlite3.Connection):
            try:
                conn.total_changes  # noqa: B018  (raises once closed)
            except sqlite3.ProgrammingError:
                return False
            return True
        if self.name == "postgresql":
            # True after close(), and also once libpq found the connection
            # broken: libpq has dropped its socket then (psycopg's close() is a
            # no-op for it, and its ResourceWarning is not emitted either).
            return not conn.closed
        return bool(conn.open)  # mysqlclient: 0 once close() ran

    def kill(self, conn: Any) -> None:
        """Break ``conn`` as an outage would: the server ends its session
        (SQLite: every statement is interrupted from now on)."""
        if self.name == "sqlite":
            conn.set_progress_handler(lambda: 1, 1)
        elif self.name == "postgresql":
            pg_terminate(self.admin, [conn.pgconn.backend_pid])
        else:
            mysql_kill(self.admin, [conn.thread_id()])


@pytest.fixture(params=DRIVERS)
def backend(request: pytest.FixtureRequest, pool_cls: type[Any]) -> Backend:
    """Each driver, over each core (``pool_cls``, which ``make_pool`` uses)."""
    if request.param == "sqlite":
        return Backend("sqlite", request.getfixturevalue("make_pool"), None)
    if request.param == "postgresql":
        return Backend("postgresql", request.getfixturevalue("make_pg_pool"),
                       request.getfixturevalue("pg_admin"))
    return Backend("mysql", request.getfixturevalue("make_mysql_pool"),
                   request.getfixturevalue("mysql_admin"))


@contextlib.contextmanager
def resource_warnings_are_errors() -> Iterator[list[str]]:
    """Collect what ``-W error::ResourceWarning`` would raise, including from
    ``__del__`` (where it is an "exception ignored" passed to
    sys.unraisablehook), into the yielded list."""
    caught: list[str] = []
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        caught.append(f"{type(unraisable.exc_value).__name__}: {unraisable.exc_value}")

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        sys.unraisablehook = hook
        try:
            yield caught
            gc.collect()
        finally:
            sys.unraisablehook = previous


def test_the_warning_check_catches_a_connection_dropped_unclosed(backend):
    """The check below can fail: a driver connection dropped without close()
    is reported (psycopg always, sqlite3 from Python 3.13; mysqlclient never
    warns, which is why the test below also reads each connection's state)."""
    if backend.name == "mysql" or (backend.name == "sqlite" and not SQLITE_WARNS):
        pytest.skip(f"{backend.name} does not warn about an unclosed connection here")
    pool = backend.make(min_size=0)
    with resource_warnings_are_errors() as caught:
        conn = backend.connect_raw(pool)
        assert backend.is_open(conn)
        del conn
    assert any("ResourceWarning" in c for c in caught), caught


@pytest.mark.filterwarnings("error::ResourceWarning")
def test_the_pool_closes_every_connection_it_lets_go_of(backend, fake_clock, caplog):
    seen: list[Any] = []  # every connection the pool opened
    configure_failures = [1]

    def configure(conn: Any) -> None:
        seen.append(conn)
        if configure_failures[0]:
            configure_failures[0] -= 1
            raise RuntimeError("configure fails (injected)")

    with resource_warnings_are_errors() as caught:
        pool = backend.make(min_size=2, max_size=4, max_lifetime=1000, max_idle=50,
                            alive_bypass=0.5, configure=configure)
        pool._set_clock(fake_clock)  # lifetimes and idle times pass without sleeping
        pool.LIFETIME_JITTER = 0.0

        def settled() -> None:
            """The recorded connections still open are the pool's open ones."""
            try:
                wait_until(lambda: sum(map(backend.is_open, seen)) == pool.stats().open)
            except AssertionError:
                raise AssertionError(
                    f"{sum(map(backend.is_open, seen))} of the {len(seen)} connections the "
                    f"pool opened are open, but the pool has {pool.stats().open} open: "
                    f"{pool.stats().closed}") from None

        # Open: the first configure fails, so that connection is closed at once.
        pool.wait(10)
        settled()
        assert pool.stats().connect_errors == 1
        assert len(seen) >= 3 and not backend.is_open(seen[0])

        # Lifetime: a lent connection expires on return, an idle one on the timer.
        lent = pool.acquire()
        fake_clock.advance(1001)
        pool.release(lent)
        assert not backend.is_open(lent)
        pool._kick()
        wait_until(lambda: pool.stats().closed["lifetime"] >= 2)
        pool.wait(10)
        settled()

        # Idle: connections above min_size close after max_idle.
        conns = [pool.acquire() for _ in range(4)]
        for conn in conns:
            pool.release(conn)
        fake_clock.advance(51)
        pool._kick()
        wait_until(lambda: pool.stats().closed["idle"] >= 2)
        settled()

        # Broken, found by the probe at lend (idle past alive_bypass).
        victim = pool.acquire()
        pool.release(victim)
        backend.kill(victim)
        fake_clock.advance(1)
        while True:  # LIFO: the victim is lent first, probed, and replaced
            with pool.connection() as conn:
                if backend.is_open(victim):
                    continue
                break
        assert pool.stats().closed["broken"] >= 1
        settled()

        # Broken, found by check().
        pool.wait(10)
        victim = pool.acquire()
        pool.release(victim)
        backend.kill(victim)
        assert pool.check() >= 1
        assert not backend.is_open(victim)
        settled()

        # Broken on return: killed in the middle of a transaction.
        pool.wait(10)
        victim = pool.acquire()
        pool.adapter.begin(victim)
        backend.kill(victim)
        with contextlib.suppress(Exception):  # the borrower sees the error...
            victim.cursor().execute("SELECT 1")
        pool.release(victim)  # ...and gives it back
        assert not backend.is_open(victim)
        settled()

        # Drain: the idle ones close now, the lent one when it comes back.
        pool.wait(10)
        lent = pool.acquire()
        drained = pool.stats().closed["drained"]
        pool.drain()
        pool.release(lent)
        assert not backend.is_open(lent)
        wait_until(lambda: pool.stats().closed["drained"] >= drained + 2)
        settled()

        # Resize down: the idle connections above the new max_size close.
        pool.wait(10)
        lent = pool.acquire()
        pool.resize(0, 1)
        wait_until(lambda: pool.stats().open == 1)
        settled()
        pool.release(lent)
        assert backend.is_open(lent)  # within the new size: kept

        # Close with connections lent: the idle ones close now, the lent ones
        # when they come back.
        pool.resize(0, 3)
        held = [pool.acquire() for _ in range(3)]
        pool.release(held.pop())
        pool.close(timeout=0.05)
        assert "still in use" in caplog.text
        settled()
        assert sum(map(backend.is_open, seen)) == 2
        for conn in held:
            pool.release(conn)
        assert [c for c in seen if backend.is_open(c)] == []
        assert pool.stats().open == 0

        del seen[:], lent, held, victim, conns, conn
    assert caught == []
