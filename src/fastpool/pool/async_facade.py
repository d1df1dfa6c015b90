"""``AsyncPool``: the asyncio facade, the async policy over the same core, with the features.

``AsyncPool`` = ``AsyncPoolFeatures`` (this module: one-line delegations to
the features' asyncio entry points) + ``AsyncPolicy`` (``aio.py``: the sync
policy's rules on an event loop) + the core (``fastpool._core``, the same
compiled idle ring and FIFO waiters as ``Pool``'s). An AsyncPool is a
``ConnectionSource`` with ``is_async`` True.
"""

from __future__ import annotations

import inspect
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, TypeVar

from fastpool import _core
from fastpool.backoff import Backoff
from fastpool.drivers import from_url_async
from fastpool.errors import ConfigError
from fastpool.pool.aio import AsyncPolicy
from fastpool.pool.facade import QueryFeatures
from fastpool.pool.policy import PoolPolicy
from fastpool.pool.sizing import AsyncSizingPolicy, SizingPolicy
from fastpool.query.explain import Plan, explain_async
from fastpool.query.helpers import EXEC, FETCH, MANY, ROW, VAL
from fastpool.transaction import DEFAULT_BACKOFF, run_transaction_async
from fastpool.writes.batch.aio import AsyncBatcher
from fastpool.writes.bulk import Table, copy_records_async, copy_rows_async

__all__ = ["ASYNC_POOL_OPTIONS", "AsyncPool", "AsyncPoolFeatures", "create_async_pool"]

R = TypeVar("R")


class AsyncPoolFeatures(QueryFeatures):
    """The features an asyncio pool offers; each method delegates to its
    module's asyncio entry point (the query layer, options and stats are
    ``QueryFeatures``', shared with ``Pool``)."""

    # ---- query helpers and explain (fastpool.query) ---------------------------------
    # Plain methods returning the helper's coroutine (``await pool.fetch(...)``):
    # one coroutine frame fewer per call than an ``async def`` wrapper.

    def execute(self, sql: str, params: Any = None, *,
                conn: Any = None) -> Coroutine[Any, Any, int]:
        """``await pool.execute(sql, params)``: rows affected (see ``Pool.execute``)."""
        return self._queries.call_async(self, EXEC, sql, params, conn, None)

    def executemany(self, sql: str, params_seq: Iterable[Any], *,
                    conn: Any = None) -> Coroutine[Any, Any, int]:
        """``await pool.executemany(sql, seq)``: in one transaction; rows affected
        (-1 on asyncpg, which does not report them)."""
        return self._queries.call_async(self, MANY, sql, params_seq, conn, None)

    def fetch(self, sql: str, params: Any = None, *, cache_ttl: float | None = None,
              conn: Any = None) -> Coroutine[Any, Any, list[Any]]:
        """``await pool.fetch(sql, params)``: all rows; ``cache_ttl`` (seconds) serves
        it from the result cache."""
        return self._queries.call_async(self, FETCH, sql, params, conn, cache_ttl)

    def fetchrow(self, sql: str, params: Any = None, *, cache_ttl: float | None = None,
                 conn: Any = None) -> Coroutine[Any, Any, Any]:
        """``await pool.fetchrow(sql, params)``: the first row, or None."""
        return self._queries.call_async(self, ROW, sql, params, conn, cache_ttl)

    def fetchval(self, sql: str, params: Any = None, *, cache_ttl: float | None = None,
                 conn: Any = None) -> Coroutine[Any, Any, Any]:
        """``await pool.fetchval(sql, params)``: the first column of the first row, or None."""
        return self._queries.call_async(self, VAL, sql, params, conn, cache_ttl)

    def explain(self, sql: str, params: Any = None, *, analyze: bool = False,
                scan_rows: int = 1000) -> Coroutine[Any, Any, Plan]:
        """``await pool.explain(sql, params)``: the plan, full scans of tables above
        ``scan_rows`` rows flagged (see ``Pool.explain``)."""
        return explain_async(self, sql, params, analyze=analyze, scan_rows=scan_rows)

    # ---- transactions (fastpool.transaction) ----------------------------------------

    async def transaction(self, fn: Callable[[Any], Awaitable[R]], *, retries: int = 3,
                          backoff: Backoff = DEFAULT_BACKOFF) -> R:
        """``await pool.transaction(fn)``: run ``await fn(conn)`` in a
        transaction, commit, return its value; run it again by the sync pool's
        retry table (see ``fastpool.transaction``)."""
        q = self._queries
        return await run_transaction_async(self, fn, retries=retries, backoff=backoff,
                                           finished=q.finished, stats=q.transactions)

    # ---- bulk loads (fastpool.writes.bulk) ----------------------------------------------

    async def copy_rows(self, table: Table, columns: Sequence[str],
                        rows: Iterable[Any] | AsyncIterable[Any], **options: Any) -> int:
        """``await pool.copy_rows(...)``: ``Pool.copy_rows`` awaited; ``rows`` may
        also be an async iterable (see ``fastpool.writes.bulk``)."""
        return await copy_rows_async(self, table, columns, rows, **options)

    async def copy_records(self, table: Table,
                           records: Iterable[Mapping[str, Any]] | AsyncIterable[Any],
                           columns: Sequence[str] | None = None, **options: Any) -> int:
        """``copy_rows`` for dicts (columns from the first record unless given)."""
        return await copy_records_async(self, table, records, columns, **options)

    # ---- group commit (fastpool.writes.batch.aio) ------------------------------------

    def batcher(self, **options: Any) -> AsyncBatcher:
        """A group-commit batcher over this pool: ``await batcher.execute(sql,
        params)`` returns once the write is committed; options are ``Batcher``'s."""
        return AsyncBatcher(self, **options)


class AsyncPool(AsyncPoolFeatures, AsyncSizingPolicy, AsyncPolicy, _core.PoolCore):
    """An asyncio connection pool on fastpool's compiled core.

    ``await pool.acquire()``/``await pool.release(conn)`` and ``async with
    pool.connection() as conn`` take an idle connection from the compiled
    ring; waiting tasks are served strictly first come, first served; a task
    cancelled anywhere never loses a connection. The connection handed out is
    the driver's own async connection (psycopg ``AsyncConnection``, asyncpg
    ``Connection``, asyncmy ``Connection``, aiosqlite ``Connection``).

    Create it inside a running event loop: ``await create_async_pool(url)``,
    ``async with create_async_pool(url) as pool``, or
    ``AsyncPool(connect=async_factory, ...)``; the options are ``Pool``'s.
    """

class _Opening:
    """What ``create_async_pool`` returns: await it for the pool, or use it as
    ``async with`` to close the pool at the end of the block."""

    __slots__ = ("_kwargs", "_pool")

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self._kwargs = kwargs
        self._pool: AsyncPool | None = None

    async def _open(self) -> AsyncPool:
        options = dict(self._kwargs)
        url = options.pop("url")
        wait = options.pop("wait", True)
        driver_options = {k: options.pop(k) for k in list(options)
                          if k not in ASYNC_POOL_OPTIONS}
        driver = from_url_async(url, **driver_options)
        try:
            pool = AsyncPool(driver=driver, **options)
        except TypeError as exc:
            await driver.close_pool()
            raise ConfigError(f"create_async_pool: {exc}") from None
        except BaseException:
            await driver.close_pool()
            raise
        if wait and pool.min_size:
            try:
                await pool.wait(pool.timeout)
            except BaseException:
                await pool.close()
                raise
        return pool

    def __await__(self) -> Generator[Any, None, AsyncPool]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncPool:
        self._pool = await self._open()
        return self._pool

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            await self._pool.close()


def create_async_pool(url: str, *, wait: bool = True, **options: Any) -> _Opening:
    """Create an asyncio pool for a database URL; ``await`` it, or use it as
    ``async with create_async_pool(url) as pool:``.

    The scheme picks the driver as SQLAlchemy spells it: ``postgresql://``
    (psycopg's AsyncConnection), ``postgresql+asyncpg://``, ``mysql://`` /
    ``mariadb://`` (asyncmy; ``mysql+aiomysql://`` for aiomysql),
    ``sqlite:///path`` (aiosqlite); ``driver=`` names one explicitly.
    ``options`` are ``Pool``'s (same defaults, same errors); any other keyword
    goes to the driver. With ``wait`` (the default) the pool has ``min_size``
    connections open when it is returned, or raises why not.
    """
    if "connect" in options:
        raise ConfigError("create_async_pool takes a URL; use AsyncPool(connect=...) for a "
                          "factory")
    if not isinstance(wait, bool):
        raise ConfigError(f"wait must be True or False, got {wait!r}")
    return _Opening({"url": url, "wait": wait, **options})


#: The keyword options of AsyncPool; any other keyword of create_async_pool
#: goes to the driver (``driver=`` too: it names the client library).
ASYNC_POOL_OPTIONS = (frozenset(inspect.signature(PoolPolicy.__init__).parameters)
                      | frozenset(inspect.signature(SizingPolicy.__init__).parameters)
                      | frozenset(inspect.signature(AsyncPoolFeatures.__init__).parameters)) - {
    "self", "connect", "driver", "options"}
