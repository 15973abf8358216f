"""/metrics, /healthz and /readyz on one port: liveness vs readiness."""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry

from streamlstm.service.health import HealthServer, liveness, readiness
from streamlstm.service.metrics import Metrics
from streamlstm.service.status import Health


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_liveness_fails_on_stale_heartbeat_but_not_while_connecting() -> None:
    h = Health("p")
    assert liveness([h], stale_s=5)[0]
    h.heartbeat = time.monotonic() - 10
    ok, text = liveness([h], stale_s=5)
    assert not ok and "STALE" in text
    h.connecting = True
    assert liveness([h], stale_s=5)[0]


def test_readiness_needs_compiled_assigned_restored_and_broker() -> None:
    h = Health("p")
    ok, text = readiness([h])
    assert not ok and "kernels compiling" in text and "broker unreachable" in text
    h.compiled = h.assigned = h.restored = h.broker_up = True
    assert readiness([h]) == (True, "p: ready\n")
    assert not readiness([])[0]  # no pipeline is not ready


def test_one_port_serves_all_three() -> None:
    reg = CollectorRegistry()
    Metrics(reg).init_pipeline("p", ["ok"])
    h = Health("p")
    srv = HealthServer("127.0.0.1", 0, reg, lambda: [h], stale_s=30).start()
    try:
        code, body = _get(srv.url + "/metrics")
        assert code == 200 and 'streamlstm_events_total{outcome="ok",pipeline="p"} 0.0' in body
        assert _get(srv.url + "/healthz")[0] == 200
        assert _get(srv.url + "/readyz")[0] == 503
        h.compiled = h.assigned = h.restored = h.broker_up = True
        assert _get(srv.url + "/readyz")[0] == 200
        h.heartbeat = time.monotonic() - 60
        assert _get(srv.url + "/healthz")[0] == 503
        assert _get(srv.url + "/nope")[0] == 404
        # HEAD answers like GET without a body; /metrics is gzipped when asked, and
        # counters come without `_created` twins
        for path, want in (("/healthz", 503), ("/readyz", 200), ("/metrics", 200)):
            req = urllib.request.Request(srv.url + path, method="HEAD")
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    code, data = r.status, r.read()
            except urllib.error.HTTPError as exc:
                code, data = exc.code, exc.read()
            assert (code, data) == (want, b""), path
        req = urllib.request.Request(srv.url + "/metrics", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            text = gzip.decompress(r.read()).decode()
        assert "streamlstm_events_total" in text and "_created" not in text
    finally:
        srv.close()


def test_port_in_use_is_an_operator_error() -> None:
    import socket

    import pytest

    from streamlstm.errors import StreamlstmError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(StreamlstmError, match=f"127.0.0.1:{port}.*metrics.port"):
            HealthServer("127.0.0.1", port, CollectorRegistry(), lambda: [], stale_s=30)


def test_alerts_endpoint_lists_every_stream_in_alert() -> None:
    reg = CollectorRegistry()
    rows = [{"pipeline": "p", "stream": "k1", "partition": 0, "peak": 0.9, "top_features": "a"}]
    srv = HealthServer("127.0.0.1", 0, reg, lambda: [], stale_s=30, alerts=lambda: rows).start()
    try:
        code, body = _get(srv.url + "/alerts")
        assert code == 200 and json.loads(body) == {"alerts": rows}
    finally:
        srv.close()
