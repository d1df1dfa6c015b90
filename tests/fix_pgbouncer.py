"""A real PgBouncer in front of the local PostgreSQL, started per test.

``make_pgbouncer(mode="transaction", pool_size=4)`` writes a config into a
temporary directory (listen on 127.0.0.1 at a free port, no unix socket,
``auth_type = trust`` with an auth_file naming the test user, ``pool_mode``,
``default_pool_size``, the test user as an admin for the console), starts
Debian's ``pgbouncer`` in the foreground (as ``postgres`` when the tests run
as root: PgBouncer refuses to run as root), waits until its admin console
answers, and stops it and removes the directory when the test ends, passed or
failed. The ``PgBouncer`` object it returns has the URL to give to a pool,
the admin console (``admin("SHOW POOLS")``, ``RECONNECT``, ``PAUSE``,
``RESUME``), ``kill()`` (SIGKILL) and ``start()`` again on the same port.

No pgbouncer binary skips locally and fails under CI=true (.ci/run installs it).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fix_db import PG_URL, free_port
from tests.fix_pool import IN_CI

PGBOUNCER = os.environ.get("FASTPOOL_PGBOUNCER", shutil.which("pgbouncer")
                           or "/usr/sbin/pgbouncer")


class PgBouncer:
    """One PgBouncer process (restartable on its port) over ``target`` (a libpq URL)."""

    def __init__(self, target: str, *, mode: str, pool_size: int) -> None:
        t = urlsplit(target)
        self.dbname = (t.path or "/").lstrip("/") or "postgres"
        self.user = t.username or "postgres"
        self.mode = mode
        self.dir = tempfile.mkdtemp(prefix="fastpool-pgbouncer-")
        self.ini = os.path.join(self.dir, "pgbouncer.ini")
        self.log = os.path.join(self.dir, "pgbouncer.log")  # its stdout and stderr
        self.users = os.path.join(self.dir, "users.txt")
        with open(self.users, "w") as f:
            f.write(f'"{self.user}" ""\n')
        self._target = (f"host={t.hostname or '127.0.0.1'} port={t.port or 5432} "
                        f"dbname={self.dbname}")
        self.pool_size = pool_size
        self.port = 0
        self.new_port()
        # PgBouncer refuses to run as root: as root, it switches to postgres (-u).
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for path in (self.dir, self.users, self.ini):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            self._as = ["-u", "postgres"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The test database through PgBouncer."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}"

    @property
    def admin_url(self) -> str:
        """PgBouncer's admin console."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/pgbouncer"

    def new_port(self) -> None:
        """Listen on another free port (the config is written again)."""
        self.port = free_port()
        with open(self.ini, "w") as f:
            f.write(f"""[databases]
{self.dbname} = {self._target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.users}
admin_users = {self.user}
pool_mode = {self.mode}
default_pool_size = {self.pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
server_login_retry = 1
""")

    # ---- the process ---------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Start PgBouncer (on the same port as before) and wait until its console answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        # No logfile: in the foreground it logs to stderr, into a file, never a
        # pipe nobody reads (a full pipe blocks PgBouncer).
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([PGBOUNCER, *self._as, self.ini],
                                         stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}: "
                                   f"{self._why()}")
            try:
                self.admin("SHOW VERSION")
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not answer in {timeout} s: {exc}; "
                                       f"{self._why()}") from None
                time.sleep(0.05)

    def _why(self) -> str:
        log = ""
        with contextlib.suppress(OSError), open(self.log) as f:
            log = "".join(f.readlines()[-10:])
        return f"its last words: {log!r}"

    def kill(self) -> None:
        """SIGKILL: every client and server connection drops at once."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        """Shut down (SIGTERM: immediate), SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- the admin console ------------------------------------------------------

    def admin(self, command: str) -> list[dict[str, Any]]:
        """Run one admin console command (simple protocol, autocommit); its rows as dicts."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=3) as conn:
            cur = conn.execute(command)
            if cur.description is None:
                return []
            names = [d.name for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def server_connections(self) -> int:
        """Server connections to the test database, by SHOW SERVERS and by SHOW
        POOLS (the larger of the two counts)."""
        servers = sum(1 for r in self.admin("SHOW SERVERS") if r["database"] == self.dbname)
        pools = sum(r["sv_active"] + r["sv_idle"] + r["sv_used"] + r["sv_tested"]
                    + r["sv_login"] for r in self.admin("SHOW POOLS")
                    if r["database"] == self.dbname)
        return max(servers, pools)


def need_pgbouncer() -> str:
    """The pgbouncer binary: skip without it locally, fail under CI=true."""
    if os.access(PGBOUNCER, os.X_OK):
        return PGBOUNCER
    msg = f"pgbouncer not found at {PGBOUNCER!r} (apt-get install pgbouncer)"
    if IN_CI:
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)


@pytest.fixture
def make_pgbouncer(pg_url: str) -> Iterator[Callable[..., PgBouncer]]:
    """``make_pgbouncer(mode="transaction", pool_size=4)``: a running PgBouncer
    in front of the test PostgreSQL; stopped and removed when the test ends."""
    need_pgbouncer()
    made: list[PgBouncer] = []

    def make(mode: str = "transaction", pool_size: int = 4) -> PgBouncer:
        bouncer = PgBouncer(pg_url or PG_URL, mode=mode, pool_size=pool_size)
        made.append(bouncer)
        for attempt in range(3):  # the free port may be taken meanwhile
            try:
                bouncer.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                bouncer.stop()
                bouncer.new_port()
        return bouncer

    yield make
    for bouncer in made:
        bouncer.remove()


@pytest.fixture
def scratch_table(pg_admin: Any) -> Iterator[Callable[[str], str]]:
    """``scratch_table("id BIGINT PRIMARY KEY, v TEXT")``: a new table of the test
    database with these columns (its name returned), dropped when the test ends."""
    made: list[str] = []

    def make(columns: str) -> str:
        name = f"fp_pgb_{uuid.uuid4().hex[:12]}"
        pg_admin.execute(f"CREATE TABLE {name} ({columns})")
        made.append(name)
        return name

    yield make
    for name in made:
        pg_admin.execute(f"DROP TABLE IF EXISTS {name}")
