"""The daemon against a real broker, at its limits (issue #10): a batch with more
streams than the cap, unreadable checkpoints, a damaged model, a stream spread over
partitions. Helpers and the broker come from tests/integration/test_daemon.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from streamlstm.service.checkpoint_store import CheckpointStore
from tests.integration.test_daemon import (
    _RUNNING,
    Daemon,
    _config,
    _create_topics,
    _free_port,
    _produce,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_leftover_daemons() -> Iterator[None]:
    """A failed assertion must not leave a daemon running after its test."""
    yield
    while _RUNNING:
        proc = _RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _edit(cfg: Path, **sections: dict[str, Any]) -> Path:
    """Merge ``sections`` into the first pipeline of the YAML file at ``cfg``."""
    doc = yaml.safe_load(cfg.read_text())
    pipe = doc["pipelines"][0]
    for name, values in sections.items():
        pipe[name] = {**pipe.get(name, {}), **values}
    cfg.write_text(yaml.safe_dump(doc))
    return cfg


def _doc(key: str, t: float, v: float) -> bytes:
    return json.dumps(
        {"sensor": key, "ts": t, "temp": v, "pressure": 5.0, "flow": 100.0, "vibration": 1.0}
    ).encode()


def test_more_distinct_streams_in_a_batch_than_the_cap(
    kafka: str, model_path: Path, tmp_path: Path
) -> None:
    """state.max_streams 100, max_poll_records 400 and 500 keys: every start used to exit
    1 with OverflowError. Now the daemon processes everything, stays under the cap by
    evicting the least recently seen streams, and restarts from its checkpoint."""
    name = f"cap-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    _create_topics(kafka, {topic: 1, f"{name}-alerts": 1, f"{name}-dlq": 1})
    records = [(0, f"s{i}".encode(), _doc(f"s{i}", 60.0 * r, 20.0)) for r in range(2)
               for i in range(500)]  # fmt: skip
    _produce(kafka, topic, records)
    port = _free_port()
    cfg = _edit(
        _config(tmp_path, kafka, model_path, topic, name, port),
        state={"max_streams": 100}, source={"max_poll_records": 400},
    )  # fmt: skip
    d = Daemon(cfg, port, tmp_path / "d.log")
    d.wait_for(lambda: d.processed() >= len(records), what="all records")
    assert d.metric("streamlstm_events_total", outcome="ok") == len(records)
    # the status behind these two is published once per loop turn: wait for both
    d.wait_for(lambda: d.metric("streamlstm_live_streams") == 100, timeout=10, what="status")
    d.wait_for(
        lambda: (d.metric("streamlstm_evicted_streams_total", reason="lru") or 0) >= 900,
        timeout=10,
        what="900 LRU evictions",
    )
    assert d.wait(signal.SIGTERM) == 0, d.tail()
    # The restart, with the cap lowered to 40, restores the newest 40 or so of the
    # checkpoint's 100 streams (it used to exit 1 with OverflowError too) and goes on.
    more = [(0, f"s{i}".encode(), _doc(f"s{i}", 180.0, 20.0)) for i in range(500)]
    _produce(kafka, topic, more)
    _edit(cfg, state={"max_streams": 40})
    d2 = Daemon(cfg, port, tmp_path / "d.log")
    d2.wait_for(lambda: d2.processed() >= len(more), what="records after the restart")
    d2.wait_for(lambda: d2.metric("streamlstm_live_streams") == 40, timeout=10, what="status")
    assert d2.wait(signal.SIGTERM) == 0, d2.tail()
    assert "OverflowError" not in d2.tail()


def test_unreadable_checkpoints_refuse_to_start_unless_told_to_start_cold(
    kafka: str, model_path: Path, tmp_path: Path
) -> None:
    """Every generation of partition 0's checkpoint unreadable (one torn, one of a newer
    format): by default the daemon exits 2 naming the partition and the files, and
    renames nothing, so the next start refuses too; with checkpoint.on_unreadable:
    start_cold it logs what was lost at ERROR, counts it, keeps the files as *.corrupt
    and goes on from the committed offset."""
    name = f"lost-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    _create_topics(kafka, {topic: 1, f"{name}-alerts": 1, f"{name}-dlq": 1})
    first = [(0, f"s{i}".encode(), _doc(f"s{i}", 60.0 * r, 20.0)) for r in range(20)
             for i in range(5)]  # fmt: skip
    _produce(kafka, topic, first)
    port = _free_port()
    cfg = _config(tmp_path, kafka, model_path, topic, name, port)
    d = Daemon(cfg, port, tmp_path / "d.log")
    d.wait_for(lambda: d.processed() >= len(first), what="first records")
    assert d.wait(signal.SIGTERM) == 0, d.tail()
    store = CheckpointStore(tmp_path / f"ckpt-{name}", "sensors")
    (ck,) = [c for c in [store.read(topic, 0)] if c is not None]
    assert ck.n_streams == 5 and ck.next_offset == len(first)
    ck.path.write_bytes(ck.path.read_bytes()[:200])  # torn
    newer = store.write(topic, 0, len(first), {"format": np.array([1])}, {"format": 99})
    files = sorted(p.name for p in ck.path.parent.iterdir())

    for attempt in range(2):  # refused, and refused again: nothing was renamed
        proc = subprocess.run(
            [sys.executable, "-m", "streamlstm", "run", "--config", str(cfg),
             "--metrics-port", "0"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2, (attempt, proc.stderr[-3000:])
        err = proc.stderr
        assert f"topic={topic} partition=0" in err and "refusing to start" in err
        assert ck.path.name in err and newer.path.name in err and "format 99" in err
        assert "pipelines[0].checkpoint.on_unreadable: start_cold" in err
        assert sorted(p.name for p in ck.path.parent.iterdir()) == files

    more = [(0, f"s{i}".encode(), _doc(f"s{i}", 6000.0, 20.0)) for i in range(5)]
    _produce(kafka, topic, more)
    _edit(cfg, checkpoint={"on_unreadable": "start_cold"})
    d2 = Daemon(cfg, port, tmp_path / "d2.log")
    d2.wait_for(lambda: d2.get("/readyz")[0] == 200, what="readiness")
    d2.wait_for(lambda: d2.processed() >= len(more), what="records after the cold start")
    assert d2.metric("streamlstm_checkpoints_lost_total", pipeline="sensors") == 1
    assert d2.wait(signal.SIGTERM) == 0, d2.tail()
    log = (tmp_path / "d2.log").read_text()
    (line,) = [ln for ln in log.splitlines() if "STATE LOST" in ln]
    assert "ERROR" in line and f"topic={topic} partition=0" in line and ck.path.name in line
    assert (ck.path.parent / (ck.path.name + ".corrupt")).exists()
    assert (newer.path.parent / (newer.path.name + ".corrupt")).exists()
    # Cold: the 5 streams start again from the committed offset, warm-up and all.
    after = store.read(topic, 0)
    assert after is not None and after.next_offset == len(first) + len(more)
    assert after.n_streams == 5


def test_a_partition_whose_checkpoint_is_on_another_disk_is_not_started_cold_silently(
    kafka: str, model_path: Path, tmp_path: Path
) -> None:
    """Two replicas of one group on their own disks (checkpoint.store: local): the second
    gets a partition the first checkpointed and committed. Its state is on the other disk,
    so starting it from the committed offset would warm its streams up again in silence:
    by default the daemon refuses (exit 2, naming the committed offset and store: kafka);
    with on_unreadable: start_cold it says STATE LOST and goes on."""
    name = f"disk-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    _create_topics(kafka, {topic: 1, f"{name}-alerts": 1, f"{name}-dlq": 1})
    first = [(0, f"s{i}".encode(), _doc(f"s{i}", 60.0 * r, 20.0)) for r in range(20)
             for i in range(5)]  # fmt: skip
    _produce(kafka, topic, first)
    port = _free_port()
    d = Daemon(_config(tmp_path, kafka, model_path, topic, name, port), port, tmp_path / "a.log")
    d.wait_for(lambda: d.processed() >= len(first), what="first records")
    assert d.wait(signal.SIGTERM) == 0, d.tail()

    other = _config(tmp_path, kafka, model_path, topic, name, port, ckpt_name=f"{name}-b",
                    file_name="b")  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "streamlstm", "run", "--config", str(other), "--metrics-port",
         "0"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr
    assert f"topic={topic} partition=0" in err and "refusing to start" in err
    assert f"committed offset {len(first)}" in err and "checkpoint.store: kafka" in err

    more = [(0, f"s{i}".encode(), _doc(f"s{i}", 6000.0, 20.0)) for i in range(5)]
    _produce(kafka, topic, more)
    _edit(other, checkpoint={"on_unreadable": "start_cold"})
    d2 = Daemon(other, port, tmp_path / "b.log")
    d2.wait_for(lambda: d2.processed() >= len(more), what="records after the cold start")
    assert d2.metric("streamlstm_checkpoints_lost_total", pipeline="sensors") == 1
    assert d2.wait(signal.SIGTERM) == 0, d2.tail()
    (line,) = [ln for ln in (tmp_path / "b.log").read_text().splitlines() if "STATE LOST" in ln]
    assert "ERROR" in line and "checkpoint.store: kafka" in line


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_unreadable_checkpoint_found_in_a_rebalance_stops_the_daemon(
    kafka: str, model_path: Path, tmp_path: Path, client: str
) -> None:
    """Group mode restores in the client's rebalance callback; kafka-python's wraps an
    exception into a KafkaError that the loop would retry as a broker error, forever not
    ready. The refusal reaches the loop thread and the daemon exits 2 all the same."""
    name = f"lostg-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    _create_topics(kafka, {topic: 1, f"{name}-alerts": 1, f"{name}-dlq": 1})
    cfg = _config(tmp_path, kafka, model_path, topic, name, 0, group=f"g-{name}", client=client)
    store = CheckpointStore(tmp_path / f"ckpt-{name}", "sensors")
    store.write(topic, 0, 0, {"format": np.array([1])}, {"format": 99})
    proc = subprocess.run(
        [sys.executable, "-m", "streamlstm", "run", "--config", str(cfg), "--metrics-port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"topic={topic} partition=0" in proc.stderr and "refusing to start" in proc.stderr


def _compression_99(data: bytes) -> bytes:
    """The model file with every member's compression method set to 99 (zipfile: 'That
    compression method is not supported', a NotImplementedError from numpy's load)."""
    b = bytearray(data)
    for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        i = b.find(sig)
        while i >= 0:
            b[i + off : i + off + 2] = (99).to_bytes(2, "little")
            i = b.find(sig, i + 4)
    return bytes(b)


def test_a_damaged_model_is_refused_at_start_and_on_sighup(
    kafka: str, model_path: Path, tmp_path: Path
) -> None:
    """A model file with damaged zip metadata: at start, exit 2 naming the YAML key; on
    SIGHUP, the reload is refused, the old model keeps scoring and the daemon lives."""
    name = f"badm-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    _create_topics(kafka, {topic: 1, f"{name}-alerts": 1, f"{name}-dlq": 1})
    model = tmp_path / "model.npz"
    good = model_path.read_bytes()
    model.write_bytes(_compression_99(good))
    cfg = _config(tmp_path, kafka, model, topic, name, 0)
    proc = subprocess.run(
        [sys.executable, "-m", "streamlstm", "run", "--config", str(cfg), "--metrics-port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "pipelines[0].model.path" in proc.stderr and "not a readable" in proc.stderr
    assert "compression method" in proc.stderr and "Traceback" not in proc.stderr

    model.write_bytes(good)
    first = [(0, f"s{i}".encode(), _doc(f"s{i}", 60.0 * r, 20.0)) for r in range(10)
             for i in range(3)]  # fmt: skip
    _produce(kafka, topic, first)
    d = Daemon(cfg, 0, tmp_path / "d.log")
    d.wait_for(lambda: d.processed() >= len(first), what="first records")
    for damaged in (_compression_99(good), good[: len(good) // 3]):
        model.write_bytes(damaged)
        before = d.metric("streamlstm_model_reloads_total", result="refused") or 0
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for(
            lambda b=before: (d.metric("streamlstm_model_reloads_total", result="refused") or 0)
            > b, what="the refused reload",
        )  # fmt: skip
    more = [(0, f"s{i}".encode(), _doc(f"s{i}", 6000.0, 20.0)) for i in range(3)]
    _produce(kafka, topic, more)
    d.wait_for(lambda: d.processed() >= len(first) + len(more), what="scoring on")
    assert d.get("/readyz")[0] == 200
    model.write_bytes(good)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(lambda: d.metric("streamlstm_model_reloads_total", result="ok") == 1, what="ok")
    assert d.wait(signal.SIGTERM) == 0, d.tail()
    log = (tmp_path / "d.log").read_text()
    assert log.count("model reload refused, keeping the old model") == 2, log[-3000:]


def _warnings(log: Path, what: str) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if "WARNING" in ln and what in ln]


def test_a_stream_on_two_partitions_is_counted_and_named(
    kafka: str, model_path: Path, tmp_path: Path
) -> None:
    """Records not keyed by stream: stream 'a' on partition 0, then also on partition 1.
    The events on 1 are counted, one WARNING names 'a' and both partitions, and a second
    such stream within the minute is counted without another warning."""
    name = f"spread-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    _create_topics(kafka, {topic: 2, f"{name}-alerts": 1, f"{name}-dlq": 1})
    first = [(p, f"{k}".encode(), _doc(k, 60.0 * r, 20.0)) for r in range(5)
             for p, k in ((0, "a"), (0, "b"), (1, "c"))]  # fmt: skip
    _produce(kafka, topic, first)
    port = _free_port()
    d = Daemon(_config(tmp_path, kafka, model_path, topic, name, port), port, tmp_path / "d.log")
    d.wait_for(lambda: d.processed() >= len(first), what="keyed records")
    assert d.metric("streamlstm_stream_partition_conflicts_total", at="event") == 0
    # A producer that keys by something else: 'a' lands on partition 1 as well (3 events),
    # then 'b' (2 events).
    stray = [(1, b"x", _doc("a", 600.0 + r, 20.0)) for r in range(3)]
    _produce(kafka, topic, stray)
    d.wait_for(lambda: d.processed() >= len(first) + 3, what="stray records of a")
    _produce(kafka, topic, [(1, b"y", _doc("b", 700.0 + r, 20.0)) for r in range(2)])
    d.wait_for(lambda: d.processed() >= len(first) + 5, what="stray records of b")
    assert d.metric("streamlstm_stream_partition_conflicts_total", at="event") == 5
    assert d.wait(signal.SIGTERM) == 0, d.tail()
    (line,) = _warnings(tmp_path / "d.log", "its state is held with")
    assert "stream 'a' has events on" in line
    assert f"topic={topic} partition=1" in line and f"topic={topic} partition=0" in line
    assert "key records by the stream id" in line


def test_a_restored_checkpoint_holding_a_live_stream_of_another_partition_is_named(
    kafka: str, model_path: Path, tmp_path: Path
) -> None:
    """Two single-partition daemons (static partitions 0 and 1, one checkpoint dir) each
    see stream 'x'; a third daemon holding both partitions restores two checkpoints with
    'x': counted at=restore and named in a WARNING."""
    run = uuid.uuid4().hex[:6]
    topic = f"spreadr-{run}-events"
    _create_topics(kafka, {topic: 2})
    recs = [(p, b"x", _doc("x", 60.0 * r, 20.0)) for p in (0, 1) for r in range(4)]
    _produce(kafka, topic, recs)
    for part in (0, 1):
        name = f"spreadr{part}-{run}"
        _create_topics(kafka, {f"{name}-alerts": 1, f"{name}-dlq": 1})
        cfg = _config(tmp_path, kafka, model_path, topic, name, 0, ckpt_name=run)
        doc = yaml.safe_load(cfg.read_text())
        doc["kafka"]["partitions"] = [part]
        cfg.write_text(yaml.safe_dump(doc))
        d = Daemon(cfg, 0, tmp_path / f"d{part}.log")
        d.wait_for(lambda d=d: d.processed() >= 4, what=f"partition {part}")
        assert d.wait(signal.SIGTERM) == 0, d.tail()
    name = f"spreadr-{run}"
    _create_topics(kafka, {f"{name}-alerts": 1, f"{name}-dlq": 1})
    both = Daemon(
        _config(tmp_path, kafka, model_path, topic, name, 0, ckpt_name=run), 0, tmp_path / "b.log"
    )
    both.wait_for(lambda: both.get("/readyz")[0] == 200, what="readiness")
    assert both.metric("streamlstm_stream_partition_conflicts_total", at="restore") == 1
    assert both.wait(signal.SIGTERM) == 0, both.tail()
    (line,) = _warnings(tmp_path / "b.log", "its state is held with")
    assert "stream 'x' is in the checkpoint restored for" in line
    assert f"topic={topic} partition=1" in line and f"topic={topic} partition=0" in line


def test_static_membership_from_the_pod_name(
    kafka: str, model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kafka.group_instance_id: "${POD_NAME}" (as deploy/kubernetes/pipeline.yaml has it):
    the daemon joins its group as that static member and consumes."""
    name = f"static-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    _create_topics(kafka, {topic: 2, f"{name}-alerts": 1, f"{name}-dlq": 1})
    recs = [(i % 2, f"s{i}".encode(), _doc(f"s{i}", 60.0 * r, 20.0)) for r in range(3)
            for i in range(4)]  # fmt: skip
    _produce(kafka, topic, recs)
    cfg = _config(tmp_path, kafka, model_path, topic, name, 0, group=f"g-{name}")
    doc = yaml.safe_load(cfg.read_text())
    doc["kafka"]["group_instance_id"] = "${POD_NAME}"
    cfg.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("POD_NAME", f"{name}-0")
    d = Daemon(cfg, 0, tmp_path / "d.log")
    d.wait_for(lambda: d.processed() >= len(recs), what="records")
    assert d.metric("streamlstm_assigned_partitions") == 2
    assert d.wait(signal.SIGTERM) == 0, d.tail()
    log = (tmp_path / "d.log").read_text()
    assert f"joining consumer group g-{name} as static member {name}-0" in log
