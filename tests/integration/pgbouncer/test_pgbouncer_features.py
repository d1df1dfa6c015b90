"""fastpool's features through a real PgBouncer, in transaction and in session mode.

In transaction mode PgBouncer lends each transaction whichever server
connection is free: the pools here have more client connections than
PgBouncer has server connections, so a prepared statement (fastpool's cache or
psycopg's automatic one) or any session state would meet another client's
server connection and fail. The same workload without the profile shows it
does (``test_without_the_profile_...``), with the error naming the profile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import fastpool
from fastpool import ConfigError, ConnectError, ErrorKind, PoolTimeout
from tests.fix_pgbouncer import PgBouncer
from tests.fix_pool import in_threads

MODES = ["transaction", "session"]


def notes(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "__notes__", ()))


@pytest.fixture
def table(scratch_table: Callable[[str], str]) -> str:
    return scratch_table("id BIGINT PRIMARY KEY, v TEXT, n INT")


@pytest.fixture(params=MODES)
def behind(request: pytest.FixtureRequest, make_pgbouncer: Callable[..., PgBouncer],
           ) -> Iterator[tuple[PgBouncer, Callable[..., Any]]]:
    """(PgBouncer, make): ``make(**options)`` creates a pool through it with the
    profile of its mode. Transaction mode: 6 client connections over 2 server
    connections; session mode (a client keeps its server connection): 4 over 4."""
    mode = request.param
    bouncer = make_pgbouncer(mode, pool_size=2 if mode == "transaction" else 4)
    pools: list[Any] = []

    def make(**options: Any) -> Any:
        options.setdefault("max_size", 6 if mode == "transaction" else 4)
        options.setdefault("timeout", 10.0)
        pool = fastpool.create_pool(bouncer.url, pgbouncer=mode, **options)
        pools.append(pool)
        return pool

    yield bouncer, make
    for pool in pools:
        pool.close()


def test_query_helpers_through_pgbouncer(behind: tuple[PgBouncer, Callable[..., Any]],
                                         table: str) -> None:
    bouncer, make = behind
    pool = make()
    assert pool.executemany(f"INSERT INTO {table} (id, v, n) VALUES (%s, %s, %s)",
                            [(i, f"v{i}", i * 10) for i in range(100)]) == 100

    def work(t: int) -> None:
        for i in range(40):  # well past psycopg's prepare_threshold (5)
            k = (t * 40 + i) % 100
            assert pool.fetchval(f"SELECT n FROM {table} WHERE id = %s", (k,)) == k * 10
            assert pool.fetchrow(f"SELECT id, v FROM {table} WHERE id = %s", (k,)) == (k, f"v{k}")
            assert len(pool.fetch(f"SELECT id FROM {table} WHERE id < %s", (k,))) == k
            assert pool.execute(f"UPDATE {table} SET v = v WHERE id = %s", (k,)) == 1

    in_threads(12, work)
    assert pool.fetchval(f"SELECT count(*) FROM {table}") == 100
    plan = pool.explain(f"SELECT * FROM {table} WHERE n = %s", (10,), analyze=True, scan_rows=10)
    assert plan.warnings  # a sequential scan of 100 rows, flagged
    statements = pool.query_stats()["statements"]
    if bouncer.mode == "transaction":
        assert statements["size"] == 0 and statements["prepares"] == 0, statements
    else:  # session mode: everything on
        assert statements["prepares"] > 0 and statements["hits"] > 0, statements


def test_pool_transaction_through_pgbouncer(behind: tuple[PgBouncer, Callable[..., Any]],
                                            table: str) -> None:
    _, make = behind
    pool = make()
    pool.executemany(f"INSERT INTO {table} (id, v, n) VALUES (%s, 'acct', 1000)",
                     [(i,) for i in range(4)])

    def move(t: int) -> None:
        for i in range(25):
            src, dst = (t + i) % 4, (t + i + 1) % 4

            def transfer(conn: Any, src: int = src, dst: int = dst) -> None:
                pool.execute(f"UPDATE {table} SET n = n - 1 WHERE id = %s", (src,), conn=conn)
                pool.execute(f"UPDATE {table} SET n = n + 1 WHERE id = %s", (dst,), conn=conn)

            pool.transaction(transfer)

    in_threads(8, move)
    assert pool.fetchval(f"SELECT sum(n) FROM {table}") == 4000
    # A transaction that fails leaves nothing behind, and the pool goes on.
    with pytest.raises(ZeroDivisionError):
        pool.transaction(lambda conn: (pool.execute(
            f"UPDATE {table} SET n = 0 WHERE id = 0", conn=conn), 1 / 0))
    assert pool.fetchval(f"SELECT sum(n) FROM {table}") == 4000


def test_batcher_through_pgbouncer(behind: tuple[PgBouncer, Callable[..., Any]],
                                   table: str) -> None:
    _, make = behind
    pool = make()
    with pool.batcher(max_delay=0.002) as batcher:
        def write(t: int) -> None:
            for i in range(50):
                batcher.execute(f"INSERT INTO {table} (id, v, n) VALUES (%s, %s, %s)",
                                (t * 1000 + i, "b", t))

        in_threads(8, write)
    assert pool.fetchval(f"SELECT count(*) FROM {table}") == 400
    assert pool.fetch(f"SELECT n, count(*) FROM {table} GROUP BY n ORDER BY n") == [
        (t, 50) for t in range(8)]


def test_bulk_loads_through_pgbouncer(behind: tuple[PgBouncer, Callable[..., Any]],
                                      table: str) -> None:
    _, make = behind
    pool = make()
    rows = ((i, f"r{i}", i % 7) for i in range(20_000))
    assert pool.copy_rows(table, ["id", "v", "n"], rows) == 20_000
    # An upsert stages in a temporary table (ON COMMIT DROP): one transaction,
    # so transaction mode carries it.
    assert pool.copy_rows(table, ["id", "v", "n"], [(5, "new", 99), (20_000, "x", 1)],
                          on_conflict=("id",)) == 2
    assert pool.fetchrow(f"SELECT count(*), sum(n) FROM {table}") == (
        20_001, sum(i % 7 for i in range(20_000)) - 5 % 7 + 99 + 1)
    assert pool.fetchval(f"SELECT v FROM {table} WHERE id = 5") == "new"


def test_without_the_profile_psycopgs_prepared_statements_collide_and_the_error_names_it(
        make_pgbouncer: Callable[..., PgBouncer]) -> None:
    """The control: transaction mode, one server connection, no profile. A
    statement prepared on that server connection by one client is there when
    the next client prepares its own first statement (psycopg names both
    ``_pg3_0``): PostgreSQL refuses it, and fastpool's classifier adds a note
    naming the profile."""
    bouncer = make_pgbouncer("transaction", pool_size=1)
    with fastpool.create_pool(bouncer.url, max_size=2, timeout=10.0) as pool:
        held = pool.acquire()
        try:
            held.execute("SELECT %s::int", (1,), prepare=True)
            held.commit()  # the server connection goes back to PgBouncer, _pg3_0 on it
            with pytest.raises(Exception) as info:
                pool.fetchval("SELECT %s::int", (2,))  # another client connection
        finally:
            pool.release(held)
        exc = info.value
        assert exc.sqlstate == "42P05", exc  # type: ignore[attr-defined]
        assert pool.classify(exc) is ErrorKind.QUERY
        assert "pgbouncer='transaction'" in notes(exc)
    # With the profile, the same steps prepare nothing and succeed.
    with fastpool.create_pool(bouncer.url, max_size=2, timeout=10.0,
                              pgbouncer="transaction") as pool:
        held = pool.acquire()
        try:
            for i in range(10):
                assert held.execute("SELECT %s::int", (i,)).fetchone() == (i,)
                held.commit()
            assert pool.fetchval("SELECT %s::int", (2,)) == 2
        finally:
            pool.release(held)


def test_startup_option_timeouts_behind_pgbouncer(make_pgbouncer: Callable[..., PgBouncer],
                                                  ) -> None:
    bouncer = make_pgbouncer("session", pool_size=2)
    # Without the profile: PgBouncer refuses the startup option; the
    # connect error's cause names the profiles.
    with fastpool.create_pool(bouncer.url, statement_timeout=5, timeout=5.0) as pool:
        with pytest.raises((ConnectError, PoolTimeout)) as info:
            pool.fetchval("SELECT 1")
        cause = info.value.__cause__
        assert cause is not None and "unsupported startup parameter" in str(cause)
        assert "pgbouncer='session'" in notes(cause)
    # Session mode: SET once per connection, and it holds for the session.
    with fastpool.create_pool(bouncer.url, pgbouncer="session", statement_timeout=5,
                              lock_timeout=1.5, max_size=2) as pool:
        assert pool.fetchval("SHOW statement_timeout") == "5s"
        assert pool.fetchval("SHOW lock_timeout") == "1500ms"
    # asyncpg sends the timeouts as startup settings: refused the same way,
    # and a refused startup is a configuration error (fails fast), not a lost connection.
    pytest.importorskip("asyncpg")

    async def asyncpg_pool() -> None:
        url = bouncer.url.replace("postgresql://", "postgresql+asyncpg://")
        async with fastpool.create_async_pool(url, statement_timeout=5, timeout=5.0,
                                              wait=False) as pool:
            with pytest.raises(ConnectError) as info:
                await pool.fetchval("SELECT 1")
            assert "pgbouncer='session'" in notes(info.value.__cause__)  # type: ignore[arg-type]

    asyncio.run(asyncpg_pool())
    # Transaction mode: refused before connecting.
    with pytest.raises(ConfigError, match="statement_timeout with pgbouncer='transaction'"):
        fastpool.create_pool(bouncer.url, pgbouncer="transaction", statement_timeout=5)


@pytest.mark.parametrize(("options", "match"), [
    ({"pgbouncer": "txn"}, r"pgbouncer must be None or 'transaction' or 'session', got 'txn'"),
    ({"pgbouncer": True}, r"pgbouncer must be None or 'transaction' or 'session', got True"),
    ({"pgbouncer": "transaction", "statement_cache_size": 100},
     r"statement_cache_size=100 with pgbouncer='transaction'"),
    ({"pgbouncer": "transaction", "prepare_threshold": 5},
     r"prepare_threshold=5 with pgbouncer='transaction'"),
])
def test_bad_profile_options_are_refused_naming_the_option(options: dict[str, Any],
                                                           match: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(ConfigError, match=match):
        fastpool.create_pool("postgresql://127.0.0.1:1/none", min_size=0, **options)


def test_the_profile_is_read_from_the_url_too(make_pgbouncer: Callable[..., PgBouncer]) -> None:
    bouncer = make_pgbouncer("transaction", pool_size=1)
    with fastpool.create_pool(f"{bouncer.url}?pgbouncer=transaction", max_size=3) as pool:
        def work(t: int) -> None:
            for i in range(30):
                assert pool.fetchval("SELECT %s::int + 1", (i,)) == i + 1

        in_threads(6, work)
        assert pool.query_stats()["statements"]["prepares"] == 0
        # Behind PgBouncer the backend pid is PgBouncer's key: no session ids.
        with pool.connection() as conn:
            assert pool._driver.session_id(conn) is None
        assert pool.server_activity() == []  # never another client's sessions


@pytest.mark.parametrize("client", ["psycopg", "asyncpg"])
def test_asyncio_pools_take_the_profile_too(client: str,
                                            make_pgbouncer: Callable[..., PgBouncer]) -> None:
    """psycopg's AsyncConnection and asyncpg, in transaction mode over one server
    connection: no prepared statement (asyncpg's statement cache is off too)."""
    if client == "asyncpg":
        pytest.importorskip("asyncpg")
    bouncer = make_pgbouncer("transaction", pool_size=1)
    url = bouncer.url.replace("postgresql://", f"postgresql+{client}://")
    mark = "$1" if client == "asyncpg" else "%s"

    async def main() -> None:
        async with fastpool.create_async_pool(url, pgbouncer="transaction", max_size=4,
                                              timeout=10.0) as pool:
            async def work(t: int) -> None:
                for i in range(20):
                    assert await pool.fetchval(f"SELECT {mark}::int", (i,)) == i

                    async def in_tx(conn: Any, i: int = i) -> Any:
                        return await pool.fetchval(f"SELECT {mark}::int * 2", (i,), conn=conn)

                    assert await pool.transaction(in_tx) == 2 * i

            await asyncio.gather(*(work(t) for t in range(8)))
            assert pool.query_stats()["statements"]["prepares"] == 0
            async with pool.connection() as conn:
                assert pool._driver.session_id(conn) is None
        with pytest.raises(ConfigError, match="statement_cache_size=10 with pgbouncer="):
            await fastpool.create_async_pool(url, pgbouncer="transaction",
                                             statement_cache_size=10)

    asyncio.run(main())
