"""Workloads for the sizing tests and benchmarks (a helper module, not a plugin).

``open_loop``: Poisson arrivals at a fixed rate, each borrowing a connection
for one statement, served by a crowd of worker threads: the arrivals do not
slow down when the pool is short of connections (an M/M/c or M/D/c queue, the
model ``pool.advice()`` assumes). ``closed_loop``: N threads borrowing back to
back (the bench workload), for the adaptive limit.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from typing import Any


def _run(pool: Any, sql: str) -> None:
    with pool.connection() as conn:
        cur = conn.cursor()
        try:
            cur.execute(sql)
            cur.fetchall()
        finally:
            cur.close()


def open_loop(pool: Any, rate: float, sql: str, seconds: float, *, workers: int = 64,
              seed: int = 15) -> int:
    """Arrivals at ``rate`` per second (exponential gaps, seeded) for ``seconds``,
    each running ``sql`` on a borrowed connection; returns how many were served.
    Raises the first error a worker met."""
    jobs: queue.SimpleQueue[bool] = queue.SimpleQueue()
    errors: list[BaseException] = []
    served = [0] * workers

    def work(i: int) -> None:
        while jobs.get():
            try:
                _run(pool, sql)
                served[i] += 1
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    rng = random.Random(seed)
    start = time.monotonic()
    due = start
    try:
        while due - start < seconds and not errors:
            due += rng.expovariate(rate)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            jobs.put(True)
    finally:
        for _ in threads:
            jobs.put(False)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return sum(served)


class ClosedLoop:
    """``threads`` threads running ``sql`` back to back on ``pool`` until ``stop()``."""

    def __init__(self, pool: Any, sql: str, threads: int) -> None:
        self.pool = pool
        self.sql = sql
        self.stopping = threading.Event()
        self.count = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _work(self) -> None:
        n = 0
        try:
            while not self.stopping.is_set():
                _run(self.pool, self.sql)
                n += 1
        except BaseException as exc:
            self.errors.append(exc)
        with self._lock:
            self.count += n

    def stop(self) -> int:
        self.stopping.set()
        for t in self.threads:
            t.join()
        if self.errors:
            raise self.errors[0]
        return self.count
