"""Monitoring over real HTTP on loopback: the JSON debug endpoint, Prometheus
text scraped and parsed, event hooks, OpenTelemetry metrics and span events.
The pools are real (SQLite files); the values are checked against pool.stats().
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from fastpool import ConfigError, PoolTimeout
from fastpool.drivers import from_url
from fastpool.monitoring import serve, snapshot
from fastpool.pool.events import EVENTS
from tests.fix_pool import wait_until


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


@pytest.fixture
def endpoint() -> Any:
    server = serve(port=0)
    yield server
    server.close()


def work(pool: Any, n: int) -> None:
    for _ in range(n):
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchone()


# ---- the JSON endpoint ---------------------------------------------------------

def test_json_endpoint_reports_every_pool_with_its_holders(make_pool, endpoint):
    a = make_pool(name="orders", track_holders=True)
    b = make_pool(name="billing", max_size=2)
    work(a, 5)
    work(b, 3)
    held = a.acquire()  # the line the holder entry must point at
    try:
        status, ctype, body = get(f"{endpoint.url}/debug/fastpool")
        assert (status, ctype) == (200, "application/json")
        data = json.loads(body)
        pools = {p["name"]: p for p in data["pools"]}
        assert {"orders", "billing"} <= set(pools)
        orders = pools["orders"]
        stats = a.stats()
        assert orders["stats"]["acquisitions"] == stats.acquisitions == 6
        assert orders["stats"]["in_use"] == 1 and orders["stats"]["idle"] == stats.idle
        assert pools["billing"]["stats"]["acquisitions"] == 3
        assert orders["database"].startswith("sqlite ")
        (holder,) = orders["holders"]
        assert holder["acquired_at"].startswith(f"{__file__}:")
        assert "test_json_endpoint_reports_every_pool" in holder["acquired_at"]
        assert holder["held"] >= 0
        assert orders["acquire_wait"]["count"] == 6
        assert orders["acquire_wait"]["le"][-1] == "+Inf"
        assert orders["acquire_wait"]["cumulative"][-1] == 6
    finally:
        a.release(held)


def test_json_endpoint_binds_loopback_and_rejects_unknown_paths(endpoint):
    assert endpoint.host == "127.0.0.1"
    status, _, body = get(f"{endpoint.url}/nope")
    assert status == 404 and b"/debug/fastpool" in body
    with pytest.raises(ConfigError, match="port must be"):
        serve(port=70000)


def test_closed_pools_leave_the_snapshot(make_pool):
    pool = make_pool(name="short-lived")
    assert "short-lived" in [p["name"] for p in snapshot()["pools"]]
    pool.close()
    assert "short-lived" not in [p["name"] for p in snapshot()["pools"]]


# ---- Prometheus ---------------------------------------------------------------

def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a real scrape, by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, ctype, body = get(url)
    assert status == 200 and ctype.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_prometheus_metrics_match_pool_stats(make_pool, endpoint, tmp_path):
    pytest.importorskip("prometheus_client")
    pool = make_pool(name="scraped", max_size=3, max_idle=None)
    other = make_pool(name="other", url=f"sqlite:///{tmp_path}/other.db")
    work(pool, 5)
    a, b = pool.acquire(), pool.acquire()  # a second connection opens
    pool.release(a)
    pool.release(b)
    held = pool.acquire()
    pool.resize(0, 1)  # the idle ones over the new max_size close with reason "resize"
    try:
        samples = scrape(f"{endpoint.url}/metrics")
        stats = pool.stats()
        label = (("pool", "scraped"),)

        def value(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted({"pool": "scraped", **labels}.items())))]

        assert value("fastpool_connections", state="in_use") == stats.in_use == 1
        assert value("fastpool_connections", state="idle") == stats.idle
        assert value("fastpool_connections_open") == stats.open
        assert value("fastpool_connections_max") == 1
        assert value("fastpool_acquisitions_total") == stats.acquisitions == 8
        assert value("fastpool_releases_total") == stats.releases == 7
        assert value("fastpool_connections_opened_total") == stats.opened
        assert stats.closed["resize"] == 1
        for reason, n in stats.closed.items():
            assert value("fastpool_connections_closed_total", reason=reason) == n
        assert value("fastpool_acquire_wait_seconds_count") == stats.acquisitions
        assert value("fastpool_acquire_wait_seconds_bucket", le="+Inf") == stats.acquisitions
        assert value("fastpool_hold_seconds_count") == stats.releases
        assert samples[("fastpool_timeouts_total", label)] == 0
        # Buckets are cumulative and end at the count.
        buckets = sorted((float(dict(k[1])["le"]), v) for k, v in samples.items()
                         if k[0] == "fastpool_acquire_wait_seconds_bucket"
                         and dict(k[1])["pool"] == "scraped")
        counts = [v for _, v in buckets]
        assert counts == sorted(counts) and counts[-1] == stats.acquisitions
        assert ("fastpool_acquisitions_total", (("pool", "other"),)) in samples
    finally:
        pool.release(held)
        other.close()


def test_query_layer_metrics_are_exported(make_pool, endpoint):
    pytest.importorskip("prometheus_client")
    pool = make_pool(name="queried", max_size=1)
    pool.execute("CREATE TABLE IF NOT EXISTS fp_q_mon (x)")
    for _ in range(3):
        pool.fetchval("SELECT count(*) FROM fp_q_mon", cache_ttl=60)
    pool.execute("INSERT INTO fp_q_mon VALUES (1)")
    samples = scrape(f"{endpoint.url}/metrics")
    label = (("pool", "queried"),)
    stats = pool.query_stats()["results"]
    assert samples[("fastpool_result_cache_hits_total", label)] == stats["hits"] == 2
    assert samples[("fastpool_result_cache_misses_total", label)] == stats["misses"] == 1
    assert samples[("fastpool_result_cache_invalidations_total", label)] == 1
    assert samples[("fastpool_result_cache_entries", label)] == 0
    assert samples[("fastpool_slow_queries_total", label)] == 0
    snap = json.loads(urllib.request.urlopen(f"{endpoint.url}/debug/fastpool").read())
    mine = next(p for p in snap["pools"] if p["name"] == "queried")
    assert mine["queries"]["results"]["hits"] == 2


def test_register_prometheus_with_the_client_libraries_own_server(make_pool):
    prometheus_client = pytest.importorskip("prometheus_client")
    from fastpool.monitoring import register_prometheus

    registry = prometheus_client.CollectorRegistry()
    pool = make_pool(name="exported")
    register_prometheus(registry, pools=[pool])
    work(pool, 4)
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        samples = scrape(f"http://127.0.0.1:{server.server_port}/metrics")
        assert samples[("fastpool_acquisitions_total", (("pool", "exported"),))] == 4
        assert not any(dict(k[1]).get("pool") not in (None, "exported") for k in samples)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---- event hooks ----------------------------------------------------------------

def test_every_event_reaches_its_callbacks(make_pool):
    seen: dict[str, list[tuple[Any, ...]]] = {e: [] for e in EVENTS}

    def recorder(event: str) -> Any:
        return lambda *args: seen[event].append(args)

    pool = make_pool(min_size=1, max_size=1, timeout=0.2,
                     hooks={e: recorder(e) for e in ("connect", "close", "timeout")})
    pool.on("acquire", recorder("acquire"))
    pool.on("release", recorder("release"))
    pool.wait()
    conn = pool.acquire()
    with pytest.raises(PoolTimeout):
        pool.acquire()
    pool.release(conn)
    with pool.connection() as again:
        assert again is conn
    pool.drain()
    wait_until(lambda: len(seen["connect"]) == 2)

    assert [a[0] for a in seen["acquire"]] == [conn, conn]
    assert all(waited >= 0 for _, waited in seen["acquire"])
    assert [a[0] for a in seen["release"]] == [conn, conn]
    assert all(held >= 0 for _, held in seen["release"])
    assert len(seen["timeout"]) == 1 and seen["timeout"][0][0] >= 0
    assert seen["close"] == [(conn, "drained")]
    assert seen["connect"][0] == (conn,)


def test_a_failing_callback_is_logged_not_raised(make_pool, caplog):
    pool = make_pool()

    def broken(conn: Any, waited: float) -> None:
        raise RuntimeError("exporter down")

    pool.on("acquire", broken)
    with caplog.at_level(logging.ERROR, logger="fastpool"), pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert "acquire callback" in caplog.text and "exporter down" in caplog.text


def test_removing_the_last_hot_callback_restores_the_compiled_path(make_pool):
    pool = make_pool()
    compiled_acquire = type(pool).acquire
    fn = pool.on("release", lambda conn, held: None)
    assert "acquire" in vars(pool) and "connection" in vars(pool)
    pool.off("release", fn)
    assert "acquire" not in vars(pool) and "connection" not in vars(pool)
    assert type(pool).acquire is compiled_acquire
    with pytest.raises(ValueError, match="is not a 'release' callback"):
        pool.off("release", fn)
    with pytest.raises(ConfigError, match="unknown pool event 'acquired'"):
        pool.on("acquired", print)


# ---- OpenTelemetry ----------------------------------------------------------------

def test_opentelemetry_metrics_and_span_events(make_pool, tmp_path):
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from fastpool.monitoring import instrument_opentelemetry

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tracer_provider.get_tracer("test")

    pool = make_pool(name="otel", min_size=1, max_size=1)
    second = make_pool(name="otel-2", url=f"sqlite:///{tmp_path}/second.db")
    stop = instrument_opentelemetry(pool, meter_provider=provider)
    stop_second = instrument_opentelemetry(second, meter_provider=provider)
    work(pool, 3)
    work(second, 2)
    held = pool.acquire()
    threading.Timer(0.05, pool.release, args=(held,)).start()
    # The acquire waits ~50 ms for the holder, inside a traced request.
    with tracer.start_as_current_span("request"), pool.connection(timeout=5):
        pass

    def collect() -> dict[str, list[Any]]:
        points: dict[str, list[Any]] = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points[metric.name] = list(metric.data.data_points)
        return points

    def of(points: list[Any], name: str) -> list[Any]:
        return [p for p in points if p.attributes["db.client.connection.pool.name"] == name]

    points = collect()
    wait = points["db.client.connection.wait_time"]
    assert sum(p.count for p in of(wait, "otel")) == pool.stats().acquisitions == 5
    assert sum(p.count for p in of(wait, "otel-2")) == 2
    assert sum(p.count for p in of(points["db.client.connection.use_time"], "otel")) == 5
    states = {p.attributes["db.client.connection.state"]: p.value
              for p in of(points["db.client.connection.count"], "otel")}
    assert states == {"idle": 1, "used": 0}
    assert of(points["db.client.connection.count"], "otel-2")  # both pools observed
    (span,) = exporter.get_finished_spans()
    events = [e for e in span.events if e.name == "fastpool.acquire"]
    assert len(events) == 1 and events[0].attributes["fastpool.wait_seconds"] > 0

    stop()
    stop()  # idempotent
    assert not of(collect().get("db.client.connection.count", []), "otel")
    stop_second()
    assert "acquire" not in vars(pool)  # stop() removed the hooks


def test_a_handed_over_connection_shows_its_new_holder_at_once(make_pool):
    pool = make_pool(min_size=1, max_size=1, track_holders=True)
    first = pool.acquire()
    got = threading.Event()
    done = threading.Event()

    def waiting_caller() -> None:
        conn = pool.acquire(timeout=10)  # queued until the release below
        got.set()
        done.wait(10)
        pool.release(conn)

    t = threading.Thread(target=waiting_caller)
    t.start()
    wait_until(lambda: pool.stats().waiting == 1)
    pool.release(first)  # handed straight to the waiter, in this thread
    (holder,) = pool.holders()  # before the waiter may even have woken up
    assert "in waiting_caller" in holder["acquired_at"]
    got.wait(10)
    done.set()
    t.join(10)


# ---- found in review ---------------------------------------------------------------

def test_pools_with_the_same_name_get_distinct_labels(make_pool, endpoint, tmp_path, caplog):
    pytest.importorskip("prometheus_client")
    first = make_pool(name="twin")
    with caplog.at_level(logging.WARNING, logger="fastpool"):
        second = make_pool(name="twin", url=f"sqlite:///{tmp_path}/twin2.db")
    assert "monitoring shows this one as 'twin#2'" in caplog.text
    work(first, 2)
    work(second, 3)
    samples = scrape(f"{endpoint.url}/metrics")
    assert samples[("fastpool_acquisitions_total", (("pool", "twin"),))] == 2
    assert samples[("fastpool_acquisitions_total", (("pool", "twin#2"),))] == 3
    names = [p["name"] for p in snapshot()["pools"]]
    assert names.count("twin") == 1 and names.count("twin#2") == 1


def test_registering_the_collector_twice_is_refused():
    prometheus_client = pytest.importorskip("prometheus_client")
    from fastpool.monitoring import register_prometheus

    registry = prometheus_client.CollectorRegistry()
    register_prometheus(registry)
    with pytest.raises(ConfigError, match="already registered"):
        register_prometheus(registry)


def test_endpoint_refuses_requests_addressed_to_another_host(endpoint):
    request = urllib.request.Request(f"{endpoint.url}/debug/fastpool",
                                     headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 403
    info.value.close()
    assert get(f"http://localhost:{endpoint.port}/debug/fastpool")[0] == 200


def test_an_interrupt_in_an_acquire_callback_gives_the_connection_back(make_pool):
    pool = make_pool(min_size=1, max_size=1, timeout=2)

    def interrupted(conn: Any, waited: float) -> None:
        raise KeyboardInterrupt

    pool.on("acquire", interrupted)
    for borrow in (pool.acquire, pool.connection().__enter__):
        with pytest.raises(KeyboardInterrupt):
            borrow()
        assert pool.stats().in_use == 0
    pool.off("acquire", interrupted)
    with pool.connection() as conn:  # the one connection is still there
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_an_abandoned_pool_with_callbacks_is_freed_without_the_cycle_collector(pool_cls,
                                                                             db_path):
    import gc
    import weakref

    gc.disable()
    try:
        pool = pool_cls(driver=from_url(f"sqlite:///{db_path}"))
        pool.on("acquire", lambda conn, waited: None)
        with pool.connection():
            pass
        ref = weakref.ref(pool)
        pool.close()
        del pool
        assert ref() is None
    finally:
        gc.enable()
