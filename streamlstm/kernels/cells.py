"""Recurrent cells and the forecast head over a *wave* of stream slots.

A wave is a set of events whose slots are all distinct, so their rows can be
advanced together as one matrix product. Every function here is row
independent: the value computed for row ``r`` depends only on row ``r`` of the
inputs and on the weights, and every output element is accumulated over ``k``
in the same order whatever the number of rows. That is what makes a batch of
1024 events bit-identical to 1024 calls with one event.

Weight layout (kernel side; :mod:`streamlstm.model` converts from PyTorch's):

- ``w_ih : (L, K, G) float32`` input weights, transposed, ``K = max(I, H)``;
  layer 0 uses the first ``I`` rows, layers > 0 the first ``H`` rows.
- ``w_hh : (L, H, G) float32`` recurrent weights, transposed.
- ``b_ih, b_hh : (L, G) float32``.
- ``G = 4H`` for the LSTM (gate order i, f, g, o), ``3H`` for the GRU
  (r, z, n), as in ``torch.nn.LSTM`` / ``torch.nn.GRU``.
- ``w_head : (H, F) float32`` and ``b_head : (F,) float32``: forecast of the
  next event's normalised features from the top layer's h.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamlstm._numba_config import NJIT


@njit(**NJIT)
def _affine_rows(a, m, k_in, w, bias, out):  # pragma: no cover - compiled
    """``out[r, :] = bias + a[r, :k_in] @ w[:k_in, :]`` for rows ``r < m``.

    a : (>=m, >=k_in) float32, w : (>=k_in, G) float32, bias : (G,) float32,
    out : (>=m, G) float32. Rows are processed four at a time so each weight
    row is loaded once per four events; each element is still summed over
    ``k`` in increasing order, so the blocking never changes a bit.
    """
    g = w.shape[1]
    r = 0
    while r + 4 <= m:
        for j in range(g):
            bj = bias[j]
            out[r, j] = bj
            out[r + 1, j] = bj
            out[r + 2, j] = bj
            out[r + 3, j] = bj
        for k in range(k_in):
            a0 = a[r, k]
            a1 = a[r + 1, k]
            a2 = a[r + 2, k]
            a3 = a[r + 3, k]
            for j in range(g):
                wk = w[k, j]
                out[r, j] += a0 * wk
                out[r + 1, j] += a1 * wk
                out[r + 2, j] += a2 * wk
                out[r + 3, j] += a3 * wk
        r += 4
    while r < m:
        for j in range(g):
            out[r, j] = bias[j]
        for k in range(k_in):
            a0 = a[r, k]
            for j in range(g):
                out[r, j] += a0 * w[k, j]
        r += 1


@njit(**NJIT)
def _sigmoid(x):  # pragma: no cover - compiled
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


@njit(**NJIT)
def _lstm_wave(x_rows, m, in_size, slots, h, c, w_ih, w_hh, b_ih, b_hh, hbuf, gi, gh):
    """Advance the LSTM state of ``m`` distinct slots by one event each.

    x_rows : (>=m, K) float32 layer-0 inputs (normalised, no NaN).
    slots : (>=m,) int64 slot of each row. h, c : (n_slots, L, H) float32,
    updated in place. hbuf : (>=m, K) float32 scratch that ends holding the
    top layer's new h; gi, gh : (>=m, 4H) float32 scratch.

    i = σ(W_i x + U_i h + b_i), f = σ(W_f x + U_f h + b_f),
    g = tanh(W_g x + U_g h + b_g), o = σ(W_o x + U_o h + b_o),
    c' = f * c + i * g, h' = o * tanh(c').
    """
    n_layers = h.shape[1]
    hid = h.shape[2]
    for layer in range(n_layers):
        src = x_rows if layer == 0 else hbuf
        k_in = in_size if layer == 0 else hid
        _affine_rows(src, m, k_in, w_ih[layer], b_ih[layer], gi)
        for r in range(m):
            s = slots[r]
            for q in range(hid):
                hbuf[r, q] = h[s, layer, q]
        # hbuf now holds h_{t-1} of this layer; its rows feed the recurrent product.
        _affine_rows(hbuf, m, hid, w_hh[layer], b_hh[layer], gh)
        for r in range(m):
            s = slots[r]
            for q in range(hid):
                ig = _sigmoid(gi[r, q] + gh[r, q])
                fg = _sigmoid(gi[r, hid + q] + gh[r, hid + q])
                gg = np.tanh(gi[r, 2 * hid + q] + gh[r, 2 * hid + q])
                og = _sigmoid(gi[r, 3 * hid + q] + gh[r, 3 * hid + q])
                cn = fg * c[s, layer, q] + ig * gg
                hn = og * np.tanh(cn)
                c[s, layer, q] = cn
                h[s, layer, q] = hn
                hbuf[r, q] = hn


@njit(**NJIT)
def _gru_wave(x_rows, m, in_size, slots, h, w_ih, w_hh, b_ih, b_hh, hbuf, gi, gh):
    """Advance the GRU state of ``m`` distinct slots by one event each.

    Same arrays as :func:`_lstm_wave` without ``c``; gi, gh : (>=m, 3H).

    r = σ(W_r x + b_ir + U_r h + b_hr), z = σ(W_z x + b_iz + U_z h + b_hz),
    n = tanh(W_n x + b_in + r * (U_n h + b_hn)), h' = (1 - z) * n + z * h.
    """
    n_layers = h.shape[1]
    hid = h.shape[2]
    one = np.float32(1.0)
    for layer in range(n_layers):
        src = x_rows if layer == 0 else hbuf
        k_in = in_size if layer == 0 else hid
        _affine_rows(src, m, k_in, w_ih[layer], b_ih[layer], gi)
        for r in range(m):
            s = slots[r]
            for q in range(hid):
                hbuf[r, q] = h[s, layer, q]
        _affine_rows(hbuf, m, hid, w_hh[layer], b_hh[layer], gh)
        for r in range(m):
            s = slots[r]
            for q in range(hid):
                rg = _sigmoid(gi[r, q] + gh[r, q])
                zg = _sigmoid(gi[r, hid + q] + gh[r, hid + q])
                ng = np.tanh(gi[r, 2 * hid + q] + rg * gh[r, 2 * hid + q])
                hn = (one - zg) * ng + zg * h[s, layer, q]
                h[s, layer, q] = hn
                hbuf[r, q] = hn


@njit(**NJIT)
def _head_rows(hbuf, m, hid, w_head, b_head, out):  # pragma: no cover - compiled
    """Forecast ``out[r, :] = b_head + hbuf[r, :H] @ w_head`` for rows ``r < m``."""
    _affine_rows(hbuf, m, hid, w_head, b_head, out)


@njit(**NJIT)
def _phi(z):  # pragma: no cover - compiled
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
