"""``streamlstm import-torch``: real torch modules in, Detector forecasts equal torch's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from streamlstm.cli import main  # noqa: E402
from streamlstm.detector import Detector, DetectorConfig  # noqa: E402
from streamlstm.model import load  # noqa: E402

FORECAST_ATOL = 1e-5  # float32 kernels vs torch float32, small sizes, unit-scale values
FEATURES = ("temp", "pressure", "flow")
MEAN = np.array([20.0, -3.0, 0.5])
STD = np.array([2.0, 0.5, 1.5])


class Forecaster(nn.Module):
    """Recurrent layer + linear head under configurable attribute names."""

    def __init__(self, cell: str, n_in: int, hidden: int, layers: int, batch_first: bool) -> None:
        super().__init__()
        rnn_cls = nn.LSTM if cell == "lstm" else nn.GRU
        self.batch_first = batch_first
        self.rnn = rnn_cls(n_in, hidden, num_layers=layers, batch_first=batch_first)
        self.head = nn.Linear(hidden, n_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (T, F) -> (T, F) forecast of the next step, normalised."""
        seq = x.unsqueeze(0) if self.batch_first else x.unsqueeze(1)
        out, _ = self.rnn(seq)
        out = out[0] if self.batch_first else out[:, 0]
        return self.head(out)


def _save_state(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save(state, path)
    return path


def _torch_forecasts(module: Forecaster, x_raw: np.ndarray) -> np.ndarray:
    xn = torch.tensor((x_raw - MEAN) / STD, dtype=torch.float32)
    with torch.no_grad():
        pred = module(xn).numpy().astype(np.float64)
    return pred * STD + MEAN


def _detector_forecasts(model_path: Path, x_raw: np.ndarray) -> np.ndarray:
    det = Detector(load(model_path), DetectorConfig())
    n = x_raw.shape[0]
    res = det.process_many(["s"] * n, np.arange(n, dtype=np.float64), x_raw)
    return res.forecast.astype(np.float64)


def _sequence(seed: int, n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = np.cumsum(rng.normal(0, 0.3, (n, len(FEATURES))), axis=0)
    return MEAN + STD * z


@pytest.mark.parametrize(
    ("cell", "layers", "batch_first", "prefix", "explicit"),
    [
        ("lstm", 1, True, ("rnn.", "head."), False),
        ("lstm", 2, False, ("rnn.", "head."), False),
        ("gru", 1, False, ("rnn.", "head."), False),
        ("gru", 2, True, ("encoder.lstm.", "decoder.fc."), True),
    ],
)
def test_imported_model_forecasts_like_torch(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cell: str,
    layers: int,
    batch_first: bool,
    prefix: tuple[str, str],
    explicit: bool,
) -> None:
    seed = 11 * layers + (1 if cell == "gru" else 0) + (2 if batch_first else 0)
    torch.manual_seed(seed)
    module = Forecaster(cell, len(FEATURES), hidden=6, layers=layers, batch_first=batch_first)
    # Rename the keys to the prefixes under test (e.g. a model that nests its layers).
    state = {
        (prefix[0] if k.startswith("rnn.") else prefix[1]) + k.split(".", 1)[1]: v
        for k, v in module.state_dict().items()
    }
    pt = _save_state(tmp_path / "state.pt", state)
    out = tmp_path / "m.npz"
    argv = [
        "import-torch", str(pt), "--features", ",".join(FEATURES), "--out", str(out),
        "--norm-mean", ",".join(map(str, MEAN)), "--norm-std", ",".join(map(str, STD)),
    ]  # fmt: skip
    if explicit:
        argv += ["--rnn-prefix", prefix[0], "--head-prefix", prefix[1], "--cell", cell]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert f"{cell.upper()} layers={layers} hidden=6" in printed

    x = _sequence(seed)
    want = _torch_forecasts(module, x)
    got = _detector_forecasts(out, x)
    # The detector's forecast for event t was made at t-1: row t of got = row t-1 of want.
    assert np.isnan(got[0]).all()
    np.testing.assert_allclose(
        (got[1:] - MEAN) / STD, (want[:-1] - MEAN) / STD, atol=FORECAST_ATOL, rtol=0
    )


def test_time_input_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A network with one input more than the features reads the normalised log gap."""
    torch.manual_seed(5)
    n_feat = len(FEATURES)
    rnn = nn.LSTM(n_feat + 1, 5, batch_first=True)
    head = nn.Linear(5, n_feat)
    state = {**{f"lstm.{k}": v for k, v in rnn.state_dict().items()},
             **{f"fc.{k}": v for k, v in head.state_dict().items()}}  # fmt: skip
    pt = _save_state(tmp_path / "dt.pt", state)
    out = tmp_path / "dt.npz"
    dt_mean, dt_std = 4.0, 0.5
    argv = [
        "import-torch", str(pt), "--features", ",".join(FEATURES), "--out", str(out),
        "--norm-mean", ",".join(map(str, MEAN)), "--norm-std", ",".join(map(str, STD)),
        "--dt-mean", str(dt_mean), "--dt-std", str(dt_std),
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert "time input: (log1p(dt) - 4) / 0.5" in capsys.readouterr().out
    rng = np.random.default_rng(5)
    x = _sequence(5, n=30)
    times = np.cumsum(rng.uniform(10.0, 120.0, 30))
    det = Detector(load(out), DetectorConfig())
    got = det.process_many(["s"] * 30, times, x).forecast.astype(np.float64)
    gaps = np.r_[0.0, np.diff(times)]  # the first event of a stream has no gap
    dt_in = (np.log1p(gaps) - dt_mean) / dt_std
    inp = np.hstack([(x - MEAN) / STD, dt_in[:, None]])
    with torch.no_grad():
        h, _ = rnn(torch.tensor(inp[None], dtype=torch.float32))
        want = head(h[0]).numpy().astype(np.float64)
    np.testing.assert_allclose((got[1:] - MEAN) / STD, want[:-1], atol=FORECAST_ATOL, rtol=0)


def test_norm_from_fits_mean_and_std(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(3)
    module = Forecaster("lstm", 2, hidden=4, layers=1, batch_first=True)
    pt = _save_state(tmp_path / "s.pt", module.state_dict())
    rng = np.random.default_rng(3)
    data = rng.normal([5.0, 100.0], [1.0, 10.0], (50, 2))
    lines = ["a;b"] + [f"{u!r};{v!r}" for u, v in data.tolist()]
    lines[7] = "2.5;"  # a missing cell is ignored by the fit
    data[6] = [2.5, np.nan]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.npz"
    code = main(
        ["import-torch", str(pt), "--features", "a,b", "--out", str(out),
         "--norm-from", str(tmp_path / "d.csv")]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    m = load(out)
    np.testing.assert_allclose(m.norm_mean, np.nanmean(data, axis=0), rtol=1e-6)
    np.testing.assert_allclose(m.norm_std, np.nanstd(data, axis=0), rtol=1e-6)
    assert "fitted on" in m.provenance["normalisation"]


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    return err


def test_not_a_torch_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a zip archive")
    err = _error(
        ["import-torch", str(bad), "--features", "a", "--out", str(tmp_path / "m.npz")], capsys
    )
    assert "import-torch: error:" in err and "not a readable PyTorch state_dict" in err
    assert not (tmp_path / "m.npz").exists()


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(
        [
            "import-torch",
            str(tmp_path / "nope.pt"),
            "--features",
            "a",
            "--out",
            str(tmp_path / "m.npz"),
        ],
        capsys,
    )
    assert "nope.pt: file not found" in err


def test_wrong_feature_count_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    module = Forecaster("lstm", 3, hidden=4, layers=1, batch_first=True)
    pt = _save_state(tmp_path / "s.pt", module.state_dict())
    err = _error(
        ["import-torch", str(pt), "--features", "a,b", "--out", str(tmp_path / "m.npz")], capsys
    )
    assert "forecasts 3 values, but 2 features were named (a,b)" in err
    err = _error(
        ["import-torch", str(pt), "--features", "a,b,c,d,e", "--out", str(tmp_path / "m.npz")],
        capsys,
    )
    assert "takes 3 inputs but 5 features were named" in err
    assert not (tmp_path / "m.npz").exists()


def test_pickled_module_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    module = Forecaster("gru", 2, hidden=4, layers=1, batch_first=True)
    pt = tmp_path / "whole.pt"
    torch.save(module, pt)  # a pickled module, not a state_dict: weights_only refuses it
    err = _error(
        ["import-torch", str(pt), "--features", "a,b", "--out", str(tmp_path / "m.npz")], capsys
    )
    assert "not a readable PyTorch state_dict" in err


def test_bad_normalisation_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    module = Forecaster("lstm", 2, hidden=4, layers=1, batch_first=True)
    pt = _save_state(tmp_path / "s.pt", module.state_dict())
    base = ["import-torch", str(pt), "--features", "a,b", "--out", str(tmp_path / "m.npz")]
    err = _error(base + ["--norm-mean", "1", "--norm-std", "1,1"], capsys)
    assert "--norm-mean has 1 values, expected 2" in err
    err = _error(base + ["--norm-mean", "1,2", "--norm-std", "1,0"], capsys)
    assert "--norm-std must be > 0" in err
    err = _error(base + ["--norm-mean", "1,2"], capsys)
    assert "go together" in err
