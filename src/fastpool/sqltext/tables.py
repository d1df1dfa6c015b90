"""Which tables a statement reads and writes, for result-cache invalidation.

The SQL is parsed with sqlglot (a real parser), after the driver's
placeholders (``%s``, ``%(name)s``, ``?``, ``:name``, ``$1``) are replaced by
``NULL`` outside string literals, quoted identifiers and comments. Statements
sqlglot cannot parse fall back to a keyword scan; when even that fails the
answer is ``ANY``, which matches every table, so a statement fastpool does not
understand can only cause extra invalidation, never a stale read.

Table names are compared by their last part (``public.orders`` and
``orders`` are the same table for the cache), lowercased.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import NamedTuple

__all__ = ["ANY", "Access", "access"]

#: The table name that stands for "any table".
ANY = "*"

_PARSE_CACHE_SIZE = 4096

# One alternation, tried left to right at each position: things whose content
# must be kept verbatim first (comments, strings, quoted identifiers, dollar
# quotes), then the placeholders to replace.
_TOKENS = re.compile(
    r"""
      (?P<keep>
        --[^\n]*
      | /\*.*?\*/
      | [eE]?'(?:[^'\\]|\\.|'')*'
      | "(?:[^"]|"")*"
      | `(?:[^`]|``)*`
      | \$(?P<tag>[A-Za-z_]\w*)?\$.*?\$(?P=tag)\$
      | ::
      )
    | (?P<param>
        %\([^)]+\)s | %s | \?\d* | \$\d+ | (?<![:\w]):[A-Za-z_]\w*
      )
    | %%
    """,
    re.VERBOSE | re.DOTALL,
)

_WRITE_TYPES: tuple[type, ...] = ()
_READ_WORDS = frozenset({"select", "with", "values", "table", "show", "explain", "describe",
                         "desc", "pragma"})
_FALLBACK = re.compile(
    r"""^\s*(?:
          (?:insert|replace)\s+(?:(?:low_priority|delayed|high_priority|ignore|or\s+\w+)\s+)*
            (?:into\s+)?(?P<a>[\w."`\[\]]+)
        | update\s+(?:(?:low_priority|ignore|only)\s+)*(?P<b>[\w."`\[\]]+)
        | delete\s+(?:(?:low_priority|quick|ignore)\s+)*from\s+(?:only\s+)?(?P<c>[\w."`\[\]]+)
        | truncate\s+(?:table\s+)?(?:only\s+)?(?P<d>[\w."`\[\]]+)
        | merge\s+into\s+(?P<e>[\w."`\[\]]+)
        | (?:drop|alter|create)\s+(?:temporary\s+|temp\s+|unlogged\s+)?table\s+
            (?:if\s+(?:not\s+)?exists\s+)?(?P<f>[\w."`\[\]]+)
        )""",
    re.VERBOSE | re.IGNORECASE,
)

logging.getLogger("sqlglot").setLevel(logging.ERROR)


class Access(NamedTuple):
    """The tables a statement reads and writes (``ANY`` when unknown)."""

    reads: frozenset[str]
    writes: frozenset[str]


_cache: OrderedDict[tuple[str, str | None], Access] = OrderedDict()
_cache_lock = threading.Lock()


def access(sql: str, dialect: str | None = None) -> Access:
    """The tables ``sql`` reads and writes; cached per SQL text.

    >>> access("UPDATE orders SET paid = %s WHERE id = %s", "postgres").writes
    frozenset({'orders'})
    """
    key = (sql, dialect)
    found = _cache.get(key)
    if found is not None:
        return found
    result = _analyse(sql, dialect)
    with _cache_lock:
        _cache[key] = result
        if len(_cache) > _PARSE_CACHE_SIZE:
            _cache.popitem(last=False)
    return result


def without_placeholders(sql: str) -> str:
    """``sql`` with every driver placeholder replaced by NULL."""
    def sub(m: re.Match[str]) -> str:
        if m.group("param"):
            return "NULL"
        if m.group("keep"):
            return m.group(0)
        return "%"  # %% is a literal percent sign
    return _TOKENS.sub(sub, sql)


def _name(table: object) -> str:
    # Always lowercased, quoted or not: SQLite and MySQL compare names without
    # case even when quoted; on PostgreSQL "Orders" and orders then share a
    # key, which can only cause an extra invalidation.
    ident = table.this  # type: ignore[attr-defined]
    name: str = ident.name if hasattr(ident, "name") else str(ident)
    return name.lower()


# MySQL's statement modifiers and SQLite's conflict clauses, which sqlglot may
# take for the table name: removed before parsing (they name no table).
_MODIFIERS = re.compile(
    r"^(\s*(?:update|delete|insert|replace)\s+)"
    r"((?:(?:low_priority|quick|ignore|delayed|high_priority"
    r"|or\s+(?:rollback|abort|replace|fail|ignore))\s+)+)",
    re.IGNORECASE)


def _analyse(sql: str, dialect: str | None) -> Access:
    try:
        import sqlglot
        from sqlglot import exp
    except ImportError:  # pragma: no cover - sqlglot is a dependency
        return _fallback(sql)
    try:
        trees = sqlglot.parse(_MODIFIERS.sub(r"\1", without_placeholders(sql)), read=dialect)
    except Exception:  # sqlglot raises several error types; any means "not understood"
        return _fallback(sql)
    reads: set[str] = set()
    writes: set[str] = set()
    write_types = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.TruncateTable,
                   exp.Drop, exp.Alter, exp.Create, exp.Copy)
    for tree in trees:
        if tree is None:
            continue
        if isinstance(tree, exp.Command):
            fallback = _fallback(tree.sql() if not isinstance(tree.this, str) else sql)
            reads |= fallback.reads
            writes |= fallback.writes
            continue
        # CTE names are kept as if they were tables: a CTE may share its name
        # with a real table (read inside it, or the target of the DML after
        # it), and an extra name can only cause an extra invalidation.
        for node in tree.find_all(*write_types):
            if node.find_ancestor(exp.Merge) is not None:
                continue  # WHEN MATCHED THEN UPDATE/INSERT: the MERGE's own target
            writes.update(_targets(node, exp))
            if isinstance(node, exp.Update):
                # Multi-table UPDATE (MySQL: joins or a comma list; PostgreSQL:
                # FROM): any of them may be written.
                for part in (node.this, node.args.get("from"), *(node.args.get("joins") or ())):
                    if part is not None:
                        writes.update(_name(t) for t in part.find_all(exp.Table))
        for table in tree.find_all(exp.Table):
            name = _name(table)
            if name:
                reads.add(name)
    if not reads and not writes and not _is_plain_read(sql):
        return _fallback(sql)
    return Access(frozenset(reads), frozenset(writes))


def _targets(node: object, exp: object) -> list[str]:
    """The tables a write node modifies (not the ones it only reads)."""
    e = exp
    tables = node.args.get("tables") or (  # type: ignore[attr-defined]
        node.expressions if isinstance(node, e.TruncateTable) else None)  # type: ignore[attr-defined]
    if tables:
        return [_name(t) if isinstance(t, e.Table) else ANY for t in tables]  # type: ignore[attr-defined]
    target = node.this  # type: ignore[attr-defined]
    while target is not None and not isinstance(target, e.Table):  # type: ignore[attr-defined]
        target = getattr(target, "this", None)
        if isinstance(target, str):
            return [ANY]
    if target is None:
        return [ANY]
    return [_name(target)]


def _is_plain_read(sql: str) -> bool:
    word = re.match(r"\s*(?:/\*.*?\*/\s*|--[^\n]*\n\s*)*(\w+)", sql, re.DOTALL)
    return bool(word) and word.group(1).lower() in _READ_WORDS  # type: ignore[union-attr]


def _fallback(sql: str) -> Access:
    """A keyword scan for what sqlglot cannot parse: one target table, or ANY."""
    if _is_plain_read(sql):
        return Access(frozenset({ANY}), frozenset())
    m = _FALLBACK.match(without_placeholders(sql))
    if m is None:
        return Access(frozenset({ANY}), frozenset({ANY}))
    raw = next(g for g in m.groups() if g)
    last = raw.split(".")[-1]
    return Access(frozenset({ANY}), frozenset({last.strip("\"`[]").lower()}))
