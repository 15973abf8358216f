"""What an output topic already holds: the look-back that keeps a record from going twice.

Every record the sink writes has a deterministic key: an alert is (input topic,
partition, offset, kind) -- the same thing as its ``id`` and ``kind``, since one
input event makes at most one transition -- and a dead letter is (input topic,
partition, offset, reason). Before the sink sends a record that an earlier life
of the daemon (or an earlier, failed send) may already have written, it reads
the tail of the output topic and collects the keys found there
(:func:`read_tail`).

The tail is bounded three ways (:class:`LookBack`): by time (records produced
after ``since``, minus ``skew_s`` for clocks that disagree, found with
``offsets_for_times``), by count (the last ``max_records`` of each partition of
the output topic) and by wall time (``timeout_s``). A look-back cut short by a
bound reports ``complete=False``: the caller then sends what it did not see
(at least once, never lost).

Measured on the local tansu broker: ``offsets_for_times`` of a past time gives
the base offset of the first batch at or after it (a lower bound: good), of a
future time ``offset 0, timestamp -1`` (ignored here, the count bound then
applies); ``end_offsets`` undercounts by up to a batch (only used as a lower
bound); the end of the tail is the fetch responses' high watermark.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition  # type: ignore[import-untyped]

from streamlstm.kafka.config import KafkaConfig

log = logging.getLogger(__name__)


BOOTSTRAP_S = 5.0
TRUNCATED_HEADER = "streamlstm.truncated"  # a cut-down dead letter's original size
FETCH_WAIT_MS = 20

# What identifies a record the sink writes: "a" (alert) or "d" (dead letter), the input
# topic, partition and offset, the alert's kind or the dead letter's reason, and the
# alert's id or the dead letter's original length. The last part guards a cold start
# (no time bound) against a topic recreated since: same offsets, other events.
Key = tuple[str, str, int, int, str, str]


@dataclass(frozen=True)
class LookBack:
    """Bounds of one look-back (see the module docstring).

    max_records: per partition of the output topic (an alert record of 4 features is
    ~430 bytes; reading back 100k of them took 3.4 s here, 10k 0.5 s, on the local
    broker with the machine loaded). timeout_s: wall time for the whole read.
    skew_s: how far before ``since`` to start, for producers whose clocks run behind
    the checkpoint writer's (replicas on other hosts).
    """

    max_records: int = 100_000
    timeout_s: float = 30.0
    skew_s: float = 60.0


@dataclass
class Tail:
    """The keys found on a topic's tail, and whether the look-back covered it all."""

    keys: set[Any] = field(default_factory=set)
    complete: bool = True
    records: int = 0
    seconds: float = 0.0


def read_tail(
    kafka: KafkaConfig,
    topic: str,
    since: float | None,
    extract: Callable[[Any], Hashable | None],
    bounds: LookBack = LookBack(),
    consumer_factory: Callable[..., KafkaConsumer] = KafkaConsumer,
) -> Tail:
    """Keys (``extract(record)``, None = not ours) of ``topic``'s records produced since
    ``since`` (epoch seconds; None = only the count bound). Raises KafkaError when the
    broker cannot be read."""
    t0 = time.monotonic()
    deadline = t0 + bounds.timeout_s
    kw = kafka.consumer_kwargs()
    kw.update(group_id=None, enable_auto_commit=False, client_id=f"{kafka.client_id}-lookback")
    # Not a group member: the pod's static id (kafka.group_instance_id) needs a group_id
    # (kafka-python refuses the consumer without one, and the read-back was skipped).
    kw.pop("group_instance_id", None)
    # kafka-python waits 30 s for a first connection by default: with the broker away
    # that would stall the loop's flush past its liveness window. Fail fast; retried.
    kw.setdefault("bootstrap_timeout_ms", int(min(bounds.timeout_s, BOOTSTRAP_S) * 1000))
    # The broker holds a fetch of an empty partition for fetch_max_wait_ms (500 ms by
    # default) before it answers with the high watermark the read waits for: measured
    # 0.74 s for an empty topic, 0.31 s with 50 ms. It adds to every restart.
    kw["fetch_max_wait_ms"] = FETCH_WAIT_MS
    c = consumer_factory(**kw)
    out = Tail()
    try:
        if topic not in c.topics():
            return out  # nothing was ever written to it
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        begin = c.beginning_offsets(tps)
        end = c.end_offsets(tps)
        by_time: dict[Any, Any] = {}
        if since is not None:
            since_ms = int((since - bounds.skew_s) * 1000)
            by_time = c.offsets_for_times({tp: since_ms for tp in tps}) or {}
        start: dict[Any, int] = {}
        for tp in tps:
            lo = max(int(begin[tp]), int(end[tp]) - bounds.max_records)
            hit = by_time.get(tp)
            if since is None:
                at = lo
                out.complete &= lo <= int(begin[tp])
            elif hit is None:
                at = max(lo, int(end[tp]))  # nothing produced since then
            elif hit.timestamp >= 0 and hit.offset >= lo:
                at = int(hit.offset)
            else:  # cut by the count bound (or tansu's answer for a future time)
                at = lo
                out.complete &= hit.timestamp < 0 or lo <= int(begin[tp])
            start[tp] = at
        c.assign(tps)
        for tp in tps:
            c.seek(tp, start[tp])
        while True:
            # The consumer's position, not the last record's offset + 1: it also steps
            # over offsets that hold no record (control batches, compaction).
            if all((hw := c.highwater(tp)) is not None and c.position(tp) >= hw for tp in tps):
                break
            if time.monotonic() >= deadline:
                out.complete = False
                log.warning(
                    "look-back of %s stopped after %.1f s (%d records read): records sent "
                    "before may be sent again", topic, bounds.timeout_s, out.records,
                )  # fmt: skip
                break
            for recs in c.poll(timeout_ms=200).values():
                for r in recs:
                    key = extract(r)
                    if key is not None:
                        out.keys.add(key)
                out.records += len(recs)
    finally:
        try:
            c.close(autocommit=False)
        except Exception as exc:  # best effort: the answer is already in hand
            log.debug("look-back consumer close failed: %s", exc)
        out.seconds = time.monotonic() - t0
    return out


def alert_key(r: Any, pipeline: str) -> Key | None:
    """The key of an alert record read back (None: another pipeline's, or not ours)."""
    try:
        d = orjson.loads(r.value)
        if d.get("pipeline") != pipeline:
            return None
        return ("a", str(d["topic"]), int(d["partition"]), int(d["offset"]), str(d["kind"]),
                str(d["id"]))  # fmt: skip
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def dead_letter_key(r: Any, pipeline: str) -> Key | None:
    """The key of a dead letter read back, from its headers."""
    try:
        h = {k: v for k, v in (r.headers or ())}
        if h.get("streamlstm.pipeline") != pipeline.encode():
            return None
        size = h.get(TRUNCATED_HEADER) or str(len(r.value or b"")).encode()
        return ("d", h["streamlstm.topic"].decode(), int(h["streamlstm.partition"]),
                int(h["streamlstm.offset"]), h["streamlstm.reason"].decode(),
                size.decode())  # fmt: skip
    except (KeyError, TypeError, ValueError, UnicodeDecodeError):
        return None
