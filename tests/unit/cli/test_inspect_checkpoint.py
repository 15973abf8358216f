"""``streamlstm inspect`` on checkpoints written by CheckpointStore from a real Detector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamlstm.cli import main
from streamlstm.detector import Detector, DetectorConfig
from streamlstm.model import Model
from streamlstm.service.checkpoint_store import CheckpointStore


def _write(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    det = Detector(Model.random(["a", "b"], hidden=8, seed=3), DetectorConfig(warmup=2))
    keys = [f"s{i % 5}" for i in range(50)]
    det.process_many(keys, np.arange(50.0), rng.normal(size=(50, 2)), np.arange(50), group=0)
    store = CheckpointStore(tmp_path, "pipe")
    store.write("readings", 0, 50, det.table.snapshot(group=0), {"model": "m-digest"})
    (path,) = sorted(tmp_path.rglob("*.ckpt"))
    return path


def test_json_shows_what_the_daemon_would_restore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path)
    assert main(["inspect", str(tmp_path), "--json", "--streams", "3"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)["checkpoints"]
    assert doc["path"] == str(path) and doc["format"] == 1
    assert (doc["pipeline"], doc["topic"], doc["partition"]) == ("pipe", "readings", 0)
    assert doc["next_offset"] == 50 and doc["n_streams"] == 5
    assert doc["recorded"] == {"model": "m-digest"}
    assert [s["key"] for s in doc["streams"]] == ["s0", "s1", "s2"]
    assert doc["streams"][0]["last_time"] == 45.0  # s0's last event


def test_text_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path)
    assert main(["inspect", str(path), "--streams", "1"]) == 0
    out = capsys.readouterr().out
    assert "topic readings partition 0, next offset 50" in out
    assert "5 stream(s)" in out and "... 4 more" in out


def test_damaged_and_newer_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert main(["inspect", str(path)]) == 2
    assert str(path) in capsys.readouterr().err
    garbage = tmp_path / "x.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    assert main(["inspect", str(garbage)]) == 2
    assert "x.ckpt" in capsys.readouterr().err
    assert path.exists()  # inspect never sets files aside


def test_newer_format_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snap = {"key_len": np.zeros(0, np.int64)}
    CheckpointStore(tmp_path, "pipe").write("t", 0, 1, snap, {"format": 2})
    assert main(["inspect", str(tmp_path)]) == 2
    assert "checkpoint format 2, expected 1" in capsys.readouterr().err
