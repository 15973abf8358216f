"""The kernels' blocking never changes a bit.

The wave kernels cut work into 4-row register tiles (1-row tiles for the
rest), 64/16/8/1-column tiles, and ``_detect_batch`` cuts waves into chunks
of ``CHUNK`` events. Shapes here hit every remainder: hidden sizes that are
not multiples of 16, waves longer than a chunk, batches of every size mod 4.
Each must equal one-event calls bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.kernels import cells
from streamlstm.kernels.detect import CHUNK
from streamlstm.model import Model
from tests.conftest import SEED

CASES = [
    # cell, hidden, layers, time_input
    ("lstm", 64, 1, False),
    ("lstm", 21, 2, True),
    ("lstm", 3, 1, False),
    ("gru", 37, 2, False),
]


def _run(model: Model, keys, times, x, sizes):
    det = Detector(model, DetectorConfig(warmup=2))
    out, i = [], 0
    for size in sizes:
        res = det.process_many(keys[i : i + size], times[i : i + size], x[i : i + size])
        out.append(np.concatenate([res.score[:, None], res.forecast], axis=1))
        i += size
    state = [det.stream_state(k)["h"] for k in sorted(set(keys))]
    return np.concatenate(out), np.stack(state)


@pytest.mark.parametrize(("cell", "hidden", "layers", "time_input"), CASES)
def test_batched_equals_one_by_one(cell, hidden, layers, time_input):
    rng = np.random.default_rng(SEED + hidden)
    n_streams = CHUNK + 75  # the first waves are longer than a chunk
    n = 3 * n_streams
    keys = [f"k{int(i)}" for i in rng.integers(0, n_streams, n)]
    times = np.sort(rng.uniform(0, 100.0, n))
    x = rng.normal(size=(n, 4))
    x[rng.random((n, 4)) < 0.05] = np.nan
    model = Model.random(["a", "b", "c", "d"], hidden=hidden, layers=layers, cell=cell,
                         seed=SEED, time_input=time_input)  # fmt: skip
    whole = _run(model, keys, times, x, [n])
    sizes = [1, 2, 3, 5, 130, 7, 257]
    sizes.append(n - sum(sizes))
    mixed = _run(model, keys, times, x, sizes)
    single = _run(model, keys, times, x, [1] * n)
    for a, b in ((whole, mixed), (whole, single)):
        assert a[0].tobytes() == b[0].tobytes(), "scores/forecasts depend on batching"
        assert a[1].tobytes() == b[1].tobytes(), "state depends on batching"


@pytest.mark.parametrize("m", [1, 3, 4, 5, 8, 13])
@pytest.mark.parametrize(("k_in", "g"), [(72, 256), (9, 84), (64, 8), (5, 1)])
def test_affine_rows_matches_sequential_sums(m, k_in, g):
    """Every tile shape gives ``bias + a[0] w[0] + a[1] w[1] + ...`` in float32, in order."""
    rng = np.random.default_rng(SEED)
    a = rng.normal(size=(m, k_in)).astype(np.float32)
    w = rng.normal(size=(k_in, g)).astype(np.float32)
    b = rng.normal(size=g).astype(np.float32)
    out = np.empty((m, g), np.float32)
    cells._affine_rows(a, m, k_in, w, b, out)
    ref = np.tile(b, (m, 1))
    for k in range(k_in):
        ref = (ref + (a[:, k : k + 1] * w[k]).astype(np.float32)).astype(np.float32)
    assert out.tobytes() == ref.tobytes()


def test_gate_functions_accuracy():
    x = np.linspace(-30, 30, 200_001).astype(np.float32)
    t = np.empty_like(x)
    s = np.empty_like(x)
    _apply(x, t, s)
    x64 = x.astype(np.float64)
    assert np.max(np.abs(t - np.tanh(x64))) < 1.5e-7
    assert np.max(np.abs(s - 1.0 / (1.0 + np.exp(-x64)))) < 1.5e-7
    assert _tanh_sigmoid(np.float32(np.inf)) == (1.0, 1.0)
    t_lo, s_lo = _tanh_sigmoid(np.float32(-np.inf))
    assert t_lo == -1.0 and 0.0 <= s_lo < 1e-38  # exp's clamp leaves 1 / (1 + e**88)


@njit
def _apply(x, t, s):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        t[i] = cells._tanh(x[i])
        s[i] = cells._sigmoid(x[i])


def _tanh_sigmoid(v):
    x = np.array([v], np.float32)
    t, s = np.empty_like(x), np.empty_like(x)
    _apply(x, t, s)
    return float(t[0]), float(s[0])
