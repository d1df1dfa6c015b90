"""The sizing model (Erlang C), the advisor's rules and the adaptive limit's
controller, without a server (the advice on real servers:
tests/integration/pool/test_sizing.py)."""

from __future__ import annotations

import itertools
import math
import random
import time
from fractions import Fraction

import pytest

from fastpool import ConfigError
from fastpool.drivers import from_url
from fastpool.options import integer_or_auto
from fastpool.pool.adaptive import AdaptiveLimit, Interval
from fastpool.pool.sizing import (
    Load,
    Sample,
    Sampler,
    advise,
    erlang_c,
    mean_wait,
    server_cap,
    server_cap_steps,
    smallest_size,
    wait_quantile,
)
from fastpool.steps import run

# ---- Erlang C against independently computed values -----------------------------------


def erlang_c_by_sum(c: int, a: Fraction) -> Fraction:
    """The textbook closed form, in exact fractions (independent of the Erlang B
    recursion the library uses): ``(a^c/c! · c/(c-a)) / (Σ_{k<c} a^k/k! + a^c/c! · c/(c-a))``
    (Kleinrock, Queueing Systems vol. 1, 1975, eq. 3.40; Wikipedia "Erlang (unit)")."""
    top = a ** c / math.factorial(c) * c / (c - a)
    return top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)


def test_erlang_c_of_one_server_is_the_utilization():
    # M/M/1: an arrival waits exactly when the server is busy, P = rho.
    for rho in (0.1, 0.5, 0.9):
        assert erlang_c(1, rho) == pytest.approx(rho)


def test_erlang_c_known_exact_values():
    # By hand: c=2, a=1 (rho 1/2): M/M/2's P(wait) = 2 rho^2 / (1 + rho) = 1/3.
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3, rel=1e-12)
    # c=3, a=2: (8/6 * 3) / (1 + 2 + 2 + 4) = 4/9, the basic example of Wolfram
    # Language's ErlangC[3, 2] (documentation of ErlangC, "Basic Examples").
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9, rel=1e-12)


@pytest.mark.parametrize(("c", "a"), [(2, Fraction(3, 2)), (10, Fraction(8)), (55, Fraction(48)),
                                      (100, Fraction(95)), (7, Fraction(1, 3))])
def test_erlang_c_matches_the_closed_form(c, a):
    # (55, 48): the call-centre example of 360 calls per half hour lasting 4 minutes
    # on 55 agents; P(wait) = 0.2387, mean wait 8.18 s, 84.6% answered within 15 s.
    assert erlang_c(c, float(a)) == pytest.approx(float(erlang_c_by_sum(c, a)), rel=1e-10)


def test_call_centre_example_mean_wait_and_service_level():
    rate, hold = 12 / 60, 240.0  # per second; seconds
    assert erlang_c(55, rate * hold) == pytest.approx(0.2387, abs=5e-5)
    assert mean_wait(55, rate, hold) == pytest.approx(8.18, abs=0.01)
    within_15s = 1 - erlang_c(55, 48) * math.exp(-(55 - 48) * 15 / hold)
    assert within_15s == pytest.approx(0.846, abs=5e-4)


def test_erlang_c_edges():
    assert erlang_c(4, 0.0) == 0.0
    assert erlang_c(4, 4.0) == 1.0  # saturated: everyone waits, forever
    assert 0 < erlang_c(5000, 4900.0) < 1  # no overflow for thousands of servers
    with pytest.raises(ValueError):
        erlang_c(0, 1.0)


def test_wait_quantile_is_the_exponential_tail():
    c, rate, hold = 4, 150.0, 0.02  # a = 3
    q99 = wait_quantile(c, rate, hold)
    # P(wait > t) = C * exp(-(c - a) t / h) is 1% at the p99.
    assert erlang_c(c, 3.0) * math.exp(-(c - 3.0) * q99 / hold) == pytest.approx(0.01)
    assert wait_quantile(c, rate, hold, q=0.5) < q99
    assert wait_quantile(3, rate, hold) == math.inf
    assert wait_quantile(40, rate, hold) == 0.0  # fewer than 1% wait at all


def test_smallest_size_meets_the_target_and_one_less_does_not():
    for rate, hold, target in ((100.0, 0.02, 0.001), (2000.0, 0.005, 0.001),
                               (10.0, 0.5, 0.05), (150.0, 0.02, 0.01)):
        c = smallest_size(rate, hold, target)
        assert wait_quantile(c, rate, hold) <= target
        assert c == 1 or wait_quantile(c - 1, rate, hold) > target


# ---- measuring ---------------------------------------------------------------------------


def raw(window_s, acquisitions, *, waits=0, waiting=0, hold_ms=10.0, busy=1.0, open_=4):
    """A core snapshot whose holds all took ``hold_ms``."""
    ns = int(window_s * 1e9)
    hold_ns = int(hold_ms * 1e6)
    buckets = [0] * 64
    buckets[hold_ns.bit_length()] = acquisitions
    wbuckets = [0] * 64
    wbuckets[0] = acquisitions - waits
    wbuckets[24] = waits  # ~16 ms
    return {"counters": {"acquisitions": acquisitions, "releases": acquisitions,
                         "waits": waits, "timeouts": 0, "rejected": 0},
            "hold": {"buckets": buckets, "count": acquisitions,
                     "total": acquisitions * hold_ns, "max": hold_ns},
            "wait": {"buckets": wbuckets, "count": acquisitions, "total": 0,
                     "max": 1 << 24},
            "busy_ns": int(busy * ns), "open_ns": open_ * ns, "window_ns": ns,
            "waiting": waiting, "in_use": 0}


def test_load_between_two_samples():
    old, new = Sample.of(raw(10, 1000)), Sample.of(raw(20, 3000, waits=50, waiting=5))
    load = Load.between(old, new)
    assert load.window == pytest.approx(10)
    assert load.acquisitions == 2000
    # The callers still queued arrived too: demand, not just what was served.
    assert load.arrival_rate == pytest.approx(200.5)
    assert load.hold_mean == pytest.approx(0.010)
    assert load.waits == 50
    assert load.utilization == pytest.approx(0.25)


def test_sampler_windows_and_a_stats_reset():
    sampler = Sampler(keep=5)
    for t in range(1, 8):
        sampler.add(raw(t, 100 * t))
    assert len(sampler.samples) == 5  # the oldest dropped
    now = Sample.of(raw(8, 1000))
    assert sampler.load(now, 2.0).window == pytest.approx(2.0)
    assert sampler.load(now, 100.0).window == pytest.approx(5.0)  # as far back as it has
    assert sampler.load(now, None).window == pytest.approx(8.0)  # since the start
    sampler.add(raw(0.5, 10))  # stats(reset=True): the window restarted
    assert len(sampler.samples) == 1


# ---- the advisor -------------------------------------------------------------------------


def load_of(rate, hold, *, window=10.0, wait_p99=0.0, waits=0):
    return Load(window=window, acquisitions=int(rate * window), arrival_rate=rate,
                hold_mean=hold, hold_p99=hold * 3, waits=waits, wait_p99=wait_p99, waiting=0,
                utilization=0.5, busy=rate * hold, releases=int(rate * window))


def test_advice_grows_a_pool_too_small_for_its_load():
    advice = advise(load_of(100.0, 0.02, wait_p99=0.038, waits=300), min_size=1, max_size=3)
    assert advice.max_size == smallest_size(100.0, 0.02, 0.001) == 7
    assert advice.reason.startswith("grow:")
    assert advice.predicted_wait_p99 <= 0.001
    assert advice.predicted_utilization == pytest.approx(2.0 / 7)
    assert advice.min_size == 2  # the connections the mean load keeps busy
    assert advice.summary() == "max_size 3 → 7: p99 wait 38 ms → 0 ms"


def test_advice_shrinks_a_pool_far_too_large():
    advice = advise(load_of(100.0, 0.02), min_size=32, max_size=32)
    assert advice.max_size == 7
    assert advice.reason.startswith("shrink:")
    assert advice.predicted_utilization > 32 / 7 * (2.0 / 32) * 0.99


def test_advice_keeps_a_pool_of_the_right_size():
    assert advise(load_of(100.0, 0.02), min_size=2, max_size=7).reason.startswith("keep:")


def test_advice_without_enough_load_keeps_the_sizes():
    advice = advise(load_of(0.5, 0.02), min_size=1, max_size=10)
    assert (advice.min_size, advice.max_size) == (1, 10)
    assert "too little load" in advice.reason


def test_advice_is_capped_by_the_server_and_the_ceiling():
    cap = server_cap("postgresql", 100, 3, 90, 0, 2, None)
    assert cap.limit == 7
    advice = advise(load_of(1000.0, 0.02), min_size=1, max_size=4, server=cap)
    assert advice.max_size == 7
    assert "the server's share allows 7" in advice.reason
    assert advice.predicted_wait_p99 > 0.001  # and it says what that costs
    capped = advise(load_of(100.0, 0.02), min_size=1, max_size=4, ceiling=5)
    assert capped.max_size == 5 and "adaptive ceiling" in capped.reason


def test_advice_as_dict_is_json_ready():
    import json

    d = advise(load_of(190.0, 0.02), min_size=1, max_size=3).as_dict()
    assert d["wait_p99"] == 0.0 and d["max_size"] > 3
    json.dumps(d, allow_nan=False)


# ---- the server's cap ---------------------------------------------------------------------


def test_server_cap_shares_what_others_leave():
    # 100 slots, 3 reserved, 17 sessions of other applications, 80 left; our pool
    # has 4 open and 12 sessions of the same application_name: 3 more like us.
    cap = server_cap("postgresql", 100, 3, 17, 12, 4, None)
    assert (cap.processes, cap.limit) == (4, 20)
    assert server_cap("postgresql", 100, 3, 17, 12, 4, 8).limit == 10  # the hint wins
    assert server_cap("mysql", 151, 0, 0, 0, 0, None).limit == 151
    assert server_cap("mysql", 10, 0, 50, 0, 0, None).limit == 1  # never below one


class Replies:
    """The driver's query_dicts, answering from canned rows (the flow's I/O)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked = []

    def query_dicts(self, sql, params):
        self.asked.append(sql)
        return self.answers.pop(0)


def test_server_cap_steps_on_postgresql_counts_other_sessions():
    io = Replies(
        [{"max_connections": 100, "superuser_reserved": 3, "reserved": 2,
          "application_name": "billing"}],
        [{"session_id": 11, "application_name": "billing"},   # ours
         {"session_id": 12, "application_name": "billing"},   # ours
         {"session_id": 20, "application_name": "billing"},   # a sibling process's
         {"session_id": 21, "application_name": "billing"},
         {"session_id": 30, "application_name": "reports"},   # another application
         {"session_id": 31, "application_name": ""}])
    cap = run(server_cap_steps("postgresql", [11, 12], None), io)
    assert (cap.reserved, cap.foreign_sessions, cap.sibling_sessions, cap.processes) == \
        (5, 2, 2, 2)
    assert cap.limit == (100 - 5 - 2) // 2


def test_server_cap_estimates_processes_from_the_configured_size():
    # An idle pool of 10 with 2 open; 40 sessions of its application_name: the
    # siblings are 4 processes like this one, not 20.
    sessions = [{"session_id": i, "application_name": "api"} for i in range(100, 142)]
    io = Replies([{"max_connections": 200, "superuser_reserved": 3, "reserved": 0,
                   "application_name": "api"}], sessions)
    cap = run(server_cap_steps("postgresql", [100, 101], None, 10), io)
    assert (cap.sibling_sessions, cap.processes, cap.estimated) == (40, 5, True)
    assert cap.limit == (200 - 3) // 5
    advice = advise(load_of(1000.0, 0.5), min_size=1, max_size=10, server=cap)  # 500 busy
    assert advice.max_size == cap.limit and "pass processes=" in advice.reason
    assert not server_cap("postgresql", 200, 3, 0, 40, 10, 5).estimated  # a hint is known


def test_server_cap_steps_on_mysql_and_sqlite():
    io = Replies([{"max_connections": 151}],
                 [{"Variable_name": "Threads_connected", "Value": "10"}])
    cap = run(server_cap_steps("mysql", [1, 2, 3], 2), io)
    assert cap.foreign_sessions == 10 - 3 - 1  # less ours and the asking connection
    assert cap.limit == (151 - 6) // 2
    assert run(server_cap_steps("sqlite", [], None), Replies()) is None


# ---- the adaptive limit's controller on a model of a saturating server ---------------------------


def server_model(cores: int, base: float, noise: float, rng: random.Random):
    """Mean hold at ``limit`` busy connections: flat up to ``cores``, then
    proportional (the connections past the knee queue inside the server)."""
    def hold(limit: int) -> float:
        return base * max(1.0, limit / cores) * (1 + rng.uniform(-noise, noise))
    return hold


def drive(controller: AdaptiveLimit, hold_at, intervals: int, *, demand: int = 64) -> list[int]:
    limits = []
    for _ in range(intervals):
        busy = min(controller.limit, demand)
        h = hold_at(busy)
        controller.update(Interval(seconds=1.0, releases=int(busy / h), hold_mean=h,
                                   busy=float(busy), waits=5 if demand > busy else 0,
                                   waiting=max(demand - busy, 0)))
        limits.append(controller.limit)
    return limits


@pytest.mark.parametrize("cores", [2, 4, 8, 16])
def test_adaptive_limit_settles_at_the_knee(cores):
    rng = random.Random(cores)
    limits = drive(AdaptiveLimit(floor=1, ceiling=64), server_model(cores, 0.01, 0.05, rng), 200)
    settled = limits[100:]
    # The knee is `cores`: the limit stays within 25% of it (a step at small
    # sizes), but for an occasional probe down or up.
    near = [lim for lim in settled if cores * 0.75 <= lim <= cores * 1.25 + 1]
    assert len(near) >= 0.85 * len(settled), settled


@pytest.mark.parametrize("cores", [2, 4, 8])
def test_adaptive_limit_finds_a_gradual_knee_by_power(cores):
    # A server whose latency bends smoothly: hold = base * (1 + (c/cores)^4)^(1/4).
    rng = random.Random(cores)

    def hold(c: int) -> float:
        return 0.01 * (1 + (c / cores) ** 4) ** 0.25 * (1 + rng.uniform(-0.05, 0.05))

    def power(c: int) -> float:  # throughput / latency = c / hold^2
        return c / ((1 + (c / cores) ** 4) ** 0.5)

    knee = max(range(1, 65), key=power)
    settled = sorted(drive(AdaptiveLimit(floor=1, ceiling=64), hold, 300)[100:])
    median = settled[len(settled) // 2]
    assert knee * 0.75 <= median <= knee * 1.25 + 0.5, (knee, settled)


def test_adaptive_limit_grows_to_the_ceiling_while_latency_stays_flat():
    rng = random.Random(1)
    limits = drive(AdaptiveLimit(floor=1, ceiling=24), server_model(1000, 0.02, 0.05, rng), 60)
    assert limits[-1] == 24
    assert all(b - a <= max(1, a // 4) for a, b in itertools.pairwise(limits))


def test_adaptive_limit_shrinks_from_an_oversized_start():
    rng = random.Random(2)
    limits = drive(AdaptiveLimit(floor=2, ceiling=64, start=48),
                   server_model(4, 0.01, 0.05, rng), 300)
    assert max(limits[-50:]) <= 8
    assert min(limits) >= 2  # never below the floor


def test_adaptive_limit_holds_when_the_limit_is_not_reached():
    controller = AdaptiveLimit(floor=1, ceiling=32)
    start = controller.limit
    for _ in range(20):
        controller.update(Interval(1.0, 100, 0.01, busy=1.0, waits=0, waiting=0))
    assert controller.limit == start
    assert controller.reason == "the limit is not reached"


def test_adaptive_limit_probing_down_never_goes_below_the_floor():
    # floor 10, limit 12: a probe one step (3) down would give 9.
    controller = AdaptiveLimit(floor=10, ceiling=64, start=12)
    limits = drive(controller, server_model(4, 0.01, 0.05, random.Random(4)), 60)
    assert min(limits) == 10  # it did probe down, to the floor and no lower


def test_adaptive_limit_steps_are_bounded_and_settle():
    rng = random.Random(3)
    controller = AdaptiveLimit(floor=1, ceiling=64)
    limits = drive(controller, server_model(8, 0.01, 0.3, rng), 300)  # very noisy
    changes = [i for i, (a, b) in enumerate(itertools.pairwise(limits)) if a != b]
    # One change at most every SETTLE + 1 intervals, steps of at most a quarter.
    assert all(b - a >= AdaptiveLimit.SETTLE + 1 for a, b in itertools.pairwise(changes))
    assert all(abs(b - a) <= max(1, max(a, b) // 4) + 1
               for a, b in itertools.pairwise(limits))
    assert len(changes) < 100  # hysteresis: no change every other interval


# ---- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    {"max_size": "big"}, {"max_size": "auto", "max_size_ceiling": 0},
    {"max_size": "auto", "max_size_ceiling": "8"}, {"max_size": 4, "max_size_ceiling": 8},
    {"max_size": "auto", "min_size": 9, "max_size_ceiling": 8}, {"max_size": True},
])
def test_bad_sizing_options_are_config_errors(make_pool, options):
    with pytest.raises(ConfigError):
        make_pool(**options)


def test_auto_pool_starts_low_within_its_bounds(make_pool):
    pool = make_pool(max_size="auto", max_size_ceiling=3)
    assert pool.adaptive and pool.max_size_ceiling == 3
    assert 1 <= pool.max_size <= 3
    assert not make_pool(max_size=4).adaptive


def test_resize_of_an_adaptive_pool_stays_within_its_ceiling(make_pool):
    pool = make_pool(max_size="auto", max_size_ceiling=8)
    with pytest.raises(ConfigError, match=r"max_size \(50\) must not exceed max_size_ceiling"):
        pool.resize(1, 50)
    with pytest.raises(ConfigError, match="min_size"):
        pool.resize(9)  # the floor would pass the ceiling
    assert pool.max_size <= 8
    pool.resize(2, 8)  # a new starting point for the controller
    assert (pool.min_size, pool.max_size) == (2, 8)
    make_pool(max_size=4).resize(1, 50)  # a fixed pool has no ceiling


def test_async_resize_of_an_adaptive_pool_stays_within_its_ceiling(run_pools):
    async def body(make):
        pool = await make(max_size="auto", max_size_ceiling=8)
        with pytest.raises(ConfigError, match="max_size_ceiling"):
            await pool.resize(1, 50)
        await pool.resize(1, 8)
        assert pool.max_size == 8
    run_pools(body)


def test_a_batcher_on_an_adaptive_pool_checks_its_flushers_against_the_ceiling(make_pool):
    from fastpool.writes.batch import Batcher

    pool = make_pool(max_size="auto", max_size_ceiling=8)  # its limit starts at 4
    Batcher(pool, flushers=6).close(timeout=10)
    with pytest.raises(ConfigError, match=r"flushers \(9\).*max_size_ceiling \(8\)"):
        Batcher(pool, flushers=9)


def test_auto_is_a_string_and_nothing_else_is_a_config_error():
    class Elementwise:  # == answers with an array (numpy, pandas): not a bool
        def __eq__(self, other):
            raise ValueError("truth value of an array is ambiguous")

    with pytest.raises(ConfigError):
        integer_or_auto("max_size", Elementwise(), 1)
    assert integer_or_auto("max_size", "auto", 1) is None


def test_a_stats_reset_forgets_the_samples_before_it(pool_cls, tmp_path):
    # A sample taken early, then stats(reset=True): once the new window is longer
    # than the old sample's, the old counts were subtracted from the new ones.
    # Not through make_pool: after a reset the lifetime books no longer balance.
    pool = pool_cls(driver=from_url(f"sqlite:///{tmp_path / 'r.db'}"), max_size=2)
    try:
        reset_and_advise(pool)
    finally:
        pool.close()


def reset_and_advise(pool):
    pool._next_sample = math.inf  # the worker samples no more: this test's samples only
    for _ in range(300):
        pool.fetchval("SELECT 1")
    pool._sampler.samples.clear()
    early = pool._sampler.add(pool._snapshot(False))  # what the worker does every second
    pool.stats(reset=True)
    for _ in range(10):
        pool.fetchval("SELECT 1")
    deadline = time.monotonic() + 60
    while Sample.of(pool._snapshot(False)).window_ns <= early.window_ns:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    advice = pool.advice(window=60)
    assert advice.acquisitions == 10  # was 10 - 300


def test_advice_on_a_pool_over_an_embedded_database(make_pool):
    pool = make_pool(max_size=4)
    for _ in range(200):
        pool.fetchval("SELECT 1")
    advice = pool.advice()
    assert advice.server is None  # SQLite has no connection limit
    assert advice.acquisitions >= 200 and advice.arrival_rate > 0
    assert 1 <= advice.max_size <= 4  # microsecond holds: fewer connections do
    with pytest.raises(ConfigError):
        pool.advice(window=-1)
    with pytest.raises(ConfigError):
        pool.advice(processes=0)
