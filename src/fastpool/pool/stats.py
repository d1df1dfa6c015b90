"""The pool's statistics: a typed snapshot built from the core's raw counters."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["PoolStats", "percentile"]


def percentile(buckets: Sequence[int], q: float, max_value: int) -> int:
    """The ``q`` quantile (0..1) of a log2 histogram, in the histogram's unit.

    Bucket 0 holds zeros and bucket ``b`` values in ``[2**(b-1), 2**b)``; the
    estimate interpolates linearly inside the bucket and never exceeds the
    recorded maximum.
    """
    total = sum(buckets)
    if total == 0:
        return 0
    rank = q * total
    seen = 0
    for b, n in enumerate(buckets):
        if n and seen + n >= rank:
            if b == 0:
                return 0
            lo = 1 << (b - 1)
            hi = 1 << b
            frac = (rank - seen) / n
            return min(int(lo + (hi - 1 - lo) * frac), max_value)
        seen += n
    return max_value


@dataclasses.dataclass(frozen=True)
class PoolStats:
    """A snapshot of one pool. Durations are in seconds.

    Gauges: ``open``, ``idle``, ``in_use``, ``waiting``, ``min_size``,
    ``max_size``. Counters (since the pool started or the last
    ``stats(reset=True)``): acquisitions and how many had to wait, timed out or
    were rejected; connections opened and closed (by reason); health probes
    and their total time; leaks; ``reclaimed``: connections taken back from
    borrowers that dropped them without a release; ``dirty_on_lend``: idle
    connections found with a transaction open when about to be lent (written
    through a stale reference after their release), rolled back or discarded
    instead. ``utilization`` is busy connection-seconds
    over open connection-seconds in the same window.
    """

    name: str
    open: int
    idle: int
    in_use: int
    waiting: int
    min_size: int
    max_size: int
    acquisitions: int
    releases: int
    waits: int
    timeouts: int
    rejected: int
    handoffs: int
    acquire_wait_p50: float
    acquire_wait_p99: float
    acquire_wait_max: float
    hold_p50: float
    hold_p99: float
    hold_max: float
    opened: int
    closed: Mapping[str, int]
    connect_errors: int
    probes: int
    probe_time: float
    leaks: int
    utilization: float
    window: float
    generation: int
    reclaimed: int = 0
    dirty_on_lend: int = 0

    @property
    def closed_total(self) -> int:
        return sum(self.closed.values())

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for JSON); ``closed`` becomes ``closed_<reason>`` keys too."""
        d = dataclasses.asdict(self)
        d["closed"] = dict(self.closed)
        d["closed_total"] = self.closed_total
        return d

    @classmethod
    def from_snapshot(cls, raw: Mapping[str, Any], *, name: str, min_size: int, max_size: int,
                      connect_errors: int, reclaimed: int = 0) -> PoolStats:
        c = raw["counters"]
        wait, hold = raw["wait"], raw["hold"]
        ns = 1e-9
        open_ns = raw["open_ns"]
        return cls(
            name=name,
            open=raw["open"],
            idle=raw["idle"],
            in_use=raw["in_use"],
            waiting=raw["waiting"],
            min_size=min_size,
            max_size=max_size,
            acquisitions=c["acquisitions"],
            releases=c["releases"],
            waits=c["waits"],
            timeouts=c["timeouts"],
            rejected=c["rejected"],
            handoffs=c["handoffs"],
            acquire_wait_p50=percentile(wait["buckets"], 0.50, wait["max"]) * ns,
            acquire_wait_p99=percentile(wait["buckets"], 0.99, wait["max"]) * ns,
            acquire_wait_max=wait["max"] * ns,
            hold_p50=percentile(hold["buckets"], 0.50, hold["max"]) * ns,
            hold_p99=percentile(hold["buckets"], 0.99, hold["max"]) * ns,
            hold_max=hold["max"] * ns,
            opened=c["opened"],
            closed=dict(raw["closed"]),
            connect_errors=connect_errors,
            probes=c["probes"],
            probe_time=c["probe_ns"] * ns,
            leaks=c["leaks"],
            utilization=(raw["busy_ns"] / open_ns) if open_ns > 0 else 0.0,
            window=raw["window_ns"] * ns,
            generation=raw["generation"],
            reclaimed=reclaimed,
            dirty_on_lend=c["dirty_on_lend"],
        )
