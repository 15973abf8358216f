"""BulkPartitionRecords against kafka-python's own PartitionRecords, on the same bytes.

Fetches are built with kafka-python's own record builders (every codec it can
write, headers, null keys and values, compaction gaps, transactions with abort
and commit markers, log-append time), then both readers take them in the same
seeded sequence of take(n) calls: the same records, the same position and
leader epoch after each take, the same drain, the same errors. The real broker
path is in tests/integration/test_bulk_records.py.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from kafka import TopicPartition  # type: ignore[import-untyped]
from kafka.consumer.fetcher import Fetcher  # type: ignore[import-untyped]
from kafka.errors import CorruptRecordError  # type: ignore[import-untyped]
from kafka.protocol.consumer import IsolationLevel  # type: ignore[import-untyped]
from kafka.record.memory_records import (  # type: ignore[import-untyped]
    MemoryRecords,
    MemoryRecordsBuilder,
)
from kafka.record.util import calc_crc32c  # type: ignore[import-untyped]

from streamlstm.io.records import RecordColumns
from streamlstm.kafka.bulk import BulkPartitionRecords
from tests.conftest import require

TP = TopicPartition("t", 3)
GZIP, SNAPPY, LZ4, ZSTD = 1, 2, 3, 4
_CODEC_MODULE = {SNAPPY: "snappy", LZ4: "lz4.frame", ZSTD: "zstandard"}


def _codecs() -> list[int]:
    for c in _CODEC_MODULE.values():
        require(c)  # the test extra installs them: CI runs every codec
    return [0, GZIP, SNAPPY, LZ4, ZSTD]


def _batch(
    offset: int, rows: list[tuple[int, bytes | None, bytes | None, list[Any]]], codec: int = 0,
    pid: int = -1, transactional: bool = False, skip_after: int = 0,
) -> bytes:  # fmt: skip
    kw: dict[str, Any] = {}
    if pid >= 0:
        kw = dict(transactional=transactional, producer_id=pid, producer_epoch=0, base_sequence=0)
    b = MemoryRecordsBuilder(2, codec, 1 << 22, offset=offset, **kw)
    for i, (ts, k, v, h) in enumerate(rows):
        assert b.append(ts, k, v, h) is not None
        if skip_after and i == 0:
            b.skip(skip_after)  # a compacted gap inside the batch
    b.close()
    return bytes(b.buffer())


def _patch(batch: bytes, *, attrs_or: int = 0, epoch: int | None = None) -> bytes:
    """Set attribute bits / the leader epoch of a built batch and fix its CRC."""
    buf = bytearray(batch)
    if epoch is not None:
        struct.pack_into(">i", buf, 12, epoch)
    (attrs,) = struct.unpack_from(">h", buf, 21)
    struct.pack_into(">h", buf, 21, attrs | attrs_or)
    struct.pack_into(">I", buf, 17, calc_crc32c(memoryview(buf)[21:]))
    return bytes(buf)


def _control(offset: int, pid: int, abort: bool) -> bytes:
    key = struct.pack(">hh", 0, 0 if abort else 1)
    b = _batch(offset, [(1000, key, b"\x00\x00\x00\x00\x00\x00", [])], pid=pid, transactional=True)
    return _patch(b, attrs_or=0x20)


def _rows(rng: np.random.Generator, n: int) -> list[tuple[int, bytes | None, bytes | None, list]]:
    out = []
    for _ in range(n):
        ts = int(rng.integers(1_600_000_000_000, 1_700_000_000_000))
        r = rng.random()
        key = None if r < 0.2 else f"k{int(rng.integers(50))}".encode()
        value = (
            None if r > 0.95 else bytes(rng.integers(0, 256, int(rng.integers(0, 300)), np.uint8))
        )
        if rng.random() < 0.05:
            value = b"x" * 70_000  # a big value (multi-byte varint lengths)
        hdrs = []
        if rng.random() < 0.3:
            hdrs = [("h\u00e9", b"v1"), ("n", None)][: int(rng.integers(1, 3))]
        out.append((ts, key, value, hdrs))
    return out


def _fetch(rng: np.random.Generator, codecs: list[int]) -> bytes:
    parts, off = [], 0
    for _ in range(int(rng.integers(3, 9))):
        rows = _rows(rng, int(rng.integers(1, 40)))
        codec = int(rng.choice(codecs))
        gap = int(rng.integers(0, 3))
        parts.append(_batch(off, rows, codec, skip_after=gap))
        off += len(rows) + gap + int(rng.integers(0, 2))  # gaps between batches too
    return b"".join(parts)


def _readers(
    buf: bytes, fetch_offset: int = 0, **kw: Any
) -> tuple[Any, BulkPartitionRecords, list[Any]]:
    drained: list[Any] = []
    a = Fetcher.PartitionRecords(fetch_offset, TP, MemoryRecords(buf), **kw)
    b = BulkPartitionRecords(fetch_offset, TP, MemoryRecords(buf), on_drain=drained.append, **kw)
    return a, b, drained


def _as_tuples(recs: Any) -> list[tuple[Any, ...]]:
    if isinstance(recs, RecordColumns):
        recs = recs.take(range(len(recs)))
    return [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in recs]


def _same_run(
    a: Any, b: BulkPartitionRecords, rng: np.random.Generator, errors: list[Any] | None = None
) -> int:
    """take() both in the same sizes until both are drained or raise; records taken
    (the error raised, if any, appended to ``errors``)."""
    total = 0
    for _ in range(10_000):
        n = int(rng.choice([1, 2, 7, 50, 1000]))
        err_a = err_b = None
        try:
            ra = a.take(n)
        except Exception as exc:  # noqa: BLE001
            err_a, ra = exc, []
        try:
            rb = b.take(n)
        except Exception as exc:  # noqa: BLE001
            err_b, rb = exc, []
        assert type(err_a) is type(err_b), (err_a, err_b)
        assert _as_tuples(ra) == _as_tuples(rb)
        assert (a.next_fetch_offset, a.leader_epoch) == (b.next_fetch_offset, b.leader_epoch)
        total += len(ra)
        if err_a is not None:
            if errors is not None:
                errors.append(err_b)
            return total
        assert bool(a) == bool(b)
        if not a:
            assert (a.records_read, a.bytes_read) == (b.records_read, b.bytes_read)
            return total
    raise AssertionError("never drained")


@pytest.mark.parametrize("case", range(12))
def test_same_records_positions_and_epochs_as_kafka_python(case: int, seed: int) -> None:
    rng = np.random.default_rng(seed + case)
    buf = _fetch(rng, _codecs())
    if case % 3 == 1:  # a fetch the broker cut inside its last batch
        buf = buf[: len(buf) - int(rng.integers(1, 40))]
    fetch_offset = int(rng.integers(0, 5)) if case % 2 else 0
    a, b, _ = _readers(buf, fetch_offset)
    assert _same_run(a, b, rng) > 0


def test_one_take_is_one_columns_object_over_the_fetched_bytes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    buf = _fetch(rng, [0])
    _, b, drained = _readers(buf)
    cols = b.take(None)
    assert isinstance(cols, RecordColumns)
    assert cols.data is not None and len(cols) > 0
    assert not b and drained == [b]


def test_transactions_read_committed_and_uncommitted(seed: int) -> None:
    rng = np.random.default_rng(seed)
    parts = [
        _batch(0, _rows(rng, 5)),
        _batch(5, _rows(rng, 4), pid=7, transactional=True),  # aborted below
        _batch(9, _rows(rng, 3), pid=8, transactional=True),  # committed
        _control(12, 7, abort=True),
        _control(13, 8, abort=False),
        _batch(14, _rows(rng, 6), codec=GZIP),
        _batch(20, _rows(rng, 2), pid=7, transactional=True),  # a new transaction of 7
        _control(22, 7, abort=False),  # trailing control batch: the position passes it
    ]
    buf = b"".join(parts)
    aborted = [SimpleNamespace(producer_id=7, first_offset=5)]
    for iso in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
        a, b, _ = _readers(buf, isolation_level=iso, aborted_transactions=aborted)
        n = _same_run(a, b, np.random.default_rng(seed))
        assert n == (5 + 3 + 6 + 2 if iso == IsolationLevel.READ_COMMITTED else 5 + 4 + 3 + 6 + 2)
        assert b.next_fetch_offset == 23


def test_log_append_time_and_leader_epochs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    buf = b"".join([
        _patch(_batch(0, _rows(rng, 4)), attrs_or=0x08, epoch=3),
        _patch(_batch(4, _rows(rng, 4), codec=GZIP), epoch=5),
    ])  # fmt: skip
    a, b, _ = _readers(buf)
    assert _same_run(a, b, np.random.default_rng(seed)) == 8


def test_crc_failure_after_the_good_batches_then_again_on_the_next_fetch(seed: int) -> None:
    rng = np.random.default_rng(seed)
    good = _batch(0, _rows(rng, 6))
    bad = bytearray(_batch(6, _rows(rng, 6)))
    bad[-3] ^= 0xFF
    buf = good + bytes(bad)
    a, b, _ = _readers(buf, check_crcs=True)
    assert len(b.take(100)) == 6
    assert len(a.take(100)) == 6
    assert b.next_fetch_offset == a.next_fetch_offset == 6
    with pytest.raises(CorruptRecordError, match="crc"):
        a.take(100)
    with pytest.raises(CorruptRecordError, match="crc"):
        b.take(100)
    assert not b  # drained: the next fetch starts at 6 and raises again
    a2, b2, _ = _readers(buf, check_crcs=False)
    assert _same_run(a2, b2, np.random.default_rng(seed)) == 12


@pytest.mark.parametrize("cut", ["length", "header_count", "trailing"])
def test_corrupt_records_raise_after_the_records_before_them(cut: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = [(1000 + i, b"k", b"v" * 10, []) for i in range(5)]
    buf = bytearray(_batch(0, rows))
    body = 61
    if cut == "length":
        rec = body
        for _ in range(2):  # third record's length varint
            (ln,) = struct.unpack_from("b", buf, rec)
            rec += 1 + (ln >> 1)
        buf[rec] += 2
    elif cut == "header_count":
        buf[-1] = 0x01  # last record: header count -1
    else:
        buf += b"\x00\x00"
        struct.pack_into(">i", buf, 8, len(buf) - 12)
    struct.pack_into(">I", buf, 17, calc_crc32c(memoryview(buf)[21:]))
    a, b, _ = _readers(bytes(buf))
    errors: list[Any] = []
    _same_run(a, b, rng, errors)
    assert len(errors) == 1 and isinstance(errors[0], CorruptRecordError), errors


def test_legacy_message_sets_go_through_kafka_pythons_reader(seed: int) -> None:
    b = MemoryRecordsBuilder(1, 0, 1 << 20, offset=0)
    for i in range(5):
        b.append(1000 + i, b"k%d" % i, b"v%d" % i)
    b.close()
    buf = bytes(b.buffer())
    a, bulk, _ = _readers(buf)
    assert bulk._legacy
    assert _same_run(a, bulk, np.random.default_rng(seed)) == 5


def test_decoding_the_columns_equals_decoding_kafka_pythons_records(seed: int) -> None:
    """Same bytes, both readers, then the decoder: same keys, times, features, rejects."""
    from streamlstm.io.decode import DecodeConfig, Decoder
    from streamlstm.io.features import FeatureSpec

    rng = np.random.default_rng(seed)
    docs = [b'{"id": "s%d", "ts": %d, "a": %d.5, "b": 2}' % (i % 9, 1_700_000_000 + i, i)
            for i in range(300)]  # fmt: skip
    for i in rng.choice(300, 60, replace=False).tolist():
        docs[i] = [b"garbage", b'{"id": "x"}', b'{"id": 5, "ts": 1, "a": "no"}', None,
                   b'{"id": "\\u00e9", "ts": 1700000000, "a": 1}'][i % 5]  # fmt: skip
    rows = [(1_700_000_000_000 + i, None if i % 7 == 0 else b"k", d, [("h", b"v")] if i % 5 else [])
            for i, d in enumerate(docs)]  # fmt: skip
    buf = b"".join(_batch(o, rows[o : o + 50], codec=(o // 50) % 2) for o in range(0, 300, 50))
    cfg = DecodeConfig(
        key_field="id", time_field="ts", features=(FeatureSpec("a"), FeatureSpec("b"))
    )
    dec = Decoder(cfg, ("a", "b"))
    a, b, _ = _readers(buf)
    objs, cols = a.take(1000), b.take(1000)
    assert len(objs) == len(cols) == 300
    x, y = dec.decode(cols), dec.decode_exact(objs)
    assert x.keys == y.keys and x.rejects == y.rejects
    for name in ("times", "x", "partitions", "offsets", "index"):
        assert getattr(x, name).tobytes() == getattr(y, name).tobytes(), name
    assert len(x.rejects) >= 40
    assert [cols.record(r.index) for r in x.rejects] == [
        (objs[r.index].topic, objs[r.index].partition, objs[r.index].offset,
         objs[r.index].timestamp, objs[r.index].key, objs[r.index].value, objs[r.index].headers)
        for r in x.rejects
    ]  # fmt: skip
