"""pool.stats(): a typed snapshot users and exporters read."""

from __future__ import annotations

import threading
import time

from fastpool.pool.stats import PoolStats, percentile


def test_percentile_of_a_log2_histogram():
    buckets = [0] * 64
    buckets[11] = 99  # values in [1024, 2048)
    buckets[21] = 1  # one value in [2**20, 2**21)
    assert 1024 <= percentile(buckets, 0.5, 2_000_000) < 2048
    assert percentile(buckets, 0.99, 2_000_000) < 2048
    assert percentile(buckets, 1.0, 1_500_000) <= 1_500_000
    assert percentile([0] * 64, 0.5, 0) == 0


def test_stats_count_what_happened(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    pool.wait(5)
    for _ in range(10):
        with pool.connection():
            time.sleep(0.001)
    held = pool.acquire()
    waiter = threading.Thread(target=lambda: pool.release(pool.acquire(timeout=5)))
    waiter.start()
    while pool.stats().waiting == 0:
        time.sleep(0.001)
    time.sleep(0.02)
    pool.release(held)
    waiter.join()
    s = pool.stats()
    assert isinstance(s, PoolStats)
    assert s.acquisitions == 12 and s.releases == 12
    assert s.waits == 1 and s.handoffs == 1
    assert s.acquire_wait_max >= 0.02
    assert s.acquire_wait_p50 < s.acquire_wait_max
    assert 0.0005 < s.hold_p50 < 1.0
    assert 0.0 < s.utilization <= 1.0
    assert s.opened == 1 and s.closed_total == 0
    d = s.as_dict()
    assert d["closed_total"] == 0 and d["closed"]["lifetime"] == 0


def test_stats_reset_starts_counters_again(pool_cls, db_path):
    import fastpool

    # Not through make_pool: after a reset the lifetime books no longer balance.
    pool = pool_cls(driver=fastpool.drivers.from_url(f"sqlite:///{db_path}"), min_size=1)
    try:
        with pool.connection():
            pass
        before = pool.stats(reset=True)
        assert before.acquisitions == 1
        after = pool.stats()
        assert after.acquisitions == 0 and after.opened == 0
        assert after.open == before.open  # gauges are not counters
        with pool.connection():
            pass
        assert pool.stats().acquisitions == 1
    finally:
        pool.close()
