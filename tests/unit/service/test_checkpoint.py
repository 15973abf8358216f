"""CheckpointStore: atomic per-partition files that round-trip detector state exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.errors import CheckpointError
from streamlstm.model import Model
from streamlstm.service.checkpoint_store import CheckpointLost, CheckpointStore

SEED = 7


def _batch(rng: np.random.Generator, n: int, t0: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    keys = [f"s{int(k)}" for k in rng.integers(0, 20, n)]
    times = t0 + np.arange(n, dtype=np.float64)
    return keys, times, rng.normal(size=(n, 2))


def _detector() -> Detector:
    return Detector(Model.random(["a", "b"], hidden=8, seed=SEED), DetectorConfig(warmup=2))


def test_round_trip_restores_state_and_future_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(SEED)
    det = _detector()
    for part in (0, 1):
        keys, times, x = _batch(rng, 200, 0.0)
        det.process_many([f"{part}/{k}" for k in keys], times, x, np.arange(200), group=part)
    store = CheckpointStore(tmp_path, "pipe")
    for part in (0, 1):
        store.write("topic", part, 200, det.table.snapshot(group=part), {"model": "m"})

    fresh = _detector()
    for part in (0, 1):
        ck = store.read("topic", part)
        assert ck is not None and ck.next_offset == 200 and ck.meta["model"] == "m"
        fresh.table.restore(ck.snapshot, group=part)
    assert sorted(fresh.table.keys()) == sorted(det.table.keys())
    for key in det.table.keys():
        a, b = det.stream_state(key), fresh.stream_state(key)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])

    keys, times, x = _batch(rng, 300, 1000.0)
    keys = [f"1/{k}" for k in keys]
    r1 = det.process_many(keys, times, x, np.arange(300), group=1)
    r2 = fresh.process_many(keys, times, x, np.arange(300), group=1)
    np.testing.assert_array_equal(r1.score, r2.score)
    assert [t.alert_id for t in r1.transitions] == [t.alert_id for t in r2.transitions]


def test_keeps_only_newest_generations(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, "pipe", keep=2)
    snap = _detector().table.snapshot()
    for off in range(5):
        store.write("t", 0, off, snap)
    files = sorted(p.name for p in (tmp_path / "pipe" / "t").iterdir())
    assert files == ["p0-0000000004.ckpt", "p0-0000000005.ckpt"]
    assert store.read("t", 0).next_offset == 4  # type: ignore[union-attr]
    # A new store (a restarted daemon) continues the numbering.
    CheckpointStore(tmp_path, "pipe", keep=2).write("t", 0, 9, snap)
    assert store.read("t", 0).next_offset == 9  # type: ignore[union-attr]
    assert store.partitions("t") == [0]


def test_corrupt_newest_falls_back_to_previous(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, "pipe", keep=3)
    snap = _detector().table.snapshot()
    store.write("t", 2, 10, snap)
    info = store.write("t", 2, 20, snap)
    info.path.write_bytes(info.path.read_bytes()[: info.size // 2])  # torn write
    ck = store.read("t", 2)
    assert ck is not None and ck.next_offset == 10
    assert info.path.with_name(info.path.name + ".corrupt").exists()
    # The next write gets a fresh generation, newer than the corrupt one.
    store.write("t", 2, 15, snap)
    assert store.read("t", 2).next_offset == 15  # type: ignore[union-attr]


def test_missing_partition_reads_none_and_no_temp_files_left(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, "pipe")
    assert store.read("t", 0) is None
    store.write("t", 0, 1, _detector().table.snapshot())
    assert not [p for p in (tmp_path / "pipe" / "t").iterdir() if p.name.startswith(".")]


def test_restore_into_other_model_shape_is_a_checkpoint_error(tmp_path: Path) -> None:
    det = _detector()
    det.process_many(["x"], [0.0], [[1.0, 2.0]], [0], group=0)
    store = CheckpointStore(tmp_path, "pipe")
    store.write("t", 0, 1, det.table.snapshot(group=0))
    other = Detector(Model.random(["a", "b"], hidden=16), DetectorConfig())
    with pytest.raises(CheckpointError, match="another model"):
        other.table.restore(store.read("t", 0).snapshot, group=0)  # type: ignore[union-attr]


def test_unwritable_dir_is_a_checkpoint_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = CheckpointStore(blocker, "pipe")
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        store.write("t", 0, 1, _detector().table.snapshot())


def test_every_generation_unreadable_is_lost_loudly_and_nothing_is_moved(tmp_path: Path) -> None:
    """A torn file and one of a newer format: no state to restore. read() raises with
    every file and why, and renames nothing (a refusal to start must stay one)."""
    store = CheckpointStore(tmp_path, "pipe", keep=3)
    snap = _detector().table.snapshot()
    torn = store.write("t", 1, 10, snap)
    torn.path.write_bytes(torn.path.read_bytes()[:100])
    newer = store.write("t", 1, 20, snap, {"format": 99})
    with pytest.raises(CheckpointLost) as info:
        store.read("t", 1)
    lost = info.value
    assert (lost.topic, lost.partition) == ("t", 1)
    assert [p for p, _ in lost.failures] == [torn.path, newer.path]
    assert "unreadable" in lost.failures[0][1] and "format 99" in lost.failures[1][1]
    assert torn.path.exists() and newer.path.exists()
    assert store.read("t", 0) is None  # no files: nothing lost
    # Starting cold: the files are kept as *.corrupt, the next write comes after them.
    moved = store.quarantine("t", 1, lost.failures)
    assert [p.name for p in moved] == [torn.path.name + ".corrupt", newer.path.name + ".corrupt"]
    assert store.read("t", 1) is None
    assert store.write("t", 1, 5, snap).path.name == "p1-0000000003.ckpt"


def test_a_committed_partition_with_no_checkpoint_here_is_lost_state(tmp_path: Path) -> None:
    committed = {("events", 0): 800, ("events", 1): None}
    store = CheckpointStore(tmp_path, "p", committed=lambda t, p: committed[(t, p)])
    with pytest.raises(CheckpointLost) as info:
        store.read("events", 0)
    ((where, why),) = info.value.failures
    assert "committed offset 800" in why and "checkpoint.store: kafka" in why
    assert store.quarantine("events", 0, info.value.failures) == []  # nothing to move
    assert store.read("events", 1) is None  # never committed: a fresh start
    # a checkpoint of its own behind the committed offset is replayed from (exact state)
    store.write("events", 0, 400, {"format": np.array([1])})
    ck = store.read("events", 0)
    assert ck is not None and ck.next_offset == 400
