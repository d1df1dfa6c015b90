"""Query plans, with the full table scans worth knowing about pointed out.

``explain(pool, sql, params)`` (``pool.explain(...)``) asks the database how it
runs a statement and returns a :class:`Plan`: the plan as the database gives
it (``.plan``), a readable rendering (``.text``) and findings (``.warnings``):
sequential / full table scans of tables bigger than ``scan_rows`` rows::

    >>> plan = pool.explain("SELECT * FROM orders WHERE customer_id = %s", (42,))
    >>> print(plan)
    Seq Scan on public.orders  (cost=0.00..1887.00 rows=10 width=40)
      Filter: (orders.customer_id = 42)
    warning: Seq Scan on public.orders reads the whole table (about 100,000 rows, above
    scan_rows=1,000); filter: (orders.customer_id = 42); an index on the filtered or
    joined columns may avoid it

- PostgreSQL: ``EXPLAIN (VERBOSE, FORMAT JSON)``, with ``analyze``
  ``EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON)``. A table's size is the
  largest of the planner's estimate for the whole table (``pg_class.reltuples``
  scaled to the table's current size), the statistics collector's live rows
  and the rows the scan actually read.
- MariaDB / MySQL: ``EXPLAIN FORMAT=JSON``, with ``analyze`` MariaDB's
  ``ANALYZE FORMAT=JSON`` (MySQL has no JSON form of it: NotImplementedError).
  Size: the plan's row estimate for the scan, or
  ``information_schema.TABLES.TABLE_ROWS``, whichever is larger.
- SQLite: ``EXPLAIN QUERY PLAN`` (no ``analyze``: NotImplementedError). Size:
  a count of the table's rows, stopped at ``COUNT_CAP``.

With ``analyze`` the statement really runs; a write (INSERT, UPDATE, DELETE...)
runs in a transaction that is rolled back, so the data does not change. What
a rollback cannot undo still happens: sequences advance (``nextval``), and on
MariaDB a write to a table of a non-transactional engine (MyISAM, Aria,
MEMORY...) is refused with AnalyzeRefused before anything runs. SQL errors pass
through as the driver's exception; the connection goes back to the pool
rolled back and healthy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastpool.errors import ConfigError, FastpoolError, UnsupportedClient
from fastpool.options import MAX_INT64, integer, parameters
from fastpool.sqltext.lexer import Tokens, aliases
from fastpool.steps import Steps, run, run_async

if TYPE_CHECKING:
    from fastpool.source import ConnectionSource

__all__ = ["AnalyzeRefused", "Plan", "ScanFinding", "explain", "explain_async"]

#: SQLite has no row estimate: a scanned table's rows are counted, up to this
#: many (or scan_rows + 1, if larger).
COUNT_CAP = 1_000_000


class AnalyzeRefused(FastpoolError, ValueError):
    """``explain(..., analyze=True)`` of a write that a rollback could not undo
    (MariaDB/MySQL: a table of a non-transactional engine such as MyISAM, or a
    view, whose tables cannot be checked). Nothing was run."""


@dataclass(frozen=True)
class ScanFinding:
    """A sequential / full scan of a table above ``scan_rows`` rows."""

    #: The table (schema-qualified on PostgreSQL), as the database names it.
    table: str
    #: Its size in rows (an estimate, see the module docstring).
    rows: int
    #: A sentence naming the table, its size and the scan's filter, if any.
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Plan:
    """The plan of one statement: ``print(plan)`` shows text and findings."""

    #: The plan as the database returns it: PostgreSQL's and MariaDB's parsed
    #: JSON, SQLite's ``(id, parent, notused, detail)`` rows.
    plan: Any
    #: A readable rendering (PostgreSQL's text format, an outline of MariaDB's
    #: JSON, SQLite's tree).
    text: str
    #: Full scans of tables above ``scan_rows`` rows; empty when there is none.
    warnings: list[ScanFinding] = field(default_factory=list)
    #: ``"postgresql"``, ``"mysql"`` or ``"sqlite"``.
    database: str = ""
    #: True when the statement ran (``analyze``): the plan has actual rows and times.
    analyzed: bool = False

    def __str__(self) -> str:
        return "\n".join([self.text, *(f"warning: {w}" for w in self.warnings)])


def explain(source: ConnectionSource, sql: str, params: Any = None, *, analyze: bool = False,
            scan_rows: int = 1000) -> Plan:
    """The plan of ``sql`` (with ``params`` in the driver's placeholder style).

    ``analyze``: run the statement to get actual row counts and times; a write
    runs in a transaction that is rolled back (data unchanged; sequences still
    advance). ``scan_rows``: report full scans of tables with more rows than
    this. SQL errors are the driver's own exceptions.
    """
    params = _check(sql, params, analyze, scan_rows)
    with source.connection() as conn:
        return run(*_reader(source.adapter, conn, sql, params, analyze, scan_rows))


async def explain_async(source: Any, sql: str, params: Any = None, *, analyze: bool = False,
                        scan_rows: int = 1000) -> Plan:
    """``explain`` on an asyncio source (``await pool.explain(...)``): the same
    plan readers and findings, their queries awaited."""
    params = _check(sql, params, analyze, scan_rows)
    async with source.connection() as conn:
        return await run_async(*_reader(source.adapter, conn, sql, params, analyze, scan_rows))


def _check(sql: object, params: Any, analyze: object, scan_rows: object) -> Any:
    """The arguments checked before anything is sent; returns ``params``."""
    if not isinstance(sql, str) or not sql.strip():
        raise ConfigError(f"explain: sql must be a non-empty string, got {sql!r}")
    if not isinstance(analyze, bool):
        raise ConfigError(f"explain: analyze must be True or False, got {analyze!r}")
    integer("scan_rows", scan_rows, 0, owner="explain", maximum=MAX_INT64)
    return parameters(params)


def _reader(client: Any, conn: Any, sql: str, params: Any, analyze: bool,
            scan_rows: int) -> tuple[Steps[Plan], Any]:
    """The server's plan reader (a flow of ``("rows", sql, params)``,
    ``("begin",)``, ``("rollback",)``, ``("server_info",)`` operations) and the
    client's I/O object that performs them."""
    client.require("explain", "pool.explain")
    reader = _EXPLAIN.get(client.kind)
    io = _IO.get((client.is_async, client.name))
    if reader is None or io is None:
        raise UnsupportedClient(f"pool.explain: no plan reader for {client.kind} "
                                f"({client.name}) connections")
    return reader(sql, params, analyze, scan_rows), io(conn, client)


# ---- reading the SQL text ---------------------------------------------------------

def _first_word(sql: str) -> str:
    tokens = Tokens(sql)
    return tokens.texts[0].upper() if tokens.texts else ""


def _reads_only(sql: str) -> bool:
    """Does ``sql`` start like a plain query (not a write, not a CTE)?"""
    return _first_word(sql) in ("SELECT", "(", "TABLE", "VALUES")


def _split_name(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return schema or None, table


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ---- PostgreSQL ---------------------------------------------------------------------

def _explain_postgres(sql: str, params: Any, analyze: bool, scan_rows: int) -> Steps[Plan]:
    options = "ANALYZE, BUFFERS, VERBOSE, FORMAT JSON" if analyze else "VERBOSE, FORMAT JSON"
    findings: list[ScanFinding] = []
    # In a transaction rolled back at the end: ANALYZE of a write leaves no change.
    yield ("begin",)
    try:
        rows = yield ("rows", f"EXPLAIN ({options}) {sql}", params)
        doc = _json(rows[0][0])
        root = doc[0]
        sizes: dict[tuple[str, str], int] = {}
        for node in _pg_nodes(root["Plan"]):
            if node.get("Node Type") != "Seq Scan" or "Relation Name" not in node:
                continue
            key = (node.get("Schema") or "", node["Relation Name"])
            if key not in sizes:
                sizes[key] = yield from _pg_table_rows(*key)
            rows = sizes[key]
            if analyze and "Actual Rows" in node:  # per loop: rows kept plus rows filtered out
                rows = max(rows, int(node["Actual Rows"] + node.get("Rows Removed by Filter", 0)))
            if rows > scan_rows:
                table = ".".join(filter(None, key))
                filt = f"; filter: {node['Filter']}" if node.get("Filter") else ""
                findings.append(ScanFinding(table, rows, (
                    f"Seq Scan on {table} reads the whole table (about {rows:,} rows, above "
                    f"scan_rows={scan_rows:,}){filt}; an index on the filtered or joined "
                    "columns may avoid it")))
    finally:
        yield ("rollback",)
    return Plan(doc, _pg_text(root), findings, "postgresql", analyze)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _pg_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [node]
    for child in node.get("Plans", ()):
        nodes.extend(_pg_nodes(child))
    return nodes


def _pg_table_rows(schema: str, table: str) -> Steps[int]:
    """The larger of the planner's estimate of the whole table's rows
    (pg_class.reltuples scaled to the table's current number of pages; a
    guess from the row width for a table never analyzed) and the statistics
    collector's count of live rows."""
    name = f"{_quote_ident(schema)}.{_quote_ident(table)}" if schema else _quote_ident(table)
    rows = yield ("rows", f"EXPLAIN (FORMAT JSON) SELECT 1 FROM ONLY {name}", None)
    estimate = int(_json(rows[0][0])[0]["Plan"]["Plan Rows"])
    # The name as a literal: no placeholder, whose style differs between clients.
    literal = "'" + name.replace("'", "''") + "'"
    rows = yield ("rows", f"SELECT pg_stat_get_live_tuples({literal}::regclass)", None)
    return max(estimate, int(rows[0][0] or 0))


_PG_DETAILS = ("Index Cond", "Recheck Cond", "Hash Cond", "Merge Cond", "Join Filter",
               "Rows Removed by Join Filter", "Filter", "Rows Removed by Filter", "Sort Key",
               "Sort Method", "Group Key", "Heap Fetches", "Workers Planned",
               "Workers Launched")
_JOINS = {"Hash Join": "Hash {} Join", "Merge Join": "Merge {} Join",
          "Nested Loop": "Nested Loop {} Join"}


def _pg_label(node: dict[str, Any]) -> str:
    kind = str(node.get("Node Type", "?"))
    if kind == "ModifyTable":
        kind = str(node.get("Operation", kind))
    join = node.get("Join Type")
    if kind in _JOINS and join and join != "Inner":
        kind = _JOINS[kind].format(join)
    if node.get("Parallel Aware"):
        kind = f"Parallel {kind}"
    if node.get("Index Name") and "Relation Name" in node:
        kind += f" using {node['Index Name']}"
    elif node.get("Index Name"):
        kind += f" on {node['Index Name']}"
    if "Relation Name" in node:
        rel = node["Relation Name"]
        kind += " on " + (f"{node['Schema']}.{rel}" if node.get("Schema") else rel)
        if node.get("Alias") and node["Alias"] != rel:
            kind += f" {node['Alias']}"
    if node.get("Subplan Name"):
        kind = f"[{node['Subplan Name']}] {kind}"
    return kind


def _pg_text(root: dict[str, Any]) -> str:
    """Close to PostgreSQL's own text format."""
    lines: list[str] = []

    def walk(node: dict[str, Any], depth: int) -> None:
        pad = " " * (6 * depth - 4) + "->  " if depth else ""
        line = (f"{pad}{_pg_label(node)}  (cost={node.get('Startup Cost', 0):.2f}.."
                f"{node.get('Total Cost', 0):.2f} rows={node.get('Plan Rows', 0)} "
                f"width={node.get('Plan Width', 0)})")
        if "Actual Total Time" in node:
            line += (f" (actual time={node['Actual Startup Time']:.3f}.."
                     f"{node['Actual Total Time']:.3f} rows={node['Actual Rows']} "
                     f"loops={node['Actual Loops']})")
        elif node.get("Actual Loops") == 0:
            line += " (never executed)"
        lines.append(line)
        inner = " " * (len(pad) + 2)
        for key in _PG_DETAILS:
            if key in node:
                value = node[key]
                if isinstance(value, list):
                    value = ", ".join(map(str, value))
                lines.append(f"{inner}{key}: {value}")
        for child in node.get("Plans", ()):
            walk(child, depth + 1)

    walk(root["Plan"], 0)
    for key in ("Planning Time", "Execution Time"):
        if key in root:
            lines.append(f"{key}: {root[key]:.3f} ms")
    return "\n".join(lines)


# ---- MariaDB / MySQL ----------------------------------------------------------------

def _explain_mysql(sql: str, params: Any, analyze: bool, scan_rows: int) -> Steps[Plan]:
    names = aliases(sql)
    if analyze:
        server = yield ("server_info",)
        if "mariadb" not in server.lower():
            raise NotImplementedError(
                "explain: analyze=True needs MariaDB's ANALYZE FORMAT=JSON; MySQL's "
                "EXPLAIN ANALYZE has no JSON form: use analyze=False")
        if not _reads_only(sql):
            yield from _check_transactional(sorted(set(names.values())))
        yield ("rows", "START TRANSACTION", None)
        try:
            rows = yield ("rows", f"ANALYZE FORMAT=JSON {sql}", params)
            doc = _json(rows[0][0])
        finally:
            yield ("rollback",)
    else:
        rows = yield ("rows", f"EXPLAIN FORMAT=JSON {sql}", params)
        doc = _json(rows[0][0])
    findings: list[ScanFinding] = []
    for table in _mysql_tables(doc):
        alias = str(table.get("table_name", ""))
        if table.get("access_type") != "ALL" or not alias or alias.startswith("<"):
            continue  # <derivedN>, <subqueryN>: temporary results, not tables
        count = max(int(table.get(k) or 0)
                    for k in ("rows", "r_rows", "rows_examined_per_scan"))
        name = names.get(alias.lower(), alias)
        count = max(count, (yield from _mysql_table_rows(name)))
        if count > scan_rows:
            shown = name if name == alias else f"{name} (as {alias})"
            cond = table.get("attached_condition")
            filt = f"; condition: {cond}" if cond else ""
            findings.append(ScanFinding(name, count, (
                f"full table scan of {shown} (about {count:,} rows, above "
                f"scan_rows={scan_rows:,}){filt}; an index on the filtered or joined "
                "columns may avoid it")))
    return Plan(doc, "\n".join(_outline(doc)), findings, "mysql", analyze)


def _check_transactional(names: list[str]) -> Steps[None]:
    """Refuse ANALYZE of a write that a rollback could not undo."""
    for name in names:
        schema, table = _split_name(name)
        rows = yield ("rows",
            "SELECT t.TABLE_SCHEMA, t.TABLE_TYPE, t.ENGINE, e.TRANSACTIONS "
            "FROM information_schema.TABLES t "
            "LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE "
            "WHERE t.TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND t.TABLE_NAME = %s",
            (schema, table))
        for db, kind, engine, transactional in rows:
            if kind == "VIEW":
                raise AnalyzeRefused(
                    f"explain: analyze=True would run this write for real through the view "
                    f"{db}.{table}, whose tables' engines cannot be checked; nothing was run "
                    "(use analyze=False)")
            if transactional != "YES":
                raise AnalyzeRefused(
                    f"explain: analyze=True would run this write for real: table "
                    f"{db}.{table} uses the {engine} engine, which cannot roll it back; "
                    "nothing was run (use analyze=False)")


def _mysql_tables(node: Any) -> list[dict[str, Any]]:
    """Every ``"table": {...}`` object in a MariaDB/MySQL JSON plan."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "table" and isinstance(value, dict):
                found.append(value)
            found.extend(_mysql_tables(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_mysql_tables(item))
    return found


def _mysql_table_rows(name: str) -> Steps[int]:
    schema, table = _split_name(name)
    rows = yield ("rows", "SELECT TABLE_ROWS FROM information_schema.TABLES "
                  "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s",
                  (schema, table))
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def _scalar_list(value: Any) -> bool:
    return isinstance(value, list) and not any(isinstance(v, (dict, list)) for v in value)


def _outline(value: Any, key: str | None = None, depth: int = 0) -> list[str]:
    """A JSON plan as an indented outline: one line per object, its scalar
    fields as key=value, nested objects below it."""
    pad = "  " * depth
    if isinstance(value, list) and not _scalar_list(value):
        lines = [f"{pad}{key}:"] if key else []
        for item in value:
            lines.extend(_outline(item, None, depth + 1 if key else depth))
        return lines
    if not isinstance(value, dict):
        return [f"{pad}{key}: {value}"] if key else [f"{pad}{value}"]
    scalars = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
               for k, v in value.items() if not isinstance(v, (dict, list)) or _scalar_list(v)]
    lines = []
    if key or scalars:
        lines.append(pad + (f"{key}: " if key else "") + " ".join(scalars))
    else:
        depth -= 1  # a bare wrapper object: its children take its place
    for k, v in value.items():
        if isinstance(v, dict) or (isinstance(v, list) and not _scalar_list(v)):
            lines.extend(_outline(v, k, depth + 1))
    return lines


# ---- SQLite -----------------------------------------------------------------------

_SQLITE_SCAN = re.compile(r"SCAN (?:TABLE )?(\S+)(?: AS (\S+))?(.*)")


def _explain_sqlite(sql: str, params: Any, analyze: bool, scan_rows: int) -> Steps[Plan]:
    if analyze:
        raise NotImplementedError("explain: SQLite has no EXPLAIN ANALYZE; use analyze=False")
    rows = yield ("rows", f"EXPLAIN QUERY PLAN {sql}", () if params is None else params)
    names = aliases(sql)
    findings: list[ScanFinding] = []
    cap = max(COUNT_CAP, scan_rows + 1)
    sizes: dict[str, int | None] = {}
    for _id, _parent, _unused, detail in rows:
        m = _SQLITE_SCAN.fullmatch(detail)
        if not m or "INDEX" in m.group(3):
            continue  # SEARCH (an index lookup), or a scan of an index
        name = names.get(m.group(1).lower(), m.group(1))
        if name not in sizes:
            sizes[name] = yield from _sqlite_table_rows(name, cap)
        count = sizes[name]
        if count is None or count <= scan_rows:
            continue
        size = f"about {count:,}" if count < cap else f"at least {count:,}"
        shown = name if name.lower() == m.group(1).lower() else f"{name} (as {m.group(1)})"
        findings.append(ScanFinding(name, count, (
            f"SCAN {shown} reads the whole table ({size} rows, above scan_rows="
            f"{scan_rows:,}); an index on the filtered or joined columns may avoid it")))
    return Plan(rows, _sqlite_text(rows), findings, "sqlite", False)


def _sqlite_table_rows(name: str, cap: int) -> Steps[int | None]:
    """Rows in table ``name`` (counted up to ``cap``); None if it is no table."""
    schema, table = _split_name(name)
    master = f"{_quote_ident(schema)}.sqlite_master" if schema else "sqlite_master"
    rows = yield ("rows", f"SELECT 1 FROM {master} WHERE type = 'table' AND name = ? "
                  "COLLATE NOCASE", (table,))
    if not rows:
        return None  # a view, a subquery or CTE name, a virtual row source
    qualified = f"{_quote_ident(schema)}.{_quote_ident(table)}" if schema \
        else _quote_ident(table)
    rows = yield ("rows", f"SELECT count(*) FROM (SELECT 1 FROM {qualified} LIMIT ?)", (cap,))
    return int(rows[0][0])


def _sqlite_text(rows: list[tuple[Any, ...]]) -> str:
    """The tree the sqlite3 shell prints for EXPLAIN QUERY PLAN."""
    children: dict[int, list[tuple[int, str]]] = {}
    for node_id, parent, _unused, detail in rows:
        children.setdefault(parent, []).append((node_id, detail))
    lines = ["QUERY PLAN"]

    def walk(parent: int, prefix: str) -> None:
        kids = children.get(parent, [])
        for n, (node_id, detail) in enumerate(kids):
            last = n == len(kids) - 1
            lines.append(f"{prefix}{'`--' if last else '|--'}{detail}")
            walk(node_id, prefix + ("   " if last else "|  "))

    walk(0, "")
    return "\n".join(lines)


#: The plan reader of each server kind (``Client.kind``).
_EXPLAIN: dict[str, Callable[[str, Any, bool, int], Steps[Plan]]] = {
    "postgresql": _explain_postgres,
    "mysql": _explain_mysql,
    "sqlite": _explain_sqlite,
}


# ---- the clients' I/O for the plan readers ---------------------------------------------
#
# ``rows(sql, params)``: every row as a tuple (whatever row type the pool's
# connections are set up with); ``begin()`` / ``rollback()``: the adapter's own;
# ``server_info()``: the MySQL/MariaDB server's version string.

def _tuples(rows: Any) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in rows]


class _ClientIO:
    __slots__ = ("client", "conn")

    def __init__(self, conn: Any, client: Any) -> None:
        self.conn = conn
        self.client = client

    def begin(self) -> Any:
        return self.client.begin(self.conn)

    def rollback(self) -> Any:
        return self.client.rollback(self.conn)

    def server_info(self) -> str:
        return str(self.conn.get_server_info())


class _PsycopgIO(_ClientIO):
    __slots__ = ()

    def rows(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        from psycopg.rows import tuple_row

        with self.conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(sql, params, prepare=False)
            return list(cur.fetchall())


class _PsycopgAsyncIO(_ClientIO):
    __slots__ = ()

    async def rows(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        from psycopg.rows import tuple_row

        async with self.conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(sql, params, prepare=False)
            return list(await cur.fetchall())


class _AsyncpgIO(_ClientIO):
    __slots__ = ()

    async def rows(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        return _tuples(await self.conn.fetch(sql, *(params or ())))


class _MySQLdbIO(_ClientIO):
    __slots__ = ()

    def rows(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        import MySQLdb.cursors

        cur = self.conn.cursor(MySQLdb.cursors.Cursor)  # tuples, whatever the pool's cursorclass
        try:
            cur.execute(sql, params)
            return list(cur.fetchall())
        finally:
            cur.close()


class _PyMySQLAsyncIO(_ClientIO):
    __slots__ = ()

    async def rows(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        async with self.conn.cursor() as cur:  # awaited on aiomysql, not on asyncmy
            await cur.execute(sql, params)
            return _tuples(await cur.fetchall() if cur.description else ())


class _SQLiteIO(_ClientIO):
    __slots__ = ()

    def rows(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        cur.row_factory = None  # plain tuples, whatever the connection's row_factory
        try:
            cur.execute(sql, () if params is None else params)
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()


class _AiosqliteIO(_ClientIO):
    __slots__ = ()

    async def rows(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        cur = await self.conn.execute(sql, () if params is None else params)
        try:
            return _tuples(await cur.fetchall())
        finally:
            await cur.close()


#: The plan readers' I/O for each client library: (``is_async``, ``name``).
_IO: dict[tuple[bool, str], Callable[[Any, Any], _ClientIO]] = {
    (False, "psycopg"): _PsycopgIO,
    (False, "mysqlclient"): _MySQLdbIO,
    (False, "sqlite3"): _SQLiteIO,
    (True, "psycopg"): _PsycopgAsyncIO,
    (True, "asyncpg"): _AsyncpgIO,
    (True, "asyncmy"): _PyMySQLAsyncIO,
    (True, "aiomysql"): _PyMySQLAsyncIO,
    (True, "aiosqlite"): _AiosqliteIO,
}
