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
- Keys live in a compiled hash table (:mod:`streamlstm.kernels.keymap`), not a
  Python dict: a key costs ~50 bytes instead of ~500, and a batch's lookup
  tens of nanoseconds a key. Keys are compared byte for byte (UTF-8; a lone
  surrogate, which JSON can carry, is kept with ``surrogatepass``), never by
  hash alone. Slots are handed out in the same order as before (a stack of
  free slots), so results and snapshots are what they were; ``keys()`` lists
  the live keys in slot order.

Length: the table's one concept (keys, slots, rows, eviction, snapshots) in
one class; the compiled key map is in streamlstm.kernels.keymap.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streamlstm.errors import CheckpointError
from streamlstm.kernels import keymap as KM

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
        # The key map (see streamlstm.kernels.keymap for what each array holds).
        # A random hash seed: nothing depends on it but the bucket order, and a
        # producer cannot pick keys that pile into one probe run.
        self._hseed = np.uint64(int.from_bytes(os.urandom(8), "little"))
        self._slot_hash = np.zeros(cap, np.uint64)
        self._krec = np.full((cap, 2), -1, np.int64)
        self._kbytes = np.zeros(max(1024, 16 * cap), np.uint8)
        self._kinfo = np.zeros(KM.N_KINFO, np.int64)
        # Free slots, popped from the top: 0 first, as the list it replaces did.
        self._free = np.arange(cap - 1, -1, -1, dtype=np.int32)
        self._kinfo[KM.K_NFREE] = cap
        self._table = np.full(_buckets(cap), KM.EMPTY, np.uint64)
        self._seq = 0
        self.evicted_lru = 0
        self.evicted_idle = 0
        # Incremental checkpoints need the streams that left since the last one: when
        # set, every released stream is logged as (key, group) until take_released().
        self.log_released = False
        self._released: list[tuple[str, int]] = []
        # The slots the last slots_for() created (zeroed), for the detector to seed.
        self.last_new: np.ndarray = _NO_SLOTS

    # -- sizes -------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.group.shape[0]

    def __len__(self) -> int:
        return self.capacity - int(self._kinfo[KM.K_NFREE])

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and int(self._lookup([key])[0]) >= 0

    def keys(self) -> list[str]:
        """The live keys, in slot order."""
        return self._decode(np.flatnonzero(self._krec[:, 1] >= 0))

    def slot(self, key: str) -> int:
        s = int(self._lookup([key])[0])
        if s < 0:
            raise KeyError(key)
        return s

    def key_of(self, slot: int) -> str:
        if not 0 <= slot < self.capacity or self._krec[slot, 1] < 0:
            raise KeyError(f"slot {slot} is free")
        return self._decode(np.array([slot], np.int64))[0]

    def bytes_per_stream(self) -> int:
        """State bytes one stream occupies (rows of every column + bookkeeping)."""
        per = sum(
            int(np.prod(c.shape, dtype=np.int64)) * np.dtype(c.dtype).itemsize
            for c in self.columns.values()
        )
        return per + 4 + 8 + 8

    def key_bytes(self) -> int:
        """Bytes the key map holds: hash table, per-slot key records, key arena."""
        return sum(a.nbytes for a in (self._table, self._slot_hash, self._krec, self._free)) + int(
            self._kbytes.nbytes
        )

    def state_bytes(self) -> int:
        return self.capacity * self.bytes_per_stream() + self.key_bytes()

    # -- slots -------------------------------------------------------------------
    def slots_for(self, keys: Sequence[str], group: int = 0) -> np.ndarray:
        """Slots of ``keys`` (int64), creating new streams in ``group`` as needed."""
        self._seq += 1
        seq = self._seq
        self.last_new = _NO_SLOTS
        buf, offs = _encode(keys)
        n = offs.shape[0] - 1
        out = np.empty(n, np.int64)
        hashes = np.empty(n, np.uint64)
        tseq = np.full(n, seq, np.int64)
        missing = KM._find(
            buf, offs, self._hseed, self._table, self._krec, self._kbytes, True,
            self.touched, tseq, hashes, out,
        )  # fmt: skip
        if missing:
            self._insert(buf, offs, hashes, out, np.full(n, group, np.int32), tseq)
        return out

    def _lookup(self, keys: Sequence[str]) -> np.ndarray:
        """Slots of ``keys``, -1 where absent; changes nothing."""
        buf, offs = _encode(keys)
        n = offs.shape[0] - 1
        out = np.empty(n, np.int64)
        KM._find(
            buf, offs, self._hseed, self._table, self._krec, self._kbytes, False,
            self.touched, out, np.empty(n, np.uint64), out,
        )  # fmt: skip
        return out

    def _insert(
        self,
        buf: np.ndarray,
        offs: np.ndarray,
        hashes: np.ndarray,
        out: np.ndarray,
        gnew: np.ndarray,
        tseq: np.ndarray,
    ) -> None:
        """Resolve ``out < 0`` in order: keys seen earlier in the batch, else new slots
        (growing, or evicting the stalest streams at the cap, when none is free)."""
        n = out.shape[0]
        need = int(np.diff(offs)[out < 0].sum())
        self._reserve(need)
        new_slots = np.empty(n, np.int64)
        n_new = np.zeros(1, np.int64)
        i = 0
        try:
            while True:
                i = KM._insert(
                    i, buf, offs, hashes, self._table, self._slot_hash, self._krec,
                    self._kbytes, self._kinfo, self._free, self.group, self.touched,
                    self.last_time, gnew, tseq, out, new_slots, n_new,
                )  # fmt: skip
                if i == n:
                    break
                if self.capacity < self.max_streams:
                    self._grow(min(self.max_streams, self.capacity * 2))
                else:
                    self._evict_lru(int(tseq[i]))
        finally:
            # Also when a batch overflows the cap: streams created so far start clean.
            fresh = new_slots[: int(n_new[0])]
            for arr in self.arrays.values():
                arr[fresh] = 0
            self.last_new = fresh

    def _reserve(self, need: int) -> None:
        """Room for ``need`` more key bytes in the arena: compact it into a new one of
        twice the live bytes when full, so compactions cost O(1) a byte appended."""
        used = int(self._kinfo[KM.K_USED])
        if used + need <= self._kbytes.shape[0]:
            return
        live = used - int(self._kinfo[KM.K_GARBAGE])
        arena = np.zeros(max(1024, 2 * (live + need)), np.uint8)
        self._kinfo[KM.K_USED] = KM._compact(self._kbytes, self._krec, arena)
        self._kinfo[KM.K_GARBAGE] = 0
        self._kbytes = arena

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
        self._slot_hash = grow(self._slot_hash)
        self._krec = grow(self._krec, -1)
        nfree = int(self._kinfo[KM.K_NFREE])
        free = np.empty(new_cap, np.int32)
        free[:nfree] = self._free[:nfree]
        free[nfree : nfree + new_cap - old] = np.arange(new_cap - 1, old - 1, -1)
        self._free = free
        self._kinfo[KM.K_NFREE] = nfree + new_cap - old
        if _buckets(new_cap) != self._table.shape[0]:
            self._table = np.full(_buckets(new_cap), KM.EMPTY, np.uint64)
            KM._rebuild(self._table, self._slot_hash, self._krec)

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

    def _release(self, slots: np.ndarray) -> np.ndarray:
        """Free ``slots`` (in order; free ones are skipped); which of them were live."""
        slots = np.ascontiguousarray(slots, np.int64)
        if self.log_released and slots.size:
            live = slots[self._krec[slots, 1] >= 0]
            _, first = np.unique(live, return_index=True)
            live = live[np.sort(first)]
            self._released.extend(zip(self._decode(live), self.group[live].tolist(), strict=True))
        gone = np.empty(slots.shape[0], np.bool_)
        KM._release(
            slots, self._table, self._slot_hash, self._krec, self._kinfo, self._free,
            self.group, gone,
        )  # fmt: skip
        return gone

    def _release_keys(self, slots: np.ndarray) -> list[str]:
        slots = np.ascontiguousarray(slots, np.int64)
        # A slot listed twice is released once and named once.
        _, first = np.unique(slots, return_index=True)
        slots = slots[np.sort(first)]
        names = self._decode(slots)
        self._release(slots)
        return names

    def expire(self, now: float, ttl: float) -> list[str]:
        """Evict streams whose last event is older than ``now - ttl``; returns their keys."""
        live = np.flatnonzero(self.group >= 0)
        idle = live[self.last_time[live] < now - ttl]
        gone = self._release_keys(idle)
        self.evicted_idle += len(gone)
        return gone

    def drop(self, group: int | None = None, keys: Iterable[str] | None = None) -> list[str]:
        """Forget streams (all of ``group`` or the given keys) without counting an eviction."""
        return self._release_keys(self._select(group, keys))

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
            found = self._lookup(list(keys))
            return found[found >= 0]
        live = np.flatnonzero(self.group >= 0)
        if group is None:
            return live
        return live[self.group[live] == group]

    def _gather(self, slots: np.ndarray) -> tuple[bytes, np.ndarray]:
        """The key bytes of live ``slots`` back to back, and their lengths."""
        slots = np.ascontiguousarray(slots, np.int64)
        lengths = np.empty(slots.shape[0], np.int64)
        total = int(self._krec[slots, 1].sum()) if slots.size else 0
        raw = np.empty(total, np.uint8)
        KM._gather(slots, self._kbytes, self._krec, raw, lengths)
        return raw.tobytes(), lengths

    def _decode(self, slots: np.ndarray) -> list[str]:
        raw, lengths = self._gather(slots)
        return _split(raw, lengths)

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
        raw, lengths = self._gather(slots)
        snap = {
            "format": np.array([SNAPSHOT_FORMAT], np.int64),
            "key_bytes": np.frombuffer(raw, np.uint8).copy(),
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
            lengths = np.asarray(snap["key_len"], np.int64)
            raw = np.ascontiguousarray(snap["key_bytes"], np.uint8)
            n = lengths.shape[0]
            if lengths.ndim != 1 or (lengths < 0).any() or int(lengths.sum()) != raw.shape[0]:
                raise CheckpointError(
                    f"snapshot key lengths (sum {int(lengths.sum())}) do not match its "
                    f"{raw.shape[0]} key bytes"
                )
            keys = _split(raw.tobytes(), lengths)
            for name in ("group", "last_time", "touched"):
                if snap[name].shape != (n,):
                    raise CheckpointError(
                        f"snapshot {name!r} has shape {snap[name].shape}, expected ({n},)"
                    )
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
                arr = cols[name] = grown(snap[f"col.{name}"], col)
                if arr.shape[1:] != col.shape or arr.dtype != np.dtype(col.dtype):
                    raise CheckpointError(
                        f"snapshot column {name!r} has rows {arr.shape[1:]} {arr.dtype}, "
                        f"expected {col.shape} {col.dtype}; was it written for another model?"
                    )
        except KeyError as exc:
            raise CheckpointError(f"snapshot lacks {exc.args[0]!r}") from exc
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"snapshot keys are not UTF-8: {exc}") from exc
        if n == 0:
            return keys
        # Stalest first, each allowed to evict what is no newer than itself: a snapshot
        # larger than the room left (a lowered max_streams, a partition from another
        # replica) keeps its most recently seen streams under the cap, not an OverflowError.
        order = np.argsort(snap["touched"], kind="stable")
        touched = np.ascontiguousarray(np.asarray(snap["touched"], np.int64)[order])
        groups = snap["group"] if group is None else np.full(n, group)
        gnew = np.ascontiguousarray(np.asarray(groups)[order], np.int32)
        okeys = [keys[i] for i in order.tolist()]
        try:
            out = self._place(okeys, touched, gnew)
        except OverflowError:  # the table is full of newer streams: one key at a time
            out = np.full(n, -1, np.int64)
            for j, key in enumerate(okeys):
                try:
                    out[j] = self._place([key], touched[j : j + 1], gnew[j : j + 1])[0]
                except OverflowError:
                    self.evicted_lru += 1
        ok = out >= 0
        slots, src = out[ok], order[ok]
        self.group[slots] = gnew[ok]
        self.touched[slots] = touched[ok]
        self.last_time[slots] = np.asarray(snap["last_time"])[src]
        for name, arr in self.arrays.items():
            arr[slots] = cols[name][src]
        self._seq = max(self._seq, int(np.max(touched)))
        present = self._lookup(keys) >= 0
        return [k for k, p in zip(keys, present.tolist(), strict=True) if p]

    def _place(self, keys: list[str], touched: np.ndarray, gnew: np.ndarray) -> np.ndarray:
        """Slots for restored ``keys`` in order, each touched as its snapshot says and
        allowed to evict only streams seen no later (OverflowError: none such left)."""
        buf, offs = _encode(keys)
        m = offs.shape[0] - 1
        hashes = np.empty(m, np.uint64)
        out = np.empty(m, np.int64)
        KM._find(
            buf, offs, self._hseed, self._table, self._krec, self._kbytes, False,
            self.touched, touched, hashes, out,
        )  # fmt: skip
        # One pass in order (a key found is re-touched before the next key may evict).
        out[:] = -1
        self._insert(buf, offs, hashes, out, gnew, touched + 1)
        return out


_NO_SLOTS = np.empty(0, np.int64)


def _buckets(cap: int) -> int:
    """Hash-table size for ``cap`` slots: a power of two, load at most 1/2."""
    return 1 << max(3, int(2 * cap - 1).bit_length())


def _encode(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Keys as UTF-8 bytes back to back (uint8) and their offsets ((n + 1,) int64).

    ASCII keys (the common case) cost one join with a 0 byte between them and a few
    passes of numpy over its bytes, no Python object per key: the separators give the
    offsets (a length per key through ``map`` cost twice the rest). A key holding a 0
    byte itself takes the length pass.

    >>> data, offs = _encode(["ab", "", "c"])
    >>> data.tobytes(), offs.tolist()
    (b'abc', [0, 2, 2, 3])
    """
    if isinstance(keys, np.ndarray):
        keys = keys.tolist()
    n = len(keys)
    try:
        joined = "\0".join(keys)
    except TypeError as exc:
        raise TypeError(f"stream keys must be str: {exc}") from exc
    if n and joined.isascii():
        raw = np.frombuffer(joined.encode("ascii"), np.uint8)
        sep = np.flatnonzero(raw == 0)
        if sep.shape[0] == n - 1:
            offs = np.empty(n + 1, np.int64)
            offs[0] = 0
            offs[1:n] = sep - np.arange(n - 1)
            offs[n] = raw.shape[0] - (n - 1)
            return np.delete(raw, sep), offs
    if joined.isascii():
        data = "".join(keys).encode("ascii")
        lens = np.fromiter(map(len, keys), np.int64, n)
    else:
        enc = [k.encode("utf-8", "surrogatepass") for k in keys]
        data = b"".join(enc)
        lens = np.fromiter(map(len, enc), np.int64, n)
    offs = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=offs[1:])
    return np.frombuffer(data, np.uint8), offs


def _split(raw: bytes, lengths: np.ndarray) -> list[str]:
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends][:-1]
    if raw.isascii():
        text = raw.decode("ascii")
        return [text[a:e] for a, e in zip(starts, ends, strict=True)]
    return [raw[a:e].decode("utf-8", "surrogatepass") for a, e in zip(starts, ends, strict=True)]


def grown(arr: np.ndarray, col: Column) -> np.ndarray:
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
