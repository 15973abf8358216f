"""The records of one partition as columns over one buffer: what a poll hands the loop.

kafka-python builds a Python object per record (6-15 us each here) that the
daemon reads three fields of and throws away. :class:`RecordColumns` is the
same records as arrays: offsets and timestamps, and for key, value and headers
a span (start, length) into one bytes buffer (the fetched bytes, or their
decompressed copy). The decoder scans values in place; a record becomes a
Python object (:meth:`RecordColumns.record`) only where one is needed: a
dead letter, or a value the compiled scanner leaves to the general decoder.

Null keys and values have length -1. Headers stay in Kafka's wire form (a
varint count of key/value pairs) until :meth:`RecordColumns.record` reads them,
unless the columns were built from record objects (:meth:`from_records`, for
tests and kafka-python's own reader of old message formats), which keep theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np


class Record(NamedTuple):
    """One record, made on demand from the columns (the fields the daemon reads)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass(frozen=True, eq=False)
class RecordColumns:
    """n records of one topic partition, in offset order.

    data: the buffer every span points into. offsets, timestamps (n,) int64
    (timestamps in ms since the epoch, -1 = none). keys, values (n, 2) int64:
    start and length in ``data`` (length -1 = null). headers (n, 2) int64: start
    of the record's header section in ``data`` and its header count.
    header_lists: per record its headers as (key, value) pairs, when the columns
    were built from record objects (then ``headers`` is unused).
    """

    topic: str
    partition: int
    data: bytes
    offsets: np.ndarray
    timestamps: np.ndarray
    keys: np.ndarray
    values: np.ndarray
    headers: np.ndarray
    header_lists: Sequence[list[tuple[str, bytes | None]]] | None = None

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def next_offset(self) -> int:
        """The offset after the last record (what to resume from)."""
        return int(self.offsets[-1]) + 1

    def value(self, i: int) -> bytes | None:
        a, n = self.values[i].tolist()
        return None if n < 0 else self.data[a : a + n]

    def key(self, i: int) -> bytes | None:
        a, n = self.keys[i].tolist()
        return None if n < 0 else self.data[a : a + n]

    def record(self, i: int) -> Record:
        """Record ``i`` as an object (cold path: dead letters, the general decoder)."""
        if self.header_lists is not None:
            hdrs = list(self.header_lists[i])
        else:
            pos, count = self.headers[i].tolist()
            hdrs = _read_headers(self.data, pos, count)
        return Record(
            self.topic, self.partition, int(self.offsets[i]), int(self.timestamps[i]),
            self.key(i), self.value(i), hdrs,
        )  # fmt: skip

    def take(self, rows: Sequence[int]) -> list[Record]:
        return [self.record(i) for i in rows]

    @staticmethod
    def from_records(topic: str, partition: int, records: Sequence[Any]) -> RecordColumns:
        """Columns of record objects (kafka-python's ``ConsumerRecord`` or any object with
        offset, timestamp, key, value, headers): for tests and old message formats.

        A timestamp that is not an integer (None) becomes -1, Kafka's "no timestamp".
        """
        n = len(records)
        parts: list[bytes] = []
        keys = np.empty((n, 2), np.int64)
        values = np.empty((n, 2), np.int64)
        pos = 0
        for i, r in enumerate(records):
            for col, b in ((keys, r.key), (values, r.value)):
                if b is None:
                    col[i] = (pos, -1)
                else:
                    b = bytes(b)
                    parts.append(b)
                    col[i] = (pos, len(b))
                    pos += len(b)
        stamps = [r.timestamp if type(r.timestamp) is int else -1 for r in records]
        return RecordColumns(
            topic=topic,
            partition=partition,
            data=b"".join(parts),
            offsets=np.fromiter((r.offset for r in records), np.int64, count=n),
            timestamps=np.array(stamps, np.int64).reshape(n),
            keys=keys,
            values=values,
            headers=np.zeros((n, 2), np.int64),
            header_lists=[list(getattr(r, "headers", None) or ()) for r in records],
        )

    @staticmethod
    def concat(chunks: Sequence[RecordColumns]) -> RecordColumns:
        """One set of columns from chunks of the same partition, in order (a poll that
        drew on two fetches). Chunks over one buffer share it; others are joined."""
        if len(chunks) == 1:
            return chunks[0]
        first = chunks[0]
        if all(c.data is first.data and c.header_lists is None for c in chunks):
            data, shifts = first.data, [0] * len(chunks)
        else:
            shifts, pos = [], 0
            for c in chunks:
                shifts.append(pos)
                pos += len(c.data)
            data = b"".join(c.data for c in chunks)

        def spans(name: str) -> np.ndarray:
            out = []
            for c, d in zip(chunks, shifts, strict=True):
                a = getattr(c, name).copy()
                a[:, 0] += d
                out.append(a)
            return np.concatenate(out)

        lists = None
        if any(c.header_lists is not None for c in chunks):
            lists = [h for c in chunks for h in _header_lists(c)]
        return RecordColumns(
            topic=first.topic,
            partition=first.partition,
            data=data,
            offsets=np.concatenate([c.offsets for c in chunks]),
            timestamps=np.concatenate([c.timestamps for c in chunks]),
            keys=spans("keys"),
            values=spans("values"),
            headers=spans("headers"),
            header_lists=lists,
        )


def _header_lists(c: RecordColumns) -> list[list[tuple[str, bytes | None]]]:
    if c.header_lists is not None:
        return [list(h) for h in c.header_lists]
    return [c.record(i).headers for i in range(len(c))]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """Kafka's zigzag varint at ``pos``: (value, next position). The compiled reader
    has checked these bytes already."""
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def _read_headers(data: bytes, pos: int, count: int) -> list[tuple[str, bytes | None]]:
    out: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        n, pos = _varint(data, pos)
        k = data[pos : pos + n].decode("utf-8")
        pos += n
        n, pos = _varint(data, pos)
        v = None
        if n >= 0:
            v = data[pos : pos + n]
            pos += n
        out.append((k, v))
    return out
