"""What a cluster asks each kind of server: its role and replication position.

A *position* is an integer that only grows along the primary's history: on
PostgreSQL the WAL position (``pg_current_wal_lsn()`` on the primary,
``pg_last_wal_replay_lsn()`` on a replica), on MariaDB the sequence number of
the GTID (``@@gtid_binlog_pos`` on the primary, ``@@gtid_slave_pos`` on a
replica: one replication domain, MariaDB's default). The monitor compares
them for lag, and read-your-writes compares a write's position with what each
replica has applied. Tokens are their text: ``'0/3000148'`` (PostgreSQL's
pg_lsn), ``'0-1-42'`` (a MariaDB GTID; only its sequence number counts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastpool.cluster.lsn import format_lsn, parse_lsn
from fastpool.errors import ConfigError, UnsupportedClient

__all__ = ["MariaDBServer", "PostgresServer", "Seen", "server_for"]

# libpq: CONNECTION_OK, PQTRANS_IDLE, PGRES_TUPLES_OK.
_OK, _IDLE, _TUPLES = 0, 0, 2


class Seen:
    """One observation of a server by the monitor."""

    __slots__ = ("at", "identity", "in_recovery", "lsn", "writable")

    def __init__(self, in_recovery: bool, writable: bool, lsn: int,
                 identity: Sequence[Any]) -> None:
        #: A replica (a standby in recovery; on MariaDB: read_only).
        self.in_recovery = in_recovery
        #: What libpq's target_session_attrs=read-write accepts.
        self.writable = writable
        self.lsn = lsn
        self.identity = tuple(identity)
        #: When the question was sent (monotonic; set by the monitor).
        self.at = 0.0


class PostgresServer:
    """PostgreSQL streaming replication, through psycopg."""

    kind = "postgresql"
    OBSERVE = (
        "SELECT pg_is_in_recovery(), "
        "(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
        "ELSE pg_current_wal_lsn() END)::text, "
        "inet_server_addr()::text, inet_server_port(), pg_postmaster_start_time()::text, "
        "current_setting('transaction_read_only')::bool")
    _INSERT_LSN = b"SELECT pg_current_wal_insert_lsn()::text"

    def connect(self, driver: Any) -> Any:
        """The monitor's own connection through ``driver`` (a blocking one)."""
        return _autocommit(driver.connect(), lambda conn: setattr(conn, "autocommit", True))

    def observe(self, conn: Any) -> Seen:
        row = conn.execute(self.OBSERVE).fetchone()
        return Seen(bool(row[0]), not row[0] and not row[5], parse_lsn(row[1] or "0/0"),
                    row[2:5])

    def position_after_write(self, conn: Any, client: Any) -> int | None:
        """The primary's insert position, asked on ``conn`` (still lent, idle)
        with libpq's simple query: no transaction of its own, one round trip."""
        pgconn = conn.pgconn
        if pgconn.status != _OK or pgconn.transaction_status != _IDLE:
            return None
        res = pgconn.exec_(self._INSERT_LSN)
        if res.status != _TUPLES:
            return None
        return parse_lsn(res.get_value(0, 0).decode())

    async def position_after_write_async(self, conn: Any, client: Any) -> int | None:
        """``position_after_write`` on an asyncio connection (psycopg's
        ``AsyncConnection`` or asyncpg's), outside any transaction: asyncpg
        runs it on its own; psycopg in autocommit for this one statement (no
        BEGIN; switching is local on an idle connection)."""
        if client.in_transaction(conn) is not False:
            return None
        sql = self._INSERT_LSN.decode()
        if client.name == "asyncpg":
            return parse_lsn(await conn.fetchval(sql))
        from psycopg.rows import tuple_row

        was = conn.autocommit
        if not was:
            await conn.set_autocommit(True)
        try:  # plain tuples whatever row factory the pool's connections have
            async with conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(sql, prepare=False)
                row = await cur.fetchone()
        finally:
            if not was:
                await conn.set_autocommit(False)
        return parse_lsn(row[0])

    parse = staticmethod(parse_lsn)
    format = staticmethod(format_lsn)


class MariaDBServer:
    """MariaDB replication with GTIDs, through mysqlclient. Replicas are the
    servers with ``read_only`` on."""

    kind = "mysql"
    OBSERVE = ("SELECT @@read_only, @@gtid_binlog_pos, @@gtid_slave_pos, @@server_id, "
               "@@port, @@hostname")

    def connect(self, driver: Any) -> Any:
        """The monitor's own connection through ``driver`` (a blocking one)."""
        return _autocommit(driver.connect(), lambda conn: conn.autocommit(True))

    def observe(self, conn: Any) -> Seen:
        cur = conn.cursor()
        try:
            cur.execute(self.OBSERVE)
            row = cur.fetchone()
        finally:
            cur.close()
        replica = bool(row[0])
        return Seen(replica, not replica, gtid_seq(row[2] if replica else row[1]), row[3:6])

    def position_after_write(self, conn: Any, client: Any) -> int | None:
        """``@@gtid_binlog_pos`` on ``conn`` (still lent, not in a transaction)."""
        if client.in_transaction(conn) is not False:
            return None
        cur = conn.cursor()
        try:
            cur.execute("SELECT @@gtid_binlog_pos")
            row = cur.fetchone()
        finally:
            cur.close()
        return gtid_seq(row[0])

    async def position_after_write_async(self, conn: Any, client: Any) -> int | None:
        """``position_after_write`` on an asyncmy or aiomysql connection."""
        if client.in_transaction(conn) is not False:
            return None
        async with conn.cursor() as cur:
            await cur.execute("SELECT @@gtid_binlog_pos")
            row = await cur.fetchone()
        # A dict cursor class (the pool's connections may have one) or a tuple.
        return gtid_seq(next(iter(row.values())) if isinstance(row, dict) else row[0])

    @staticmethod
    def parse(text: object) -> int:
        if isinstance(text, str) and text.count("-") == 2:
            try:
                return gtid_seq(text)
            except ValueError:
                pass
        raise ConfigError(f"a write token must be a MariaDB GTID such as '0-1-42' (from "
                          f"cluster.last_write_token()), got {text!r}")

    @staticmethod
    def format(position: int) -> str:
        return f"0-0-{position}"


def _autocommit(conn: Any, switch: Callable[[Any], object]) -> Any:
    """The monitor's own connection, in autocommit (closed if switching fails)."""
    try:
        switch(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def gtid_seq(text: str | None) -> int:
    """The sequence number of a GTID position (``domain-server-seq``); of several
    domains', the lowest domain's; 0 for none."""
    if not text:
        return 0
    entries = [tuple(int(x) for x in e.strip().split("-")) for e in text.split(",")]
    if any(len(e) != 3 for e in entries):
        raise ValueError(f"not a GTID position: {text!r}")
    return min(entries)[2]


def server_for(client: Any) -> PostgresServer | MariaDBServer:
    """The server rules for the monitor's client adapter (blocking clients
    only: an AsyncCluster's monitor connects through psycopg or mysqlclient)."""
    if client is not None and not client.is_async:
        if client.kind == "postgresql" and client.name == "psycopg":
            return PostgresServer()
        if client.kind == "mysql" and client.name == "mysqlclient":
            return MariaDBServer()
    raise UnsupportedClient(
        "create_cluster supports PostgreSQL through psycopg and MariaDB through mysqlclient "
        f"(blocking); got {getattr(client, 'name', client)!r}")
