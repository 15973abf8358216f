"""Reference forecasters expressed as ordinary model files, so they run through the same
detector, scorer and alert machine as a trained LSTM (SCORING.md: always compare with
a last-value forecaster through the same scorer).

:func:`last_value_model` is an LSTM whose forecast is the last value it saw: one
hidden unit per feature, input and output gates saturated open, forget gate
saturated shut, and a candidate ``g = tanh(a x)`` with a tiny gain ``a`` so
``tanh`` is linear to float32 precision; the head divides by ``a`` again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamlstm.model import Model

# Gain of the candidate: tanh(tanh(a x)) / a = x (1 - 2/3 (a x)^2 + ...), so at
# |x| <= 30 normalised units the relative error is below 1e-5, far under the
# one-step noise of any real series, while h = a x stays well inside float32.
_GAIN = 1e-4
_OPEN = 40.0  # sigmoid(40) == 1.0 in float32; sigmoid(-40) ~ 4e-18


def last_value_model(
    features: Sequence[str],
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
) -> Model:
    """An LSTM that forecasts x̂_{t+1} = x_t (per feature), with the given normalisation."""
    n = len(features)
    g = 4 * n
    w_ih = np.zeros((g, n), np.float32)
    w_hh = np.zeros((g, n), np.float32)
    b = np.zeros(g, np.float32)
    b[0:n] = _OPEN  # input gate open
    b[n : 2 * n] = -_OPEN  # forget gate shut: c_t = g_t
    b[3 * n : 4 * n] = _OPEN  # output gate open: h_t = tanh(c_t)
    w_ih[2 * n : 3 * n, :] = np.eye(n, dtype=np.float32) * _GAIN  # candidate g = tanh(a x)
    head_w = np.eye(n, dtype=np.float32) / np.float32(_GAIN)
    model = Model(
        cell="lstm",
        features=tuple(features),
        hidden=n,
        weight_ih=(w_ih,),
        weight_hh=(w_hh,),
        bias_ih=(b,),
        bias_hh=(np.zeros(g, np.float32),),
        head_weight=head_w,
        head_bias=np.zeros(n, np.float32),
        norm_mean=np.zeros(n, np.float32),
        norm_std=np.ones(n, np.float32),
        resid_scale=np.ones(n, np.float32),
        provenance={"source": "baseline", "forecaster": "last_value"},
    )
    if mean is not None and std is not None:
        model = model.with_normalisation(mean, std)
    return model


def fit_normalisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of (n, F) data, ignoring NaN; a constant feature gets std 1."""
    x = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(x, axis=0) if x.size else np.zeros(x.shape[1])
        std = np.nanstd(x, axis=0) if x.size else np.ones(x.shape[1])
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-12 * (1 + np.abs(mean))), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)
