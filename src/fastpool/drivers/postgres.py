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
and ``probe`` (``"query"``: local checks then an empty query, the default;
``"local"``: local checks only). Tuned defaults, each overridable:
``application_name=fastpool``, ``connect_timeout=10``, TCP keepalives after
30 s idle, every 10 s, 3 probes.

The pool reads libpq's transaction status (``pgconn.transaction_status``,
~16 ns, no round trip) when a connection comes back: idle goes straight back
to the ring; in a transaction or in a failed transaction is rolled back; active
(a result or COPY left unread) or unknown (broken) is discarded.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastpool.drivers.base import Driver
from fastpool.errors import ConfigError, ErrorKind

# libpq's enums (libpq-fe.h); stable across versions.
_CONNECTION_OK = 0
_TRANS_IDLE, _TRANS_ACTIVE, _TRANS_INTRANS, _TRANS_INERROR, _TRANS_UNKNOWN = range(5)
_PGRES_EMPTY_QUERY = 0

DEFAULTS: dict[str, str] = {
    "application_name": "fastpool",
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
_TIMEOUTS = ("statement_timeout", "idle_in_transaction_session_timeout", "lock_timeout")
_OWN = frozenset({"autocommit", "prepare_threshold", "probe", *_TIMEOUTS})
_BOOLS = {"on": True, "1": True, "true": True, "yes": True,
          "off": False, "0": False, "false": False, "no": False}

# SQLSTATEs (PostgreSQL Appendix A).
_RETRYABLE = frozenset({"40001", "40P01", "55P03"})  # serialization, deadlock, lock timeout
_LOST = frozenset({"57P01", "57P02", "57P05"})  # admin/crash shutdown, idle session timeout
_TRANSIENT_AT_CONNECT = frozenset({"57P03", "53300"})  # starting up, too many clients
# Server refusals at connect time that come without a SQLSTATE in psycopg's
# exception (libpq only has the message). English server messages.
_AUTH_PATTERNS = re.compile(
    r"password authentication failed|role \".*\" does not exist|no pg_hba\.conf entry"
    r"|is not permitted to log in|authentication failed|no password supplied"
    r"|password is required|permission denied for database")
_CONFIG_PATTERNS = re.compile(
    r"database \".*\" does not exist|invalid value for parameter|unrecognized configuration"
    r"|invalid connection option|unsupported startup parameter")
_TRANSIENT_PATTERNS = re.compile(
    r"the database system is (starting up|shutting down|in recovery mode|not yet accepting)"
    r"|too many clients|remaining connection slots are reserved")
_KV_PASSWORD = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
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
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"postgresql: {name} must be a number of seconds >= 0, got {value!r}")
    return round(seconds * 1000)


def classify_error(exc: BaseException) -> ErrorKind:
    """What a psycopg exception means; see ErrorKind."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is what raised exc
        return ErrorKind.OTHER
    if not isinstance(exc, psycopg.Error):
        return ErrorKind.OTHER
    msg = str(exc)
    sqlstate = exc.sqlstate
    if sqlstate:
        if sqlstate in _RETRYABLE:
            return ErrorKind.RETRYABLE
        if sqlstate.startswith("08") or sqlstate in _LOST:
            return ErrorKind.CONNECTION_LOST
        if sqlstate.startswith("28"):
            return ErrorKind.AUTH
        if sqlstate == "3D000":
            return ErrorKind.CONFIG
        if sqlstate in _TRANSIENT_AT_CONNECT:
            return ErrorKind.UNREACHABLE
        return ErrorKind.QUERY
    if isinstance(exc, psycopg.errors.ConnectionTimeout) or msg.startswith(_CONNECT_PREFIXES):
        # Raised by connect(): libpq's message carries the server's FATAL, if any.
        if _TRANSIENT_PATTERNS.search(msg):
            return ErrorKind.UNREACHABLE
        if _AUTH_PATTERNS.search(msg):
            return ErrorKind.AUTH
        if _CONFIG_PATTERNS.search(msg):
            return ErrorKind.CONFIG
        if "FATAL:" in msg:
            return ErrorKind.CONFIG  # the server answered and refused the session
        return ErrorKind.UNREACHABLE  # refused, no socket, no such host, timed out
    if isinstance(exc, psycopg.OperationalError):
        if msg.startswith("the connection is closed"):
            return ErrorKind.NOT_SENT  # psycopg checked before sending anything
        return ErrorKind.CONNECTION_LOST  # e.g. "consuming input failed: server closed..."
    if isinstance(exc, psycopg.InterfaceError):
        return ErrorKind.OTHER  # misuse of the client API
    return ErrorKind.QUERY


class PostgresDriver(Driver):
    """Connections to a PostgreSQL server through psycopg 3.

    ``conninfo`` is a ``postgresql://`` URL or a libpq ``key=value`` string;
    ``params`` are more libpq parameters (they win over ``conninfo``) plus
    fastpool's own options (see the module docstring).
    """

    name = "postgresql"
    status_attr = "transaction_status"
    idle_status = _TRANS_IDLE

    def __init__(self, conninfo: str = "", *, autocommit: bool | str = False,
                 statement_timeout: float | None = None,
                 idle_in_transaction_session_timeout: float | None = None,
                 lock_timeout: float | None = None, prepare_threshold: int | str | None = 5,
                 probe: str = "query", row_factory: Any = None, cursor_factory: Any = None,
                 **params: Any) -> None:
        self._psycopg = psycopg = _import_psycopg()
        if not isinstance(conninfo, str):
            raise ConfigError(f"postgresql: conninfo must be a string, got {type(conninfo)}")
        self._password = ""
        conninfo, own = _split_own_options(conninfo)
        options: dict[str, Any] = {
            "autocommit": autocommit, "statement_timeout": statement_timeout,
            "idle_in_transaction_session_timeout": idle_in_transaction_session_timeout,
            "lock_timeout": lock_timeout, "prepare_threshold": prepare_threshold, "probe": probe}
        options.update(own)  # the URL's options are as explicit as keywords
        try:
            given = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise ConfigError(
                f"postgresql: invalid connection string: {self._scrub(str(exc), conninfo)}"
            ) from None
        known = {o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults()}
        for key in params:
            if key not in known:
                raise ConfigError(
                    f"postgresql: unknown option {key!r}: neither a pool option, a fastpool "
                    f"postgresql option ({', '.join(sorted(_OWN))}) nor a libpq parameter")
        merged = {**DEFAULTS, **given,
                  **{k: str(v) for k, v in params.items() if v is not None}}
        self._password = str(merged.get("password") or "")

        self.autocommit = _bool("autocommit", options["autocommit"])
        startup = [f"-c {name}={_seconds_to_ms(name, options[name])}"
                   for name in _TIMEOUTS if options[name] is not None]
        if startup:
            merged["options"] = " ".join(filter(None, [merged.get("options", ""), *startup]))
        pt = options["prepare_threshold"]
        if isinstance(pt, str):
            pt = None if pt.lower() == "none" else _int("prepare_threshold", pt)
        if pt is not None and (not isinstance(pt, int) or isinstance(pt, bool) or pt < 0):
            raise ConfigError(f"postgresql: prepare_threshold must be an int >= 0 or None, "
                              f"got {pt!r}")
        self.prepare_threshold: int | None = pt
        if options["probe"] not in ("query", "local"):
            raise ConfigError(f"postgresql: probe must be 'query' or 'local', "
                              f"got {options['probe']!r}")
        self.probe_mode: str = options["probe"]
        self._factories = {k: v for k, v in (("row_factory", row_factory),
                                             ("cursor_factory", cursor_factory)) if v is not None}
        self.params: dict[str, str] = merged
        self._conninfo = psycopg.conninfo.make_conninfo("", **merged)

    @classmethod
    def from_url(cls, url: str, rest: str, query: dict[str, str],
                 options: dict[str, Any]) -> PostgresDriver:
        return cls(url, **options)

    # ---- connections ------------------------------------------------------

    def connect(self) -> Any:
        return self._psycopg.Connection.connect(
            self._conninfo, autocommit=self.autocommit,
            prepare_threshold=self.prepare_threshold, **self._factories)

    def status_source(self, conn: Any) -> Any:
        return conn.pgconn

    def probe(self, conn: Any) -> None:
        """Local checks first (libpq status, unread bytes from the server); then,
        unless ``probe="local"``, an empty query: the cheapest round trip."""
        probe_connection(conn, query=self.probe_mode == "query")

    def reset(self, conn: Any) -> bool:
        return reset_connection(conn)

    def is_lost(self, conn: Any) -> bool:
        return bool(conn.pgconn.status != _CONNECTION_OK)

    def classify(self, exc: BaseException) -> ErrorKind:
        return classify_error(exc)

    # ---- messages -----------------------------------------------------------

    def describe(self) -> str:
        p = self.params
        host = p.get("host") or p.get("hostaddr") or "(default socket)"
        where = host if host.startswith("/") else f"{host}:{p.get('port') or 5432}"
        return f"postgresql {where} dbname={p.get('dbname', '')} user={p.get('user', '')}"

    def redact(self, text: str) -> str:
        return self._scrub(text, "")

    def _scrub(self, text: str, conninfo: str) -> str:
        secrets = [self._password]
        with contextlib.suppress(ValueError):
            secrets.append(urlsplit(conninfo).password or "")
        match = _KV_PASSWORD.search(conninfo)
        if match:
            secrets.append(match.group(1).strip("'"))
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        return f"<PostgresDriver {self.describe()}>"


def probe_connection(conn: Any, query: bool = True) -> None:
    """Raise unless the idle psycopg connection ``conn`` is alive: libpq's local
    status, then any bytes the server sent while it was idle (a killed
    backend's FATAL and EOF), then, if ``query``, an empty query."""
    import psycopg

    pgconn = conn.pgconn
    if pgconn.status != _CONNECTION_OK:
        raise psycopg.OperationalError("the connection is closed")
    if pgconn.transaction_status != _TRANS_IDLE:
        raise psycopg.OperationalError("the connection is not idle")
    # An idle connection has nothing to read unless the server spoke: a
    # notification or a parameter change (harmless), or a killed backend's
    # FATAL error and EOF. Peek at it without consuming it.
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        if not pgconn.ssl_in_use:
            with socket.socket(fileno=os.dup(pgconn.socket)) as sock:
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
    if query:
        res = pgconn.exec_(b"")
        if res.status != _PGRES_EMPTY_QUERY or pgconn.status != _CONNECTION_OK:
            raise psycopg.OperationalError(
                f"probe failed: {pgconn.error_message.decode(errors='replace').strip()}")


def reset_connection(conn: Any) -> bool:
    """Roll back what a borrower left open on a psycopg connection; False when
    it cannot be reused (broken, or a result or COPY still streaming)."""
    pgconn = conn.pgconn
    if pgconn.status != _CONNECTION_OK:
        return False
    status = pgconn.transaction_status
    if status in (_TRANS_INTRANS, _TRANS_INERROR):
        try:
            conn.rollback()
        except Exception:
            return False
        return bool(pgconn.transaction_status == _TRANS_IDLE)
    # ACTIVE: a result or a COPY is still streaming; UNKNOWN: broken.
    return bool(status == _TRANS_IDLE)


def _split_own_options(conninfo: str) -> tuple[str, dict[str, str]]:
    """Take fastpool's own options out of a URL's query string (libpq rejects them)."""
    if not conninfo.startswith(("postgresql://", "postgres://")):
        return conninfo, {}
    base, _, query = conninfo.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    own = {k: v for k, v in pairs if k in _OWN}
    if not own:
        return conninfo, {}
    rest = urlencode([(k, v) for k, v in pairs if k not in _OWN])
    return (f"{base}?{rest}" if rest else base), own


def _bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _BOOLS:
        return _BOOLS[value.lower()]
    raise ConfigError(f"postgresql: {name} must be true or false, got {value!r}")


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"postgresql: {name} must be an integer, got {value!r}") from None
