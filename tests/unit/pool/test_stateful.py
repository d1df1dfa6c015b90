"""Random acquire/release/timeout/error/drain/close sequences keep the books balanced."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import fastpool
from fastpool import ConnectionAlreadyReleased, ForeignConnection, PoolClosed, PoolTimeout
from tests.fix_pool import PurePool, check_accounting, compiled_loaded


def make_machine(pool_cls):
    class PoolMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.tmp = tempfile.TemporaryDirectory()
            self.max_size = 3
            self.pool = pool_cls(
                # timeout=0: a second writer fails at once instead of waiting 5 s.
                driver=fastpool.drivers.from_url(f"sqlite:///{self.tmp.name}/db?timeout=0"),
                min_size=1, max_size=self.max_size, timeout=2.0, alive_bypass=0.5)
            self.held = []
            self.broken = set()
            self.closed = False

        @precondition(lambda self: not self.closed)
        @rule()
        def acquire(self):
            try:
                conn = self.pool.acquire(timeout=0.01 if len(self.held) >= self.max_size else 2.0)
            except PoolTimeout:
                assert len(self.held) >= self.max_size
                return
            assert all(conn is not c for c in self.held), "lent twice"
            self.held.append(conn)

        @precondition(lambda self: self.held)
        @rule(data=st.data())
        def release(self, data):
            conn = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
            self.pool.release(conn)

        @precondition(lambda self: self.held)
        @rule(data=st.data())
        def release_twice(self, data):
            conn = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
            self.pool.release(conn)
            # Still in the pool: "already released"; discarded meanwhile (it
            # was broken, or the pool closed): no longer the pool's at all.
            with pytest.raises((ConnectionAlreadyReleased, ForeignConnection)):
                self.pool.release(conn)

        @precondition(lambda self: self.held)
        @rule(data=st.data())
        def leave_transaction_open(self, data):
            conn = data.draw(st.sampled_from(self.held))
            if id(conn) in self.broken:
                return
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
                conn.execute("INSERT INTO t VALUES (1)")
            except sqlite3.OperationalError as exc:  # another connection holds the write lock
                assert "locked" in str(exc)

        @precondition(lambda self: self.held)
        @rule(data=st.data())
        def break_connection(self, data):
            conn = data.draw(st.sampled_from(self.held))
            self.broken.add(id(conn))
            conn.close()

        @precondition(lambda self: not self.closed)
        @rule()
        def error_inside_context(self):
            if len(self.held) >= self.max_size:
                return
            with pytest.raises(RuntimeError), self.pool.connection(timeout=2.0) as conn:
                conn.execute("SELECT 1")
                raise RuntimeError("boom")

        @precondition(lambda self: not self.closed)
        @rule()
        def drain(self):
            self.pool.drain()

        @precondition(lambda self: not self.closed)
        @rule()
        def check(self):
            self.pool.check()

        @rule()
        def close(self):
            self.pool.close(timeout=0)
            self.closed = True
            with pytest.raises(PoolClosed):
                self.pool.acquire(timeout=0)

        @invariant()
        def books_balance(self):
            check_accounting(self.pool)
            s = self.pool.stats()
            assert s.in_use == len(self.held)
            assert s.open <= self.max_size
            assert s.waiting == 0

        def teardown(self):
            for conn in self.held:
                with contextlib.suppress(sqlite3.Error):
                    self.pool.release(conn)
            self.pool.close(timeout=1)
            s = self.pool.stats()
            assert s.open == 0, s
            check_accounting(self.pool)
            self.tmp.cleanup()

    return PoolMachine


SETTINGS = settings(max_examples=30, stateful_step_count=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.skipif(not compiled_loaded(), reason="compiled core not built")
def test_stateful_compiled():
    machine = make_machine(fastpool.Pool)
    machine.TestCase.settings = SETTINGS
    machine.TestCase().runTest()


def test_stateful_python_twin():
    machine = make_machine(PurePool)
    machine.TestCase.settings = SETTINGS
    machine.TestCase().runTest()
