"""Kernel parity: PyTorch nn.LSTM / nn.GRU + nn.Linear and the numpy reference.

Many interleaved streams go through the Detector in micro-batches; each
stream's forecasts and final hidden state must equal what PyTorch computes
for that stream's history alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.model import Model
from tests import naive
from tests.conftest import SEED, require

ATOL = 1e-5  # float32 tolerance for states and forecasts over 500 steps

CASES = [
    # cell, layers, hidden, features
    ("lstm", 1, 8, 1),
    ("lstm", 2, 64, 8),
    ("lstm", 3, 128, 16),
    ("gru", 1, 16, 4),
    ("gru", 2, 32, 3),
    ("gru", 3, 128, 16),
]


def interleaved(n_streams: int, steps: int, n_feat: int, rng: np.random.Generator):
    """Random interleaving of n_streams sequences of `steps` events each (order kept)."""
    xs = rng.normal(size=(n_streams, steps, n_feat)).astype(np.float32)
    owner = np.repeat(np.arange(n_streams), steps)
    rng.shuffle(owner)
    pos = np.zeros(n_streams, np.int64)
    step_of = np.empty_like(owner)
    for i, s in enumerate(owner):
        step_of[i] = pos[s]
        pos[s] += 1
    return xs, owner, step_of


def run_detector(model: Model, xs, owner, step_of, batch: int):
    det = Detector(model, DetectorConfig())
    keys = np.array([f"s{s}" for s in owner], dtype=object)
    times = step_of.astype(np.float64)
    x = xs[owner, step_of]
    fc = np.empty_like(x)
    for a in range(0, len(owner), batch):
        res = det.process_many(list(keys[a : a + batch]), times[a : a + batch], x[a : a + batch])
        fc[a : a + batch] = res.forecast
    return det, fc


@pytest.mark.parametrize(("cell", "layers", "hidden", "n_feat"), CASES)
def test_parity_with_torch(cell, layers, hidden, n_feat):
    torch = require("torch")
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED + hidden)
    n_streams, steps = 20, 500
    rnn_cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    rnn = rnn_cls(n_feat, hidden, num_layers=layers, batch_first=True)
    lin = torch.nn.Linear(hidden, n_feat)
    sd = {f"rnn.{k}": v for k, v in rnn.state_dict().items()}
    sd.update({f"head.{k}": v for k, v in lin.state_dict().items()})
    from streamlstm.model.importers import from_torch_state_dict

    model = from_torch_state_dict(sd, [f"f{i}" for i in range(n_feat)])
    xs, owner, step_of = interleaved(n_streams, steps, n_feat, rng)
    det, fc = run_detector(model, xs, owner, step_of, batch=997)

    with torch.no_grad():
        out, state = rnn(torch.from_numpy(xs))
        pred = lin(out).numpy()  # (S, T, F): forecast of step t+1 made at step t
    h_final = (state[0] if cell == "lstm" else state).numpy()  # (L, S, H)
    for s in range(n_streams):
        st = det.stream_state(f"s{s}")
        np.testing.assert_allclose(st["h"], h_final[:, s, :], atol=ATOL, rtol=0)
        if cell == "lstm":
            np.testing.assert_allclose(st["c"], state[1].numpy()[:, s, :], atol=ATOL, rtol=0)
    # the forecast each event was compared with is the one made at the stream's previous event
    mine = fc
    want = np.full_like(mine, np.nan)
    later = step_of > 0
    want[later] = pred[owner[later], step_of[later] - 1]
    assert np.isnan(mine[~later]).all()
    np.testing.assert_allclose(mine[later], want[later], atol=ATOL, rtol=0)


@pytest.mark.parametrize(("cell", "layers", "hidden", "n_feat"), [CASES[1], CASES[4]])
def test_parity_with_numpy_reference(cell, layers, hidden, n_feat):
    rng = np.random.default_rng(SEED)
    model = Model.random([f"f{i}" for i in range(n_feat)], hidden, layers, cell, seed=SEED)
    xs, owner, step_of = interleaved(5, 200, n_feat, rng)
    det, fc = run_detector(model, xs, owner, step_of, batch=64)
    for s in range(5):
        ref_fc, ref_h, ref_c = naive.run_stream(model, xs[s])
        mask = owner == s
        np.testing.assert_allclose(fc[mask], ref_fc[step_of[mask]], atol=ATOL, equal_nan=True)
        st = det.stream_state(f"s{s}")
        np.testing.assert_allclose(st["h"], ref_h, atol=ATOL)
        if cell == "lstm":
            np.testing.assert_allclose(st["c"], ref_c, atol=ATOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_model_of_changes_matches_the_numpy_reference(cell):
    """Model.delta: the cell reads each feature's clipped change since the stream's last
    event (0 at its first), the forecast adds the value back; streams interleaved in
    batches of 64 and one event at a time give the same bits, and the forecast of a
    stream 1000 units above another is that stream's forecast moved by 1000."""
    rng = np.random.default_rng(SEED)
    model = Model.random(["a", "b", "c"], 16, 2, cell, seed=SEED)
    model = type(model)(**{**model.__dict__, "delta": True})
    xs, owner, step_of = interleaved(5, 200, 3, rng)
    xs[:, 100] += 20.0  # a jump past the clip, and back
    det, fc = run_detector(model, xs, owner, step_of, batch=64)
    _, fc_one = run_detector(model, xs, owner, step_of, batch=1)
    np.testing.assert_array_equal(fc, fc_one)
    for s in range(5):
        ref_fc, ref_h, _ = naive.run_stream(model, xs[s])
        mask = owner == s
        np.testing.assert_allclose(fc[mask], ref_fc[step_of[mask]], atol=ATOL, equal_nan=True)
        np.testing.assert_allclose(det.stream_state(f"s{s}")["h"], ref_h, atol=ATOL)
    up = Detector(model).process_many(["u"] * 200, np.arange(200.0), xs[0] + 1000.0).forecast
    np.testing.assert_allclose(up[1:] - 1000.0, fc[owner == 0][1:], atol=1e-3)


def test_time_input_parity_with_numpy_reference():
    """A model with the dt input sees (log1p(dt) - mean) / std as its last input."""
    rng = np.random.default_rng(SEED)
    model = Model.random(["a", "b"], 16, 1, "lstm", seed=1, time_input=True)
    model = type(model)(**{**model.__dict__, "dt_mean": 3.0, "dt_std": 2.0})
    times = np.cumsum(rng.integers(1, 600, size=50)).astype(np.float64)
    xs = rng.normal(size=(50, 2)).astype(np.float32)
    det = Detector(model)
    fc = det.process_many(["k"] * 50, times, xs).forecast
    dt = np.r_[0.0, np.diff(times)]
    inputs = np.c_[xs, ((np.log1p(dt) - 3.0) / 2.0).astype(np.float32)]
    ref_fc, ref_h, _ = naive.run_stream(model, inputs)
    np.testing.assert_allclose(fc, ref_fc, atol=ATOL, equal_nan=True)
    np.testing.assert_allclose(det.stream_state("k")["h"], ref_h, atol=ATOL)
