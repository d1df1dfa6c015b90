"""MySQL and MariaDB through mysqlclient (``pip install 'fastpool[mysql]'``).

::

    mysql://app:secret@db:3306/orders?charset=utf8mb4&connect_timeout=5
    mariadb://root@/test?unix_socket=/run/mysqld/mysqld.sock
    create_pool("mysql://db/orders", init_command="SET time_zone='+00:00'", autocommit=True)

Options (URL query or keyword): ``charset`` (default ``utf8mb4``),
``connect_timeout`` (default 10 s), ``read_timeout``, ``write_timeout``,
``init_command``, ``autocommit`` (default off), ``unix_socket``, ``ssl_mode``,
``ssl`` (a dict, keyword only), ``sql_mode``, ``local_infile``, ``compress``,
``auth_plugin``, ``server_public_key_path``, ``client_flag``, ``conv`` and
``cursorclass`` (keyword only), ``probe`` (``"ping"``: local checks then
``ping()``, the default; ``"local"``: local checks only).

When a connection comes back, the pool reads the server status flags of its
last reply locally (``fastpool._mysqlstatus``, no round trip): idle goes
straight back to the ring, an open transaction is rolled back, a connection
whose socket the client dropped (errors 2006/2013) is discarded. Without
MariaDB Connector/C (mysqlclient built on Oracle's libmysqlclient), every
return rolls back, as other pools do.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from fastpool._loader import load_extension
from fastpool.drivers.base import (
    AsyncDriver,
    Driver,
    DriverBase,
    classify_os_error,
    mask,
    option_bool,
    option_int,
    redact_url,
    wait_readable,
)
from fastpool.drivers.client import CAPABILITIES, AsyncClient, Client, ClientBase
from fastpool.errors import ConfigError, ErrorKind

_INT_OPTIONS = ("connect_timeout", "read_timeout", "write_timeout", "client_flag")
_STR_OPTIONS = ("charset", "init_command", "unix_socket", "ssl_mode", "sql_mode",
                "auth_plugin", "server_public_key_path")
_BOOL_OPTIONS = ("autocommit", "local_infile", "compress")
_OBJECT_OPTIONS = ("ssl", "conv", "cursorclass")  # keyword only
_OPTIONS = frozenset((*_INT_OPTIONS, *_STR_OPTIONS, *_BOOL_OPTIONS, *_OBJECT_OPTIONS,
                      "host", "port", "user", "password", "database", "probe"))

# MySQL / MariaDB error numbers (errmsg.h, mysqld_error.h).
_NOT_CONNECTED = 2006  # with an empty message: mysqlclient's "connection closed" check
# 1927: MariaDB's "Connection was killed"; 1053 server shutdown; 1152/1184
# aborted connection.
_LOST = frozenset({2006, 2013, 2055, 1927, 1053, 1152, 1184})
_INACTIVITY = 4031  # MySQL 8: disconnected for inactivity (MariaDB: a trigger error)
_UNREACHABLE = frozenset({2002, 2003, 2005, 2026})
_UNAVAILABLE = frozenset({1040, 1203, 1226})  # too many connections (server, per user)
_AUTH = frozenset({1045, 1044, 1698, 1251, 1130, 1129, 1820, 1862})
_CONFIG = frozenset({1049, 2059, 2019})
# Deadlock, lock wait timeout (undoes only the statement: roll back first),
# record changed since read (MariaDB), NOWAIT lock, XA deadlock.
_RETRYABLE = frozenset({1213, 1205, 1020, 3572, 1614})

# Server status flags (mysql_com.h).
_SERVER_STATUS_IN_TRANS = 1
_SERVER_STATUS_AUTOCOMMIT = 2
_SERVER_MORE_RESULTS_EXIST = 8
_IDLE, _IN_TRANSACTION, _BROKEN = 0, 1, 2


def _import_mysqldb() -> Any:
    try:
        import MySQLdb
    except ImportError as exc:
        raise ConfigError("mysql:// URLs need mysqlclient: pip install 'fastpool[mysql]' "
                          f"(it builds against libmariadb-dev); import failed: {exc}") from None
    return MySQLdb


def _status_module() -> Any:
    """The compiled status reader, else its ctypes twin (as FASTPOOL_IMPL says)."""
    return load_extension("fastpool._mysqlstatus", "fastpool.drivers._mysqlstatus_py",
                          what="MySQL status reader")


def classify_errno(code: int | None, message: str, *, interface: bool) -> ErrorKind:
    """What a MySQL error number means; shared by mysqlclient, asyncmy and
    aiomysql (``interface``: the client's InterfaceError, raised before sending)."""
    if code is None or code == 0:
        # InterfaceError(0, '') and friends: the client refused before sending.
        return ErrorKind.NOT_SENT if interface else ErrorKind.OTHER
    if code == _NOT_CONNECTED and not message:
        return ErrorKind.NOT_SENT
    if code in _RETRYABLE:
        return ErrorKind.RETRYABLE
    if code in _LOST or (code == _INACTIVITY and "inactivity" in message):
        return ErrorKind.CONNECTION_LOST
    if code in _UNREACHABLE:
        return ErrorKind.UNREACHABLE
    if code in _UNAVAILABLE:
        return ErrorKind.UNAVAILABLE
    if code in _AUTH:
        return ErrorKind.AUTH
    if code in _CONFIG:
        return ErrorKind.CONFIG
    if 2000 <= code < 3000:
        return ErrorKind.OTHER  # other client-side errors (out of sync, ...)
    return ErrorKind.QUERY


#: The packages whose exceptions carry MySQL error numbers (aiomysql raises PyMySQL's).
_MYSQL_PACKAGES = frozenset({"MySQLdb", "asyncmy", "aiomysql", "pymysql"})


def classify_error(exc: BaseException) -> ErrorKind:
    """What a mysqlclient, asyncmy or aiomysql (PyMySQL) exception means; see ErrorKind."""
    if type(exc).__module__.split(".")[0] not in _MYSQL_PACKAGES:
        return classify_os_error(exc)
    args = exc.args
    code = args[0] if args and isinstance(args[0], int) else None
    message = str(args[1]) if len(args) > 1 and args[1] else ""
    interface = any(k.__name__ == "InterfaceError" for k in type(exc).__mro__)
    if any(k.__name__ == "NotSupportedError" for k in type(exc).__mro__):
        return ErrorKind.CONFIG  # an option the client refuses (ssl_mode="bogus")
    if code is None and not interface:
        return ErrorKind.OTHER
    return classify_errno(code, message, interface=interface)


class MySQLSettings(DriverBase):
    """Where and how to connect to MySQL/MariaDB (no I/O), shared by
    ``MySQLDriver`` (mysqlclient) and ``AsyncMySQLDriver`` (asyncmy, aiomysql)."""

    name: ClassVar[str] = "mysql"

    def __init__(self, *, host: str | None = None, port: int | str | None = None,
                 user: str | None = None, password: str | None = None,
                 database: str | None = None, charset: str = "utf8mb4",
                 connect_timeout: int | str | None = 10, autocommit: bool | str = False,
                 probe: str = "ping", **options: Any) -> None:
        self._import_client()
        self._password = password or ""
        for key in options:
            if key not in _OPTIONS:
                raise ConfigError(f"mysql: unknown option {key!r}: neither a pool option nor a "
                                  f"mysql option ({', '.join(sorted(_OPTIONS))})")
        kwargs: dict[str, Any] = {"charset": charset}
        if host:
            if host.startswith("/"):
                kwargs["unix_socket"] = host
            else:
                kwargs["host"] = host
        if port is not None:
            kwargs["port"] = option_int("mysql", "port", port)
            if not 0 < kwargs["port"] < 65536:
                raise ConfigError(f"mysql: port must be 1..65535, got {port!r}")
        if user is not None:
            kwargs["user"] = user
        if password:
            kwargs["password"] = password
        if database:
            kwargs["database"] = database
        if connect_timeout is not None:
            kwargs["connect_timeout"] = option_int("mysql", "connect_timeout", connect_timeout,
                                                   0)
        for key, value in options.items():
            if value is None:
                continue
            if key in _INT_OPTIONS:  # seconds and flags: never negative
                kwargs[key] = option_int("mysql", key, value, 0)
            elif key in _BOOL_OPTIONS:
                kwargs[key] = option_bool("mysql", key, value)
            else:
                kwargs[key] = value
        self.autocommit = option_bool("mysql", "autocommit", autocommit)
        kwargs["autocommit"] = self.autocommit
        if probe not in ("ping", "local"):
            raise ConfigError(f"mysql: probe must be 'ping' or 'local', got {probe!r}")
        self.probe_mode = probe
        self.params = kwargs

        self._session_ids: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._init_client()

    def _import_client(self) -> None:
        raise NotImplementedError

    def _init_client(self) -> None:
        raise NotImplementedError

    @classmethod
    def from_url(cls, url: str, rest: str, query: dict[str, str],
                 options: dict[str, Any]) -> Any:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConfigError(f"mysql: invalid URL {redact_url(url)!r}: bad host or port "
                              "(expected mysql://user:password@host:3306/database)") from None
        kwargs: dict[str, Any] = {}
        if parts.hostname:
            kwargs["host"] = unquote(parts.hostname)
        if port is not None:
            kwargs["port"] = port
        if parts.username:
            kwargs["user"] = unquote(parts.username)
        if parts.password:
            kwargs["password"] = unquote(parts.password)
        database = unquote(parts.path.lstrip("/"))
        if database:
            kwargs["database"] = database
        for key, value in query.items():
            if key in _OBJECT_OPTIONS or key not in _OPTIONS:
                raise ConfigError(f"mysql: unknown URL option {key!r}; known: "
                                  f"{', '.join(sorted(_OPTIONS - set(_OBJECT_OPTIONS)))}")
            kwargs[key] = value
        kwargs.update(options)
        return cls(**kwargs)

    def session_id(self, conn: Any) -> int | None:
        return self._session_ids.get(conn)

    # ---- messages -----------------------------------------------------------

    def describe(self) -> str:
        p = self.params
        where = p.get("unix_socket") or f"{p.get('host', 'localhost')}:{p.get('port', 3306)}"
        return f"mysql {where} database={p.get('database', '')} user={p.get('user', '')}"

    def redact(self, text: str) -> str:
        return mask(text, [self._password])

    def is_fatal(self, exc: BaseException) -> bool:
        """At connect time, any refusal by the server itself (bad init_command,
        sql_mode, charset...) will not fix itself, beyond the known kinds."""
        if super().is_fatal(exc):
            return True
        kind = classify_error(exc)
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        return kind is ErrorKind.QUERY and 0 < code < 2000

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


_ACTIVITY_SQL = ("SELECT id AS session_id, command, state, info AS query, time AS state_seconds,"
                 " user, host AS client, db AS `database`"
                 " FROM information_schema.processlist WHERE id IN ({marks}) ORDER BY id")


class MySQLDriver(MySQLSettings, Driver):
    """Connections to a MySQL or MariaDB server through mysqlclient."""

    def _import_client(self) -> None:
        self._mysqldb = _import_mysqldb()

    def _init_client(self) -> None:
        self.client: MySQLdbClient = MySQLdbClient(multi_statements=True)

    def connect(self) -> Any:
        conn = self._mysqldb.connect(**self.params)
        # Read now: mysqlclient refuses calls on a connection another thread
        # is using, and server_activity() asks about connections in use.
        self._session_ids[conn] = int(conn.thread_id())
        return conn

    def probe(self, conn: Any, timeout: float | None = None) -> None:
        """Local checks (socket dropped, bytes the server sent unasked: a KILL or
        shutdown notice), then ``ping()`` unless ``probe="local"``. mysqlclient
        has no per-call timeout: ``read_timeout`` bounds the ping."""
        probe_connection(conn, self.client.status, ping=self.probe_mode == "ping")

    def server_activity(self, session_ids: list[int]) -> list[dict[str, Any]]:
        if not session_ids:
            return []
        marks = ", ".join(["%s"] * len(session_ids))
        return self.query_dicts(_ACTIVITY_SQL.format(marks=marks), tuple(session_ids))


#: mysqlclient's option names the asyncio clients take, and under which name
#: (None: not supported by that client).
_ASYNC_OPTIONS: dict[str, dict[str, str | None]] = {
    "asyncmy": {"read_timeout": "read_timeout", "write_timeout": None, "ssl_mode": None,
                "compress": None, "auth_plugin": None, "server_public_key_path": None,
                "cursorclass": "cursor_cls"},
    "aiomysql": {"read_timeout": None, "write_timeout": None, "ssl_mode": None,
                 "compress": None, "server_public_key_path": None, "database": "db"},
}
#: Which asyncio MySQL client ``mysql://`` means (measured: asyncmy does 2x the
#: SELECT 1 rate of aiomysql and 6x its 100-row fetches, and its local
#: transaction status also sees transactions a SELECT opened).
DEFAULT_ASYNC_CLIENT = "asyncmy"


def _import_async(library: str) -> Any:
    import importlib

    try:
        return importlib.import_module(library)
    except ImportError as exc:
        raise ConfigError(f"mysql+{library}:// needs {library}: pip install "
                          f"'fastpool[{library}]'; import failed: {exc}") from None


class AsyncMySQLDriver(MySQLSettings, AsyncDriver):
    """Connections to a MySQL or MariaDB server through asyncmy (the default)
    or aiomysql (``library=``): the same URL and options as ``MySQLDriver``,
    less those the client lacks (a clear ConfigError names them)."""

    def __init__(self, *, library: str = DEFAULT_ASYNC_CLIENT, **kwargs: Any) -> None:
        if library not in _ASYNC_OPTIONS:
            raise ConfigError(f"mysql: unknown asyncio client {library!r}; "
                              f"known: {', '.join(sorted(_ASYNC_OPTIONS))}")
        self.library = library
        super().__init__(**kwargs)
        renames = _ASYNC_OPTIONS[library]
        params: dict[str, Any] = {}
        for key, value in self.params.items():
            target = renames.get(key, key)
            if target is None:
                raise ConfigError(f"mysql: {library} has no {key!r} option "
                                  f"(mysqlclient has: use fastpool.Pool with mysql://)")
            params[target] = value
        self.async_params = params

    def _import_client(self) -> None:
        self._module = _import_async(self.library)

    def _init_client(self) -> None:
        self.client: AsyncMySQLClient = AsyncMySQLClient(self.library)

    async def connect(self) -> Any:
        conn = await self._module.connect(**self.async_params)
        self._session_ids[conn] = self.client.session_id(conn) or 0
        self.client.status_source(conn)  # aiomysql: count statements from here (configure's too)
        return conn

    async def probe(self, conn: Any, timeout: float | None = None) -> None:
        """Local checks, then ``ping()`` unless ``probe="local"``."""
        if self.probe_mode == "ping":
            await self.client.probe(conn, timeout)
        elif self.client.is_lost(conn):
            raise _lost_error(conn, "the server closed the connection while it was idle")

    async def server_activity(self, session_ids: list[int]) -> list[dict[str, Any]]:
        if not session_ids:
            return []
        marks = ", ".join(["%s"] * len(session_ids))
        return await self.query_dicts(_ACTIVITY_SQL.format(marks=marks), tuple(session_ids))

    def describe(self) -> str:
        return f"{super().describe()} ({self.library})"


class MySQLLocal(ClientBase):
    """What fastpool knows locally about MySQL/MariaDB clients (mysqlclient,
    asyncmy, aiomysql): the kind, the dialect, the error numbers, and the
    status convention: ``status_source(conn).trans`` is 0 when idle
    (``IDLE``), 1 with a transaction open (``IN_TRANSACTION``), 2 when the
    client dropped the socket (``BROKEN``)."""

    kind = "mysql"
    dialect = "mysql"
    paramstyle = "format"
    capabilities = frozenset(CAPABILITIES)
    idle_status = _IDLE

    def classify(self, exc: BaseException) -> ErrorKind:
        return classify_error(exc)


class MySQLdbClient(MySQLLocal, Client):
    """mysqlclient connections (see ``fastpool.drivers.client``).

    The transaction status is the server status flags of the last reply, read
    locally through MariaDB Connector/C (``fastpool._mysqlstatus``); without
    it (Oracle's libmysqlclient) the client has none and every return rolls
    back. Transactions: BEGIN is sent only on an autocommit connection;
    otherwise the first statement opens the transaction (so a
    ``SET TRANSACTION ISOLATION LEVEL ...`` first still applies).
    """

    def __init__(self, *, multi_statements: bool = False) -> None:
        super().__init__("mysqlclient")
        #: Connections have multi-statements on (the MySQL URL driver's do:
        #: mysqlclient's default), so a COMMIT can ride in a statement's packet.
        self.multi_statements = multi_statements
        #: The bound status reader module, or None.
        self.status: Any = status_reader()
        if self.status is not None:
            self.status_attr = "trans"

    def status_source(self, conn: Any) -> Any:
        if self.status is None:
            return conn
        return self.status.ServerStatus(conn)

    def begin(self, conn: Any, *, write: bool = False) -> None:
        if conn.get_autocommit():
            conn.begin()

    def probe(self, conn: Any, timeout: float | None = None) -> None:
        probe_connection(conn, self.status)

    def reset(self, conn: Any) -> bool:
        return reset_connection(conn, self.status)

    def is_lost(self, conn: Any) -> bool:
        return lost_connection(conn, self.status)

    def session_id(self, conn: Any) -> int | None:
        return int(conn.thread_id())


class PyMySQLStatus:
    """The local transaction status of an asyncmy or aiomysql connection, in
    ``MySQLLocal``'s convention, from the flags of the server's last reply
    (``conn.server_status``, no round trip) and the stream's local state.

    aiomysql (like PyMySQL) takes the flags from OK packets only, never from a
    result set, so a SELECT that opens a transaction (autocommit off) goes
    unseen in the flags. For aiomysql the statements themselves are counted
    instead: its connection's ``_execute_command`` (through which every
    statement goes) is wrapped to count ``COM_QUERY``s, and to note the last
    ``COMMIT`` or ``ROLLBACK`` (``conn.commit()``/``rollback()``, the pool's
    reset). Outside autocommit, a connection that has run a statement since
    then, or since it was opened, counts as in a transaction: rolled back on
    return, never lent as is; one that has not reads idle (a ping, a
    ``select_db`` open nothing and are not counted). A connection from a
    user's factory is counted from the pool's first look at it. asyncmy reads
    result sets too (it skips a status of 0, which can only make it report
    "busy" too long: a ROLLBACK on return, never a missed transaction). After
    an error the flags are the last OK packet's: again "busy" at worst.
    """

    __slots__ = ("_broken", "_conn", "_strict", "clean_at", "sent")

    def __init__(self, conn: Any, *, trust_result_sets: bool) -> None:
        self._conn = conn
        self._strict = not trust_result_sets
        self._broken = _asyncmy_broken if trust_result_sets else _aiomysql_broken
        self.sent = self.clean_at = 0
        if self._strict:
            send = conn._execute_command
            status = self

            async def counted(command: int, sql: Any) -> Any:
                if command == _COM_QUERY:
                    status.sent += 1
                    if sql in _ENDS:
                        status.clean_at = status.sent
                return await send(command, sql)

            conn._execute_command = counted

    @property
    def trans(self) -> int:
        conn = self._conn
        if self._broken(conn):
            return _BROKEN
        flags = conn.server_status
        if flags & (_SERVER_STATUS_IN_TRANS | _SERVER_MORE_RESULTS_EXIST):
            return _IN_TRANSACTION
        if (self._strict and not flags & _SERVER_STATUS_AUTOCOMMIT
                and self.sent != self.clean_at):
            return _IN_TRANSACTION
        return _IDLE


#: MySQL's COM_QUERY command byte, and the statements aiomysql's
#: ``commit()``/``rollback()`` send with it: after either, no transaction is open.
_COM_QUERY = 3
_ENDS = frozenset({"COMMIT", "ROLLBACK", b"COMMIT", b"ROLLBACK"})


def _asyncmy_broken(conn: Any) -> bool:
    """Closed, broken, or a command's reply not read yet: a statement still
    running (a task holding a reference after its release, or cancelled
    mid-statement) that the flags of the last reply cannot show. Such a
    connection cannot be rolled back or lent (its next reader would take the
    other statement's reply): it is discarded."""
    if not conn.connected or conn._stream_broken:
        return True
    proto = conn._proto
    return proto is not None and (
        getattr(proto, "_read_waiter", None) is not None
        or getattr(proto, "_drain_waiter", None) is not None
        or getattr(proto, "length", 0) != getattr(proto, "pos", 0))


def _aiomysql_broken(conn: Any) -> bool:
    reader = conn._reader
    return bool(conn.closed or reader is None or reader.at_eof())


class AsyncMySQLClient(MySQLLocal, AsyncClient):
    """asyncmy and aiomysql connections (``name`` says which): ``MySQLLocal``'s
    rules, the status read by ``PyMySQLStatus``, the I/O awaited.
    Transactions: BEGIN is sent only on an autocommit connection, as with
    mysqlclient."""

    status_attr = "trans"

    def __init__(self, library: str = "asyncmy") -> None:
        if library not in ("asyncmy", "aiomysql"):
            raise ConfigError(f"mysql: unknown asyncio client {library!r} (asyncmy or aiomysql)")
        super().__init__(library)
        self._asyncmy = library == "asyncmy"

    def status_source(self, conn: Any) -> Any:
        if self._asyncmy:
            return PyMySQLStatus(conn, trust_result_sets=True)
        status = getattr(conn, "_fastpool_status", None)
        if status is None:  # one per connection: it counts the statements sent
            status = conn._fastpool_status = PyMySQLStatus(conn, trust_result_sets=False)
        return status

    def is_lost(self, conn: Any) -> bool:
        return _asyncmy_broken(conn) if self._asyncmy else _aiomysql_broken(conn)

    def session_id(self, conn: Any) -> int | None:
        tid = conn.thread_id
        return int(tid() if callable(tid) else tid)

    async def begin(self, conn: Any, *, write: bool = False) -> None:
        if conn.get_autocommit():
            await conn.begin()

    async def probe(self, conn: Any, timeout: float | None = None) -> None:
        """Local checks (the stream broke or hit EOF: a KILL or shutdown), then
        ``ping()`` without reconnecting, within ``timeout`` (default 5 s)."""
        if self.is_lost(conn):
            raise _lost_error(conn, "the server closed the connection while it was idle")
        await asyncio.wait_for(conn.ping(reconnect=False), 5.0 if timeout is None else timeout)

    async def reset(self, conn: Any) -> bool:
        if self.is_lost(conn):
            return False
        try:
            await conn.rollback()
        except Exception:
            return False
        return not self.is_lost(conn)

    def abandon(self, conn: Any) -> None:
        conn.close()  # asyncmy's and aiomysql's close() drop the socket at once

    async def close(self, conn: Any) -> None:
        """COM_QUIT on a live connection, else just drop the transport."""
        if self.is_lost(conn):
            conn.close()
            return
        try:
            await conn.ensure_closed()
        except BaseException:
            conn.close()
            raise

    async def fetch_dicts(self, conn: Any, sql: str, params: Any) -> list[dict[str, Any]]:
        async with conn.cursor() as cur:
            await cur.execute(sql, params)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


def _lost_error(conn: Any, message: str) -> Exception:
    """The client library's own OperationalError 2013 (classified CONNECTION_LOST)."""
    import sys

    module = sys.modules.get(type(conn).__module__.split(".")[0] + ".errors") \
        or sys.modules.get("pymysql.err")
    klass = getattr(module, "OperationalError", None)
    return klass(2013, message) if klass is not None else ConnectionError(message)


def status_reader() -> Any:
    """The bound status-reader module (compiled or ctypes), or None when the
    client library has no ``mariadb_get_info`` (Oracle's libmysqlclient)."""
    import MySQLdb._mysql as native

    status = _status_module()
    if hasattr(native.connection, "_get_native_connection") and status.bind(native.__file__):
        return status
    return None


def probe_connection(conn: Any, status: Any, ping: bool = True) -> None:
    """Raise unless the idle mysqlclient connection ``conn`` is alive."""
    import MySQLdb

    if not conn.open:
        raise MySQLdb.OperationalError(2006, "connection closed")
    if status is not None:
        reader = status.ServerStatus(conn)
        fd = reader.socket
        if fd < 0 or reader.trans == status.BROKEN:
            raise MySQLdb.OperationalError(2006, "Server has gone away")
        if wait_readable(fd, 0.0):
            # An idle MySQL connection is never sent anything unasked.
            raise MySQLdb.OperationalError(
                2013, "the server closed the connection (or sent an error) while idle")
    if ping:
        conn.ping()


def reset_connection(conn: Any, status: Any) -> bool:
    """Roll back; False when ``conn`` cannot be reused."""
    if not conn.open:
        return False
    if status is not None and status.ServerStatus(conn).trans == status.BROKEN:
        return False  # the client dropped the socket: 2006/2013 happened
    try:
        conn.rollback()
    except Exception:
        return False
    return True


def lost_connection(conn: Any, status: Any) -> bool:
    if not conn.open:
        return True
    return status is not None and status.ServerStatus(conn).socket < 0
