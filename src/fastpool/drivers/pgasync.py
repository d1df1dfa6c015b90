"""PostgreSQL through asyncpg (``pip install 'fastpool[asyncpg]'``), for the asyncio pool.

::

    create_async_pool("postgresql+asyncpg://app:secret@db:5432/orders?sslmode=require")
    create_async_pool("postgresql://db/orders", driver="asyncpg", reset="discard")

The URL is asyncpg's (libpq's form: host lists, ``sslmode``,
``target_session_attrs``...). fastpool's options (URL query or keyword):
``reset``, ``connect_timeout`` (default 10 s), ``command_timeout``,
``statement_cache_size`` (asyncpg's statement cache, default 100),
``statement_timeout`` / ``idle_in_transaction_session_timeout`` /
``lock_timeout`` (seconds, sent as startup settings), ``application_name``
(default ``fastpool``), ``server_settings`` (a dict, keyword only) and
``pgbouncer`` (the profile behind PgBouncer, as for psycopg:
``fastpool.drivers.postgres.PGBOUNCER_MODES``; transaction mode turns
asyncpg's statement cache off).

**Reset on return.** asyncpg's own pool sends a reset query (``ROLLBACK;
UNLISTEN *; RESET ALL...``) on every release: a round trip per cycle. fastpool
decides from asyncpg's local transaction state instead (``reset_mode``):

* ``"rollback"`` (default): an idle connection goes straight back; one with
  a transaction open (or failed) is rolled back. Session state the borrower
  changed (``SET``, ``LISTEN``, temporary tables, advisory locks) stays: as
  with psycopg and the sync pool.
* ``"discard"``: every returned connection is closed and replaced, for users
  who need a pristine session each time (stronger than asyncpg's reset).
* ``"none"``: trust the borrower: no check and no rollback (a transaction
  left open leaks into the next borrower).

Transactions are plain ``BEGIN`` / ``COMMIT`` / ``ROLLBACK`` statements,
which asyncpg tracks in ``is_in_transaction()`` (its ``transaction()`` API
refuses to nest in them, and they in it: use one or the other per block).
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

from fastpool.drivers.base import (
    AsyncDriver,
    classify_os_error,
    mask,
    option_int,
    redact_url,
)
from fastpool.drivers.client import CAPABILITIES, AsyncClient
from fastpool.drivers.postgres import (
    _TIMEOUTS,
    _seconds_to_ms,
    _secrets_in,
    classify_connect_message,
    classify_sqlstate,
    no_prepared_statements,
    note_pgbouncer_limits,
    pgbouncer_mode,
    session_settings,
)
from fastpool.errors import ConfigError, ErrorKind, TransactionAborted

RESET_MODES = ("rollback", "discard", "none")
_OWN = frozenset({"reset", "connect_timeout", "command_timeout", "statement_cache_size",
                  "application_name", "server_settings", "probe", "pgbouncer", *_TIMEOUTS})


def _import_asyncpg() -> Any:
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigError("postgresql+asyncpg:// needs asyncpg: pip install "
                          f"'fastpool[asyncpg]'; import failed: {exc}") from None
    return asyncpg


def classify_asyncpg_error(exc: BaseException) -> ErrorKind:
    """What an asyncpg exception (or an OS error it let through) means; the
    server's errors by the same SQLSTATE table as psycopg's."""
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is None:
        return classify_os_error(exc)

    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None)
        note_pgbouncer_limits(exc, sqlstate, str(exc))
        if sqlstate == "08P01" and classify_connect_message(str(exc)) is ErrorKind.CONFIG:
            # A protocol violation that is a refused startup (PgBouncer's
            # "unsupported startup parameter"): retrying cannot fix it.
            return ErrorKind.CONFIG
        if sqlstate:
            return classify_sqlstate(sqlstate, getattr(exc, "severity_en", None)
                                     or getattr(exc, "severity", None))
        return ErrorKind.QUERY
    if isinstance(exc, asyncpg.InterfaceError):
        msg = str(exc)
        if "connection is closed" in msg or "another operation is in progress" in msg:
            # asyncpg checked before sending (closed), or refused to interleave.
            return ErrorKind.NOT_SENT if "closed" in msg else ErrorKind.OTHER
        if isinstance(exc, asyncpg.exceptions.ClientConfigurationError):
            return ErrorKind.CONFIG
        return ErrorKind.OTHER
    if isinstance(exc, asyncpg.exceptions.InternalClientError) and \
            "another operation" in str(exc):
        # The connection's previous operation never finished (its server
        # went away mid-answer): refused before anything was sent.
        return ErrorKind.NOT_SENT
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError):
        return ErrorKind.CONNECTION_LOST  # pragma: no cover - a PostgresError subclass
    if isinstance(exc, OSError) and "FATAL" in str(exc):
        return classify_connect_message(str(exc))
    return classify_os_error(exc)


class _Status:
    """asyncpg has no transaction-status attribute, only methods. This holder
    gives the core an attribute to read: ``in_transaction`` is True while a
    transaction is open (or failed), while a cancelled statement's cancel
    request is still in flight (asyncpg updates its transaction state only
    when the server answers: a ``BEGIN`` cancelled on its way may yet open
    one), or once the connection is no longer connected; so such a
    connection never goes back to the idle ring as clean."""

    __slots__ = ("cancelling", "connected", "is_in_transaction")

    def __init__(self, conn: Any) -> None:
        proto = conn._protocol
        self.is_in_transaction = proto.is_in_transaction
        self.connected = proto.is_connected
        self.cancelling = proto._is_cancelling

    @property
    def in_transaction(self) -> bool:
        return bool(self.is_in_transaction() or self.cancelling()) or not self.connected()


class AsyncpgClient(AsyncClient):
    """asyncpg connections (see ``fastpool.drivers.client`` and the module
    documentation). The status is asyncpg's local transaction state;
    ``begin`` always sends BEGIN (asyncpg has no implicit transactions)."""

    kind = "postgresql"
    dialect = "postgres"
    paramstyle = "numeric_dollar"
    capabilities = frozenset(CAPABILITIES)
    status_attr = "in_transaction"
    idle_status = False

    def __init__(self) -> None:
        super().__init__("asyncpg")

    def status_source(self, conn: Any) -> Any:
        return _Status(conn)

    def in_transaction(self, conn: Any) -> bool | None:
        return None if conn.is_closed() else bool(conn.is_in_transaction())

    def is_lost(self, conn: Any) -> bool:
        return bool(conn.is_closed())

    def session_id(self, conn: Any) -> int | None:
        return int(conn.get_server_pid())

    def classify(self, exc: BaseException) -> ErrorKind:
        return classify_asyncpg_error(exc)

    async def begin(self, conn: Any, *, write: bool = False) -> None:
        if not conn.is_in_transaction():
            await conn.execute("BEGIN")

    async def commit(self, conn: Any) -> None:
        # A failed transaction's COMMIT answers ROLLBACK: say so, as psycopg's adapter does.
        status = await conn.execute("COMMIT")
        if status == "ROLLBACK":
            raise TransactionAborted(
                "the transaction's work returned normally, but the transaction had failed "
                "(an error inside it was caught and not re-raised): rolled back, nothing "
                "was committed")

    async def rollback(self, conn: Any) -> None:
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")

    async def probe(self, conn: Any, timeout: float | None = None) -> None:
        """Local check (asyncpg saw the server close the socket), then
        ``SELECT 1`` (simple protocol; asyncpg cannot take an empty query's
        answer) within ``timeout`` (default 5 s)."""
        if conn.is_closed():
            raise sys.modules["asyncpg"].exceptions.ConnectionDoesNotExistError(
                "the server closed the connection while it was idle")
        await conn.execute("SELECT 1", timeout=5.0 if timeout is None else timeout)

    async def reset(self, conn: Any) -> bool:
        """Roll back only when a transaction is open, decided locally, once a
        cancelled statement's cancel request has been answered (as asyncpg's
        own pool waits for it)."""
        if conn.is_closed():
            return False
        if conn._protocol._is_cancelling():
            try:
                await conn._protocol._wait_for_cancellation()
            except Exception:
                return False
            if conn.is_closed():
                return False
        if not conn.is_in_transaction():
            return True
        try:
            await conn.execute("ROLLBACK")
        except Exception:
            return False
        return not conn.is_closed() and not conn.is_in_transaction()

    def abandon(self, conn: Any) -> None:
        conn.terminate()

    async def close(self, conn: Any) -> None:
        if conn.is_closed():
            return
        try:
            await conn.close(timeout=5)
        except BaseException:
            conn.terminate()
            raise

    async def fetch_dicts(self, conn: Any, sql: str, params: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in await conn.fetch(sql, *(params or ()))]


_ACTIVITY_SQL = """
SELECT pid AS session_id, state, query, wait_event_type, wait_event,
       extract(epoch FROM now() - backend_start)::float8 AS connected_seconds,
       extract(epoch FROM now() - xact_start)::float8 AS transaction_seconds,
       extract(epoch FROM now() - query_start)::float8 AS query_seconds,
       application_name, usename AS user, client_addr::text AS client
FROM pg_stat_activity WHERE pid = ANY($1::int[]) ORDER BY pid"""


class AsyncpgDriver(AsyncDriver):
    """Connections to a PostgreSQL server through asyncpg.

    ``dsn`` is a ``postgresql://`` URL (``+asyncpg`` removed); ``options`` are
    fastpool's asyncpg options (module documentation) or asyncpg's own
    ``connect`` keywords (``ssl``, ``host``, ``passfile``...).
    """

    name: ClassVar[str] = "postgresql"

    def __init__(self, dsn: str = "", **options: Any) -> None:
        self._asyncpg = asyncpg = _import_asyncpg()
        if not isinstance(dsn, str):
            raise ConfigError(f"postgresql: dsn must be a string, got {type(dsn)}")
        self._secrets = _secrets_in(dsn)
        dsn, own = _split_query(dsn)
        own.update(options)
        accepted = set(inspect.signature(asyncpg.connect).parameters) - {"dsn", "loop"}
        reset = own.pop("reset", "rollback")
        if reset not in RESET_MODES:
            raise ConfigError(f"postgresql: reset must be one of {', '.join(RESET_MODES)}, "
                              f"got {reset!r}")
        self.reset_mode: str = reset
        probe = own.pop("probe", "query")
        if probe not in ("query", "local"):
            raise ConfigError(f"postgresql: probe must be 'query' or 'local', got {probe!r}")
        self.probe_mode: str = probe
        settings = dict(own.pop("server_settings", None) or {})
        settings.setdefault("application_name",
                            str(own.pop("application_name", None)
                                or os.environ.get("PGAPPNAME") or "fastpool"))
        #: The PgBouncer profile (fastpool.drivers.postgres.PGBOUNCER_MODES), or None.
        self.pgbouncer = pgbouncer_mode(own.pop("pgbouncer", None))
        self.prepared_statements = self.pgbouncer != "transaction"
        given = {name: own.pop(name, None) for name in _TIMEOUTS}
        timeouts = {name: _seconds_to_ms(name, v) for name, v in given.items() if v is not None}
        #: SET once per connection behind PgBouncer, else sent as startup settings.
        self._session_sql = session_settings(self.pgbouncer, timeouts)
        if not self.pgbouncer:
            settings.update({name: str(ms) for name, ms in timeouts.items()})
        kwargs: dict[str, Any] = {"server_settings": settings}
        if not self.prepared_statements:
            if own.get("statement_cache_size"):
                raise no_prepared_statements("statement_cache_size",
                                             own["statement_cache_size"])
            own["statement_cache_size"] = 0
        timeout = own.pop("connect_timeout", None)
        if timeout is None:
            timeout = os.environ.get("PGCONNECT_TIMEOUT") or 10
        kwargs["timeout"] = float(option_int("postgresql", "connect_timeout", timeout))
        for key, value in own.items():
            if key == "timeout":
                raise ConfigError("postgresql: use connect_timeout (seconds) for asyncpg's "
                                  "connect timeout")
            if key not in accepted:
                raise ConfigError(
                    f"postgresql: unknown option {key!r}: neither a pool option, a fastpool "
                    f"asyncpg option ({', '.join(sorted(_OWN))}) nor an asyncpg.connect keyword")
            if key in ("statement_cache_size", "port") and isinstance(value, str):
                value = option_int("postgresql", key, value)
            if key == "command_timeout" and isinstance(value, str):
                value = float(value)
            kwargs[key] = value
        self._secrets.append(str(kwargs.get("password") or ""))
        self.dsn = dsn
        self.params = kwargs
        self.client: AsyncpgClient = AsyncpgClient()

    @classmethod
    def from_url(cls, url: str, rest: str, query: dict[str, str],
                 options: dict[str, Any]) -> AsyncpgDriver:
        return cls(url, **options)

    async def connect(self) -> Any:
        conn = await self._asyncpg.connect(self.dsn or None, **self.params)
        if self._session_sql:
            try:
                await conn.execute(self._session_sql)
            except BaseException:
                conn.terminate()
                raise
        return conn

    def session_id(self, conn: Any) -> int | None:
        # Behind PgBouncer the backend pid is PgBouncer's key, not a server's.
        return None if self.pgbouncer else super().session_id(conn)

    async def probe(self, conn: Any, timeout: float | None = None) -> None:
        """Local check, then ``SELECT 1`` unless ``probe="local"``."""
        if self.probe_mode == "query" or conn.is_closed():
            await self.client.probe(conn, timeout)

    async def server_activity(self, session_ids: list[int]) -> list[dict[str, Any]]:
        return await self.query_dicts(_ACTIVITY_SQL, (session_ids,))

    def describe(self) -> str:
        try:
            parts = urlsplit(self.dsn)
            host = self.params.get("host") or parts.hostname or "(default socket)"
            port = self.params.get("port") or parts.port or 5432
            db = self.params.get("database") or unquote(parts.path.lstrip("/"))
            user = self.params.get("user") or unquote(parts.username or "")
        except ValueError:
            return f"postgresql (asyncpg) {redact_url(self.dsn)}"
        where = host if str(host).startswith("/") else f"{host}:{port}"
        return f"postgresql {where} dbname={db} user={user} (asyncpg)"

    def redact(self, text: str) -> str:
        return mask(text, self._secrets)

    def __repr__(self) -> str:
        return f"<AsyncpgDriver {self.describe()}>"


def _split_query(dsn: str) -> tuple[str, dict[str, Any]]:
    """Take fastpool's own options out of the URL's query string (asyncpg
    would send unknown ones to the server as settings)."""
    base, sep, query = dsn.partition("?")
    if not sep:
        return dsn, {}
    own: dict[str, Any] = {}
    rest = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _OWN:
            own[key] = value
        else:
            rest.append(f"{key}={value}")
    return (f"{base}?{'&'.join(rest)}" if rest else base), own
