"""The pool: the public facade (``facade.py``), its policy (``policy.py``:
sizing, lifetime, health, hand-off) over the compiled core, and what the
policy uses: fork handling, leak reports, event hooks, stats, the registry
of live pools for monitoring."""

from fastpool.pool.facade import POOL_OPTIONS, Pool, PoolFeatures, create_pool
from fastpool.pool.policy import PoolPolicy

__all__ = ["POOL_OPTIONS", "Pool", "PoolFeatures", "PoolPolicy", "create_pool"]
