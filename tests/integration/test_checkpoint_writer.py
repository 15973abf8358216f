"""The periodic checkpoint is written on the writer's thread, against a real broker.

The daemon runs with the real file store, wrapped so that a write which starts while a
``hold`` file exists waits until it is gone (a disk that stops answering): the rest of
the write path, the loop and the Kafka clients are the daemon's own. A held write must
not stop events, its offsets must not be committed before it is durable, a kill -9
while it is held must lose nothing committed (the restart resumes from the last durable
checkpoint, ends in the uninterrupted run's state and sends each alert once), and a
SIGTERM while it is held must finish it before the final checkpoint and commit.
Helpers and the broker come from tests/integration/test_daemon.py.
"""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from streamlstm.service.checkpoint_store import CheckpointStore
from tests.integration.test_daemon import (  # noqa: F401 - _no_leftover_daemons: autouse
    PARTITIONS,
    SEED,
    STATE_COLUMNS,
    Daemon,
    _alert_records,
    _config,
    _create_topics,
    _final_state,
    _fleet,
    _free_port,
    _no_leftover_daemons,
    _produce,
    _records,
)

# The daemon's CLI with the file store's write held while argv[1] exists (argv[2] is
# touched when a write starts waiting). Test-only: it wraps the real write.
HELD_DAEMON = """
import sys, time
from pathlib import Path
from streamlstm.service import changelog_store
from streamlstm.service.checkpoint_store import CheckpointStore

HOLD, HELD = Path(sys.argv[1]), Path(sys.argv[2])


class HeldStore(CheckpointStore):
    def write(self, *a, **k):
        if HOLD.exists():
            HELD.touch()
            while HOLD.exists():
                time.sleep(0.02)
        return super().write(*a, **k)


changelog_store.CheckpointStore = HeldStore  # what open_store builds for store: local
from streamlstm.cli import main

sys.exit(main(sys.argv[3:]))
"""

CKPT_COUNT = "streamlstm_checkpoint_duration_seconds_count"


def _committed(bootstrap: str, group: str, topic: str) -> list[int | None]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return [c.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)]
    finally:
        c.close()


def _durable(ckpt_dir: Path, topic: str) -> list[int]:
    """Next offsets of the newest durable checkpoint of each partition (-1: none)."""
    store = CheckpointStore(ckpt_dir, "sensors")
    return [ck.next_offset if (ck := store.read(topic, p)) else -1 for p in range(PARTITIONS)]


def _held_daemon(cfg: Path, port: int, log: Path, hold: Path, held: Path) -> Daemon:
    return Daemon(cfg, port, log, python_args=("-c", HELD_DAEMON, str(hold), str(held)))


def _hold_a_checkpoint(kafka: str, topic: str, d: Daemon, hold: Path, held: Path,
                       records: list[Any], a: int, b: int) -> float:  # fmt: skip
    """Hold the next checkpoint write: records[a:b] make partitions dirty, the write of
    their checkpoint starts and waits. Returns the durable checkpoints' count then."""
    hold.touch()
    _produce(kafka, topic, records[a:b])
    d.wait_for(held.exists, what="a checkpoint write held")
    return d.metric(CKPT_COUNT) or 0.0


def test_a_held_write_stops_no_event_and_a_kill_loses_nothing_committed(
    kafka: str, model_path: Path, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    topic, killed, ref = f"cw-{run}-events", f"cwk-{run}", f"cwr-{run}"
    _create_topics(kafka, {topic: PARTITIONS, f"{killed}-alerts": 1, f"{killed}-dlq": 1,
                           f"{ref}-alerts": 1, f"{ref}-dlq": 1})  # fmt: skip
    records = _records(_fleet(n_streams=16, n_steps=600))
    n = len(records)
    cut = (n // 3, n // 2, 2 * n // 3)
    hold, held = tmp_path / "hold", tmp_path / "held"
    port = _free_port()
    cfg = _config(tmp_path, kafka, model_path, topic, killed, port, interval_s=1)
    log = tmp_path / "killed.log"

    _produce(kafka, topic, records[: cut[0]])
    d = _held_daemon(cfg, port, log, hold, held)
    d.wait_for(lambda: d.processed() >= cut[0], what="first third")
    ckpt_dir = tmp_path / f"ckpt-{killed}"
    d.wait_for(lambda: min(_durable(ckpt_dir, topic)) > 0, what="both partitions checkpointed")
    n_durable = _hold_a_checkpoint(kafka, topic, d, hold, held, records, cut[0], cut[1])
    # Sent after the write was held, so processed while it is held (on main, where the
    # loop wrote its checkpoints itself, it stopped here until the write ended).
    _produce(kafka, topic, records[cut[1] : cut[2]])
    d.wait_for(lambda: d.processed() >= cut[2], what="events processed while a write is held")
    assert d.metric(CKPT_COUNT) == n_durable  # the held one is not durable, nor counted
    at = _durable(ckpt_dir, topic)
    assert min(at) > 0 and sum(at) < cut[2], f"checkpoint offsets {at}: the kill tests no replay"
    # Offsets go to the group only once their checkpoint is durable: the held one's not.
    assert _committed(kafka, f"g-{killed}", topic) == at
    d.proc.kill()
    d.proc.wait(10)
    hold.unlink()

    _produce(kafka, topic, records[cut[2] :])
    d2 = Daemon(cfg, port, log)
    d2.wait_for(lambda: d2.get("/readyz")[0] == 200, what="restart readiness")
    d2.wait_for(lambda: d2.processed() >= n - sum(at), what="the replay and the rest")
    assert d2.wait(signal.SIGTERM) == 0, d2.tail()
    assert f"offset={at[0]} assigned; resuming from checkpoint" in log.read_text()

    port = _free_port()
    r = Daemon(_config(tmp_path, kafka, model_path, topic, ref, port), port, tmp_path / "r.log")
    r.wait_for(lambda: r.processed() >= n, what="reference run")
    assert r.wait(signal.SIGTERM) == 0, r.tail()
    got, want = _alert_records(kafka, f"{killed}-alerts"), _alert_records(kafka, f"{ref}-alerts")
    assert want, "the reference run raised no alert; the test proves nothing"
    assert not {k: c for k, c in Counter(got).items() if c > 1}, "an alert sent twice"
    assert set(got) == set(want)
    a, b = (
        _final_state(tmp_path / f"ckpt-{killed}", topic),
        _final_state(tmp_path / f"ckpt-{ref}", topic),
    )
    assert sorted(a) == sorted(b)
    for key in a:
        for col in STATE_COLUMNS:
            np.testing.assert_array_equal(a[key][col], b[key][col], err_msg=f"{key} {col}")


def test_sigterm_during_a_held_write_finishes_it_then_checkpoints_and_commits_the_rest(
    kafka: str, model_path: Path, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    topic, name = f"cs-{run}-events", f"cs-{run}"
    _create_topics(kafka, {topic: PARTITIONS, f"{name}-alerts": 1, f"{name}-dlq": 1})
    records = _records(_fleet(n_streams=8, n_steps=300))
    n = len(records)
    hold, held = tmp_path / "hold", tmp_path / "held"
    port = _free_port()
    cfg = _config(tmp_path, kafka, model_path, topic, name, port, interval_s=1)
    log = tmp_path / "d.log"
    _produce(kafka, topic, records[: n // 3])
    d = _held_daemon(cfg, port, log, hold, held)
    d.wait_for(lambda: d.processed() >= n // 3, what="first third")
    _hold_a_checkpoint(kafka, topic, d, hold, held, records, n // 3, n // 2)
    _produce(kafka, topic, records[n // 2 :])
    d.wait_for(lambda: d.processed() >= n, what="all events")
    d.proc.send_signal(signal.SIGTERM)
    d.wait_for(lambda: "stop requested" in d.tail(), what="the stop")
    hold.unlink()  # the held write goes on; the final checkpoint follows it
    assert d.wait(signal.SIGTERM) == 0, d.tail()  # a second signal is ignored
    ends = [sum(1 for p, _, _ in records if p == q) for q in range(PARTITIONS)]
    assert _durable(tmp_path / f"ckpt-{name}", topic) == ends
    assert _committed(kafka, f"g-{name}", topic) == ends
