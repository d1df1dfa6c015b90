"""How the batcher runs a statement group on each server: one multi-row
INSERT where the statement allows it (PostgreSQL, MySQL/MariaDB), else one
pipelined ``executemany`` (PostgreSQL) or one ``execute`` per write; each
write's result (rowcount, first RETURNING row). Transactions themselves are
the client adapter's (``fastpool.transaction``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fastpool.writes.batch.results import BatchResult

if TYPE_CHECKING:
    from fastpool.drivers.client import Client

__all__ = ["RELEASE", "ROLLBACK_TO", "SAVEPOINT", "Dialect", "MySQL", "Postgres",
           "dialect_for"]

SAVEPOINT = "SAVEPOINT fastpool_batch"
ROLLBACK_TO = "ROLLBACK TO SAVEPOINT fastpool_batch"
RELEASE = "RELEASE SAVEPOINT fastpool_batch"


class Dialect:
    """How one client library runs a statement group and a transaction.
    The default: any DB-API connection, one ``execute`` per write."""

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
                    rows = cur.fetchall()
                    row = rows[0] if rows else None
                out.append(BatchResult(cur.rowcount, row))
            return out
        finally:
            cur.close()


# A plain INSERT of one row of bare %s placeholders, with nothing after VALUES
# (no ON CONFLICT, no RETURNING): the shape that becomes one multi-row INSERT.
_PG_INSERT_VALUES = re.compile(
    r"\s*(INSERT\s+INTO\s.+?\bVALUES\s*)(\(\s*%s\s*(?:,\s*%s\s*)*\))\s*;?\s*\Z",
    re.IGNORECASE | re.DOTALL)


class Postgres(Dialect):
    #: The protocol's limit on parameters per statement.
    MAX_PARAMS = 65535
    #: Multi-row statement texts kept, per (statement, row count).
    TEXT_CACHE = 256

    def __init__(self) -> None:
        self._plans: dict[str, tuple[str, str, int] | None] = {}
        self._texts: dict[tuple[str, int], str] = {}
        # RawCursor (psycopg 3.2+) takes PostgreSQL's own $n placeholders and
        # parses nothing: psycopg re-parses a %s query of more than 50
        # parameters on every execute, which cost 4.5 us per row of a
        # 250-row INSERT (0.8 us with $n).
        import psycopg

        self._raw_cursor: Any = getattr(psycopg, "RawCursor", None)

    def command(self, conn: Any, sql: str) -> None:
        conn.execute(sql)

    def _multirow_plan(self, sql: str) -> tuple[str, str, int] | None:
        """(head, one row's placeholders, their count) for a plain INSERT."""
        try:
            return self._plans[sql]
        except KeyError:
            pass
        m = _PG_INSERT_VALUES.match(sql)
        plan = None
        if m is not None and "%s" not in m.group(1):
            plan = (m.group(1), m.group(2), m.group(2).count("%s"))
        if len(self._plans) < 1000:
            self._plans[sql] = plan
        return plan

    def run(self, conn: Any, sql: str, params: list[Any]) -> list[BatchResult]:
        plan = self._multirow_plan(sql) if len(params) > 1 else None
        if plan is not None and all(type(p) in (tuple, list) and len(p) == plan[2]
                                    for p in params):
            return self._run_multirow(conn, sql, plan, params)
        cur = conn.cursor()
        try:
            # returning=True keeps one result per write: its own rowcount.
            # psycopg pipelines these, but waits on the socket once per write.
            cur.executemany(sql, params, returning=True)
            out: list[BatchResult] = []
            if cur.description is None:
                append = out.append
                while True:
                    append(BatchResult(cur.rowcount))
                    if not cur.nextset():
                        break
            else:
                while True:
                    out.append(BatchResult(cur.rowcount, cur.fetchone()))
                    if not cur.nextset():
                        break
            return out
        finally:
            cur.close()

    def _text(self, sql: str, plan: tuple[str, str, int], rows: int) -> tuple[str, bool]:
        """The INSERT of ``rows`` rows, and whether it uses $n placeholders."""
        head, row, width = plan
        raw = self._raw_cursor is not None and "%" not in head
        text = self._texts.get((sql, rows)) if raw else None
        if text is not None:
            return text, True
        if not raw:
            return head + ",".join([row] * rows), False
        parts = row.split("%s")
        text = head + ",".join(
            "".join(part + (f"${r * width + i + 1}" if i < width else "")
                    for i, part in enumerate(parts))
            for r in range(rows))
        if len(self._texts) >= self.TEXT_CACHE:
            self._texts.clear()
        self._texts[(sql, rows)] = text
        return text, True

    def _run_multirow(self, conn: Any, sql: str, plan: tuple[str, str, int],
                      params: list[Any]) -> list[BatchResult]:
        """One INSERT ... VALUES (...), (...) per MAX_PARAMS parameters: one
        round trip instead of a wait per write. Each write inserts its one
        row or the statement fails, so each rowcount is 1."""
        per_statement = max(1, self.MAX_PARAMS // plan[2])
        total = 0
        for start in range(0, len(params), per_statement):
            chunk = params[start:start + per_statement]
            text, raw = self._text(sql, plan, len(chunk))
            cur = self._raw_cursor(conn) if raw else conn.cursor()
            try:
                cur.execute(text, [value for p in chunk for value in p])
                total += cur.rowcount
            finally:
                cur.close()
        n = len(params)
        return [BatchResult(1 if total == n else 0 if total == 0 else -1)] * n


class MySQL(Dialect):
    def __init__(self) -> None:
        from MySQLdb.cursors import RE_INSERT_VALUES

        self._multirow = RE_INSERT_VALUES
        self._plans: dict[str, int] = {}

    def _plan(self, sql: str) -> int:
        """0: one execute per write; 1: multi-row INSERT/INSERT IGNORE (each
        write affects 0 or 1 row); 2: other multi-row (REPLACE, ON DUPLICATE)."""
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

    def run(self, conn: Any, sql: str, params: list[Any]) -> list[BatchResult]:
        plan = self._plan(sql) if len(params) > 1 else 0
        if plan == 0:
            return super().run(conn, sql, params)
        cur = conn.cursor()
        try:
            cur.executemany(sql, params)
            total = cur.rowcount
        finally:
            cur.close()
        n = len(params)
        each = -1
        if total == 0:
            each = 0
        elif plan == 1 and total == n:
            each = 1
        return [BatchResult(each)] * n


def dialect_for(client: Client) -> Dialect:
    """The statement runner for ``client``'s server kind (its adapter says which)."""
    client.require("group commit", "the batcher")
    if client.kind == "postgresql":
        return Postgres()
    if client.kind == "mysql":
        return MySQL()
    return Dialect()  # SQLite and other DB-API clients: one execute per write
