"""A write through a released connection is never committed by the next borrower.

``c = pool.acquire(); pool.release(c); c.cursor().execute("INSERT ...")`` leaves
a transaction open on an idle connection. The core reads the client's local
transaction status on every lend, the fast path included: such a connection is
rolled back (or discarded) before anyone gets it, counted in
``stats().dirty_on_lend`` and reported once as a WARNING naming where its
previous holder acquired it. On PostgreSQL, MariaDB and SQLite, over both
cores, with the stray write made inside ``alive_bypass`` (the compiled fast
path lends) and outside it (the policy's check-out path lends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpool.pool.policy import PoolPolicy
from tests.fix_clock import FakeClock
from tests.fix_db import Db, q
from tests.integration.test_async_pool import (  # noqa: F401
    in_transaction,
    open_transaction,
    url,
)

# Idle times: within alive_bypass (10 s here) the fast path lends with no
# probe; past it the policy's check-out path probes first.
IDLE = {"inside_bypass": 0.0, "outside_bypass": 11.0}
BYPASS = 10.0


@pytest.fixture(autouse=True)
def no_reclaim(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's worker must not take back anything here: every connection
    is released by its borrower (the stale reference is all that is left)."""
    monkeypatch.setattr(PoolPolicy, "RECLAIM_AFTER", None)


def ph(db: Db) -> str:
    return "?" if db.kind == "sqlite" else "%s"


def stray_write(db: Db, conn: Any, row: tuple[int, int]) -> None:
    """Write through ``conn`` as a stale reference does: a statement that opens
    a transaction (each client's default: no autocommit), never committed."""
    q(conn, f"INSERT INTO {db.table} VALUES ({ph(db)}, {ph(db)})", row)


def released_then_written(pool: Any, db: Db, row: tuple[int, int]) -> Any:
    """The misuse: acquire, release, then write through the stale reference."""
    conn = pool.acquire()
    pool.release(conn)
    stray_write(db, conn, row)
    return conn


def lend_warnings(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "dirty_on_lend" in r.getMessage()]


@pytest.mark.parametrize("idle", IDLE)
def test_a_stray_write_is_never_committed_by_the_next_borrower(
        db: Db, idle: str, fake_clock: FakeClock, caplog: Any) -> None:
    pool = db.make(max_size=1, min_size=1, alive_bypass=BYPASS)
    pool.wait()
    pool._set_clock(fake_clock)
    with caplog.at_level(logging.WARNING, logger="fastpool"):
        stale = released_then_written(pool, db, (666, 666))
        fake_clock.advance(IDLE[idle])
        with pool.connection() as conn:  # the only connection: the stale one
            assert conn is stale  # rolled back, not discarded
            assert not pool.adapter.in_transaction(conn)
            q(conn, f"INSERT INTO {db.table} VALUES ({ph(db)}, {ph(db)})", (1, 1))
    # The next borrower's own work commits; the stray row never lands.
    assert db.rows() == [(1, 1)]
    assert pool.stats().dirty_on_lend == 1
    (warning,) = lend_warnings(caplog)
    assert "rolled back" in warning or "discarded" in warning
    assert "track_holders=True" in warning  # how to learn where it was acquired


@pytest.mark.parametrize("idle", IDLE)
def test_acquire_and_release_get_a_clean_connection_too(
        db: Db, idle: str, fake_clock: FakeClock) -> None:
    pool = db.make(max_size=1, min_size=1, alive_bypass=BYPASS)
    pool.wait()
    pool._set_clock(fake_clock)
    released_then_written(pool, db, (666, 666))
    fake_clock.advance(IDLE[idle])
    conn = pool.acquire(timeout=5.0)
    try:
        assert not pool.adapter.in_transaction(conn)
        q(conn, f"INSERT INTO {db.table} VALUES ({ph(db)}, {ph(db)})", (2, 2))
        conn.commit()
    finally:
        pool.release(conn)
    assert db.rows() == [(2, 2)]
    assert pool.stats().dirty_on_lend == 1


def test_the_warning_names_the_previous_holders_acquire_site(
        db: Db, caplog: Any) -> None:
    pool = db.make(max_size=1, min_size=1, alive_bypass=BYPASS, track_holders=True)
    pool.wait()
    with caplog.at_level(logging.WARNING, logger="fastpool"):
        released_then_written(pool, db, (666, 666))
        with pool.connection():
            pass
    (warning,) = lend_warnings(caplog)
    assert "in released_then_written" in warning
    assert "conn = pool.acquire()" in warning
    assert db.rows() == []


def test_a_clean_connection_is_not_counted(db: Db) -> None:
    pool = db.make(max_size=1, min_size=1, alive_bypass=BYPASS)
    pool.wait()
    for i in range(3):
        with pool.connection() as conn:
            q(conn, f"INSERT INTO {db.table} VALUES ({ph(db)}, {ph(db)})", (i, i))
        pool.release(pool.acquire())
    assert pool.stats().dirty_on_lend == 0
    assert db.rows() == [(0, 0), (1, 1), (2, 2)]


# ---- the asyncio pool ---------------------------------------------------------

@pytest.mark.parametrize("idle", IDLE)
def test_the_asyncio_pool_rolls_back_a_stray_transaction_before_lending(
        run_pools: Any, url: str, idle: str, fake_clock: FakeClock) -> None:  # noqa: F811
    async def body(make: Any) -> None:
        pool = await make(url=url, max_size=1, min_size=1, alive_bypass=BYPASS)
        await pool.wait()
        pool._set_clock(fake_clock)
        stale = await pool.acquire()
        await pool.release(stale)
        await open_transaction(stale)  # through the stale reference
        assert in_transaction(pool, stale)
        fake_clock.advance(IDLE[idle])
        async with pool.connection() as conn:
            assert not in_transaction(pool, conn)
        assert pool.stats().dirty_on_lend == 1
        conn = await pool.acquire()
        assert not in_transaction(pool, conn)
        await pool.release(conn)
        assert pool.stats().dirty_on_lend == 1
        del stale

    run_pools(body)


# ---- many borrowers, stale references in between --------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("borrow"), st.booleans()),  # with-block, or acquire/release
        st.tuples(st.just("stray"), st.integers(0, 7)),  # a stale reference writes
        st.tuples(st.just("idle"), st.sampled_from([0.0, 11.0])),  # time passes
    ),
    min_size=1, max_size=25)


def test_stale_writes_interleaved_with_borrowers_never_land(
        db: Db, fake_clock: FakeClock) -> None:
    # SQLite has one writer: a second connection would wait on the stray
    # transaction's lock; the servers get two connections to choose from.
    pool = db.make(max_size=1 if db.kind == "sqlite" else 2, min_size=1,
                   alive_bypass=BYPASS)
    pool.wait()
    pool._set_clock(fake_clock)
    next_id = [1]
    good: list[int] = []
    stale: list[Any] = []

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(OPS)
    def run(ops: list[tuple[str, Any]]) -> None:
        for op, arg in ops:
            if op == "idle":
                fake_clock.advance(arg)
            elif op == "stray" and stale:
                conn = stale[arg % len(stale)]
                # A connection discarded meanwhile is closed: nothing is written.
                with contextlib.suppress(Exception):
                    stray_write(db, conn, (-next_id[0], 0))
                next_id[0] += 1
            elif op == "borrow":
                row = (next_id[0], 1)
                next_id[0] += 1
                if arg:
                    with pool.connection() as conn:
                        q(conn, f"INSERT INTO {db.table} VALUES ({ph(db)}, {ph(db)})", row)
                else:
                    conn = pool.acquire()
                    try:
                        q(conn, f"INSERT INTO {db.table} VALUES ({ph(db)}, {ph(db)})", row)
                        conn.commit()
                    finally:
                        pool.release(conn)
                good.append(row[0])
                if conn not in stale:
                    stale.append(conn)
            rows = db.rows()
            assert [r for r in rows if r[0] < 0] == [], "a stray write was committed"
            assert sorted(r[0] for r in rows) == sorted(good)

    run()
    assert pool.stats().dirty_on_lend > 0
    stale.clear()
    pool.close()  # rolls back a stray transaction still open, before the table goes
    assert [r for r in db.rows() if r[0] < 0] == []


def test_dirty_on_lend_is_exported(make_pool: Any) -> None:
    from fastpool.monitoring.snapshot import pool_snapshot

    pool = make_pool(max_size=1, min_size=1)
    pool.wait()
    conn = pool.acquire()
    pool.release(conn)
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    pool.release(pool.acquire())
    assert pool.stats().dirty_on_lend == 1
    assert pool.stats().as_dict()["dirty_on_lend"] == 1
    assert pool_snapshot(pool)["stats"]["dirty_on_lend"] == 1
    pytest.importorskip("prometheus_client")
    from fastpool.monitoring.prometheus import PrometheusCollector

    samples = {s.name: s.value for m in PrometheusCollector([pool]).collect()
               for s in m.samples}
    assert samples["fastpool_dirty_on_lend_total"] == 1



# ---- a statement still running on a stale reference ---------------------------------

SLOW_WRITE = {
    "postgresql": "INSERT INTO {t} SELECT 666 FROM pg_sleep(0.3)",
    "mysql": "INSERT INTO {t} SELECT 666 FROM (SELECT SLEEP(0.3)) AS s",
    "sqlite": ("INSERT INTO {t} SELECT 666 FROM (WITH RECURSIVE c(x) AS (SELECT 1 "
               "UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT count(*) FROM c)"),
}


async def write(conn: Any, sql: str) -> None:
    """Send one statement on any asyncio client."""
    if hasattr(conn, "fetchval") or hasattr(conn, "pgconn") or hasattr(conn, "_connection"):
        await conn.execute(sql)  # asyncpg, psycopg, aiosqlite
    else:
        async with conn.cursor() as cur:  # asyncmy, aiomysql
            await cur.execute(sql)


def test_a_statement_still_running_through_a_stale_reference_never_costs_the_next_borrower(
        run_pools: Any, url: str) -> None:  # noqa: F811
    """A task keeps a connection after its release and starts a slow write
    through it; the next borrower is lent that connection while the write is
    still running. The flags of the last reply (MySQL/MariaDB) read idle then:
    asyncmy's connection used to be lent as is, the borrower's statements got
    the stray's replies, and the borrower's own committed row never landed,
    with no error. Now: the stray row never lands, and the borrower's row lands
    unless the borrower was told otherwise by an error."""
    kind = ("sqlite" if url.startswith("sqlite") else
            "mysql" if url.startswith("mysql") else "postgresql")
    table = f"fp_lend_in_flight_{uuid.uuid4().hex[:8]}"

    async def body(make: Any) -> None:
        pool = await make(url=url, max_size=1, min_size=1)
        async with pool.connection() as conn:
            await write(conn, f"CREATE TABLE {table} (a int)")
        stale = await pool.acquire()
        await pool.release(stale)

        async def misuse(kept: Any) -> None:
            if hasattr(kept, "fetchval"):  # asyncpg: a write of its own would commit itself
                await write(kept, "BEGIN")
            await write(kept, SLOW_WRITE[kind].format(t=table))

        stray = asyncio.ensure_future(misuse(stale))
        await asyncio.sleep(0.05)  # the stray write is on its way
        told: BaseException | None = None
        try:
            async with pool.connection() as conn:
                await write(conn, f"INSERT INTO {table} VALUES (1)")
        except Exception as exc:
            told = exc
        await asyncio.wait({stray}, timeout=5.0)
        stray.cancel()
        with contextlib.suppress(BaseException):
            await stray
        del stale
        await asyncio.sleep(0.4)  # whatever the server still runs of the stray ends
        rows = sorted(r[0] for r in await pool.fetch(f"SELECT a FROM {table}"))
        assert 666 not in rows, "the stray write landed"
        if told is None:
            assert rows == [1], "the borrower's block succeeded but its row is missing"
        await pool.execute(f"DROP TABLE {table}")

    run_pools(body)


def test_an_asyncio_stray_write_is_never_committed_and_is_reported(
        run_pools: Any, url: str, caplog: Any) -> None:  # noqa: F811
    """The asyncio pool's lend check, end to end: a task writes through a
    connection after releasing it; the next borrower's block commits only its
    own row, the stray one never lands, and one WARNING names the case."""
    table = f"fp_lend_stray_{uuid.uuid4().hex[:8]}"

    async def body(make: Any) -> None:
        pool = await make(url=url, max_size=1, min_size=1)
        async with pool.connection() as conn:
            await write(conn, f"CREATE TABLE {table} (a int)")
        stale = await pool.acquire()
        await pool.release(stale)
        await open_transaction(stale)  # the stray write runs in a transaction
        await write(stale, f"INSERT INTO {table} VALUES (666)")
        del stale
        with caplog.at_level(logging.WARNING, logger="fastpool"):
            async with pool.connection() as conn:
                await write(conn, f"INSERT INTO {table} VALUES (1)")
        rows = sorted(r[0] for r in await pool.fetch(f"SELECT a FROM {table}"))
        assert rows == [1]
        assert pool.stats().dirty_on_lend == 1
        assert len(lend_warnings(caplog)) == 1
        await pool.execute(f"DROP TABLE {table}")

    run_pools(body)
