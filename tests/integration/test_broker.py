"""The local broker with kafka-python as the daemon uses them (see streamlstm/kafka/broker.py).

Keyed records with headers and timestamps on a 3-partition topic, read back
with assign/seek; lag from the fetch high watermark; offsets committed with
assign and read back; a consumer group with low timeouts.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streamlstm.kafka.broker import LocalBroker

pytestmark = pytest.mark.integration

N_RECORDS = 300
PARTITIONS = 3
N_KEYS = 12
BASE_TS_MS = 1_700_000_000_000
# The broker holds a first JoinGroup for ~session_timeout/2 (see broker.py): 2000 ms -> ~1 s.
GROUP_TIMEOUTS = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 500,
    "max_poll_interval_ms": 10000,
}
JOIN_LIMIT_S = 10.0
READ_LIMIT_S = 10.0


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _record(i: int) -> tuple[bytes, bytes, list[tuple[str, bytes]], int]:
    key = f"pump-{i % N_KEYS}".encode()
    value = b'{"i": %d, "temp": %d.5}' % (i, i % 7)
    headers = [("reason", f"reason-{i % 3} é".encode()), ("seq", str(i).encode()), ("empty", b"")]
    return key, value, headers, BASE_TS_MS + i


def _produce(bootstrap: str, topic: str, n: int) -> list[Any]:
    """Send records 0..n-1 and return their RecordMetadata, in order."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = []
        for i in range(n):
            key, value, headers, ts = _record(i)
            futures.append(
                producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=ts)
            )
        producer.flush(10)
        return [f.get(timeout=10) for f in futures]
    finally:
        producer.close()


def _read(consumer: KafkaConsumer, n: int, limit_s: float = READ_LIMIT_S) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + limit_s
    while len(out) < n and time.monotonic() < deadline:
        for recs in consumer.poll(200).values():
            out.extend(recs)
    return out


def _tps(topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(PARTITIONS)]


def test_keyed_records_with_headers_round_trip_with_assign_and_seek(broker: LocalBroker) -> None:
    topic = _name("roundtrip")
    broker.create_topics([topic], partitions=PARTITIONS)
    sent = _produce(broker.bootstrap, topic, N_RECORDS)

    partition_of_key: dict[bytes, set[int]] = defaultdict(set)
    for i, md in enumerate(sent):
        partition_of_key[_record(i)[0]].add(md.partition)
    assert all(len(parts) == 1 for parts in partition_of_key.values())
    assert {md.partition for md in sent} == set(range(PARTITIONS))

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    try:
        tps = _tps(topic)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        got = _read(consumer, N_RECORDS)
        assert len(got) == N_RECORDS

        by_partition: dict[int, list[int]] = defaultdict(list)
        for rec in got:
            i = int(dict(rec.headers)["seq"])
            key, value, headers, ts = _record(i)
            assert (rec.key, rec.value, rec.headers) == (key, value, headers)
            assert (rec.timestamp, rec.timestamp_type) == (ts, 0)  # CreateTime, kept as sent
            assert (rec.partition, rec.offset) == (sent[i].partition, sent[i].offset)
            by_partition[rec.partition].append(rec.offset)
        for p, offsets in by_partition.items():
            assert offsets == list(range(len(offsets))), f"partition {p} offsets not 0..n-1"
            # Lag comes from the fetch high watermark (end_offsets is off on tansu).
            assert consumer.highwater(TopicPartition(topic, p)) == len(offsets)
            assert consumer.end_offsets([TopicPartition(topic, p)])[
                TopicPartition(topic, p)
            ] <= len(offsets)

        # Seek into the middle of a partition: the next record is exactly that offset.
        tp = TopicPartition(topic, sent[0].partition)
        middle = len(by_partition[tp.partition]) // 2
        consumer.assign([tp])
        consumer.seek(tp, middle)
        again = _read(consumer, 1)
        assert again and again[0].offset == middle
    finally:
        consumer.close()


def test_offsets_committed_with_assign_read_back_without_a_group_join(
    broker: LocalBroker,
) -> None:
    topic, group = _name("commit"), _name("group")
    broker.create_topics({topic: PARTITIONS})
    per_partition = 20
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    try:
        for p in range(PARTITIONS):
            for i in range(per_partition):
                producer.send(topic, value=b"%d" % i, partition=p)
        producer.flush(10)
    finally:
        producer.close()
    tp0, tp1, tp2 = _tps(topic)
    wanted = {tp0: 5, tp1: 7}

    def consumer() -> KafkaConsumer:
        return KafkaConsumer(
            bootstrap_servers=broker.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )

    first = consumer()
    try:
        first.assign([tp0, tp1, tp2])
        assert first.committed(tp0) is None
        first.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in wanted.items()})
        assert {tp: first.committed(tp) for tp in wanted} == wanted
    finally:
        first.close(autocommit=False)

    second = consumer()
    try:
        second.assign([tp0, tp1, tp2])
        assert {tp: second.committed(tp) for tp in wanted} == wanted
        assert second.committed(tp2) is None
        # Without a seek, an assigned partition starts at the group's committed offset
        # (tp2 has none: auto_offset_reset="earliest").
        expected = {0: range(5, per_partition), 1: range(7, per_partition), 2: range(per_partition)}
        got = _read(second, sum(len(r) for r in expected.values()))
        offsets: dict[int, list[int]] = defaultdict(list)
        for rec in got:
            offsets[rec.partition].append(rec.offset)
        assert offsets == {p: list(r) for p, r in expected.items()}
    finally:
        second.close(autocommit=False)


def test_subscribe_joins_a_group_quickly_with_low_timeouts(broker: LocalBroker) -> None:
    topic, group = _name("group"), _name("group")
    broker.create_topics([topic], partitions=PARTITIONS)
    _produce(broker.bootstrap, topic, 30)
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **GROUP_TIMEOUTS,
    )
    try:
        t0 = time.monotonic()
        consumer.subscribe([topic])
        got: list[Any] = []
        while not consumer.assignment() and time.monotonic() - t0 < JOIN_LIMIT_S:
            for recs in consumer.poll(100).values():
                got.extend(recs)
        joined_s = time.monotonic() - t0
        assert consumer.assignment() == set(_tps(topic)), f"no assignment after {joined_s:.1f}s"
        assert joined_s < JOIN_LIMIT_S
        got.extend(_read(consumer, 30 - len(got)))
        assert sorted(int(dict(r.headers)["seq"]) for r in got) == list(range(30))

        consumer.commit()
        assert sum(consumer.committed(tp) or 0 for tp in _tps(topic)) == 30
    finally:
        consumer.close(autocommit=False)
