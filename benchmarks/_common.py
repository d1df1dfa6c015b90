"""Helpers shared by the latency benchmarks (test_bench_drivers, test_bench_query):
pinning the client and the server to one CPU, counting context switches (round
trips), and MySQLdb arguments equal to fastpool's.

CPU: ``FASTPOOL_BENCH_CPU`` (default 1); ``FASTPOOL_BENCH_PIN=0`` turns pinning off.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

PIN = os.environ.get("FASTPOOL_BENCH_PIN", "1") != "0"
CPU = int(os.environ.get("FASTPOOL_BENCH_CPU", "1"))


def pin(tid: int) -> None:
    """Pin the process or thread ``tid`` to CPU (unless pinning is off)."""
    if PIN:
        os.sched_setaffinity(tid, {CPU})


def mariadbd_pid() -> int | None:
    """The pid of the local MariaDB server, or None."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
                if f.read().strip() in ("mariadbd", "mysqld"):
                    return int(pid)
    return None


def _threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def switches(status_path: str) -> int:
    """Voluntary + involuntary context switches of one process or thread."""
    total = 0
    with open(status_path) as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split(":")[1])
    return total


@contextlib.contextmanager
def pinned_to_cpu() -> Iterator[None]:
    """Pin this process to CPU (if PIN and it may run there); restore its affinity after."""
    before = os.sched_getaffinity(0)
    if PIN and CPU in before:
        os.sched_setaffinity(0, {CPU})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class MariaDBPins:
    """Pins every mariadbd thread to the benchmark's CPU and, at the end, gives
    each its original affinity back; threads started after the first pinning
    inherited the pinned mask, so they get the process's original one. A
    mariadbd restarted meanwhile (a new pid) is pinned afresh and restored the
    same way."""

    def __init__(self) -> None:
        self.saved: dict[int, dict[int, set[int]]] = {}  # pid -> tid -> affinity

    def pin(self) -> int | None:
        """Pin the running mariadbd's threads; its pid, or None if not local."""
        pid = mariadbd_pid()
        if pid is None or not PIN:
            return pid
        first = pid not in self.saved
        saved = self.saved.setdefault(pid, {})
        with contextlib.suppress(OSError):  # the server may be restarting
            for tid in _threads(pid):
                with contextlib.suppress(OSError):
                    if first:
                        saved[tid] = os.sched_getaffinity(tid)
                    pin(tid)
        return pid

    def restore(self) -> None:
        for pid, saved in self.saved.items():
            original = saved.get(pid)  # the main thread's (= the process's) affinity
            with contextlib.suppress(OSError):  # gone: nothing to restore
                for tid in _threads(pid):
                    mask = saved.get(tid, original)
                    if mask is not None:
                        with contextlib.suppress(OSError):
                            os.sched_setaffinity(tid, mask)


def mysql_kwargs(url: str) -> dict[str, Any]:
    """MySQLdb.connect() arguments equal to what fastpool's driver makes of ``url``."""
    parts = urlsplit(url)
    kwargs: dict[str, Any] = {"charset": "utf8mb4", "connect_timeout": 10, "autocommit": True}
    if parts.hostname:
        kwargs["host"] = parts.hostname
    if parts.port:
        kwargs["port"] = parts.port
    if parts.username:
        kwargs["user"] = parts.username
    if parts.password:
        kwargs["password"] = parts.password
    if parts.path.lstrip("/"):
        kwargs["database"] = parts.path.lstrip("/")
    kwargs.update(parse_qsl(parts.query))
    return kwargs
