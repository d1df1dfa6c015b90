"""A Prometheus collector for every live pool (``pip install 'fastpool[prometheus]'``).

::

    from prometheus_client import start_http_server
    fastpool.monitoring.register_prometheus()      # the default registry
    start_http_server(9100)

Metrics (label ``pool`` on each: the pool's name, ``name#2`` for a second live
pool of the same name; counters count since the pool started; a
``pool.stats(reset=True)`` restarts them, which Prometheus treats as a counter
reset):

========================================== ======= =============================================
fastpool_connections{state=idle|in_use}    gauge   connections idle in the pool / lent out
fastpool_connections_open                  gauge   open connections (idle + in use + in checks)
fastpool_connections_min / _max            gauge   min_size / max_size
fastpool_waiting_callers                   gauge   callers queued for a connection now
fastpool_utilization_ratio                 gauge   busy / open connection-seconds
fastpool_generation                        gauge   1 + the number of drain() calls
fastpool_acquisitions_total                counter connections handed out
fastpool_releases_total                    counter connections given back
fastpool_waits_total                       counter acquisitions that had to wait
fastpool_handoffs_total                    counter connections passed straight to a waiter
fastpool_timeouts_total                    counter acquisitions that gave up (PoolTimeout)
fastpool_rejected_total                    counter acquisitions refused (max_waiting)
fastpool_connections_opened_total          counter connections opened
fastpool_connections_closed_total{reason}  counter connections closed, by reason
fastpool_connect_errors_total              counter failed connection attempts
fastpool_probes_total                      counter liveness probes
fastpool_probe_seconds_total               counter time spent probing
fastpool_leaks_total                       counter connections reported as leaked
fastpool_reclaimed_total                   counter connections dropped without a release, taken back
fastpool_dirty_on_lend_total               counter idle connections found in a transaction at lend
fastpool_advised_max_size                  gauge   max_size pool.advice() recommends (last minute)
fastpool_predicted_wait_seconds            gauge   the p99 acquire wait predicted at that size
fastpool_acquire_wait_seconds              histo.  time from acquire() to a connection
fastpool_hold_seconds                      histo.  time a connection was held
========================================== ======= =============================================
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from fastpool.errors import ConfigError
from fastpool.monitoring.snapshot import advice, histogram, pools, read
from fastpool.pool import registry as _registry

__all__ = ["PrometheusCollector", "register_prometheus"]

_COUNTERS = (
    ("acquisitions", "fastpool_acquisitions", "Connections handed out."),
    ("releases", "fastpool_releases", "Connections given back."),
    ("waits", "fastpool_waits", "Acquisitions that had to wait."),
    ("handoffs", "fastpool_handoffs", "Connections passed straight to a waiting caller."),
    ("timeouts", "fastpool_timeouts", "Acquisitions that gave up (PoolTimeout)."),
    ("rejected", "fastpool_rejected", "Acquisitions refused at once (max_waiting)."),
    ("opened", "fastpool_connections_opened", "Connections opened."),
    ("connect_errors", "fastpool_connect_errors", "Failed connection attempts."),
    ("probes", "fastpool_probes", "Liveness probes run."),
    ("probe_time", "fastpool_probe_seconds", "Time spent in liveness probes."),
    ("leaks", "fastpool_leaks", "Connections reported held past leak_threshold."),
    ("reclaimed", "fastpool_reclaimed",
     "Connections their borrowers dropped without a release, taken back by the pool."),
    ("dirty_on_lend", "fastpool_dirty_on_lend",
     "Idle connections found with a transaction open when about to be lent (written "
     "through a reference kept after release), rolled back or discarded instead."),
)

# (section of pool.query_stats(), key, metric name, help, counter?)
_QUERY_METRICS = (
    ("statements", "prepares", "fastpool_statements_prepared", "Statements prepared.", True),
    ("statements", "hits", "fastpool_statement_cache_hits",
     "Executions of an already prepared statement.", True),
    ("statements", "evictions", "fastpool_statement_cache_evictions",
     "Prepared statements deallocated to make room.", True),
    ("statements", "cached", "fastpool_statements_cached",
     "Prepared statements held by open connections.", False),
    ("results", "hits", "fastpool_result_cache_hits", "Fetches served from the cache.", True),
    ("results", "misses", "fastpool_result_cache_misses", "Fetches that ran the query.", True),
    ("results", "evictions", "fastpool_result_cache_evictions",
     "Results dropped to stay within the bounds.", True),
    ("results", "invalidations", "fastpool_result_cache_invalidations",
     "Results dropped because a write touched their tables.", True),
    ("results", "entries", "fastpool_result_cache_entries", "Cached results.", False),
    ("results", "bytes", "fastpool_result_cache_bytes", "Approximate bytes cached.", False),
    ("", "slow_queries", "fastpool_slow_queries", "Statements above slow_query_ms.", True),
)


class PrometheusCollector(Collector):
    """Collects every live pool of the process (or the given ``pools``) at scrape time."""

    def __init__(self, pools: list[Any] | None = None) -> None:
        self._pools = pools

    def describe(self) -> list[Metric]:
        return []  # metric families depend on the pools alive at scrape time

    def collect(self) -> Iterator[Metric]:
        targets = [p for p in self._pools if not p.closed] if self._pools is not None \
            else pools()
        conns = GaugeMetricFamily("fastpool_connections", "Connections by state.",
                                  labels=["pool", "state"])
        gauges = {
            "open": GaugeMetricFamily("fastpool_connections_open", "Open connections.",
                                      labels=["pool"]),
            "min_size": GaugeMetricFamily("fastpool_connections_min", "min_size.",
                                          labels=["pool"]),
            "max_size": GaugeMetricFamily("fastpool_connections_max", "max_size.",
                                          labels=["pool"]),
            "waiting": GaugeMetricFamily("fastpool_waiting_callers",
                                         "Callers queued for a connection.", labels=["pool"]),
            "utilization": GaugeMetricFamily("fastpool_utilization_ratio",
                                             "Busy over open connection-seconds.",
                                             labels=["pool"]),
            "generation": GaugeMetricFamily("fastpool_generation",
                                            "Connection generation (1 + drains).",
                                            labels=["pool"]),
        }
        counters = {key: CounterMetricFamily(name, doc, labels=["pool"])
                    for key, name, doc in _COUNTERS}
        closed = CounterMetricFamily("fastpool_connections_closed",
                                     "Connections closed, by reason.", labels=["pool", "reason"])
        wait = HistogramMetricFamily("fastpool_acquire_wait_seconds",
                                     "Time from acquire() to a connection.", labels=["pool"])
        hold = HistogramMetricFamily("fastpool_hold_seconds", "Time a connection was held.",
                                     labels=["pool"])
        advised = GaugeMetricFamily("fastpool_advised_max_size",
                                    "max_size recommended by pool.advice() (last minute).",
                                    labels=["pool"])
        predicted = GaugeMetricFamily("fastpool_predicted_wait_seconds",
                                      "p99 acquire wait predicted at the advised max_size.",
                                      labels=["pool"])
        query = [(section, key, (CounterMetricFamily if is_counter else GaugeMetricFamily)(
                     metric, doc, labels=["pool"]))
                 for section, key, metric, doc, is_counter in _QUERY_METRICS]
        for pool in targets:
            stats, raw = read(pool)
            label = _registry.label(pool)
            name = [label]
            conns.add_metric([label, "idle"], stats.idle)
            conns.add_metric([label, "in_use"], stats.in_use)
            for key, gauge in gauges.items():
                gauge.add_metric(name, getattr(stats, key))
            for key, counter in counters.items():
                counter.add_metric(name, getattr(stats, key))
            for reason, n in stats.closed.items():
                closed.add_metric([label, reason], n)
            for histo, hist in ((wait, raw["wait"]), (hold, raw["hold"])):
                h = histogram(hist)
                buckets = [("+Inf" if le == float("inf") else repr(le), n)
                           for le, n in zip(h["le"], h["cumulative"], strict=True)]
                histo.add_metric(name, buckets, sum_value=h["sum"])
            sizing = advice(pool)
            if sizing is not None:
                advised.add_metric(name, sizing["max_size"])
                wait_p99 = sizing["predicted_wait_p99"]
                predicted.add_metric(name, float("inf") if wait_p99 is None else wait_p99)
            qstats = pool.query_stats()
            for section, key, family in query:
                values = qstats[section] if section else qstats
                if values is not None:
                    family.add_metric(name, values[key])
        yield conns
        yield from gauges.values()
        yield from counters.values()
        yield closed
        yield advised
        yield predicted
        yield wait
        yield hold
        for _, _, family in query:
            yield family


def register_prometheus(registry: CollectorRegistry | None = None,
                        pools: list[Any] | None = None) -> PrometheusCollector:
    """Register a collector (of every live pool, or of ``pools``) with
    ``registry`` (default: prometheus_client's global one) and return it."""
    target = REGISTRY if registry is None else registry
    if target in _registered:
        # describe() is empty (the pools vary), so prometheus_client cannot
        # see the duplicate itself: every series would be exported twice.
        raise ConfigError("fastpool's collector is already registered with this registry")
    collector = PrometheusCollector(pools)
    target.register(collector)
    _registered.add(target)
    return collector


_registered: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()
