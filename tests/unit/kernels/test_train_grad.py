"""BPTT kernels against PyTorch autograd on the same weights and sequences.

The oracle steps ``nn.LSTM`` / ``nn.GRU`` one event at a time in float64 so
that NaN inputs can be imputed with the previous forecast exactly as the
kernels (and the detector) do; autograd then differentiates through the
imputation too. A model of changes (``Model.delta``) is the same network fed
``clamp(v_t - v_{t-1}, -DELTA_CLIP, DELTA_CLIP)`` with ``v_t + head(h_t)`` as its
forecast, written the same way.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamlstm.kernels import train as KT
from streamlstm.kernels.layout import DELTA_CLIP
from streamlstm.model import Model
from tests import naive_train
from tests.conftest import SEED, require

REL_TOL = 1e-4  # relative error (Frobenius) per weight tensor, float32 kernels vs float64

CASES = [
    # cell, layers, hidden, features, time_input
    ("lstm", 1, 8, 3, False),
    ("lstm", 2, 16, 2, True),
    ("gru", 1, 8, 3, False),
    ("gru", 2, 16, 2, True),
]


def torch_loss_and_grads(model: Model, x: np.ndarray, y: np.ndarray, delta: bool = False):
    torch = require("torch")
    n_feat = model.n_features
    rnn_cls = torch.nn.LSTM if model.cell == "lstm" else torch.nn.GRU
    rnn = rnn_cls(model.input_size, model.hidden, model.layers, batch_first=True).double()
    head = torch.nn.Linear(model.hidden, n_feat).double()
    with torch.no_grad():
        for name, arr in model.arrays().items():
            mod, key = (head, name.split(".")[1]) if name.startswith("head.") else (rnn, name)
            getattr(mod, key).copy_(torch.from_numpy(arr.astype(np.float64)))
    xt = torch.from_numpy(x.astype(np.float64))
    yt = torch.from_numpy(y.astype(np.float64))
    n_rows, n_steps, _ = x.shape
    state = None
    prev = torch.zeros(n_rows, n_feat, dtype=torch.float64)
    last = None
    preds = []
    for t in range(n_steps):
        xf = xt[:, t, :n_feat]
        xf = torch.where(torch.isnan(xf), prev, xf)
        cin = xf
        if delta:
            cin = (
                torch.zeros_like(xf) if last is None else (xf - last).clamp(-DELTA_CLIP, DELTA_CLIP)
            )
        inp = torch.cat([cin, xt[:, t, n_feat:]], dim=1)[:, None, :]
        out, state = rnn(inp, state)
        prev = head(out[:, 0]) + (xf if delta else 0.0)
        last = xf
        preds.append(prev)
    p = torch.stack(preds, dim=1)
    mask = ~torch.isnan(yt)
    loss = ((p[mask] - yt[mask]) ** 2).mean()
    loss.backward()
    grads = {name: getattr(rnn, name).grad.numpy() for name, _ in rnn.named_parameters()}
    grads["head.weight"] = head.weight.grad.numpy()
    grads["head.bias"] = head.bias.grad.numpy()
    return loss.item(), int(mask.sum()), grads


def make_batch(model: Model, n_rows: int, n_steps: int, rng: np.random.Generator, nan_frac: float):
    n_feat = model.n_features
    x = rng.normal(size=(n_rows, n_steps, model.input_size)).astype(np.float32)
    y = rng.normal(size=(n_rows, n_steps, n_feat)).astype(np.float32)
    x[:, :, :n_feat][rng.random((n_rows, n_steps, n_feat)) < nan_frac] = np.nan
    y[rng.random(y.shape) < nan_frac] = np.nan
    return x, y


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


@pytest.mark.parametrize(("cell", "layers", "hidden", "n_feat", "time_input"), CASES)
@pytest.mark.parametrize("nan_frac", [0.0, 0.2])
def test_gradients_match_torch(cell, layers, hidden, n_feat, time_input, nan_frac):
    rng = np.random.default_rng(SEED)
    feats = [f"f{i}" for i in range(n_feat)]
    model = Model.random(feats, hidden=hidden, layers=layers, cell=cell, seed=SEED,
                         time_input=time_input)  # fmt: skip
    # 7 rows with chunk 4: one full 4-row block and a 3-row remainder, two chunks.
    x, y = make_batch(model, 7, 12, rng, nan_frac)
    loss, n_present, grads = KT.loss_and_grad(KT.Net(cell, model.arrays()), x, y, chunk=4)
    ref_loss, ref_n, ref = torch_loss_and_grads(model, x, y)
    assert n_present == ref_n
    assert loss == pytest.approx(ref_loss, rel=1e-5), f"seed {SEED}"
    assert set(grads) == set(ref)
    errs = {name: rel_err(grads[name], ref[name]) for name in ref}
    assert max(errs.values()) < REL_TOL, f"seed {SEED}: {errs}"


@pytest.mark.parametrize(
    ("cell", "layers", "hidden", "n_feat", "time_input"), CASES[:2] + CASES[3:]
)
@pytest.mark.parametrize("nan_frac", [0.0, 0.3])
def test_gradients_of_a_model_of_changes_match_torch(cell, layers, hidden, n_feat, time_input,
                                                    nan_frac):  # fmt: skip
    """The cell reads clipped changes, the forecast adds the value: through imputed
    values the gradient reaches the previous forecast three ways (the change in, the
    change out, the forecast's own last value); some changes are past the clip."""
    rng = np.random.default_rng(SEED)
    feats = [f"f{i}" for i in range(n_feat)]
    model = Model.random(feats, hidden=hidden, layers=layers, cell=cell, seed=SEED,
                         time_input=time_input)  # fmt: skip
    x, y = make_batch(model, 7, 12, rng, nan_frac)
    x[:, :, :n_feat] *= 4.0  # changes of up to ~30: some clipped at DELTA_CLIP
    y *= 4.0
    net = KT.Net(cell, model.arrays(), delta=True)
    loss, n_present, grads = KT.loss_and_grad(net, x, y, chunk=4)
    ref_loss, ref_n, ref = torch_loss_and_grads(model, x, y, delta=True)
    assert n_present == ref_n
    assert loss == pytest.approx(ref_loss, rel=1e-5), f"seed {SEED}"
    errs = {name: rel_err(grads[name], ref[name]) for name in ref}
    assert max(errs.values()) < REL_TOL, f"seed {SEED}: {errs}"


def test_a_model_of_changes_carries_its_last_values_between_stretches():
    """forward() over two halves of a model of changes, the second fed the first's
    forecast and last values (next_fc, (B, 2F)), equals one pass."""
    rng = np.random.default_rng(SEED)
    model = Model.random(["a", "b"], hidden=8, layers=1, cell="lstm", seed=SEED)
    net = KT.Net("lstm", model.arrays(), delta=True)
    x, y = make_batch(model, 5, 10, rng, 0.1)
    whole = KT.forward(net, x, y, chunk=4)
    first = KT.forward(net, x[:, :4], y[:, :4], chunk=4)
    assert first.next_fc.shape == (5, 4)
    second = KT.forward(net, x[:, 4:], y[:, 4:], fc0=first.next_fc, h0=first.h, c0=first.c, chunk=4)
    np.testing.assert_array_equal(np.concatenate([first.preds, second.preds], 1), whole.preds)


def test_imputation_gradient_is_part_of_the_graph():
    """A NaN input takes the last forecast: the head's gradient must see that path."""
    rng = np.random.default_rng(SEED)
    model = Model.random(["a"], hidden=4, cell="lstm", seed=SEED)
    x = rng.normal(size=(1, 6, 1)).astype(np.float32)
    y = rng.normal(size=(1, 6, 1)).astype(np.float32)
    net = KT.Net("lstm", model.arrays())
    _, _, g_full = KT.loss_and_grad(net, x, y)
    x[0, 3, 0] = np.nan
    _, _, g_nan = KT.loss_and_grad(net, x, y)
    _, _, ref = torch_loss_and_grads(model, x, y)
    assert rel_err(g_nan["head.weight"], g_full["head.weight"]) > 1e-3
    assert rel_err(g_nan["head.weight"], ref["head.weight"]) < REL_TOL


def test_forward_matches_loss_and_carries_state():
    """forward() over two halves with the carried state equals one pass."""
    rng = np.random.default_rng(SEED)
    model = Model.random(["a", "b"], hidden=8, layers=2, cell="gru", seed=SEED)
    net = KT.Net("gru", model.arrays())
    x, y = make_batch(model, 5, 10, rng, 0.1)
    whole = KT.forward(net, x, y, chunk=4)
    loss, n, _ = KT.loss_and_grad(net, x, y, chunk=4)
    assert whole.sse / whole.n_present == pytest.approx(loss, rel=1e-6)
    first = KT.forward(net, x[:, :4], y[:, :4], chunk=4)
    second = KT.forward(net, x[:, 4:], y[:, 4:], fc0=first.next_fc, h0=first.h, c0=first.c, chunk=4)
    np.testing.assert_array_equal(np.concatenate([first.preds, second.preds], 1), whole.preds)


def test_gradients_do_not_depend_on_thread_count():
    numba = require("numba")
    rng = np.random.default_rng(SEED)
    model = Model.random(["a", "b"], hidden=8, cell="lstm", seed=SEED)
    net = KT.Net("lstm", model.arrays())
    x, y = make_batch(model, 16, 8, rng, 0.1)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        _, _, g1 = KT.loss_and_grad(net, x, y, chunk=4)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        _, _, g2 = KT.loss_and_grad(net, x, y, chunk=4)
    finally:
        numba.set_num_threads(before)
    for name in g1:
        np.testing.assert_array_equal(g1[name], g2[name])


@pytest.mark.parametrize(("cell", "layers", "time_input"),
                         [("lstm", 1, False), ("lstm", 2, True), ("gru", 2, False)])  # fmt: skip
def test_gradients_match_finite_differences(cell, layers, time_input):
    """Second oracle, no PyTorch: float64 central differences of the numpy reference."""
    rng = np.random.default_rng(SEED)
    model = Model.random(["a", "b"], hidden=3, layers=layers, cell=cell, seed=SEED,
                         time_input=time_input)  # fmt: skip
    x, y = make_batch(model, 3, 5, rng, 0.2)
    loss, _, grads = KT.loss_and_grad(KT.Net(cell, model.arrays()), x, y, chunk=2)
    assert loss == pytest.approx(naive_train.forecast_loss(model, x, y), rel=1e-5)
    ref = naive_train.numeric_grad(model, x, y)
    errs = {name: rel_err(grads[name], ref[name]) for name in ref}
    assert max(errs.values()) < REL_TOL, f"seed {SEED}: {errs}"
