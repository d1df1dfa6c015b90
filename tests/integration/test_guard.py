"""Guarded connections (``guard=True``): any use after release raises.

On PostgreSQL, MariaDB and SQLite (and the four asyncio clients), over both
cores: a borrower gets a proxy; after ``release()`` (or the end of its ``with``
block) using it, or a cursor obtained through it, raises
``ConnectionAlreadyReleased`` naming where it was released, and nothing it
tried reaches the server. The pool's own paths take the proxy: release, the
helpers' ``conn=``, ``pool.transaction``, event hooks, and reclaiming a proxy
dropped without a release.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

import fastpool
from fastpool.errors import ConfigError, ConnectionAlreadyReleased, ForeignConnection
from fastpool.pool.guard import GuardedConnection
from fastpool.pool.policy import PoolPolicy
from tests.fix_db import Db, q
from tests.fix_pool import wait_until
from tests.integration.test_async_pool import (  # noqa: F401
    in_transaction,
    open_transaction,
    url,
)


def ph(db: Db) -> str:
    return "?" if db.kind == "sqlite" else "%s"


def insert(db: Db, conn: Any, row: tuple[int, int]) -> None:
    q(conn, f"INSERT INTO {db.table} VALUES ({ph(db)}, {ph(db)})", row)


def test_using_a_released_connection_raises_and_names_the_release_site(db: Db) -> None:
    pool = db.make(max_size=1, min_size=1, guard=True)
    conn = pool.acquire()
    assert isinstance(conn, GuardedConnection)
    insert(db, conn, (1, 1))
    conn.commit()
    pool.release(conn)  # the release site
    with pytest.raises(ConnectionAlreadyReleased, match=r"test_guard\.py:\d+ in test_using"):
        insert(db, conn, (666, 666))
    with pytest.raises(ConnectionAlreadyReleased):
        conn.commit()
    with pytest.raises(ConnectionAlreadyReleased):
        conn.autocommit = True
    with pytest.raises(ConnectionAlreadyReleased):
        pool.release(conn)  # a second release of the same proxy
    with pool.connection() as again:
        assert again is not conn
        assert not pool.adapter.in_transaction(again)
    assert db.rows() == [(1, 1)]
    assert pool.stats().dirty_on_lend == 0  # nothing reached the connection


def test_a_with_blocks_connection_and_its_cursor_die_with_the_block(db: Db) -> None:
    pool = db.make(max_size=1, min_size=1, guard=True)
    with pool.connection() as conn:
        cur = conn.cursor()
        cur.execute(f"INSERT INTO {db.table} VALUES ({ph(db)}, {ph(db)})", (1, 1))
    with pytest.raises(ConnectionAlreadyReleased, match="cursor"):
        cur.execute(f"INSERT INTO {db.table} VALUES ({ph(db)}, {ph(db)})", (666, 666))
    with pytest.raises(ConnectionAlreadyReleased):
        conn.cursor()
    with pool.connection() as conn:
        insert(db, conn, (2, 2))
    assert db.rows() == [(1, 1), (2, 2)]


def test_the_pools_own_paths_take_the_proxy(db: Db) -> None:
    seen: list[Any] = []
    pool = db.make(max_size=1, min_size=1, guard=True,
                   hooks={"acquire": lambda conn, wait: seen.append(conn),
                          "release": lambda conn, held: seen.append(conn)})
    with pool.connection() as conn:
        insert(db, conn, (1, 1))
        assert pool.fetchval(f"SELECT n FROM {db.table} WHERE id = 1", conn=conn) == 1

    def body(tx: Any) -> None:
        assert isinstance(tx, GuardedConnection)
        insert(db, tx, (2, 2))

    pool.transaction(body)
    assert pool.fetch(f"SELECT id FROM {db.table} ORDER BY id") == [(1,), (2,)]
    assert all(isinstance(c, GuardedConnection) for c in seen) and len(seen) >= 4
    assert db.rows() == [(1, 1), (2, 2)]


def test_another_pools_proxy_is_foreign_and_stays_usable(db: Db) -> None:
    one = db.make(max_size=1, min_size=1, guard=True)
    two = db.make(max_size=1, min_size=1, guard=True)
    conn = one.acquire()
    with pytest.raises(ForeignConnection):
        two.release(conn)
    insert(db, conn, (1, 1))  # still lent by its own pool
    conn.commit()
    one.release(conn)
    assert db.rows() == [(1, 1)]


def test_a_proxy_can_be_discarded(db: Db) -> None:
    pool = db.make(max_size=1, min_size=0, guard=True)
    if not hasattr(pool, "discard"):
        pytest.skip("no Pool.discard")
    conn = pool.acquire()
    pool.discard(conn)
    with pytest.raises(ConnectionAlreadyReleased):
        conn.cursor()
    assert pool.stats().closed["broken"] == 1
    with pool.connection(timeout=5.0):
        pass


def test_a_dropped_proxy_is_reclaimed(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PoolPolicy, "RECLAIM_AFTER", 0.05)
    monkeypatch.setattr(PoolPolicy, "MAINTENANCE_INTERVAL", 0.02)
    pool = db.make(max_size=1, min_size=0, guard=True)
    held = pool.acquire()
    insert(db, held, (666, 666))
    # Held through the proxy: never reclaimed while the borrower keeps it.
    with pytest.raises(fastpool.PoolTimeout):
        pool.acquire(timeout=0.3)
    assert pool.stats().reclaimed == 0
    del held
    gc.collect()
    wait_until(lambda: pool.stats().reclaimed == 1)
    with pool.connection(timeout=5.0) as conn:
        assert not pool.adapter.in_transaction(conn)
    assert db.rows() == []


def test_guard_is_off_by_default_and_validated(make_pool: Any) -> None:
    plain = make_pool(max_size=1)
    conn = plain.acquire()
    assert not isinstance(conn, GuardedConnection)
    assert plain.guard is False
    plain.release(conn)
    with pytest.raises(ConfigError, match="guard"):
        make_pool(guard="yes")
    guarded = make_pool(max_size=1, guard=True)
    assert guarded.guard is True and isinstance(guarded, type(plain))
    conn = guarded.acquire()
    assert not isinstance(conn, type(plain.adapter)) and "guarded" in repr(conn)
    guarded.release(conn)
    assert "released" in repr(conn)


# ---- the asyncio pool ---------------------------------------------------------------

def test_the_asyncio_pool_guards_its_connections(run_pools: Any, url: str) -> None:  # noqa: F811
    async def body(make: Any) -> None:
        pool = await make(url=url, max_size=1, min_size=1, guard=True)
        conn = await pool.acquire()
        assert isinstance(conn, GuardedConnection)
        await pool.release(conn)
        with pytest.raises(ConnectionAlreadyReleased, match=r"test_guard\.py:\d+"):
            await open_transaction(conn)
        async with pool.connection() as conn:
            assert not in_transaction(pool, conn)
        with pytest.raises(ConnectionAlreadyReleased):
            await open_transaction(conn)
        assert pool.stats().dirty_on_lend == 0

    run_pools(body)


def test_the_asyncio_pool_with_hooks_and_a_guard(run_pools: Any, url: str) -> None:  # noqa: F811
    async def body(make: Any) -> None:
        seen: list[Any] = []
        pool = await make(url=url, max_size=1, min_size=1, guard=True,
                          hooks={"acquire": lambda conn, wait: seen.append(conn),
                                 "release": lambda conn, held: seen.append(conn)})
        async with pool.connection() as conn:
            assert isinstance(conn, GuardedConnection)
        conn = await pool.acquire()
        await pool.release(conn)
        await asyncio.sleep(0)
        assert len(seen) == 4 and all(isinstance(c, GuardedConnection) for c in seen)
        with pytest.raises(ConnectionAlreadyReleased):
            await open_transaction(conn)

    run_pools(body)


@pytest.fixture(autouse=True)
def _collect() -> Iterator[None]:
    yield
    gc.collect()
