"""The asyncio pool across real server outages (issue 12): a server restart
under load, and the server frozen with SIGSTOP for a few seconds; PostgreSQL
via psycopg async and asyncpg, MariaDB via asyncmy, both cores.

These restart and stop the machine's own servers, so they need root and the
local server packages (as ``test_restart.py``); elsewhere they are skipped.
Run them alone: ``flock /tmp/fp-servers.lock python3 -m pytest <this file>``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastpool import ErrorKind, PoolTimeout, TransactionOutcomeUnknown
from tests.fix_db import (
    _pg_cluster,
    can_restart_servers,
    need_driver,
    restart_postgres,
    start_mariadb,
    stop_mariadb,
)
from tests.fix_pool import check_accounting

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not can_restart_servers(), reason="needs root and local servers"),
]

CLIENTS = ["psycopg", "asyncpg", "asyncmy"]
EXTRA = {"psycopg": "postgres", "asyncpg": "asyncpg", "asyncmy": "asyncmy"}

#: What a caller may see while the server is away: its connection lost, the
#: server unreachable or refusing sessions, or no connection in time.
OUTAGE = {"timeout", "outcome_unknown", ErrorKind.CONNECTION_LOST, ErrorKind.NOT_SENT,
          ErrorKind.UNREACHABLE, ErrorKind.UNAVAILABLE}


def client_url(client: str, request: pytest.FixtureRequest) -> str:
    need_driver(client, EXTRA[client])
    if client == "asyncmy":
        return str(request.getfixturevalue("mysql_url"))
    base = str(request.getfixturevalue("pg_url"))
    return base if client == "psycopg" else base.replace(
        "postgresql://", "postgresql+asyncpg://", 1)


async def select1(client: str, conn: Any) -> Any:
    if client == "asyncpg":
        return await conn.fetchval("SELECT 1")
    if client == "psycopg":
        cur = await conn.execute("SELECT 1")
        return (await cur.fetchone())[0]
    async with conn.cursor() as cur:
        await cur.execute("SELECT 1")
        return (await cur.fetchone())[0]


async def settle(pool: Any, timeout: float = 20.0) -> None:
    """Wait until no connection is in use (returns still rolling back finish)."""
    deadline = time.monotonic() + timeout
    while pool.stats().in_use:
        assert time.monotonic() < deadline, f"connections never came back: {pool.stats()}"
        await asyncio.sleep(0.01)


async def serves(client: str, pool: Any, tasks: int = 20) -> None:
    """Every one of ``tasks`` concurrent borrowers gets a working connection."""
    async def once(i: int) -> None:
        if i % 4 == 0:
            assert await pool.fetchval("SELECT 1") == 1
            return
        async with pool.connection(timeout=10) as conn:
            assert await select1(client, conn) == 1

    await asyncio.wait_for(asyncio.gather(*(once(i) for i in range(tasks))), 30)
    await settle(pool)
    check_accounting(pool)
    assert pool.stats().in_use == 0


# ---- 1. a restart under load ---------------------------------------------------------

def restart_server(client: str) -> None:
    if client != "asyncmy":
        restart_postgres()
        return
    try:
        stop_mariadb()  # returns once the process has exited
    finally:
        start_mariadb()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_server_restart_under_load_only_loses_connections_and_recovers(
        client: str, request: pytest.FixtureRequest, run_pools: Callable[..., Any]) -> None:
    url = client_url(client, request)

    async def body(make: Callable[..., Any]) -> None:
        pool = await make(url=url, min_size=4, max_size=8, timeout=2.0)
        await pool.wait()
        outcomes: list[list[Any]] = [[] for _ in range(60)]
        stop = asyncio.Event()

        async def cycle(n: int, mine: list[Any]) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if (n + i) % 4 == 0:
                        assert await pool.fetchval("SELECT 1") == 1
                    else:
                        async with pool.connection() as conn:
                            assert await select1(client, conn) == 1
                    mine.append("ok")
                except PoolTimeout:
                    mine.append("timeout")
                except TransactionOutcomeUnknown:
                    mine.append("outcome_unknown")
                except Exception as exc:
                    kind = pool.classify(exc)
                    mine.append(kind if kind in OUTAGE else f"{kind}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.001)

        tasks = [asyncio.ensure_future(cycle(n, mine)) for n, mine in enumerate(outcomes)]
        try:
            await asyncio.sleep(0.3)
            assert all("ok" in mine for mine in outcomes)
            await asyncio.to_thread(restart_server, client)
            # The server is back: every task completes blocks again.
            marks = [len(mine) for mine in outcomes]
            deadline = time.monotonic() + 30
            while any("ok" not in mine[mark:] for mine, mark in zip(outcomes, marks, strict=True)):
                assert time.monotonic() < deadline, (
                    pool.stats(), collections.Counter(str(x) for mine in outcomes for x in mine))
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        for task in tasks:
            task.result()
        seen = collections.Counter(x for mine in outcomes for x in mine)
        print(f"\n{client}: outcomes {dict(seen)}; closed {pool.stats().closed}")
        assert set(seen) <= OUTAGE | {"ok"}, seen
        assert pool.stats().closed["broken"] >= 1  # the restart was noticed, not hidden
        await settle(pool)
        check_accounting(pool)
        await serves(client, pool)

    run_pools(body)


# ---- 2. the server frozen (SIGSTOP) ----------------------------------------------------

def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def read_pid(path: str) -> int:
    with open(path) as f:
        return int(f.readline())


def freeze(client: str, frozen: list[int]) -> None:
    """SIGSTOP the server: PostgreSQL's postmaster first (it forks no more
    backends), then every process it started; MariaDB's one process. Each pid
    is added to ``frozen`` before it is stopped."""
    if client == "asyncmy":
        pids = [read_pid("/run/mysqld/mysqld.pid")]
    else:
        pids = [read_pid(f"/var/run/postgresql/{_pg_cluster()}-main.pid")]
    frozen.append(pids[0])
    os.kill(pids[0], signal.SIGSTOP)
    if client != "asyncmy":
        for pid in children(pids[0]):
            frozen.append(pid)
            with contextlib.suppress(ProcessLookupError):  # a backend that just ended
                os.kill(pid, signal.SIGSTOP)


def thaw(frozen: list[int]) -> None:
    while frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen.pop(), signal.SIGCONT)


@pytest.fixture
def frozen() -> Iterator[list[int]]:
    """Pids the test stopped: every one gets SIGCONT at teardown, whatever happened."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        thaw(pids)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_frozen_server_lets_acquire_timeouts_fire_and_nothing_hangs_after_sigcont(
        client: str, request: pytest.FixtureRequest, run_pools: Callable[..., Any],
        frozen: list[int]) -> None:
    url = client_url(client, request)
    timeout = 0.5

    async def body(make: Callable[..., Any]) -> None:
        # full: every connection held by a task querying in a loop; spare:
        # idle connections (probed before lending) and room to open more.
        full = await make(url=url, min_size=3, max_size=3)
        spare = await make(url=url, min_size=2, max_size=4, alive_bypass=0.05)
        await full.wait()
        await spare.wait()
        holding = [asyncio.Event() for _ in range(3)]
        done = asyncio.Event()
        queries = [0, 0, 0]

        async def hold(i: int) -> None:
            async with full.connection() as conn:
                holding[i].set()
                while not done.is_set():
                    assert await select1(client, conn) == 1
                    queries[i] += 1
                    await asyncio.sleep(0.01)

        async def waiter(pool: Any) -> float:
            t0 = time.monotonic()
            with pytest.raises(PoolTimeout):
                await pool.acquire(timeout=timeout)
            return time.monotonic() - t0

        async def waiters(pool: Any, n: int, rounds: int) -> list[float]:
            async def one() -> list[float]:
                return [await waiter(pool) for _ in range(rounds)]
            per_task = await asyncio.gather(*(one() for _ in range(n)))
            return [t for ts in per_task for t in ts]

        holders = [asyncio.ensure_future(hold(i)) for i in range(3)]
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in holding)), 10)
            await asyncio.sleep(0.1)
            assert full.stats().in_use == 3
            t_stop = time.monotonic()
            freeze(client, frozen)
            try:
                await asyncio.sleep(0.05)
                before = list(queries)
                elapsed = await asyncio.wait_for(asyncio.gather(
                    waiters(full, 10, 2), waiters(spare, 4, 1)), 15)
                stuck = list(queries)
                await asyncio.sleep(max(3.0 - (time.monotonic() - t_stop), 0))
            finally:
                thaw(frozen)
            # Fired on time (the event loop may run a timer up to its clock
            # resolution early; the machine is noisy: 2 s of slack).
            for t in elapsed[0] + elapsed[1]:
                assert timeout - 0.02 <= t < timeout + 2.0, elapsed
            print(f"\n{client}: waits {min(min(e) for e in elapsed):.3f}.."
                  f"{max(max(e) for e in elapsed):.3f} s; queries while frozen "
                  f"{sum(stuck) - sum(before)}")
            # Thawed: the holders' queries go on.
            deadline = time.monotonic() + 20
            while not all(q > s for q, s in zip(queries, stuck, strict=True)):
                assert time.monotonic() < deadline, (queries, stuck, full.stats())
                await asyncio.sleep(0.02)
        finally:
            thaw(frozen)
            done.set()
            await asyncio.wait_for(asyncio.gather(*holders, return_exceptions=True), 30)
        for task in holders:
            task.result()
        for pool in (full, spare):
            await settle(pool)
            check_accounting(pool)
            await serves(client, pool)

    run_pools(body)
