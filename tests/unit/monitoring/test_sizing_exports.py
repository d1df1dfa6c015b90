"""pool.advice() in the monitoring exports: the JSON debug endpoint, Prometheus
(fastpool_advised_max_size, fastpool_predicted_wait_seconds) and fastpool top's
advice line; real pools (SQLite files) kept short of connections."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from fastpool.monitoring import serve, snapshot
from fastpool.monitoring.snapshot import advice
from tests.unit.monitoring.test_monitoring import get, scrape


def starve(pool: Any, threads: int = 4, acquisitions: int = 100, cap: float = 60.0) -> None:
    """``threads`` threads each holding a connection for 5 ms, back to back,
    until the pool has lent ``acquisitions`` (advice needs 30 to say more than
    "too little load"; a stalled machine makes fewer in a fixed time), at most
    ``cap`` seconds: a pool of one is always busy and callers wait."""
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            with pool.connection() as conn:
                conn.execute("SELECT 1").fetchone()
                time.sleep(0.005)

    crowd = [threading.Thread(target=work) for _ in range(threads)]
    for t in crowd:
        t.start()
    deadline = time.monotonic() + cap
    while pool.stats().acquisitions < acquisitions and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in crowd:
        t.join()


@pytest.fixture
def starved(make_pool: Any) -> Any:
    pool = make_pool(name="starved", max_size=1, min_size=1)
    starve(pool)
    return pool


def test_the_json_endpoint_shows_the_advice(starved):
    server = serve(port=0)
    try:
        status, _, body = get(f"{server.url}/debug/fastpool")
    finally:
        server.close()
    assert status == 200
    pool = next(p for p in json.loads(body)["pools"] if p["name"] == "starved")
    a = pool["advice"]
    assert a["current_max_size"] == 1 and a["max_size"] > 1
    assert a["reason"].startswith("grow:")
    assert a["summary"].startswith("max_size 1 → ")
    assert a["waits"] > 0 and a["arrival_rate"] > 0 and a["hold_mean"] >= 0.004
    assert pool["settings"]["max_size_ceiling"] is None


def test_prometheus_exports_the_advised_size_and_predicted_wait(starved):
    pytest.importorskip("prometheus_client")
    server = serve(port=0)
    try:
        samples = scrape(f"{server.url}/metrics")
    finally:
        server.close()
    label = (("pool", "starved"),)
    expected = advice(starved)
    assert expected is not None
    # The window moves on between the scrape and this call: the same direction.
    assert samples[("fastpool_advised_max_size", label)] > 1 and expected["max_size"] > 1
    predicted = samples[("fastpool_predicted_wait_seconds", label)]
    assert 0 <= predicted <= expected["target_wait"]


def test_top_shows_the_advice_line(starved):
    from tests.unit.monitoring.test_top import text_of

    top = pytest.importorskip("fastpool.monitoring.top")
    snap = snapshot()
    snap = {**snap, "pools": [p for p in snap["pools"] if p["name"] == "starved"]}
    text = text_of(top.render(snap), width=200)
    line = next(line for line in text.splitlines() if "advice  max_size" in line)
    assert "max_size 1 → " in line and "p99 wait" in line and "grow:" in line


def test_an_adaptive_pool_reports_its_ceiling(make_pool):
    pool = make_pool(name="auto", max_size="auto", max_size_ceiling=6)
    mine = next(p for p in snapshot()["pools"] if p["name"] == "auto")
    assert mine["settings"]["max_size_ceiling"] == 6
    assert mine["settings"]["max_size"] == pool.max_size <= 6
    assert mine["advice"]["reason"].startswith("keep: too little load")
