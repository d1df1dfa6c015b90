"""Bulk loads into PostgreSQL: binary (or text) COPY through the encoder,
upserts through a staging table."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from fastpool.errors import ConfigError
from fastpool.writes.bulk.common import (
    PG_CHUNK_BYTES,
    ErrorFactory,
    Progress,
    Reporter,
    encoders,
)

_stage_ids = itertools.count(1)

# Built-in type oids (stable) -> encoder kinds; bpchar and varchar take text's
# binary format.
_PG_KINDS = {21: "INT2", 23: "INT4", 20: "INT8", 700: "FLOAT4", 701: "FLOAT8", 25: "TEXT",
             1043: "TEXT", 1042: "TEXT", 17: "BYTEA", 16: "BOOL", 1184: "TIMESTAMPTZ",
             1114: "TIMESTAMP", 1082: "DATE"}

# Domains count as their base type: binary COPY takes the base type's format.
_PG_COLUMNS_SQL = """
SELECT a.attname, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END::int8,
       format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"""


def _pg_plan(conn: Any, columns: list[str], oids: list[int | None], pg_format: str,
             ) -> tuple[bool, list[int], list[Any]]:
    """(binary?, encoder kinds, per-column fallbacks) for a COPY of ``columns``."""
    from psycopg import ProgrammingError, pq
    from psycopg.adapt import PyFormat, Transformer

    enc = encoders()
    utf8 = conn.info.encoding == "utf-8"
    if pg_format != "text":
        kinds: list[int] = []
        fallbacks: list[Any] = []
        for name, oid in zip(columns, oids, strict=True):
            kind = getattr(enc, _PG_KINDS.get(oid or 0, "GENERIC"))
            if kind == enc.TEXT and not utf8:
                kind = enc.GENERIC  # psycopg encodes to the connection's encoding
            fallback = None
            if oid is not None:
                tx = Transformer(conn)
                try:
                    tx.set_dumper_types([oid], pq.Format.BINARY)
                    fallback = _binary_dumper(tx, PyFormat.BINARY)
                except ProgrammingError:  # psycopg has no binary dumper for this type
                    if kind == enc.GENERIC:
                        if pg_format == "binary":
                            raise ConfigError(
                                f"column {name!r}: psycopg cannot dump its type (oid {oid}) "
                                "in binary; use pg_format='text' or 'auto'") from None
                        return _pg_plan(conn, columns, oids, "text")
            kinds.append(kind)
            fallbacks.append(fallback)
        return True, kinds, fallbacks
    # Text: str values as they are, anything else as psycopg's text dumper
    # for its Python type writes it; the server parses them.
    tx = Transformer(conn)

    def dump_text(value: Any) -> Any:
        return tx.get_dumper(value, PyFormat.TEXT).dump(value)

    kind = enc.TEXT if utf8 else enc.GENERIC
    return False, [kind] * len(columns), [dump_text] * len(columns)


def _binary_dumper(tx: Any, fmt: Any) -> Callable[[Any], Any]:
    formats = (fmt,)

    def dump(value: Any) -> Any:
        return tx.dump_sequence((value,), formats)[0]

    return dump


def copy_postgres(conn: Any, table: tuple[str, ...], columns: list[str], rows: Iterator[Any],
                   keys: list[str], pg_format: str, progress: Progress | None,
                   chunk_rows: int, error: ErrorFactory) -> int:
    from psycopg import sql
    from psycopg.rows import tuple_row

    target = sql.Identifier(*table)
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    report = Reporter(progress)
    # Plain tuples whatever row factory the pool's connections have (the
    # transaction is the runner's: fastpool.transaction.attempt).
    with conn.cursor(row_factory=tuple_row) as cur:
        # No rows for a table that does not exist: then COPY (or CREATE TABLE
        # AS) fails with the server's own error, before any row is read.
        found = {}
        for name, oid, type_name in cur.execute(_PG_COLUMNS_SQL, [target.as_string(conn)]):
            found[name] = oid
            error.types[name] = type_name
        binary, kinds, fallbacks = _pg_plan(conn, columns, [found.get(c) for c in columns],
                                            pg_format)
        dest = target
        if keys:
            dest = sql.Identifier(f"_fastpool_stage_{next(_stage_ids)}")
            cur.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS "
                                "SELECT {} FROM {} WITH NO DATA").format(dest, names, target))
        encoder = encoders().Encoder(kinds, fallbacks, binary=binary, error=error)
        statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
            dest, names, sql.SQL(" (FORMAT BINARY)" if binary else ""))
        with cur.copy(statement) as copy:
            while not encoder.done:
                data = encoder.encode(rows, PG_CHUNK_BYTES, chunk_rows)
                if data:
                    copy.write(data)
                report(encoder.rows)
        if keys:
            cur.execute(_pg_upsert(target, dest, columns, keys))
            cur.execute(sql.SQL("DROP TABLE {}").format(dest))
    return int(encoder.rows)


def _pg_upsert(target: Any, stage: Any, columns: list[str], keys: list[str]) -> Any:
    """INSERT the staged rows, the last one of each key, updating existing rows."""
    from psycopg import sql

    def idents(names: list[str]) -> Any:
        return sql.SQL(", ").join(map(sql.Identifier, names))

    others = [c for c in columns if c not in keys]
    action = sql.SQL("UPDATE SET ") + sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others) \
        if others else sql.SQL("NOTHING")
    # A temp table filled by one COPY keeps insertion order in ctid. Rows
    # with a NULL in the key never conflict (NULLs are distinct for a unique
    # index), so they all go in, as on MySQL and SQLite; DISTINCT ON would
    # keep only one of them.
    any_null = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(k))
                                    for k in keys)
    return sql.SQL("INSERT INTO {target} ({cols}) "
                   "(SELECT DISTINCT ON ({keys}) {cols} FROM {stage} WHERE NOT ({any_null}) "
                   "ORDER BY {keys}, ctid DESC) "
                   "UNION ALL (SELECT {cols} FROM {stage} WHERE {any_null}) "
                   "ON CONFLICT ({keys}) DO {action}").format(
        target=target, cols=idents(columns), keys=idents(keys), stage=stage, action=action,
        any_null=any_null)
