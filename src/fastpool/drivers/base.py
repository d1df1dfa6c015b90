"""The driver interface: what the pool needs to know about a database client.

A driver opens connections and answers the few questions the pool's policy
asks: is this connection idle (from the client's own local state, without a
round trip), is it alive, how to reset it, and whether a connect error is worth
retrying. The compiled core reads the transaction status itself on the hot
path: ``getattr(status_source(conn), status_attr) == idle_status``.
"""

from __future__ import annotations

import abc
import re
import select
from collections.abc import Callable
from typing import Any, ClassVar

from fastpool.errors import ConfigError, ErrorKind

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
    """Base class of the database drivers."""

    #: Short name used in messages and stats (``"sqlite"``, ``"postgresql"``).
    name: ClassVar[str] = "generic"

    #: Attribute of ``status_source(conn)`` holding the transaction status, or
    #: None when the client has none (every return then takes the reset path).
    status_attr: str | None = None

    #: The value of that attribute when no transaction is open.
    idle_status: Any = None

    @abc.abstractmethod
    def connect(self) -> Any:
        """Open and return a new native connection (may raise)."""

    def status_source(self, conn: Any) -> Any:
        """The object whose ``status_attr`` the core reads for ``conn``."""
        return conn

    def probe(self, conn: Any, timeout: float | None = None) -> None:
        """Raise if ``conn`` is not usable, within ``timeout`` seconds where the
        client allows it. Called only after the bypass window."""
        cur = conn.cursor()
        try:
            cur.execute("SELECT 1")
            cur.fetchall()
        finally:
            cur.close()

    def reset(self, conn: Any) -> bool:
        """Roll back whatever the borrower left open; False if ``conn`` is unusable."""
        try:
            conn.rollback()
        except Exception:
            return False
        return True

    def commit(self, conn: Any) -> None:
        conn.commit()

    def close(self, conn: Any) -> None:
        """Close ``conn``; errors are the pool's to swallow."""
        conn.close()

    def is_fatal(self, exc: BaseException) -> bool:
        """True when a connect error cannot be fixed by retrying (bad path, password...)."""
        return self.classify(exc) in FATAL_KINDS

    def classify(self, exc: BaseException) -> ErrorKind:
        """What ``exc`` (raised by this driver's connections) means; see ErrorKind."""
        return ErrorKind.OTHER

    def is_lost(self, conn: Any) -> bool:
        """True when the client knows locally that ``conn`` is broken (no round trip)."""
        return False

    def session_id(self, conn: Any) -> int | None:
        """The server's id for ``conn``'s session, read locally (None: no server)."""
        return None

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

    What the pool can know is taken from the first connection's type: SQLite
    connections expose ``in_transaction``, psycopg 3 connections libpq's
    ``pgconn.transaction_status``, mysqlclient connections MariaDB's server
    status flags; they get the same probes, resets and error classification
    as the URL drivers. For other clients every return rolls back (use a
    specific driver to avoid that round trip).
    """

    name = "custom"

    def __init__(self, connect: Callable[[], Any]) -> None:
        if not callable(connect):
            raise ConfigError(f"connect must be callable, got {connect!r}")
        self._connect = connect
        self._detected = False
        self._kind = ""
        self._mysql_status: Any = None

    def connect(self) -> Any:
        conn = self._connect()
        if not self._detected:
            self._detected = True
            self._detect(conn)
        return conn

    def _detect(self, conn: Any) -> None:
        import sqlite3

        package = type(conn).__module__.split(".")[0]
        if isinstance(conn, sqlite3.Connection):
            self._kind = "sqlite"
            self.status_attr = "in_transaction"
            self.idle_status = False
        elif package == "psycopg" and hasattr(conn, "pgconn"):
            # libpq's own status, read locally: 0 is PQTRANS_IDLE. The
            # `info.transaction_status` property costs ~60x more per read.
            self._kind = "psycopg"
            self.status_attr = "transaction_status"
            self.idle_status = 0
        elif package == "MySQLdb":
            from fastpool.drivers.mysql import status_reader

            self._kind = "mysql"
            self._mysql_status = status_reader()
            if self._mysql_status is not None:
                self.status_attr = "trans"
                self.idle_status = 0

    def status_source(self, conn: Any) -> Any:
        if self._kind == "psycopg":
            return conn.pgconn
        if self._mysql_status is not None:
            return self._mysql_status.ServerStatus(conn)
        return conn

    def probe(self, conn: Any, timeout: float | None = None) -> None:
        if self._kind == "psycopg":
            from fastpool.drivers.postgres import probe_connection

            probe_connection(conn, timeout=timeout)
        elif self._kind == "mysql":
            from fastpool.drivers.mysql import probe_connection as probe_mysql

            probe_mysql(conn, self._mysql_status)
        else:
            super().probe(conn)

    def reset(self, conn: Any) -> bool:
        if self._kind == "psycopg":
            from fastpool.drivers.postgres import reset_connection

            return reset_connection(conn)
        if self._kind == "mysql":
            from fastpool.drivers.mysql import reset_connection as reset_mysql

            return reset_mysql(conn, self._mysql_status)
        return super().reset(conn)

    def is_lost(self, conn: Any) -> bool:
        if self._kind == "psycopg":
            return bool(conn.pgconn.status != 0)  # libpq's CONNECTION_BAD
        if self._kind == "mysql":
            from fastpool.drivers.mysql import lost_connection

            return lost_connection(conn, self._mysql_status)
        return False

    def classify(self, exc: BaseException) -> ErrorKind:
        """By the exception's own package, whatever made the connection."""
        package = type(exc).__module__.split(".")[0]
        if package == "psycopg":
            from fastpool.drivers.postgres import classify_error

            return classify_error(exc)
        if package == "MySQLdb":
            from fastpool.drivers.mysql import classify_error as classify_mysql

            return classify_mysql(exc)
        from fastpool.drivers.sqlite import classify_sqlite_error

        return classify_sqlite_error(exc)

    def describe(self) -> str:
        return f"custom connect={getattr(self._connect, '__qualname__', repr(self._connect))}"
