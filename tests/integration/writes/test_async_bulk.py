"""Bulk loads on an asyncio pool (``await pool.copy_rows / copy_records``) into
the real PostgreSQL (asyncpg and psycopg's AsyncConnection), MariaDB (asyncmy and
aiomysql) and SQLite (aiosqlite).

Every test runs on both cores (the compiled one with the compiled encoder, the
pure-Python twin with the twin's). Tables are named ``fp_abulk_*`` and dropped
at the end. Tests are plain functions running ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import json
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fastpool import _core_py
from fastpool.drivers import from_url_async
from fastpool.pool.aio import AsyncPolicy
from fastpool.pool.async_facade import AsyncPool, AsyncPoolFeatures
from fastpool.writes import bulk
from fastpool.writes.bulk import RowError
from tests.fix_db import MYSQL_URL, PG_URL, need_driver
from tests.fix_pool import IN_CI, check_accounting, compiled_loaded
from tests.integration.writes.test_bulk import PG_CHECKSUM_SQL

UTC = dt.timezone.utc
TRICKY = "tab\there nl\nthere cr\rback\\slash quote' dq\" é ✓ 日本 \U0001F600"
T0 = dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)


class PureAsyncPool(AsyncPoolFeatures, AsyncPolicy, _core_py.PoolCore):
    """The asyncio pool over the pure-Python core."""


@pytest.fixture(params=["compiled", "python"])
def async_pool_cls(request: pytest.FixtureRequest,
                   monkeypatch: pytest.MonkeyPatch) -> type[Any]:
    """Both cores; the encoder follows the core (FASTPOOL_IMPL is read at each load)."""
    if request.param == "compiled":
        if not compiled_loaded():
            if IN_CI:
                pytest.fail("CI=true but the compiled core is not loaded")
            pytest.skip("compiled core not built")
        monkeypatch.setenv("FASTPOOL_IMPL", "c")
        assert bulk.encoder_impl() == "compiled"
        return AsyncPool
    monkeypatch.setenv("FASTPOOL_IMPL", "python")
    assert bulk.encoder_impl() == "python"
    return PureAsyncPool


CLIENTS = {
    "asyncpg": ("asyncpg", "asyncpg"),
    "psycopg": ("psycopg", "postgres"),
    "asyncmy": ("asyncmy", "mysql"),
    "aiomysql": ("aiomysql", "mysql"),
    "aiosqlite": ("aiosqlite", "sqlite"),
}

# (id, name, score, at) on each server.
DDL = {
    "postgresql": "id bigint PRIMARY KEY, name text, score double precision, at timestamptz",
    "mysql": "id bigint PRIMARY KEY, name text CHARACTER SET utf8mb4, score double, "
             "at datetime(6)",
    "sqlite": "id integer PRIMARY KEY, name text, score real, at text",
}


@pytest.fixture(params=list(CLIENTS))
def client(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    module, extra = CLIENTS[request.param]
    need_driver(module, extra)
    return str(request.param)


def url_of(client: str, tmp_path: Path) -> str:
    if client == "asyncpg":
        return PG_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
    if client == "psycopg":
        return PG_URL
    if client == "asyncmy":
        return MYSQL_URL
    if client == "aiomysql":
        return MYSQL_URL.replace("mysql://", "mysql+aiomysql://", 1)
    return f"sqlite:///{tmp_path / 'bulk.db'}"


class Loader:
    """A pool of ``client`` on one core, and plain SQL beside it."""

    def __init__(self, pool: Any, client: str) -> None:
        self.pool = pool
        self.client = client
        self.kind = pool.adapter.kind

    async def sql(self, text: str) -> list[tuple[Any, ...]]:
        """Run one statement on a pooled connection (committed)."""
        async with self.pool.connection() as conn:
            if self.client == "asyncpg":
                return [tuple(r) for r in await conn.fetch(text)]
            if self.client == "psycopg":
                cur = await conn.execute(text)
                return list(await cur.fetchall()) if cur.description else []
            if self.client == "aiosqlite":
                return [tuple(r) for r in await conn.execute_fetchall(text)]
            async with conn.cursor() as cur:
                with warnings.catch_warnings():  # aiomysql: "Unknown table" of DROP IF EXISTS
                    warnings.simplefilter("ignore")
                    await cur.execute(text)
                rows = cur.fetchall()  # aiomysql's buffered cursor answers at once
                return list(await rows if inspect.isawaitable(rows) else rows)

    async def table(self, name: str) -> str:
        table = f"fp_abulk_{name}"
        await self.sql(f"DROP TABLE IF EXISTS {table}")
        await self.sql(f"CREATE TABLE {table} ({DDL[self.kind]})")
        return table

    def at(self, value: dt.datetime | None) -> Any:
        """``value`` as this server's ``at`` column takes and gives it back."""
        if value is None:
            return None
        if self.kind == "mysql":
            return value.replace(tzinfo=None)  # the wall-clock time
        if self.kind == "sqlite":
            return value.isoformat()
        return value

    async def rows_of(self, table: str) -> list[tuple[Any, ...]]:
        got = await self.sql(f"SELECT id, name, score, at FROM {table} ORDER BY id")
        if self.kind == "postgresql":
            got = [(i, n, s, a if a is None else a.astimezone(UTC)) for i, n, s, a in got]
        return got

    async def count(self, table: str) -> int:
        return int((await self.sql(f"SELECT count(*) FROM {table}"))[0][0])


def run_with(async_pool_cls: type[Any], client: str, tmp_path: Path,
             test: Callable[[Loader], Awaitable[None]], **options: Any) -> None:
    """Open a pool of ``client`` on the core, run ``test``, drop its tables, close."""
    async def main() -> None:
        pool = async_pool_cls(driver=from_url_async(url_of(client, tmp_path)),
                              min_size=1, max_size=2, **options)
        try:
            await pool.wait(10)
            loader = Loader(pool, client)
            try:
                await test(loader)
            finally:
                for (name,) in await _tables(loader):
                    await loader.sql(f"DROP TABLE IF EXISTS {name}")
            check_accounting(pool)
            assert pool.stats().in_use == 0
        finally:
            await pool.close()

    asyncio.run(main())


async def _tables(loader: Loader) -> list[tuple[Any, ...]]:
    if loader.kind == "postgresql":
        return await loader.sql("SELECT tablename FROM pg_tables "
                                "WHERE tablename LIKE 'fp\\_abulk\\_%'")
    if loader.kind == "mysql":
        return await loader.sql("SELECT table_name FROM information_schema.tables WHERE "
                                "table_schema = DATABASE() AND table_name LIKE 'fp\\_abulk\\_%'")
    return await loader.sql("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                            "name LIKE 'fp_abulk_%'")


def sample(loader: Loader, n: int, start: int = 0) -> list[tuple[Any, ...]]:
    """``n`` rows with NULLs in every nullable column, unicode and escaping-worthy text,
    big and negative ids, microsecond timestamps."""
    rows = []
    for i in range(start, start + n):
        name = None if i % 7 == 3 else (f"{TRICKY} {i}" if i % 5 == 1 else f"name-{i}")
        score = None if i % 11 == 4 else (i * 0.25 - 1e6 if i % 2 else i / 3)
        at = None if i % 13 == 6 else T0 + dt.timedelta(seconds=i * 37, microseconds=i)
        ident = i if i % 17 else i - (1 << 62)  # some ids far below zero
        rows.append((ident, name, score, loader.at(at)))
    return rows


async def agen(rows: list[Any]) -> AsyncIterator[Any]:
    for i, row in enumerate(rows):
        if i == len(rows) // 2:
            await asyncio.sleep(0)  # give the loop a turn mid-stream
        yield row


# ---- rows arrive intact ------------------------------------------------------------

def test_rows_from_a_generator_and_an_async_iterable_arrive_intact(async_pool_cls, client,
                                                                    tmp_path):
    async def test(db: Loader) -> None:
        table = await db.table("intact")
        first = sample(db, 2_500)
        second = sample(db, 2_500, start=2_500)
        assert await db.pool.copy_rows(table, ["id", "name", "score", "at"],
                                       (r for r in first), chunk_rows=700) == 2_500
        assert await db.pool.copy_rows(table, ["id", "name", "score", "at"], agen(second),
                                       chunk_rows=700) == 2_500
        assert await db.rows_of(table) == sorted(first + second)

    run_with(async_pool_cls, client, tmp_path, test)


def test_records_from_an_async_iterable_take_the_first_records_keys(async_pool_cls, client,
                                                                   tmp_path):
    async def test(db: Loader) -> None:
        table = await db.table("records")
        rows = sample(db, 1_000)
        records = [{"at": a, "score": s, "name": n, "id": i} for i, n, s, a in rows]
        assert await db.pool.copy_records(table, agen(records), chunk_rows=300) == 1_000
        assert await db.rows_of(table) == sorted(rows)
        assert await db.pool.copy_records(table, agen([])) == 0
        assert await db.pool.copy_records(table, iter([])) == 0

    run_with(async_pool_cls, client, tmp_path, test)


# ---- upserts ---------------------------------------------------------------------------

def test_on_conflict_updates_existing_rows_and_the_last_duplicate_wins(async_pool_cls, client,
                                                                       tmp_path):
    async def test(db: Loader) -> None:
        table = await db.table("upsert")
        at = db.at(T0)
        await db.pool.copy_rows(table, ["id", "name", "score", "at"],
                                [(i, f"old-{i}", 1.0, at) for i in range(100)])
        new = [(i, f"new-{i}", 2.0, None) for i in range(50, 150)]
        new += [(60, "last-60", 3.0, at)]  # the same key twice in one load
        loaded = await db.pool.copy_records(
            table, agen([dict(zip(("id", "name", "score", "at"), r, strict=True))
                         for r in new]), on_conflict=("id",), chunk_rows=32)
        assert loaded == 101
        got = {i: (n, s, a) for i, n, s, a in await db.rows_of(table)}
        assert len(got) == 150
        assert got[10] == ("old-10", 1.0, at)
        assert got[70] == ("new-70", 2.0, None)
        assert got[60] == ("last-60", 3.0, at)
        assert got[149] == ("new-149", 2.0, None)

    run_with(async_pool_cls, client, tmp_path, test)


# ---- bad rows -----------------------------------------------------------------------------

def test_a_bad_row_raises_row_error_naming_it_and_nothing_is_written(async_pool_cls, client,
                                                                     tmp_path):
    async def test(db: Loader) -> None:
        table = await db.table("bad")
        rows = sample(db, 3_000)
        rows[2_345] = rows[2_345][:3]  # one value short
        with pytest.raises(RowError) as err:
            await db.pool.copy_rows(table, ["id", "name", "score", "at"], agen(rows),
                                    chunk_rows=500)
        assert err.value.index == 2_345
        assert "rows[2345]" in str(err.value) and "nothing was loaded" in str(err.value)
        records = [{"id": i, "name": "x", "score": 1.0, "at": None} for i in range(1_200)]
        records[1_100] = {"id": 1_100, "name": "x", "score": 1.0}  # a key missing
        with pytest.raises(RowError) as err:
            await db.pool.copy_records(table, records, chunk_rows=250)
        assert err.value.index == 1_100 and "lacks 'at'" in str(err.value)
        if db.kind != "sqlite":  # SQLite's columns take any value
            bad = [(i, "x", 1.0, None) for i in range(800)]
            bad[777] = (777, "x", "not a number", None)
            # PostgreSQL's encoder checks each value against its column's type;
            # MySQL's server refuses it with its own error.
            with pytest.raises(RowError if db.kind == "postgresql" else Exception) as err:
                await db.pool.copy_rows(table, ["id", "name", "score", "at"], bad)
            if db.kind == "postgresql":
                assert err.value.index == 777 and err.value.column == "score"  # type: ignore
        assert await db.count(table) == 0
        # The pool's connections are healthy: the next load works.
        assert await db.pool.copy_rows(table, ["id", "name", "score", "at"],
                                       sample(db, 10)) == 10

    run_with(async_pool_cls, client, tmp_path, test)


def test_a_missing_table_raises_the_drivers_error_and_bad_arguments_config_error(
        async_pool_cls, client, tmp_path):
    from fastpool import ConfigError

    async def test(db: Loader) -> None:
        with pytest.raises(Exception) as err:
            await db.pool.copy_rows("fp_abulk_missing", ["id"], [(1,)])
        assert not isinstance(err.value, RowError)
        with pytest.raises(ConfigError):
            await db.pool.copy_rows("fp_abulk_missing", [], [(1,)])
        with pytest.raises(ConfigError):
            await db.pool.copy_rows("fp_abulk_missing", ["id"], "not rows")
        with pytest.raises(ConfigError):
            await db.pool.copy_rows("fp_abulk_missing", ["id"], [(1,)], chunk_rows=0)
        assert await db.pool.copy_rows(await db.table("after"), ["id"], [(1,)]) == 1

    run_with(async_pool_cls, client, tmp_path, test)


# ---- progress ------------------------------------------------------------------------------

def test_progress_is_called_after_every_chunk_up_to_the_total(async_pool_cls, client,
                                                              tmp_path):
    async def test(db: Loader) -> None:
        table = await db.table("progress")
        calls: list[int] = []
        n = await db.pool.copy_rows(table, ["id", "name", "score", "at"],
                                    agen(sample(db, 5_000)), progress=calls.append,
                                    chunk_rows=1_000)
        assert n == 5_000
        assert calls == sorted(set(calls)) and calls[-1] == 5_000 and len(calls) >= 5
        assert all(b - a <= 1_000 for a, b in zip([0, *calls], calls, strict=False))

    run_with(async_pool_cls, client, tmp_path, test)


# ---- cancellation -------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["async iterable", "generator"])
def test_cancelling_a_load_midway_writes_nothing_and_loses_no_connection(
        async_pool_cls, client, tmp_path, source):
    async def test(db: Loader) -> None:
        table = await db.table("cancel")
        started = asyncio.Event()
        rows = sample(db, 4_000)

        async def stalls() -> AsyncIterator[Any]:
            for i, row in enumerate(rows):
                if i == 2_500:
                    started.set()
                    await asyncio.Event().wait()  # until cancelled
                yield row

        def cancel_me(done: int) -> None:
            if done >= 2_000:
                started.set()
                task.cancel()  # lands at the load's next await

        if source == "async iterable":
            task = asyncio.ensure_future(db.pool.copy_rows(
                table, ["id", "name", "score", "at"], stalls(), chunk_rows=500))
        else:
            task = asyncio.ensure_future(db.pool.copy_rows(
                table, ["id", "name", "score", "at"], iter(rows), chunk_rows=500,
                progress=cancel_me))
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The connection comes back (its rollback may still run as the pool's
        # own task when the cancelled caller is gone).
        for _ in range(1_000):
            if db.pool.stats().in_use == 0:
                break
            await asyncio.sleep(0.01)
        check_accounting(db.pool)
        assert db.pool.stats().in_use == 0
        assert await db.count(table) == 0
        # Every connection still serves: a load on each of them in turn.
        for _ in range(3):
            assert await db.pool.copy_rows(table, ["id", "name", "score", "at"],
                                           sample(db, 5, start=len(rows))) == 5
            await db.sql(f"DELETE FROM {table}")

    run_with(async_pool_cls, client, tmp_path, test)


# ---- a million rows, bounded memory -------------------------------------------------------

MILLION_SCRIPT = """
import asyncio, json, sys
sys.path.insert(0, {root!r})
from fastpool.pool.async_facade import create_async_pool
from fastpool.writes import bulk
from tests.integration.writes.test_bulk import Checksum, rows_with_edge_cases, PG_EPOCH


def hwm_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


async def main():
    async with create_async_pool({url!r}, min_size=1, max_size=1) as pool:
        check = Checksum(PG_EPOCH)
        calls = []
        async with pool.connection():
            pass
        before = hwm_kb()
        n = await pool.copy_rows("fp_abulk_million", ["id", "name", "score", "at"],
                                 check.wrap(rows_with_edge_cases({rows}, PG_EPOCH)),
                                 progress=calls.append)
        growth = hwm_kb() - before
    return {{"returned": n, "count": check.count, "sum_id": check.sum_id,
             "md5": check.md5.hexdigest(), "sum_score": check.sum_score,
             "count_at": check.count_at, "sum_us": check.sum_us, "growth_kb": growth,
             "progress_calls": len(calls), "impl": bulk.encoder_impl()}}

print(json.dumps(asyncio.run(main())))
"""


@pytest.mark.parametrize("pg_client", ["asyncpg", "psycopg"])
def test_a_million_generated_rows_reach_postgres_intact_with_bounded_memory(pg_client,
                                                                            pg_admin):
    """1,000,000 rows from a generator through an asyncio pool, in a fresh
    process: the checksums in SQL match the ones computed while generating,
    and the peak RSS grows by less than 50 MB (the rows are streamed)."""
    need_driver(*CLIENTS[pg_client])
    if not compiled_loaded():
        pytest.skip("compiled core not built")
    pg_admin.execute("DROP TABLE IF EXISTS fp_abulk_million")
    pg_admin.execute("CREATE TABLE fp_abulk_million (id bigint, name text, "
                     "score double precision, at timestamptz)")
    try:
        root = str(Path(__file__).resolve().parents[3])
        url = url_of(pg_client, Path("."))
        script = MILLION_SCRIPT.format(root=root, url=url, rows=1_000_000)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=300, cwd=root)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        count, sum_id, md5, sum_score, count_at, sum_us = \
            pg_admin.execute(PG_CHECKSUM_SQL.replace("fp_bulk_million",
                                                     "fp_abulk_million")).fetchone()
    finally:
        pg_admin.execute("DROP TABLE IF EXISTS fp_abulk_million")
    assert got["returned"] == got["count"] == count == 1_000_000
    assert (sum_id, md5, sum_score, count_at, sum_us) == (
        got["sum_id"], got["md5"], got["sum_score"], got["count_at"], got["sum_us"])
    assert got["growth_kb"] < 50 * 1024, f"peak RSS grew by {got['growth_kb']} kB"
    assert got["progress_calls"] >= 100
    assert got["impl"] == "compiled"
