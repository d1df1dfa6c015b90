"""The asyncio client adapters and drivers (psycopg AsyncConnection, asyncpg,
asyncmy, aiomysql, aiosqlite) against the real servers: the local transaction
status the core reads, begin/commit/rollback, reset, probe of a killed
session, error classification (the same ErrorKinds as the sync adapters),
and URL / driver= handling. Each test drives its coroutine with asyncio.run."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from fastpool import ConfigError, ErrorKind, UnsupportedClient
from fastpool.drivers import (
    AsyncCallableDriver,
    AsyncDriver,
    CallableDriver,
    from_url,
    from_url_async,
)
from fastpool.drivers.client import AsyncClient, client_for
from tests.fix_db import need_driver, pg_terminate

CLIENTS = ["psycopg", "asyncpg", "asyncmy", "aiomysql", "aiosqlite"]
SERVER = {"psycopg": "pg", "asyncpg": "pg", "asyncmy": "mysql", "aiomysql": "mysql",
          "aiosqlite": "sqlite"}
EXTRA = {"psycopg": "postgres", "asyncpg": "asyncpg", "asyncmy": "asyncmy",
         "aiomysql": "aiomysql", "aiosqlite": "aiosqlite"}


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


class Backend:
    """One async client on its server: URL, SQL in its dialect, a killer."""

    def __init__(self, client: str, request: pytest.FixtureRequest, tmp_path: Any) -> None:
        need_driver(client, EXTRA[client])
        self.client = client
        self.server = SERVER[client]
        if self.server == "pg":
            base = request.getfixturevalue("pg_url")
            self.admin = request.getfixturevalue("pg_admin")
            self.url = base.replace("postgresql://", f"postgresql+{client}://", 1)
            self.table = "async_clients_t"
            self.admin.execute(f"DROP TABLE IF EXISTS {self.table}")
            self.admin.execute(f"CREATE TABLE {self.table} (id int)")
        elif self.server == "mysql":
            base = request.getfixturevalue("mysql_url")
            self.admin = request.getfixturevalue("mysql_admin")
            self.url = base.replace("mysql://", f"mysql+{client}://", 1)
            if client == "aiomysql":  # its status is exact only with autocommit on
                self.url += ("&" if "?" in self.url else "?") + "autocommit=true"
            self.table = "async_clients_t"
            cur = self.admin.cursor()
            cur.execute(f"DROP TABLE IF EXISTS {self.table}")
            cur.execute(f"CREATE TABLE {self.table} (id int) ENGINE=InnoDB")
            cur.close()
        else:
            self.admin = None
            self.url = f"sqlite+aiosqlite:///{tmp_path}/async.db"
            self.table = "t"
        self.mark = "$1" if client == "asyncpg" else "?" if client == "aiosqlite" else "%s"

    async def execute(self, conn: Any, sql: str, *args: Any) -> None:
        if self.client == "asyncpg":
            await conn.execute(sql, *args)
        elif self.client == "psycopg":
            await conn.execute(sql, args or None)
        elif self.client == "aiosqlite":
            await (await conn.execute(sql, args)).close()
        else:
            async with conn.cursor() as cur:
                await cur.execute(sql, args or None)

    async def prepare(self, driver: AsyncDriver) -> None:
        if self.server == "sqlite":
            conn = await driver.connect()
            await self.execute(conn, f"CREATE TABLE IF NOT EXISTS {self.table} (id int)")
            await driver.commit(conn)
            await driver.close(conn)

    def kill(self, session_id: int) -> None:
        if self.server == "pg":
            pg_terminate(self.admin, [session_id])
        else:
            cur = self.admin.cursor()
            cur.execute(f"KILL {int(session_id)}")
            cur.close()

    def raise_sql(self, kind: str) -> str:
        """A statement the server fails with this kind of error."""
        if self.server == "pg":
            code = {"deadlock": "40P01", "serialization": "40001"}.get(kind)
            if code:
                return f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{code}'; END $$"
        elif self.server == "mysql":
            errno = {"deadlock": 1213, "serialization": 1205}.get(kind)
            if errno:
                return f"SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = {errno}"
        return "SELEC 1"  # a syntax error


@pytest.fixture(params=CLIENTS)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Backend:
    return Backend(request.param, request, tmp_path)


def test_the_url_picks_the_async_client(backend: Backend) -> None:
    async def main() -> None:
        driver = from_url_async(backend.url)
        assert driver.is_async and isinstance(driver.client, AsyncClient)
        assert driver.client.name == backend.client
        conn = await driver.connect()
        try:
            assert client_for(conn).name == backend.client
            assert type(client_for(conn)) is type(driver.client)
        finally:
            await driver.close(conn)
    run(main())


def test_local_status_follows_the_transaction(backend: Backend) -> None:
    async def main() -> None:
        driver = from_url_async(backend.url)
        await backend.prepare(driver)
        client = driver.client
        assert client is not None
        conn = await driver.connect()
        src = driver.status_source(conn)

        def idle() -> bool:
            return bool(getattr(src, driver.status_attr or "") == driver.idle_status)

        try:
            assert idle() and client.in_transaction(conn) is False
            await client.begin(conn)
            if backend.client in ("asyncpg", "aiosqlite"):
                # (psycopg and MySQL without autocommit open it with the first statement)
                assert not idle() and client.in_transaction(conn) is True
            await backend.execute(conn, f"INSERT INTO {backend.table} VALUES (1)")
            assert not idle() and client.in_transaction(conn) is True
            await client.commit(conn)
            assert idle() and client.in_transaction(conn) is False
            await client.begin(conn, write=True)
            await backend.execute(conn, f"INSERT INTO {backend.table} VALUES (2)")
            assert not idle()
            await client.rollback(conn)
            assert idle()
        finally:
            await driver.close(conn)
        check = await driver.connect()
        try:
            rows = await driver.client.fetch_dicts(check, f"SELECT id FROM {backend.table}", ())
            assert [r["id"] for r in rows] == [1]
        finally:
            await driver.close(check)
    run(main())


def test_reset_rolls_back_a_dirty_connection(backend: Backend) -> None:
    async def main() -> None:
        driver = from_url_async(backend.url)
        await backend.prepare(driver)
        conn = await driver.connect()
        try:
            assert driver.client is not None
            await driver.client.begin(conn)
            await backend.execute(conn, f"INSERT INTO {backend.table} VALUES (7)")
            assert driver.client.in_transaction(conn) is True
            assert await driver.reset(conn) is True
            assert driver.client.in_transaction(conn) is False
            assert await driver.reset(conn) is True  # idle: nothing to do
            rows = await driver.client.fetch_dicts(conn, f"SELECT id FROM {backend.table}", ())
            assert rows == []
            await driver.rollback(conn)
            await driver.probe(conn, 5)
        finally:
            await driver.close(conn)
    run(main())


def test_probe_fails_on_a_killed_session(backend: Backend) -> None:
    if backend.server == "sqlite":
        pytest.skip("SQLite has no server session to kill")

    async def main() -> None:
        driver = from_url_async(backend.url)
        conn = await driver.connect()
        try:
            session = driver.session_id(conn)
            assert session is not None and session == driver.client.session_id(conn)  # type: ignore[union-attr]
            backend.kill(session)
            await asyncio.sleep(0.2)  # the loop sees the server's EOF
            with pytest.raises(Exception) as info:
                await driver.probe(conn, 5)
            assert driver.classify(info.value) in (ErrorKind.CONNECTION_LOST, ErrorKind.NOT_SENT)
            assert await driver.reset(conn) in (True, False)
            assert driver.is_lost(conn) or backend.client == "psycopg"
        finally:
            await driver.close(conn)
    run(main())


@pytest.mark.parametrize("kind, expected", [("deadlock", ErrorKind.RETRYABLE),
                                            ("serialization", ErrorKind.RETRYABLE),
                                            ("query", ErrorKind.QUERY)])
def test_classify_matches_the_sync_adapter(backend: Backend, kind: str,
                                           expected: ErrorKind) -> None:
    if backend.server == "sqlite" and kind != "query":
        pytest.skip("SQLite's conflicts are 'database is locked' (tested with sqlite3)")
    sql = backend.raise_sql(kind)

    async def main() -> ErrorKind:
        driver = from_url_async(backend.url)
        conn = await driver.connect()
        try:
            with pytest.raises(Exception) as info:
                await backend.execute(conn, sql)
            return driver.classify(info.value)
        finally:
            await driver.close(conn)
    got = run(main())
    sync_url = backend.url.replace(f"+{backend.client}", "")
    sync = from_url(sync_url)
    conn = sync.connect()
    try:
        with pytest.raises(Exception) as info:
            cur = conn.cursor()
            cur.execute(sql)
        assert sync.classify(info.value) is expected
    finally:
        sync.close(conn)
        sync.close_pool()
    assert got is expected


def test_a_statement_on_a_killed_session_is_a_lost_connection(backend: Backend) -> None:
    if backend.server == "sqlite":
        pytest.skip("SQLite has no server session to kill")

    async def main() -> None:
        driver = from_url_async(backend.url)
        conn = await driver.connect()
        try:
            backend.kill(driver.session_id(conn) or 0)
            await asyncio.sleep(0.2)
            with pytest.raises(Exception) as info:
                await backend.execute(conn, "SELECT 1")
            assert driver.classify(info.value) in (ErrorKind.CONNECTION_LOST,
                                                   ErrorKind.NOT_SENT)
        finally:
            await driver.close(conn)
    run(main())


def test_aiomysql_without_autocommit_counts_the_statements_it_cannot_see(
        mysql_url: str) -> None:
    """aiomysql never reads the status of a result set, so a SELECT that opens
    a transaction (autocommit off, aiomysql's default) leaves the flags idle:
    the statements sent since the last COMMIT/ROLLBACK are counted instead."""
    need_driver("aiomysql", "aiomysql")

    async def main() -> None:
        driver = from_url_async(mysql_url.replace("mysql://", "mysql+aiomysql://"))
        conn = await driver.connect()
        client = driver.client
        assert client is not None
        try:
            assert client.in_transaction(conn) is False  # just opened: nothing sent
            await driver.probe(conn)  # a ping opens nothing
            assert client.in_transaction(conn) is False
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1")
            assert client.in_transaction(conn) is True  # the flags alone say idle here
            assert await driver.reset(conn) is True
            assert client.in_transaction(conn) is False
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1")
            await conn.commit()  # the borrower's own commit ends it too
            assert client.in_transaction(conn) is False
        finally:
            await driver.close(conn)
    run(main())


def test_an_aiomysql_pool_without_autocommit_keeps_its_connections(
        mysql_url: str, mysql_admin: Any) -> None:
    """With aiomysql's default (autocommit off) the pool used to read every
    connection as in a transaction, even after its rollback, and discarded
    every connection on return. Now: helpers and blocks reuse one connection,
    a borrower's uncommitted write is rolled back on return (the connection
    kept), and a write through a reference kept after the release is never
    committed by the next borrower."""
    need_driver("aiomysql", "aiomysql")
    import fastpool

    cur = mysql_admin.cursor()
    cur.execute("DROP TABLE IF EXISTS aiomysql_noauto")
    cur.execute("CREATE TABLE aiomysql_noauto (id int) ENGINE=InnoDB")
    cur.close()
    url = mysql_url.replace("mysql://", "mysql+aiomysql://")

    async def main() -> None:
        async with fastpool.create_async_pool(url, min_size=1, max_size=1) as pool:
            for i in range(5):
                assert await pool.fetchval("SELECT %s", (i,)) == i
                async with pool.connection() as conn, conn.cursor() as c:
                    await c.execute("SELECT 1")
            assert "select_id" in str(await pool.explain("SELECT 1"))
            await pool.execute("INSERT INTO aiomysql_noauto VALUES (1)")
            conn = await pool.acquire()
            async with conn.cursor() as c:
                await c.execute("INSERT INTO aiomysql_noauto VALUES (2)")  # never committed
            await pool.release(conn)
            async with conn.cursor() as c:  # a stale reference, after the release
                await c.execute("INSERT INTO aiomysql_noauto VALUES (3)")
            async with pool.connection() as clean, clean.cursor() as c:
                await c.execute("INSERT INTO aiomysql_noauto VALUES (4)")
            rows = await pool.fetch("SELECT id FROM aiomysql_noauto ORDER BY id")
            assert [r[0] for r in rows] == [1, 4]
            stats = pool.stats()
            assert stats.opened == 1, stats  # never discarded
            assert sum(stats.closed.values()) == 0, stats.closed
            assert stats.dirty_on_lend == 1, stats  # the stale write, rolled back

    run(main())


def test_an_async_factory_gets_its_client_detected(backend: Backend) -> None:
    async def main() -> None:
        url_driver = from_url_async(backend.url)
        driver = AsyncCallableDriver(url_driver.connect)
        conn = await driver.connect()
        try:
            assert driver.client is not None and driver.client.name == backend.client
            assert driver.status_attr == url_driver.status_attr
        finally:
            await driver.close(conn)
    run(main())


# ---- refusals ---------------------------------------------------------------

def test_an_async_factory_must_return_an_awaitable_async_connection(tmp_path: Any) -> None:
    import sqlite3

    def sync_factory() -> Any:
        return sqlite3.connect(tmp_path / "x.db")

    async def async_sync_conn() -> Any:
        return sqlite3.connect(tmp_path / "x.db")

    async def main() -> None:
        with pytest.raises(ConfigError, match="not an awaitable"):
            await AsyncCallableDriver(sync_factory).connect()
        with pytest.raises(UnsupportedClient, match=r"use fastpool\.Pool"):
            await AsyncCallableDriver(async_sync_conn).connect()
    run(main())


def test_a_sync_pool_refuses_async_connections(tmp_path: Any) -> None:
    aiosqlite = need_driver("aiosqlite", "aiosqlite")

    async def main() -> None:
        conn = await aiosqlite.connect(str(tmp_path / "y.db"))
        try:
            with pytest.raises(UnsupportedClient, match="AsyncPool"):
                CallableDriver(lambda: conn).connect()
        finally:
            await conn.close()
    run(main())

    async def factory() -> Any:
        return None
    with pytest.raises(UnsupportedClient, match="AsyncPool"):
        CallableDriver(factory).connect()


@pytest.mark.parametrize("url, driver, client", [
    ("postgresql://u@h/db", None, "psycopg"),
    ("postgres://u@h/db", None, "psycopg"),
    ("postgresql+psycopg://u@h/db", None, "psycopg"),
    ("postgresql+asyncpg://u@h/db", None, "asyncpg"),
    ("postgresql://u@h/db", "asyncpg", "asyncpg"),
    ("mysql://u@h/db", None, "asyncmy"),
    ("mariadb://u@h/db", None, "asyncmy"),
    ("mysql+aiomysql://u@h/db", None, "aiomysql"),
    ("mariadb+asyncmy://u@h/db", None, "asyncmy"),
    ("mysql://u@h/db", "aiomysql", "aiomysql"),
    ("sqlite:///:memory:", None, "aiosqlite"),
    ("sqlite+aiosqlite:///:memory:", "aiosqlite", "aiosqlite"),
])
def test_scheme_and_driver_keyword_pick_the_client(url: str, driver: str | None,
                                                   client: str) -> None:
    made = from_url_async(url, driver=driver)
    assert made.client is not None and made.client.name == client
    run(made.close_pool())


@pytest.mark.parametrize("url, driver, message", [
    ("postgresql+asyncpg://u@h/db", "psycopg", "conflicts"),
    ("mysql://u@h/db", "asyncpg", "is a postgresql client"),
    ("sqlite:///:memory:", "asyncmy", "is a mysql client"),
    ("postgresql://u@h/db", "pg8000", "driver must be one of"),
    ("postgresql+pg8000://u@h/db", None, "unknown asyncio client"),
])
def test_conflicting_or_unknown_clients_are_refused(url: str, driver: str | None,
                                                    message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_url_async(url, driver=driver)


@pytest.mark.parametrize("url", ["postgresql+asyncpg://u@h/db", "sqlite+aiosqlite:///x.db",
                                 "mysql+asyncmy://u@h/db", "mariadb+aiomysql://u@h/db"])
def test_the_sync_from_url_refuses_async_clients(url: str) -> None:
    with pytest.raises(ConfigError, match="create_async_pool"):
        from_url(url)


def test_the_sync_from_url_takes_psycopg_by_name(pg_url: str) -> None:
    driver = from_url(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    driver.close(driver.connect())


@pytest.mark.parametrize("module, url, extra", [
    ("asyncpg", "postgresql+asyncpg://u@h/db", "asyncpg"),
    ("asyncmy", "mysql://u@h/db", "asyncmy"),
    ("aiomysql", "mariadb+aiomysql://u@h/db", "aiomysql"),
    ("aiosqlite", "sqlite:///:memory:", "aiosqlite"),
    ("psycopg", "postgresql://u@h/db", "postgres"),
])
def test_a_missing_client_names_its_extra(monkeypatch: pytest.MonkeyPatch, module: str,
                                          url: str, extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError, match=rf"pip install 'fastpool\[{extra}\]'"):
        from_url_async(url)


def test_passwords_stay_out_of_errors() -> None:
    async def main(url: str) -> None:
        driver = from_url_async(url)
        with pytest.raises(Exception) as info:
            await driver.connect()
        assert "s3cret" not in driver.redact(str(info.value))
        assert "s3cret" not in driver.describe()
        assert driver.classify(info.value) in (ErrorKind.UNREACHABLE, ErrorKind.AUTH,
                                               ErrorKind.CONFIG)
    from tests.fix_db import free_port

    port = free_port()
    for scheme in ("postgresql+asyncpg", "postgresql+psycopg", "mysql+asyncmy",
                   "mysql+aiomysql"):
        run(main(f"{scheme}://app:s3cret@127.0.0.1:{port}/db"))
    with pytest.raises(ConfigError) as info:
        from_url_async("postgresql+asyncpg://app:s3cret@h/db", driver="psycopg")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("mode", ["rollback", "discard", "none"])
def test_asyncpg_reset_mode_is_a_driver_attribute(mode: str) -> None:
    need_driver("asyncpg", "asyncpg")
    assert from_url_async(f"postgresql+asyncpg://u@h/db?reset={mode}").reset_mode == mode
    assert from_url_async("postgresql+asyncpg://u@h/db", reset=mode).reset_mode == mode


def test_asyncpg_reset_mode_is_checked() -> None:
    need_driver("asyncpg", "asyncpg")
    with pytest.raises(ConfigError, match="reset must be one of"):
        from_url_async("postgresql+asyncpg://u@h/db", reset="all")


def test_clients_share_one_rule_source() -> None:
    """Each library's local rules exist once: the sync and async adapters share them."""
    from fastpool.drivers.mysql import AsyncMySQLClient, MySQLdbClient, MySQLLocal
    from fastpool.drivers.postgres import AsyncPsycopgClient, PsycopgClient, PsycopgLocal
    from fastpool.drivers.sqlite import AiosqliteClient, SQLiteClient, SQLiteLocal

    for local, pair in ((PsycopgLocal, (PsycopgClient, AsyncPsycopgClient)),
                        (MySQLLocal, (MySQLdbClient, AsyncMySQLClient)),
                        (SQLiteLocal, (SQLiteClient, AiosqliteClient))):
        for cls in pair:
            assert issubclass(cls, local)
            assert "classify" not in vars(cls)


_: Callable[..., Any] = run
