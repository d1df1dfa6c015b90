"""The live pools of this process, for monitoring (weakly held: a pool that is
garbage collected disappears from the list by itself)."""

from __future__ import annotations

import threading
import weakref
from typing import Any

_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()


def add(pool: Any) -> None:
    with _lock:
        _pools.add(pool)


def discard(pool: Any) -> None:
    with _lock:
        _pools.discard(pool)


def pools() -> list[Any]:
    """The open pools, in creation order of their names."""
    with _lock:
        found = list(_pools)
    return sorted((p for p in found if not p.closed), key=lambda p: p.name)
