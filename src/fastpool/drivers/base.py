"""The driver interface: what the pool needs to know about a database client.

A driver opens connections and answers the few questions the pool's policy
asks: is this connection idle (from the client's own local state, without a
round trip), is it alive, how to reset it, and whether a connect error is worth
retrying. The compiled core reads the transaction status itself on the hot
path: ``getattr(status_source(conn), status_attr) == idle_status``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import inspect
import re
import select
import socket
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from fastpool.drivers.client import (
    AsyncClient,
    Client,
    ClientBase,
    check_same_client,
    classify_any,
)
from fastpool.errors import ConfigError, ErrorKind, UnsupportedClient
from fastpool.options import MAX_INT, integer

#: Connect errors that retrying cannot fix (UNREACHABLE only until the pool
#: has connected once: afterwards it is a server restarting).
FATAL_KINDS = frozenset({ErrorKind.AUTH, ErrorKind.CONFIG, ErrorKind.UNREACHABLE})
#: What a client raises when it refuses its own connect arguments (an unknown
#: keyword, a value of the wrong type or too large for C, an unknown charset)
#: before any I/O.
_ARGUMENT_ERRORS = (TypeError, ValueError, AttributeError, LookupError, OverflowError)


_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` (or a ``key=value`` connection string) safe to show: whatever
    sits between the scheme and the last ``@`` (user and password, however
    malformed) becomes ``***``, and so does any ``password=`` value."""
    at = url.rfind("@")
    if at >= 0:
        sep = url.find("://")
        if 0 <= sep < at:  # scheme://user:password@host: keep scheme://user:
            colon = url.find(":", sep + 3, at)
            keep = url[:colon + 1] if colon >= 0 else url[:sep + 3]
        else:  # no "//": keep at most what looks like a scheme
            colon = url.find(":")
            keep = url[:colon + 1] if 0 <= colon < at else ""
        url = f"{keep}***{url[at:]}"
    return _KV_PASSWORD.sub(r"\1***", url)


_BOOLS = {"on": True, "1": True, "true": True, "yes": True,
          "off": False, "0": False, "false": False, "no": False}


def option_bool(driver: str, name: str, value: object) -> bool:
    """A boolean driver option: a bool, 0/1, or on/off, true/false, yes/no, 1/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _BOOLS:
        return _BOOLS[value.lower()]
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{driver}: {name} must be true or false (on/off), got {value!r}")


def option_int(driver: str, name: str, value: object, minimum: int = -MAX_INT - 1) -> int:
    """An integer driver option, from an int or a decimal string (not a bool),
    >= ``minimum`` and <= MAX_INT (a C int: what the clients hold)."""
    if not isinstance(value, bool):
        try:
            number = int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            pass
        else:
            return integer(name, number, minimum, owner=driver)
    raise ConfigError(f"{driver}: {name} must be an integer, got {value!r}")


def wait_readable(fd: int, timeout: float) -> bool:
    """Is socket ``fd`` readable (data, EOF or error) within ``timeout`` seconds?"""
    if timeout < 0:
        return False
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(timeout * 1000))
    readable, _, errored = select.select([fd], [], [fd], timeout)  # Windows
    return bool(readable or errored)


def classify_os_error(exc: BaseException) -> ErrorKind:
    """What an OS-level error an asyncio client let through means (asyncpg,
    asyncmy and aiomysql raise some unwrapped): refused or no such host is
    UNREACHABLE, a connect timeout too; a reset, a broken pipe or an
    incomplete read is a lost connection."""
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror, FileNotFoundError,
                        TimeoutError)):
        return ErrorKind.UNREACHABLE
    if isinstance(exc, (ConnectionError, asyncio.IncompleteReadError)):
        return ErrorKind.CONNECTION_LOST
    if isinstance(exc, OSError) and exc.errno is not None:
        return ErrorKind.UNREACHABLE if exc.errno in _UNREACHABLE_ERRNOS \
            else ErrorKind.CONNECTION_LOST
    return ErrorKind.OTHER


_UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                                 errno.ENOENT, errno.ETIMEDOUT, errno.EADDRNOTAVAIL})


def mask(text: str, secrets: list[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in sorted(filter(None, set(secrets)), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class DriverBase(abc.ABC):  # noqa: B024  (the I/O subclasses declare the abstracts)
    """What every driver knows without I/O: where it connects (``describe``,
    ``redact``), its client adapter, the status the core reads, and which
    errors are fatal. ``Driver`` (blocking) and ``AsyncDriver`` (asyncio) add
    the I/O: ``connect``, ``probe``, ``reset``, ``commit``, ``close``.

    What depends on the client library (local transaction status, probes,
    resets, error classification, transactions, dialect) is the driver's
    ``client`` adapter's (``fastpool.drivers.client``); the methods delegate
    to it, and a driver overrides them only where its own options change the
    answer (e.g. ``probe="local"``).
    """

    #: Short name used in messages and stats (``"sqlite"``, ``"postgresql"``).
    name: ClassVar[str] = "generic"
    #: True for the asyncio drivers (``AsyncDriver``).
    is_async: ClassVar[bool] = False

    #: The adapter of the client library this driver's connections come from;
    #: None only until a custom factory's first connection reveals it.
    client: ClientBase | None = None

    # ---- what the core reads on the hot path ------------------------------------

    @property
    def status_attr(self) -> str | None:
        """Attribute of ``status_source(conn)`` holding the transaction status,
        or None when the client has none (every return then takes the reset path)."""
        return self.client.status_attr if self.client is not None else None

    @property
    def idle_status(self) -> Any:
        """The value of that attribute when no transaction is open."""
        return self.client.idle_status if self.client is not None else None

    def status_source(self, conn: Any) -> Any:
        """The object whose ``status_attr`` the core reads for ``conn``."""
        return self.client.status_source(conn) if self.client is not None else conn

    # ---- local knowledge, by the client adapter ------------------------------------

    def _no_client(self) -> RuntimeError:
        return RuntimeError(f"{self.name}: no connection has been opened yet")

    def is_fatal(self, exc: BaseException) -> bool:
        """True when a connect error cannot be fixed by retrying (bad path,
        password, a factory returning what fastpool cannot use...)."""
        if isinstance(exc, (ConfigError, UnsupportedClient)):
            return True
        kind = self.classify(exc)
        if kind in FATAL_KINDS:
            return True
        if kind is ErrorKind.OTHER:
            return isinstance(exc, _ARGUMENT_ERRORS)
        # A DB-API ProgrammingError while connecting is the connect options'
        # own SQL (a bad init_command), however the client classifies it.
        return kind is ErrorKind.QUERY and any(
            k.__name__ == "ProgrammingError" for k in type(exc).__mro__)

    def classify(self, exc: BaseException) -> ErrorKind:
        """What ``exc`` (raised by this driver's connections) means; see ErrorKind."""
        if self.client is not None:
            return self.client.classify(exc)
        return classify_any(exc)

    def is_lost(self, conn: Any) -> bool:
        """True when the client knows locally that ``conn`` is broken (no round trip)."""
        if self.client is None:
            raise self._no_client()
        return self.client.is_lost(conn)

    def session_id(self, conn: Any) -> int | None:
        """The server's id for ``conn``'s session, read locally (None: no server)."""
        if self.client is None:
            raise self._no_client()
        return self.client.session_id(conn)

    def describe(self) -> str:
        """Where this driver connects, safe for logs (no password)."""
        return self.name

    def redact(self, text: str) -> str:
        """``text`` (an error message) with this driver's secrets masked."""
        return text



class Driver(DriverBase):
    """Base class of the blocking database drivers: where and how to connect."""

    client: Client | None = None

    @abc.abstractmethod
    def connect(self) -> Any:
        """Open and return a new native connection (may raise)."""

    def _client(self) -> Client:
        if self.client is None:
            raise self._no_client()
        return self.client

    def probe(self, conn: Any, timeout: float | None = None) -> None:
        """Raise if ``conn`` is not usable, within ``timeout`` seconds where the
        client allows it. Called only after the bypass window."""
        self._client().probe(conn, timeout)

    def reset(self, conn: Any) -> bool:
        """Roll back whatever the borrower left open; False if ``conn`` is unusable."""
        return self._client().reset(conn)

    def commit(self, conn: Any) -> None:
        self._client().commit(conn)

    def close(self, conn: Any) -> None:
        """Close ``conn``; errors are the pool's to swallow."""
        conn.close()

    def server_activity(self, session_ids: list[int]) -> list[dict[str, Any]]:
        """The server's view of these sessions (state, current query...), read
        over a connection of its own, so it works while the pool is exhausted."""
        raise NotImplementedError(f"{self.name}: the database has no server-side session view")

    def query_dicts(self, sql: str, params: Any) -> list[dict[str, Any]]:
        """Run one query on a fresh connection of this driver (outside any pool)
        and return its rows as dicts; for the monitoring views."""
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            conn.rollback()
            return rows
        finally:
            conn.close()

    def close_pool(self) -> None:
        """Release driver-level resources when the pool closes."""


class AsyncDriver(DriverBase):
    """Base class of the asyncio drivers: ``Driver``'s I/O methods as coroutines
    (same names), over an ``AsyncClient``."""

    is_async = True
    client: AsyncClient | None = None

    #: What a connection's return does (asyncpg's ``reset`` option; the others
    #: always roll back what is open): "rollback" (only when the local status
    #: says a transaction is open), "discard" (close every returned
    #: connection) or "none" (trust the borrower: no check, no rollback).
    reset_mode: str = "rollback"

    @abc.abstractmethod
    async def connect(self) -> Any:
        """Open and return a new native asyncio connection (may raise)."""

    def _client(self) -> AsyncClient:
        if self.client is None:
            raise self._no_client()
        return self.client

    async def probe(self, conn: Any, timeout: float | None = None) -> None:
        """Raise if ``conn`` is not usable, within ``timeout`` seconds."""
        await self._client().probe(conn, timeout)

    async def reset(self, conn: Any) -> bool:
        """Roll back whatever the borrower left open; False if ``conn`` is unusable."""
        return await self._client().reset(conn)

    async def commit(self, conn: Any) -> None:
        await self._client().commit(conn)

    async def rollback(self, conn: Any) -> None:
        await self._client().rollback(conn)

    async def close(self, conn: Any) -> None:
        """Close ``conn``; errors are the pool's to swallow."""
        if self.client is not None:
            await self.client.close(conn)
        else:
            await conn.close()

    async def server_activity(self, session_ids: list[int]) -> list[dict[str, Any]]:
        """The server's view of these sessions, over a connection of its own."""
        raise NotImplementedError(f"{self.name}: the database has no server-side session view")

    async def query_dicts(self, sql: str, params: Any) -> list[dict[str, Any]]:
        """Run one query (in the client's ``paramstyle``) on a fresh connection
        of this driver, outside any pool; for the monitoring views."""
        conn = await self.connect()
        try:
            client = self._client()
            rows = await client.fetch_dicts(conn, sql, params)
            await client.rollback(conn)
            return rows
        finally:
            await self.close(conn)

    async def close_pool(self) -> None:
        """Release driver-level resources when the pool closes."""


def _close_quietly(conn: Any) -> Any:
    """``conn.close()``, errors swallowed; its result (an awaitable for most
    asyncio clients, None otherwise)."""
    with contextlib.suppress(Exception):
        return conn.close()
    return None


class CallableDriver(Driver):
    """A driver around a user's connection factory: ``Pool(connect=fn)``.

    Each new connection's client library is detected (``client_for``): psycopg
    3, mysqlclient and sqlite3 connections get the same probes, resets, error
    classification and features as the URL drivers; another DB-API client gets
    the generic adapter (every return rolls back). All of a pool's connections
    must come from one client library.
    """

    name = "custom"

    def __init__(self, connect: Callable[[], Any]) -> None:
        if not callable(connect):
            raise ConfigError(f"connect must be callable, got {connect!r}")
        self._connect = connect

    def connect(self) -> Any:
        conn = self._connect()
        try:
            self.client = check_same_client(self.client, conn, Client)
        except BaseException:
            # A coroutine's close() stops its "never awaited" warning; an asyncio
            # client's close() may itself be a coroutine a thread cannot await.
            closing = _close_quietly(conn)
            if inspect.iscoroutine(closing):
                closing.close()
            raise
        return conn

    def describe(self) -> str:
        return f"custom connect={getattr(self._connect, '__qualname__', repr(self._connect))}"


class AsyncCallableDriver(AsyncDriver):
    """A driver around a user's async connection factory:
    ``AsyncPool(connect=async_fn)``. ``async_fn()`` must return an awaitable
    of a psycopg 3 ``AsyncConnection``, an asyncpg, asyncmy, aiomysql or
    aiosqlite connection; its client is detected per connection, as
    ``CallableDriver`` does, and all of a pool's connections must come from
    one client library.
    """

    name = "custom"

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        if not callable(connect):
            raise ConfigError(f"connect must be callable, got {connect!r}")
        self._connect = connect

    async def connect(self) -> Any:
        pending = self._connect()
        if not inspect.isawaitable(pending):
            _close_quietly(pending)
            raise ConfigError(
                f"connect={self.describe().removeprefix('custom connect=')} returned "
                f"{type(pending).__name__}, not an awaitable: an asyncio pool needs an async "
                "factory (async def connect(): return await asyncpg.connect(...)); for a "
                "blocking client use fastpool.Pool(connect=...)")
        conn = await pending
        try:
            self.client = check_same_client(self.client, conn, AsyncClient)
        except BaseException:
            closing = _close_quietly(conn)
            if inspect.isawaitable(closing):
                with contextlib.suppress(Exception):
                    await closing
            raise
        return conn

    def describe(self) -> str:
        return f"custom connect={getattr(self._connect, '__qualname__', repr(self._connect))}"
