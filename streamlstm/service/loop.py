"""The consumer loop of one pipeline: single-threaded, in a fixed order.

Each turn: **poll -> decode -> process -> emit alerts and dead letters**, and
when the checkpoint interval has passed (or on revoke / shutdown): **flush
the producer -> persist the checkpoint -> commit offsets**. The periodic
checkpoint's writes run on one writer thread (:mod:`.checkpoint_writer`): the
loop flushes and takes the snapshot (state rows + the offsets they belong to),
goes on with events, and commits those offsets on the turn after the writer
says they are durable. Flushing first is
what makes a crash safe: every alert of the events a checkpoint covers is in
Kafka before the checkpoint exists, and alerts of events after it are
re-emitted on replay with the same ids; before the replay the sink reads back
what the output topics already hold since the checkpoint and does not send
those again (``AlertSink.recall``: each id once on the topic, within its bounds).

A micro-batch costs one decode and one detector call per partition present
in it; streams of partition ``p`` of the ``i``-th source topic live in
detector group ``i * GROUP_STRIDE + p`` (65536) (plain ``p`` for a single topic), which is
also part of their alert ids.

Decisions:
- The broker going away is not a crash: connection, produce and commit
  failures are counted, shown as ``broker_up 0`` and not-ready, and retried
  with exponential backoff (0.5 s doubling to 30 s). Events keep being
  processed from what was fetched; the checkpoint is not written while the
  producer cannot deliver.
- A checkpoint that does not fit the model (written for another shape) is
  fatal with an explicit message: silently starting cold would replay
  nothing and lose state. So is a partition whose every checkpoint
  generation is unreadable, unless ``checkpoint.on_unreadable: start_cold``
  says to lose that state (an ERROR naming the files, and
  ``streamlstm_checkpoints_lost_total``). A fatal error met in a rebalance
  callback (kafka-python's IO thread) is re-raised on the loop thread.
- One stream, one partition: a stream's state lives with the partition its
  first event came from (its detector group). An event of it on another
  partition (producers not keying by stream) still updates that state, but a
  checkpoint, replay or rebalance of either partition can no longer restore
  it exactly. Such events are counted (``streamlstm_stream_partition_conflicts_total``,
  one array compare per batch) and a WARNING names the stream and both
  partitions, at most once a minute; so are the streams of a restored
  checkpoint already live on another partition (the checkpoint's state wins).
- The periodic checkpoint does not wait for its writes (on the writer's thread;
  at most one in flight: one falling due meanwhile waits for it) nor for its
  offset commit's answer (the commit is sent only once the checkpoint is
  durable; a failure is counted and backed off on the next turn). Assignment,
  revocation and shutdown first wait for the write in flight and commit it;
  the revoked partitions' and the final checkpoint are written on the loop's
  thread, and the final one's commit is waited for.
- Idle-TTL eviction runs at checkpoint time with "now" = the newest event
  time seen; like LRU eviction, it is the one thing a replay after a crash
  may do at a different point than the original run.

Length: the turn (poll, decode, score, emit, checkpoint, commit) is one ordered protocol
whose crash safety depends on the order; the checkpoint store, backoff, health and
metrics already live beside it.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from kafka import TopicPartition  # type: ignore[import-untyped]
from kafka.errors import KafkaError  # type: ignore[import-untyped]

from streamlstm import model as model_io
from streamlstm.detector import OUTCOME_NAMES, REJECTED, Detector
from streamlstm.errors import CheckpointError, ModelError, StreamlstmError
from streamlstm.io.decode import Decoder
from streamlstm.io.records import RecordColumns
from streamlstm.kafka.sink import AlertSink, alert_record
from streamlstm.kafka.source import BrokerUnavailable, KafkaSource, source_class
from streamlstm.model import Model, weights_sha256
from streamlstm.service.backoff import Backoff
from streamlstm.service.changelog_store import StateStoreUnavailable, open_store
from streamlstm.service.checkpoint_store import Checkpoint, CheckpointLost, StateStore
from streamlstm.service.checkpoint_writer import CheckpointWriter, Job, Part, write_parts
from streamlstm.service.config.types import PipelineConfig, with_roles
from streamlstm.service.incremental import DeltaTracker
from streamlstm.service.metrics import InAlert, Metrics, PipelineStatus
from streamlstm.service.status import Health
from streamlstm.state import snapshot_keys

log = logging.getLogger(__name__)

# Scrape-time status (streams in alert, lag) is rebuilt at most this often: walking a
# million-slot table per batch would cost more than the batch.
STATUS_EVERY_S = 0.5
_REJECTED_CODES = np.array(sorted(REJECTED), np.int8)
# A stream seen on two partitions is logged at most this often per pipeline: a producer
# that does not key by stream makes nearly every batch conflict, and the log would flood.
CONFLICT_WARN_EVERY_S = 60.0
# How long a stopping loop waits for the checkpoint writer's thread before it closes
# the store: longer than a changelog write's own IO timeout would never help.
WRITER_CLOSE_S = 35.0


# A detector group per (topic, partition) of a pipeline: topic_index * GROUP_STRIDE +
# partition, so two topics' partition 0 never share streams. Kafka partitions are
# int32 but no cluster has 65536 partitions in one topic.
GROUP_STRIDE = 65536


def freeze_startup_objects() -> None:
    """Move every object alive now (modules, numba's compiler, numpy, the kernels'
    dispatchers: ~125k objects the collector tracks) to the permanent generation.

    Python's cyclic collector walks all tracked objects at each full collection, with
    the loop stopped: 40-43 ms for these alone, and 27-47 ms nine times in 20 s at 10k
    events/s in benchmarks/latency_stages.py; each one makes the events (and alerts)
    behind it late by as much (benchmarks/RESULTS-e2e.md, latency). Frozen, they are
    never walked again. Garbage now is collected first; what is created later (the Kafka
    clients, which a broker outage may replace) is collected as before. A frozen object
    is still freed when its last reference goes; only a frozen reference cycle would
    stay, so this runs once the start-up objects are the long-lived ones.
    Process-wide and idempotent (``gc.freeze``).
    """
    gc.collect()
    gc.freeze()


def group_of(topic_index: int, partition: int) -> int:
    return topic_index * GROUP_STRIDE + partition


def partition_of(group: int) -> int:
    """The Kafka partition number of a detector group (the inverse of :func:`group_of`)."""
    return group % GROUP_STRIDE


class PipelineLoop:
    """Runs one pipeline until ``stop`` is set; raises on a fatal error."""

    def __init__(
        self,
        cfg: PipelineConfig,
        metrics: Metrics,
        stop: threading.Event,
        model: Model | None = None,
        reload: threading.Event | None = None,
        alert_listeners: Sequence[Callable[[dict[str, Any]], None]] = (),
        source_factory: Callable[..., KafkaSource] | None = None,
        sink_factory: Callable[..., AlertSink] = AlertSink,
    ) -> None:
        self.cfg = cfg
        self.name: str = cfg.name
        self.metrics = metrics
        self.stop = stop
        self.reload = reload or threading.Event()
        self.health = Health(cfg.name)
        loaded = model if model is not None else model_io.load(cfg.model_path)
        self.model = with_roles(loaded, cfg.decode)
        self.detector = Detector(self.model, cfg.detector)
        self.decoder = Decoder(cfg.decode, self.model.features)
        self.store: StateStore = open_store(cfg)  # checkpoint.store: local files or Kafka
        self._delta = DeltaTracker(self.detector.table, cfg.checkpoint.full_every)
        self._writer = CheckpointWriter(self.store, cfg.name)  # the periodic checkpoints
        self.topics: tuple[str, ...] = tuple(cfg.source.topics)
        # kafka.client picks the source (kafka-python's or confluent-kafka's): one interface.
        factory = source_factory or source_class(cfg.kafka.client)
        self.source = factory(cfg.kafka, cfg.source, self, pipeline=cfg.name)
        self.sink = sink_factory(cfg.kafka, cfg.sinks, cfg.name, listeners=alert_listeners)
        self.assigned: set[TopicPartition] = set()
        self.next_offset: dict[TopicPartition, int] = {}
        self.dirty: set[TopicPartition] = set()
        self.last_checkpoint: float | None = None
        self._holding_since: float | None = None  # first held partitions, for the age
        self._refused_seen: dict[str, int] = {}  # sink.refused already counted
        self._dedup_seen: dict[str, int] = {}  # sink.deduplicated already counted
        # Restored partitions whose earlier outputs the sink must learn before the
        # replay emits any: (topic, partition) -> (resume offset, checkpoint time).
        self._recall: dict[tuple[str, int], tuple[int, float | None]] = {}
        self._last_ckpt_mono = time.monotonic()
        self._retry_at = 0.0
        self._backoff = Backoff()
        self._connected_once = False
        self._opened_time: dict[str, float] = {}  # alert id -> event time it opened
        self._lost_at: float | None = None  # monotonic time the broker was lost, if it is
        self._max_event_time = -np.inf
        self._evicted_seen = 0
        self._status_at = 0.0
        self._digest = ""
        self._digest_of: Model | None = None
        self._fatal: StreamlstmError | None = None  # raised in a rebalance callback
        # Failed asynchronous commits, appended by the client's thread, handled by step().
        self._commit_errors: list[BaseException] = []
        self._conflict_warned_at = -np.inf
        self._conflicts_unwarned = 0
        # kafka-python 3 calls rebalance listeners on its IO thread. This lock keeps a
        # callback out while a batch or a checkpoint is in progress; it is never held
        # across a blocking consumer call (those need the IO thread: deadlock).
        self._lock = threading.RLock()
        metrics.init_pipeline(self.name, OUTCOME_NAMES)

    # -- lifecycle ----------------------------------------------------------------
    def warm_up(self) -> None:
        """Compile (or load from Numba's cache) every kernel the loop may call, then run
        this pipeline's model on a scratch detector, so the first real batch is fast.

        Every kernel, not only the detector's: the JSON scanner, the bulk record reader
        and the key map's growth and eviction paths otherwise compiled on the first
        batch or the first eviction (~6 s of stopped loop with a cold cache, after
        the daemon had reported itself ready)."""
        from streamlstm.kernels import config as kernel_config
        from streamlstm.service.warmup import warmup as warm_all_kernels

        kernel_config.log_notes(log)
        t0 = time.perf_counter()
        warm_all_kernels()
        scratch = Detector(self.model, self.cfg.detector)
        x = np.zeros((4, self.model.n_features))
        scratch.process_many(["w0", "w1", "w0", "w1"], [0.0, 0.0, 1.0, 1.0], x, group=0)
        del scratch  # garbage, not frozen
        self.health.compiled = True
        log.info("pipeline=%s kernels ready in %.2fs", self.name, time.perf_counter() - t0)
        freeze_startup_objects()

    def run(self) -> None:
        self._publish(force=True)  # not ready, broker not up: visible during compilation
        self.warm_up()
        self.health.beat()
        try:
            if not self._connect():
                return
            while not self.stop.is_set():
                self.step()
            if not self._checkpoint(final=True):
                log.error(
                    "pipeline=%s final checkpoint skipped: alerts could not be delivered; "
                    "the events since the last checkpoint will be replayed on restart",
                    self.name,
                )
        finally:
            self._close_writer()
            self.sink.close()
            self.source.close()
            self.store.close()
            self._publish(force=True)
            log.info("pipeline=%s stopped", self.name)

    def _connect(self) -> bool:
        servers = ",".join(self.cfg.kafka.bootstrap_servers)
        while not self.stop.is_set():
            self.health.beat()
            self._publish(force=True)
            log.info("pipeline=%s connecting to Kafka at %s", self.name, servers)
            try:
                self.health.connecting = True
                try:
                    self.source.connect()
                    self.sink.connect()
                    self.source.start()
                finally:
                    self.health.connecting = False
                    self.health.beat()
                self._broker_state(True)
                self._backoff.reset()
                self._publish(force=True)
                return True
            except (BrokerUnavailable, KafkaError, StateStoreUnavailable) as exc:
                self.metrics.broker_errors.labels(self.name, "connect").inc()
                self.health.broker_up = False
                self._publish(force=True)
                backoff = self._backoff.failed()
                log.warning(
                    "pipeline=%s broker unavailable (%s); retrying in %.1fs",
                    self.name,
                    exc,
                    backoff,
                )
                self.source.close()
                self.sink.close()
                deadline = time.monotonic() + backoff
                while not self.stop.is_set() and time.monotonic() < deadline:
                    self.health.beat()  # waiting on purpose is not being stuck
                    self.stop.wait(min(1.0, max(0.0, deadline - time.monotonic())))
        return False

    def close(self) -> None:
        self._close_writer()
        self.sink.close()
        self.source.close()
        self.store.close()

    def _close_writer(self) -> None:
        """Stop the writer's thread before the store closes under it. A job still in
        flight here (a fatal error stopped the loop) is not committed: its partitions
        replay from the checkpoint before it, as after a crash."""
        if not self._writer.close(timeout=WRITER_CLOSE_S):
            log.warning(
                "pipeline=%s checkpoint writer still busy after %.0fs; closing the store",
                self.name, WRITER_CLOSE_S,
            )  # fmt: skip

    # -- one turn -----------------------------------------------------------------
    def step(self) -> None:
        self.health.beat()
        if self.reload.is_set():
            self.reload.clear()
            self.reload_model()
        try:
            polled = self.source.poll()
        except KafkaError as exc:
            if self._fatal is not None:  # kafka-python wraps a listener's exception
                raise self._fatal from exc
            self._broker_error("poll", exc)
            polled = {}
        if self._fatal is not None:
            raise self._fatal
        done = self._writer.take()  # the periodic checkpoint, once durable: commit it
        if done is not None:
            self._finish(done, commit=False)
        if self._commit_errors:
            failed = self._commit_errors[:]
            del self._commit_errors[: len(failed)]  # one appended meanwhile stays
            for err in failed:
                self.metrics.commit_failures.labels(self.name).inc()
                self._broker_error("commit", err)
        if self._recall:
            self._recall_outputs()
        if polled:
            self.process(polled)
        now = time.monotonic()
        due = now - self._last_ckpt_mono >= self.cfg.checkpoint.interval_s
        # Due while the previous one is still being written: it starts once that one is
        # taken back (the dirty partitions wait; nothing queues up).
        if due and now >= self._retry_at and not self._writer.busy:
            self._start_checkpoint()
        self._publish()

    def process(self, polled: Mapping[TopicPartition, RecordColumns | list[Any]]) -> None:
        """Process one poll: per partition its columns (the source's form) or a list of
        record objects (tests), turned into columns here so both take one path."""
        t0 = time.perf_counter()
        with self._lock:
            for tp, records in polled.items():
                if not len(records) or tp not in self.assigned:
                    continue
                if not isinstance(records, RecordColumns):
                    records = RecordColumns.from_records(tp.topic, tp.partition, records)
                self._process_partition(tp, records)
        self.metrics.batches.labels(self.name).inc()
        self.metrics.batch_seconds.labels(self.name).observe(time.perf_counter() - t0)
        self._broker_state(True)

    def _process_partition(self, tp: TopicPartition, records: RecordColumns) -> None:
        name = self.name
        m = self.metrics
        batch = self.decoder.decode(records)
        # Bad records of both stages (the decoder's and the detector's), dead-lettered
        # in one pass, in offset order, after the batch: (record index, reason, detail).
        dead = [(rj.index, rj.reason, rj.detail) for rj in batch.rejects]
        if batch.rejects:
            m.record_outcomes(name, batch.reject_counts())
        if len(batch):
            group = group_of(self.topics.index(tp.topic), tp.partition)
            det = self.detector
            res = det.process_many(batch.keys, batch.times, batch.x, batch.offsets, group=group)
            # Streams whose state another partition holds (-1: a slot freed in this batch).
            owner = det.table.group[res.slots]
            foreign = np.flatnonzero((owner != group) & (owner >= 0))
            if foreign.size:
                i = int(foreign[0])
                self._conflict("event", int(foreign.size), batch.keys[i], group, int(owner[i]))
            m.record_outcomes(name, res.counts())
            bad = np.flatnonzero(np.isin(res.outcome, _REJECTED_CODES))
            for i in bad.tolist():
                code = int(res.outcome[i])
                dead.append((int(batch.index[i]), OUTCOME_NAMES[code], _detail(code, batch, i)))
            scored = res.score[np.isfinite(res.score)]
            m.score.observe_many((name,), scored)
            n_anom = int(np.count_nonzero(scored >= det.open_threshold))
            if n_anom:
                m.anomalies.labels(name).inc(n_anom)
            for t in res.transitions:
                rec = alert_record(name, tp.topic, tp.partition, int(batch.offsets[t.index]), t)
                if self.sink.alert(rec):
                    m.alerts_sent.labels(name).inc()
                m.transitions.labels(name, t.kind).inc()
                if t.kind == "opened":  # since when, for /alerts (a restored one: unknown)
                    self._opened_time[t.alert_id] = t.time
            now = time.time()
            m.latency.observe_many((name,), now - records.timestamps / 1000.0)
            m.event_lag.observe_many((name,), now - batch.times)
            self._max_event_time = max(self._max_event_time, float(batch.times.max()))
        for j, reason, detail in sorted(dead, key=lambda d: d[0]):
            self._dead_letter(records.record(j), reason, detail)  # an object only for these
        self.next_offset[tp] = records.next_offset
        self.dirty.add(tp)

    def _conflict(self, at: str, n: int, key: str, here: int, there: int) -> None:
        """Count ``n`` partition conflicts; warn (at most once a minute) naming one."""
        self.metrics.partition_conflicts.labels(self.name, at).inc(n)
        self._conflicts_unwarned += n
        now = time.monotonic()
        if now - self._conflict_warned_at < CONFLICT_WARN_EVERY_S:
            return
        self._conflict_warned_at = now
        what = "has events on" if at == "event" else "is in the checkpoint restored for"
        log.warning(
            "pipeline=%s stream %r %s %s but its state is held with %s (%d such conflicts "
            "since the last warning): producers must key records by the stream id, or "
            "restarts and rebalances cannot restore its state exactly (README: How to "
            "produce)",
            self.name, key, what, self._where(here), self._where(there),
            self._conflicts_unwarned,
        )  # fmt: skip
        self._conflicts_unwarned = 0

    def _where(self, group: int) -> str:
        return f"topic={self.topics[group // GROUP_STRIDE]} partition={partition_of(group)}"

    def _dead_letter(self, record: Any, reason: str, detail: str) -> None:
        self.metrics.dead_letters.labels(self.name, reason).inc()
        try:
            self.sink.dead_letter(record, reason, detail)
        except BrokerUnavailable as exc:
            self._broker_error("produce", exc)

    # -- checkpoint + commit -----------------------------------------------------------
    def _checkpoint(
        self,
        partitions: Sequence[TopicPartition] | None = None,
        final: bool = False,
        commit: bool = True,
    ) -> bool:
        """Flush, persist the dirty partitions' checkpoints, commit; False if it must wait.

        Synchronous, on the calling thread: after the writer's job in flight (if any) is
        written and finished. For the final checkpoint, revocations and tools; the
        periodic one is written on the writer's thread (:meth:`_start_checkpoint`).
        ``commit=False`` commits asynchronously: in rebalance callbacks (on kafka-python's
        IO thread a blocking commit would deadlock). The commit is still sent only after
        the checkpoint is durable; a failure comes back through ``_commit_errors`` and
        counts as a synchronous one does.
        """
        self._last_ckpt_mono = time.monotonic()
        self._settle(commit)
        with self._lock:
            job = self._snapshot(partitions, final)
        if job is None:
            return False
        if not job.parts:
            return True
        write_parts(self.store, job)
        return self._finish(job, commit)

    def _start_checkpoint(self) -> None:
        """The periodic checkpoint: snapshot here, write on the writer's thread; step()
        commits once it is durable. The commit is not waited for either: its answer
        changes nothing the loop does next (the checkpoint wins over the committed
        offset), and waiting stopped every event for 2-19 ms a checkpoint."""
        self._last_ckpt_mono = time.monotonic()
        with self._lock:
            job = self._snapshot(None, final=False)
        if job is not None and job.parts:
            self._writer.submit(job)

    def _settle(self, commit: bool) -> None:
        """Wait for the writer's job in flight and finish it (commit its offsets), so the
        caller may use the store and the partitions' state itself."""
        job = self._writer.take(timeout=None)
        if job is not None:
            self._finish(job, commit)

    def _snapshot(self, partitions: Sequence[TopicPartition] | None, final: bool) -> Job | None:
        """Flush, then copy the dirty partitions' state rows with their next offsets (a
        job for the writer); None if delivery failed."""
        self._expire()
        todo = [tp for tp in (partitions or sorted(self.assigned)) if tp in self.dirty]
        if not todo:
            return Job([])
        timeout = min(10.0, self.cfg.checkpoint.interval_s) if not final else 10.0
        delivered = self.sink.flush(timeout)
        self._count_sink()
        if not delivered:
            self._broker_error("produce", "undelivered records after flush")
            return None
        meta: dict[str, Any] = {
            "model_sha256": self._model_digest(),
            "model": self.model.describe(),
            # When the state was taken: every output of the events after it was sent
            # later (the restore's read-back of the output topics starts here). The
            # store's written_at comes later, once the writer got to it.
            "snapshot_at": time.time(),
        }
        parts = []
        for tp in todo:
            g = group_of(self.topics.index(tp.topic), tp.partition)
            snap, how = self._delta.snapshot(g)  # full, or changed streams only
            parts.append(Part(tp, g, self.next_offset[tp], snap, meta | how))
            self.dirty.discard(tp)  # events from now on make it dirty again
        return Job(parts)

    def _finish(self, job: Job, commit: bool) -> bool:
        """A written job back on the loop's thread: record what is durable, then commit
        its offsets, or handle its error as a write on this thread would be."""
        with self._lock:  # the bookkeeping, not the commit (see _lock)
            offsets = self._record(job)
        if offsets is None:
            return False
        if offsets:
            try:
                if commit:
                    self.source.commit(offsets)
                else:
                    self.source.commit_async(offsets, on_error=self._commit_failed)
                self._backoff.reset()
            except KafkaError as exc:
                # Not fatal: the checkpoint is durable and wins over the committed offset.
                self.metrics.commit_failures.labels(self.name).inc()
                self._broker_error("commit", exc)
        return True

    def _record(self, job: Job) -> dict[TopicPartition, int] | None:
        """What ``job`` made durable; its offsets to commit, None if the changelog could
        not be reached (retried later); raises on any other write error."""
        for part in job.parts[: len(job.written)]:
            self._delta.written(part.group)  # durable, whatever happened after it
        if job.error is not None:
            # Not committed: every partition of the job is checkpointed again next time.
            self.dirty.update(p.tp for p in job.parts if p.tp in self.assigned)
            exc = job.error
            if isinstance(exc, StateStoreUnavailable):  # the changelog's broker: wait
                self._broker_error("checkpoint", exc)
                return None
            self.metrics.checkpoint_failures.labels(self.name).inc()
            log.error("pipeline=%s checkpoint failing, stopping: %s", self.name, exc)
            if isinstance(exc, CheckpointError):
                raise CheckpointError(f"{self.cfg.path}.checkpoint.dir: {exc}") from exc
            raise exc
        size = sum(info.size for info in job.written)
        self.metrics.checkpoint_seconds.labels(self.name).observe(job.seconds)
        self.metrics.checkpoint_bytes.labels(self.name).set(size)
        self.last_checkpoint = time.time()
        log.debug(
            "pipeline=%s checkpoint of %d partitions, %d bytes in %.3fs",
            self.name, len(job.parts), size, job.seconds,
        )  # fmt: skip
        return {p.tp: p.next_offset for p in job.parts if p.tp in self.assigned}

    def _commit_failed(self, exc: BaseException) -> None:
        """An asynchronous commit failed (called on the client's thread): for step()."""
        self._commit_errors.append(exc)

    def _count_sink(self) -> None:
        """The sink's own counts (refused, deduplicated records) into metrics."""
        for counter, counts, seen in (
            (self.metrics.sink_refused, self.sink.refused, self._refused_seen),
            (self.metrics.sink_deduplicated, self.sink.deduplicated, self._dedup_seen),
        ):
            for kind, n in counts.items():
                if n > seen.get(kind, 0):
                    counter.labels(self.name, kind).inc(n - seen.get(kind, 0))
                    seen[kind] = n

    def _recall_outputs(self) -> None:
        """Before a restored partition replays, learn what its earlier life already sent
        (AlertSink.recall), so the replay does not send it twice. Outside the lock: it
        reads the output topics, a blocking consumer call."""
        with self._lock:  # filled by on_assigned, on kafka-python's IO thread in group mode
            resume, self._recall = self._recall, {}
        if not self.sink.recall(resume):
            self.metrics.sink_lookback_incomplete.labels(self.name).inc()
        self._count_sink()

    def _expire(self) -> None:
        table = self.detector.table
        if np.isfinite(self._max_event_time):
            self.detector.expire(self._max_event_time)
        evicted = table.evicted_lru + table.evicted_idle
        if evicted != self._evicted_seen:
            # Evictions change other partitions' state too: checkpoint all of them.
            self._evicted_seen = evicted
            self.dirty.update(tp for tp in self.assigned if tp in self.next_offset)

    def _broker_error(self, op: str, exc: object) -> None:
        self.metrics.broker_errors.labels(self.name, op).inc()
        self._broker_state(False, f"{op} failed")
        delay = self._backoff.failed()
        self._retry_at = time.monotonic() + delay
        log.warning("pipeline=%s %s failed (%s); retrying in %.1fs", self.name, op, exc, delay)

    def _broker_state(self, up: bool, why: str = "no connection") -> None:
        """Set broker_up; one line of our own when it changes (kafka-python's own lines
        are at WARNING by default and say nothing about what the daemon does about it)."""
        was = self.health.broker_up
        self.health.broker_up = up
        if up and not self._connected_once:
            self._connected_once = True
            log.info(
                "pipeline=%s connected to Kafka at %s",
                self.name, ",".join(self.cfg.kafka.bootstrap_servers),
            )  # fmt: skip
        elif up and not was and self._lost_at is not None:
            log.info(
                "pipeline=%s broker back after %.1fs", self.name, time.monotonic() - self._lost_at
            )
            self._lost_at = None
        elif not up and was:
            self._lost_at = time.monotonic()
            log.warning(
                "pipeline=%s broker lost (%s); scoring what was fetched, checkpoints wait",
                self.name, why,
            )  # fmt: skip

    # -- rebalance (called by the source, on this thread) ---------------------------------
    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        with self._lock:
            try:
                self._on_assigned(partitions)
            except StreamlstmError as exc:
                self._fatal = exc
                raise

    def _on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        self._settle(commit=False)  # the store is the writer's while it writes
        self.health.restored = False
        for tp in partitions:
            if tp.topic not in self.topics:
                continue
            g = group_of(self.topics.index(tp.topic), tp.partition)
            self.detector.table.drop(group=g)
            self._delta.forget(g)
            ckpt = self._read_checkpoint(tp)
            if ckpt is not None:
                self._check_restore(ckpt, g)
                try:
                    restored = self.detector.table.restore(ckpt.snapshot, group=g)
                    if self.detector.carried is not None:  # the checkpoint is newer
                        self.detector.carried.forget(restored)
                except CheckpointError as exc:
                    at = self.cfg.path
                    raise CheckpointError(
                        f"{at}.checkpoint.dir: pipeline={self.name} partition={tp.partition}: "
                        f"checkpoint {ckpt.path} does not fit model {self.model.describe()}: "
                        f"{exc}; point {at}.model.path back at its model, or move "
                        f"{self.cfg.checkpoint.dir} away to start cold"
                    ) from exc
                self.source.seek(tp, ckpt.next_offset)
                self.next_offset[tp] = ckpt.next_offset
                # When its state was taken (before snapshot_at: when it was written).
                written = ckpt.meta.get("snapshot_at", ckpt.meta.get("written_at"))
                self._recall[(tp.topic, tp.partition)] = (
                    ckpt.next_offset,
                    float(written) if written is not None else None,
                )
                where = f"checkpoint ({ckpt.n_streams} streams)"
                off: int | None = ckpt.next_offset
            else:
                off = self.source.seek(tp, None)
                if off is not None:
                    self.next_offset[tp] = off
                # No checkpoint: an earlier life may have died before its first one, having
                # sent outputs for these offsets. No time bound is known: the count's only.
                self._recall[(tp.topic, tp.partition)] = (off or 0, None)
                where = (
                    "committed offset"
                    if off is not None
                    else f"committed offset, else {self.cfg.source.start}"
                )
            log.info(
                "pipeline=%s topic=%s partition=%d offset=%s assigned; resuming from %s",
                self.name, tp.topic, tp.partition, off, where,
            )  # fmt: skip
            self.assigned.add(tp)
            if self._holding_since is None:
                self._holding_since = time.time()
            self.metrics.rebalances.labels(self.name, "assigned").inc()
        self.health.assigned = True
        self.health.restored = True
        self._publish(force=True)

    def _check_restore(self, ckpt: Checkpoint, g: int) -> None:
        """Count the restored streams that another held partition has live."""
        table = self.detector.table
        clash = [
            (k, og) for k in snapshot_keys(ckpt.snapshot)
            if k in table and (og := int(table.group[table.slot(k)])) not in (g, -1)
        ]  # fmt: skip
        if clash:
            self._conflict("restore", len(clash), clash[0][0], g, clash[0][1])

    def _read_checkpoint(self, tp: TopicPartition) -> Checkpoint | None:
        t0 = time.perf_counter()
        try:
            return self.store.read(tp.topic, tp.partition)
        except CheckpointLost as lost:
            self._checkpoint_lost(tp, lost)
            return None
        finally:
            self.metrics.state_restore_seconds.labels(self.name).observe(time.perf_counter() - t0)

    def _checkpoint_lost(self, tp: TopicPartition, lost: CheckpointLost) -> None:
        """Refuse to start (``checkpoint.on_unreadable: fail``), or say loudly what is lost."""
        files = "; ".join(why for _, why in lost.failures)  # each names its file
        where = f"pipeline={self.name} topic={tp.topic} partition={tp.partition}"
        key = f"{self.cfg.path}.checkpoint.on_unreadable"
        if self.cfg.checkpoint.on_unreadable != "start_cold":
            raise CheckpointError(
                f"{where}: every checkpoint generation is unreadable, so the state of the "
                f"partition's streams would be lost; refusing to start ({files}). "
                f"Restore the files (or run the version "
                f"that wrote them), or set {key}: start_cold to drop that state and resume "
                "from the committed offset"
            ) from lost
        self.metrics.checkpoints_lost.labels(self.name).inc()
        moved = self.store.quarantine(tp.topic, tp.partition, lost.failures)
        log.error(
            "%s: STATE LOST: every checkpoint generation is unreadable (%s); starting cold "
            "as %s says: the partition's streams warm up again, their open alerts are "
            "forgotten, and it resumes from the committed offset. Files kept as %s",
            where, files, key, ", ".join(str(p) for p in moved),
        )  # fmt: skip

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        with self._lock:
            self._on_revoked(partitions)

    def _on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        mine = [tp for tp in partitions if tp in self.assigned]
        if not mine:
            return
        try:
            ok = self._checkpoint(mine, commit=False)
        except KafkaError as exc:
            ok = False
            self._broker_error("commit", exc)
        if not ok:
            log.error(
                "pipeline=%s could not checkpoint revoked partitions %s; their new owner will "
                "replay from the previous checkpoint",
                self.name, [tp.partition for tp in mine],
            )  # fmt: skip
        for tp in mine:
            g = group_of(self.topics.index(tp.topic), tp.partition)
            self.detector.table.drop(group=g)
            self._delta.forget(g)
            self.assigned.discard(tp)
            self.next_offset.pop(tp, None)
            self.dirty.discard(tp)
            self._recall.pop((tp.topic, tp.partition), None)
            self.sink.forget([(tp.topic, tp.partition)])
            self.metrics.rebalances.labels(self.name, "revoked").inc()
            log.info("pipeline=%s topic=%s partition=%d revoked", self.name, tp.topic, tp.partition)

    # -- model reload (SIGHUP) -------------------------------------------------------------
    def reload_model(self) -> None:
        path = self.cfg.model_path
        try:
            new = with_roles(model_io.load(path), self.cfg.decode)
            self.detector.reload_model(new)
        except ModelError as exc:
            self.metrics.model_reloads.labels(self.name, "refused").inc()
            log.error("pipeline=%s model reload refused, keeping the old model: %s", self.name, exc)
            return
        except Exception as exc:  # noqa: BLE001 - a bad file must not kill a working daemon
            self.metrics.model_reloads.labels(self.name, "refused").inc()
            log.error(
                "pipeline=%s model reload from %s failed unexpectedly, keeping the old model: "
                "%r", self.name, path, exc, exc_info=True,
            )  # fmt: skip
            return
        self.model = new
        self.metrics.model_reloads.labels(self.name, "ok").inc()
        log.info("pipeline=%s model reloaded from %s: %s", self.name, path, new.describe())

    def _model_digest(self) -> str:
        if self._digest_of is not self.model:
            self._digest = weights_sha256(self.model.arrays())
            self._digest_of = self.model
        return self._digest

    # -- status for metrics and health ----------------------------------------------------
    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_at < STATUS_EVERY_S:
            return
        self._status_at = now
        if self.source.consumer is not None and now >= self._retry_at:
            # A live connection is the cheap signal; failed operations set it to 0 until
            # their retry time, so a flapping broker does not flicker readiness.
            self._broker_state(self.source.connected())
        table = self.detector.table
        lag = {}
        for tp in self.assigned:
            hw = None
            try:
                hw = self.source.highwater(tp) if self.source.consumer is not None else None
            except Exception:  # noqa: BLE001 - lag is informative only
                hw = None
            nxt = self.next_offset.get(tp)
            if hw is not None and nxt is not None:
                lag[(tp.topic, tp.partition)] = max(0, int(hw) - nxt)
        m = self.model
        self.metrics.publish(
            PipelineStatus(
                pipeline=self.name,
                live_streams=len(table),
                evicted_lru=table.evicted_lru,
                evicted_idle=table.evicted_idle,
                continued=self.detector.continued,
                state_bytes=table.state_bytes(),
                in_alert=self._in_alert(),
                lag=lag,
                # Before the first checkpoint the age counts from when the pipeline first
                # held partitions: a daemon that never checkpoints must still page.
                last_checkpoint=self.last_checkpoint or self._holding_since,
                model={
                    "cell": m.cell, "layers": str(m.layers), "hidden": str(m.hidden),
                    "features": ",".join(m.features), "sha256": self._model_digest(),
                },
                assigned=len(self.assigned),
                broker_up=self.health.broker_up,
                ready=self.health.ready,
            )
        )  # fmt: skip

    def _in_alert(self) -> list[InAlert]:
        open_ = self.detector.open_alerts()
        ids = {a.alert_id for a in open_}
        for gone in [i for i in self._opened_time if i not in ids]:  # closed, evicted, revoked
            del self._opened_time[gone]
        return [
            InAlert(
                a.key,
                partition_of(a.group),
                a.peak,
                a.features,
                a.alert_id,
                a.opened_ref,
                self._opened_time.get(a.alert_id),
                a.last_time,
            )  # fmt: skip
            for a in open_
        ]


def _detail(code: int, batch: Any, i: int) -> str:
    name = OUTCOME_NAMES[code]
    if name == "too_old":
        return f"event time {batch.times[i]:.3f} is older than the stream's last event"
    if name == "missing":
        return "every feature is missing"
    if name == "non_finite":
        return "a feature or the event time is not finite"
    return "a feature is beyond scoring.max_abs standard deviations"
