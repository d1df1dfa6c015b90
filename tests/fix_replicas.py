"""A throwaway PostgreSQL primary with two streaming replicas, for the cluster tests.

Never the machine's own cluster: a fresh primary made with ``initdb`` in a
temporary directory (owned by ``postgres``, which the server needs when the
tests run as root), on free loopback ports, its unix sockets in that
directory; two replicas cloned with ``pg_basebackup -R``. Tuned to start in a
few seconds (small shared_buffers, fsync off: the data is thrown away).
Stopped (immediately) and removed after the session, also when a test or the
setup failed. A machine without PostgreSQL 15's server binaries skips the
tests locally and fails them under CI=true.

``replicas`` is session-scoped: a test that changes roles (the failover
tests) must not use it; ``fresh_replicas`` gives such a test its own set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fix_db import free_port
from tests.fix_pool import IN_CI, in_threads

PG_BIN = os.environ.get("FASTPOOL_PG_BIN", "/usr/lib/postgresql/15/bin")
_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
wal_level = replica
max_wal_senders = 10
wal_keep_size = '64MB'
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1
max_connections = 120
shared_buffers = '16MB'
fsync = off
full_page_writes = off
logging_collector = off
log_min_messages = warning
"""


@dataclasses.dataclass
class Node:
    """One server of the set: its data directory, port and URL."""

    name: str
    datadir: str
    port: int
    url: str
    running: bool = True


@dataclasses.dataclass
class ReplicaSet:
    """A primary and its replicas (``nodes[0]`` is the primary at the start)."""

    root: str
    nodes: list[Node]

    @property
    def primary(self) -> Node:
        return self.nodes[0]

    @property
    def replicas(self) -> list[Node]:
        return self.nodes[1:]

    def admin(self, node: Node) -> Any:
        """An autocommit psycopg connection to ``node`` (close it)."""
        import psycopg

        return psycopg.connect(node.url, autocommit=True, connect_timeout=5)

    def query(self, node: Node, sql: str) -> Any:
        with contextlib.closing(self.admin(node)) as conn:
            row = conn.execute(sql).fetchone()
            return None if row is None else row[0]

    def pause(self, node: Node) -> None:
        """Stop replaying WAL on a replica (it still receives it)."""
        self.query(node, "SELECT pg_wal_replay_pause()")

    def resume(self, node: Node) -> None:
        self.query(node, "SELECT pg_wal_replay_resume()")

    def wait_replayed(self, timeout: float = 30.0) -> None:
        """Until every running replica has replayed the primary's current WAL."""
        target = self.query(self.primary, "SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        for node in self.replicas:
            if not node.running:
                continue
            while not self.query(node, f"SELECT pg_last_wal_replay_lsn() >= '{target}'"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica {node.name} did not replay {target}")
                time.sleep(0.02)

    def pg_ctl(self, node: Node, *args: str) -> None:
        _as_postgres([f"{PG_BIN}/pg_ctl", "-D", node.datadir, "-w", "-t", "60", *args])

    def stop(self, node: Node, mode: str = "fast") -> None:
        self.pg_ctl(node, "stop", "-m", mode)
        node.running = False

    def promote(self, node: Node) -> None:
        self.pg_ctl(node, "promote")


def _as_postgres(cmd: list[str], **kw: Any) -> None:
    """Run a server binary as ``postgres`` (the server refuses to run as root)."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                           f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def _missing() -> str | None:
    for binary in ("initdb", "pg_ctl", "pg_basebackup", "postgres"):
        if not os.access(f"{PG_BIN}/{binary}", os.X_OK):
            return f"{PG_BIN}/{binary}"
    return None


def _url(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def _start(root: str, name: str, port: int, datadir: str) -> None:
    log = os.path.join(root, f"{name}.log")
    _as_postgres([f"{PG_BIN}/pg_ctl", "-D", datadir, "-l", log, "-w", "-t", "60", "start"])


def start_replica_set(n_replicas: int = 2) -> ReplicaSet:
    """Create and start a primary and ``n_replicas`` streaming replicas; the
    caller stops them with ``stop_replica_set`` (also on failure)."""
    root = tempfile.mkdtemp(prefix="fastpool-replicas-")
    rs = ReplicaSet(root, [])
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        os.chmod(root, 0o755)
        port = free_port()
        datadir = os.path.join(root, "primary")
        _as_postgres([f"{PG_BIN}/initdb", "-D", datadir, "-U", "postgres", "--auth=trust",
                      "-E", "UTF8", "--no-sync", "--no-instructions"])
        conf = _CONF.format(port=port, sockets=root)
        _append(datadir, "postgresql.conf", conf)
        _append(datadir, "pg_hba.conf", "host replication all 127.0.0.1/32 trust\n")
        _start(root, "primary", port, datadir)
        rs.nodes.append(Node("primary", datadir, port, _url(port)))
        for i in range(1, n_replicas + 1):
            rport = free_port()
            rdir = os.path.join(root, f"replica{i}")
            _as_postgres([f"{PG_BIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(port),
                          "-U", "postgres", "-D", rdir, "-R", "-X", "stream", "--no-sync",
                          "-c", "fast"])
            _append(rdir, "postgresql.conf", f"port = {rport}\n"
                    f"primary_conninfo = 'host=127.0.0.1 port={port} user=postgres "
                    f"application_name=replica{i}'\n")
            _start(root, f"replica{i}", rport, rdir)
            rs.nodes.append(Node(f"replica{i}", rdir, rport, _url(rport)))
        _wait_streaming(rs, n_replicas)
        return rs
    except BaseException:
        stop_replica_set(rs)
        raise


def _append(datadir: str, name: str, text: str) -> None:
    with open(os.path.join(datadir, name), "a") as f:
        f.write(text)


def _wait_streaming(rs: ReplicaSet, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while rs.query(rs.primary, "SELECT count(*) FROM pg_stat_replication "
                               "WHERE state = 'streaming'") < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} replicas were not streaming within {timeout:g} s")
        time.sleep(0.05)
    rs.wait_replayed()


def stop_replica_set(rs: ReplicaSet) -> None:
    """Stop every server of the set (immediately) and remove its directory."""
    for node in reversed(rs.nodes):
        with contextlib.suppress(Exception):
            if os.path.exists(os.path.join(node.datadir, "postmaster.pid")):
                rs.pg_ctl(node, "stop", "-m", "immediate")
        node.running = False
    shutil.rmtree(rs.root, ignore_errors=True)


def _require_binaries() -> None:
    missing = _missing()
    if missing is not None:
        msg = f"PostgreSQL server binaries not found ({missing}; set FASTPOOL_PG_BIN)"
        if IN_CI:
            pytest.fail(f"CI=true and {msg}", pytrace=False)
        pytest.skip(msg)


def until(cond: Any, what: str, timeout: float = 15.0) -> None:
    """Wait until ``cond()`` is true; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def cluster_over(servers: ReplicaSet | MariaDBSet, **options: Any) -> Iterator[Any]:
    """A cluster over ``servers`` once its replicas are usable; closed, and
    every replica's replay resumed, at the end."""
    import fastpool

    c = fastpool.create_cluster(servers.primary.url, [n.url for n in servers.replicas],
                                **{"max_size": 4, "max_replica_lag": 60.0, "lag_interval": 0.05,
                                   **options})
    try:
        until(lambda: len(c._topo.usable) == len(servers.replicas), "every replica usable")
        yield c
    finally:
        c.close()
        for node in servers.replicas:
            servers.resume(node)  # type: ignore[arg-type]


def read_your_writes(cluster: Any, table: str, port_sql: str, in_a_row: int = 1000,
                     threads: int = 32, each: int = 30) -> Counter[int]:
    """Write a row's value, read it straight back through the cluster: in a row
    ``in_a_row`` times, then from ``threads`` threads (each its own context
    and key) ``each`` times; every read must see its own write. ``table`` has
    (k, v) rows for keys 0..threads. Returns the server ports that served."""
    served: Counter[int] = Counter()

    def loop(key: int, n: int) -> None:
        for i in range(1, n + 1):
            cluster.execute(f"UPDATE {table} SET v = %s WHERE k = %s", (i, key))
            v, port = cluster.fetchrow(f"SELECT v, {port_sql} FROM {table} WHERE k = %s", (key,))
            assert v == i, f"key {key}: wrote {i}, read {v} from port {port}"
            served[port] += 1

    loop(threads, in_a_row)
    in_threads(threads, lambda key: loop(key, each))
    assert sum(served.values()) == in_a_row + threads * each
    return served


@contextlib.contextmanager
def running_set() -> Iterator[ReplicaSet]:
    """A started set, stopped and removed when the block ends, however it ends."""
    _require_binaries()
    rs = start_replica_set()
    try:
        yield rs
    finally:
        stop_replica_set(rs)


@pytest.fixture(scope="session")
def replicas() -> Iterator[ReplicaSet]:
    """A primary and two streaming replicas for the whole session (roles never change)."""
    with running_set() as rs:
        yield rs


@pytest.fixture
def fresh_replicas() -> Iterator[ReplicaSet]:
    """A set of its own, for a test that promotes a replica or stops a server."""
    with running_set() as rs:
        yield rs


# ---- MariaDB: a primary and a GTID replica ----------------------------------------

MARIADB_BIN = os.environ.get("FASTPOOL_MARIADB_BIN", "/usr/sbin/mariadbd")
MARIADB_INSTALL = os.environ.get("FASTPOOL_MARIADB_INSTALL", "/usr/bin/mariadb-install-db")


@dataclasses.dataclass
class MariaDBNode:
    name: str
    datadir: str
    port: int
    url: str
    proc: subprocess.Popen[bytes]


@dataclasses.dataclass
class MariaDBSet:
    """A MariaDB primary (``nodes[0]``, binary log on) and replicas (``read_only``,
    GTID replication from it), each its own ``mariadbd`` on a free port; the
    grant tables are skipped (any user, no password: throwaway servers on
    127.0.0.1 only)."""

    root: str
    nodes: list[MariaDBNode]

    @property
    def primary(self) -> MariaDBNode:
        return self.nodes[0]

    @property
    def replicas(self) -> list[MariaDBNode]:
        return self.nodes[1:]

    def query(self, node: MariaDBNode, sql: str) -> Any:
        import MySQLdb

        conn = MySQLdb.connect(host="127.0.0.1", port=node.port, user="root",
                               autocommit=True, connect_timeout=5)
        try:
            cur = conn.cursor()
            cur.execute(sql)
            row = cur.fetchone() if cur.description else None
            return None if row is None else row[0]
        finally:
            conn.close()

    def pause(self, node: MariaDBNode) -> None:
        """Stop applying the primary's events on a replica (it still receives them)."""
        self.query(node, "STOP SLAVE SQL_THREAD")

    def resume(self, node: MariaDBNode) -> None:
        self.query(node, "START SLAVE SQL_THREAD")

    def wait_replayed(self, timeout: float = 30.0) -> None:
        target = self.query(self.primary, "SELECT @@gtid_binlog_pos")
        for node in self.replicas:
            got = self.query(node, f"SELECT MASTER_GTID_WAIT('{target}', {timeout})")
            if got != 0:
                raise TimeoutError(f"replica {node.name} did not apply {target}")


def start_mariadb_set(n_replicas: int = 1) -> MariaDBSet:
    """Create and start a MariaDB primary and ``n_replicas`` replicas; the
    caller stops them with ``stop_mariadb_set`` (also on failure)."""
    root = tempfile.mkdtemp(prefix="fastpool-mariadb-")
    ms = MariaDBSet(root, [])
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "mysql", "mysql")
        for i in range(n_replicas + 1):
            name = "primary" if i == 0 else f"replica{i}"
            datadir = os.path.join(root, name)
            _run_as("mysql", [MARIADB_INSTALL, "--no-defaults", "--user=mysql",
                              f"--datadir={datadir}", "--skip-test-db",
                              "--auth-root-authentication-method=normal"])
            port = free_port()
            pid_file = os.path.join(root, f"{name}.pid")
            args = [MARIADB_BIN, "--no-defaults", "--user=mysql", f"--datadir={datadir}",
                    f"--port={port}", "--bind-address=127.0.0.1",
                    f"--socket={os.path.join(root, name + '.sock')}",
                    f"--pid-file={pid_file}", f"--server-id={i + 1}",
                    "--skip-grant-tables", "--innodb-buffer-pool-size=16M",
                    "--innodb-flush-log-at-trx-commit=0", "--skip-name-resolve",
                    f"--log-error={os.path.join(root, name + '.err')}"]
            args += ["--log-bin=bin"] if i == 0 else ["--read-only=1"]
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            node = MariaDBNode(name, datadir, port, f"mysql://root@127.0.0.1:{port}/test",
                               proc)
            ms.nodes.append(node)
            _wait_mariadb(ms, node)
            if i == 0:
                ms.query(node, "CREATE DATABASE test")
            else:
                ms.query(node, f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', "
                               f"MASTER_PORT={ms.primary.port}, MASTER_USER='root', "
                               "MASTER_USE_GTID=slave_pos")
                ms.query(node, "START SLAVE")
        ms.wait_replayed()
        return ms
    except BaseException:
        stop_mariadb_set(ms)
        raise


def _run_as(user: str, cmd: list[str]) -> None:
    if os.geteuid() == 0 and user != "root":
        cmd = ["runuser", "-u", user, "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                           f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def _wait_mariadb(ms: MariaDBSet, node: MariaDBNode, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            ms.query(node, "SELECT 1")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stop_mariadb_set(ms: MariaDBSet) -> None:
    """Stop every server of the set and remove its directory."""
    for node in reversed(ms.nodes):
        with contextlib.suppress(Exception):
            node.proc.kill()
            node.proc.wait(30)
    shutil.rmtree(ms.root, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb_replicas() -> Iterator[MariaDBSet]:
    """A MariaDB primary and a GTID replica for the session."""
    for binary in (MARIADB_BIN, MARIADB_INSTALL):
        if not os.access(binary, os.X_OK):
            msg = f"MariaDB server binaries not found ({binary}; set FASTPOOL_MARIADB_BIN)"
            if IN_CI:
                pytest.fail(f"CI=true and {msg}", pytrace=False)
            pytest.skip(msg)
    if not IN_CI:
        pytest.importorskip("MySQLdb")
    ms = start_mariadb_set()
    try:
        yield ms
    finally:
        stop_mariadb_set(ms)
