"""Where results go: alert records and dead letters, through one Kafka producer.

Alerts are JSON records on the alerts topic, keyed by stream (so one stream's
alerts stay in order on one partition). Dead letters keep the original
record's key and value byte for byte, and carry what went wrong in headers:
``streamlstm.reason`` (a short fixed word: ``not_json``, ``too_old``, ...),
``streamlstm.detail``, ``streamlstm.pipeline`` and the source
``streamlstm.topic`` / ``streamlstm.partition`` / ``streamlstm.offset``; the
original headers follow.

Delivery: each record once on its topic. The loop calls :meth:`AlertSink.flush`
before it writes a checkpoint; False (something undelivered) means no
checkpoint, so a crash replays those events. Three rules keep a record from
being written twice (docs/alert-record.md):

- A record is handed to kafka-python once. One whose send has not finished
  (the broker is away) stays with the producer, whose own retries deliver it;
  the producer is idempotent (``enable_idempotence``), so a retried batch that
  had in fact been written is not written again. kafka-python gives up after
  ``delivery_timeout_ms`` (120 s by default).
- A record whose send failed after it was handed over may have been written
  all the same (the answer was lost): before sending it again the sink reads
  the topic's tail (:mod:`streamlstm.kafka.ledger`) and drops what is there.
  A record the producer never took (``send`` raised) is simply sent again.
- After a restore the loop calls :meth:`AlertSink.recall` with the offsets it
  resumes from: the sink reads what an earlier life of the daemon already
  wrote for those partitions, and the replay's records with the same keys are
  not sent again (counted in ``deduplicated``).

Each key is (input topic, partition, offset, kind, id) for an alert -- one input
event makes at most one transition -- and (input topic, partition, offset,
reason, original length) for a dead letter (:data:`streamlstm.kafka.ledger.Key`).

Length: sending, the read-back before a re-send and the recall after a restore are one
delivery protocol over the same pending records; the topic reading itself lives in
:mod:`streamlstm.kafka.ledger`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer  # type: ignore[import-untyped]
from kafka.errors import (  # type: ignore[import-untyped]
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from streamlstm.detector import TOP_FEATURES, Transition
from streamlstm.kafka import ledger
from streamlstm.kafka.config import KafkaConfig, SinksConfig
from streamlstm.kafka.ledger import Key, LookBack, Tail, alert_key, dead_letter_key, read_tail
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
        "top_features": [
            {"feature": f, "share": s, "view": t.views.get(f)}
            for f, s in t.contributions[:TOP_FEATURES]
        ],
    }


# A record the broker will never take: retrying it would block every later flush,
# checkpoint and commit (a dead letter just over message.max.bytes did exactly that).
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
TRUNCATE_TO = 64 * 1024
TRUNCATED_HEADER = ledger.TRUNCATED_HEADER


@dataclass
class _Out:
    """One record given to the producer (or that it refused to take)."""

    args: Record
    key: Key | None
    sent_at: float  # wall time of its first send: where a look-back for it starts
    fut: Any  # kafka-python's future, or the exception ``send`` raised (never handed over)
    gen: int = 0  # the producer it was handed to (AlertSink._gen)


class AlertSink:
    """Alert + dead-letter producer for one pipeline."""

    def __init__(
        self,
        kafka: KafkaConfig,
        sinks: SinksConfig,
        pipeline: str,
        producer_factory: Callable[..., KafkaProducer] = KafkaProducer,
        listeners: Sequence[Callable[[dict[str, Any]], None]] = (),
        lookback: LookBack | None = None,
        consumer_factory: Callable[..., Any] = KafkaConsumer,
    ) -> None:
        self.kafka = kafka
        self.sinks = sinks
        self.pipeline = pipeline
        self._factory = producer_factory
        self._consumer_factory = consumer_factory
        self.lookback = lookback or LookBack(
            max_records=sinks.lookback_records, timeout_s=sinks.lookback_timeout_s
        )
        self.listeners = list(listeners)
        self.producer: KafkaProducer | None = None
        self._gen = 0  # producers made so far: a failure from the current one renews it
        self._pending: list[_Out] = []
        self.refused: dict[str, int] = {}  # records the broker refused: truncated / dropped
        # Keys already on the output topics, by input (topic, partition): filled by
        # recall(), each used once to drop the replay's copy.
        self._seen: dict[tuple[str, int], set[Key]] = {}
        self.deduplicated: dict[str, int] = {"alert": 0, "dead_letter": 0}

    @property
    def needs_producer(self) -> bool:
        return bool(self.sinks.alerts_topic or self.sinks.dead_letter_topic)

    def connect(self) -> None:
        if not self.needs_producer or self.producer is not None:
            return
        kw = dict(self.kafka.producer_kwargs())
        kw.setdefault("client_id", self.kafka.client_id)
        kw.setdefault("acks", "all")
        # The broker drops a retried batch it already wrote (producer id + sequence):
        # without it a lost answer becomes a duplicate record. kafka-python 3 defaults
        # to it; said here so that an older client or an edited default cannot undo it.
        kw.setdefault("enable_idempotence", True)
        # No linger: an alert goes to the broker as soon as the sender thread runs. At 5 ms
        # every alert waited 5 ms (produce -> alert p50 +5 ms at 10k events/s,
        # benchmarks/RESULTS-e2e.md). A burst of dead letters still leaves in few requests:
        # the loop holds the interpreter lock while it appends, so they pile up in the
        # accumulator meanwhile (20k dead letters: 20-23k/s at 5 ms and at 0,
        # benchmarks/bench_sink_burst.py). ``kafka.extra.linger_ms`` overrides it.
        kw.setdefault("linger_ms", 0)
        # A send into a full buffer blocks up to max_block_ms (60 s by default) while the
        # broker is away: longer than the liveness window. Fail fast; flush re-sends.
        kw.setdefault("max_block_ms", 5000)
        try:
            self.producer = self._factory(**kw)
            self._gen += 1
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"pipeline={self.pipeline} producer cannot connect: {exc}"
            ) from exc

    # -- records -----------------------------------------------------------------
    def alert(self, record: Mapping[str, Any]) -> bool:
        """Send one alert record (see :func:`alert_record`); False when it was already
        on the alerts topic (a replay after a restore) and is not sent again. Listeners
        and the log see it either way."""
        for fn in self.listeners:
            fn(dict(record))
        if self.sinks.log_alerts:
            top = ", ".join(
                f"{c['feature']}={c['share']:.2f}" + (f"/{c['view']}" if c.get("view") else "")
                for c in record["top_features"]
            )
            log.info(
                "pipeline=%s partition=%s offset=%s alert %s %s stream=%s score=%.5f top: %s",
                self.pipeline, record["partition"], record["offset"], record["id"],
                record["kind"], record["stream"], record["score"], top,
            )  # fmt: skip
        if not self.sinks.alerts_topic:
            return True
        key: Key = ("a", record["topic"], int(record["partition"]), int(record["offset"]),
                    record["kind"], str(record["id"]))  # fmt: skip
        if self._already_sent(key, "alert"):
            return False
        args: Record = (
            self.sinks.alerts_topic,
            record["stream"].encode(),
            orjson.dumps(record),
            [],
        )
        self._send(args, key)
        return True

    def dead_letter(
        self,
        record: Any,
        reason: str,
        detail: str = "",
    ) -> bool:
        """Forward a bad record unchanged, with the reason in headers; False when the
        same dead letter is already on the topic (a replay)."""
        topic = self.sinks.dead_letter_topic
        if not topic:
            return True
        src = str(getattr(record, "topic", ""))
        size = str(len(record.value or b""))
        key: Key = ("d", src, int(record.partition), int(record.offset), reason, size)
        if self._already_sent(key, "dead_letter"):
            return False
        headers: list[Header] = [
            ("streamlstm.reason", reason.encode()),
            ("streamlstm.detail", detail.encode()[:1024]),
            ("streamlstm.pipeline", self.pipeline.encode()),
            ("streamlstm.topic", src.encode()),
            ("streamlstm.partition", str(record.partition).encode()),
            ("streamlstm.offset", str(record.offset).encode()),
        ]
        for h in getattr(record, "headers", None) or ():
            headers.append((str(h[0]), bytes(h[1]) if h[1] is not None else b""))
        self._send((topic, record.key, record.value, headers), key)
        return True

    def _already_sent(self, key: Key, what: str) -> bool:
        seen = self._seen.get((key[1], key[2]))
        if seen is None or key not in seen:
            return False
        seen.discard(key)
        if not seen:
            del self._seen[(key[1], key[2])]
        self.deduplicated[what] += 1
        log.debug("pipeline=%s %s %s is already on its topic; not sent again",
                  self.pipeline, what, key[1:])  # fmt: skip
        return True

    def _send(self, args: Record, key: Key | None = None) -> None:
        self._pending.append(_Out(args, key, time.time(), self._send_raw(args), self._gen))

    def _send_raw(self, args: Record) -> Any:
        topic, key, value, headers = args
        if self.producer is None:  # being renewed (see _resend): sent at the next flush
            return BrokerUnavailable(f"pipeline={self.pipeline} producer is not connected")
        try:
            return self.producer.send(topic, key=key, value=value, headers=headers or None)
        except KafkaError as exc:  # buffer full / metadata timeout: never handed over
            return exc

    # -- what is already there ---------------------------------------------------------
    def recall(self, resume: Mapping[tuple[str, int], tuple[int, float | None]]) -> bool:
        """Learn which records of the given input partitions are already on the output
        topics, so that a replay does not send them again.

        ``resume``: (input topic, partition) -> (the offset the daemon resumes from,
        the time the checkpoint of that offset was written, or None if unknown). Every
        record for an offset at or after it, written since that time (see
        :class:`~streamlstm.kafka.ledger.LookBack` for the bounds), is remembered;
        records this sink still has in flight count too. False when a look-back was
        cut short by a bound or the broker could not be read: the replay then sends
        what was not seen (at least once). Raises nothing.
        """
        for tp in resume:
            self._seen.pop(tp, None)
        if not resume or self.lookback.max_records == 0:  # 0: read-back turned off
            return True
        times = [t for _, t in resume.values()]
        since = None if None in times else min(t for t in times if t is not None)
        found: set[Key] = set()
        complete = True
        for topic in (self.sinks.alerts_topic, self.sinks.dead_letter_topic):
            if not topic:
                continue
            try:
                tail = self._read_back(topic, since)
            except KafkaError as exc:
                log.warning("pipeline=%s cannot read %s back (%s): replayed records may be "
                            "sent again", self.pipeline, topic, exc)  # fmt: skip
                complete = False
                continue
            found |= tail.keys
            complete &= tail.complete
            log.info(
                "pipeline=%s read back %d records of %s in %.2fs%s", self.pipeline,
                tail.records, topic, tail.seconds, "" if tail.complete else " (cut short)",
            )  # fmt: skip
        found |= {o.key for o in self._pending if o.key is not None}
        for key in found:
            at = resume.get((key[1], key[2]))
            if at is not None and key[3] >= at[0]:
                self._seen.setdefault((key[1], key[2]), set()).add(key)
        return complete

    def _read_back(self, topic: str, since: float | None) -> Tail:
        """This pipeline's keys on ``topic`` since ``since`` (raises KafkaError)."""
        extract = alert_key if topic == self.sinks.alerts_topic else dead_letter_key
        return read_tail(
            self.kafka, topic, since, functools.partial(extract, pipeline=self.pipeline),
            self.lookback, self._consumer_factory,
        )  # fmt: skip

    def forget(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Drop what :meth:`recall` learned of these input partitions (revoked)."""
        for tp in partitions:
            self._seen.pop(tp, None)

    # -- delivery ----------------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait up to ``timeout_s`` for every record sent since the last flush.

        True when all are delivered. Records still in flight stay with the producer
        (never a second copy); records that failed are sent again, after a look-back
        for those that may have been written (:meth:`_resend`). On False the
        undelivered ones stay pending and the next flush looks at them again.
        """
        if self.producer is None:
            if not self._pending:
                return True
            try:
                self.connect()
            except BrokerUnavailable as exc:
                log.warning("%s", exc)
                return False
        deadline = time.monotonic() + timeout_s
        for _ in range(2):
            try:
                if self.producer is not None:  # None: a renewal failed (see _renew)
                    self.producer.flush(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaError as exc:
                log.warning("pipeline=%s producer flush failed: %s", self.pipeline, exc)
            waiting: list[_Out] = []
            failed: list[_Out] = []
            for out in self._pending:
                fut = out.fut
                if not isinstance(fut, Exception) and not fut.is_done:
                    waiting.append(out)  # the producer's own retries deliver it
                elif isinstance(fut, Exception) or fut.failed():
                    why = fut if isinstance(fut, Exception) else getattr(fut, "exception", None)
                    if isinstance(why, _TOO_LARGE):
                        smaller = self._refused(out.args, why)
                        if smaller is None:
                            continue  # dropped (counted, logged): never blocks the loop
                        out = _Out(smaller, out.key, out.sent_at, why, out.gen)  # not written
                    failed.append(out)
            if failed:
                log.warning("pipeline=%s %d records failed (%s); re-sending", self.pipeline,
                            len(failed), _why(failed[0].fut))  # fmt: skip
                waiting.extend(self._resend(failed))
            self._pending = waiting
            if not waiting:
                return True
            if not failed or time.monotonic() >= deadline:
                break
        return False

    def _resend(self, failed: list[_Out]) -> list[_Out]:
        """Send failed records again, except those found on their topic: a send that
        failed after kafka-python took the record may still have written it."""
        handed = [o for o in failed if not isinstance(o.fut, Exception) and o.key is not None]
        there: set[Key] = set()
        if handed:
            since = min(o.sent_at for o in handed)
            for topic in {o.args[0] for o in handed}:
                try:
                    tail = self._read_back(topic, since)
                except KafkaError as exc:
                    log.warning("pipeline=%s cannot read %s back (%s); re-sending later",
                                self.pipeline, topic, exc)  # fmt: skip
                    return failed  # unchanged: the next flush tries again
                there |= tail.keys
            if any(o.gen == self._gen for o in handed):
                self._renew()
        out: list[_Out] = []
        for o in failed:
            if o.key is not None and o.key in there:
                self.deduplicated["alert" if o.key[0] == "a" else "dead_letter"] += 1
                continue
            out.append(_Out(o.args, o.key, o.sent_at, self._send_raw(o.args), self._gen))
        return out

    def _renew(self) -> None:
        """A new producer after one of its sends failed. kafka-python's idempotent
        producer resets its producer id when a batch expires, and a record sent after
        that was seen to hang for good on the local broker; a new producer starts
        clean. Records the old one still held fail as it closes, and the next flush
        treats them like any failure (read back, then re-sent)."""
        old, self.producer = self.producer, None
        if old is not None:
            try:
                old.close(timeout=0)
            except KafkaError:
                # close() raises before it stops its sender thread when records are
                # still pending: stop it the way close() would have.
                sender = getattr(old, "_sender", None)
                if sender is not None:
                    sender.force_close()
        try:
            self.connect()
        except BrokerUnavailable as exc:
            log.warning("%s; records are sent again at the next flush", exc)

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


def _why(fut: Any) -> str:
    exc = fut if isinstance(fut, Exception) else getattr(fut, "exception", None)
    return f"{type(exc).__name__}: {exc}" if exc is not None else "unknown"
