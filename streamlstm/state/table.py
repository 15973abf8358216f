"""StreamTable: stream key -> slot, and per-slot state rows.

The table does not know what the rows mean: the detector declares named
columns (``h``, ``c``, forecast, scorer statistics, alert state, ...) with
their per-row shape and dtype, and the kernels update them in place by slot.
The table owns what is about keys: the slot map, growth, the cap on live
streams with least-recently-seen eviction, the idle TTL, the group of each
stream (the daemon uses the Kafka partition), and snapshot/restore of any
subset of streams that round-trips exactly.

Decisions:
- "Recently seen" is counted in batches (a sequence number), not wall-clock
  time, so a replay evicts exactly what the live run evicted.
- The idle TTL is measured in *event time* against the stream's last event,
  for the same reason; the caller says what "now" is.
- When the cap is hit, the stalest streams not used by the current batch
  are evicted in chunks of at least 1/256 of the cap, so a flood of new keys
  costs one partial sort per chunk instead of one per key.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streamlstm.errors import CheckpointError

SNAPSHOT_FORMAT = 1


@dataclass(frozen=True)
class Column:
    """A per-slot state array: row shape (after the slot axis) and dtype.

    ``grows``: a newer version may append entries to the row's first axis, each
    meaning "not learnt yet" at zero (the regime scorer's statistics); a snapshot
    with fewer of them is restored with the new ones at zero, so an upgrade keeps
    every stream's state instead of refusing its checkpoints.
    """

    shape: tuple[int, ...]
    dtype: str
    grows: bool = False


class StreamTable:
    """Slots for up to ``max_streams`` live streams, each with state rows.

    >>> t = StreamTable({"h": Column((2,), "float32")}, max_streams=10)
    >>> t.slots_for(["a", "b", "a"]).tolist()
    [0, 1, 0]
    >>> len(t), t.key_of(1)
    (2, 'b')
    """

    def __init__(
        self,
        columns: Mapping[str, Column],
        max_streams: int = 1_000_000,
        initial_capacity: int = 1024,
    ) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        self.columns = dict(columns)
        self.max_streams = max_streams
        cap = max(1, min(initial_capacity, max_streams))
        self.arrays: dict[str, np.ndarray] = {
            name: np.zeros((cap, *col.shape), col.dtype) for name, col in self.columns.items()
        }
        self.group = np.full(cap, -1, np.int32)
        self.last_time = np.zeros(cap, np.float64)
        self.touched = np.zeros(cap, np.int64)
        self._keys: list[str | None] = [None] * cap
        self._index: dict[str, int] = {}
        self._free: list[int] = list(range(cap - 1, -1, -1))
        self._seq = 0
        self.evicted_lru = 0
        self.evicted_idle = 0
        # Incremental checkpoints need the streams that left since the last one: when
        # set, every released stream is logged as (key, group) until take_released().
        self.log_released = False
        self._released: list[tuple[str, int]] = []

    # -- sizes -------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.group.shape[0]

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        return list(self._index)

    def slot(self, key: str) -> int:
        return self._index[key]

    def key_of(self, slot: int) -> str:
        key = self._keys[slot]
        if key is None:
            raise KeyError(f"slot {slot} is free")
        return key

    def bytes_per_stream(self) -> int:
        """State bytes one stream occupies (rows of every column + bookkeeping)."""
        per = sum(
            int(np.prod(c.shape, dtype=np.int64)) * np.dtype(c.dtype).itemsize
            for c in self.columns.values()
        )
        return per + 4 + 8 + 8

    def state_bytes(self) -> int:
        return self.capacity * self.bytes_per_stream()

    # -- slots -------------------------------------------------------------------
    def slots_for(self, keys: Sequence[str], group: int = 0) -> np.ndarray:
        """Slots of ``keys`` (int64), creating new streams in ``group`` as needed."""
        self._seq += 1
        seq = self._seq
        if len(keys) == 1:
            # One event of a known stream (the daemon's common case at low rates):
            # the loop and the masked fancy index below cost ~0.6 us more.
            s1 = self._index.get(keys[0])
            if s1 is not None:
                self.touched[s1] = seq
                return np.array([s1], np.int64)
        out = np.empty(len(keys), np.int64)
        index = self._index
        new_at: list[int] = []
        for i, key in enumerate(keys):
            s = index.get(key)
            if s is None:
                new_at.append(i)
                out[i] = -1
            else:
                out[i] = s
        if len(out):
            known = out[out >= 0]
            self.touched[known] = seq
        if new_at:
            fresh: dict[str, int] = {}
            for i in new_at:
                key = keys[i]
                s = fresh.get(key)
                if s is None:
                    s = self._allocate(key, group, seq)
                    fresh[key] = s
                out[i] = s
        return out

    def _allocate(self, key: str, group: int, seq: int) -> int:
        if not self._free:
            if self.capacity < self.max_streams:
                self._grow(min(self.max_streams, self.capacity * 2))
            else:
                self._evict_lru(seq)
        s = self._free.pop()
        self._keys[s] = key
        self._index[key] = s
        self.group[s] = group
        self.touched[s] = seq
        self.last_time[s] = 0.0
        for arr in self.arrays.values():
            arr[s] = 0
        return s

    def _grow(self, new_cap: int) -> None:
        old = self.capacity

        def grow(a: np.ndarray, fill: float = 0) -> np.ndarray:
            b = np.full((new_cap, *a.shape[1:]), fill, a.dtype)
            b[:old] = a
            return b

        self.arrays = {name: grow(a) for name, a in self.arrays.items()}
        self.group = grow(self.group, -1)
        self.last_time = grow(self.last_time)
        self.touched = grow(self.touched)
        self._keys.extend([None] * (new_cap - old))
        self._free.extend(range(new_cap - 1, old - 1, -1))

    def _evict_lru(self, seq: int) -> None:
        live = np.flatnonzero(self.group >= 0)
        candidates = live[self.touched[live] < seq]
        if candidates.size == 0:
            raise OverflowError(
                f"one batch uses more than max_streams={self.max_streams} distinct streams"
            )
        chunk = min(candidates.size, max(1, self.max_streams // 256))
        part = np.argpartition(self.touched[candidates], chunk - 1)[:chunk]
        victims = candidates[part]
        # Evict oldest first so that ties break the same way every run.
        victims = victims[np.lexsort((victims, self.touched[victims]))]
        self._release(victims)
        self.evicted_lru += len(victims)

    def _release(self, slots: Iterable[int]) -> list[str]:
        gone = []
        for s in slots:
            s = int(s)
            key = self._keys[s]
            if key is None:
                continue
            del self._index[key]
            if self.log_released:
                self._released.append((key, int(self.group[s])))
            self._keys[s] = None
            self.group[s] = -1
            self._free.append(s)
            gone.append(key)
        return gone

    def expire(self, now: float, ttl: float) -> list[str]:
        """Evict streams whose last event is older than ``now - ttl``; returns their keys."""
        live = np.flatnonzero(self.group >= 0)
        idle = live[self.last_time[live] < now - ttl]
        gone = self._release(idle)
        self.evicted_idle += len(gone)
        return gone

    def drop(self, group: int | None = None, keys: Iterable[str] | None = None) -> list[str]:
        """Forget streams (all of ``group`` or the given keys) without counting an eviction."""
        return self._release(self._select(group, keys))

    @property
    def seq(self) -> int:
        """The batch sequence number: a stream changed after ``seq`` has ``touched > seq``."""
        return self._seq

    def take_released(self) -> list[tuple[str, int]]:
        """The (key, group) of streams released since the last call (see log_released)."""
        out, self._released = self._released, []
        return out

    def _select(self, group: int | None, keys: Iterable[str] | None) -> np.ndarray:
        if keys is not None:
            return np.array([self._index[k] for k in keys if k in self._index], np.int64)
        live = np.flatnonzero(self.group >= 0)
        if group is None:
            return live
        return live[self.group[live] == group]

    # -- snapshot / restore ----------------------------------------------------------
    def snapshot(
        self,
        group: int | None = None,
        keys: Iterable[str] | None = None,
        changed_after: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Arrays holding the chosen streams' keys and rows (plain ndarrays, no pickle);
        ``changed_after``: only streams seen in a batch after that :attr:`seq`."""
        slots = np.sort(self._select(group, keys))
        if changed_after is not None:
            slots = slots[self.touched[slots] > changed_after]
        encoded = [self._keys[s].encode() for s in slots]  # type: ignore[union-attr]
        lengths = np.array([len(b) for b in encoded], np.int64)
        snap = {
            "format": np.array([SNAPSHOT_FORMAT], np.int64),
            "key_bytes": np.frombuffer(b"".join(encoded), np.uint8).copy(),
            "key_len": lengths,
            "group": self.group[slots].copy(),
            "last_time": self.last_time[slots].copy(),
            "touched": self.touched[slots].copy(),
        }
        for name, arr in self.arrays.items():
            snap[f"col.{name}"] = arr[slots].copy()
        return snap

    def restore(self, snap: Mapping[str, np.ndarray], group: int | None = None) -> list[str]:
        """Load streams from a snapshot (replacing streams with the same keys); returns
        the keys loaded. Beyond ``max_streams`` the least recently seen are evicted,
        restored ones included."""
        try:
            if int(snap["format"][0]) != SNAPSHOT_FORMAT:
                raise CheckpointError(f"snapshot format {int(snap['format'][0])} is not supported")
            lengths = snap["key_len"]
            raw = snap["key_bytes"].tobytes()
            ends = np.cumsum(lengths)
            keys = [
                raw[e - n : e].decode()
                for e, n in zip(ends.tolist(), lengths.tolist(), strict=True)
            ]
            have = sorted(k[4:] for k in snap if k.startswith("col."))
            lacking = [name for name in self.columns if f"col.{name}" not in snap]
            if lacking:
                raise CheckpointError(
                    f"snapshot lacks state column(s) {', '.join(lacking)} (it has "
                    f"{', '.join(have)}): it was written with other detector settings "
                    "(e.g. stream_norm) or another model; run with the settings it was "
                    "written with, or start from a fresh state"
                )
            cols = {}
            for name, col in self.columns.items():
                arr = cols[name] = _grown(snap[f"col.{name}"], col)
                if arr.shape[1:] != col.shape or arr.dtype != np.dtype(col.dtype):
                    raise CheckpointError(
                        f"snapshot column {name!r} has rows {arr.shape[1:]} {arr.dtype}, "
                        f"expected {col.shape} {col.dtype}; was it written for another model?"
                    )
        except KeyError as exc:
            raise CheckpointError(f"snapshot lacks {exc.args[0]!r}") from exc
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"snapshot keys are not UTF-8: {exc}") from exc
        # Stalest first, each allowed to evict what is no newer than itself: a snapshot
        # larger than the room left (a lowered max_streams, a partition from another
        # replica) keeps its most recently seen streams under the cap, not an OverflowError.
        for i in np.argsort(snap["touched"], kind="stable").tolist():
            key = keys[i]
            g = int(snap["group"][i]) if group is None else group
            s = self._index.get(key)
            if s is None:
                try:
                    s = self._allocate(key, g, int(snap["touched"][i]) + 1)
                except OverflowError:  # the table is full of newer streams
                    self.evicted_lru += 1
                    continue
            self.group[s] = g
            self.touched[s] = snap["touched"][i]
            self.last_time[s] = snap["last_time"][i]
            for name, arr in self.arrays.items():
                arr[s] = cols[name][i]
        if len(snap["touched"]):
            self._seq = max(self._seq, int(np.max(snap["touched"])))
        return [k for k in keys if k in self._index]


def _grown(arr: np.ndarray, col: Column) -> np.ndarray:
    """``arr`` padded with zero entries on its row's first axis up to ``col``'s, when the
    column ``grows`` and only that axis is shorter; otherwise ``arr`` as it is."""
    if (
        not col.grows
        or arr.ndim != len(col.shape) + 1
        or arr.shape[2:] != col.shape[1:]
        or arr.shape[1] >= col.shape[0]
        or arr.dtype != np.dtype(col.dtype)
    ):
        return arr
    out = np.zeros((arr.shape[0], *col.shape), arr.dtype)
    out[:, : arr.shape[1]] = arr
    return out


def snapshot_keys(snap: Mapping[str, np.ndarray]) -> list[str]:
    """The stream keys a snapshot holds, in its order (no validation: see restore)."""
    raw = snap["key_bytes"].tobytes()
    ends = np.cumsum(snap["key_len"]).tolist()
    return [raw[e - n : e].decode() for e, n in zip(ends, snap["key_len"].tolist(), strict=True)]


def snapshot_to_bytes(snap: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **snap)  # type: ignore[arg-type]  # numpy stubs read **kw as allow_pickle
    return buf.getvalue()


def snapshot_from_bytes(data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile/ValueError/EOFError on a damaged file
        raise CheckpointError(f"snapshot is unreadable: {exc}") from exc
