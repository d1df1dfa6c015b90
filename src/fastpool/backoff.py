"""The one backoff of fastpool: reconnects, transactions and batches wait with it.

Before retry ``n`` (1, 2, ...) an ``ExponentialBackoff`` waits a random time
just under ``min(cap, base * 2 ** (n - 1))`` seconds: the ceiling times
``1 - jitter * random()``. ``jitter=1`` is "full jitter" (uniform between 0
and the ceiling), which spreads out transactions that collided so that they
do not collide again in lockstep; a small jitter keeps the delays close to the
ceiling (reconnects, where the point is to wait)::

    pool.transaction(fn, backoff=ExponentialBackoff(base=0.05, cap=2.0))
    pool.RECONNECT_BACKOFF = ExponentialBackoff(base=0.5, cap=30, jitter=0.1)
    fastpool.Batcher.BACKOFF = ExponentialBackoff(base=0.01, cap=1.0, jitter=0.5)

A backoff is a callable ``attempt -> seconds``; wherever fastpool takes one it
also takes a number of seconds (a constant delay) or any such callable, whose
answers are checked.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from fastpool.errors import ConfigError
from fastpool.options import seconds

__all__ = ["Backoff", "ExponentialBackoff", "delay_function"]

#: What a ``backoff=`` option takes: seconds, or a callable ``attempt -> seconds``.
Backoff = float | Callable[[int], float]


@dataclasses.dataclass(frozen=True)
class ExponentialBackoff:
    """Exponential backoff with jitter (see the module documentation).

    ``base``: the first ceiling, in seconds; ``cap``: the largest;
    ``jitter``: the fraction of the ceiling taken off at random (0 to 1).
    The default waits up to 10 ms, 20 ms, 40 ms... and never more than 1 s.
    """

    base: float = 0.01
    cap: float = 1.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        for name in ("base", "cap"):
            seconds(name, getattr(self, name), owner="ExponentialBackoff")
        if self.cap < self.base:
            raise ConfigError(f"ExponentialBackoff: cap ({self.cap!r}) must not be less than "
                              f"base ({self.base!r})")
        j = self.jitter
        if isinstance(j, bool) or not isinstance(j, (int, float)) or not 0 <= j <= 1:
            raise ConfigError(f"ExponentialBackoff: jitter must be a number from 0 to 1, "
                              f"got {j!r}")

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry ``attempt``."""
        return min(self.cap, self.base * 2.0 ** min(max(attempt, 1) - 1, 64))

    def __call__(self, attempt: int) -> float:
        return self.ceiling(attempt) * (1.0 - self.jitter * random.random())


def delay_function(backoff: object, *, name: str = "backoff") -> Callable[[int], float]:
    """``backoff`` (seconds, or attempt -> seconds) as a function that checks
    its answers; ConfigError for anything else."""
    if isinstance(backoff, ExponentialBackoff):
        return backoff
    if isinstance(backoff, (int, float)) and not isinstance(backoff, bool):
        delay = seconds(name, backoff)
        return lambda attempt: delay
    if not callable(backoff):
        raise ConfigError(f"{name} must be a number of seconds or a callable "
                          f"(retry number -> seconds), got {backoff!r}")

    def checked(attempt: int) -> float:
        delay = backoff(attempt)
        try:
            return seconds(f"{name} {backoff!r} for retry {attempt}", delay)
        except ConfigError:
            raise ConfigError(f"{name} {backoff!r} returned {delay!r} for retry {attempt}: "
                              "expected a finite number of seconds >= 0") from None

    return checked
