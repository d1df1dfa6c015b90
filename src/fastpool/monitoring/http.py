"""A stdlib-only debug endpoint: ``/debug/fastpool`` (JSON) and ``/metrics``."""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastpool.errors import ConfigError
from fastpool.monitoring.snapshot import snapshot

__all__ = ["DebugServer", "serve"]

logger = logging.getLogger("fastpool")

JSON_PATHS = ("/debug/fastpool", "/debug/vars", "/")


def _jsonable(value: Any) -> Any:
    """JSON has no infinity: histogram bounds say "+Inf" as Prometheus does."""
    if isinstance(value, float) and math.isinf(value):
        return "+Inf"
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class _Handler(BaseHTTPRequestHandler):
    server_version = "fastpool-debug"

    def do_GET(self) -> None:
        if not self._host_allowed():
            self._reply(403, "text/plain", b"the Host header must name this loopback server\n")
            return
        try:
            self._route()
        except Exception as exc:
            logger.exception("fastpool debug endpoint: %s failed", self.path)
            self._reply(500, "text/plain", f"{type(exc).__name__}: {exc}\n".encode())

    def _host_allowed(self) -> bool:
        """On a loopback address, answer only requests addressed to loopback: a
        web page that rebinds its DNS name to 127.0.0.1 must not read holders."""
        address = self.server.server_address
        bound = str(address[0]) if isinstance(address, tuple) else str(address)
        if not _is_loopback(bound):
            return True  # bound to a public address on purpose
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return _is_loopback(name.strip("[]")) or name == "localhost"

    def _route(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in JSON_PATHS:
            body = json.dumps(_jsonable(snapshot()), indent=1, default=str).encode()
            self._reply(200, "application/json", body)
        elif path == "/metrics":
            self._metrics()
        else:
            self._reply(404, "text/plain", b"not found: try /debug/fastpool or /metrics\n")

    def _metrics(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, generate_latest
            from prometheus_client.exposition import CONTENT_TYPE_LATEST
        except ImportError:
            self._reply(501, "text/plain",
                        b"/metrics needs prometheus_client: pip install 'fastpool[prometheus]'\n")
            return
        from fastpool.monitoring.prometheus import PrometheusCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(PrometheusCollector())
        self._reply(200, CONTENT_TYPE_LATEST, generate_latest(registry))

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fastpool debug endpoint: " + format, *args)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class DebugServer:
    """A running endpoint: ``url``, ``port``, ``close()`` (also a context manager)."""

    def __init__(self, host: str, port: int) -> None:
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="fastpool-debug-endpoint", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> DebugServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(port: int = 0, host: str = "127.0.0.1") -> DebugServer:
    """Serve every pool's stats and holders as JSON at ``/debug/fastpool`` (and
    Prometheus text at ``/metrics``) from a background thread.

    Binds loopback by default: the holders show code locations and the
    connections' reprs, which is not for the outside world. ``port=0`` picks a
    free port (``server.port``).

    >>> server = fastpool.monitoring.serve(9187)
    >>> # curl http://127.0.0.1:9187/debug/fastpool
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
        raise ConfigError(f"port must be 0..65535, got {port!r}")
    return DebugServer(host, port)
