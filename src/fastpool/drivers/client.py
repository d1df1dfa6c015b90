"""Client adapters: what fastpool knows about one client library, in one place.

A *client* is the library whose connection objects the pool lends (psycopg 3,
mysqlclient, sqlite3, or any other DB-API module). Its adapter owns
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
from typing import Any, ClassVar

from fastpool.errors import ConfigError, ErrorKind, UnsupportedClient

__all__ = ["Client", "DBAPIClient", "classify_any", "client_for"]

#: Every capability a feature may ``require``.
CAPABILITIES = ("transactions", "query helpers", "group commit", "bulk loads", "explain")


class Client:
    """The adapter of one client library (see the module documentation)."""

    #: Which per-server code path features take: "postgresql", "mysql",
    #: "sqlite", or "dbapi" for a generic DB-API client.
    kind: ClassVar[str] = "dbapi"
    #: The SQL dialect name fastpool parses statements with (sqlglot's), or None.
    dialect: ClassVar[str | None] = None
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
                f"{self.name} connections (supported: psycopg 3, mysqlclient and sqlite3 "
                f"connections; {self.name} offers: "
                f"{', '.join(sorted(self.capabilities)) or 'nothing fastpool can use'})")

    # ---- local state, read without a round trip ---------------------------------

    def status_source(self, conn: Any) -> Any:
        """The object whose ``status_attr`` the core reads for ``conn``."""
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
    if package == "MySQLdb":
        from fastpool.drivers.mysql import classify_error as classify_mysql

        return classify_mysql(exc)
    if package == "sqlite3":
        from fastpool.drivers.sqlite import classify_sqlite_error

        return classify_sqlite_error(exc)
    return ErrorKind.OTHER


_by_type: dict[type, Client] = {}
_lock = threading.Lock()


def client_for(conn: Any) -> Client:
    """The adapter for ``conn``'s client library (one per connection type).

    UnsupportedClient when ``conn`` is not a DB-API connection at all.
    """
    cls = type(conn)
    found = _by_type.get(cls)
    if found is not None:
        return found
    found = _detect(conn)
    with _lock:
        return _by_type.setdefault(cls, found)


def _detect(conn: Any) -> Client:
    import sqlite3

    cls = type(conn)
    package = cls.__module__.split(".")[0]
    if isinstance(conn, sqlite3.Connection):
        from fastpool.drivers.sqlite import SQLiteClient

        return SQLiteClient()
    if package == "psycopg" and hasattr(conn, "pgconn"):
        from fastpool.drivers.postgres import PsycopgClient

        return PsycopgClient()
    if package == "MySQLdb":
        from fastpool.drivers.mysql import MySQLdbClient

        return MySQLdbClient()
    name = f"{cls.__module__}.{cls.__qualname__}"
    missing = [m for m in ("cursor", "commit", "rollback", "close")
               if not callable(getattr(conn, m, None))]
    if missing:
        raise UnsupportedClient(
            f"{name} objects are not DB-API connections (no {', '.join(missing)}()): "
            "the connect callable must return a connection of psycopg 3, mysqlclient, "
            "sqlite3 or another DB-API 2.0 client")
    return DBAPIClient(name)


def check_same_client(expected: Client | None, conn: Any) -> Client:
    """``conn``'s adapter, which must be ``expected`` if one is known already:
    a pool's connections all come from one client library."""
    client = client_for(conn)
    if expected is not None and client is not expected and (
            type(client) is not type(expected) or client.name != expected.name):
        raise ConfigError(f"connect returned a {client.name} connection, but this pool's "
                          f"connections are {expected.name} connections")
    return client
