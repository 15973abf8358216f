"""StreamTable: growth, LRU cap, idle TTL, snapshot of subsets."""

from __future__ import annotations

import numpy as np
import pytest

from streamlstm.errors import CheckpointError
from streamlstm.state import Column, StreamTable, snapshot_from_bytes, snapshot_to_bytes

COLS = {"h": Column((2, 3), "float32"), "n": Column((), "int64")}


def test_grows_and_keeps_rows():
    t = StreamTable(COLS, max_streams=100, initial_capacity=2)
    slots = t.slots_for([f"k{i}" for i in range(10)])
    t.arrays["h"][slots] = np.arange(10, dtype=np.float32)[:, None, None]
    assert t.capacity >= 10 and len(t) == 10
    assert t.arrays["h"][t.slot("k7"), 1, 2] == 7.0


def test_cap_evicts_least_recently_seen_and_counts():
    t = StreamTable(COLS, max_streams=4, initial_capacity=4)
    t.slots_for(["a", "b", "c", "d"])
    t.slots_for(["a"])  # a is fresh again; b is now the stalest
    t.slots_for(["e"])
    assert "b" not in t and "a" in t and "e" in t
    assert t.evicted_lru == 1
    # the evicted slot is reused with zeroed rows
    assert t.arrays["n"][t.slot("e")] == 0


def test_flood_of_new_keys_stays_bounded():
    t = StreamTable(COLS, max_streams=1000, initial_capacity=16)
    for b in range(50):
        t.slots_for([f"flood{b}-{i}" for i in range(100)])
        assert len(t) <= 1000 and t.capacity <= 1000
    assert t.evicted_lru >= 4000


def test_batch_larger_than_cap_is_an_error():
    t = StreamTable(COLS, max_streams=3)
    with pytest.raises(OverflowError, match="max_streams=3"):
        t.slots_for(["a", "b", "c", "d"])


def test_idle_ttl_in_event_time():
    t = StreamTable(COLS, max_streams=10)
    s = t.slots_for(["old", "new"])
    t.last_time[s] = [100.0, 1000.0]
    assert t.expire(now=1100.0, ttl=500.0) == ["old"]
    assert t.evicted_idle == 1 and list(t.keys()) == ["new"]


def test_snapshot_round_trip_with_unicode_keys_and_groups():
    t = StreamTable(COLS, max_streams=10)
    keys = ["pompe-é", "机器", "plain", ""]
    for g, k in enumerate(keys):
        s = t.slots_for([k], group=g % 2)
        t.arrays["h"][s] = g + 0.5
        t.arrays["n"][s] = g
    snap = snapshot_from_bytes(snapshot_to_bytes(t.snapshot(group=0)))
    u = StreamTable(COLS, max_streams=10)
    assert sorted(u.restore(snap)) == sorted([keys[0], keys[2]])
    for k in (keys[0], keys[2]):
        np.testing.assert_array_equal(u.arrays["h"][u.slot(k)], t.arrays["h"][t.slot(k)])
        assert u.arrays["n"][u.slot(k)] == t.arrays["n"][t.slot(k)]


def test_restore_refuses_other_shapes_and_garbage():
    t = StreamTable(COLS)
    t.slots_for(["a"])
    other = StreamTable({"h": Column((2, 4), "float32"), "n": Column((), "int64")})
    with pytest.raises(CheckpointError, match="written for another model"):
        other.restore(t.snapshot())
    with pytest.raises(CheckpointError, match="unreadable"):
        snapshot_from_bytes(b"garbage")


def test_restore_beyond_the_cap_keeps_the_most_recently_seen():
    """A checkpoint written under a larger max_streams (or another replica's partition
    on a full table) used to raise OverflowError at every start."""
    big = StreamTable(COLS, max_streams=100)
    for b in range(40):
        s = big.slots_for([f"k{b}-{i}" for i in range(2)])  # 80 streams, 2 per batch
        big.arrays["n"][s] = b
    small = StreamTable(COLS, max_streams=8, initial_capacity=8)
    small.slots_for(["live"])  # seen before every restored stream: evicted first
    small.touched[small.slot("live")] = 0
    got = small.restore(big.snapshot())
    assert len(small) <= 8 and "live" not in small and small.evicted_lru > 0
    assert set(got) == set(small.keys())
    # The survivors are the newest batches' streams, with their rows.
    assert set(small.keys()) <= {f"k{b}-{i}" for b in range(36, 40) for i in range(2)}
    for k in got:
        assert small.arrays["n"][small.slot(k)] == int(k[1:].split("-")[0])


def test_a_growing_column_restores_an_older_snapshot_with_its_new_entries_at_zero():
    # an upgrade that appends statistics to the regime scorer's rows keeps every
    # stream's state (the new entries start unlearnt) instead of refusing the checkpoint
    old = StreamTable({"s": Column((3, 2), "float32", grows=True)})
    s = old.slots_for(["a", "b"])
    old.arrays["s"][s] = np.arange(12, dtype=np.float32).reshape(2, 3, 2) + 1
    snap = snapshot_from_bytes(snapshot_to_bytes(old.snapshot()))
    new = StreamTable({"s": Column((5, 2), "float32", grows=True)})
    assert sorted(new.restore(snap)) == ["a", "b"]
    for k in ("a", "b"):
        row = new.arrays["s"][new.slot(k)]
        np.testing.assert_array_equal(row[:3], old.arrays["s"][old.slot(k)])
        assert not row[3:].any()
    # fewer entries than the snapshot's, another axis, or a column that does not grow:
    # still another model's state
    for col in (Column((2, 2), "float32", True), Column((5, 3), "float32", True),
                Column((5, 2), "float32")):  # fmt: skip
        with pytest.raises(CheckpointError, match="written for another model"):
            StreamTable({"s": col}).restore(snap)
