"""The batcher's per-flusher counters and its latency histogram (exact below
16 us, then 8 buckets per power of two: quantiles within ~7%)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["Counters", "bucket_value", "quantile", "record"]

_EXACT = 16


def _bucket(us: int) -> int:
    if us < _EXACT:
        return us
    shift = us.bit_length() - 4
    return _EXACT + (shift - 1) * 8 + ((us >> shift) & 7)


def bucket_value(idx: int) -> float:
    if idx < _EXACT:
        return float(idx)
    shift = (idx - _EXACT) // 8 + 1
    return ((8 + (idx - _EXACT) % 8) << shift) + (1 << shift) / 2


def quantile(counts: Sequence[int], q: float) -> int:
    """Index of the q-quantile in a histogram of counts (0 when empty)."""
    total = sum(counts)
    if not total:
        return 0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for idx, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return idx
    return len(counts) - 1


class Counters:
    """One flusher's counters: only its thread writes them."""

    def __init__(self, max_batch: int) -> None:
        self.sizes = [0] * (max_batch + 1)
        self.latency: list[int] = []
        self.commit: list[int] = []
        self.retries = 0
        self.conflicts = 0
        self.isolations = 0

    def record_latency(self, us: int) -> None:
        record(self.latency, us)

    def record_commit(self, us: int) -> None:
        record(self.commit, us)


def record(histogram: list[int], us: int) -> None:
    """Count ``us`` microseconds in ``histogram``."""
    idx = _bucket(us) if us >= _EXACT else us
    if idx >= len(histogram):
        histogram.extend([0] * (idx + 1 - len(histogram)))
    histogram[idx] += 1
