"""A TCP proxy in front of a real server, for network faults tests can cause.

``proxy.stall()`` stops forwarding in both directions while keeping the
sockets open (a network partition: sent data is never answered);
``proxy.resume()`` forwards again; ``proxy.close()`` drops every connection.
``proxy.cut_on(pattern)`` cuts the next connection whose client sends
``pattern`` (e.g. a COMMIT), once the server has answered it or before the
server sees it: "the request was sent, no answer came back".
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator

import pytest


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._stop = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._cut_rule: tuple[bytes, bool] | None = None
        #: Set when a connection was cut by ``cut_on``.
        self.cut_done = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def stall(self) -> None:
        self._forwarding.clear()

    def resume(self) -> None:
        self._forwarding.set()

    def cut_on(self, pattern: bytes, *, after_reply: bool = True) -> None:
        """Cut the next connection whose client sends a chunk containing
        ``pattern`` (one shot). With ``after_reply`` the chunk reaches the
        server and the connection is cut as soon as the server answers, the
        answer dropped (the server did the work, the client never hears of
        it); without, the chunk is dropped and the connection cut at once."""
        self.cut_done.clear()
        with self._lock:
            self._cut_rule = (pattern, after_reply)

    def _take_cut(self, data: bytes) -> tuple[bytes, bool] | None:
        with self._lock:
            rule = self._cut_rule
            if rule is None or rule[0] not in data:
                return None
            self._cut_rule = None
            return rule

    def _cut(self, client: socket.socket, server: socket.socket, data: bytes,
             after_reply: bool) -> None:
        if after_reply:
            server.sendall(data)
            server.settimeout(10)
            server.recv(65536)  # the answer, which the client will not get
        self.cut_done.set()  # before the client can notice the cut
        for s in (client, server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not self._stop.is_set():
                if not self._forwarding.is_set():
                    self._forwarding.wait(0.05)  # stalled: read nothing, send nothing
                    continue
                for key, _ in sel.select(0.05):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    rule = self._take_cut(data) if key.fileobj is a else None
                    if rule is not None:
                        self._cut(a, b, data, rule[1])
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            a.close()
            b.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            for a, b in self._pairs:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[Proxy]:
    """A proxy to the test PostgreSQL server (TCP on 127.0.0.1:5432)."""
    proxy = Proxy("127.0.0.1", 5432)
    yield proxy
    proxy.resume()
    proxy.close()


@pytest.fixture
def mysql_proxy(mysql_url: str) -> Iterator[Proxy]:
    """A proxy to the test MariaDB server (TCP on 127.0.0.1:3306)."""
    proxy = Proxy("127.0.0.1", 3306)
    yield proxy
    proxy.resume()
    proxy.close()


#: The message that carries COMMIT: PostgreSQL's simple query ('Q', length,
#: "COMMIT\0"); MySQL's COM_QUERY packet (length, sequence, 0x03, "COMMIT").
COMMIT_MESSAGES = {"postgresql": b"COMMIT\x00", "mysql": b"\x03COMMIT"}


def proxied(kind: str, request: pytest.FixtureRequest) -> tuple[Proxy, str]:
    """A proxy to the test server of ``kind`` ("postgresql" or "mysql") and the
    URL that reaches the server through it. Plain TCP: the proxy reads the
    protocol (both test servers run without TLS)."""
    if kind == "postgresql":
        proxy = request.getfixturevalue("pg_proxy")
        return proxy, f"postgresql://postgres@127.0.0.1:{proxy.port}/test?sslmode=disable"
    proxy = request.getfixturevalue("mysql_proxy")
    return proxy, f"mysql://root@127.0.0.1:{proxy.port}/test"
