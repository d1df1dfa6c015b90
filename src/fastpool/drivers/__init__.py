"""Database drivers, chosen by URL scheme."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from fastpool.drivers.base import CallableDriver, Driver, redact_url
from fastpool.drivers.mysql import MySQLDriver
from fastpool.drivers.postgres import PostgresDriver
from fastpool.drivers.sqlite import SQLiteDriver
from fastpool.errors import ConfigError

__all__ = ["CallableDriver", "Driver", "MySQLDriver", "PostgresDriver", "SQLiteDriver",
           "from_url"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_SCHEMES: dict[str, type[Any]] = {
    "sqlite": SQLiteDriver,
    "sqlite3": SQLiteDriver,
    "postgresql": PostgresDriver,
    "postgres": PostgresDriver,
    "mysql": MySQLDriver,
    "mariadb": MySQLDriver,
}


def from_url(url: str, **options: Any) -> Driver:
    """The driver for ``url``: ``sqlite:///path``, ``sqlite:///:memory:``,
    ``postgresql://...`` (libpq URL), ``mysql://...`` or ``mariadb://...``.

    ``options`` are the driver's own keyword options (libpq parameters,
    ``autocommit``, ``charset``...); they win over the URL's query string.
    """
    if not isinstance(url, str):
        raise ConfigError(f"url must be a string, got {type(url).__name__}")
    scheme, sep, rest = url.partition(":")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ConfigError(f"not a database URL (no scheme): {redact_url(url)!r}; "
                          f"expected e.g. sqlite:///app.db")
    scheme = scheme.lower()
    driver_cls = _SCHEMES.get(scheme)
    if driver_cls is None:
        known = ", ".join(sorted(_SCHEMES))
        raise ConfigError(f"unknown URL scheme {scheme!r} in {redact_url(url)!r}; known: {known}")
    if scheme != "sqlite" and scheme != "sqlite3" and not rest.startswith("//"):
        raise ConfigError(f"malformed URL {redact_url(url)!r}: expected {scheme}://...")
    rest, _, query_string = rest.partition("?")
    try:
        query = dict(parse_qsl(query_string, keep_blank_values=True, strict_parsing=False))
    except ValueError as exc:
        raise ConfigError(f"bad query string in {redact_url(url)!r}: {exc}") from None
    driver: Driver = driver_cls.from_url(url, rest, query, options)
    return driver
