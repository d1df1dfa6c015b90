"""OpenTelemetry for a pool: the database-client connection metrics of OTel's
semantic conventions, and span events, from the pool's event hooks.

::

    from opentelemetry import metrics, trace
    stop = fastpool.monitoring.instrument_opentelemetry(pool)   # global providers
    ...
    stop()                                                      # uninstrument

Metrics (attribute ``db.client.connection.pool.name``):
``db.client.connection.count`` (by ``db.client.connection.state`` idle/used),
``db.client.connection.max``, ``db.client.connection.idle.min``,
``db.client.connection.pending_requests``, ``db.client.connection.timeouts``,
``db.client.connection.wait_time`` and ``db.client.connection.use_time``
(histograms, seconds). With ``span_events``, an acquire that had to wait adds
a ``fastpool.acquire`` event (pool name, wait) to the current span, so a slow
request's trace shows the time it spent waiting for a connection.

Needs only ``opentelemetry-api``; exporting is the SDK's business.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from fastpool.pool import registry as _registry

__all__ = ["instrument_opentelemetry"]

_lock = threading.Lock()
# One set of instruments per meter provider (OpenTelemetry hands back the
# first instrument of a name and ignores later callbacks), observing every
# pool instrumented on that provider; pools are held weakly.
_by_provider: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()


class _Instruments:
    def __init__(self, meter: Any) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        self.pools: weakref.WeakSet[Any] = weakref.WeakSet()

        def observe(read: Callable[[Any], Iterable[tuple[float, dict[str, str]]]]) -> Any:
            def callback(options: CallbackOptions) -> Iterable[Observation]:
                found = []
                for pool in list(self.pools):
                    if pool.closed:
                        continue
                    attrs = {"db.client.connection.pool.name": _registry.label(pool)}
                    found += [Observation(value, {**attrs, **extra})
                              for value, extra in read(pool.stats())]
                return found
            return callback

        meter.create_observable_up_down_counter(
            "db.client.connection.count", unit="{connection}",
            description="Connections by state.",
            callbacks=[observe(lambda s: [
                (s.idle, {"db.client.connection.state": "idle"}),
                (s.in_use, {"db.client.connection.state": "used"})])])
        meter.create_observable_up_down_counter(
            "db.client.connection.max", unit="{connection}",
            callbacks=[observe(lambda s: [(s.max_size, {})])])
        meter.create_observable_up_down_counter(
            "db.client.connection.idle.min", unit="{connection}",
            callbacks=[observe(lambda s: [(s.min_size, {})])])
        meter.create_observable_up_down_counter(
            "db.client.connection.pending_requests", unit="{request}",
            callbacks=[observe(lambda s: [(s.waiting, {})])])
        self.timeouts = meter.create_counter("db.client.connection.timeouts", unit="{timeout}")
        self.wait_time = meter.create_histogram("db.client.connection.wait_time", unit="s")
        self.use_time = meter.create_histogram("db.client.connection.use_time", unit="s")


def instrument_opentelemetry(pool: Any, meter_provider: Any = None,
                             span_events: bool = True) -> Callable[[], None]:
    """Report ``pool`` through OpenTelemetry; returns a function that stops it."""
    from opentelemetry import metrics, trace

    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _lock:
        inst = _by_provider.get(provider)
        if inst is None:
            inst = _by_provider[provider] = _Instruments(
                metrics.get_meter("fastpool", meter_provider=provider))
        inst.pools.add(pool)
    attrs = {"db.client.connection.pool.name": _registry.label(pool)}

    def on_acquire(conn: Any, waited: float) -> None:
        inst.wait_time.record(waited, attrs)
        if span_events and waited > 0.0005:
            span = trace.get_current_span()
            if span.is_recording():
                span.add_event("fastpool.acquire", {**attrs, "fastpool.wait_seconds": waited})

    def on_release(conn: Any, held: float) -> None:
        inst.use_time.record(held, attrs)

    def on_timeout(waited: float) -> None:
        inst.timeouts.add(1, attrs)

    hooks = (("acquire", on_acquire), ("release", on_release), ("timeout", on_timeout))
    for event, fn in hooks:
        pool.on(event, fn)
    pool_ref = weakref.ref(pool)
    stopped = threading.Event()

    def stop() -> None:
        target = pool_ref()
        if target is None or stopped.is_set():
            return
        stopped.set()
        inst.pools.discard(target)
        for event, fn in hooks:
            target.off(event, fn)

    return stop
