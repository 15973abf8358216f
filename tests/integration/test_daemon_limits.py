"""The daemon against a real broker, at its limits (issue #10): a batch with more
streams than the cap, unreadable checkpoints, a damaged model, a stream spread over
partitions. Helpers and the broker come from tests/integration/test_daemon.py."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamlstm.cli.demo import persistence_model
from streamlstm.examples.synth import FleetSpec, generate_fleet
from tests.integration.test_daemon import (
    _RUNNING,
    SEED,
    Daemon,
    _config,
    _create_topics,
    _free_port,
    _produce,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kafka(broker: Any) -> str:
    return str(broker.bootstrap)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clean = generate_fleet(FleetSpec(n_streams=20, n_steps=800, anomaly_rate=0.0, seed=SEED + 1))
    return persistence_model(clean.values).save(tmp_path_factory.mktemp("model") / "m.npz")


@pytest.fixture(autouse=True)
def _no_leftover_daemons() -> Iterator[None]:
    """A failed assertion must not leave a daemon running after its test."""
    yield
    while _RUNNING:
        proc = _RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _edit(cfg: Path, **sections: dict[str, Any]) -> Path:
    """Merge ``sections`` into the first pipeline of the YAML file at ``cfg``."""
    doc = yaml.safe_load(cfg.read_text())
    pipe = doc["pipelines"][0]
    for name, values in sections.items():
        pipe[name] = {**pipe.get(name, {}), **values}
    cfg.write_text(yaml.safe_dump(doc))
    return cfg


def _doc(key: str, t: float, v: float) -> bytes:
    return json.dumps(
        {"sensor": key, "ts": t, "temp": v, "pressure": 5.0, "flow": 100.0, "vibration": 1.0}
    ).encode()


def test_more_distinct_streams_in_a_batch_than_the_cap(
    kafka: str, model_path: Path, tmp_path: Path
) -> None:
    """state.max_streams 100, max_poll_records 400 and 500 keys: every start used to exit
    1 with OverflowError. Now the daemon processes everything, stays under the cap by
    evicting the least recently seen streams, and restarts from its checkpoint."""
    name = f"cap-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    _create_topics(kafka, {topic: 1, f"{name}-alerts": 1, f"{name}-dlq": 1})
    records = [(0, f"s{i}".encode(), _doc(f"s{i}", 60.0 * r, 20.0)) for r in range(2)
               for i in range(500)]  # fmt: skip
    _produce(kafka, topic, records)
    port = _free_port()
    cfg = _edit(
        _config(tmp_path, kafka, model_path, topic, name, port),
        state={"max_streams": 100}, source={"max_poll_records": 400},
    )  # fmt: skip
    d = Daemon(cfg, port, tmp_path / "d.log")
    d.wait_for(lambda: d.processed() >= len(records), what="all records")
    assert d.metric("streamlstm_events_total", outcome="ok") == len(records)
    d.wait_for(lambda: d.metric("streamlstm_live_streams") == 100, timeout=10, what="status")
    assert (d.metric("streamlstm_evicted_streams_total", reason="lru") or 0) >= 900
    assert d.wait(signal.SIGTERM) == 0, d.tail()
    # The restart, with the cap lowered to 40, restores the newest 40 or so of the
    # checkpoint's 100 streams (it used to exit 1 with OverflowError too) and goes on.
    more = [(0, f"s{i}".encode(), _doc(f"s{i}", 180.0, 20.0)) for i in range(500)]
    _produce(kafka, topic, more)
    _edit(cfg, state={"max_streams": 40})
    d2 = Daemon(cfg, port, tmp_path / "d.log")
    d2.wait_for(lambda: d2.processed() >= len(more), what="records after the restart")
    d2.wait_for(lambda: d2.metric("streamlstm_live_streams") == 40, timeout=10, what="status")
    assert d2.wait(signal.SIGTERM) == 0, d2.tail()
    assert "OverflowError" not in d2.tail()
