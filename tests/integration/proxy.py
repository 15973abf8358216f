"""A TCP proxy on 127.0.0.1 that can cut the line: the broker going away, without a crash.

``Proxy(upstream)`` listens on a free loopback port and forwards every connection to
``upstream()`` (a callable, so the broker's port may be known only after the proxy is
listening: the broker must advertise the proxy's address, or clients would reconnect
to the broker directly). :meth:`Proxy.cut` drops every open connection (RST) and
refuses new ones until :meth:`Proxy.restore`; in ``drop_replies`` mode requests reach
the broker but its answers never come back and the connection is then reset, the
worst case for a producer (written, but not acknowledged).

Threads, not asyncio: two pumps per connection, small and obviously correct.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

HOST = "127.0.0.1"


class Proxy:
    def __init__(self, upstream: Callable[[], tuple[str, int]]) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._up = threading.Event()
        self._up.set()
        self.drop_replies = False
        self.connections = 0  # accepted and forwarded, for the test's own checks
        self.refused = 0
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    # -- control -------------------------------------------------------------------------
    def cut(self) -> None:
        """Reset every open connection and refuse new ones (until :meth:`restore`)."""
        self._up.clear()
        self._reset_all()

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self._up.clear()
        self._listener.close()
        self._reset_all()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------
    def _reset_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
        for s in conns:
            _reset(s)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream(), timeout=5)
                server.settimeout(None)
            except Exception:  # noqa: BLE001 - upstream unknown or down: refuse, keep serving
                _reset(client)
                continue
            with self._lock:
                self._conns.update((client, server))
            self.connections += 1
            for src, dst, replies in ((client, server, False), (server, client, True)):
                threading.Thread(
                    target=self._pump, args=(src, dst, replies), name="proxy-pump", daemon=True
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if replies and self.drop_replies:
                    # The request was written; its answer is lost with the connection.
                    time.sleep(0.05)
                    break
                if not self._up.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._conns.discard(src)
            self._conns.discard(dst)
        _reset(src)
        _reset(dst)


def _reset(s: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a cut cable or a dead peer looks to the client;
    the shutdown first wakes the pump blocked in ``recv`` on it."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
