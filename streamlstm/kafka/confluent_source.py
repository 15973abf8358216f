"""The Kafka source on confluent-kafka (librdkafka): ``kafka.client: confluent``.

The same interface and the same promises as :class:`streamlstm.kafka.source.KafkaSource`
(the loop cannot tell them apart): ``poll`` returns ``{TopicPartition: RecordColumns}``
keyed by kafka-python's ``TopicPartition``; offsets committed are next offsets;
failures of the client come out as kafka-python's ``KafkaError`` (the loop's one
error vocabulary), an unreachable broker at connect as :class:`BrokerUnavailable`.

Why it exists: librdkafka fetches and parses records in C on its own threads; a bare
consumer reads ~6-9x the records per second of a bare kafka-python one on one core.
In the daemon the gain is small (0.98-1.13x end to end, benchmarks/RESULTS-e2e.md):
the bulk reader over kafka-python costs as little an event, and the rest is the
daemon's own work. It is for deployments that run librdkafka anyway (its security
and networking behaviour, its tooling). Optional: ``pip install 'streamlstm[confluent]'``.

Where partitions start and when the loop hears of them:

- ``static``: the loop's ``on_assigned`` runs first, collecting its seeks (a
  checkpoint's offset; else the committed offset, else ``source.start``), then the
  partitions are assigned at those offsets in one call (librdkafka refuses a seek
  of a partition it is not fetching yet).
- ``group``: librdkafka calls ``on_assign`` / ``on_revoke`` / ``on_lost`` from inside
  ``consume`` on the loop's own thread, so the handler runs exactly where the loop
  polls (blocking calls are allowed there, unlike kafka-python's IO thread). On
  assignment the handler's seeks are collected the same way and the partitions
  assigned at them; a partition without a checkpoint starts at the committed offset,
  else ``source.start`` (librdkafka's own reset). On revocation the handler
  checkpoints and commits before librdkafka gives the partitions up. ``on_lost``
  (the session expired: the partitions may already be someone else's) is handled as
  a revocation; its commit fails and is counted, the checkpoint stays.
- ``close`` does not call the handler: like kafka-python's, a stopping daemon has
  taken its final checkpoint already.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import confluent_kafka  # type: ignore[import-untyped]
from confluent_kafka import (  # type: ignore[import-untyped]
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaException,
)
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import TopicPartition as RdTopicPartition
from kafka import TopicPartition  # type: ignore[import-untyped]

from streamlstm.io.records import RecordColumns
from streamlstm.kafka.config import KafkaConfig, SourceConfig
from streamlstm.kafka.confluent_config import consumer_conf
from streamlstm.kafka.confluent_records import columns_of, wrap_error
from streamlstm.kafka.source import (
    BrokerUnavailable,
    PartitionHandler,
    SourceError,
    static_partitions,
)

log = logging.getLogger(__name__)
# librdkafka's own log lines: under "kafka", so --kafka-log-level and the CLI's redaction
# of SASL bytes treat them as kafka-python's.
LIBRDKAFKA_LOG = logging.getLogger("kafka.librdkafka")

# Blocking calls outside consume (committed offsets, metadata, synchronous commit):
# kafka-python's request timeout plays this part on the other client.
CALL_TIMEOUT_S = 10.0
# The liveness probe while every broker is down: short, it runs on the loop's thread.
PROBE_TIMEOUT_S = 0.5


class ConfluentSource:
    """confluent-kafka consumer wrapper: connect, assign/subscribe, poll, seek, commit, lag."""

    def __init__(
        self,
        kafka: KafkaConfig,
        source: SourceConfig,
        handler: PartitionHandler,
        pipeline: str = "",
    ) -> None:
        self.kafka = kafka
        self.source = source
        self.handler = handler
        self.pipeline = pipeline
        self.consumer: Any = None
        # Seeks the handler asked for while partitions are being assigned: applied by the
        # assignment itself (None while no assignment is in progress).
        self._pending: dict[TopicPartition, int] | None = None
        self._closing = False
        self._revoking = False
        self._all_down = False
        self._commit_error: Callable[[BaseException], None] | None = None
        self._async_commits = 0  # asynchronous commits not answered yet

    # -- lifecycle ---------------------------------------------------------------
    def connect(self) -> None:
        """Create the consumer and read the cluster's metadata once; raises
        :class:`BrokerUnavailable` when no broker answers (librdkafka connects lazily)."""
        conf = consumer_conf(self.kafka, self.source, logger=LIBRDKAFKA_LOG)
        conf["error_cb"] = self._on_error
        conf["on_commit"] = self._on_commit
        try:
            self.consumer = Consumer(conf)
            self.consumer.list_topics(timeout=CALL_TIMEOUT_S)
        except (KafkaException, RuntimeError) as exc:
            self.close()
            raise BrokerUnavailable(
                f"pipeline={self.pipeline} cannot reach Kafka at "
                f"{','.join(self.kafka.bootstrap_servers)}: {exc}"
            ) from exc
        self._all_down = False
        log.info(
            "pipeline=%s consumer: confluent-kafka %s (librdkafka %s)",
            self.pipeline, confluent_kafka.version()[0], confluent_kafka.libversion()[0],
        )  # fmt: skip

    def start(self) -> None:
        """Assign (static; ``on_assigned`` runs now) or subscribe (group)."""
        c = self._c
        if self.kafka.assignment == "static":
            self._assign(
                static_partitions(self.kafka, self.source, self.pipeline, self._partitions_of),
                c.assign,
            )
        else:
            inst = self.kafka.group_instance_id
            log.info(
                "pipeline=%s joining consumer group %s as %s (confluent-kafka)",
                self.pipeline, self.kafka.group_id,
                f"static member {inst}" if inst else "a dynamic member",
            )  # fmt: skip
            c.subscribe(
                list(self.source.topics),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )

    def _partitions_of(self, topic: str) -> list[int]:
        try:
            md = self._c.list_topics(topic, timeout=CALL_TIMEOUT_S).topics.get(topic)
        except KafkaException as exc:
            msg = f"pipeline={self.pipeline} metadata of {topic!r}: {exc}"
            raise BrokerUnavailable(msg) from exc
        if md is None or md.error is not None:
            return []
        return list(md.partitions)

    def _assign(self, tps: Sequence[TopicPartition], assign: Any) -> None:
        """Run the handler's ``on_assigned`` collecting its seeks, then assign at them."""
        self._pending = {}
        try:
            self.handler.on_assigned(list(tps))
            offsets = self._pending
        finally:
            self._pending = None
        assign([RdTopicPartition(tp.topic, tp.partition, offsets.get(tp, OFFSET_INVALID))
                for tp in tps])  # fmt: skip

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        tps = sorted(TopicPartition(p.topic, p.partition) for p in partitions)
        if self._closing:
            consumer.assign(partitions)
            return
        self._assign(tps, consumer.assign)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        if self._closing or not partitions:
            return
        self._revoking = True
        try:
            self.handler.on_revoked(
                sorted(TopicPartition(p.topic, p.partition) for p in partitions)
            )
        finally:
            self._revoking = False

    def _on_error(self, err: Any) -> None:
        # librdkafka reconnects by itself; "all brokers down" is what the loop's health
        # shows (connected()) and logs once; the reconnect chatter stays below WARNING,
        # like kafka-python's.
        if err.code() == RdKafkaError._ALL_BROKERS_DOWN:
            self._all_down = True
        level = logging.ERROR if err.fatal() else logging.DEBUG
        log.log(level, "pipeline=%s confluent-kafka: %s", self.pipeline, err)

    def close(self) -> None:
        if self.consumer is not None:
            self._closing = True
            try:
                self.consumer.close()
            except Exception as exc:  # closing is best effort; the checkpoint is durable
                log.warning("pipeline=%s consumer close failed: %s", self.pipeline, exc)
            self.consumer = None
            self._closing = False

    @property
    def _c(self) -> Any:
        if self.consumer is None:
            raise SourceError(f"pipeline={self.pipeline} source is not connected")
        return self.consumer

    # -- data --------------------------------------------------------------------
    def poll(self) -> dict[TopicPartition, RecordColumns]:
        """The next records (at most ``max_poll_records``), per partition as columns."""
        try:
            msgs = self._c.consume(
                num_messages=self.source.max_poll_records,
                timeout=self.source.poll_timeout_ms / 1000,
            )
        except KafkaException as exc:
            raise wrap_error("consume", exc) from exc
        except RuntimeError as exc:  # "Consumer closed"
            raise SourceError(f"pipeline={self.pipeline} consume: {exc}") from exc
        if not msgs:
            return {}
        self._all_down = False
        return columns_of(msgs, self.pipeline)

    def seek(self, tp: TopicPartition, offset: int | None) -> int | None:
        """Seek to ``offset``; None = the committed offset, else ``source.start``.

        Returns the offset sought to, or None when it is left to the broker. During an
        assignment the seek is applied by the assignment itself.
        """
        if offset is None and self.kafka.assignment != "static":
            return None  # group: OFFSET_INVALID = committed, else auto.offset.reset
        if offset is None:
            offset = self.committed(tp)
        where = offset
        if where is None:
            where = OFFSET_END if self.source.start == "latest" else OFFSET_BEGINNING
        if self._pending is not None:
            self._pending[tp] = where
        else:
            try:
                self._c.seek(RdTopicPartition(tp.topic, tp.partition, where))
            except KafkaException as exc:
                raise wrap_error("seek", exc) from exc
        return offset

    def committed(self, tp: TopicPartition) -> int | None:
        try:
            (got,) = self._c.committed(
                [RdTopicPartition(tp.topic, tp.partition)], timeout=CALL_TIMEOUT_S
            )
        except KafkaException as exc:
            raise wrap_error("committed", exc) from exc
        return None if got.offset < 0 else int(got.offset)

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Synchronous commit of next offsets; raises KafkaError on failure."""
        if offsets:
            self._commit(offsets, asynchronous=False)

    def commit_async(
        self,
        offsets: dict[TopicPartition, int],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Commit without waiting for the answer; during a revocation it waits: librdkafka
        runs the callback on the loop's thread, where waiting is safe, and the partitions'
        next owner then finds the commit (kafka-python's IO thread cannot wait). A failed
        asynchronous commit is given to ``on_error`` (from a later ``consume``)."""
        if offsets:
            if on_error is not None:
                self._commit_error = on_error
            if not self._revoking:
                self._async_commits += 1
            self._commit(offsets, asynchronous=not self._revoking)

    def _on_commit(self, err: Any, partitions: Any) -> None:
        """librdkafka's answer to an asynchronous commit (served by ``consume``); answers
        to synchronous commits (``commit`` raises their failure) are not counted."""
        if self._async_commits <= 0:
            return
        self._async_commits -= 1
        failed = (
            err
            if err is not None
            else next((p.error for p in partitions or () if p.error is not None), None)
        )
        if failed is not None and self._commit_error is not None:
            self._commit_error(wrap_error("commit", failed))

    def _commit(self, offsets: dict[TopicPartition, int], asynchronous: bool) -> None:
        tps = [RdTopicPartition(tp.topic, tp.partition, int(o)) for tp, o in offsets.items()]
        try:
            done = self._c.commit(offsets=tps, asynchronous=asynchronous)
        except KafkaException as exc:
            raise wrap_error("commit", exc) from exc
        failed = [p for p in done or () if p.error is not None]
        if failed:
            raise wrap_error("commit", failed[0].error)

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end as of the last fetch (no request), like kafka-python's."""
        try:
            _, hi = self._c.get_watermark_offsets(
                RdTopicPartition(tp.topic, tp.partition), cached=True
            )
        except KafkaException:
            return None
        return None if hi is None or hi < 0 else int(hi)

    def connected(self) -> bool:
        """False after librdkafka said every broker is down, until records come again or
        a metadata request is answered (librdkafka has no probe of its connections; the
        request is sent only while the brokers are thought down, so an idle topic does not
        keep the daemon unready after the broker is back)."""
        if self.consumer is None:
            return False
        if self._all_down:
            try:
                self.consumer.list_topics(timeout=PROBE_TIMEOUT_S)
                self._all_down = False
            except KafkaException:
                pass
        return not self._all_down
