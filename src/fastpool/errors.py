"""The exceptions fastpool raises.

Every error a user can cause names the problem: a bad option, an unknown URL
scheme, a connection released twice or to the wrong pool, a closed pool, or a
pool that could not hand out a connection in time (with the pool's state).
"""

from __future__ import annotations

import copy
import enum

__all__ = [
    "ConfigError",
    "ConnectError",
    "ConnectionAlreadyReleased",
    "ErrorKind",
    "FastpoolError",
    "ForeignConnection",
    "NoReplicaAvailable",
    "PoolClosed",
    "PoolTimeout",
    "TooManyWaiting",
    "TransactionAborted",
    "TransactionOutcomeUnknown",
    "UnsupportedClient",
    "WrongEventLoop",
    "separate_copy",
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

    As the driver classifies it (``ErrorKind.AUTH``, ``CONFIG``, or
    ``UNREACHABLE`` before the pool ever connected): a wrong password or user,
    a database that does not exist, nothing listening at the address; for
    SQLite, a directory that does not exist or a file that is not a database.
    The message says where the pool tried to connect (never the password); the
    driver's exception is ``__cause__``.
    """


class ConnectionAlreadyReleased(FastpoolError, ValueError):
    """``release()`` was called for a connection that is not in use (double release),
    or a guarded connection (``guard=True``) was used after its release."""


class ForeignConnection(FastpoolError, ValueError):
    """``release()`` was called with a connection this pool did not hand out."""


class NoReplicaAvailable(FastpoolError):
    """A read asked for a replica only (``route="replica_only"``) and none is
    usable now: every replica is down, lags more than ``max_replica_lag``, or
    has not yet replayed the caller's last write (read-your-writes). The
    message says which."""


class TransactionOutcomeUnknown(FastpoolError):
    """The connection was lost after COMMIT was sent: the transaction may or may
    not have been committed, so ``pool.transaction()`` does not run it again.

    The driver's error is ``__cause__``. Check the database (e.g. look the row
    up by its key) before doing the work a second time.
    """


class TransactionAborted(FastpoolError):
    """``fn`` returned normally but its PostgreSQL transaction had failed (an
    error inside ``fn`` was caught and not re-raised): COMMIT would silently
    have rolled it back, so it is rolled back and this is raised instead of
    returning as if the work were saved."""


class UnsupportedClient(FastpoolError, TypeError):
    """The pool's connections come from a client library that lacks what a
    feature needs (or are not DB-API connections at all). The message names
    the client, the feature and what is missing; every feature raises this
    same error for it."""


class WrongEventLoop(FastpoolError, RuntimeError):
    """An asyncio pool was used outside the event loop it belongs to (another
    loop, another thread), or created where no loop runs."""


class ErrorKind(enum.Enum):
    """What a database error means for the pool and for retry logic.

    ``pool.classify(exc)`` (or ``driver.classify(exc)``) answers for the
    driver's own exceptions::

        try:
            ...
        except Exception as exc:
            if pool.classify(exc) is ErrorKind.RETRYABLE:
                ...  # run the whole transaction again
    """

    #: The connection broke while a statement was in flight (killed backend,
    #: server restart, network cut). Whether the statement took effect is
    #: unknown; the connection is discarded on release.
    CONNECTION_LOST = "connection_lost"
    #: The connection was already closed or broken before anything was sent:
    #: nothing reached the server, so running the statement again is safe.
    NOT_SENT = "not_sent"
    #: Nothing answers at the address (refused, no such host or socket,
    #: connect timeout).
    UNREACHABLE = "unreachable"
    #: The server answers but takes no new session now (starting up, shutting
    #: down, too many connections): worth retrying with backoff.
    UNAVAILABLE = "unavailable"
    #: The server refused the credentials (wrong password, unknown role).
    AUTH = "auth"
    #: The server rejected the connection settings (no such database, bad parameter).
    CONFIG = "config"
    #: Serialization failure, deadlock or lock-wait timeout: a conflict with
    #: another transaction. Roll back and run the whole transaction again
    #: (MySQL's lock-wait timeout 1205 undoes only the statement, so the
    #: rollback is needed before retrying).
    RETRYABLE = "retryable"
    #: The statement failed (syntax, constraint, type...): the caller's error;
    #: the connection is usable after a rollback.
    QUERY = "query"
    #: Not a database error this driver knows.
    OTHER = "other"


def separate_copy(exc: BaseException) -> BaseException:
    """A separate instance of ``exc`` for one more caller that raises it: each
    raise grows the instance's traceback, and callers in other threads must
    not grow one another's (the batcher's writes of one failed batch, the
    followers of a failed cached read). Keeps the cause and the traceback so
    far; an exception that cannot be copied is returned as it is."""
    try:
        dup = copy.copy(exc)
    except Exception:
        return exc
    dup.__cause__ = exc.__cause__
    dup.__traceback__ = exc.__traceback__
    return dup
