"""The daemon against a real broker: alerts, metrics, SIGTERM, kill -9, garbage.

The broker comes from the session-scoped ``broker`` fixture
(tests/integration/conftest.py, :class:`streamlstm.kafka.broker.LocalBroker`).
Every test uses its own topics, group ids and checkpoint dirs, so they share it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.examples.synth import FleetSpec, generate_fleet
from streamlstm.service.checkpoint_store import CheckpointStore

pytestmark = pytest.mark.integration

SEED = 11
PARTITIONS = 2
FEATURES = ("temp", "pressure", "flow", "vibration")
KINDS = ("spike", "level_shift")
STATE_COLUMNS = (
    "col.h", "col.c", "col.fc", "col.fstat", "col.istat", "col.sstat", "last_time", "group",
)  # fmt: skip
PY = sys.executable


# -- broker -------------------------------------------------------------------------------
def _create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
    finally:
        admin.close()


def _produce(bootstrap: str, topic: str, records: list[tuple[int, bytes | None, bytes]]) -> None:
    from kafka import KafkaProducer

    prod = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for part, key, value in records:
        prod.send(topic, key=key, value=value, partition=part)
    prod.flush()
    prod.close()


def _read_all(bootstrap: str, topic: str, quiet_s: float = 1.5) -> list[Any]:
    """Every record of ``topic`` (all partitions), read until ``quiet_s`` without news."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    parts = None
    deadline = time.monotonic() + 10
    while not parts and time.monotonic() < deadline:
        parts = c.partitions_for_topic(topic)
        time.sleep(0.1)
    tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    out: list[Any] = []
    last = time.monotonic()
    while time.monotonic() - last < quiet_s:
        got = c.poll(200)
        for recs in got.values():
            out.extend(recs)
            last = time.monotonic()
    c.close()
    return out


# -- the fleet and the daemon's config ---------------------------------------------------
def _fleet(n_streams: int = 16, n_steps: int = 400, anomaly_rate: float = 2.0) -> Any:
    return generate_fleet(FleetSpec(
        n_streams=n_streams, n_steps=n_steps, anomaly_rate=anomaly_rate, kinds=KINDS, seed=SEED,
    ))  # fmt: skip


def _records(fleet: Any) -> list[tuple[int, bytes, bytes]]:
    keys, times, x, _ = fleet.events()
    out = []
    index = {k: i for i, k in enumerate(fleet.keys)}
    for k, t, row in zip(keys.tolist(), times.tolist(), x.astype(np.float64).tolist(), strict=True):
        doc = {"sensor": k, "ts": t, **dict(zip(FEATURES, row, strict=True))}
        out.append((index[k] % PARTITIONS, k.encode(), json.dumps(doc).encode()))
    return out


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


# Group mode against tansu: the first join takes about session_timeout_ms / 2 (see
# streamlstm.kafka.broker); these values are for tests only (Kafka's minimum is 6 s).
# The consumer's client (kafka.client): the tests that run the source for real run with both.
CLIENTS = ("kafka-python", "confluent")

GROUP_TIMEOUTS = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500,
                  "max_poll_interval_ms": 10000}  # fmt: skip


def _config(
    tmp: Path, bootstrap: str, model: Path, topic: str, name: str, port: int,
    group: str | None = None, ckpt_name: str | None = None, file_name: str | None = None,
    client: str = "kafka-python", **ckpt: Any,
) -> Path:  # fmt: skip
    kafka = {"bootstrap_servers": [bootstrap], "assignment": "static", "group_id": f"g-{name}",
             "client": client}  # fmt: skip
    if group is not None:
        kafka.update(assignment="group", group_id=group, **GROUP_TIMEOUTS)
    doc = {
        "kafka": kafka,
        "metrics": {"host": "127.0.0.1", "port": port},
        "service": {"shutdown_grace_s": 20, "heartbeat_stale_s": 30},
        "pipelines": [{
            "name": "sensors",
            "source": {"topics": [topic], "max_poll_records": 300},
            "decode": {
                "key_field": "sensor", "time_field": "ts",
                "features": [{"name": f} for f in FEATURES],
            },
            "model": {"path": str(model)},
            "alerts": {"min_run": 2, "cooldown_s": 600},
            "sinks": {
                "alerts_topic": f"{name}-alerts", "dead_letter_topic": f"{name}-dlq",
                "log_alerts": False,
            },
            "checkpoint": {
                "dir": str(tmp / f"ckpt-{ckpt_name or name}"), **({"interval_s": 1} | ckpt),
            },
        }],
    }  # fmt: skip
    path = tmp / f"{file_name or name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


_RUNNING: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_leftover_daemons() -> Iterator[None]:
    """A failed assertion must not leave a daemon running after its test."""
    yield
    while _RUNNING:
        proc = _RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


class Daemon:
    """``streamlstm run`` as a subprocess, with its metrics port. ``python_args``: what
    runs the CLI (``-c <script> ...`` for a test that wraps one of its parts)."""

    def __init__(
        self,
        config: Path,
        port: int,
        log: Path,
        python_args: tuple[str, ...] = ("-m", "streamlstm"),
    ) -> None:
        # The daemon binds any free port (--metrics-port 0) and logs it: no race with
        # other processes for a port picked in advance. ``port`` is what the YAML says.
        self.port: int | None = None
        self.log = log
        self._start = log.stat().st_size if log.exists() else 0
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in wait()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [PY, *python_args, "run", "--config", str(config), "--metrics-port", "0"],
            stdout=self._fh, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        _RUNNING.append(self.proc)

    def get(self, path: str) -> tuple[int, str]:
        if self.port is None:
            text = self.log.read_bytes()[self._start :].decode(errors="replace")
            m = re.search(r"/readyz on http://[0-9.]+:(\d+)", text)
            if m is None:
                return 0, ""
            self.port = int(m.group(1))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, **labels: str) -> float | None:
        _, text = self.get("/metrics")
        want = [f'{k}="{v}"' for k, v in labels.items()]
        total = None
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(w in line for w in want):
                    total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
        return total

    def wait_for(self, cond: Any, timeout: float = 120.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.tail()}")
            if cond():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.tail()}")

    def processed(self) -> float:
        return self.metric("streamlstm_events_total", pipeline="sensors") or 0.0

    def wait(self, sig: int, timeout: float = 30.0) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._fh.close()

    def tail(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.log.read_text(errors="replace")[-4000:]


def _final_state(ckpt_dir: Path, topic: str) -> dict[str, dict[str, np.ndarray]]:
    """Per-stream state rows from the newest checkpoint of every partition."""
    store = CheckpointStore(ckpt_dir, "sensors")
    out: dict[str, dict[str, np.ndarray]] = {}
    for p in range(PARTITIONS):
        ck = store.read(topic, p)
        assert ck is not None, f"no checkpoint for partition {p}"
        snap = ck.snapshot
        raw = snap["key_bytes"].tobytes()
        ends = np.cumsum(snap["key_len"])
        for i, (e, n) in enumerate(zip(ends.tolist(), snap["key_len"].tolist(), strict=True)):
            out[raw[e - n : e].decode()] = {c: snap[c][i] for c in STATE_COLUMNS}
    return out


def _alert_ids(bootstrap: str, topic: str) -> set[tuple[str, str]]:
    return {
        (d["id"], d["kind"]) for d in (json.loads(r.value) for r in _read_all(bootstrap, topic))
    }


# -- tests ------------------------------------------------------------------------------------
def test_fleet_alerts_metrics_and_sigterm(kafka: str, model_path: Path, tmp_path: Path) -> None:
    name = f"t1-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    _create_topics(kafka, {topic: PARTITIONS, f"{name}-alerts": 1, f"{name}-dlq": 1})
    fleet = _fleet()
    records = _records(fleet)
    _produce(kafka, topic, records)
    port = _free_port()
    d = Daemon(_config(tmp_path, kafka, model_path, topic, name, port), port, tmp_path / "d.log")
    d.wait_for(lambda: d.get("/readyz")[0] == 200, what="readiness")
    assert d.get("/healthz")[0] == 200
    d.wait_for(lambda: d.processed() >= len(records), what="all events processed")
    assert d.metric("streamlstm_events_total", pipeline="sensors", outcome="ok") == len(records)
    opened = d.metric("streamlstm_alert_transitions_total", kind="opened")
    assert opened and opened > 0
    assert d.metric("streamlstm_score_count", pipeline="sensors") > 0.9 * len(records)
    # Scrape-time values are published a few times a second.
    d.wait_for(
        lambda: d.metric("streamlstm_live_streams", pipeline="sensors") == len(fleet.keys)
        and d.metric("streamlstm_consumer_lag", topic=topic) == 0,
        timeout=10, what="live streams and lag",
    )  # fmt: skip
    assert d.metric("streamlstm_model_info", pipeline="sensors") == 1
    # SIGHUP reloads the model file; same shapes, so every stream keeps its state.
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(lambda: d.metric("streamlstm_model_reloads_total", result="ok") == 1, what="reload")
    assert d.metric("streamlstm_live_streams", pipeline="sensors") == len(fleet.keys)
    assert d.wait(signal.SIGTERM) == 0, d.tail()
    assert "stopped cleanly" in d.tail()

    alerts = [json.loads(r.value) for r in _read_all(kafka, f"{name}-alerts")]
    assert len([a for a in alerts if a["kind"] == "opened"]) == opened
    spans = fleet.windows()
    anomalous = {k for k, s in spans.items() if s}
    alerted = {a["stream"] for a in alerts}
    # Alerts come from the streams with injected anomalies, at the anomalies.
    assert len(alerted & anomalous) >= 0.5 * len(anomalous), (alerted, anomalous)
    true_opens = [
        a for a in alerts if a["kind"] == "opened"
        and any(s - 1 <= a["event_time"] <= e + 600 for s, e in spans[a["stream"]])
    ]  # fmt: skip
    assert len(true_opens) >= 0.8 * opened
    a = alerts[0]
    assert {"id", "pipeline", "stream", "kind", "score", "threshold", "event_time", "features",
            "forecast", "top_features", "partition", "offset"} <= set(a)  # fmt: skip
    assert set(a["features"]) == set(FEATURES) and a["top_features"]


@pytest.mark.parametrize("client", CLIENTS)
def test_kill_9_and_restart_equals_uninterrupted_run(
    kafka: str, model_path: Path, tmp_path: Path, client: str
) -> None:
    run = uuid.uuid4().hex[:6]
    topic = f"t2-{run}-events"
    _create_topics(kafka, {topic: PARTITIONS})
    records = _records(_fleet(n_streams=16, n_steps=600))
    third = len(records) // 3
    killed, ref = f"t2k-{run}", f"t2r-{run}"
    for n in (killed, ref):
        _create_topics(kafka, {f"{n}-alerts": 1, f"{n}-dlq": 1})

    # The run that gets killed: a first third, checkpointed; a second third, processed and
    # alerted but not yet checkpointed when kill -9 hits; the rest after the restart.
    _produce(kafka, topic, records[:third])
    port = _free_port()
    # 5 s: the second third is processed and killed well before the next checkpoint.
    cfg = _config(tmp_path, kafka, model_path, topic, killed, port, client=client, interval_s=5)
    d = Daemon(cfg, port, tmp_path / "killed.log")
    d.wait_for(lambda: d.processed() >= third, what="first third")
    d.wait_for(
        lambda: (d.metric("streamlstm_checkpoint_duration_seconds_count") or 0) >= 1,
        what="a checkpoint",
    )
    _produce(kafka, topic, records[third : 2 * third])
    d.wait_for(lambda: d.processed() >= 2 * third, what="second third")
    d.proc.kill()
    d.proc.wait(10)
    store = CheckpointStore(tmp_path / f"ckpt-{killed}", "sensors")
    at = [ck.next_offset for p in range(PARTITIONS) if (ck := store.read(topic, p))]
    assert 0 < sum(at) < 2 * third, f"checkpoint offsets {at}: the kill tests no replay"
    _produce(kafka, topic, records[2 * third :])
    d2 = Daemon(cfg, port, tmp_path / "killed.log")
    d2.wait_for(lambda: d2.get("/readyz")[0] == 200, what="restart readiness")
    # Replayed events count again: wait for everything after the checkpoint.
    d2.wait_for(lambda: d2.processed() >= len(records) - sum(at), what="the rest")
    assert d2.wait(signal.SIGTERM) == 0, d2.tail()
    log_text = (tmp_path / "killed.log").read_text()
    assert ("consumer: confluent-kafka" in log_text) == (client == "confluent")

    # The reference run: all events, never interrupted.
    port = _free_port()
    r = Daemon(_config(tmp_path, kafka, model_path, topic, ref, port), port, tmp_path / "r.log")
    r.wait_for(lambda: r.processed() >= len(records), what="reference run")
    assert r.wait(signal.SIGTERM) == 0, r.tail()

    a = _final_state(tmp_path / f"ckpt-{killed}", topic)
    b = _final_state(tmp_path / f"ckpt-{ref}", topic)
    assert sorted(a) == sorted(b)
    for key in a:
        for col in STATE_COLUMNS:
            np.testing.assert_array_equal(a[key][col], b[key][col], err_msg=f"{key} {col}")
    ids_killed = _alert_ids(kafka, f"{killed}-alerts")
    ids_ref = _alert_ids(kafka, f"{ref}-alerts")
    assert ids_ref, "the reference run raised no alert; the test proves nothing"
    assert ids_killed == ids_ref


@pytest.mark.parametrize("client", CLIENTS)
def test_garbage_goes_to_dead_letters_and_good_records_are_scored(
    kafka: str, model_path: Path, tmp_path: Path, client: str
) -> None:
    name = f"t3-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    _create_topics(kafka, {topic: 1, f"{name}-alerts": 1, f"{name}-dlq": 1})
    rng = np.random.default_rng(SEED)
    fleet = _fleet(n_streams=4, n_steps=120)
    good = [(0, k, v) for _, k, v in _records(fleet)]
    t_end = float(fleet.times[-1])
    row = {"temp": 50.0, "pressure": 5.0, "flow": 100.0, "vibration": 1.0}
    garbage: list[tuple[bytes | None, bytes, str]] = [
        (b"x", rng.bytes(40), "not_json"),
        (b"x", b"[1, 2, 3]", "not_object"),
        (b"x", json.dumps({"sensor": "sensor-0001", "ts": t_end, "temp": "hot"}).encode(),
         "wrong_type"),
        (b"x", json.dumps({"ts": t_end, **row}).encode(), "missing_key"),
        (b"x", json.dumps({"sensor": "sensor-0001", **row}).encode(), "missing_time"),
        (b"x", b'{"sensor": "sensor-0001", "ts": 1.7e9, "temp": NaN}', "non_finite"),
        (b"x", b'{"sensor": "sensor-0001", "ts": 1.7e9, "flow": Infinity}', "non_finite"),
        (b"x", json.dumps({"sensor": "sensor-0002", "ts": t_end, **row, "flow": 1e300}).encode(),
         "out_of_range"),
        # Plausible for the decoder, absurd for the model: the detector rejects it.
        (b"x", json.dumps({"sensor": "sensor-0002", "ts": t_end + 60, **row, "flow": 1e11})
         .encode(), "out_of_range"),
        (b"x", json.dumps({"sensor": "sensor-0003", "ts": 1.0e9, **row}).encode(), "too_old"),
        (b"x", json.dumps({"sensor": "sensor-0003", "ts": t_end + 60}).encode(), "missing"),
    ]  # fmt: skip
    # Garbage after the good history (so "too_old" is old), good records after it too.
    extra = _records(generate_fleet(FleetSpec(
        n_streams=4, n_steps=20, anomaly_rate=0.0, seed=SEED + 5,
        start_time=t_end + 3600,
    )))  # fmt: skip
    sent = good + [(0, k, v) for k, v, _ in garbage] + [(0, k, v) for _, k, v in extra]
    _produce(kafka, topic, sent)
    port = _free_port()
    cfg = _config(tmp_path, kafka, model_path, topic, name, port, client=client)
    d = Daemon(cfg, port, tmp_path / "d.log")
    d.wait_for(lambda: d.processed() >= len(sent), what="all records")
    assert d.metric("streamlstm_events_total", outcome="ok") == len(good) + len(extra)
    assert d.get("/healthz")[0] == 200
    assert d.wait(signal.SIGTERM) == 0, d.tail()
    assert ("consumer: confluent-kafka" in d.log.read_text()) == (client == "confluent")

    dead = _read_all(kafka, f"{name}-dlq")
    assert len(dead) == len(garbage)
    by_offset = {int(dict(r.headers)["streamlstm.offset"]): r for r in dead}
    for i, (key, value, reason) in enumerate(garbage):
        rec = by_offset[len(good) + i]
        h = dict(rec.headers)
        assert h["streamlstm.reason"].decode() == reason, (i, h)
        assert rec.value == value and rec.key == key  # forwarded byte for byte
        assert h["streamlstm.detail"]

    # The good records were scored exactly as if the garbage had never been there.
    model = __import__("streamlstm.model", fromlist=["load"]).load(model_path)
    ref = Detector(model, DetectorConfig(min_run=2, cooldown_s=600))
    docs = [json.loads(v) for _, _, v in good + extra]
    ref.process_many(
        [doc["sensor"] for doc in docs], [doc["ts"] for doc in docs],
        [[doc[f] for f in FEATURES] for doc in docs],
        np.array([i if i < len(good) else i + len(garbage) for i in range(len(docs))]),
    )  # fmt: skip
    state = _final_state_one(tmp_path / f"ckpt-{name}", topic)
    for key in ref.table.keys():
        s = ref.stream_state(key)
        for col in ("h", "c", "fc", "fstat", "istat", "sstat"):
            np.testing.assert_array_equal(state[key][f"col.{col}"], s[col], err_msg=key)


def test_a_dead_letter_the_broker_refuses_does_not_stop_the_checkpoints(
    kafka: str, model_path: Path, tmp_path: Path
) -> None:
    """A bad record of ~1 MB: forwarded with the dead-letter headers it is over the
    broker's limit. It is cut down (or dropped), and checkpoints and commits go on."""
    name = f"t6-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    _create_topics(kafka, {topic: 1, f"{name}-alerts": 1, f"{name}-dlq": 1})
    good = [(0, k, v) for _, k, v in _records(_fleet(n_streams=2, n_steps=50))]
    big = b"#" * 1_048_000  # not JSON
    more = [(0, k, v) for _, k, v in _records(_fleet(n_streams=2, n_steps=80))[200:]]
    sent = good + [(0, b"big", big)] + more
    _produce(kafka, topic, sent)
    port = _free_port()
    cfg = _config(tmp_path, kafka, model_path, topic, name, port, interval_s=1)
    d = Daemon(cfg, port, tmp_path / "d.log")
    d.wait_for(lambda: d.processed() >= len(sent), what="all records")
    # A checkpoint that covers the big record (a count of checkpoints taken after all
    # were processed raced with a checkpoint written before the count was read).
    store = CheckpointStore(tmp_path / f"ckpt-{name}", "sensors")
    d.wait_for(lambda: (ck := store.read(topic, 0)) is not None and ck.next_offset == len(sent),
               what="a checkpoint after the big record")  # fmt: skip
    assert d.get("/readyz")[0] == 200
    assert d.wait(signal.SIGTERM) == 0, d.tail()
    dead = _read_all(kafka, f"{name}-dlq")
    (rec,) = [r for r in dead if int(dict(r.headers)["streamlstm.offset"]) == len(good)]
    h = dict(rec.headers)
    assert h["streamlstm.reason"] == b"not_json"
    if "streamlstm.truncated" in h:  # the broker refused the full record
        assert int(h["streamlstm.truncated"]) == len(big) and rec.value == big[: 64 * 1024]
    else:
        assert rec.value == big
    # everything was committed: a restart has nothing left to read
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=kafka, group_id=_group_of(cfg), enable_auto_commit=False)
    try:
        assert c.committed(TopicPartition(topic, 0)) == len(sent)
    finally:
        c.close()


def _group_of(cfg_path: Path) -> str:
    import yaml as _yaml

    doc = _yaml.safe_load(cfg_path.read_text())
    kafka_cfg = {**doc.get("kafka", {}), **doc["pipelines"][0].get("kafka", {})}
    return str(kafka_cfg["group_id"])


def _final_state_one(ckpt_dir: Path, topic: str) -> dict[str, dict[str, np.ndarray]]:
    ck = CheckpointStore(ckpt_dir, "sensors").read(topic, 0)
    assert ck is not None
    snap = ck.snapshot
    raw = snap["key_bytes"].tobytes()
    ends = np.cumsum(snap["key_len"])
    return {
        raw[e - n : e].decode(): {c: snap[c][i] for c in STATE_COLUMNS}
        for i, (e, n) in enumerate(zip(ends.tolist(), snap["key_len"].tolist(), strict=True))
    }


def test_demo_prints_alerts_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PY, "-m", "streamlstm", "--log-level", "WARNING", "demo", "--duration", "20",
         "--metrics-port", "0", "--rate", "1000", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "/metrics" in out
    assert "ALERT  sensor-" in out, out[-4000:]
    assert "stopped cleanly" in out
    assert list((tmp_path / "checkpoints").rglob("*.ckpt")), "no final checkpoint"


@pytest.mark.parametrize("client", CLIENTS)
def test_group_rebalance_hands_state_over_through_checkpoints(
    kafka: str, model_path: Path, tmp_path: Path, client: str
) -> None:
    """Two replicas in one consumer group share a checkpoint dir: when the second joins,
    the first checkpoints what it gives up and the second restores it. The end state and
    the alerts equal one uninterrupted replica's."""
    run = uuid.uuid4().hex[:6]
    topic = f"t4-{run}-events"
    pair, ref = f"t4g-{run}", f"t4r-{run}"
    _create_topics(kafka, {topic: PARTITIONS, f"{pair}-alerts": 1, f"{pair}-dlq": 1,
                           f"{ref}-alerts": 1, f"{ref}-dlq": 1})  # fmt: skip
    records = _records(_fleet(n_streams=16, n_steps=500))
    half = len(records) // 2
    _produce(kafka, topic, records[:half])
    ports = [_free_port(), _free_port()]
    cfgs = [
        _config(tmp_path, kafka, model_path, topic, pair, ports[i], group=f"g-{pair}",
                file_name=f"{pair}-{i}", client=client)
        for i in range(2)
    ]  # fmt: skip
    a = Daemon(cfgs[0], ports[0], tmp_path / "a.log")
    a.wait_for(lambda: a.processed() >= half, what="replica a: first half")
    b = Daemon(cfgs[1], ports[1], tmp_path / "b.log")
    # After the rebalance each replica owns one partition.
    for d in (a, b):
        d.wait_for(lambda d=d: d.metric("streamlstm_assigned_partitions") == 1, what="rebalance")
    _produce(kafka, topic, records[half:])
    store = CheckpointStore(tmp_path / f"ckpt-{pair}", "sensors")

    def done() -> bool:
        cks = [store.read(topic, p) for p in range(PARTITIONS)]
        per_part = [sum(1 for p, _, _ in records if p == q) for q in range(PARTITIONS)]
        return all(c is not None and c.next_offset == n for c, n in zip(cks, per_part, strict=True))

    a.wait_for(done, what="both partitions checkpointed at their end")
    assert b.wait(signal.SIGTERM) == 0, b.tail()
    assert a.wait(signal.SIGTERM) == 0, a.tail()
    assert "revoked" in a.tail()
    assert ("consumer: confluent-kafka" in a.log.read_text()) == (client == "confluent")

    port = _free_port()
    r = Daemon(_config(tmp_path, kafka, model_path, topic, ref, port), port, tmp_path / "r.log")
    r.wait_for(lambda: r.processed() >= len(records), what="reference run")
    assert r.wait(signal.SIGTERM) == 0, r.tail()
    got = _final_state(tmp_path / f"ckpt-{pair}", topic)
    want = _final_state(tmp_path / f"ckpt-{ref}", topic)
    assert sorted(got) == sorted(want)
    for key in want:
        for col in STATE_COLUMNS:
            np.testing.assert_array_equal(got[key][col], want[key][col], err_msg=f"{key} {col}")
    assert _alert_ids(kafka, f"{pair}-alerts") == _alert_ids(kafka, f"{ref}-alerts")


@pytest.mark.parametrize("client", CLIENTS)
def test_broker_outage_is_shown_not_fatal(model_path: Path, tmp_path: Path, client: str) -> None:
    """The broker going away and coming back: broker_up 0, /readyz 503, /healthz still
    200, then up again, and SIGTERM exits 0. Every state change is one line of the
    daemon's own (connected, assigned, broker lost, broker back); kafka-python's
    reconnect chatter stays below WARNING. A broker of its own: stopping the shared
    one would break other tests."""
    from streamlstm.kafka.broker import LocalBroker

    own = LocalBroker().start()
    try:
        bs = own.bootstrap
        own.create_topics({"ev": 1, "out-alerts": 1, "out-dlq": 1})
        records = [(0, k, v) for _, k, v in _records(_fleet(n_streams=4, n_steps=50))]
        _produce(bs, "ev", records)
        cfg = _config(tmp_path, bs, model_path, "ev", "out", 0, client=client)
        d = Daemon(cfg, 0, tmp_path / "d.log")
        d.wait_for(lambda: d.processed() >= len(records), what="records")
        d.wait_for(lambda: d.metric("streamlstm_broker_up") == 1, timeout=10, what="up")
        port = own.port
        own.stop()
        d.wait_for(lambda: d.metric("streamlstm_broker_up") == 0, timeout=60, what="down")
        assert d.get("/readyz")[0] == 503
        assert d.get("/healthz")[0] == 200
        own = LocalBroker(port=port).start()  # back where the daemon looks for it
        d.wait_for(lambda: d.metric("streamlstm_broker_up") == 1, timeout=60, what="back")
        assert d.wait(signal.SIGTERM) == 0, d.tail()
    finally:
        own.stop()
    lines = d.log.read_text(errors="replace").splitlines()

    def ours(text: str) -> list[str]:
        return [ln for ln in lines if "streamlstm." in ln and text in ln]

    assert len(ours(f"pipeline=sensors connected to Kafka at {bs}")) == 1, d.tail()
    assert ours("partition=0 offset=") and ours("assigned; resuming from"), d.tail()
    assert len(ours("pipeline=sensors broker lost (")) >= 1, d.tail()
    back = ours("pipeline=sensors broker back after ")
    assert len(back) >= 1 and len(back) == len(ours("broker lost (")), d.tail()
    chatter = [ln for ln in lines if " kafka." in ln and (" INFO " in ln or " DEBUG " in ln)]
    assert not chatter, chatter[:5]


def _alert_records(bootstrap: str, topic: str) -> list[tuple[str, str]]:
    """(id, kind) of every record on an alerts topic, duplicates included."""
    docs = (json.loads(r.value) for r in _read_all(bootstrap, topic))
    return [(d["id"], d["kind"]) for d in docs]


def _dead_letters(bootstrap: str, topic: str) -> list[tuple[str, str, str]]:
    """(partition, offset, reason) of every dead letter, duplicates included."""
    out = []
    for r in _read_all(bootstrap, topic):
        h = dict(r.headers)
        out.append((h["streamlstm.partition"].decode(), h["streamlstm.offset"].decode(),
                    h["streamlstm.reason"].decode()))  # fmt: skip
    return out


KILLS = 20


def test_kill_9_at_20_random_moments_sends_each_alert_once(
    kafka: str, model_path: Path, tmp_path: Path
) -> None:
    """One daemon killed with SIGKILL at 20 seeded random moments while the input arrives
    in seeded chunks: each (alert id, kind) is on the alerts topic exactly once, each
    dead letter on its topic once, and both sets equal one uninterrupted run's (so does
    the end state)."""
    rng = np.random.default_rng(SEED + 7)
    run = uuid.uuid4().hex[:6]
    topic = f"t7-{run}-events"
    killed, ref = f"t7k-{run}", f"t7r-{run}"
    _create_topics(kafka, {topic: PARTITIONS, f"{killed}-alerts": 2, f"{killed}-dlq": 1,
                           f"{ref}-alerts": 2, f"{ref}-dlq": 1})  # fmt: skip
    records = _records(_fleet(n_streams=16, n_steps=600))
    # Garbage at seeded places: its dead letters must be on their topic once each too.
    for at in sorted(rng.choice(len(records), 40, replace=False).tolist(), reverse=True):
        records.insert(at, (at % PARTITIONS, b"junk", b"not json"))
    cuts = [0, *sorted(rng.choice(np.arange(1, len(records)), KILLS, replace=False).tolist())]
    port = _free_port()
    # Checkpoints every 2 s and kills within 2.5 s of readiness: most lives die after
    # sending alerts their last checkpoint does not cover, so the next life replays them.
    cfg = _config(tmp_path, kafka, model_path, topic, killed, port, interval_s=2)
    log_path = tmp_path / "killed.log"
    deduplicated = 0.0
    for i in range(KILLS):
        _produce(kafka, topic, records[cuts[i] : cuts[i + 1]])
        d = Daemon(cfg, port, log_path)
        d.wait_for(lambda d=d: d.get("/readyz")[0] == 200, what=f"life {i} readiness")
        time.sleep(float(rng.uniform(0.0, 2.5)))
        deduplicated += d.metric("streamlstm_sink_deduplicated_total", record="alert") or 0.0
        d.proc.kill()
        d.proc.wait(10)
    _produce(kafka, topic, records[cuts[-1] :])
    last = Daemon(cfg, port, log_path)
    store = CheckpointStore(tmp_path / f"ckpt-{killed}", "sensors")
    per_part = [sum(1 for p, _, _ in records if p == q) for q in range(PARTITIONS)]

    def done() -> bool:
        cks = [store.read(topic, p) for p in range(PARTITIONS)]
        return all(c is not None and c.next_offset == n for c, n in zip(cks, per_part, strict=True))

    last.wait_for(done, what="both partitions checkpointed at their end")
    deduplicated += last.metric("streamlstm_sink_deduplicated_total", record="alert") or 0.0
    assert last.wait(signal.SIGTERM) == 0, last.tail()

    port = _free_port()
    r = Daemon(_config(tmp_path, kafka, model_path, topic, ref, port), port, tmp_path / "r.log")
    r.wait_for(lambda: r.processed() >= len(records), what="reference run")
    assert r.wait(signal.SIGTERM) == 0, r.tail()

    got = _alert_records(kafka, f"{killed}-alerts")
    want = _alert_records(kafka, f"{ref}-alerts")
    assert want, "the reference run raised no alert; the test proves nothing"
    print(f"{len(got)} alert records, {len(want)} in the reference, {deduplicated} deduplicated")
    dup = {k: n for k, n in Counter(got).items() if n > 1}
    assert not dup, f"{len(got) - len(set(got))} duplicate alert records: {dup}"
    assert set(got) == set(want)
    dead = _dead_letters(kafka, f"{killed}-dlq")
    assert len(dead) == len(set(dead)) == 40
    assert set(dead) == set(_dead_letters(kafka, f"{ref}-dlq"))
    # The replays did re-emit alerts that were already there (else nothing was tested).
    assert deduplicated > 0
    a = _final_state(tmp_path / f"ckpt-{killed}", topic)
    b = _final_state(tmp_path / f"ckpt-{ref}", topic)
    assert sorted(a) == sorted(b)
    for key in a:
        for col in STATE_COLUMNS:
            np.testing.assert_array_equal(a[key][col], b[key][col], err_msg=f"{key} {col}")


CUT_S = 45.0


def _slow_model(model_path: Path, hidden: int = 512) -> Path:
    """The same forecaster padded to ``hidden`` units whose weights are all zero (their
    gates are constant, their state and their part of the head 0: the forecasts are the
    same to the bit; ~30 us an event at 512 units instead of ~2), so that the daemon takes
    seconds over the broker-cut test's topic: it is still scoring what it fetched when the
    line is cut, whatever the speed of the record reader (the bulk reader scored 384k
    events of the 4-unit model before the cut in a CI run: 0 alerts during the cut)."""
    from dataclasses import replace

    from streamlstm.model import load

    m = load(model_path)
    n, h = m.hidden, hidden
    w_ih = np.zeros((4 * h, m.weight_ih[0].shape[1]), np.float32)
    w_hh = np.zeros((4 * h, h), np.float32)
    b_ih = np.zeros(4 * h, np.float32)
    b_hh = np.zeros(4 * h, np.float32)
    for g in range(4):  # gate blocks i, f, g, o: the first n units of each are the model's
        w_ih[g * h : g * h + n] = m.weight_ih[0][g * n : (g + 1) * n]
        w_hh[g * h : g * h + n, :n] = m.weight_hh[0][g * n : (g + 1) * n]
        b_ih[g * h : g * h + n] = m.bias_ih[0][g * n : (g + 1) * n]
        b_hh[g * h : g * h + n] = m.bias_hh[0][g * n : (g + 1) * n]
    head = np.zeros((m.head_weight.shape[0], h), np.float32)
    head[:, :n] = m.head_weight
    slow = replace(
        m, hidden=h, weight_ih=(w_ih,), weight_hh=(w_hh,), bias_ih=(b_ih,), bias_hh=(b_hh,),
        head_weight=head,
    )  # fmt: skip
    return slow.save(model_path.parent / f"slow-{h}.npz")


@pytest.mark.slow
def test_a_45s_broker_cut_sends_each_alert_once(model_path: Path, tmp_path: Path) -> None:
    """The line to the broker cut for 45 s (every connection reset, new ones refused) while
    the daemon goes on scoring what it had fetched, with no crash: each (alert id, kind) is
    on the alerts topic once, and the set and the end state equal an uncut run's. A broker
    of its own, advertising the proxy's address so that every client goes through it."""
    from proxy import Proxy

    from streamlstm.kafka.broker import LocalBroker

    own: dict[str, LocalBroker] = {}
    with Proxy(lambda: ("127.0.0.1", own["b"].port)) as proxy:
        own["b"] = broker = LocalBroker(advertised_port=proxy.port)
        broker.start()
        try:
            _cut_and_compare(proxy, proxy.address, _slow_model(model_path), tmp_path)
        finally:
            broker.stop()


def _cut_and_compare(proxy: Any, bs: str, model_path: Path, tmp_path: Path) -> None:
    topic, cut, ref = "t8-events", "t8c", "t8r"
    _create_topics(bs, {topic: PARTITIONS, f"{cut}-alerts": 2, f"{cut}-dlq": 1,
                        f"{ref}-alerts": 2, f"{ref}-dlq": 1})  # fmt: skip
    # Enough events that the daemon is still scoring what it fetched when the line is cut:
    # 192k events of the padded model (_slow_model) are ~6 s of scoring.
    records = _records(_fleet(n_streams=64, n_steps=3000, anomaly_rate=10.0))
    _produce(bs, topic, records)
    port = _free_port()
    cfg = _config(tmp_path, bs, model_path, topic, cut, port)
    # The first fetch takes the whole topic into the client's buffer, so that the daemon
    # is still scoring (and alerting) while the line is cut, however fast it scores.
    doc = yaml.safe_load(cfg.read_text())
    doc["kafka"]["extra"] = {"max_partition_fetch_bytes": 64 << 20, "fetch_max_bytes": 128 << 20}
    cfg.write_text(yaml.safe_dump(doc))
    d = Daemon(cfg, port, tmp_path / "cut.log")
    d.wait_for(lambda: (d.metric("streamlstm_alert_records_total") or 0) >= 1, what="a first alert")
    proxy.cut()
    sent_at_cut = d.metric("streamlstm_alert_records_total") or 0
    d.wait_for(lambda: d.metric("streamlstm_broker_up") == 0, timeout=CUT_S, what="broker down")
    time.sleep(max(0.0, CUT_S - 1))
    sent_in_cut = (d.metric("streamlstm_alert_records_total") or 0) - sent_at_cut
    proxy.restore()
    store = CheckpointStore(tmp_path / f"ckpt-{cut}", "sensors")
    per_part = [sum(1 for p, _, _ in records if p == q) for q in range(PARTITIONS)]

    def done() -> bool:
        cks = [store.read(topic, p) for p in range(PARTITIONS)]
        return all(c is not None and c.next_offset == n for c, n in zip(cks, per_part, strict=True))

    d.wait_for(done, timeout=180, what="both partitions checkpointed at their end")
    assert d.wait(signal.SIGTERM) == 0, d.tail()
    assert "Traceback" not in d.tail()

    port = _free_port()
    r = Daemon(_config(tmp_path, bs, model_path, topic, ref, port), port, tmp_path / "r.log")
    r.wait_for(lambda: r.processed() >= len(records), what="reference run")
    assert r.wait(signal.SIGTERM) == 0, r.tail()

    got = _alert_records(bs, f"{cut}-alerts")
    want = _alert_records(bs, f"{ref}-alerts")
    print(f"{len(got)} alert records, {len(want)} in the reference, {sent_in_cut} during the cut")
    # Alerts were emitted while the line was cut (else the cut tested nothing).
    assert sent_in_cut > 0
    dup = {k: n for k, n in Counter(got).items() if n > 1}
    assert not dup, f"{len(got) - len(set(got))} duplicate alert records: {dup}"
    assert set(got) == set(want)
    a = _final_state(tmp_path / f"ckpt-{cut}", topic)
    b = _final_state(tmp_path / f"ckpt-{ref}", topic)
    assert sorted(a) == sorted(b)
    for key in a:
        for col in STATE_COLUMNS:
            np.testing.assert_array_equal(a[key][col], b[key][col], err_msg=f"{key} {col}")
