"""The sink's re-send rules against the real broker, through a proxy that cuts the line.

Each test reads the topic back: a record is there exactly once after a cut, after a
send whose answer was lost, after a send that failed and was never written, and after
a restore whose replay emits what an earlier life already sent. A broker of its own
(module-scoped) advertises the proxy's address, so every client goes through it.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from proxy import Proxy

from streamlstm.kafka.broker import LocalBroker
from streamlstm.kafka.config import KafkaConfig, SinksConfig
from streamlstm.kafka.ledger import LookBack
from streamlstm.kafka.sink import AlertSink

pytestmark = pytest.mark.integration

PIPE = "p"
SRC = "events"


@pytest.fixture(scope="module")
def line() -> Iterator[Proxy]:
    """A proxy in front of a broker that advertises the proxy."""
    own: dict[str, LocalBroker] = {}
    with Proxy(lambda: ("127.0.0.1", own["b"].port)) as proxy:
        own["b"] = LocalBroker(advertised_port=proxy.port)
        own["b"].start()
        try:
            yield proxy
        finally:
            own["b"].stop()


@pytest.fixture
def topics(line: Proxy) -> tuple[str, str]:
    from kafka.admin import KafkaAdminClient, NewTopic

    run = uuid.uuid4().hex[:6]
    names = (f"a-{run}", f"d-{run}")
    admin = KafkaAdminClient(bootstrap_servers=line.address)
    try:
        admin.create_topics([NewTopic(names[0], 2, 1), NewTopic(names[1], 1, 1)])
    finally:
        admin.close()
    return names


def _sink(
    line: Proxy, topics: tuple[str, str], member: str | None = None, **extra: Any
) -> AlertSink:
    group = {} if member is None else {"assignment": "group", "group_instance_id": member}
    kafka = KafkaConfig(
        bootstrap_servers=(line.address,), request_timeout_ms=1000,
        extra={"reconnect_backoff_max_ms": 500, **extra}, **group,
    )  # fmt: skip
    sinks = SinksConfig(alerts_topic=topics[0], dead_letter_topic=topics[1], log_alerts=False)
    sink = AlertSink(kafka, sinks, PIPE, lookback=LookBack(timeout_s=10.0))
    sink.connect()
    return sink


def _alert(offset: int, kind: str = "opened", partition: int = 0) -> dict[str, Any]:
    stream = f"s{offset % 7}"
    return {"id": f"id-{partition}-{offset}", "pipeline": PIPE, "stream": stream, "kind": kind,
            "topic": SRC, "partition": partition, "offset": offset,
            "top_features": []}  # fmt: skip


def _bad(offset: int) -> Any:
    return SimpleNamespace(topic=SRC, partition=0, offset=offset, key=b"k", value=b"junk",
                           headers=[])  # fmt: skip


def _on_topic(line: Proxy, topic: str) -> list[tuple[Any, ...]]:
    """(partition, offset, kind) of every alert record, or (offset, reason) of every dead
    letter, duplicates included."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=line.address, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        out: list[tuple[Any, ...]] = []
        quiet = time.monotonic()
        while time.monotonic() - quiet < 1.5:
            for recs in c.poll(200).values():
                quiet = time.monotonic()
                for r in recs:
                    if r.headers:
                        h = dict(r.headers)
                        out.append((int(h["streamlstm.offset"]), h["streamlstm.reason"].decode()))
                    else:
                        d = orjson.loads(r.value)
                        out.append((d["partition"], d["offset"], d["kind"]))
        return out
    finally:
        c.close()


def _flush_until(sink: AlertSink, cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond(sink.flush(1.0)):
            return
    raise AssertionError("timed out")


def test_records_in_flight_during_a_cut_are_not_sent_twice(line: Proxy, topics: Any) -> None:
    """Flushes during a cut leave in-flight records to the producer's own retries: the old
    sink sent a second copy at every failed flush."""
    sink = _sink(line, topics)
    sink.alert(_alert(0))
    assert sink.flush(5.0)
    line.cut()
    try:
        for i in range(1, 21):
            sink.alert(_alert(i))
            sink.dead_letter(_bad(i), "not_json")
        for _ in range(4):
            assert sink.flush(0.5) is False
        assert sink.pending == 40
    finally:
        line.restore()
    _flush_until(sink, lambda ok: ok)
    sink.close()
    alerts, dead = _on_topic(line, topics[0]), _on_topic(line, topics[1])
    assert sorted(alerts) == [(0, i, "opened") for i in range(21)]
    assert sorted(dead) == [(i, "not_json") for i in range(1, 21)]


def test_a_send_whose_answer_was_lost_is_not_sent_again(line: Proxy, topics: Any) -> None:
    """The broker writes the record but its answer never comes back; the producer gives up
    (delivery timeout). The sink reads the topic back, finds it, and does not re-send."""
    sink = _sink(line, topics, delivery_timeout_ms=3000)
    sink.alert(_alert(0))
    assert sink.flush(5.0)
    line.drop_replies = True
    try:
        sink.alert(_alert(1))
        sink.dead_letter(_bad(1), "not_json")
        time.sleep(4.0)  # past delivery_timeout_ms: the futures fail
    finally:
        line.drop_replies = False
    _flush_until(sink, lambda ok: ok)
    sink.close()
    assert sink.deduplicated == {"alert": 1, "dead_letter": 1}
    assert Counter(_on_topic(line, topics[0])) == {(0, 0, "opened"): 1, (0, 1, "opened"): 1}
    assert _on_topic(line, topics[1]) == [(1, "not_json")]


def test_a_send_that_failed_unwritten_is_sent_again(line: Proxy, topics: Any) -> None:
    """The line is cut past the delivery timeout: the record was never written, the
    read-back does not find it, and the sink sends it again once the line is back."""
    sink = _sink(line, topics, delivery_timeout_ms=2000)
    sink.alert(_alert(0))
    assert sink.flush(5.0)
    line.cut()
    try:
        sink.alert(_alert(1))
        time.sleep(3.0)
        assert sink.flush(0.5) is False  # failed, and the read-back cannot reach the broker
    finally:
        line.restore()
    _flush_until(sink, lambda ok: ok)
    sink.close()
    assert sink.deduplicated == {"alert": 0, "dead_letter": 0}
    assert sorted(_on_topic(line, topics[0])) == [(0, 0, "opened"), (0, 1, "opened")]


@pytest.mark.parametrize("member", [None, "streamlstm-0"])
def test_recall_drops_what_an_earlier_life_sent_and_nothing_else(
    line: Proxy, topics: Any, member: str | None
) -> None:
    """An earlier life sent records for offsets 0..9 of partition 0 (its checkpoint is at 5)
    and 0..3 of partition 1 (checkpoint at 4), then died. The next life resumes there: its
    replay of 5..9 is dropped, offsets 10.. are sent, partition 1 replays nothing sent.
    The same for a static group member (kafka.group_instance_id, as in Kubernetes): the
    read-back is no member of the group."""
    first = _sink(line, topics, member)
    ckpt_at = time.time()
    for i in range(10):
        first.alert(_alert(i))
    first.dead_letter(_bad(7), "not_json")
    for i in range(4):
        first.alert(_alert(i, partition=1))
    assert first.flush(5.0)
    first.close()

    second = _sink(line, topics, member)
    assert second.recall({(SRC, 0): (5, ckpt_at), (SRC, 1): (4, ckpt_at)}) is True
    sent = [second.alert(_alert(i)) for i in range(5, 13)]
    assert sent == [False] * 5 + [True] * 3
    assert second.dead_letter(_bad(7), "not_json") is False
    assert second.dead_letter(_bad(8), "not_json") is True
    assert second.alert(_alert(4, partition=1)) is True
    assert second.flush(5.0)
    second.close()
    assert second.deduplicated == {"alert": 5, "dead_letter": 1}
    alerts = _on_topic(line, topics[0])
    assert len(alerts) == len(set(alerts)) == 10 + 3 + 5
    assert sorted(_on_topic(line, topics[1])) == [(7, "not_json"), (8, "not_json")]


def test_a_look_back_cut_short_by_its_bound_says_so(line: Proxy, topics: Any) -> None:
    """A cold start (no checkpoint time): only the count bounds the read-back."""
    first = _sink(line, topics)
    for i in range(30):  # one batch each: the local broker's end offset counts batches
        first.alert(_alert(i))
        assert first.flush(5.0)
    first.close()
    kafka = first.kafka
    sinks = first.sinks
    small = AlertSink(kafka, sinks, PIPE, lookback=LookBack(max_records=5))
    small.connect()
    assert small.recall({(SRC, 0): (0, None)}) is False  # not all of the topic was read
    full = AlertSink(kafka, sinks, PIPE)
    full.connect()
    assert full.recall({(SRC, 0): (0, None)}) is True
    assert all(full.alert(_alert(i)) is False for i in range(30))
    # Same input offsets, other events (an input topic recreated): sent, not dropped.
    other = AlertSink(kafka, sinks, PIPE)
    other.connect()
    assert other.recall({(SRC, 0): (0, None)}) is True
    assert all(other.alert({**_alert(i), "id": f"new-{i}"}) is True for i in range(30))
    other.close()
    small.close()
    full.close()


def test_a_record_over_the_size_limit_is_cut_once_and_the_flush_goes_on(
    line: Proxy, topics: Any
) -> None:
    """kafka-python refuses it in send() itself (over max_request_size): cut down to a
    TRUNCATE_TO-byte dead letter, sent once; the alert after it is delivered too."""
    sink = _sink(line, topics)
    big = SimpleNamespace(topic=SRC, partition=0, offset=3, key=b"k", value=b"#" * 1_100_000,
                          headers=[])  # fmt: skip
    sink.dead_letter(big, "not_json")
    sink.alert(_alert(4))
    assert sink.flush(5.0) is True and sink.pending == 0
    assert sink.refused == {"truncated": 1}
    sink.close()
    assert _on_topic(line, topics[1]) == [(3, "not_json")]
    assert _on_topic(line, topics[0]) == [(0, 4, "opened")]
