"""PostgreSQL through psycopg 3 (``pip install 'fastpool[postgres]'``).

URLs and keyword parameters are libpq's own, so host lists, unix-socket
directories, ``sslmode``, ``options``, ``target_session_attrs`` and the rest
work as they do with ``psql``::

    postgresql://app:secret@db1:5432,db2:5432/orders?sslmode=require&target_session_attrs=read-write
    postgresql:///test?host=/var/run/postgresql          (unix socket)
    create_pool("postgresql://db/orders", statement_timeout=5, application_name="billing")

fastpool's own options go in the same places (URL query or keyword):
``autocommit`` (default off), ``statement_timeout``,
``idle_in_transaction_session_timeout``, ``lock_timeout`` (seconds, sent as
startup options so they cost no round trip), ``prepare_threshold`` (psycopg's),
``probe`` (``"query"``: local checks then an empty query, the default;
``"local"``: local checks only), and ``pgbouncer`` (the profile for a server
behind PgBouncer, see ``PGBOUNCER_MODES``). Keywords win over the URL. Tuned defaults,
each overridable (and below libpq's environment variables):
``application_name`` falls back to ``fastpool``, ``connect_timeout=10``, TCP
keepalives after 30 s idle, every 10 s, 3 probes, and ``tcp_user_timeout``
30 s (unacknowledged data on a dead network drops the connection).

The pool reads libpq's transaction status (``pgconn.transaction_status``,
~16 ns, no round trip) when a connection comes back: idle goes straight back
to the ring; in a transaction or in a failed transaction is rolled back; active
(a result or COPY left unread) or unknown (broken) is discarded.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import time
import weakref
from typing import Any, ClassVar
from urllib.parse import unquote

from fastpool._loader import implementation
from fastpool.drivers.base import (
    AsyncDriver,
    Driver,
    DriverBase,
    mask,
    option_bool,
    option_int,
    redact_url,
    wait_readable,
)
from fastpool.drivers.client import CAPABILITIES, AsyncClient, Client, ClientBase
from fastpool.errors import ConfigError, ErrorKind, TransactionAborted
from fastpool.options import MAX_INT, choice

# libpq's enums (libpq-fe.h); stable across versions.
_CONNECTION_OK = 0
_TRANS_IDLE, _TRANS_ACTIVE, _TRANS_INTRANS, _TRANS_INERROR, _TRANS_UNKNOWN = range(5)
_PGRES_EMPTY_QUERY = 0

#: Defaults below the URL, keywords and libpq's environment variables
#: (PGAPPNAME, PGCONNECT_TIMEOUT... win over them). tcp_user_timeout drops a
#: connection whose sent data goes unacknowledged for 30 s (a dead network),
#: where keepalives alone never fire.
DEFAULTS: dict[str, str] = {
    "fallback_application_name": "fastpool",
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
_ENV = {"connect_timeout": "PGCONNECT_TIMEOUT"}
_TIMEOUTS = ("statement_timeout", "idle_in_transaction_session_timeout", "lock_timeout")
_OWN = frozenset({"autocommit", "prepare_threshold", "probe", "pgbouncer", *_TIMEOUTS})
#: The PgBouncer profiles (``pgbouncer=`` in the URL or as a keyword), named
#: after PgBouncer's pool_mode. "transaction": the pool assumes no session
#: state across transactions: no server-side prepared statements (neither the
#: statement cache nor psycopg's automatic ones: PgBouncer < 1.22 cannot carry
#: them), no startup options (PgBouncer refuses them; a SET would not outlive
#: the transaction), reset decided locally as always. "session": everything
#: on; the timeouts are SET once per connection instead of sent as startup
#: options. In both, the backend pid libpq sees is PgBouncer's, not a server
#: session's: no session ids for server_activity().
PGBOUNCER_MODES = ("transaction", "session")
_UNSET: Any = object()

# SQLSTATEs (PostgreSQL Appendix A).
_RETRYABLE = frozenset({"40001", "40P01", "55P03"})  # serialization, deadlock, lock timeout
# Admin/crash shutdown, database dropped, idle-session and idle-in-transaction
# timeouts, and "statement completion unknown": the session is gone or the
# outcome cannot be known.
_LOST = frozenset({"57P01", "57P02", "57P04", "57P05", "25P03", "40003"})
_UNAVAILABLE = frozenset({"57P03", "53300"})  # starting up, too many connections
# Server refusals at connect time that come without a SQLSTATE in psycopg's
# exception (libpq only has the message). English server messages.
_AUTH_PATTERNS = re.compile(
    r"password authentication failed|role \".*\" does not exist|no pg_hba\.conf entry"
    r"|is not permitted to log in|authentication failed|no password supplied"
    r"|password is required|permission denied for database")
_CONFIG_PATTERNS = re.compile(
    r"database \".*\" does not exist|invalid value for parameter|unrecognized configuration"
    r"|invalid connection option|unsupported startup parameter"
    # libpq refusing a connection option's value or a URL's before connecting
    # ('invalid sslmode value: "bogus"', 'invalid URI query parameter').
    r"|invalid \w+ value: |invalid URI query parameter|invalid port number")
# What PgBouncer's limits look like from the client: a statement the client
# prepared itself (psycopg's _pg3_N, asyncpg's __asyncpg_stmt_N__) missing or
# already there on the server connection PgBouncer lent this time, or a
# startup parameter it refuses.
_PGBOUNCER_STATEMENT = re.compile(r'prepared statement "(_pg3_\d+|__asyncpg_stmt_\w+__)"')
_PGBOUNCER_STATES = frozenset({"26000", "42P05"})
_PGBOUNCER_STARTUP = re.compile(r"unsupported startup parameter: (\S+)")
_TRANSIENT_PATTERNS = re.compile(
    r"the database system is (starting up|shutting down|in recovery mode|not yet accepting)"
    r"|too many clients|too many connections|remaining connection slots are reserved")
_KV_PASSWORD = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)
_ACTIVITY_SQL = """
SELECT pid AS session_id, state, query, wait_event_type, wait_event,
       extract(epoch FROM now() - backend_start)::float8 AS connected_seconds,
       extract(epoch FROM now() - xact_start)::float8 AS transaction_seconds,
       extract(epoch FROM now() - query_start)::float8 AS query_seconds,
       application_name, usename AS user, client_addr::text AS client
FROM pg_stat_activity WHERE pid = ANY(%s) ORDER BY pid"""
_CONNECT_PREFIXES = ("connection failed:", "connection is bad:", "failed to resolve host",
                     "connection timeout expired")


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError("postgresql:// URLs need psycopg 3: pip install 'fastpool[postgres]' "
                          f"(or psycopg[binary]); import failed: {exc}") from None
    return psycopg


def _seconds_to_ms(name: str, value: object) -> int:
    """A timeout setting in milliseconds; the server holds them in a C int."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not 0 <= seconds <= MAX_INT / 1000:
        raise ConfigError(f"postgresql: {name} must be a number of seconds >= 0 and <= "
                          f"{MAX_INT / 1000} (the server's limit), got {value!r}")
    return round(seconds * 1000)


def classify_sqlstate(sqlstate: str, severity: str | None = None) -> ErrorKind:
    """What a server error with this SQLSTATE (and non-localized severity)
    means; shared by psycopg and asyncpg."""
    if sqlstate in _RETRYABLE:
        return ErrorKind.RETRYABLE
    if sqlstate in _UNAVAILABLE:
        return ErrorKind.UNAVAILABLE
    if sqlstate.startswith("08") or sqlstate in _LOST:
        return ErrorKind.CONNECTION_LOST
    if severity == "FATAL" and sqlstate.startswith(("22", "42")):
        # A FATAL data or syntax error comes only from the startup packet:
        # a setting the server refuses (unrecognized configuration parameter,
        # invalid value for parameter) in the connect options.
        return ErrorKind.CONFIG
    if severity in ("FATAL", "PANIC"):
        return ErrorKind.CONNECTION_LOST  # the server ended the session
    if sqlstate.startswith("28"):
        return ErrorKind.AUTH
    if sqlstate == "3D000":
        return ErrorKind.CONFIG
    return ErrorKind.QUERY


def classify_connect_message(msg: str) -> ErrorKind:
    """What a connect failure known only by its message means (libpq's text,
    carrying the server's FATAL if any)."""
    if _TRANSIENT_PATTERNS.search(msg):
        return ErrorKind.UNAVAILABLE
    if _AUTH_PATTERNS.search(msg):
        return ErrorKind.AUTH
    if _CONFIG_PATTERNS.search(msg):
        return ErrorKind.CONFIG
    if "FATAL:" in msg:
        return ErrorKind.CONFIG  # the server answered and refused the session
    return ErrorKind.UNREACHABLE  # refused, no socket, no such host, timed out


def pgbouncer_mode(value: Any) -> str | None:
    """The ``pgbouncer`` option (PGBOUNCER_MODES, or None)."""
    mode: str | None = choice("pgbouncer", value, (None, *PGBOUNCER_MODES), owner="postgresql")
    return mode


def no_prepared_statements(option: str, value: object) -> ConfigError:
    """The error for asking for server-side prepared statements with
    pgbouncer='transaction' (the driver's option or the pool's cache)."""
    return ConfigError(f"{option}={value!r} with pgbouncer='transaction': PgBouncer's "
                       "transaction mode cannot carry prepared statements; leave it unset")


def session_settings(mode: str | None, timeouts: dict[str, int]) -> str:
    """Behind PgBouncer, the SET statements to run once per new connection for
    ``timeouts`` (milliseconds by name), which PgBouncer refuses as startup
    options: in session mode; a ConfigError in transaction mode (a SET would
    not outlive the transaction). "" without PgBouncer or timeouts."""
    if not timeouts or mode is None:
        return ""
    if mode == "transaction":
        raise ConfigError(
            f"postgresql: {', '.join(timeouts)} with pgbouncer='transaction': PgBouncer "
            "refuses startup options and a SET would not outlive the transaction; set it "
            "on the role or database (ALTER ROLE ... SET statement_timeout = ...)")
    return "; ".join(f"SET {name} = {ms}" for name, ms in timeouts.items())


def note_pgbouncer_limits(exc: BaseException, sqlstate: str | None, msg: str) -> None:
    """The classifiers' (psycopg's and asyncpg's) one rule for errors that
    PgBouncer's limits caused: a note naming the profile to use."""
    hint = pgbouncer_hint(sqlstate, msg)
    if hint is not None:
        _note(exc, hint)


def pgbouncer_hint(sqlstate: str | None, msg: str) -> str | None:
    """What to do about an error that PgBouncer's limits caused, naming the
    profile to use; None for any other error."""
    if sqlstate in _PGBOUNCER_STATES and _PGBOUNCER_STATEMENT.search(msg):
        return ("fastpool: a statement the client prepared was missing from, or already on, "
                "the server connection PgBouncer lent this time: this server is behind "
                "PgBouncer in transaction mode, which (before 1.22) cannot carry prepared "
                "statements. Create the "
                "pool with pgbouncer='transaction' (no prepared statements, no session "
                "state assumed).")
    found = _PGBOUNCER_STARTUP.search(msg)
    if found:
        return (f"fastpool: PgBouncer refuses the startup parameter {found.group(1)!r}; "
                "fastpool sends statement_timeout, lock_timeout and "
                "idle_in_transaction_session_timeout that way. Create the pool with "
                "pgbouncer='session' (they are SET once per connection) or "
                "pgbouncer='transaction' (set them on the role or database instead: "
                "ALTER ROLE ... SET statement_timeout = ...), and leave libpq's options "
                "and PGOPTIONS unset.")
    return None


def _note(exc: BaseException, hint: str) -> None:
    """Add ``hint`` to ``exc``'s notes, once (Python 3.11+ shows them in the
    traceback; 3.10 keeps them in ``__notes__``)."""
    notes = getattr(exc, "__notes__", None)
    if notes is not None and hint in notes:
        return
    if hasattr(exc, "add_note"):
        exc.add_note(hint)
    else:  # pragma: no cover - Python 3.10
        exc.__notes__ = [*(notes or ()), hint]


def classify_error(exc: BaseException) -> ErrorKind:
    """What a psycopg exception means; see ErrorKind. An error that
    PgBouncer's limits caused gets a note naming the profile to use
    (``pgbouncer_hint``); its kind is the one the SQLSTATE or message says."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is what raised exc
        return ErrorKind.OTHER
    if not isinstance(exc, psycopg.Error):
        return ErrorKind.OTHER
    msg = str(exc)
    sqlstate = exc.sqlstate
    note_pgbouncer_limits(exc, sqlstate, msg)
    if sqlstate:
        return classify_sqlstate(sqlstate, exc.diag.severity_nonlocalized)
    if isinstance(exc, psycopg.errors.ConnectionTimeout) or msg.startswith(_CONNECT_PREFIXES):
        # Raised by connect(): libpq's message carries the server's FATAL, if any.
        return classify_connect_message(msg)
    if isinstance(exc, psycopg.OperationalError):
        if msg.startswith("the connection is closed"):
            return ErrorKind.NOT_SENT  # psycopg checked before sending anything
        return ErrorKind.CONNECTION_LOST  # e.g. "consuming input failed: server closed..."
    if isinstance(exc, psycopg.InterfaceError):
        return ErrorKind.OTHER  # misuse of the client API
    if isinstance(exc, psycopg.ProgrammingError) and _CONFIG_PATTERNS.search(msg):
        return ErrorKind.CONFIG  # connect()'s options refused by libpq, before connecting
    return ErrorKind.QUERY


class PostgresSettings(DriverBase):
    """Where and how psycopg 3 connects (no I/O), shared by ``PostgresDriver``
    and ``AsyncPostgresDriver``.

    ``conninfo`` is a ``postgresql://`` URL or a libpq ``key=value`` string;
    ``params`` are more libpq parameters (they win over ``conninfo``) plus
    fastpool's own options (see the module docstring).
    """

    name: ClassVar[str] = "postgresql"

    def __init__(self, conninfo: str = "", *, autocommit: Any = _UNSET,
                 statement_timeout: Any = _UNSET,
                 idle_in_transaction_session_timeout: Any = _UNSET,
                 lock_timeout: Any = _UNSET, prepare_threshold: Any = _UNSET,
                 probe: Any = _UNSET, pgbouncer: Any = _UNSET, row_factory: Any = None,
                 cursor_factory: Any = None, **params: Any) -> None:
        self._psycopg = psycopg = _import_psycopg()
        if not isinstance(conninfo, str):
            raise ConfigError(f"postgresql: conninfo must be a string, got {type(conninfo)}")
        self._secrets = _secrets_in(conninfo)
        if conninfo.lower().startswith(("postgresql:", "postgres:")) and "://" not in conninfo:
            raise ConfigError(f"postgresql: malformed URL {redact_url(conninfo)!r}: "
                              "expected postgresql://...")
        conninfo, options = _split_own_options(conninfo)
        explicit = {"autocommit": autocommit, "statement_timeout": statement_timeout,
                    "idle_in_transaction_session_timeout": idle_in_transaction_session_timeout,
                    "lock_timeout": lock_timeout, "prepare_threshold": prepare_threshold,
                    "probe": probe, "pgbouncer": pgbouncer}
        # Keywords win over the URL, the URL over the defaults.
        options.update({k: v for k, v in explicit.items() if v is not _UNSET})
        try:
            given = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise ConfigError(f"postgresql: invalid connection string: {self.redact(str(exc))}") \
                from None
        known = {o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults()}
        for key in params:
            if key not in known:
                raise ConfigError(
                    f"postgresql: unknown option {key!r}: neither a pool option, a fastpool "
                    f"postgresql option ({', '.join(sorted(_OWN))}) nor a libpq parameter")
        defaults = {k: v for k, v in DEFAULTS.items() if not os.environ.get(_ENV.get(k, ""))}
        merged = {**defaults, **given, **{k: str(v) for k, v in params.items() if v is not None}}
        self._secrets.append(str(merged.get("password") or ""))

        self.autocommit = option_bool("postgresql", "autocommit", options.get("autocommit", False))
        #: The PgBouncer profile (PGBOUNCER_MODES), or None.
        self.pgbouncer = pgbouncer_mode(options.get("pgbouncer"))
        #: Whether statements may be prepared on the server (the pool's
        #: statement cache follows it: fastpool.pool.facade.QueryFeatures).
        self.prepared_statements = self.pgbouncer != "transaction"
        timeouts = {name: _seconds_to_ms(name, options[name])
                    for name in _TIMEOUTS if options.get(name) is not None}
        #: SET once per connection behind PgBouncer, else sent as startup options.
        self._session_sql = session_settings(self.pgbouncer, timeouts)
        startup = [] if self.pgbouncer else [f"-c {name}={ms}" for name, ms in timeouts.items()]
        if startup:
            # An explicit `options` replaces PGOPTIONS in libpq: keep both.
            base = merged.get("options", os.environ.get("PGOPTIONS", ""))
            merged["options"] = " ".join(filter(None, [base, *startup]))
        pt: Any = options.get("prepare_threshold", 5 if self.prepared_statements else None)
        if isinstance(pt, str) and pt.lower() == "none":
            pt = None
        if pt is not None:  # an int or a decimal string (the URL's)
            if not isinstance(pt, (int, str)):
                raise ConfigError(f"postgresql: prepare_threshold must be an integer >= 0 or "
                                  f"None, got {pt!r}")
            pt = option_int("postgresql", "prepare_threshold", pt, 0)
        if pt is not None and not self.prepared_statements:
            raise no_prepared_statements("prepare_threshold", pt)
        self.prepare_threshold: int | None = pt
        probe_mode = options.get("probe", "query")
        if probe_mode not in ("query", "local"):
            raise ConfigError(f"postgresql: probe must be 'query' or 'local', got {probe_mode!r}")
        self.probe_mode: str = probe_mode
        self._factories = {k: v for k, v in (("row_factory", row_factory),
                                             ("cursor_factory", cursor_factory)) if v is not None}
        self.params: dict[str, str] = merged
        #: libpq connects only to a read-write server (a host list that follows
        #: the primary): a connection whose server turned read-only while up
        #: (fenced, or a standby) fails its probe and is replaced, and a
        #: statement refused as read-only (25006) drains the pool.
        self.read_write_only = merged.get("target_session_attrs") in ("read-write", "primary")
        self._conninfo = psycopg.conninfo.make_conninfo("", **merged)
        self._session_ids: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._init_client()

    def _init_client(self) -> None:
        raise NotImplementedError

    @classmethod
    def from_url(cls, url: str, rest: str, query: dict[str, str],
                 options: dict[str, Any]) -> Any:
        return cls(url, **options)

    def _connect_kwargs(self) -> dict[str, Any]:
        return {"autocommit": self.autocommit, "prepare_threshold": self.prepare_threshold,
                **self._factories}

    def _opened(self, conn: Any) -> Any:
        # Kept for server_activity(), which must not touch connections in use.
        # Behind PgBouncer the backend pid is PgBouncer's key, not a server's.
        if self.pgbouncer is None:
            self._session_ids[conn] = int(conn.pgconn.backend_pid)
        return conn

    def session_id(self, conn: Any) -> int | None:
        return self._session_ids.get(conn)

    # ---- messages -----------------------------------------------------------

    def describe(self) -> str:
        p = self.params
        host = p.get("host") or p.get("hostaddr") or "(default socket)"
        where = host if host.startswith("/") else f"{host}:{p.get('port') or 5432}"
        return f"postgresql {where} dbname={p.get('dbname', '')} user={p.get('user', '')}"

    def redact(self, text: str) -> str:
        return mask(text, self._secrets)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class PostgresDriver(PostgresSettings, Driver):
    """Connections to a PostgreSQL server through psycopg 3.

    ``conninfo`` is a ``postgresql://`` URL or a libpq ``key=value`` string;
    ``params`` are more libpq parameters (they win over ``conninfo``) plus
    fastpool's own options (see the module docstring).
    """

    def _init_client(self) -> None:
        self.client: PsycopgClient = PsycopgClient()

    def connect(self) -> Any:
        conn = self._psycopg.Connection.connect(self._conninfo, **self._connect_kwargs())
        if self._session_sql:
            try:
                conn.execute(self._session_sql)
                conn.commit()
            except BaseException:
                conn.close()
                raise
        return self._opened(conn)

    def probe(self, conn: Any, timeout: float | None = None) -> None:
        """Local checks first (libpq status, unread bytes from the server); then,
        unless ``probe="local"``, an empty query: the cheapest round trip."""
        probe_connection(conn, query=self.probe_mode == "query", timeout=timeout,
                         read_write=self.read_write_only)

    def server_activity(self, session_ids: list[int]) -> list[dict[str, Any]]:
        return self.query_dicts(_ACTIVITY_SQL, (session_ids,))


class AsyncPostgresDriver(PostgresSettings, AsyncDriver):
    """Connections to a PostgreSQL server through psycopg 3's
    ``AsyncConnection``: the same URL, libpq parameters and fastpool options
    as ``PostgresDriver`` (``postgresql://`` or ``postgresql+psycopg://`` in
    ``create_async_pool``)."""

    def _init_client(self) -> None:
        self.client: AsyncPsycopgClient = AsyncPsycopgClient()

    async def connect(self) -> Any:
        conn = await self._psycopg.AsyncConnection.connect(
            self._conninfo, **self._connect_kwargs())
        if self._session_sql:
            try:
                await conn.execute(self._session_sql)
                await conn.commit()
            except BaseException:
                await conn.close()
                raise
        return self._opened(conn)

    async def probe(self, conn: Any, timeout: float | None = None) -> None:
        """As ``PostgresDriver.probe``, awaiting the empty query."""
        await probe_connection_async(conn, query=self.probe_mode == "query", timeout=timeout,
                                     read_write=self.read_write_only)

    async def server_activity(self, session_ids: list[int]) -> list[dict[str, Any]]:
        return await self.query_dicts(_ACTIVITY_SQL, (session_ids,))


def probe_locally(conn: Any) -> int:
    """Raise unless the idle psycopg connection ``conn`` looks alive locally:
    libpq's status, then any bytes the server sent while it was idle (a killed
    backend's FATAL and EOF). Returns its socket."""
    import psycopg

    pgconn = conn.pgconn
    if pgconn.status != _CONNECTION_OK:
        raise psycopg.OperationalError("the connection is closed")
    if pgconn.transaction_status != _TRANS_IDLE:
        raise psycopg.OperationalError("the connection is not idle")
    fd: int = pgconn.socket
    # An idle connection has nothing to read unless the server spoke: a
    # notification or a parameter change (harmless), or a killed backend's
    # FATAL error and EOF. Peek at it without consuming it.
    if wait_readable(fd, 0.0):
        if not pgconn.ssl_in_use:
            with socket.socket(fileno=os.dup(fd)) as sock:
                try:
                    first = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    first = b"-"
                except OSError:
                    first = b""
            if first in (b"", b"E"):  # EOF, or an ErrorResponse while idle: FATAL
                raise psycopg.OperationalError(
                    "the server closed the connection while it was idle")
        pgconn.consume_input()  # raises if the server closed the connection
        if pgconn.status != _CONNECTION_OK:
            raise psycopg.OperationalError("the server closed the connection")
    return fd


def _empty_query_done(pgconn: Any) -> None:
    """Read the empty query's results; raise unless it was answered cleanly."""
    import psycopg

    ok = True
    while (res := pgconn.get_result()) is not None:
        ok = ok and res.status == _PGRES_EMPTY_QUERY
    if not ok or pgconn.status != _CONNECTION_OK:
        raise psycopg.OperationalError(
            f"probe failed: {pgconn.error_message.decode(errors='replace').strip()}")


def _no_answer(limit: float) -> Exception:
    import psycopg

    return psycopg.OperationalError(f"probe: no answer to an empty query within {limit:g} s")


def _require_writable(pgconn: Any) -> None:
    """Raise if the server reported itself read-only (PostgreSQL 14+ reports
    both settings on every change, a reload's included, before it answers)."""
    import psycopg

    for name in (b"in_hot_standby", b"default_transaction_read_only"):
        if pgconn.parameter_status(name) == b"on":
            raise psycopg.OperationalError(
                f"probe: the server is read-only now ({name.decode()} = on) and the pool "
                "connects with target_session_attrs=read-write: the connection is replaced")


def probe_connection(conn: Any, query: bool = True, timeout: float | None = None,
                     read_write: bool = False) -> None:
    """Raise unless the idle psycopg connection ``conn`` is alive: the local
    checks (``probe_locally``), then, if ``query``, an empty query answered
    within ``timeout`` seconds (default 5); with ``read_write``, its server
    must not have reported itself read-only."""
    fd = probe_locally(conn)
    if not query:
        return
    pgconn = conn.pgconn
    limit = 5.0 if timeout is None else timeout
    deadline = time.monotonic() + limit
    pgconn.send_query(b"")
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
        if not wait_readable(fd, deadline - time.monotonic()):
            raise _no_answer(limit)
    _empty_query_done(pgconn)
    if read_write:
        _require_writable(pgconn)


def _set_ready(fut: asyncio.Future[None]) -> None:
    # Not ``fut.set_result``: the deadline may have cancelled ``fut`` in the
    # same loop iteration that found the socket readable (the loop would log
    # the InvalidStateError of a callback).
    if not fut.done():
        fut.set_result(None)


async def probe_connection_async(conn: Any, query: bool = True,
                                 timeout: float | None = None, read_write: bool = False) -> None:
    """``probe_connection`` for a psycopg ``AsyncConnection``: the same local
    checks, then the empty query awaited on the event loop (psycopg would
    send BEGIN before a statement on a non-autocommit connection: libpq's
    empty query does not)."""
    fd = probe_locally(conn)
    if not query:
        return
    pgconn = conn.pgconn
    limit = 5.0 if timeout is None else timeout
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    pgconn.send_query(b"")
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
        ready = loop.create_future()
        loop.add_reader(fd, _set_ready, ready)
        try:
            await asyncio.wait_for(ready, max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise _no_answer(limit) from None
        finally:
            loop.remove_reader(fd)
    _empty_query_done(pgconn)
    if read_write:
        _require_writable(pgconn)


def _needs_rollback(pgconn: Any) -> bool | None:
    """The reset rule, from libpq's local status: None when idle (nothing to
    do), True when a transaction is open or failed (roll back), False when
    the connection cannot be reused (broken, or a result or COPY streaming)."""
    if pgconn.status != _CONNECTION_OK:
        return False
    status = pgconn.transaction_status
    if status in (_TRANS_INTRANS, _TRANS_INERROR):
        return True
    # ACTIVE: a result or a COPY is still streaming; UNKNOWN: broken.
    return None if status == _TRANS_IDLE else False


def reset_connection(conn: Any) -> bool:
    """Roll back what a borrower left open on a psycopg connection; False when
    it cannot be reused (broken, or a result or COPY still streaming)."""
    pgconn = conn.pgconn
    todo = _needs_rollback(pgconn)
    if todo is not True:
        return todo is None
    try:
        conn.rollback()
    except Exception:
        return False
    return bool(pgconn.transaction_status == _TRANS_IDLE)


async def reset_connection_async(conn: Any) -> bool:
    """``reset_connection`` for a psycopg ``AsyncConnection``."""
    pgconn = conn.pgconn
    todo = _needs_rollback(pgconn)
    if todo is not True:
        return todo is None
    try:
        await conn.rollback()
    except Exception:
        return False
    return bool(pgconn.transaction_status == _TRANS_IDLE)


def _check_not_failed(conn: Any) -> None:
    if conn.pgconn.transaction_status == _TRANS_INERROR:
        raise TransactionAborted(
            "the transaction's work returned normally, but the transaction had failed "
            "(an error inside it was caught and not re-raised): rolled back, nothing "
            "was committed")


_c_status: list[Any] = []  # [the bound fastpool._pgstatus, or None], once known


def _c_status_reader(conn: Any) -> Any:
    """``fastpool._pgstatus``, bound to the libpq psycopg loaded, or None
    (FASTPOOL_IMPL=python, not compiled, psycopg's pure-Python libpq wrapper,
    an unknown layout). Decided once per process, from the first connection."""
    if not _c_status:
        module = None
        try:
            if implementation() != "python":
                from fastpool import _pgstatus

                pgconn = conn.pgconn
                library = getattr(sys.modules.get(type(pgconn).__module__), "__file__", None)
                if library and _pgstatus.bind(library, pgconn):
                    module = _pgstatus
        except (ImportError, AttributeError):
            module = None
        _c_status.append(module)
    return _c_status[0]


class PsycopgLocal(ClientBase):
    """What fastpool knows locally about psycopg 3 connections, sync or async.

    The transaction status is libpq's own (``pgconn.transaction_status``,
    ~16 ns; ``conn.info.transaction_status`` costs ~60x more). Transactions:
    without autocommit psycopg sends BEGIN itself before the first statement
    (so a ``SET TRANSACTION ISOLATION LEVEL ...`` first still applies); on an
    autocommit connection ``begin`` sends BEGIN, leaving the setting alone.
    """

    kind = "postgresql"
    dialect = "postgres"
    paramstyle = "pyformat"
    capabilities = frozenset(CAPABILITIES)
    status_attr = "transaction_status"
    idle_status = _TRANS_IDLE

    def __init__(self) -> None:
        super().__init__("psycopg")

    def status_source(self, conn: Any) -> Any:
        """What the core reads: a ``fastpool._pgstatus.PGStatus`` (libpq's
        status read in C, no Python object per read: the core reads it on
        every lend and every return), else ``conn.pgconn``."""
        reader = _c_status_reader(conn)
        if reader is not None:
            try:
                return reader.PGStatus(conn)
            except (TypeError, RuntimeError):  # not the layout bind() found
                pass
        return conn.pgconn

    def is_lost(self, conn: Any) -> bool:
        return bool(conn.pgconn.status != _CONNECTION_OK)

    def session_id(self, conn: Any) -> int | None:
        return int(conn.pgconn.backend_pid)

    def classify(self, exc: BaseException) -> ErrorKind:
        return classify_error(exc)


class PsycopgClient(PsycopgLocal, Client):
    """psycopg 3 connections (see ``PsycopgLocal`` and ``fastpool.drivers.client``)."""

    def begin(self, conn: Any, *, write: bool = False) -> None:
        if conn.autocommit:
            conn.execute("BEGIN")

    def commit(self, conn: Any) -> None:
        _check_not_failed(conn)
        conn.commit()

    def probe(self, conn: Any, timeout: float | None = None) -> None:
        probe_connection(conn, timeout=timeout)

    def reset(self, conn: Any) -> bool:
        return reset_connection(conn)


class AsyncPsycopgClient(PsycopgLocal, AsyncClient):
    """psycopg 3 ``AsyncConnection`` objects: ``PsycopgLocal``'s rules, awaited."""

    def abandon(self, conn: Any) -> None:
        conn.pgconn.finish()  # libpq closes the socket; nothing to await

    async def begin(self, conn: Any, *, write: bool = False) -> None:
        if conn.autocommit:
            await conn.execute("BEGIN")

    async def commit(self, conn: Any) -> None:
        _check_not_failed(conn)
        await conn.commit()

    async def probe(self, conn: Any, timeout: float | None = None) -> None:
        await probe_connection_async(conn, timeout=timeout)

    async def reset(self, conn: Any) -> bool:
        return await reset_connection_async(conn)

    async def fetch_dicts(self, conn: Any, sql: str, params: Any) -> list[dict[str, Any]]:
        cur = await conn.execute(sql, params)
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


def _secrets_in(conninfo: str) -> list[str]:
    """Every spelling of a password in a URL or key=value string (raw and
    percent-decoded), and the URL itself, to mask in messages."""
    found = [conninfo] if "@" in conninfo or "password" in conninfo.lower() else []
    sep, at = conninfo.find("://"), conninfo.rfind("@")
    if 0 <= sep < at:
        userinfo = conninfo[sep + 3:at]
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    found += [m.group(1).strip("'") for m in _KV_PASSWORD.finditer(conninfo)]
    return found + [unquote(f) for f in found]


def _split_own_options(conninfo: str) -> tuple[str, dict[str, str]]:
    """Take fastpool's own options out of a URL's query string (libpq rejects
    them), leaving the rest of the query exactly as written."""
    if not conninfo.lower().startswith(("postgresql://", "postgres://")):
        return conninfo, {}
    base, _, query = conninfo.partition("?")
    own: dict[str, str] = {}
    rest: list[str] = []
    for item in query.split("&") if query else []:
        key, _, value = item.partition("=")
        if unquote(key) in _OWN:
            own[unquote(key)] = unquote(value)
        else:
            rest.append(item)
    return (f"{base}?{'&'.join(rest)}" if rest else base), own
