"""The compiled key map behaves exactly as the dict-based table it replaced.

Random sequences of batches (with repeated keys, unicode, empty and NUL keys,
groups), idle expiry, drops, snapshots and restores run on the StreamTable and
on tests/naive_table.py's dict-based one; after every step the slots, keys,
rows, bookkeeping, counters and snapshots must be identical. Plus the cases a
random walk rarely reaches: two keys whose 64-bit hashes are equal, heavy
churn through one small table, lone surrogates, damaged snapshots.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlstm.errors import CheckpointError
from streamlstm.kernels import keymap as KM
from streamlstm.state import Column, StreamTable, snapshot_from_bytes, snapshot_to_bytes
from tests.naive_table import NaiveStreamTable

COLS = {"h": Column((2,), "float32"), "n": Column((), "int64")}
POOL = ["a", "b", "c", "", "a\x00", "\x00", "pompe-é", "机器", "k" * 40, "A", "é", "b "]
POOL += [f"s{i}" for i in range(20)]

keys_st = st.lists(st.sampled_from(POOL), min_size=0, max_size=14)
op_st = st.one_of(
    st.tuples(st.just("batch"), keys_st, st.integers(0, 2)),
    st.tuples(st.just("expire"), st.floats(0, 50), st.floats(0, 20)),
    st.tuples(st.just("drop_group"), st.integers(0, 2)),
    st.tuples(st.just("drop_keys"), keys_st),
    st.tuples(st.just("snap"), st.sampled_from([None, 0, 1, 2]), st.booleans()),
)


def _live(t: StreamTable | NaiveStreamTable) -> dict[int, str]:
    return {int(s): t.key_of(int(s)) for s in np.flatnonzero(t.group >= 0)}


def _same(new: StreamTable, old: NaiveStreamTable) -> None:
    assert new.capacity == old.capacity and len(new) == len(old)
    assert _live(new) == _live(old)
    assert sorted(new.keys()) == sorted(old.keys())
    for k in old.keys():
        assert k in new and new.slot(k) == old.slot(k)
    np.testing.assert_array_equal(new.group, old.group)
    np.testing.assert_array_equal(new.touched, old.touched)
    np.testing.assert_array_equal(new.last_time, old.last_time)
    for name in COLS:
        np.testing.assert_array_equal(new.arrays[name], old.arrays[name])
    assert (new.evicted_lru, new.evicted_idle) == (old.evicted_lru, old.evicted_idle)
    assert new._seq == old._seq


def _snaps_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(op_st, min_size=1, max_size=40),
    max_streams=st.integers(1, 12),
    initial=st.integers(1, 5),
)
def test_same_as_the_dict_table(ops: list[tuple], max_streams: int, initial: int) -> None:
    new = StreamTable(COLS, max_streams=max_streams, initial_capacity=initial)
    old = NaiveStreamTable(COLS, max_streams=max_streams, initial_capacity=initial)
    clock = 0.0
    for op in ops:
        if op[0] == "batch":
            _, keys, g = op
            errs = []
            for t in (new, old):
                try:
                    slots = t.slots_for(keys, group=g)
                except OverflowError as exc:
                    errs.append(str(exc))
                    continue
                t.arrays["n"][slots] += 1
                t.arrays["h"][slots] = np.float32(clock)
                t.last_time[slots] = clock
            assert len(errs) in (0, 2), errs
            if not errs:
                np.testing.assert_array_equal(new.slots_for(keys, g), old.slots_for(keys, g))
            clock += 1.0
        elif op[0] == "expire":
            assert new.expire(op[1], op[2]) == old.expire(op[1], op[2])
        elif op[0] == "drop_group":
            assert new.drop(group=op[1]) == old.drop(group=op[1])
        elif op[0] == "drop_keys":
            assert new.drop(keys=op[1]) == old.drop(keys=op[1])
        else:
            _, g, drop_first = op
            a, b = new.snapshot(group=g), old.snapshot(group=g)
            _snaps_equal(a, b)
            a = snapshot_from_bytes(snapshot_to_bytes(a))
            if drop_first:
                assert new.drop(group=g) == old.drop(group=g)
            got = []
            for t in (new, old):
                try:
                    got.append(t.restore(a, group=None if g is None else (g + 1) % 3))
                except OverflowError as exc:
                    got.append(str(exc))
            assert got[0] == got[1]
        _same(new, old)


def test_equal_hashes_stay_two_streams() -> None:
    """A hash match is only a candidate: give "b" the hash of "a" and look it up."""
    t = StreamTable(COLS, max_streams=10)
    sa = int(t.slots_for(["a"])[0])
    buf = np.frombuffer(b"b", np.uint8)
    hb = KM._hash(buf, 0, 1, t._hseed)
    # Re-key slot a's record under b's hash, so a probe for "b" lands on it first.
    t._slot_hash[sa] = hb
    t._table[:] = KM.EMPTY
    KM._rebuild(t._table, t._slot_hash, t._krec)
    sb = int(t.slots_for(["b"])[0])
    assert sb != sa and len(t) == 2
    assert t.key_of(sa) == "a" and t.key_of(sb) == "b"
    assert int(t.slots_for(["b"])[0]) == sb
    # Deleting the first of the two (by slot: "a" now sits under b's hash) leaves the
    # second findable (the backward shift moves it into the hole).
    assert t._release_keys(np.array([sa])) == ["a"]
    assert t.slot("b") == sb and len(t) == 1


def test_churn_through_a_small_table_keeps_every_key_findable() -> None:
    """Many evictions and reuses: probe runs, deletions and arena compactions."""
    rng = np.random.default_rng(7)
    t = StreamTable(COLS, max_streams=300, initial_capacity=8)
    ref = NaiveStreamTable(COLS, max_streams=300, initial_capacity=8)
    for b in range(60):
        keys = [f"churn-{int(k)}-{'x' * int(k % 7)}" for k in rng.integers(0, 2000, 200)]
        np.testing.assert_array_equal(t.slots_for(keys, b % 3), ref.slots_for(keys, b % 3))
        if b % 10 == 9:
            t.last_time[:] = ref.last_time[:] = rng.random(t.capacity)
            assert t.expire(1.0, 0.5) == ref.expire(1.0, 0.5)
    assert t.evicted_lru == ref.evicted_lru > 1000
    assert _live(t) == _live(ref)
    # The arena holds at most twice the live key bytes plus one batch.
    live_bytes = sum(len(k.encode()) for k in t.keys())
    assert t._kbytes.shape[0] <= max(1024, 2 * (live_bytes + 200 * 40))


def test_lone_surrogate_keys_round_trip() -> None:
    """JSON can carry a lone surrogate ("\\ud800"): such a key is a stream like any."""
    t = StreamTable(COLS)
    keys = ["\ud800", "x\udfff", "plain"]
    slots = t.slots_for(keys)
    assert [t.key_of(int(s)) for s in slots] == keys
    u = StreamTable(COLS)
    assert u.restore(snapshot_from_bytes(snapshot_to_bytes(t.snapshot()))) == keys
    assert [u.slot(k) for k in keys] == slots.tolist()


def test_restore_reads_checkpoints_written_by_the_dict_table() -> None:
    old = NaiveStreamTable(COLS, max_streams=10)
    slots = old.slots_for(["é", "b", "c"], group=3)
    old.arrays["h"][slots] = [[1, 2], [3, 4], [5, 6]]
    snap = snapshot_from_bytes(snapshot_to_bytes(old.snapshot()))
    t = StreamTable(COLS, max_streams=10)
    assert t.restore(snap) == ["é", "b", "c"]
    np.testing.assert_array_equal(t.arrays["h"][t.slot("b")], [3, 4])
    assert t.group[t.slot("c")] == 3
    _snaps_equal(t.snapshot(), old.snapshot())


def test_damaged_key_lengths_are_a_checkpoint_error() -> None:
    t = StreamTable(COLS)
    t.slots_for(["abc", "de"])
    snap = t.snapshot()
    snap["key_len"] = np.array([3, 9], np.int64)
    with pytest.raises(CheckpointError, match="key lengths"):
        StreamTable(COLS).restore(snap)


def test_non_str_keys_are_refused_clearly() -> None:
    with pytest.raises(TypeError, match="stream keys must be str"):
        StreamTable(COLS).slots_for([1, 2])  # type: ignore[list-item]
