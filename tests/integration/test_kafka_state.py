"""``checkpoint.store: kafka``: state moves between daemons that share no disk.

Each daemon has its own empty checkpoint directory; the only thing they share is the
broker. Each test compares with one uninterrupted run of the same seeded input (with
the local store): per-stream state bit-identical, the same set of alert ids.
Helpers and the broker come from tests/integration/test_daemon.py.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from streamlstm.kafka.config import KafkaConfig
from streamlstm.service.changelog_store import KafkaCheckpointStore
from tests.integration.test_daemon import (
    PARTITIONS,
    STATE_COLUMNS,
    Daemon,
    _alert_ids,
    _config,
    _create_topics,
    _final_state,
    _fleet,
    _free_port,
    _produce,
    _records,
)


def _kafka_store(cfg: Path, **ckpt: Any) -> Path:
    """``cfg`` with ``checkpoint.store: kafka`` and the given checkpoint keys."""
    doc = yaml.safe_load(cfg.read_text())
    doc["pipelines"][0]["checkpoint"].update(store="kafka", **ckpt)
    cfg.write_text(yaml.safe_dump(doc))
    return cfg


def _changelog_state(
    bootstrap: str, state_topic: str, topic: str, group: str
) -> tuple[dict[str, dict[str, np.ndarray]], list[int]]:
    """Per-stream state rows and next offsets from the changelog, as a new replica reads
    them (its group's committed offsets checked against the state)."""
    store = KafkaCheckpointStore(
        KafkaConfig(bootstrap_servers=(bootstrap,), group_id=group), "sensors", state_topic
    )
    out: dict[str, dict[str, np.ndarray]] = {}
    offsets = []
    try:
        for p in range(PARTITIONS):
            ck = store.read(topic, p)
            assert ck is not None, f"no checkpoint for partition {p}"
            offsets.append(ck.next_offset)
            snap = ck.snapshot
            raw = snap["key_bytes"].tobytes()
            ends = np.cumsum(snap["key_len"])
            for i, (e, n) in enumerate(zip(ends.tolist(), snap["key_len"].tolist(), strict=True)):
                out[raw[e - n : e].decode()] = {c: snap[c][i] for c in STATE_COLUMNS}
    finally:
        store.close()
    return out, offsets


def _reference(
    kafka: str, model: Path, tmp: Path, topic: str, records: list[Any]
) -> tuple[dict[str, dict[str, np.ndarray]], set[tuple[str, str]]]:
    ref = f"{topic}-ref"
    _create_topics(kafka, {f"{ref}-alerts": 1, f"{ref}-dlq": 1})
    port = _free_port()
    r = Daemon(_config(tmp, kafka, model, topic, ref, port), port, tmp / "ref.log")
    r.wait_for(lambda: r.processed() >= len(records), what="reference run")
    assert r.wait(signal.SIGTERM) == 0, r.tail()
    ids = _alert_ids(kafka, f"{ref}-alerts")
    assert ids, "the reference run raised no alert; the test proves nothing"
    return _final_state(tmp / f"ckpt-{ref}", topic), ids


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        for col in STATE_COLUMNS:
            np.testing.assert_array_equal(got[key][col], want[key][col], err_msg=f"{key} {col}")


def test_a_killed_daemons_state_resumes_on_another_with_no_shared_disk(
    kafka: str,
    model_path: Path,
    tmp_path: Path,
) -> None:
    """Daemon A checkpoints a third, processes another third and is killed (-9) before
    its next checkpoint; daemon B, in a fresh directory, restores A's last generation
    from the changelog, seeks to its offset, replays the second third and goes on."""
    run = uuid.uuid4().hex[:6]
    name, topic, state = f"ks-{run}", f"ks-{run}-events", f"ks-{run}-state"
    _create_topics(kafka, {topic: PARTITIONS, f"{name}-alerts": 1, f"{name}-dlq": 1})
    records = _records(_fleet(n_streams=16, n_steps=600))
    third = len(records) // 3
    port = _free_port()
    # Small chunks: a generation is several records, as a big one is in production.
    ckpt = {"topic": state, "chunk_bytes": 16384}
    cfg_a = _kafka_store(_config(tmp_path, kafka, model_path, topic, name, port,
                                 ckpt_name="a", file_name="a", interval_s=5), **ckpt)  # fmt: skip
    cfg_b = _kafka_store(_config(tmp_path, kafka, model_path, topic, name, port,
                                 ckpt_name="b", file_name="b"), **ckpt)  # fmt: skip

    _produce(kafka, topic, records[:third])
    a = Daemon(cfg_a, port, tmp_path / "a.log")
    a.wait_for(lambda: a.processed() >= third, what="first third")
    a.wait_for(
        lambda: (a.metric("streamlstm_checkpoint_duration_seconds_count") or 0) >= 1,
        what="a checkpoint",
    )
    _produce(kafka, topic, records[third : 2 * third])
    a.wait_for(lambda: a.processed() >= 2 * third, what="second third")
    a.proc.kill()
    a.proc.wait(10)
    _, at = _changelog_state(kafka, state, topic, f"g-{name}")
    assert 0 < sum(at) < 2 * third, f"checkpoint offsets {at}: the kill tests no replay"

    _produce(kafka, topic, records[2 * third :])
    b = Daemon(cfg_b, port, tmp_path / "b.log")
    b.wait_for(lambda: b.get("/readyz")[0] == 200, what="B ready")
    assert b.metric("streamlstm_state_restore_seconds_count", pipeline="sensors") == PARTITIONS
    b.wait_for(lambda: b.processed() >= len(records) - sum(at), what="the rest")
    assert b.wait(signal.SIGTERM) == 0, b.tail()
    assert b.tail().count("resuming from checkpoint") == PARTITIONS
    # No disk: neither daemon wrote a checkpoint file.
    assert not list(tmp_path.glob("ckpt-*/**/*.ckpt"))

    got, offsets = _changelog_state(kafka, state, topic, f"g-{name}")
    assert sum(offsets) == len(records)
    want, ids = _reference(kafka, model_path, tmp_path, topic, records)
    _assert_same(got, want)
    assert _alert_ids(kafka, f"{name}-alerts") == ids


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_group_replicas_hand_partitions_over_through_the_changelog(
    kafka: str,
    model_path: Path,
    tmp_path: Path,
    client: str,
) -> None:
    """Two replicas of one consumer group, each with its own empty directory: B joins
    and takes a partition A checkpointed (restored in the rebalance callback), then A
    leaves and B takes the other one back from the changelog as well. With both
    clients: their rebalance callbacks differ (kafka-python's listener, librdkafka's
    on_assign/on_revoke served by the loop's poll)."""
    run = uuid.uuid4().hex[:6]
    name, topic, state = f"kg-{run}", f"kg-{run}-events", f"kg-{run}-state"
    _create_topics(kafka, {topic: PARTITIONS, f"{name}-alerts": 1, f"{name}-dlq": 1})
    records = _records(_fleet(n_streams=16, n_steps=500))
    half = len(records) // 2
    ports = [_free_port(), _free_port()]
    cfgs = [
        _kafka_store(_config(tmp_path, kafka, model_path, topic, name, ports[i],
                             group=f"g-{name}", ckpt_name=f"r{i}", file_name=f"r{i}",
                             client=client), topic=state)
        for i in range(2)
    ]  # fmt: skip
    _produce(kafka, topic, records[:half])
    a = Daemon(cfgs[0], ports[0], tmp_path / "a.log")
    a.wait_for(lambda: a.processed() >= half, what="replica a: first half")
    b = Daemon(cfgs[1], ports[1], tmp_path / "b.log")
    for d in (a, b):
        d.wait_for(lambda d=d: d.metric("streamlstm_assigned_partitions") == 1, what="rebalance")
    _produce(kafka, topic, records[half:])
    per_part = [sum(1 for p, _, _ in records if p == q) for q in range(PARTITIONS)]
    b.wait_for(lambda: b.processed() > 0, what="b processes its partition")
    assert a.wait(signal.SIGTERM) == 0, a.tail()
    b.wait_for(lambda: b.metric("streamlstm_assigned_partitions") == 2, what="b takes all")

    def done() -> bool:
        try:
            _, offsets = _changelog_state(kafka, state, topic, f"g-{name}")
        except AssertionError:
            return False
        return offsets == per_part

    b.wait_for(done, what="both partitions checkpointed at their end")
    assert b.wait(signal.SIGTERM) == 0, b.tail()
    assert "revoked" in a.tail()
    assert "resuming from checkpoint" in b.tail()
    for d in (a, b):
        assert ("consumer: confluent-kafka" in d.log.read_text()) == (client == "confluent")
    assert not list(tmp_path.glob("ckpt-*/**/*.ckpt"))

    got, _ = _changelog_state(kafka, state, topic, f"g-{name}")
    want, ids = _reference(kafka, model_path, tmp_path, topic, records)
    _assert_same(got, want)
    assert _alert_ids(kafka, f"{name}-alerts") == ids


def test_incremental_checkpoints_hand_over_a_chain(
    kafka: str,
    model_path: Path,
    tmp_path: Path,
) -> None:
    """checkpoint.full_every: 3: A writes a full generation and deltas (one per slice
    of input), stops; B, in a fresh directory, restores the chain (full + deltas) and
    goes on. The end state is the uninterrupted run's."""
    run = uuid.uuid4().hex[:6]
    name, topic, state = f"ki-{run}", f"ki-{run}-events", f"ki-{run}-state"
    _create_topics(kafka, {topic: PARTITIONS, f"{name}-alerts": 1, f"{name}-dlq": 1})
    records = _records(_fleet(n_streams=16, n_steps=500))
    half = len(records) // 2
    port = _free_port()
    ckpt = {"topic": state, "full_every": 3}
    cfg_a = _kafka_store(_config(tmp_path, kafka, model_path, topic, name, port,
                                 ckpt_name="a", file_name="a"), **ckpt)  # fmt: skip
    cfg_b = _kafka_store(_config(tmp_path, kafka, model_path, topic, name, port,
                                 ckpt_name="b", file_name="b"), **ckpt)  # fmt: skip
    a = Daemon(cfg_a, port, tmp_path / "a.log")
    bounds = [0, half // 3, 2 * half // 3, half]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        n0 = a.metric("streamlstm_checkpoint_duration_seconds_count") or 0
        _produce(kafka, topic, records[lo:hi])
        a.wait_for(lambda hi=hi: a.processed() >= hi, what=f"{hi} records")
        a.wait_for(
            lambda n0=n0: (a.metric("streamlstm_checkpoint_duration_seconds_count") or 0) > n0,
            what="a checkpoint of the slice",
        )
    assert a.wait(signal.SIGTERM) == 0, a.tail()
    store = KafkaCheckpointStore(
        KafkaConfig(bootstrap_servers=(kafka,), group_id=f"g-{name}"), "sensors", state
    )
    try:
        kinds = [ck.meta["kind"] for p in range(PARTITIONS) if (ck := store.read(topic, p))]
    finally:
        store.close()
    assert "delta" in kinds, f"newest generations {kinds}: B would restore no chain"

    _produce(kafka, topic, records[half:])
    b = Daemon(cfg_b, port, tmp_path / "b.log")
    b.wait_for(lambda: b.processed() >= len(records) - half, what="the rest")
    assert b.wait(signal.SIGTERM) == 0, b.tail()
    assert b.tail().count("resuming from checkpoint") == PARTITIONS

    got, offsets = _changelog_state(kafka, state, topic, f"g-{name}")
    assert sum(offsets) == len(records)
    want, ids = _reference(kafka, model_path, tmp_path, topic, records)
    _assert_same(got, want)
    assert _alert_ids(kafka, f"{name}-alerts") == ids
