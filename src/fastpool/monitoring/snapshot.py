"""One JSON-ready picture of every live pool: stats, wait histogram, holders."""

from __future__ import annotations

import os
import time
from typing import Any

from fastpool.pool import registry as _registry
from fastpool.pool.stats import PoolStats

__all__ = ["advice", "histogram", "pool_snapshot", "pools", "snapshot"]

#: Bucket bounds reported for the log2 histograms: 1 µs .. ~68.7 s, then +Inf.
FIRST_BUCKET, LAST_BUCKET = 10, 36


def pools() -> list[Any]:
    """The open pools of this process, by name."""
    return _registry.pools()


def histogram(raw: dict[str, Any]) -> dict[str, Any]:
    """A core log2 histogram (nanoseconds) as cumulative buckets in seconds.

    ``le`` holds the upper bounds (the last is ``inf``), ``cumulative`` the
    number of observations <= each bound; ``count`` and ``sum`` (seconds) as in
    Prometheus. Core bucket ``b`` holds values in ``[2**(b-1), 2**b)`` ns, so
    everything in buckets ``<= b`` is ``< 2**b`` ns.
    """
    buckets = raw["buckets"]
    les: list[float] = []
    cumulative: list[int] = []
    running = sum(buckets[:FIRST_BUCKET])
    for b in range(FIRST_BUCKET, LAST_BUCKET + 1):
        running += buckets[b]
        les.append((1 << b) / 1e9)
        cumulative.append(running)
    les.append(float("inf"))
    cumulative.append(raw["count"])
    return {"le": les, "cumulative": cumulative, "count": raw["count"],
            "sum": raw["total"] / 1e9}


def read(pool: Any) -> tuple[PoolStats, dict[str, Any]]:
    """The pool's stats and the raw core numbers they came from (one read, so
    the histograms and the counters agree)."""
    raw = pool._snapshot(False)
    stats = PoolStats.from_snapshot(raw, name=pool.name, min_size=pool.min_size,
                                    max_size=pool.max_size,
                                    connect_errors=pool._connect_errors,
                                    reclaimed=pool._reclaimed)
    return stats, raw


def pool_snapshot(pool: Any) -> dict[str, Any]:
    """One pool: its stats, histograms, settings and the connections in use."""
    stats_, raw = read(pool)
    stats = stats_.as_dict()
    stats["name"] = _registry.label(pool)
    return {
        "name": _registry.label(pool),
        "database": pool.driver.describe(),
        "closed": pool.closed,
        "stats": stats,
        "acquire_wait": histogram(raw["wait"]),
        "hold": histogram(raw["hold"]),
        "holders": sorted(pool.holders(), key=lambda h: -h["held"]),
        "queries": pool.query_stats(),
        "advice": advice(pool),
        "settings": {"min_size": pool.min_size, "max_size": pool.max_size,
                     "timeout": pool.timeout, "max_lifetime": pool.max_lifetime,
                     "max_idle": pool.max_idle, "alive_bypass": pool.alive_bypass,
                     "leak_threshold": pool.leak_threshold,
                     "track_holders": pool.track_holders,
                     "max_size_ceiling": getattr(pool, "max_size_ceiling", None)},
    }


def advice(pool: Any) -> dict[str, Any] | None:
    """The pool's sizing advice over the last minute (``pool.advice()`` without
    asking the server again: its cap as last asked), or None for a pool without
    the sizing mixin."""
    advise = getattr(pool, "_advise_now", None)
    if advise is None:
        return None
    result: dict[str, Any] = advise().as_dict()
    return result


def snapshot() -> dict[str, Any]:
    """Every live pool of this process (``{"pid", "time", "pools": [...]}``)."""
    return {"pid": os.getpid(), "time": time.time(),
            "pools": [_guarded(p) for p in pools()]}


def _guarded(pool: Any) -> dict[str, Any]:
    """One pool's snapshot, or what went wrong: one bad pool (a connection whose
    repr raises, a pool closing meanwhile) must not hide the others."""
    try:
        return pool_snapshot(pool)
    except Exception as exc:
        return {"name": _registry.label(pool), "error": f"{type(exc).__name__}: {exc}"}
