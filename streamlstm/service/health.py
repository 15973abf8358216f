"""One HTTP port for Prometheus and the orchestrator: /metrics, /healthz, /readyz.

- ``/metrics``: the registry in Prometheus text format.
- ``/healthz`` (liveness): 200 while every pipeline loop's heartbeat is younger
  than ``heartbeat_stale_s``; 503 when a loop is stuck, so Kubernetes or the
  systemd watchdog restarts the process (the checkpoint makes that safe).
- ``/readyz`` (readiness): 200 only once every pipeline has compiled its
  kernels, received its partitions, restored their state and reaches the
  broker; 503 otherwise, with the reason per pipeline in the body.

The server runs in its own daemon thread and only reads what the loops write.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamlstm.errors import StreamlstmError
from streamlstm.service.status import Health

log = logging.getLogger(__name__)


class HttpBindError(StreamlstmError):
    """The metrics/health address cannot be bound (port in use, bad host)."""


def liveness(healths: Sequence[Health], stale_s: float) -> tuple[bool, str]:
    now = time.monotonic()
    lines, ok = [], True
    for h in healths:
        age = now - h.heartbeat
        fine = age <= stale_s or h.connecting
        ok &= fine
        state = "connecting" if h.connecting else ("ok" if fine else "STALE")
        lines.append(f"{h.pipeline}: {state} heartbeat {age:.1f}s ago")
    return ok, "\n".join(lines) + "\n"


def readiness(healths: Sequence[Health]) -> tuple[bool, str]:
    lines, ok = [], bool(healths)
    for h in healths:
        missing = [
            what
            for what, done in (
                ("kernels compiling", h.compiled),
                ("waiting for partitions", h.assigned),
                ("restoring state", h.restored),
                ("broker unreachable", h.broker_up),
            )
            if not done
        ]
        ok &= not missing
        lines.append(f"{h.pipeline}: {'ready' if not missing else ', '.join(missing)}")
    return ok, "\n".join(lines) + "\n"


class HealthServer:
    """Serves the three endpoints on ``host:port`` (port 0 = any free port)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        healths: Callable[[], Sequence[Health]],
        stale_s: float,
        alerts: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.registry = registry
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._answer(body=True)

            def do_HEAD(self) -> None:  # noqa: N802 - probes and load balancers use HEAD
                self._answer(body=False)

            def _answer(self, body: bool) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    text = generate_latest(server.registry)
                    gz = "gzip" in (self.headers.get("Accept-Encoding") or "")
                    self._send(200, gzip.compress(text) if gz else text, CONTENT_TYPE_LATEST,
                               body, encoding="gzip" if gz else None)  # fmt: skip
                elif path == "/healthz":
                    ok, msg = liveness(healths(), stale_s)
                    self._send(200 if ok else 503, msg.encode(), body=body)
                elif path == "/readyz":
                    ok, msg = readiness(healths())
                    self._send(200 if ok else 503, msg.encode(), body=body)
                elif path == "/alerts" and alerts is not None:
                    doc = json.dumps({"alerts": alerts()}, indent=1).encode() + b"\n"
                    self._send(200, doc, "application/json", body)
                else:
                    self._send(404, b"try /metrics, /healthz, /readyz or /alerts\n", body=body)

            def _send(
                self, code: int, data: bytes, ctype: str = "text/plain", body: bool = True,
                encoding: str | None = None,
            ) -> None:  # fmt: skip
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                if encoding:
                    self.send_header("Content-Encoding", encoding)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("http %s", format % args)

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise HttpBindError(
                f"metrics: cannot listen on {host}:{port}: {exc.strerror or exc}; "
                "set metrics.port to a free port (0 = any free port) or metrics.host"
            ) from exc
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="streamlstm-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self.httpd.server_address[0])
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
