"""How the batcher runs a statement group on each client: one multi-row
INSERT where the statement allows it (PostgreSQL, MySQL/MariaDB), else one
pipelined ``executemany`` (psycopg) or one ``execute`` per write; each
write's result (rowcount, first RETURNING row). Transactions themselves are
the client adapter's (``fastpool.transaction``).

Each server's rules (which statements become one multi-row INSERT, its text
with ``$n`` placeholders, what each write's rowcount is then) are written
once, in a plan class (``PostgresPlan``, ``MySQLPlan``) that both a blocking
dialect (``Postgres``, ``MySQL``, ``Dialect``: ``run``/``command`` block) and
the asyncio ones (``AsyncPsycopg``, ``Asyncpg``, ``AsyncMySQL``,
``AsyncDialect``: ``run``/``command`` are coroutines) use. The batcher's flow
(``engine.py``) yields ``("run", conn, sql, params)`` and
``("command", conn, sql)``; the flusher's runner performs them with its
dialect.
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Any

from fastpool.writes.batch.results import BatchResult

if TYPE_CHECKING:
    from fastpool.drivers.client import ClientBase

__all__ = ["RELEASE", "ROLLBACK_TO", "SAVEPOINT", "AsyncDialect", "AsyncMySQL", "AsyncPsycopg",
           "Asyncpg", "Dialect", "MySQL", "MySQLPlan", "Postgres", "PostgresPlan",
           "dialect_for"]

SAVEPOINT = "SAVEPOINT fastpool_batch"
ROLLBACK_TO = "ROLLBACK TO SAVEPOINT fastpool_batch"
RELEASE = "RELEASE SAVEPOINT fastpool_batch"


def _first_row(rows: Any) -> Any:
    return rows[0] if rows else None


def _each(total: int, n: int, exact: bool = True) -> list[BatchResult]:
    """Each write's result when a multi-row statement of ``n`` writes reports
    only its ``total``: 1 (or 0) when the total says so and each write affects
    at most one row (``exact``), else -1 (unknown)."""
    each = -1
    if total == 0:
        each = 0
    elif exact and total == n:
        each = 1
    return [BatchResult(each)] * n


# ---- the rules of each server ----------------------------------------------------

# A plain INSERT of one row of bare placeholders (%s, or asyncpg's $1, $2...
# in order), with nothing after VALUES (no ON CONFLICT, no RETURNING): the
# shape that becomes one multi-row INSERT.
_PG_INSERT_VALUES = re.compile(
    r"\s*(INSERT\s+INTO\s.+?\bVALUES\s*)"
    r"(\(\s*(?:%s|\$\d+)\s*(?:,\s*(?:%s|\$\d+)\s*)*\))\s*;?\s*\Z",
    re.IGNORECASE | re.DOTALL)
_PLACEHOLDER = re.compile(r"%s|\$\d+")


class PostgresPlan:
    """PostgreSQL's multi-row INSERT: which statements, and their text."""

    #: The protocol's limit on parameters per statement.
    MAX_PARAMS = 65535
    #: Multi-row statement texts kept, per (statement, row count).
    TEXT_CACHE = 256

    def __init__(self, dollar: bool = False) -> None:
        #: The client's placeholders: asyncpg's $1, $2... (else psycopg's %s).
        self._dollar = dollar
        self._plans: dict[str, tuple[str, list[str], int] | None] = {}
        self._texts: dict[tuple[str, int], str] = {}

    def multirow_plan(self, sql: str) -> tuple[str, list[str], int] | None:
        """(head, one row's text around its placeholders, their count) for a
        plain INSERT, else None."""
        try:
            return self._plans[sql]
        except KeyError:
            pass
        m = _PG_INSERT_VALUES.match(sql)
        plan = None
        if m is not None and not _PLACEHOLDER.search(m.group(1)):
            row = m.group(2)
            marks = _PLACEHOLDER.findall(row)
            # %s each, or exactly $1..$k in order (anything else: per write).
            want = [f"${i + 1}" for i in range(len(marks))] if self._dollar \
                else ["%s"] * len(marks)
            if marks == want:
                plan = (m.group(1), _PLACEHOLDER.split(row), len(marks))
        if len(self._plans) < 1000:
            self._plans[sql] = plan
        return plan

    def fits(self, plan: tuple[str, list[str], int] | None, params: list[Any]) -> bool:
        return plan is not None and len(params) > 1 and all(
            type(p) in (tuple, list) and len(p) == plan[2] for p in params)

    def chunks(self, sql: str, plan: tuple[str, list[str], int], params: list[Any],
               dollar: bool = True) -> list[tuple[str, list[Any]]]:
        """The multi-row INSERTs for ``params`` (at most MAX_PARAMS parameters
        each): (text, flat parameters); ``$n`` placeholders, or ``%s`` when
        ``dollar`` is false."""
        per_statement = max(1, self.MAX_PARAMS // plan[2])
        out = []
        for start in range(0, len(params), per_statement):
            chunk = params[start:start + per_statement]
            out.append((self.text(sql, plan, len(chunk), dollar),
                        [value for p in chunk for value in p]))
        return out

    def text(self, sql: str, plan: tuple[str, list[str], int], rows: int,
             dollar: bool = True) -> str:
        """The INSERT of ``rows`` rows."""
        head, parts, width = plan
        if not dollar:
            return head + ",".join(["%s".join(parts)] * rows)
        text = self._texts.get((sql, rows))
        if text is not None:
            return text
        text = head + ",".join(
            "".join(part + (f"${r * width + i + 1}" if i < width else "")
                    for i, part in enumerate(parts))
            for r in range(rows))
        if len(self._texts) >= self.TEXT_CACHE:
            self._texts.clear()
        self._texts[(sql, rows)] = text
        return text


def _mysql_insert_values(library: str) -> re.Pattern[str]:
    """The client's own multi-row pattern (its executemany rewrites what it matches)."""
    module = {"mysqlclient": "MySQLdb.cursors", "asyncmy": "asyncmy.cursors"}.get(
        library, "pymysql.cursors")  # aiomysql: PyMySQL's
    pattern: re.Pattern[str] = importlib.import_module(module).RE_INSERT_VALUES
    return pattern


class MySQLPlan:
    """MySQL/MariaDB: the client's ``executemany`` sends an ``INSERT``/
    ``REPLACE ... VALUES`` as one multi-row statement, which reports a total."""

    def __init__(self, library: str = "mysqlclient") -> None:
        self._multirow = _mysql_insert_values(library)
        self._plans: dict[str, int] = {}

    def plan(self, sql: str, n: int) -> int:
        """0: one execute per write; 1: multi-row INSERT/INSERT IGNORE (each
        write affects 0 or 1 row); 2: other multi-row (REPLACE, ON DUPLICATE)."""
        if n < 2:
            return 0
        plan = self._plans.get(sql)
        if plan is None:
            upper = sql.upper()
            if not self._multirow.match(sql) or "RETURNING" in upper:
                plan = 0
            elif upper.lstrip().startswith("INSERT") and "ON DUPLICATE" not in upper:
                plan = 1
            else:
                plan = 2
            if len(self._plans) < 1000:
                self._plans[sql] = plan
        return plan


# ---- blocking clients --------------------------------------------------------------

class Dialect:
    """How one blocking client library runs a statement group. The default:
    any DB-API connection, one ``execute`` per write."""

    def command(self, conn: Any, sql: str) -> None:
        cur = conn.cursor()
        try:
            cur.execute(sql)
        finally:
            cur.close()

    def run(self, conn: Any, sql: str, params: list[Any]) -> list[BatchResult]:
        cur = conn.cursor()
        try:
            out = []
            for p in params:
                cur.execute(sql, p)
                row = None
                if cur.description is not None:
                    row = _first_row(cur.fetchall())
                out.append(BatchResult(cur.rowcount, row))
            return out
        finally:
            cur.close()


class Postgres(PostgresPlan, Dialect):
    """psycopg 3."""

    def __init__(self) -> None:
        super().__init__(dollar=False)
        # RawCursor (psycopg 3.2+) takes PostgreSQL's own $n placeholders and
        # parses nothing: psycopg re-parses a %s query of more than 50
        # parameters on every execute, which cost 4.5 us per row of a
        # 250-row INSERT (0.8 us with $n).
        import psycopg

        self._raw_cursor: Any = getattr(psycopg, "RawCursor", None)

    def command(self, conn: Any, sql: str) -> None:
        conn.execute(sql)

    def run(self, conn: Any, sql: str, params: list[Any]) -> list[BatchResult]:
        plan = self.multirow_plan(sql) if len(params) > 1 else None
        if self.fits(plan, params):
            assert plan is not None
            raw = self._raw_cursor is not None and "%" not in plan[0]
            total = 0
            for text, flat in self.chunks(sql, plan, params, raw):
                cur = self._raw_cursor(conn) if raw else conn.cursor()
                try:
                    cur.execute(text, flat)
                    total += cur.rowcount
                finally:
                    cur.close()
            return _each(total, len(params))
        cur = conn.cursor()
        try:
            # returning=True keeps one result per write: its own rowcount.
            # psycopg pipelines these, but waits on the socket once per write.
            cur.executemany(sql, params, returning=True)
            out: list[BatchResult] = []
            while True:
                row = cur.fetchone() if cur.description is not None else None
                out.append(BatchResult(cur.rowcount, row))
                if not cur.nextset():
                    break
            return out
        finally:
            cur.close()


class MySQL(MySQLPlan, Dialect):
    """mysqlclient."""

    def run(self, conn: Any, sql: str, params: list[Any]) -> list[BatchResult]:
        plan = self.plan(sql, len(params))
        if plan == 0:
            return super().run(conn, sql, params)
        cur = conn.cursor()
        try:
            cur.executemany(sql, params)
            total = cur.rowcount
        finally:
            cur.close()
        return _each(total, len(params), plan == 1)


# ---- asyncio clients ---------------------------------------------------------------

class AsyncDialect:
    """How one asyncio client library runs a statement group: ``Dialect``'s
    methods as coroutines. The default (aiosqlite): one ``execute`` per write
    on one cursor."""

    async def command(self, conn: Any, sql: str) -> None:
        await (await conn.execute(sql)).close()

    async def run(self, conn: Any, sql: str, params: list[Any]) -> list[BatchResult]:
        cur = await conn.cursor()
        try:
            out = []
            for p in params:
                await cur.execute(sql, p)
                row = None
                if cur.description is not None:
                    row = _first_row(await cur.fetchall())
                out.append(BatchResult(cur.rowcount, row))
            return out
        finally:
            await cur.close()


class AsyncPsycopg(PostgresPlan, AsyncDialect):
    """psycopg 3's ``AsyncConnection``: ``Postgres``'s paths, awaited."""

    def __init__(self) -> None:
        super().__init__(dollar=False)
        import psycopg

        self._raw_cursor: Any = getattr(psycopg, "AsyncRawCursor", None)

    async def command(self, conn: Any, sql: str) -> None:
        await conn.execute(sql)

    async def run(self, conn: Any, sql: str, params: list[Any]) -> list[BatchResult]:
        plan = self.multirow_plan(sql) if len(params) > 1 else None
        if self.fits(plan, params):
            assert plan is not None
            raw = self._raw_cursor is not None and "%" not in plan[0]
            total = 0
            for text, flat in self.chunks(sql, plan, params, raw):
                cur = self._raw_cursor(conn) if raw else conn.cursor()
                try:
                    await cur.execute(text, flat)
                    total += cur.rowcount
                finally:
                    await cur.close()
            return _each(total, len(params))
        cur = conn.cursor()
        try:
            await cur.executemany(sql, params, returning=True)
            out: list[BatchResult] = []
            while True:
                row = await cur.fetchone() if cur.description is not None else None
                out.append(BatchResult(cur.rowcount, row))
                if not cur.nextset():
                    break
            return out
        finally:
            await cur.close()


def _status_count(status: str | None) -> int:
    """The row count of a command tag ("INSERT 0 3", "UPDATE 2"), or -1."""
    if not status:
        return -1
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1


class Asyncpg(PostgresPlan, AsyncDialect):
    """asyncpg (``$n`` placeholders): a plain INSERT as one multi-row INSERT;
    other statements one prepared execution per write (exact rowcount from
    the command tag, first RETURNING row)."""

    async def command(self, conn: Any, sql: str) -> None:
        await conn.execute(sql)

    async def run(self, conn: Any, sql: str, params: list[Any]) -> list[BatchResult]:
        plan = self.multirow_plan(sql) if len(params) > 1 else None
        if self.fits(plan, params):
            assert plan is not None
            total = 0
            for text, flat in self.chunks(sql, plan, params):
                total += _status_count(await conn.execute(text, *flat))
            return _each(total, len(params))
        stmt = await conn.prepare(sql)
        out = []
        for p in params:
            if not isinstance(p, (tuple, list)):
                raise TypeError(f"asyncpg takes positional parameters ($1, $2...), got "
                                f"{type(p).__name__}")
            rows = await stmt.fetch(*p)
            out.append(BatchResult(_status_count(stmt.get_statusmsg()), _first_row(rows)))
        return out


class AsyncMySQL(MySQLPlan, AsyncDialect):
    """asyncmy and aiomysql: ``MySQL``'s paths, awaited."""

    async def command(self, conn: Any, sql: str) -> None:
        async with conn.cursor() as cur:
            await cur.execute(sql)

    async def run(self, conn: Any, sql: str, params: list[Any]) -> list[BatchResult]:
        plan = self.plan(sql, len(params))
        async with conn.cursor() as cur:
            if plan:
                await cur.executemany(sql, params)
                return _each(cur.rowcount, len(params), plan == 1)
            out = []
            for p in params:
                await cur.execute(sql, p)
                row = None
                if cur.description is not None:
                    row = _first_row(await cur.fetchall())
                out.append(BatchResult(cur.rowcount, row))
            return out


def dialect_for(client: ClientBase) -> Dialect | AsyncDialect:
    """The statement runner for ``client`` (its adapter says which server,
    which placeholders, and whether it is an asyncio client)."""
    client.require("group commit", "the batcher")
    if client.is_async:
        if client.kind == "postgresql":
            if client.paramstyle == "numeric_dollar":
                return Asyncpg(dollar=True)
            return AsyncPsycopg()
        if client.kind == "mysql":
            return AsyncMySQL(client.name)
        return AsyncDialect()  # aiosqlite: one execute per write
    if client.kind == "postgresql":
        return Postgres()
    if client.kind == "mysql":
        return MySQL()
    return Dialect()  # SQLite and other DB-API clients: one execute per write
