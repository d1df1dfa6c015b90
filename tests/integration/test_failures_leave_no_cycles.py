"""No failure path of fastpool leaves its own frames in a reference cycle.

An exception's traceback keeps every frame it passed through, and each such
frame keeps its caller (``f_back``, linked once the frame has finished). A
frame of fastpool that still refers to the error when it is raised or stored
(a local, an attempt record, an item) closes a cycle: everything those frames
refer to, the connection the failed work ran on included, stays alive until
Python's cyclic collector runs (in a service with a steady heap, rarely). The
pool reclaims connections dropped without a release by their references, so
a connection kept by such a cycle and later dropped by a borrower stays lent
(see ARCHITECTURE.md, "Reference cycles").

Found twice: by the soak (the result cache), and by CI on Python 3.12 (the
batcher's retry loop kept the attempt's error; 3.12 links a finished frame to
its caller, so the cycle went through frames 3.11 did not link). Rather than a
test per path, this runs each failure a user can meet with the collector off,
then collects with ``DEBUG_SAVEALL`` and names any fastpool frame that was
only collectable as part of a cycle, on each server and each asyncio client.
"""

from __future__ import annotations

import asyncio
import gc
import os
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import fastpool
from tests.fix_db import Db
from tests.fix_pool import wait_until
from tests.integration.query.test_result_cache_leaves_no_cycles import (  # noqa: F401
    no_cyclic_collector,  # autouse: the collector off, reclaiming quick
    reclaims_a_dropped_connection,
)
from tests.integration.test_async_pool import url  # noqa: F401

OURS = os.path.dirname(os.path.abspath(fastpool.__file__)) + os.sep
MISSING = "SELECT * FROM fastpool_no_such_table_nc"


def frames_in_cycles() -> list[str]:
    """fastpool's frames that only the cyclic collector could free."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sorted({
            f"{o.f_code.co_name} ({os.path.relpath(o.f_code.co_filename, OURS)}:{o.f_lineno})"
            for o in gc.garbage
            if isinstance(o, types.FrameType) and o.f_code.co_filename.startswith(OURS)})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def failed(call: Callable[[], Any]) -> None:
    """Run ``call``, which must fail; keep nothing of its error."""
    try:
        call()
    except Exception:
        return
    raise AssertionError(f"{call} did not fail")


async def failed_async(call: Callable[[], Any]) -> None:
    try:
        await call()
    except Exception:
        return
    raise AssertionError(f"{call} did not fail")


def serialization_failure(kind: str) -> str | None:
    """A statement the server fails with a retryable error (SQLSTATE 40001)."""
    if kind == "postgresql":
        return "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"
    return None


# ---- the thread pool ------------------------------------------------------------

def sync_failures(db: Db, pool: Any) -> Iterator[tuple[str, Callable[[], Any]]]:
    mark = "?" if db.kind == "sqlite" else "%s"
    insert = f"INSERT INTO {db.table} (id, n) VALUES ({mark}, {mark})"
    pool.execute(insert, (1, 1))

    def in_block() -> None:
        with pool.connection() as conn:
            conn.cursor().execute(MISSING)

    def in_transaction() -> None:
        pool.transaction(lambda conn: conn.cursor().execute(MISSING))

    def decorated() -> None:
        @pool.transactional(retries=1, backoff=0)
        def body(conn: Any) -> None:
            conn.cursor().execute(insert, (1, 2))
        body()

    def timed_out() -> None:
        held = [pool.acquire(), pool.acquire()]  # max_size=2
        try:
            pool.acquire(timeout=0.05)
        finally:
            for conn in held:
                pool.release(conn)

    def guarded() -> None:
        with pool.n_plus_one_guard(threshold=2, action="raise"):
            for i in range(3):
                pool.fetch(f"SELECT n FROM {db.table} WHERE id = {mark}", (i,))

    def batched() -> None:
        with pool.batcher(max_batch=10, max_delay=0.02) as batcher:
            batcher.execute(insert, (1, 3))

    def submitted() -> None:
        with pool.batcher(max_batch=10, max_delay=0.02) as batcher:
            futures = [batcher.submit(insert, (i, i)) for i in (1, 50, 1)]
            errors = [f.exception(timeout=10) for f in futures]
            assert [e is None for e in errors] == [False, True, False]
            del futures, errors
            raise RuntimeError("two writes failed, as they should")

    yield "helper", lambda: pool.execute(MISSING)
    yield "cached read", lambda: pool.fetch(MISSING, cache_ttl=5.0)
    yield "connection block", in_block
    yield "transaction", in_transaction
    yield "transactional", decorated
    yield "acquire timeout", timed_out
    yield "n+1 guard", guarded
    yield "batcher execute", batched
    yield "batcher submit", submitted
    yield "bulk load, bad row", lambda: pool.copy_rows(db.table, ["id", "n"], [(2, 2), (3,)])
    yield "bulk load, duplicate", lambda: pool.copy_rows(db.table, ["id", "n"], [(1, 1)])
    retryable = serialization_failure(db.kind)
    if retryable is not None:
        yield "retries exhausted", lambda: pool.transaction(
            lambda conn: conn.cursor().execute(retryable), retries=1, backoff=0)


def test_no_failure_leaves_a_frame_of_ours_in_a_cycle(db: Db) -> None:
    pool = db.make(max_size=2, min_size=0, result_cache_entries=10)
    found: dict[str, list[str]] = {}
    for name, call in sync_failures(db, pool):
        failed(call)
        if frames := frames_in_cycles():
            found[name] = frames
    assert not found, f"fastpool frames kept alive by reference cycles: {found}"
    # What it is for: a connection dropped now is reclaimed without the collector.
    pool.acquire()
    wait_until(lambda: pool.stats().in_use == 0)
    assert pool.stats().reclaimed == 1


# ---- the asyncio pool -----------------------------------------------------------

def async_failures(pool: Any, table: str, mark: str,
                   kind: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    insert = f"INSERT INTO {table} (id, n) VALUES ({mark}, {mark})".replace(
        "$1, $1", "$1, $2")

    async def in_block() -> None:
        async with pool.connection():
            await pool.execute(MISSING)

    async def in_transaction() -> None:
        async def body(conn: Any) -> None:
            await pool.execute(MISSING, conn=conn)
        await pool.transaction(body)

    async def timed_out() -> None:
        held = [await pool.acquire(), await pool.acquire()]  # max_size=2
        try:
            await pool.acquire(timeout=0.05)
        finally:
            for conn in held:
                await pool.release(conn)

    async def guarded() -> None:
        with pool.n_plus_one_guard(threshold=2, action="raise"):
            for i in range(3):
                await pool.fetch(f"SELECT n FROM {table} WHERE id = {mark}", (i,))

    async def batched() -> None:
        async with pool.batcher(max_batch=10, max_delay=0.02) as batcher:
            await batcher.execute(insert, (1, 3))

    async def submitted() -> None:
        async with pool.batcher(max_batch=10, max_delay=0.02) as batcher:
            futures = [batcher.submit(insert, (i, i)) for i in (1, 50, 1)]
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            assert [isinstance(o, Exception) for o in outcomes] == [True, False, True]
            del futures, outcomes
            raise RuntimeError("two writes failed, as they should")

    yield "helper", lambda: pool.execute(MISSING)
    yield "cached read", lambda: pool.fetch(MISSING, cache_ttl=5.0)
    yield "connection block", in_block
    yield "transaction", in_transaction
    yield "acquire timeout", timed_out
    yield "n+1 guard", guarded
    yield "batcher execute", batched
    yield "batcher submit", submitted
    yield "bulk load, bad row", lambda: pool.copy_rows(table, ["id", "n"], [(2, 2), (3,)])
    yield "bulk load, duplicate", lambda: pool.copy_rows(table, ["id", "n"], [(1, 1)])
    retryable = serialization_failure(kind)
    if retryable is not None:
        async def exhausted() -> None:
            async def body(conn: Any) -> None:
                await pool.execute(retryable, conn=conn)
            await pool.transaction(body, retries=1, backoff=0)
        yield "retries exhausted", exhausted


def test_no_asyncio_failure_leaves_a_frame_of_ours_in_a_cycle(
        run_pools: Any, url: str) -> None:  # noqa: F811
    kind = ("sqlite" if url.startswith("sqlite") else
            "mysql" if url.startswith("mysql") else "postgresql")
    mark = {"sqlite": "?", "mysql": "%s"}.get(kind, "$1" if "asyncpg" in url else "%s")
    table = f"fp_nc_{uuid.uuid4().hex[:8]}"

    async def body(make: Any) -> None:
        pool = await make(url=url, max_size=2, min_size=0, result_cache_entries=10)
        await pool.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, n INT)")
        try:
            await pool.execute(f"INSERT INTO {table} (id, n) VALUES (1, 1)")
            found: dict[str, list[str]] = {}
            for name, call in async_failures(pool, table, mark, kind):
                await failed_async(call)
                await asyncio.sleep(0)
                if frames := frames_in_cycles():
                    found[name] = frames
            assert not found, f"fastpool frames kept alive by reference cycles: {found}"
            await reclaims_a_dropped_connection(pool)
        finally:
            await pool.execute(f"DROP TABLE {table}")

    run_pools(body)
