"""The pool across real server restarts (PostgreSQL restart, MariaDB stop + start).

These restart the machine's own servers, so they need root and the local
server packages; elsewhere (servers in containers) they are skipped.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from fastpool import ErrorKind, PoolTimeout
from tests.fix_db import (
    can_restart_servers,
    hammer,
    mysql_query,
    need_driver,
    restart_postgres,
    start_mariadb,
    stop_mariadb,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not can_restart_servers(), reason="needs root and local servers"),
]


def test_pool_survives_a_postgres_restart(make_pg_pool):
    psycopg = need_driver("psycopg", "postgres")
    pool = make_pg_pool(min_size=2, max_size=4)
    pool.wait()
    stop = threading.Event()
    outcomes: list[Any] = []
    t = threading.Thread(target=hammer, args=(
        pool, lambda conn: conn.execute("SELECT 1").fetchone(), stop, outcomes, 30))
    t.start()
    try:
        restart_postgres()
        # After the restart, the next acquisitions succeed (the worker's backoff
        # keeps retrying; the dead connections are probed and replaced).
        deadline = time.monotonic() + 30
        while outcomes[-1:] != ["ok"] or "ok" not in outcomes[len(outcomes) // 2:]:
            assert time.monotonic() < deadline, outcomes[-5:]
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive()
    # Callers saw lost connections (statements in flight at the shutdown),
    # never a ConnectError or PoolTimeout: the server was known to exist.
    assert set(outcomes) <= {"ok", "outcome_unknown", ErrorKind.CONNECTION_LOST}, outcomes
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert isinstance(conn, psycopg.Connection)
    assert pool.stats().closed["broken"] >= 1


def test_pool_waits_out_a_mariadb_outage_and_recovers(make_mysql_pool):
    pool = make_mysql_pool(min_size=2, max_size=2)
    pool.wait()
    with pool.connection() as conn:
        old_id = conn.thread_id()
    stop_mariadb()
    try:
        time.sleep(pool.alive_bypass + 0.1)  # idle connections get probed, not trusted
        # Down: the caller waits its timeout (the server was reachable before, so
        # this is an outage, not a wrong address), and the error says why.
        with pytest.raises(PoolTimeout, match=r"connecting fails: OperationalError: \(2002"):
            pool.acquire(timeout=1.5)
        assert pool.stats().closed["broken"] == 2  # both idle ones found dead
    finally:
        start_mariadb()
    with pool.connection(timeout=30) as conn:  # back within the reconnect backoff
        assert mysql_query(conn, "SELECT 1") == [(1,)]
        assert conn.thread_id() != old_id
    pool.wait(30)
    assert pool.stats().open == 2
