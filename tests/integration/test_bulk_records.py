"""The bulk reader against kafka-python's record objects, on the real broker.

One seeded topic of 3 partitions, written by a producer per compression codec
(none, gzip, snappy, lz4, zstd) and by a transactional producer (a committed
and an aborted transaction: control batches in the log), with garbage mixed
into a fleet's events: bad JSON, missing fields, null keys, tombstones,
headers, big values, events out of order. Then:

1. record level: a plain ``KafkaConsumer`` and a ``BulkKafkaConsumer`` read it
   all; the same records (offset, timestamp, key, value, headers) and the same
   decode of each poll, for read_committed and read_uncommitted;
2. daemon level: the pipeline loop runs over it once with kafka-python's
   records (its objects turned into columns), once with the bulk reader and once
   with the confluent-kafka client (``kafka.client: confluent``): the same
   scores, stream states, alert ids and dead letters.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry

from streamlstm.cli.demo import persistence_model
from streamlstm.examples.synth import FleetSpec, generate_fleet
from streamlstm.io.decode import DecodeConfig, Decoder
from streamlstm.io.features import FeatureSpec
from streamlstm.io.records import RecordColumns
from streamlstm.kafka.bulk import BulkKafkaConsumer
from streamlstm.kafka.source import KafkaSource
from streamlstm.service.config import parse_config
from streamlstm.service.loop import PipelineLoop
from streamlstm.service.metrics import Metrics
from tests.conftest import require

pytestmark = pytest.mark.integration

SEED = 23
PARTITIONS = 3
FEATURES = ("temp", "pressure", "flow", "vibration")
CODECS = (None, "gzip", "snappy", "lz4", "zstd")
STATE_COLUMNS = (
    "col.h", "col.c", "col.fc", "col.fstat", "col.istat", "col.sstat", "last_time", "group",
)  # fmt: skip
DECODES = {
    # key and time from the JSON document
    "fields": {"key_field": "sensor", "time_field": "ts"},
    # key and time from the Kafka record (producers set the timestamp to the event time)
    "kafka": {"key_field": None, "time_field": None},
}


def _part(key: str) -> int:
    return int(key.rsplit("-", 1)[1]) % PARTITIONS  # producers key by stream


def _events(rng: np.random.Generator) -> list[tuple[int, bytes | None, bytes | None, int, list]]:
    """(partition, key, value, timestamp ms, headers) in send order."""
    fleet = generate_fleet(FleetSpec(
        n_streams=12, n_steps=150, anomaly_rate=2.0, kinds=("spike", "level_shift"), seed=SEED,
    ))  # fmt: skip
    keys, times, x, _ = fleet.events()
    out: list[tuple[int, bytes | None, bytes | None, int, list]] = []
    garbage = [
        b"not json", b'{"sensor": "sensor-1"}', b'{"sensor": "sensor-2", "ts": "later"}',
        b'{"sensor": "sensor-3", "ts": 1700000000, "temp": NaN}', b"[1, 2]", None,
        b'{"sensor": "sensor-4", "ts": 1700000000000, "temp": 1}',
    ]  # fmt: skip
    for k, t, row in zip(keys.tolist(), times.tolist(), x.round(4).tolist(), strict=True):
        if rng.random() < 0.01:
            t -= 3600.0  # older than the stream's last event: too_old
        doc = {"sensor": k, "ts": t, **dict(zip(FEATURES, row, strict=True))}
        value: bytes | None = orjson.dumps(doc)
        key: bytes | None = k.encode()
        hdrs: list = []
        r = rng.random()
        if r < 0.06:
            value = garbage[int(rng.integers(len(garbage)))]
        elif r < 0.09:
            key = None  # null key: "kafka" decode rejects it, "fields" reads the JSON key
        elif r < 0.11:
            doc["pad"] = "x" * 150_000  # a big value (multi-byte lengths, several fetches)
            value = orjson.dumps(doc)
        if rng.random() < 0.15:
            hdrs = [("trace", bytes(rng.integers(0, 256, 8, np.uint8))), ("empty", b"")]
        out.append((_part(k), key, value, int(t * 1000), hdrs))
    return out


def _produce(bootstrap: str, topic: str, events: list[Any]) -> None:
    for m in ("snappy", "lz4.frame", "zstandard"):
        require(m)  # the test extra installs every codec: none may be left out in CI
    chunks = np.array_split(np.arange(len(events)), len(CODECS) + 1)
    for codec, idx in zip(CODECS, chunks, strict=False):
        prod = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=20)
        for i in idx.tolist():
            p, k, v, ts, h = events[i]
            prod.send(topic, key=k, value=v, partition=p, timestamp_ms=ts, headers=h)
        prod.flush()
        prod.close()
    # The last share inside transactions: one committed, then garbage in an aborted one
    # (flushed first, so it is in the log with its abort marker).
    tx = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-tx")
    tx.init_transactions()
    tx.begin_transaction()
    for i in chunks[-1].tolist():
        p, k, v, ts, h = events[i]
        tx.send(topic, key=k, value=v, partition=p, timestamp_ms=ts, headers=h)
    tx.commit_transaction()
    tx.begin_transaction()
    for p in range(PARTITIONS):
        tx.send(topic, key=b"sensor-0", value=b"aborted garbage", partition=p)
    tx.flush()
    tx.abort_transaction()
    tx.close()


@pytest.fixture(scope="module")
def topic(broker: Any) -> str:
    name = f"bulk-{uuid.uuid4().hex[:6]}"
    broker.create_topics({name: PARTITIONS})
    _produce(broker.bootstrap, name, _events(np.random.default_rng(SEED)))
    return name


def _end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    ends = c.end_offsets(tps)
    c.close()
    return {tp: int(o) for tp, o in ends.items()}


def _read(bootstrap: str, topic: str, cls: type, isolation: str) -> dict[int, list[Any]]:
    """Every poll of the topic, per partition: kafka-python's lists or the columns."""
    c = cls(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation,
            max_poll_records=700, max_partition_fetch_bytes=200_000)  # fmt: skip
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    ends = _end_offsets(bootstrap, topic)
    polls: dict[int, list[Any]] = {p: [] for p in range(PARTITIONS)}
    deadline = time.monotonic() + 60
    while any(c.position(tp) < ends[tp] for tp in tps):
        assert time.monotonic() < deadline, "the topic was not read to its end"
        for tp, got in c.poll(200).items():
            polls[tp.partition].append(got)
    c.close()
    return polls


def _rows(polls: list[Any], topic: str, partition: int) -> list[tuple[Any, ...]]:
    out = []
    for got in polls:
        if isinstance(got[0], RecordColumns):
            recs: list[Any] = RecordColumns.concat(got).take(range(sum(map(len, got))))
        else:
            recs = got
        out += [(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, list(r.headers))
                for r in recs]  # fmt: skip
    return out


@pytest.mark.parametrize("isolation", ["read_uncommitted", "read_committed"])
def test_same_records_and_decodes_as_kafka_pythons_objects(
    broker: Any, topic: str, isolation: str
) -> None:
    objs = _read(broker.bootstrap, topic, KafkaConsumer, isolation)
    cols = _read(broker.bootstrap, topic, BulkKafkaConsumer, isolation)
    total = 0
    for p in range(PARTITIONS):
        a, b = _rows(objs[p], topic, p), _rows(cols[p], topic, p)
        assert a == b
        assert all(isinstance(c, RecordColumns) for got in cols[p] for c in got)
        total += len(a)
        assert any(r[6] for r in a) and any(r[4] is None for r in a)  # headers, null keys
        assert any(r[5] is not None and len(r[5]) > 100_000 for r in a)  # big values
    assert total > 12 * 150
    # The decoder, per poll: the objects' decode equals the columns' decode.
    for name, dk in DECODES.items():
        cfg = DecodeConfig(**dk, features=tuple(FeatureSpec(f) for f in FEATURES))
        flat = [g for p in range(PARTITIONS) for got in cols[p] for g in got]
        listed = [r for p in range(PARTITIONS) for got in objs[p] for r in got]
        one_by_one = Decoder(cfg, FEATURES)
        x = [one_by_one.decode(c) for c in flat]
        assert sum(map(len, flat)) == len(listed)
        pos = 0
        for c, dx in zip(flat, x, strict=True):
            dy = Decoder(cfg, FEATURES).decode(listed[pos : pos + len(c)])
            pos += len(c)
            assert dx.keys == dy.keys and dx.rejects == dy.rejects, name
            for col in ("times", "x", "partitions", "offsets", "index"):
                assert getattr(dx, col).tobytes() == getattr(dy, col).tobytes(), (name, col)


# -- the daemon, both ways ----------------------------------------------------------------
def _config(
    bootstrap: str, topic: str, model: Path, ckpt: Path, out: str, dk: dict, client: str
) -> Any:
    doc = {
        "kafka": {"bootstrap_servers": [bootstrap], "assignment": "static", "group_id": out,
                  "client": client,
                  "extra": {"isolation_level": "read_committed",
                            "max_partition_fetch_bytes": 300_000}},
        "metrics": {"port": 0},
        "pipelines": [{
            "name": "bulk",
            "source": {"topics": [topic], "max_poll_records": 500, "poll_timeout_ms": 100},
            "decode": {**dk, "features": [{"name": f} for f in FEATURES]},
            "model": {"path": str(model)},
            "sinks": {"alerts_topic": f"{out}-alerts", "dead_letter_topic": f"{out}-dlq",
                      "log_alerts": False},
            "checkpoint": {"dir": str(ckpt), "interval_s": 3600},
        }],
    }  # fmt: skip
    return parse_config(doc, source="<test>").pipelines[0]


def _position(consumer: Any, tp: TopicPartition) -> int:
    if isinstance(consumer, KafkaConsumer):
        return int(consumer.position(tp))
    from confluent_kafka import TopicPartition as RdTopicPartition

    (got,) = consumer.position([RdTopicPartition(tp.topic, tp.partition)])
    return int(got.offset)


def _run(cfg: Any, consumer: type | None, ends: dict[TopicPartition, int]) -> dict[str, Any]:
    """The loop over the topic: kafka-python's source with ``consumer``, or with None the
    source ``kafka.client`` picks."""

    def source(*a: Any, **kw: Any) -> KafkaSource:
        return KafkaSource(*a, **kw, consumer_factory=consumer)

    loop = PipelineLoop(cfg, Metrics(CollectorRegistry()), threading.Event(),
                        source_factory=source if consumer else None)  # fmt: skip
    # Per partition (group), in order: clients batch partitions differently.
    scores: dict[int, list[np.ndarray]] = {}
    process = loop.detector.process_many

    def keep(*a: Any, **kw: Any) -> Any:
        res = process(*a, **kw)
        scores.setdefault(kw["group"], []).append(res.score.copy())
        return res

    loop.detector.process_many = keep  # type: ignore[method-assign]
    loop.warm_up()
    assert loop._connect()
    c = loop.source.consumer
    deadline = time.monotonic() + 120
    while any(_position(c, tp) < end for tp, end in ends.items()):
        assert time.monotonic() < deadline, "the daemon did not read the topic to its end"
        loop.step()
    assert loop._checkpoint(final=True)
    state = {}
    for tp in ends:
        snap = loop.detector.table.snapshot(group=tp.partition)
        state[tp.partition] = {c: snap[c] for c in ("key_bytes", "key_len", *STATE_COLUMNS)}
    loop.close()
    joined = np.concatenate([np.concatenate(scores[g]) for g in sorted(scores)])
    return {"scores": joined, "state": state,
            "offsets": dict(loop.next_offset)}  # fmt: skip


def _read_back(bootstrap: str, topic: str) -> list[tuple[Any, ...]]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    end = c.end_offsets([tp])[tp]
    out: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + 30
    while c.position(tp) < end and time.monotonic() < deadline:
        for recs in c.poll(200).values():
            out += [(r.key, r.value, r.headers) for r in recs]
    c.close()
    return out


def _where(dead: tuple[Any, ...]) -> tuple[int, int]:
    h = dict(dead[2])
    return int(h["streamlstm.partition"]), int(h["streamlstm.offset"])


@pytest.mark.parametrize("decode", sorted(DECODES))
def test_daemon_same_scores_states_alerts_and_dead_letters(
    broker: Any, topic: str, tmp_path: Path, decode: str
) -> None:
    clean = generate_fleet(FleetSpec(n_streams=20, n_steps=800, anomaly_rate=0.0, seed=SEED + 1))
    model = persistence_model(clean.values).save(tmp_path / "m.npz")
    ends = _end_offsets(broker.bootstrap, topic)
    runs = {}
    clients = (
        ("objects", KafkaConsumer, "kafka-python"),
        ("bulk", BulkKafkaConsumer, "kafka-python"),
        ("confluent", None, "confluent"),
    )
    for how, consumer, client in clients:  # fmt: skip
        out = f"{topic}-{decode}-{how}"
        broker.create_topics({f"{out}-alerts": 1, f"{out}-dlq": 1})
        cfg = _config(broker.bootstrap, topic, model, tmp_path / how, out, DECODES[decode], client)
        runs[how] = _run(cfg, consumer, ends)
        runs[how]["alerts"] = [
            (orjson.loads(v)["id"], orjson.loads(v)["kind"], orjson.loads(v)["score"])
            for _, v, _ in _read_back(broker.bootstrap, f"{out}-alerts")
        ]
        runs[how]["dead"] = _read_back(broker.bootstrap, f"{out}-dlq")
    a = runs["objects"]
    assert np.isfinite(a["scores"]).sum() > 1000
    assert a["alerts"], "no alert was raised: the comparison proves little"
    for how in ("bulk", "confluent"):
        b = runs[how]
        assert a["scores"].tobytes() == b["scores"].tobytes(), how
        for p in range(PARTITIONS):
            for col, arr in a["state"][p].items():
                np.testing.assert_array_equal(arr, b["state"][p][col], err_msg=f"{how} {p} {col}")
        assert a["offsets"] == b["offsets"], how
        # The output topics interleave partitions in the order the client fetched them.
        assert sorted(a["alerts"]) == sorted(b["alerts"]), how
        assert sorted(a["dead"], key=_where) == sorted(b["dead"], key=_where), how
    reasons = {dict(h)["streamlstm.reason"] for _, _, h in a["dead"]}
    assert {b"not_json", b"not_object", b"too_old"} <= reasons, reasons
    assert any(dict(h).get("trace") for _, _, h in a["dead"])  # the record's own headers
