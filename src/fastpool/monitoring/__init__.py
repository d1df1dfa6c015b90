"""Monitoring: what every pool of this process is doing, for people and scrapers.

- ``snapshot()``: every live pool's stats, wait histogram and holders, as
  plain JSON-ready data (the format the debug endpoint and ``fastpool top``
  share).
- ``serve(port)``: a stdlib-only HTTP endpoint in the spirit of Go's
  ``/debug/vars`` (127.0.0.1 by default): ``/debug/fastpool`` (that JSON) and,
  with prometheus_client installed, ``/metrics``.
- ``PrometheusCollector`` / ``register_prometheus()``: every counter and gauge
  of ``pool.stats()`` under conventional names, one ``pool`` label per pool
  (``pip install 'fastpool[prometheus]'``).
- ``instrument_opentelemetry(pool)``: OpenTelemetry's database-client
  connection metrics and span events, from the pool's event hooks.
"""

from __future__ import annotations

from fastpool.monitoring.http import DebugServer, serve
from fastpool.monitoring.snapshot import histogram, pool_snapshot, pools, snapshot

__all__ = [
    "DebugServer",
    "PrometheusCollector",
    "histogram",
    "instrument_opentelemetry",
    "pool_snapshot",
    "pools",
    "register_prometheus",
    "serve",
    "snapshot",
]


def __getattr__(name: str) -> object:
    # The optional integrations import their libraries only when asked for.
    if name in ("PrometheusCollector", "register_prometheus"):
        from fastpool.monitoring import prometheus

        return getattr(prometheus, name)
    if name == "instrument_opentelemetry":
        from fastpool.monitoring.otel import instrument_opentelemetry

        return instrument_opentelemetry
    raise AttributeError(f"module 'fastpool.monitoring' has no attribute {name!r}")
