"""From an anomalous event to a ticket, with the real programs.

The daemon (``streamlstm run``) consumes the local broker; Debian's
``prometheus`` scrapes it every second with the shipped rules
(deploy/prometheus/streamlstm-rules.yml); Debian's
``prometheus-alertmanager`` routes with the shipped example
(deploy/prometheus/alertmanager.yml) to a webhook served by this test. Both
run with their waits scaled down to seconds (``for``, ``keep_firing_for``,
``group_wait``, ``group_interval``); nothing else is changed. An injected
anomaly must reach the ticket receiver as a firing
``StreamlstmStreamAnomalous`` with the stream's label, and resolve once the
stream is back to normal. Everything listens on 127.0.0.1, on free ports,
and is stopped at the end.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from streamlstm.detector import alert_id
from streamlstm.kernels.regime import BASELINE_EVENTS
from tests.conftest import require_binary
from tests.integration.test_daemon import (
    FEATURES,
    Daemon,
    _config,
    _create_topics,
    _free_port,
    _produce,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "streamlstm-rules.yml"
ALERTMANAGER = ROOT / "deploy" / "prometheus" / "alertmanager.yml"
HOT = "pump-hot"


class Webhook:
    """Collects Alertmanager's webhook notifications."""

    def __init__(self) -> None:
        self.notes: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.notes.append({**json.loads(body), "path": self.path})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, status: str) -> list[dict[str, Any]]:
        return [
            a
            for n in self.notes
            for a in n["alerts"]
            if a["labels"].get("alertname") == "StreamlstmStreamAnomalous" and a["status"] == status
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Proc:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._fh, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._fh.close()


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode()[:1500]
    except OSError as exc:
        return f"{url}: {exc}"


def wait_until(
    cond: Any, timeout: float, what: str, logs: list[Path], daemon: Daemon, ports: dict[str, int]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.25)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in logs)
    metrics = [
        line
        for line in daemon.get("/metrics")[1].splitlines()
        if line.startswith(("streamlstm_events_total", "streamlstm_alert", "streamlstm_stream"))
    ]
    prom = f"http://127.0.0.1:{ports['prom_port']}"
    state = "\n".join(
        [_get(f"{prom}/api/v1/targets"), _get(f"{prom}/api/v1/alerts"),
         _get(f"http://127.0.0.1:{ports['am_port']}/api/v2/alerts")]
    )  # fmt: skip
    raise AssertionError(
        f"timed out waiting for {what}\n{tails}\n--- /metrics\n" + "\n".join(metrics) + "\n" + state
    )


def _fast_rules() -> dict[str, Any]:
    """The shipped rules with their waits in seconds: 10m of `for` would outlast the test."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = "2s"
    return doc


def _fast_alertmanager(url: str) -> dict[str, Any]:
    """The shipped Alertmanager example, its receivers pointed at the test's webhook
    (the path names the receiver) and its group waits in seconds."""
    doc = yaml.safe_load(ALERTMANAGER.read_text())
    for route in [doc["route"], *doc["route"]["routes"]]:
        route.update(group_wait="1s", group_interval="1s")
    for receiver in doc["receivers"]:
        receiver["webhook_configs"] = [{"url": url + receiver["name"], "send_resolved": True}]
    return doc


@pytest.fixture
def alerting(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Alertmanager -> webhook, Prometheus -> Alertmanager; returns their handles."""
    am_bin = require_binary("prometheus-alertmanager")
    prom_bin = require_binary("prometheus")
    hook = Webhook()
    am_port, prom_port = _free_port(), _free_port()
    am_cfg = tmp_path / "alertmanager.yml"
    am_cfg.write_text(yaml.safe_dump(_fast_alertmanager(hook.url)))
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(_fast_rules()))
    am = Proc(
        [am_bin, f"--config.file={am_cfg}", f"--storage.path={tmp_path / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
        tmp_path / "alertmanager.log",
    )  # fmt: skip
    procs: list[Proc] = [am]

    def start_prometheus(target_port: int) -> None:
        """Prometheus scraping the daemon's (already known) metrics port every second."""
        prom_cfg = tmp_path / "prometheus.yml"
        prom_cfg.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rules)],
                    "alerting": {
                        "alertmanagers": [
                            {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}
                        ]
                    },
                    "scrape_configs": [
                        {
                            "job_name": "streamlstm",
                            "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                        }
                    ],
                }
            )
        )
        procs.append(
            Proc(
                [prom_bin, f"--config.file={prom_cfg}",
                 f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                tmp_path / "prometheus.log",
            )
        )  # fmt: skip

    try:
        yield {"hook": hook, "start_prometheus": start_prometheus, "prom_port": prom_port,
               "am_port": am_port,
               "logs": [tmp_path / "prometheus.log", tmp_path / "alertmanager.log"]}  # fmt: skip
    finally:
        for proc in reversed(procs):
            proc.stop()
        hook.close()


def _events(key: str, t0: float, n: int, level: float, rng: np.random.Generator) -> list[bytes]:
    out = []
    for i in range(n):
        base = np.array([70.0, 4.0, 120.0, 1.0]) + level
        row = base + rng.normal(0, [0.5, 0.05, 1.0, 0.02])
        doc = {"sensor": key, "ts": t0 + 60.0 * i, **dict(zip(FEATURES, row.tolist(), strict=True))}
        out.append(json.dumps(doc).encode())
    return out


def test_injected_anomaly_raises_a_ticket_and_resolves(
    broker: Any, alerting: dict[str, Any], tmp_path: Path
) -> None:
    from streamlstm.cli.demo import persistence_model  # the demo's fallback model

    rng = np.random.default_rng(5)
    hist = np.array([70.0, 4.0, 120.0, 1.0]) + rng.normal(0, [0.5, 0.05, 1.0, 0.02], (4, 500, 4))
    model = persistence_model(hist).save(tmp_path / "model.npz")
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    _create_topics(broker.bootstrap, {topic: 1, f"{name}-alerts": 1, f"{name}-dlq": 1})
    cfg = _config(tmp_path, broker.bootstrap, model, topic, name, 0)
    doc = yaml.safe_load(cfg.read_text())
    doc["pipelines"][0]["alerts"] = {"min_run": 1, "close_run": 3, "cooldown_s": 0}
    cfg.write_text(yaml.safe_dump(doc))
    daemon = Daemon(cfg, 0, tmp_path / "daemon.log")
    logs = [tmp_path / "daemon.log", *alerting["logs"]]
    hook: Webhook = alerting["hook"]
    try:
        daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, what="daemon ready")
        assert daemon.port is not None
        alerting["start_prometheus"](daemon.port)
        t0 = 1_700_000_000.0
        # the regime scorer learns each stream's normal from its first BASELINE_EVENTS
        n_normal = BASELINE_EVENTS + 44
        normal = _events(HOT, t0, n_normal, 0.0, rng) + _events("pump-calm", t0, n_normal, 0.0, rng)
        # The incident: the hot pump jumps 40 units and stays there (no more events yet),
        # so its alert stays open until the test sends normal readings again.
        incident = _events(HOT, t0 + 60 * n_normal, 2, 40.0, rng)
        _produce(broker.bootstrap, topic, [(0, None, v) for v in normal + incident])
        wait_until(
            lambda: hook.alerts("firing"),
            90,
            "a firing alert at the webhook",
            logs,
            daemon,
            alerting,
        )
        firing = hook.alerts("firing")[0]
        assert firing["labels"]["stream"] == HOT
        assert firing["labels"]["pipeline"] == "sensors"
        assert firing["labels"]["severity"] == "ticket"
        # routed by the shipped alertmanager.yml to the ticket receiver, never the pager
        stream_notes = [n for n in hook.notes if n["groupLabels"] == {"pipeline": "sensors"}]
        assert stream_notes and all(n["receiver"] == "tickets" for n in stream_notes)
        assert all(n["path"] == "/tickets" for n in stream_notes)
        # the level jump is in every channel; temp's is the largest in calibrated units
        assert firing["labels"]["top_features"]
        assert (
            f"features driving it: {firing['labels']['top_features']}."
            in (firing["annotations"]["description"])
        )
        assert not [a for a in hook.alerts("firing") if a["labels"]["stream"] != HOT]
        # what is anomalous now, without Prometheus: the daemon's /alerts
        open_now = json.loads(daemon.get("/alerts")[1])["alerts"]
        assert [a["stream"] for a in open_now] == [HOT]
        # since when: the incident's first event (offset 2 * n_normal in the one partition)
        (row,) = open_now
        assert row["opened_offset"] == 2 * n_normal, row
        assert row["opened_event_time"] == t0 + 60 * n_normal, row
        assert row["opened_iso"] == time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + 60 * n_normal)
        )
        assert row["alert_id"] == alert_id(HOT, 0, 2 * n_normal) and row["peak"] >= 0.5

        # two hours of normal readings: the short level and energy of the jump (80 and
        # 25000x the normal, span 16 events) decay below the hold within ~70 events
        back = _events(HOT, t0 + 60 * (n_normal + 2), 120, 0.0, rng)
        _produce(broker.bootstrap, topic, [(0, None, v) for v in back])
        wait_until(
            lambda: hook.alerts("resolved"), 90, "the alert to resolve", logs, daemon, alerting
        )
        assert hook.alerts("resolved")[0]["labels"]["stream"] == HOT
    finally:
        assert daemon.wait(signal.SIGTERM) == 0, daemon.tail()
