"""The README's path from a fresh clone to `streamlstm run`: the demo fleet's history,
a model trained on it through the pipeline's decoder, a config check that passes."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

from streamlstm import cli
from streamlstm.model import load

REPO = Path(__file__).resolve().parents[3]


def test_history_then_train_then_check_config(tmp_path: Path, capsys) -> None:
    cfg_dir = tmp_path / "config"
    skip = shutil.ignore_patterns("models", "checkpoints")
    shutil.copytree(REPO / "config", cfg_dir, ignore=skip)
    hist = tmp_path / "history.jsonl.gz"
    assert cli.main(["demo", "--save-history", str(hist), "--streams", "3", "--steps", "400"]) == 0
    with gzip.open(hist, "rt") as fh:
        first = json.loads(fh.readline())
    assert set(first) == {"sensor", "ts", "temp", "pressure", "flow", "vibration"}
    model = cfg_dir / "models" / "sensors.npz"
    args = ["train", "--data", str(hist), "--config", str(cfg_dir / "pipeline.yaml"),
            "--out", str(model), "--hidden", "4", "--epochs", "1", "--quiet"]  # fmt: skip
    assert cli.main(args) == 0
    assert load(model).features == ("temp", "pressure", "flow", "vibration")
    capsys.readouterr()
    assert cli.main(["check-config", str(cfg_dir / "pipeline.yaml")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK")


def test_demo_broker_is_local_only(capsys) -> None:
    assert cli.main(["demo", "--broker", "kafka.example:9092"]) == 2
    assert "give localhost:PORT or 127.0.0.1:PORT" in capsys.readouterr().err
