"""KafkaCheckpointStore on the real local broker: chunks, manifests, torn generations,
and the committed offset never ahead of the state."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest

from streamlstm.cli.demo import persistence_model
from streamlstm.detector import Detector, DetectorConfig
from streamlstm.examples.synth import FleetSpec, generate_fleet
from streamlstm.kafka.config import KafkaConfig
from streamlstm.service.changelog_store import KafkaCheckpointStore, split_chunks
from streamlstm.service.checkpoint_store import CheckpointLost
from streamlstm.service.incremental import DeltaTracker

SEED = 5


def _store(broker: Any, name: str, **kw: Any) -> KafkaCheckpointStore:
    kafka = KafkaConfig(bootstrap_servers=(broker.bootstrap,), group_id=f"g-{name}")
    return KafkaCheckpointStore(kafka, "pipe", f"{name}-state", chunk_bytes=4096, **kw)


def _snapshot(steps: int) -> dict[str, np.ndarray]:
    fleet = generate_fleet(FleetSpec(n_streams=12, n_steps=steps, anomaly_rate=1.0, seed=SEED))
    det = Detector(persistence_model(fleet.values), DetectorConfig())
    keys, times, x, _ = fleet.events()
    det.process_many(keys.tolist(), times, x, group=3)
    return det.table.snapshot(group=3)


def _equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_split_chunks_round_trips() -> None:
    data = bytes(range(256)) * 41
    parts = split_chunks(data, 1000)
    assert [len(p) for p in parts[:-1]] == [1000] * (len(parts) - 1)
    assert b"".join(parts) == data
    assert split_chunks(b"", 10) == [b""]


def test_generations_round_trip_and_a_torn_one_is_ignored(broker: Any) -> None:
    name = f"cl-{uuid.uuid4().hex[:6]}"
    store = _store(broker, name)
    try:
        assert store.read("ev", 3) is None
        s1, s2 = _snapshot(40), _snapshot(80)
        store.write("ev", 3, 100, s1, {"model_sha256": "x"})
        info = store.write("ev", 3, 200, s2)
        assert info.size > 4096  # several chunks
        other = _store(broker, name)  # another replica: nothing cached
        ck = other.read("ev", 3)
        assert ck is not None and ck.next_offset == 200
        _equal(ck.snapshot, s2)
        assert len(ck.meta["chunks"]) > 1
        # Torn generation 3: every chunk, no manifest -> generation 2 is read.
        store.send_chunks("ev", 3, 3, b"garbage" * 2000, 300, None)
        ck = _store(broker, name).read("ev", 3)
        assert ck is not None and ck.next_offset == 200
        # Generation 3 whose manifest names a damaged chunk (wrong CRC), and generation 4
        # whose manifest points at an offset holding another record (a missing chunk).
        doc = store.send_chunks("ev", 3, 3, b"x" * 9000, 300, None)
        doc["chunks"][1][2] ^= 1
        store.send_manifest("ev", 3, doc)
        doc = store.send_chunks("ev", 3, 4, b"y" * 9000, 400, None)
        doc["chunks"][0][0] -= 1
        store.send_manifest("ev", 3, doc)
        ck = _store(broker, name).read("ev", 3)
        assert ck is not None and ck.next_offset == 200
        _equal(ck.snapshot, s2)
        # Another partition in the same changelog is independent.
        assert store.read("ev", 4) is None
        other.close()
    finally:
        store.close()


def test_every_generation_torn_is_state_lost(broker: Any) -> None:
    name = f"cl-{uuid.uuid4().hex[:6]}"
    store = _store(broker, name)
    try:
        doc = store.send_chunks("ev", 0, 1, b"z" * 5000, 10, None)
        doc["chunks"][0][1] += 1
        store.send_manifest("ev", 0, doc)
        with pytest.raises(CheckpointLost, match="size/CRC"):
            store.read("ev", 0)
    finally:
        store.close()


def test_committed_offset_ahead_of_the_state_is_state_lost(broker: Any) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    name = f"cl-{uuid.uuid4().hex[:6]}"
    broker.create_topics({f"{name}-ev": 2})
    store = _store(broker, name)
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=f"g-{name}")
    try:
        store.write(f"{name}-ev", 0, 50, _snapshot(30))
        tp = TopicPartition(f"{name}-ev", 0)
        c.commit({tp: OffsetAndMetadata(50, "", -1)})
        ck = _store(broker, name).read(f"{name}-ev", 0)
        assert ck is not None and ck.next_offset == 50  # commit == state: fine
        c.commit({tp: OffsetAndMetadata(80, "", -1)})
        with pytest.raises(CheckpointLost, match="committed offset 80"):
            _store(broker, name).read(f"{name}-ev", 0)
        c.commit({TopicPartition(f"{name}-ev", 1): OffsetAndMetadata(5, "", -1)})
        with pytest.raises(CheckpointLost, match="missing"):
            _store(broker, name).read(f"{name}-ev", 1)
    finally:
        c.close()
        store.close()


def test_a_state_that_shows_a_moment_after_the_commit_is_not_lost(broker: Any) -> None:
    """The replica that wrote a generation and committed may have done so a moment ago:
    a read that finds the state behind the committed offset reads again before it
    declares the state lost (LAGGING_READS, LAGGING_PAUSE_S apart)."""
    import threading

    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from streamlstm.service import changelog_store as CS

    name = f"cl-{uuid.uuid4().hex[:6]}"
    broker.create_topics({f"{name}-ev": 1})
    store = _store(broker, name)
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=f"g-{name}")
    try:
        store.write(f"{name}-ev", 0, 50, _snapshot(30))
        c.commit({TopicPartition(f"{name}-ev", 0): OffsetAndMetadata(80, "", -1)})
        late = threading.Timer(
            CS.LAGGING_PAUSE_S / 2, lambda: store.write(f"{name}-ev", 0, 80, _snapshot(30))
        )
        late.start()
        ck = _store(broker, name).read(f"{name}-ev", 0)
        late.join()
        assert ck is not None and ck.next_offset == 80
    finally:
        c.close()
        store.close()


def test_a_chain_of_deltas_restores_the_full_state(broker: Any) -> None:
    """full_every=3: full, delta, delta, full, delta; a fresh reader merges the chain of
    the newest complete generation; a torn newest delta falls back to the one before."""
    name = f"cl-{uuid.uuid4().hex[:6]}"
    store = _store(broker, name, full_every=3)
    fleet = generate_fleet(FleetSpec(n_streams=30, n_steps=60, anomaly_rate=1.0, seed=SEED))
    det = Detector(persistence_model(fleet.values), DetectorConfig(max_streams=25))
    tracker = DeltaTracker(det.table, full_every=3)
    keys, times, x, _ = fleet.events()
    fulls: list[dict[str, np.ndarray]] = []
    try:
        for i, part in enumerate(np.array_split(np.arange(len(keys)), 5)):
            det.process_many(keys[part].tolist(), times[part], x[part], group=0)
            snap, kind = tracker.snapshot(0)
            store.write("ev", 0, 100 * (i + 1), snap, kind)
            tracker.written(0)
            fulls.append(det.table.snapshot(group=0))
            ck = _store(broker, name).read("ev", 0)
            assert ck is not None and ck.next_offset == 100 * (i + 1)
            assert ck.meta["kind"] == ("full" if i in (0, 3) else "delta")
            _equal(ck.snapshot, fulls[-1])
        assert det.table.evicted_lru > 0
        # A delta whose chunk is damaged: the generation before it (a full one) is used.
        snap, kind = tracker.snapshot(0)
        doc = store.send_chunks("ev", 0, 6, b"q" * 5000, 600, kind)
        doc.update(kind="delta", chain=store._chain[("ev", 0)])
        doc["chunks"][0][2] ^= 1
        store.send_manifest("ev", 0, doc)
        ck = _store(broker, name).read("ev", 0)
        assert ck is not None and ck.next_offset == 500
        _equal(ck.snapshot, fulls[-1])
    finally:
        store.close()


def test_a_store_that_read_before_sees_what_others_wrote_since(broker: Any) -> None:
    """The reader of a replica is reused across rebalances: what another replica wrote
    after its previous read of the same changelog partition must be found."""
    name = f"cl-{uuid.uuid4().hex[:6]}"
    mine, other = _store(broker, name), _store(broker, name)
    try:
        other.write("ev", 1, 10, _snapshot(20))
        ck = mine.read("ev", 1)
        assert ck is not None and ck.next_offset == 10
        other.write("ev", 1, 20, _snapshot(30))
        other.write("ev", 1, 30, _snapshot(40))
        ck = mine.read("ev", 1)
        assert ck is not None and ck.next_offset == 30
    finally:
        mine.close()
        other.close()
