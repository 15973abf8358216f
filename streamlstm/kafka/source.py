"""The Kafka source: a ``kafka-python`` consumer that the loop alone drives.

Two assignment modes (``kafka.assignment``):

- ``static``: ``assign`` the configured partitions (all of each topic when
  none are listed). No group join, so no join delay; offsets are still
  committed to the group id for tooling. For a single instance.
- ``group``: ``subscribe`` with a rebalance listener, so the loop can
  checkpoint revoked partitions *before* they are released and restore and
  seek assigned ones before their first record is fetched. kafka-python 3
  calls the listener on its IO thread (while ``poll`` waits for it), where
  blocking consumer calls raise: the listener path commits asynchronously and
  leaves partitions without a checkpoint to the consumer's own reset.

Where an assigned partition starts: the loop's checkpoint if it has one
(:meth:`KafkaSource.seek`), else the group's committed offset, else the
beginning or the end of the partition (``source.start``). Auto-commit is off:
offsets are committed by the loop, only after the checkpoint is durable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from kafka.consumer.subscription_state import ConsumerRebalanceListener  # type: ignore[import-untyped]
from kafka.errors import KafkaError  # type: ignore[import-untyped]
from kafka.structs import OffsetAndMetadata  # type: ignore[import-untyped]

from streamlstm.errors import StreamlstmError
from streamlstm.io.records import RecordColumns
from streamlstm.kafka.bulk import BulkKafkaConsumer
from streamlstm.kafka.config import KafkaConfig, SourceConfig

log = logging.getLogger(__name__)

# How long to wait for a topic's partition list in static mode before failing
# the attempt (the caller retries with backoff): a topic created a moment ago
# can take a metadata refresh or two to show up.
METADATA_TIMEOUT_S = 10.0


class SourceError(StreamlstmError):
    """The Kafka source cannot go on (unknown topic, refused assignment)."""


class BrokerUnavailable(StreamlstmError):
    """The broker cannot be reached now; the caller retries with backoff."""


class PartitionHandler(Protocol):
    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None: ...

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None: ...


class _Listener(ConsumerRebalanceListener):
    def __init__(self, handler: PartitionHandler) -> None:
        self.handler = handler

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            self.handler.on_revoked(sorted(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.handler.on_assigned(sorted(assigned))


def static_partitions(
    kafka: KafkaConfig,
    source: SourceConfig,
    pipeline: str,
    partitions_of: Callable[[str], Any],
) -> list[TopicPartition]:
    """Static mode's partitions: the configured ones, else every partition of each topic
    as ``partitions_of(topic)`` reports them (waiting up to METADATA_TIMEOUT_S for a topic
    created a moment ago). Both clients' sources use it."""
    out: list[TopicPartition] = []
    for topic in source.topics:
        wanted = kafka.partitions
        if wanted is None:
            deadline = time.monotonic() + METADATA_TIMEOUT_S
            parts = partitions_of(topic)
            while not parts and time.monotonic() < deadline:
                time.sleep(0.2)
                parts = partitions_of(topic)
            if not parts:
                raise BrokerUnavailable(
                    f"pipeline={pipeline} topic {topic!r} has no partitions in the "
                    "broker's metadata (does it exist?)"
                )
            wanted = tuple(sorted(parts))
        out.extend(TopicPartition(topic, int(p)) for p in wanted)
    return out


class KafkaSource:
    """Consumer wrapper: connect, assign/subscribe, poll, seek, commit, lag."""

    def __init__(
        self,
        kafka: KafkaConfig,
        source: SourceConfig,
        handler: PartitionHandler,
        pipeline: str = "",
        consumer_factory: Callable[..., KafkaConsumer] = BulkKafkaConsumer,
    ) -> None:
        self.kafka = kafka
        self.source = source
        self.handler = handler
        self.pipeline = pipeline
        self._factory = consumer_factory
        self.consumer: KafkaConsumer | None = None

    # -- lifecycle ---------------------------------------------------------------
    def connect(self) -> None:
        """Create the consumer; raises :class:`BrokerUnavailable` when no broker answers."""
        kw = self.kafka.consumer_kwargs(self.source)
        try:
            self.consumer = self._factory(**kw)
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"pipeline={self.pipeline} cannot reach Kafka at "
                f"{','.join(self.kafka.bootstrap_servers)}: {exc}"
            ) from exc

    def start(self) -> None:
        """Assign (static) or subscribe (group); static mode calls ``on_assigned`` now."""
        c = self._c
        if self.kafka.assignment == "static":
            tps = static_partitions(
                self.kafka, self.source, self.pipeline, lambda t: c.partitions_for_topic(t)
            )
            c.assign(tps)
            self.handler.on_assigned(tps)
        else:
            inst = self.kafka.group_instance_id
            log.info(
                "pipeline=%s joining consumer group %s as %s", self.pipeline, self.kafka.group_id,
                f"static member {inst}" if inst else "a dynamic member",
            )  # fmt: skip
            c.subscribe(topics=list(self.source.topics), listener=_Listener(self.handler))

    def close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False)
            except Exception as exc:  # closing is best effort; the checkpoint is durable
                log.warning("pipeline=%s consumer close failed: %s", self.pipeline, exc)
            self.consumer = None

    @property
    def _c(self) -> KafkaConsumer:
        if self.consumer is None:
            raise SourceError(f"pipeline={self.pipeline} source is not connected")
        return self.consumer

    # -- data --------------------------------------------------------------------
    def poll(self) -> dict[TopicPartition, RecordColumns]:
        """The next records, per partition as columns (:mod:`streamlstm.kafka.bulk`)."""
        polled = self._c.poll(
            timeout_ms=self.source.poll_timeout_ms, max_records=self.source.max_poll_records
        )
        out: dict[TopicPartition, RecordColumns] = {}
        for tp, chunks in polled.items():
            if not chunks:
                continue
            if isinstance(chunks[0], RecordColumns):
                out[tp] = RecordColumns.concat(chunks)
            else:  # kafka-python's own reader (an unsupported version): its objects
                out[tp] = RecordColumns.from_records(tp.topic, tp.partition, chunks)
        return out

    def seek(self, tp: TopicPartition, offset: int | None) -> int | None:
        """Seek to ``offset``; None = the committed offset, else ``source.start``.

        Returns the offset sought to, or None when it is left to the broker
        (start of an empty partition, or its end).
        """
        c = self._c
        if offset is None and self.kafka.assignment != "static":
            # Group mode: called from the rebalance listener on kafka-python's IO thread,
            # where blocking calls (committed()) are refused. Leaving the position unset
            # makes the consumer start at the committed offset, else at auto_offset_reset.
            return None
        if offset is None:
            offset = self.committed(tp)
        if offset is not None:
            c.seek(tp, offset)
            return offset
        if self.source.start == "latest":
            c.seek_to_end(tp)
        else:
            c.seek_to_beginning(tp)
        return None

    def committed(self, tp: TopicPartition) -> int | None:
        off = self._c.committed(tp)
        return None if off is None or off < 0 else int(off)

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Synchronous commit of next offsets; raises KafkaError on failure."""
        if offsets:
            self._c.commit({tp: OffsetAndMetadata(int(o), "", -1) for tp, o in offsets.items()})

    def commit_async(
        self,
        offsets: dict[TopicPartition, int],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Commit without waiting (safe from the rebalance listener); a failure is given to
        ``on_error`` (called on kafka-python's thread: it must only record it)."""
        if not offsets:
            return
        callback = None
        if on_error is not None:

            def callback(_offsets: Any, response: Any) -> None:
                if isinstance(response, BaseException):
                    on_error(response)

        self._c.commit_async(
            {tp: OffsetAndMetadata(int(o), "", -1) for tp, o in offsets.items()},
            callback=callback,
        )

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._c.highwater(tp)

    def connected(self) -> bool:
        """Best-effort: does the client hold a live connection to any broker?

        kafka-python has no public probe: 3.x keeps connections on ``_manager``
        (``conn.connected`` is a flag), 2.x on ``_client`` (a method).
        """
        c = self.consumer
        if c is None:
            return False
        try:
            mgr = getattr(c, "_manager", None)
            if mgr is not None:
                return any(bool(conn.connected) for conn in list(mgr._conns.values()))
            conns = c._client._conns
            return any(conn.connected() for conn in list(conns.values()))
        except Exception:  # pragma: no cover - private API changed: do not claim an outage
            return True


def source_class(client: str) -> Callable[..., Any]:
    """The source for ``kafka.client``: :class:`KafkaSource` (kafka-python), or
    :class:`~streamlstm.kafka.confluent_source.ConfluentSource` (imported only then:
    confluent-kafka is an optional extra)."""
    if client == "confluent":
        from streamlstm.kafka.confluent_source import ConfluentSource

        return ConfluentSource
    return KafkaSource
