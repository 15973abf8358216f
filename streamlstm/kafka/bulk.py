"""kafka-python with records in bulk: its fetched bytes parsed into columns in one pass.

kafka-python does well what a consumer must get right (connections, group
membership, positions, seeks, pause, offset commits) and spends 6-15 us per
record building ``ConsumerRecord`` objects the daemon reads three fields of.
:class:`BulkKafkaConsumer` keeps all of the former and replaces the latter at
the one place where a partition's fetched bytes become records: the
fetcher's ``PartitionRecords``. Ours (:class:`BulkPartitionRecords`) reads
the whole fetch of a partition with two compiled passes
(:mod:`streamlstm.kernels.kafkarecords`) and hands out slices of one
:class:`~streamlstm.io.records.RecordColumns` instead of lists of objects;
``poll`` then returns ``{TopicPartition: [RecordColumns, ...]}``.

What stays kafka-python's, so it behaves exactly as its own reader:

- which fetch is used at all (position checks, pause, revoke, errors, the
  "no complete record" check) - its Fetcher code runs unchanged;
- per batch, in its order: the CRC-32C check (``kafka.record.util.calc_crc32c``,
  the C ``crc32c`` extension), the read_committed state machine over aborted
  transactions (with its own control-record reader for abort markers), control
  batches skipped, and decompression with ``kafka.codec`` (gzip, snappy, lz4,
  zstd: whatever kafka-python itself can read, with its errors);
- records before the fetch offset dropped, the position after a take (the
  next record, or past skipped and compacted batches at the end of a fetch),
  the leader epoch, and an error raised after the records before it are handed
  out. One deliberate difference: after a corrupt batch has raised, the fetch
  is drained, so the next poll fetches again from the position and raises
  again (kafka-python 3.0.12 spins on the dead reader instead);
- magic 0/1 message sets (before Kafka 0.11) and configured deserializers go
  through kafka-python's own reader; their records are turned into columns.

The hook touches kafka-python internals, so it is tied to the versions in
``SUPPORTED``: digests of the internal code it mirrors or relies on
(:func:`internals_digest`). ``tests/unit/kafka/test_bulk_pinned.py`` fails when
they move; at run time an unknown version gets kafka-python's own reader and a
WARNING (slower, never wrong).

Length: the per-batch rules, the position bookkeeping and the take contract are
one reader, checked as one against kafka-python's; the rest is its cold paths.
"""

from __future__ import annotations

import collections
import hashlib
import inspect
import logging
from typing import Any

import numpy as np
from kafka import KafkaConsumer  # type: ignore[import-untyped]
from kafka import codec as kafka_codec  # type: ignore[import-untyped]
from kafka.consumer import fetcher as kafka_fetcher  # type: ignore[import-untyped]
from kafka.errors import CorruptRecordError  # type: ignore[import-untyped]
from kafka.protocol.consumer import IsolationLevel  # type: ignore[import-untyped]
from kafka.record.default_records import (  # type: ignore[import-untyped]
    DefaultRecordBase,
    DefaultRecordBatch,
)
from kafka.record.util import calc_crc32c  # type: ignore[import-untyped]
from kafka.structs import OffsetAndMetadata  # type: ignore[import-untyped]
from kafka.version import __version__ as KAFKA_PYTHON_VERSION  # type: ignore[import-untyped]

from streamlstm.io.records import RecordColumns
from streamlstm.kernels import kafkarecords as KR

log = logging.getLogger(__name__)

Fetcher: Any = kafka_fetcher.Fetcher

# kafka-python versions whose internals this module was checked against, with the
# digest of those internals (internals_digest()). A new version: read the code listed in
# _PINNED, compare with this module, run tests/integration/test_bulk_records.py, add it.
SUPPORTED: dict[str, str] = {
    "3.0.12": "cffd58b1b66ea561c0f0f3ff4d20a51026c474c8e81720a847d6fc17bdf46ba6",
}

_ATTR_CONTROL = 0x20
_ATTR_TRANSACTIONAL = 0x10
_ATTR_LOG_APPEND = 0x08
_ATTR_CODEC = 0x07
_CODEC_CHECK = DefaultRecordBase()  # kafka-python's "is this codec installed" with its errors
# A record takes at least 7 bytes (seven one-byte varints): bounds the columns' size
# from the bytes whatever a corrupt header claims.
_MIN_RECORD = 7


def _pinned() -> list[Any]:
    """The kafka-python code this module mirrors or relies on (see the module doc)."""
    return [
        KafkaConsumer.__init__,
        Fetcher.fetched_records,
        Fetcher._append,
        Fetcher._parse_fetched_data,
        Fetcher.close,
        Fetcher.PartitionRecords,
        kafka_fetcher.FetchResponseMetricAggregator,
        kafka_fetcher.MemoryRecords,
        DefaultRecordBase,
        DefaultRecordBatch.__init__,
        DefaultRecordBatch._maybe_uncompress,
        DefaultRecordBatch._read_msg,
        DefaultRecordBatch.__next__,
        DefaultRecordBatch.validate_crc,
        kafka_codec.gzip_decode,
        kafka_codec.snappy_decode,
        kafka_codec.zstd_decode,
    ]


def internals_digest() -> str:
    """sha256 of the source of the kafka-python code in :func:`_pinned`."""
    h = hashlib.sha256()
    for obj in _pinned():
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()


def bulk_supported() -> tuple[bool, str]:
    """(True, "") when the installed kafka-python is one this module was checked
    against, else (False, why)."""
    want = SUPPORTED.get(KAFKA_PYTHON_VERSION)
    if want is None:
        return False, f"kafka-python {KAFKA_PYTHON_VERSION} is not one of {sorted(SUPPORTED)}"
    try:
        got = internals_digest()
    except (OSError, TypeError) as exc:  # no source files (a frozen install)
        return False, f"cannot read kafka-python's source: {exc}"
    if got != want:
        return False, f"kafka-python {KAFKA_PYTHON_VERSION}'s internals differ from the checked"
    return True, ""


class BulkPartitionRecords(Fetcher.PartitionRecords):  # type: ignore[misc, name-defined]
    """One partition's fetched bytes as columns; kafka-python's PartitionRecords contract
    (``take``, ``drain``, ``next_fetch_offset``, ``leader_epoch``, truthiness)."""

    def __init__(
        self,
        fetch_offset: int,
        tp: Any,
        records: Any,
        key_deserializer: Any = None,
        value_deserializer: Any = None,
        check_crcs: bool = True,
        isolation_level: Any = IsolationLevel.READ_UNCOMMITTED,
        aborted_transactions: Any = None,
        metric_aggregator: Any = None,
        on_drain: Any = lambda x: None,
    ) -> None:
        raw = records._buffer  # MemoryRecords keeps the fetched bytes here (pinned)
        raw = raw if type(raw) is bytes else bytes(raw)
        self._legacy = key_deserializer is not None or value_deserializer is not None
        hdr = np.empty((0, KR.N_H), np.int64)
        nb = walk = 0
        if not self._legacy:
            hdr, nb, walk = _walk(raw)
            self._legacy = bool(np.any(hdr[:nb, KR.H_MAGIC] < 2))
        if self._legacy:
            super().__init__(
                fetch_offset, tp, records, key_deserializer=key_deserializer,
                value_deserializer=value_deserializer, check_crcs=check_crcs,
                isolation_level=isolation_level, aborted_transactions=aborted_transactions,
                metric_aggregator=metric_aggregator, on_drain=on_drain,
            )  # fmt: skip
            return
        self.fetch_offset = fetch_offset
        self.topic_partition = tp
        self.leader_epoch = -1
        self.next_fetch_offset = fetch_offset
        self.bytes_read = 0
        self.records_read = 0
        self.metric_aggregator = metric_aggregator
        self.on_drain = on_drain
        self._next_inline_exception: BaseException | None = None
        self.record_iterator: Any = True  # kafka-python's "not drained yet" (truthiness)
        self._read(raw, hdr, nb, walk, check_crcs, isolation_level, aborted_transactions)
        self._i = 0

    # -- the one pass ---------------------------------------------------------------
    def _read(
        self, raw: bytes, hdr: np.ndarray, nb: int, walk: int, check_crcs: bool,
        isolation: Any, aborted: Any,
    ) -> None:  # fmt: skip
        """Choose the batches to read (kafka-python's per-batch rules), decompress, then
        read their records in one compiled call. Sets the columns, the position and epoch
        at the end (or at the error), and the error."""
        tp = self.topic_partition
        view = memoryview(raw)
        read_committed = isolation == IsolationLevel.READ_COMMITTED
        txns = collections.deque(sorted(aborted or [], key=lambda t: t.first_offset))
        aborted_pids: set[int] = set()
        segs: list[list[int]] = []
        seg_epoch: list[int] = []
        # The position as kafka-python moves it, batch by batch: ("seg", k) = after
        # segment k's records; ("skip", next offset) = a skipped batch.
        events: list[tuple[str, int, int]] = []
        inflated: list[bytes] = []
        extra_at = len(raw)
        error: BaseException | None = None
        epoch = -1
        for b in range(nb):
            pos, end, base, b_epoch, _m, crc, attrs, last_delta, first_ts, max_ts, pid, count = hdr[
                b
            ].tolist()
            if end - pos < KR.HEADER_SIZE:
                error = CorruptRecordError(
                    f"Record batch for partition {tp} at offset {base} is {end - pos} bytes, "
                    f"shorter than a v2 batch header ({KR.HEADER_SIZE})"
                )
                break
            if check_crcs and calc_crc32c(view[pos + KR.CRC_FROM : end]) != crc:
                error = CorruptRecordError(
                    f"Record batch for partition {tp} at offset {base} failed crc check"
                )
                break
            epoch = b_epoch
            next_offset = base + last_delta + 1
            control = bool(attrs & _ATTR_CONTROL)
            if read_committed and pid > -1:
                while txns and txns[0].first_offset <= next_offset - 1:
                    aborted_pids.add(txns.popleft().producer_id)
                if control:
                    try:
                        if _abort_marker(view[pos:end]):
                            aborted_pids.discard(pid)
                    except Exception as exc:  # noqa: BLE001 - raised after the records before it
                        error = exc
                        break
                elif attrs & _ATTR_TRANSACTIONAL and pid in aborted_pids:
                    events.append(("skip", next_offset, epoch))
                    continue
            if control:
                events.append(("skip", next_offset, epoch))
                continue
            codec = attrs & _ATTR_CODEC
            if codec:
                try:
                    out = _inflate(codec, view[pos + KR.HEADER_SIZE : end])
                except Exception as exc:  # noqa: BLE001 - kafka-python raises its codec's error
                    error = exc
                    break
                inflated.append(out)
                start, stop = extra_at, extra_at + len(out)
                extra_at = stop
            else:
                start, stop = pos + KR.HEADER_SIZE, end
            log_append = 1 if attrs & _ATTR_LOG_APPEND else 0
            segs.append([start, stop, count, base, first_ts, log_append, max_ts])
            seg_epoch.append(epoch)
            events.append(("seg", len(segs) - 1, epoch))
        if error is None and walk == 1:
            error = CorruptRecordError(
                f"Record size is less than the minimum record overhead ({KR.MIN_SLICE - 12})"
            )
        data = raw + b"".join(inflated) if inflated else raw
        seg = np.array(segs, np.int64).reshape(len(segs), 7)
        cap = int(np.minimum(np.maximum(seg[:, 2], 0), (seg[:, 1] - seg[:, 0]) // _MIN_RECORD + 1)
                  .sum())  # fmt: skip
        offsets = np.empty(cap, np.int64)
        stamps = np.empty(cap, np.int64)
        keys = np.empty((cap, 2), np.int64)
        values = np.empty((cap, 2), np.int64)
        headers = np.empty((cap, 2), np.int64)
        sizes = np.empty(cap, np.int64)
        seg_last = np.empty(len(segs), np.int64)
        st = np.zeros(KR.N_S, np.int64)
        KR._parse_records(
            np.frombuffer(data, np.uint8), seg, self.fetch_offset, offsets, stamps, keys,
            values, headers, sizes, seg_last, st,
        )  # fmt: skip
        n = int(st[KR.S_N])
        if st[KR.S_ERR]:
            k = int(st[KR.S_SEG])
            error = _record_error(st, tp, segs[k][3])
            events = events[: next(i for i, e in enumerate(events) if e[:2] == ("seg", k)) + 1]
        # Position and epoch where kafka-python's reader stops: at the error, or after
        # the last batch (past trailing control, aborted or compacted-away records).
        nfo = self.fetch_offset
        for kind, v, ep in events:
            epoch = ep
            if kind == "skip":
                nfo = v
            elif seg_last[v] != KR._NONE:
                nfo = int(seg_last[v]) + 1
        if error is None and nb:
            last = hdr[nb - 1].tolist()
            nfo = last[KR.H_BASE] + last[KR.H_LAST_DELTA] + 1
        self._end = (nfo, epoch)
        self._error = error
        # The last offset read in each segment, non-decreasing: record -> its segment.
        self._seg_last = np.maximum.accumulate(seg_last) if len(segs) else seg_last
        self._seg_epoch = np.array(seg_epoch, np.int64)
        self._sizes = sizes[:n]
        # Read and dropped before the fetch offset: counted at the first take, as there
        self._skipped = (int(st[KR.S_SKIPPED]), int(st[KR.S_SKIPPED_BYTES]))
        self._n = n
        self._cols = RecordColumns(
            topic=tp.topic, partition=tp.partition, data=data, offsets=offsets[:n],
            timestamps=stamps[:n], keys=keys[:n], values=values[:n], headers=headers[:n],
        )  # fmt: skip

    # -- kafka-python's PartitionRecords contract ----------------------------------------
    def take(self, n: int | None = None) -> Any:
        if self._legacy:
            recs = super().take(n)
            tp = self.topic_partition
            return RecordColumns.from_records(tp.topic, tp.partition, recs) if recs else []
        if self._next_inline_exception is not None:
            exc, self._next_inline_exception = self._next_inline_exception, None
            self.drain()
            raise exc
        if self.record_iterator is None:
            return []
        i, total = self._i, self._n
        j = total if n is None else min(total, i + n)
        if j < total or (j > i and j - i == n):
            # kafka-python's reader stops right after record j-1.
            last = int(self._cols.offsets[j - 1])
            self.next_fetch_offset = last + 1
            k = int(np.searchsorted(self._seg_last, last, "left"))
            self.leader_epoch = int(self._seg_epoch[k])
        else:  # it runs to the end of the fetch, or to the error
            self.next_fetch_offset, self.leader_epoch = self._end
        self._i = j
        if i == 0:
            self.records_read += self._skipped[0]
            self.bytes_read += self._skipped[1]
        self.records_read += j - i
        self.bytes_read += int(self._sizes[i:j].sum())
        chunk = _slice(self._cols, i, j)
        if j == total and (n is None or j - i < n):
            if self._error is not None:
                if j == i:
                    self.drain()
                    raise self._error
                self._next_inline_exception = self._error
            else:
                self.drain()
        return chunk if j > i else []


class BulkFetcher(Fetcher):  # type: ignore[misc, valid-type]
    """kafka-python's Fetcher with :class:`BulkPartitionRecords`; ``_append`` is its
    own with one change: a take is one columns object, counted by its records."""

    PartitionRecords = BulkPartitionRecords

    def _append(self, drained: Any, part: Any, max_records: int, update_offsets: bool) -> int:
        if not part:
            return 0
        tp = part.topic_partition
        subs = self._subscriptions
        if not subs.is_assigned(tp) or not subs.is_fetchable(tp):
            # revoked or paused since the fetch: kafka-python drops the records too
            log.debug("Not returning fetched records for partition %s", tp)
        else:
            position = subs.assignment[tp].position
            if part.next_fetch_offset == position.offset:
                chunk = part.take(max_records)
                taken = len(chunk)
                if taken:
                    drained[tp].append(chunk)
                highwater = subs.assignment[tp].highwater
                if highwater is not None and self._sensors:
                    self._sensors.records_fetch_lag.record(highwater - part.next_fetch_offset)
                if update_offsets or not taken:
                    subs.assignment[tp].position = OffsetAndMetadata(
                        part.next_fetch_offset, "", part.leader_epoch
                    )
                return taken
            log.debug(
                "Ignoring fetched records for %s at offset %s since the current position is %d",
                tp, part.next_fetch_offset, position.offset,
            )  # fmt: skip
        part.drain()
        return 0


class BulkKafkaConsumer(KafkaConsumer):  # type: ignore[misc]
    """A ``KafkaConsumer`` whose ``poll`` returns ``{TopicPartition: [RecordColumns]}``
    (when the installed kafka-python is supported; else its own lists of records)."""

    _warned = False

    def __init__(self, *topics: str, **configs: Any) -> None:
        super().__init__(*topics, **configs)
        ok, why = bulk_supported()
        if ok:
            # The fetcher holds no state of ours: swapping its class before the first
            # fetch keeps everything KafkaConsumer wired to it.
            self._fetcher.__class__ = BulkFetcher
        elif not BulkKafkaConsumer._warned:
            BulkKafkaConsumer._warned = True
            log.warning(
                "%s: records are read by kafka-python's own reader, 6-15 us a record "
                "slower (streamlstm.kafka.bulk.SUPPORTED lists the versions it was "
                "checked against)", why,
            )  # fmt: skip


def _walk(raw: bytes) -> tuple[np.ndarray, int, int]:
    buf = np.frombuffer(raw, np.uint8)
    cap = len(raw) // 512 + 16
    while True:
        hdr = np.empty((cap, KR.N_H), np.int64)
        nb, status = KR._walk_batches(buf, hdr)
        if status != 2:
            return hdr, int(nb), int(status)
        cap *= 4


def _slice(c: RecordColumns, i: int, j: int) -> RecordColumns:
    if i == 0 and j == len(c):
        return c
    return RecordColumns(
        topic=c.topic, partition=c.partition, data=c.data, offsets=c.offsets[i:j],
        timestamps=c.timestamps[i:j], keys=c.keys[i:j], values=c.values[i:j],
        headers=c.headers[i:j],
    )  # fmt: skip


def _inflate(codec: int, data: memoryview) -> bytes:
    """Decompress as DefaultRecordBatch._maybe_uncompress does (same calls, same errors)."""
    _CODEC_CHECK._assert_has_codec(codec)
    if codec == DefaultRecordBase.CODEC_GZIP:
        return bytes(kafka_codec.gzip_decode(data))
    if codec == DefaultRecordBase.CODEC_SNAPPY:
        return bytes(kafka_codec.snappy_decode(data.tobytes()))
    if codec == DefaultRecordBase.CODEC_LZ4:
        return bytes(kafka_codec.lz4_decode(data.tobytes()))
    return bytes(kafka_codec.zstd_decode(data.tobytes()))


def _abort_marker(batch: memoryview) -> bool:
    """kafka-python's ``_contains_abort_marker`` for a control batch, with its reader."""
    record = next(DefaultRecordBatch(batch))
    return bool(record) and bool(record.abort)


def _record_error(st: np.ndarray, tp: Any, base: int) -> BaseException:
    code, a, b = int(st[KR.S_ERR]), int(st[KR.S_A]), int(st[KR.S_B])
    if code == KR.E_HEADER_COUNT:
        return CorruptRecordError(f"Found invalid number of record headers {a}")
    if code == KR.E_HEADER_KEY:
        return CorruptRecordError(f"Invalid negative header key size {a}")
    if code == KR.E_SIZE:
        return CorruptRecordError(
            f"Invalid record size: expected to read {a} bytes in record payload, but "
            f"instead read {b}"
        )
    if code == KR.E_TRAILING:
        return CorruptRecordError(f"{a} unconsumed bytes after all records consumed")
    why = {
        KR.E_SHORT: "IndexError('index out of range')",
        KR.E_VARINT: "ValueError('Out of int64 range')",
        KR.E_UTF8: "UnicodeDecodeError('a header key is not UTF-8')",
    }.get(code, f"error {code}")
    return CorruptRecordError(
        f"Found invalid record structure: {why} (partition {tp}, batch at offset {base})"
    )
