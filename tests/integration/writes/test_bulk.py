"""Bulk loads (fastpool.writes.bulk) into the real PostgreSQL, MariaDB and SQLite.

Every table is named ``fp_bulk_*`` and dropped at the end of its test. Tests
that take a pool from ``make_pool`` run once per core; the encoder follows
(the compiled one with the compiled core, the pure-Python twin with the
twin's), so both encoders load the same data. Big loads are checked with a
checksum computed in SQL against the same one computed in Python.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import math
import subprocess
import sys
import textwrap
import uuid
import zlib
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastpool import ConnectError
from fastpool.writes import bulk
from fastpool.writes.bulk import common
from tests.fix_db import mysql_query, need_driver
from tests.fix_pool import IN_CI, Pool

UTC = dt.timezone.utc
PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=UTC)
MY_EPOCH = dt.datetime(2000, 1, 1)
USEC = dt.timedelta(microseconds=1)
TRICKY = "tab\there nl\nthere cr\rback\\slash quote' dq\" é ✓ 日本"


@pytest.fixture(autouse=True)
def encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The compiled encoder with the compiled core, the twin with the twin's
    (FASTPOOL_IMPL is read at each load); the compiled one outside make_pool."""
    impl = "compiled"
    if "pool_cls" in request.fixturenames and request.getfixturevalue("pool_cls") is not Pool:
        impl = "python"
    monkeypatch.setenv("FASTPOOL_IMPL", "python" if impl == "python" else "c")
    if impl == "compiled":
        try:
            from fastpool import _bulkenc  # noqa: F401
        except ImportError as exc:
            if IN_CI:
                pytest.fail(f"CI=true but the compiled encoder is not built: {exc}")
            pytest.skip(f"compiled encoder not built: {exc}")
    assert bulk.encoder_impl() == impl
    return impl


def rows_with_edge_cases(n: int, epoch: dt.datetime) -> Iterator[tuple[Any, ...]]:
    """``n`` rows (id, name, score, at) with NULLs and escaping-worthy text."""
    for i in range(n):
        if i % 1000 == 7:
            name: str | None = f"{TRICKY} {i}"
        elif i % 997 == 3:
            name = None
        else:
            name = f"name-{i}"
        at = None if i % 1013 == 5 else epoch + dt.timedelta(microseconds=i * 1_000_003)
        yield (i, name, i * 0.25, at)


class Checksum:
    """What the SQL checksums compute, from the rows as they are generated."""

    def __init__(self, epoch: dt.datetime) -> None:
        self.epoch = epoch
        self.count = self.sum_id = self.sum_us = self.count_at = self.crc = 0
        self.sum_score = 0.0
        self.md5 = hashlib.md5()

    def wrap(self, rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        for row in rows:
            i, name, score, at = row
            self.count += 1
            self.sum_id += i
            text = "<null>" if name is None else name
            self.md5.update(text.encode() + b"\n")
            self.crc += zlib.crc32(text.encode())
            self.sum_score += score
            if at is not None:
                self.count_at += 1
                self.sum_us += (at - self.epoch) // USEC
            yield row


# ---- PostgreSQL -----------------------------------------------------------------

PG_CHECKSUM_SQL = """
SELECT count(*), sum(id), md5(string_agg(coalesce(name, '<null>') || E'\\n', '' ORDER BY id)),
       sum(score), count(at),
       sum((extract(epoch FROM at - timestamptz '2000-01-01 00:00:00+00') * 1000000)::int8)
FROM fp_bulk_million"""

MILLION_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
import fastpool
from fastpool.writes import bulk
from fastpool.writes.bulk import common
from tests.integration.writes.test_bulk import Checksum, rows_with_edge_cases, PG_EPOCH


def hwm_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


with fastpool.create_pool({url!r}, min_size=1, max_size=1) as pool:
    # Warm up (imports, the COPY machinery) so that the growth is the load's own.
    bulk.copy_rows(pool, "fp_bulk_million", ["id", "name", "score", "at"],
                   rows_with_edge_cases(50_000, PG_EPOCH))
    with pool.connection() as conn:
        conn.execute("TRUNCATE fp_bulk_million")
    before = hwm_kb()
    check = Checksum(PG_EPOCH)
    calls = []
    n = bulk.copy_rows(pool, "fp_bulk_million", ["id", "name", "score", "at"],
                       check.wrap(rows_with_edge_cases({rows}, PG_EPOCH)),
                       progress=calls.append)
    growth = hwm_kb() - before
print(json.dumps({{"returned": n, "count": check.count, "sum_id": check.sum_id,
                  "md5": check.md5.hexdigest(), "sum_score": check.sum_score,
                  "count_at": check.count_at, "sum_us": check.sum_us,
                  "growth_kb": growth, "progress_calls": len(calls), "impl": bulk.encoder_impl()}}))
"""


def test_a_million_generated_rows_reach_postgres_intact_with_bounded_memory(pg_url, pg_admin):
    """1,000,000 rows from a generator, in a fresh process: count and checksum
    in SQL match the ones computed while generating, and the process's peak
    RSS grows by less than 100 MB (the rows are streamed, never held)."""
    pg_admin.execute("DROP TABLE IF EXISTS fp_bulk_million")
    pg_admin.execute("CREATE TABLE fp_bulk_million (id bigint, name text, "
                     "score double precision, at timestamptz)")
    try:
        root = str(Path(__file__).resolve().parents[3])  # the repository
        script = MILLION_SCRIPT.format(root=root, url=pg_url, rows=1_000_000)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=300, cwd=root)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        count, sum_id, md5, sum_score, count_at, sum_us = \
            pg_admin.execute(PG_CHECKSUM_SQL).fetchone()
    finally:
        pg_admin.execute("DROP TABLE IF EXISTS fp_bulk_million")
    assert got["returned"] == got["count"] == count == 1_000_000
    assert (sum_id, md5, sum_score, count_at, sum_us) == (
        got["sum_id"], got["md5"], got["sum_score"], got["count_at"], got["sum_us"])
    assert got["growth_kb"] < 100 * 1024, f"peak RSS grew by {got['growth_kb']} kB"
    assert got["progress_calls"] >= 100  # every chunk of at most 10,000 rows
    assert got["impl"] == "compiled"


@pytest.fixture
def pg_table(pg_admin: Any) -> Iterator[Any]:
    """``make(name, columns_sql)`` creates fp_bulk_<name>; all dropped at the end."""
    made: list[str] = []

    def make(name: str, columns: str) -> str:
        table = f"fp_bulk_{name}"
        pg_admin.execute(f"DROP TABLE IF EXISTS {table}")
        pg_admin.execute(f"CREATE TABLE {table} ({columns})")
        made.append(table)
        return table

    yield make
    for table in made:
        pg_admin.execute(f"DROP TABLE IF EXISTS {table}")


ALL_TYPES = ("k int PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision, "
             "t text, vc varchar(20), c bpchar(5), b bytea, ok boolean, tz timestamptz, "
             "ts timestamp, d date, n numeric, j jsonb, u uuid, arr int[], dom fp_bulk_posint")
NY = zoneinfo.ZoneInfo("America/New_York")


def all_type_rows() -> list[tuple[Any, ...]]:
    from psycopg.types.json import Jsonb

    rows = [
        (1, -32768, -2**31, -2**63, 1.5, -1e308, "", "", "", b"", False,
         dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(1, 1, 1), dt.date(1, 1, 1),
         decimal.Decimal("-1.5"), Jsonb({"a": [1, None]}), uuid.UUID(int=0), [1, 2], 1),
        (2, 32767, 2**31 - 1, 2**63 - 1, float("inf"), float("nan"), TRICKY, "é✓", "ab",
         b"\x00\\\xff\n", True, dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=NY),
         dt.datetime(9999, 12, 31, 23, 59, 59, 999999), dt.date(9999, 12, 31),
         decimal.Decimal("1e-20"), Jsonb([]), uuid.UUID(int=2**128 - 1), [], 2**31 - 1),
        (3, 0, 7, 7, -0.0, 5e-324, "x" * 70_000, None, None, bytearray(b"ba"), None,
         dt.datetime(2024, 3, 10, 2, 30, tzinfo=dt.timezone(dt.timedelta(hours=-9, minutes=-30))),
         None, None, None, None, None, None, None),
        # Values of other Python types than the column's usual one: through
        # psycopg's dumper for the column type (int into float, Decimal into
        # float, bool into int, a datetime subclass).
        (4, True, 3, False, 2, decimal.Decimal("0.5"), "y", "z", "abcde", memoryview(b"m"),
         True, dt.datetime(2000, 1, 1, tzinfo=UTC), dt.datetime(2000, 1, 1), dt.date(2000, 1, 1),
         5, Jsonb("s"), uuid.UUID(int=5), [None], 3),
    ]
    return rows


def test_every_common_type_loads_as_psycopg_would_load_it(make_pg_pool, pg_table, pg_admin):
    """The same rows through bulk.copy_rows and through psycopg's own COPY
    write_row (binary, with set_types) give identical tables."""
    pg_admin.execute("DROP DOMAIN IF EXISTS fp_bulk_posint CASCADE")
    pg_admin.execute("CREATE DOMAIN fp_bulk_posint AS integer CHECK (VALUE > 0)")
    try:
        ours = pg_table("types_ours", ALL_TYPES)
        theirs = pg_table("types_psycopg", ALL_TYPES)
        columns = [c.split()[0] for c in ALL_TYPES.split(", ")]
        pool = make_pg_pool(max_size=1)
        assert bulk.copy_rows(pool, ours, columns, iter(all_type_rows())) == 4
        types = pg_admin.execute(
            "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attnum > 0 ORDER BY attnum", [theirs]).fetchall()
        with pg_admin.cursor() as cur, cur.copy(
                f"COPY {theirs} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([{"fp_bulk_posint": "int4", "character": "text"}.get(t, t)
                            for (t,) in types])
            for row in all_type_rows():
                copy.write_row(row)

        def dump(table: str) -> list[Any]:
            return pg_admin.execute(f"SELECT t::text FROM {table} t ORDER BY k").fetchall()

        assert dump(ours) == dump(theirs)
        assert len(dump(ours)) == 4
    finally:
        pg_admin.execute("DROP TABLE IF EXISTS fp_bulk_types_ours, fp_bulk_types_psycopg")
        pg_admin.execute("DROP DOMAIN IF EXISTS fp_bulk_posint")


def test_text_format_takes_strings_for_the_server_to_parse(make_pg_pool, pg_table):
    table = pg_table("text", "id bigint, name text, at timestamptz, ok boolean, n numeric")
    pool = make_pg_pool(max_size=1)
    rows = [("1", TRICKY, "2024-01-02 03:04:05+02", "t", "1.50"),
            ("2", "\\N is not null", None, "false", None),
            (3, "", dt.datetime(2024, 1, 1, tzinfo=UTC), True, decimal.Decimal("2"))]
    assert bulk.copy_rows(pool, table, ["id", "name", "at", "ok", "n"], rows,
                          pg_format="text") == 3
    with pool.connection() as conn:
        got = conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    assert got == [
        (1, TRICKY, dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC), True, decimal.Decimal("1.50")),
        (2, "\\N is not null", None, False, None),
        (3, "", dt.datetime(2024, 1, 1, tzinfo=UTC), True, decimal.Decimal("2"))]


def test_a_type_psycopg_cannot_dump_in_binary_falls_back_to_text_copy(make_pg_pool, pg_table):
    table = pg_table("tsv", "id int, doc tsvector")
    pool = make_pg_pool(max_size=1)
    assert bulk.copy_rows(pool, table, ["id", "doc"], [(1, "a fat cat"), (2, None)]) == 2
    with pool.connection() as conn:
        got = conn.execute(f"SELECT id, doc::text FROM {table} ORDER BY id").fetchall()
    assert got == [(1, "'a' 'cat' 'fat'"), (2, None)]
    with pytest.raises(ValueError, match=r"cannot dump its type .* in binary"):
        bulk.copy_rows(pool, table, ["id", "doc"], [(3, "x")], pg_format="binary")


def test_postgres_upsert_updates_existing_rows_and_inserts_new_ones(make_pg_pool, pg_table):
    table = pg_table("upsert", "id int PRIMARY KEY, name text, n int")
    pool = make_pg_pool(max_size=1)
    bulk.copy_rows(pool, table, ["id", "name", "n"], [(1, "a", 1), (2, "b", 2), (3, "c", 3)])
    records = [{"id": 2, "name": "B", "n": 20}, {"id": 4, "name": "D", "n": 40},
               {"id": 2, "name": "B2", "n": 21}]  # the last one with a key wins
    assert bulk.copy_records(pool, table, records, on_conflict=("id",)) == 3
    with pool.connection() as conn:
        got = conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
        staged = conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE "
                              "'_fastpool_stage_%%' AND relpersistence = 't'").fetchone()[0]
    assert got == [(1, "a", 1), (2, "B2", 21), (3, "c", 3), (4, "D", 40)]
    assert staged == 0  # the staging table is gone with the transaction
    # Only key columns: existing keys are left alone, new ones inserted.
    assert bulk.copy_rows(pool, table, ["id"], [(1,), (5,)], on_conflict="id") == 2
    with pool.connection() as conn:
        assert conn.execute(f"SELECT id, name FROM {table} WHERE id IN (1, 5) ORDER BY id"
                            ).fetchall() == [(1, "a"), (5, None)]


def test_odd_table_and_column_names_are_quoted_as_identifiers(make_pg_pool, pg_admin):
    pg_admin.execute('CREATE SCHEMA IF NOT EXISTS "fp_bulk_Sch.ema"')
    try:
        pg_admin.execute('CREATE TABLE "fp_bulk_Sch.ema"."fp_bulk_we""ird ta.ble" '
                         '("Select" int, "na""me; DROP" text)')
        pool = make_pg_pool(max_size=1)
        table = ("fp_bulk_Sch.ema", 'fp_bulk_we"ird ta.ble')
        assert bulk.copy_rows(pool, table, ["Select", 'na"me; DROP'], [(1, "x")]) == 1
        assert bulk.copy_records(pool, table, [{"Select": 1, 'na"me; DROP': "y"}],
                                 on_conflict=None) == 1
        assert pg_admin.execute('SELECT count(*) FROM "fp_bulk_Sch.ema"."fp_bulk_we""ird ta.ble"'
                                ).fetchone()[0] == 2
    finally:
        pg_admin.execute('DROP SCHEMA "fp_bulk_Sch.ema" CASCADE')


def test_postgres_loads_on_an_autocommit_pool_are_still_one_transaction(make_pg_pool, pg_table):
    table = pg_table("autocommit", "id int")
    pool = make_pg_pool(max_size=1, autocommit=True)
    rows = [(i,) for i in range(25_000)] + [(1, 2)]
    with pytest.raises(bulk.RowError):
        bulk.copy_rows(pool, table, ["id"], rows, chunk_rows=1000)
    assert bulk.copy_rows(pool, table, ["id"], [(1,), (2,)]) == 2
    with pool.connection() as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 2


def test_postgres_pools_with_dict_rows_load_the_same(make_pg_pool, pg_table):
    from psycopg.rows import dict_row

    table = pg_table("dictrows", "id int PRIMARY KEY, name text")
    pool = make_pg_pool(max_size=1, row_factory=dict_row)
    assert bulk.copy_rows(pool, table, ["id", "name"], [(1, "a"), (2, "b")]) == 2
    assert bulk.copy_rows(pool, table, ["id", "name"], [(2, "B")], on_conflict="id") == 1
    with pool.connection() as conn:
        got = conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    assert got == [{"id": 1, "name": "a"}, {"id": 2, "name": "B"}]


# ---- MariaDB ----------------------------------------------------------------

@pytest.fixture
def my_table(mysql_admin: Any) -> Iterator[Any]:
    made: list[str] = []

    def make(name: str, columns: str) -> str:
        table = f"fp_bulk_{name}"
        mysql_query(mysql_admin, f"DROP TABLE IF EXISTS {table}")
        mysql_query(mysql_admin, f"CREATE TABLE {table} ({columns}) ENGINE=InnoDB "
                                 "DEFAULT CHARSET=utf8mb4")
        made.append(table)
        return table

    yield make
    for table in made:
        mysql_query(mysql_admin, f"DROP TABLE IF EXISTS {table}")


def test_mariadb_100k_generated_rows_arrive_intact(make_mysql_pool, my_table, mysql_admin):
    table = my_table("rows", "id bigint, name text, score double, at datetime(6)")
    pool = make_mysql_pool(max_size=1)
    check = Checksum(MY_EPOCH)
    n = bulk.copy_rows(pool, table, ["id", "name", "score", "at"],
                       check.wrap(rows_with_edge_cases(100_000, MY_EPOCH)))
    got = mysql_query(
        mysql_admin,
        "SELECT count(*), sum(id), sum(crc32(coalesce(name, '<null>'))), sum(score), count(at), "
        f"sum(timestampdiff(MICROSECOND, '2000-01-01', at)) FROM {table}")[0]
    assert n == check.count == got[0] == 100_000
    assert (int(got[1]), int(got[2]), got[3], got[4], int(got[5])) == (
        check.sum_id, check.crc, check.sum_score, check.count_at, check.sum_us)


@pytest.mark.parametrize("module", ["compiled", "python"])
def test_mariadb_values_are_the_literals_mysqlclient_would_send(mysql_url, encoder, module,
                                                                monkeypatch):
    """The INSERT values match ``conn.literal`` (what executemany sends) for
    every kind of value, the fallbacks included, with either encoder."""
    need_driver("MySQLdb", "mysql")
    from fastpool.drivers import from_url

    monkeypatch.setenv("FASTPOOL_IMPL", "c" if module == "compiled" else "python")
    assert bulk.encoder_impl() == module

    conn = from_url(mysql_url).connect()
    try:
        values = [0, -1, 2**63 - 1, -2**63, 2**80, 0.1, -0.0, 1.0, 1e16, 1e-7, None, True, False,
                  "", TRICKY, "\x00\x1a", dt.date(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59),
                  dt.datetime(2024, 1, 2, 3, 4, 5, 6), dt.datetime(2024, 1, 1, tzinfo=UTC),
                  decimal.Decimal("-1.25"), b"\x00'\xff", bytearray(b"x"), dt.time(1, 2),
                  dt.timedelta(seconds=5)]
        rows = [tuple(values[(i + j) % len(values)] for j in range(3))
                for i in range(len(values))]
        enc = common.encoders().ValuesEncoder(3, conn.string_literal, conn.literal,
                                              conn.encoding, error=common.ErrorFactory("rows", []))
        assert enc.encode(iter(rows), 1 << 20, 1000) == b",".join(map(conn.literal, rows))
        assert enc.done and enc.rows == len(rows)
    finally:
        conn.close()


def test_mariadb_statements_stay_under_the_packet_limit(make_mysql_pool, my_table):
    """Long text values with max_packet=16 KiB: many INSERT statements, none
    over the limit (counted by the server's Com_insert), all rows intact."""
    table = my_table("packets", "id int PRIMARY KEY, body mediumtext")
    pool = make_mysql_pool(max_size=1)
    rows = [(i, chr(ord("a") + i % 26) * (1000 + 37 * i)) for i in range(200)]
    total = sum(len(body) for _, body in rows)

    def inserts() -> int:
        with pool.connection() as conn:
            return int(mysql_query(conn, "SHOW SESSION STATUS LIKE 'Com_insert'")[0][1])

    before = inserts()
    assert bulk.copy_rows(pool, table, ["id", "body"], rows, max_packet=16 * 1024) == 200
    statements = inserts() - before
    assert statements >= math.ceil(total / (16 * 1024))
    assert statements <= 200
    with pool.connection() as conn:
        got = mysql_query(conn, f"SELECT count(*), sum(length(body)), sum(crc32(body)) "
                                f"FROM {table}")[0]
    assert (got[0], int(got[1]), int(got[2])) == (
        200, total, sum(zlib.crc32(body.encode()) for _, body in rows))
    # A single row longer than the limit is refused before it is sent.
    with pytest.raises(bulk.RowError, match=r"rows\[1\] needs an INSERT of \d+ bytes, over"):
        bulk.copy_rows(pool, table, ["id", "body"], [(1000, "x"), (1001, "y" * 20_000)],
                       max_packet=16 * 1024)
    with pool.connection() as conn:
        assert mysql_query(conn, f"SELECT count(*) FROM {table} WHERE id >= 1000")[0][0] == 0


def test_mariadb_upsert_updates_existing_rows_and_inserts_new_ones(make_mysql_pool, my_table):
    table = my_table("upsert", "id int PRIMARY KEY, name varchar(20), n int")
    pool = make_mysql_pool(max_size=1)
    bulk.copy_rows(pool, table, ["id", "name", "n"], [(1, "a", 1), (2, "b", 2), (3, "c", 3)])
    records = [{"id": 2, "name": "B", "n": 20}, {"id": 4, "name": "D", "n": 40},
               {"id": 2, "name": "B2", "n": 21}]
    assert bulk.copy_records(pool, table, records, on_conflict=("id",)) == 3
    assert bulk.copy_rows(pool, table, ["id"], [(1,), (5,)], on_conflict=["id"]) == 2
    with pool.connection() as conn:
        got = mysql_query(conn, f"SELECT * FROM {table} ORDER BY id")
    assert got == [(1, "a", 1), (2, "B2", 21), (3, "c", 3), (4, "D", 40), (5, None, None)]


def test_mariadb_loads_on_an_autocommit_pool_are_still_one_transaction(make_mysql_pool,
                                                                       my_table):
    table = my_table("autocommit", "id int")
    pool = make_mysql_pool(max_size=1, autocommit=True)
    with pytest.raises(bulk.RowError, match=r"rows\[2500\] has 2 values"):
        bulk.copy_rows(pool, table, ["id"], [(i,) for i in range(2500)] + [(1, 2)],
                       chunk_rows=100)
    assert bulk.copy_rows(pool, table, ["id"], [(1,), (2,)]) == 2
    with pool.connection() as conn:
        assert mysql_query(conn, f"SELECT count(*) FROM {table}")[0][0] == 2


def test_mariadb_pools_with_dict_cursors_load_the_same(make_mysql_pool, my_table):
    from MySQLdb.cursors import DictCursor

    table = my_table("dictrows", "id int PRIMARY KEY, name text")
    pool = make_mysql_pool(max_size=1, cursorclass=DictCursor)
    assert bulk.copy_rows(pool, table, ["id", "name"], [(1, "a"), (2, "b")]) == 2
    with pool.connection() as conn:
        cur = conn.cursor()
        cur.execute(f"SELECT * FROM {table} ORDER BY id")
        assert list(cur.fetchall()) == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


# ---- SQLite -----------------------------------------------------------------------

def test_sqlite_100k_generated_rows_arrive_intact(make_pool):
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE fp_bulk_rows (id INTEGER, name TEXT, score REAL, at TEXT)")

    def rows() -> Iterator[tuple[Any, ...]]:
        for i, name, score, at in rows_with_edge_cases(100_000, MY_EPOCH):
            yield (i, name, score, None if at is None else at.isoformat(" "))

    assert bulk.copy_rows(pool, "fp_bulk_rows", ["id", "name", "score", "at"], rows()) == 100_000
    with pool.connection() as conn:
        got = conn.execute("SELECT count(*), sum(id), total(score), sum(length(name)), "
                           "count(name), count(at) FROM fp_bulk_rows").fetchone()
        tricky = conn.execute("SELECT name FROM fp_bulk_rows WHERE id = 7").fetchone()[0]
        conn.execute("DROP TABLE fp_bulk_rows")
    expected = list(rows())
    assert got == (100_000, sum(r[0] for r in expected), sum(r[2] for r in expected),
                   sum(len(r[1]) for r in expected if r[1] is not None),
                   sum(r[1] is not None for r in expected), sum(r[3] is not None for r in expected))
    assert tricky == f"{TRICKY} 7"


def test_sqlite_upsert_updates_existing_rows_and_inserts_new_ones(make_pool):
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE fp_bulk_upsert (id INTEGER PRIMARY KEY, name TEXT, n INT)")
    bulk.copy_rows(pool, "fp_bulk_upsert", ["id", "name", "n"],
                   [(1, "a", 1), (2, "b", 2), (3, "c", 3)])
    records = [{"id": 2, "name": "B", "n": 20}, {"id": 4, "name": "D", "n": 40},
               {"id": 2, "name": "B2", "n": 21}]
    assert bulk.copy_records(pool, "fp_bulk_upsert", records, on_conflict=("id",)) == 3
    assert bulk.copy_rows(pool, "fp_bulk_upsert", ["id"], [(1,), (5,)], on_conflict="id") == 2
    with pool.connection() as conn:
        got = conn.execute("SELECT * FROM fp_bulk_upsert ORDER BY id").fetchall()
        conn.execute("DROP TABLE fp_bulk_upsert")
    assert got == [(1, "a", 1), (2, "B2", 21), (3, "c", 3), (4, "D", 40), (5, None, None)]


def test_sqlite_loads_on_an_autocommit_pool_are_still_one_transaction(make_pool, db_path):
    pool = make_pool(max_size=1, url=f"sqlite:///{db_path}?isolation_level=autocommit")
    with pool.connection() as conn:
        conn.execute("CREATE TABLE fp_bulk_autocommit (id INT)")
    with pytest.raises(bulk.RowError, match=r"rows\[250\]"):
        bulk.copy_rows(pool, "fp_bulk_autocommit", ["id"],
                       [(i,) for i in range(250)] + [(1, 2)], chunk_rows=100)
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM fp_bulk_autocommit").fetchone()[0] == 0
        conn.execute("DROP TABLE fp_bulk_autocommit")


# ---- on all three: errors, progress ------------------------------------------------

@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def backend(request: pytest.FixtureRequest, make_pool: Any, db_path: str) -> Iterator[Any]:
    """(pool with max_size=1, table fp_bulk_e (id int PRIMARY KEY, name text),
    count(conn))."""
    from fastpool.drivers import from_url

    kind = request.param
    if kind == "postgresql":
        url = request.getfixturevalue("pg_url")
    elif kind == "mysql":
        url = request.getfixturevalue("mysql_url")
    else:
        url = f"sqlite:///{db_path}"
    pool = make_pool(driver=from_url(url), max_size=1)

    def run(sql: str) -> list[Any]:
        with pool.connection() as conn:
            cur = conn.cursor()
            cur.execute(sql)
            rows = cur.fetchall() if cur.description else []
            cur.close()
            return list(rows)

    run("DROP TABLE IF EXISTS fp_bulk_e")
    run("CREATE TABLE fp_bulk_e (id int PRIMARY KEY, name varchar(40))")
    try:
        yield pool, lambda: run("SELECT count(*) FROM fp_bulk_e")[0][0]
    finally:
        run("DROP TABLE IF EXISTS fp_bulk_e")


def test_a_row_of_the_wrong_width_loads_nothing_and_names_the_row(backend):
    pool, count = backend
    rows = ((i, f"n{i}") if i != 25_000 else (i,) for i in range(30_000))
    with pytest.raises(bulk.RowError, match=r"^rows\[25000\] has 1 values, expected 2 "
                                            r"\(id, name\); nothing was loaded$") as info:
        bulk.copy_rows(pool, "fp_bulk_e", ["id", "name"], rows, chunk_rows=1000)
    assert info.value.index == 25_000 and info.value.column is None
    assert count() == 0  # earlier chunks were sent, and rolled back
    # The connection came back healthy: the next load works on it.
    assert bulk.copy_rows(pool, "fp_bulk_e", ["id", "name"], [(1, "x")]) == 1
    assert count() == 1
    s = pool.stats()
    assert s.open == 1 and s.in_use == 0 and s.closed_total == 0


def test_a_bad_record_loads_nothing_and_names_the_record(backend):
    pool, count = backend
    base = [{"id": i, "name": "x"} for i in range(5)]
    with pytest.raises(bulk.RowError, match=r"records\[3\] lacks 'name'"):
        bulk.copy_records(pool, "fp_bulk_e", [*base[:3], {"id": 3}, *base[4:]])
    with pytest.raises(bulk.RowError, match=r"records\[4\] has unexpected key\(s\) 'extra'"):
        bulk.copy_records(pool, "fp_bulk_e", [*base[:4], {**base[4], "extra": 1}])
    with pytest.raises(bulk.RowError, match=r"records\[1\] is a tuple, not a dict"):
        bulk.copy_records(pool, "fp_bulk_e", [base[0], (1, "x")])
    assert count() == 0
    assert bulk.copy_records(pool, "fp_bulk_e", base, columns=["name", "id"]) == 5
    assert count() == 5


def test_an_unknown_table_or_column_raises_the_drivers_error(backend):
    pool, count = backend
    import sqlite3

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    if pool.driver.name == "postgresql":
        errors = (need_driver("psycopg", "postgres").Error,)
    elif pool.driver.name == "mysql":
        errors = (need_driver("MySQLdb", "mysql").Error,)
    for table, columns, name in (("fp_bulk_missing", ["id"], "fp_bulk_missing"),
                                 ("fp_bulk_e", ["id", "nope"], "nope")):
        with pytest.raises(errors, match=name):
            bulk.copy_rows(pool, table, columns, iter([(1, "x")] * 3))
    assert bulk.copy_rows(pool, "fp_bulk_e", ["id", "name"], [(1, "x")]) == 1
    assert count() == 1


def test_a_value_the_column_cannot_take_is_a_row_error(backend):
    pool, count = backend
    if "sqlite" in pool.driver.name:
        pytest.skip("SQLite columns take any value")
    rows = [(1, "a"), (2, "b"), ("three", "c")] if "postgres" in pool.driver.name else \
        [(1, "a"), (2, "b"), (3, float("nan"))]
    with pytest.raises(bulk.RowError, match=r"rows\[2\], column '(id|name)'") as info:
        bulk.copy_rows(pool, "fp_bulk_e", ["id", "name"], rows)
    assert info.value.index == 2 and info.value.column in ("id", "name")
    assert count() == 0


def test_progress_is_called_with_increasing_counts(backend):
    pool, count = backend
    calls: list[int] = []
    rows = ((i, f"n{i}") for i in range(5_500))
    assert bulk.copy_rows(pool, "fp_bulk_e", ["id", "name"], rows, chunk_rows=1000,
                          progress=calls.append) == 5_500
    assert calls == [1000, 2000, 3000, 4000, 5000, 5500]
    assert count() == 5_500


def test_nothing_to_load_is_zero_rows(backend):
    pool, count = backend
    assert bulk.copy_rows(pool, "fp_bulk_e", ["id", "name"], iter([])) == 0
    assert bulk.copy_records(pool, "fp_bulk_e", []) == 0
    assert count() == 0


# ---- the command line, on PostgreSQL ----------------------------------------------

def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastpool", *args], capture_output=True,
                          text=True, input=stdin, timeout=120)


def test_cli_loads_a_csv_file_into_postgres(pg_url, pg_table, pg_admin, tmp_path):
    table = pg_table("cli", "id int PRIMARY KEY, name text, at timestamptz, n numeric")
    csv_file = tmp_path / "in.csv"
    csv_file.write_text(textwrap.dedent("""\
        id,name,at,n
        1,plain,2024-01-02 03:04:05+00,1.5
        2,"comma, ""quote"" and
        newline",,
        3,tab\there,2024-01-02T00:00:00Z,-2
        """))
    proc = run_cli("load", "--url", pg_url, "--table", table, "--null", "", str(csv_file))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"loaded 3 rows into {table} in ") and "rows/s" in proc.stdout
    got = pg_admin.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    assert got == [
        (1, "plain", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), decimal.Decimal("1.5")),
        (2, 'comma, "quote" and\nnewline', None, None),
        (3, "tab\there", dt.datetime(2024, 1, 2, tzinfo=UTC), decimal.Decimal("-2"))]
    # Again from stdin as an upsert, with --columns instead of the header.
    proc = run_cli("load", "--url", pg_url, "--table", table, "--no-header", "--columns",
                   "id,name", "--on-conflict", "id", "-", stdin="3,THREE\n4,four\n")
    assert proc.returncode == 0, proc.stderr
    assert pg_admin.execute(f"SELECT id, name FROM {table} WHERE id >= 3 ORDER BY id"
                            ).fetchall() == [(3, "THREE"), (4, "four")]


def test_cli_reports_a_missing_table_and_a_bad_line_without_a_traceback(pg_url, pg_table,
                                                                         pg_admin, tmp_path):
    table = pg_table("cli_err", "id int, name text")
    csv_file = tmp_path / "in.csv"
    csv_file.write_text("id,name\n1,a\n2,b\n3\n4,d\n")
    proc = run_cli("load", "--url", pg_url, "--table", "fp_bulk_no_such_table", str(csv_file))
    assert proc.returncode == 1
    assert "fastpool load: UndefinedTable: relation \"fp_bulk_no_such_table\" does not exist" \
        in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("load", "--url", pg_url, "--table", table, str(csv_file))
    assert proc.returncode == 1
    assert f"{csv_file} line 4: rows[2] has 1 values, expected 2 (id, name)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert pg_admin.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


# ---- arguments -----------------------------------------------------------------------

@pytest.mark.parametrize(("call", "message"), [
    (lambda p: bulk.copy_rows(p, "t", "id,name", []), "columns must be a list of column names"),
    (lambda p: bulk.copy_rows(p, "t", [], []), "columns must name at least one column"),
    (lambda p: bulk.copy_rows(p, "t", ["a", "a"], []), "columns are named more than once: a"),
    (lambda p: bulk.copy_rows(p, "t", ["a", ""], []), "a column name must be a non-empty"),
    (lambda p: bulk.copy_rows(p, "", ["a"], []), "table must be a non-empty string"),
    (lambda p: bulk.copy_rows(p, ("s", "t", "u"), ["a"], []), "table must be a name or a"),
    (lambda p: bulk.copy_rows(p, "t", ["a"], "abc"), "rows must be an iterable of rows"),
    (lambda p: bulk.copy_rows(p, "t", ["a"], None), "rows must be an iterable of rows"),
    (lambda p: bulk.copy_rows(p, "t", ["a"], [], on_conflict=["b"]),
     "on_conflict names 'b', which columns"),
    (lambda p: bulk.copy_rows(p, "t", ["a"], [], chunk_rows=0), "chunk_rows must be an integer"),
    (lambda p: bulk.copy_rows(p, "t", ["a"], [], progress=5), "progress must be callable"),
    (lambda p: bulk.copy_rows(p, "t", ["a"], [], pg_format="csv"), "pg_format must be"),
    (lambda p: bulk.copy_rows(p, "t", ["a"], [], max_packet=10),
     "max_packet .* must be an integer >= 1024"),
    (lambda p: bulk.copy_records(p, "t", {"a": 1}), "records must be an iterable of dicts"),
])
def test_bad_arguments_are_refused_before_taking_a_connection(make_pool, call, message):
    pool = make_pool(max_size=1)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        call(pool)
    assert pool.stats().acquisitions == 0


def test_a_pool_of_another_client_is_refused_clearly(make_pool):
    """Not a connection at all: the pool says so at once (an unknown DB-API
    client's UnsupportedClient is in test_transaction_rules)."""
    pool = make_pool(connect=lambda: object(), max_size=1)
    with pytest.raises(ConnectError, match=r"builtins\.object objects are not DB-API"):
        bulk.copy_rows(pool, "t", ["a"], [(1,)])
