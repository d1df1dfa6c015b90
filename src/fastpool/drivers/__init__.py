"""Database drivers, chosen by URL scheme (``scheme+client://`` picks the client)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from fastpool.drivers.base import (
    AsyncCallableDriver,
    AsyncDriver,
    CallableDriver,
    Driver,
    DriverBase,
    redact_url,
)
from fastpool.drivers.mysql import DEFAULT_ASYNC_CLIENT, AsyncMySQLDriver, MySQLDriver
from fastpool.drivers.postgres import AsyncPostgresDriver, PostgresDriver
from fastpool.drivers.sqlite import AiosqliteDriver, SQLiteDriver
from fastpool.errors import ConfigError

__all__ = ["AiosqliteDriver", "AsyncCallableDriver", "AsyncDriver", "AsyncMySQLDriver",
           "AsyncPostgresDriver", "AsyncpgDriver", "CallableDriver", "Driver", "DriverBase",
           "MySQLDriver", "PostgresDriver", "SQLiteDriver", "from_url", "from_url_async"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
#: URL scheme -> the server it names (its base scheme).
_SERVERS = {"sqlite": "sqlite", "sqlite3": "sqlite", "postgresql": "postgresql",
            "postgres": "postgresql", "mysql": "mysql", "mariadb": "mysql"}
#: Blocking clients by name: the only one per server.
_SYNC_CLIENTS = {"postgresql": ("psycopg", {"psycopg"}), "mysql": ("mysqlclient", {"mysqldb",
                 "mysqlclient"}), "sqlite": ("sqlite3", {"sqlite3", "pysqlite"})}
_SCHEMES: dict[str, type[Any]] = {
    "sqlite": SQLiteDriver,
    "postgresql": PostgresDriver,
    "mysql": MySQLDriver,
}
#: asyncio clients by name: (server, extra to install).
_ASYNC_CLIENTS = {"psycopg": ("postgresql", "postgres"), "asyncpg": ("postgresql", "asyncpg"),
                  "asyncmy": ("mysql", "asyncmy"), "aiomysql": ("mysql", "aiomysql"),
                  "aiosqlite": ("sqlite", "aiosqlite")}
#: The asyncio client a bare scheme means.
_ASYNC_DEFAULTS = {"postgresql": "psycopg", "mysql": DEFAULT_ASYNC_CLIENT, "sqlite": "aiosqlite"}


def _parse(url: str) -> tuple[str, str | None, str, str, dict[str, str]]:
    """(server, client named in the scheme or None, url with the bare base
    scheme, the rest after ``scheme:``, query dict)."""
    if not isinstance(url, str):
        raise ConfigError(f"url must be a string, got {type(url).__name__}")
    scheme, sep, rest = url.partition(":")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ConfigError(f"not a database URL (no scheme): {redact_url(url)!r}; "
                          f"expected e.g. sqlite:///app.db")
    base, plus, client = scheme.lower().partition("+")
    server = _SERVERS.get(base)
    if server is None or (plus and not client):
        known = ", ".join(sorted(_SERVERS))
        raise ConfigError(f"unknown URL scheme {scheme.lower()!r} in {redact_url(url)!r}; "
                          f"known: {known} (with +psycopg, +asyncpg, +asyncmy, +aiomysql, "
                          "+aiosqlite for asyncio)")
    if server != "sqlite" and not rest.startswith("//"):
        raise ConfigError(f"malformed URL {redact_url(url)!r}: expected {base}://...")
    rest_path, _, query_string = rest.partition("?")
    try:
        query = dict(parse_qsl(query_string, keep_blank_values=True, strict_parsing=False))
    except ValueError as exc:
        raise ConfigError(f"bad query string in {redact_url(url)!r}: {exc}") from None
    return server, client or None, f"{base}:{rest}", rest_path, query


def from_url(url: str, **options: Any) -> Driver:
    """The driver for ``url``: ``sqlite:///path``, ``sqlite:///:memory:``,
    ``postgresql://...`` (libpq URL; also ``postgresql+psycopg://``),
    ``mysql://...`` or ``mariadb://...``.

    ``options`` are the driver's own keyword options (libpq parameters,
    ``autocommit``, ``charset``...); they win over the URL's query string.
    An asyncio client's scheme (``+asyncpg``, ``+aiosqlite``...) is refused:
    those URLs are ``fastpool.create_async_pool``'s.
    """
    server, client, plain, rest, query = _parse(url)
    if client is not None:
        sync_name, sync_aliases = _SYNC_CLIENTS[server]
        if client in _ASYNC_CLIENTS and client not in sync_aliases:
            raise ConfigError(f"{redact_url(url)!r} names {client}, an asyncio client: use "
                              "fastpool.create_async_pool (or fastpool.AsyncPool) for it")
        if client not in sync_aliases:
            raise ConfigError(f"unknown client {client!r} in {redact_url(url)!r}: "
                              f"{server} URLs of fastpool.Pool use {sync_name}")
    driver: Driver = _SCHEMES[server].from_url(plain, rest, query, options)
    return driver


def from_url_async(url: str, *, driver: str | None = None, **options: Any) -> AsyncDriver:
    """The asyncio driver for ``url``: ``postgresql://`` / ``postgres://`` /
    ``postgresql+psycopg://`` (psycopg 3 ``AsyncConnection``),
    ``postgresql+asyncpg://``, ``mysql://`` / ``mariadb://`` (asyncmy),
    ``mysql+asyncmy://``, ``mysql+aiomysql://`` (and ``mariadb+...``),
    ``sqlite://`` / ``sqlite+aiosqlite://``.

    ``driver=`` names the client instead of the scheme (it must agree with a
    client the scheme names). ``options`` are the driver's keyword options.
    A client that is not installed raises ConfigError naming the extra.
    """
    server, client, plain, rest, query = _parse(url)
    if driver is not None:
        if driver not in _ASYNC_CLIENTS:
            raise ConfigError(f"driver must be one of {', '.join(sorted(_ASYNC_CLIENTS))}, "
                              f"got {driver!r}")
        if client is not None and client != driver:
            raise ConfigError(f"driver={driver!r} conflicts with {redact_url(url)!r}, whose "
                              f"scheme names {client}: name the client once")
        client = driver
    if client is None:
        client = _ASYNC_DEFAULTS[server]
    if client not in _ASYNC_CLIENTS:
        raise ConfigError(f"unknown asyncio client {client!r} in {redact_url(url)!r}; known: "
                          f"{', '.join(sorted(_ASYNC_CLIENTS))}")
    if _ASYNC_CLIENTS[client][0] != server:
        raise ConfigError(f"{client} is a {_ASYNC_CLIENTS[client][0]} client, but "
                          f"{redact_url(url)!r} is a {server} URL")
    _require(client, plain)
    if client == "psycopg":
        return AsyncPostgresDriver.from_url(plain, rest, query, options)  # type: ignore[no-any-return]
    if client == "asyncpg":
        from fastpool.drivers.pgasync import AsyncpgDriver

        return AsyncpgDriver.from_url(plain, rest, query, options)
    if server == "mysql":
        return AsyncMySQLDriver.from_url(plain, rest, query,  # type: ignore[no-any-return]
                                         {**options, "library": client})
    return AiosqliteDriver.from_url(plain, rest, query, options)  # type: ignore[no-any-return]


def _require(client: str, url: str) -> None:
    """ConfigError naming the extra when ``client``'s package is not installed."""
    import importlib

    try:
        importlib.import_module(client)
    except ImportError as exc:
        scheme = url.partition(":")[0]
        extra = _ASYNC_CLIENTS[client][1]
        raise ConfigError(f"{scheme}+{client}:// needs {client}: pip install "
                          f"'fastpool[{extra}]'; import failed: {exc}") from None


def __getattr__(name: str) -> Any:
    if name == "AsyncpgDriver":  # imported lazily: fastpool.drivers.pgasync
        from fastpool.drivers.pgasync import AsyncpgDriver

        return AsyncpgDriver
    raise AttributeError(name)
