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
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from fastpool.errors import ConfigError, ErrorKind, UnsupportedClient
from fastpool.options import integer, parameter_sets, parameters, seconds
from fastpool.query.observe import QueryObserver
from fastpool.query.results import ResultCache, cache_key, fold_names
from fastpool.query.statements import StatementCache
from fastpool.sqltext.tables import ANY, Access, access
from fastpool.transaction import RetryStats

if TYPE_CHECKING:
    from fastpool.drivers.client import ClientBase
    from fastpool.source import ConnectionSource

#: How a failed standalone statement is retried (``QueryLayer._retry_rule``).
_NO_RETRY, _RETRY, _RETRY_FORGET = 0, 1, 2

__all__ = ["EXEC", "FETCH", "MANY", "ROW", "VAL", "QueryLayer"]

R = TypeVar("R")

EXEC, FETCH, ROW, VAL, MANY = "execute", "fetch", "fetchrow", "fetchval", "executemany"
_PREPARABLE = re.compile(r"\s*(?:select|insert|update|delete|with|values|merge|table|replace)\b",
                         re.IGNORECASE)
_INFO_CACHE_SIZE = 4096
_perf_ns = time.perf_counter_ns
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


def _rows(rows: Any) -> list[Any]:
    return rows if type(rows) is list else list(rows)  # mysqlclient gives a tuple


def _extract(kind: str, cur: Any) -> Any:
    if kind is FETCH:
        return _rows(cur.fetchall())
    if kind is ROW:
        return cur.fetchone()
    if kind is VAL:
        return _value(cur.fetchone())
    return cur.rowcount


async def _extract_async(kind: str, cur: Any) -> Any:
    """``_extract`` for an asyncio cursor (its fetch methods are awaitable)."""
    if kind is FETCH:
        return _rows(await cur.fetchall())
    if kind is ROW:
        return await cur.fetchone()
    if kind is VAL:
        return _value(await cur.fetchone())
    return cur.rowcount


def _needs_commit(client: ClientBase, conn: Any) -> bool:
    """After a statement run on its own: whether it left a transaction to
    commit. The client's local status says (a transaction the statement
    opened: MySQL/MariaDB and SQLite outside autocommit); a client that cannot
    tell (a generic DB-API one) always commits. The one rule for every client
    whose standalone statements can open a transaction; PostgreSQL's run in
    autocommit (psycopg switched locally, asyncpg's own)."""
    return client.in_transaction(conn) is not False


def _pg_prepare(size: int, info: _Info, sql: str, params: Any) -> bool:
    """Whether psycopg prepares the statement: the cache is on and the SQL is
    a preparable statement. Without parameters a script of several statements
    is valid SQL (simple protocol), but cannot be prepared."""
    return size > 0 and info.prepare and (params is not None or ";" not in sql.strip().rstrip(";"))


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
        self._client: Any = None  # a ClientBase: Client (threads) or AsyncClient
        self.dialect: str | None = None
        # Writes made with conn= whose transaction has not ended yet:
        # id(conn) -> (weak ref to conn, tables). Their tables are not cached.
        self._open: dict[int, tuple[Callable[[], Any], set[str]]] = {}
        self._open_lock = threading.Lock()
        self._kind: str | None = None  # the adapter's kind: "postgresql", "mysql"...
        self._pg_flag = False  # psycopg's private _autocommit flag is there
        self._mysql_multi = False
        # The asyncio path's statement runner for the client (see _ASYNC_RUNNERS).
        self._runner: _Runner | None = None
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

    def adopt(self, client: ClientBase) -> None:
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
            getattr(conn, "__dict__", {}).get("_autocommit"), bool)
        # mysqlclient connections opened by the MySQL URL driver have
        # multi-statements on; a custom factory's may not.
        self._mysql_multi = bool(getattr(client, "multi_statements", False))
        if client.is_async:
            runner = _ASYNC_RUNNERS.get(client.name)
            if runner is None:
                raise UnsupportedClient(f"the query helpers have no asyncio path for "
                                        f"{client.name} connections")
            self._runner = runner
        kind: str = client.kind
        self._kind = kind
        return kind

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

    # ---- the rules every helper call follows, threads and asyncio alike --------

    def _dialect_known(self, source: ConnectionSource) -> None:
        """Before SQL is parsed: the adapter, if a connection has told it yet
        (a custom factory's pool learns it at its first connection)."""
        try:
            client = source.adapter
        except RuntimeError:
            return
        self.adopt(client)

    def _caller_writes(self, conn: Any, info: _Info) -> None:
        """A statement on the caller's connection (``conn=``): what it writes
        stays out of the result cache until that transaction ends."""
        if info.writes and self.results is not None:
            self._open_write(conn, info.writes)

    def _bypass(self, cache_ttl: object) -> None:
        """``cache_ttl=`` with ``conn=``: the statement runs in the caller's
        transaction, which may have written what the cache holds (or would
        store a result no one else can see yet), so the cache is skipped;
        counted as ``bypassed``. The TTL is checked all the same."""
        _ttl(cache_ttl)
        if self.results is not None:
            self.results.bypassed += 1

    def _cache_plan(self, kind: str, sql: str, params: Any, info: _Info,
                    cache_ttl: float) -> tuple[Any, float, frozenset[str]] | None:
        """Whether the result cache serves this call: (key, ttl, tables read),
        or None to run the statement. Not for writes, unhashable parameters,
        or tables a transaction still open has written (``conn=``)."""
        if kind is EXEC or kind is MANY:
            return None
        ttl = _ttl(cache_ttl)
        key = cache_key(kind, sql, params)
        if self.results is None or key is None or info.writes:
            return None
        reads = info.reads(sql, self.dialect)
        if self._open and self._blocked(reads):
            return None
        return key, ttl, reads

    def _retry_rule(self, source: ConnectionSource, exc: Exception) -> int:
        """Whether a standalone statement that failed with ``exc`` runs again
        (once, on another connection): a stale PostgreSQL plan (after the
        connection forgets its statements), or nothing reached the server
        (NOT_SENT). A statement lost in flight is not run again: even a
        SELECT may call a function that writes."""
        if _stale_plan(exc):
            return _RETRY_FORGET
        return _RETRY if source.classify(exc) is ErrorKind.NOT_SENT else _NO_RETRY

    def _retrying(self) -> None:
        with self._stats_lock:
            self.retried += 1

    def _failed(self, sql: str, params: Any, kind: str, t0: int) -> None:
        """A failed statement is still logged if slow (e.g. a statement_timeout),
        but nothing the observer raises may replace the driver's error."""
        with contextlib.suppress(Exception):
            self.observer.observe(sql, _count(params, kind), time.perf_counter_ns() - t0)

    # ---- threads: running one statement on one connection -----------------------

    def run_on(self, source: ConnectionSource, conn: Any, kind: str, sql: str, params: Any,
               info: _Info, standalone: bool) -> Any:
        """Run ``sql`` on ``conn``; ``standalone``: not inside the caller's transaction."""
        client = self._kind or self._learn(source, conn)
        t0 = time.perf_counter_ns()
        try:
            result = self._run_client(client, conn, kind, sql, params, info, standalone)
        except BaseException:
            self._failed(sql, params, kind, t0)
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
            if standalone and conn.in_transaction:  # sqlite3's status: SQLiteClient's rule
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
            if standalone and not inline and _needs_commit(self._client, conn):
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
            if standalone:  # no local status: _needs_commit is always True
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
        prepare = _pg_prepare(self.statements.size, info, sql, params)
        return _extract(kind, conn.execute(sql, params, prepare=prepare or None))

    # ---- threads: the helpers -------------------------------------------------------

    def call(self, source: ConnectionSource, kind: str, sql: str, params: Any, conn: Any,
             cache_ttl: float | None) -> Any:
        params = parameter_sets(params) if kind is MANY else parameters(params)
        if self._client is None:
            self._dialect_known(source)
        info = self._info(sql)
        if conn is not None:
            if cache_ttl is not None:
                self._bypass(cache_ttl)
            self._caller_writes(conn, info)
            return self.run_on(source, conn, kind, sql, params, info, standalone=False)
        if cache_ttl is not None:
            plan = self._cache_plan(kind, sql, params, info, cache_ttl)
            if plan is not None:
                key, ttl, reads = plan
                value = self.results.get_or_run(  # type: ignore[union-attr]
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
                self._retrying()
                continue
            except BaseException:
                source.release(conn)
                raise
            source.release(conn)
            return result

    def _may_retry(self, source: ConnectionSource, conn: Any, exc: Exception) -> bool:
        rule = self._retry_rule(source, exc)
        if rule == _RETRY_FORGET:
            self.statements.forget(conn)
        return rule != _NO_RETRY

    # ---- asyncio: the same rules, awaited ---------------------------------------------

    def call_async(self, source: Any, kind: str, sql: str, params: Any, conn: Any,
                   cache_ttl: float | None) -> Coroutine[Any, Any, Any]:
        """``call`` on an asyncio source (an AsyncPool, whose acquire/release
        are awaited): the decisions, made now, and the coroutine that runs the
        statement (``await pool.fetch(...)`` awaits it; no frame in between)."""
        params = parameter_sets(params) if kind is MANY else parameters(params)
        if self._client is None:
            self._dialect_known(source)
        info = self._info(sql)
        if conn is not None:
            if cache_ttl is not None:
                self._bypass(cache_ttl)
            self._caller_writes(conn, info)
            return self.run_on_async(source, conn, kind, sql, params, info, False)
        if cache_ttl is not None:
            plan = self._cache_plan(kind, sql, params, info, cache_ttl)
            if plan is not None:
                return self._cached_async(source, kind, sql, params, info, plan)
        if info.writes and self.results is not None:
            return self._writing_async(source, kind, sql, params, info)
        return self._standalone_async(source, kind, sql, params, info)

    async def _cached_async(self, source: Any, kind: str, sql: str, params: Any, info: _Info,
                            plan: tuple[Any, float, frozenset[str]]) -> Any:
        key, ttl, reads = plan
        value = await self.results.get_or_run_async(  # type: ignore[union-attr]
            key, ttl, reads, lambda: self._standalone_async(source, kind, sql, params, info))
        return list(value) if kind is FETCH else value  # callers may mutate lists

    async def _writing_async(self, source: Any, kind: str, sql: str, params: Any,
                             info: _Info) -> Any:
        self.results.begin_write(info.writes)  # type: ignore[union-attr]
        try:
            return await self._standalone_async(source, kind, sql, params, info)
        finally:
            self.results.end_write(info.writes)  # type: ignore[union-attr]

    async def _standalone_async(self, source: Any, kind: str, sql: str, params: Any,
                                info: _Info) -> Any:
        # _standalone and run_on in one frame: each coroutine frame costs
        # about as much as the pool's whole acquire + release.
        retried = False
        while True:
            conn = await source.acquire()
            try:
                runner = self._runner
                if runner is None:
                    self._learn(source, conn)
                    runner = self._runner
                    assert runner is not None
                t0 = _perf_ns()
                try:
                    result = await runner(self, conn, kind, sql, params, info, True)
                except BaseException:
                    self._failed(sql, params, kind, t0)
                    raise
                self.observer.observe(sql, _count(params, kind), _perf_ns() - t0)
            except Exception as exc:
                try:
                    again = not retried and await self._may_retry_async(source, conn, exc)
                finally:
                    await source.release(conn)
                if not again:
                    raise
                retried = True
                self._retrying()
                continue
            except BaseException:
                await source.release(conn)
                raise
            await source.release(conn)
            return result

    async def _may_retry_async(self, source: Any, conn: Any,
                               exc: Exception) -> bool:
        rule = self._retry_rule(source, exc)
        if rule == _RETRY_FORGET:
            await self.statements.forget_async(conn)
        return rule != _NO_RETRY

    async def run_on_async(self, source: Any, conn: Any, kind: str, sql: str,
                           params: Any, info: _Info, standalone: bool) -> Any:
        """``run_on`` for an asyncio connection."""
        runner = self._runner
        if runner is None:
            self._learn(source, conn)
            runner = self._runner
            assert runner is not None
        t0 = time.perf_counter_ns()
        try:
            result = await runner(self, conn, kind, sql, params, info, standalone)
        except BaseException:
            self._failed(sql, params, kind, t0)
            raise
        self.observer.observe(sql, _count(params, kind), time.perf_counter_ns() - t0)
        return result

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


# ---- asyncio: one statement on one connection, per client ---------------------------
#
# Each runner runs one statement the client's way; the rules (what to prepare,
# when to commit, what a result is) are the functions above, shared with the
# threads' path.

_Runner = Callable[[QueryLayer, Any, str, str, Any, _Info, bool], Awaitable[Any]]


async def _run_psycopg_async(layer: QueryLayer, conn: Any, kind: str, sql: str, params: Any,
                             info: _Info, standalone: bool) -> Any:
    """psycopg ``AsyncConnection``: as ``_run_pg``, a standalone statement in
    autocommit switched on locally (no round trip)."""
    if not standalone or conn._autocommit:
        await layer.statements.bind_pg_async(conn)
        return await _psycopg_statement_async(layer, conn, kind, sql, params, info)
    if layer._pg_flag:
        conn._autocommit = True
    else:
        await conn.set_autocommit(True)
    try:
        await layer.statements.bind_pg_async(conn)
        return await _psycopg_statement_async(layer, conn, kind, sql, params, info)
    finally:
        if layer._pg_flag:
            conn._autocommit = False
        elif conn.pgconn.transaction_status == _PQ_IDLE:
            await conn.set_autocommit(False)


async def _psycopg_statement_async(layer: QueryLayer, conn: Any, kind: str, sql: str,
                                   params: Any, info: _Info) -> Any:
    if kind is MANY:
        cur = conn.cursor()
        await cur.executemany(sql, params)
        return cur.rowcount
    prepare = _pg_prepare(layer.statements.size, info, sql, params)
    return await _extract_async(kind, await conn.execute(sql, params, prepare=prepare or None))


def _positional(params: Any) -> Any:
    """asyncpg's arguments: a sequence for ``$1, $2...``; None for none."""
    if params is None:
        return ()
    if isinstance(params, dict):
        raise TypeError("asyncpg takes positional parameters ($1, $2...): pass a tuple, "
                        "not a dict")
    return params


def _status_rows(status: str) -> int:
    """Rows affected, from a command tag (``UPDATE 5``, ``INSERT 0 5``); -1
    when it has none (``CREATE TABLE``), as psycopg's ``rowcount``."""
    tail = status.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else -1


def _run_asyncpg(layer: QueryLayer, conn: Any, kind: str, sql: str, params: Any,
                 info: _Info, standalone: bool) -> Awaitable[Any]:
    """asyncpg: ``$1`` placeholders; asyncpg's own statement cache (counted,
    see ``StatementCache.bind_asyncpg``); outside a transaction asyncpg runs
    each statement on its own (no BEGIN, no COMMIT). ``executemany`` returns
    -1: asyncpg does not report the rows it affected. A plain function
    returning asyncpg's own coroutine for the fetches: no frame of ours
    between the caller and asyncpg."""
    statements = layer.statements
    if getattr(conn._stmt_cache, "generation", -1) != statements.generation:
        statements.bind_asyncpg(conn)
    if params is None:
        args: Any = ()
    elif type(params) is tuple or type(params) is list:
        args = params
    else:
        args = _positional(params)
    if kind is VAL:
        return conn.fetchval(sql, *args)  # type: ignore[no-any-return]
    if kind is FETCH:
        return conn.fetch(sql, *args)  # type: ignore[no-any-return]
    if kind is ROW:
        return conn.fetchrow(sql, *args)  # type: ignore[no-any-return]
    if kind is MANY:
        return _asyncpg_many(conn, sql, params)
    return _asyncpg_execute(conn, sql, args)


async def _asyncpg_many(conn: Any, sql: str, params: Any) -> int:
    await conn.executemany(sql, params)
    return -1


async def _asyncpg_execute(conn: Any, sql: str, args: Any) -> int:
    return _status_rows(await conn.execute(sql, *args))


async def _run_pymysql_async(layer: QueryLayer, conn: Any, kind: str, sql: str, params: Any,
                             info: _Info, standalone: bool) -> Any:
    """asyncmy and aiomysql: ``%s`` placeholders, text protocol; a standalone
    statement that opened a transaction (autocommit off) is committed."""
    async with conn.cursor() as cur:  # aiomysql's cursor() is awaited, asyncmy's is not
        if kind is MANY:
            await cur.executemany(sql, params)
        else:
            await cur.execute(sql, params)
        result = await _extract_async(kind, cur)
    client = layer._client
    assert client is not None
    if standalone and _needs_commit(client, conn):
        await client.commit(conn)
    return result


async def _run_aiosqlite(layer: QueryLayer, conn: Any, kind: str, sql: str, params: Any,
                         info: _Info, standalone: bool) -> Any:
    """aiosqlite: ``?`` placeholders; a standalone statement that opened a
    transaction is committed, as with sqlite3."""
    if kind is MANY:
        cur = await conn.executemany(sql, params)
    else:
        cur = await conn.execute(sql, () if params is None else params)
    result = await _extract_async(kind, cur)
    client = layer._client
    assert client is not None
    if standalone and _needs_commit(client, conn):
        await client.commit(conn)
    return result


#: The asyncio statement runner of each client library (``ClientBase.name``).
_ASYNC_RUNNERS: dict[str, _Runner] = {
    "psycopg": _run_psycopg_async,
    "asyncpg": _run_asyncpg,
    "asyncmy": _run_pymysql_async,
    "aiomysql": _run_pymysql_async,
    "aiosqlite": _run_aiosqlite,
}
