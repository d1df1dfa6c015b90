"""A value its column cannot take is a RowError with the caller's 0-based row
index and the column's name on every server, the driver's error as
``__cause__``, and nothing loaded (issue 20, group 2).

Before: SQLite raised a bare OverflowError or IntegrityError("datatype
mismatch"), MariaDB its DataError 1264 / OperationalError 1366 whose "at row
501" counts from 1 within one multi-row INSERT."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import fastpool
from fastpool.drivers import from_url
from fastpool.writes import bulk
from tests.fix_db import MYSQL_URL, PG_URL, need_driver

N = 5_000
BAD = 2_500


URLS = {"postgresql": "pg_url", "mysql": "mysql_url"}


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def server(request: pytest.FixtureRequest, make_pool: Any, db_path: str) -> Iterator[Any]:
    """(kind, pool, count(table)) with table fp_bulk_rowerr (id int PRIMARY
    KEY, v bigint, n int), and for SQLite also a STRICT twin."""
    kind = request.param
    url = request.getfixturevalue(URLS[kind]) if kind in URLS else f"sqlite:///{db_path}"
    pool = make_pool(driver=from_url(url), max_size=1)
    tables = ["fp_bulk_rowerr"] + (["fp_bulk_rowerr_strict"] if kind == "sqlite" else [])
    for table in tables:
        pool.execute(f"DROP TABLE IF EXISTS {table}")
        pk, strict = ("INTEGER PRIMARY KEY", " STRICT" if "strict" in table else "") \
            if kind == "sqlite" else ("int PRIMARY KEY", "")
        pool.execute(f"CREATE TABLE {table} (id {pk}, v {'INTEGER' if strict else 'bigint'}, "
                     f"n int){strict}")
    try:
        yield kind, pool, lambda table="fp_bulk_rowerr": pool.fetchval(
            f"SELECT count(*) FROM {table}")
    finally:
        for table in tables:
            pool.execute(f"DROP TABLE IF EXISTS {table}")


def rows_with(bad_column: int, value: Any) -> Iterator[tuple[Any, ...]]:
    for i in range(N):
        row = [i, i * 10, i % 7]
        if i == BAD:
            row[bad_column] = value
        yield tuple(row)


def check_row_error(info: Any, column: str, found_by_server: bool = True) -> None:
    """``found_by_server``: the driver's error is the cause (PostgreSQL's binary
    encoder finds an int out of range before sending it: no driver error)."""
    err = info.value
    assert isinstance(err, bulk.RowError)
    assert (err.index, err.column) == (BAD, column), str(err)
    assert str(err).startswith(f"rows[{BAD}], column {column!r}")
    assert str(err).endswith("nothing was loaded")
    assert "at row" not in str(err)  # no statement-relative position left in it
    if found_by_server:
        assert err.__cause__ is not None
        assert type(err.__cause__).__module__.split(".")[0] in (
            "sqlite3", "MySQLdb", "asyncmy", "pymysql", "psycopg", "asyncpg", "builtins")


@pytest.mark.parametrize("chunk_rows", [1_000, 10_000])
def test_an_int_out_of_bigint_range_names_the_callers_row_and_column(server, chunk_rows):
    kind, pool, count = server
    with pytest.raises(bulk.RowError) as info:
        bulk.copy_rows(pool, "fp_bulk_rowerr", ["id", "v", "n"], rows_with(1, 2**70),
                       chunk_rows=chunk_rows)
    check_row_error(info, "v", kind != "postgresql")
    assert count() == 0
    # The connection came back healthy: the next load works on it.
    assert bulk.copy_rows(pool, "fp_bulk_rowerr", ["id", "v", "n"], rows_with(1, 1)) == N
    assert count() == N


def test_a_string_in_an_integer_column_names_the_callers_row_and_column(server):
    kind, pool, count = server
    column, table = ("n", "fp_bulk_rowerr")
    if kind == "sqlite":  # SQLite refuses a string only for a rowid or in a STRICT table
        column = "id"
    with pytest.raises(bulk.RowError) as info:
        bulk.copy_rows(pool, table, ["id", "v", "n"],
                       rows_with(["id", "v", "n"].index(column), "abc"), chunk_rows=1_000)
    check_row_error(info, column)
    assert count(table) == 0


def test_sqlite_strict_tables_name_the_callers_row_and_column(server):
    kind, pool, count = server
    if kind != "sqlite":
        pytest.skip("STRICT tables are SQLite's")
    with pytest.raises(bulk.RowError) as info:
        bulk.copy_rows(pool, "fp_bulk_rowerr_strict", ["id", "v", "n"], rows_with(2, "abc"),
                       chunk_rows=1_000)
    check_row_error(info, "n")
    assert count("fp_bulk_rowerr_strict") == 0


def test_postgres_text_copy_names_the_row_the_server_refused(server):
    kind, pool, count = server
    if kind != "postgresql":
        pytest.skip("text COPY is PostgreSQL's")
    rows = ((str(i), str(i * 10), "abc" if i == BAD else str(i % 7)) for i in range(N))
    with pytest.raises(bulk.RowError) as info:
        bulk.copy_rows(pool, "fp_bulk_rowerr", ["id", "v", "n"], rows, pg_format="text")
    check_row_error(info, "n")
    assert count() == 0


def test_upserts_name_the_callers_row_too(server):
    kind, pool, count = server
    with pytest.raises(bulk.RowError) as info:
        bulk.copy_rows(pool, "fp_bulk_rowerr", ["id", "v", "n"], rows_with(1, 2**70),
                       on_conflict=["id"], chunk_rows=1_000)
    check_row_error(info, "v", kind != "postgresql")
    assert count() == 0


def test_records_name_the_callers_record(server):
    _, pool, count = server
    records = ({"id": i, "v": 2**70 if i == BAD else i, "n": 0} for i in range(N))
    with pytest.raises(bulk.RowError) as info:
        bulk.copy_records(pool, "fp_bulk_rowerr", records, chunk_rows=1_000)
    assert (info.value.index, info.value.column) == (BAD, "v")
    assert str(info.value).startswith(f"records[{BAD}], column 'v'")
    assert count() == 0


@pytest.mark.parametrize("client", ["default", "alternative"])
def test_asyncio_loads_name_the_callers_row_and_column(server, client, db_path):
    kind, _, count = server
    scheme = {("postgresql", "default"): "postgresql+psycopg",
              ("postgresql", "alternative"): "postgresql+asyncpg",
              ("mysql", "default"): "mysql+asyncmy", ("mysql", "alternative"): "mysql+aiomysql",
              ("sqlite", "default"): "sqlite+aiosqlite"}.get((kind, client))
    if scheme is None:
        pytest.skip("one asyncio client for SQLite")
    need_driver(scheme.partition("+")[2], scheme.partition("+")[2])
    url = {"postgresql": PG_URL, "mysql": MYSQL_URL, "sqlite": f"sqlite:///{db_path}"}[kind]
    url = scheme + ":" + url.partition(":")[2]

    async def main() -> None:
        async with fastpool.create_async_pool(url, max_size=1) as apool:
            with pytest.raises(bulk.RowError) as info:
                await apool.copy_rows("fp_bulk_rowerr", ["id", "v", "n"], rows_with(1, 2**70),
                                      chunk_rows=1_000)
            check_row_error(info, "v", kind != "postgresql")

    asyncio.run(main())
    assert count() == 0
