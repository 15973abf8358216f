"""Where results go: alert records and dead letters, through one Kafka producer.

Alerts are JSON records on the alerts topic, keyed by stream (so one stream's
alerts stay in order on one partition). Dead letters keep the original
record's key and value byte for byte, and carry what went wrong in headers:
``streamlstm.reason`` (a short fixed word: ``not_json``, ``too_old``, ...),
``streamlstm.detail``, ``streamlstm.pipeline`` and the source
``streamlstm.topic`` / ``streamlstm.partition`` / ``streamlstm.offset``; the
original headers follow.

Delivery is at least once: the loop calls :meth:`AlertSink.flush` before it
writes a checkpoint, and :meth:`flush` re-sends whatever failed and reports
False if anything is still undelivered, in which case the loop does not
checkpoint (so a crash replays those records and re-emits them, with the
same alert ids).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from kafka import KafkaProducer  # type: ignore[import-untyped]
from kafka.errors import (  # type: ignore[import-untyped]
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from streamlstm.detector import TOP_FEATURES, Transition
from streamlstm.kafka.config import KafkaConfig, SinksConfig
from streamlstm.kafka.source import BrokerUnavailable

log = logging.getLogger(__name__)

Header = tuple[str, bytes]
Record = tuple[str, bytes | None, bytes | None, list[Header]]  # topic, key, value, headers
ALERT_SCHEMA = 1  # version of alert_record's document


def alert_record(
    pipeline: str, topic: str, partition: int, offset: int, t: Transition
) -> dict[str, Any]:
    """The JSON document of one alert transition: the alerts topic's schema, version
    ``ALERT_SCHEMA`` (every field is described in docs/alert-record.md; a change that
    removes or renames a field bumps the version)."""
    return {
        "schema": ALERT_SCHEMA,
        "id": t.alert_id,
        "pipeline": pipeline,
        "stream": t.key,
        "kind": t.kind,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "opened_offset": t.ref,
        "score": t.score,
        "threshold": t.threshold,
        "event_time": t.time,
        "event_time_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t.time)),
        "features": t.values,
        "forecast": t.forecast,
        "top_features": [{"feature": f, "share": s} for f, s in t.contributions[:TOP_FEATURES]],
    }


# A record the broker will never take: retrying it would block every later flush,
# checkpoint and commit (a dead letter just over message.max.bytes did exactly that).
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
TRUNCATE_TO = 64 * 1024
TRUNCATED_HEADER = "streamlstm.truncated"


class AlertSink:
    """Alert + dead-letter producer for one pipeline."""

    def __init__(
        self,
        kafka: KafkaConfig,
        sinks: SinksConfig,
        pipeline: str,
        producer_factory: Callable[..., KafkaProducer] = KafkaProducer,
        listeners: Sequence[Callable[[dict[str, Any]], None]] = (),
    ) -> None:
        self.kafka = kafka
        self.sinks = sinks
        self.pipeline = pipeline
        self._factory = producer_factory
        self.listeners = list(listeners)
        self.producer: KafkaProducer | None = None
        self._pending: list[tuple[Any, Record]] = []
        self.refused: dict[str, int] = {}  # records the broker refused: truncated / dropped

    @property
    def needs_producer(self) -> bool:
        return bool(self.sinks.alerts_topic or self.sinks.dead_letter_topic)

    def connect(self) -> None:
        if not self.needs_producer or self.producer is not None:
            return
        kw = dict(self.kafka.producer_kwargs())
        kw.setdefault("client_id", self.kafka.client_id)
        kw.setdefault("acks", "all")
        # A few ms of batching costs nothing next to the flush before each checkpoint
        # and keeps a burst of dead letters from becoming one request per record.
        kw.setdefault("linger_ms", 5)
        # A send into a full buffer blocks up to max_block_ms (60 s by default) while the
        # broker is away: longer than the liveness window. Fail fast; flush re-sends.
        kw.setdefault("max_block_ms", 5000)
        try:
            self.producer = self._factory(**kw)
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"pipeline={self.pipeline} producer cannot connect: {exc}"
            ) from exc

    # -- records -----------------------------------------------------------------
    def alert(self, record: Mapping[str, Any]) -> None:
        """Send one alert record (see :func:`alert_record`)."""
        for fn in self.listeners:
            fn(dict(record))
        if self.sinks.log_alerts:
            top = ", ".join(f"{c['feature']}={c['share']:.2f}" for c in record["top_features"])
            log.info(
                "pipeline=%s partition=%s offset=%s alert %s %s stream=%s score=%.5f top: %s",
                self.pipeline, record["partition"], record["offset"], record["id"],
                record["kind"], record["stream"], record["score"], top,
            )  # fmt: skip
        if self.sinks.alerts_topic:
            self._send(self.sinks.alerts_topic, record["stream"].encode(), orjson.dumps(record), [])

    def dead_letter(
        self,
        record: Any,
        reason: str,
        detail: str = "",
    ) -> None:
        """Forward a bad record unchanged, with the reason in headers."""
        topic = self.sinks.dead_letter_topic
        if not topic:
            return
        headers: list[Header] = [
            ("streamlstm.reason", reason.encode()),
            ("streamlstm.detail", detail.encode()[:1024]),
            ("streamlstm.pipeline", self.pipeline.encode()),
            ("streamlstm.topic", str(getattr(record, "topic", "")).encode()),
            ("streamlstm.partition", str(record.partition).encode()),
            ("streamlstm.offset", str(record.offset).encode()),
        ]
        for h in getattr(record, "headers", None) or ():
            headers.append((str(h[0]), bytes(h[1]) if h[1] is not None else b""))
        self._send(topic, record.key, record.value, headers)

    def _send(self, topic: str, key: bytes | None, value: bytes | None, headers: list[Header]):
        if self.producer is None:
            raise BrokerUnavailable(f"pipeline={self.pipeline} producer is not connected")
        args = (topic, key, value, headers)
        self._pending.append((self._send_raw(args), args))

    def _send_raw(self, args: Record) -> Any:
        topic, key, value, headers = args
        assert self.producer is not None
        try:
            return self.producer.send(topic, key=key, value=value, headers=headers or None)
        except KafkaError as exc:  # buffer full / metadata timeout: retried at flush
            return exc

    # -- delivery ----------------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait for every record sent since the last flush; re-send failures once.

        True when all are delivered. On False the undelivered records stay
        pending and the next flush tries them again.
        """
        if self.producer is None:
            return not self._pending
        for attempt in range(2):
            try:
                self.producer.flush(timeout=timeout_s)
            except KafkaError as exc:
                log.warning("pipeline=%s producer flush failed: %s", self.pipeline, exc)
            failed = []
            for fut, args in self._pending:
                if isinstance(fut, Exception) or not fut.is_done or fut.failed():
                    why = fut if isinstance(fut, Exception) else getattr(fut, "exception", None)
                    if isinstance(why, _TOO_LARGE):
                        smaller = self._refused(args, why)
                        if smaller is None:
                            continue  # dropped (counted, logged): never blocks the loop
                        args = smaller
                    failed.append(args)
            if not failed:
                self._pending.clear()
                return True
            if attempt == 0:
                log.warning(
                    "pipeline=%s %d records undelivered; re-sending", self.pipeline, len(failed)
                )
            self._pending = [(self._send_raw(a), a) for a in failed]
        return False

    def _refused(self, args: Record, exc: Exception) -> Record | None:
        """A record the broker refuses for its size: a dead letter is cut to its first
        TRUNCATE_TO bytes (header streamlstm.truncated = the original size) and sent
        again; one refused again, or any other record, is dropped. Either way it is
        counted (``refused``) and logged once per kind, and the loop goes on."""
        topic, key, value, headers = args
        truncated = any(h[0] == TRUNCATED_HEADER for h in headers)
        out: Record | None = None
        kind = "dropped"
        if topic == self.sinks.dead_letter_topic and value is not None and not truncated:
            kind = "truncated"
            out = (topic, key, value[:TRUNCATE_TO],
                   [*headers, (TRUNCATED_HEADER, str(len(value)).encode())])  # fmt: skip
        self.refused[kind] = self.refused.get(kind, 0) + 1
        if self.refused[kind] == 1:
            log.error(
                "pipeline=%s the broker refused a %d-byte record for %s (%s): %s; this and "
                "later such records are %s (streamlstm_sink_refused_total)",
                self.pipeline, len(value or b""), topic, type(exc).__name__, exc,
                f"cut to their first {TRUNCATE_TO} bytes" if kind == "truncated" else kind,
            )  # fmt: skip
        return out

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self, timeout_s: float = 5.0) -> None:
        if self.producer is not None:
            try:
                self.producer.close(timeout=timeout_s)
            except Exception as exc:  # best effort: the caller already flushed
                log.warning("pipeline=%s producer close failed: %s", self.pipeline, exc)
            self.producer = None
