"""Incremental checkpoints: write only the streams that changed since the last generation.

With ``checkpoint.full_every: N`` (> 1, ``store: kafka``) a partition's
checkpoints form chains: one full generation, then up to ``N - 1`` deltas,
each holding the rows of the streams seen in a batch since the previous
generation (:attr:`StreamTable.touched` after the table's :attr:`~StreamTable.seq`
at that generation) and the keys of the streams that left (evicted) since.
A restore reads the chain (at most ``N`` generations) and merges it
(:func:`merge`) into the full snapshot it stands for.

Decisions:
- A delta is exact because every change to a stream's rows happens in a batch
  that sets its ``touched``; the rows it carries keep their ``touched``, so
  LRU eviction after a restore is what it was.
- The first checkpoint of a partition after it is assigned (restored or
  cold) is always full: a replica never extends a chain it did not write,
  and a chain never outgrows ``N``.
- A delta arrives to the store as a snapshot with the extra arrays
  ``removed_bytes`` / ``removed_len`` and meta ``{"kind": "delta"}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamlstm.errors import CheckpointError
from streamlstm.state import StreamTable, snapshot_keys

_KEYS = ("format", "key_bytes", "key_len", "removed_bytes", "removed_len")


def encode_keys(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    enc = [k.encode() for k in keys]
    return (
        np.frombuffer(b"".join(enc), np.uint8).copy(),
        np.array([len(b) for b in enc], np.int64),
    )


def removed_keys(delta: Mapping[str, np.ndarray]) -> list[str]:
    raw = delta["removed_bytes"].tobytes()
    ends = np.cumsum(delta["removed_len"]).tolist()
    lens = delta["removed_len"].tolist()
    return [raw[e - n : e].decode() for e, n in zip(ends, lens, strict=True)]


def merge(base: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The full snapshot ``base`` followed by ``delta``: its removed streams gone, its
    rows replacing or adding streams."""
    try:
        d_keys = snapshot_keys(delta)
        drop = set(d_keys) | set(removed_keys(delta))
        b_keys = snapshot_keys(base)
        keep = np.array([i for i, k in enumerate(b_keys) if k not in drop], np.int64)
        out: dict[str, Any] = {"format": base["format"]}
        out["key_bytes"], out["key_len"] = encode_keys([b_keys[i] for i in keep] + d_keys)
        rows = [k for k in base if k not in _KEYS]
        if sorted(rows) != sorted(k for k in delta if k not in _KEYS):
            raise CheckpointError("a delta's columns differ from its base's")
        for name in rows:
            out[name] = np.concatenate([base[name][keep], delta[name]])
        return out
    except (KeyError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"cannot apply a delta checkpoint: {exc}") from exc


class DeltaTracker:
    """Decides full or delta per group and builds the snapshot to write.

    >>> from streamlstm.state import Column
    >>> t = StreamTable({"h": Column((1,), "float32")})
    >>> d = DeltaTracker(t, full_every=3)
    >>> _ = t.slots_for(["a", "b"], group=0)
    >>> snap, meta = d.snapshot(0); meta["kind"], len(snap["key_len"])
    ('full', 2)
    >>> d.written(0)
    >>> _ = t.slots_for(["b"], group=0)
    >>> snap, meta = d.snapshot(0); meta["kind"], snapshot_keys(snap)
    ('delta', ['b'])
    """

    def __init__(self, table: StreamTable, full_every: int = 1) -> None:
        self.table = table
        self.full_every = full_every
        table.log_released = full_every > 1
        self._since: dict[int, int] = {}  # group -> table seq at its last generation
        self._chain: dict[int, int] = {}  # group -> generations since its last full
        self._removed: dict[int, list[str]] = {}
        # group -> table seq of its snapshot not yet durable (a checkpoint's partitions
        # are snapshot together, then written on the writer's thread)
        self._pending: dict[int, int] = {}

    def snapshot(self, group: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        t = self.table
        for key, g in t.take_released():
            if g in self._since:
                self._removed.setdefault(g, []).append(key)
        self._pending[group] = t.seq
        n = self._chain.get(group)
        if self.full_every <= 1 or n is None or n + 1 >= self.full_every:
            return t.snapshot(group=group), {"kind": "full"}
        snap = t.snapshot(group=group, changed_after=self._since[group])
        snap["removed_bytes"], snap["removed_len"] = encode_keys(self._removed.get(group, []))
        return snap, {"kind": "delta"}

    def written(self, group: int) -> None:
        """The last snapshot built of ``group`` is durable."""
        seq = self._pending.pop(group)
        n = self._chain.get(group)
        full = self.full_every <= 1 or n is None or n + 1 >= self.full_every
        self._chain[group] = 0 if full else n + 1  # type: ignore[operator]
        self._since[group] = seq
        self._removed.pop(group, None)

    def forget(self, group: int) -> None:
        """``group`` was assigned or revoked: its next checkpoint is full."""
        self._since.pop(group, None)
        self._chain.pop(group, None)
        self._removed.pop(group, None)
        self._pending.pop(group, None)
