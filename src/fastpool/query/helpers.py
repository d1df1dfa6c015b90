"""The query helpers: ``pool.execute/fetch/fetchrow/fetchval/executemany``.

Each helper takes a connection, runs one statement, fetches, and gives the
connection back, with the statement cache, the result cache, the N+1 guard and
the slow-query log applied. Outside a transaction the statement runs on its
own (autocommit on PostgreSQL, switched locally without a round trip; a COMMIT
when the session left a transaction open on MySQL/MariaDB and SQLite), so a
helper costs one round trip, not BEGIN + statement + COMMIT.

Inside a transaction the helpers take the native connection::

    def move(conn):
        pool.execute("UPDATE acct SET n = n - 1 WHERE id = %s", (1,), conn=conn)
        pool.execute("UPDATE acct SET n = n + 1 WHERE id = %s", (2,), conn=conn)
    pool.transaction(move)

and so never wrap it: ``conn`` stays the driver's own object.

SQL errors pass through as the driver's exception, the connection going back
to the pool healthy. A statement lost with its connection is run again on
another connection only when nothing was sent (``NOT_SENT``): a statement lost
in flight is not, even a SELECT (it may call a function that writes). A
PostgreSQL plan that went stale under a prepared
statement (a table dropped and re-created with other columns) is prepared
again and the statement re-run once.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from fastpool.errors import ConfigError, ErrorKind
from fastpool.options import integer, seconds
from fastpool.query.observe import QueryObserver
from fastpool.query.results import ResultCache, cache_key, fold_names
from fastpool.query.statements import StatementCache
from fastpool.sqltext.tables import ANY, Access, access
from fastpool.transaction import RetryStats

if TYPE_CHECKING:
    from fastpool.drivers.client import Client
    from fastpool.source import ConnectionSource

__all__ = ["EXEC", "FETCH", "MANY", "ROW", "VAL", "QueryLayer"]

R = TypeVar("R")

EXEC, FETCH, ROW, VAL, MANY = "execute", "fetch", "fetchrow", "fetchval", "executemany"
_PREPARABLE = re.compile(r"\s*(?:select|insert|update|delete|with|values|merge|table|replace)\b",
                         re.IGNORECASE)
_INFO_CACHE_SIZE = 4096
_NO_TABLES: frozenset[str] = frozenset()
_ANY_TABLE = frozenset({ANY})

# psycopg's PGconn transaction status IDLE.
_PQ_IDLE = 0


class _Info:
    """What fastpool needs to know about one SQL text, computed once."""

    __slots__ = ("access", "prepare", "writes")

    def __init__(self, sql: str, dialect: str | None, track_writes: bool) -> None:
        self.prepare = bool(_PREPARABLE.match(sql))
        self.access: Access | None = None
        self.writes = _NO_TABLES
        # A lone SELECT writes nothing fastpool could see (a function it calls
        # is invisible to any parser); anything else is parsed once.
        if track_writes and (";" in sql or not re.match(r"\s*select\b", sql, re.IGNORECASE)):
            self.access = access(sql, dialect)
            self.writes = self.access.writes

    def reads(self, sql: str, dialect: str | None) -> frozenset[str]:
        """The tables read; ANY when none is named (``SELECT f()`` may read any)."""
        if self.access is None:
            self.access = access(sql, dialect)
        return self.access.reads or _ANY_TABLE


def _value(row: Any) -> Any:
    if row is None:
        return None
    if isinstance(row, dict):
        return next(iter(row.values()), None)
    return row[0]


def _extract(kind: str, cur: Any) -> Any:
    if kind is FETCH:
        rows = cur.fetchall()
        return rows if type(rows) is list else list(rows)  # mysqlclient gives a tuple
    if kind is ROW:
        return cur.fetchone()
    if kind is VAL:
        return _value(cur.fetchone())
    return cur.rowcount


def _switch_flag(conn: Any, on: bool) -> None:
    """psycopg's own autocommit flag, set directly: the connection is idle (the
    pool lends no other), which is all the public setter checks, at ~1.6 µs."""
    conn._autocommit = on


def _switch_setter(conn: Any, on: bool) -> None:
    """The public setter, for a psycopg without the flag; not on a broken connection."""
    if on or conn.pgconn.transaction_status == _PQ_IDLE:
        conn.autocommit = on


def _stale_plan(exc: BaseException) -> bool:
    """PostgreSQL's 'cached plan must not change result type' (0A000)."""
    return getattr(exc, "sqlstate", None) == "0A000" and "cached plan" in str(exc)


class QueryLayer:
    """The query helpers' state for one pool: caches, observer, dialect.

    Holds no reference to the pool (the pool holds this; each call is given
    the pool as its connection source), so an abandoned pool is still freed
    by reference counting.
    """

    def __init__(self, *, statement_cache_size: int, result_cache_entries: int,
                 result_cache_bytes: int, slow_query_ms: float | None) -> None:
        self.statements = StatementCache(statement_cache_size)
        integer("result_cache_entries", result_cache_entries, 0)
        self.results: ResultCache | None = (
            ResultCache(result_cache_entries, result_cache_bytes) if result_cache_entries
            else None)
        self.observer: QueryObserver = QueryObserver("pool", slow_query_ms)
        # The client adapter, learnt at the first call (a custom factory's
        # client is known only once it has connected).
        self._client: Client | None = None
        self.dialect: str | None = None
        # Writes made with conn= whose transaction has not ended yet:
        # id(conn) -> (weak ref to conn, tables). Their tables are not cached.
        self._open: dict[int, tuple[Callable[[], Any], set[str]]] = {}
        self._open_lock = threading.Lock()
        self._kind: str | None = None  # the adapter's kind: "postgresql", "mysql"...
        self._pg_flag = False  # psycopg's private _autocommit flag is there
        self._mysql_multi = False
        self._infos: OrderedDict[str, _Info] = OrderedDict()
        self._info_lock = threading.Lock()
        self.retried = 0
        self._stats_lock = threading.Lock()
        self.transactions = RetryStats()

    def set_clock(self, clock: Callable[[], float] | None) -> None:
        """The result cache's clock (float seconds; None: the monotonic clock)."""
        if self.results is not None:
            self.results.set_clock(clock)

    def bind(self, pool_name: str) -> None:
        """Name the pool in slow-query logs and N+1 reports."""
        self.observer.pool_name = pool_name

    def adopt(self, client: Client) -> None:
        """Take ``client``'s dialect for parsing SQL (URL pools know it before
        their first statement). SQL read with another dialect is read again."""
        client.require("query helpers", "the query helpers")
        self._client = client
        if client.dialect != self.dialect:
            with self._info_lock:
                self.dialect = client.dialect
                self._infos.clear()

    def _learn(self, source: ConnectionSource, conn: Any) -> str:
        """The first statement: ask the source's adapter what its connections are."""
        client = source.adapter
        self.adopt(client)
        # psycopg's own autocommit flag, when this psycopg has it (see _switch_flag).
        self._pg_flag = client.kind == "postgresql" and isinstance(
            vars(conn).get("_autocommit"), bool)
        # mysqlclient connections opened by the MySQL URL driver have
        # multi-statements on; a custom factory's may not.
        self._mysql_multi = bool(getattr(client, "multi_statements", False))
        self._kind = client.kind
        return client.kind

    # ---- per-SQL facts -----------------------------------------------------

    def _info(self, sql: str) -> _Info:
        info = self._infos.get(sql)
        if info is None:
            if not isinstance(sql, str):
                raise TypeError(f"sql must be a str, got {type(sql).__name__}")
            info = _Info(sql, self.dialect, self.results is not None)
            with self._info_lock:
                self._infos[sql] = info
                if len(self._infos) > _INFO_CACHE_SIZE:
                    self._infos.popitem(last=False)
        return info

    # ---- running one statement on one connection ---------------------------

    def run_on(self, source: ConnectionSource, conn: Any, kind: str, sql: str, params: Any,
               info: _Info, standalone: bool) -> Any:
        """Run ``sql`` on ``conn``; ``standalone``: not inside the caller's transaction."""
        client = self._kind or self._learn(source, conn)
        t0 = time.perf_counter_ns()
        try:
            result = self._run_client(client, conn, kind, sql, params, info, standalone)
        except BaseException:
            # A failed statement is still logged if slow (e.g. a statement_timeout),
            # but nothing the observer raises may replace the driver's error.
            with contextlib.suppress(Exception):
                self.observer.observe(sql, _count(params, kind), time.perf_counter_ns() - t0)
            raise
        self.observer.observe(sql, _count(params, kind), time.perf_counter_ns() - t0)
        return result

    def _run_client(self, client: str, conn: Any, kind: str, sql: str, params: Any,
                    info: _Info, standalone: bool) -> Any:
        if client == "postgresql":
            result = self._run_pg(conn, kind, sql, params, info, standalone)
        elif client == "sqlite":
            cur = (conn.executemany(sql, params) if kind is MANY
                   else conn.execute(sql, () if params is None else params))
            result = _extract(kind, cur)
            if standalone and conn.in_transaction:
                self._commit(conn)
        elif client == "mysql":
            # Outside autocommit a standalone statement needs a COMMIT: sent in
            # the statement's own packet (mysqlclient enables multi-statements),
            # one round trip instead of two. Not for SQL with a ";" of its own.
            inline = (standalone and kind is not MANY and self._mysql_multi
                      and ";" not in sql and not conn.get_autocommit())
            suffix = "\n;COMMIT" if inline else ""
            cur = conn.cursor()
            try:
                if kind is MANY:
                    cur.executemany(sql, params)
                elif info.prepare and self.statements.size:
                    self.statements.execute_mysql(conn, cur, sql, params, suffix)
                else:
                    cur.execute(sql + suffix, params)
                result = _extract(kind, cur)
                if inline:
                    cur.nextset()  # the COMMIT's answer (raises if it failed)
            finally:
                cur.close()
            if standalone and not inline and not conn.get_autocommit():
                conn.commit()
        else:
            cur = conn.cursor()
            try:
                if kind is MANY:
                    cur.executemany(sql, params)
                elif params is None:  # not every DB-API client takes None for "no parameters"
                    cur.execute(sql)
                else:
                    cur.execute(sql, params)
                result = _extract(kind, cur)
            finally:
                cur.close()
            if standalone:
                self._commit(conn)
        return result

    def _commit(self, conn: Any) -> None:
        """Commit a standalone statement by the client's rule (known by now: run_on learnt it)."""
        assert self._client is not None
        self._client.commit(conn)

    def _run_pg(self, conn: Any, kind: str, sql: str, params: Any, info: _Info,
                standalone: bool) -> Any:
        statements = self.statements
        statements.bind_pg(conn)
        if not standalone:
            return self._pg_statement(conn, kind, sql, params, info)
        autocommit = conn._autocommit if self._pg_flag else conn.autocommit
        if autocommit:
            return self._pg_statement(conn, kind, sql, params, info)
        switch = _switch_flag if self._pg_flag else _switch_setter
        switch(conn, True)
        try:
            return self._pg_statement(conn, kind, sql, params, info)
        finally:
            switch(conn, False)

    def _pg_statement(self, conn: Any, kind: str, sql: str, params: Any, info: _Info) -> Any:
        if kind is MANY:
            cur = conn.cursor()
            cur.executemany(sql, params)
            return cur.rowcount
        # Without parameters a script of several statements is valid SQL
        # (simple protocol), but cannot be prepared.
        prepare = self.statements.size > 0 and info.prepare and (
            params is not None or ";" not in sql.strip().rstrip(";"))
        return _extract(kind, conn.execute(sql, params, prepare=prepare or None))

    # ---- the helpers --------------------------------------------------------

    def _dialect_known(self, source: ConnectionSource) -> None:
        """Before SQL is parsed: the adapter, if a connection has told it yet
        (a custom factory's pool learns it at its first connection)."""
        try:
            client = source.adapter
        except RuntimeError:
            return
        self.adopt(client)

    def call(self, source: ConnectionSource, kind: str, sql: str, params: Any, conn: Any,
             cache_ttl: float | None) -> Any:
        if self._client is None:
            self._dialect_known(source)
        info = self._info(sql)
        if conn is not None:
            if info.writes and self.results is not None:
                self._open_write(conn, info.writes)
            return self.run_on(source, conn, kind, sql, params, info, standalone=False)
        if cache_ttl is not None and kind is not EXEC and kind is not MANY:
            ttl = _ttl(cache_ttl)
            key = cache_key(kind, sql, params)
            if self.results is not None and key is not None and not info.writes:
                reads = info.reads(sql, self.dialect)
                if not self._open or not self._blocked(reads):
                    value = self.results.get_or_run(
                        key, ttl, reads, lambda: self._standalone(source, kind, sql, params, info))
                    return list(value) if kind is FETCH else value  # callers may mutate lists
        if info.writes and self.results is not None:
            self.results.begin_write(info.writes)
            try:
                return self._standalone(source, kind, sql, params, info)
            finally:
                self.results.end_write(info.writes)
        return self._standalone(source, kind, sql, params, info)

    def _standalone(self, source: ConnectionSource, kind: str, sql: str, params: Any,
                    info: _Info) -> Any:
        retried = False
        while True:
            conn = source.acquire()
            try:
                result = self.run_on(source, conn, kind, sql, params, info, standalone=True)
            except Exception as exc:
                try:
                    again = not retried and self._may_retry(source, conn, exc)
                finally:
                    source.release(conn)
                if not again:
                    raise
                retried = True
                with self._stats_lock:
                    self.retried += 1
                continue
            except BaseException:
                source.release(conn)
                raise
            source.release(conn)
            return result

    def _may_retry(self, source: ConnectionSource, conn: Any, exc: Exception) -> bool:
        if _stale_plan(exc):
            self.statements.forget(conn)
            return True
        # Nothing reached the server: safe. A statement lost in flight is not
        # run again: even a SELECT may call a function that writes.
        return bool(source.classify(exc) is ErrorKind.NOT_SENT)

    # ---- transactions --------------------------------------------------------

    def _open_write(self, conn: Any, tables: frozenset[str]) -> None:
        """A write with conn=: invalidate now, and keep its tables out of the
        cache until its transaction ends (pool.transaction() says when; for
        your own transactions the connection's local status tells)."""
        assert self.results is not None
        self.results.begin_write(tables)
        with self._open_lock:
            entry = self._open.get(id(conn))
            if entry is None or entry[0]() is not conn:
                entry = self._open[id(conn)] = (_ref(conn), set())
            entry[1].update(tables)

    def _blocked(self, reads: frozenset[str]) -> bool:
        """Whether a read of ``reads`` must bypass the cache: a transaction
        that wrote one of them has not ended. Ended ones are settled here."""
        blocked = False
        for key, (ref, tables) in list(self._open.items()):
            conn = ref()
            if conn is not None and self._in_transaction(conn):
                blocked = blocked or ANY in reads or ANY in tables or not reads.isdisjoint(tables)
            else:
                self._settle(key)
        return blocked

    def _in_transaction(self, conn: Any) -> bool:
        if self._client is None or getattr(conn, "closed", False):
            return False
        # None: no local status to read (or closed): settled at the next read.
        return bool(self._client.in_transaction(conn))

    def _settle(self, key: int) -> None:
        with self._open_lock:
            entry = self._open.pop(key, None)
        if entry is not None and self.results is not None:
            self.results.end_write(frozenset(entry[1]))

    def finished(self, conn: Any, committed: bool) -> None:
        """After a pool.transaction() attempt: invalidate what it wrote, again."""
        self._settle(id(conn))

    @contextlib.contextmanager
    def writing(self, tables: Iterable[str]) -> Iterator[None]:
        """Around a write fastpool did not parse (a bulk load): invalidate before and after."""
        if self.results is None:
            yield
            return
        names = fold_names(tables)
        if not names:  # nothing named (e.g. a batch of statements fastpool cannot parse)
            yield
            return
        self.results.begin_write(names)
        try:
            yield
        finally:
            self.results.end_write(names)

    # ---- invalidation and stats ----------------------------------------------

    def invalidate(self, tables: Iterable[str]) -> int:
        names = list(tables)
        for t in names:
            if not isinstance(t, str) or not t:
                raise ConfigError(f"invalidate() takes table names, got {t!r}")
        if self.results is None:
            return 0
        return self.results.invalidate(names or [ANY])

    def stats(self) -> dict[str, Any]:
        return {
            "statements": self.statements.stats(),
            "results": self.results.stats() if self.results is not None else None,
            "slow_queries": self.observer.slow_queries,
            "retried": self.retried,
            "transactions": self.transactions.as_dict(),
        }


def _ref(conn: Any) -> Callable[[], Any]:
    """A weak reference where the class allows one (sqlite3's does not: then a
    strong one, dropped when the connection's transaction is seen to end)."""
    try:
        return weakref.ref(conn)
    except TypeError:
        return lambda: conn


def _ttl(value: object) -> float:
    return seconds("cache_ttl", value, allow_zero=False)


def _count(params: Any, kind: str) -> int:
    if params is None:
        return 0
    if kind is MANY:
        return -1
    try:
        return len(params)
    except TypeError:
        return 0
