"""Fork safety: a child process never uses nor closes its parent's connections.

After ``os.fork()`` every live pool forgets the connections it inherited (the
parent still uses those sockets and files), restarts its background worker and
opens fresh connections on demand. The inherited connection objects are kept
referenced here for the child's lifetime: a finalizer running in the child
could otherwise send a "terminate" message on the parent's socket.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Protocol


class _ForkAware(Protocol):
    def _reinit_after_fork(self, pid: int) -> list[Any]: ...


_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_orphans: list[Any] = []


def register(pool: _ForkAware) -> None:
    _pools.add(pool)


def is_orphan(conn: Any) -> bool:
    return any(c is conn for c in _orphans)


def _after_fork_in_child() -> None:
    pid = os.getpid()
    for pool in list(_pools):
        _orphans.extend(pool._reinit_after_fork(pid))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
