"""The driver interface: what the pool needs to know about a database client.

A driver opens connections and answers the few questions the pool's policy
asks: is this connection idle (from the client's own local state, without a
round trip), is it alive, how to reset it, and whether a connect error is worth
retrying. The compiled core reads the transaction status itself on the hot
path: ``getattr(status_source(conn), status_attr) == idle_status``.
"""

from __future__ import annotations

import abc
import contextlib
import re
import select
from collections.abc import Callable
from typing import Any, ClassVar

from fastpool.drivers.client import Client, check_same_client, classify_any
from fastpool.errors import ConfigError, ErrorKind, UnsupportedClient

#: Connect errors that retrying cannot fix (UNREACHABLE only until the pool
#: has connected once: afterwards it is a server restarting).
FATAL_KINDS = frozenset({ErrorKind.AUTH, ErrorKind.CONFIG, ErrorKind.UNREACHABLE})


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


def option_int(driver: str, name: str, value: object) -> int:
    """An integer driver option, from an int or a decimal string (not a bool)."""
    if not isinstance(value, bool):
        try:
            return int(value)  # type: ignore[call-overload, no-any-return]
        except (TypeError, ValueError):
            pass
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


def mask(text: str, secrets: list[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in sorted(filter(None, set(secrets)), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class Driver(abc.ABC):
    """Base class of the database drivers: where and how to connect.

    What depends on the client library (local transaction status, probes,
    resets, error classification, transactions, dialect) is the driver's
    ``client`` adapter's (``fastpool.drivers.client``); the methods below
    delegate to it, and a driver overrides them only where its own options
    change the answer (e.g. ``probe="local"``).
    """

    #: Short name used in messages and stats (``"sqlite"``, ``"postgresql"``).
    name: ClassVar[str] = "generic"

    #: The adapter of the client library this driver's connections come from;
    #: None only until a custom factory's first connection reveals it.
    client: Client | None = None

    @abc.abstractmethod
    def connect(self) -> Any:
        """Open and return a new native connection (may raise)."""

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

    # ---- health, by the client adapter ---------------------------------------------

    def _client(self) -> Client:
        if self.client is None:
            raise RuntimeError(f"{self.name}: no connection has been opened yet")
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

    def is_fatal(self, exc: BaseException) -> bool:
        """True when a connect error cannot be fixed by retrying (bad path,
        password, a factory returning what fastpool cannot use...)."""
        if isinstance(exc, (ConfigError, UnsupportedClient)):
            return True
        return self.classify(exc) in FATAL_KINDS

    def classify(self, exc: BaseException) -> ErrorKind:
        """What ``exc`` (raised by this driver's connections) means; see ErrorKind."""
        if self.client is not None:
            return self.client.classify(exc)
        return classify_any(exc)

    def is_lost(self, conn: Any) -> bool:
        """True when the client knows locally that ``conn`` is broken (no round trip)."""
        return self._client().is_lost(conn)

    def session_id(self, conn: Any) -> int | None:
        """The server's id for ``conn``'s session, read locally (None: no server)."""
        return self._client().session_id(conn)

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

    def describe(self) -> str:
        """Where this driver connects, safe for logs (no password)."""
        return self.name

    def redact(self, text: str) -> str:
        """``text`` (an error message) with this driver's secrets masked."""
        return text

    def close_pool(self) -> None:  # noqa: B027  (optional hook, no-op by default)
        """Release driver-level resources when the pool closes."""


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
            self.client = check_same_client(self.client, conn)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        return conn

    def describe(self) -> str:
        return f"custom connect={getattr(self._connect, '__qualname__', repr(self._connect))}"
