"""Incremental checkpoints: a full generation merged with its deltas equals the full
snapshot taken at the same moment, through LRU and idle evictions and re-created
streams."""

from __future__ import annotations

import numpy as np
import pytest

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.errors import CheckpointError
from streamlstm.model import Model
from streamlstm.service.incremental import DeltaTracker, encode_keys, merge
from streamlstm.state import snapshot_keys

FEATURES = ("a", "b")


def _by_key(snap: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    rows = [k for k in snap if k not in ("format", "key_bytes", "key_len")]
    return {k: {r: snap[r][i] for r in rows} for i, k in enumerate(snapshot_keys(snap))}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    ka, kb = _by_key(a), _by_key(b)
    assert sorted(ka) == sorted(kb)
    for key, row in ka.items():
        assert sorted(row) == sorted(kb[key])
        for col, v in row.items():
            np.testing.assert_array_equal(v, kb[key][col], err_msg=f"{key} {col}")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_plus_deltas_equals_the_full_snapshot(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cfg = DetectorConfig(max_streams=40, idle_ttl_s=300.0, warmup=2)
    det = Detector(Model.random(FEATURES, hidden=4, seed=3), cfg)
    other = 7  # streams of another partition: never in group 0's checkpoints
    tracker = DeltaTracker(det.table, full_every=4)
    restored: dict[str, np.ndarray] | None = None
    kinds = []
    t = 0.0
    for step in range(30):
        n = int(rng.integers(1, 30))
        keys = [f"k{int(i)}" for i in rng.integers(0, 70 if step % 5 else 8, n)]
        times = t + np.arange(n, dtype=np.float64)
        t += n + float(rng.choice([1.0, 1000.0], p=[0.8, 0.2]))  # some gaps: idle expiry
        g = other if step % 3 == 0 else 0
        det.process_many(keys, times, rng.normal(size=(n, 2)), group=g)
        det.expire(t)
        snap, meta = tracker.snapshot(0)
        kinds.append(meta["kind"])
        restored = snap if meta["kind"] == "full" else merge(restored, snap)  # type: ignore[arg-type]
        tracker.written(0)
        _assert_same(restored, det.table.snapshot(group=0))
    assert kinds[:5] == ["full", "delta", "delta", "delta", "full"]
    assert det.table.evicted_lru > 0 and det.table.evicted_idle > 0


def test_a_delta_holds_only_what_changed_and_what_left() -> None:
    det = Detector(Model.random(FEATURES, hidden=4, seed=3), DetectorConfig(max_streams=3))
    tracker = DeltaTracker(det.table, full_every=10)
    det.process_many(["a", "b", "c"], [1.0, 1.0, 1.0], np.zeros((3, 2)), group=0)
    snap, meta = tracker.snapshot(0)
    tracker.written(0)
    assert meta["kind"] == "full" and len(snap["key_len"]) == 3
    det.process_many(["a", "d"], [2.0, 2.0], np.zeros((2, 2)), group=0)  # d evicts b (LRU)
    snap, meta = tracker.snapshot(0)
    assert meta["kind"] == "delta"
    assert snapshot_keys(snap) == sorted(snapshot_keys(snap), key=det.table.slot)
    assert set(snapshot_keys(snap)) == {"a", "d"}
    assert snap["removed_len"].tolist() == [1] and snap["removed_bytes"].tobytes() == b"b"
    # Forgetting a group (assigned again): the next one is full.
    tracker.forget(0)
    assert tracker.snapshot(0)[1]["kind"] == "full"


def test_a_delta_of_other_columns_is_refused() -> None:
    base = {"format": np.array([1]), "key_len": np.array([1]),
            "key_bytes": np.frombuffer(b"a", np.uint8), "col.h": np.zeros((1, 2))}  # fmt: skip
    delta = dict(base, **{"col.x": np.zeros((1, 2))})
    delta["removed_bytes"], delta["removed_len"] = encode_keys([])
    with pytest.raises(CheckpointError, match="columns differ"):
        merge(base, delta)
