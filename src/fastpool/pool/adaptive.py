"""The adaptive limit (``max_size="auto"``): find the database's knee from the hold-time gradient.

More connections help until the database saturates; past that knee every extra
connection adds latency and no throughput. Netflix's concurrency-limits finds
that knee for RPC servers from measured latency (Vegas, gradient); this is the
same idea for a pool, on the hold time the core already measures.

Each interval (the pool's sampling period, 1 s) the pool reports an
``Interval``: releases, the mean hold, the mean number of connections in use
(``busy``) and the waits. While the limit binds (callers waited, or every
connection was busy), the interval's mean hold is remembered for that limit
(``_Level``: a moving average). Two limits ``L1 < L2`` give the **hold-time
gradient against concurrency**::

    g = log(hold(L2) / hold(L1)) / log(busy(L2) / busy(L1))

``g`` near 0: latency stays flat as connections are added, throughput grows
with them (``throughput = busy / hold``): grow. ``g`` near 1: latency grows as
fast as concurrency, throughput is flat: the extra connections only queue in
the server: shrink. The thresholds: below ``GROW_BELOW`` (0.5) power,
throughput / latency, still rises with the limit (``busy / hold**2``), so the
limit grows; above ``SHRINK_ABOVE`` (0.7) it steps back; in between it holds:
that band is the hysteresis.

Step rates are bounded: one change per interval at most, then ``SETTLE``
intervals without a decision while the queue re-forms; steps of
``max(1, L // 4)`` up, back to the level below on the way down; a step down
from ``L`` refuses growth back to ``L`` for a back-off that doubles each time
(up to ``MAX_BACKOFF`` intervals), so a noisy knee costs an occasional probe,
not an oscillation. Measurements older than ``MEMORY`` intervals are
forgotten (the workload changes); without a fresh level below, the limit
probes one step down to measure one.

The controller is pure (numbers in, a limit out) so it is tested against a
model of a saturating server without one; ``SizingPolicy`` (``sizing.py``)
feeds it from the pool's counters and applies its limit with ``resize``.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["AdaptiveLimit", "Interval"]


@dataclasses.dataclass(frozen=True)
class Interval:
    """What one sampling interval measured (seconds; ``busy`` in connections)."""

    seconds: float
    releases: int
    hold_mean: float
    busy: float
    waits: int
    waiting: int


@dataclasses.dataclass
class _Level:
    """The moving averages of the hold and the concurrency at one limit."""

    hold: float
    busy: float
    seen: int  # the interval it was last measured in


class AdaptiveLimit:
    """The limit between ``floor`` and ``ceiling``; ``update(interval)`` returns the next one."""

    #: Hold-time gradient below which the limit grows (latency flat).
    GROW_BELOW = 0.5
    #: Gradient above which it shrinks (latency climbing with concurrency).
    SHRINK_ABOVE = 0.7
    #: Fewer releases than this in an interval: no decision.
    MIN_RELEASES = 10
    #: Intervals without a decision after a change.
    SETTLE = 1
    #: Intervals a level's measurement stays valid: decisions compare holds
    #: measured close in time (a shared server's background load drifts), at the
    #: cost of a probe one step down every MEMORY intervals or so.
    MEMORY = 12
    #: Weight of the newest interval in a level's moving average.
    SMOOTHING = 0.5
    #: Longest refusal (intervals) to grow back to a limit found past the knee.
    MAX_BACKOFF = 32
    #: The first limit (at least ``floor``, at most ``ceiling``).
    START = 4

    def __init__(self, floor: int, ceiling: int, start: int | None = None) -> None:
        self.floor = floor
        self.ceiling = ceiling
        self.limit = min(max(self.START if start is None else start, floor), ceiling)
        self.reason = "starting"
        self._tick = 0
        self._settle = 0
        self._levels: dict[int, _Level] = {}
        self._blocked: dict[int, int] = {}  # limit -> interval until which growing to it waits
        self._backoff: dict[int, int] = {}  # limit -> the next refusal's length

    def update(self, m: Interval) -> int:
        """Record an interval measured at ``self.limit``; return the new limit."""
        self._tick += 1
        limit = self.limit
        if self._settle:
            self._settle -= 1
            self.reason = "settling after a change"
            return limit
        if m.releases < self.MIN_RELEASES or m.hold_mean <= 0:
            self.reason = "too few releases to measure"
            return limit
        if not (m.waits or m.waiting or m.busy >= limit - 0.5):
            self.reason = "the limit is not reached"
            return limit
        self._record(limit, m)
        below, above = self._fresh_below(limit), self._fresh_above(limit)
        if below is not None and self._gradient(below, limit) > self.SHRINK_ABOVE:
            self._refuse(limit)
            return self._move(max(below, self.floor), "latency climbs with concurrency")
        if above is not None:
            g = self._gradient(limit, above)
            if g > self.SHRINK_ABOVE:
                if below is None and limit > self.floor:  # is this one past it too?
                    return self._move(limit - self._step(limit),
                                      f"probing down: {above} was past the knee")
                self.reason = f"holding: {above} was past the knee"
                return limit
            if g < self.GROW_BELOW:
                return self._grow(limit, "latency stayed flat up to the next limit")
        if below is None and above is None and limit > self.floor:
            return self._move(limit - self._step(limit), "probing down: nothing to compare with")
        if below is None or self._gradient(below, limit) < self.GROW_BELOW:
            return self._grow(limit, "latency flat")
        self.reason = "holding: between the thresholds"
        return limit

    # ---- the pieces -------------------------------------------------------------------

    @staticmethod
    def _step(limit: int) -> int:
        return max(1, limit // 4)

    def _grow(self, limit: int, why: str) -> int:
        new = min(limit + self._step(limit), self.ceiling)
        if new == limit:
            self.reason = f"{why}; at the ceiling"
            return limit
        if self._blocked.get(new, 0) > self._tick:
            self.reason = f"{why}; {new} was past the knee, retried later"
            return limit
        return self._move(new, why)

    def _move(self, new: int, why: str) -> int:
        new = min(max(new, self.floor), self.ceiling)  # a step never leaves [floor, ceiling]
        if new == self.limit:
            self.reason = f"{why}; at the bound"
            return new
        self.reason = f"{self.limit} -> {new}: {why}"
        self.limit = new
        self._settle = self.SETTLE
        return new

    def _refuse(self, limit: int) -> None:
        wait = self._backoff.get(limit, 2)
        self._blocked[limit] = self._tick + wait
        self._backoff[limit] = min(wait * 2, self.MAX_BACKOFF)

    def _record(self, limit: int, m: Interval) -> None:
        level = self._levels.get(limit)
        if level is None or self._tick - level.seen > self.MEMORY:
            self._levels[limit] = _Level(m.hold_mean, m.busy, self._tick)
            return
        w = self.SMOOTHING
        level.hold += w * (m.hold_mean - level.hold)
        level.busy += w * (m.busy - level.busy)
        level.seen = self._tick

    def _fresh(self, limit: int) -> bool:
        level = self._levels.get(limit)
        return level is not None and self._tick - level.seen <= self.MEMORY

    def _fresh_below(self, limit: int) -> int | None:
        lower = [k for k in self._levels if k < limit and self._fresh(k)]
        return max(lower) if lower else None

    def _fresh_above(self, limit: int) -> int | None:
        higher = [k for k in self._levels if k > limit and self._fresh(k)]
        return min(higher) if higher else None

    def _gradient(self, low: int, high: int) -> float:
        """d log(hold) / d log(concurrency) between two measured limits."""
        a, b = self._levels[low], self._levels[high]
        spread = b.busy / a.busy if a.busy > 0 else 0.0
        if spread < 1.05:  # the measured concurrency barely differs: use the limits
            spread = high / low
        return math.log(b.hold / a.hold) / math.log(spread)
