"""What the batcher gives its callers: results, statistics, its errors."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from fastpool.errors import FastpoolError

__all__ = ["BatchResult", "BatchStats", "BatcherClosed", "BatcherFull"]


class BatcherClosed(FastpoolError):
    """The batcher was closed: it accepts no more writes."""


class BatcherFull(FastpoolError):
    """``max_pending`` writes are already pending: ``submit`` was refused
    (``on_full="raise"``) or waited ``full_timeout`` seconds in vain."""


class BatchResult(NamedTuple):
    """The outcome of one committed write."""

    #: Rows the write affected; -1 when the driver cannot tell per write
    #: (a MySQL multi-row ``INSERT ... ON DUPLICATE KEY UPDATE``, ``REPLACE``).
    rowcount: int
    #: The first row the write returned (``RETURNING``), else None.
    row: Any = None


@dataclass(frozen=True)
class BatchStats:
    """A snapshot of a batcher's counters (``batcher.stats()``).

    ``submitted == committed + failed + cancelled + pending`` always holds.
    """

    #: Writes accepted by ``submit``/``execute``.
    submitted: int
    #: Writes committed.
    committed: int
    #: Writes whose caller got an error (its own, or the batch's).
    failed: int
    #: Futures cancelled before their batch started (never written).
    cancelled: int
    #: Writes not resolved yet: queued or in a transaction now.
    pending: int
    #: Of ``pending``, those still queued (not taken by a flusher yet).
    queued: int
    #: Batches taken by the flushers.
    batches: int
    batch_size_mean: float
    batch_size_p99: int
    #: Seconds from submit to commit, over committed writes (within ~7%).
    latency_p50: float
    latency_p99: float
    #: Transactions run again (conflict, lost connection before COMMIT).
    retries: int
    #: Conflicts seen (deadlock, serialization failure, lock timeout).
    conflicts: int
    #: Batches run again with savepoints because a write in them failed.
    isolations: int
    #: Seconds a batch took from taken by a flusher to resolved (its
    #: transaction, retries included), over batches (within ~7%).
    commit_p50: float = 0.0
    commit_p99: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a plain dict (for logs and exporters)."""
        return asdict(self)
