"""The exceptions fastpool raises.

Every error a user can cause names the problem: a bad option, an unknown URL
scheme, a connection released twice or to the wrong pool, a closed pool, or a
pool that could not hand out a connection in time (with the pool's state).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConnectError",
    "ConnectionAlreadyReleased",
    "FastpoolError",
    "ForeignConnection",
    "PoolClosed",
    "PoolTimeout",
    "TooManyWaiting",
]


class FastpoolError(Exception):
    """Base class of every error raised by fastpool itself."""


class ConfigError(FastpoolError, ValueError):
    """A pool option, size or URL is invalid.

    >>> fastpool.create_pool("sqlite:///x.db", min_size=5, max_size=2)
    Traceback (most recent call last):
    ConfigError: min_size (5) must not exceed max_size (2)
    """


class PoolClosed(FastpoolError):
    """The pool was closed: it hands out no more connections."""


class PoolTimeout(FastpoolError, TimeoutError):
    """No connection became available within the timeout.

    The message states the pool's state at the deadline (open, in use, waiting,
    max size) and, when connecting failed, the last connection error, which is
    also chained as ``__cause__``.
    """


class TooManyWaiting(FastpoolError):
    """``max_waiting`` callers are already queued; this one is rejected at once."""


class ConnectError(FastpoolError):
    """Opening a connection failed in a way that retrying cannot fix.

    As the driver classifies it: for SQLite, a database file in a directory
    that does not exist or a file that is not a database. The driver's
    exception is ``__cause__``.
    """


class ConnectionAlreadyReleased(FastpoolError, ValueError):
    """``release()`` was called for a connection that is not in use (double release)."""


class ForeignConnection(FastpoolError, ValueError):
    """``release()`` was called with a connection this pool did not hand out."""
