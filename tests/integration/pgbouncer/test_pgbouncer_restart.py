"""PgBouncer reconnected, paused and resumed, killed and restarted, under load.

16 threads read (each result checked) and write (``pool.transaction``, every
acknowledged row checked at the end) through one pool. The only errors a
caller may see are those fastpool classifies as a lost connection (a
statement in flight when PgBouncer died; a COMMIT lost with it is
``TransactionOutcomeUnknown``); once PgBouncer is back, every caller succeeds.
``RECONNECT`` and ``PAUSE``/``RESUME`` mostly cause no error at all, but a
server connection that ``RECONNECT`` closes while it logs in counts, for
PgBouncer 1.18, as a failed server login, and it closes a client waiting for
one ("server login has been failing, try again later"): a lost connection too.

``RECONNECT`` and ``PAUSE``/``RESUME`` run in transaction mode only: in session
mode PgBouncer waits for its clients to disconnect before it releases a server
connection, which a pool that keeps its connections never does (``PAUSE``
would wait forever; that is PgBouncer's rule, not fastpool's).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import fastpool
from fastpool import ErrorKind, TransactionOutcomeUnknown
from tests.fix_pgbouncer import PgBouncer
from tests.fix_pool import wait_until

THREADS = 16


class Load:
    """``THREADS`` threads of reads and transactions on ``pool`` until ``stop()``."""

    def __init__(self, pool: Any, table: str) -> None:
        self.pool = pool
        self.table = table
        self.phase = 0
        #: (phase, thread, outcome, error repr)
        self.outcomes: list[tuple[int, int, Any, str]] = []
        self.written: list[int] = []  # acknowledged inserts
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,)) for t in range(THREADS)]
        for th in self._threads:
            th.start()

    def _run(self, t: int) -> None:
        pool, i = self.pool, 0
        while not self._stop.is_set():
            i += 1
            x = t * 10_000_000 + i
            phase, err = self.phase, ""
            try:
                if i % 4 == 0:
                    pool.transaction(lambda conn, x=x: pool.execute(
                        f"INSERT INTO {self.table} (id) VALUES (%s)", (x,), conn=conn))
                    self.written.append(x)
                else:
                    got = pool.fetchval("SELECT %s::bigint", (x,))
                    assert got == x, f"{x} read back as {got}"
                outcome: Any = "ok"
            except TransactionOutcomeUnknown as exc:
                outcome, err = ("outcome_unknown", pool.classify(exc.__cause__)), repr(exc)
            except Exception as exc:
                outcome, err = pool.classify(exc), repr(exc)
            self.outcomes.append((phase, t, outcome, err))

    def oks(self, phase: int | None = None) -> int:
        return sum(1 for p, _, o, _ in self.outcomes if o == "ok" and phase in (None, p))

    def every_thread_succeeded_in(self, phase: int) -> bool:
        return {t for p, t, o, _ in self.outcomes if p == phase and o == "ok"} == set(
            range(THREADS))

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(30)
            assert not th.is_alive(), "a caller hung"

    def errors(self) -> list[tuple[int, int, Any, str]]:
        return [r for r in self.outcomes if r[2] != "ok"]

    def only_lost_connections(self) -> None:
        """Every error a caller saw is one fastpool classifies as a lost connection."""
        kinds = {r[2] for r in self.errors()}
        assert kinds <= {ErrorKind.CONNECTION_LOST,
                         ("outcome_unknown", ErrorKind.CONNECTION_LOST)}, self.errors()[:5]


@pytest.fixture
def table(scratch_table: Callable[[str], str]) -> str:
    return scratch_table("id BIGINT PRIMARY KEY")


@pytest.fixture
def load_on(table: str, pg_admin: Any) -> Iterator[Callable[[PgBouncer], Load]]:
    """``load_on(bouncer)``: a pool through it (its mode's profile, 8 client
    connections) under load. At teardown the load is stopped, the pool closed
    and every acknowledged write checked."""
    started: list[tuple[Load, Any]] = []

    def start(bouncer: PgBouncer) -> Load:
        pool = fastpool.create_pool(bouncer.url, pgbouncer=bouncer.mode, max_size=8,
                                    timeout=20.0)
        load = Load(pool, table)
        started.append((load, pool))
        wait_until(lambda: load.every_thread_succeeded_in(0), timeout=20)
        return load

    yield start
    for load, pool in started:
        load.stop()
        pool.close()
        have = {x for (x,) in pg_admin.execute(f"SELECT id FROM {table}").fetchall()}
        lost = sorted(set(load.written) - have)
        assert not lost, f"acknowledged writes missing: {lost[:10]}"


def after_recovery(load: Load, phase: int) -> None:
    """Start ``phase`` once every caller has succeeded again; then, for a
    while, every call must succeed."""
    load.phase = phase
    wait_until(lambda: load.every_thread_succeeded_in(phase), timeout=20)
    load.phase = phase + 1
    before = load.oks(phase + 1)
    wait_until(lambda: load.oks(phase + 1) >= before + 200, timeout=20)
    load.stop()
    bad = [r for r in load.outcomes if r[0] == phase + 1 and r[2] != "ok"]
    assert not bad, bad[:5]


def server_pids(bouncer: PgBouncer) -> set[int]:
    return {r["remote_pid"] for r in bouncer.admin("SHOW SERVERS")
            if r["database"] == bouncer.dbname}


@pytest.mark.slow
def test_reconnect_under_load_replaces_server_connections(
        make_pgbouncer: Callable[..., PgBouncer], load_on: Callable[[PgBouncer], Load]) -> None:
    bouncer = make_pgbouncer("transaction", pool_size=4)
    load = load_on(bouncer)
    old = server_pids(bouncer)
    assert old
    bouncer.admin(f"RECONNECT {bouncer.dbname}")
    # Each server connection is closed when its transaction ends, and new ones opened.
    wait_until(lambda: not (server_pids(bouncer) & old) and server_pids(bouncer), timeout=20)
    after_recovery(load, 1)
    load.only_lost_connections()


@pytest.mark.slow
def test_pause_and_resume_under_load_hold_callers(
        make_pgbouncer: Callable[..., PgBouncer], load_on: Callable[[PgBouncer], Load]) -> None:
    bouncer = make_pgbouncer("transaction", pool_size=4)
    load = load_on(bouncer)
    bouncer.admin(f"PAUSE {bouncer.dbname}")  # returns once every server connection is free
    paused_at = len(load.outcomes)
    time.sleep(0.5)
    # At most the calls whose answer arrived just before PAUSE returned.
    assert len(load.outcomes) - paused_at <= THREADS
    bouncer.admin(f"RESUME {bouncer.dbname}")
    after_recovery(load, 1)
    load.only_lost_connections()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_pgbouncer_killed_and_restarted_under_load(
        mode: str, make_pgbouncer: Callable[..., PgBouncer],
        load_on: Callable[[PgBouncer], Load]) -> None:
    bouncer = make_pgbouncer(mode, pool_size=8 if mode == "session" else 4)
    load = load_on(bouncer)
    opened = load.pool.stats().opened
    load.phase = 1
    bouncer.kill()  # SIGKILL: every client connection drops mid-flight
    time.sleep(0.3)
    bouncer.start()
    after_recovery(load, 2)
    # The pool replaced the connections PgBouncer's death broke.
    assert load.pool.stats().opened > opened
    load.only_lost_connections()
