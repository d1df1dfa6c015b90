"""The connection source: what every feature needs from a pool, and no more.

The query helpers, the transaction runner, the batcher, the bulk loader and
explain are written against this Protocol, never against the pool's class:
they borrow and return connections, ask the client adapter how to run things
on them, classify errors, and tell the result cache what they write. A
``fastpool.Pool`` is one; so is anything else that provides these members
(a test double, a router over replicas).

An asyncio pool (``fastpool.AsyncPool``) is a source too, with ``is_async``
True: its ``acquire``/``release`` return awaitables, its adapter's I/O methods
are coroutines (``fastpool.drivers.client.AsyncClient``) and ``connection()``
is an async context manager. Flows written once as generators
(``fastpool.steps``) run on either kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from fastpool.errors import ErrorKind

__all__ = ["ConnectionSource"]


class ConnectionSource(Protocol):
    """Borrow and return connections of one client library.

    * ``name``: for messages and metrics; ``is_async``: an asyncio source.
    * ``adapter``: the client adapter of the connections it lends (known once
      a connection has been opened; features ask after borrowing one).
    * ``acquire``/``release``/``connection``: borrow and return.
    * ``classify``: what an exception raised on its connections means.
    * ``writing(tables)``: a context to wrap around a write of ``tables``
      that fastpool did not parse itself (a batch, a bulk load): cached
      results of those tables are dropped before and after it.
    """

    name: str
    is_async: bool

    @property
    def adapter(self) -> Any: ...

    def acquire(self, timeout: float | None = None) -> Any: ...

    def release(self, conn: Any) -> None: ...

    def connection(self, timeout: float | None = None) -> AbstractContextManager[Any]: ...

    def classify(self, exc: BaseException) -> ErrorKind: ...

    def writing(self, tables: Iterable[str]) -> AbstractContextManager[None]: ...
