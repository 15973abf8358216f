"""The confluent-kafka source's pieces that need no broker: librdkafka's settings from
the YAML's, and ``consume``'s messages as columns (real ``confluent_kafka.Message``
objects). The source against a real broker: tests/integration/test_daemon.py runs
the daemon with both clients."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import Message
from kafka import TopicPartition
from kafka.errors import KafkaError

from streamlstm.io.records import RecordColumns
from streamlstm.kafka.config import FETCH_MAX_WAIT_MS, KafkaConfig, SourceConfig
from streamlstm.kafka.confluent_config import consumer_conf, unmapped_consumer_keys
from streamlstm.kafka.confluent_records import columns_of
from streamlstm.kafka.source import KafkaSource, source_class

SEED = 5


def _messages(rng: np.random.Generator, n: int) -> list[Any]:
    """n records over two topics and three partitions, interleaved as a fetch gives them,
    with null, empty and binary keys and values, headers and missing timestamps."""
    out = []
    next_off: dict[tuple[str, int], int] = {}
    for i in range(n):
        topic, part = ("a", int(rng.integers(0, 2))) if rng.random() < 0.8 else ("b", 0)
        off = next_off.get((topic, part), 10 * part)
        next_off[(topic, part)] = off + 1 + int(rng.integers(0, 2))  # compaction gaps
        pick = rng.random(2)
        key = None if pick[0] < 0.1 else b"" if pick[0] < 0.2 else rng.bytes(int(pick[0] * 9))
        value = None if pick[1] < 0.1 else b"" if pick[1] < 0.2 else rng.bytes(int(pick[1] * 40))
        headers = [("h", bytes([i % 256])), ("n", None)] if i % 3 == 0 else None
        ts = (0, -1) if i % 7 == 0 else (1, 1_700_000_000_000 + i)
        out.append(Message(topic=topic, partition=part, offset=off, key=key, value=value,
                           headers=headers, timestamp=ts))  # fmt: skip
    return out


def test_columns_hold_exactly_the_messages_records() -> None:
    rng = np.random.default_rng(SEED)
    msgs = _messages(rng, 500)
    got = columns_of(msgs)
    want: dict[TopicPartition, list[Any]] = {}
    for m in msgs:
        want.setdefault(TopicPartition(m.topic(), m.partition()), []).append(m)
    assert sorted(got) == sorted(want)
    for tp, ms in want.items():
        cols = got[tp]
        assert isinstance(cols, RecordColumns) and len(cols) == len(ms)
        assert cols.next_offset == ms[-1].offset() + 1
        for i, m in enumerate(ms):
            r = cols.record(i)
            assert (r.topic, r.partition, r.offset) == (m.topic(), m.partition(), m.offset())
            assert r.key == m.key() and r.value == m.value(), (SEED, tp, i)
            assert r.timestamp == m.timestamp()[1]
            assert r.headers == list(m.headers() or ())
            assert cols.value(i) == m.value() and cols.key(i) == m.key()


def test_one_partitions_columns_concat_like_the_kafka_python_path() -> None:
    rng = np.random.default_rng(SEED + 1)
    msgs = [m for m in _messages(rng, 300) if (m.topic(), m.partition()) == ("a", 0)]
    half = len(msgs) // 2
    (a,) = columns_of(msgs[:half]).values()
    (b,) = columns_of(msgs[half:]).values()
    both = RecordColumns.concat([a, b])
    assert [both.record(i) for i in range(len(both))] == [
        *(a.record(i) for i in range(len(a))),
        *(b.record(i) for i in range(len(b))),
    ]


def test_error_events_are_dropped_and_a_fatal_one_raises() -> None:
    ok = Message(topic="a", partition=0, offset=3, key=b"k", value=b"v", timestamp=(1, 5))
    soft = Message(error=RdKafkaError(RdKafkaError._TRANSPORT))
    got = columns_of([soft, ok, soft])
    assert [r.value for r in got[TopicPartition("a", 0)].take([0])] == [b"v"]
    assert columns_of([soft]) == {}
    fatal = Message(error=RdKafkaError(RdKafkaError._FATAL, "fenced", fatal=True))
    with pytest.raises(KafkaError, match="fatal"):
        columns_of([ok, fatal])


def _kafka(**kw: Any) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=("h1:9092", "h2:9093"), **kw)


def test_librdkafka_settings_mirror_kafka_pythons() -> None:
    k = _kafka(group_id="g", client_id="c", assignment="group", group_instance_id="pod-0",
               session_timeout_ms=7000, heartbeat_interval_ms=700, max_poll_interval_ms=9000,
               request_timeout_ms=20000)  # fmt: skip
    conf = consumer_conf(k, SourceConfig(topics=("t",), start="latest"))
    assert conf == {
        "bootstrap.servers": "h1:9092,h2:9093", "client.id": "c", "group.id": "g",
        "security.protocol": "plaintext", "socket.timeout.ms": 20000,
        "session.timeout.ms": 7000, "heartbeat.interval.ms": 700,
        "max.poll.interval.ms": 9000, "fetch.wait.max.ms": FETCH_MAX_WAIT_MS,
        "group.instance.id": "pod-0", "enable.auto.commit": False,
        "enable.auto.offset.store": False, "enable.partition.eof": False,
        "auto.offset.reset": "latest",
    }  # fmt: skip
    # static membership is for groups only, as on kafka-python
    assert "group.instance.id" not in consumer_conf(_kafka(assignment="static"))


def test_sasl_and_tls_map_to_librdkafka_names() -> None:
    k = _kafka(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
               sasl_username="svc", sasl_password="pw", ssl_cafile="/ca.pem",
               ssl_certfile="/c.pem", ssl_keyfile="/k.pem", ssl_password="kpw",
               ssl_check_hostname=False)  # fmt: skip
    conf = consumer_conf(k)
    assert conf["security.protocol"] == "sasl_ssl"
    assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == (
        "SCRAM-SHA-512", "svc", "pw")  # fmt: skip
    assert conf["ssl.ca.location"] == "/ca.pem"
    assert conf["ssl.certificate.location"] == "/c.pem"
    assert (conf["ssl.key.location"], conf["ssl.key.password"]) == ("/k.pem", "kpw")
    assert conf["ssl.endpoint.identification.algorithm"] == "none"
    conf = consumer_conf(_kafka(security_protocol="SSL"))
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert "sasl.mechanism" not in conf and "ssl.ca.location" not in conf
    # librdkafka knows every name given (it refuses unknown ones at construction; the TLS
    # files are opened then too, so these are built without them)
    from confluent_kafka import Consumer

    for kw in ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                "sasl_username": "u", "sasl_password": "p"},
               {"security_protocol": "SSL", "ssl_check_hostname": False}):  # fmt: skip
        Consumer(consumer_conf(_kafka(**kw), SourceConfig(topics=("t",)))).close()


def test_extra_consumer_settings_are_mapped_or_refused() -> None:
    k = _kafka(extra={"fetch_max_wait_ms": 50, "max_partition_fetch_bytes": 1 << 20,
                      "linger_ms": 5})  # fmt: skip
    conf = consumer_conf(k)
    assert conf["fetch.wait.max.ms"] == 50
    assert conf["max.partition.fetch.bytes"] == 1 << 20
    assert "linger.ms" not in conf and "linger_ms" not in conf  # a producer setting
    assert unmapped_consumer_keys(k.extra) == []
    assert unmapped_consumer_keys({"exclude_internal_topics": False, "linger_ms": 1}) == [
        "exclude_internal_topics"
    ]


def test_the_client_picks_the_source() -> None:
    from streamlstm.kafka.confluent_source import ConfluentSource

    assert source_class("kafka-python") is KafkaSource
    assert source_class("confluent") is ConfluentSource


def test_a_failed_asynchronous_commit_reaches_on_error_a_synchronous_ones_answer_not() -> None:
    from confluent_kafka import TopicPartition as RdTopicPartition

    from streamlstm.kafka.confluent_source import ConfluentSource

    src = ConfluentSource(KafkaConfig(bootstrap_servers=("x:9092",)),
                          SourceConfig(topics=("t",)), handler=None)  # fmt: skip
    got: list[BaseException] = []
    src._commit_error, src._async_commits = got.append, 2  # two sent by commit_async
    src._on_commit(None, [RdTopicPartition("t", 0, 5)])  # the first: committed
    failed = SimpleNamespace(error=RdKafkaError(RdKafkaError._TIMED_OUT))  # as librdkafka's
    src._on_commit(None, [failed])  # the second: a partition failed
    src._on_commit(RdKafkaError(RdKafkaError._TIMED_OUT), [])  # a synchronous commit's
    assert len(got) == 1 and isinstance(got[0], KafkaError) and "commit" in str(got[0])
