"""PipelineLoop with fake Kafka ends: order of flush/checkpoint/commit, rebalances,
model reload, broker errors. The real broker is in tests/integration/test_daemon.py."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from kafka import TopicPartition  # type: ignore[import-untyped]
from kafka.errors import KafkaTimeoutError  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry

from streamlstm.detector import DetectorConfig
from streamlstm.io.decode import DecodeConfig
from streamlstm.io.features import FeatureSpec
from streamlstm.model import Model
from streamlstm.service.config.types import CheckpointConfig
from streamlstm.service.loop import PipelineLoop, group_of, partition_of
from streamlstm.service.metrics import Metrics

FEATURES = ("a", "b")
TOPIC = "events"
# A bound on waiting for the checkpoint writer's thread, so a broken test fails instead of
# hanging; never reached when the code works (the writes are a few ms).
WAIT_S = 60.0


class FakeSource:
    def __init__(self, kafka: Any, source: Any, handler: Any, pipeline: str = "") -> None:
        self.handler = handler
        self.queue: list[dict[TopicPartition, list[Any]]] = []
        self.log: list[str] = []
        self.seeks: dict[TopicPartition, int | None] = {}
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []  # every commit sent, in order
        self.consumer = object()
        self.fail_commit = False

    def connect(self) -> None: ...

    def start(self) -> None:
        self.handler.on_assigned([TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])

    def poll(self) -> dict[TopicPartition, list[Any]]:
        return self.queue.pop(0) if self.queue else {}

    def seek(self, tp: TopicPartition, offset: int | None) -> int | None:
        self.seeks[tp] = offset
        return offset

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.fail_commit:
            raise KafkaTimeoutError("broker gone")
        self.log.append("commit")
        self.commits.append(dict(offsets))
        self.committed_offsets.update(offsets)

    def commit_async(self, offsets: dict[TopicPartition, int], on_error: Any = None) -> None:
        self.log.append("commit_async")
        if self.fail_commit and on_error is not None:  # as the client: the answer, later
            on_error(KafkaTimeoutError("broker gone"))
            return
        self.commits.append(dict(offsets))
        self.committed_offsets.update(offsets)

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    def connected(self) -> bool:
        return True

    def close(self) -> None: ...


class FakeSink:
    def __init__(self, kafka: Any, sinks: Any, pipeline: str, listeners: Any = ()) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.dead: list[tuple[Any, str]] = []
        self.log: list[str] | None = None
        self.refused: dict[str, int] = {}
        self.deduplicated: dict[str, int] = {}
        self.recalled: list[dict[tuple[str, int], tuple[int, float | None]]] = []

    def connect(self) -> None: ...

    def alert(self, rec: dict[str, Any]) -> bool:
        self.alerts.append(rec)
        return True

    def recall(self, resume: dict[tuple[str, int], tuple[int, float | None]]) -> bool:
        self.recalled.append(dict(resume))
        return True

    def forget(self, partitions: Any) -> None: ...

    def dead_letter(self, record: Any, reason: str, detail: str = "") -> None:
        self.dead.append((record, reason))

    def flush(self, timeout_s: float = 10.0) -> bool:
        assert self.log is not None
        self.log.append("flush")
        return True

    def close(self) -> None: ...


def _records(part: int, start: int, docs: list[dict[str, Any]]) -> list[Any]:
    return [
        SimpleNamespace(
            topic=TOPIC, partition=part, offset=start + i, key=None, value=orjson.dumps(d),
            timestamp=1_700_000_000_000, headers=[],
        )
        for i, d in enumerate(docs)
    ]  # fmt: skip


def _cfg(tmp: Path, model_path: Path) -> Any:
    return SimpleNamespace(
        name="p",
        path="pipelines[0]",
        kafka=SimpleNamespace(bootstrap_servers=("fake:9092",), group_id=None),
        source=SimpleNamespace(topics=(TOPIC,), start="earliest"),
        decode=DecodeConfig(
            key_field="k", time_field="t", features=tuple(FeatureSpec(f) for f in FEATURES)
        ),
        model_path=model_path,
        detector=DetectorConfig(warmup=2),
        sinks=SimpleNamespace(),
        checkpoint=CheckpointConfig(dir=tmp / "ckpt", interval_s=3600.0, keep=2),
    )


def _started(tmp_path: Path, model_path: Path) -> PipelineLoop:
    """A loop on the fake Kafka ends, warmed up and connected (partitions 0 and 1)."""
    lp = PipelineLoop(
        _cfg(tmp_path, model_path), Metrics(CollectorRegistry()), threading.Event(),
        source_factory=FakeSource, sink_factory=FakeSink,
    )  # fmt: skip
    lp.warm_up()
    assert lp._connect()
    return lp


@pytest.fixture
def loop(tmp_path: Path) -> PipelineLoop:
    model = Model.random(FEATURES, hidden=4, seed=3)
    lp = _started(tmp_path, model.save(tmp_path / "m.npz"))
    log: list[str] = []
    lp.source.log = log  # type: ignore[attr-defined]
    lp.sink.log = log  # type: ignore[attr-defined]
    real_write = lp.store.write

    def write(*a: Any, **k: Any) -> Any:
        log.append(f"checkpoint p{a[1]}")
        return real_write(*a, **k)

    lp.store.write = write  # type: ignore[method-assign]
    return lp


def _docs(n: int, key: str = "s", t0: float = 0.0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    return [
        {"k": key, "t": t0 + i, "a": float(v), "b": 1.0} for i, v in enumerate(rng.normal(size=n))
    ]


def test_flush_then_checkpoint_then_commit(loop: PipelineLoop) -> None:
    tp0 = TopicPartition(TOPIC, 0)
    loop.source.queue.append({tp0: _records(0, 0, _docs(5))})  # type: ignore[attr-defined]
    loop.step()
    assert loop.next_offset[tp0] == 5
    loop._checkpoint()
    assert loop.source.log == ["flush", "checkpoint p0", "commit"]  # type: ignore[attr-defined]
    assert loop.source.committed_offsets == {tp0: 5}  # type: ignore[attr-defined]
    loop._checkpoint()  # nothing new: no write, no commit
    assert loop.source.log == ["flush", "checkpoint p0", "commit"]  # type: ignore[attr-defined]


def test_last_checkpoint_time_is_exported_before_the_first_checkpoint(loop: PipelineLoop) -> None:
    # the fixture's source assigned two partitions: their state is unprotected from then
    loop._publish(force=True)
    g = loop.metrics.registry.get_sample_value
    before = g("streamlstm_last_checkpoint_timestamp_seconds", {"pipeline": "p"})
    assert before is not None and 0.0 < before <= time.time()
    tp0 = TopicPartition(TOPIC, 0)
    loop.source.queue.append({tp0: _records(0, 0, _docs(5))})  # type: ignore[attr-defined]
    loop.step()
    loop._checkpoint()
    loop._publish(force=True)
    after = g("streamlstm_last_checkpoint_timestamp_seconds", {"pipeline": "p"})
    assert after is not None and before <= after <= time.time()
    assert loop.last_checkpoint == after


def test_detector_rejections_become_dead_letters(loop: PipelineLoop) -> None:
    tp0 = TopicPartition(TOPIC, 0)
    docs = _docs(3, t0=100.0) + [{"k": "s", "t": 5.0, "a": 1.0, "b": 1.0}, {"k": "s", "t": 200.0}]
    docs.append({"k": "s", "t": 300.0, "a": "x", "b": 1.0})
    loop.source.queue.append({tp0: _records(0, 0, docs)})  # type: ignore[attr-defined]
    loop.step()
    got = [(r.offset, why) for r, why in loop.sink.dead]  # type: ignore[attr-defined]
    # the decoder's and the detector's rejects in one pass, in offset order
    assert got == [(3, "too_old"), (4, "missing"), (5, "wrong_type")]
    reg = loop.metrics.registry
    assert (
        reg.get_sample_value(
            "streamlstm_dead_letters_total", {"pipeline": "p", "reason": "too_old"}
        )
        == 1
    )
    assert loop.next_offset[tp0] == 6


def test_revoke_checkpoints_and_drops_reassign_restores(loop: PipelineLoop) -> None:
    tp1 = TopicPartition(TOPIC, 1)
    loop.source.queue.append({tp1: _records(1, 0, _docs(8, key="x"))})  # type: ignore[attr-defined]
    loop.step()
    before = loop.detector.stream_state("x")
    loop.on_revoked([tp1])
    assert "x" not in loop.detector.table
    # Rebalance callbacks run on kafka-python's IO thread: no blocking commit there.
    assert loop.source.log == ["flush", "checkpoint p1", "commit_async"]  # type: ignore[attr-defined]
    loop.on_assigned([tp1])
    assert loop.source.seeks[tp1] == 8  # type: ignore[attr-defined]
    after = loop.detector.stream_state("x")
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


def test_the_periodic_checkpoint_commits_after_it_without_waiting(loop: PipelineLoop) -> None:
    # Waiting for the commit's answer stopped every event for 2-19 ms a checkpoint; and
    # the write itself runs on the writer's thread: the commit goes out on the turn after
    # it is durable.
    tp0 = TopicPartition(TOPIC, 0)
    loop.source.queue.append({tp0: _records(0, 0, _docs(5))})  # type: ignore[attr-defined]
    loop._last_ckpt_mono -= 2 * loop.cfg.checkpoint.interval_s  # the interval has passed
    loop.step()
    assert loop._writer.wait(WAIT_S)
    assert loop.source.log == ["flush", "checkpoint p0"]  # type: ignore[attr-defined]
    loop.step()
    assert loop.source.log == ["flush", "checkpoint p0", "commit_async"]  # type: ignore[attr-defined]
    assert loop.source.committed_offsets == {tp0: 5}  # type: ignore[attr-defined]
    assert loop.store.read(TOPIC, 0).next_offset == 5  # type: ignore[union-attr]


def test_a_failed_asynchronous_commit_counts_as_a_failed_commit(loop: PipelineLoop) -> None:
    tp0 = TopicPartition(TOPIC, 0)
    loop.source.fail_commit = True  # type: ignore[attr-defined]
    loop.source.queue.append({tp0: _records(0, 0, _docs(4))})  # type: ignore[attr-defined]
    loop._last_ckpt_mono -= 2 * loop.cfg.checkpoint.interval_s
    loop.step()  # snapshot taken, written on the writer's thread
    assert loop._writer.wait(WAIT_S)
    assert loop.store.read(TOPIC, 0).next_offset == 4  # type: ignore[union-attr]
    loop.step()  # the commit sent, and its failure handled in the same turn
    assert not loop.health.broker_up
    reg = loop.metrics.registry
    assert reg.get_sample_value("streamlstm_commit_failures_total", {"pipeline": "p"}) == 1
    assert loop.source.committed_offsets == {}  # type: ignore[attr-defined]


def test_commit_failure_is_retried_not_fatal(loop: PipelineLoop) -> None:
    tp0 = TopicPartition(TOPIC, 0)
    loop.source.fail_commit = True  # type: ignore[attr-defined]
    loop.source.queue.append({tp0: _records(0, 0, _docs(4))})  # type: ignore[attr-defined]
    loop.step()
    assert loop._checkpoint()  # the checkpoint is durable; the commit waits
    assert not loop.health.broker_up
    reg = loop.metrics.registry
    assert reg.get_sample_value("streamlstm_commit_failures_total", {"pipeline": "p"}) == 1
    assert loop.store.read(TOPIC, 0).next_offset == 4  # type: ignore[union-attr]


def test_reload_keeps_state_or_refuses_other_shape(loop: PipelineLoop, tmp_path: Path) -> None:
    tp0 = TopicPartition(TOPIC, 0)
    loop.source.queue.append({tp0: _records(0, 0, _docs(4))})  # type: ignore[attr-defined]
    loop.step()
    state = loop.detector.stream_state("s")
    Model.random(FEATURES, hidden=4, seed=9).save(loop.cfg.model_path)
    loop.reload.set()
    loop.step()
    assert loop.model.provenance.get("seed") == 9
    np.testing.assert_array_equal(loop.detector.stream_state("s")["h"], state["h"])
    Model.random(FEATURES, hidden=8, seed=1).save(loop.cfg.model_path)
    loop.reload.set()
    loop.step()
    assert loop.model.hidden == 4  # refused, old model kept
    reg = loop.metrics.registry
    assert (
        reg.get_sample_value(
            "streamlstm_model_reloads_total", {"pipeline": "p", "result": "refused"}
        )
        == 1
    )


def test_a_second_topics_group_maps_back_to_its_kafka_partition() -> None:
    # The streams-in-alert series and the alert record label the Kafka partition,
    # never the detector's internal group number (65539 for topic 1, partition 3).
    assert group_of(1, 3) == 65539
    assert partition_of(group_of(1, 3)) == 3 and partition_of(group_of(0, 7)) == 7


def _full_disk(loop: PipelineLoop) -> TopicPartition:
    """A store whose every write fails as a full disk does, and 4 events queued on
    partition 0 (returned) to make it dirty."""
    from streamlstm.errors import CheckpointError

    def broken(*a: Any, **k: Any) -> Any:
        raise CheckpointError("cannot write checkpoint /x: No space left on device")

    loop.store.write = broken  # type: ignore[method-assign]
    tp0 = TopicPartition(TOPIC, 0)
    loop.source.queue.append({tp0: _records(0, 0, _docs(4))})  # type: ignore[attr-defined]
    return tp0


def test_a_failing_checkpoint_is_one_line_of_ours_then_fatal(
    loop: PipelineLoop, caplog: pytest.LogCaptureFixture
) -> None:
    from streamlstm.errors import CheckpointError

    _full_disk(loop)
    loop.step()
    with (
        caplog.at_level("INFO", logger="streamlstm"),
        pytest.raises(
            CheckpointError, match=r"^pipelines\[0\]\.checkpoint\.dir: cannot write checkpoint"
        ),
    ):
        loop._checkpoint()
    (line,) = [r for r in caplog.records if "checkpoint failing" in r.getMessage()]
    assert line.levelname == "ERROR" and line.name == "streamlstm.service.loop"
    assert line.getMessage().startswith("pipeline=p checkpoint failing, stopping: cannot write")
    reg = loop.metrics.registry
    assert reg.get_sample_value("streamlstm_checkpoint_failures_total", {"pipeline": "p"}) == 1


def test_broker_lost_and_back_are_one_line_each(
    loop: PipelineLoop, caplog: pytest.LogCaptureFixture
) -> None:
    tp0 = TopicPartition(TOPIC, 0)
    with caplog.at_level("INFO", logger="streamlstm"):
        loop.source.fail_commit = True  # type: ignore[attr-defined]
        loop.source.queue.append({tp0: _records(0, 0, _docs(4))})  # type: ignore[attr-defined]
        loop.step()
        loop._checkpoint()
        loop._checkpoint()  # still down: no second "lost"
        loop.source.queue.append({tp0: _records(0, 4, _docs(2, t0=4))})  # type: ignore[attr-defined]
        loop.step()
    msgs = [r.getMessage() for r in caplog.records if r.name == "streamlstm.service.loop"]
    assert [m for m in msgs if "broker lost" in m] == [
        "pipeline=p broker lost (commit failed); scoring what was fetched, checkpoints wait"
    ]
    (back,) = [m for m in msgs if "broker back" in m]
    assert back.startswith("pipeline=p broker back after ")


def test_a_checkpoint_of_another_model_names_its_yaml_keys(
    loop: PipelineLoop, tmp_path: Path
) -> None:
    from streamlstm.errors import CheckpointError

    tp0 = TopicPartition(TOPIC, 0)
    loop.source.queue.append({tp0: _records(0, 0, _docs(4))})  # type: ignore[attr-defined]
    loop.step()
    loop._checkpoint()
    other = Model.random(FEATURES, hidden=8, seed=4)
    lp = PipelineLoop(
        _cfg(tmp_path, other.save(tmp_path / "other.npz")), Metrics(CollectorRegistry()),
        threading.Event(), source_factory=FakeSource, sink_factory=FakeSink,
    )  # fmt: skip
    with pytest.raises(CheckpointError) as exc:
        lp._connect()
    msg = str(exc.value)
    assert msg.startswith("pipelines[0].checkpoint.dir: pipeline=p partition=0: checkpoint ")
    assert "point pipelines[0].model.path back at its model" in msg
    assert f"move {tmp_path / 'ckpt'} away to start cold" in msg


def test_a_restored_partition_recalls_its_outputs_before_it_replays(loop: PipelineLoop) -> None:
    """The sink learns what an earlier life sent (from the checkpoint's offset and the
    time its state was taken) before the first batch after the restore is processed;
    cold partitions too."""
    tp0, tp1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    loop.source.queue.append({tp0: _records(0, 0, _docs(60))})  # type: ignore[attr-defined]
    loop.step()
    loop._checkpoint()
    sink: Any = loop.sink
    assert sink.recalled == [{(TOPIC, 0): (0, None), (TOPIC, 1): (0, None)}]  # cold start
    order: list[str] = []
    sink.recall = lambda resume: order.append(f"recall {sorted(resume.items())}") or True
    sink.alert = lambda rec: order.append("alert") or True
    loop.on_revoked([tp0, tp1])
    loop.on_assigned([tp0])
    # From when its state was taken: the writer may write it later, after outputs of
    # events beyond its offset were sent.
    meta = loop.store.read(TOPIC, 0).meta  # type: ignore[union-attr]
    written = meta["snapshot_at"]
    assert written <= meta["written_at"]
    spike = [{"k": "s", "t": 60.0 + i, "a": 20.0, "b": 1.0} for i in range(10)]
    loop.source.queue.append({tp0: _records(0, 60, spike)})  # type: ignore[attr-defined]
    loop.step()
    assert order[0] == f"recall {[((TOPIC, 0), (60, written))]}"
    assert order.count(order[0]) == 1
    assert "alert" in order  # the replay did emit, after the recall


def test_warm_up_freezes_the_start_up_objects_out_of_the_collector(loop: PipelineLoop) -> None:
    # A full collection walked numba's and kafka-python's ~125k start-up objects with the
    # loop stopped (40-80 ms). Frozen, it walks only what the loop made since.
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    loop.warm_up()
    assert gc.get_freeze_count() > 1000
    assert loop.health.compiled


# -- the periodic checkpoint on the writer's thread ---------------------------------------
def _hold_writes(loop: PipelineLoop) -> tuple[threading.Event, threading.Event]:
    """Make the store's writes wait for ``release`` (each sets ``entered`` first). The
    real write runs after it: only its start is delayed, as by a slow disk."""
    entered, release = threading.Event(), threading.Event()
    real = loop.store.write

    def write(*a: Any, **k: Any) -> Any:
        entered.set()
        assert release.wait(WAIT_S), "the test never released the write"
        return real(*a, **k)

    loop.store.write = write  # type: ignore[method-assign]
    return entered, release


def test_a_slow_checkpoint_write_does_not_stop_events_nor_commit_ahead_of_it(
    loop: PipelineLoop,
) -> None:
    tp0 = TopicPartition(TOPIC, 0)
    src: Any = loop.source
    entered, release = _hold_writes(loop)
    try:
        src.queue.append({tp0: _records(0, 0, _docs(5))})
        loop._last_ckpt_mono -= 2 * loop.cfg.checkpoint.interval_s
        loop.step()  # snapshot of offset 5 taken; its write is held
        assert entered.wait(WAIT_S) and loop._writer.busy
        # Events go on while it is held ...
        src.queue.append({tp0: _records(0, 5, _docs(5, t0=5.0))})
        loop.step()
        assert loop.next_offset[tp0] == 10 and loop.detector.table.last_time.max() == 9.0
        # ... a checkpoint falling due meanwhile is not started (nothing queues up) ...
        loop._last_ckpt_mono -= 2 * loop.cfg.checkpoint.interval_s
        loop.step()
        assert src.log == ["flush"]
        # ... and nothing is committed before the write is durable.
        assert src.commits == [] and loop.store.read(TOPIC, 0) is None
    finally:
        release.set()
    assert loop._writer.wait(WAIT_S)
    loop.step()  # takes the written job back: its offsets, not the newer ones
    assert src.commits == [{tp0: 5}]
    loop.step()  # the checkpoint that was due now starts
    assert loop._writer.wait(WAIT_S)
    loop.step()
    assert src.commits == [{tp0: 5}, {tp0: 10}]
    assert src.log == ["flush", "checkpoint p0", "commit_async"] * 2
    assert loop.store.read(TOPIC, 0).next_offset == 10  # type: ignore[union-attr]


def test_revoke_and_shutdown_finish_the_write_in_flight_first(loop: PipelineLoop) -> None:
    """A revoked partition's snapshot is written after the write in flight is durable and
    committed, never before it (else the older generation would be the newest)."""
    tp0, tp1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    src: Any = loop.source
    entered, release = _hold_writes(loop)
    src.queue.append({tp0: _records(0, 0, _docs(5)), tp1: _records(1, 0, _docs(3, key="y"))})
    loop._last_ckpt_mono -= 2 * loop.cfg.checkpoint.interval_s
    loop.step()
    assert entered.wait(WAIT_S)
    src.queue.append({tp0: _records(0, 5, _docs(4, t0=5.0))})
    loop.step()
    # As kafka-python does: the listener runs on another thread, and waits for the write.
    revoke = threading.Thread(target=loop.on_revoked, args=([tp0],))
    revoke.start()
    release.set()
    revoke.join(WAIT_S)
    assert not revoke.is_alive()
    assert src.commits == [{tp0: 5, tp1: 3}, {tp0: 9}]
    assert loop.store.read(TOPIC, 0).next_offset == 9  # type: ignore[union-attr]
    assert "s" not in loop.detector.table and tp0 not in loop.assigned
    # Shutdown: the final checkpoint also waits for a write in flight, and its commit.
    entered.clear()
    release.clear()
    src.queue.append({tp1: _records(1, 3, _docs(2, key="y", t0=3.0))})
    loop._last_ckpt_mono -= 2 * loop.cfg.checkpoint.interval_s
    loop.step()
    assert entered.wait(WAIT_S)
    src.queue.append({tp1: _records(1, 5, _docs(2, key="y", t0=5.0))})
    loop.step()
    final = threading.Thread(target=loop._checkpoint, kwargs={"final": True})
    final.start()
    release.set()
    final.join(WAIT_S)
    assert src.commits[2:] == [{tp1: 5}, {tp1: 7}]
    assert src.log[-2:] == ["checkpoint p1", "commit"]  # the final one waits for its answer
    assert loop.store.read(TOPIC, 1).next_offset == 7  # type: ignore[union-attr]


def test_a_failing_background_write_is_one_line_of_ours_then_fatal(
    loop: PipelineLoop, caplog: pytest.LogCaptureFixture
) -> None:
    from streamlstm.errors import CheckpointError

    tp0 = _full_disk(loop)
    loop._last_ckpt_mono -= 2 * loop.cfg.checkpoint.interval_s
    loop.step()
    assert loop._writer.wait(WAIT_S)
    with (
        caplog.at_level("INFO", logger="streamlstm"),
        pytest.raises(CheckpointError, match=r"^pipelines\[0\]\.checkpoint\.dir: cannot write"),
    ):
        loop.step()
    (line,) = [r for r in caplog.records if "checkpoint failing" in r.getMessage()]
    assert line.levelname == "ERROR" and line.name == "streamlstm.service.loop"
    reg = loop.metrics.registry
    assert reg.get_sample_value("streamlstm_checkpoint_failures_total", {"pipeline": "p"}) == 1
    assert loop.source.commits == []  # type: ignore[attr-defined]
    assert tp0 in loop.dirty  # not durable: it would be written again


def test_an_unreachable_changelog_in_the_background_waits_and_retries(loop: PipelineLoop) -> None:
    from streamlstm.service.changelog_store import StateStoreUnavailable

    real = loop.store.write
    calls = []

    def flaky(*a: Any, **k: Any) -> Any:
        calls.append(a[1])
        if len(calls) == 1:
            raise StateStoreUnavailable("cannot write checkpoint chunks: broker gone")
        return real(*a, **k)

    loop.store.write = flaky  # type: ignore[method-assign]
    tp0 = TopicPartition(TOPIC, 0)
    src: Any = loop.source
    src.queue.append({tp0: _records(0, 0, _docs(4))})
    loop._last_ckpt_mono -= 2 * loop.cfg.checkpoint.interval_s
    loop.step()
    assert loop._writer.wait(WAIT_S)
    loop.step()
    assert not loop.health.broker_up and src.commits == [] and tp0 in loop.dirty
    reg = loop.metrics.registry
    labels = {"pipeline": "p", "op": "checkpoint"}
    assert reg.get_sample_value("streamlstm_broker_errors_total", labels) == 1
    loop._retry_at = 0.0  # the backoff has passed
    loop._last_ckpt_mono -= 2 * loop.cfg.checkpoint.interval_s
    loop.step()
    assert loop._writer.wait(WAIT_S)
    loop.step()
    assert src.commits == [{tp0: 4}] and calls == [0, 0]


_WARM_CHECK = """
import sys, tempfile, threading
from pathlib import Path
from prometheus_client import CollectorRegistry
from streamlstm.kernels import jsonscan, kafkarecords, keymap
from streamlstm.model import Model
from streamlstm.service.loop import PipelineLoop
from streamlstm.service.metrics import Metrics
from tests.unit.service.test_loop import FEATURES, FakeSink, FakeSource, _cfg
tmp = Path(tempfile.mkdtemp())
path = Model.random(FEATURES, hidden=4, seed=3).save(tmp / "m.npz")
lp = PipelineLoop(_cfg(tmp, path), Metrics(CollectorRegistry()), threading.Event(),
                  source_factory=FakeSource, sink_factory=FakeSink)
entry = [(jsonscan, "_scan"), (jsonscan, "_join_spans"), (kafkarecords, "_walk_batches")]
entry += [(kafkarecords, "_parse_records")]
entry += [(keymap, n) for n in ("_find", "_insert", "_release", "_rebuild", "_compact", "_gather")]
assert all(not getattr(m, n).signatures for m, n in entry), "not a fresh process"
lp.warm_up()
print(" ".join(f"{m.__name__}.{n}" for m, n in entry if not getattr(m, n).signatures))
"""


def test_warm_up_compiles_every_kernel_the_loop_may_call():
    # In a fresh process (this one has compiled them all by now): the JSON scanner, the
    # bulk record reader and the key map's growth and eviction paths compiled on the
    # first batch or the first eviction, ~6 s of stopped loop with a cold Numba cache.
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", _WARM_CHECK], cwd=root, capture_output=True, text=True,
        timeout=600, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "", f"compiled only on first use: {out.stdout}"


def test_a_carried_model_continues_its_streams_but_a_checkpoint_wins(tmp_path: Path) -> None:
    from streamlstm.detector.carry import carry_states

    hist = _docs(40, key="x") + _docs(40, key="y")
    carried, n, _ = carry_states(
        Model.random(FEATURES, hidden=4, seed=3), [d["k"] for d in hist],
        np.array([d["t"] for d in hist]), np.array([[d["a"], d["b"]] for d in hist]),
        DetectorConfig(warmup=2),
    )  # fmt: skip
    path = carried.save(tmp_path / "m.npz")

    def start() -> PipelineLoop:
        lp = _started(tmp_path, path)
        lp.source.log = lp.sink.log = []  # type: ignore[attr-defined]
        return lp

    tp1 = TopicPartition(TOPIC, 1)
    lp = start()
    assert n == 2 and lp.detector.carried is not None
    lp.source.queue.append({tp1: _records(1, 0, _docs(8, key="x", t0=100.0))})  # type: ignore[attr-defined]
    lp.step()
    assert lp.detector.carried.seeded == 1  # x went on from its history
    lp._publish(force=True)
    reg = lp.metrics.registry
    assert reg.get_sample_value("streamlstm_continued_streams_total", {"pipeline": "p"}) == 1
    assert int(lp.detector.stream_state("x")["istat"][0]) == 48  # 40 + 8 events
    lp._checkpoint(final=True)
    lp.close()
    again = start()  # a restart: x comes back from its checkpoint, y was never seen
    assert again.detector.carried is not None
    assert "x" not in again.detector.carried.rows and "y" in again.detector.carried.rows
