"""Watching the statements a pool runs: statement shapes, N+1 detection, slow-query log.

After every statement a query helper runs (``pool.fetch``, ``pool.execute``...)
it calls ``observer.observe(sql, nparams, elapsed_ns)`` on the pool's
:class:`QueryObserver`. That call costs one context-variable read and one
comparison unless a guard is active or the statement was slow, so it stays on
in production.

**Shapes.** :func:`normalize` turns a statement into its *shape*: literals and
placeholders become ``?``, ``IN`` lists and multi-row ``VALUES`` collapse,
comments go, whitespace shrinks to single spaces. Statements that differ only
in their values have the same shape::

    >>> normalize("SELECT * FROM users WHERE id IN (1, 2, 3) -- admin")
    'SELECT * FROM users WHERE id IN (...)'

**N+1 detection.** Inside an :func:`n_plus_one_guard` scope (a ``with`` block
or a decorated function, e.g. a web request handler) every execution is
counted by shape; a shape executed more than ``threshold`` times is reported
once, with the call site of the execution that crossed the threshold::

    with pool.n_plus_one_guard(threshold=10, action="raise"):
        for order in pool.fetch("SELECT id FROM orders"):
            pool.fetch("SELECT * FROM lines WHERE order_id = %s", (order[0],))
    # NPlusOneDetected: ... 11 times ... at app.py:42 in totals:
    #     SELECT * FROM lines WHERE order_id = ?

**Slow-query log.** A pool with ``slow_query_ms`` logs every statement that took
longer at WARNING on the ``fastpool.slow`` logger: duration, shape, parameter
count and call site; never the parameter values (the shape has no literals
either).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import math
import os
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, cast

from fastpool.errors import ConfigError, FastpoolError
from fastpool.sqltext.lexer import normalize

__all__ = [
    "NPlusOneDetected",
    "NPlusOneGuard",
    "NPlusOneWarning",
    "QueryObserver",
    "ShapeCount",
    "n_plus_one_guard",
    "normalize",
]

slow_logger = logging.getLogger("fastpool.slow")
nplusone_logger = logging.getLogger("fastpool.nplusone")

P = ParamSpec("P")
R = TypeVar("R")
Action = Literal["warn", "raise", "log"]
_ACTIONS = ("warn", "raise", "log")

def _sql_text(sql: object) -> str:
    """The text of a statement object (str, bytes, psycopg.sql.Composable...)."""
    if isinstance(sql, str):
        return sql
    if isinstance(sql, (bytes, bytearray, memoryview)):
        return bytes(sql).decode("utf-8", "replace")
    as_string = getattr(sql, "as_string", None)
    if as_string is not None:
        try:
            return str(as_string(None))
        except Exception:
            pass
    return str(sql)


# ---- call sites ------------------------------------------------------------------

# Frames in fastpool itself (any subpackage) are not the call site.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _call_site() -> tuple[int, str]:
    """(stacklevel for warnings.warn from our caller, ``file:line in function``)
    of the innermost frame outside the fastpool package."""
    frame: FrameType | None = sys._getframe(2)  # our caller's caller
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    if frame is None:
        return 1, "(unknown)"
    code = frame.f_code
    return level, f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"


# ---- N+1 detection ---------------------------------------------------------------

class NPlusOneWarning(UserWarning):
    """One statement shape ran more than a guard's ``threshold`` times.

    ``shape``, ``count``, ``threshold``, ``site`` (``file:line in function``)
    and ``pool`` (its name) say which, how often and where.
    """

    def __init__(self, message: str, *, shape: str = "", count: int = 0, threshold: int = 0,
                 site: str = "", pool: str = "") -> None:
        super().__init__(message)
        self.shape, self.count, self.threshold, self.site, self.pool = \
            shape, count, threshold, site, pool


class NPlusOneDetected(FastpoolError):
    """Raised by the statement that made one shape run more than a guard's
    ``threshold`` times (``action="raise"``), after that statement ran.

    Attributes as for NPlusOneWarning. Inside ``with pool.connection()`` the
    transaction rolls back, as for any exception.
    """

    def __init__(self, message: str, *, shape: str = "", count: int = 0, threshold: int = 0,
                 site: str = "", pool: str = "") -> None:
        super().__init__(message)
        self.shape, self.count, self.threshold, self.site, self.pool = \
            shape, count, threshold, site, pool


@dataclass(frozen=True)
class ShapeCount:
    """A shape that ran more than the threshold in a guard's scope."""

    shape: str
    #: Executions in the scope so far.
    count: int
    #: Where the execution that crossed the threshold came from.
    site: str


class _Scope:
    """The counts of one entered guard; shared by the tasks and threads that
    inherit its context, hence the lock."""

    __slots__ = ("action", "active", "counts", "lock", "observer", "sites", "threshold")

    def __init__(self, threshold: int, action: Action, observer: QueryObserver | None) -> None:
        self.threshold = threshold
        self.action: Action = action
        self.observer = observer
        self.active = True  # False once the guard exits (a task may outlive it)
        self.counts: dict[str, int] = {}
        self.sites: dict[str, str] = {}  # reported shapes -> call site
        self.lock = threading.Lock()


_scopes: contextvars.ContextVar[tuple[_Scope, ...] | None] = contextvars.ContextVar(
    "fastpool_n_plus_one_scopes", default=None)
_active_scopes = _scopes.get


class NPlusOneGuard:
    """Counts statement executions per shape in a scope and reports N+1 patterns.

    Use it as a context manager (``with guard: ...``) or as a decorator
    (each call of the decorated function, sync or async, is a scope of its
    own). State lives in a context variable: a scope covers the thread or
    asyncio task that entered it (and tasks it starts inside), never other
    threads; scopes nest, and each reports on its own.

    ``counts`` and ``report()`` show what ran, during and after the scope.
    """

    def __init__(self, threshold: int = 10, action: Action = "warn",
                 observer: QueryObserver | None = None) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigError(f"n_plus_one_guard: threshold must be an integer >= 1 "
                              f"(reports a shape run more than threshold times), got {threshold!r}")
        if action not in _ACTIONS:
            raise ConfigError(f"n_plus_one_guard: action must be one of 'warn', 'raise', 'log', "
                              f"got {action!r}")
        self.threshold = threshold
        self.action: Action = action
        self._observer = observer
        self._scope: _Scope | None = None
        self._token: contextvars.Token[tuple[_Scope, ...] | None] | None = None

    def __enter__(self) -> NPlusOneGuard:
        if self._token is not None:
            raise RuntimeError("this n_plus_one_guard is already active; make one guard per "
                               "scope, or use it as a decorator")
        self._scope = scope = _Scope(self.threshold, self.action, self._observer)
        self._token = _scopes.set((*(_scopes.get() or ()), scope))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        token, self._token = self._token, None
        if token is not None:
            _scopes.reset(token)
        if self._scope is not None:
            self._scope.active = False

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn``: each call runs in a fresh scope with these settings."""
        threshold, action, observer = self.threshold, self.action, self._observer
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                with NPlusOneGuard(threshold, action, observer):
                    return await fn(*args, **kwargs)

            return cast(Callable[P, R], guarded_async)

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            with NPlusOneGuard(threshold, action, observer):
                return fn(*args, **kwargs)

        return guarded

    @property
    def counts(self) -> dict[str, int]:
        """Executions per shape in the (current or last) scope; a copy."""
        scope = self._scope
        if scope is None:
            return {}
        with scope.lock:
            return dict(scope.counts)

    def report(self) -> list[ShapeCount]:
        """The shapes that ran more than ``threshold`` times, most executed first."""
        scope = self._scope
        if scope is None:
            return []
        with scope.lock:
            found = [ShapeCount(shape, scope.counts[shape], site)
                     for shape, site in scope.sites.items()]
        return sorted(found, key=lambda s: -s.count)

    def __repr__(self) -> str:
        which = f"pool {self._observer.pool_name!r}" if self._observer else "all pools"
        return (f"<NPlusOneGuard {which} threshold={self.threshold} action={self.action!r} "
                f"{'active' if self._token is not None else 'inactive'}>")


def n_plus_one_guard(threshold: int = 10, action: Action = "warn") -> NPlusOneGuard:
    """A guard counting the statements of every pool in its scope.

    ``threshold``: report a shape executed more than this many times (once per
    shape per scope). ``action``: ``"warn"`` (an NPlusOneWarning at the call
    site), ``"raise"`` (NPlusOneDetected from the statement that crossed the
    threshold, after it ran) or ``"log"`` (WARNING on ``fastpool.nplusone``).
    ``pool.n_plus_one_guard(...)`` counts that pool's statements only.

    >>> with fastpool.n_plus_one_guard(threshold=5) as guard:
    ...     handle_request()
    >>> guard.report()
    [ShapeCount(shape='SELECT * FROM lines WHERE order_id = ?', count=40,
                site='/srv/app.py:42 in totals')]
    """
    return NPlusOneGuard(threshold, action)


# ---- the observer -----------------------------------------------------------------

_NEVER_NS = 1 << 62


class QueryObserver:
    """What a pool's query helpers report each statement to.

    ``slow_query_ms``: log statements that take longer at WARNING on the
    ``fastpool.slow`` logger and count them in ``slow_queries``; None disables.
    """

    __slots__ = ("_count_lock", "_slow_ns", "_slow_queries", "pool_name", "slow_query_ms")

    def __init__(self, pool_name: str, slow_query_ms: float | None = None) -> None:
        if slow_query_ms is not None and (
                isinstance(slow_query_ms, bool) or not isinstance(slow_query_ms, (int, float))
                or not math.isfinite(slow_query_ms) or slow_query_ms < 0):
            raise ConfigError(f"slow_query_ms must be a number of milliseconds >= 0 or None, "
                              f"got {slow_query_ms!r}")
        self.pool_name = pool_name
        self.slow_query_ms = slow_query_ms
        self._slow_ns = _NEVER_NS if slow_query_ms is None else int(slow_query_ms * 1e6)
        self._slow_queries = 0
        self._count_lock = threading.Lock()

    @property
    def slow_queries(self) -> int:
        """Statements logged as slow so far."""
        return self._slow_queries

    def observe(self, sql: object, nparams: int, elapsed_ns: int) -> None:
        """Called after each statement: ``sql`` as given to the driver,
        ``nparams`` parameters (never their values), ``elapsed_ns`` its duration.

        May raise NPlusOneDetected (a guard with ``action="raise"``).
        """
        scopes = _active_scopes()
        if scopes is None and elapsed_ns <= self._slow_ns:
            return
        self._observe(scopes, sql, nparams, elapsed_ns)

    def _observe(self, scopes: tuple[_Scope, ...] | None, sql: object, nparams: int,
                 elapsed_ns: int) -> None:
        shape = normalize(_sql_text(sql))
        if elapsed_ns > self._slow_ns:
            self._log_slow(shape, nparams, elapsed_ns)
        if not scopes:
            return
        crossed = [scope for scope in scopes
                   if (scope.observer is None or scope.observer is self)
                   and self._count(scope, shape)]
        if not crossed:
            return
        # Every scope has counted this execution before any of them raises.
        level, site = _call_site()
        error: NPlusOneDetected | None = None
        for scope in crossed:
            with scope.lock:
                count = scope.counts[shape]
                scope.sites[shape] = site
            message = (f"N+1 queries: pool {self.pool_name!r} ran the same statement {count} "
                       f"times in one n_plus_one_guard scope (threshold {scope.threshold}), "
                       f"last at {site}: {shape}")
            threshold, pool = scope.threshold, self.pool_name
            if scope.action == "raise":  # the innermost raising scope's error wins
                error = NPlusOneDetected(message, shape=shape, count=count, threshold=threshold,
                                         site=site, pool=pool)
            elif scope.action == "warn":
                warnings.warn(NPlusOneWarning(message, shape=shape, count=count,
                                              threshold=threshold, site=site, pool=pool),
                              stacklevel=level)
            else:
                nplusone_logger.warning(message, extra={
                    "fastpool_pool": pool, "fastpool_sql": shape, "fastpool_count": count,
                    "fastpool_threshold": threshold, "fastpool_site": site})
        if error is not None:
            try:
                raise error
            finally:
                error = None  # no cycle through this frame (see transaction._run_steps)

    def _log_slow(self, shape: str, nparams: int, elapsed_ns: int) -> None:
        with self._count_lock:
            self._slow_queries += 1
        _, site = _call_site()
        ms = elapsed_ns / 1e6
        slow_logger.warning(
            "fastpool: pool %r: slow query, %.1f ms (slow_query_ms=%g), %d parameter(s), "
            "at %s: %s", self.pool_name, ms, self.slow_query_ms, nparams, site, shape,
            extra={"fastpool_pool": self.pool_name, "fastpool_duration_ms": ms,
                   "fastpool_sql": shape, "fastpool_nparams": nparams, "fastpool_site": site})

    @staticmethod
    def _count(scope: _Scope, shape: str) -> bool:
        """Count one execution; True if it is the first above the threshold."""
        if not scope.active:  # the guard exited; a task that inherited it runs on
            return False
        with scope.lock:
            count = scope.counts.get(shape, 0) + 1
            scope.counts[shape] = count
            if count <= scope.threshold or shape in scope.sites:
                return False
            scope.sites[shape] = ""  # reported once: the site follows
            return True

    def n_plus_one_guard(self, threshold: int = 10, action: Action = "warn") -> NPlusOneGuard:
        """A guard counting only this pool's statements; see ``n_plus_one_guard``."""
        return NPlusOneGuard(threshold, action, self)

    def __repr__(self) -> str:
        return (f"<QueryObserver pool={self.pool_name!r} slow_query_ms={self.slow_query_ms} "
                f"slow_queries={self._slow_queries}>")
