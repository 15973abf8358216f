"""Scale-out on Kafka: replicas of one consumer group come and go, state stays exact.

Daemons of ONE consumer group with ``checkpoint.store: kafka``, each in its own empty
working directory, over a seeded input on a topic of several partitions, produced in
chunks between the steps: scale 1 -> 3 -> 2 (start one, add two, stop one with
SIGTERM), a rolling restart of every replica (SIGTERM, then the same replica starts
again, one at a time), a kill -9 of one. At the end, compared with one uninterrupted
single-daemon run of the same input: per-stream state bit-identical, the same set of
alert ids, and each (alert id, kind) exactly once on the alerts topic. With both
consumer clients (``kafka.client``: kafka-python, confluent).

Dynamic members (no ``kafka.group_instance_id``): with three static members the local
tansu broker does not converge (after the second join a member's id is "not
recognized", it rejoins and the group stays without an assignment for minutes), so
static membership is tested with one member (test_daemon_limits.py) and with the
read-back a static member's sink does (test_sink_delivery.py).
Helpers and the broker come from tests/integration/test_daemon.py and
test_kafka_state.py.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamlstm.kafka.config import KafkaConfig
from streamlstm.service.changelog_store import KafkaCheckpointStore
from streamlstm.service.checkpoint_store import CheckpointStore
from tests.integration.test_daemon import (
    FEATURES,
    STATE_COLUMNS,
    Daemon,
    _alert_records,
    _config,
    _create_topics,
    _fleet,
    _free_port,
    _produce,
)
from tests.integration.test_kafka_state import _assert_same, _kafka_store

PARTS = 5  # the source topic's partitions: more than replicas, not a multiple of 2 or 3
CHUNKS = 7  # the input arrives in this many pieces, one before each step

State = dict[str, dict[str, np.ndarray]]


def _records(fleet: Any) -> list[tuple[int, bytes, bytes]]:
    """The fleet's events as (partition, key, JSON), each stream on partition i % PARTS."""
    keys, times, x, _ = fleet.events()
    index = {k: i for i, k in enumerate(fleet.keys)}
    out = []
    for k, t, row in zip(keys.tolist(), times.tolist(), x.astype(np.float64).tolist(), strict=True):
        doc = {"sensor": k, "ts": t, **dict(zip(FEATURES, row, strict=True))}
        out.append((index[k] % PARTS, k.encode(), json.dumps(doc).encode()))
    return out


def _rows(snapshots: list[Any]) -> State:
    out: State = {}
    for snap in snapshots:
        raw = snap["key_bytes"].tobytes()
        ends = np.cumsum(snap["key_len"])
        for i, (e, n) in enumerate(zip(ends.tolist(), snap["key_len"].tolist(), strict=True)):
            out[raw[e - n : e].decode()] = {c: snap[c][i] for c in STATE_COLUMNS}
    return out


def _changelog(bootstrap: str, state_topic: str, topic: str, group: str) -> tuple[State, list[int]]:
    """Per-stream state and next offsets of every partition, as a new replica reads them."""
    store = KafkaCheckpointStore(
        KafkaConfig(bootstrap_servers=(bootstrap,), group_id=group), "sensors", state_topic
    )
    try:
        cks = [store.read(topic, p) for p in range(PARTS)]
    finally:
        store.close()
    missing = [p for p, ck in enumerate(cks) if ck is None]
    assert not missing, f"no checkpoint in the changelog for partitions {missing}"
    return _rows([ck.snapshot for ck in cks]), [ck.next_offset for ck in cks]  # type: ignore[union-attr]


class Group:
    """The consumer group's committed offsets, read as an outsider (no join)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                               enable_auto_commit=False)  # fmt: skip
        self.tps = [TopicPartition(topic, p) for p in range(PARTS)]

    def committed(self) -> list[int]:
        return [self.c.committed(tp) or 0 for tp in self.tps]

    def close(self) -> None:
        self.c.close()


def _settled(live: list[Daemon]) -> bool:
    """Every live replica ready with at least one partition, and together all of them
    (an old owner still counting a partition it gave up makes the sum too high)."""
    counts = [d.metric("streamlstm_assigned_partitions") for d in live]
    return (
        all(c is not None and c >= 1 for c in counts)
        and sum(counts) == PARTS  # type: ignore[arg-type]
        and all(d.get("/readyz")[0] == 200 for d in live)
    )


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_scale_1_3_2_rolling_restart_and_kill_keep_state_and_alerts_exact(
    kafka: str, model_path: Path, tmp_path: Path, client: str
) -> None:
    run = uuid.uuid4().hex[:6]
    name, topic, state = f"so-{run}", f"so-{run}-events", f"so-{run}-state"
    group = f"g-{name}"
    _create_topics(kafka, {topic: PARTS, f"{name}-alerts": 1, f"{name}-dlq": 1})
    records = _records(_fleet(n_streams=20, n_steps=400))
    cuts = np.linspace(0, len(records), CHUNKS + 1).astype(int).tolist()
    sent = 0  # records produced so far

    def produce_next() -> None:
        nonlocal sent
        i = cuts.index(sent)
        _produce(kafka, topic, records[cuts[i] : cuts[i + 1]])
        sent = cuts[i + 1]

    # Replica r has its own empty working directory (its checkpoint.dir is never
    # written: store kafka) and config; a restarted replica uses them again.
    def replica(r: int, interval_s: float = 1.0) -> Daemon:
        port = _free_port()
        work = tmp_path / f"r{r}"
        work.mkdir(exist_ok=True)
        cfg = _kafka_store(_config(work, kafka, model_path, topic, name, port, group=group,
                                   ckpt_name=f"r{r}", file_name=f"r{r}", client=client),
                           topic=state, interval_s=interval_s)  # fmt: skip
        return Daemon(cfg, port, tmp_path / f"r{r}.log")

    offsets = Group(kafka, group, topic)

    def produced() -> list[int]:
        return [sum(1 for p, _, _ in records[:sent] if p == q) for q in range(PARTS)]

    def step(live: list[Daemon], what: str, chunk: bool = True) -> None:
        """Produce the next chunk; wait for a settled group and everything committed
        (committed only after a checkpoint covering it is in the changelog)."""
        if chunk:
            produce_next()
        live[0].wait_for(lambda: _settled(live), what=f"{what}: group settled")
        live[0].wait_for(lambda: offsets.committed() == produced(),
                         what=f"{what}: everything checkpointed")  # fmt: skip

    t0 = time.monotonic()
    steps: list[str] = []

    def done(what: str) -> None:
        steps.append(f"{what} {time.monotonic() - t0:.1f}")

    try:
        r0 = replica(0)
        step([r0], "one replica")
        done("1 replica")
        r1, r2 = replica(1), replica(2)
        step([r0, r1, r2], "1 -> 3")
        done("1 -> 3")
        # r0 leaves with SIGTERM: last checkpoint and commit, then it leaves the group
        assert r0.wait(signal.SIGTERM) == 0, r0.tail()
        step([r1, r2], "3 -> 2")
        done("3 -> 2")
        # Rolling restart: each replica stopped, then started again, one at a time.
        assert r2.wait(signal.SIGTERM) == 0, r2.tail()
        r2 = replica(2)
        step([r1, r2], "r2 restarted")
        assert r1.wait(signal.SIGTERM) == 0, r1.tail()
        # r1's next life checkpoints only after 60 s: what it processes before the
        # kill below is in no checkpoint, so its partitions' next owner must replay it.
        r1 = replica(1, interval_s=60)
        step([r1, r2], "r1 restarted", chunk=False)
        done("rolling restart")
        before = r2.processed()
        produce_next()
        n = cuts[cuts.index(sent) - 1]
        r1.wait_for(lambda: r1.processed() + r2.processed() - before >= sent - n,
                    what="the chunk before the kill processed")  # fmt: skip
        behind = [c < w for c, w in zip(offsets.committed(), produced(), strict=True)]
        assert any(behind), "r1 checkpointed everything before the kill: no replay tested"
        r1.proc.kill()
        r1.proc.wait(10)
        # r2 takes r1's partitions once r1's session times out, restores them from the
        # changelog and replays from there (alerts already sent are not sent again).
        step([r2], "r1 killed")
        done("kill -9")
        while sent < len(records):
            step([r2], "the rest")
        dedup = r2.metric("streamlstm_sink_deduplicated_total", record="alert")
        assert r2.wait(signal.SIGTERM) == 0, r2.tail()
        done("end")
    finally:
        offsets.close()
    print(f"steps (s since start): {', '.join(steps)}; r2 found {dedup} alerts "
          "already sent")  # fmt: skip

    logs = {r: (tmp_path / f"r{r}.log").read_text() for r in range(3)}
    # Partitions did move between replicas through the changelog.
    assert sum(log.count("resuming from checkpoint") for log in logs.values()) >= PARTS
    assert "revoked" in logs[0]
    assert all(("consumer: confluent-kafka" in log) == (client == "confluent")
               for log in logs.values())  # fmt: skip
    # No replica wrote a file: the state is in Kafka only.
    assert not [p for p in tmp_path.glob("r*/**/*") if p.is_file() and p.suffix != ".yaml"]

    got, at = _changelog(kafka, state, topic, group)
    assert sum(at) == len(records)

    # The reference: one daemon, never interrupted, all the input (local store).
    ref = f"{name}-ref"
    _create_topics(kafka, {f"{ref}-alerts": 1, f"{ref}-dlq": 1})
    port = _free_port()
    r = Daemon(_config(tmp_path, kafka, model_path, topic, ref, port), port, tmp_path / "ref.log")
    r.wait_for(lambda: r.processed() >= len(records), what="reference run")
    assert r.wait(signal.SIGTERM) == 0, r.tail()
    store = CheckpointStore(tmp_path / f"ckpt-{ref}", "sensors")
    want = _rows([ck.snapshot for p in range(PARTS) if (ck := store.read(topic, p))])
    _assert_same(got, want)

    alerts = _alert_records(kafka, f"{name}-alerts")
    want_alerts = _alert_records(kafka, f"{ref}-alerts")
    assert want_alerts, "the reference run raised no alert; the test proves nothing"
    dup = {k: n for k, n in Counter(alerts).items() if n > 1}
    assert not dup, f"{len(alerts) - len(set(alerts))} duplicate alert records: {dup}"
    assert set(alerts) == set(want_alerts)
