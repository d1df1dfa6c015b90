"""Pool fixtures: both core implementations, and slot accounting after each test.

``pool_cls`` runs a test body once over the compiled core and once over the
pure-Python twin. Every pool made through ``make_pool`` is checked when the
test ends: connections opened == closed + open, acquisitions == releases +
in use; a leak fails the test. Under CI=true the compiled core must be the
one that is loaded.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import fastpool
from fastpool import _core_py
from fastpool.pool import Pool, PoolFeatures, PoolPolicy
from fastpool.pool.aio import AsyncPolicy
from fastpool.pool.async_facade import AsyncPool, AsyncPoolFeatures
from fastpool.pool.sizing import AsyncSizingPolicy, SizingPolicy

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


class PurePool(PoolFeatures, SizingPolicy, PoolPolicy, _core_py.PoolCore):
    """The same policy over the pure-Python core."""


class PureAsyncPool(AsyncPoolFeatures, AsyncSizingPolicy, AsyncPolicy, _core_py.PoolCore):
    """The asyncio policy over the pure-Python core."""


def compiled_loaded() -> bool:
    return fastpool._core.__impl__ == "compiled"


@pytest.fixture(params=["compiled", "python"])
def pool_cls(request: pytest.FixtureRequest) -> type[Any]:
    if request.param == "compiled":
        if not compiled_loaded():
            if IN_CI:
                pytest.fail("CI=true but the compiled core is not loaded")
            pytest.skip("compiled core not built")
        return Pool
    return PurePool


@pytest.fixture(params=["compiled", "python"])
def async_pool_cls(request: pytest.FixtureRequest) -> type[Any]:
    """AsyncPool over the compiled core, and over the pure-Python twin."""
    if request.param == "compiled":
        if not compiled_loaded():
            if IN_CI:
                pytest.fail("CI=true but the compiled core is not loaded")
            pytest.skip("compiled core not built")
        return AsyncPool
    return PureAsyncPool


@pytest.fixture
def run_pools(async_pool_cls: type[Any], db_path: str) -> Callable[..., Any]:
    """``run_pools(body)`` runs ``await body(make)`` in a new event loop, where
    ``await make(url=..., **options)`` creates AsyncPools of the parametrized
    core (aiosqlite over a file by default; ``driver=`` / ``connect=`` as
    AsyncPool takes them). Each pool's accounting is checked and it is closed
    when the body ends; a connection left open then fails the test.
    ``loop="uvloop"`` runs the body on uvloop."""

    def runner(body: Callable[[Callable[..., Any]], Any], *, loop: str = "asyncio") -> Any:
        async def main() -> Any:
            pools: list[Any] = []

            async def make(**options: Any) -> Any:
                if "connect" not in options and "driver" not in options:
                    url = options.pop("url", f"sqlite:///{db_path}")
                    driver_options = options.pop("driver_options", {})
                    options["driver"] = fastpool.drivers.from_url_async(url, **driver_options)
                options.setdefault("timeout", 5.0)
                pool = async_pool_cls(**options)
                pools.append(pool)
                return pool

            try:
                return await body(make)
            finally:
                for pool in pools:
                    try:
                        check_accounting(pool)
                    finally:
                        await pool.close(timeout=2.0)
                    s = pool.stats()
                    if s.in_use == 0:
                        assert s.open == 0, f"pool closed with connections still open: {s}"

        if loop == "uvloop":
            import uvloop
            return uvloop.run(main())
        return asyncio.run(main())

    return runner


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll until ``predicate()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def in_threads(n: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` for i in range(n) on n threads; re-raise the first error."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def run_in_child(fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` in a forked child and return what it returned (through JSON).
    A child that raised fails the calling test with the child's error."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            out = fn()
        except BaseException as exc:
            out, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
        os.write(w, json.dumps(out).encode())
        os.close(w)
        sys.stdout.flush()
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(data)
    assert os.waitstatus_to_exitcode(status) == 0, result
    return result


def check_accounting(pool: Any) -> None:
    s = pool.stats()
    assert s.opened == s.closed_total + s.open, f"connections leaked or double-counted: {s}"
    assert s.acquisitions == s.releases + s.in_use, f"acquire/release mismatch: {s}"
    assert s.idle + s.in_use <= s.open, f"more idle + in use than open: {s}"


@pytest.fixture(params=["compiled", "python"])
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The core module itself, compiled and pure Python (for tests of bare cores)."""
    if request.param == "python":
        return _core_py
    if not compiled_loaded():
        if IN_CI:
            pytest.fail("CI=true but the compiled core is not loaded")
        pytest.skip("compiled core not built")
    return fastpool._core


@pytest.fixture
def connect(tmp_path: Path) -> Iterator[Callable[[], sqlite3.Connection]]:
    """A factory of real SQLite connections to one file, all closed at teardown."""
    opened: list[sqlite3.Connection] = []

    def new() -> sqlite3.Connection:
        conn = sqlite3.connect(tmp_path / "core.db", check_same_thread=False)
        opened.append(conn)
        return conn

    yield new
    for conn in opened:
        conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "test.db")


@pytest.fixture
def make_pool(pool_cls: type[Any], db_path: str) -> Iterator[Callable[..., Any]]:
    """Make pools over an SQLite file (or a given connect/driver), checked at teardown."""
    pools: list[Any] = []

    def make(**options: Any) -> Any:
        if "connect" not in options and "driver" not in options:
            url = options.pop("url", f"sqlite:///{db_path}")
            options["driver"] = fastpool.drivers.from_url(url)
        options.setdefault("timeout", 5.0)
        pool = pool_cls(**options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        try:
            check_accounting(pool)
        finally:
            pool.close(timeout=1.0)
        s = pool.stats()
        if s.in_use == 0:
            assert s.open == 0, f"pool closed with connections still open: {s}"


@pytest.fixture
def counting_connect(db_path: str) -> Any:
    """A connection factory over real SQLite that counts and can be made to fail."""

    class Factory:
        def __init__(self) -> None:
            self.attempts = 0
            self.fail_next = 0
            self.error: Exception = sqlite3.OperationalError("database is locked (injected)")
            self.opened: list[sqlite3.Connection] = []
            self.times: list[float] = []

        def __call__(self) -> sqlite3.Connection:
            self.attempts += 1
            self.times.append(time.monotonic())
            if self.fail_next:
                self.fail_next -= 1
                raise self.error
            conn = sqlite3.connect(db_path, check_same_thread=False)
            self.opened.append(conn)
            return conn

    return Factory()
