"""confluent-kafka's ``consume`` result as :class:`RecordColumns` per partition.

librdkafka parses records in C and hands Python a ``Message`` object per record; the
daemon reads their key, value, offset and timestamp once into columns over one
buffer (the form the decoder scans), and leaves headers on the messages until a
record object is needed (a dead letter).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import chain, repeat
from operator import is_
from typing import Any

import numpy as np
from confluent_kafka import Message  # type: ignore[import-untyped]
from kafka import TopicPartition  # type: ignore[import-untyped]
from kafka.errors import KafkaError  # type: ignore[import-untyped]

from streamlstm.io.records import RecordColumns

log = logging.getLogger(__name__)


class ConfluentError(KafkaError):  # type: ignore[misc]
    """A librdkafka error, as the loop's KafkaError (it retries, counts, backs off)."""

    retriable = True


def wrap_error(what: str, exc: Any) -> ConfluentError:
    return ConfluentError(f"confluent-kafka {what}: {exc}")


def columns_of(msgs: Sequence[Any], pipeline: str = "") -> dict[TopicPartition, RecordColumns]:
    """``consume``'s messages as columns per partition, in offset order.

    The cheap way: each field read by one ``map`` over the messages (a C call per
    message and field, no Python loop body), keys then values joined into one buffer,
    spans from cumulative lengths. Headers stay on the messages until a record object
    is made (:class:`_Headers`). Error events (no record) are logged and dropped; a
    fatal one raises.
    """
    errs = list(map(Message.error, msgs))
    # is_, not ==: confluent-kafka's KafkaError compared with None leaves a Python error set.
    if sum(map(is_, errs, repeat(None))) != len(errs):
        for e in errs:
            if e is None:
                continue
            if e.fatal():
                raise wrap_error("consume (fatal)", e)
            log.warning("pipeline=%s confluent-kafka: %s", pipeline, e)
        msgs = [m for m, e in zip(msgs, errs, strict=True) if e is None]
        if not msgs:
            return {}
    topics: list[Any] = list(map(Message.topic, msgs))
    parts: list[Any] = list(map(Message.partition, msgs))
    groups: dict[tuple[Any, Any], list[Any]]
    if topics.count(topics[0]) == len(topics) and parts.count(parts[0]) == len(parts):
        groups = {(topics[0], parts[0]): list(msgs)}
    else:
        groups = {}
        for m, t, p in zip(msgs, topics, parts, strict=True):
            g = groups.get((t, p))
            if g is None:
                g = groups[(t, p)] = []
            g.append(m)
    return {
        TopicPartition(t, p): _columns(t, p, g)
        for (t, p), g in groups.items()  # fmt: skip
    }


def _lengths(blobs: list[Any]) -> np.ndarray:
    if None in blobs:
        return np.array([-1 if b is None else len(b) for b in blobs], np.int64)
    return np.array(list(map(len, blobs)), np.int64)


def _spans(lengths: np.ndarray, base: int) -> np.ndarray:
    out = np.empty((lengths.shape[0], 2), np.int64)
    sizes = np.maximum(lengths, 0)
    out[:, 0] = base + np.cumsum(sizes) - sizes
    out[:, 1] = lengths
    return out


def _columns(topic: str, partition: int, msgs: list[Any]) -> RecordColumns:
    n = len(msgs)
    keys = list(map(Message.key, msgs))
    values = list(map(Message.value, msgs))
    klen, vlen = _lengths(keys), _lengths(values)
    klen_total = int(np.maximum(klen, 0).sum())
    stamps = [ts for _, ts in map(Message.timestamp, msgs)]
    return RecordColumns(
        topic=topic,
        partition=partition,
        data=b"".join(chain(filter(None, keys), filter(None, values))),  # None, b"": nothing
        offsets=np.array(list(map(Message.offset, msgs)), np.int64),
        timestamps=np.array(stamps, np.int64),  # librdkafka: -1 when there is none
        keys=_spans(klen, 0),
        values=_spans(vlen, klen_total),
        headers=np.zeros((n, 2), np.int64),
        header_lists=_Headers(msgs),
    )


class _Headers(Sequence[list[tuple[str, bytes | None]]]):
    """Per record its headers, read from the message only when asked (dead letters)."""

    def __init__(self, msgs: list[Any]) -> None:
        self._msgs = msgs

    def __len__(self) -> int:
        return len(self._msgs)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [list(m.headers() or ()) for m in self._msgs[i]]
        return list(self._msgs[i].headers() or ())
