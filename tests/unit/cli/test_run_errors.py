"""`streamlstm run` names the YAML key behind a bad model, as check-config does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from streamlstm import cli
from streamlstm.model.baselines import last_value_model

REPO = Path(__file__).resolve().parents[3]


def _config(tmp_path: Path) -> Path:
    doc = yaml.safe_load((REPO / "config" / "pipeline.yaml").read_text())
    doc["pipelines"][0]["checkpoint"] = {"dir": str(tmp_path / "ckpt")}
    doc["pipelines"][0]["model"] = {"path": str(tmp_path / "m.npz")}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_missing_model_and_feature_mismatch_name_their_yaml_keys(tmp_path: Path, capsys) -> None:
    cfg = _config(tmp_path)
    assert cli.main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: pipelines[0].model.path: " in err and "model file not found" in err
    last_value_model(["temp", "pressure", "flow"], np.zeros(3), np.ones(3)).save(tmp_path / "m.npz")
    assert cli.main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: pipelines[0].decode.features: " in err and "extra: vibration" in err
