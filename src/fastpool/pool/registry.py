"""The live pools of this process, for monitoring (weakly held: a pool that is
garbage collected disappears from the list by itself)."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any

logger = logging.getLogger("fastpool")

_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_labels: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _reset_lock_in_child() -> None:
    # A fork while another thread held the lock would leave it held forever.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_in_child)


def add(pool: Any) -> None:
    """Register ``pool``; a name another live pool already has is labelled
    ``name#2`` (``#3``...) in monitoring, so their series never collide."""
    with _lock:
        taken = {_labels.get(p) for p in _pools if not p.closed}
        label, n = pool.name, 1
        while label in taken:
            n += 1
            label = f"{pool.name}#{n}"
        _pools.add(pool)
        _labels[pool] = label
    if n > 1:
        logger.warning("fastpool: another live pool is already named %r; monitoring shows "
                       "this one as %r", pool.name, label)


def label(pool: Any) -> str:
    """The name monitoring shows for ``pool`` (unique among live pools)."""
    return str(_labels.get(pool, pool.name))


def pools() -> list[Any]:
    """The open pools, by monitoring label."""
    with _lock:
        found = list(_pools)
    return sorted((p for p in found if not p.closed), key=label)
