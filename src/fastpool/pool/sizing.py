"""Pool sizing from measured load: the queueing model, the advisor, the server's cap.

``pool.advice()`` answers "what should max_size be?" for the pool's own
workload and database:

1. **Measure** (``Load``): the pool's worker samples the core's counters once a
   second (``Sampler``, off the hot path: the counters are there already). Two
   samples give the arrival rate of acquires (lent + timed out + rejected +
   the growth of the queue, so an overloaded pool's demand is not mistaken for
   its throughput), the mean and p99 hold time, the waits and their p99, and
   the utilization over the window.
2. **Model** (``erlang_c``, ``wait_quantile``): an M/M/c queue. With arrival
   rate λ and mean hold ``h`` the offered load is ``a = λh`` connections
   (Erlangs); with ``c`` connections a caller waits with probability
   ``C(c, a)`` (Erlang C) and ``P(wait > t) = C(c, a) · exp(-(c - a) t / h)``.
   The advice is the smallest ``c`` whose predicted p99 wait is at most
   ``target_wait`` (1 ms by default).
3. **Cap** (``server_cap_steps``): no more than the server can take: on
   PostgreSQL ``max_connections`` less ``superuser_reserved_connections`` and
   ``reserved_connections`` less the sessions of other applications in
   ``pg_stat_activity``; on MariaDB/MySQL ``max_connections`` less the other
   ``Threads_connected``; divided among the processes sharing it (the
   ``processes=`` hint, else, on PostgreSQL, estimated from the sessions with
   this pool's ``application_name``).

Where M/M/c does not hold (README "Pool sizing"): callers that come back as
soon as they release (a closed loop of N threads) are not Poisson arrivals, so
at saturation the model sees the throughput the pool allows, not the demand;
advice then grows the pool step by step, and a pool never needs more than the
number of threads that borrow from it. Holds far from exponential (all equal,
or a heavy tail) make the model pessimistic (equal holds wait less) or
optimistic (a few very long holds wait more). Holds that grow with the number
of connections (a saturated server) break the model's fixed ``h``: that is what
the adaptive limit (``fastpool.pool.adaptive``) is for.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastpool.errors import ConfigError
from fastpool.options import MAX_POOL_SIZE, integer, integer_or_auto, seconds
from fastpool.pool.adaptive import AdaptiveLimit, Interval
from fastpool.pool.policy import PoolPolicy
from fastpool.pool.stats import PoolStats, percentile
from fastpool.steps import Steps, run, run_async

if TYPE_CHECKING:
    # A mixin: in ``Pool`` and ``AsyncPool`` it sits before the policy.
    _Composed = PoolPolicy
else:
    _Composed = object

__all__ = [
    "AsyncSizingPolicy",
    "Load",
    "Sampler",
    "ServerCap",
    "SizingAdvice",
    "SizingPolicy",
    "advise",
    "erlang_c",
    "mean_wait",
    "server_cap_steps",
    "wait_quantile",
]

logger = logging.getLogger("fastpool")

#: The seed's acquisition target: a p99 wait under 1 ms.
DEFAULT_TARGET_WAIT = 0.001
#: The largest size the model searches (a bigger answer means "unbounded").
MAX_ADVISED = 10_000
#: Fewer acquisitions than this in the window: too little evidence to advise.
MIN_EVIDENCE = 30


# ---- the queueing model ---------------------------------------------------------------


def erlang_c(servers: int, load: float) -> float:
    """Erlang C: the probability that an arrival waits in an M/M/c queue with
    ``servers`` connections and an offered ``load`` of ``λ·h`` Erlangs.

    Computed through the Erlang B recursion ``B(k) = a·B(k-1) / (k + a·B(k-1))``
    and ``C = c·B / (c - a·(1 - B))``, which stays finite for thousands of
    servers. 1.0 when the load reaches the servers (the queue grows forever).
    """
    if servers < 1:
        raise ValueError(f"servers must be >= 1, got {servers}")
    if load <= 0.0:
        return 0.0
    if load >= servers:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return servers * b / (servers - load * (1.0 - b))


def wait_quantile(servers: int, rate: float, hold: float, q: float = 0.99) -> float:
    """The ``q`` quantile of the acquire wait (seconds) in M/M/c: the ``t`` with
    ``P(wait > t) = C·exp(-(c - a)·t/h) = 1 - q``; 0 when fewer than ``1 - q``
    of the callers wait at all; ``inf`` when the load reaches ``servers``."""
    load = rate * hold
    if load <= 0.0:
        return 0.0
    if load >= servers:
        return math.inf
    waits = erlang_c(servers, load)
    tail = 1.0 - q
    if waits <= tail:
        return 0.0
    return hold * math.log(waits / tail) / (servers - load)


def mean_wait(servers: int, rate: float, hold: float) -> float:
    """The mean acquire wait in M/M/c: ``C(c, a)·h / (c - a)``."""
    load = rate * hold
    if load <= 0.0:
        return 0.0
    if load >= servers:
        return math.inf
    return erlang_c(servers, load) * hold / (servers - load)


def smallest_size(rate: float, hold: float, target_wait: float, q: float = 0.99) -> int:
    """The fewest connections whose predicted ``q`` wait is <= ``target_wait``."""
    load = rate * hold
    c = max(1, math.floor(load) + 1)
    while c < MAX_ADVISED and wait_quantile(c, rate, hold, q) > target_wait:
        c += 1
    return c


# ---- measuring: samples of the core's counters ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sample:
    """The core's cumulative numbers at one moment (histograms trimmed of trailing zeros)."""

    window_ns: int
    acquisitions: int
    releases: int
    waits: int
    timeouts: int
    rejected: int
    waiting: int
    in_use: int
    busy_ns: int
    open_ns: int
    hold_count: int
    hold_total: int
    hold_max: int
    hold: tuple[int, ...]
    wait_max: int
    wait: tuple[int, ...]

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> Sample:
        c, hold, wait = raw["counters"], raw["hold"], raw["wait"]
        return cls(raw["window_ns"], c["acquisitions"], c["releases"], c["waits"],
                   c["timeouts"], c["rejected"], raw["waiting"], raw["in_use"],
                   raw["busy_ns"], raw["open_ns"], hold["count"], hold["total"], hold["max"],
                   _trim(hold["buckets"]), wait["max"], _trim(wait["buckets"]))


_ZERO = Sample(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (), 0, ())


def _trim(buckets: Sequence[int]) -> tuple[int, ...]:
    end = len(buckets)
    while end and not buckets[end - 1]:
        end -= 1
    return tuple(buckets[:end])


def _minus(a: tuple[int, ...], b: tuple[int, ...]) -> list[int]:
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) - (b[i] if i < len(b) else 0) for i in range(n)]


@dataclasses.dataclass(frozen=True)
class Load:
    """What the pool measured over a window: the evidence of an advice.

    ``arrival_rate`` is acquire calls per second (served, timed out, rejected,
    or still queued at the end); ``hold_mean``/``hold_p99`` and
    ``wait_p99`` are seconds; ``busy`` is the mean number of connections in use.
    """

    window: float
    acquisitions: int
    arrival_rate: float
    hold_mean: float
    hold_p99: float
    waits: int
    wait_p99: float
    waiting: int
    utilization: float
    busy: float
    releases: int

    @classmethod
    def between(cls, old: Sample, new: Sample) -> Load:
        dt_ns = new.window_ns - old.window_ns
        dt = dt_ns / 1e9
        acquisitions = new.acquisitions - old.acquisitions
        arrivals = (acquisitions + new.timeouts - old.timeouts + new.rejected - old.rejected
                    + new.waiting - old.waiting)
        holds = new.hold_count - old.hold_count
        open_ns = new.open_ns - old.open_ns
        busy_ns = new.busy_ns - old.busy_ns
        return cls(
            window=dt,
            acquisitions=acquisitions,
            arrival_rate=max(arrivals, 0) / dt if dt > 0 else 0.0,
            hold_mean=(new.hold_total - old.hold_total) / holds / 1e9 if holds > 0 else 0.0,
            hold_p99=percentile(_minus(new.hold, old.hold), 0.99, new.hold_max) / 1e9,
            waits=new.waits - old.waits,
            wait_p99=percentile(_minus(new.wait, old.wait), 0.99, new.wait_max) / 1e9,
            waiting=new.waiting,
            utilization=busy_ns / open_ns if open_ns > 0 else 0.0,
            busy=busy_ns / dt_ns if dt_ns > 0 else 0.0,
            releases=new.releases - old.releases,
        )

    @property
    def offered(self) -> float:
        """Connections the arrivals keep busy on average (Erlangs): rate x mean hold."""
        return self.arrival_rate * self.hold_mean


class Sampler:
    """The recent samples of one pool, taken by its worker every ``interval``
    seconds (kept for ``keep`` samples); ``load(window)`` is the load between
    now and the sample about ``window`` seconds ago."""

    def __init__(self, interval: float = 1.0, keep: int = 300) -> None:
        self.interval = interval
        self.samples: collections.deque[Sample] = collections.deque(maxlen=keep)

    def add(self, raw: Mapping[str, Any]) -> Sample:
        sample = Sample.of(raw)
        if self.samples and sample.window_ns < self.samples[-1].window_ns:
            self.samples.clear()  # stats(reset=True): older samples count from another zero
        self.samples.append(sample)
        return sample

    def load(self, now: Sample, window: float | None) -> Load:
        """The load since ``window`` seconds before ``now`` (the oldest sample
        if none is that old; None: since the pool started or its stats were reset)."""
        samples = list(self.samples)  # one copy: the worker appends from its own thread
        if window is None or not samples or now.window_ns < samples[-1].window_ns:
            return Load.between(_ZERO, now)
        since = now.window_ns - int(window * 1e9)
        old = samples[0]
        for sample in reversed(samples):
            if sample.window_ns <= since:
                old = sample
                break
        if old.window_ns >= now.window_ns:
            return Load.between(_ZERO, now)
        return Load.between(old, now)


# ---- what the server allows ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServerCap:
    """How many connections this pool may open on its server.

    ``limit`` = (``max_connections`` - ``reserved`` - ``foreign_sessions``) //
    ``processes``: the server's slots for ordinary users, less the sessions of
    other applications, shared by the processes of this one.
    """

    limit: int
    max_connections: int
    reserved: int
    foreign_sessions: int
    sibling_sessions: int
    processes: int
    server: str
    #: True when ``processes`` was estimated from the sibling sessions (no hint).
    estimated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_PG_SETTINGS = """
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved,
       current_setting('application_name') AS application_name"""
# Without pg_read_all_stats (or superuser), PostgreSQL 14+ shows another role's
# sessions with backend_type NULL: a NULL type with a user is a client's too.
_PG_SESSIONS = """
SELECT pid AS session_id, coalesce(application_name, '') AS application_name
FROM pg_stat_activity
WHERE (backend_type = 'client backend' OR (backend_type IS NULL AND usesysid IS NOT NULL))
  AND pid <> pg_backend_pid()"""
_MY_MAX = "SELECT @@max_connections AS max_connections"
_MY_THREADS = "SHOW GLOBAL STATUS LIKE 'Threads_connected'"


def server_cap_steps(kind: str, own_sessions: Sequence[int], processes: int | None,
                     size: int = 0) -> Steps[ServerCap | None]:
    """Ask the server (``("query_dicts", sql, None)`` on a connection of the
    driver's own, so it answers while the pool is exhausted) what it allows.
    ``own_sessions``: the server session ids of this pool's connections;
    ``size``: the pool's configured size (see ``server_cap``). None for a
    server without connection limits (SQLite)."""
    if kind == "postgresql":
        settings = (yield ("query_dicts", _PG_SETTINGS, None))[0]
        sessions = yield ("query_dicts", _PG_SESSIONS, None)
        ours = set(own_sessions)
        app = settings["application_name"] or ""
        others = [s for s in sessions if s["session_id"] not in ours]
        siblings = sum(1 for s in others if app and s["application_name"] == app)
        reserved = int(settings["superuser_reserved"]) + int(settings["reserved"])
        return server_cap("postgresql", int(settings["max_connections"]), reserved,
                          len(others) - siblings, siblings, max(len(ours), size), processes)
    if kind == "mysql":
        limit = (yield ("query_dicts", _MY_MAX, None))[0]
        status = yield ("query_dicts", _MY_THREADS, None)
        connected = int(next(iter(status[0].values())) if len(status[0]) == 1
                        else status[0].get("Value", status[0].get("VALUE", 0)))
        # Threads_connected counts this pool's connections and the one asking.
        foreign = max(connected - len(own_sessions) - 1, 0)
        return server_cap("mysql", int(limit["max_connections"]), 0, foreign, 0,
                          max(len(own_sessions), size), processes)
    return None


def server_cap(server: str, max_connections: int, reserved: int, foreign: int, siblings: int,
               own: int, processes: int | None) -> ServerCap:
    """The share of the server left to each process of this application. Without
    a ``processes`` hint, the processes are this one plus as many as the
    sibling sessions (same application_name) would fill at this pool's size
    (``own``: its configured size, or the connections it has open if more): an
    estimate (an idle sibling opens fewer, another service may share the name),
    which the advice's reason says; pass ``processes=`` to know."""
    estimated = processes is None and siblings > 0
    if processes is None:
        processes = 1 + (math.ceil(siblings / own) if siblings and own else
                         (1 if siblings else 0))
    free = max_connections - reserved - foreign
    return ServerCap(limit=max(free // processes, 1), max_connections=max_connections,
                     reserved=reserved, foreign_sessions=foreign, sibling_sessions=siblings,
                     processes=processes, server=server, estimated=estimated)


# ---- the advice -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SizingAdvice:
    """What ``pool.advice()`` recommends, and why.

    ``min_size``/``max_size``: the recommended sizes. ``predicted_wait_p99`` and
    ``predicted_utilization``: what the model expects at that ``max_size``
    (for the load measured). The evidence: ``arrival_rate`` (acquires/s),
    ``hold_mean``/``hold_p99`` (seconds), ``waits`` (acquisitions that waited)
    and ``wait_p99`` measured over ``window`` seconds, at ``current_max_size``.
    ``server`` is the server's cap when it was asked (``ServerCap``).
    ``reason`` says it in one line; ``summary()`` in a shorter one.
    """

    min_size: int
    max_size: int
    predicted_wait_p99: float
    predicted_utilization: float
    current_min_size: int
    current_max_size: int
    wait_p99: float
    utilization: float
    arrival_rate: float
    hold_mean: float
    hold_p99: float
    waits: int
    acquisitions: int
    window: float
    target_wait: float
    server: ServerCap | None
    reason: str

    def summary(self) -> str:
        """``max_size 4 → 9: p99 wait 38 ms → 0.6 ms`` (for ``fastpool top``)."""
        return (f"max_size {self.current_max_size} → {self.max_size}: p99 wait "
                f"{_fmt(self.wait_p99)} → {_fmt(self.predicted_wait_p99)}")

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["server"] = None if self.server is None else self.server.as_dict()
        d["summary"] = self.summary()
        for key in ("predicted_wait_p99", "wait_p99"):
            if math.isinf(d[key]):
                d[key] = None  # JSON has no infinity; None: the queue grows without bound
        return d


def _fmt(t: float) -> str:
    if math.isinf(t):
        return "unbounded"
    if t >= 1.0:
        return f"{t:.3g} s"
    if t >= 1e-3:
        return f"{t * 1e3:.3g} ms"
    if t > 0:
        return f"{t * 1e3:.2g} ms"
    return "0 ms"


def advise(load: Load, *, min_size: int, max_size: int, target_wait: float = DEFAULT_TARGET_WAIT,
           server: ServerCap | None = None, ceiling: int | None = None) -> SizingAdvice:
    """The sizes the model recommends for ``load`` (see the module documentation):
    the smallest ``max_size`` whose predicted p99 wait is <= ``target_wait``,
    no more than ``server.limit`` (nor ``ceiling``, an adaptive pool's), and a
    ``min_size`` that keeps the mean load's connections open."""
    rate, hold = load.arrival_rate, load.hold_mean
    evidence = (f"{rate:,.1f} acquires/s x {_fmt(hold)} mean hold = "
                f"{load.offered:.2f} connections busy on average")

    def result(new_min: int, new_max: int, reason: str) -> SizingAdvice:
        return SizingAdvice(
            min_size=new_min, max_size=new_max,
            predicted_wait_p99=wait_quantile(new_max, rate, hold) if hold > 0 else 0.0,
            predicted_utilization=min(load.offered / new_max, 1.0),
            current_min_size=min_size, current_max_size=max_size,
            wait_p99=load.wait_p99, utilization=load.utilization, arrival_rate=rate,
            hold_mean=hold, hold_p99=load.hold_p99, waits=load.waits,
            acquisitions=load.acquisitions, window=load.window, target_wait=target_wait,
            server=server, reason=reason)

    if load.acquisitions < MIN_EVIDENCE or hold <= 0.0:
        return result(min_size, max_size,
                      f"keep: too little load measured ({load.acquisitions} acquires in "
                      f"{load.window:.1f} s) to advise")
    size = smallest_size(rate, hold, target_wait)
    reason = f"{evidence}; {size} keep the p99 wait <= {_fmt(target_wait)}"
    for bound, why in ((ceiling, "the adaptive ceiling"),
                       (None if server is None else server.limit, "the server's share")):
        if bound is not None and size > bound:
            size = bound
            reason = (f"{evidence}; {why} allows {bound}, predicted p99 wait "
                      f"{_fmt(wait_quantile(bound, rate, hold))} > {_fmt(target_wait)}")
            if bound is not ceiling and server is not None and server.estimated:
                reason += (f" ({server.processes} processes estimated from "
                           f"{server.sibling_sessions} sessions of this application_name: "
                           "pass processes=)")
    # Keep open what the mean load keeps busy; the rest opens on demand.
    new_min = min(size, max(1, math.ceil(load.offered)))
    if size == max_size:
        reason = f"keep: {reason}"
    elif size > max_size:
        reason = f"grow: {reason}"
    else:
        reason = f"shrink: {reason}"
    return result(new_min, size, reason)


# ---- the mixin: sampling on the worker's timer, advice, the adaptive limit ----------------------


class SizingPolicy(_Composed):
    """Sizing from measured load, mixed into ``Pool`` and ``AsyncPool`` before
    their policy: the worker's maintenance round samples the counters (for
    ``advice(window=...)``) and, with ``max_size="auto"``, moves the limit
    (``fastpool.pool.adaptive``) through ``resize``.

    ``max_size="auto"``: the pool finds its limit between ``max(min_size, 1)``
    and ``max_size_ceiling`` (default 32), starting at 4 (within those bounds).
    """

    #: Seconds between samples of the counters (and between adaptive steps).
    SAMPLE_INTERVAL = 1.0
    #: Samples kept: how far back ``advice(window=...)`` can look (seconds).
    SAMPLES_KEPT = 300
    #: Seconds a server's answer (its cap) is reused by ``advice()`` and monitoring.
    SERVER_CAP_TTL = 10.0
    #: The window monitoring (JSON endpoint, Prometheus, top) advises on.
    MONITOR_WINDOW = 60.0
    #: The default ceiling of ``max_size="auto"``.
    DEFAULT_CEILING = 32

    def __init__(self, connect: Any = None, *, max_size_ceiling: int | None = None,
                 **options: Any) -> None:
        auto = "max_size" in options and integer_or_auto(
            "max_size", options["max_size"], 1, maximum=MAX_POOL_SIZE) is None
        self.max_size_ceiling: int | None = None
        self._adaptive: AdaptiveLimit | None = None
        if auto:
            ceiling = self.DEFAULT_CEILING if max_size_ceiling is None else integer(
                "max_size_ceiling", max_size_ceiling, 1, maximum=MAX_POOL_SIZE)
            floor = integer("min_size", options.get("min_size", 1), 0, maximum=MAX_POOL_SIZE)
            if floor > ceiling:
                raise ConfigError(f"min_size ({floor}) must not exceed max_size_ceiling "
                                  f"({ceiling})")
            self.max_size_ceiling = ceiling
            self._adaptive = AdaptiveLimit(floor=max(floor, 1), ceiling=ceiling)
            options["max_size"] = self._adaptive.limit
        elif max_size_ceiling is not None:
            raise ConfigError('max_size_ceiling is the ceiling of max_size="auto"; '
                              f"got max_size={options.get('max_size', 10)!r}")
        self._sampler = Sampler(self.SAMPLE_INTERVAL, self.SAMPLES_KEPT)
        self._next_sample = 0.0
        self._last_adapt: Sample | None = None
        self._server_cap: tuple[float, int | None, ServerCap | None] | None = None
        super().__init__(connect, **options)

    def stats(self, reset: bool = False) -> PoolStats:
        result = super().stats(reset)
        if reset:  # the samples before count from another zero: forget them
            self._sampler.samples.clear()
            self._last_adapt = None
        return result

    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """``PoolPolicy.resize``; on an adaptive pool the sizes stay within
        ``max_size_ceiling``, and the controller carries on from the new ones."""
        self._within_ceiling(min_size, max_size)
        super().resize(min_size, max_size)

    def _within_ceiling(self, min_size: int, max_size: int | None) -> None:
        ceiling = self.max_size_ceiling
        if ceiling is None:
            return
        for name, value in (("min_size", min_size), ("max_size", max_size)):
            if value is not None and integer(name, value, 0) > ceiling:
                raise ConfigError(f"{name} ({value}) must not exceed max_size_ceiling "
                                  f"({ceiling}) of this adaptive pool")

    @property
    def adaptive(self) -> bool:
        """True for ``max_size="auto"``: ``max_size`` is then the limit found so far."""
        return self._adaptive is not None

    # ---- the worker's side --------------------------------------------------------------

    def _maintain_steps(self) -> Steps[float]:
        delay: float = yield from super()._maintain_steps()
        return min(delay, self._sizing_tick())

    def _sizing_tick(self) -> float:
        """Sample the counters when due and, for an adaptive pool, take a step;
        returns the seconds until the next sample."""
        now_ns = self._now_ns()
        wait = self._next_sample - now_ns / 1e9
        if wait > 0 or self._is_closed:
            return max(wait, 0.005)
        self._next_sample = now_ns / 1e9 + self.SAMPLE_INTERVAL
        sample = self._sampler.add(self._snapshot(False))
        if self._adaptive is not None:
            self._adapt(sample)
        return self.SAMPLE_INTERVAL

    def _adapt(self, sample: Sample) -> None:
        assert self._adaptive is not None
        last = self._last_adapt
        if last is None or sample.window_ns <= last.window_ns:
            self._last_adapt = sample
            return
        load = Load.between(last, sample)
        if load.releases < self._adaptive.MIN_RELEASES and load.window < 30 * self.SAMPLE_INTERVAL:
            return  # long holds: let the interval grow until it has enough of them
        self._last_adapt = sample
        self._adaptive.floor = max(self.min_size, 1)
        if self._adaptive.limit != self.max_size:  # a user's resize(): carry on from there
            self._adaptive.limit = max(min(self.max_size, self._adaptive.ceiling),
                                       self._adaptive.floor)
        new = self._adaptive.update(Interval(
            seconds=load.window, releases=load.releases, hold_mean=load.hold_mean,
            busy=load.busy, waits=load.waits, waiting=sample.waiting))
        if new != self.max_size:  # the sync resize (an AsyncPool's awaits nothing more)
            # The user's min_size stays: the controller moves max_size only.
            PoolPolicy.resize(self, self.min_size, max(new, self.min_size))

    # ---- advice -----------------------------------------------------------------------------

    def advice(self, window: float | None = None, *, target_wait: float = DEFAULT_TARGET_WAIT,
               processes: int | None = None) -> SizingAdvice:
        """The sizes this pool's measured load calls for (``SizingAdvice``).

        ``window``: the last so many seconds (up to SAMPLES_KEPT), or None for
        everything since the pool started or its stats were reset.
        ``target_wait``: the p99 acquire wait to meet (seconds, default 1 ms).
        ``processes``: how many processes share the server's connections
        (default: estimated from the sessions with this pool's
        application_name on PostgreSQL, else 1). Asks the server for its limits
        on a connection of its own (cached SERVER_CAP_TTL seconds)::

            advice = pool.advice(window=60)
            print(advice.reason)
            pool.resize(advice.min_size, advice.max_size)
        """
        steps = self._advice_steps(window, target_wait, processes)
        return run(steps, self._driver)

    def _advice_steps(self, window: float | None, target_wait: float, processes: int | None,
                      ) -> Steps[SizingAdvice]:
        """``advice()`` written once for both front ends: the server's cap is
        the I/O (the driver's ``query_dicts``, blocking or awaited)."""
        if window is not None:
            seconds("window", window, allow_zero=False)
        target = seconds("target_wait", target_wait)
        if processes is not None:
            integer("processes", processes, 1)
        cached = self._server_cap
        now = self._now_ns() / 1e9
        if cached is None or cached[1] != processes or now - cached[0] > self.SERVER_CAP_TTL:
            client = self._driver.client
            cap = None
            if client is not None:
                try:
                    cap = yield from server_cap_steps(
                        client.kind, sorted(self._session_states()), processes, self.max_size)
                except Exception as exc:  # no cap known: the advice says so, not fails
                    logger.warning("fastpool: pool %r: cannot read the server's connection "
                                   "limits for advice(): %s: %s", self.name,
                                   type(exc).__name__, self._driver.redact(str(exc)))
            self._server_cap = (now, processes, cap)
        return self._advise_now(window, target)

    def _advise_now(self, window: float | None = MONITOR_WINDOW,
                    target_wait: float = DEFAULT_TARGET_WAIT) -> SizingAdvice:
        """The advice without I/O: the server's cap as last asked (monitoring's view)."""
        load = self._sampler.load(Sample.of(self._snapshot(False)), window)
        cap = None if self._server_cap is None else self._server_cap[2]
        return advise(load, min_size=self.min_size, max_size=self.max_size,
                      target_wait=target_wait, server=cap, ceiling=self.max_size_ceiling)


class AsyncSizingPolicy(SizingPolicy):
    """``SizingPolicy`` for ``AsyncPool``: ``advice()`` and ``resize()`` are awaited."""

    async def resize(self, min_size: int,  # type: ignore[override]
                     max_size: int | None = None) -> None:
        """``AsyncPool.resize`` within an adaptive pool's ``max_size_ceiling``."""
        self._within_ceiling(min_size, max_size)
        await super(SizingPolicy, self).resize(min_size, max_size)  # type: ignore[misc]

    async def advice(self, window: float | None = None, *,  # type: ignore[override]
                     target_wait: float = DEFAULT_TARGET_WAIT,
                     processes: int | None = None) -> SizingAdvice:
        """``await pool.advice()``: the sizes the measured load calls for (see
        ``Pool.advice``); the server's limits are asked on a connection of its own."""
        return await run_async(self._advice_steps(window, target_wait, processes), self._driver)
