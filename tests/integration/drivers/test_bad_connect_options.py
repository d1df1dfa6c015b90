"""A connect option the client or the server rejects fails the caller at once
with ConnectError, on every client, through a URL driver or a connect=
factory: retrying cannot fix it (issue 20, group 3). Before, e.g. MySQL's
``ssl_mode="bogus"`` was retried with backoff until the caller's PoolTimeout.

The pools' reconnect backoff is an hour: a rejection classified as worth
retrying leaves the caller waiting for the timeout, with one attempt made, so
the test fails on the exception's type, never on a time."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import pytest

import fastpool
from fastpool import ConnectError
from fastpool.drivers import from_url, from_url_async
from fastpool.pool.policy import PoolPolicy
from tests.fix_db import need_driver

TIMEOUT = 5.0  # only reached when a rejection is (wrongly) retried


@pytest.fixture(autouse=True)
def no_quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PoolPolicy, "RECONNECT_BACKOFF", staticmethod(lambda attempt: 3600.0))


def _counted(factory: Callable[[], Any], calls: list[int]) -> Callable[[], Any]:
    def connect() -> Any:
        calls.append(1)
        return factory()
    return connect


def _acounted(factory: Callable[[], Any], calls: list[int]) -> Callable[[], Any]:
    async def connect() -> Any:
        calls.append(1)
        return await factory()
    return connect


def _pg(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_url"))


def _my(request: pytest.FixtureRequest) -> dict[str, Any]:
    url = request.getfixturevalue("mysql_url")
    params = dict(from_url(url).params)
    return {k: v for k, v in params.items() if k in ("host", "port", "user", "database",
                                                      "unix_socket", "password")}


# (id, what it rejects: a regex of the driver's message)
SYNC_CASES: list[tuple[str, str, Callable[[pytest.FixtureRequest, Any], dict[str, Any]]]] = [
    ("mysqlclient url ssl_mode", "ssl_mode",
     lambda r, tmp: {"driver": from_url(r.getfixturevalue("mysql_url"), ssl_mode="bogus")}),
    ("mysqlclient url init_command", "syntax",
     lambda r, tmp: {"driver": from_url(r.getfixturevalue("mysql_url"),
                                        init_command="SELEC 1")}),
    ("mysqlclient url sql_mode", "sql_mode",
     lambda r, tmp: {"driver": from_url(r.getfixturevalue("mysql_url"), sql_mode="BOGUS")}),
    ("mysqlclient connect= ssl_mode", "ssl_mode",
     lambda r, tmp: {"connect": functools.partial(
         need_driver("MySQLdb", "mysql").connect, **_my(r), ssl_mode="bogus")}),
    ("mysqlclient connect= init_command", "syntax",
     lambda r, tmp: {"connect": functools.partial(
         need_driver("MySQLdb", "mysql").connect, **_my(r), init_command="SELEC 1")}),
    ("mysqlclient connect= unknown keyword", "bogus_option",
     lambda r, tmp: {"connect": functools.partial(
         need_driver("MySQLdb", "mysql").connect, **_my(r), bogus_option=1)}),
    ("psycopg url sslmode", "sslmode",
     lambda r, tmp: {"driver": from_url(_pg(r), sslmode="bogus")}),
    ("psycopg url target_session_attrs", "target_session_attrs",
     lambda r, tmp: {"driver": from_url(_pg(r), target_session_attrs="bogus")}),
    ("psycopg url server option", "nosuch",
     lambda r, tmp: {"driver": from_url(_pg(r), options="-c nosuch=1")}),
    ("psycopg connect= sslmode", "sslmode",
     lambda r, tmp: {"connect": functools.partial(
         need_driver("psycopg", "postgres").connect, _pg(r), sslmode="bogus")}),
    ("psycopg connect= invalid connection option", "invalid connection option",
     lambda r, tmp: {"connect": functools.partial(
         need_driver("psycopg", "postgres").connect, _pg(r), bogus="x")}),
    ("sqlite3 connect= uri mode", "access mode",
     lambda r, tmp: {"connect": functools.partial(
         sqlite3.connect, f"file:{tmp}/x.db?mode=bogus", uri=True)}),
    ("sqlite3 connect= uri vfs", "vfs",
     lambda r, tmp: {"connect": functools.partial(
         sqlite3.connect, f"file:{tmp}/x.db?vfs=bogus", uri=True)}),
    ("sqlite3 connect= uri authority", "authority",
     lambda r, tmp: {"connect": functools.partial(
         sqlite3.connect, f"file://otherhost{tmp}/x.db", uri=True)}),
]


@pytest.mark.parametrize(("case", "rejects", "make"), SYNC_CASES, ids=[c[0] for c in SYNC_CASES])
def test_a_rejected_connect_option_fails_at_once(request, tmp_path, pool_cls, case, rejects,
                                                 make):
    options = make(request, tmp_path)
    calls: list[int] = []
    if "connect" in options:
        options["connect"] = _counted(options["connect"], calls)
    pool = pool_cls(**options, min_size=0, max_size=2, timeout=TIMEOUT)
    try:
        with pytest.raises(ConnectError, match=rejects) as info, pool.connection():
            pass
        assert info.value.__cause__ is not None
        assert pool.stats().connect_errors == 1  # no retry
        if "connect" in options:
            assert len(calls) == 1
        # The next caller hears the same at once.
        with pytest.raises(ConnectError, match=rejects):
            pool.acquire()
    finally:
        pool.close()


ASYNC_CASES: list[tuple[str, str, Callable[[pytest.FixtureRequest, Any], dict[str, Any]]]] = [
    ("asyncmy url sql_mode", "sql_mode",
     lambda r, tmp: {"driver": from_url_async(
         r.getfixturevalue("mysql_url").replace("mysql://", "mysql+asyncmy://"),
         sql_mode="BOGUS")}),
    ("asyncmy url charset", "charset|encoding",
     lambda r, tmp: {"driver": from_url_async(
         r.getfixturevalue("mysql_url").replace("mysql://", "mysql+asyncmy://"),
         charset="bogus")}),
    ("asyncmy connect= init_command", "syntax",
     lambda r, tmp: {"connect": functools.partial(
         need_driver("asyncmy", "asyncmy").connect, **_my(r), init_command="SELEC 1")}),
    ("aiomysql url sql_mode", "sql_mode",
     lambda r, tmp: {"driver": from_url_async(
         r.getfixturevalue("mysql_url").replace("mysql://", "mysql+aiomysql://"),
         sql_mode="BOGUS")}),
    # (not charset="bogus": aiomysql's half-made connection then fails in __del__)
    ("aiomysql connect= unknown keyword", "bogus_option",
     lambda r, tmp: {"connect": functools.partial(
         need_driver("aiomysql", "aiomysql").connect,
         **{("db" if k == "database" else k): v for k, v in _my(r).items()},
         bogus_option=1)}),
    ("psycopg async url sslmode", "sslmode",
     lambda r, tmp: {"driver": from_url_async(_pg(r), sslmode="bogus")}),
    ("psycopg async connect= invalid connection option", "invalid connection option",
     lambda r, tmp: {"connect": functools.partial(
         need_driver("psycopg", "postgres").AsyncConnection.connect, _pg(r), bogus="x")}),
    ("asyncpg url sslmode", "sslmode",
     lambda r, tmp: {"driver": from_url_async(
         _pg(r).replace("postgresql://", "postgresql+asyncpg://") + "?sslmode=bogus")}),
    ("asyncpg url server setting", "nosuch",
     lambda r, tmp: {"driver": from_url_async(
         _pg(r).replace("postgresql://", "postgresql+asyncpg://"),
         server_settings={"nosuch": "1"})}),
    ("asyncpg connect= server setting", "nosuch",
     lambda r, tmp: {"connect": functools.partial(
         need_driver("asyncpg", "asyncpg").connect, _pg(r), server_settings={"nosuch": "1"})}),
    ("aiosqlite connect= uri mode", "access mode",
     lambda r, tmp: {"connect": functools.partial(
         need_driver("aiosqlite", "aiosqlite").connect, f"file:{tmp}/x.db?mode=bogus",
         uri=True)}),
]


@pytest.mark.parametrize(("case", "rejects", "make"), ASYNC_CASES,
                         ids=[c[0] for c in ASYNC_CASES])
def test_a_rejected_connect_option_fails_at_once_on_asyncio(request, tmp_path, case, rejects,
                                                            make):
    calls: list[int] = []

    async def main() -> None:
        options = make(request, tmp_path)
        if "connect" in options:
            options["connect"] = _acounted(options["connect"], calls)
        pool = fastpool.AsyncPool(**options, min_size=0, max_size=2, timeout=TIMEOUT)
        try:
            with pytest.raises(ConnectError, match=rejects) as info:
                async with pool.connection():
                    pass
            assert info.value.__cause__ is not None
            assert pool.stats().connect_errors == 1  # no retry
            if "connect" in options:
                assert len(calls) == 1
        finally:
            await pool.close()
        # aiosqlite's thread answers its own stop() after a failed connect
        # through this loop: let it, before asyncio.run closes the loop.
        for _ in range(1000):
            if not any("_connection_worker_thread" in t.name for t in threading.enumerate()):
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
