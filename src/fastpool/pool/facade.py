"""``Pool``: the public facade, the policy over a core, with the features.

``Pool`` = ``PoolFeatures`` (this module: one-line delegations to the
features, each in its own module with its own state) + ``PoolPolicy``
(``policy.py``: sizing, lifetime, health, hand-off) + the core
(``fastpool._core``: the compiled idle ring and waiters). A pool is a
``ConnectionSource`` (``fastpool.source``): the features receive the pool as
one and never import this package.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from fastpool import _core
from fastpool.backoff import Backoff
from fastpool.drivers import from_url
from fastpool.drivers.postgres import no_prepared_statements
from fastpool.errors import ConfigError
from fastpool.pool.policy import PoolPolicy
from fastpool.pool.sizing import SizingPolicy
from fastpool.query.explain import Plan, explain
from fastpool.query.helpers import EXEC, FETCH, MANY, ROW, VAL, QueryLayer
from fastpool.transaction import DEFAULT_BACKOFF, run_transaction, transactional
from fastpool.writes.batch import Batcher
from fastpool.writes.bulk import Table, copy_records, copy_rows

if TYPE_CHECKING:
    from fastpool.query.observe import Action, NPlusOneGuard

    # A mixin: in ``Pool`` it sits before the policy and the core, whose
    # acquire/release/classify/adapter make it a ConnectionSource.
    _Composed = PoolPolicy
else:
    _Composed = object

__all__ = ["Pool", "PoolFeatures", "QueryFeatures", "create_pool"]

R = TypeVar("R")


class QueryFeatures(_Composed):
    """What both front ends' features share: the query layer (statement and
    result caches, observer) built from the features' options, its clock,
    invalidation, stats and the N+1 guard. ``PoolFeatures`` and
    ``AsyncPoolFeatures`` (``async_facade.py``) add their entry points."""

    _queries: QueryLayer

    def __init__(self, connect: Callable[[], Any] | None = None, *,
                 statement_cache_size: int | None = None, result_cache_entries: int = 10_000,
                 result_cache_bytes: int = 64 * 1024 * 1024,
                 slow_query_ms: float | None = None, **options: Any) -> None:
        # The statement cache (default 256 statements) follows the driver: off
        # where statements cannot be prepared on the server (PgBouncer's
        # transaction mode, drivers/postgres.py's PGBOUNCER_MODES).
        if not getattr(options.get("driver"), "prepared_statements", True):
            if statement_cache_size:
                raise no_prepared_statements("statement_cache_size", statement_cache_size)
            statement_cache_size = 0
        elif statement_cache_size is None:
            statement_cache_size = 256
        # Built (and its options checked) before the policy starts its worker
        # and registers the pool with monitoring, which reads query_stats().
        self._queries = QueryLayer(
            statement_cache_size=statement_cache_size,
            result_cache_entries=result_cache_entries, result_cache_bytes=result_cache_bytes,
            slow_query_ms=slow_query_ms)
        super().__init__(connect, **options)
        self._queries.bind(self.name)
        if self._driver.client is not None:  # a URL pool knows its client (and dialect) now
            self._queries.adopt(self._driver.client)

    def _set_clock(self, clock: Callable[[], int] | None) -> None:
        """One clock for the whole pool (tests): the core's lifetimes, idle
        times and holds, and the result cache's TTLs. ``clock`` returns int
        nanoseconds; None restores the monotonic clock."""
        super()._set_clock(clock)
        self._queries.set_clock(None if clock is None else lambda: clock() / 1e9)

    # ---- the connection source's one feature-facing hook ------------------------

    def writing(self, tables: Iterable[str]) -> contextlib.AbstractContextManager[None]:
        """Wrap a write of ``tables`` fastpool did not parse (a bulk load, a
        batch): their cached results are dropped before and after it."""
        return self._queries.writing(tables)

    # ---- caches, stats, diagnostics ----------------------------------------------

    def invalidate(self, *tables: str) -> int:
        """Drop cached results of ``tables`` (all of them when none is named)."""
        return self._queries.invalidate(tables)

    def invalidate_statements(self) -> None:
        """Deallocate every prepared statement (after a schema change); re-prepared lazily."""
        self._queries.statements.invalidate()

    def query_stats(self) -> dict[str, Any]:
        """Statement cache, result cache, slow queries and retried statements."""
        return self._queries.stats()

    def n_plus_one_guard(self, threshold: int = 10, action: Action = "warn") -> NPlusOneGuard:
        """A scope reporting any statement shape this pool runs more than ``threshold``
        times (``action``: "warn", "raise" or "log"); also a decorator of a request
        handler, sync or ``async def`` (counted per asyncio task)."""
        return self._queries.observer.n_plus_one_guard(threshold, action)

    # ---- transactions (fastpool.transaction) ----------------------------------------

    def transactional(self, fn: Callable[..., Any] | None = None, /, *, retries: int = 3,
                      backoff: Backoff = DEFAULT_BACKOFF) -> Any:
        """``@pool.transactional`` / ``@pool.transactional(retries=5)``: calling the
        function runs it through ``pool.transaction`` with ``conn`` first (an
        asyncio pool's: an ``async def``, and the call is awaited)."""
        q = self._queries
        return transactional(self, fn, retries=retries, backoff=backoff,
                             finished=q.finished, stats=q.transactions)


class PoolFeatures(QueryFeatures):
    """The features a pool offers; each method delegates to its module.

    Listed before the policy in ``Pool``'s bases; its ``__init__`` (``QueryFeatures``')
    takes the features' options and passes the rest to ``PoolPolicy``.
    """

    # ---- query helpers (fastpool.query.helpers) -----------------------------------

    def execute(self, sql: str, params: Any = None, *, conn: Any = None) -> int:
        """Run one statement; returns the number of rows it affected.

        Without ``conn`` the statement runs on its own and is committed; with
        ``conn`` (a connection of a transaction) it runs there, uncommitted.
        """
        return int(self._queries.call(self, EXEC, sql, params, conn, None))

    def executemany(self, sql: str, params_seq: Iterable[Any], *, conn: Any = None) -> int:
        """Run one statement for each parameter set, in one transaction; returns rows affected."""
        return int(self._queries.call(self, MANY, sql, params_seq, conn, None))

    def fetch(self, sql: str, params: Any = None, *, cache_ttl: float | None = None,
              conn: Any = None) -> list[Any]:
        """All rows of a query. ``cache_ttl`` (seconds) serves it from the result cache."""
        rows: list[Any] = self._queries.call(self, FETCH, sql, params, conn, cache_ttl)
        return rows

    def fetchrow(self, sql: str, params: Any = None, *, cache_ttl: float | None = None,
                 conn: Any = None) -> Any:
        """The first row of a query, or None."""
        return self._queries.call(self, ROW, sql, params, conn, cache_ttl)

    def fetchval(self, sql: str, params: Any = None, *, cache_ttl: float | None = None,
                 conn: Any = None) -> Any:
        """The first column of the first row, or None."""
        return self._queries.call(self, VAL, sql, params, conn, cache_ttl)

    # ---- transactions (fastpool.transaction) ----------------------------------------

    def transaction(self, fn: Callable[[Any], R], *, retries: int = 3,
                    backoff: Backoff = DEFAULT_BACKOFF) -> R:
        """Run ``fn(conn)`` in a transaction, commit, return its value; run it
        again on serialization failures, deadlocks, lock-wait timeouts, an
        unavailable server and connections lost before COMMIT (see
        ``fastpool.transaction``)."""
        q = self._queries
        return run_transaction(self, fn, retries=retries, backoff=backoff,
                               finished=q.finished, stats=q.transactions)

    # ---- writes (fastpool.writes) ------------------------------------------------------

    def copy_rows(self, table: Table, columns: Sequence[str], rows: Iterable[Any],
                  **options: Any) -> int:
        """Bulk-load ``rows`` (any iterable of tuples, e.g. a generator) in one
        transaction and bounded memory: COPY on PostgreSQL, multi-row INSERTs on
        MySQL, executemany on SQLite; ``on_conflict=("id",)`` upserts (see
        ``fastpool.writes.bulk``)."""
        return copy_rows(self, table, columns, rows, **options)

    def copy_records(self, table: Table, records: Iterable[Mapping[str, Any]],
                     columns: Sequence[str] | None = None, **options: Any) -> int:
        """``copy_rows`` for dicts (columns from the first record unless given)."""
        return copy_records(self, table, records, columns, **options)

    def batcher(self, **options: Any) -> Batcher:
        """A group-commit batcher over this pool (``fastpool.writes.batch.Batcher``):
        ``batcher.execute(sql, params)`` returns once the write is committed,
        many callers' writes sharing one transaction."""
        return Batcher(self, **options)

    # ---- explain (fastpool.query.explain) ------------------------------------------------

    def explain(self, sql: str, params: Any = None, *, analyze: bool = False,
                scan_rows: int = 1000) -> Plan:
        """The plan of ``sql``, with sequential / full scans of tables above
        ``scan_rows`` rows flagged in ``.warnings`` (``analyze`` runs it, rolled back)."""
        return explain(self, sql, params, analyze=analyze, scan_rows=scan_rows)


class Pool(PoolFeatures, SizingPolicy, PoolPolicy, _core.PoolCore):
    """A connection pool.

    ``acquire()``/``release()`` and ``with pool.connection() as conn`` cost a
    few hundred nanoseconds when an idle connection is at hand: they run in
    compiled code. The connection handed out is the driver's own object.

    >>> pool = fastpool.create_pool("sqlite:///app.db", max_size=4)
    >>> with pool.connection() as conn:     # commit on success, rollback on error
    ...     conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    ...     conn.execute("INSERT INTO t VALUES (1)")
    >>> conn = pool.acquire(timeout=2.0)
    >>> try:
    ...     conn.execute("SELECT 1").fetchone()
    ... finally:
    ...     pool.release(conn)

    Use ``create_pool(url, ...)`` for a URL, or ``Pool(connect=factory, ...)``
    for a custom connection factory (e.g. rotating credentials).

    Sizing (``fastpool.pool.sizing``): ``pool.advice()`` recommends sizes from
    the measured load; ``max_size="auto"`` (with ``max_size_ceiling``) lets the
    pool find the database's knee itself.
    """

    def __enter__(self) -> Pool:
        return self


def create_pool(url: str, **options: Any) -> Pool:
    """Create a pool for a database URL.

    ``sqlite:///app.db``, ``sqlite:///:memory:``,
    ``postgresql://user:pw@host:5432/db?sslmode=require`` (any libpq URL),
    ``mysql://user:pw@host:3306/db`` or ``mariadb://...``.

    ``options`` are Pool's keyword arguments (``min_size``, ``max_size``,
    ``timeout``, ``max_waiting``, ``max_lifetime``, ``max_idle``,
    ``alive_bypass``, ``reuse``, ``configure``, ``reset``, ``max_size_ceiling``,
    ``reconnect_timeout``, ``reconnect_failed``, ``leak_threshold``, ``name``,
    and the features' ``statement_cache_size``, ``result_cache_entries``,
    ``result_cache_bytes``, ``slow_query_ms``); any other keyword goes to the
    driver (libpq parameters, ``autocommit``, ``statement_timeout``,
    ``charset``...), which rejects what it does not know::

        pool = create_pool("postgresql://db/orders", max_size=20,
                           application_name="billing", statement_timeout=5)

    Behind PgBouncer, ``pgbouncer="transaction"`` or ``"session"`` (its
    pool_mode) sets what the pool may assume of a server session (see
    ``fastpool.drivers.postgres.PGBOUNCER_MODES``)::

        pool = create_pool("postgresql://bouncer:6432/orders", pgbouncer="transaction")
    """
    if "connect" in options or "driver" in options:
        raise ConfigError("create_pool takes a URL; use Pool(connect=...) for a factory")
    driver_options = {k: options.pop(k) for k in list(options) if k not in POOL_OPTIONS}
    driver = from_url(url, **driver_options)
    try:
        return Pool(driver=driver, **options)
    except TypeError as exc:
        driver.close_pool()
        raise ConfigError(f"create_pool: {exc}") from None
    except BaseException:
        driver.close_pool()
        raise


#: The keyword options of Pool (the policy's and the features'); any other
#: keyword of create_pool goes to the driver.
POOL_OPTIONS = (frozenset(inspect.signature(PoolPolicy.__init__).parameters)
                | frozenset(inspect.signature(SizingPolicy.__init__).parameters)
                | frozenset(inspect.signature(PoolFeatures.__init__).parameters)) - {
    "self", "connect", "driver", "options"}
