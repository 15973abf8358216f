"""Slow, obviously correct references for the training kernels (plain numpy, float64).

The loss is computed with the one-event references of :mod:`tests.naive`
(NaN inputs imputed with the previous forecast, as the detector does), and its
gradient by central finite differences, one weight at a time: no shared code
and no shared derivation with the BPTT kernels.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from streamlstm.model import Model
from tests import naive


def forecast_loss(model: Model, x: np.ndarray, y: np.ndarray) -> float:
    """Mean squared one-step error over present targets; x (B, T, I), y (B, T, F)."""
    n_feat = model.n_features
    sse, n = 0.0, 0
    for b in range(x.shape[0]):
        h = np.zeros((model.layers, model.hidden))
        c = np.zeros((model.layers, model.hidden))
        prev = np.zeros(n_feat)
        for t in range(x.shape[1]):
            inp = x[b, t].astype(np.float64).copy()
            miss = np.isnan(inp[:n_feat])
            inp[:n_feat][miss] = prev[miss]
            if model.cell == "lstm":
                h, c = naive.lstm_step(model, inp, h, c)
            else:
                h = naive.gru_step(model, inp, h)
            prev = naive.head(model, h[-1])
            ok = ~np.isnan(y[b, t])
            sse += float(np.sum((prev[ok] - y[b, t][ok]) ** 2))
            n += int(ok.sum())
    return sse / max(n, 1)


def _with(model: Model, arrays: Mapping[str, np.ndarray]) -> Model:
    """The model with weights from ``arrays`` (PyTorch names), kept in float64."""
    layers = model.layers
    m = object.__new__(Model)
    m.__dict__.update(model.__dict__)
    for name, key in (("weight_ih", "weight_ih_l"), ("weight_hh", "weight_hh_l"),
                      ("bias_ih", "bias_ih_l"), ("bias_hh", "bias_hh_l")):  # fmt: skip
        object.__setattr__(m, name, tuple(arrays[f"{key}{k}"] for k in range(layers)))
    object.__setattr__(m, "head_weight", arrays["head.weight"])
    object.__setattr__(m, "head_bias", arrays["head.bias"])
    return m


def numeric_grad(
    model: Model, x: np.ndarray, y: np.ndarray, eps: float = 1e-6
) -> dict[str, np.ndarray]:
    """Central differences of :func:`forecast_loss` for every weight (float64)."""
    base = {k: v.astype(np.float64) for k, v in model.arrays().items()}
    grads = {}
    for name, arr in base.items():
        g = np.zeros_like(arr)
        flat, gflat = arr.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + eps
            up = forecast_loss(_with(model, base), x, y)
            flat[i] = keep - eps
            down = forecast_loss(_with(model, base), x, y)
            flat[i] = keep
            gflat[i] = (up - down) / (2 * eps)
        grads[name] = g
    return grads
