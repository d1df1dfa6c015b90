"""Client adapters: what fastpool knows about one client library, in one place.

A *client* is the library whose connection objects the pool lends (psycopg 3,
mysqlclient, sqlite3, any other DB-API module; for asyncio: psycopg 3's
``AsyncConnection``, asyncpg, asyncmy, aiomysql, aiosqlite). Its adapter owns
everything that depends on it:

* the local transaction status the compiled core reads on the hot path
  (``status_attr``, ``idle_status``, ``status_source``) and ``in_transaction``;
* explicit transactions: ``begin`` / ``commit`` / ``rollback``, with one rule
  per client for autocommit connections;
* liveness and reset (``probe``, ``reset``, ``is_lost``, ``session_id``);
* error classification (``classify``, see ``ErrorKind``);
* the dialect details features need: ``kind`` (which per-server code path of
  the query helpers, batcher, bulk loader and explain applies) and the SQL
  ``dialect`` name for parsing.

``ClientBase`` holds what is known locally, with no I/O; ``Client`` adds the
blocking I/O and ``AsyncClient`` the same methods (same names) as coroutines,
so a flow written once (``fastpool.steps``) yields ``("commit", conn)`` and
either runner performs it. Each client library's local rules live once, in a
mixin both its sync and async adapters share (e.g. ``PsycopgLocal``).

Features never look at a connection's module or type: they ask the pool's
adapter (``source.adapter``). URL drivers build their client's adapter when
they are made; for ``Pool(connect=...)``, ``client_for(conn)``, the only
place that looks at a connection's module or type, detects it on every new
connection. A client without what a
feature needs gets ``UnsupportedClient`` from ``adapter.require(...)``: the
same error, naming the client and what it lacks, whichever feature asked.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, TypeVar

from fastpool.errors import ConfigError, ErrorKind, UnsupportedClient

__all__ = ["AsyncClient", "Client", "ClientBase", "DBAPIClient", "classify_any", "client_for"]

#: Every capability a feature may ``require``.
CAPABILITIES = ("transactions", "query helpers", "group commit", "bulk loads", "explain")

C = TypeVar("C", bound="ClientBase")

_SUPPORTED = {False: "psycopg 3, mysqlclient and sqlite3 connections",
              True: "psycopg 3 AsyncConnection, asyncpg, asyncmy, aiomysql and aiosqlite "
                    "connections"}


class ClientBase:
    """What fastpool knows about one client library without any I/O (see the
    module documentation); ``Client`` and ``AsyncClient`` add the I/O."""

    #: True for the adapters of asyncio clients (their I/O methods are coroutines).
    is_async: ClassVar[bool] = False
    #: Which per-server code path features take: "postgresql", "mysql",
    #: "sqlite", or "dbapi" for a generic DB-API client.
    kind: ClassVar[str] = "dbapi"
    #: The SQL dialect name fastpool parses statements with (sqlglot's), or None.
    dialect: ClassVar[str | None] = None
    #: The client's parameter placeholders (PEP 249 names: "pyformat" %s,
    #: "qmark" ?, "numeric_dollar" $1 for asyncpg), or None when unknown.
    paramstyle: ClassVar[str | None] = None
    #: What this client supports, out of CAPABILITIES.
    capabilities: ClassVar[frozenset[str]] = frozenset()

    #: Attribute of ``status_source(conn)`` holding the transaction status, or
    #: None when the client has none (every return then takes the reset path).
    status_attr: str | None = None
    #: Its value when no transaction is open.
    idle_status: Any = None

    def __init__(self, name: str) -> None:
        #: The client library's name, for messages ("psycopg", "mysqlclient"...).
        self.name = name

    # ---- what features may ask for --------------------------------------------

    def require(self, capability: str, feature: str | None = None) -> None:
        """Raise UnsupportedClient unless this client has ``capability``."""
        if capability not in self.capabilities:
            raise UnsupportedClient(
                f"{feature or capability}: fastpool has no support for {capability} on "
                f"{self.name} connections (supported: {_SUPPORTED[self.is_async]}; "
                f"{self.name} offers: "
                f"{', '.join(sorted(self.capabilities)) or 'nothing fastpool can use'})")

    # ---- local state, read without a round trip ---------------------------------

    def status_source(self, conn: Any) -> Any:
        """The object whose ``status_attr`` the core reads for ``conn`` (read
        once per connection, when the pool adds it)."""
        return conn

    def in_transaction(self, conn: Any) -> bool | None:
        """Whether ``conn`` has a transaction open, from local state; None when
        the client cannot tell (or the connection is closed)."""
        attr = self.status_attr
        if attr is None:
            return None
        try:
            return bool(getattr(self.status_source(conn), attr) != self.idle_status)
        except Exception:  # a closed connection
            return None

    def is_lost(self, conn: Any) -> bool:
        """True when the client knows locally that ``conn`` is broken."""
        return False

    def session_id(self, conn: Any) -> int | None:
        """The server's id for ``conn``'s session, read locally (None: no server)."""
        return None

    def classify(self, exc: BaseException) -> ErrorKind:
        """What ``exc`` (raised by this client) means; see ErrorKind."""
        return classify_any(exc)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class Client(ClientBase):
    """The adapter of one blocking client library: ``ClientBase`` plus its I/O."""

    # ---- transactions -----------------------------------------------------------

    def begin(self, conn: Any, *, write: bool = False) -> None:
        """Open a transaction explicitly where the connection would otherwise
        run each statement on its own. ``write``: the transaction is known
        to write (SQLite then takes its write lock up front)."""

    def commit(self, conn: Any) -> None:
        conn.commit()

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    # ---- health --------------------------------------------------------------------

    def probe(self, conn: Any, timeout: float | None = None) -> None:
        """Raise if ``conn`` is not usable, within ``timeout`` seconds where possible."""
        cur = conn.cursor()
        try:
            cur.execute("SELECT 1")
            cur.fetchall()
        finally:
            cur.close()

    def reset(self, conn: Any) -> bool:
        """Roll back whatever the borrower left open (by this client's own
        rule, ``rollback``); False if ``conn`` is unusable."""
        try:
            self.rollback(conn)
        except Exception:
            return False
        return True

    def close(self, conn: Any) -> None:
        """Close ``conn``."""
        conn.close()


class AsyncClient(ClientBase):
    """The adapter of one asyncio client library: ``ClientBase`` plus its I/O,
    the same methods as ``Client``'s, as coroutines."""

    is_async = True

    async def begin(self, conn: Any, *, write: bool = False) -> None:
        """Open a transaction explicitly (see ``Client.begin``)."""

    async def commit(self, conn: Any) -> None:
        await conn.commit()

    async def rollback(self, conn: Any) -> None:
        await conn.rollback()

    async def probe(self, conn: Any, timeout: float | None = None) -> None:
        """Raise if ``conn`` is not usable, within ``timeout`` seconds where possible."""
        raise NotImplementedError

    async def reset(self, conn: Any) -> bool:
        """Roll back whatever the borrower left open; False if ``conn`` is unusable."""
        try:
            await self.rollback(conn)
        except Exception:
            return False
        return True

    async def close(self, conn: Any) -> None:
        """Close ``conn`` (gracefully where the client can)."""
        await conn.close()

    def abandon(self, conn: Any) -> None:
        """Close ``conn`` now, without awaiting anything: its event loop is
        shutting down (best effort; errors are the caller's to swallow)."""
        raise NotImplementedError(f"{self.name}: no way to close a connection without its loop")

    async def fetch_dicts(self, conn: Any, sql: str, params: Any) -> list[dict[str, Any]]:
        """Run one query (in this client's ``paramstyle``) and return its rows as dicts."""
        raise NotImplementedError


class DBAPIClient(Client):
    """Any other DB-API 2.0 client: transactions are implicit (``commit`` /
    ``rollback``), statements run through cursors; no local transaction status,
    so every return rolls back. The query helpers, ``pool.transaction`` and
    the batcher (one ``execute`` per write) work; bulk loads and explain need
    a known client."""

    capabilities = frozenset({"transactions", "query helpers", "group commit"})


def classify_any(exc: BaseException) -> ErrorKind:
    """Classify an exception by the client library that raised it."""
    package = type(exc).__module__.split(".")[0]
    if package == "psycopg":
        from fastpool.drivers.postgres import classify_error

        return classify_error(exc)
    if package == "asyncpg":
        from fastpool.drivers.pgasync import classify_asyncpg_error

        return classify_asyncpg_error(exc)
    if package in ("MySQLdb", "asyncmy", "aiomysql", "pymysql"):
        from fastpool.drivers.mysql import classify_error as classify_mysql

        return classify_mysql(exc)
    if package == "sqlite3":
        from fastpool.drivers.sqlite import classify_sqlite_error

        return classify_sqlite_error(exc)
    return ErrorKind.OTHER


_by_type: dict[type, ClientBase] = {}
_lock = threading.Lock()


def client_for(conn: Any) -> ClientBase:
    """The adapter for ``conn``'s client library (one per connection type): a
    ``Client`` for blocking connections, an ``AsyncClient`` for asyncio ones.

    UnsupportedClient when ``conn`` is not a connection fastpool can use.
    """
    cls = type(conn)
    found = _by_type.get(cls)
    if found is not None:
        return found
    found = _detect(conn)
    with _lock:
        return _by_type.setdefault(cls, found)


def _loaded_class(module: str, attr: str) -> Any:
    """``module.attr`` if the client library is imported already (a connection
    of it can only exist then), else None; subclasses (asyncpg's
    ``connection_class``) are recognised by ``isinstance``."""
    import sys

    mod = sys.modules.get(module)
    return getattr(mod, attr, None) if mod is not None else None


def _detect(conn: Any) -> ClientBase:
    import sqlite3

    cls = type(conn)
    if isinstance(conn, sqlite3.Connection):
        from fastpool.drivers.sqlite import SQLiteClient

        return SQLiteClient()
    known: list[tuple[str, str, Any]] = [
        ("psycopg", "AsyncConnection", "async psycopg"),
        ("psycopg", "Connection", "psycopg"),
        ("asyncpg.connection", "Connection", "asyncpg"),
        ("MySQLdb.connections", "Connection", "mysqlclient"),
        ("asyncmy.connection", "Connection", "asyncmy"),
        ("aiomysql.connection", "Connection", "aiomysql"),
        ("aiosqlite.core", "Connection", "aiosqlite"),
    ]
    for module, attr, which in known:
        klass = _loaded_class(module, attr)
        if klass is not None and isinstance(conn, klass):
            return _adapter(which)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if callable(getattr(conn, "__await__", None)) or hasattr(conn, "cr_frame"):
        raise UnsupportedClient(
            f"connect returned an awaitable ({name}), not a connection: an async factory "
            "belongs to fastpool.AsyncPool(connect=...), whose connections are awaited")
    missing = [m for m in ("cursor", "commit", "rollback", "close")
               if not callable(getattr(conn, m, None))]
    if missing:
        raise UnsupportedClient(
            f"{name} objects are not DB-API connections (no {', '.join(missing)}()): "
            "the connect callable must return a connection of psycopg 3, mysqlclient, "
            "sqlite3 or another DB-API 2.0 client (asyncio: psycopg 3 AsyncConnection, "
            "asyncpg, asyncmy, aiomysql or aiosqlite, with fastpool.AsyncPool)")
    return DBAPIClient(name)


def _adapter(which: str) -> ClientBase:
    if which == "psycopg":
        from fastpool.drivers.postgres import PsycopgClient

        return PsycopgClient()
    if which == "async psycopg":
        from fastpool.drivers.postgres import AsyncPsycopgClient

        return AsyncPsycopgClient()
    if which == "asyncpg":
        from fastpool.drivers.pgasync import AsyncpgClient

        return AsyncpgClient()
    if which == "mysqlclient":
        from fastpool.drivers.mysql import MySQLdbClient

        return MySQLdbClient()
    if which in ("asyncmy", "aiomysql"):
        from fastpool.drivers.mysql import AsyncMySQLClient

        return AsyncMySQLClient(which)
    from fastpool.drivers.sqlite import AiosqliteClient

    return AiosqliteClient()


def check_same_client(expected: C | None, conn: Any, flavour: type[C]) -> C:
    """``conn``'s adapter, which must be a ``flavour`` (``Client`` for a sync
    pool, ``AsyncClient`` for an asyncio pool) and ``expected`` if one is
    known already: a pool's connections all come from one client library."""
    client = client_for(conn)
    if not isinstance(client, flavour):
        if client.is_async:
            raise UnsupportedClient(
                f"connect returned a connection of {client.name}, an asyncio client: use "
                "fastpool.AsyncPool(connect=...) or fastpool.create_async_pool for it")
        raise UnsupportedClient(
            f"connect returned a connection of {client.name}, a blocking client: an asyncio "
            "pool needs an asyncio client's connection (psycopg 3 AsyncConnection, asyncpg, "
            "asyncmy, aiomysql or aiosqlite); use fastpool.Pool for this one")
    if expected is not None and client is not expected and (
            type(client) is not type(expected) or client.name != expected.name):
        raise ConfigError(f"connect returned a {client.name} connection, but this pool's "
                          f"connections are {expected.name} connections")
    return client
