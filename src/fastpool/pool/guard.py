"""Guarded connections (``guard=True``): a borrower's reference dies with its release.

Without a guard the pool hands out the driver's own connection object, and a
reference kept after ``release()`` still reaches it (the lend check then rolls
back what such a reference leaves open, see ``PoolPolicy._dirty_on_lend``).
With ``guard=True`` each borrower gets a ``GuardedConnection``, a thin proxy:
attribute reads, writes and calls go to the connection while it is lent, and
raise ``ConnectionAlreadyReleased`` naming where it was released once it is
not. A cursor (or anything else bound to the connection) obtained through the
proxy is guarded the same way. For development and tests: it costs a Python
call per attribute access and an object per lend, and ``isinstance(conn,
psycopg.Connection)`` (any driver class) is False for the proxy.

A pool with a guard is an instance of a subclass of its class (``guarded``)
whose public ``acquire``, ``release`` and ``connection`` (and the asyncio
pool's ``_release_async``, which its event hooks call) wrap and unwrap; the
policy's own paths (waiters, reclaiming, hooks) keep passing the real
connection, which those methods accept too. The proxy holds the only
reference the borrower has: when it is dropped without a release, reclaiming
sees the connection's count fall as without a guard.
"""

from __future__ import annotations

import inspect
import sys
import weakref
from collections.abc import Awaitable
from types import CodeType, FrameType
from typing import Any

from fastpool.errors import ConnectionAlreadyReleased
from fastpool.pool import leaks

__all__ = ["GuardedConnection", "GuardedObject", "guarded", "unwrap"]


_Site = tuple[CodeType, int] | None


def _release_site() -> _Site:
    """The innermost caller outside fastpool (what released the connection):
    only that frame's code and line, formatted if the proxy is ever misused."""
    frame: FrameType | None = sys._getframe(2)
    here = leaks._PACKAGE_DIR
    while frame is not None and frame.f_code.co_filename.startswith(here):
        frame = frame.f_back
    return None if frame is None else (frame.f_code, frame.f_lineno)


def _released_error(what: str, site: _Site) -> ConnectionAlreadyReleased:
    where = "an unknown place" if site is None else \
        f"{site[0].co_filename}:{site[1]} in {site[0].co_name}"
    return ConnectionAlreadyReleased(
        f"this {what} was released to its pool at {where}: a guarded connection "
        "(guard=True) cannot be used after its release; acquire another")


class GuardedObject:
    """Forwards to ``target`` while ``owner`` (a GuardedConnection) is lent."""

    __slots__ = ("__weakref__", "_fp_owner", "_fp_target")

    _fp_owner: GuardedConnection
    _fp_target: Any

    def __init__(self, target: Any, owner: GuardedConnection) -> None:
        object.__setattr__(self, "_fp_target", target)
        object.__setattr__(self, "_fp_owner", owner)

    def _fp_live(self) -> Any:
        owner = self._fp_owner
        if owner._fp_conn is None:
            raise _released_error("cursor's connection", owner._fp_released_at)
        return self._fp_target

    def __getattr__(self, name: str) -> Any:
        return _guard_value(getattr(self._fp_live(), name), self._fp_owner)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._fp_live(), name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _guard_value(self._fp_live()(*args, **kwargs), self._fp_owner)

    def __iter__(self) -> Any:
        return iter(self._fp_live())

    def __next__(self) -> Any:
        return next(self._fp_live())

    def __enter__(self) -> Any:
        got = self._fp_live().__enter__()
        return self if got is self._fp_target else got

    def __exit__(self, et: Any, ev: Any, tb: Any) -> Any:
        return self._fp_target.__exit__(et, ev, tb)  # always: it releases what __enter__ took

    async def __aenter__(self) -> Any:
        got = await self._fp_live().__aenter__()
        return self if got is self._fp_target else got

    async def __aexit__(self, et: Any, ev: Any, tb: Any) -> Any:
        return await self._fp_target.__aexit__(et, ev, tb)

    def __aiter__(self) -> Any:
        return self._fp_live().__aiter__()

    def __repr__(self) -> str:
        return f"<guarded {self._fp_target!r}>"


class GuardedConnection:
    """What a borrower of a ``guard=True`` pool gets: the connection while it
    is lent; after its release every use raises ConnectionAlreadyReleased."""

    __slots__ = ("__weakref__", "_fp_conn", "_fp_pool", "_fp_released_at")

    _fp_conn: Any
    _fp_pool: int
    _fp_released_at: _Site

    def __init__(self, conn: Any, pool: object) -> None:
        object.__setattr__(self, "_fp_conn", conn)
        object.__setattr__(self, "_fp_pool", id(pool))
        object.__setattr__(self, "_fp_released_at", None)

    def _fp_live(self) -> Any:
        conn = self._fp_conn
        if conn is None:
            raise _released_error("connection", self._fp_released_at)
        return conn

    def _fp_release(self) -> Any:
        """The connection, taken from this proxy (which is dead from now on)."""
        conn = self._fp_live()
        object.__setattr__(self, "_fp_released_at", _release_site())
        object.__setattr__(self, "_fp_conn", None)
        return conn

    def __getattr__(self, name: str) -> Any:
        return _guard_value(getattr(self._fp_live(), name), self)

    def __setattr__(self, name: str, value: Any) -> None:  # conn.autocommit = True
        setattr(self._fp_live(), name, value)

    def __enter__(self) -> Any:  # ``with conn:`` (psycopg: a transaction block)
        got = self._fp_live().__enter__()
        return self if got is self._fp_conn else got

    def __exit__(self, et: Any, ev: Any, tb: Any) -> Any:
        return self._fp_live().__exit__(et, ev, tb)

    async def __aenter__(self) -> Any:
        got = await self._fp_live().__aenter__()
        return self if got is self._fp_conn else got

    async def __aexit__(self, et: Any, ev: Any, tb: Any) -> Any:
        return await self._fp_live().__aexit__(et, ev, tb)

    def __repr__(self) -> str:
        conn = self._fp_conn
        if conn is None:
            return "<released guarded connection>"
        return f"<guarded {conn!r}>"


def _guard_value(value: Any, owner: GuardedConnection) -> Any:
    """Methods, cursors and awaitables obtained through a proxy are guarded
    too; plain values (numbers, strings, settings) are returned as they are."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if callable(value) or hasattr(value, "execute") or hasattr(value, "fetchone"):
        return GuardedObject(value, owner)
    if inspect.isawaitable(value):
        return _awaited(value, owner)
    return value


async def _awaited(value: Awaitable[Any], owner: GuardedConnection) -> Any:
    return _guard_value(await value, owner)


def unwrap(conn: Any) -> Any:
    """The driver's connection behind a live proxy, or ``conn`` itself."""
    if isinstance(conn, GuardedConnection):
        return conn._fp_live()
    return conn


def _take(pool: object, conn: Any) -> Any:
    """What to give back to ``pool`` for ``conn``: the connection behind a proxy
    of this pool (the proxy dies), else ``conn`` as it is (the pool's own
    paths pass connections; another pool's proxy is a foreign object)."""
    if isinstance(conn, GuardedConnection) and conn._fp_pool == id(pool):
        return conn._fp_release()
    return conn


class _Context:
    """``with pool.connection()`` of a guarded pool."""

    __slots__ = ("inner", "pool", "proxy")

    def __init__(self, pool: Any, inner: Any) -> None:
        self.pool = pool
        self.inner = inner
        self.proxy: GuardedConnection | None = None

    def __enter__(self) -> GuardedConnection:
        self.proxy = GuardedConnection(type(self.inner).__enter__(self.inner), self.pool)
        return self.proxy

    def __exit__(self, et: Any, ev: Any, tb: Any) -> Any:
        proxy, self.proxy = self.proxy, None
        if proxy is not None and proxy._fp_conn is not None:
            proxy._fp_release()
        return type(self.inner).__exit__(self.inner, et, ev, tb)

    async def __aenter__(self) -> GuardedConnection:
        self.proxy = GuardedConnection(await self.inner.__aenter__(), self.pool)
        return self.proxy

    async def __aexit__(self, et: Any, ev: Any, tb: Any) -> Any:
        proxy, self.proxy = self.proxy, None
        if proxy is not None and proxy._fp_conn is not None:
            proxy._fp_release()
        return await self.inner.__aexit__(et, ev, tb)


_classes: weakref.WeakKeyDictionary[type, type] = weakref.WeakKeyDictionary()


def guarded(cls: type) -> type:
    """The guarded subclass of the pool class ``cls`` (made once per class)."""
    made = _classes.get(cls)
    if made is not None:
        return made
    base: Any = cls
    made = type(cls.__name__, (cls,), {"__qualname__": cls.__qualname__, "guarded": True})
    if getattr(cls, "is_async", False):
        async def acquire(self: Any, timeout: float | None = None) -> Any:
            return GuardedConnection(await base.acquire(self, timeout), self)

        async def release(self: Any, conn: Any) -> None:
            await base.release(self, _take(self, conn))

        async def _release_async(self: Any, conn: Any, commit: bool,
                                 slow: bool = False) -> None:
            await base._release_async(self, _take(self, conn), commit, slow)

        made._release_async = _release_async  # type: ignore[attr-defined]
    else:
        def acquire(self: Any, timeout: float | None = None) -> Any:  # type: ignore[misc]
            return GuardedConnection(base.acquire(self, timeout), self)

        def release(self: Any, conn: Any) -> None:  # type: ignore[misc]
            base.release(self, _take(self, conn))

    def connection(self: Any, timeout: float | None = None) -> _Context:
        return _Context(self, base.connection(self, timeout))

    def _release_ended(self: Any, conn: Any, commit: bool) -> None:
        base._release_ended(self, _take(self, conn), commit)

    def _lent_at(self: Any, conn: Any) -> int | None:
        if isinstance(conn, GuardedConnection):
            conn = conn._fp_conn
        return base._lent_at(self, conn)  # type: ignore[no-any-return]

    def discard(self: Any, conn: Any, reason: str = "broken") -> None:
        real = unwrap(conn) if isinstance(conn, GuardedConnection) and \
            conn._fp_pool == id(self) else conn
        base.discard(self, real, reason)
        _take(self, conn)  # closed: the proxy dies too

    if hasattr(cls, "discard"):
        made.discard = discard  # type: ignore[attr-defined]
    # Set after the class is made: the asyncio policy's __init_subclass__
    # points acquire/release/connection at the core's coroutines.
    made.acquire = acquire  # type: ignore[attr-defined]
    made.release = release  # type: ignore[attr-defined]
    made.connection = connection  # type: ignore[attr-defined]
    made._release_ended = _release_ended  # type: ignore[attr-defined]
    made._lent_at = _lent_at  # type: ignore[attr-defined]
    _classes[cls] = made
    return made
