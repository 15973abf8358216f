"""``streamlstm score`` end to end through ``streamlstm.cli.main``, against the Detector itself."""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamlstm.cli import main
from streamlstm.detector import OUTCOME_NAMES, BatchResult, Detector, DetectorConfig
from streamlstm.examples.synth import FleetSpec, generate_fleet
from streamlstm.model import Model
from tests.conftest import SEED

FEATURES = ("temp", "pressure")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Flags used by every run below, and the same settings for the direct Detector.
FLAGS = ["--threshold", "0.6", "--warmup", "5", "--min-run", "1", "--smooth", "2"]
CONFIG = DetectorConfig(open_threshold=0.6, warmup=5, min_run=1, smooth=2)


@dataclass
class Data:
    csv: Path
    model: Path
    keys: list[str]
    texts: list[str]
    times: np.ndarray
    x: np.ndarray
    expected: BatchResult


def _iso(t: float) -> str:
    return str(np.datetime64(int(t), "s")).replace("T", " ")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    d = tmp_path_factory.mktemp("score")
    fleet = generate_fleet(
        FleetSpec(n_streams=3, n_steps=400, features=FEATURES, anomaly_rate=0.0, seed=4)
    )
    values = fleet.values.astype(np.float64)
    sd = values.std(axis=1)
    values[1, 330:333] += 40 * sd[1]  # an unmistakable spike on sensor-0001 (after the
    # scorer learnt its normal from 256 events)
    values[0, 300:302] -= 40 * sd[0]  # and a dip on sensor-0000
    keys, texts, times, rows = [], [], [], []
    for t in range(fleet.times.shape[0]):
        for s, key in enumerate(fleet.keys):
            keys.append(key)
            times.append(fleet.times[t])
            texts.append(_iso(fleet.times[t]))
            rows.append(values[s, t].copy())
    x = np.array(rows)
    x[3 * 70 + 2, 0] = np.nan  # one missing cell: imputed
    # One row moved 2 steps later in the file: older than its stream's last event.
    i = 3 * 40
    order = list(range(len(keys)))
    order.insert(i + 3 * 2, order.pop(i))
    keys = [keys[j] for j in order]
    texts = [texts[j] for j in order]
    times_a = np.array([times[j] for j in order])
    x = x[order]
    lines = ["machine;ts;" + ";".join(FEATURES)]
    for k, s, row in zip(keys, texts, x.tolist(), strict=True):
        cells = ["" if np.isnan(v) else repr(v) for v in row]
        lines.append(";".join([k, s, *cells]))
    path = d / "events.csv"
    path.write_text("\n".join(lines) + "\n")
    mean, std = values.reshape(-1, 2).mean(0), values.reshape(-1, 2).std(0)
    model = Model.random(FEATURES, hidden=8, seed=2).with_normalisation(mean, std)
    mpath = model.save(d / "m.npz")
    expected = Detector(model, CONFIG).process_many(keys, times_a, x)
    opened = [t for t in expected.transitions if t.kind == "opened"]
    assert len(opened) >= 2, "the fixture must open alerts to test the summary"
    assert "too_old" in [OUTCOME_NAMES[o] for o in expected.outcome.tolist()]
    return Data(path, mpath, keys, texts, times_a, x, expected)


def _score(data: Data, *extra: str) -> list[str]:
    return ["score", "--model", str(data.model), "--input", str(data.csv), "--key", "machine",
            "--time", "ts", *FLAGS, *extra]  # fmt: skip


def _f32(text: str) -> float:
    return float(np.float32(float(text))) if text != "" else float("nan")


def _check_rows(rows: list[dict[str, object]], data: Data, null: object) -> None:
    e = data.expected
    assert len(rows) == len(data.keys)
    assert [r["key"] for r in rows] == data.keys
    assert [r["time"] for r in rows] == data.texts
    score = np.array([np.nan if r["score"] == null else _f32(str(r["score"])) for r in rows])
    np.testing.assert_array_equal(score, e.score.astype(np.float64))
    assert [int(str(r["alert"])) for r in rows] == e.alert.astype(int).tolist()
    assert [r["outcome"] for r in rows] == [OUTCOME_NAMES[o] for o in e.outcome.tolist()]
    kinds = {t.index: t.kind for t in e.transitions}  # the detector's own words
    assert [r["transition"] for r in rows] == [kinds.get(i, "") for i in range(len(rows))]
    for j, f in enumerate(FEATURES):
        col = rows and [r[f"forecast_{f}"] for r in rows]
        fc = np.array([np.nan if v == null else _f32(str(v)) for v in col])
        np.testing.assert_array_equal(fc, e.forecast[:, j].astype(np.float64))


def test_csv_output_equals_the_detector(
    data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.csv"
    assert main(_score(data, "--out", str(out), "--batch", "37")) == 0
    err = capsys.readouterr().err
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["key", "time", "score", "alert", "outcome", "transition",
                             "forecast_temp", "forecast_pressure"]  # fmt: skip
    _check_rows(rows, data, null="")
    outcomes = [r["outcome"] for r in rows]
    assert outcomes.count("too_old") == 1 and outcomes.count("imputed") == 1

    # The summary: counts, and one line per alert with its stream and opening time.
    e = data.expected
    assert f"scored {len(data.keys)} events of 3 stream(s)" in err
    assert "too_old 1" in err and "imputed 1" in err
    opened = [t for t in e.transitions if t.kind == "opened"]
    assert f"alerts opened: {len(opened)} (open >= 0.6" in err
    alert_lines = [ln for ln in err.splitlines() if ln.startswith("  sensor-")]
    assert len(alert_lines) == len(opened)
    for t, line in zip(opened, alert_lines, strict=True):
        assert line.split()[0] == t.key
        assert data.texts[t.index] in line
    spike = [ln for ln in alert_lines if ln.split()[0] == "sensor-0001"]
    assert spike, err


def test_jsonl_output_and_batch_size_change_nothing(
    data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.jsonl"
    assert main(_score(data, "--out", str(out), "--batch", "1000", "--quiet")) == 0
    assert capsys.readouterr().err == ""
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    _check_rows(rows, data, null=None)


def test_stdout_output(data: Data, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_score(data, "--out", "-", "-q")) == 0
    text = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(text)))
    _check_rows(rows, data, null="")


def test_plots_one_per_stream_capped(
    data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "p" / "scores.png"
    code = main(_score(data, "--out", str(tmp_path / "s.csv"), "--plot", str(plot),
                       "--plot-max", "2"))  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    drawn = sorted(p.name for p in plot.parent.iterdir())
    # Streams with alerts come first; the spiked one is among them.
    assert len(drawn) == 2 and "scores-sensor-0001.png" in drawn
    for name in drawn:
        assert (plot.parent / name).read_bytes()[:8] == PNG_MAGIC
    assert "1 stream(s) not drawn (--plot-max)" in err
    assert str(plot.parent / "scores-sensor-0001.png") in err


def test_single_stream_plot_is_the_given_path(tmp_path: Path, data: Data) -> None:
    one = tmp_path / "one.csv"
    lines = data.csv.read_text().splitlines()
    one.write_text(
        "\n".join([lines[0]] + [ln for ln in lines[1:] if ln.startswith("sensor-0002;")])
    )
    plot = tmp_path / "one.png"
    argv = ["score", "--model", str(data.model), "--input", str(one), "--time", "ts",
            "--out", str(tmp_path / "o.csv"), "--plot", str(plot), "-q"]  # fmt: skip
    assert main(argv) == 0
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.csv", "one.csv", "one.png"]
    rows = list(csv.DictReader(open(tmp_path / "o.csv", newline="")))
    assert {r["key"] for r in rows} == {"one"}  # no key column: the file's name


def test_features_flag_maps_columns(tmp_path: Path, data: Data) -> None:
    renamed = tmp_path / "r.csv"
    text = data.csv.read_text()
    renamed.write_text(text.replace("machine;ts;temp;pressure", "machine;ts;t_c;p_bar", 1))
    out_a, out_b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(_score(data, "--out", str(out_a), "-q")) == 0
    argv = _score(data, "--out", str(out_b), "-q", "--features", "t_c,p_bar")
    argv[argv.index("--input") + 1] = str(renamed)
    assert main(argv) == 0
    assert out_a.read_text() == out_b.read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--features", "temp"], "--features names 1 columns (temp) but the model takes 2"),
        (["--features", "temp,flow"], "no column 'flow'; the header has 'machine', 'ts'"),
        (["--key", "pump"], "no column 'pump'; the header has 'machine', 'ts'"),
        (["--threshold", "1.5"], "invalid detector option: open_threshold is 1.5"),
        (["--batch", "0"], "--batch is 0, expected >= 1"),
    ],
)
def test_errors_exit_2(
    data: Data,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert main(_score(data, "--out", str(tmp_path / "s.csv"), *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamlstm score: error: ") and message in err, err


def test_missing_model_and_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "--input", "x.csv"]) == 2
    assert "needs --model and --input" in capsys.readouterr().err
    argv = ["score", "--model", str(tmp_path / "none.npz"), "--input", "x.csv"]
    assert main(argv) == 2
    assert "none.npz: model file not found" in capsys.readouterr().err


def test_example_runs_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    # --plot-max 1 only to keep the test fast: the stream with the alert is drawn first.
    assert main(["score", "--example", "--plot-max", "1"]) == 0
    err = capsys.readouterr().err
    out = tmp_path / "streamlstm-example"
    assert sorted(p.name for p in out.iterdir()) == ["scores-pump-0002.png", "scores.csv"]
    assert "3 stream(s) not drawn" in err
    rows = list(csv.DictReader(open(out / "scores.csv", newline="")))
    assert len(rows) == 4 * 480
    # The injected hot run (pump-0002, 05:00-05:19) is in alert all along; the other
    # pumps never alert. (pump-0002 also wanders ~3 sd from its first four hours from
    # 04:00 on, which the regime scorer calls a change: its alert may open then.)
    hot = [
        r for r in rows if r["key"] == "pump-0002" and "05:00:00" <= r["time"][11:] <= "05:19:00"
    ]
    assert len(hot) == 20 and all(r["alert"] == "1" for r in hot), hot
    opened = [(r["key"], r["time"]) for r in rows if r["transition"] == "opened"]
    assert {k for k, _ in opened} == {"pump-0002"}, opened
    assert "pump-0002" in err and "alerts opened:" in err


def test_keys_needing_quotes_round_trip(
    data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = ['pump "a", left', "plain", "line\nbreak"]
    src = tmp_path / "q.jsonl"
    src.write_bytes(
        b"".join(
            orjson.dumps({"k": keys[i % 3], "t": i, "temp": 20.0 + i, "pressure": 1.0}) + b"\n"
            for i in range(9)
        )
    )
    out = tmp_path / "q.csv"
    argv = ["score", "--model", str(data.model), "--input", str(src), "--key", "k",
            "--time", "t", "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(out, newline="")))
    assert [r["key"] for r in rows] == [keys[i % 3] for i in range(9)]
    assert [r["time"] for r in rows] == [str(i) for i in range(9)]
    assert [r["outcome"] for r in rows] == ["ok"] * 9


def test_out_may_not_overwrite_the_input(data: Data, capsys: pytest.CaptureFixture[str]) -> None:
    before = data.csv.read_bytes()
    assert main(_score(data, "--out", str(data.csv))) == 2
    assert "is the input file" in capsys.readouterr().err
    assert data.csv.read_bytes() == before


def test_non_numeric_cells_are_reported(
    data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    lines = data.csv.read_text().splitlines()
    parts = lines[5].split(";")
    parts[2] = "ERR"
    lines[5] = ";".join(parts)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    argv = _score(data, "--out", str(tmp_path / "s.csv"))
    argv[argv.index("--input") + 1] = str(bad)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: non-numeric cells read as missing: temp: 1 (first at line 6: 'ERR')" in err
    rows = list(csv.DictReader(open(tmp_path / "s.csv", newline="")))
    assert rows[4]["outcome"] == "imputed"
    with caplog.at_level("WARNING"):
        assert main([*argv, "-q"]) == 0
    assert "temp: 1 (first at line 6: 'ERR')" in caplog.text


def test_long_alert_lists_are_cut(
    data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlstm.cli import score

    opened = [t for t in data.expected.transitions if t.kind == "opened"]
    monkeypatch.setattr(score, "MAX_ALERTS_LISTED", 1)
    assert main(_score(data, "--out", str(tmp_path / "s.csv"))) == 0
    err = capsys.readouterr().err
    assert f"alerts opened: {len(opened)} " in err
    assert f"  ... and {len(opened) - 1} more" in err
    assert len([ln for ln in err.splitlines() if ln.startswith("  sensor-")]) == 1


def test_jsonl_numeric_times_stay_numbers(
    data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "n.jsonl"
    times = [1714521600, 1714521660.5, 1714521720]
    src.write_bytes(
        b"".join(orjson.dumps({"t": t, "temp": 1.0, "pressure": 2.0}) + b"\n" for t in times)
    )
    out = tmp_path / "n.jsonl.gz"
    argv = ["score", "--model", str(data.model), "--input", str(src), "--time", "t",
            "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    rows = [orjson.loads(line) for line in gzip.decompress(out.read_bytes()).splitlines()]
    assert [r["time"] for r in rows] == times
    assert [r["key"] for r in rows] == ["n"] * 3
    assert rows[0]["score"] is None and rows[0]["forecast_temp"] is None
    assert isinstance(rows[1]["score"], float)


def test_missing_model_features_suggest_features_flag(
    data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    renamed = tmp_path / "r.csv"
    renamed.write_text(data.csv.read_text().replace(";temp;", ";t_c;", 1))
    argv = _score(data, "--out", str(tmp_path / "s.csv"))
    argv[argv.index("--input") + 1] = str(renamed)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no column 'temp'" in err
    assert "the model's features are temp, pressure: name the file's columns" in err
    assert "--features" in err


def test_without_matplotlib_plot_says_which_extra_and_scoring_still_works(
    data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    plot = tmp_path / "scores.png"
    code = main(_score(data, "--out", str(tmp_path / "a.csv"), "--plot", str(plot)))
    assert code == 2
    assert "pip install 'streamlstm[plot]'" in capsys.readouterr().err
    assert not plot.exists()
    assert main(_score(data, "--out", str(tmp_path / "b.csv"), "-q")) == 0
    rows = list(csv.DictReader((tmp_path / "b.csv").open()))
    _check_rows(rows, data, null="")


@pytest.mark.parametrize("scale", [1.0, 1e-3])
def test_epoch_times_in_thousands_of_seconds_are_warned_about(tmp_path, capsys, scale):
    # 2014 as pandas 3 and `astype("int64") / 1e9` give it: 1.4e6 "seconds", 1970-01-17.
    # train and score both say so (once each); epoch seconds say nothing.
    n = 400
    t = (1_404_677_400.0 + 300.0 * np.arange(n)) * scale
    v = np.sin(np.arange(n) / 10.0) + np.random.default_rng(SEED).normal(0, 0.1, n)
    path = tmp_path / "s.csv"
    path.write_text(
        "ts,value\n"
        + "".join(f"{a!r},{b!r}\n" for a, b in zip(t.tolist(), v.tolist(), strict=True))
    )
    model = tmp_path / "m.npz"
    assert main(["train", "--data", str(path), "--time", "ts", "--features", "value",
                 "--out", str(model), "--quiet"]) == 0  # fmt: skip
    assert main(["score", "--model", str(model), "--input", str(path), "--time", "ts",
                 "--out", str(tmp_path / "o.csv"), "--quiet"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("1970-01-17") == (2 if scale != 1.0 else 0), err


def test_a_model_of_levels_far_from_its_training_data_is_warned_about(
    data: Data, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SKAB's trap: a model of levels scoring data 40 training spreads away forecasts
    garbage; score says so and names the feature. A model of changes is not warned about."""
    from dataclasses import replace

    from streamlstm.model import load

    levels = load(data.model)
    far = levels.with_normalisation(levels.norm_mean - np.array([40.0, 0.0]) * levels.norm_std,
                                    levels.norm_std)  # fmt: skip
    changes = replace(far, delta=True)
    for name, model, warned in (("far", far, True), ("changes", changes, False),
                                ("near", levels, False)):  # fmt: skip
        argv = _score(data, "--out", str(tmp_path / f"{name}.csv"), "-q")
        argv[argv.index("--model") + 1] = str(model.save(tmp_path / f"{name}.npz"))
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert main(argv) == 0
        said = "(median, in training spreads: temp 40)" in caplog.text
        assert said == warned, name
        assert "pressure" not in caplog.text
