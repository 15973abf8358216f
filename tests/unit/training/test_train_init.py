"""The last-value start: before any training the model forecasts the last value."""

from __future__ import annotations

import numpy as np
import pytest

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.training.init import last_value_start
from tests.conftest import SEED

TOL = 0.02  # normalised units: tanh curvature, ~(4/3)(a x)^2 x for 2 LSTM layers at |x| = 3


CASES = [("lstm", 1, False), ("lstm", 2, True), ("gru", 1, True), ("gru", 2, False)]


@pytest.mark.parametrize(("cell", "layers", "time_input"), CASES)
def test_starts_as_a_last_value_forecaster(cell, layers, time_input):
    rng = np.random.default_rng(SEED)
    model = last_value_start(["a", "b", "c"], hidden=8, layers=layers, cell=cell, seed=SEED,
                             time_input=time_input)  # fmt: skip
    x = np.cumsum(rng.normal(0, 0.3, size=(300, 3)), axis=0)
    x = np.clip(x, -3, 3)
    times = np.cumsum(rng.exponential(10.0, 300))
    res = Detector(model, DetectorConfig(warmup=1)).process_many(["s"] * 300, times, x)
    err = np.abs(res.forecast[1:] - x[:-1])
    assert err.max() < TOL, f"seed {SEED}: {err.max()}"
    # the random units are live (their gates are not saturated) but silent in the head
    assert np.count_nonzero(model.head_weight) == 3


def test_too_few_units_fall_back_to_random():
    m = last_value_start(["a", "b", "c"], hidden=2)
    assert m.provenance["source"] == "random"
