"""The daemon speaks systemd's notify protocol (the unit is Type=notify with WatchdogSec)."""

from __future__ import annotations

import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamlstm.cli.demo import persistence_model
from tests.integration.test_daemon import Daemon, _config, _create_topics

pytestmark = pytest.mark.integration


def test_ready_watchdog_and_stopping_reach_the_notify_socket(
    broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock_path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(sock_path)
    server.settimeout(0.5)
    monkeypatch.setenv("NOTIFY_SOCKET", sock_path)
    monkeypatch.setenv("WATCHDOG_USEC", "1500000")  # 1.5 s: pings every 0.5 s
    rng = np.random.default_rng(3)
    model = persistence_model(rng.normal(size=(2, 200, 4))).save(tmp_path / "m.npz")
    name = f"sd-{uuid.uuid4().hex[:6]}"
    _create_topics(broker.bootstrap, {f"{name}-events": 1, f"{name}-alerts": 1, f"{name}-dlq": 1})
    daemon = Daemon(
        _config(tmp_path, broker.bootstrap, model, f"{name}-events", name, 0), 0, tmp_path / "d.log"
    )
    messages: list[bytes] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and messages.count(b"WATCHDOG=1") < 2:
            try:
                messages.append(server.recv(4096))
            except TimeoutError:
                assert daemon.proc.poll() is None, daemon.tail()
        ready = [m for m in messages if m.startswith(b"READY=1")]
        assert ready, (messages, daemon.tail())
        assert messages.count(b"WATCHDOG=1") >= 2, messages
        assert daemon.get("/readyz")[0] in (200, 503)
    finally:
        assert daemon.wait(signal.SIGTERM) == 0, daemon.tail()
    server.settimeout(2)
    rest = []
    try:
        while True:
            rest.append(server.recv(4096))
    except TimeoutError:
        pass
    server.close()
    assert any(m.startswith(b"STOPPING=1") for m in rest), rest
