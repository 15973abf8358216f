"""The sink never lets one record stop the loop: a record the broker refuses for its
size is cut down (a dead letter) or dropped, counted, logged once; the rest flush."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from streamlstm.kafka.config import KafkaConfig, SinksConfig
from streamlstm.kafka.sink import TRUNCATE_TO, TRUNCATED_HEADER, AlertSink

LIMIT = 1_048_450  # the local broker's limit that blocked every flush


class Fut:
    def __init__(self, exc: Exception | None) -> None:
        self.is_done = True
        self.exception = exc

    def failed(self) -> bool:
        return self.exception is not None


class Producer:
    """Refuses values over LIMIT like the broker; refuses the first send of `flaky` keys
    (as a full buffer does: the record is never handed over, so it is simply sent again)."""

    def __init__(self, **kw: Any) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[Any]]] = []
        self.flaky = {b"flaky"}

    def send(self, topic: str, key: Any = None, value: Any = None, headers: Any = None) -> Fut:
        if value is not None and len(value) > LIMIT:
            return Fut(MessageSizeTooLargeError("too large"))
        if key in self.flaky:
            self.flaky.discard(key)
            raise KafkaTimeoutError("buffer full")
        self.sent.append((topic, key, value, list(headers or [])))
        return Fut(None)

    def flush(self, timeout: float | None = None) -> None: ...


def _sink() -> AlertSink:
    sink = AlertSink(KafkaConfig(bootstrap_servers=("x:9092",)),
                     SinksConfig(alerts_topic="alerts", dead_letter_topic="dlq"), "p",
                     producer_factory=Producer)  # fmt: skip
    sink.connect()
    return sink


def _rec(value: bytes, key: bytes | None = None, offset: int = 0) -> Any:
    return SimpleNamespace(topic="in", partition=0, offset=offset, key=key, value=value,
                           headers=[])  # fmt: skip


def test_an_oversized_dead_letter_is_cut_down_and_the_flush_goes_on(caplog) -> None:
    sink = _sink()
    big = b"x" * (LIMIT + 10)
    with caplog.at_level(logging.ERROR, logger="streamlstm.kafka.sink"):
        sink.dead_letter(_rec(big, offset=1), "not_json")
        sink.dead_letter(_rec(big, offset=2), "not_json")
        sink.dead_letter(_rec(b"{}", key=b"flaky", offset=3), "missing")  # retried, delivered
        assert sink.flush(1.0) is True
    assert sink.pending == 0
    sent = sink.producer.sent  # type: ignore[union-attr]
    cut = [s for s in sent if any(h[0] == TRUNCATED_HEADER for h in s[3])]
    assert len(cut) == 2 and all(len(s[2]) == TRUNCATE_TO for s in cut)
    assert dict(cut[0][3])[TRUNCATED_HEADER] == str(LIMIT + 10).encode()
    assert [s[1] for s in sent if s[1] == b"flaky"] == [b"flaky"]
    assert sink.refused == {"truncated": 2}
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1  # once


def test_an_alert_the_broker_refuses_is_dropped_not_retried_forever() -> None:
    sink = _sink()
    assert sink.producer is not None
    sink._send(("alerts", b"k", b"y" * (LIMIT + 1), []))
    assert sink.flush(1.0) is True and sink.pending == 0
    assert sink.refused == {"dropped": 1}


def test_the_alert_record_has_every_documented_field_and_its_schema_version() -> None:
    import re
    from pathlib import Path

    from streamlstm.detector import Transition
    from streamlstm.kafka.sink import ALERT_SCHEMA, alert_record

    t = Transition("a1", "opened", "k", 0, 3, 1.7e9, 42, 0.8, 0.5, {"temp": 1.0},
                   {"temp": 0.5}, [("temp", 1.0)])  # fmt: skip
    rec = alert_record("p", "in", 0, 42, t)
    doc = (Path(__file__).resolve().parents[3] / "docs" / "alert-record.md").read_text()
    documented = set()
    for cell in re.findall(r"^\| (`[^|]+) \|", doc, re.M):
        documented |= set(re.findall(r"`([a-z_]+)`", cell))
    assert set(rec) == documented
    assert rec["schema"] == ALERT_SCHEMA and f"schema version {ALERT_SCHEMA}" in doc


class KwProducer(Producer):
    """Keeps the keyword arguments the sink built its producer with."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.kw = kw


def test_the_producer_sends_at_once_acks_all_idempotent_unless_kafka_extra_says() -> None:
    # linger_ms 0: an alert is not held back for a batch (it cost every alert 5 ms).
    sinks = SinksConfig(alerts_topic="alerts", dead_letter_topic="dlq")
    sink = AlertSink(KafkaConfig(bootstrap_servers=("x:9092",)), sinks, "p",
                     producer_factory=KwProducer)  # fmt: skip
    sink.connect()
    kw = sink.producer.kw  # type: ignore[union-attr]
    assert (kw["linger_ms"], kw["acks"], kw["enable_idempotence"]) == (0, "all", True)
    kafka = KafkaConfig(bootstrap_servers=("x:9092",), extra={"linger_ms": 5})
    sink = AlertSink(kafka, sinks, "p", producer_factory=KwProducer)
    sink.connect()
    assert sink.producer.kw["linger_ms"] == 5  # type: ignore[union-attr]
