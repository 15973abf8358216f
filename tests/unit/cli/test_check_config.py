"""``streamlstm check-config``: exit codes, summary, model checks, through the real CLI."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from streamlstm.cli import main
from streamlstm.model import Model

REPO = Path(__file__).resolve().parents[3]
CONFIG = """
kafka: {bootstrap_servers: [localhost:9092]}
pipelines:
  - name: sensors
    source: {topics: [readings]}
    decode:
      key_field: sensor
      time_field: ts
      features: [temp, pressure]
    model: {path: models/m.npz}
"""


def setup(tmp_path: Path, text: str = CONFIG, features: tuple[str, ...] | None = None) -> Path:
    cfg = tmp_path / "svc.yaml"
    cfg.write_text(textwrap.dedent(text))
    if features is not None:
        (tmp_path / "models").mkdir()
        Model.random(list(features), hidden=4, time_input=True).save(tmp_path / "models/m.npz")
    return cfg


def test_valid_config_with_matching_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = setup(tmp_path, features=("temp", "pressure"))
    assert main(["check-config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "sensors: readings from localhost:9092" in out
    assert "2 features: temp, pressure" in out
    assert "LSTM" in out and "+dt" in out  # the model was loaded and described
    assert out.rstrip().endswith("OK")


def test_missing_model_is_an_error_unless_no_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = setup(tmp_path)
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: pipelines[0].model.path: file not found: {tmp_path / 'models/m.npz'}" in err
    assert main(["check-config", "--no-model", str(cfg)]) == 0


def test_features_must_equal_the_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path, features=("temp", "flow"))
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: pipelines[0].decode.features: " in err
    assert "missing: flow; extra: pressure" in err


def test_corrupt_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/m.npz").write_bytes(b"not a zip")
    assert main(["check-config", str(cfg)]) == 2
    assert f"{cfg}: pipelines[0].model.path: " in capsys.readouterr().err


def test_every_config_error_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = CONFIG.replace("[readings]}", "[readings], start: now}").replace(
        "[temp, pressure]", "[temp, {name: p, transform: logg}]"
    )
    cfg = setup(tmp_path, bad + "metrics: {port: -1}\n")
    assert main(["check-config", "--no-model", str(cfg)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith(f"{cfg}: metrics.port: ")
    assert lines[1].startswith(f"{cfg}: pipelines[0].source.start: ")
    assert lines[2].startswith(f"{cfg}: pipelines[0].decode.features[1].transform: ")
    assert lines[3] == f"{cfg}: 3 error(s)"


def test_unwritable_checkpoint_dir_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("")
    cfg = setup(tmp_path, CONFIG + "    checkpoint: {dir: afile/ckpt}\n")
    assert main(["check-config", "--no-model", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "warning: pipelines[0].checkpoint.dir: " in out and "is not a directory" in out
    cfg = setup(tmp_path, CONFIG + "    checkpoint: {dir: fresh/ckpt}\n")
    assert main(["check-config", "--no-model", str(cfg)]) == 0
    assert "warning" not in capsys.readouterr().out


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: file not found" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["pipeline.yaml", "sensors.yaml", "transactions.yaml"])
def test_shipped_configs_pass_without_models(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--no-model", str(REPO / "config" / name)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK")


def test_a_models_carried_streams_are_reported_with_what_becomes_of_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    from streamlstm.detector import DetectorConfig
    from streamlstm.detector.carry import carry_states

    cfg = setup(tmp_path)
    (tmp_path / "models").mkdir()
    model = Model.random(["temp", "pressure"], hidden=4)
    rng = np.random.default_rng(0)
    for smooth, said in ((3, "each continues from it"), (5, "smooth 5 there, 3 here")):
        carried, _, _ = carry_states(
            model, ["s1"] * 300, np.arange(300.0), rng.normal(size=(300, 2)),
            DetectorConfig(smooth=smooth),
        )  # fmt: skip
        carried.save(tmp_path / "models/m.npz")
        assert main(["check-config", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert "carries 1 training stream(s)' end state" in out and said in out
