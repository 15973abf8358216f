"""Starting weights: PyTorch's random initialisation, or a start at the last value.

Why a last-value start: the model file has one normalisation for the whole
fleet, and the streams of a fleet often sit at levels an order of magnitude
apart, so in normalised units a stream moves by ~1% of the range from one
event to the next. A randomly initialised LSTM must first learn to copy its
input to that precision before it can improve on it, which takes many
epochs; until then it forecasts far worse than ``x̂_{t+1} = x_t``.

``last_value_start`` dedicates the first ``F`` hidden units of every layer
to carrying the current features through (gates saturated so no gradient
reaches them: LSTM input and output gates open, forget gate shut,
``c = g = tanh(a x)``; GRU update gate shut, ``h = n = tanh(a x)``), and the
head reads them back with weight ``1 / a`` (times the layers' small-signal
gain). The other units start random with zero head weights, so the model
starts as a last-value forecaster (up to the tanh curvature, a relative
error of ``~(a x)^2``) and training only has to learn the corrections.
Everything stays trainable; it is a start, not a constraint.

A model of changes (``Model.delta``, :func:`as_delta`) needs none of this: its
forecast is the last value plus the head's output, so a zero head is the last-value
forecaster exactly, and every unit is free to learn the corrections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from streamlstm.model import Model

GAIN = 0.02  # a: |a x| <= 0.1 for |x| <= 5 normalised units -> curvature error < 0.7%
_SATURATE = 40.0  # sigmoid(+-40) is exactly 1 / ~0 in float32: no gradient leaks in


# Not :func:`streamlstm.model.baselines.last_value_model`, on purpose: that one is an
# exact forecaster (gain 1e-4, hidden = features, no other units); this is a start
# for training, a full random model whose first units are rewired to pass the last
# value through with a gain large enough for gradients to move it.
def last_value_start(
    features: Sequence[str],
    hidden: int = 32,
    layers: int = 1,
    cell: str = "lstm",
    seed: int = 0,
    time_input: bool = False,
    gain: float = GAIN,
) -> Model:
    """A random model rewired to start as a last-value forecaster (see the module doc).

    Needs ``hidden >= len(features)``; otherwise returns the plain random model.
    """
    base = Model.random(features, hidden=hidden, layers=layers, cell=cell, seed=seed,
                        time_input=time_input)  # fmt: skip
    n_feat, hid = len(features), hidden
    if hid < n_feat:
        return base
    w_ih = [w.copy() for w in base.weight_ih]
    w_hh = [w.copy() for w in base.weight_hh]
    b_ih = [b.copy() for b in base.bias_ih]
    b_hh = [b.copy() for b in base.bias_hh]
    pass_units = np.arange(n_feat)
    for k in range(layers):
        g_in = np.float32(gain if k == 0 else 1.0)
        n_gates = 4 if cell == "lstm" else 3
        for gate in range(n_gates):
            rows = gate * hid + pass_units
            w_ih[k][rows, :] = 0.0
            w_hh[k][rows, :] = 0.0
            b_ih[k][rows] = 0.0
            b_hh[k][rows] = 0.0
        if cell == "lstm":
            b_ih[k][0 * hid + pass_units] = _SATURATE  # input gate open
            b_ih[k][1 * hid + pass_units] = -_SATURATE  # forget gate shut
            b_ih[k][3 * hid + pass_units] = _SATURATE  # output gate open
            w_ih[k][2 * hid + pass_units, pass_units] = g_in  # candidate g = tanh(a x)
        else:
            b_ih[k][1 * hid + pass_units] = -_SATURATE  # update gate shut: h' = n
            w_ih[k][2 * hid + pass_units, pass_units] = g_in  # n = tanh(a x)
    head_w = np.zeros_like(base.head_weight)
    head_w[pass_units, pass_units] = 1.0 / gain
    return replace(
        base,
        weight_ih=tuple(w_ih),
        weight_hh=tuple(w_hh),
        bias_ih=tuple(b_ih),
        bias_hh=tuple(b_hh),
        head_weight=head_w,
        head_bias=np.zeros_like(base.head_bias),
        provenance={"source": "last_value_start", "seed": seed, "gain": gain},
    )


def as_delta(model: Model, zero_head: bool = True) -> Model:
    """``model``'s network as a model of changes (``Model.delta``: the cell reads each
    feature's change, the forecast adds the last value); with ``zero_head`` its head
    outputs 0, so it starts as the exact last-value forecaster."""
    if not zero_head:
        return replace(model, delta=True)
    return replace(
        model,
        delta=True,
        head_weight=np.zeros_like(model.head_weight),
        head_bias=np.zeros_like(model.head_bias),
        provenance={**dict(model.provenance), "start": "last_value"},
    )
