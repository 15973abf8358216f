"""``streamlstm alerts`` against the daemon's real HTTP server (HealthServer)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamlstm.cli import main
from streamlstm.service.health import HealthServer

ROWS = [
    {"pipeline": "sensors", "stream": "pump-7", "partition": 0, "peak": 0.998,
     "top_features": "temp", "alert_id": "a1", "opened_offset": 412,
     "opened_event_time": 1700000000.0, "opened_iso": "2023-11-14T22:13:20Z",
     "last_event_time": 1700000060.0},
    # opened before the daemon restored it from a checkpoint: only the offset is known
    {"pipeline": "sensors", "stream": "pump-12", "partition": 1, "peak": 0.91,
     "top_features": "rpm", "alert_id": "b2", "opened_offset": 77, "opened_event_time": None,
     "opened_iso": None, "last_event_time": 1700000050.0},
]  # fmt: skip


@pytest.fixture()
def served() -> Iterator[tuple[HealthServer, list[dict[str, Any]]]]:
    rows: list[dict[str, Any]] = []
    srv = HealthServer(
        "127.0.0.1", 0, CollectorRegistry(), lambda: [], stale_s=30, alerts=lambda: rows
    ).start()
    try:
        yield srv, rows
    finally:
        srv.close()


def test_table_lists_every_open_alert(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    srv, rows = served
    rows.extend(ROWS)
    assert main(["alerts", "--url", srv.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["pipeline", "stream", "partition", "peak", "since", "top_features"]
    assert lines[1].split() == ["sensors", "pump-7", "0", "0.998", "2023-11-14T22:13:20Z", "temp"]
    assert lines[2].split() == ["sensors", "pump-12", "1", "0.91", "offset", "77", "rpm"]
    assert lines[3] == "2 stream(s) in alert"


def test_json_is_the_served_document(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    srv, rows = served
    rows.extend(ROWS)
    assert main(["alerts", "--url", srv.url + "/alerts", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"alerts": ROWS}


def test_no_alert(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    srv, _ = served
    assert main(["alerts", "--url", srv.url]) == 0
    assert capsys.readouterr().out.strip() == "no stream in alert"


def test_unreachable_daemon_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["alerts", "--url", f"http://127.0.0.1:{port}", "--timeout", "2"]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}/alerts: cannot reach the daemon" in err


def test_a_server_without_alerts_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    srv = HealthServer("127.0.0.1", 0, CollectorRegistry(), lambda: [], stale_s=30).start()
    try:
        assert main(["alerts", "--url", srv.url]) == 2
    finally:
        srv.close()
    assert "HTTP 404" in capsys.readouterr().err
