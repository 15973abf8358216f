"""Checkpoints kept on the Kafka cluster: one compacted changelog topic per pipeline.

``checkpoint.store: kafka`` puts each partition's checkpoint (the stream
table snapshot plus the next offset, as :mod:`.checkpoint_store` does on disk)
into a changelog topic, ``<pipeline>-state`` unless ``checkpoint.topic`` says
otherwise, so any replica restores any partition: no per-pod volume.

Record layout, for source partition ``p`` of topic ``t`` (topic names cannot
hold ``/``), in changelog partition ``p % <changelog partitions>``:

- ``t/p/s<slot>/<chunk>``: the snapshot's ``.npz`` bytes cut into pieces of
  ``checkpoint.chunk_bytes`` (Kafka refuses records over ~1 MB by default);
- ``t/p/s<slot>/m``: the manifest, JSON: generation, next offset, and for
  each chunk its changelog offset, size and CRC-32, plus the model digest.

``slot = generation % (keep + 1)``: a new generation overwrites the keys of
one ``keep`` generations older, so compaction leaves at most ``keep + 1``
generations per partition and the topic stays bounded without tombstones.

Decisions:
- The manifest is sent only after every chunk is acknowledged, and ``write``
  returns only after the manifest is: a generation becomes visible atomically,
  and the loop commits the source offset only after that. A reader trusts a
  generation only if its manifest is there and every chunk it lists is found
  at its offset with its key, size and CRC; a torn or damaged generation is
  skipped with a warning and the previous complete one is used.
- A restore reads only what it needs: it scans its changelog partition
  backwards in growing windows from the end, stops at the newest complete
  manifest of its source partition, then reads that generation's chunks at
  their recorded offsets. On a compacted topic that is a few records.
- The committed offset of the source partition is never ahead of the state:
  if the consumer group has committed past the newest complete manifest (the
  changelog was deleted, or its retention dropped the state), the state is
  lost and :class:`~.checkpoint_store.CheckpointLost` is raised, so
  ``checkpoint.on_unreadable`` decides, as for unreadable files.
- A broker error while writing is :class:`StateStoreUnavailable`: the loop
  treats it as a broker outage (the checkpoint and commit wait). While
  restoring it is fatal: resuming without the state would lose it.
- The changelog topic is created when missing (``cleanup.policy=compact``,
  as many partitions as the first source topic). Never add partitions to
  it: a source partition's records would move to another changelog partition.
- Local disk is not used: the cluster is the authority.

Length: the write protocol (chunks, then the manifest) and the read protocol that
trusts only what it wrote (backward scan, chunk checks, delta chains) are one record
format seen from both sides; splitting them would put the format in two places.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # type: ignore[import-untyped]
from kafka.errors import KafkaError  # type: ignore[import-untyped]

from streamlstm.errors import CheckpointError
from streamlstm.kafka.config import KafkaConfig
from streamlstm.kafka.ledger import FETCH_WAIT_MS
from streamlstm.service.checkpoint_store import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    CheckpointLost,
    CheckpointStore,
    StateStore,
    WriteInfo,
)
from streamlstm.service.config.types import PipelineConfig
from streamlstm.service.incremental import merge
from streamlstm.state import snapshot_from_bytes, snapshot_to_bytes

log = logging.getLogger(__name__)

# Under Kafka's default message.max.bytes (1,048,588) with room for the record's key
# and batch headers: a bigger chunk is refused by a default broker.
DEFAULT_CHUNK_BYTES = 512 * 1024
# First backwards window of a restore (records); each next one is 4x larger. A compacted
# changelog holds ~(keep + 1) * (chunks + 1) records per partition, so one window often
# suffices; an uncompacted one (tansu) costs a few more.
FIRST_WINDOW = 256
# A restore or write that cannot reach the changelog within this long gives up.
IO_TIMEOUT_S = 30.0
# A state behind the group's committed offset is read again this many times, a second
# apart, before it is declared lost: the replica that wrote the newer generation and then
# committed may have done so a moment ago, and a loaded broker can show the commit before
# a fetch shows the generation (seen once under a full test suite on a 2-core machine).
LAGGING_READS = 3
LAGGING_PAUSE_S = 1.0


class StateStoreUnavailable(CheckpointError):
    """The changelog topic cannot be reached now (a broker outage): retry later."""


@dataclass(frozen=True)
class Manifest:
    """One generation's manifest as read back from the changelog."""

    generation: int
    next_offset: int
    chunks: list[tuple[int, int, int]]  # (changelog offset, size, crc32)
    doc: dict[str, Any]
    offset: int  # the manifest's own changelog offset


def open_store(cfg: PipelineConfig) -> StateStore:
    """The checkpoint store ``checkpoint.store`` names for pipeline ``cfg``."""
    c = cfg.checkpoint
    if c.store == "kafka":
        return KafkaCheckpointStore(
            cfg.kafka, cfg.name, c.topic or f"{cfg.name}-state", keep=c.keep,
            chunk_bytes=c.chunk_bytes, source_topics=cfg.source.topics,
            full_every=c.full_every,
        )  # fmt: skip
    return CheckpointStore(
        Path(c.dir), cfg.name, keep=c.keep,
        committed=CommittedOffsets(cfg.kafka) if cfg.kafka.group_id else None,
    )  # fmt: skip


class CommittedOffsets:
    """The group's committed offsets of source partitions, read with a client of our own
    (the daemon's consumer may be inside a rebalance callback, where its blocking calls
    are refused). It never subscribes, so it never joins the group, and never commits.
    A broker that does not answer gives None (unknown): the check is skipped, never
    fatal on its own."""

    def __init__(self, kafka: KafkaConfig, factory: Callable[..., Any] = KafkaConsumer) -> None:
        self.kafka = kafka
        self._factory = factory
        self._consumer: Any = None

    def __call__(self, topic: str, partition: int) -> int | None:
        try:
            if self._consumer is None:
                kw = self.kafka.consumer_kwargs()
                # Not a member: closing a client with the pod's static id would send a
                # LeaveGroup for it and take the daemon's own consumer out of the group.
                kw.pop("group_instance_id", None)
                kw.update(enable_auto_commit=False)
                kw["client_id"] = f"{self.kafka.client_id}-offsets"
                self._consumer = self._factory(**kw)
            off = self._consumer.committed(TopicPartition(topic, partition))
        except KafkaError as exc:
            log.warning("cannot read the committed offset of %s/%d: %s", topic, partition, exc)
            return None
        return None if off is None or off < 0 else int(off)

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.warning("closing the committed-offset reader: %s", exc)
            self._consumer = None


def split_chunks(data: bytes, chunk_bytes: int) -> list[bytes]:
    """``data`` cut into pieces of at most ``chunk_bytes`` (one empty piece if empty)."""
    if chunk_bytes < 1:
        raise CheckpointError(f"chunk size {chunk_bytes}, expected >= 1")
    return [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]


def record_key(topic: str, partition: int, slot: int, part: str) -> bytes:
    return f"{topic}/{partition}/s{slot}/{part}".encode()


def parse_manifest(value: bytes, offset: int) -> Manifest:
    try:
        doc = json.loads(value.decode())
        if doc.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"manifest format {doc.get('format')!r}, expected {CHECKPOINT_FORMAT}"
            )
        chunks = [(int(o), int(n), int(c)) for o, n, c in doc["chunks"]]
        return Manifest(int(doc["generation"]), int(doc["next_offset"]), chunks, doc, offset)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"damaged manifest: {exc}") from exc


def assemble(m: Manifest, key_prefix: bytes, records: Mapping[int, Any]) -> bytes:
    """The snapshot bytes of manifest ``m`` from ``records`` (changelog offset -> record);
    raises CheckpointError when a chunk is missing, replaced or damaged."""
    out = []
    for i, (off, size, crc) in enumerate(m.chunks):
        rec = records.get(off)
        want = key_prefix + f"{i:05d}".encode()
        if rec is None or rec.key != want or rec.value is None:
            raise CheckpointError(
                f"generation {m.generation}: chunk {i} is not at changelog offset {off} "
                "(torn write, or compacted away)"
            )
        if len(rec.value) != size or zlib.crc32(rec.value) != crc:
            raise CheckpointError(f"generation {m.generation}: chunk {i} fails its size/CRC")
        out.append(rec.value)
    return b"".join(out)


class KafkaCheckpointStore:
    """Reads and writes one pipeline's checkpoints in its changelog topic.

    Same interface as :class:`~.checkpoint_store.CheckpointStore` (``read``,
    ``write``, ``quarantine``, ``close``). Clients connect on first use, so
    building it needs no broker.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        pipeline: str,
        topic: str,
        keep: int = 2,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        source_topics: Sequence[str] = (),
        full_every: int = 1,
        producer_factory: Callable[..., Any] = KafkaProducer,
        consumer_factory: Callable[..., Any] = KafkaConsumer,
    ) -> None:
        if keep < 1:
            raise CheckpointError(f"checkpoint keep is {keep}, expected >= 1")
        self.kafka = kafka
        self.pipeline = pipeline
        self.topic = topic
        self.keep = keep
        self.chunk_bytes = chunk_bytes
        # Key slots: a chain (a full generation and its deltas) plus ``keep`` older
        # generations stay addressable while the next ones are written.
        self.slots = max(1, full_every) + keep
        self.source_topics = tuple(source_topics)
        self._producer_factory = producer_factory
        self._consumer_factory = consumer_factory
        self._producer: Any = None
        self._consumer: Any = None
        self._n_partitions: int | None = None
        self._generation: dict[tuple[str, int], int] = {}
        # (generation, manifest offset) from the newest full one to the newest written or
        # restored: what a delta's manifest lists so a reader finds its whole chain.
        self._chain: dict[tuple[str, int], list[list[int]]] = {}

    # -- clients -----------------------------------------------------------------
    def _clients(self) -> tuple[Any, Any]:
        try:
            if self._consumer is None:
                # The pipeline's group id: committed() of the source partitions, read with
                # a client of our own (the daemon's consumer may be inside a rebalance
                # callback, where its blocking calls are refused). It never subscribes, so
                # it never joins the group, and never commits.
                kw = self.kafka.consumer_kwargs()
                # Not a member: closing a client with the pod's static id would send a
                # LeaveGroup for it and take the daemon's own consumer out of the group.
                kw.pop("group_instance_id", None)
                kw.update(enable_auto_commit=False, auto_offset_reset="earliest")
                kw["client_id"] = f"{self.kafka.client_id}-state"
                # An empty changelog partition answers a fetch only after fetch_max_wait_ms
                # (500 ms by default), twice per read: ~1 s per partition of a first start,
                # spent in the rebalance callback, where no heartbeat is sent.
                kw["fetch_max_wait_ms"] = FETCH_WAIT_MS
                self._consumer = self._consumer_factory(**kw)
            if self._producer is None:
                kw = self.kafka.producer_kwargs()
                kw.update(acks="all", linger_ms=5, max_request_size=2 * 1024 * 1024)
                kw["client_id"] = f"{self.kafka.client_id}-state"
                self._producer = self._producer_factory(**kw)
            if self._n_partitions is None:
                self._n_partitions = self._ensure_topic()
        except KafkaError as exc:
            self.close()
            raise StateStoreUnavailable(
                f"pipeline={self.pipeline} cannot reach the changelog topic {self.topic!r}: {exc}"
            ) from exc
        return self._producer, self._consumer

    def _ensure_topic(self) -> int:
        parts = self._consumer.partitions_for_topic(self.topic)
        if parts:
            return len(parts)
        from kafka.admin import KafkaAdminClient, NewTopic  # type: ignore[import-untyped]
        from kafka.errors import TopicAlreadyExistsError

        n = 1
        for t in self.source_topics[:1]:
            n = len(self._consumer.partitions_for_topic(t) or ()) or 1
        admin = KafkaAdminClient(**{**self.kafka.producer_kwargs(), "client_id": "streamlstm"})
        try:
            admin.create_topics([NewTopic(self.topic, n, -1, topic_configs={
                "cleanup.policy": "compact"})])  # fmt: skip
            log.info(
                "pipeline=%s created changelog topic %s (%d partitions, compacted)",
                self.pipeline, self.topic, n,
            )  # fmt: skip
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()
        deadline = time.monotonic() + IO_TIMEOUT_S
        while time.monotonic() < deadline:
            parts = self._consumer.partitions_for_topic(self.topic)
            if parts:
                return len(parts)
            time.sleep(0.1)
        raise StateStoreUnavailable(f"changelog topic {self.topic!r} does not show up")

    def close(self) -> None:
        for c in (self._producer, self._consumer):
            if c is not None:
                try:
                    c.close()
                except Exception as exc:  # noqa: BLE001 - best effort: writes were acked
                    log.warning("pipeline=%s changelog client close: %s", self.pipeline, exc)
        self._producer = self._consumer = None
        self._n_partitions = None

    def changelog_partition(self, partition: int) -> int:
        assert self._n_partitions is not None
        return partition % self._n_partitions

    # -- write -------------------------------------------------------------------
    def write(
        self,
        topic: str,
        partition: int,
        next_offset: int,
        snapshot: Mapping[str, np.ndarray],
        meta: Mapping[str, Any] | None = None,
    ) -> WriteInfo:
        """Write a new generation; returns once the broker acknowledged its manifest."""
        t0 = time.perf_counter()
        key = (topic, partition)
        if key not in self._generation:  # never restored here: number after what is there
            try:
                self.read(topic, partition, check_committed=False)
            except CheckpointLost:
                pass
        gen = self._generation.get(key, 0) + 1
        delta = dict(meta or {}).get("kind") == "delta"
        chain = self._chain.get(key, []) if delta else []
        if delta and not chain:
            raise CheckpointError(
                f"topic={topic} partition={partition}: a delta checkpoint with no full one "
                "before it in this process"
            )
        data = snapshot_to_bytes(dict(snapshot))
        doc = self.send_chunks(topic, partition, gen, data, next_offset, meta)
        doc["kind"], doc["chain"] = ("delta", chain) if delta else ("full", [])
        m_off = self.send_manifest(topic, partition, doc)
        self._generation[key] = gen
        self._chain[key] = [*chain, [gen, m_off]]
        n = int(len(snapshot["key_len"])) if "key_len" in snapshot else 0
        cp = self.changelog_partition(partition)
        return WriteInfo(
            Path(f"{self.topic}[{cp}]@{m_off}"), len(data), time.perf_counter() - t0, n
        )

    def send_chunks(
        self, topic: str, partition: int, gen: int, data: bytes, next_offset: int,
        meta: Mapping[str, Any] | None,
    ) -> dict[str, Any]:  # fmt: skip
        """Send and await a generation's chunks; returns its manifest document."""
        producer, _ = self._clients()
        cp = self.changelog_partition(partition)
        slot = gen % self.slots
        try:
            futures = [
                (chunk, producer.send(self.topic, key=record_key(topic, partition, slot,
                                      f"{i:05d}"), value=chunk, partition=cp))
                for i, chunk in enumerate(split_chunks(data, self.chunk_bytes))
            ]  # fmt: skip
            chunks = [[int(f.get(IO_TIMEOUT_S).offset), len(c), zlib.crc32(c)] for c, f in futures]
        except KafkaError as exc:
            raise StateStoreUnavailable(
                f"pipeline={self.pipeline} topic={topic} partition={partition}: cannot write "
                f"checkpoint chunks to {self.topic!r}: {exc}"
            ) from exc
        return {
            **dict(meta or {}),
            "format": CHECKPOINT_FORMAT,
            "pipeline": self.pipeline,
            "topic": topic,
            "partition": int(partition),
            "generation": gen,
            "slot": slot,
            "next_offset": int(next_offset),
            "size": len(data),
            "chunks": chunks,
            "written_at": time.time(),
        }

    def send_manifest(self, topic: str, partition: int, doc: Mapping[str, Any]) -> int:
        """Send a manifest and await it: the generation is visible from then on."""
        producer, _ = self._clients()
        slot = int(doc["slot"])
        try:
            fut = producer.send(
                self.topic, key=record_key(topic, partition, slot, "m"),
                value=json.dumps(doc, sort_keys=True).encode(),
                partition=self.changelog_partition(partition),
            )  # fmt: skip
            return int(fut.get(IO_TIMEOUT_S).offset)
        except KafkaError as exc:
            raise StateStoreUnavailable(
                f"pipeline={self.pipeline} topic={topic} partition={partition}: cannot write "
                f"the checkpoint manifest to {self.topic!r}: {exc}"
            ) from exc

    # -- read --------------------------------------------------------------------
    def read(self, topic: str, partition: int, check_committed: bool = True) -> Checkpoint | None:
        """The newest complete generation of a partition, or None if it has none.

        Raises :class:`CheckpointLost` when manifests exist and none is complete, or
        when the group's committed offset is ahead of the newest complete one (after
        LAGGING_READS reads, LAGGING_PAUSE_S apart).
        """
        for attempt in range(1, LAGGING_READS + 1):
            try:
                return self._read_once(topic, partition, check_committed)
            except CheckpointLost as lost:
                if attempt == LAGGING_READS or not lost.behind_committed:
                    raise
                log.info(
                    "pipeline=%s topic=%s partition=%d the newest state in %r is behind the "
                    "group's committed offset; reading again (%d/%d)",
                    self.pipeline, topic, partition, self.topic, attempt + 1, LAGGING_READS,
                )  # fmt: skip
                time.sleep(LAGGING_PAUSE_S)
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_once(self, topic: str, partition: int, check_committed: bool) -> Checkpoint | None:
        _, consumer = self._clients()
        ctp = TopicPartition(self.topic, self.changelog_partition(partition))
        prefix = f"{topic}/{partition}/s".encode()
        failed: list[tuple[Path | str, str]] = []
        found: Checkpoint | None = None
        try:
            # A new assignment forgets the high watermark of an earlier read: a stale one
            # would end the read before the newest generations (written since by another
            # replica, or by this one before a rebalance).
            consumer.assign([])
            consumer.assign([ctp])
            lo = int(consumer.beginning_offsets([ctp])[ctp])
            # tansu's end_offsets undercounts (streamlstm.kafka.broker): read from just
            # below it to the real end (the fetch's high watermark).
            read_from = max(lo, int(consumer.end_offsets([ctp])[ctp]) - 1)
            cache = self._read_range(ctp, read_from)
            hi = max([off + 1 for off in cache] or [read_from])
            stop, window = hi, FIRST_WINDOW
            while found is None and stop > lo:
                start = max(lo, stop - window)
                if start < read_from:
                    cache.update(self._read_range(ctp, start, read_from))
                    read_from = start
                found = self._newest_in(ctp, prefix, cache, start, stop, failed)
                stop, window = start, window * 4
            source_tp = TopicPartition(topic, partition)
            committed = self._committed(source_tp) if check_committed else None
        except KafkaError as exc:
            raise StateStoreUnavailable(
                f"pipeline={self.pipeline} topic={topic} partition={partition}: cannot read "
                f"the changelog {self.topic!r}: {exc}"
            ) from exc
        if failed and found is not None:
            log.warning(
                "pipeline=%s topic=%s partition=%d newer checkpoint generation(s) incomplete, "
                "using %s (offset %d): %s",
                self.pipeline, topic, partition, found.path, found.next_offset,
                "; ".join(f"{w}: {why}" for w, why in failed),
            )  # fmt: skip
        if found is None and failed:
            raise CheckpointLost(topic, partition, failed)
        have = found.next_offset if found is not None else None
        if committed is not None and (have is None or committed > have):
            failed.append((
                f"{self.topic}[{ctp.partition}]",
                f"the group committed offset {committed} but the newest complete state is "
                + (f"at offset {have}" if have is not None else "missing"),
            ))  # fmt: skip
            lost = CheckpointLost(topic, partition, failed)
            lost.behind_committed = True
            raise lost
        return found

    def _newest_in(
        self, ctp: Any, prefix: bytes, cache: Mapping[int, Any], start: int, stop: int,
        failed: list[tuple[Path | str, str]],
    ) -> Checkpoint | None:  # fmt: skip
        """The newest complete generation whose manifest lies in [start, stop)."""
        manifests = []
        for off in range(stop - 1, start - 1, -1):
            rec = cache.get(off)
            if rec is None or rec.value is None or not rec.key.startswith(prefix):
                continue
            if not rec.key.endswith(b"/m"):
                continue
            where = f"{self.topic}[{ctp.partition}]@{off}"
            try:
                manifests.append(parse_manifest(rec.value, off))
            except CheckpointError as exc:
                failed.append((where, str(exc)))
        for m in sorted(manifests, key=lambda m: (m.generation, m.offset), reverse=True):
            where = f"{self.topic}[{ctp.partition}]@{m.offset}"
            try:
                snap, size, chain = self._load_chain(ctp, prefix, m, cache)
            except CheckpointError as exc:
                failed.append((where, str(exc)))
                continue
            key = (str(m.doc["topic"]), int(m.doc["partition"]))
            self._generation[key] = max(m.generation, self._generation.get(key, 0))
            self._chain[key] = chain
            return Checkpoint(
                topic=key[0], partition=key[1], next_offset=m.next_offset, snapshot=snap,
                meta=m.doc, path=where, size=size,
            )  # fmt: skip
        return None

    def _load_chain(
        self, ctp: Any, prefix: bytes, m: Manifest, cache: Mapping[int, Any]
    ) -> tuple[dict[str, np.ndarray], int, list[list[int]]]:
        """The full snapshot manifest ``m`` stands for (its chain merged), the bytes
        read, and its chain as (generation, manifest offset) pairs."""
        links = []
        for gen, off in m.doc.get("chain", []) if m.doc.get("kind") == "delta" else []:
            rec = cache.get(int(off)) or self._read_range(ctp, int(off), int(off) + 1).get(int(off))
            if rec is None or rec.value is None or not rec.key.startswith(prefix):
                raise CheckpointError(
                    f"generation {m.generation}: the manifest of generation {gen} it builds on "
                    f"is not at offset {off}"
                )
            link = parse_manifest(rec.value, int(off))
            if link.generation != int(gen):
                raise CheckpointError(f"offset {off} holds generation {link.generation}, not {gen}")
            links.append(link)
        links.append(m)
        if links[0].doc.get("kind", "full") != "full":
            raise CheckpointError(f"generation {m.generation}: its chain starts with a delta")
        snap: dict[str, np.ndarray] | None = None
        size = 0
        for link in links:
            need = [o for o, _, _ in link.chunks if o not in cache]
            if need:
                cache = {**cache, **self._read_range(ctp, min(need), max(need) + 1)}
            data = assemble(link, rec_prefix(link, prefix), cache)
            size += len(data)
            part = snapshot_from_bytes(data)
            snap = part if snap is None else merge(snap, part)
        assert snap is not None
        return snap, size, [[link.generation, link.offset] for link in links]

    def _read_range(self, ctp: Any, start: int, stop: int | None = None) -> dict[int, Any]:
        """Records of ``ctp`` at offsets [start, stop); stop None = to the end."""
        c = self._consumer
        c.seek(ctp, start)
        out: dict[int, Any] = {}
        deadline = time.monotonic() + IO_TIMEOUT_S
        while True:
            pos = c.position(ctp)
            hw = c.highwater(ctp)
            end = hw if stop is None else stop
            if end is not None and pos >= end:
                break
            if stop is None and hw is not None and pos >= hw:
                break
            if time.monotonic() > deadline:
                raise StateStoreUnavailable(
                    f"pipeline={self.pipeline} reading {self.topic}[{ctp.partition}] from "
                    f"offset {start}: no progress at {pos} within {IO_TIMEOUT_S:.0f}s"
                )
            for recs in c.poll(timeout_ms=200).values():
                for r in recs:
                    if stop is None or r.offset < stop:
                        out[int(r.offset)] = r
        return out

    def _committed(self, tp: Any) -> int | None:
        if not self.kafka.group_id:
            return None
        off = self._consumer.committed(tp)
        return None if off is None or off < 0 else int(off)

    def quarantine(
        self, topic: str, partition: int, files: Sequence[tuple[Path | str, str]]
    ) -> list[Path | str]:
        """Nothing to rename on the cluster: the incomplete generations stay (compaction
        replaces them); new generations are numbered after the newest one seen."""
        return [w for w, _ in files]


def rec_prefix(m: Manifest, prefix: bytes) -> bytes:
    """The chunk key prefix of manifest ``m``'s generation (``t/p/s<slot>/``)."""
    try:
        return prefix + f"{int(m.doc['slot'])}/".encode()
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"generation {m.generation}: manifest has no slot") from exc
