"""Training kernels: forward over windows keeping activations, and BPTT.

A minibatch is ``B`` sequences of ``T`` steps. At step ``t`` the cell reads
the layer-0 input ``x[b, t]`` and the head forecasts the next event:
``p[b, t] = head(h_top[b, t])``, compared with the target ``y[b, t]``
(normally ``x[b, t + 1, :F]``). The loss is the mean squared error over the
present (non-NaN) targets, in normalised units::

    loss = sum_{b,t,f present} (p[b,t,f] - y[b,t,f])^2 / n_present

Missing inputs are imputed as the detector does at scoring time: a NaN
feature of ``x[b, t]`` is replaced by the forecast made at the previous step,
``p[b, t - 1, f]`` (``fc0[b, f]`` at ``t = 0``). The imputation is part of the
graph: its gradient flows back into ``p[b, t - 1]`` (a constant ``fc0`` gets
none). Columns ``F..I-1`` (the optional time input) are never NaN.

Cells (PyTorch's equations, gate order as in ``nn.LSTM`` / ``nn.GRU``):

- LSTM: ``a = W_ih x + b_ih + W_hh h + b_hh``; ``i, f, o = σ(a_i, a_f, a_o)``,
  ``g = tanh(a_g)``, ``c' = f c + i g``, ``h' = o tanh(c')``. Backward:
  ``dc = dc' + dh' o (1 - tanh²c')``, ``da_i = dc g i(1-i)``,
  ``da_f = dc c f(1-f)``, ``da_g = dc i (1-g²)``,
  ``da_o = dh' tanh(c') o(1-o)``, ``dc_prev = dc f``.
- GRU: ``r, z = σ(gi_{r,z} + gh_{r,z})``, ``n = tanh(gi_n + r gh_n)``,
  ``h' = (1 - z) n + z h``. Backward: ``dn = dh'(1-z)``, ``dz = dh'(h - n)``,
  ``dgi_n = dn(1-n²)``, ``dgh_n = dgi_n r``, ``da_r = dgi_n gh_n r(1-r)``,
  ``da_z = dz z(1-z)``, ``dh_prev = dh' z + W_hh^T dgh``.

Weight arguments come in both layouts: the kernels' ``(K, G)`` (from
:meth:`streamlstm.model.Model.kernel_weights`) for the forward products and
PyTorch's ``(G, K)`` for the backward ones, so every inner loop runs over a
contiguous axis without a reduction (``fastmath`` is off: LLVM may not
re-associate sums, but it vectorises ``y += a * w``). Weight gradients are
accumulated in the kernels' layout (inner loop over the G gate columns) and
returned in PyTorch's.

Parallelism: the ``B`` sequences are cut into chunks of ``chunk`` rows (a
fixed size, not one per thread, so the summation order and hence the
gradients do not depend on the number of threads). Chunks run in a
``prange``; each writes only its own rows of the activation arrays and its
own slice ``[ci]`` of the per-chunk gradient buffers, which the caller sums
in chunk order.

Length: forward with saved activations and BPTT for two cells and stacked layers must
mirror each other exactly; splitting forward from backward would separate the two halves
of each gradient.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from streamlstm.kernels.config import NJIT_TRAIN, NJIT_TRAIN_PARALLEL
from streamlstm.kernels.layout import CELL_GRU, CELL_LSTM, DELTA_CLIP

# Training keeps its own gate functions, on purpose: the scoring cells
# (:mod:`streamlstm.kernels.cells`) use Cephes ``expf`` in register tiles, one
# event at a time; the BPTT chunks need a tanh that LLVM vectorises across a
# whole (time x hidden) block, which a polynomial-then-divide form gives. Both
# are within ~3 ulp of float32 tanh/sigmoid (tests/unit/kernels/test_kernel_blocking.py
# checks the scoring ones, test_train_grad.py the gradients), so a model
# trained with one and scored with the other differs by ~1e-7: far below
# float32 parity tolerance with torch.
#
# Rational minimax tanh (Eigen's generic_fast_tanh_float): max relative error 3.4e-7
# (~3 ulp) on float32, and pure arithmetic, so LLVM vectorises the gate loops. libm's
# expf/tanhf are scalar calls that cost more than all the matrix products at H <= 64.
_TANH_CLAMP = np.float32(7.90531110763549805)  # tanh is 1.0f beyond


@njit(**NJIT_TRAIN)
def _tanh(v):  # pragma: no cover - compiled
    """tanh(v) for float32 v, to ~3 ulp (see above)."""
    x = min(max(v, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return x * p / q


@njit(**NJIT_TRAIN)
def _sig(v):  # pragma: no cover - compiled
    """Logistic sigmoid as 0.5 + 0.5 tanh(v / 2) (absolute error ~2e-7)."""
    half = np.float32(0.5)
    return half + half * _tanh(half * v)


@njit(**NJIT_TRAIN)
def _affine_range(a, r0, m, k_in, w, bias, out):  # pragma: no cover - compiled
    """``out[r, :] = bias + a[r, :k_in] @ w[:k_in, :]`` for ``r0 <= r < r0 + m``.

    a : (B, >=k_in) float32, w : (>=k_in, G) float32, bias : (G,), out : (B, G).
    Blocks of 4 rows x 4 k: each loaded weight feeds four rows and each
    loaded output element takes four products before it is stored again
    (memory traffic, not arithmetic, bounds these small products). Every
    element is still summed over ``k`` in increasing order.
    """
    g = w.shape[1]
    r = r0
    end = r0 + m
    while r < end:
        nr = min(4, end - r)
        for q in range(nr):
            for j in range(g):
                out[r + q, j] = bias[j]
        if nr == 4:
            k = 0
            while k + 4 <= k_in:
                a00, a01, a02, a03 = a[r, k], a[r, k + 1], a[r, k + 2], a[r, k + 3]
                a10, a11, a12, a13 = a[r + 1, k], a[r + 1, k + 1], a[r + 1, k + 2], a[r + 1, k + 3]
                a20, a21, a22, a23 = a[r + 2, k], a[r + 2, k + 1], a[r + 2, k + 2], a[r + 2, k + 3]
                a30, a31, a32, a33 = a[r + 3, k], a[r + 3, k + 1], a[r + 3, k + 2], a[r + 3, k + 3]
                for j in range(g):
                    w0 = w[k, j]
                    w1 = w[k + 1, j]
                    w2 = w[k + 2, j]
                    w3 = w[k + 3, j]
                    o = out[r, j] + a00 * w0
                    out[r, j] = ((o + a01 * w1) + a02 * w2) + a03 * w3
                    o = out[r + 1, j] + a10 * w0
                    out[r + 1, j] = ((o + a11 * w1) + a12 * w2) + a13 * w3
                    o = out[r + 2, j] + a20 * w0
                    out[r + 2, j] = ((o + a21 * w1) + a22 * w2) + a23 * w3
                    o = out[r + 3, j] + a30 * w0
                    out[r + 3, j] = ((o + a31 * w1) + a32 * w2) + a33 * w3
                k += 4
            while k < k_in:
                a0, a1, a2, a3 = a[r, k], a[r + 1, k], a[r + 2, k], a[r + 3, k]
                for j in range(g):
                    wk = w[k, j]
                    out[r, j] += a0 * wk
                    out[r + 1, j] += a1 * wk
                    out[r + 2, j] += a2 * wk
                    out[r + 3, j] += a3 * wk
                k += 1
        else:
            for q in range(nr):
                for k in range(k_in):
                    a0 = a[r + q, k]
                    for j in range(g):
                        out[r + q, j] += a0 * w[k, j]
        r += nr


@njit(**NJIT_TRAIN)
def _matT_range(dg, r0, m, n_g, wp, k_out, out, accumulate):  # pragma: no cover - compiled
    """``out[r, :k_out] (+)= dg[r, :n_g] @ wp[:n_g, :k_out]`` for rows ``r0..r0+m-1``.

    dg : (B, >=n_g) float32, wp : (>=n_g, >=k_out) float32 (PyTorch layout, so
    this is ``W^T dg``), out : (B, >=k_out) float32. Blocks of 4 rows x 4 j,
    as in :func:`_affine_range`.
    """
    r = r0
    end = r0 + m
    while r < end:
        nr = min(4, end - r)
        if not accumulate:
            for q in range(nr):
                for k in range(k_out):
                    out[r + q, k] = 0.0
        if nr == 4:
            j = 0
            while j + 4 <= n_g:
                d00, d01, d02, d03 = dg[r, j], dg[r, j + 1], dg[r, j + 2], dg[r, j + 3]
                d10, d11, d12, d13 = (
                    dg[r + 1, j],
                    dg[r + 1, j + 1],
                    dg[r + 1, j + 2],
                    dg[r + 1, j + 3],
                )
                d20, d21, d22, d23 = (
                    dg[r + 2, j],
                    dg[r + 2, j + 1],
                    dg[r + 2, j + 2],
                    dg[r + 2, j + 3],
                )
                d30, d31, d32, d33 = (
                    dg[r + 3, j],
                    dg[r + 3, j + 1],
                    dg[r + 3, j + 2],
                    dg[r + 3, j + 3],
                )
                for k in range(k_out):
                    w0 = wp[j, k]
                    w1 = wp[j + 1, k]
                    w2 = wp[j + 2, k]
                    w3 = wp[j + 3, k]
                    o = out[r, k] + d00 * w0
                    out[r, k] = ((o + d01 * w1) + d02 * w2) + d03 * w3
                    o = out[r + 1, k] + d10 * w0
                    out[r + 1, k] = ((o + d11 * w1) + d12 * w2) + d13 * w3
                    o = out[r + 2, k] + d20 * w0
                    out[r + 2, k] = ((o + d21 * w1) + d22 * w2) + d23 * w3
                    o = out[r + 3, k] + d30 * w0
                    out[r + 3, k] = ((o + d31 * w1) + d32 * w2) + d33 * w3
                j += 4
            while j < n_g:
                d0, d1, d2, d3 = dg[r, j], dg[r + 1, j], dg[r + 2, j], dg[r + 3, j]
                for k in range(k_out):
                    wk = wp[j, k]
                    out[r, k] += d0 * wk
                    out[r + 1, k] += d1 * wk
                    out[r + 2, k] += d2 * wk
                    out[r + 3, k] += d3 * wk
                j += 1
        else:
            for q in range(nr):
                for j in range(n_g):
                    d0 = dg[r + q, j]
                    for k in range(k_out):
                        out[r + q, k] += d0 * wp[j, k]
        r += nr


@njit(**NJIT_TRAIN)
def _outer_acc(dg, r0, m, n_g, a, k_in, gw):  # pragma: no cover - compiled
    """``gw[j, :k_in] += sum_r dg[r, j] * a[r, :k_in]`` over rows ``r0..r0+m-1``.

    dg : (B, >=n_g), a : (B, >=k_in), gw : (>=n_g, >=k_in) float32.
    """
    for j in range(n_g):
        r = r0
        end = r0 + m
        while r + 4 <= end:
            d0 = dg[r, j]
            d1 = dg[r + 1, j]
            d2 = dg[r + 2, j]
            d3 = dg[r + 3, j]
            for k in range(k_in):
                gw[j, k] += d0 * a[r, k] + d1 * a[r + 1, k] + d2 * a[r + 2, k] + d3 * a[r + 3, k]
            r += 4
        while r < end:
            d0 = dg[r, j]
            for k in range(k_in):
                gw[j, k] += d0 * a[r, k]
            r += 1


@njit(**NJIT_TRAIN)
def _outer_acc_kg(dg, r0, m, n_g, a, k_in, gk):  # pragma: no cover - compiled
    """``gk[k, :n_g] += sum_r a[r, k] * dg[r, :n_g]`` over rows ``r0..r0+m-1``.

    The kernel-layout twin of :func:`_outer_acc` (gk : (>=k_in, >=n_g)): the
    inner loop runs over the G gate columns, long and contiguous even when
    ``k_in`` is a handful of input features. Blocks of 4 k x 4 rows: each
    loaded gradient row feeds four ``k`` and each ``gk`` element takes four
    products per load and store.
    """
    r = r0
    end = r0 + m
    while r < end:
        nr = min(4, end - r)
        if nr == 4:
            k = 0
            while k + 4 <= k_in:
                a00, a01, a02, a03 = a[r, k], a[r + 1, k], a[r + 2, k], a[r + 3, k]
                a10, a11, a12, a13 = a[r, k + 1], a[r + 1, k + 1], a[r + 2, k + 1], a[r + 3, k + 1]
                a20, a21, a22, a23 = a[r, k + 2], a[r + 1, k + 2], a[r + 2, k + 2], a[r + 3, k + 2]
                a30, a31, a32, a33 = a[r, k + 3], a[r + 1, k + 3], a[r + 2, k + 3], a[r + 3, k + 3]
                for j in range(n_g):
                    d0 = dg[r, j]
                    d1 = dg[r + 1, j]
                    d2 = dg[r + 2, j]
                    d3 = dg[r + 3, j]
                    gk[k, j] += a00 * d0 + a01 * d1 + a02 * d2 + a03 * d3
                    gk[k + 1, j] += a10 * d0 + a11 * d1 + a12 * d2 + a13 * d3
                    gk[k + 2, j] += a20 * d0 + a21 * d1 + a22 * d2 + a23 * d3
                    gk[k + 3, j] += a30 * d0 + a31 * d1 + a32 * d2 + a33 * d3
                k += 4
            while k < k_in:
                a0, a1, a2, a3 = a[r, k], a[r + 1, k], a[r + 2, k], a[r + 3, k]
                for j in range(n_g):
                    gk[k, j] += (
                        a0 * dg[r, j] + a1 * dg[r + 1, j] + a2 * dg[r + 2, j] + a3 * dg[r + 3, j]
                    )
                k += 1
        else:
            for q in range(nr):
                for k in range(k_in):
                    a0 = a[r + q, k]
                    for j in range(n_g):
                        gk[k, j] += a0 * dg[r + q, j]
        r += nr


@njit(**NJIT_TRAIN)
def _cell_inputs(delta, r0, m, t, x, fc0, preds, xs, xu, n_feat, in_size):  # pragma: no cover
    """Step ``t``'s cell inputs of rows ``r0..r0+m-1`` into xs: each feature's value
    (a missing one imputed with the forecast), or with ``delta`` its clipped change
    since the previous value (the values kept in xu), then the time column."""
    for r in range(r0, r0 + m):
        for f in range(n_feat):
            v = x[r, t, f]
            if math.isnan(v):
                v = fc0[r, f] if t == 0 else preds[t - 1, r, f]
            if delta:
                xu[t, r, f] = v
                p = xu[t - 1, r, f] if t > 0 else fc0[r, n_feat + f]
                dv = v - p if not math.isnan(p) else np.float32(0.0)
                v = min(max(dv, np.float32(-DELTA_CLIP)), np.float32(DELTA_CLIP))
            xs[t, r, f] = v
        for f in range(n_feat, in_size):
            xs[t, r, f] = x[r, t, f]


@njit(**NJIT_TRAIN)
def _forward_chunk(
    cell, delta, r0, m, x, y, fc0, n_feat, in_size,
    w_ih, w_hh, b_ih, b_hh, w_head, b_head,
    xs, xu, hs, cs, tcs, acts, preds, gi, gh,
):  # fmt: skip  # pragma: no cover - compiled
    """Forward of rows ``r0..r0+m-1`` over all ``T`` steps; returns their SSE.

    x : (B, T, I) float32 inputs (NaN = missing feature), y : (B, T, F)
    float32 targets (NaN = absent), fc0 : (B, F) forecast imputed at t = 0
    (a model of changes, ``delta``: (B, 2F), then each feature's value before t = 0,
    NaN for none: the first change is 0). Kernel-layout weights (see module doc).
    Activations written: xs : (T, B, I) the cell's inputs (imputed; with ``delta``
    the clipped changes of xu : (T, B, F), the imputed values, which the forecast
    adds); hs, cs : (T + 1, L, B, H) states, ``[0]`` the initial state (set by the
    caller); tcs : (T, L, B, H) tanh of
    cs[t + 1] (LSTM); acts : (T, L, B, 4H) gate
    activations (LSTM i, f, g, o; GRU r, z, n, gh_n); preds : (T, B, F).
    gi, gh : (B, G) scratch.
    """
    n_steps = x.shape[1]
    n_layers = hs.shape[1]
    hid = hs.shape[3]
    one = np.float32(1.0)
    sse = 0.0
    for t in range(n_steps):
        _cell_inputs(delta, r0, m, t, x, fc0, preds, xs, xu, n_feat, in_size)
        for layer in range(n_layers):
            if layer == 0:
                _affine_range(xs[t], r0, m, in_size, w_ih[0], b_ih[0], gi)
            else:
                _affine_range(hs[t + 1, layer - 1], r0, m, hid, w_ih[layer], b_ih[layer], gi)
            _affine_range(hs[t, layer], r0, m, hid, w_hh[layer], b_hh[layer], gh)
            a = acts[t, layer]
            hp = hs[t, layer]
            hn = hs[t + 1, layer]
            if cell == CELL_LSTM:
                cp = cs[t, layer]
                cn = cs[t + 1, layer]
                tcn = tcs[t, layer]
                for r in range(r0, r0 + m):
                    for q in range(hid):
                        ig = _sig(gi[r, q] + gh[r, q])
                        fg = _sig(gi[r, hid + q] + gh[r, hid + q])
                        gg = _tanh(gi[r, 2 * hid + q] + gh[r, 2 * hid + q])
                        og = _sig(gi[r, 3 * hid + q] + gh[r, 3 * hid + q])
                        cv = fg * cp[r, q] + ig * gg
                        tc = _tanh(cv)
                        a[r, q] = ig
                        a[r, hid + q] = fg
                        a[r, 2 * hid + q] = gg
                        a[r, 3 * hid + q] = og
                        cn[r, q] = cv
                        tcn[r, q] = tc
                        hn[r, q] = og * tc
            else:
                for r in range(r0, r0 + m):
                    for q in range(hid):
                        rg = _sig(gi[r, q] + gh[r, q])
                        zg = _sig(gi[r, hid + q] + gh[r, hid + q])
                        ghn = gh[r, 2 * hid + q]
                        ng = _tanh(gi[r, 2 * hid + q] + rg * ghn)
                        a[r, q] = rg
                        a[r, hid + q] = zg
                        a[r, 2 * hid + q] = ng
                        a[r, 3 * hid + q] = ghn
                        hn[r, q] = (one - zg) * ng + zg * hp[r, q]
        _affine_range(hs[t + 1, n_layers - 1], r0, m, hid, w_head, b_head, preds[t])
        if delta:
            for r in range(r0, r0 + m):
                for f in range(n_feat):
                    preds[t, r, f] += xu[t, r, f]
        for r in range(r0, r0 + m):
            for f in range(n_feat):
                yv = y[r, t, f]
                if not math.isnan(yv):
                    d = np.float64(preds[t, r, f]) - np.float64(yv)
                    sse += d * d
    return sse


@njit(**NJIT_TRAIN)
def _backward_chunk(
    cell, delta, r0, m, x, y, inv_n, n_feat, in_size,
    w_ih_p, w_hh_p, w_head_p,
    xs, hs, cs, tcs, acts, preds,
    dh, dc, dgi, dgh, dtop, dpred, dimp, dnext,
    gw_ih, gw_hh, gb_ih, gb_hh, gw_head, gb_head,
):  # fmt: skip  # pragma: no cover - compiled
    """BPTT of rows ``r0..r0+m-1`` after :func:`_forward_chunk`; adds into the grads.

    Why one function of ~115 lines: the backward step of a layer mirrors
    :func:`_forward_chunk` line for line (LSTM and GRU gates, the head, the
    imputed inputs); kept side by side the two can be checked against each
    other, and the gradient test against PyTorch covers both cells.

    PyTorch-layout weights w_ih_p : (L, G, K), w_hh_p : (L, G, H),
    w_head_p : (F, H). Scratch (only rows r0..r0+m-1 touched): dh, dc :
    (L, B, H) gradient carried to the previous step; dgi, dgh : (B, G);
    dtop : (B, K) gradient w.r.t. the current layer's output; dpred, dimp :
    (B, F); dnext : (B, F) (``delta``) the gradient of the cell's next input, a change.
    Gradients (this chunk's slice, accumulated), the recurrent ones
    in the kernels' layout: gw_ih (L, K, G), gw_hh (L, H, G), gb_ih, gb_hh
    (L, G); the head's in PyTorch's: gw_head (F, H), gb_head (F,).
    """
    n_steps = x.shape[1]
    n_layers = hs.shape[1]
    hid = hs.shape[3]
    n_gate = w_hh_p.shape[1]
    one = np.float32(1.0)
    two_n = np.float32(2.0 * inv_n)
    for r in range(r0, r0 + m):
        for layer in range(n_layers):
            for q in range(hid):
                dh[layer, r, q] = 0.0
                dc[layer, r, q] = 0.0
        for f in range(n_feat):
            dimp[r, f] = 0.0
            dnext[r, f] = 0.0
    for t in range(n_steps - 1, -1, -1):
        for r in range(r0, r0 + m):
            for f in range(n_feat):
                d = dimp[r, f]
                yv = y[r, t, f]
                if not math.isnan(yv):
                    d += two_n * (preds[t, r, f] - yv)
                dpred[r, f] = d
                gb_head[f] += d
        h_top = hs[t + 1, n_layers - 1]
        _outer_acc(dpred, r0, m, n_feat, h_top, hid, gw_head)
        _matT_range(dpred, r0, m, n_feat, w_head_p, hid, dtop, False)
        for layer in range(n_layers - 1, -1, -1):
            a = acts[t, layer]
            hp = hs[t, layer]
            dhl = dh[layer]
            dcl = dc[layer]
            if cell == CELL_LSTM:
                cp = cs[t, layer]
                tcn = tcs[t, layer]
                for r in range(r0, r0 + m):
                    for q in range(hid):
                        dhq = dhl[r, q] + dtop[r, q]
                        ig = a[r, q]
                        fg = a[r, hid + q]
                        gg = a[r, 2 * hid + q]
                        og = a[r, 3 * hid + q]
                        tc = tcn[r, q]
                        dcq = dcl[r, q] + dhq * og * (one - tc * tc)
                        dai = dcq * gg * ig * (one - ig)
                        daf = dcq * cp[r, q] * fg * (one - fg)
                        dag = dcq * ig * (one - gg * gg)
                        dao = dhq * tc * og * (one - og)
                        dcl[r, q] = dcq * fg
                        dgi[r, q] = dai
                        dgi[r, hid + q] = daf
                        dgi[r, 2 * hid + q] = dag
                        dgi[r, 3 * hid + q] = dao
                        dgh[r, q] = dai
                        dgh[r, hid + q] = daf
                        dgh[r, 2 * hid + q] = dag
                        dgh[r, 3 * hid + q] = dao
                        dhl[r, q] = 0.0
            else:
                for r in range(r0, r0 + m):
                    for q in range(hid):
                        dhq = dhl[r, q] + dtop[r, q]
                        rg = a[r, q]
                        zg = a[r, hid + q]
                        ng = a[r, 2 * hid + q]
                        ghn = a[r, 3 * hid + q]
                        dan = dhq * (one - zg) * (one - ng * ng)
                        dar = dan * ghn * rg * (one - rg)
                        daz = dhq * (hp[r, q] - ng) * zg * (one - zg)
                        dgi[r, q] = dar
                        dgi[r, hid + q] = daz
                        dgi[r, 2 * hid + q] = dan
                        dgh[r, q] = dar
                        dgh[r, hid + q] = daz
                        dgh[r, 2 * hid + q] = dan * rg
                        dhl[r, q] = dhq * zg
            gbi = gb_ih[layer]
            gbh = gb_hh[layer]
            for r in range(r0, r0 + m):
                for j in range(n_gate):
                    gbi[j] += dgi[r, j]
                    gbh[j] += dgh[r, j]
            if layer == 0:
                _outer_acc_kg(dgi, r0, m, n_gate, xs[t], in_size, gw_ih[0])
            else:
                _outer_acc_kg(dgi, r0, m, n_gate, hs[t + 1, layer - 1], hid, gw_ih[layer])
            _outer_acc_kg(dgh, r0, m, n_gate, hp, hid, gw_hh[layer])
            # dh_prev = (GRU: dh' z) + W_hh^T dgh, carried to step t - 1.
            _matT_range(dgh, r0, m, n_gate, w_hh_p[layer], hid, dhl, True)
            if layer > 0:
                _matT_range(dgi, r0, m, n_gate, w_ih_p[layer], hid, dtop, False)
        # Imputed inputs at step t were preds[t - 1]: route their gradient there.
        wp0 = w_ih_p[0]
        if not delta:
            for r in range(r0, r0 + m):
                for f in range(n_feat):
                    d = np.float32(0.0)
                    if t > 0 and math.isnan(x[r, t, f]):
                        for j in range(n_gate):
                            d += dgi[r, j] * wp0[j, f]
                    dimp[r, f] = d
        else:
            # A model of changes: value v_t enters the change at t (+, unless clipped),
            # the change at t + 1 (-) and the forecast made at t (dpred, which already
            # holds what flows back into it).
            for r in range(r0, r0 + m):
                for f in range(n_feat):
                    g = np.float32(0.0)
                    if abs(xs[t, r, f]) < DELTA_CLIP:
                        for j in range(n_gate):
                            g += dgi[r, j] * wp0[j, f]
                    d = np.float32(0.0)
                    if t > 0 and math.isnan(x[r, t, f]):
                        d = g - dnext[r, f] + dpred[r, f]
                    dimp[r, f] = d
                    dnext[r, f] = g


@njit(**NJIT_TRAIN_PARALLEL)
def _train_batch(
    cell, delta, chunk, x, y, fc0, inv_n, n_feat, in_size,
    w_ih, w_hh, b_ih, b_hh, w_head, b_head,
    w_ih_p, w_hh_p, w_head_p,
    xs, xu, hs, cs, tcs, acts, preds, gi, gh,
    dh, dc, dgi, dgh, dtop, dpred, dimp, dnext,
    gw_ih, gw_hh, gb_ih, gb_hh, gw_head, gb_head, sse,
):  # fmt: skip  # pragma: no cover - compiled
    """Forward + BPTT of one minibatch, chunks of ``chunk`` rows in parallel.

    Shapes as in :func:`_forward_chunk` / :func:`_backward_chunk`; the
    gradient buffers carry a leading chunk axis (n_chunks, ...) and are
    overwritten; sse : (n_chunks,) float64 per-chunk sum of squared errors.
    hs[0] and cs[0] must hold the initial state.
    """
    n_rows = x.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    # Each iteration touches only rows [r0, r0 + m) of the shared activation and
    # scratch arrays and only slice [ci] of the gradient buffers and of sse.
    for ci in prange(n_chunks):
        r0 = ci * chunk
        m = min(chunk, n_rows - r0)
        gw_ih[ci] = 0.0
        gw_hh[ci] = 0.0
        gb_ih[ci] = 0.0
        gb_hh[ci] = 0.0
        gw_head[ci] = 0.0
        gb_head[ci] = 0.0
        sse[ci] = _forward_chunk(
            cell, delta, r0, m, x, y, fc0, n_feat, in_size,
            w_ih, w_hh, b_ih, b_hh, w_head, b_head,
            xs, xu, hs, cs, tcs, acts, preds, gi, gh,
        )  # fmt: skip
        _backward_chunk(
            cell, delta, r0, m, x, y, inv_n, n_feat, in_size,
            w_ih_p, w_hh_p, w_head_p,
            xs, hs, cs, tcs, acts, preds,
            dh, dc, dgi, dgh, dtop, dpred, dimp, dnext,
            gw_ih[ci], gw_hh[ci], gb_ih[ci], gb_hh[ci], gw_head[ci], gb_head[ci],
        )  # fmt: skip


@njit(**NJIT_TRAIN_PARALLEL)
def _forward_batch(
    cell, delta, chunk, x, y, fc0, n_feat, in_size,
    w_ih, w_hh, b_ih, b_hh, w_head, b_head,
    xs, xu, hs, cs, tcs, acts, preds, gi, gh, sse,
):  # fmt: skip  # pragma: no cover - compiled
    """Forward only (validation, residuals); same arrays as :func:`_train_batch`.

    The final state is left in hs[T], cs[T] so a caller can carry it into the
    next stretch of time. Each prange iteration writes only its own rows and
    sse[ci].
    """
    n_rows = x.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        r0 = ci * chunk
        m = min(chunk, n_rows - r0)
        sse[ci] = _forward_chunk(
            cell, delta, r0, m, x, y, fc0, n_feat, in_size,
            w_ih, w_hh, b_ih, b_hh, w_head, b_head,
            xs, xu, hs, cs, tcs, acts, preds, gi, gh,
        )  # fmt: skip


# -- public, typed wrappers ----------------------------------------------------


class Workspace:
    """Activation, scratch and gradient buffers for minibatches of one shape.

    Reused across calls (re-allocated only when the shape changes), so a
    training loop allocates nothing per minibatch but the gradient sums.
    """

    def __init__(self) -> None:
        self.key: tuple[int, ...] | None = None
        self.arrays: dict[str, np.ndarray] = {}

    def get(
        self, n_rows: int, n_steps: int, n_layers: int, hid: int, n_gate: int,
        n_feat: int, in_size: int, chunk: int, grads: bool,
    ) -> dict[str, np.ndarray]:  # fmt: skip
        key = (n_rows, n_steps, n_layers, hid, n_gate, n_feat, in_size, chunk, int(grads))
        if key == self.key:
            return self.arrays
        k_w = max(in_size, hid)
        n_chunks = (n_rows + chunk - 1) // chunk
        f32 = np.float32
        a: dict[str, np.ndarray] = {
            "xs": np.zeros((n_steps, n_rows, in_size), f32),
            "xu": np.zeros((n_steps, n_rows, n_feat), f32),
            "hs": np.zeros((n_steps + 1, n_layers, n_rows, hid), f32),
            "cs": np.zeros((n_steps + 1, n_layers, n_rows, hid), f32),
            "tcs": np.zeros((n_steps, n_layers, n_rows, hid), f32),
            "acts": np.zeros((n_steps, n_layers, n_rows, 4 * hid), f32),
            "preds": np.zeros((n_steps, n_rows, n_feat), f32),
            "gi": np.zeros((n_rows, n_gate), f32),
            "gh": np.zeros((n_rows, n_gate), f32),
            "sse": np.zeros(n_chunks, np.float64),
        }
        if grads:
            a.update(
                dh=np.zeros((n_layers, n_rows, hid), f32),
                dc=np.zeros((n_layers, n_rows, hid), f32),
                dgi=np.zeros((n_rows, n_gate), f32),
                dgh=np.zeros((n_rows, n_gate), f32),
                dtop=np.zeros((n_rows, k_w), f32),
                dpred=np.zeros((n_rows, n_feat), f32),
                dimp=np.zeros((n_rows, n_feat), f32),
                dnext=np.zeros((n_rows, n_feat), f32),
                gw_ih=np.zeros((n_chunks, n_layers, k_w, n_gate), f32),
                gw_hh=np.zeros((n_chunks, n_layers, hid, n_gate), f32),
                gb_ih=np.zeros((n_chunks, n_layers, n_gate), f32),
                gb_hh=np.zeros((n_chunks, n_layers, n_gate), f32),
                gw_head=np.zeros((n_chunks, n_feat, hid), f32),
                gb_head=np.zeros((n_chunks, n_feat), f32),
            )
        self.key, self.arrays = key, a
        return a


class Net:
    """A parameter set in PyTorch naming (``Model.arrays()``) plus its shapes.

    ``params`` maps ``weight_ih_l{k}`` (G, I_k), ``weight_hh_l{k}`` (G, H),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (G,), ``head.weight`` (F, H),
    ``head.bias`` (F,) to float32 arrays; the trainer updates them in place.
    """

    def __init__(self, cell: str, params: dict[str, np.ndarray], delta: bool = False) -> None:
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell is {cell!r}, expected 'lstm' or 'gru'")
        self.cell = cell
        self.delta = delta
        self.params = {k: np.ascontiguousarray(v, np.float32) for k, v in params.items()}
        self.n_layers = sum(1 for k in self.params if k.startswith("weight_ih_l"))
        self.hid = self.params["weight_hh_l0"].shape[1]
        self.n_gate = self.params["weight_hh_l0"].shape[0]
        self.in_size = self.params["weight_ih_l0"].shape[1]
        self.n_feat = self.params["head.weight"].shape[0]
        expect_g = (4 if cell == "lstm" else 3) * self.hid
        if self.n_gate != expect_g:
            raise ValueError(f"weight_hh_l0 has {self.n_gate} rows, expected {expect_g}")
        if self.n_feat > self.in_size:
            raise ValueError("the head forecasts more features than the cell reads")

    def names(self) -> list[str]:
        return list(self.params)

    def layouts(self) -> tuple[np.ndarray, ...]:
        """Kernel (K, G) and PyTorch (G, K) layouts of the current parameters."""
        p, n_layers, hid, g = self.params, self.n_layers, self.hid, self.n_gate
        k_w = max(self.in_size, hid)
        w_ih_p = np.zeros((n_layers, g, k_w), np.float32)
        for k in range(n_layers):
            w = p[f"weight_ih_l{k}"]
            w_ih_p[k, :, : w.shape[1]] = w
        w_hh_p = np.ascontiguousarray(np.stack([p[f"weight_hh_l{k}"] for k in range(n_layers)]))
        w_ih = np.ascontiguousarray(w_ih_p.transpose(0, 2, 1))
        w_hh = np.ascontiguousarray(w_hh_p.transpose(0, 2, 1))
        b_ih = np.ascontiguousarray(np.stack([p[f"bias_ih_l{k}"] for k in range(n_layers)]))
        b_hh = np.ascontiguousarray(np.stack([p[f"bias_hh_l{k}"] for k in range(n_layers)]))
        w_head_p = p["head.weight"]
        w_head = np.ascontiguousarray(w_head_p.T)
        return w_ih, w_hh, b_ih, b_hh, w_head, p["head.bias"], w_ih_p, w_hh_p, w_head_p


def _check_batch(net: Net, x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim != 3 or x.shape[2] != net.in_size:
        raise ValueError(f"x has shape {x.shape}, expected (B, T, {net.in_size})")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x has shape {x.shape}: need at least one sequence and one step")
    if y is None:
        y = np.full((x.shape[0], x.shape[1], net.n_feat), np.nan, np.float32)
    y = np.ascontiguousarray(y, np.float32)
    if y.shape != (x.shape[0], x.shape[1], net.n_feat):
        raise ValueError(f"y has shape {y.shape}, expected {(x.shape[0], x.shape[1], net.n_feat)}")
    if np.isnan(x[:, :, net.n_feat :]).any():
        raise ValueError("x has NaN in a non-feature (time) input column")
    return x, y


def _init_state(
    net: Net, ws: dict[str, np.ndarray], n_rows: int,
    fc0: np.ndarray | None, h0: np.ndarray | None, c0: np.ndarray | None,
) -> np.ndarray:  # fmt: skip
    shape = (net.n_layers, n_rows, net.hid)
    for name, init in (("hs", h0), ("cs", c0)):
        if init is None:
            ws[name][0] = 0.0
        else:
            if np.shape(init) != shape:
                raise ValueError(f"initial {name[0]} has shape {np.shape(init)}, expected {shape}")
            ws[name][0] = init
    width = (2 if net.delta else 1) * net.n_feat
    if fc0 is None:
        fc0 = np.zeros((n_rows, width), np.float32)
        fc0[:, net.n_feat :] = np.nan  # a model of changes: no value before the first
        return fc0
    fc0 = np.ascontiguousarray(fc0, np.float32)
    if fc0.shape != (n_rows, width):
        raise ValueError(f"fc0 has shape {fc0.shape}, expected {(n_rows, width)}")
    return fc0


def loss_and_grad(
    net: Net,
    x: np.ndarray,
    y: np.ndarray,
    fc0: np.ndarray | None = None,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    chunk: int = 8,
    workspace: Workspace | None = None,
) -> tuple[float, int, dict[str, np.ndarray]]:
    """Mean squared forecast error of a minibatch and its gradient.

    x : (B, T, I) float32 normalised inputs (NaN = missing feature), y :
    (B, T, F) targets (NaN = absent; ``y[:, t]`` is compared with the
    forecast made after reading ``x[:, t]``), fc0 : (B, F) imputation for
    NaN inputs at t = 0 (default 0, as for a new stream), h0, c0 : (L, B, H)
    initial states (default 0). Returns ``(loss, n_present, grads)`` with
    grads in ``net.params`` naming and shapes; loss is 0 and grads 0 when no
    target is present.
    """
    x, y = _check_batch(net, x, y)
    n_rows, n_steps = x.shape[:2]
    n_present = int(np.count_nonzero(~np.isnan(y)))
    ws = (workspace or Workspace()).get(
        n_rows, n_steps, net.n_layers, net.hid, net.n_gate, net.n_feat, net.in_size, chunk, True
    )
    fc = _init_state(net, ws, n_rows, fc0, h0, c0)
    inv_n = 1.0 / max(n_present, 1)
    _train_batch(
        CELL_LSTM if net.cell == "lstm" else CELL_GRU, net.delta, chunk, x, y, fc, inv_n,
        net.n_feat, net.in_size, *net.layouts(),
        ws["xs"], ws["xu"], ws["hs"], ws["cs"], ws["tcs"], ws["acts"], ws["preds"],
        ws["gi"], ws["gh"], ws["dh"], ws["dc"], ws["dgi"], ws["dgh"], ws["dtop"],
        ws["dpred"], ws["dimp"], ws["dnext"],
        ws["gw_ih"], ws["gw_hh"], ws["gb_ih"], ws["gb_hh"], ws["gw_head"], ws["gb_head"],
        ws["sse"],
    )  # fmt: skip
    loss = float(ws["sse"].sum()) * inv_n
    gw_ih = ws["gw_ih"].sum(axis=0)
    gw_hh = ws["gw_hh"].sum(axis=0)
    gb_ih = ws["gb_ih"].sum(axis=0)
    gb_hh = ws["gb_hh"].sum(axis=0)
    grads: dict[str, np.ndarray] = {}
    for k in range(net.n_layers):
        width = net.params[f"weight_ih_l{k}"].shape[1]
        grads[f"weight_ih_l{k}"] = np.ascontiguousarray(gw_ih[k, :width, :].T)
        grads[f"weight_hh_l{k}"] = np.ascontiguousarray(gw_hh[k].T)
        grads[f"bias_ih_l{k}"] = gb_ih[k]
        grads[f"bias_hh_l{k}"] = gb_hh[k]
    grads["head.weight"] = ws["gw_head"].sum(axis=0)
    grads["head.bias"] = ws["gb_head"].sum(axis=0)
    return loss, n_present, grads


class ForwardResult:
    """Output of :func:`forward`: preds (B, T, F) forecasts made after each
    step, sse (sum of squared errors over present targets) and n_present,
    the final h, c (L, B, H) and the forecast to impute at the next step."""

    def __init__(self, preds: np.ndarray, sse: float, n_present: int, h: np.ndarray,
                 c: np.ndarray, last: np.ndarray | None = None) -> None:  # fmt: skip
        self.preds, self.sse, self.n_present, self.h, self.c = preds, sse, n_present, h, c
        self.last = last  # a model of changes: each row's last value (B, F)

    @property
    def next_fc(self) -> np.ndarray:
        """(B, F) the forecast to impute at the next step; (B, 2F) with the last values
        after it for a model of changes (the ``fc0`` of the next stretch)."""
        if self.last is None:
            return np.ascontiguousarray(self.preds[:, -1, :])
        return np.ascontiguousarray(np.concatenate([self.preds[:, -1, :], self.last], axis=1))


def forward(
    net: Net,
    x: np.ndarray,
    y: np.ndarray | None = None,
    fc0: np.ndarray | None = None,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    chunk: int = 8,
    workspace: Workspace | None = None,
) -> ForwardResult:
    """Forward only, same conventions as :func:`loss_and_grad`; copies the outputs."""
    x, y = _check_batch(net, x, y)
    n_rows, n_steps = x.shape[:2]
    ws = (workspace or Workspace()).get(
        n_rows, n_steps, net.n_layers, net.hid, net.n_gate, net.n_feat, net.in_size, chunk, False
    )
    fc = _init_state(net, ws, n_rows, fc0, h0, c0)
    w = net.layouts()
    _forward_batch(
        CELL_LSTM if net.cell == "lstm" else CELL_GRU, net.delta, chunk, x, y, fc,
        net.n_feat, net.in_size, *w[:6],
        ws["xs"], ws["xu"], ws["hs"], ws["cs"], ws["tcs"], ws["acts"], ws["preds"],
        ws["gi"], ws["gh"], ws["sse"],
    )  # fmt: skip
    return ForwardResult(
        preds=np.ascontiguousarray(ws["preds"].transpose(1, 0, 2)),
        sse=float(ws["sse"].sum()),
        n_present=int(np.count_nonzero(~np.isnan(y))),
        h=ws["hs"][n_steps].copy(),
        c=ws["cs"][n_steps].copy(),
        last=ws["xu"][n_steps - 1].copy() if net.delta else None,
    )
