"""SQLite through the standard library's sqlite3: the zero-setup default.

``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` or
``sqlite:///:memory:``, with options in the query string::

    sqlite:///app.db?timeout=5&journal_mode=wal&synchronous=normal&foreign_keys=on

Every pooled connection is opened with ``check_same_thread=False`` (the pool
guarantees a single user at a time), a busy timeout, and WAL journaling for
files. ``:memory:`` becomes one in-memory database shared by all of the pool's
connections (SQLite's ``memdb`` VFS), kept alive while the pool is open.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
from typing import Any, ClassVar

from fastpool.drivers.base import AsyncDriver, Driver, DriverBase, option_bool
from fastpool.drivers.client import CAPABILITIES, AsyncClient, Client, ClientBase
from fastpool.errors import ConfigError, ErrorKind
from fastpool.options import seconds

_JOURNAL_MODES = {"wal", "delete", "truncate", "persist", "memory", "off"}
_SYNC_MODES = {"off", "normal", "full", "extra"}
_memdb_names = itertools.count(1)
# memdb with a shared "/name" needs SQLite 3.36; before that, a shared cache.
_HAS_MEMDB = sqlite3.sqlite_version_info >= (3, 36, 0)


#: sqlite3.connect's refusals that will not fix themselves: a missing
#: directory, a file that is not a database, a URI's options (``mode=``,
#: ``cache=``, ``vfs=``, a host in the authority).
_UNFIXABLE = ("unable to open database file", "file is not a database", "no such access mode",
              "no such cache mode", "no such vfs", "invalid uri authority")


def unfixable_sqlite_error(exc: BaseException) -> bool:
    """A missing directory, a file that is not a database or a bad URI option
    will not fix itself."""
    msg = str(exc).lower()
    return isinstance(exc, sqlite3.DatabaseError) and any(m in msg for m in _UNFIXABLE)


_ISOLATION_LEVELS = {"", "DEFERRED", "IMMEDIATE", "EXCLUSIVE"}


class SQLiteSettings(DriverBase):
    """Which SQLite database and how to open it (shared by ``SQLiteDriver``
    and ``AiosqliteDriver``)."""

    name: ClassVar[str] = "sqlite"

    def __init__(self, database: str, *, timeout: float = 5.0, journal_mode: str | None = "wal",
                 synchronous: str | None = None, foreign_keys: bool | None = None,
                 isolation_level: str | None = "") -> None:
        if not isinstance(database, str) or not database:
            raise ConfigError(f"sqlite: database must be a non-empty path, got {database!r}")
        seconds("timeout", timeout, owner="sqlite")
        if journal_mode is not None and journal_mode.lower() not in _JOURNAL_MODES:
            raise ConfigError(f"sqlite: journal_mode must be one of {sorted(_JOURNAL_MODES)}, "
                              f"got {journal_mode!r}")
        if isolation_level is not None and isolation_level.upper() not in _ISOLATION_LEVELS:
            raise ConfigError("sqlite: isolation_level must be one of deferred, immediate, "
                              f"exclusive or autocommit, got {isolation_level!r}")
        if synchronous is not None and synchronous.lower() not in _SYNC_MODES:
            raise ConfigError(f"sqlite: synchronous must be one of {sorted(_SYNC_MODES)}, "
                              f"got {synchronous!r}")
        self.memory = database == ":memory:"
        self.database = database
        self.timeout = float(timeout)
        self.journal_mode = journal_mode
        self.synchronous = synchronous
        self.foreign_keys = foreign_keys
        self.isolation_level = isolation_level
        self._keeper: sqlite3.Connection | None = None
        self._init_client()
        if self.memory:
            if _HAS_MEMDB:
                self._target = f"file:/fastpool-{os.getpid()}-{next(_memdb_names)}?vfs=memdb"
            else:
                self._target = f"file:fastpool-{os.getpid()}-{next(_memdb_names)}" \
                               "?mode=memory&cache=shared"
            # The shared in-memory database lives as long as one connection to
            # it is open: keep one outside the pool so that shrinking or
            # draining the pool to zero connections does not wipe the data.
            self._keeper = self._open()
        else:
            self._target = database

    @classmethod
    def from_url(cls, url: str, rest: str, query: dict[str, str],
                 options: dict[str, Any] | None = None) -> Any:
        # sqlite:///x.db -> rest "/x.db" -> "x.db"; sqlite:////abs -> "/abs".
        if rest.startswith("//"):
            rest = rest[2:]
            host, _, path = rest.partition("/")
            if host not in ("", "localhost"):
                raise ConfigError(f"sqlite URL must have no host: {url!r} "
                                  "(use sqlite:///relative.db or sqlite:////absolute.db)")
            database = path
        else:
            database = rest
        if not database:
            raise ConfigError(f"sqlite URL names no database: {url!r} "
                              "(use sqlite:///file.db or sqlite:///:memory:)")
        kwargs: dict[str, Any] = {}
        for key, value in query.items():
            if key == "timeout":
                try:
                    kwargs["timeout"] = float(value)
                except ValueError:
                    raise ConfigError(f"sqlite: timeout must be a number, got {value!r}") from None
            elif key in ("journal_mode", "synchronous"):
                kwargs[key] = None if value.lower() == "default" else value
            elif key == "foreign_keys":
                kwargs[key] = option_bool("sqlite", "foreign_keys", value)
            elif key == "isolation_level":
                kwargs[key] = None if value.lower() == "autocommit" else value.upper()
            else:
                raise ConfigError(f"sqlite: unknown URL option {key!r}; known: timeout, "
                                  "journal_mode, synchronous, foreign_keys, isolation_level")
        for key, value in (options or {}).items():
            if key not in ("timeout", "journal_mode", "synchronous", "foreign_keys",
                           "isolation_level"):
                raise ConfigError(f"sqlite: unknown option {key!r}: neither a pool option nor "
                                  "a sqlite option (timeout, journal_mode, synchronous, "
                                  "foreign_keys, isolation_level)")
            kwargs[key] = value
        return cls(database, **kwargs)

    def _init_client(self) -> None:
        raise NotImplementedError

    def _connect_args(self) -> dict[str, Any]:
        return {"database": self._target, "timeout": self.timeout, "check_same_thread": False,
                "isolation_level": self.isolation_level, "uri": self.memory}

    def _pragmas(self) -> list[str]:
        """The statements every new connection runs first."""
        found = []
        if self.journal_mode and not self.memory:
            found.append(f"PRAGMA journal_mode={self.journal_mode}")
        if self.synchronous:
            found.append(f"PRAGMA synchronous={self.synchronous}")
        if self.foreign_keys is not None:
            found.append(f"PRAGMA foreign_keys={'ON' if self.foreign_keys else 'OFF'}")
        return found

    def _open(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = sqlite3.connect(**self._connect_args())
        try:
            for pragma in self._pragmas():
                conn.execute(pragma)
        except BaseException:
            conn.close()
            raise
        return conn

    def _close_keeper(self) -> None:
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None

    def describe(self) -> str:
        return "sqlite :memory: (shared)" if self.memory else f"sqlite {self.database}"


class SQLiteDriver(SQLiteSettings, Driver):
    """Connections to one SQLite database file (or one shared in-memory database)."""

    def _init_client(self) -> None:
        self.client: SQLiteClient = SQLiteClient()

    def connect(self) -> sqlite3.Connection:
        return self._open()

    def close_pool(self) -> None:
        self._close_keeper()


def _import_aiosqlite() -> Any:
    try:
        import aiosqlite
    except ImportError as exc:
        raise ConfigError("sqlite+aiosqlite:// (sqlite:// in an asyncio pool) needs aiosqlite: "
                          f"pip install 'fastpool[aiosqlite]'; import failed: {exc}") from None
    return aiosqlite


class AiosqliteDriver(SQLiteSettings, AsyncDriver):
    """aiosqlite connections to one SQLite database file (or one shared
    in-memory database): the same URL and options as ``SQLiteDriver``."""

    def __init__(self, database: str, **kwargs: Any) -> None:
        self._aiosqlite = _import_aiosqlite()
        super().__init__(database, **kwargs)

    def _init_client(self) -> None:
        self.client: AiosqliteClient = AiosqliteClient()

    async def connect(self) -> Any:
        conn = await self._aiosqlite.connect(**self._connect_args())
        try:
            for pragma in self._pragmas():
                await (await conn.execute(pragma)).close()
        except BaseException:
            await conn.close()
            raise
        return conn

    async def close_pool(self) -> None:
        self._close_keeper()


def classify_sqlite_error(exc: BaseException) -> ErrorKind:
    """What an sqlite3 exception means; see ErrorKind."""
    if unfixable_sqlite_error(exc):
        return ErrorKind.CONFIG
    if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
        return ErrorKind.NOT_SENT
    if isinstance(exc, sqlite3.OperationalError) and (
            "database is locked" in str(exc) or "database table is locked" in str(exc)):
        return ErrorKind.RETRYABLE  # SQLITE_BUSY / SQLITE_LOCKED after the busy timeout
    if isinstance(exc, sqlite3.Error):
        return ErrorKind.QUERY
    return ErrorKind.OTHER


def begin_statement(raw: sqlite3.Connection, write: bool) -> str | None:
    """The BEGIN to send on sqlite3 connection ``raw`` (None: a transaction is
    open already): the connection's isolation level (DEFERRED, IMMEDIATE or
    EXCLUSIVE), or IMMEDIATE for a transaction known to write, so that it
    waits in the busy handler rather than failing a lock upgrade."""
    if raw.in_transaction:
        return None
    level = (raw.isolation_level or "").upper()
    if write and level in ("", "DEFERRED"):
        level = "IMMEDIATE"
    return f"BEGIN {level}"


def end_statement(raw: sqlite3.Connection, verb: str) -> str | None:
    """How to end the transaction on ``raw`` with ``verb`` (COMMIT or ROLLBACK):
    None: call the module's own ``commit()`` / ``rollback()``; otherwise (3.12's
    ``autocommit=True``, where those do nothing) the statement to send, or ""
    when no transaction is open."""
    if getattr(raw, "autocommit", None) is True:
        return verb if raw.in_transaction else ""
    return None


class SQLiteLocal(ClientBase):
    """What fastpool knows locally about SQLite connections, sqlite3 or aiosqlite.

    ``in_transaction`` is the local status. Transactions are opened with an
    explicit ``BEGIN`` (``begin_statement``); one known to write (the
    batcher's) takes the write lock up front with ``BEGIN IMMEDIATE``. A
    transaction the module already opened (Python 3.12's ``autocommit=False``)
    is used as it is. With 3.12's ``autocommit=True`` the module's
    ``commit()`` and ``rollback()`` do nothing: COMMIT and ROLLBACK are sent
    as statements (``end_statement``).
    """

    kind = "sqlite"
    dialect = "sqlite"
    paramstyle = "qmark"
    capabilities = frozenset(CAPABILITIES)
    status_attr = "in_transaction"
    idle_status = False

    def classify(self, exc: BaseException) -> ErrorKind:
        return classify_sqlite_error(exc)


class SQLiteClient(SQLiteLocal, Client):
    """sqlite3 connections (see ``SQLiteLocal`` and ``fastpool.drivers.client``)."""

    def __init__(self) -> None:
        super().__init__("sqlite3")

    def begin(self, conn: Any, *, write: bool = False) -> None:
        sql = begin_statement(conn, write)
        if sql is not None:
            conn.execute(sql)

    def commit(self, conn: Any) -> None:
        self._end(conn, "COMMIT")

    def rollback(self, conn: Any) -> None:
        self._end(conn, "ROLLBACK")

    @staticmethod
    def _end(conn: Any, verb: str) -> None:
        sql = end_statement(conn, verb)
        if sql is None:
            getattr(conn, verb.lower())()
        elif sql:
            conn.execute(sql)

    def probe(self, conn: Any, timeout: float | None = None) -> None:
        conn.execute("SELECT 1").fetchone()


class AiosqliteStatus:
    """What the core reads for an aiosqlite connection: ``in_transaction`` is
    True while the sqlite3 connection underneath has a transaction open, or
    while a statement sent to aiosqlite's thread has not finished there: a
    task cancelled while awaiting it does not stop it (a ``BEGIN`` cancelled
    on its way still opens a transaction, later). The connection's
    ``_execute`` (through which aiosqlite sends everything to its thread) is
    wrapped to count: ``started`` is written only on the loop's thread,
    ``finished`` only on aiosqlite's, so neither count loses an update."""

    __slots__ = ("finished", "raw", "started")

    def __init__(self, conn: Any) -> None:
        self.raw = conn._connection
        self.started = 0
        self.finished = 0
        send = conn._execute
        status = self

        async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
            job = [fn, args, kwargs]
            outcome: list[tuple[bool, Any]] = []
            gone: list[bool] = []  # the awaiting task left: nobody empties the box

            def run() -> list[tuple[bool, Any]]:
                # aiosqlite's thread keeps the last function it ran and that
                # call's future until it gets the next one: neither may keep the
                # connection alive, or the pool could never tell that a borrower
                # dropped it (PoolPolicy._let_go). So the function is cleared
                # once taken, and the outcome travels in a box emptied on the
                # loop's side: an error kept by that future would keep, through
                # its traceback, every frame it was raised through (the
                # borrower's, holding the connection). The error leaves
                # without this frame (which holds the box: a cycle) and
                # without the call (a bound method of the connection); when
                # the awaiting task is gone (cancelled), the box is emptied
                # here or there, whichever side comes last.
                try:
                    call, call_args, call_kwargs = job
                    job.clear()
                    try:
                        outcome.append((True, call(*call_args, **call_kwargs)))
                    except BaseException as exc:  # as aiosqlite's thread does
                        tb = exc.__traceback__
                        outcome.append((False, exc.with_traceback(tb and tb.tb_next)))
                        tb = None
                    finally:
                        call = call_args = call_kwargs = None
                    if gone:
                        outcome.clear()
                    return outcome
                finally:
                    status.finished += 1

            status.started += 1
            try:
                box = await send(run)
            except BaseException:
                gone.append(True)
                outcome.clear()
                if not conn._running or conn._connection is None:
                    status.finished = status.started  # closed: nothing will run
                raise
            ok, value = box.pop()
            if ok:
                return value
            try:
                raise value
            finally:
                value = None

        conn._execute = counted

    @property
    def pending(self) -> bool:
        return self.started != self.finished

    @property
    def in_transaction(self) -> bool:
        return self.started != self.finished or bool(self.raw.in_transaction)


class AiosqliteClient(SQLiteLocal, AsyncClient):
    """aiosqlite connections: ``SQLiteLocal``'s rules on the sqlite3 connection
    underneath (``conn._connection``), read from the event loop's thread
    through ``AiosqliteStatus`` (the sqlite3 getter has no same-thread check
    and reads one flag)."""

    def __init__(self) -> None:
        super().__init__("aiosqlite")

    def status_source(self, conn: Any) -> Any:
        status = getattr(conn, "_fastpool_status", None)
        if status is None:
            status = conn._fastpool_status = AiosqliteStatus(conn)
        return status

    def abandon(self, conn: Any) -> None:
        """What aiosqlite's ``stop()`` does, minus the future it would make on a
        loop that is going away: its thread closes the sqlite3 connection and
        exits (it is not a daemon thread: left running, the process could not
        exit)."""
        import aiosqlite.core

        raw, conn._connection, conn._running = conn._connection, None, False

        def close_and_stop() -> Any:
            if raw is not None:
                raw.close()
            return aiosqlite.core._STOP_RUNNING_SENTINEL

        conn._tx.put_nowait((None, close_and_stop))

    async def reset(self, conn: Any) -> bool:
        """Wait for what a cancelled borrower left running in aiosqlite's
        thread (a no-op queued behind it), then roll back what is open."""
        status = self.status_source(conn)
        if status.pending:
            try:
                await conn._execute(lambda: None)
            except Exception:
                return False
        return await super().reset(conn)

    def is_lost(self, conn: Any) -> bool:
        return conn._connection is None

    async def begin(self, conn: Any, *, write: bool = False) -> None:
        sql = begin_statement(conn._connection, write)
        if sql is not None:
            await (await conn.execute(sql)).close()

    async def commit(self, conn: Any) -> None:
        await self._end(conn, "COMMIT")

    async def rollback(self, conn: Any) -> None:
        await self._end(conn, "ROLLBACK")

    @staticmethod
    async def _end(conn: Any, verb: str) -> None:
        sql = end_statement(conn._connection, verb)
        if sql is None:
            await getattr(conn, verb.lower())()
        elif sql:
            await (await conn.execute(sql)).close()

    async def probe(self, conn: Any, timeout: float | None = None) -> None:
        if conn._connection is None:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        await asyncio.wait_for(conn.execute_fetchall("SELECT 1"),
                               5.0 if timeout is None else timeout)

    async def fetch_dicts(self, conn: Any, sql: str, params: Any) -> list[dict[str, Any]]:
        async with conn.execute(sql, params) as cur:
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]
