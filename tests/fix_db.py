"""Database fixtures: the real PostgreSQL and MariaDB servers of the machine.

URLs come from FASTPOOL_PG_DSN / FASTPOOL_MYSQL_DSN (defaults: the local
servers, trust auth / root without password, database ``test``). A server
that cannot be reached skips its tests locally and fails them under CI=true.
Admin connections (autocommit, outside any pool) kill backends and look at
server-side state.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastpool import ErrorKind, PoolTimeout, TransactionOutcomeUnknown
from fastpool.drivers import MySQLDriver, PostgresDriver
from tests.fix_pool import IN_CI

PG_URL = os.environ.get("FASTPOOL_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("FASTPOOL_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
PG_SOCKET_DIR = os.environ.get("FASTPOOL_PG_SOCKET_DIR", "/var/run/postgresql")
MYSQL_SOCKET = os.environ.get("FASTPOOL_MYSQL_SOCKET", "/run/mysqld/mysqld.sock")


def _unavailable(what: str, exc: BaseException) -> None:
    msg = f"{what} not reachable: {type(exc).__name__}: {exc}"
    if IN_CI:
        pytest.fail(f"CI=true and {msg}")
    pytest.skip(msg)


def hammer(pool: Any, run: Callable[[Any], object], stop: threading.Event,
           outcomes: list[Any], timeout: float | None = None) -> None:
    """Borrow, ``run(conn)``, return, until ``stop``; record each attempt's end:
    "ok", "timeout" (PoolTimeout), "outcome_unknown" (the connection was lost
    while the block's COMMIT was in flight), or ``pool.classify(exc)`` of any
    other error."""
    while not stop.is_set():
        try:
            with pool.connection(timeout=timeout) as conn:
                run(conn)
            result: Any = "ok"
        except PoolTimeout:
            result = "timeout"
        except TransactionOutcomeUnknown as exc:
            assert pool.classify(exc.__cause__) is ErrorKind.CONNECTION_LOST, exc
            result = "outcome_unknown"
        except Exception as exc:
            result = pool.classify(exc)
        outcomes.append(result)  # list.append is atomic
        time.sleep(0.001)


def need_driver(module: str, extra: str) -> Any:
    """Import a database client the tests need: skip without it locally (the
    README's test command installs no MySQL headers), fail under CI=true."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{module} is not installed ({exc}): pip install 'fastpool[{extra}]'"
        if IN_CI:
            pytest.fail(f"CI=true and {msg}", pytrace=False)
        pytest.skip(msg, allow_module_level=True)


def need_socket(path: str) -> str:
    """Skip when the server has no unix socket here (e.g. a server in a container)."""
    if not os.path.exists(path):
        pytest.skip(f"no unix socket at {path} (set FASTPOOL_PG_SOCKET_DIR / "
                    "FASTPOOL_MYSQL_SOCKET)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- PostgreSQL -------------------------------------------------------------

@pytest.fixture
def pg_url() -> str:
    psycopg = need_driver("psycopg", "postgres")
    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        _unavailable(f"PostgreSQL at {PG_URL!r}", exc)
    return PG_URL


@pytest.fixture
def pg_admin(pg_url: str) -> Iterator[Any]:
    import psycopg

    conn = psycopg.connect(pg_url, autocommit=True, application_name="fastpool-tests-admin")
    yield conn
    conn.close()


def pg_backend_pids(admin: Any, application_name: str) -> list[int]:
    """Backend pids of the sessions with this application_name (one pool's)."""
    rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                         (application_name,)).fetchall()
    return sorted(pid for (pid,) in rows)


def pg_terminate(admin: Any, pids: list[int]) -> None:
    """pg_terminate_backend each pid and wait until the backends are gone."""
    for pid in pids:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 10
    while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                        (pids,)).fetchone()[0]:
        assert time.monotonic() < deadline, "backends survived pg_terminate_backend"
        time.sleep(0.01)


@pytest.fixture
def make_pg_pool(make_pool: Callable[..., Any], pg_url: str) -> Callable[..., Any]:
    """``make_pg_pool(url=None, **options)``: pool options go to the pool, the
    rest to PostgresDriver; accounting is checked at teardown (make_pool)."""
    from fastpool.pool import POOL_OPTIONS

    def make(url: str | None = None, **options: Any) -> Any:
        driver_opts = {k: options.pop(k) for k in list(options) if k not in POOL_OPTIONS}
        return make_pool(driver=PostgresDriver(url or pg_url, **driver_opts), **options)

    return make


# ---- MariaDB / MySQL ------------------------------------------------------

@pytest.fixture
def mysql_url() -> str:
    MySQLdb = need_driver("MySQLdb", "mysql")
    from fastpool.drivers import from_url

    driver = from_url(MYSQL_URL)
    try:
        driver.connect().close()
    except MySQLdb.OperationalError as exc:
        _unavailable(f"MariaDB at {MYSQL_URL!r}", exc)
    return MYSQL_URL


@pytest.fixture
def mysql_admin(mysql_url: str) -> Iterator[Any]:
    from fastpool.drivers import from_url

    conn = from_url(mysql_url, autocommit=True).connect()
    yield conn
    conn.close()


def mysql_query(conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(sql, args)
        return list(cur.fetchall())
    finally:
        cur.close()


def mysql_kill(admin: Any, ids: list[int]) -> None:
    """KILL each connection id and wait until the server has dropped them."""
    for cid in ids:
        mysql_query(admin, f"KILL {int(cid)}")
    deadline = time.monotonic() + 10
    marks = ",".join(str(int(i)) for i in ids)
    while mysql_query(admin, "SELECT count(*) FROM information_schema.processlist "
                             f"WHERE id IN ({marks})")[0][0]:
        assert time.monotonic() < deadline, "connections survived KILL"
        time.sleep(0.01)


@pytest.fixture
def make_mysql_pool(make_pool: Callable[..., Any], mysql_url: str) -> Callable[..., Any]:
    from fastpool.drivers import from_url
    from fastpool.pool import POOL_OPTIONS

    def make(url: str | None = None, **options: Any) -> Any:
        driver_opts = {k: options.pop(k) for k in list(options) if k not in POOL_OPTIONS}
        driver = from_url(url or mysql_url, **driver_opts)
        assert isinstance(driver, MySQLDriver)
        return make_pool(driver=driver, **options)

    return make


# ---- server restarts ----------------------------------------------------------

def _wait_port(port: int, up: bool, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                is_up = True
        except OSError:
            is_up = False
        if is_up == up:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} still {'down' if up else 'up'}")
        time.sleep(0.05)


def _pg_cluster() -> str:
    versions = sorted(os.listdir("/etc/postgresql"))
    return versions[-1]


def restart_postgres() -> None:
    """Restart the machine's PostgreSQL cluster (fast shutdown) and wait for it."""
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", _pg_cluster(), "main",
                    "restart", "-m", "fast"], check=True, capture_output=True, timeout=120)
    _wait_port(5432, up=True)


MARIADB_PIDFILE = "/run/mysqld/mysqld.pid"  # the machine's server (pid-file in /etc/mysql/my.cnf)


def main_mariadbd_pid() -> int | None:
    """The pid of the machine's own MariaDB server while it runs, else None.
    Found by its pid file, never by name: the tests' throwaway servers
    (tests/fix_replicas.py) are mariadbd processes too."""
    try:
        with open(MARIADB_PIDFILE) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/comm") as f:
            return pid if f.read().strip() == "mariadbd" else None
    except (OSError, ValueError):
        return None


def stop_mariadb() -> None:
    pid = main_mariadbd_pid()
    subprocess.run(["mariadb-admin", "-uroot", "-h127.0.0.1", "shutdown"], check=True,
                   capture_output=True, timeout=120)
    _wait_port(3306, up=False)
    # The port closes before the process exits: wait for the process, so
    # that start_mariadb does not take an exiting server for a running one.
    deadline = time.monotonic() + 60
    while pid is not None and os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            raise AssertionError("mariadbd did not exit within 60 s of shutdown")
        time.sleep(0.1)


def start_mariadb() -> None:
    subprocess.run(["start-stop-daemon", "--start", "--oknodo", "--background",
                    "--pidfile", MARIADB_PIDFILE, "--exec", "/usr/sbin/mariadbd"],
                   check=True, capture_output=True, timeout=60)
    _wait_port(3306, up=True)


def can_restart_servers() -> bool:
    """Restarting needs the local servers' admin commands and root."""
    return os.geteuid() == 0 and os.path.isdir("/etc/postgresql") \
        and os.path.exists("/usr/sbin/mariadbd")


# ---- one table on every backend (the transaction and batch tests) ----------------

def q(conn: Any, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    """Run one statement on any of the three clients (``%s`` placeholders)."""
    if isinstance(conn, sqlite3.Connection):
        sql = sql.replace("%s", "?")
    cur = conn.cursor()
    try:
        if params:
            cur.execute(sql, params)
        else:
            cur.execute(sql)
        return list(cur.fetchall()) if cur.description else []
    finally:
        cur.close()


@dataclasses.dataclass
class Db:
    """One backend for a test: a pool factory, an admin connection outside any
    pool (autocommit), and a fresh table ``(id INT PRIMARY KEY, n INT)``."""

    kind: str
    make: Callable[..., Any]
    admin: Any
    table: str

    def rows(self) -> list[tuple[int, int]]:
        return [tuple(r) for r in q(self.admin, f"SELECT id, n FROM {self.table} ORDER BY id")]

    def insert(self, *rows: tuple[int, int]) -> None:
        for row in rows:
            q(self.admin, f"INSERT INTO {self.table} VALUES (%s, %s)", row)

    def session_id(self, conn: Any) -> int:
        if self.kind == "postgresql":
            return int(conn.pgconn.backend_pid)
        return int(conn.thread_id())

    def kill(self, conn: Any) -> None:
        if self.kind == "postgresql":
            pg_terminate(self.admin, [self.session_id(conn)])
        else:
            mysql_kill(self.admin, [self.session_id(conn)])


def _table_of(kind: str, admin: Any) -> Iterator[str]:
    table = f"fp_tx_{uuid.uuid4().hex[:10]}"
    engine = " ENGINE=InnoDB" if kind == "mysql" else ""
    q(admin, f"CREATE TABLE {table} (id INT PRIMARY KEY, n INT){engine}")
    try:
        yield table
    finally:
        q(admin, f"DROP TABLE IF EXISTS {table}")


@pytest.fixture
def pg_db(make_pg_pool: Callable[..., Any], pg_admin: Any) -> Iterator[Db]:
    for table in _table_of("postgresql", pg_admin):
        yield Db("postgresql", make_pg_pool, pg_admin, table)


@pytest.fixture
def mysql_db(make_mysql_pool: Callable[..., Any], mysql_admin: Any) -> Iterator[Db]:
    for table in _table_of("mysql", mysql_admin):
        yield Db("mysql", make_mysql_pool, mysql_admin, table)


@pytest.fixture
def sqlite_db(make_pool: Callable[..., Any], db_path: str) -> Iterator[Db]:
    admin = sqlite3.connect(db_path, isolation_level=None, timeout=10)
    try:
        for table in _table_of("sqlite", admin):
            yield Db("sqlite", make_pool, admin, table)
    finally:
        admin.close()


DB_FIXTURES = {"postgresql": "pg_db", "mysql": "mysql_db", "sqlite": "sqlite_db"}


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def db(request: pytest.FixtureRequest, pool_cls: Any) -> Db:
    """Every backend (a missing server skips only its own runs); ``pool_cls``
    is named so that pytest knows the pools are parametrized by core."""
    return request.getfixturevalue(DB_FIXTURES[request.param])


@pytest.fixture(params=["postgresql", "mysql"])
def server_db(request: pytest.FixtureRequest, pool_cls: Any) -> Db:
    """The client/server backends, where connections can be killed."""
    return request.getfixturevalue(DB_FIXTURES[request.param])


def two_tables(pool: Any, ph: str) -> None:
    """Tables fp_rv_a and fp_rv_b, (id, n), with rows (1, 0) and (2, 0), made
    through the pool's helpers (``ph``: the placeholder)."""
    for t in ("fp_rv_a", "fp_rv_b"):
        pool.execute(f"DROP TABLE IF EXISTS {t}")
        pool.execute(f"CREATE TABLE {t} (id INTEGER PRIMARY KEY, n INTEGER)")
        pool.executemany(f"INSERT INTO {t} VALUES ({ph}, {ph})", [(1, 0), (2, 0)])


def drop_tables(pool: Any, *tables: str) -> None:
    for t in tables:
        pool.execute(f"DROP TABLE IF EXISTS {t}")
