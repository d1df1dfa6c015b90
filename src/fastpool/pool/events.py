"""Event hooks: callbacks on a pool's connect, acquire, release, close and timeout.

::

    pool.on("acquire", lambda conn, waited: metrics.observe(waited))
    pool.on("close", lambda conn, reason: log.info("closed: %s", reason))

=========== =============================== ===================================
event       callback                        when
=========== =============================== ===================================
connect     ``fn(conn)``                    a new connection joined the pool
acquire     ``fn(conn, waited_seconds)``    a caller got a connection
release     ``fn(conn, held_seconds)``      a caller gave one back
close       ``fn(conn, reason)``            the pool let one go (``reason`` as in
                                            ``stats().closed``: lifetime, idle,
                                            broken, reset, fork, drained,
                                            closed, resize)
timeout     ``fn(waited_seconds)``          an acquire gave up (PoolTimeout)
=========== =============================== ===================================

Callbacks run in the thread where the event happens (the caller's for
acquire, release and timeout; often the pool's worker for connect and close),
so they should be quick. An exception in a callback is logged and ignored:
a broken metrics exporter must not break the pool.

No cost when unused: a pool without acquire/release callbacks keeps the
compiled ``acquire``/``release``/``connection``; the first such callback
installs Python wrappers on that pool instance only (about a microsecond per
cycle), and removing the last one takes them away again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from fastpool.errors import ConfigError

__all__ = ["EVENTS", "Hooks"]

logger = logging.getLogger("fastpool")

EVENTS = ("connect", "acquire", "release", "close", "timeout")
_HOT = ("acquire", "release")


class Hooks:
    """The callbacks of one pool, by event."""

    def __init__(self, pool_name: str) -> None:
        self._name = pool_name
        self._lock = threading.Lock()  # for add/remove; emit reads an immutable tuple
        self._callbacks: dict[str, tuple[Callable[..., object], ...]] = {e: () for e in EVENTS}

    def add(self, event: str, fn: Callable[..., object]) -> None:
        self._check(event)
        if not callable(fn):
            raise ConfigError(f"the callback for {event!r} must be callable, got {fn!r}")
        with self._lock:
            self._callbacks[event] += (fn,)

    def remove(self, event: str, fn: Callable[..., object]) -> None:
        self._check(event)
        with self._lock:
            callbacks = list(self._callbacks[event])
            if fn not in callbacks:
                raise ValueError(f"{fn!r} is not a {event!r} callback of pool {self._name!r}")
            callbacks.remove(fn)
            self._callbacks[event] = tuple(callbacks)

    def has(self, event: str) -> bool:
        return bool(self._callbacks[event])

    def hot(self) -> bool:
        """Are there acquire or release callbacks (which need the wrappers)?"""
        return any(self._callbacks[e] for e in _HOT)

    def emit(self, event: str, *args: Any) -> None:
        for fn in self._callbacks[event]:  # a tuple: safe against concurrent add/remove
            try:
                fn(*args)
            except Exception:
                logger.exception("fastpool: pool %r: %s callback %r failed", self._name,
                                 event, fn)

    @staticmethod
    def _check(event: str) -> None:
        if event not in EVENTS:
            raise ConfigError(f"unknown pool event {event!r}; events: {', '.join(EVENTS)}")


class HookedContext:
    """``with pool.connection()`` for a pool with acquire/release callbacks:
    the compiled context manager, timed and reported around."""

    __slots__ = ("_conn", "_ctx", "_hooks", "_started")

    def __init__(self, hooks: Hooks, ctx: Any) -> None:
        self._hooks = hooks
        self._ctx = ctx
        self._conn: Any = None
        self._started = 0

    def __enter__(self) -> Any:
        t0 = time.monotonic_ns()
        self._conn = self._ctx.__enter__()
        self._started = time.monotonic_ns()
        try:
            self._hooks.emit("acquire", self._conn, (self._started - t0) / 1e9)
        except BaseException as exc:  # interrupted in a callback: give it back
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self._conn

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        conn, self._conn = self._conn, None
        try:
            return bool(self._ctx.__exit__(et, ev, tb))
        finally:
            if conn is not None:
                self._hooks.emit("release", conn, (time.monotonic_ns() - self._started) / 1e9)
