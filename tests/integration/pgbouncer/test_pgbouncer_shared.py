"""64 threads in 4 processes, each process with its own fastpool pool, sharing
4 PgBouncer server connections (transaction mode).

Every query returns a value computed from its own parameter and the server
backend's pid: each result must be the caller's own, and all 64 threads
together may meet at most 4 backends. PgBouncer's SHOW SERVERS / SHOW POOLS,
sampled throughout, must never show more than 4 server connections.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from tests.fix_pgbouncer import PgBouncer

PROCESSES, THREADS, ROUNDS, SERVER_CONNECTIONS = 4, 16, 60, 4


def _process(url: str, table: str, proc: int) -> dict[str, Any]:
    """One process: a pool of 4 client connections to PgBouncer, 16 threads.
    Reads (``x * 2`` and the backend pid) and, every 10th round, a transaction
    inserting the caller's own row."""
    import fastpool

    pids: set[int] = set()
    wrong: list[str] = []
    done = [0] * THREADS
    with fastpool.create_pool(url, pgbouncer="transaction", max_size=4, timeout=60.0) as pool:
        def run(t: int) -> None:
            for i in range(ROUNDS):
                x = proc * 1_000_000 + t * 1_000 + i
                doubled, pid = pool.fetchrow("SELECT %s::bigint * 2, pg_backend_pid()", (x,))
                if doubled != 2 * x:
                    wrong.append(f"{x} * 2 = {doubled}")
                pids.add(pid)
                if i % 10 == 0:
                    pool.transaction(lambda conn, x=x: pool.execute(
                        f"INSERT INTO {table} (id, proc) VALUES (%s, %s)", (x, proc), conn=conn))
                done[t] += 1

        threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        opened = pool.stats().opened
    return {"pids": sorted(pids), "wrong": wrong, "done": done, "opened": opened}


@pytest.fixture
def table(scratch_table: Callable[[str], str]) -> str:
    return scratch_table("id BIGINT PRIMARY KEY, proc INT")


@pytest.mark.slow
def test_64_threads_in_4_processes_share_4_server_connections(
        make_pgbouncer: Callable[..., PgBouncer], table: str, pg_admin: Any) -> None:
    bouncer = make_pgbouncer("transaction", pool_size=SERVER_CONNECTIONS)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(bouncer.server_connections())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        # spawn: the children start clean (no forked pytest threads or pools).
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(PROCESSES, mp_context=ctx) as ex:
            results = list(ex.map(_process, [bouncer.url] * PROCESSES, [table] * PROCESSES,
                                  range(PROCESSES)))
    finally:
        stop.set()
        sampler.join()
    samples.append(bouncer.server_connections())

    for r in results:
        assert r["wrong"] == []
        assert r["done"] == [ROUNDS] * THREADS
        assert r["opened"] <= 4  # each pool's own client connections
    backends = set().union(*(r["pids"] for r in results))
    assert 1 <= len(backends) <= SERVER_CONNECTIONS, backends
    # The backends are real server sessions of the test database.
    assert pg_admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                            (sorted(backends),)).fetchone()[0] == len(backends)
    assert max(samples) <= SERVER_CONNECTIONS, max(samples)
    assert max(samples) >= 1 and len(samples) > 10
    expected = sorted(p * 1_000_000 + t * 1_000 + i for p in range(PROCESSES)
                      for t in range(THREADS) for i in range(0, ROUNDS, 10))
    got = [x for (x,) in pg_admin.execute(f"SELECT id FROM {table} ORDER BY id").fetchall()]
    assert got == expected
