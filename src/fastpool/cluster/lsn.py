"""WAL positions and replica lag, as plain numbers (no I/O).

A PostgreSQL WAL position (``pg_lsn``, written ``16/B374D848``) is a 64-bit
byte offset; read-your-writes tokens are that text. ``LagClock`` turns the
primary's positions, sampled on the cluster's timer, into each replica's lag
in seconds: a replica that has replayed position ``R`` shows the primary's
data as it was before the first sample beyond ``R``, so its lag is at least
the time since that sample (0 when it has replayed everything sampled).
"""

from __future__ import annotations

import bisect

from fastpool.errors import ConfigError

__all__ = ["LagClock", "format_lsn", "parse_lsn"]


def parse_lsn(text: object) -> int:
    """``"16/B374D848"`` -> its 64-bit position; ConfigError for anything else."""
    if isinstance(text, str):
        hi, sep, lo = text.partition("/")
        if sep and 0 < len(hi) <= 8 and 0 < len(lo) <= 8:
            try:
                return (int(hi, 16) << 32) | int(lo, 16)
            except ValueError:
                pass
    raise ConfigError(f"a write token must be a WAL position such as '0/3000148' "
                      f"(from cluster.last_write_token()), got {text!r}")


def format_lsn(position: int) -> str:
    """The text PostgreSQL writes for a WAL position."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


class LagClock:
    """The primary's WAL positions over time, to tell a replica's lag.

    ``sample(t, lsn)`` records the primary's position at monotonic time ``t``
    (kept only when it moved: the time a position was first seen is what
    matters); ``lag(replayed, now)`` is how far behind a replica that has
    replayed ``replayed`` is. At most ``keep`` positions are kept: a replica
    behind all of them lags at least since the oldest.
    """

    __slots__ = ("_lsns", "_times", "keep", "latest", "sampled_at")

    def __init__(self, keep: int = 4096) -> None:
        self.keep = keep
        self._times: list[float] = []
        self._lsns: list[int] = []
        #: The primary's last position and when it was last sampled (moved or not).
        self.latest = 0
        self.sampled_at = 0.0

    def sample(self, t: float, lsn: int) -> None:
        """``t``: when the question was sent (the answer is at least that new).
        ``latest`` is written before ``sampled_at``: a reader that sees the new
        time (``Cluster._resolve``) sees the new position too."""
        if lsn > self.latest:
            self.latest = lsn
            self._times.append(t)
            self._lsns.append(lsn)
            if len(self._lsns) > 2 * self.keep:
                del self._times[:-self.keep], self._lsns[:-self.keep]
        self.sampled_at = t

    def lag(self, replayed: int, now: float) -> float:
        if replayed >= self.latest:
            return 0.0
        i = bisect.bisect_right(self._lsns, replayed)  # the first position beyond it
        return max(0.0, now - self._times[i])
